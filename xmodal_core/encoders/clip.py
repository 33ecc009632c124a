"""open_clip towers (text or image) from a local checkpoint or an HF-cache hit.

No package ships pretrained CLIP weights we can install, so a checkpoint must be
given as a local file, or be a pretrained tag that open_clip finds in the local
Hugging Face cache (never downloaded: HF_HUB_OFFLINE is on). `random` builds a
randomly initialised model, which the tests use with a tiny config.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from xmodal_core.encoders._util import auto_device, file_fingerprint
from xmodal_core.encoders.base import TorchModelEncoder
from xmodal_core.errors import InputError, ModelNotFoundError
from xmodal_core.images import load_image

_MODELS: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}


def _load(arch: str, checkpoint: str, device: torch.device):
    import open_clip

    key = (arch, checkpoint, str(device))
    if key in _MODELS:
        return _MODELS[key]
    if arch not in open_clip.list_models():
        raise ModelNotFoundError(
            f"open_clip has no architecture {arch!r}; known ones include {', '.join(open_clip.list_models()[:8])}, ..."
        )
    if checkpoint == "random":
        pretrained = None
    elif Path(checkpoint).expanduser().is_file():
        pretrained = str(Path(checkpoint).expanduser())
    else:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        if checkpoint not in tags:
            raise ModelNotFoundError(
                f"open_clip checkpoint {checkpoint!r} for {arch} is neither a local file nor a known pretrained tag "
                f"({', '.join(tags) or 'none'}): give the path to a .pt/.bin/.safetensors checkpoint"
            )
        pretrained = checkpoint
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    except Exception as exc:  # open_clip raises RuntimeError/OSError/HF errors when weights are not local
        raise ModelNotFoundError(
            f"could not load open_clip {arch} with checkpoint {checkpoint!r} offline ({type(exc).__name__}: {exc}); "
            "put the checkpoint file on disk and pass its path, e.g. open_clip:ViT-B-32:image:/path/to/ckpt.pt"
        ) from None
    model.eval()
    tokenizer = open_clip.get_tokenizer(arch)
    _MODELS[key] = (model, preprocess, tokenizer)
    return _MODELS[key]


class OpenCLIPEncoder(TorchModelEncoder):
    """One tower of an open_clip model. Name form: `open_clip:ARCH:TOWER:CHECKPOINT`."""

    def __init__(self, arch: str, tower: str, checkpoint: str, device: str | None = None):
        if tower not in ("text", "image"):
            raise InputError(f"open_clip tower must be 'text' or 'image', not {tower!r}")
        self.arch, self.tower, self.checkpoint = arch, tower, checkpoint
        self.name = f"open_clip:{arch}:{tower}:{checkpoint}"
        self.modality = "text" if tower == "text" else "image"
        self._model, self._preprocess, self._tokenizer = _load(arch, checkpoint, auto_device(device))
        self.dim = int(self._model.text_projection.shape[1] if hasattr(self._model, "text_projection") and
                       isinstance(self._model.text_projection, torch.Tensor) else self._model.visual.output_dim)
        self.token_dim = self.dim
        ckpt = Path(checkpoint).expanduser()
        self._weights_id = f"{arch}-{file_fingerprint(ckpt) if ckpt.is_file() else checkpoint}"

    @torch.no_grad()
    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor:
        if self.tower == "text":
            for i, text in enumerate(items):
                if not isinstance(text, str) or not text.strip():
                    raise InputError(f"text item {i} is empty or not a string")
            return self._model.encode_text(self._tokenizer(list(items)).to(self.device))
        images = [load_image(item) for item in items]  # PIL images too: the size check bounds the resize
        batch = torch.stack([self._preprocess(img.convert("RGB")) for img in images]).to(self.device)
        return self._model.encode_image(batch)

    def encode_tokens(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        # open_clip does not expose token features uniformly across architectures; the pooled
        # embedding stands in as a single token so fine scoring still has an input.
        pooled = self.encode_batch(items).float().cpu()[:, None, :]
        return pooled, torch.ones(pooled.shape[:2], dtype=torch.bool)


def parse_name(name: str) -> tuple[str, str, str]:
    """`open_clip:ARCH[:TOWER[:CHECKPOINT]]` -> (arch, tower, checkpoint); tower defaults to image."""
    parts = name.split(":", 3)
    arch = parts[1] if len(parts) > 1 else ""
    tower = parts[2] if len(parts) > 2 else "image"
    checkpoint = parts[3] if len(parts) > 3 else os.environ.get("XMODAL_OPEN_CLIP_CHECKPOINT", "")
    if not arch:
        raise InputError("open_clip model names look like open_clip:ARCH:TOWER:CHECKPOINT, e.g. open_clip:RN50:image:/path/ckpt.pt")
    if not checkpoint:
        raise ModelNotFoundError(
            f"{name}: no checkpoint given. Pretrained CLIP weights cannot be downloaded here; "
            "pass a local checkpoint (open_clip:ARCH:TOWER:/path/ckpt.pt) or 'random' for an untrained model"
        )
    return arch, tower, checkpoint
