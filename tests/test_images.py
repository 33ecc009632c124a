"""Image input: every Pillow mode becomes upright RGB; bombs, truncation and junk get a clear ImageError."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from xmodal_core.errors import ImageError
from xmodal_core.images import load_image


def test_real_photo_loads_as_rgb(chelsea_png):
    img = load_image(chelsea_png)
    assert img.mode == "RGB" and img.size == (451, 300)


def test_rgba_transparent_area_becomes_white(chelsea_png, tmp_path):
    rgba = Image.open(chelsea_png).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, dtype=np.uint8)
    alpha[:, :100] = 0  # left strip fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    path = tmp_path / "rgba.png"
    rgba.save(path)
    arr = np.asarray(load_image(path))
    assert (arr[:, :100] == 255).all()
    assert arr[:, 200:].mean() < 200  # the cat is still there


def test_cmyk_jpeg_converts_to_rgb_with_same_content(chelsea_png, tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.open(chelsea_png).convert("CMYK").save(path, quality=95)
    img = load_image(path)
    ref = np.asarray(load_image(chelsea_png), dtype=np.float32)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img, dtype=np.float32) - ref).mean() < 20


def test_16bit_greyscale_and_palette(chelsea_png, tmp_path):
    grey16 = (np.asarray(Image.open(chelsea_png).convert("L"), dtype=np.uint16) * 257)
    p16 = tmp_path / "g16.png"
    Image.fromarray(grey16).save(p16)
    img = load_image(p16)
    assert img.mode == "RGB" and np.asarray(img).max() == 255
    pal = tmp_path / "pal.gif"
    Image.open(chelsea_png).convert("P").save(pal)
    assert load_image(pal).mode == "RGB"


def test_exif_orientation_is_applied(chelsea_png, tmp_path):
    img = Image.open(chelsea_png)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (300, 451)


def test_truncated_jpeg_is_refused(chelsea_png, tmp_path):
    buf = io.BytesIO()
    Image.open(chelsea_png).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims width x height (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_huge_dimensions_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming_size(100_000, 100_000))
    with pytest.raises(ImageError, match="too large|limit"):
        load_image(path)


def test_junk_empty_missing(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageError, match="not an image"):
        load_image(junk)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError):
        load_image(None)


def test_numpy_and_bytes_inputs(chelsea_png):
    arr = np.asarray(Image.open(chelsea_png))
    assert load_image(arr).size == (451, 300)
    assert load_image(chelsea_png.read_bytes()).size == (451, 300)


# ------------------------------------------------------------ size bounds before any allocation

_DECODE_UNDER_LIMIT = """
import os, resource, sys
from xmodal_core.errors import ImageError
from xmodal_core.images import load_image
from xmodal_core.encoders.image import preprocess
# torch reserves address space for its threads at import; the limit is on what decoding adds.
used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[2]), used + int(sys.argv[2])))
try:
    preprocess(load_image(sys.argv[1]))
except ImageError as exc:
    print("ImageError:", exc)
    sys.exit(3)
print("decoded")
"""


def _decode_in_subprocess(path, limit_bytes: int):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _DECODE_UNDER_LIMIT, str(path), str(limit_bytes)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


@pytest.mark.parametrize("size", [(100_000, 1), (5000, 1), (1, 30_000)])
def test_elongated_image_is_refused_under_a_memory_limit(tmp_path, size):
    # A 100000 x 1 PNG is a few hundred bytes; resized to a 256-pixel short side it would be
    # ~20 GB. With 1 GB more address space than its imports took, the process must refuse it
    # with a message, not die or raise MemoryError.
    path = tmp_path / "wide.png"
    Image.new("RGB", size).save(path)
    assert path.stat().st_size < 2000
    proc = _decode_in_subprocess(path, 1024 ** 3)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "ImageError:" in proc.stdout and f"{size[0]}x{size[1]}" in proc.stdout
    assert "MemoryError" not in proc.stdout + proc.stderr


def test_ordinary_image_still_decodes_under_the_same_memory_limit(chelsea_png):
    proc = _decode_in_subprocess(chelsea_png, 1024 ** 3)
    assert proc.returncode == 0 and "decoded" in proc.stdout, proc.stdout + proc.stderr


def test_limits_on_side_aspect_and_resized_size():
    from xmodal_core.images import MAX_ASPECT, MAX_SIDE, check_size, resized_size

    check_size(MAX_SIDE, MAX_SIDE // 2, max_pixels=MAX_SIDE ** 2)  # at the limits: accepted
    with pytest.raises(ImageError, match="pixels a side"):
        check_size(MAX_SIDE + 1, MAX_SIDE, max_pixels=10 ** 12)
    with pytest.raises(ImageError, match="aspect ratio"):
        check_size(MAX_ASPECT * 10 + 1, 10)
    # A 451 x 300 photo resized to a 256 short side: 385 x 256 (independently: 451 * 256 / 300).
    assert resized_size(451, 300, 256) == (round(451 * 256 / 300), 256)
    assert resized_size(100, 100, 256, min_side=224) == (256, 256)
    with pytest.raises(ImageError, match="when resized"):
        resized_size(MAX_ASPECT * 100, 100, 4000)


def test_elongated_array_and_pil_image_are_refused_too():
    from xmodal_core.images import MAX_ASPECT

    with pytest.raises(ImageError, match="aspect ratio"):
        load_image(np.zeros((1, MAX_ASPECT + 1, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="aspect ratio"):
        load_image(Image.new("RGB", (MAX_ASPECT + 1, 1)))
