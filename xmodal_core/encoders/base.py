"""The one interface every tower implements: text, speech, image, CLIP.

An encoder turns a list of items of one modality into L2-normalised float32
embeddings, `(N, dim)`, and optionally into token-level features for the fine
reranker and heatmaps. Batching and `torch.no_grad` happen inside; the device
follows the model.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, Sequence

import numpy as np
import torch

Modality = Literal["text", "speech", "image"]


class Encoder(ABC):
    """A frozen tower.

    Attributes:
        name: registry name, e.g. "minilm".
        modality: "text" | "speech" | "image".
        dim: width of the pooled embedding.
        token_dim: width of the token-level features from `encode_tokens`.
        batch_size: items per forward pass inside `encode`.
    """

    name: str
    modality: Modality
    dim: int
    token_dim: int
    batch_size: int = 32

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model's weights live; inputs are moved there."""

    def to(self, device: str | torch.device) -> "Encoder":
        """Move the model; returns self."""
        self.module().to(device)
        return self

    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The underlying torch module (for training heads on top, or moving devices)."""

    @abstractmethod
    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor:
        """One forward pass over a small batch -> (n, dim) pooled, not normalised, on `device`."""

    @abstractmethod
    def encode_tokens(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token/frame/patch features.

        Returns:
            tokens: (N, T, token_dim) float32, zero where padded.
            mask: (N, T) bool, True where a token belongs to the item.
        """

    @property
    def weights_id(self) -> str:
        """A short hash of the weights + preprocessing, for cache keys."""
        return self.name

    @torch.no_grad()
    def encode(self, items: Sequence[Any], batch_size: int | None = None, progress: Any = None) -> np.ndarray:
        """Pooled, L2-normalised embeddings.

        Args:
            items: texts (str), audio (`xmodal_core.audio.Audio` or a path), or images (PIL or a path).
            batch_size: items per forward pass (default `self.batch_size`).
            progress: optional callable(done, total) called after each batch.

        Returns:
            (N, dim) float32 numpy array with unit rows.
        """
        items = list(items)
        bs = batch_size or self.batch_size
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), bs):
            chunk = items[start:start + bs]
            emb = self.encode_batch(chunk).float()
            emb = torch.nn.functional.normalize(emb, dim=-1)
            out[start:start + len(chunk)] = emb.cpu().numpy()
            if progress is not None:
                progress(min(start + bs, len(items)), len(items))
        return out


class TorchModelEncoder(Encoder):
    """An encoder around one torch module, `self._model`, with `self._weights_id` set by `__init__`."""

    _model: torch.nn.Module
    _weights_id: str

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def module(self) -> torch.nn.Module:
        return self._model
