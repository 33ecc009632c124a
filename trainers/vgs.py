"""FaST-VGS training: the coarse + fine speech-image model (`xmodal_core.models.vgs`) on cached
token features of both frozen towers.

This module keeps what training needs besides the model: `VGSSplit` (spoken captions of
images), `evaluate` (coarse R@k both ways, coarse-to-fine R@k, milliseconds per query),
`train` (the model's step on `trainers.loop`) and `train_run` (the run queue's entry point).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from trainers.common import DistInfo, init_distributed, seed_everything
from trainers.loop import Recipe, TrainResult, evaluate_saved_run, train_loop, train_queued_run
from xmodal_core.errors import DatasetError
from xmodal_core.models.vgs import CONFIG_FILE, FastVGS, SharedVGS, VGSConfig, load_vgs, save_config, save_model

__all__ = ["VGSSplit", "load_vgs_split", "positives", "evaluate", "train", "evaluate_run", "train_run", "PairSplit",
           "load_pair_splits", "evaluate_shared", "train_shared", "hard_negatives"]


# =============================================================================== data

@dataclass
class VGSSplit:
    """Spoken captions of images: record i's speech pairs with image `image_index[i]`.

    Attributes:
        ids, groups: per record; records sharing a group show the same item.
        speech_tokens: (N, T, ds) frames, zero where padded; speech_mask: (N, T) bool.
        image_keys: (M,) distinct images (paths); image_tokens: (M, P, di); image_mask: (M, P).
        image_index: (N,) long, row of each record's image.
        item_ids: (N,) long: the group as an integer (for the masked margin loss).
    """

    ids: list[str]
    groups: list[str]
    speech_tokens: Tensor
    speech_mask: Tensor
    image_keys: list[str]
    image_tokens: Tensor
    image_mask: Tensor
    image_index: Tensor
    item_ids: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.item_ids is None:
            codes: dict[str, int] = {}
            self.item_ids = torch.tensor([codes.setdefault(g, len(codes)) for g in self.groups], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(speech tokens, speech mask, image tokens, image mask, item ids) of records `index`,
        speech trimmed to the longest in the batch."""
        s_mask = self.speech_mask[index]
        t = max(1, int(s_mask.sum(1).max()))
        rows = self.image_index[index]
        return (self.speech_tokens[index, :t].to(device, torch.float32), s_mask[:, :t].to(device),
                self.image_tokens[rows].to(device, torch.float32), self.image_mask[rows].to(device),
                self.item_ids[index].to(device))


def load_vgs_split(cfg: VGSConfig, split: str, dataset: str | None = None, limit: int | None = None) -> VGSSplit:
    """Records of `dataset` in `split` with both audio and an image; token features from the cache."""
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import load_manifest

    name = dataset or cfg.dataset
    records = [r for r in load_manifest(name, split=split) if r.audio and r.image]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DatasetError(f"{name} has no {split} records with both speech and an image; speak the set first "
                           "(`xmodal data speak`) or pick another")
    first: dict[str, int] = {}
    image_records = []
    for r in records:
        if r.image not in first:
            first[r.image] = len(first)
            image_records.append(r)
    s_tok, s_mask = FeatureCache(cfg.encoders["speech"]).get_tokens(records, "speech")
    i_tok, i_mask = FeatureCache(cfg.encoders["image"]).get_tokens(image_records, "image")
    return VGSSplit(ids=[r.id for r in records], groups=[r.group or r.image for r in records],
                    speech_tokens=s_tok.half(), speech_mask=s_mask, image_keys=list(first),
                    image_tokens=i_tok.half(), image_mask=i_mask,
                    image_index=torch.tensor([first[r.image] for r in records], dtype=torch.long))

# =============================================================================== evaluation

@torch.no_grad()
def _encode_split(model: FastVGS, split: VGSSplit, device: torch.device, batch: int = 128):
    """Projected tokens, masks and coarse embeddings (on `device`) of every caption and of every
    distinct image: ((s_tok, s_mask, s_emb), (i_tok, i_mask, i_emb))."""
    def run(encode, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        parts = [encode(tokens[i:i + batch].to(device, torch.float32), mask[i:i + batch].to(device))
                 for i in range(0, len(tokens), batch)]
        t = max(p[0].shape[1] for p in parts)
        return (torch.cat([F.pad(p[0], (0, 0, 0, t - p[0].shape[1])) for p in parts]),
                torch.cat([F.pad(p[1], (0, t - p[1].shape[1])) for p in parts]),
                torch.cat([p[2] for p in parts]))

    return (run(model.speech, split.speech_tokens, split.speech_mask),
            run(model.image, split.image_tokens, split.image_mask))


def positives(split: VGSSplit) -> Tensor:
    """(N, M) bool: caption i x distinct image j: its own image, or any image of the same item
    (`xmodal_core.metrics.group_positives`)."""
    from xmodal_core.metrics import group_positives

    items = split.item_ids.tolist()
    image_items: list[set[int]] = [set() for _ in split.image_keys]  # which items each image shows
    for row, item in zip(split.image_index.tolist(), items):
        image_items[row].add(item)
    return group_positives(items, image_items, own=split.image_index)


@torch.no_grad()
def evaluate(model: FastVGS, split: VGSSplit, cfg: VGSConfig, *, device: torch.device | str = "cpu",
             ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Coarse R@k both ways, coarse-to-fine speech -> image R@k, and milliseconds per query.

    Queries: every caption; gallery: the distinct images (a hit is any image of the caption's
    item). CTF reranks the coarse top `k_coarse` through `xmodal_core.retrieval.coarse_to_fine`
    over a flat vector index, exactly as `VGSRetriever.search` does.
    """
    from xmodal_core.metrics import recall_at_k, recall_of_ranking
    from xmodal_core.retrieval import VectorIndex, coarse_to_fine

    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        (s_tok, s_mask, s_emb), (i_tok, i_mask, i_emb) = _encode_split(model, split, device)
        pos = positives(split)  # (N, M)
        out: dict[str, float] = {}
        start = time.perf_counter()
        sim = (s_emb @ i_emb.T).float().cpu()  # (N, M)
        coarse_ms = (time.perf_counter() - start) * 1000 / max(1, len(split))
        for k, v in recall_at_k(sim, pos, ks).items():
            out[f"s2i_coarse_r@{k[2:]}"] = v
        i2s_pos = pos.T
        keep = i2s_pos.any(1)
        for k, v in recall_at_k(sim.T[keep], i2s_pos[keep], ks).items():
            out[f"i2s_coarse_r@{k[2:]}"] = v

        index = VectorIndex(int(i_emb.shape[1]))
        ids = [str(j) for j in range(len(split.image_keys))]
        index.add(ids, i_emb.float().cpu().numpy())
        k_coarse = min(cfg.k_coarse, len(ids))

        def fine_scorer(q: int, cand: list[str]) -> Tensor:
            rows_ = torch.tensor([int(c) for c in cand], device=device)
            n = len(cand)
            return model.fine_pairs(s_tok[q:q + 1].expand(n, -1, -1), s_mask[q:q + 1].expand(n, -1),
                                    i_tok[rows_], i_mask[rows_])

        ranked = []
        start = time.perf_counter()
        for q in range(len(split)):
            result = coarse_to_fine(q, index, fine_scorer, k_coarse=k_coarse, k=max(ks),
                                    query_vector=s_emb[q].float().cpu().numpy())
            ranked.append([int(i) for i in result.ids] + [int(result.ids[-1])] * (max(ks) - len(result.ids)))
        ctf_ms = (time.perf_counter() - start) * 1000 / max(1, len(split))
        for k, v in recall_of_ranking(torch.tensor(ranked), pos, ks).items():
            out[f"s2i_ctf_r@{k[2:]}"] = v
        out["coarse_ms_per_query"] = coarse_ms
        out["ctf_ms_per_query"] = ctf_ms
        return out
    finally:
        model.train(was_training)



# =============================================================================== training

def train(cfg: VGSConfig, train_split: VGSSplit, val_split: VGSSplit | None, ctx: Any, *,
          info: DistInfo | None = None) -> TrainResult:
    """The FaST-VGS step on `trainers.loop` (ctx, stop, resume, torchrun as for alignment runs);
    the kept epoch's model goes to `run_dir/model.safetensors` with `run_dir/config.json`."""
    info = info or init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed)
    dims = dict(speech_dim=int(train_split.speech_tokens.shape[-1]), image_dim=int(train_split.image_tokens.shape[-1]),
                image_tokens=int(train_split.image_tokens.shape[1]))
    model = FastVGS(cfg, **dims).to(device)
    if info.is_main:
        save_config(ctx.run_dir, cfg, dims)

    return _fit(cfg, model, train_split, val_split, evaluate, ctx, info)


def _fit(cfg: VGSConfig, model, train_split, val_split, evaluate_fn, ctx: Any, info: DistInfo,
         dataset_name: str | None = None) -> TrainResult:
    """Either FaST-VGS model on `trainers.loop`, validated by `evaluate_fn(model, val_split, cfg, device=)`."""
    validate = None
    if val_split is not None and len(val_split):
        def validate(model) -> dict[str, float]:
            return evaluate_fn(model, val_split, cfg, device=info.device)

    recipe = Recipe(model=model, n_train=len(train_split), inputs=train_split.batch,
                    lr_of=lambda name: cfg.scaled_lr(), base_lr=cfg.scaled_lr(),
                    save=lambda model: save_model(ctx.run_dir, model), artifact="model", evaluate=validate,
                    scalars=lambda model: {"coarse_scale": float(model.coarse_scale.log_scale.detach().exp())},
                    config_file=Path(ctx.run_dir) / CONFIG_FILE)
    return train_loop(cfg, recipe, ctx, info, dataset_name=dataset_name)


# =============================================================================== the shared-space FaST-VGS

@dataclass
class PairSplit:
    """A gallery's adaptation pairs ready for `SharedVGS`: the clips of one split and every item.

    frames/offsets: the clips' Whisper frames packed end to end (float16) and where each starts;
    rows: (N, 384) adapted-head rows; groups: (N,) entry ids; positives: per clip, item rows;
    hard: (N, hard_k) item rows of the clip's coarse top that do not show it (the fine loss's
    negatives); item_tokens/item_mask: (M, P, di) grid tokens; item_rows: (M, 384) fused rows.
    """

    frames: Tensor
    offsets: Tensor
    rows: Tensor
    groups: Tensor
    positives: list[list[int]]
    hard: Tensor
    item_ids: list[str]
    item_tokens: Tensor
    item_mask: Tensor
    item_rows: Tensor
    negatives: int = 15

    def __len__(self) -> int:
        return len(self.rows)

    def clip_frames(self, index: Sequence[int], device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(B, T, ds) frames of clips `index`, zero-padded to the longest, and (B, T) mask."""
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in index]
        t = max(1, max(lengths))
        out = torch.zeros(len(index), t, self.frames.shape[1])
        for j, (i, n) in enumerate(zip(index, lengths)):
            out[j, :n] = self.frames[int(self.offsets[i]):int(self.offsets[i]) + n].float()
        mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
        return out.to(device), mask.to(device)

    def batch(self, index: Tensor, device: torch.device | str = "cpu") -> tuple:
        """`SharedVGS.forward`'s inputs for clips `index`: each clip's picture (one of its positives,
        at random) and `negatives` hard negatives drawn from its coarse top."""
        idx = index.tolist()
        b, k = len(idx), min(self.negatives, self.hard.shape[1])
        own = torch.tensor([self.positives[i][int(torch.randint(len(self.positives[i]), ()))] for i in idx])
        pick = torch.rand(b, self.hard.shape[1]).argsort(1)[:, :k]
        neg = torch.gather(self.hard[index], 1, pick)
        uniq, inverse = torch.unique(neg.reshape(-1), return_inverse=True)
        order = torch.cat([own, uniq])  # the first b rows of the item side: the clips' own pictures, in order
        cand = torch.cat([torch.arange(b)[:, None], b + inverse.reshape(b, k)], dim=1)
        frames, mask = self.clip_frames(idx, device)
        return (frames, mask, self.rows[index].to(device), self.item_tokens[order].to(device, torch.float32),
                self.item_mask[order].to(device), self.item_rows[order].to(device), self.groups[index].to(device),
                cand.to(device))


def _pack(tokens: Tensor, mask: Tensor) -> tuple[list[Tensor], list[int]]:
    lengths = mask.sum(1).tolist()
    return [tokens[i, :n].half() for i, n in enumerate(lengths)], lengths


def hard_negatives(rows: Tensor, item_rows: Tensor, positives: Sequence[Sequence[int]], hard_k: int,
                   chunk: int = 2048) -> Tensor:
    """(N, hard_k) item rows of each clip's coarse top (by `rows @ item_rows.T`) that do not show it."""
    out = []
    for c in range(0, len(rows), chunk):
        sims = rows[c:c + chunk] @ item_rows.T
        for j, pos in enumerate(positives[c:c + chunk]):
            sims[j, list(pos)] = -float("inf")
        out.append(sims.topk(min(hard_k, item_rows.shape[0] - 1), dim=1).indices)
    return torch.cat(out)


def load_pair_splits(cfg: VGSConfig, progress: Any = None) -> tuple[PairSplit, PairSplit, dict[str, Any]]:
    """Train and val (held-out voices) splits of `cfg.gallery`'s adaptation pairs, with everything
    the shared-space model reads: frames (cached Whisper tokens), adapted-head rows, the gallery's
    fused rows and grid tokens. Also returns what it was built from (for the run's config)."""
    import numpy as np

    from xmodal_core.adapt.core import head_embed, speech_features
    from xmodal_core.adapt.pairs import gallery_pairs
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search.direct import adapted_state, fused_item_embeddings
    from xmodal_core.spaces import current_space

    gallery = open_gallery(cfg.gallery)
    pairs = gallery_pairs(gallery, voices=cfg.pair_voices)
    state = adapted_state(gallery.name)
    space = current_space()
    fused, ok = fused_item_embeddings(gallery, space)
    row_of = {it.id: i for i, it in enumerate(gallery.items)}
    keep = [row_of[i] for i in pairs.item_ids]
    if not ok[keep].all():
        raise DatasetError(f"{int((~ok[keep]).sum())} captioned items of {gallery.name} have neither a caption "
                           "embedding nor a picture embedding")
    item_rows = torch.from_numpy(np.ascontiguousarray(fused[keep]))
    image_cache = FeatureCache(cfg.encoders["image"])
    items = [gallery.items[i] for i in keep]
    i_tok, i_mask = image_cache.get_tokens([Record(id=it.id, image=it.image) for it in items], "image")
    speech_cache = FeatureCache(cfg.encoders["speech"])
    splits, entry_code = {}, {}
    for name, want in (("train", cfg.train_split), ("val", cfg.val_split)):
        idx = pairs.split("train" if want == "train" else "val")
        records = [pairs.records[i] for i in idx]
        pooled = speech_features(records)
        rows = torch.from_numpy(head_embed(state.run_dir, pooled))
        frames, lengths = [], []
        for c in range(0, len(records), 512):
            tok, mask = speech_cache.get_tokens(records[c:c + 512], "speech")
            f, n = _pack(tok, mask)
            frames += f
            lengths += n
            if progress is not None:
                progress(min(c + 512, len(records)), len(records))
        positives = [pairs.positives[i] for i in idx]
        groups = torch.tensor([entry_code.setdefault(pairs.entries[i], len(entry_code)) for i in idx])
        splits[name] = PairSplit(frames=torch.cat(frames), offsets=torch.tensor([0] + lengths).cumsum(0),
                                 rows=rows, groups=groups, positives=positives,
                                 hard=hard_negatives(rows, item_rows, positives, cfg.hard_k),
                                 item_ids=pairs.item_ids, item_tokens=i_tok.half(), item_mask=i_mask,
                                 item_rows=item_rows, negatives=cfg.negatives)
    source = {"gallery": gallery.name, "items": len(pairs.item_ids), "adapted_run": state.run_id,
              "adapted_origin": getattr(state, "origin", ""), "image_space": space.key("image")}
    return splits["train"], splits["val"], source


@torch.no_grad()
def _item_memory(model: SharedVGS, tokens: Tensor, mask: Tensor, device: torch.device, batch: int = 256):
    parts = [model.item_memory(tokens[i:i + batch].to(device, torch.float32), mask[i:i + batch].to(device))
             for i in range(0, len(tokens), batch)]
    return torch.cat([p[0].half() for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def evaluate_shared(model: SharedVGS, split: PairSplit, cfg: VGSConfig, *, device: torch.device | str = "cpu",
                    ks: Sequence[int] = (1, 5, 10), k_coarse: int | None = None, query_batch: int = 64
                    ) -> dict[str, float]:
    """Coarse and coarse-to-fine speech -> item R@k of every clip over all the gallery's items
    (a hit: any item the clip names), and milliseconds per query of each."""
    from xmodal_core.adapt.pairs import positive_matrix
    from xmodal_core.metrics import recall_at_k, recall_of_ranking

    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        pos = positive_matrix(split.positives, len(split.item_ids))
        i_c = model.item_coarse(split.item_rows.to(device))
        i_kv, i_mask = _item_memory(model, split.item_tokens, split.item_mask, device)
        start = time.perf_counter()
        s_c = model.speech_coarse(split.rows.to(device))
        sim = (s_c @ i_c.T).float().cpu()
        coarse_ms = (time.perf_counter() - start) * 1000 / max(1, len(split))
        out = {f"s2i_coarse_r@{k[2:]}": v for k, v in recall_at_k(sim, pos, ks).items()}
        kc = min(k_coarse or cfg.k_coarse, len(split.item_ids))
        ranked = []
        start = time.perf_counter()
        for q0 in range(0, len(split), query_batch):
            q = list(range(q0, min(q0 + query_batch, len(split))))
            top = sim[q].topk(kc, dim=1).indices  # (b, kc)
            frames, mask = split.clip_frames(q, device)
            s_kv, s_m = model.speech_memory(frames, mask)
            rows = top.to(device)
            fine = model.fine_scores(s_kv, s_m, s_c[q], i_kv[rows].float(), i_mask[rows], i_c[rows]).float().cpu()
            order = fine.argsort(dim=1, descending=True, stable=True)
            ranked.append(torch.gather(top, 1, order)[:, :max(ks)])
        ctf_ms = (time.perf_counter() - start) * 1000 / max(1, len(split))
        ranked_t = torch.cat(ranked)
        if ranked_t.shape[1] < max(ks):
            ranked_t = torch.cat([ranked_t, ranked_t[:, -1:].expand(-1, max(ks) - ranked_t.shape[1])], dim=1)
        out.update({f"s2i_ctf_r@{k[2:]}": v for k, v in recall_of_ranking(ranked_t, pos, ks).items()})
        out["coarse_ms_per_query"] = coarse_ms
        out["ctf_ms_per_query"] = ctf_ms
        return out
    finally:
        model.train(was_training)


def train_shared(cfg: VGSConfig, train_split: PairSplit, val_split: PairSplit | None, ctx: Any, *,
                 info: DistInfo | None = None, source: dict | None = None) -> TrainResult:
    """The shared-space FaST-VGS on `trainers.loop` (stop, resume, torchrun as for every run);
    the kept epoch goes to `run_dir/model.safetensors` with `run_dir/config.json`."""
    info = info or init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed)
    dims = dict(speech_dim=int(train_split.frames.shape[-1]), image_dim=int(train_split.item_tokens.shape[-1]),
                image_tokens=int(train_split.item_tokens.shape[1]), coarse_dim=int(train_split.rows.shape[1]))
    model = SharedVGS(cfg, **dims)
    model.set_image_basis(train_split.item_tokens, train_split.item_mask, cfg.seed)
    model = model.to(device)
    if info.is_main:
        save_config(ctx.run_dir, cfg, dims, source)
    return _fit(cfg, model, train_split, val_split, evaluate_shared, ctx, info, f"pairs-{cfg.gallery}")


# =============================================================================== entry points

def evaluate_run(run_dir_or_id: str | int | Path, dataset: str, split: str = "test",
                 limit: int | None = None) -> dict[str, float]:
    return evaluate_saved_run(load_vgs, load_vgs_split, evaluate, run_dir_or_id, dataset, split, limit)


def train_run(run: Any, ctx: Any) -> None:
    """What the run queue calls for kind "vgs"."""
    cfg = VGSConfig.from_dict(run.config)
    if cfg.coarse == "shared":
        info = init_distributed(cfg.device)
        train_split, val_split, source = load_pair_splits(cfg)
        train_shared(cfg, train_split, val_split, ctx, info=info, source=source)
        return
    train_queued_run(cfg, ctx, load_vgs_split, train)
