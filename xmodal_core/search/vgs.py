"""FaST-VGS search modes: coarse-to-fine (coarse top K_c reranked by the cross-attention scorer)
and fine (every gallery image scored by it). They rank images for a spoken query."""
from __future__ import annotations

import numpy as np

from xmodal_core import paths
from xmodal_core.caching import LoadCache
from xmodal_core.errors import InputError, StoreError, XmodalError
from xmodal_core.gallery import Gallery
from xmodal_core.search.modes import Request, warm
from xmodal_core.search.targets import IMAGES
from xmodal_core.search.types import Hit

VGS_BATCH = 64
FINE_BATCH = 512  # K_c up to 512 reranked in one batch


class VGSGallery:
    """A gallery seen by one FaST-VGS run: coarse index plus projected image tokens for the fine scorer."""

    def __init__(self, index, tokens, mask, ids: list[str]):
        self.index, self.tokens, self.mask, self.ids = index, tokens, mask, ids
        self.row = {item_id: i for i, item_id in enumerate(ids)}


_cache = LoadCache()  # (home, gallery, run, weights, contents) -> VGSGallery, built once per key


def _embed_gallery(gallery: Gallery, retriever, progress=None) -> VGSGallery:
    import torch

    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record
    from xmodal_core.retrieval import VectorIndex

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
    return VGSGallery(index, torch.cat(toks), torch.cat(masks), ids)


def vgs_gallery(gallery: Gallery, run_id: int, retriever, progress=None) -> VGSGallery:
    """Coarse embeddings and fine-scorer tokens of every gallery image (frozen-tower tokens come
    from the shared feature cache), built once per (home, gallery contents, run weights)."""
    from xmodal_core import spaces

    key = (str(paths.home()), gallery.name, int(run_id), spaces.weights_tag(run_id, "model.safetensors"),
           hash(tuple((it.id, it.fingerprint) for it in gallery.items)))
    return _cache.get(key, lambda: _embed_gallery(gallery, retriever, progress))


def _rank(req: Request, g, query_vector: np.ndarray, fine) -> None:
    """The hits of coarse-to-fine (the index's top K_c, reranked by `fine(rows)` in one batch) or of
    fine (every item scored); `g` has `index`, `ids` and `row` (id -> row of the fine scorer's tensors)."""
    clock = req.clock
    if req.mode == "coarse-to-fine":
        kc = min(int(req.k_coarse), len(g.ids))
        with clock.stage(f"coarse top-{kc} (vector index)"):
            _, cand = g.index.search(query_vector, kc)
            cand = [i for i in cand[0] if i is not None]
        with clock.stage(f"fine rerank of {len(cand)} (one batch)"):
            fs = fine([g.row[i] for i in cand])
            order = np.argsort(-fs, kind="stable")[:req.k]
        ids, scores = [cand[i] for i in order], [fs[i] for i in order]
    else:
        with clock.stage(f"fine scorer over all {len(g.ids)} images"):
            all_scores = fine(list(range(len(g.ids))))
            top = np.argsort(-all_scores, kind="stable")[:req.k]
        ids, scores = [g.ids[i] for i in top], [all_scores[i] for i in top]
    req.result.hits = [Hit(req.gallery.item(i), float(s), r + 1) for r, (i, s) in enumerate(zip(ids, scores))]


def _vgs(req: Request) -> None:
    import torch

    from xmodal_core import spaces as spaces_mod
    from xmodal_core.registry import get_encoder

    mode, space, clock = req.mode, req.space, req.clock
    if req.target is not IMAGES:
        raise InputError(f"{mode} finds images for a spoken query; to find spoken captions use cascade, coarse "
                         "or ASIF")
    if req.query.kind != "speech":
        raise InputError("FaST-VGS ranks images for a spoken query: record or upload speech (for text or image "
                         "queries use cascade, ASIF or coarse)")
    run_id = space.vgs_run if space.vgs_run is not None and not _stale_shipped(space.vgs_run) else shipped_run()
    if run_id is None:
        raise InputError(f"{mode} needs a trained FaST-VGS run in use: train the FaST-VGS preset on the Train page "
                         "and press 'use this model' (cascade and ASIF work without one)")
    retriever = warm(clock, f"FaST-VGS run {run_id}", lambda: spaces_mod.load_vgs_model(run_id))
    req.result.model = f"FaST-VGS run {run_id}"
    if retriever.config.coarse == "shared":
        return _shared(req, run_id, retriever)
    model, device = retriever.model, retriever.device
    with clock.stage("gallery coarse index + fine tokens (cached)"):
        vg = vgs_gallery(req.gallery, run_id, retriever, req.progress)
    encoder = warm(clock, "Whisper tiny.en", lambda: get_encoder(retriever.config.encoders["speech"]))
    with clock.stage("speech tokens (Whisper encoder)"), torch.no_grad():
        tok, mask = encoder.encode_tokens([req.query.audio])
        s_tok, s_mask, s_emb = model.speech(tok.to(device, torch.float32), mask.to(device))

    def fine(rows: list[int]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for c in range(0, len(rows), FINE_BATCH):
                part = rows[c:c + FINE_BATCH]
                n = len(part)
                out.append(model.fine_pairs(s_tok.expand(n, -1, -1), s_mask.expand(n, -1),
                                            vg.tokens[part].to(device, torch.float32), vg.mask[part].to(device)))
        return torch.cat(out).float().cpu().numpy()

    _rank(req, vg, s_emb.float().cpu().numpy(), fine)


# -- the shared-space FaST-VGS (models.vgs.SharedVGS): coarse = the adapted head against fused rows

def shipped_run() -> int | None:
    """The FaST-VGS that ships with the repository, installed into this home on first use."""
    from xmodal_core.adapt import shipped_vgs

    return _shipped.get((str(paths.home()), shipped_vgs.origin()), shipped_vgs.install)


_shipped = LoadCache()


def _stale_shipped(run_id: int) -> bool:
    """True for an installed copy of an older shipped FaST-VGS (a newer one is committed now)."""
    from xmodal_core.adapt import shipped_vgs
    from xmodal_core.spaces import shared_store

    def check() -> bool:
        try:
            name = shared_store().get_run(int(run_id)).name
        except StoreError:  # a run that is gone is not a shipped one
            return False
        return name.startswith(shipped_vgs.RUN_NAME + "@") and name != shipped_vgs.run_name()

    return _shipped.get(("stale", str(paths.home()), int(run_id), shipped_vgs.origin()), check)


class SharedGallery:
    """A gallery seen by a shared-space FaST-VGS: adapted coarse rows in a vector index, and the
    fine scorer's keys/values of every item's grid (`item_memory`, float16) and coarse rows (rows in
    `ids` order)."""

    def __init__(self, index, tokens, mask, coarse, ids: list[str]):
        self.index, self.tokens, self.mask, self.coarse, self.ids = index, tokens, mask, coarse, ids
        self.row = {item_id: i for i, item_id in enumerate(ids)}


def _embed_shared(gallery: Gallery, space, retriever, progress=None) -> SharedGallery:
    import torch

    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record
    from xmodal_core.retrieval import VectorIndex
    from xmodal_core.search.direct import fused_item_embeddings

    rows, ok = fused_item_embeddings(gallery, space, progress=progress)
    cache = FeatureCache(retriever.config.encoders["image"])
    model = retriever.model
    ids, toks, masks, coarse = [], [], [], []
    items = [(it, r) for it, r, good in zip(gallery.items, rows, ok) if good]
    for start in range(0, len(items), VGS_BATCH):
        chunk = items[start:start + VGS_BATCH]
        try:
            tok, mask = cache.get_tokens([Record(id=it.id, image=it.image) for it, _ in chunk], "image")
        except XmodalError:
            continue  # a file that went bad since indexing: left out of this search
        with torch.no_grad():
            t, m = model.item_memory(tok.to(retriever.device, torch.float32), mask.to(retriever.device))
            c = model.item_coarse(torch.from_numpy(np.stack([r for _, r in chunk])).to(retriever.device))
        ids += [it.id for it, _ in chunk]
        toks.append(t.half().cpu())
        masks.append(m.cpu())
        coarse.append(c.float().cpu())
        if progress is not None:
            progress(min(start + VGS_BATCH, len(items)), len(items))
    if not ids:
        raise InputError(f"no image of gallery {gallery.name} could be read for FaST-VGS")
    coarse_t = torch.cat(coarse)
    index = VectorIndex(coarse_t.shape[1])
    index.add(ids, coarse_t.numpy())
    return SharedGallery(index, torch.cat(toks), torch.cat(masks), coarse_t, ids)


def shared_gallery(gallery: Gallery, run_id: int, space, retriever, progress=None) -> SharedGallery:
    """`_embed_shared` once per (home, gallery contents, run weights, image model in use)."""
    from xmodal_core import spaces

    key = ("shared", str(paths.home()), gallery.name, int(run_id), spaces.weights_tag(run_id, "model.safetensors"),
           space.key("image") if space.can("image") else None,
           hash(tuple((it.id, it.fingerprint, it.caption) for it in gallery.items)))
    return _cache.get(key, lambda: _embed_shared(gallery, space, retriever, progress))


def _shared(req: Request, run_id: int, retriever) -> None:
    """Coarse-to-fine / fine with a shared-space FaST-VGS: one Whisper pass gives the frames for the
    fine scorer and their mean for the adapted head (the coarse row)."""
    import torch

    from xmodal_core.encoders.whisper import mean_pool
    from xmodal_core.registry import get_encoder
    from xmodal_core.search.direct import _judge, adapted_state
    from xmodal_core.spaces import load_run_model

    clock, model, device = req.clock, retriever.model, retriever.device
    state = req.adapted or adapted_state(req.gallery.name)
    head = warm(clock, "adapted speech head", lambda: load_run_model(state.run_dir))
    encoder = warm(clock, "Whisper tiny.en encoder", lambda: get_encoder(retriever.config.encoders["speech"]))
    with clock.stage("gallery coarse index + fine tokens (cached)"):
        sg = shared_gallery(req.gallery, run_id, req.space, retriever, req.progress)
    with clock.stage("speech frames (Whisper encoder, one pass)"), torch.no_grad():
        tok, mask = encoder.encode_tokens([req.query.audio])
        pooled = mean_pool(tok, mask)
        q = head.model.embed("speech", pooled)
        s_c = model.speech_coarse(q.to(device))
        s_kv, s_mask = model.speech_memory(tok.to(device, torch.float32), mask.to(device))
    conf, nearest = _judge(req, state, q.numpy())
    req.result.path, req.result.confidence, req.result.heard_as = req.mode, conf, nearest
    req.result.model = (f"FaST-VGS run {run_id} (coarse: adapted head run {state.run_id} → captions + pictures; "
                        "fine: cross-attention over Whisper frames and EfficientNet grid)")

    def fine(rows: list[int]) -> np.ndarray:
        out = []
        with torch.no_grad():
            for c in range(0, len(rows), FINE_BATCH):
                part = torch.tensor(rows[c:c + FINE_BATCH])
                out.append(model.fine_scores(s_kv, s_mask, s_c, sg.tokens[part][None].to(device, torch.float32),
                                             sg.mask[part][None].to(device), sg.coarse[part][None].to(device))[0])
        return torch.cat(out).float().cpu().numpy()

    _rank(req, sg, s_c.float().cpu().numpy(), fine)


def coarse_to_fine(req: Request) -> None:
    """FaST-VGS: the coarse index's top K_c for a spoken query, reranked by the fine scorer."""
    _vgs(req)


def fine(req: Request) -> None:
    """FaST-VGS: every gallery image scored by the fine cross-attention scorer (slow)."""
    _vgs(req)
