"""Builders that turn installed real data into manifests: `build_dataset("tuxpaint")` etc.

Each builder reads one source (a Debian package or a folder), checks every file it
uses (missing, corrupt, empty or silent files are skipped and listed with the reason),
renders what needs rendering (SVG, emoji) into the set's folder, assigns splits and
returns records. `build_dataset` then writes the manifest and a summary atomically:
a failed or killed build leaves the previous manifest as it was.

Real human speech is evaluation-only by default (split "test"); see DESIGN.md.
"""
from __future__ import annotations

import gzip
import hashlib
import inspect
import re
import struct
import subprocess
import threading
import time
import unicodedata
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.data import render
from xmodal_core.data.manifest import (
    DEFAULT_FRACTIONS,
    BuildSummary,
    Progress,
    Record,
    count_records,
    dataset_dir,
    load_manifest,
    split_by_group,
    write_manifest,
    write_summary,
)
from xmodal_core.errors import DatasetError, InputError, XmodalError

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
KTUBERLING = Path("/usr/share/ktuberling")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Fashion-MNIST's class order; names as a person would say them (official: "T-shirt/top", ...).
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
# Longest accepted clip when checking real recordings (LibriVox sentences run ~8 s).
MAX_SECONDS = 30.0
WORKERS = 2


def default_fsdd_dir() -> Path:
    return paths.SHARED_DATA / "fsdd" / "recordings"


# --- shared checks -----------------------------------------------------------------------

def check_audio(path: Path) -> float:
    """Duration in seconds of a readable, non-empty, non-silent recording; raises `AudioError`."""
    from xmodal_core.audio import load_audio

    return load_audio(path, max_seconds=MAX_SECONDS, allow_silent=False).duration


def check_image(path: Path) -> tuple[int, int]:
    """(width, height) of a readable image; raises `ImageError`."""
    from xmodal_core.images import load_image

    return load_image(path).size


def _tick(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _parallel(fn: Callable, items: Sequence, progress: Progress | None) -> list:
    """fn over items on a small thread pool (the work is subprocesses and C code); order kept.

    Each result is either fn's return value or the exception it raised for that item
    (an `XmodalError`, `OSError` or failed subprocess), so one bad file never stops a build.
    """
    def safe(item):
        try:
            return fn(item)
        except (XmodalError, OSError, subprocess.SubprocessError) as exc:
            return exc

    out = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for i, result in enumerate(pool.map(safe, items), 1):
            out.append(result)
            _tick(progress, i, len(items))
    return out


def _media_dir(out_dir: Path, size: int) -> Path:
    """Where a set's rendered images go; named by render version and size, so a change re-renders."""
    return out_dir / f"media-{render.RENDER_VERSION}-{size}px"


def _cached_render(out: Path, src: Path) -> bool:
    """True when `out` exists and is newer than its source (a rebuild reuses it)."""
    try:
        return out.stat().st_size > 0 and out.stat().st_mtime >= src.stat().st_mtime
    except OSError:
        return False


def _pin_human_speech(records: Iterable[Record], split: str) -> Callable[[Record], str | None]:
    """Pin every group that has human speech to `split` (normally "test": evaluation-only)."""
    groups = {r.group for r in records if r.audio is not None}
    return lambda r: split if r.group in groups else None


# --- tuxpaint ------------------------------------------------------------------------------

def build_tuxpaint(out_dir: Path, summary: BuildSummary, *, source: Path = TUXPAINT_STAMPS, limit: int | None = None,
                   fractions=DEFAULT_FRACTIONS, human_speech_split: str | None = "test", size: int = 512,
                   progress: Progress | None = None) -> list[Record]:
    """Tux Paint stamps: every PNG and rasterised SVG with its English description and category.

    One group per stamp (`animals/birds/owl`); a stamp with both PNG and SVG gives two image
    records. `*_desc.ogg` (English, no language suffix) are people reading the description:
    speech records of that group, evaluation-only (the whole group goes to `human_speech_split`).
    """
    if not source.is_dir():
        raise DatasetError(f"Tux Paint stamps not found at {source}: install Debian tuxpaint-stamps-default")
    license_ = "GPL-2 (tuxpaint-stamps-default)"
    described = {p.with_suffix("") for p in source.rglob("*.txt")}
    for p in sorted(source.rglob("*")):
        if p.suffix in (".png", ".svg") and p.with_suffix("") not in described:
            summary.skip(p, "no description: stamp has no .txt")
        elif p.name.endswith("_desc.ogg") and Path(str(p)[: -len("_desc.ogg")]) not in described:
            summary.skip(p, "no stamp: spoken description without a .txt")
    stems = sorted(described)
    if limit is not None:
        stems = stems[:limit]

    jobs: list[tuple[str, Path, Path | None]] = []  # (kind, source file, rendered output)
    meta: dict[Path, tuple[str, str, str]] = {}      # stem -> (rel, description, category)
    for stem in stems:
        rel = stem.relative_to(source).as_posix()
        txt = stem.with_suffix(".txt")
        try:
            lines = txt.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            summary.skip(txt, f"unreadable description: {exc}")
            continue
        desc = lines[0].strip() if lines else ""
        if not desc:
            summary.skip(txt, "empty description: first line of the .txt is blank")
            continue
        images = [stem.with_suffix(s) for s in (".png", ".svg") if stem.with_suffix(s).is_file()]
        if not images:
            summary.skip(txt, "no image: description without a .png or .svg")
            continue
        meta[stem] = (rel, desc, str(Path(rel).parent.as_posix()))
        for img in images:
            rendered = _media_dir(out_dir, size) / f"{rel}.svg.png" if img.suffix == ".svg" else None
            jobs.append(("image", img, rendered))
        speech = Path(str(stem) + "_desc.ogg")
        if speech.is_file():
            jobs.append(("speech", speech, None))

    def work(job):
        kind, src, rendered = job
        if kind == "speech":
            return check_audio(src)
        if rendered is not None:
            if not _cached_render(rendered, src):
                render.rasterise_svg(src, rendered, size=size)
            return check_image(rendered)
        return check_image(src)

    results = _parallel(work, jobs, progress)
    records = []
    for (kind, src, rendered), result in zip(jobs, results):
        if isinstance(result, Exception):
            summary.skip(src, f"{'unreadable audio' if kind == 'speech' else 'unreadable image'}: {result}")
            continue
        stem = Path(str(src)[: -len("_desc.ogg")]) if kind == "speech" else src.with_suffix("")
        rel, desc, category = meta[stem]
        group = f"tuxpaint:{rel}"
        if kind == "speech":
            records.append(Record(id=f"tuxpaint:{rel}_desc.ogg", audio=str(src), text=desc, label=category, group=group,
                                  speaker="tuxpaint-recordings", source="tuxpaint-stamps-default", license=license_))
        else:
            records.append(Record(id=f"tuxpaint:{rel}{src.suffix}", image=str(rendered or src), text=desc,
                                  label=category, group=group, source="tuxpaint-stamps-default", license=license_))
    forced = _pin_human_speech(records, human_speech_split) if human_speech_split else None
    summary.extra["speaker_note"] = ("the person behind each *_desc.ogg is not recorded in the package; "
                                     "all recordings share speaker 'tuxpaint-recordings'")
    return split_by_group(records, fractions, forced=forced)


# --- emoji ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmojiEntry:
    char: str
    cldr_name: str | None
    group: str | None
    subgroup: str | None


# Blocks that hold single-character emoji, for when emoji-test.txt is not installed.
_EMOJI_RANGES = ((0x00A9, 0x00AE), (0x203C, 0x3299), (0x1F000, 0x1FAFF))
_NOT_STANDALONE = set(range(0x1F3FB, 0x1F400)) | set(range(0x1F1E6, 0x1F200)) | {0x200D, 0x20E3, 0xFE0F}


def emoji_catalogue(path: Path = EMOJI_TEST) -> list[EmojiEntry]:
    """Single-character emoji (optionally + U+FE0F) with their CLDR group and subgroup.

    From Unicode's emoji-test.txt (Debian `unicode-data`); without it, every code point in
    the emoji blocks (groups unknown, the renderer drops those without a glyph).
    """
    if not path.is_file():
        return [EmojiEntry(chr(cp), None, None, None)
                for lo, hi in _EMOJI_RANGES for cp in range(lo, hi + 1)
                if cp not in _NOT_STANDALONE and unicodedata.category(chr(cp)) == "So"]
    out, group, subgroup = [], None, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and "; fully-qualified" in line:
            cps = [int(c, 16) for c in line.split(";")[0].split()]
            cps = [c for c in cps if c != 0xFE0F]
            if len(cps) != 1 or cps[0] in _NOT_STANDALONE or group == "Component":
                continue
            m = re.search(r"E\d+\.\d+\s+(.*)$", line)
            out.append(EmojiEntry(chr(cps[0]), m.group(1).strip() if m else None, group, subgroup))
    return out


def build_emoji(out_dir: Path, summary: BuildSummary, *, limit: int | None = None, fractions=DEFAULT_FRACTIONS,
                size: int = 128, progress: Progress | None = None) -> list[Record]:
    """Colour emoji rendered from Noto Color Emoji, captioned by their lower-cased Unicode names.

    label = the CLDR emoji group ("animals & nature"); one group per emoji.
    """
    entries = emoji_catalogue()
    if not EMOJI_TEST.is_file():
        summary.notes.append(f"{EMOJI_TEST} not found (Debian unicode-data): emoji have no category labels")
    if limit is not None:
        entries = entries[:limit]
    license_ = "OFL-1.1 (Noto Color Emoji)"

    def work(entry: EmojiEntry):
        out = _media_dir(out_dir, size) / f"{ord(entry.char):05X}.png"
        if not out.is_file():
            render.render_emoji(entry.char, out, size=size)
        return out

    results = _parallel(work, entries, progress)
    records, from_cldr = [], 0
    for entry, result in zip(entries, results):
        code = f"U+{ord(entry.char):04X}"
        if isinstance(result, Exception):
            summary.skip(code, f"not rendered: {result}")
            continue
        name = unicodedata.name(entry.char, None)
        if name is None and entry.cldr_name:
            name, from_cldr = entry.cldr_name, from_cldr + 1
        if not name:
            summary.skip(code, f"no Unicode name in this Python (unicodedata {unicodedata.unidata_version})")
            continue
        records.append(Record(id=f"emoji:{ord(entry.char):04X}", image=str(result), text=name.lower(),
                              label=entry.group.lower() if entry.group else None, group=f"emoji:{ord(entry.char):04X}",
                              source="fonts-noto-color-emoji", license=license_))
    if from_cldr:
        summary.notes.append(f"{from_cldr} emoji newer than Python's unicodedata {unicodedata.unidata_version} "
                             "are captioned by their CLDR name from emoji-test.txt")
    return split_by_group(records, fractions)


# --- glyphs --------------------------------------------------------------------------------

GLYPH_SIGNS = "+\u2212\u00d7\u00f7=<>"  # plus, minus, times, divided by, equals, less than, greater than


def glyph_catalogue() -> list[tuple[str, str, str]]:
    """(character, caption, label) for every glyph the `glyphs` set draws: the 52 Latin letters
    ("The letter m."), the ten digits ("The number three.") and seven arithmetic signs named by
    Unicode ("A multiplication sign.")."""
    out = [(c, f"The letter {c}.", "letter") for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    out += [(str(i), f"The number {w}.", "digit") for i, w in enumerate(DIGIT_WORDS)]
    out += [(c, f"A {unicodedata.name(c).lower()}.", "sign") for c in GLYPH_SIGNS]
    return out


def build_glyphs(out_dir: Path, summary: BuildSummary, *, limit: int | None = None, variants: int = 24,
                 size: int = 128, seed: int = 0, fractions=DEFAULT_FRACTIONS,
                 progress: Progress | None = None) -> list[Record]:
    """Letters, digits and arithmetic signs typeset in the installed text fonts (`render.TEXT_FONTS`).

    Each glyph is drawn `variants` times, each in a font, style (filled, or outlined with a white
    inside), colour (black 60 % of the time) and stroke drawn from a generator seeded by the glyph,
    so a rebuild draws the same images. One group per glyph: its variants are positives, and a
    split holds out whole glyphs. Fonts that lack a glyph are not drawn from for it.
    """
    import random

    if variants < 1:
        raise InputError(f"variants must be at least 1, got {variants}")
    fonts = render.text_fonts()
    if not fonts:
        raise DatasetError("no text fonts found under /usr/share/fonts: install Debian fonts-dejavu-core "
                           "(and fonts-liberation, fonts-freefont-ttf, fonts-urw-base35 for variety)")
    glyphs = glyph_catalogue()
    if limit is not None:
        glyphs = glyphs[:limit]
    summary.extra["fonts"] = len(fonts)
    jobs = []
    for char, caption, label in glyphs:
        usable = [(f, lic) for f, lic in fonts if render.has_glyph(f, char)]
        if not usable:
            summary.skip(f"U+{ord(char):04X}", "no installed text font draws it")
            continue
        rng = random.Random(f"glyphs:{seed}:{ord(char)}")
        for k in range(variants):
            font, license_ = rng.choice(usable)
            color = (0, 0, 0) if rng.random() < 0.6 else tuple(rng.randrange(0, 200) for _ in range(3))
            style = dict(outlined=rng.random() < 0.5, color=color, stroke=rng.choice((3, 4, 6)))
            jobs.append((char, caption, label, k, font, license_, style))

    def work(job):
        char, _, _, k, font, _, style = job
        how = hashlib.sha1(repr((font.name, sorted(style.items()))).encode()).hexdigest()[:8]
        out = _media_dir(out_dir, size) / f"{ord(char):04X}-{k:02d}-{how}.png"  # a new draw, a new file
        if not out.is_file():
            render.render_glyph(char, out, font, size=size, **style)
        return out

    results = _parallel(work, jobs, progress)
    records = []
    for (char, caption, label, k, font, license_, style), result in zip(jobs, results):
        code = f"U+{ord(char):04X}-{k:02d}"
        if isinstance(result, Exception):
            summary.skip(code, f"not rendered: {result}")
            continue
        records.append(Record(id=f"glyphs:{code}", image=str(result), text=caption, label=label,
                              group=f"glyphs:U+{ord(char):04X}", source=f"font {font.name}", license=license_))
    return split_by_group(records, fractions)


# --- fashion-mnist ---------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped), as used by (Fashion-)MNIST, as a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: {body.size} bytes for shape {shape}")
    return body.reshape(shape)


def build_fashion_mnist(out_dir: Path, summary: BuildSummary, *, which: str = "test", limit: int | None = None,
                        per_class: int | None = None, source: Path = FASHION_MNIST, fractions=(0.9, 0.1, 0.0),
                        progress: Progress | None = None) -> list[Record]:
    """Fashion-MNIST 28x28 images with class names as labels and texts (zero-shot classification).

    which: "test" (the official 10k test set, split "test"), "train" (the 60k training set,
    hashed into train/val by `fractions`), or "all". `per_class` caps images per class,
    `limit` caps the total (both in file order).
    """
    from PIL import Image

    parts = {"test": ["t10k"], "train": ["train"], "all": ["train", "t10k"]}.get(which)
    if parts is None:
        raise InputError(f"--which must be test, train or all, not {which!r}")
    records = []
    for part in parts:
        images_path, labels_path = source / f"{part}-images-idx3-ubyte.gz", source / f"{part}-labels-idx1-ubyte.gz"
        if not images_path.is_file() or not labels_path.is_file():
            raise DatasetError(f"Fashion-MNIST files not found in {source}: install Debian dataset-fashion-mnist")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if len(images) != len(labels):
            raise DatasetError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels")
        split_name = "test" if part == "t10k" else "train"
        taken: Counter = Counter()
        chosen = []
        for i, lab in enumerate(labels):
            if per_class is not None and taken[lab] >= per_class:
                continue
            if limit is not None and len(chosen) >= limit:
                break
            taken[lab] += 1
            chosen.append(i)
        for n, i in enumerate(chosen, 1):
            out = out_dir / "media" / split_name / f"{i:05d}.png"
            if not out.is_file():
                render.save_png(Image.fromarray(images[i], mode="L"), out)
            name = FASHION_CLASSES[int(labels[i])]
            rid = f"fashion-mnist:{split_name}-{i:05d}"
            records.append(Record(id=rid, image=str(out), text=name, label=name, group=rid, source="dataset-fashion-mnist",
                                  split="test" if split_name == "test" else "train", license="MIT (Zalando SE)"))
            if n % 200 == 0 or n == len(chosen):
                _tick(progress, n, len(chosen))
    official_test = [r for r in records if r.split == "test"]
    train = split_by_group([r for r in records if r.split != "test"], fractions)
    summary.notes.append("split 'test' is Fashion-MNIST's official test set (t10k); "
                         "train/val are hashed from its training set")
    return train + official_test


# --- fsdd ------------------------------------------------------------------------------------

_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")


def build_fsdd(out_dir: Path, summary: BuildSummary, *, source: Path | None = None, limit: int | None = None,
               per_class: int | None = None, human_speech_split: str | None = "test", fractions=DEFAULT_FRACTIONS,
               progress: Progress | None = None) -> list[Record]:
    """Free Spoken Digit Dataset recordings `{digit}_{speaker}_{take}.wav`; label and text = digit word.

    Each recording is its own group. Human speech: everything goes to `human_speech_split`
    ("test") unless that is None, then splits are by speaker.
    A `limit` takes recordings in (take, digit, speaker) order, so a small slice still
    covers every digit and speaker.
    """
    source = Path(source) if source else default_fsdd_dir()
    if not source.is_dir():
        raise DatasetError(f"FSDD recordings not found at {source}: "
                           "put them in ../shared/data/fsdd/recordings or pass --source")
    entries = []
    for p in sorted(source.iterdir()):
        if p.suffix.lower() != ".wav":
            continue
        m = _FSDD_NAME.match(p.stem)
        if not m:
            summary.skip(p, "file name is not {digit}_{speaker}_{take}.wav")
            continue
        entries.append((int(m.group(3)), int(m.group(1)), m.group(2), p))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    if per_class is not None:
        seen: Counter = Counter()
        kept = []
        for e in entries:
            if seen[e[1]] < per_class:
                seen[e[1]] += 1
                kept.append(e)
        entries = kept
    if limit is not None:
        entries = entries[:limit]
    results = _parallel(lambda e: check_audio(e[3]), entries, progress)
    records = []
    for (take, digit, speaker, p), result in zip(entries, results):
        if isinstance(result, Exception):
            summary.skip(p, f"unreadable audio: {result}")
            continue
        word = DIGIT_WORDS[digit]
        rid = f"fsdd:{p.stem}"
        records.append(Record(id=rid, audio=str(p), text=word, label=word, group=rid, speaker=f"fsdd:{speaker}",
                              source="fsdd", license="CC BY-SA 4.0"))
    if human_speech_split:
        return [replace(r, split=human_speech_split) for r in records]
    return split_by_group(records, fractions, by_speaker=True)


# --- ktuberling ------------------------------------------------------------------------------

_KTUBERLING_PREFIXES = ("robot_workshop_", "butterflies_", "pizzeria_", "egypt_", "moon_", "xmas_", "tv_")
# Sound names that are not the spoken word as written.
_KTUBERLING_WORDS = {"palmtree": "palm tree", "fallingstar": "falling star", "sphynx": "sphinx",
                     "broccolli": "broccoli", "brocolli": "broccoli"}


def ktuberling_word(sound: str) -> str:
    """The English word behind a sound name: "egypt_palmtree" -> "palm tree"."""
    for prefix in _KTUBERLING_PREFIXES:
        if sound.startswith(prefix):
            sound = sound[len(prefix):]
            break
    sound = _KTUBERLING_WORDS.get(sound, sound)
    return sound.replace("_", " ").replace("-", " ")


def _xml(path: Path) -> ET.Element:
    try:
        return ET.fromstring(path.read_text(encoding="utf-8"))
    except (OSError, ET.ParseError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot parse {path}: {exc}") from None


def build_ktuberling(out_dir: Path, summary: BuildSummary, *, source: Path = KTUBERLING, limit: int | None = None,
                     size: int = 256, human_speech_split: str = "test", progress: Progress | None = None) -> list[Record]:
    """KTuberling: English object words spoken by people, with the drawings the themes link to them.

    One group per sound (word); the drawings of every theme object whose `sound` is that word
    are image records of the group. Everything is evaluation-only (`human_speech_split`).
    """
    sound_theme = source / "sounds" / "en.soundtheme"
    if not sound_theme.is_file():
        raise DatasetError(f"ktuberling English sounds not found at {sound_theme}: install Debian ktuberling-data")
    sounds: dict[str, Path] = {}
    for el in _xml(sound_theme).iter("sound"):
        name, file = el.get("name"), el.get("file")
        if name and file:
            sounds[name] = source / "sounds" / file
    # Recordings the sound theme forgets to list (tv_tree.ogg) are still linked by the themes by name.
    listed = set(sounds.values())
    for extra in sorted((source / "sounds" / "en").glob("*.ogg")):
        if extra not in listed:
            sounds.setdefault(extra.stem, extra)
    names = sorted(sounds)
    if limit is not None:
        names = names[:limit]
    wanted = set(names)
    jobs: list[tuple[str, str, Path, str | None]] = [("speech", n, sounds[n], None) for n in names]
    for theme in sorted((source / "pics").glob("*.theme")):
        root = _xml(theme)
        board = root.get("gameboard")
        if not board:
            summary.skip(theme, "theme has no gameboard")
            continue
        for obj in root.iter("object"):
            oname, sound = obj.get("name"), obj.get("sound")
            if not oname or not sound:
                continue
            if sound not in sounds:
                summary.skip(f"{theme.stem}/{oname}", f"no English recording: sound {sound!r} is not in en.soundtheme")
            elif sound in wanted:
                jobs.append(("image", sound, source / "pics" / board, oname))

    def work(job):
        kind, sound, src, oname = job
        if kind == "speech":
            return check_audio(src)
        out = _media_dir(out_dir, size) / src.name.split(".")[0] / f"{oname}.png"
        if not _cached_render(out, src):
            render.rasterise_svg(src, out, element_id=oname, size=size)
        check_image(out)
        return out

    results = _parallel(work, jobs, progress)
    records = []
    for (kind, sound, src, oname), result in zip(jobs, results):
        if isinstance(result, Exception):
            what = f"{src.stem}#{oname}" if oname else src
            summary.skip(what, f"{'unreadable audio' if kind == 'speech' else 'not rendered'}: {result}")
            continue
        word = ktuberling_word(sound)
        group = f"ktuberling:{sound}"
        if kind == "speech":
            records.append(Record(id=f"ktuberling:en/{sound}", audio=str(src), text=word, label=word, group=group,
                                  speaker="ktuberling-en", source="ktuberling-data", split=human_speech_split,
                                  license="GPL-2+ (ktuberling-data)"))
        else:
            theme = src.name.split(".")[0]
            records.append(Record(id=f"ktuberling:{theme}/{oname}", image=str(result), text=word, label=word, group=group,
                                  source="ktuberling-data", split=human_speech_split,
                                  license="CC-BY (moon theme)" if theme == "moon" else "GPL-2+ (ktuberling-data)"))
    spoken = {r.group for r in records if r.audio}
    drawn = {r.group for r in records if r.image}
    summary.extra["words_without_drawing"] = sorted(g.split(":", 1)[1] for g in spoken - drawn)
    summary.extra["speaker_note"] = "the English recordings come from one package; their speakers are not named"
    return records


# --- librivox --------------------------------------------------------------------------------

_TRANSCRIPT = re.compile(r"^<s>\s*(.*?)\s*</s>\s*\(([^)]+)\)\s*$")


def build_librivox(out_dir: Path, summary: BuildSummary, *, source: Path = LIBRIVOX, limit: int | None = None,
                   human_speech_split: str = "test", progress: Progress | None = None) -> list[Record]:
    """The LibriVox read sentences of pocketsphinx-testdata, with their transcripts (evaluation-only)."""
    transcription = source / "transcription"
    if not transcription.is_file():
        raise DatasetError(f"LibriVox transcripts not found at {transcription}: install Debian pocketsphinx-testdata")
    entries = []
    for line in transcription.read_text(encoding="utf-8").splitlines():
        m = _TRANSCRIPT.match(line.strip())
        if not m:
            if line.strip():
                summary.skip(line.strip()[:60], "transcript line not in '<s> words </s> (id)' form")
            continue
        entries.append((m.group(2), m.group(1)))
    if limit is not None:
        entries = entries[:limit]
    results = _parallel(lambda e: check_audio(source / f"{e[0]}.wav"), entries, progress)
    records = []
    for (uid, text), result in zip(entries, results):
        if isinstance(result, Exception):
            summary.skip(source / f"{uid}.wav", f"unreadable audio: {result}")
            continue
        reader = uid.rsplit("-", 1)[0]
        records.append(Record(id=f"librivox:{uid}", audio=str(source / f"{uid}.wav"), text=text, group=f"librivox:{uid}",
                              speaker=f"librivox:{reader}", source="pocketsphinx-testdata", split=human_speech_split,
                              license="public domain (LibriVox recording); BSD-2 (pocketsphinx-testdata)"))
    return records


# --- registry and the one entry point -------------------------------------------------------

BUILDERS: dict[str, Callable[..., list[Record]]] = {
    "tuxpaint": build_tuxpaint,
    "emoji": build_emoji,
    "glyphs": build_glyphs,
    "fashion-mnist": build_fashion_mnist,
    "fsdd": build_fsdd,
    "ktuberling": build_ktuberling,
    "librivox": build_librivox,
}

# Class vocabularies of evaluation sets: training texts that contain them are reported.
EVAL_VOCABULARIES: dict[str, tuple[str, ...]] = {"fsdd": DIGIT_WORDS, "fashion-mnist": FASHION_CLASSES}


def eval_vocabularies() -> dict[str, tuple[str, ...]]:
    """Class words of the evaluation sets: the fixed ones plus labels of built human-speech sets."""
    vocab = dict(EVAL_VOCABULARIES)
    for name in ("ktuberling",):
        try:
            vocab[name] = tuple(sorted({r.label for r in load_manifest(name) if r.label}))
        except DatasetError:
            pass
    return vocab


def class_word_overlap(records: Iterable[Record], vocabularies: dict[str, Sequence[str]] | None = None,
                       *, exclude: str | None = None, splits: Sequence[str] = ("train", "val")) -> dict[str, dict[str, int]]:
    """How many training texts contain each class word of each evaluation set (whole words, plural -s ok).

    Returns {eval set: {class word: number of records}} with only the words that occur.
    """
    vocabularies = eval_vocabularies() if vocabularies is None else vocabularies
    texts = [r.text.lower() for r in records if r.text and r.split in splits]
    out: dict[str, dict[str, int]] = {}
    for set_name, words in vocabularies.items():
        if set_name == exclude:
            continue
        hits = {}
        for word in words:
            pattern = re.compile(r"(?<![\w-])" + re.escape(word.lower()) + r"(?:s|es)?(?![\w-])")
            n = sum(1 for t in texts if pattern.search(t))
            if n:
                hits[word] = n
        if hits:
            out[set_name] = hits
    return out


def overlap_notes(overlap: dict[str, dict[str, int]], what: str) -> list[str]:
    notes = []
    for set_name, hits in overlap.items():
        listed = ", ".join(f"{w!r} x{n}" for w, n in sorted(hits.items(), key=lambda kv: -kv[1]))
        notes.append(f"{what} contain class words of evaluation set {set_name}: {listed}; "
                     f"a zero-shot number on {set_name} after training on them must say so")
    return notes


def build_dataset(name: str, *, limit: int | None = None, progress: Progress | None = None, out_name: str | None = None,
                  **options) -> BuildSummary:
    """Build one set from its installed source and write `datasets_dir()/NAME/manifest.jsonl` (+ summary.json).

    Args:
        name: one of `BUILDERS` (tuxpaint, emoji, glyphs, fashion-mnist, fsdd, ktuberling, librivox).
        limit: build a small slice (the first `limit` items in a fixed order).
        progress: callable(done, total).
        out_name: write under another set name (e.g. a slice next to the full set).
        **options: builder options (e.g. `per_class`, `which`, `source`, `human_speech_split`, `fractions`).

    Returns:
        The `BuildSummary` (counts per split and modality, skipped files with reasons, notes).
    """
    if name not in BUILDERS:
        raise InputError(f"unknown data set {name!r}; choose one of {', '.join(BUILDERS)}")
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    builder = BUILDERS[name]
    accepted = set(inspect.signature(builder).parameters) - {"out_dir", "summary", "limit", "progress"}
    unknown = set(options) - accepted
    if unknown:
        raise InputError(f"{name} does not take {', '.join(sorted(unknown))}; it takes {', '.join(sorted(accepted))}")
    out_dir = dataset_dir(out_name or name)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = BuildSummary(name=out_name or name)
    start = time.perf_counter()
    records = builder(out_dir, summary, limit=limit, progress=progress, **options)
    if not records:
        raise DatasetError(f"{name}: no usable records (skipped {len(summary.skipped)}: "
                           f"{summary.skipped_by_reason()}); nothing written")
    summary.records = len(records)
    summary.counts = count_records(records)
    summary.notes += overlap_notes(class_word_overlap(records, exclude=name), "training texts of this set")
    manifest = write_manifest(out_dir / "manifest.jsonl", records)
    summary.path = str(manifest)
    summary.seconds = round(time.perf_counter() - start, 2)
    write_summary(out_dir, summary)
    return summary


_ENSURE_LOCK = threading.Lock()


def ensure_dataset(name: str, *, progress: Progress | None = None) -> Path:
    """The manifest of set `name`, building it first when it is missing (the app and tools call this).

    `NAME-tts` sets are built from `NAME` and then spoken (`speak_dataset`). Builds are
    serialised in-process so two pages asking at once build once.

    Returns:
        Path of the manifest.

    Raises:
        DatasetError: `name` is neither a built set nor one xmodal knows how to build.
    """
    from xmodal_core.data.manifest import manifest_path

    path = manifest_path(name)
    if path.is_file():
        return path
    with _ENSURE_LOCK:
        if path.is_file():
            return path
        base = name[: -len("-tts")] if name.endswith("-tts") else name
        if base not in BUILDERS:
            raise DatasetError(f"no data set {name!r} is built and xmodal does not know how to build it; "
                               f"known: {', '.join(sorted(BUILDERS))} (and NAME-tts for spoken versions)")
        if not manifest_path(base).is_file():
            build_dataset(base, progress=progress)
        if name != base:
            from xmodal_core.data.speak import speak_dataset

            speak_dataset(base, progress=progress)
    return path
