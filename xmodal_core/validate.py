"""Checks for what a person types or names, done once where it enters (page, CLI, preset).

Every check raises `InputError` with one message per violation that says what is wrong and
what is accepted: text must be valid Unicode (no lone surrogates) without NUL bytes and
within a length limit; names are short words; paths are text a file system can take;
numbers are finite and within a range; text files must decode as UTF-8.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from xmodal_core.errors import InputError

MAX_QUERY_CHARS = 1000
MAX_NAME_CHARS = 64
MAX_PATH_CHARS = 4096
MAX_PATH_PART_CHARS = 255  # bytes per component on Linux file systems
MAX_TEMPLATE_CHARS = 300
MAX_TEMPLATES = 200  # per evaluation: each one is embedded once per class
MAX_TEXT_FILE_BYTES = 5 * 1024 * 1024
NAME_RULE = f"1-{MAX_NAME_CHARS} letters, digits, '-' or '_', starting with a letter or digit"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")

# Ranges of the numeric settings a person may give a training run (inclusive).
NUMBER_RANGES: dict[str, tuple[float, float, bool]] = {
    # name: (lowest, highest, whole number); names are the training configs' fields
    "lr": (1e-8, 1.0, False),
    "tower_lr": (0.0, 1.0, False),
    "epochs": (1, 1000, True),
    "batch_size": (1, 65536, True),
    "eval_batch_size": (1, 65536, True),
    "eval_every": (1, 1000, True),
    "fine_batch": (1, 65536, True),
    "lr_base_batch": (1, 1_000_000, True),
    "max_train": (0, 100_000_000, True),
    "max_val": (0, 100_000_000, True),
    "warmup_steps": (0, 10_000_000, True),
    "weight_decay": (0.0, 10.0, False),
    "dropout": (0.0, 0.95, False),
    "input_noise": (0.0, 10.0, False),
    "grad_clip": (0.0, 1e6, False),
    "logit_scale_init": (0.01, 1000.0, False),
    "coarse_scale_init": (0.01, 1000.0, False),
    "margin": (0.0, 100.0, False),
    "lambda_coarse": (0.0, 100.0, False),
    "lambda_fine": (0.0, 100.0, False),
    "seed": (0, 2 ** 31 - 1, True),
    "embed_dim": (1, 65536, True),
    "d_model": (1, 65536, True),
    "fine_layers": (1, 64, True),
    "fine_heads": (1, 64, True),
    "speech_stride": (1, 64, True),
    "k_coarse": (1, 1_000_000, True),
}
MAX_SECONDS_RANGE = (0.1, 3600.0)  # a clip's accepted length, seconds


def check_text(value: Any, what: str, *, max_chars: int = MAX_QUERY_CHARS, allow_empty: bool = False) -> str:
    """`value` as text, or InputError: not text, a NUL byte, a lone surrogate, too long, empty.

    The text is returned unchanged (no stripping), so callers keep their own normalisation.
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InputError(f"the {what} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise InputError(f"the {what} contains a NUL character (\\x00) at position {value.index(chr(0))}: remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"the {what} contains an invalid character (a lone surrogate, "
                         f"U+{ord(value[exc.start]):04X}) at position {exc.start}: retype that part") from None
    if len(value) > max_chars:
        raise InputError(f"the {what} is {len(value)} characters long; the limit is {max_chars}")
    if not allow_empty and not value.strip():
        raise InputError(f"the {what} is empty")
    return value


def check_name(value: Any, what: str = "name") -> str:
    """A name used as a file or folder name (data set, gallery, template list): `NAME_RULE`.

    Surrounding spaces are dropped; anything else outside the rule is refused, so a name can
    never be a path (`/etc/passwd`, `..`) or too long for the file system.
    """
    text = check_text(value, what, max_chars=10 * MAX_NAME_CHARS).strip()
    if len(text) > MAX_NAME_CHARS:
        raise InputError(f"the {what} is {len(text)} characters long; use {NAME_RULE}")
    if not _NAME_RE.fullmatch(text):
        raise InputError(f"{text!r} is not a valid {what}; use {NAME_RULE}")
    return text


def check_path_text(value: Any, what: str = "path") -> Path:
    """A path a person typed: valid text, no NUL, no component over 255 bytes; `~` expanded.

    Says nothing about where the path points (see `check_inside`)."""
    text = check_text(str(value) if isinstance(value, Path) else value, what, max_chars=MAX_PATH_CHARS).strip()
    for part in Path(text).parts:
        if len(part.encode("utf-8")) > MAX_PATH_PART_CHARS:
            raise InputError(f"the {what} has a component of {len(part.encode('utf-8'))} bytes "
                             f"({part[:40]}...); the limit is {MAX_PATH_PART_CHARS}")
    return Path(text).expanduser()


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it (also resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def check_inside(path: Path, roots: list[Path], what: str = "path") -> Path:
    """`path` resolved, or InputError when it is under none of `roots` (named in the message)."""
    if not any(is_inside(path, root) for root in roots):
        listed = ", ".join(str(r) for r in roots) or "(none)"
        raise InputError(f"the {what} {str(path)[:200]!r} is outside the folders it may be read from: {listed}")
    return path.resolve()


def data_roots() -> list[Path]:
    """Folders the app may read data sets and configs from: the repository's assets, the
    xmodal home and the shared data beside the repository (the CLI also reads what it is given)."""
    from xmodal_core import paths

    return [paths.ASSETS, paths.home(), paths.SHARED_DATA, paths.REPO_ROOT / "trainers" / "configs"]


def check_data_source(value: Any, what: str = "data set") -> str:
    """A data set name (`check_name`), or a manifest path inside `data_roots()`; InputError otherwise
    (`/etc/shadow`, `/proc/self/environ`). The message never shows the file's content."""
    text = check_text(value, what, max_chars=MAX_PATH_CHARS).strip()
    if "/" not in text and not text.endswith(".jsonl"):
        return check_name(text, f"{what} name")
    return str(check_inside(check_path_text(text, what), data_roots(), what))


def check_number(value: Any, what: str, lo: float, hi: float, *, integer: bool = False) -> float | int:
    """`value` as a finite number in [lo, hi] (an int when `integer`), or InputError."""
    if isinstance(value, bool):
        raise InputError(f"{what} must be a number, not {value}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{what} must be a number; got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{what} must be a finite number; got {value!r}")
    if integer and number != int(number):
        raise InputError(f"{what} must be a whole number; got {value!r}")
    if not lo <= number <= hi:
        raise InputError(f"{what} must be between {lo:g} and {hi:g}; got {number:g}")
    return int(number) if integer else number


def check_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The same dict with every known numeric setting (`NUMBER_RANGES`) checked and coerced;
    unknown keys pass unchanged (the config's own coercion types them)."""
    out = dict(values)
    for key, value in values.items():
        if key in NUMBER_RANGES and value is not None:
            lo, hi, integer = NUMBER_RANGES[key]
            out[key] = check_number(value, key, lo, hi, integer=integer)
    return out


def read_text_file(path: str | Path, what: str = "file", *, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """A UTF-8 text file's content, or InputError (missing, a folder, too large, binary).

    The message never quotes the content, so a file that is not meant to be read stays unread."""
    path = Path(path)
    try:
        if not path.is_file():
            raise InputError(f"the {what} {str(path)[:200]} is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(f"the {what} {path.name} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the {what} {str(path)[:200]}: {exc.strerror or 'unreadable'}") from None
    if b"\x00" in data:
        raise InputError(f"the {what} {path.name} is a binary file, not UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the {what} {path.name} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None


def check_media_size(source: Path | bytes | bytearray, kind: str, max_bytes: int, error: type[Exception]) -> None:
    """A media file (a `Path`) or byte string that is there, not empty and at most `max_bytes`; else `error`.

    `kind` ("audio", "image") starts the message: "audio file X is empty (0 bytes)", "image is 30.1 MB; ..."."""
    if isinstance(source, Path):
        if not source.is_file():
            raise error(f"{kind} file not found: {source}")
        size, where = source.stat().st_size, f"{kind} file {source}"
    else:
        size, where = len(source), kind
    if size == 0:
        raise error(f"{where} is empty (0 bytes)")
    if size > max_bytes:
        raise error(f"{where} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
