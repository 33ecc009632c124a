"""`python -m trainers.default_model` and `xmodal default-model`: train (when missing) and show the default model."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from trainers.default_model.recipe import load_config
from trainers.default_model.registration import (
    DefaultModel,
    adopt_default_model,
    ensure_default_model,
)
from xmodal_core.errors import XmodalError
from xmodal_core.progress import console_progress


def format_results(model: DefaultModel) -> str:
    """A few readable lines: the runs and what they measured."""
    r = model.results
    lines = [f"{model.name}: speech run {model.speech_run} ({model.speech_dir}), image run {model.image_run} "
             f"({model.image_dir})"]
    z = r.get("fsdd_zeroshot", {})
    if "skipped" in z:
        lines.append(f"  FSDD zero-shot: not measured: {z['skipped']}")
    elif z:
        lines.append(f"  FSDD zero-shot (10 digit words, template '{{}}', {z.get('n')} clips by 4 people): "
                     f"top-1 {z['top1']:.3f}, top-5 {z['top5']:.3f}; without the dev speaker "
                     f"{z.get('top1_without_dev_speaker', float('nan')):.3f}; {z.get('ms_per_query', 0):.0f} ms/query")
    c = r.get("tuxpaint_caption_to_image", {})
    if c:
        lines.append(f"  Tux Paint caption -> image, held-out fifth ({c['queries']} captions, {c['gallery']} images): "
                     f"R@1 {c['r@1']:.3f}, R@5 {c['r@5']:.3f}, R@10 {c['r@10']:.3f}")
    s = r.get("tuxpaint_speech_to_image", {})
    if s:
        lines.append(f"  Tux Paint spoken description -> image ({s['queries']} recordings): model R@1 {s['model_r@1']:.3f} "
                     f"R@10 {s['model_r@10']:.3f}; cascade R@1 {s['cascade_r@1']:.3f} R@10 {s['cascade_r@10']:.3f}; "
                     f"written caption R@1 {s['text_r@1']:.3f} R@10 {s['text_r@10']:.3f}")
    if model.seconds:
        lines.append("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in model.seconds.items()))
    return "\n".join(lines)


def _add_arguments(parser) -> None:
    parser.add_argument("--config", type=Path, help="default-model config (default: the committed one)")
    parser.add_argument("--force", action="store_true", help="train again even when the model exists")
    parser.add_argument("--from", dest="adopt_from", metavar="HOME", type=Path,
                        help="copy the default model trained under another xmodal home instead of training")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")


def _default_model(args) -> DefaultModel:
    if args.adopt_from:
        return adopt_default_model(args.adopt_from, load_config(args.config))
    return ensure_default_model(None if args.quiet else console_progress(), config=args.config, force=args.force)


def _show(model: DefaultModel, as_json: bool) -> None:
    print(json.dumps(model.to_dict(), indent=2) if as_json else format_results(model))


def cmd_default_model(args) -> int:
    """`xmodal default-model`: errors go to the `xmodal` entry point (one line, exit 2)."""
    _show(_default_model(args), args.json)
    return 0


def add_commands(subparsers) -> None:
    """Register `xmodal default-model` (found by name through `xmodal_core.cli.COMMAND_MODULES`)."""
    p = subparsers.add_parser("default-model", help="train (when missing) and show the default model xmodal-default")
    _add_arguments(p)
    p.set_defaults(func=cmd_default_model)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.default_model",
                                     description="The default model, `xmodal-default`: its data, features, training, "
                                                 "evaluation and registration.")
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        model = _default_model(args)
    except XmodalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not args.adopt_from:
            print("(the app starts without the default model: make run SKIP_DEFAULT_MODEL=1)", file=sys.stderr)
        return 2
    _show(model, args.json)
    return 0
