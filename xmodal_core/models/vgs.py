"""FaST-VGS: speech-image retrieval with a fast coarse scorer and a precise fine one (the model
`trainers.vgs` trains, and `load_vgs` loads for search).

Both towers are frozen (Whisper frames, EfficientNet 7x7 grid, token features); on top of them

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmodal_core.errors import InputError, StoreError
from xmodal_core.fsio import atomic_path, atomic_write_json
from xmodal_core.models.aligned import resolve_run_dir
from xmodal_core.models.config import (JsonConfig, check_schedule, check_unit_interval, require_at_least_one,
                                       require_encoders)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
COARSE_KINDS = ("learned", "shared")
METRICS = tuple(f"{name}_r@{k}" for name in ("s2i_coarse", "i2s_coarse", "s2i_ctf") for k in (1, 5, 10))

# =============================================================================== config

@dataclass
class VGSConfig(JsonConfig):
    """One FaST-VGS run (JSON round-trip like `AlignConfig`).

    d_model: width of the projected tokens, the coarse space and the fine transformer.
    fine_layers, fine_heads: the cross-attention transformer. speech_stride: average this many
        Whisper frames (20 ms each) into one before the fine scorer.
    fine_batch: the fine loss scores every caption against every image of the first
        `fine_batch` pairs of each batch (fine_batch^2 transformer passes).
    lambda_coarse, lambda_fine, margin: the loss (the paper's best: 0.1, 1, margin 1).
    k_coarse: candidates the fine scorer reranks at evaluation (and in `VGSRetriever`).
    coarse: "learned" (`FastVGS`: both coarse embeddings learnt from the towers' tokens, on a
        spoken-caption set `dataset`) or "shared" (`SharedVGS`: the coarse stage is the shared
        space, the gallery's adapted speech head against its fused caption + picture rows,
        trained on `gallery`'s adaptation pairs, `adapt.pairs`).
    gallery, pair_voices: shared: the gallery whose names are spoken, training voices per name.
    negatives, hard_k: shared: the fine loss scores each clip against its picture and
        `negatives` pictures drawn from the coarse top `hard_k` that do not show it.
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
    coarse: str = "learned"
    gallery: str = "default"
    pair_voices: int = 10
    negatives: int = 15
    hard_k: int = 50

    def __post_init__(self) -> None:
        require_at_least_one(self, ("d_model", "fine_layers", "fine_heads", "speech_stride", "fine_batch",
                                    "batch_size", "epochs", "k_coarse"))
        if self.d_model % self.fine_heads:
            raise InputError(f"d_model {self.d_model} must be a multiple of fine_heads {self.fine_heads}")
        if self.lambda_coarse < 0 or self.lambda_fine < 0 or self.lambda_coarse + self.lambda_fine == 0:
            raise InputError("lambda_coarse and lambda_fine must be >= 0 and not both 0")
        check_schedule(self.schedule)
        check_unit_interval("dropout", self.dropout)
        require_encoders(self.encoders, ("speech", "image"))
        if self.coarse not in COARSE_KINDS:
            raise InputError(f"coarse must be one of {', '.join(COARSE_KINDS)}, not {self.coarse!r}")
        if self.coarse == "shared" and not 1 <= self.negatives <= self.hard_k:
            raise InputError(f"negatives ({self.negatives}) must be between 1 and hard_k ({self.hard_k})")
        if self.best_metric not in METRICS:
            raise InputError(f"best_metric {self.best_metric!r} is not a validation metric; use one of "
                             f"{', '.join(METRICS)}")

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else self.lr

# =============================================================================== model

def stride_pool(x: Tensor, mask: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """(B, T, d) zero-padded frames, (B, T) mask -> each `stride` neighbours averaged over their real
    frames: (B, ceil(T / stride), d) and the new mask."""
    if stride <= 1:
        return x, mask
    pad = (-x.shape[1]) % stride
    x = F.pad(x, (0, 0, 0, pad))
    counts = F.pad(mask, (0, pad)).float().reshape(mask.shape[0], -1, stride).sum(-1)  # (B, T')
    x = x.reshape(x.shape[0], -1, stride, x.shape[-1]).sum(2) / counts.clamp(min=1)[..., None]
    return x, counts > 0


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
        x, mask = stride_pool(self.speech_in(tokens) * mask[..., None], mask, self.cfg.speech_stride)
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

class _PairLayer(nn.Module):
    """One layer of the fine scorer: a pair's query token attends to the clip's frames and the
    item's grid tokens together (pre-norm), then a feed-forward block. The keys and values of both
    sides are projected once per clip and once per item (`speech_kv`, `item_kv`) and shared by
    every pair they enter, so scoring one more candidate costs a single token's attention."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm_q, self.norm_s, self.norm_i, self.norm_ff = (nn.LayerNorm(d) for _ in range(4))
        self.q, self.o = nn.Linear(d, d), nn.Linear(d, d)
        self.kv_s, self.kv_i = nn.Linear(d, 2 * d), nn.Linear(d, 2 * d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def speech_kv(self, s: Tensor) -> Tensor:
        return self.kv_s(self.norm_s(s))

    def item_kv(self, i: Tensor) -> Tensor:
        return self.kv_i(self.norm_i(i))

    def forward(self, x: Tensor, s_kv: Tensor, s_mask: Tensor, i_kv: Tensor, i_mask: Tensor) -> Tensor:
        """x (Q, C, d): the pair tokens of Q clips x C candidates each; s_kv (Q, T, 2d), s_mask (Q, T):
        each clip's keys/values; i_kv (Q, C, P, 2d), i_mask (Q, C, P): each candidate's. One softmax
        over both sides; a clip's keys are shared by its C pairs (never copied per pair)."""
        q_n, c, d = x.shape
        h = self.heads
        dh = d // h
        q = self.q(self.norm_q(x)).reshape(q_n, c, h, dh).transpose(1, 2)  # (Q, h, C, dh)
        ks, vs = (t.reshape(q_n, -1, h, dh).transpose(1, 2) for t in s_kv.chunk(2, dim=-1))  # (Q, h, T, dh)
        ki, vi = (t.reshape(q_n, c, -1, h, dh) for t in i_kv.chunk(2, dim=-1))  # (Q, C, P, h, dh)
        scale = 1.0 / math.sqrt(dh)
        att_s = (q @ ks.transpose(-1, -2)) * scale  # (Q, h, C, T)
        att_i = torch.einsum("qhcd,qcphd->qhcp", q, ki) * scale  # (Q, h, C, P)
        att_s = att_s.masked_fill(~s_mask[:, None, None, :], float("-inf"))
        att_i = att_i.masked_fill(~i_mask[:, None, :, :], float("-inf"))
        w = torch.cat([att_s, att_i], dim=-1).softmax(-1)
        t = att_s.shape[-1]
        out = w[..., :t] @ vs + torch.einsum("qhcp,qcphd->qhcd", w[..., t:], vi)  # (Q, h, C, dh)
        x = x + self.drop(self.o(out.transpose(1, 2).reshape(q_n, c, d)))
        return x + self.drop(self.ff(self.norm_ff(x)))


class SharedVGS(nn.Module):
    """FaST-VGS whose coarse stage is the shared space, and a fine scorer residual on it.

    Coarse: the adapted speech head's unit row `s` (384, computed outside: `adapt`) and each
    item's fused row `e` (`search.direct.fused_item_embeddings`), each through a linear adapter
    that starts as the identity, so before any training the coarse ranking is the direct
    path's; score = `coarse_scale * <A_s s / |A_s s|, A_e e>`.

    Fine: the clip's Whisper frames (averaged `speech_stride` at a time, then one self-attention
    layer) and the item's EfficientNet grid tokens (through a fixed PCA basis of the gallery's
    tokens, `set_image_basis`) form one memory; a query token made of both coarse rows attends to
    it through `fine_layers` layers, and an MLP gives one scalar that is added to the (detached)
    coarse score. The MLP's last layer starts at zero, so an untrained fine scorer ranks exactly as
    coarse does and training learns what coarse gets wrong (which form of a name was said, which
    of several near-identical pictures it fits). Both sides' keys are computed once per clip and
    once per item, so K_c candidates cost K_c single-token attentions (`speech_memory`, `item_memory`,
    `fine_scores`).
    """

    def __init__(self, cfg: VGSConfig, speech_dim: int, image_dim: int, image_tokens: int, coarse_dim: int = 384):
        super().__init__()
        from xmodal_core.losses import LogitScale

        d = cfg.d_model
        self.cfg = cfg
        self.speech_adapter = nn.Linear(coarse_dim, coarse_dim)
        self.item_adapter = nn.Linear(coarse_dim, coarse_dim)
        for lin in (self.speech_adapter, self.item_adapter):
            nn.init.eye_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.coarse_scale = LogitScale(init=cfg.coarse_scale_init, max_scale=100.0)
        self.speech_in = nn.Sequential(nn.Linear(speech_dim, d), nn.LayerNorm(d))
        self.speech_ctx = nn.TransformerEncoderLayer(d, cfg.fine_heads, 4 * d, cfg.dropout, activation="gelu",
                                                     batch_first=True, norm_first=True)
        self.image_in = nn.Linear(image_dim, d)  # a fixed PCA basis (`set_image_basis`), not trained
        self.image_in.requires_grad_(False)
        self.image_norm = nn.LayerNorm(d)
        self.image_pos = nn.Parameter(torch.zeros(1, image_tokens, d))
        self.speech_coarse_in = nn.Linear(coarse_dim, d)
        self.item_coarse_in = nn.Linear(coarse_dim, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.layers = nn.ModuleList(_PairLayer(d, cfg.fine_heads, cfg.dropout) for _ in range(cfg.fine_layers))
        self.fine_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        nn.init.zeros_(self.fine_out[-1].weight)
        nn.init.zeros_(self.fine_out[-1].bias)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.image_pos, std=0.02)

    @torch.no_grad()
    def set_image_basis(self, tokens: Tensor, mask: Tensor, seed: int = 0) -> None:
        """Fix `image_in` to the top principal directions of real grid tokens (N, P, di), scaled to unit variance."""
        x = tokens[mask].float()
        mean = x.mean(0)
        g = torch.Generator().manual_seed(seed)
        rows = x[torch.randperm(len(x), generator=g)[:20_000]] - mean
        _, s, v = torch.linalg.svd(rows, full_matrices=False)
        d = self.image_in.out_features
        basis = v[:d] / (s[:d, None] / math.sqrt(len(rows))).clamp(min=1e-6)
        self.image_in.weight.copy_(basis)
        self.image_in.bias.copy_(-basis @ mean)

    # -- coarse

    def speech_coarse(self, s: Tensor) -> Tensor:
        """(B, 384) adapted-head rows -> (B, 384) unit rows."""
        return F.normalize(self.speech_adapter(s), dim=-1)

    def item_coarse(self, e: Tensor) -> Tensor:
        """(B, 384) fused item rows -> (B, 384) (not normalised: the fused score is a weighted sum)."""
        return self.item_adapter(e)

    def coarse_scores(self, s_c: Tensor, i_c: Tensor) -> Tensor:
        return self.coarse_scale() * s_c @ i_c.T

    # -- fine: memories once per clip / item, then pairs

    def speech_memory(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, ds), (B, T) frames -> per-layer keys/values (B, layers, T', 2d) and mask (B, T');
        T' = ceil(T / speech_stride)."""
        x, mask = stride_pool(self.speech_in(tokens) * mask[..., None], mask, self.cfg.speech_stride)
        x = self.speech_ctx(x, src_key_padding_mask=~mask)
        return torch.stack([layer.speech_kv(x) for layer in self.layers], dim=1), mask

    def item_memory(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(M, P, di), (M, P) grid tokens -> per-layer keys/values (M, layers, P, 2d) and mask."""
        x = self.image_norm(self.image_in(tokens)) + self.image_pos[:, :tokens.shape[1]]
        return torch.stack([layer.item_kv(x) for layer in self.layers], dim=1), mask

    def fine_scores(self, s_kv: Tensor, s_mask: Tensor, s_c: Tensor, i_kv: Tensor, i_mask: Tensor,
                    i_c: Tensor) -> Tensor:
        """Fine scores of Q clips x C candidates each -> (Q, C).

        s_kv (Q, layers, T, 2d), s_mask (Q, T): `speech_memory`; s_c (Q, 384): `speech_coarse`;
        i_kv (Q, C, layers, P, 2d), i_mask (Q, C, P): `item_memory` of each clip's candidates;
        i_c (Q, C, 384): their `item_coarse` rows."""
        s_c, i_c = s_c.detach(), i_c.detach()
        x = self.cls + self.speech_coarse_in(s_c)[:, None] + self.item_coarse_in(i_c)  # (Q, C, d)
        for j, layer in enumerate(self.layers):
            x = layer(x, s_kv[:, j], s_mask, i_kv[:, :, j], i_mask)
        base = self.coarse_scale().detach() * (s_c[:, None] * i_c).sum(-1)
        return base + self.fine_out(x).squeeze(-1)

    def forward(self, s_tokens: Tensor, s_mask: Tensor, s_rows: Tensor, i_tokens: Tensor, i_mask: Tensor,
                i_rows: Tensor, groups: Tensor, candidates: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """A batch of B clips -> (loss, {"coarse", "fine"}).

        s_tokens, s_mask, s_rows: the clips' frames and adapted-head rows. i_tokens, i_mask, i_rows:
        the M items the batch needs, the first B being the clips' own pictures. groups: (B,) entry id
        of each clip (clips of one entry are not each other's negatives in the coarse loss).
        candidates: (B, C) rows of the M items per clip, column 0 its own picture.
        Coarse: masked margin softmax over the B clips x their own pictures.
        Fine: margin softmax of each clip over its C candidates (the others do not show it).
        """
        from xmodal_core.losses import masked_margin_softmax_loss

        cfg = self.cfg
        b, c = candidates.shape
        s_c = self.speech_coarse(s_rows)
        i_c = self.item_coarse(i_rows)
        zero = s_c.sum() * 0
        coarse = (masked_margin_softmax_loss(self.coarse_scores(s_c, i_c[:b]), groups, cfg.margin)
                  if cfg.lambda_coarse > 0 else zero)
        fine = zero
        if cfg.lambda_fine > 0:
            s_kv, s_m = self.speech_memory(s_tokens, s_mask)
            i_kv, i_m = self.item_memory(i_tokens, i_mask)
            scores = self.fine_scores(s_kv, s_m, s_c, i_kv[candidates], i_m[candidates], i_c[candidates])
            target = torch.zeros(b, dtype=torch.long, device=scores.device)
            fine = F.cross_entropy(scores - F.one_hot(target, c) * cfg.margin, target)
        loss = cfg.lambda_coarse * coarse + cfg.lambda_fine * fine
        return loss, {"coarse": coarse.detach(), "fine": fine.detach()}


# =============================================================================== saving, loading, retrieval

def save_config(run_dir: str | Path, cfg: VGSConfig, dims: Mapping[str, int], source: Mapping[str, Any] | None = None
                ) -> Path:
    """config.json: the run's config, the towers' dims, and (shared) what its data was built from."""
    data = {"kind": "vgs", "config": cfg.to_dict(), "dims": dict(dims)}
    if source:
        data["source"] = dict(source)
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, data)


def save_model(run_dir: str | Path, model: FastVGS) -> Path:
    from safetensors.torch import save_file

    path = Path(run_dir) / MODEL_FILE
    with atomic_path(path) as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"format": "xmodal-vgs-v1"})
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
    model = (SharedVGS if cfg.coarse == "shared" else FastVGS)(cfg, **saved["dims"])
    model.load_state_dict(load_file(str(run_dir / MODEL_FILE)))
    dev = torch.device(device)
    return VGSRetriever(run_dir, cfg, model.to(dev), dev)
