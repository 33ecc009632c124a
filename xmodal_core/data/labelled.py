"""Label manifests: a CSV of media files and their class names, for zero-shot classification.

A header, an `audio` or an `image` column (paths, relative to the CSV's folder or absolute) and a
`label` column; `xmodal zeroshot --manifest` reads them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from xmodal_core.errors import InputError

__all__ = ["LabelledItem", "read_label_manifest"]


@dataclass(frozen=True)
class LabelledItem:
    """One row of a zero-shot manifest: a file (absolute path) and its class name."""

    path: str
    label: str
    row: int


def read_label_manifest(path: str | Path) -> tuple[str, list[LabelledItem]]:
    """(modality "speech" | "image", items) from a CSV with `audio` or `image` and `label` columns.

    Raises:
        InputError: missing or unreadable file, no header, neither or both media columns, no
            label column, empty rows, or files that do not exist (all named).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist: give a CSV with an 'audio' or 'image' column and a "
                         "'label' column")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest {path} as CSV: {exc}") from None
    if not rows:
        raise InputError(f"manifest {path} has no rows: it needs a header line (audio,label or image,label) "
                         "and one line per item")
    rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in rows]
    media = [c for c in ("audio", "image") if c in header]
    if len(media) != 1 or "label" not in header:
        raise InputError(f"manifest {path} has columns {header}; it needs exactly one of 'audio' or 'image', "
                         "and 'label'")
    column = media[0]
    items, problems = [], []
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        file, label = row.get(column, ""), row.get("label", "")
        if not file or not label:
            problems.append(f"line {number}: empty {column if not file else 'label'}")
            continue
        p = Path(file).expanduser()
        p = p if p.is_absolute() else (path.parent / p)
        if not p.is_file():
            problems.append(f"line {number}: {file} does not exist")
            continue
        items.append(LabelledItem(str(p.resolve()), label, number))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(f"manifest {path}: {shown}")
    return ("speech" if column == "audio" else "image"), items
