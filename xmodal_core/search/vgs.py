"""FaST-VGS search modes: coarse-to-fine (coarse top K_c reranked by the cross-attention scorer)
and fine (every gallery image scored by it). They rank images for a spoken query."""
from __future__ import annotations

import numpy as np

from xmodal_core import paths
from xmodal_core.caching import LoadCache
from xmodal_core.errors import InputError, XmodalError
from xmodal_core.gallery import Gallery
from xmodal_core.search.modes import Request, warm
from xmodal_core.search.targets import IMAGES
from xmodal_core.search.types import Hit

VGS_BATCH = 64
FINE_BATCH = 256


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


def _vgs(req: Request) -> None:
    import torch

    from xmodal_core import spaces as spaces_mod
    from xmodal_core.registry import get_encoder
    from xmodal_core.retrieval import coarse_to_fine as rerank

    mode, space, clock = req.mode, req.space, req.clock
    if req.target is not IMAGES:
        raise InputError(f"{mode} finds images for a spoken query; to find spoken captions use cascade, coarse "
                         "or ASIF")
    if space.vgs_run is None:
        raise InputError(f"{mode} needs a trained FaST-VGS run in use: train the FaST-VGS preset on the Train page "
                         "and press 'use this model' (cascade and ASIF work without one)")
    if req.query.kind != "speech":
        raise InputError("FaST-VGS ranks images for a spoken query: record or upload speech (for text or image "
                         "queries use cascade, ASIF or coarse)")
    retriever = warm(clock, f"FaST-VGS run {space.vgs_run}", lambda: spaces_mod.load_vgs_model(space.vgs_run))
    req.result.model = f"FaST-VGS run {space.vgs_run}"
    model, device = retriever.model, retriever.device
    with clock.stage("gallery coarse index + fine tokens (cached)"):
        vg = vgs_gallery(req.gallery, space.vgs_run, retriever, req.progress)
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

    if mode == "coarse-to-fine":
        with clock.stage(f"coarse top-{min(req.k_coarse, len(vg.ids))} + fine rerank"):
            ctf = rerank(None, vg.index, lambda _q, cand: fine([vg.row[i] for i in cand]),
                         k_coarse=int(req.k_coarse), k=req.k, query_vector=s_emb[0].float().cpu().numpy())
        ids, scores = list(ctf.ids), list(ctf.fine_scores)
    else:
        with clock.stage(f"fine scorer over all {len(vg.ids)} images"):
            all_scores = fine(list(range(len(vg.ids))))
            top = np.argsort(-all_scores, kind="stable")[:req.k]
        ids, scores = [vg.ids[i] for i in top], [all_scores[i] for i in top]
    req.result.hits = [Hit(req.gallery.item(i), float(s), r + 1) for r, (i, s) in enumerate(zip(ids, scores))]


def coarse_to_fine(req: Request) -> None:
    """FaST-VGS: the coarse index's top K_c for a spoken query, reranked by the fine scorer."""
    _vgs(req)


def fine(req: Request) -> None:
    """FaST-VGS: every gallery image scored by the fine cross-attention scorer (slow)."""
    _vgs(req)
