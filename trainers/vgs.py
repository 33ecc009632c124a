"""FaST-VGS: speech-image retrieval with a fast coarse scorer and a precise fine one.

Both towers are frozen (Whisper frames, EfficientNet 7x7 grid, token features from the cache);
on top of them this trains

- coarse: pooled speech and image embeddings (masked mean of projected tokens, a linear map,
  unit rows); score = `coarse_scale * cos`, so a vector index can search it;
- fine: a small cross-attention transformer in which a [CLS] token and the speech frames
  attend to each other and to the image tokens, then an MLP to one scalar per pair.

Loss: `lambda_coarse * L_coarse + lambda_fine * L_fine`, both the masked margin softmax
(captions of the same image are not each other's negatives). Retrieval is coarse-to-fine:
the index's top `k_coarse` images, reranked by the fine scorer (`xmodal_core.retrieval.coarse_to_fine`).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.align import resolve_run_dir
from trainers.common import (DistInfo, OfflineContext, any_rank, autocast, config_from_dict, config_to_dict,
                             epoch_batches, init_distributed, local_share, lr_at, make_optimizer, mean_over_ranks,
                             restore_rng, rng_states, seed_everything)
from xmodal_core.errors import DatasetError, InputError, StoreError

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
METRICS = tuple(f"{name}_r@{k}" for name in ("s2i_coarse", "i2s_coarse", "s2i_ctf") for k in (1, 5, 10))

__all__ = ["VGSConfig", "VGSSplit", "FastVGS", "load_vgs_split", "train", "evaluate", "load_vgs", "VGSRetriever",
           "evaluate_run", "train_run", "OfflineContext"]


# =============================================================================== config

@dataclass
class VGSConfig:
    """One FaST-VGS run (JSON round-trip like `AlignConfig`).

    d_model: width of the projected tokens, the coarse space and the fine transformer.
    fine_layers, fine_heads: the cross-attention transformer. speech_stride: average this many
        Whisper frames (20 ms each) into one before the fine scorer.
    fine_batch: the fine loss scores every caption against every image of the first
        `fine_batch` pairs of each batch (fine_batch^2 transformer passes).
    lambda_coarse, lambda_fine, margin: the loss (the paper's best: 0.1, 1, margin 1).
    k_coarse: candidates the fine scorer reranks at evaluation (and in `VGSRetriever`).
    """

    dataset: str = "tuxpaint-tts"
    encoders: dict[str, str] = field(default_factory=lambda: {"speech": "whisper-tiny.en",
                                                              "image": "efficientnet-lite0"})
    d_model: int = 256
    fine_layers: int = 2
    fine_heads: int = 4
    dropout: float = 0.1
    speech_stride: int = 2
    fine_batch: int = 16
    lambda_coarse: float = 0.1
    lambda_fine: float = 1.0
    margin: float = 1.0
    coarse_scale_init: float = 10.0
    batch_size: int = 32
    lr: float = 5e-4
    lr_base_batch: int | None = None
    epochs: int = 10
    warmup_steps: int = 0
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    train_split: str = "train"
    val_split: str = "val"
    max_train: int | None = None
    max_val: int | None = None
    k_coarse: int = 100
    best_metric: str = "s2i_ctf_r@1"

    def __post_init__(self) -> None:
        for name in ("d_model", "fine_layers", "fine_heads", "speech_stride", "fine_batch", "batch_size",
                     "epochs", "k_coarse"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if self.d_model % self.fine_heads:
            raise InputError(f"d_model {self.d_model} must be a multiple of fine_heads {self.fine_heads}")
        if self.lambda_coarse < 0 or self.lambda_fine < 0 or self.lambda_coarse + self.lambda_fine == 0:
            raise InputError("lambda_coarse and lambda_fine must be >= 0 and not both 0")
        if self.schedule not in ("cosine", "constant"):
            raise InputError(f"schedule must be 'cosine' or 'constant'; got {self.schedule!r}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"dropout must be in [0, 1); got {self.dropout}")
        for m in ("speech", "image"):
            if m not in self.encoders:
                raise InputError(f"no encoder named for the {m} tower; set encoders.{m}")
        if self.best_metric not in METRICS:
            raise InputError(f"best_metric {self.best_metric!r} is not a validation metric; use one of "
                             f"{', '.join(METRICS)}")

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else self.lr

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VGSConfig":
        return config_from_dict(cls, data)


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


# =============================================================================== model

class FastVGS(nn.Module):
    """Frozen-tower tokens -> coarse embeddings and a fine cross-attention scorer.

    Args:
        cfg: the run config.
        speech_dim, image_dim: token widths of the frozen towers (384, 1280).
        image_tokens: tokens per image (49 for a 7x7 grid), for the image position embedding.
    """

    def __init__(self, cfg: VGSConfig, speech_dim: int, image_dim: int, image_tokens: int):
        super().__init__()
        from xmodal_core.losses import LogitScale

        d = cfg.d_model
        self.cfg = cfg
        self.speech_in = nn.Sequential(nn.Linear(speech_dim, d), nn.LayerNorm(d))
        self.image_in = nn.Sequential(nn.Linear(image_dim, d), nn.LayerNorm(d))
        self.image_pos = nn.Parameter(torch.zeros(1, image_tokens, d))  # the grid is flattened: say where
        self.speech_coarse = nn.Linear(d, d)
        self.image_coarse = nn.Linear(d, d)
        self.coarse_scale = LogitScale(init=cfg.coarse_scale_init, max_scale=100.0)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        layer = nn.TransformerDecoderLayer(d, cfg.fine_heads, 4 * d, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.fine = nn.TransformerDecoder(layer, cfg.fine_layers)
        self.fine_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.image_pos, std=0.02)

    # -- towers' tokens -> shared-width tokens and coarse embeddings

    def speech(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, ds), (B, T) -> tokens (B, T', d), mask (B, T'), coarse embedding (B, d) unit rows.
        T' = ceil(T / speech_stride): neighbouring frames averaged."""
        x = self.speech_in(tokens) * mask[..., None]
        stride = self.cfg.speech_stride
        if stride > 1:
            pad = (-x.shape[1]) % stride
            x = F.pad(x, (0, 0, 0, pad))
            m = F.pad(mask, (0, pad)).float()
            counts = m.reshape(m.shape[0], -1, stride).sum(-1)  # (B, T')
            x = x.reshape(x.shape[0], -1, stride, x.shape[-1]).sum(2) / counts.clamp(min=1)[..., None]
            mask = counts > 0
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return x, mask, F.normalize(self.speech_coarse(pooled), dim=-1)

    def image(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, P, di), (B, P) -> tokens (B, P, d), mask, coarse embedding (B, d) unit rows."""
        x = self.image_in(tokens) + self.image_pos[:, :tokens.shape[1]]
        x = x * mask[..., None]
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return x, mask, F.normalize(self.image_coarse(pooled), dim=-1)

    # -- scores

    def coarse_scores(self, speech_emb: Tensor, image_emb: Tensor) -> Tensor:
        """(Bs, d) x (Bi, d) unit rows -> (Bs, Bi) `coarse_scale * cos`."""
        return self.coarse_scale() * speech_emb @ image_emb.T

    def fine_pairs(self, s_tok: Tensor, s_mask: Tensor, i_tok: Tensor, i_mask: Tensor) -> Tensor:
        """Fine score of row k of the speech side with row k of the image side -> (n,)."""
        cls = self.cls.expand(s_tok.shape[0], -1, -1)
        tgt = torch.cat([cls, s_tok], dim=1)  # (n, 1 + T', d)
        tgt_pad = torch.cat([torch.zeros_like(s_mask[:, :1]), ~s_mask], dim=1)
        h = self.fine(tgt, i_tok, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=~i_mask)
        return self.fine_out(h[:, 0]).squeeze(-1)

    def fine_matrix(self, s_tok: Tensor, s_mask: Tensor, i_tok: Tensor, i_mask: Tensor,
                    chunk: int = 1024) -> Tensor:
        """Every speech row against every image row -> (Bs, Bi), in chunks of `chunk` pairs."""
        bs, bi = s_tok.shape[0], i_tok.shape[0]
        si = torch.arange(bs, device=s_tok.device).repeat_interleave(bi)
        ii = torch.arange(bi, device=s_tok.device).repeat(bs)
        out = [self.fine_pairs(s_tok[si[c:c + chunk]], s_mask[si[c:c + chunk]], i_tok[ii[c:c + chunk]],
                               i_mask[ii[c:c + chunk]]) for c in range(0, bs * bi, chunk)]
        return torch.cat(out).reshape(bs, bi)

    def forward(self, s_tokens: Tensor, s_mask: Tensor, i_tokens: Tensor, i_mask: Tensor,
                item_ids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """A (local) batch of pairs -> (loss, {"coarse": .., "fine": ..}). The coarse loss uses the
        global batch (gathered over ranks); the fine one the first `fine_batch` local pairs."""
        from xmodal_core.losses import gather_features, masked_margin_softmax_loss

        cfg = self.cfg
        s_tok, s_m, s_emb = self.speech(s_tokens, s_mask)
        i_tok, i_m, i_emb = self.image(i_tokens, i_mask)
        s_all, i_all, ids_all = gather_features(s_emb, i_emb, item_ids)
        coarse = masked_margin_softmax_loss(self.coarse_scores(s_all, i_all), ids_all, cfg.margin)
        p = min(cfg.fine_batch, s_tok.shape[0])
        fine = masked_margin_softmax_loss(self.fine_matrix(s_tok[:p], s_m[:p], i_tok[:p], i_m[:p]), item_ids[:p],
                                          cfg.margin)
        loss = cfg.lambda_coarse * coarse + cfg.lambda_fine * fine
        return loss, {"coarse": coarse, "fine": fine}


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
    """(N, M) bool: caption i x distinct image j: its own image, or any image of the same item."""
    m, n_items = len(split.image_keys), int(split.item_ids.max()) + 1
    image_items = torch.zeros(m, n_items, dtype=torch.bool)
    image_items[split.image_index, split.item_ids] = True  # which items each image shows
    own = F.one_hot(split.image_index, m).bool()
    return image_items[:, split.item_ids].T | own


def _recall(ranked: Tensor, positives: Tensor, ks: Sequence[int]) -> dict[int, float]:
    """ranked: (Q, K) gallery indices best first; positives: (Q, G) bool -> {k: R@k}."""
    hits = positives.gather(1, ranked)
    return {k: float(hits[:, :k].any(1).float().mean()) for k in ks}


@torch.no_grad()
def evaluate(model: FastVGS, split: VGSSplit, cfg: VGSConfig, *, device: torch.device | str = "cpu",
             ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Coarse R@k both ways, coarse-to-fine speech -> image R@k, and milliseconds per query.

    Queries: every caption; gallery: the distinct images (a hit is any image of the caption's
    item). CTF reranks the coarse top `k_coarse` through `xmodal_core.retrieval.coarse_to_fine`
    over a flat vector index, exactly as `VGSRetriever.search` does.
    """
    from xmodal_core.metrics import recall_at_k
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
        for k, v in _recall(torch.tensor(ranked), pos, ks).items():
            out[f"s2i_ctf_r@{k}"] = v
        out["coarse_ms_per_query"] = coarse_ms
        out["ctf_ms_per_query"] = ctf_ms
        return out
    finally:
        model.train(was_training)


# =============================================================================== training

@dataclass
class TrainResult:
    steps: int
    stopped: bool
    best: dict[str, float]
    best_epoch: int | None
    last_loss: float


def train(cfg: VGSConfig, train_split: VGSSplit, val_split: VGSSplit | None, ctx: Any, *,
          info: DistInfo | None = None) -> TrainResult:
    """The FaST-VGS loop; same contract as `trainers.align.train` (ctx, stop, resume, torchrun)."""
    info = info or init_distributed(cfg.device)
    device = info.device
    seed_everything(cfg.seed)
    dims = dict(speech_dim=int(train_split.speech_tokens.shape[-1]), image_dim=int(train_split.image_tokens.shape[-1]),
                image_tokens=int(train_split.image_tokens.shape[1]))
    model = FastVGS(cfg, **dims).to(device)
    model.train()
    ddp_model: nn.Module = model
    if info.distributed:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, lambda name: cfg.scaled_lr(), cfg.weight_decay, cfg.betas)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    steps_per_epoch = len(epoch_batches(len(train_split), cfg.batch_size, 0, cfg.seed))
    total_steps = steps_per_epoch * cfg.epochs
    if info.is_main:
        ctx.set_total_steps(total_steps, device=str(device))
        save_config(ctx.run_dir, cfg, dims)

    step, best, best_epoch = 0, {}, None
    state = ctx.load_checkpoint(map_location=device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, best, best_epoch = state["step"], state["best"], state["best_epoch"]
        restore_rng(state["rng"], info)

    def checkpoint() -> None:
        rng = rng_states(info)
        if info.is_main:
            ctx.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                 "scaler": scaler.state_dict(), "step": step, "best": best,
                                 "best_epoch": best_epoch, "rng": rng, "config": cfg.to_dict()})

    last_loss, stopped = math.nan, False
    for epoch in range(step // steps_per_epoch, cfg.epochs):
        batches = epoch_batches(len(train_split), cfg.batch_size, epoch, cfg.seed)
        for b, index in enumerate(batches):
            if epoch * steps_per_epoch + b < step:
                continue
            if any_rank(info.is_main and ctx.should_stop(), info):
                stopped = True
                break
            lr_factor = lr_at(step, base_lr=1.0, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                              schedule=cfg.schedule)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor
            with autocast(device, use_amp):
                loss, parts = ddp_model(*train_split.batch(local_share(index, info), device))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            terms = mean_over_ranks(torch.stack([loss.detach(), parts["coarse"].detach(), parts["fine"].detach()]), info)
            last_loss = float(terms[0])
            if info.is_main:
                ctx.log(step, epoch + (b + 1) / len(batches),
                        {"loss": last_loss, "loss_coarse": float(terms[1]), "loss_fine": float(terms[2]),
                         "lr": cfg.scaled_lr() * lr_factor, "grad_norm": float(grad_norm),
                         "coarse_scale": float(model.coarse_scale.log_scale.detach().exp())})
        if stopped:
            break
        if info.is_main:
            if val_split is not None and len(val_split):
                metrics = evaluate(model, val_split, cfg, device=device)
                ctx.log(step, epoch + 1, {f"val/{k}": v for k, v in metrics.items()})
                if cfg.best_metric not in metrics:
                    raise InputError(f"best_metric {cfg.best_metric!r} is not among the validation metrics: "
                                     f"{', '.join(sorted(metrics))}")
                improved = best_epoch is None or metrics[cfg.best_metric] > best.get(cfg.best_metric, -math.inf)
            else:
                metrics, improved = {}, True
            if improved:
                best, best_epoch = metrics, epoch + 1
                save_model(ctx.run_dir, model)
                ctx.add_artifact("model", Path(ctx.run_dir) / MODEL_FILE)
        checkpoint()
    if stopped:
        checkpoint()
    if info.is_main and best:  # a stopped run records its best epoch so far
        ctx.add_evaluation(cfg.dataset, cfg.val_split, best)
    return TrainResult(steps=step, stopped=stopped, best=best, best_epoch=best_epoch, last_loss=last_loss)


# =============================================================================== saving, loading, retrieval

def save_config(run_dir: str | Path, cfg: VGSConfig, dims: Mapping[str, int]) -> Path:
    path = Path(run_dir) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"kind": "vgs", "config": cfg.to_dict(), "dims": dict(dims)}, indent=2) + "\n",
                   encoding="utf-8")
    tmp.replace(path)
    return path


def save_model(run_dir: str | Path, model: FastVGS) -> Path:
    from safetensors.torch import save_file

    path = Path(run_dir) / MODEL_FILE
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"format": "xmodal-vgs-v1"})
    tmp.replace(path)
    return path


class VGSRetriever:
    """A trained FaST-VGS run: coarse embeddings for an index, and the fine scorer to rerank.

    `add_images(ids, images)` indexes a gallery (keeping its tokens for the fine scorer);
    `search(audio, k, k_coarse)` runs coarse-to-fine retrieval for one recording.
    """

    def __init__(self, run_dir: Path, cfg: VGSConfig, model: FastVGS, device: torch.device):
        from xmodal_core.retrieval import VectorIndex

        self.run_dir, self.config, self.model, self.device = run_dir, cfg, model.eval(), device
        self.index = VectorIndex(cfg.d_model)
        self._image_tokens: dict[str, tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def _speech(self, items: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
        from xmodal_core.registry import get_encoder

        tokens, mask = get_encoder(self.config.encoders["speech"]).encode_tokens(list(items))
        return self.model.speech(tokens.to(self.device, torch.float32), mask.to(self.device))

    @torch.no_grad()
    def _image(self, items: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
        from xmodal_core.registry import get_encoder

        tokens, mask = get_encoder(self.config.encoders["image"]).encode_tokens(list(items))
        return self.model.image(tokens.to(self.device, torch.float32), mask.to(self.device))

    def embed_speech(self, items: Sequence[Any]) -> np.ndarray:
        """(N, d_model) coarse embeddings, unit rows."""
        return self._speech(items)[2].float().cpu().numpy()

    def embed_image(self, items: Sequence[Any]) -> np.ndarray:
        return self._image(items)[2].float().cpu().numpy()

    def add_images(self, ids: Sequence[str], images: Sequence[Any], batch_size: int = 32) -> None:
        ids, images = list(ids), list(images)
        for start in range(0, len(ids), batch_size):
            tok, mask, emb = self._image(images[start:start + batch_size])
            for j, item_id in enumerate(ids[start:start + batch_size]):
                self._image_tokens[item_id] = (tok[j], mask[j])
            self.index.add(ids[start:start + batch_size], emb.float().cpu().numpy())

    @torch.no_grad()
    def fine_scores(self, speech_tokens: tuple[Tensor, Tensor], image_ids: Sequence[str]) -> Tensor:
        """Fine scores of one recording's projected tokens ((1, T', d), (1, T')) against indexed images."""
        s_tok, s_mask = speech_tokens
        i_tok = torch.stack([self._image_tokens[i][0] for i in image_ids])
        i_mask = torch.stack([self._image_tokens[i][1] for i in image_ids])
        n = len(image_ids)
        return self.model.fine_pairs(s_tok.expand(n, -1, -1), s_mask.expand(n, -1), i_tok, i_mask)

    def search(self, audio: Any, k: int = 10, k_coarse: int | None = None):
        """Coarse-to-fine retrieval of indexed images for one recording -> `CoarseToFineResult`."""
        from xmodal_core.retrieval import coarse_to_fine

        if len(self.index) == 0:
            raise InputError("no images indexed yet: call add_images first")
        s_tok, s_mask, s_emb = self._speech([audio])
        return coarse_to_fine((s_tok, s_mask), self.index, self.fine_scores, k_coarse=k_coarse or self.config.k_coarse,
                              k=k, query_vector=s_emb[0].float().cpu().numpy())


def load_vgs(run_dir_or_id: str | int | Path, device: str = "cpu") -> VGSRetriever:
    """The best checkpoint of a FaST-VGS run (`model.safetensors` + `config.json`)."""
    from safetensors.torch import load_file

    run_dir = resolve_run_dir(run_dir_or_id)
    saved = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    if saved.get("kind") != "vgs":
        raise InputError(f"run folder {run_dir} holds a {saved.get('kind')!r} run, not a FaST-VGS run")
    if not (run_dir / MODEL_FILE).is_file():
        raise StoreError(f"run {run_dir.name} has no trained model yet ({MODEL_FILE})")
    cfg = VGSConfig.from_dict(saved["config"])
    model = FastVGS(cfg, **saved["dims"])
    model.load_state_dict(load_file(str(run_dir / MODEL_FILE)))
    dev = torch.device(device)
    return VGSRetriever(run_dir, cfg, model.to(dev), dev)


def evaluate_run(run_dir_or_id: str | int | Path, dataset: str, split: str = "test",
                 limit: int | None = None) -> dict[str, float]:
    retriever = load_vgs(run_dir_or_id)
    data = load_vgs_split(retriever.config, split, dataset=dataset, limit=limit)
    return evaluate(retriever.model, data, retriever.config, device=retriever.device)


def train_run(run: Any, ctx: Any) -> None:
    """What the run queue calls for kind "vgs"."""
    cfg = VGSConfig.from_dict(run.config)
    info = init_distributed(cfg.device)
    train_split = load_vgs_split(cfg, cfg.train_split, limit=cfg.max_train)
    val_split = load_vgs_split(cfg, cfg.val_split, limit=cfg.max_val)
    train(cfg, train_split, val_split, ctx, info=info)
