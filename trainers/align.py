"""Alignment training: projection heads (and optionally towers) that put two modalities into
one space with CL, CWCL, teacher-student L2, or a weighted mix (CWCL, LiT, teacher-student papers).

The model, its config and its loader live in the library (`xmodal_core.models.aligned`); this
module keeps what training needs besides: `PairSplit` (the paired data of one split),
`evaluate` (R@k both ways, zero-shot), `train` (the model's step on `trainers.loop`), and
`train_run` (the entry point the run queue calls).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from trainers.common import DistInfo, init_distributed, seed_everything, to_device
from trainers.loop import Recipe, TrainResult, evaluate_saved_run, train_loop, train_queued_run
from xmodal_core.errors import DatasetError
from xmodal_core.models.aligned import (
    CONFIG_FILE,
    AlignConfig,
    AlignModel,
    build_model,
    load_aligned,
    save_config,
    save_heads,
    text_encoder_fn,
)

# =============================================================================== data

@dataclass
class PairSplit:
    """Paired examples of one split: row i of every tower is the same record.

    Attributes:
        ids: record ids (N,).
        groups: the item each record shows; records sharing a group are positives.
        labels: class names for zero-shot (None where unknown).
        keys: modality -> (N,) strings naming the view (a path, a text): equal keys are one
            gallery entry at evaluation.
        features: locked towers: modality -> (N, d_in) float32 pretrained features (unit rows).
        items: fine-tuned towers: modality -> (N,) raw items (texts, audio or image paths).
    """

    ids: list[str]
    groups: list[str]
    labels: list[str | None]
    keys: dict[str, list[str]]
    features: dict[str, Tensor] = field(default_factory=dict)
    items: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def view(self, modality: str, index: Sequence[int] | Tensor) -> Tensor | list[Any]:
        """The rows `index` of one tower's input: a feature tensor, or a list of raw items."""
        if modality in self.features:
            return self.features[modality][torch.as_tensor(index, dtype=torch.long)]
        if modality in self.items:
            items = self.items[modality]
            return [items[int(i)] for i in index]
        raise DatasetError(f"this split has no {modality} view")

    def in_dim(self, modality: str) -> int | None:
        return int(self.features[modality].shape[1]) if modality in self.features else None


def load_split(cfg: AlignConfig, split: str, dataset: str | None = None, limit: int | None = None) -> PairSplit:
    """Records of `dataset` (default cfg.dataset) in `split` that have both towers' views, with
    cached features for the locked towers and raw items for the others."""
    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import load_manifest

    name = dataset or cfg.dataset
    records = [r for r in load_manifest(name, split=split) if all(r.item(m) is not None for m in cfg.towers)]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DatasetError(f"{name} has no {split} records with both {cfg.towers[0]} and {cfg.towers[1]}; "
                           "pick another split or data set, or build/speak the set first")
    features, items = {}, {}
    for m in cfg.towers:
        if cfg.is_locked(m):
            cache = FeatureCache(cfg.encoders[m])
            features[m] = torch.as_tensor(np.asarray(cache.get(records, m)), dtype=torch.float32)
        else:
            items[m] = [r.item(m) for r in records]
    return PairSplit(ids=[r.id for r in records], groups=[r.group or r.id for r in records],
                     labels=[r.label for r in records], keys={m: [str(r.item(m)) for r in records] for m in cfg.towers},
                     features=features, items=items)

# =============================================================================== evaluation

@torch.no_grad()
def embed_split(model: AlignModel, split: PairSplit, modality: str, batch_size: int = 256,
                device: torch.device | str = "cpu") -> Tensor:
    """(N, d) unit embeddings of every row of `split` for one tower, in eval mode."""
    out = []
    for start in range(0, len(split), batch_size):
        index = list(range(start, min(start + batch_size, len(split))))
        x = split.view(modality, index)
        out.append(model.embed(modality, x.to(device) if isinstance(x, Tensor) else x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim)


def gallery(keys: Sequence[str], groups: Sequence[str]) -> tuple[list[int], Tensor]:
    """Unique gallery entries of one modality and which queries they answer.

    Returns:
        rows: index of the first record of each distinct key (the gallery entries, in order).
        positives: (N, G) bool, query record i x entry j: True when they share the key or a group
            (`xmodal_core.metrics.group_positives`).
    """
    from xmodal_core.metrics import group_positives

    first: dict[str, int] = {}
    rows: list[int] = []
    entry_groups: list[set[str]] = []
    for i, key in enumerate(keys):
        if key not in first:
            first[key] = len(rows)
            rows.append(i)
            entry_groups.append(set())
        entry_groups[first[key]].add(groups[i])
    return rows, group_positives(list(groups), entry_groups, own=[first[key] for key in keys])


def retrieval_metrics(emb: Mapping[str, Tensor], split: PairSplit, towers: Sequence[str],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@k in both directions: "{query}2{gallery}_r@{k}" (queries: every record; gallery:
    distinct views of the other modality; a hit is any view of the same item) and `r_mean`."""
    from xmodal_core import evaluate

    out: dict[str, float] = {}
    for q, g in (tuple(towers), tuple(towers)[::-1]):
        rows, positives = gallery(split.keys[g], split.groups)
        out.update(evaluate.retrieval(emb[q], emb[g][rows], positives, ks).metrics(f"{q}2{g}_"))
    out["r_mean"] = float(np.mean([v for v in out.values()]))
    return out


def zeroshot_metrics(model: AlignModel, emb: Mapping[str, Tensor], split: PairSplit, cfg: AlignConfig,
                     encode_text: Callable[[list[str]], Tensor] | None) -> dict[str, float]:
    """Zero-shot top-1/top-5 of the non-text tower over the split's label set, with class
    embeddings from `cfg.templates` through the text tower. {} when it does not apply."""
    from xmodal_core import evaluate
    from xmodal_core.zeroshot import class_embeddings, load_templates

    if "text" not in cfg.towers or encode_text is None:
        return {}
    rows = [i for i, label in enumerate(split.labels) if label]
    classes = sorted({split.labels[i] for i in rows})
    if len(classes) < 2:
        return {}
    query = cfg.towers[0] if cfg.towers[1] == "text" else cfg.towers[1]
    # A locked, head-less text tower gives the same class embeddings every epoch: compute them once.
    frozen_text = "text" not in model.towers and "text" not in model.heads
    key = (tuple(classes), cfg.templates, cfg.encoders.get("text"))
    cache = model.__dict__.setdefault("_class_embedding_cache", {})
    class_emb = cache.get(key) if frozen_text else None
    if class_emb is None:
        class_emb = class_embeddings(classes, load_templates(cfg.templates), encode_text)
        if frozen_text:
            cache.clear()
            cache[key] = class_emb
    result = evaluate.zeroshot(emb[query][rows], [split.labels[i] for i in rows], classes,
                               class_emb=class_emb.to(emb[query].dtype))
    return {"zeroshot_top1": result.top1, "zeroshot_top5": result.top5}


@torch.no_grad()
def evaluate(model: AlignModel, split: PairSplit, cfg: AlignConfig, *, device: torch.device | str = "cpu",
             zero_shot: bool = True) -> dict[str, float]:
    """Validation metrics of `model` on `split`: retrieval both ways, then zero-shot where it applies."""
    was_training = model.training
    model.eval()
    try:
        emb = {m: embed_split(model, split, m, cfg.eval_batch_size, device) for m in cfg.towers}
        metrics = retrieval_metrics(emb, split, cfg.towers)
        if zero_shot and any(split.labels):
            metrics.update(zeroshot_metrics(model, emb, split, cfg, text_encoder_fn(model, cfg, device, cached=True)))
        return metrics
    finally:
        model.train(was_training)


# =============================================================================== training

def fill_vocabulary(model: AlignModel, cfg: AlignConfig) -> None:
    """A vocab head's names: the locked text tower's unit embeddings of `cfg.vocabulary`."""
    from xmodal_core.data.features import text_features

    names = torch.as_tensor(text_features(cfg.encoders["text"], cfg.vocabulary))
    for head in model.heads.values():
        head.names.copy_(torch.nn.functional.normalize(names.float(), dim=-1))


def _vocab_rows(saved: dict, own: dict, source: Path, cfg: AlignConfig) -> tuple[dict, list[int]]:
    """A vocab head's output rows carried over by name from an earlier run with another vocabulary
    (new names keep their fresh rows), and the indexes of the rows carried over."""
    import json

    old_vocab = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))["config"].get("vocabulary") or []
    where = {name: i for i, name in enumerate(old_vocab)}
    out = {}
    pairs = [(i, where[n]) for i, n in enumerate(cfg.vocabulary) if n in where]
    for key in [k for k in own if k.startswith("heads.") and (k.endswith("out.weight") or k.endswith("out.bias"))]:
        rows = own[key].clone()
        if key in saved and pairs:
            new_i, old_i = map(list, zip(*pairs))
            rows[new_i] = saved[key][old_i].to(rows.dtype)
        out[key] = rows
    return out, [i for i, _ in pairs]


def init_heads(model: AlignModel, run: str) -> list[int]:
    """Start `model` from a trained run's heads and logit scale (`AlignConfig.init_from`); a vocab
    head keeps what it learnt of the names both runs share (returns their row indexes)."""
    from safetensors.torch import load_file

    from xmodal_core.models.aligned import HEADS_FILE, resolve_run_dir

    source = resolve_run_dir(run)
    saved = load_file(str(source / HEADS_FILE))
    own = model.state_dict()
    known: list[int] = []
    if model.cfg.head == "vocab":
        rows, known = _vocab_rows(saved, own, source, model.cfg)
        saved = {**{k: v for k, v in saved.items() if not k.endswith((".names",)) and k not in rows}, **rows}
        saved.update({k: own[k] for k in own if k.endswith(".names")})
    wanted = [k for k in own if k.startswith("heads.")]
    missing = [k for k in wanted if k not in saved]
    mismatched = [k for k in wanted if k in saved and saved[k].shape != own[k].shape]
    if not wanted or missing or mismatched:
        raise DatasetError(f"init_from={run}: its heads do not fit this run (missing {missing[:3]}, other shapes "
                           f"{mismatched[:3]}); use the same towers, head, hidden_dim and encoders")
    scales = [k for k in own if k.startswith("losses.") and k in saved and saved[k].shape == own[k].shape]
    model.load_state_dict({**own, **{k: saved[k] for k in wanted + scales}})
    return known


def learn_only_new_names(model: AlignModel, known: list[int]) -> None:
    """`AlignConfig.freeze_body`: the vocab head's body and the rows of names it already knew stay
    exactly as they are; only the new names' rows learn (so adding names never makes it forget
    others, and a few new names cost a few rows' gradients and optimiser steps)."""
    for head in model.heads.values():
        new = sorted(set(range(head.vocabulary_size)) - set(known))
        if not new:
            raise InputError("freeze_body: every name of the vocabulary is already known to init_from, so "
                             "nothing would learn; train without freeze_body")
        head.learn_only(new)


def train(cfg: AlignConfig, train_split: PairSplit, val_split: PairSplit | None, ctx: Any, *,
          info: DistInfo | None = None, dataset_name: str | None = None) -> TrainResult:
    """Train `cfg` on `train_split`, validating on `val_split` every epoch (`trainers.loop`).

    The best epoch's heads (and fine-tuned towers) go to `run_dir/heads.safetensors` with
    `run_dir/config.json` (`xmodal_core.models.aligned.load_aligned` reads them back).
    """
    info = info or init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed)
    in_dims = {m: train_split.in_dim(m) for m in cfg.towers}
    if cfg.head == "vocab" and not cfg.vocabulary:
        texts = train_split.items.get("text") or train_split.keys["text"]
        extra = (val_split.keys["text"] if val_split is not None else [])
        cfg = replace(cfg, vocabulary=tuple(sorted(set(texts) | set(extra))))
    model = build_model(cfg, in_dims)
    if cfg.head == "vocab":
        fill_vocabulary(model, cfg)
    known = init_heads(model, cfg.init_from) if cfg.init_from else []
    if cfg.freeze_body:
        learn_only_new_names(model, known)
    model = model.to(device)
    if info.is_main:
        save_config(ctx.run_dir, cfg, model.embed_dim, in_dims)

    def inputs(local: Tensor, device: torch.device) -> tuple[Any, Any]:
        return (to_device(train_split.view(cfg.anchor, local), device),
                to_device(train_split.view(cfg.other, local), device))

    def scalars(model: AlignModel) -> dict[str, float]:
        scale = model.logit_scale()
        return {} if scale is None else {"logit_scale": scale}

    validate = None
    if val_split is not None and len(val_split):
        def validate(model: AlignModel) -> dict[str, float]:
            return evaluate(model, val_split, cfg, device=device)

    recipe = Recipe(model=model, n_train=len(train_split), inputs=inputs,
                    lr_of=lambda name: cfg.scaled_lr(cfg.tower_lr if name.startswith("towers.") else cfg.lr),
                    base_lr=cfg.scaled_lr(cfg.lr), save=lambda model: save_heads(ctx.run_dir, model),
                    artifact="heads", evaluate=validate, scalars=scalars,
                    config_file=Path(ctx.run_dir) / CONFIG_FILE, find_unused_parameters=bool(model.towers))
    return train_loop(cfg, recipe, ctx, info, dataset_name=dataset_name)


# =============================================================================== entry points

def evaluate_run(run_dir_or_id: str | int | Path, dataset: str, split: str = "test",
                 limit: int | None = None) -> dict[str, float]:
    """Retrieval (and zero-shot) metrics of a trained run on another data set's split."""
    return evaluate_saved_run(load_aligned, load_split, evaluate, run_dir_or_id, dataset, split, limit)


def train_run(run: Any, ctx: Any) -> None:
    """What the run queue calls for kind "align": build the splits from the run's config, train."""
    train_queued_run(AlignConfig.from_dict(run.config), ctx, load_split, train, log_data=True)
