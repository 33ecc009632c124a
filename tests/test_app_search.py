"""Search page functions: every bad input gives a visible message (a gr.Error toast) and the page
keeps working; good input finds the right image."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import pages.search as sp
from pages._ui import guarded, warn
from xmodal_core import gallery as galleries
from xmodal_core.search import Query


@pytest.fixture(autouse=True)
def _fresh(xmodal_home):
    galleries.forget_loaded()
    yield
    galleries.forget_loaded()


def _search(kind="speech-file", mic=None, audio=None, image=None, text="", gallery="default", mode="cascade"):
    return sp.run_search(kind, mic, audio, image, text, gallery, mode, 12, 100, 90, 8.0)


def _wav(path: Path, samples: np.ndarray, rate: int) -> str:
    sf.write(path, samples, rate)
    return str(path)


def _tone(seconds: float, rate: int, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_silent_recording_is_refused_with_a_message(tmp_path):
    with pytest.raises(gr.Error, match="silent"):
        _search(audio=_wav(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000))
    with pytest.raises(gr.Error, match="silent"):  # what a microphone sends: (rate, int16 samples)
        _search("speech-mic", mic=(48000, np.zeros(48000, dtype=np.int16)))


def test_too_long_audio_is_refused(tmp_path):
    with pytest.raises(gr.Error, match="limit is 30 s"):
        _search(audio=_wav(tmp_path / "long.wav", _tone(31, 8000), 8000))


def test_corrupt_and_empty_audio_are_refused(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(gr.Error, match="could not decode"):
        _search(audio=str(bad))
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="empty"):
        _search(audio=str(empty))
    with pytest.raises(gr.Error, match="no audio given"):
        _search(audio=None)
    with pytest.raises(gr.Error, match="empty"):
        _search("speech-mic", mic=(16000, np.zeros(0, dtype=np.int16)))


def test_clipped_recording_is_accepted_with_a_warning(tmp_path):
    clipped = np.clip(_tone(1.0, 16000, amp=3.0), -1, 1)
    query = Query.from_input("speech", (16000, clipped))
    assert query.audio.sample_rate == 16000 and any("clipped" in n for n in query.notes)
    with pytest.warns(UserWarning, match="clipped"):
        warn(query.notes)


def test_any_browser_rate_is_resampled_to_16k():
    query = Query.from_input("speech", (44100, (_tone(0.5, 44100) * 32767).astype(np.int16)))
    assert query.audio.sample_rate == 16000 and abs(len(query.audio.samples) - 8000) <= 1


def test_empty_text_is_refused():
    with pytest.raises(gr.Error, match="empty"):
        _search("text", text="   ")


def test_corrupt_huge_and_missing_images_are_refused(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(gr.Error, match="could not open image .*photo.jpg"):
        _search("image", image=str(bad))
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(gr.Error, match="not an image"):
        _search("image", image=str(text))
    huge = tmp_path / "huge.png"
    Image.new("1", (9000, 6000)).save(huge)  # 54 megapixels: refused from the header, never decoded
    with pytest.raises(gr.Error, match="limit is 40 MP"):
        _search("image", image=str(huge))
    with pytest.raises(gr.Error, match="no image given"):
        _search("image", image=None)
    with pytest.raises(gr.Error, match="not an image"):
        sp.preview_image(str(text))


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "LA", "P"])
def test_odd_mode_images_become_rgb_queries(tmp_path, mode):
    path = tmp_path / f"odd.{'jpg' if mode == 'CMYK' else 'png'}"
    img = Image.new(mode, (40, 30))
    if mode == "P":
        img.info["transparency"] = 0
    img.save(path)
    query = Query.from_input("image", str(path))
    assert query.image.mode == "RGB" and query.image.size == (40, 30)


def test_unknown_mode_and_bad_k_are_refused(tmp_path):
    from xmodal_core.errors import InputError
    from xmodal_core.gallery import Gallery, GalleryItem
    from xmodal_core.search import search

    with pytest.raises(gr.Error, match="unknown search mode"):
        _search("text", text="a cat", mode="telepathy")
    one = Gallery("one", [GalleryItem(id="x", image=str(tmp_path / "x.png"))])
    with pytest.raises(InputError, match="k must be between 1 and 100"):
        search(one, Query.from_input("text", "a cat"), "cascade", k=0)


def test_index_folder_without_a_folder_says_so():
    with pytest.raises(gr.Error, match="no folder given"):
        sp.index_folder("")
    with pytest.raises(gr.Error, match="not found"):
        sp.index_folder("/definitely/not/here")


def test_unexpected_errors_become_a_message_too():
    @guarded
    def broken():
        raise KeyError("oops")

    with pytest.raises(gr.Error, match="unexpected KeyError.*bug"):
        broken()

    @guarded
    def gen():
        yield 1
        raise ValueError("late")

    with pytest.raises(gr.Error, match="unexpected ValueError"):
        list(gen())


@pytest.fixture()
def pictures(tmp_path) -> Path:
    root = tmp_path / "pictures"
    root.mkdir()
    Image.new("RGB", (64, 64), (220, 20, 20)).save(root / "red_apple.png")
    Image.new("RGB", (64, 64), (20, 20, 220)).save(root / "blue_whale.png")
    Image.new("RGB", (64, 64), (20, 160, 20)).save(root / "green_frog.png")
    (root / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


@pytest.mark.slow
def test_indexing_a_folder_reports_unreadable_files_and_searching_it_works(pictures):
    with pytest.warns(UserWarning, match="1 files skipped: scan.png"):
        report, dropdown = sp.index_folder(str(pictures))
    assert "3 images" in report and "Skipped 1" in report and "scan.png" in report
    name = dropdown["value"]
    assert name in [value for _, value in dropdown["choices"]]

    # a text query finds the file whose name matches (cascade over file-name captions)
    heard, grid, timings, hits, review = _search("text", text="a whale", gallery=name)
    assert hits[0][3] == "folder:blue_whale.png"
    assert [row[0] for row in timings][-1] == "total" and all(row[1] >= 0 for row in timings)
    assert len(grid) == 3 and "whale" in grid[0][1] and len(review) == 3

    # an image query finds itself first (image-to-image features)
    _, _, _, hits, _ = _search("image", image=str(pictures / "green_frog.png"), gallery=name)
    assert hits[0][3] == "folder:green_frog.png" and hits[0][1] > 0.99

    # modes that need what is not there say so
    with pytest.raises(gr.Error, match="FaST-VGS"):
        _search("text", text="a whale", gallery=name, mode="coarse-to-fine")
    with pytest.raises(gr.Error, match="trained image model"):
        _search("text", text="a whale", gallery=name, mode="coarse")


@pytest.mark.slow
def test_asif_mode_compares_text_and_images_through_paired_anchors(pictures, monkeypatch):
    from xmodal_core.registry import get_encoder
    from xmodal_core.search import anchors as search_anchors

    gallery, _ = galleries.index_folder(pictures)
    names = ["red apple", "blue whale", "green frog"]
    anchors = (get_encoder("minilm").encode(names),
               get_encoder("efficientnet-lite0").encode([str(pictures / f"{n.replace(' ', '_')}.png") for n in names]))
    monkeypatch.setattr(search_anchors, "anchor_pairs", lambda **kw: anchors)
    heard, grid, timings, hits, _ = _search("text", text="a big whale in the sea", gallery=gallery.name, mode="asif")
    assert hits[0][3] == "folder:blue_whale.png"
    assert any(stage.startswith("ASIF similarity (3 anchors") for stage, _ in timings)


@pytest.mark.slow
def test_spoken_captions_are_found_and_played_back(fsdd_dir):
    from xmodal_core.data.manifest import Record, dataset_dir, write_manifest

    words = ("zero", "one", "two", "three")
    records = [Record(id=f"kt:{w}", audio=str(fsdd_dir / f"{d}_jackson_0.wav"), text=w, label=w, group=f"kt:{w}",
                      split="test") for d, w in enumerate(words)]
    write_manifest(dataset_dir("ktuberling") / "manifest.jsonl", records)
    out = sp.run_search_ui("text", None, None, None, "three", "default", "cascade", 4, 100, 90, 8.0, "recordings")
    heard, grid, timings, hits, review = out[:5]
    players = out[5:]
    assert hits[0][3] == "kt:three" and review == [] and grid == []
    first_audio, first_caption = players[0], players[1]
    assert first_audio["visible"] and first_audio["value"].endswith("3_jackson_0.wav")
    assert "heard as" in first_caption["value"] and "“three”" in first_caption["value"]
    assert sum(1 for p in players[::2] if p["visible"]) == 4
    with pytest.raises(gr.Error, match="to find spoken captions use"):
        sp.run_search_ui("text", None, None, None, "three", "default", "fine", 4, 100, 90, 8.0, "recordings")
