"""Galleries: indexing a folder reads only image files under it, never follows links out of it,
skips unreadable files with a reason, and re-indexing encodes only what changed."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal_core import gallery as galleries
from xmodal_core.errors import InputError


@pytest.fixture(autouse=True)
def _fresh(xmodal_home):
    galleries.forget_loaded()
    yield
    galleries.forget_loaded()


def _png(path: Path, color=(200, 30, 30), size=(32, 24), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def _mean_color(items):
    """A stand-in encoder: each image's mean RGB (computed independently of the gallery code)."""
    return np.stack([np.asarray(Image.open(it.image).convert("RGB"), dtype=np.float32).mean(axis=(0, 1)) / 255 + 0.01
                     for it in items])


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "pictures"
    _png(root / "red_apple.png")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(root / "blue.jpg", quality=90)
    _png(root / "sub" / "green.png", (0, 200, 0))
    _png(root / ".thumbnails" / "hidden.png")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_scan_reads_only_image_files_and_lists_unreadable_ones(folder):
    items, skipped, ignored = galleries.scan_folder(folder)
    assert [it.id for it in items] == ["folder:blue.jpg", "folder:red_apple.png", "folder:sub/green.png"]
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"broken.png", "empty.jpg"}
    assert "not an image" in reasons["broken.png"] and "empty" in reasons["empty.jpg"]
    assert ignored == 1  # notes.txt: never opened
    assert all(it.caption is None for it in items)
    assert items[1].text == "red apple"  # the suggestion from the file name


def test_links_pointing_outside_the_folder_are_not_followed(folder, tmp_path):
    outside = tmp_path / "private"
    secret = _png(outside / "secret.png")
    (folder / "looks_innocent.png").symlink_to(secret)
    (folder / "private_dir").symlink_to(outside, target_is_directory=True)
    (folder / "alias.png").symlink_to(folder / "red_apple.png")  # inside: fine
    (folder / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    items, skipped, _ = galleries.scan_folder(folder)
    ids = {it.id for it in items}
    assert "folder:alias.png" in ids
    assert not any("secret" in it.image or "private" in it.image or "innocent" in it.id for it in items)
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "outside the folder" in reasons["looks_innocent.png"]
    assert "not followed" in reasons["private_dir"]
    assert "broken link" in reasons["dangling.png"]


def test_a_fifo_named_like_an_image_is_skipped_without_reading_it(folder):
    os.mkfifo(folder / "pipe.png")
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", galleries.scan_folder(folder)), daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "scanning blocked on a FIFO"
    _, skipped, _ = out["r"]
    assert any(Path(s.path).name == "pipe.png" and "regular file" in s.reason for s in skipped)


def test_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="not found"):
        galleries.index_folder(tmp_path / "missing", encoder_name=None)
    file = _png(tmp_path / "one.png")
    with pytest.raises(InputError, match="is a file"):
        galleries.index_folder(file, encoder_name=None)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="no readable images.*x.png"):
        galleries.index_folder(bad, encoder_name=None)
    with pytest.raises(InputError, match="no folder given"):
        galleries.index_folder("  ", encoder_name=None)


def test_reindexing_encodes_only_new_and_changed_images(folder):
    calls = []

    def embed(items):
        calls.append([it.id for it in items])
        return _mean_color(items)

    gallery, report = galleries.index_folder(folder, encoder_name=None)
    assert (report.added, report.changed, report.removed, report.unchanged) == (3, 0, 0, 0)
    first, ok = gallery.embeddings("image:test", embed)
    assert ok.all() and sorted(sum(calls, [])) == sorted(it.id for it in gallery.items)
    np.testing.assert_allclose(first, _mean_color(gallery.items), rtol=1e-6)

    # change one file, add one, remove one
    time.sleep(0.01)
    _png(folder / "red_apple.png", (250, 250, 0))
    _png(folder / "new.png", (10, 10, 10))
    (folder / "blue.jpg").unlink()
    galleries.forget_loaded()
    calls.clear()
    gallery, report = galleries.index_folder(folder, encoder_name=None)
    assert (report.added, report.changed, report.removed, report.unchanged) == (1, 1, 1, 1)
    second, ok = gallery.embeddings("image:test", embed)
    assert sorted(sum(calls, [])) == ["folder:new.png", "folder:red_apple.png"]
    assert [it.id for it in gallery.items] == ["folder:new.png", "folder:red_apple.png", "folder:sub/green.png"]
    np.testing.assert_allclose(second, _mean_color(gallery.items), rtol=1e-6)

    calls.clear()
    gallery.embeddings("image:test", embed)
    assert calls == []  # nothing changed: nothing encoded


def test_caption_embeddings_follow_caption_edits(folder):
    gallery, _ = galleries.index_folder(folder, encoder_name=None)
    seen = []

    def embed(items):
        seen.extend(it.text for it in items)
        return np.stack([[len(it.text), 1.0] for it in items]).astype(np.float32)

    gallery.embeddings("text:test", embed, what="text")
    seen.clear()
    assert gallery.with_captions({"folder:red_apple.png": "a shiny red apple on a table"}) == 1
    vectors, _ = gallery.embeddings("text:test", embed, what="text")
    assert seen == ["a shiny red apple on a table"]
    assert vectors[gallery.position("folder:red_apple.png")][0] == len("a shiny red apple on a table")


def test_a_file_that_goes_bad_after_scanning_is_left_out_of_the_index(folder):
    gallery, _ = galleries.index_folder(folder, encoder_name=None)
    (folder / "blue.jpg").write_bytes(b"now corrupt")

    def embed(items):
        from xmodal_core.images import load_image

        return np.stack([np.asarray(load_image(it.image), dtype=np.float32).mean(axis=(0, 1)) + 1 for it in items])

    vectors, ok = gallery.embeddings("image:strict", embed)
    assert ok.tolist() == [False, True, True]
    assert any("blue.jpg" in s.path for s in gallery.skipped)


def test_thumbnails_are_small_rgb_images(folder):
    img = galleries.thumbnail(folder / "red_apple.png", 16)
    assert img.mode == "RGB" and max(img.size) == 16
    uri = galleries.thumbnail_data_uri(folder / "red_apple.png", 8)
    assert uri.startswith("data:image/webp;base64,")
    assert galleries.thumbnail_data_uri(folder / "broken.png") == ""


def test_list_galleries_shows_default_then_indexed_folders(folder):
    gallery, _ = galleries.index_folder(folder, encoder_name=None)
    names = [name for name, _ in galleries.list_galleries()]
    assert names[0] == galleries.DEFAULT_NAME and gallery.name in names
    galleries.forget_loaded()
    again = galleries.open_gallery(gallery.name)
    assert [it.id for it in again.items] == [it.id for it in gallery.items]


def test_thumbnail_files_are_written_once_and_found_by_the_source_files_state(folder):
    from PIL import Image

    first = galleries.thumbnail_file(folder / "red_apple.png", 16)
    stamp = Path(first).stat().st_mtime_ns
    again = galleries.thumbnail_file(folder / "red_apple.png", 16)
    assert again == first and Path(again).stat().st_mtime_ns == stamp  # never rewritten while it may be served
    with Image.open(first) as img:
        assert img.format == "WEBP" and max(img.size) <= 16
    assert any(Path(first).is_relative_to(root) for root in galleries.media_roots())
    assert galleries.thumbnail_file(folder / "red_apple.png", 32) != first
