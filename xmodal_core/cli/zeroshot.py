"""`xmodal zeroshot`: zero-shot classify the audio or images of a CSV label manifest.

    xmodal zeroshot --manifest clips.csv --classes zero,one,two --templates "{}" [--model RUN|xmodal-default] [--json]

A label manifest is a CSV with a header, an `audio` or an `image` column (paths, relative to the
CSV's folder or absolute) and a `label` column (`xmodal_core.data.labelled`). Output: top-1 /
top-5 accuracy, n, and one prediction per item. `--model xmodal-default` (the default) uses the
default model's run for the manifest's modality; a run id uses that alignment run.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from xmodal_core.cli.common import print_json
from xmodal_core.errors import InputError

DEFAULT_MODEL = "xmodal-default"


def resolve_model(model: str, modality: str):
    """(title, run id, aligned model) for `--model`: "xmodal-default" or a run id."""
    from xmodal_core import spaces

    if model in (DEFAULT_MODEL, "default"):
        # the default model's registry belongs to the trainers, which register it (found by name)
        registered = importlib.import_module("trainers.default_model").require_default_model()
        run_id = registered.for_modality(modality)
        title = f"{DEFAULT_MODEL} ({modality} run {run_id})"
    elif str(model).isdigit():
        run_id, title = int(model), f"run {model}"
    else:
        raise InputError(f"--model takes a run id (see `xmodal runs`) or {DEFAULT_MODEL}; got {model!r}")
    aligned = spaces.load_run_model(run_id)
    towers = aligned.config.towers
    if modality not in towers or "text" not in towers:
        raise InputError(f"run {run_id} aligned {' and '.join(towers)}; zero-shot {modality} classification needs a "
                         f"{modality}-text run")
    return title, run_id, aligned


def zeroshot_command(manifest: str | Path, classes, templates: str = "simple",
                     model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """`xmodal zeroshot` as a function: `evaluate.zeroshot_manifest` through the chosen model."""
    from xmodal_core.evaluate import zeroshot_manifest

    chosen: dict[str, Any] = {}

    def embedder(modality: str):
        chosen["model"], chosen["run"], aligned = resolve_model(model, modality)
        return aligned.embed, aligned.embed_text

    result = zeroshot_manifest(manifest, classes, templates, embedder)
    return {**chosen, **result}


def cmd_zeroshot(args) -> int:
    result = zeroshot_command(args.manifest, args.classes, args.templates, args.model)
    if args.json:
        print_json(result)
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


