"""`xmodal zeroshot`, `xmodal search` and `xmodal default-model`: the default model from a shell.

    xmodal zeroshot --manifest clips.csv --classes zero,one,two --templates "{}" [--model RUN|xmodal-default] [--json]
    xmodal search --query-audio owl.wav --gallery default [--k 10] [--mode coarse|ctf|fine|cascade|asif] [--json]
    xmodal default-model [--force] [--json]

A zero-shot manifest is a CSV with a header, an `audio` or an `image` column (paths, relative
to the CSV's folder or absolute) and a `label` column. Output: top-1 / top-5 accuracy, n, and one
prediction per item. `--model xmodal-default` (the default) uses the default model's run for the
manifest's modality; a run id uses that alignment run.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from xmodal_core.errors import InputError

DEFAULT_MODEL = "xmodal-default"
SEARCH_MODES = {"coarse": "coarse", "ctf": "coarse-to-fine", "coarse-to-fine": "coarse-to-fine", "fine": "fine",
                "cascade": "cascade", "asif": "asif"}


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


def parse_classes(text: str) -> list[str]:
    classes = [c.strip() for c in (text or "").split(",") if c.strip()]
    if len(classes) < 2:
        raise InputError(f"--classes needs at least two comma-separated class names; got {text!r}")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise InputError(f"--classes names {', '.join(dupes)} more than once")
    return classes


def resolve_templates(spec: str) -> list[str]:
    """`simple:K`, `general`, a file path, or a literal template containing `{}` (e.g. "{}")."""
    from xmodal_core.zeroshot import load_templates, parse_templates

    if "{}" in spec and not Path(spec).is_file():
        return parse_templates([spec], source="--templates")
    return load_templates(spec)


def resolve_model(model: str, modality: str):
    """(title, run id, AlignedModel) for `--model`: "xmodal-default" or a run id."""
    from xmodal_core.models.aligned import load_aligned

    if model in (DEFAULT_MODEL, "default"):
        from trainers.default_model import require_default_model

        run_id = require_default_model().for_modality(modality)
        title = f"{DEFAULT_MODEL} ({modality} run {run_id})"
    elif str(model).isdigit():
        run_id, title = int(model), f"run {model}"
    else:
        raise InputError(f"--model takes a run id (see `xmodal runs`) or {DEFAULT_MODEL}; got {model!r}")
    aligned = load_aligned(run_id)
    towers = aligned.config.towers
    if modality not in towers or "text" not in towers:
        raise InputError(f"run {run_id} aligned {' and '.join(towers)}; zero-shot {modality} classification needs a "
                         f"{modality}-text run")
    return title, run_id, aligned


def zeroshot_manifest(manifest: str | Path, classes: Sequence[str] | str, templates: str = "simple",
                      model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """Zero-shot classify every item of a label manifest; returns the JSON-able result.

    Raises:
        InputError: a bad manifest, classes, templates or model, or labels that are not classes.
    """
    import numpy as np
    import torch

    from xmodal_core.models.aligned import text_encoder_fn
    from xmodal_core.metrics import topk_accuracy
    from xmodal_core.zeroshot import class_embeddings, classify

    class_names = parse_classes(classes) if isinstance(classes, str) else list(classes)
    if len(class_names) < 2:
        raise InputError("give at least two classes")
    template_list = resolve_templates(templates)
    modality, items = read_label_manifest(manifest)
    unknown = sorted({it.label for it in items} - set(class_names))
    if unknown:
        raise InputError(f"labels {', '.join(repr(u) for u in unknown[:10])} in {manifest} are not among --classes "
                         f"({', '.join(class_names)})")
    title, run_id, aligned = resolve_model(model, modality)
    start = time.perf_counter()
    emb = torch.as_tensor(aligned.embed(modality, [it.path for it in items]))
    class_emb = class_embeddings(class_names, template_list, text_encoder_fn(aligned.model, aligned.config))
    logits = classify(emb, class_emb)
    labels = torch.tensor([class_names.index(it.label) for it in items])
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    k = min(5, len(class_names))
    scores, order = logits.topk(k, dim=1)
    predictions = []
    for i, it in enumerate(items):
        top = [class_names[j] for j in order[i].tolist()]
        predictions.append({"item": it.path, "label": it.label, "prediction": top[0], "correct": top[0] == it.label,
                            "top5": top, "scores": [round(float(s), 4) for s in scores[i]]})
    return {"model": title, "run": run_id, "modality": modality, "classes": class_names,
            "templates": len(template_list), "n": len(items), "top1": float(acc["top1"]),
            "top5": float(acc["top5"]), "seconds": round(time.perf_counter() - start, 3),
            "predictions": predictions}


def search_query(*, audio: str | None = None, image: str | None = None, text: str | None = None,
                 gallery: str = "default", k: int = 10, mode: str = "coarse", progress=None) -> dict[str, Any]:
    """One search from a shell: exactly one query, a gallery name, a mode; returns JSON-able hits."""
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search import Query, format_timings, search, search_recordings

    given = [(kind, value) for kind, value in (("speech", audio), ("image", image), ("text", text)) if value is not None]
    if len(given) != 1:
        raise InputError("give exactly one query: --query-audio FILE, --query-image FILE or --query-text TEXT")
    if mode not in SEARCH_MODES:
        raise InputError(f"unknown mode {mode!r}; use one of coarse, ctf, fine, cascade, asif")
    kind, value = given[0]
    if kind != "text" and not Path(value).expanduser().is_file():
        raise InputError(f"query file {value} does not exist")
    query = Query.from_input(kind, str(Path(value).expanduser()) if kind != "text" else value)
    opened = open_gallery(gallery, progress=progress)
    if opened.kind == "recordings":  # spoken captions: ranked by their own search (see search_recordings)
        result = search_recordings(opened, query, SEARCH_MODES[mode], k=int(k), progress=progress)
    else:
        result = search(opened, query, SEARCH_MODES[mode], k=int(k), progress=progress)
    return {"mode": result.mode, "query": kind, "model": result.model, "transcript": result.transcript,
            "notes": result.notes, "total_ms": round(result.total_ms, 1),
            "timings": [{"stage": s, "ms": ms} for s, ms in format_timings(result)],
            "hits": [{"rank": h.rank, "score": round(h.score, 4), "id": h.item.id, "caption": h.item.text,
                      "image": h.item.image, **({"audio": h.item.audio} if h.item.audio else {})}
                     for h in result.hits]}


# =============================================================================== commands

def _bar(quiet: bool):
    if quiet:
        return None
    from trainers.default_model import console_progress

    report = console_progress()
    return lambda done, total: report("prepare gallery", done, total)


def cmd_zeroshot(args) -> int:
    result = zeroshot_manifest(args.manifest, args.classes, args.templates, args.model)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{result['model']}: {result['modality']} zero-shot over {len(result['classes'])} classes, "
          f"{result['templates']} template(s)")
    print(f"top-1 {result['top1']:.3f}  top-5 {result['top5']:.3f}  n {result['n']}")
    for p in result["predictions"][: args.show]:
        mark = "ok " if p["correct"] else "ERR"
        print(f"  {mark} {Path(p['item']).name}: {p['prediction']} (label {p['label']})")
    if result["n"] > args.show:
        print(f"  ... {result['n'] - args.show} more (--json for all)")
    return 0


def cmd_search(args) -> int:
    result = search_query(audio=args.query_audio, image=args.query_image, text=args.query_text, gallery=args.gallery,
                          k=args.k, mode=args.mode, progress=_bar(args.quiet or args.json))
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{result['mode']} search ({result['model']}), {result['total_ms']:.0f} ms")
    if result["transcript"] is not None:
        print(f"heard: {result['transcript']!r}")
    for note in result["notes"]:
        print(f"note: {note}")
    for h in result["hits"]:
        print(f"{h['rank']:>3}  {h['score']:.3f}  {h['caption']}  [{h['id']}]")
    return 0


def cmd_default_model(args) -> int:
    from trainers.default_model import adopt_default_model, console_progress, ensure_default_model, format_results

    if args.adopt_from:
        model = adopt_default_model(args.adopt_from)
    else:
        model = ensure_default_model(None if args.quiet else console_progress(), force=args.force)
    if args.json:
        json.dump(model.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_results(model))
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("zeroshot", help="zero-shot classify the audio or images of a CSV manifest")
    p.add_argument("--manifest", required=True, type=Path, help="CSV with an audio or image column and a label column")
    p.add_argument("--classes", required=True, help="comma-separated class names, e.g. zero,one,two")
    p.add_argument("--templates", default="simple",
                   help="simple:K (the first K simple templates), general, a file, or a literal like '{}'")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a run id or {DEFAULT_MODEL} (default)")
    p.add_argument("--show", type=int, default=10, help="predictions to print without --json")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_zeroshot)

    p = subparsers.add_parser("search", help="search a gallery with a spoken, pictured or written query")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query-audio", metavar="FILE")
    q.add_argument("--query-image", metavar="FILE")
    q.add_argument("--query-text", metavar="TEXT")
    p.add_argument("--gallery", default="default", help="default, recordings, or a folder gallery's name")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--mode", default="coarse", choices=sorted(SEARCH_MODES))
    p.add_argument("--quiet", action="store_true", help="no progress bar while a gallery is first embedded")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("default-model", help="train (when missing) and show the default model xmodal-default")
    p.add_argument("--force", action="store_true", help="train it again")
    p.add_argument("--from", dest="adopt_from", metavar="HOME", type=Path,
                   help="copy the default model trained under another xmodal home instead of training")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_default_model)
