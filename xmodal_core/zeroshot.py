"""Zero-shot classification: template lists (data), class embeddings, cosine logits, template robustness.

A class embedding is the mean of the normalised text embeddings of the class name put into
each template, re-normalised; an item is classified by cosine to the class embeddings. Template
lists live in `assets/templates/` (`simple` = the 10 of CWCL Table 3, `general` = 48 speech ones).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmodal_core import paths
from xmodal_core.errors import InputError
from xmodal_core.metrics import topk_accuracy

__all__ = [
    "TEMPLATES_DIR",
    "available_templates",
    "parse_templates",
    "load_templates",
    "class_embeddings",
    "classify",
    "template_robustness",
]

TEMPLATES_DIR = paths.ASSETS / "templates"
EncodeText = Callable[[list[str]], "np.ndarray | Tensor"]
_PREFIX = re.compile(r"^([A-Za-z0-9_-]+):(\d+)$")  # "simple:5" = the first 5 of simple


def available_templates() -> list[str]:
    """Names of the shipped template lists (file stems in assets/templates/)."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.txt"))


def parse_templates(text: str | Sequence[str], source: str = "templates") -> list[str]:
    """Templates from text (one per line, e.g. a text box) or a list of strings.

    Blank lines and lines starting with `#` are ignored; surrounding whitespace is stripped.
    Each template must contain exactly one `{}` (where the class name goes); other braces are
    kept as text (names are filled with `str.replace`, not `str.format`).

    Raises:
        InputError: naming every wrong line (1-based, counting blank and comment lines), when
            no template is left, a line is not valid text or longer than `validate.MAX_TEMPLATE_CHARS`,
            or there are more than `validate.MAX_TEMPLATES`.
    """
    from xmodal_core.validate import MAX_TEMPLATE_CHARS, MAX_TEMPLATES, check_text

    lines = text.splitlines() if isinstance(text, str) else [str(t) for t in text]
    templates, problems = [], []
    for number, raw in enumerate(lines, start=1):
        line = check_text(raw, f"{source} line {number}", max_chars=MAX_TEMPLATE_CHARS, allow_empty=True).strip()
        if not line or line.startswith("#"):
            continue
        if len(templates) == MAX_TEMPLATES:
            raise InputError(f"{source}: more than {MAX_TEMPLATES} templates; each is embedded once per class, "
                             f"so keep a list to at most {MAX_TEMPLATES}")
        holes = line.count("{}")
        if holes != 1:
            problems.append(f"line {number} has {holes} '{{}}' ({line!r})")
        else:
            templates.append(line)
    if problems:
        raise InputError(
            f"{source}: each template needs exactly one '{{}}' where the class name goes; "
            + "; ".join(problems)
        )
    if not templates:
        raise InputError(f"{source}: no templates (blank lines and # comments are ignored); add at least one")
    return templates


def load_templates(name_or_path: str | os.PathLike | Sequence[str]) -> list[str]:
    """A template list by name (`simple`, `general`, or any file in assets/templates/), by
    `name:K` (the first K of that list, e.g. `simple:5`), from a file path, or from a list of strings.

    Raises:
        InputError: unknown name, missing file, K out of range, or a malformed template (see
            `parse_templates`).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        return parse_templates(list(name_or_path))
    from xmodal_core.validate import check_path_text

    spec = str(check_path_text(str(name_or_path), "template list"))
    first = None
    match = _PREFIX.match(spec)
    if match and not Path(spec).exists():
        spec, first = match.group(1), int(match.group(2))
        if first < 1:
            raise InputError(f"{name_or_path}: K must be at least 1")
    path = Path(spec)
    if not path.is_file():
        named = TEMPLATES_DIR / f"{spec}.txt"
        if not (os.sep not in spec and named.is_file()):
            raise InputError(
                f"no template list {spec!r}: give a file path or one of {', '.join(available_templates())}"
            )
        path = named
    from xmodal_core.validate import read_text_file

    templates = parse_templates(read_text_file(path, "template file"), source=str(path))
    if first is not None:
        if first > len(templates):
            raise InputError(f"{name_or_path}: the list has only {len(templates)} templates")
        templates = templates[:first]
    return templates


def _encode(encode_text: EncodeText, texts: list[str], device: torch.device | None) -> Tensor:
    out = encode_text(texts)
    out = out if isinstance(out, Tensor) else torch.as_tensor(np.asarray(out))
    if out.dim() != 2 or out.shape[0] != len(texts):
        raise InputError(f"encode_text returned shape {tuple(out.shape)} for {len(texts)} texts; expected (n, d)")
    out = out.float()
    return out.to(device) if device is not None else out


def class_embeddings(
    class_names: Sequence[str],
    templates: Sequence[str],
    encode_text: EncodeText,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Zero-shot class embeddings: mean over templates of the normalised embeddings, re-normalised.

    All C * T strings go to `encode_text` in one call (class-major: class 0 with every template,
    then class 1, ...).

    Args:
        class_names: C names, put into each template's `{}`.
        templates: T templates, each with one `{}` (see `parse_templates`).
        encode_text: list[str] -> (n, d) numpy array or tensor.
        device: where the result goes (default: where encode_text put it, CPU for numpy).

    Returns:
        (C, d) float32 unit rows.
    """
    names = [str(c) for c in class_names]
    if not names:
        raise InputError("no class names given")
    templates = parse_templates(list(templates))
    texts = [t.replace("{}", name) for name in names for t in templates]
    emb = F.normalize(_encode(encode_text, texts, torch.device(device) if device else None), dim=-1)
    emb = emb.reshape(len(names), len(templates), -1).mean(dim=1)  # (C, d)
    return F.normalize(emb, dim=-1)


def classify(embeddings: Tensor, class_emb: Tensor) -> Tensor:
    """Cosine logits: (N, d) item embeddings x (C, d) class embeddings -> (N, C).

    Both sides are normalised here; predict with `logits.argmax(1)`.
    """
    if embeddings.dim() != 2 or class_emb.dim() != 2 or embeddings.shape[1] != class_emb.shape[1]:
        raise InputError(
            f"embeddings (N, d) and class embeddings (C, d) must share d; got {tuple(embeddings.shape)} "
            f"and {tuple(class_emb.shape)}"
        )
    class_emb = class_emb.to(device=embeddings.device, dtype=embeddings.dtype)
    return F.normalize(embeddings, dim=-1) @ F.normalize(class_emb, dim=-1).T


def template_robustness(
    embeddings: Tensor,
    labels: Tensor | Sequence[int],
    class_names: Sequence[str],
    templates: Sequence[str],
    encode_text: EncodeText,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, dict[str, float]]:
    """Zero-shot accuracy when only the first k templates build the class embeddings (CWCL Table 3).

    Every string is encoded once (all C * T in one call); each k averages the first k.
    ks larger than the template list are skipped (not clipped), so a key always means exactly
    k templates.

    Args:
        embeddings: (N, d) items; labels: (N,) class indices into `class_names`.

    Returns:
        {k: {"top1": fraction, "top5": fraction}} for each usable k, in the order given
        ("top5" is top-min(5, C)).
    """
    templates = parse_templates(list(templates))
    names = [str(c) for c in class_names]
    usable = [int(k) for k in ks if 1 <= int(k) <= len(templates)]
    if not usable:
        raise InputError(f"none of ks={list(ks)} fits a list of {len(templates)} templates")
    texts = [t.replace("{}", name) for name in names for t in templates]
    emb = F.normalize(_encode(encode_text, texts, embeddings.device), dim=-1)
    emb = emb.reshape(len(names), len(templates), -1)
    labels = torch.as_tensor(labels, device=embeddings.device)
    out: dict[int, dict[str, float]] = {}
    for k in usable:
        class_emb = F.normalize(emb[:, :k].mean(dim=1), dim=-1)
        acc = topk_accuracy(classify(embeddings, class_emb), labels, ks=(1, 5))
        out[k] = {"top1": acc["top1"], "top5": acc["top5"]}
    return out


from xmodal_core.api import callable_module  # noqa: E402 - after the module's own names exist

callable_module(__name__, "zeroshot")  # `xm.zeroshot(...)`: the public function (api.zeroshot)
