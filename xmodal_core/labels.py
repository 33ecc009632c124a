"""Review queues and labelling decisions, and turning them into a training manifest.

A person reviews items from a queue — images without a caption (indexed folders), caption
/image pairs whose alignment score is low, or search results — and accepts, rejects or
edits the caption or label, or records a new spoken caption. Every decision is written to
the run store (`store.save_label`) at once, keyed by (data set, item id), so it survives a
restart. `export_labels(NAME)` (CLI: `xmodal export-labels NAME`) writes the accepted and
edited items as a manifest the Train page can use.

Item references: `dataset` is a manifest set ("tuxpaint", "emoji"), a folder gallery's name,
or "search:GALLERY" for query/result pairs (their item id is `ITEM#QUERYHASH`, the query in
the label's text).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.errors import DatasetError, InputError, XmodalError

QUEUES = {
    "uncaptioned": "new images without a caption (indexed folders)",
    "low-score": "caption/image pairs whose alignment score is low",
    "search": "search results to confirm or reject",
}
SEARCH_PREFIX = "search:"
MAX_CAPTION_CHARS = 500
EXPORT_MARKER = "labels-export.json"  # beside a manifest written by `export_labels`: it may replace it


@dataclass(frozen=True)
class ReviewItem:
    """One thing to review.

    Attributes:
        dataset, item_id: where a decision on it is saved.
        image: the image file.
        caption: the current (or suggested) caption.
        label: the current class / category, if any.
        score: the alignment or search score that put it in the queue (None if none).
        reason: why it is in the queue, for a person.
    """

    dataset: str
    item_id: str
    image: str
    caption: str | None
    label: str | None = None
    score: float | None = None
    reason: str = ""


def _store(store=None):
    from xmodal_core.spaces import shared_store

    return store or shared_store()


def decided(dataset: str, store=None) -> dict[str, Any]:
    """item id -> saved `Label` of one data set."""
    return {lab.item_id: lab for lab in _store(store).labels(dataset)}


def pending(items: Sequence[ReviewItem], store=None) -> list[ReviewItem]:
    """The items nobody has decided on yet, in queue order."""
    store = _store(store)
    seen: dict[str, dict[str, Any]] = {}
    out = []
    for it in items:
        if it.dataset not in seen:
            seen[it.dataset] = decided(it.dataset, store)
        if it.item_id not in seen[it.dataset]:
            out.append(it)
    return out


def uncaptioned_queue(gallery) -> list[ReviewItem]:
    """Images of a gallery that have no caption; the suggestion is words from the file name."""
    return [ReviewItem(it.dataset or gallery.name, it.id, it.image, it.text, it.label, None,
                       "no caption yet: the suggestion comes from the file name")
            for it in gallery.items if not it.caption]


def search_queue(gallery_name: str, query_text: str, hits: Sequence[Any]) -> list[ReviewItem]:
    """Search hits (`search.Hit`) as query/image pairs to confirm or reject."""
    query_text = (query_text or "").strip()
    if not query_text:
        raise InputError("this search has no text to review against (an image query): search by text or speech")
    qhash = hashlib.sha1(query_text.encode("utf-8")).hexdigest()[:8]
    return [ReviewItem(SEARCH_PREFIX + gallery_name, f"{h.item.id}#{qhash}", h.item.image, query_text, h.item.label,
                       float(h.score), f"search result #{h.rank} for {query_text!r}: is this a match?")
            for h in hits]


def low_score_queue(dataset: str = "tuxpaint", *, limit: int = 50, space=None, progress=None) -> list[ReviewItem]:
    """Captioned images of a data set, lowest caption/image alignment score first.

    The score is the cosine in the shared space when an image model is in use, else the ASIF
    similarity of caption (MiniLM) and image (EfficientNet) through the default anchors.
    """
    import torch

    from xmodal_core import spaces
    from xmodal_core.gallery import image_embed_fn, open_gallery, text_embed_fn
    from xmodal_core.retrieval import relative_representation
    from xmodal_core.search import anchor_ids, anchor_pairs

    gallery = open_gallery("default", progress=progress)
    rows = [i for i, it in enumerate(gallery.items) if it.dataset == dataset and it.caption]
    if not rows:
        raise InputError(f"no captioned images of {dataset!r} in the default gallery; use tuxpaint or emoji")
    items = [gallery.items[i] for i in rows]
    space = space or spaces.current_space()
    if space.can("image"):
        img = space.embed_image([it.image for it in items])  # paths: frozen features come from the cache
        text_key, text_fn = text_embed_fn()
        txt = gallery.embeddings(text_key, text_fn, what="text")[0][rows]  # MiniLM is the shared space
        scores = (img * txt).sum(axis=1)
        how = "cosine in the shared space"
    else:
        text_key, text_fn = text_embed_fn()
        image_key, image_fn = image_embed_fn()
        txt_all, _ = gallery.embeddings(text_key, text_fn, what="text")
        img_all, ok = gallery.embeddings(image_key, image_fn, progress=progress)
        ta, ia = (torch.from_numpy(a) for a in anchor_pairs())
        position = {item_id: m for m, item_id in enumerate(anchor_ids())}
        scores = np.full(len(rows), np.inf)
        for n, i in enumerate(rows):
            if not ok[i]:
                continue
            # leave the pair itself out of the anchors: as its own anchor it would always look aligned
            keep = torch.ones(len(ta), dtype=torch.bool)
            if items[n].id in position:
                keep[position[items[n].id]] = False
            rt = relative_representation(torch.from_numpy(txt_all[i:i + 1]), ta[keep])
            rv = relative_representation(torch.from_numpy(img_all[i:i + 1]), ia[keep])
            scores[n] = float((rt * rv).sum())
        how = "ASIF similarity, the pair itself left out of the anchors (no trained model)"
    order = np.argsort(scores, kind="stable")[:limit]
    return [ReviewItem(items[i].dataset, items[i].id, items[i].image, items[i].caption, items[i].label,
                       float(scores[i]), f"low alignment score ({how}): is the caption right?") for i in order]


def _clean_text(text: str | None, what: str) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    if not text:
        raise InputError(f"the {what} is empty: type it, or press Accept to keep the current one")
    if len(text) > MAX_CAPTION_CHARS:
        raise InputError(f"the {what} is {len(text)} characters; the limit is {MAX_CAPTION_CHARS}")
    return text


def record_decision(item: ReviewItem, decision: str, *, text: str | None = None, label: str | None = None,
                    store=None):
    """Save accept / reject / edit for one item now; returns the saved `store.Label`.

    accept keeps the item's caption (saved as the label's text); edit needs the new caption
    and/or label; reject saves no text.
    """
    if decision not in ("accept", "reject", "edit"):
        raise InputError(f"decision must be accept, reject or edit, not {decision!r}")
    store = _store(store)
    if decision == "edit":
        text, label = _clean_text(text, "caption") if text is not None else None, \
            (_clean_text(label, "label") if label else None)
        if text is None and label is None:
            raise InputError("an edit needs a new caption or label")
        text = text if text is not None else item.caption
        label = label if label is not None else item.label
    elif decision == "accept":
        text, label = item.caption, item.label
    else:
        text, label = None, item.label
    old = decided(item.dataset, store).get(item.item_id)
    audio = old.audio_path if old is not None else None
    return store.save_label(item.dataset, item.item_id, decision, text=text, label=label, audio_path=audio,
                            note=item.reason or None)


def audio_dir() -> Path:
    path = paths.home() / "labels" / "audio"
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_spoken_caption(item: ReviewItem, audio: Any, store=None):
    """Check a recording (`audio.load_audio` rules), keep it as 16 kHz WAV under the home
    folder, and attach it to the item's label (accepting the item if it had no decision)."""
    from xmodal_core.audio import load_audio, save_wav

    clip = load_audio(audio)
    store = _store(store)
    digest = hashlib.sha1(np.ascontiguousarray(clip.samples).tobytes()).hexdigest()[:12]
    safe = hashlib.sha1(f"{item.dataset}|{item.item_id}".encode()).hexdigest()[:12]
    path = save_wav(audio_dir() / f"{safe}-{digest}.wav", clip)
    old = decided(item.dataset, store).get(item.item_id)
    decision = old.decision if old is not None and old.decision != "reject" else "accept"
    text = old.text if old is not None and old.text else item.caption
    label = old.label if old is not None else item.label
    return store.save_label(item.dataset, item.item_id, decision, text=text, label=label, audio_path=str(path),
                            note=old.note if old is not None else (item.reason or None))


def caption_overrides(dataset: str, store=None) -> dict[str, str]:
    """item id -> caption from accepted or edited labels of one data set (to apply to a gallery)."""
    return {lab.item_id: lab.text for lab in _store(store).labels(dataset)
            if lab.decision in ("accept", "edit") and lab.text}


def apply_captions(gallery, store=None) -> int:
    """Give a gallery's items the captions people accepted or edited; returns how many changed."""
    by_dataset: dict[str, dict[str, str]] = {}
    for it in gallery.items:
        ds = it.dataset or gallery.name
        if ds not in by_dataset:
            by_dataset[ds] = caption_overrides(ds, store)
    captions = {it.id: by_dataset[it.dataset or gallery.name][it.id] for it in gallery.items
                if it.id in by_dataset[it.dataset or gallery.name]}
    return gallery.with_captions(captions)


# ---------------------------------------------------------------- export

def _resolve(dataset: str, item_id: str) -> tuple[Any, str | None]:
    """(source item: a manifest Record or a GalleryItem, the search query if a search pair)."""
    from xmodal_core.data import load_manifest
    from xmodal_core.gallery import open_gallery

    query = None
    if dataset.startswith(SEARCH_PREFIX):
        dataset = dataset[len(SEARCH_PREFIX):]
        item_id, _, _ = item_id.rpartition("#")
        query = True
    cache = _resolve.cache  # type: ignore[attr-defined]
    if dataset not in cache:
        try:
            cache[dataset] = {r.id: r for r in load_manifest(dataset)}
        except (DatasetError, InputError):
            try:
                gallery = open_gallery(dataset)
            except XmodalError:
                cache[dataset] = {}
            else:
                cache[dataset] = {it.id: it for it in gallery.items}
    return cache[dataset].get(item_id), query


_resolve.cache = {}  # type: ignore[attr-defined]


def free_dataset_name(base: str) -> str:
    """`BASE-labels`, or `BASE-labels-2`, -3 ...: the first name no data set uses yet."""
    from xmodal_core.data.manifest import dataset_dir

    stem = base[:50]
    candidates = [f"{stem}-labels"] + [f"{stem}-labels-{i}" for i in range(2, 1000)]
    return next(c for c in candidates if not dataset_dir(c).exists())


def check_export_target(name: str, *, overwrite: bool = False) -> Path:
    """The folder an export of `name` writes to; refuses a data set the export did not create.

    Raises:
        InputError: `name` is not a valid data set name, or names a data set (built, or copied
            in) that an export did not write and `overwrite` is not given; the message names a
            free name.
    """
    from xmodal_core.data.manifest import dataset_dir
    from xmodal_core.validate import check_name

    name = check_name(name, "data set name")
    out_dir = dataset_dir(name)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / EXPORT_MARKER).is_file() and not overwrite:
        raise InputError(f"a data set named {name!r} already exists and was not written by an export: "
                         f"export under another name, e.g. {free_dataset_name(name)!r} "
                         f"(or pass --overwrite to replace it)")
    return out_dir


def export_labels(name: str, *, sources: Sequence[str] | None = None, store=None, fractions=(0.8, 0.1, 0.1),
                  overwrite: bool = False):
    """Write accepted and edited labels as the data set `name` (`datasets_dir()/NAME/manifest.jsonl`).

    Each record has the item's image, the caption a person accepted or typed (or, for a search
    pair, the query), the label, and the spoken caption when one was recorded. Rejected items
    are left out. Splits are assigned by group (disjoint), as for every built set.

    Args:
        name: the new data set's name.
        sources: label data sets to take (default: all).
        overwrite: replace a data set of that name that an export did not write (a built one).

    Returns:
        The `BuildSummary` written beside the manifest.
    """
    from xmodal_core.data.manifest import (BuildSummary, Record, count_records, split_by_group, write_manifest,
                                           write_summary)

    name = name.strip()
    out_dir = check_export_target(name, overwrite=overwrite)
    store = _store(store)
    labels = store.labels()
    if sources:
        wanted = set(sources)
        labels = [lab for lab in labels if lab.dataset in wanted]
    _resolve.cache = {}  # type: ignore[attr-defined]
    summary = BuildSummary(name=name)
    records = []
    start = time.perf_counter()
    for lab in labels:
        where = f"{lab.dataset}/{lab.item_id}"
        if lab.decision == "reject":
            summary.skip(where, "rejected")
            continue
        source, is_search = _resolve(lab.dataset, lab.item_id)
        if source is None:
            summary.skip(where, "item not found: its data set or gallery is gone")
            continue
        image = getattr(source, "image", None)
        if image is None or not Path(image).is_file():
            summary.skip(where, "image file missing")
            continue
        audio = lab.audio_path if lab.audio_path and Path(lab.audio_path).is_file() else None
        text = lab.text or getattr(source, "text", None) or getattr(source, "caption", None)
        group = getattr(source, "group", "") or f"{lab.dataset}:{lab.item_id}"
        if is_search:
            group = getattr(source, "group", "") or getattr(source, "id", lab.item_id)
        records.append(Record(id=f"labels:{lab.dataset}:{lab.item_id}", image=image, audio=audio, text=text,
                              label=lab.label, group=group, speaker="labeller" if audio else None,
                              source=f"labels:{lab.dataset}", license=getattr(source, "license", "") or ""))
    if not records:
        raise DatasetError("no accepted or edited labels to export"
                           + (f" from {', '.join(sources)}" if sources else "") + ": label some items first")
    records = split_by_group(records, fractions)
    summary.records = len(records)
    summary.counts = count_records(records)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EXPORT_MARKER).write_text(json.dumps({"exported_at": time.time()}) + "\n", encoding="utf-8")
    summary.path = str(write_manifest(out_dir / "manifest.jsonl", records))
    summary.seconds = round(time.perf_counter() - start, 2)
    write_summary(out_dir, summary)
    return summary


def cmd_export_labels(args) -> int:
    summary = export_labels(args.name, sources=args.source or None, overwrite=args.overwrite)
    print(summary.format())
    return 0


def add_commands(subparsers) -> None:
    """`xmodal export-labels NAME [--source DATASET ...]`."""
    p = subparsers.add_parser("export-labels", help="write accepted/edited labels as a data set manifest")
    p.add_argument("name", help="name of the data set to write (then: train on it from the Train page)")
    p.add_argument("--source", action="append", help="only labels of this data set / gallery (repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a data set of that name that was not written by an export (e.g. a built one)")
    p.set_defaults(func=cmd_export_labels)
