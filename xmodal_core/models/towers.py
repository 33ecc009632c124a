"""Towers that train: a private copy of a pretrained encoder whose forward keeps the autograd graph.

`Encoder.encode_batch` runs under `torch.no_grad` on a model shared by the whole process
(the app's search uses the same one), so fine-tuning needs its own copy and its own
forward. Each class here reproduces its encoder's pooled embedding (same preprocessing,
same pooling) with gradients; the tests check it against `Encoder.encode`.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from xmodal_core.encoders.base import Encoder
from xmodal_core.errors import InputError


class TrainableTower(nn.Module):
    """items -> (n, dim) pooled embeddings, not normalised, with gradients to the weights."""

    modality: str
    dim: int
    encoder_name: str

    def forward(self, items: Sequence[Any]) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class TextTower(TrainableTower):
    """A sentence-transformers model (e.g. MiniLM): tokenise, transformer, its own pooling."""

    modality = "text"

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.model = copy.deepcopy(encoder.module()).requires_grad_(True)
        self.dim, self.encoder_name = encoder.dim, encoder.name

    def forward(self, items: Sequence[str]) -> Tensor:
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize  # tokenize: older releases
        features = prepare(list(items))
        features = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]


class WhisperTower(TrainableTower):
    """Whisper's encoder (decoder left out): utterance-length log-mel, mean over the frames."""

    modality = "speech"

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = copy.deepcopy(encoder.module().model.encoder).requires_grad_(True)
        self.dim, self.encoder_name = encoder.dim, encoder.name
        self.tail_seconds = float(getattr(encoder, "tail_seconds", 0.0))  # whisper-tiny.en-tail: silence appended

    def forward(self, items: Sequence[Any]) -> Tensor:
        import numpy as np

        from xmodal_core.audio import load_audio
        from xmodal_core.encoders.whisper import SAMPLE_RATE, log_mel, n_mel_frames, run_encoder

        samples = [load_audio(it, allow_silent=True).samples for it in items]
        tail = np.zeros(int(round(self.tail_seconds * SAMPLE_RATE)), dtype=np.float32)
        mels = [log_mel(np.concatenate([s, tail]) if len(tail) else s, self.device) for s in samples]
        hidden, mask = run_encoder(SimpleNamespace(model=SimpleNamespace(encoder=self.encoder)), mels)
        if len(tail):  # pool over the frames of the real audio only, as WhisperTailEncoder does
            real = torch.tensor([max(1, n_mel_frames(len(s)) // 2) for s in samples], device=hidden.device)
            mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < real[:, None]
        m = mask.to(hidden.dtype)[..., None]
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class EfficientNetTower(TrainableTower):
    """EfficientNet-Lite0: the encoder's resize/crop, last conv block, mean over the 7x7 grid."""

    modality = "image"

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.model = copy.deepcopy(encoder.module()).requires_grad_(True)
        self.dim, self.encoder_name = encoder.dim, encoder.name

    def forward(self, items: Sequence[Any]) -> Tensor:
        from PIL import Image

        from xmodal_core.encoders.image import preprocess
        from xmodal_core.images import load_image

        images = [it if isinstance(it, Image.Image) and it.mode == "RGB" else load_image(it) for it in items]
        pixels = torch.stack([preprocess(img) for img in images]).to(self.device)
        return self.model.extract_features(pixels).mean(dim=(2, 3))


def trainable_tower(encoder: Encoder) -> TrainableTower:
    """A fine-tunable copy of `encoder` (the shared, cached encoder itself is not touched)."""
    module = encoder.module()
    if encoder.modality == "text" and hasattr(module, "tokenize"):
        tower: TrainableTower = TextTower(encoder)
    elif encoder.modality == "speech" and hasattr(module, "model") and hasattr(module.model, "encoder"):
        tower = WhisperTower(encoder)
    elif encoder.modality == "image" and hasattr(module, "extract_features"):
        tower = EfficientNetTower(encoder)
    else:
        raise InputError(f"fine-tuning the {encoder.modality} tower {encoder.name!r} is not supported; "
                         f"lock it (locked={encoder.modality!r} or 'both') to train only its head")
    return tower.train()
