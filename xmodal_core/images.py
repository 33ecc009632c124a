"""Decode any image a person gives us into an upright RGB picture, or say clearly why not.

Handles every Pillow mode (RGBA and LA composited onto white, palette with
transparency, 16-bit and float greyscale, CMYK), EXIF orientation, and refuses
decompression bombs by checking the size from the header before decoding: the pixel
count, each side and the aspect ratio (a 100000 x 1 PNG is 372 bytes, but resizing its
short side to 256 would allocate a 25.6M x 256 picture), and `resized_size` bounds any
later resize.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal_core.errors import ImageError
from xmodal_core.validate import check_media_size

MAX_PIXELS = 40_000_000  # 40 megapixels: a large phone photo is ~12-50 MP
MAX_BYTES = 50 * 1024 * 1024
MAX_SIDE = 20_000  # pixels on either side
MAX_ASPECT = 50  # longest side / shortest side; Tux Paint's most elongated stamp is ~7
MAX_RESIZED_PIXELS = 16_000_000  # the largest picture a resize for an encoder may make
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


def check_size(width: int, height: int, *, label: str = "image", max_pixels: int = MAX_PIXELS) -> None:
    """Refuse a picture of `width` x `height` pixels before it is decoded or resized.

    Raises:
        ImageError: a zero side, a side over `MAX_SIDE`, an aspect ratio over `MAX_ASPECT`,
            or more than `max_pixels` pixels.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"{label} has zero width or height")
    if max(width, height) > MAX_SIDE:
        raise ImageError(f"{label} is {width}x{height} pixels; the limit is {MAX_SIDE} pixels a side: downscale it first")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise ImageError(f"{label} is {width}x{height} pixels, an aspect ratio over {MAX_ASPECT}:1; "
                         f"crop it to a less elongated picture")
    if width * height > max_pixels:
        raise ImageError(
            f"{label} is {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {max_pixels / 1e6:.0f} MP: downscale it first"
        )


def resized_size(width: int, height: int, short_side: int, *, min_side: int = 0) -> tuple[int, int]:
    """(width, height) after scaling the short side to `short_side` (each side at least `min_side`).

    Raises:
        ImageError: the result would exceed `MAX_RESIZED_PIXELS` (an elongated picture).
    """
    check_size(width, height, max_pixels=MAX_PIXELS)
    scale = short_side / min(width, height)
    out = max(min_side, round(width * scale)), max(min_side, round(height * scale))
    if out[0] * out[1] > MAX_RESIZED_PIXELS:
        raise ImageError(f"a {width}x{height} image would become {out[0]}x{out[1]} pixels when resized; "
                         f"crop it to a less elongated picture")
    return out


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
        check_size(arr.shape[1], arr.shape[0], label="image array", max_pixels=max_pixels)
        return _to_rgb(Image.fromarray(arr))
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            label = str(path)
            check_media_size(path, "image", max_bytes, ImageError)
            data: Any = str(path)
        elif isinstance(source, (bytes, bytearray)):
            label = "uploaded bytes"
            check_media_size(source, "image", max_bytes, ImageError)
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

    check_size(*img.size, label=label, max_pixels=max_pixels)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label} is corrupt or truncated ({exc}); re-export or re-upload the file") from None
