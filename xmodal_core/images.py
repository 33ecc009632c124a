"""Decode any image a person gives us into an upright RGB picture, or say clearly why not.

Handles every Pillow mode (RGBA and LA composited onto white, palette with
transparency, 16-bit and float greyscale, CMYK), EXIF orientation, and refuses
decompression bombs by checking the pixel count from the header before decoding.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal_core.errors import ImageError

MAX_PIXELS = 40_000_000  # 40 megapixels: a large phone photo is ~12-50 MP
MAX_BYTES = 50 * 1024 * 1024
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = Image.fromarray(((arr - lo) * scale).astype(np.uint8), mode="L")
        mode = "L"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(source: Any, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> Image.Image:
    """Decode and normalise an image.

    Args:
        source: a path, bytes, a PIL image or an (H, W[, C]) uint8 numpy array.
        max_pixels: largest accepted width * height (from the header, before decoding).
        max_bytes: largest accepted file.

    Returns:
        A fully loaded RGB `PIL.Image.Image`, EXIF-rotated.
    """
    if source is None:
        raise ImageError("no image given: upload a PNG, JPEG, GIF, BMP or WebP file")
    if isinstance(source, Image.Image):
        img, label = source, "image"
    elif isinstance(source, np.ndarray):
        if source.size == 0 or source.ndim not in (2, 3):
            raise ImageError(f"image array has shape {source.shape}; expected (H, W) or (H, W, C)")
        arr = source if source.dtype == np.uint8 else np.clip(source, 0, 255).astype(np.uint8)
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageError(f"image is {arr.shape[1]}x{arr.shape[0]} pixels; the limit is {max_pixels / 1e6:.0f} megapixels")
        return _to_rgb(Image.fromarray(arr))
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            label = str(path)
            if not path.is_file():
                raise ImageError(f"image file not found: {path}")
            size = path.stat().st_size
            if size == 0:
                raise ImageError(f"image file {path} is empty (0 bytes)")
            if size > max_bytes:
                raise ImageError(f"image file {path} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
            data: Any = str(path)
        elif isinstance(source, (bytes, bytearray)):
            label = "uploaded bytes"
            if not source:
                raise ImageError("image is empty (0 bytes)")
            if len(source) > max_bytes:
                raise ImageError(f"image is {len(source) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
            data = io.BytesIO(bytes(source))
        else:
            raise ImageError(f"cannot read an image from a {type(source).__name__}; give a file path")
        try:
            with warnings.catch_warnings():
                # We enforce our own (lower) pixel limit below; Pillow's own check is a backstop.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(data)
        except UnidentifiedImageError:
            raise ImageError(f"{label} is not an image Pillow can read; use PNG, JPEG, GIF, BMP or WebP") from None
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{label} is too large to decode safely ({exc})") from None
        except OSError as exc:
            raise ImageError(f"could not open image {label}: {exc}") from None

    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(
            f"{label} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {max_pixels / 1e6:.0f} MP: downscale it first"
        )
    if width == 0 or height == 0:
        raise ImageError(f"{label} has zero width or height")
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label} is corrupt or truncated ({exc}); re-export or re-upload the file") from None
