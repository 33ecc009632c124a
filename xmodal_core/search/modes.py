"""The untrained and shared-space search modes, one function each: cascade, ASIF, coarse.

Each takes a `Request` (gallery, query, target, space, settings) and fills its result's
hits and model line; the stages it times show up in the result's latency breakdown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from xmodal_core.errors import InputError
from xmodal_core.gallery import Gallery, image_embed_fn, text_embed_fn
from xmodal_core.search import anchors
from xmodal_core.search.targets import IMAGES, RECORDINGS, Target
from xmodal_core.search.types import DEFAULT_K_COARSE, Clock, Hit, Query, SearchResult


@dataclass
class Request:
    """One search: what to search, for what, with which model and settings."""

    gallery: Gallery
    query: Query
    mode: str
    target: Target
    space: Any  # spaces.Space
    clock: Clock
    result: SearchResult
    k: int = 12
    k_coarse: int = DEFAULT_K_COARSE
    asif_k: int = 90
    asif_p: float = 8.0
    progress: Callable[[int, int], None] | None = None
    adapted: Any = None  # direct / auto: an `adapt.AdaptState` to use instead of the gallery's own


def warm(clock: Clock, what: str, fn) -> Any:
    """Load a model outside the timed stages, recording the load as its own stage when slow."""
    start = time.perf_counter()
    out = fn()
    ms = (time.perf_counter() - start) * 1000.0
    if ms > 50:
        clock.timings.append((f"load {what} (first use)", ms))
    return out


def hits_of(gallery: Gallery, scores: np.ndarray, ids) -> list[Hit]:
    """Hits from an index's (scores, ids) row; empty slots (id None) and -inf scores are dropped."""
    return [Hit(gallery.item(i), float(s), r + 1) for r, (s, i) in enumerate(zip(scores, ids))
            if i is not None and np.isfinite(s)]


def transcribe(req: Request) -> str:
    """The query's Whisper transcript (cached per recording), kept in the result."""
    from xmodal_core import spaces
    from xmodal_core.registry import get_transcriber

    warm(req.clock, "Whisper tiny.en", get_transcriber)
    cached = spaces.is_transcribed(req.query.audio)
    with req.clock.stage("ASR (same recording as before: cached)" if cached else "ASR (Whisper tiny.en)"):
        req.result.transcript = spaces.transcribe([req.query.audio])[0]
    return req.result.transcript


def query_text(req: Request) -> str:
    """The typed text, or the transcript of a spoken query (InputError when nothing was heard)."""
    if req.query.kind != "speech":
        return req.query.text
    text = transcribe(req)
    if not text.strip():
        raise InputError("nothing was heard in the recording (empty transcript): speak closer to the microphone "
                         "and record again")
    return text


def image_query(query: Query) -> np.ndarray:
    """(1, 1280) EfficientNet-Lite0 features of the query image."""
    from xmodal_core.registry import get_encoder

    return get_encoder("efficientnet-lite0").encode([query.image])


def minilm(req: Request, text: str) -> np.ndarray:
    from xmodal_core import spaces

    with req.clock.stage("text embedding (MiniLM)"):
        return spaces.Space().embed_text([text])


def cascade(req: Request) -> None:
    """Untrained: text (typed or transcribed) against the items' text through MiniLM; an image
    query against gallery images by ImageNet features (for recordings: ASIF, the one untrained
    way from a picture to speech)."""
    clock, target = req.clock, req.target
    if req.query.kind == "image":
        if target is RECORDINGS:
            return asif(req)
        req.result.model = "EfficientNet-Lite0 (image to image)"
        key, fn = warm(clock, "EfficientNet-Lite0", image_embed_fn)
        with clock.stage("gallery index (cached)"):
            index = req.gallery.index(key, fn, progress=req.progress)
        with clock.stage("image features (EfficientNet-Lite0)"):
            q = image_query(req.query)
        with clock.stage("nearest images"):
            scores, ids = index.search(q, req.k)
    else:
        text = query_text(req)
        req.result.model = ("Whisper tiny.en → MiniLM (captions)" if target is IMAGES
                            else "transcripts (Whisper tiny.en) → MiniLM")
        key, fn = warm(clock, "MiniLM", target.text_embed)
        what = "caption" if target is IMAGES else "transcript"
        with clock.stage(f"{what} index (cached)"):
            index = req.gallery.index(key, fn, what=target.text_what, progress=req.progress)
        q = minilm(req, text)
        with clock.stage(f"nearest {what}s"):
            scores, ids = index.search(q, req.k)
    req.result.hits = hits_of(req.gallery, scores[0], ids[0])


def asif(req: Request) -> None:
    """Untrained: query and items stay in their own pretrained spaces (MiniLM text, EfficientNet
    images) and are compared through the paired caption/image anchors (relative representations)."""
    import torch

    from xmodal_core.retrieval import asif_similarity

    clock, target = req.clock, req.target
    req.result.model = ("ASIF over MiniLM (text) and EfficientNet-Lite0 (images), paired caption/image anchors"
                        if target is IMAGES else
                        "ASIF: query vs transcripts (MiniLM) through caption/image anchors")
    warm(clock, "EfficientNet-Lite0", image_embed_fn)
    warm(clock, "MiniLM", text_embed_fn)
    item_key, item_fn = target.asif_embed()
    with clock.stage("anchors + gallery features (cached)"):
        text_anchors, image_anchors = anchors.anchor_pairs(progress=req.progress)
        items, ok = req.gallery.embeddings(item_key, item_fn, what="image", progress=req.progress)
    if req.query.kind == "image":
        with clock.stage("image features (EfficientNet-Lite0)"):
            q = image_query(req.query)
        q_anchors = image_anchors
    else:
        q, q_anchors = minilm(req, query_text(req)), text_anchors
    item_anchors = image_anchors if target.asif_side() == "image" else text_anchors
    with clock.stage(f"ASIF similarity ({len(image_anchors)} anchors, k={req.asif_k}, p={req.asif_p:g})"):
        sim = asif_similarity(torch.from_numpy(q), torch.from_numpy(q_anchors), torch.from_numpy(items),
                              torch.from_numpy(item_anchors), k=int(req.asif_k), p=float(req.asif_p))[0].numpy()
        sim = np.where(ok, sim, -np.inf)
        top = np.argsort(-sim, kind="stable")[:req.k]
    req.result.hits = hits_of(req.gallery, sim[top], [req.gallery.items[i].id for i in top])


def coarse(req: Request) -> None:
    """The trained model in use: query and items embedded into the shared space, dot product
    over a vector index (a spoken query with no trained speech model goes through its transcript)."""
    clock, space, modality = req.clock, req.space, req.target.modality
    if not space.can(modality):
        raise InputError("coarse search needs a trained image model in use: train an image-text run on the Train "
                         "page and press 'use this model' (cascade and ASIF work without one)")
    req.result.model = space.title
    value = req.target.value
    with clock.stage(f"{'gallery' if req.target is IMAGES else 'recordings'} index (cached)"):
        index = req.gallery.index(f"shared:{space.key(modality)}",
                                  lambda its: space.embed(modality, [value(it) for it in its]), progress=req.progress)
    kind = req.query.kind
    if kind == "speech" and space.speech_run is None and space.own_run is None:
        q = minilm(req, transcribe(req))
    elif kind == "image" and not space.can("image"):
        raise InputError(f"an image query needs a trained image model in use to find {req.target.noun} in the "
                         "shared space (coarse); ASIF works without one")
    else:
        with clock.stage("text embedding (MiniLM)" if kind == "text" else f"{kind} embedding"):
            q = space.embed(kind, [req.query.text if kind == "text" else
                                   req.query.audio if kind == "speech" else req.query.image])
    with clock.stage("vector search"):
        scores, ids = index.search(q, req.k)
    req.result.hits = hits_of(req.gallery, scores[0], ids[0])
