"""Speech straight into the shared space by the gallery's adapted head (`xmodal adapt`), and `auto`.

`direct`: the adapted speech embedding is compared with the items' captions (MiniLM) and with
their pictures through the image head in use; for a captioned item the two cosines are mixed
(`CAPTION_WEIGHT` on the caption), an uncaptioned item is scored by its picture alone.
`auto`: the direct path answers when its top cosine to the gallery's vocabulary reaches the
threshold chosen on held-out synthetic voices at adaptation; otherwise the ASR cascade does.
Both say which path answered and how sure it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from xmodal_core.caching import LoadCache
from xmodal_core.errors import InputError
from xmodal_core.search.modes import Request, cascade, hits_of, minilm, warm
from xmodal_core.search.targets import IMAGES

CAPTION_WEIGHT = 0.7
_vocab_embeddings = LoadCache()


def adapted_state(gallery_name: str):
    """The adaptation a gallery searches with: its own, else the default model's base one."""
    from xmodal_core.adapt.core import base_state, load_state

    state = load_state(gallery_name) or base_state(install=True)
    if state is None:
        raise InputError(f"gallery {gallery_name} is not adapted and there is no adapted default model: press "
                         f"'Adapt to this gallery' on the Search page or run `xmodal adapt --gallery {gallery_name}` "
                         "(cascade works without it)")
    return state


def vocabulary_embeddings(state) -> np.ndarray:
    """(V, 384) MiniLM rows of the state's vocabulary (computed once per adaptation)."""
    from xmodal_core.adapt.core import text_embeddings

    return _vocab_embeddings.get((state.run_dir, state.vocabulary_digest),
                                 lambda: text_embeddings(state.vocabulary))


def speech_embedding(req: Request, state) -> np.ndarray:
    """(1, 384) unit row of the spoken query through the adapted head."""
    from xmodal_core.registry import get_encoder
    from xmodal_core.spaces import load_run_model

    model = warm(req.clock, "adapted speech head", lambda: load_run_model(state.run_dir))
    warm(req.clock, "Whisper tiny.en encoder", lambda: get_encoder("whisper-tiny.en-tail"))
    with req.clock.stage("speech embedding (adapted head)"):
        return model.embed_speech([req.query.audio])


def fused_item_embeddings(gallery, space, clock=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 384) item rows whose dot product with a unit speech row is the fused direct score
    (`CAPTION_WEIGHT` x caption cosine + the rest x picture cosine; one of them alone where the
    item has only that), and (N,) bool: items that have either.

    The mix is linear, so one row per item serves a vector index as well (the FaST-VGS coarse
    stage, `search.vgs`)."""
    from contextlib import nullcontext

    stage = clock.stage if clock is not None else (lambda _name: nullcontext())
    key, fn = IMAGES.text_embed() if clock is None else warm(clock, "MiniLM", IMAGES.text_embed)
    with stage("caption index (cached)"):
        captions, cap_ok = gallery.embeddings_in_memory(key, fn, what="text", progress=progress)
    has_caption = cap_ok & np.array([bool((it.caption or "").strip()) for it in gallery.items])
    if space.can("image"):
        with stage("image index (cached)"):
            images, img_ok = gallery.embeddings_in_memory(f"shared:{space.key('image')}",
                                                          lambda its: space.embed("image", [it.image for it in its]),
                                                          progress=progress)
    else:
        images, img_ok = np.zeros_like(captions), np.zeros(len(gallery), dtype=bool)
    w = CAPTION_WEIGHT if img_ok.any() else 1.0
    both = (has_caption & img_ok)[:, None]
    rows = np.where(both, w * captions + (1 - w) * images, np.where(has_caption[:, None], captions, images))
    ok = has_caption | img_ok
    return np.where(ok[:, None], rows, 0.0).astype(np.float32), ok


def _item_scores(req: Request, q: np.ndarray) -> np.ndarray:
    """(N,) fused scores of every item for the query row `q`."""
    rows, ok = fused_item_embeddings(req.gallery, req.space, req.clock, req.progress)
    with req.clock.stage("fused scores"):
        return np.where(ok, rows @ q[0], -np.inf)


def _answer(req: Request, q: np.ndarray) -> None:
    scores = _item_scores(req, q)
    top = np.argsort(-scores, kind="stable")[:req.k]
    req.result.hits = hits_of(req.gallery, scores[top], [req.gallery.items[i].id for i in top])


def _judge(req: Request, state, q: np.ndarray) -> tuple[float, str]:
    """(top cosine to the vocabulary, nearest entry) of the query row."""
    vocab = vocabulary_embeddings(state)
    with req.clock.stage(f"vocabulary check ({len(vocab)} names)"):
        sims = vocab @ q[0]
        best = int(np.argmax(sims))
    return float(sims[best]), state.vocabulary[best]


def _check(req: Request) -> Any:
    if req.target is not IMAGES:
        raise InputError("direct and auto search look for pictures; for spoken captions use cascade or coarse")
    if req.query.kind == "image":
        raise InputError("direct and auto search take speech (or text); for an image query use coarse or cascade")
    return req.adapted or adapted_state(req.gallery.name)


def direct(req: Request) -> None:
    """The adapted speech head against captions and pictures (a text query goes through MiniLM)."""
    state = _check(req)
    if req.query.kind == "text":
        req.result.model = "MiniLM against captions and pictures (fused)"
        return _answer(req, minilm(req, req.query.text))
    q = speech_embedding(req, state)
    conf, nearest = _judge(req, state, q)
    req.result.model = f"adapted speech head (run {state.run_id}, {state.size} names) → captions + pictures"
    req.result.path = "direct"
    req.result.confidence = conf
    req.result.heard_as = nearest
    if state.threshold is not None and conf < state.threshold:
        req.result.notes.append(f"this looks out of the adapted vocabulary (best match {nearest!r} at {conf:.2f}, "
                                f"below {state.threshold:.2f}): try auto or cascade, or add the name and adapt again")
    _answer(req, q)


def auto(req: Request) -> None:
    """Direct when the adapted head is sure (threshold from held-out voices), else the ASR cascade;
    text and image queries go where they work without it (cascade; coarse for images when an
    image model is in use)."""
    if req.query.kind != "speech" or req.target is not IMAGES:
        from xmodal_core.search.modes import coarse

        use_coarse = req.query.kind == "image" and req.target is IMAGES and req.space.can("image")
        req.result.path = "coarse" if use_coarse else "cascade"
        return coarse(req) if use_coarse else cascade(req)
    state = _check(req)
    q = speech_embedding(req, state)
    conf, nearest = _judge(req, state, q)
    threshold = state.threshold if state.threshold is not None else 0.5
    req.result.confidence, req.result.heard_as = conf, nearest
    if conf >= threshold:
        req.result.path = "direct"
        req.result.model = f"auto → direct (adapted head, run {state.run_id}; {conf:.2f} ≥ {threshold:.2f})"
        return _answer(req, q)
    req.result.path = "cascade"
    req.result.notes.append(f"out of vocabulary? the direct path was unsure ({nearest!r} at {conf:.2f} < "
                            f"{threshold:.2f}), so the ASR cascade answered")
    cascade(req)
    req.result.model = f"auto → cascade ({req.result.model})"
