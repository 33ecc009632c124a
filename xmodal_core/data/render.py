"""Turn vector and font sources into PNG files the image tower can read.

SVG (whole files, or one element by id) goes through `rsvg-convert` (Debian
`librsvg2-bin`), or CairoSVG when that is installed instead; colour emoji come from the
Noto Color Emoji bitmap font through Pillow. Every output is written to a temporary
file and renamed, so a killed build never leaves half a PNG behind.
"""
from __future__ import annotations

import functools
import gzip
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from xmodal_core.errors import DatasetError, ImageError
from xmodal_core.fsio import atomic_path

# Bump when rendering changes, so cached renders are redone.
RENDER_VERSION = "r1"
NOTO_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
# NotoColorEmoji is a CBDT bitmap font: 109 px is the only size its strikes come in.
EMOJI_FONT_SIZE = 109


def svg_rasteriser() -> str | None:
    """"rsvg-convert", "cairosvg", or None when neither is installed."""
    if shutil.which("rsvg-convert"):
        return "rsvg-convert"
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError):
        return None
    return "cairosvg"


def save_png(img: Image.Image, out: Path) -> Path:
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out


def crop_to_content(img: Image.Image, max_side: int, pad: int = 4) -> Image.Image:
    """Crop an RGBA image to its opaque pixels, pad a little and fit it in max_side x max_side.

    Raises `ImageError` when nothing is drawn (a missing glyph or an empty element).
    """
    img = img.convert("RGBA")
    box = img.getchannel("A").getbbox()
    if box is None:
        raise ImageError("rendered image is empty (fully transparent)")
    img = img.crop(box)
    canvas = Image.new("RGBA", (img.width + 2 * pad, img.height + 2 * pad), (0, 0, 0, 0))
    canvas.paste(img, (pad, pad))
    canvas.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return canvas


@functools.lru_cache(maxsize=4)
def _parsed_svg(src: Path, mtime: float) -> tuple[ET.Element, dict, dict]:
    """(root, parent of each element, element by id) of an SVG/SVGZ file, parsed once per build."""
    try:
        raw = src.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # .svgz
            raw = gzip.decompress(raw)
        root = ET.fromstring(raw)
    except (OSError, EOFError, ET.ParseError) as exc:
        raise ImageError(f"cannot parse SVG {src}: {exc}") from None
    parents = {child: parent for parent in root.iter() for child in parent}
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    return root, parents, by_id


def svg_document(src: Path, element_id: str | None = None) -> ET.Element:
    """The root of `src` as a fresh element, drawing only `element_id` when given (every <defs> kept).

    Ancestors of the element stay (their transforms place it); their other drawing
    children are dropped. Rendering this page is more reliable than `rsvg-convert -i`,
    whose element boxes are off for transformed groups. The cached parse is never modified.

    Raises `ImageError` when the file cannot be parsed or has no such element.
    """
    root, parents, by_id = _parsed_svg(src, src.stat().st_mtime)
    if element_id is None:
        shell = ET.Element(root.tag, dict(root.attrib))
        shell.text = root.text
        shell.extend(list(root))
        return shell
    target = by_id.get(element_id)
    if target is None:
        raise ImageError(f"{src} has no element with id {element_id!r}")
    chain = [target]
    while chain[-1] in parents:
        chain.append(parents[chain[-1]])
    copy: ET.Element = target
    for below, ancestor in zip(chain, chain[1:]):
        shell = ET.Element(ancestor.tag, dict(ancestor.attrib))
        shell.text = ancestor.text
        for child in ancestor:
            if child is below:
                shell.append(copy)
            elif child.tag.rsplit("}", 1)[-1] in _NON_RENDERED:
                shell.append(child)
        copy = shell
    return copy


# Children that draw nothing themselves but may be referenced by the element.
_NON_RENDERED = {"defs", "style", "clipPath", "mask", "linearGradient", "radialGradient", "pattern", "filter",
                 "symbol", "marker"}
# Longest side of the first, locating render (pixels).
_LOCATE_PX = 2048


def _numbers(value: str | None) -> list[float]:
    try:
        return [float(v) for v in re.split(r"[\s,]+", (value or "").strip()) if v]
    except ValueError:
        return []


def _length(value: str | None) -> float | None:
    m = re.match(r"^\s*([0-9.]+)\s*(px)?\s*$", value or "")
    return float(m.group(1)) if m else None


def _render(doc: ET.Element, tmpdir: Path, zoom: float, label: str) -> Image.Image:
    svg, raw = tmpdir / "doc.svg", tmpdir / "raw.png"
    svg.write_bytes(ET.tostring(doc))
    raw.unlink(missing_ok=True)
    if svg_rasteriser() == "rsvg-convert":
        proc = subprocess.run(["rsvg-convert", "-z", f"{zoom:.5f}", "-o", str(raw), str(svg)],
                              capture_output=True, timeout=120)
        if proc.returncode != 0 or not raw.is_file():
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ImageError(f"rsvg-convert could not render {label}: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    else:
        import cairosvg

        try:
            cairosvg.svg2png(url=str(svg), write_to=str(raw), scale=zoom)
        except Exception as exc:  # cairosvg raises many parser types
            raise ImageError(f"cairosvg could not render {label}: {exc}") from None
    with Image.open(raw) as im:
        im.load()
        return im.convert("RGBA")


def rasterise_svg(src: Path, out: Path, *, element_id: str | None = None, size: int = 512) -> Path:
    """Render an SVG (or .svgz) file, or one element of it, to an RGBA PNG at most `size` px a side.

    A first render finds where the drawing is; the second sets the viewBox to that box,
    so a small element cut from a large page still comes out `size` pixels wide, and the
    output is cropped to its visible pixels.

    Args:
        src: the SVG file.
        out: the PNG to write (atomically).
        element_id: draw only the element with this id.
        size: longest side of the output, pixels.

    Raises:
        DatasetError: no rasteriser is installed.
        ImageError: the SVG (or the element) cannot be rendered or renders empty.
    """
    if svg_rasteriser() is None:
        raise DatasetError("no SVG rasteriser: install Debian librsvg2-bin (rsvg-convert) or PyPI cairosvg")
    label = f"{src}#{element_id}" if element_id else str(src)
    doc = svg_document(src, element_id)
    view = _numbers(doc.get("viewBox"))
    view = view if len(view) == 4 and view[2] > 0 and view[3] > 0 else None
    natural = max(view[2:]) if view else max(_length(doc.get("width")) or 0, _length(doc.get("height")) or 0)
    zoom = min(1.0, _LOCATE_PX / natural) if natural else 1.0
    with tempfile.TemporaryDirectory(prefix="xmodal-svg-") as tmp:
        tmpdir = Path(tmp)
        first = _render(doc, tmpdir, zoom, label)
        box = first.getchannel("A").getbbox()
        if box is None:
            raise ImageError(f"{label} renders empty (fully transparent)")
        # Pixels of the first render -> user units.
        if view:
            sx, sy, ox, oy = view[2] / first.width, view[3] / first.height, view[0], view[1]
        else:
            sx = sy = 1.0 / zoom
            ox = oy = 0.0
        pad = 1
        x0, y0 = ox + (box[0] - pad) * sx, oy + (box[1] - pad) * sy
        w, h = (box[2] - box[0] + 2 * pad) * sx, (box[3] - box[1] + 2 * pad) * sy
        # A quarter larger than needed: the located box is coarse when the first render was
        # small, and cropping then shrinking always lands on exactly `size`.
        scale = 1.25 * size / max(w, h)
        doc.set("viewBox", f"{x0:.4f} {y0:.4f} {w:.4f} {h:.4f}")
        doc.set("width", f"{max(1, round(w * scale))}")
        doc.set("height", f"{max(1, round(h * scale))}")
        doc.attrib.pop("preserveAspectRatio", None)
        img = crop_to_content(_render(doc, tmpdir, 1.0, label), size)
    return save_png(img, out)


_emoji_font: ImageFont.FreeTypeFont | None = None


def emoji_font(path: Path = NOTO_EMOJI) -> ImageFont.FreeTypeFont:
    global _emoji_font
    if _emoji_font is None:
        if not path.is_file():
            raise DatasetError(f"colour emoji font not found at {path}: install Debian fonts-noto-color-emoji")
        _emoji_font = ImageFont.truetype(str(path), size=EMOJI_FONT_SIZE)
    return _emoji_font


def render_emoji(text: str, out: Path, *, size: int = 128) -> Path:
    """Draw one emoji with Noto Color Emoji, crop to its pixels and save a `size` x `size` RGBA PNG.

    Raises `ImageError` when the font has no glyph for it (nothing is drawn).
    """
    font = emoji_font()
    canvas = Image.new("RGBA", (EMOJI_FONT_SIZE * 3, EMOJI_FONT_SIZE * 2), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), text, font=font, embedded_color=True)
    try:
        img = crop_to_content(canvas, size)
    except ImageError:
        raise ImageError(f"Noto Color Emoji has no glyph for {text!r}") from None
    square = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    square.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return save_png(square, out)


# --- glyphs: letters, digits and signs typeset in the installed text fonts ---------------------

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))
# Text fonts by file-name prefix, and the Debian package (and licence) each comes from. Symbol
# fonts (dingbats, emoji) are not here: their "A" is not a letter.
TEXT_FONTS = {
    "DejaVu": "fonts-dejavu-core (Bitstream Vera licence)",
    "Liberation": "fonts-liberation (OFL-1.1)",
    "FreeSans": "fonts-freefont-ttf (GPL-3+ with font exception)",
    "FreeSerif": "fonts-freefont-ttf (GPL-3+ with font exception)",
    "FreeMono": "fonts-freefont-ttf (GPL-3+ with font exception)",
    "NimbusSans": "fonts-urw-base35 (AGPL-3 with font exception)",
    "NimbusRoman": "fonts-urw-base35 (AGPL-3 with font exception)",
    "URWGothic": "fonts-urw-base35 (AGPL-3 with font exception)",
    "URWBookman": "fonts-urw-base35 (AGPL-3 with font exception)",
    "C059": "fonts-urw-base35 (AGPL-3 with font exception)",
    "P052": "fonts-urw-base35 (AGPL-3 with font exception)",
}
GLYPH_FONT_SIZE = 160


def text_fonts(dirs: tuple[Path, ...] = FONT_DIRS) -> list[tuple[Path, str]]:
    """Installed text fonts (.ttf/.otf whose name starts with a `TEXT_FONTS` prefix), sorted,
    each with its package and licence. Empty when none is installed."""
    found = []
    for d in dirs:
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.suffix.lower() in (".ttf", ".otf"):
                    prefix = next((k for k in TEXT_FONTS if p.name.startswith(k)), None)
                    if prefix is not None:
                        found.append((p, TEXT_FONTS[prefix]))
    return sorted(found, key=lambda t: t[0].name)


@functools.lru_cache(maxsize=64)
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, GLYPH_FONT_SIZE)


@functools.lru_cache(maxsize=64)
def _cmap(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont  # fonttools comes with matplotlib

    with TTFont(path, lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


def has_glyph(font_path: Path, char: str) -> bool:
    """True when the font's character map covers `char` (else it would draw its "missing" box)."""
    return ord(char) in _cmap(str(font_path))


def render_glyph(char: str, out: Path, font_path: Path, *, outlined: bool, color: tuple[int, int, int],
                 stroke: int = 4, size: int = 128) -> Path:
    """Typeset one character, filled with `color` or outlined in it (white inside), cropped to its
    pixels (a few pixels of transparent margin) and fitted in `size` x `size`, as stamps and
    clip art come. Raises `ImageError` when nothing is drawn."""
    font = _font(str(font_path))
    side = GLYPH_FONT_SIZE * 2
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    style = (dict(fill=(255, 255, 255, 255), stroke_width=stroke, stroke_fill=(*color, 255)) if outlined
             else dict(fill=(*color, 255)))
    ImageDraw.Draw(canvas).text((side // 2, side // 2), char, font=font, anchor="mm", **style)
    try:
        img = crop_to_content(canvas, size)
    except ImageError:
        raise ImageError(f"{font_path.name} draws nothing for {char!r}") from None
    return save_png(img, out)
