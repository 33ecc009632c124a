"""ASIF anchors: paired caption/image embeddings of the default gallery's training images.

Cached per (home, text model, image model, gallery contents); the manifest splits that pick
the training images are cached per (home, manifest file versions), so a rebuilt set or
another home is never served stale anchors.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from xmodal_core import paths
from xmodal_core.caching import LoadCache
from xmodal_core.gallery import DEFAULT_NAME, DEFAULT_SETS, Gallery, GalleryItem, image_embed_fn, open_gallery, \
    text_embed_fn

MAX_ANCHORS = 2000

_anchors = LoadCache()  # key -> (text anchors, image anchors, item ids); built once per key, outside a shared lock
_splits: dict[tuple, dict[str, str]] = {}
_splits_lock = threading.Lock()


def _manifest_versions() -> tuple:
    """(home, (set, size, mtime_ns) per default set): changes when a set is rebuilt or the home changes."""
    from xmodal_core.data.manifest import manifest_path

    out = []
    for name in DEFAULT_SETS:
        try:
            st = os.stat(manifest_path(name))
            out.append((name, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((name, 0, 0))
    return str(paths.home()), tuple(out)


def splits() -> dict[str, str]:
    """Item id -> manifest split of every default-set record (sets not built: left out)."""
    from xmodal_core.data import load_manifest
    from xmodal_core.errors import XmodalError

    key = _manifest_versions()
    with _splits_lock:
        hit = _splits.get(key)
    if hit is not None:
        return hit
    table: dict[str, str] = {}
    for name in DEFAULT_SETS:
        try:
            table.update({r.id: r.split for r in load_manifest(name)})
        except (OSError, XmodalError):
            pass  # a set that is not built only means no split information
    with _splits_lock:
        _splits.clear()  # one version per process is enough: older keys are stale
        _splits[key] = table
    return table


def split_of(item: GalleryItem) -> str:
    """The manifest split of a default-gallery item ("" when unknown)."""
    return splits().get(item.id, "")


def _gallery_version(gallery: Gallery) -> int:
    return hash(tuple((it.id, it.fingerprint, it.caption) for it in gallery.items))


def _anchor_entry(max_anchors: int, progress=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    text_key, text_fn = text_embed_fn()
    image_key, image_fn = image_embed_fn()
    gallery = open_gallery(DEFAULT_NAME)
    key = (str(paths.home()), text_key, image_key, int(max_anchors), _gallery_version(gallery), _manifest_versions())

    def build() -> tuple[np.ndarray, np.ndarray, list[str]]:
        text_vec, text_ok = gallery.embeddings(text_key, text_fn, what="text")
        image_vec, image_ok = gallery.embeddings(image_key, image_fn, what="image", progress=progress)
        table = splits()
        usable = [i for i, it in enumerate(gallery.items) if it.caption and text_ok[i] and image_ok[i]]
        rows = [i for i in usable if "train" in table.get(gallery.items[i].id, "")]
        if len(rows) < 10:
            rows = usable
        if len(rows) > max_anchors:
            rows = sorted(np.random.default_rng(0).choice(rows, max_anchors, replace=False).tolist())
        return text_vec[rows], image_vec[rows], [gallery.items[i].id for i in rows]

    if key not in _anchors:
        _anchors.clear()  # an older version of the gallery or another home: its anchors are stale
    return _anchors.get(key, build)


def anchor_pairs(max_anchors: int = MAX_ANCHORS, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """ASIF anchors: (M, 384) MiniLM caption embeddings and (M, 1280) EfficientNet image
    embeddings of captioned training images of the default gallery (row m is one pair)."""
    text, image, _ = _anchor_entry(max_anchors, progress)
    return text, image


def anchor_ids(max_anchors: int = MAX_ANCHORS) -> list[str]:
    """Gallery item ids of the anchors `anchor_pairs` returned, row by row."""
    return _anchor_entry(max_anchors)[2]
