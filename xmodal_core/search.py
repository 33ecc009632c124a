"""Search a gallery with a spoken, written or pictured query, in one of five modes.

Modes (what each needs):
- `cascade`: speech -> Whisper transcript -> MiniLM -> the nearest captions' images; text
  -> MiniLM -> captions; an image -> ImageNet features compared image to image. No training.
- `asif`: the query (or its transcript) and the gallery images stay in their own pretrained
  spaces (MiniLM, EfficientNet) and are compared through paired caption/image anchors
  (ASIF relative representations). No training.
- `coarse`: the query and the images embedded into the shared space by the trained model in
  use (`spaces`); dot product over a vector index.
- `coarse-to-fine` / `fine`: FaST-VGS: coarse top-K_c reranked by the cross-attention scorer,
  or every item scored by it (needs a trained FaST-VGS run).

Every search returns its hits, what the query was heard as, and a per-stage latency breakdown.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import numpy as np

from xmodal_core.errors import InputError, XmodalError
from xmodal_core.gallery import DEFAULT_NAME, Gallery, GalleryItem, image_embed_fn, open_gallery, text_embed_fn

MODES = ("cascade", "asif", "coarse", "coarse-to-fine", "fine")
MODE_HELP = {
    "cascade": "ASR then text: transcript → MiniLM → nearest captions (no training needed)",
    "asif": "ASIF: pretrained spaces compared through paired caption/image anchors (no training needed)",
    "coarse": "one vector per query and image in the shared space of the trained model in use",
    "coarse-to-fine": "FaST-VGS: coarse top-K_c, reranked by the fine cross-attention scorer",
    "fine": "FaST-VGS: every gallery item scored by the fine cross-attention scorer (slow)",
}
MAX_TEXT_CHARS = 1000
CLIPPED_WARNING = 0.01  # share of samples at full scale above which a recording counts as clipped
MAX_ANCHORS = 2000


@dataclass(frozen=True)
class Query:
    """Exactly one of: `audio` (an `xmodal_core.audio.Audio`), `image` (RGB PIL), `text`."""

    kind: str  # "speech" | "image" | "text"
    audio: Any = None
    image: Any = None
    text: str | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def from_input(cls, kind: str, value: Any) -> "Query":
        """Check and decode what a person gave: audio (path, bytes or Gradio's `(rate, array)`),
        an image (path, PIL or array) or text. Raises `InputError` (AudioError, ImageError) with
        a message a person can act on; soft problems (a clipped recording) become `notes`."""
        if kind == "speech":
            from xmodal_core.audio import load_audio

            audio = load_audio(value)
            notes = []
            if audio.clipped_fraction > CLIPPED_WARNING:
                notes.append(f"the recording is clipped ({audio.clipped_fraction:.0%} of samples at full scale): "
                             "results may suffer; record a little further from the microphone")
            if audio.duration < 0.2:
                notes.append(f"the recording is very short ({audio.duration:.2f} s)")
            return cls("speech", audio=audio, notes=tuple(notes))
        if kind == "image":
            from xmodal_core.images import load_image

            return cls("image", image=load_image(value))
        if kind == "text":
            text = (value or "").strip() if isinstance(value, str) or value is None else None
            if text is None:
                raise InputError(f"text query must be a string, not {type(value).__name__}")
            if not text:
                raise InputError("the text query is empty: type a few words, e.g. 'a red apple'")
            from xmodal_core.validate import check_text

            return cls("text", text=check_text(text, "text query", max_chars=MAX_TEXT_CHARS))
        raise InputError(f"unknown query kind {kind!r}; use speech, image or text")


@dataclass(frozen=True)
class Hit:
    item: GalleryItem
    score: float
    rank: int


@dataclass
class SearchResult:
    """Hits best first, the transcript (speech queries), latency per stage in milliseconds."""

    mode: str
    query_kind: str
    hits: list[Hit]
    transcript: str | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: str = ""

    @property
    def total_ms(self) -> float:
        return float(sum(ms for _, ms in self.timings))


class _Clock:
    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings.append((name, (time.perf_counter() - start) * 1000.0))


def _warm(clock: _Clock, what: str, fn) -> Any:
    """Load a model outside the timed stages, recording the load as its own stage when slow."""
    start = time.perf_counter()
    out = fn()
    ms = (time.perf_counter() - start) * 1000.0
    if ms > 50:
        clock.timings.append((f"load {what} (first use)", ms))
    return out


def _hits(gallery: Gallery, scores: np.ndarray, ids: np.ndarray) -> list[Hit]:
    return [Hit(gallery.item(i), float(s), r + 1) for r, (s, i) in enumerate(zip(scores, ids)) if i is not None]


def _transcribe(query: Query, clock: _Clock) -> str:
    from xmodal_core import spaces
    from xmodal_core.registry import get_transcriber

    _warm(clock, "Whisper tiny.en", get_transcriber)
    cached = spaces.is_transcribed(query.audio)
    with clock.stage("ASR (same recording as before: cached)" if cached else "ASR (Whisper tiny.en)"):
        return spaces.transcribe([query.audio])[0]


_anchor_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
_anchor_ids: dict[tuple[str, str], list[str]] = {}
_anchor_lock = threading.Lock()


def anchor_ids() -> list[str]:
    """Gallery item ids of the anchors `anchor_pairs` returned, row by row."""
    anchor_pairs()
    return _anchor_ids[(text_embed_fn()[0], image_embed_fn()[0])]


def anchor_pairs(max_anchors: int = MAX_ANCHORS, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """ASIF anchors: (M, 384) MiniLM caption embeddings and (M, 1280) EfficientNet image
    embeddings of captioned training images of the default gallery (row m is one pair)."""
    text_key, text_fn = text_embed_fn()
    image_key, image_fn = image_embed_fn()
    with _anchor_lock:
        hit = _anchor_cache.get((text_key, image_key))
        if hit is not None:
            return hit
        gallery = open_gallery(DEFAULT_NAME)
        text_vec, text_ok = gallery.embeddings(text_key, text_fn, what="text")
        image_vec, image_ok = gallery.embeddings(image_key, image_fn, what="image", progress=progress)
        rows = [i for i, it in enumerate(gallery.items)
                if it.caption and text_ok[i] and image_ok[i] and "train" in _split_of(it)]
        if len(rows) < 10:
            rows = [i for i, it in enumerate(gallery.items) if it.caption and text_ok[i] and image_ok[i]]
        if len(rows) > max_anchors:
            rows = sorted(np.random.default_rng(0).choice(rows, max_anchors, replace=False).tolist())
        pair = (text_vec[rows], image_vec[rows])
        _anchor_cache[(text_key, image_key)] = pair
        _anchor_ids[(text_key, image_key)] = [gallery.items[i].id for i in rows]
        return pair


_splits: dict[str, str] = {}


def _split_of(item: GalleryItem) -> str:
    """The manifest split of a default-gallery item ("" when unknown)."""
    if not _splits:
        from xmodal_core.data import load_manifest
        from xmodal_core.gallery import DEFAULT_SETS

        for name in DEFAULT_SETS:
            try:
                _splits.update({r.id: r.split for r in load_manifest(name)})
            except Exception:  # noqa: BLE001 - a missing set only means no split information
                pass
    return _splits.get(item.id, "")


def check_mode(mode: str) -> str:
    """`mode` when it is one of `MODES`, else InputError (cheap: call it before opening a gallery)."""
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def search(gallery: Gallery, query: Query, mode: str = "cascade", *, k: int = 12, k_coarse: int = 100,
           asif_k: int = 90, asif_p: float = 8.0, space=None, progress=None) -> SearchResult:
    """Find the `k` gallery images that best match `query`.

    Args:
        gallery: what to search (`gallery.default_gallery()`, `gallery.index_folder(...)`).
        query: a checked `Query`.
        mode: one of `MODES`.
        k_coarse: coarse candidates reranked in coarse-to-fine (K_c).
        asif_k, asif_p: ASIF's kept anchors per row and exponent.
        space: a `spaces.Space` (default: the model in use).
        progress: callable(done, total) while a gallery is (re-)embedded for the first time.

    Raises:
        InputError: a mode the current models cannot do (with what to do instead), bad k.
    """
    from xmodal_core import spaces as spaces_mod

    check_mode(mode)
    if not 1 <= int(k) <= 100:
        raise InputError(f"k must be between 1 and 100, not {k}")
    if len(gallery) == 0:
        raise InputError(f"gallery {gallery.name} is empty")
    clock = _Clock()
    result = SearchResult(mode=mode, query_kind=query.kind, hits=[], notes=list(query.notes))
    space = space or spaces_mod.current_space()

    if mode in ("coarse-to-fine", "fine"):
        _vgs_search(gallery, query, mode, space, clock, result, k=k, k_coarse=k_coarse, progress=progress)

    elif mode == "cascade":
        result.model = ("EfficientNet-Lite0 (image to image)" if query.kind == "image"
                        else "Whisper tiny.en → MiniLM (captions)")
        if query.kind == "image":
            key, fn = _warm(clock, "EfficientNet-Lite0", image_embed_fn)
            with clock.stage("gallery index (cached)"):
                index = gallery.index(key, fn, progress=progress)
            with clock.stage("image features (EfficientNet-Lite0)"):
                q = _image_query(query)
            with clock.stage("nearest images"):
                scores, ids = index.search(q, k)
        else:
            text = query.text
            if query.kind == "speech":
                text = result.transcript = _transcribe(query, clock)
                if not text.strip():
                    raise InputError("nothing was heard in the recording (empty transcript): speak closer to the "
                                     "microphone and record again")
            key, fn = _warm(clock, "MiniLM", text_embed_fn)
            with clock.stage("caption index (cached)"):
                index = gallery.index(key, fn, what="text", progress=progress)
            with clock.stage("text embedding (MiniLM)"):
                q = spaces_mod.Space().embed_text([text])
            with clock.stage("nearest captions"):
                scores, ids = index.search(q, k)
        result.hits = _hits(gallery, scores[0], ids[0])

    elif mode == "asif":
        import torch

        from xmodal_core.retrieval import asif_similarity

        result.model = "ASIF over MiniLM (text) and EfficientNet-Lite0 (images), paired caption/image anchors"
        image_key, image_fn = _warm(clock, "EfficientNet-Lite0", image_embed_fn)
        text_key, text_fn = _warm(clock, "MiniLM", text_embed_fn)
        with clock.stage("anchors + gallery features (cached)"):
            text_anchors, image_anchors = anchor_pairs(progress=progress)
            items, ok = gallery.embeddings(image_key, image_fn, what="image", progress=progress)
        if query.kind == "image":
            with clock.stage("image features (EfficientNet-Lite0)"):
                q = _image_query(query)
            q_anchors = image_anchors
        else:
            text = query.text
            if query.kind == "speech":
                text = result.transcript = _transcribe(query, clock)
                if not text.strip():
                    raise InputError("nothing was heard in the recording (empty transcript): record again")
            with clock.stage("text embedding (MiniLM)"):
                q = spaces_mod.Space().embed_text([text])
            q_anchors = text_anchors
        with clock.stage(f"ASIF similarity ({len(image_anchors)} anchors, k={asif_k}, p={asif_p:g})"):
            sim = asif_similarity(torch.from_numpy(q), torch.from_numpy(q_anchors), torch.from_numpy(items),
                                  torch.from_numpy(image_anchors), k=int(asif_k), p=float(asif_p))[0].numpy()
            sim = np.where(ok, sim, -np.inf)
            top = np.argsort(-sim, kind="stable")[:k]
        result.hits = [Hit(gallery.items[i], float(sim[i]), r + 1) for r, i in enumerate(top) if np.isfinite(sim[i])]

    else:  # coarse
        if not space.can("image"):
            raise InputError("coarse search needs a trained image model in use: train an image-text run on the Train "
                             "page and press 'use this model' (cascade and ASIF work without one)")
        result.model = space.title
        key = f"shared:{space.key('image')}"
        with clock.stage("gallery index (cached)"):
            index = gallery.index(key, lambda its: space.embed_image([it.image for it in its]), progress=progress)
        if query.kind == "speech":
            if space.speech_run is None:
                result.transcript = _transcribe(query, clock)
                with clock.stage("text embedding (MiniLM)"):
                    q = space.embed_text([result.transcript])
            else:
                with clock.stage("speech embedding"):
                    q = space.embed_speech([query.audio])
        elif query.kind == "image":
            with clock.stage("image embedding"):
                q = space.embed_image([query.image])
        else:
            with clock.stage("text embedding (MiniLM)"):
                q = space.embed_text([query.text])
        with clock.stage("vector search"):
            scores, ids = index.search(q, k)
        result.hits = _hits(gallery, scores[0], ids[0])

    result.timings = clock.timings
    return result


class _VGSGallery:
    """A gallery seen by one FaST-VGS run: coarse index plus projected image tokens for the fine scorer."""

    def __init__(self, index, tokens, mask, ids: list[str]):
        self.index, self.tokens, self.mask, self.ids = index, tokens, mask, ids
        self.row = {item_id: i for i, item_id in enumerate(ids)}


_vgs_cache: dict[tuple[str, int, int], _VGSGallery] = {}
_vgs_lock = threading.Lock()
VGS_BATCH = 64


def _vgs_gallery(gallery: Gallery, run_id: int, retriever, progress=None) -> _VGSGallery:
    """Coarse embeddings and fine-scorer tokens of every gallery image (frozen-tower tokens come
    from the shared feature cache), built once per gallery and run."""
    import torch

    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record
    from xmodal_core.retrieval import VectorIndex

    key = (gallery.name, int(run_id), hash(tuple((it.id, it.fingerprint) for it in gallery.items)))
    with _vgs_lock:
        if key in _vgs_cache:
            return _vgs_cache[key]
        cache = FeatureCache(retriever.config.encoders["image"])
        model = retriever.model
        ids, toks, masks, embs = [], [], [], []
        items = gallery.items
        for start in range(0, len(items), VGS_BATCH):
            chunk = items[start:start + VGS_BATCH]
            try:
                tok, mask = cache.get_tokens([Record(id=it.id, image=it.image) for it in chunk], "image")
            except XmodalError:
                continue  # a file that went bad since indexing: left out of this search
            with torch.no_grad():
                t, m, e = model.image(tok.to(retriever.device, torch.float32), mask.to(retriever.device))
            ids += [it.id for it in chunk]
            toks.append(t.half().cpu())
            masks.append(m.cpu())
            embs.append(e.float().cpu().numpy())
            if progress is not None:
                progress(min(start + VGS_BATCH, len(items)), len(items))
        if not ids:
            raise InputError(f"no image of gallery {gallery.name} could be read for FaST-VGS")
        index = VectorIndex(embs[0].shape[1])
        index.add(ids, np.concatenate(embs))
        entry = _VGSGallery(index, torch.cat(toks), torch.cat(masks), ids)
        _vgs_cache[key] = entry
        return entry


def _vgs_search(gallery: Gallery, query: Query, mode: str, space, clock: _Clock, result: SearchResult, *, k: int,
                k_coarse: int, progress=None) -> None:
    """coarse-to-fine (top K_c by the coarse index, reranked by the fine scorer) or fine (every image)."""
    import torch

    from xmodal_core import spaces as spaces_mod
    from xmodal_core.registry import get_encoder
    from xmodal_core.retrieval import coarse_to_fine

    if space.vgs_run is None:
        raise InputError(f"{mode} needs a trained FaST-VGS run in use: train the FaST-VGS preset on the Train page "
                         "and press 'use this model' (cascade and ASIF work without one)")
    if query.kind != "speech":
        raise InputError("FaST-VGS ranks images for a spoken query: record or upload speech (for text or image "
                         "queries use cascade, ASIF or coarse)")
    retriever = _warm(clock, f"FaST-VGS run {space.vgs_run}", lambda: spaces_mod.load_vgs_model(space.vgs_run))
    result.model = f"FaST-VGS run {space.vgs_run}"
    model, device = retriever.model, retriever.device
    with clock.stage("gallery coarse index + fine tokens (cached)"):
        vg = _vgs_gallery(gallery, space.vgs_run, retriever, progress)
    encoder = _warm(clock, "Whisper tiny.en", lambda: get_encoder(retriever.config.encoders["speech"]))
    with clock.stage("speech tokens (Whisper encoder)"), torch.no_grad():
        tok, mask = encoder.encode_tokens([query.audio])
        s_tok, s_mask, s_emb = model.speech(tok.to(device, torch.float32), mask.to(device))

    def fine(rows: list[int]):
        out = []
        with torch.no_grad():
            for c in range(0, len(rows), 256):
                part = rows[c:c + 256]
                n = len(part)
                out.append(model.fine_pairs(s_tok.expand(n, -1, -1), s_mask.expand(n, -1),
                                            vg.tokens[part].to(device, torch.float32), vg.mask[part].to(device)))
        return torch.cat(out).float().cpu().numpy()

    if mode == "coarse-to-fine":
        with clock.stage(f"coarse top-{min(k_coarse, len(vg.ids))} + fine rerank"):
            ctf = coarse_to_fine(None, vg.index, lambda _q, cand: fine([vg.row[i] for i in cand]),
                                 k_coarse=int(k_coarse), k=k, query_vector=s_emb[0].float().cpu().numpy())
        result.hits = [Hit(gallery.item(i), float(s), r + 1) for r, (i, s) in enumerate(zip(ctf.ids, ctf.fine_scores))]
    else:
        with clock.stage(f"fine scorer over all {len(vg.ids)} images"):
            scores = fine(list(range(len(vg.ids))))
            top = np.argsort(-scores, kind="stable")[:k]
        result.hits = [Hit(gallery.item(vg.ids[i]), float(scores[i]), r + 1) for r, i in enumerate(top)]


def transcript_embed_fn() -> tuple[str, Callable]:
    """(cache key, embed function) for recordings: Whisper transcript -> MiniLM (cached both ways)."""
    from xmodal_core import spaces as spaces_mod

    key, text_fn = text_embed_fn()

    def embed(items):
        texts = spaces_mod.transcribe([it.audio for it in items])
        return text_fn([replace(it, caption=t or " ") for it, t in zip(items, texts)])

    return "transcript-" + key, embed


def search_recordings(recordings: Gallery, query: Query, mode: str = "cascade", *, k: int = 6, asif_k: int = 90,
                      asif_p: float = 8.0, space=None, progress=None) -> SearchResult:
    """Find spoken captions (`gallery.recordings_gallery()`) for a query.

    cascade: the query's text (typed, or its transcript) against the recordings' transcripts,
    both through MiniLM. coarse: the speech model in use (cascade when none). asif: an image
    query against the recordings' transcripts through the caption/image anchors. FaST-VGS
    ranks images, not recordings.
    """
    import torch

    from xmodal_core import spaces as spaces_mod
    from xmodal_core.retrieval import asif_similarity

    if mode not in ("cascade", "coarse", "asif"):
        raise InputError(f"{mode} finds images for a spoken query; to find spoken captions use cascade, coarse "
                         "or ASIF")
    clock = _Clock()
    result = SearchResult(mode=mode, query_kind=query.kind, hits=[], notes=list(query.notes))
    space = space or spaces_mod.current_space()
    text = query.text
    if query.kind == "speech" and (mode != "coarse" or space.speech_run is None):
        text = result.transcript = _transcribe(query, clock)
    if mode == "coarse" and space.speech_run is not None:
        result.model = space.title
        key = f"shared:{space.key('speech')}"
        with clock.stage("recordings index (cached)"):
            index = recordings.index(key, lambda its: space.embed_speech([it.audio for it in its]),
                                     progress=progress)
        with clock.stage("query embedding"):
            q = space.embed(query.kind, [query.audio if query.kind == "speech" else
                                         query.image if query.kind == "image" else text])
        with clock.stage("vector search"):
            scores, ids = index.search(q, k)
        result.hits = _hits(recordings, scores[0], ids[0])
    elif query.kind == "image":
        if mode == "coarse":
            raise InputError("finding spoken captions for an image needs a trained speech model in use (coarse), "
                             "or ASIF")
        result.model = "ASIF: image (EfficientNet) vs transcripts (MiniLM) through caption/image anchors"
        key, fn = _warm(clock, "MiniLM", transcript_embed_fn)
        with clock.stage("transcripts of the recordings (cached)"):
            items, ok = recordings.embeddings(key, fn, what="image", progress=progress)
        with clock.stage("anchors (cached)"):
            text_anchors, image_anchors = anchor_pairs(progress=progress)
        with clock.stage("image features (EfficientNet-Lite0)"):
            q = _image_query(query)
        with clock.stage(f"ASIF similarity ({len(image_anchors)} anchors)"):
            sim = asif_similarity(torch.from_numpy(q), torch.from_numpy(image_anchors), torch.from_numpy(items),
                                  torch.from_numpy(text_anchors), k=int(asif_k), p=float(asif_p))[0].numpy()
            sim = np.where(ok, sim, -np.inf)
            top = np.argsort(-sim, kind="stable")[:k]
        result.hits = [Hit(recordings.items[i], float(sim[i]), r + 1) for r, i in enumerate(top)]
    else:
        if not (text or "").strip():
            raise InputError("nothing was heard in the recording (empty transcript): record again")
        result.model = "transcripts (Whisper tiny.en) → MiniLM"
        key, fn = _warm(clock, "MiniLM", transcript_embed_fn)
        with clock.stage("transcripts index (cached)"):
            index = recordings.index(key, fn, what="image", progress=progress)
        with clock.stage("text embedding (MiniLM)"):
            q = spaces_mod.Space().embed_text([text])
        with clock.stage("nearest transcripts"):
            scores, ids = index.search(q, k)
        result.hits = _hits(recordings, scores[0], ids[0])
    result.timings = clock.timings
    return result


def _image_query(query: Query) -> np.ndarray:
    from xmodal_core.registry import get_encoder

    return get_encoder("efficientnet-lite0").encode([query.image])


def format_timings(result: SearchResult) -> list[list]:
    """Rows [stage, milliseconds] plus a total row, for a table."""
    rows = [[name, round(ms, 1)] for name, ms in result.timings]
    rows.append(["total", round(result.total_ms, 1)])
    return rows


def hit_rows(result: SearchResult) -> list[list]:
    """Rows [rank, score, caption, item id] for a table."""
    return [[h.rank, round(h.score, 4), h.item.text, h.item.id] for h in result.hits]


def find_gallery(name: str | None) -> Gallery:
    """A gallery by name, default when empty."""
    return open_gallery(name or DEFAULT_NAME)
