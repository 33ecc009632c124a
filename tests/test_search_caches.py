"""Caches behind search and the model in use: loads run outside shared locks, keys name the
home and the weights, and the manifest splits behind the ASIF anchors follow a rebuilt set."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest


def test_a_slow_load_blocks_only_callers_of_the_same_key():
    from xmodal_core.caching import LoadCache

    cache, started, release, calls = LoadCache(), threading.Event(), threading.Event(), []

    def slow():
        calls.append("slow")
        started.set()
        release.wait(10)
        return "model A"

    loaders = [threading.Thread(target=cache.get, args=("a", slow)) for _ in range(3)]
    for t in loaders:
        t.start()
    assert started.wait(5)
    t0 = time.perf_counter()
    assert cache.get("b", lambda: "model B") == "model B"  # not behind A's load
    assert time.perf_counter() - t0 < 0.5 and "a" not in cache
    release.set()
    for t in loaders:
        t.join(5)
    assert cache.get("a", lambda: "reloaded") == "model A" and calls == ["slow"]  # loaded once


def _run_with_heads(home, run_id: int, data: bytes):
    folder = home / "runs" / str(run_id)
    folder.mkdir(parents=True)
    (folder / "heads.safetensors").write_bytes(data)
    (folder / "config.json").write_text("{}")
    return folder


def test_loaded_runs_are_keyed_by_home_and_weights_not_by_id(tmp_path, monkeypatch):
    from xmodal_core import spaces

    one, two = tmp_path / "one", tmp_path / "two"
    _run_with_heads(one, 1, b"weights of home one")
    _run_with_heads(two, 1, b"other weights, same run id")
    monkeypatch.setenv("XMODAL_HOME", str(one))
    key_one, tag_one = spaces._model_key("align", 1, "heads.safetensors"), spaces.weights_tag(1)
    monkeypatch.setenv("XMODAL_HOME", str(two))
    key_two, tag_two = spaces._model_key("align", 1, "heads.safetensors"), spaces.weights_tag(1)
    assert key_one != key_two and tag_one != tag_two
    assert spaces.Space(image_run=1).key("image") == f"image:run-1-{tag_two}"


def test_anchor_splits_follow_a_rebuilt_manifest(xmodal_home):
    from xmodal_core.data.manifest import Record, dataset_dir, write_manifest
    from xmodal_core.gallery import GalleryItem
    from xmodal_core.search import split_of

    item = GalleryItem(id="tuxpaint:animals/cat.png", image="")
    path = dataset_dir("tuxpaint") / "manifest.jsonl"
    write_manifest(path, [Record(id=item.id, text="a cat", split="train")])
    assert split_of(item) == "train"
    time.sleep(0.01)
    write_manifest(path, [Record(id=item.id, text="a cat", split="test")])
    assert split_of(item) == "test"


@pytest.mark.slow
def test_recordings_and_images_share_one_asif(xmodal_home, fsdd_dir, chelsea_png, monkeypatch):
    """An image query for spoken captions runs the same ASIF as for images (cascade has no
    untrained picture-to-speech path, so it is ASIF too), and never returns -inf hits."""
    from xmodal_core.data.manifest import Record, dataset_dir, write_manifest
    from xmodal_core.gallery import recordings_gallery
    from xmodal_core.registry import get_encoder
    from xmodal_core.search import Query, anchors, search, search_recordings

    words = ("zero", "one", "two")
    write_manifest(dataset_dir("ktuberling") / "manifest.jsonl",
                   [Record(id=f"kt:{w}", audio=str(fsdd_dir / f"{d}_jackson_0.wav"), text=w, label=w, split="test")
                    for d, w in enumerate(words)])
    names = ["a cat", "a dog", "the number two"]
    pair = (get_encoder("minilm").encode(names), get_encoder("efficientnet-lite0").encode([str(chelsea_png)] * 3))
    monkeypatch.setattr(anchors, "anchor_pairs", lambda **kw: pair)
    gallery = recordings_gallery()  # this home's: galleries in memory are held per home
    assert {it.id for it in gallery.items} == {f"kt:{w}" for w in words}
    query = Query.from_input("image", str(chelsea_png))
    via_asif = search(gallery, query, "asif", k=3)
    via_cascade = search_recordings(gallery, query, "cascade", k=3)
    assert [h.item.id for h in via_asif.hits] == [h.item.id for h in via_cascade.hits]
    assert via_asif.model == via_cascade.model and all(np.isfinite(h.score) for h in via_asif.hits)
    assert {h.item.id for h in via_asif.hits} <= {f"kt:{w}" for w in words}
