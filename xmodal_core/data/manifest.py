"""One manifest format for every data set: JSON Lines, one `Record` per example.

A record holds up to three views of one example (an image, a recording, a text) plus
its `group` (the item it belongs to: several captions or recordings of one image share
a group, so they are all positives) and its `split`. Splits are disjoint by group and,
when asked, by speaker, and are a pure function of the ids (a salted hash), so they do
not move when a set is rebuilt or grows.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from xmodal_core import paths
from xmodal_core.errors import DatasetError, InputError
from xmodal_core.fsio import atomic_write

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_SALT = "xmodal-split-v1"
MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"
MODALITIES = ("image", "speech", "text")

# A progress callback: progress(done, total).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Record:
    """One example.

    Attributes:
        id: unique in its set, e.g. "tuxpaint:animals/birds/owl.png".
        image: path to an image file, or None.
        audio: path to an audio file, or None.
        text: caption, transcript or label text, or None.
        label: class (e.g. a digit word, a category path), or None.
        group: the item this example belongs to; examples sharing a group are positives.
        speaker: who spoke `audio` (a person's id, or a TTS voice id), or None.
        source: where it came from, e.g. "tuxpaint-stamps-default", "tts:espeak-ng".
        split: "train" | "val" | "test".
        license: licence of the media, e.g. "GPL-2", "CC BY-SA 4.0".
    """

    id: str
    image: str | None = None
    audio: str | None = None
    text: str | None = None
    label: str | None = None
    group: str = ""
    speaker: str | None = None
    source: str = ""
    split: str = "train"
    license: str = ""

    @property
    def modalities(self) -> tuple[str, ...]:
        """Which views this record has, in ("image", "speech", "text") order."""
        present = {"image": self.image, "speech": self.audio, "text": self.text}
        return tuple(m for m in MODALITIES if present[m] is not None)

    def item(self, modality: str) -> str | None:
        """The record's view for one modality: a path for image/speech, a string for text."""
        if modality == "image":
            return self.image
        if modality in ("speech", "audio"):
            return self.audio
        if modality == "text":
            return self.text
        raise InputError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")

    def to_dict(self) -> dict:
        return asdict(self)


_FIELDS = tuple(f.name for f in fields(Record))


@dataclass
class Skipped:
    """A source file left out of a set, and why."""

    source: str
    reason: str


@dataclass
class BuildSummary:
    """What a build, a `speak` run or a feature extraction did; written next to the manifest.

    `counts[split][modality]` counts records that have that view; `counts[split]["records"]`
    counts records. `notes` are sentences a person should read before quoting a number
    from this set (e.g. class words of an evaluation set that occur in training texts).
    """

    name: str
    path: str = ""
    records: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    seconds: float = 0.0

    def skip(self, source: object, reason: str) -> None:
        self.skipped.append(Skipped(str(source), reason))

    def skipped_by_reason(self) -> dict[str, int]:
        """How many were skipped per reason (the reason text up to its first ':')."""
        return dict(Counter(s.reason.split(":")[0] for s in self.skipped))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["skipped_by_reason"] = self.skipped_by_reason()
        return out

    def format(self) -> str:
        """A few human-readable lines: counts per split and modality, skips, notes."""
        lines = [f"{self.name}: {self.records} records -> {self.path}"]
        for split, row in self.counts.items():
            views = ", ".join(f"{m} {row.get(m, 0)}" for m in MODALITIES if row.get(m))
            lines.append(f"  {split:<5} {row.get('records', 0):>6} records ({views})")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)}:")
            for reason, n in sorted(self.skipped_by_reason().items(), key=lambda kv: -kv[1]):
                lines.append(f"    {n:>5}  {reason}")
            for s in self.skipped[:10]:
                lines.append(f"           e.g. {s.source}: {s.reason}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def count_records(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """counts[split] = {"records": n, "image": n, "speech": n, "text": n}, splits in train/val/test order."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        counts[r.split]["records"] += 1
        for m in r.modalities:
            counts[r.split][m] += 1
    order = {s: i for i, s in enumerate(SPLITS)}
    return {s: dict(counts[s]) for s in sorted(counts, key=lambda s: (order.get(s, 99), s))}


# --- locations -------------------------------------------------------------------------

def dataset_dir(name: str) -> Path:
    """Folder of a built set: `datasets_dir()/NAME` (not created)."""
    from xmodal_core.validate import check_name

    return paths.datasets_dir() / check_name(name, "data set name")


def manifest_path(name_or_path: str | Path) -> Path:
    """The manifest file for a set name, a set folder or a manifest path.

    A plain name ("emoji") always means a built set, even if a folder of that name
    happens to exist in the current directory; a `Path`, or text with a "/" or ending in
    ".jsonl", is a path.
    """
    from xmodal_core.validate import check_path_text

    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".jsonl"):
        p = check_path_text(text, "manifest path")
        return p / MANIFEST_NAME if p.is_dir() else p
    return dataset_dir(text) / MANIFEST_NAME


# --- reading and writing ---------------------------------------------------------------

def _stored_path(value: str | None, base: Path) -> str | None:
    """Paths under the datasets folder are stored relative to the manifest, so a home moves."""
    if value is None:
        return None
    p = Path(value)
    try:
        p.resolve().relative_to(paths.datasets_dir().resolve())
    except ValueError:
        return str(p)
    return os.path.relpath(p.resolve(), base.resolve())


def _loaded_path(value: str | None, base: Path) -> str | None:
    if value is None:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else os.path.normpath(base / p))


def write_manifest(path: str | Path, records: Sequence[Record]) -> Path:
    """Write records as JSON Lines atomically (temp file in the same folder, then rename).

    Media paths inside the datasets folder are stored relative to the manifest.
    Raises `DatasetError` on duplicate ids.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DatasetError(f"duplicate record id {r.id!r} while writing {path}")
        seen.add(r.id)
    base = path.parent
    lines = []
    for r in records:
        row = r.to_dict()
        row["image"] = _stored_path(r.image, base)
        row["audio"] = _stored_path(r.audio, base)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write(path, "".join(lines), fsync=True)
    return path


def _text_lines(fh, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file; a binary file gives a DatasetError, not UnicodeDecodeError."""
    lineno = 0
    try:
        for lineno, line in enumerate(fh, 1):
            if "\x00" in line:
                raise DatasetError(f"{path} is a binary file, not a manifest (JSON Lines text); rebuild the set")
            yield lineno, line
    except UnicodeDecodeError:
        raise DatasetError(f"{path} line {lineno + 1} is not UTF-8 text: not a manifest; "
                           "give a manifest.jsonl written by `xmodal data build`") from None


def iter_manifest(name_or_path: str | Path) -> Iterator[Record]:
    """Records of a manifest, one at a time (paths made absolute)."""
    path = manifest_path(name_or_path)
    if not path.is_file():
        raise DatasetError(
            f"no manifest at {path}: build the set first (`xmodal data build {name_or_path}`) "
            "or give the path of a manifest.jsonl"
        )
    base = path.parent
    with open(path, encoding="utf-8") as fh:
        for lineno, line in _text_lines(fh, path):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                unknown = set(row) - set(_FIELDS)
                if unknown or "id" not in row:
                    raise ValueError(f"unknown fields {sorted(unknown)}" if unknown else "no 'id'")
                row["image"] = _loaded_path(row.get("image"), base)
                row["audio"] = _loaded_path(row.get("audio"), base)
                yield Record(**row)
            except (ValueError, TypeError) as exc:
                raise DatasetError(f"{path} line {lineno} is not a manifest record ({exc}); rebuild the set") from None


def load_manifest(name_or_path: str | Path, *, split: str | None = None) -> list[Record]:
    """All records of a built set (by name) or a manifest file, optionally one split only."""
    if split is not None and split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [r for r in iter_manifest(name_or_path) if split is None or r.split == split]


def write_summary(directory: str | Path, summary: BuildSummary) -> Path:
    """`summary.json` beside the manifest (atomic)."""
    path = Path(directory) / SUMMARY_NAME
    atomic_write(path, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def read_summary(name: str) -> dict | None:
    path = dataset_dir(name) / SUMMARY_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None




@dataclass
class DatasetInfo:
    """A built set as `xmodal data list` shows it."""

    name: str
    path: str
    records: int
    counts: dict[str, dict[str, int]]
    sources: list[str]
    licenses: list[str]
    notes: list[str]


def list_datasets() -> list[DatasetInfo]:
    """Every built set under `datasets_dir()`, with counts per split and modality."""
    out = []
    for folder in sorted(paths.datasets_dir().iterdir()):
        manifest = folder / MANIFEST_NAME
        if folder.name.startswith("_") or not manifest.is_file():
            continue
        records = load_manifest(manifest)
        summary = read_summary(folder.name) or {}
        out.append(DatasetInfo(
            name=folder.name,
            path=str(manifest),
            records=len(records),
            counts=count_records(records),
            sources=sorted({r.source for r in records}),
            licenses=sorted({r.license for r in records}),
            notes=list(summary.get("notes", [])),
        ))
    return out


# --- splits ----------------------------------------------------------------------------

def hash_unit(key: str, salt: str = SPLIT_SALT) -> float:
    """A stable number in [0, 1) for a key."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for_key(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = SPLIT_SALT) -> str:
    """train/val/test for one key, by thresholding its hash at the cumulative fractions."""
    fractions = _check_fractions(fractions)
    u = hash_unit(key, salt)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise InputError("split fractions must be three non-negative numbers (train, val, test) summing to 1, "
                         f"got {tuple(fractions)}")
    return tuple(float(f) for f in fractions)  # type: ignore[return-value]


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Keep the smaller key as root so the component key does not depend on order.
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


_STRICTNESS = {"train": 0, "val": 1, "test": 2}


def split_by_group(
    records: Sequence[Record],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    by_speaker: bool = False,
    forced: Callable[[Record], str | None] | None = None,
    salt: str = SPLIT_SALT,
) -> list[Record]:
    """Assign splits so that no group (and, with `by_speaker`, no speaker) spans two splits.

    Groups linked through a shared speaker form one unit; each unit's split comes from a
    salted hash of its smallest key, so it is stable as the set grows. `forced(record)`
    may pin a record's unit to a split (e.g. human speech -> "test"); when pins disagree
    the stricter one wins (test > val > train).

    Returns new records (same order) with `split` set.
    """
    fractions = _check_fractions(fractions)
    uf = _UnionFind()
    for r in records:
        g = "g:" + (r.group or r.id)
        uf.find(g)
        if by_speaker and r.speaker:
            uf.union(g, "s:" + r.speaker)
    pinned: dict[str, str] = {}
    if forced is not None:
        for r in records:
            want = forced(r)
            if want is None:
                continue
            if want not in SPLITS:
                raise InputError(f"forced split {want!r} for {r.id} is not one of {SPLITS}")
            root = uf.find("g:" + (r.group or r.id))
            prev = pinned.get(root)
            if prev is None or _STRICTNESS[want] > _STRICTNESS[prev]:
                pinned[root] = want
    out = []
    for r in records:
        root = uf.find("g:" + (r.group or r.id))
        split = pinned.get(root) or split_for_key(root, fractions, salt)
        out.append(replace(r, split=split))
    return out


def check_disjoint(records: Iterable[Record], *, by_speaker: bool = False) -> list[str]:
    """Problems (empty when fine): groups, or speakers when asked, found in more than one split."""
    by_group: dict[str, set[str]] = defaultdict(set)
    by_spk: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_group[r.group or r.id].add(r.split)
        if by_speaker and r.speaker:
            by_spk[r.speaker].add(r.split)
    problems = [f"group {g!r} is in {sorted(s)}" for g, s in by_group.items() if len(s) > 1]
    problems += [f"speaker {k!r} is in {sorted(s)}" for k, s in by_spk.items() if len(s) > 1]
    return problems
