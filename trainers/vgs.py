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
from xmodal_core.models.vgs import CONFIG_FILE, FastVGS, VGSConfig, load_vgs, save_config, save_model

__all__ = ["VGSSplit", "load_vgs_split", "positives", "evaluate", "train", "evaluate_run", "train_run"]


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

    validate = None
    if val_split is not None and len(val_split):
        def validate(model: FastVGS) -> dict[str, float]:
            return evaluate(model, val_split, cfg, device=device)

    recipe = Recipe(model=model, n_train=len(train_split), inputs=train_split.batch,
                    lr_of=lambda name: cfg.scaled_lr(), base_lr=cfg.scaled_lr(),
                    save=lambda model: save_model(ctx.run_dir, model), artifact="model", evaluate=validate,
                    scalars=lambda model: {"coarse_scale": float(model.coarse_scale.log_scale.detach().exp())},
                    config_file=Path(ctx.run_dir) / CONFIG_FILE)
    return train_loop(cfg, recipe, ctx, info)


# =============================================================================== entry points

def evaluate_run(run_dir_or_id: str | int | Path, dataset: str, split: str = "test",
                 limit: int | None = None) -> dict[str, float]:
    return evaluate_saved_run(load_vgs, load_vgs_split, evaluate, run_dir_or_id, dataset, split, limit)


def train_run(run: Any, ctx: Any) -> None:
    """What the run queue calls for kind "vgs"."""
    train_queued_run(VGSConfig.from_dict(run.config), ctx, load_vgs_split, train)
