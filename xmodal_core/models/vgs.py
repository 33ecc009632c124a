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
        require_at_least_one(self, ("d_model", "fine_layers", "fine_heads", "speech_stride", "fine_batch",
                                    "batch_size", "epochs", "k_coarse"))
        if self.d_model % self.fine_heads:
            raise InputError(f"d_model {self.d_model} must be a multiple of fine_heads {self.fine_heads}")
        if self.lambda_coarse < 0 or self.lambda_fine < 0 or self.lambda_coarse + self.lambda_fine == 0:
            raise InputError("lambda_coarse and lambda_fine must be >= 0 and not both 0")
        check_schedule(self.schedule)
        check_unit_interval("dropout", self.dropout)
        require_encoders(self.encoders, ("speech", "image"))
        if self.best_metric not in METRICS:
            raise InputError(f"best_metric {self.best_metric!r} is not a validation metric; use one of "
                             f"{', '.join(METRICS)}")

    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / self.lr_base_batch if self.lr_base_batch else self.lr

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

# =============================================================================== saving, loading, retrieval

def save_config(run_dir: str | Path, cfg: VGSConfig, dims: Mapping[str, int]) -> Path:
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, {"kind": "vgs", "config": cfg.to_dict(), "dims": dict(dims)})


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
    model = FastVGS(cfg, **saved["dims"])
    model.load_state_dict(load_file(str(run_dir / MODEL_FILE)))
    dev = torch.device(device)
    return VGSRetriever(run_dir, cfg, model.to(dev), dev)
