"""The `xmodal` command (also `python -m xmodal_core.cli`), one module per command group.

Each group adds its subcommands through an `add_commands(subparsers)` function in its own
module, found by name in `COMMAND_MODULES`; the trainers register theirs the same way (plugin
discovery by module name, so the library never imports `trainers`). This module wires them
together and turns errors into one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from xmodal_core.errors import XmodalError

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

# Modules that contribute subcommands (each defines add_commands(subparsers)), in help order.
COMMAND_MODULES = (
    "xmodal_core.cli.towers",  # models, transcribe, embed
    "xmodal_core.cli.data",  # data ..., features ...
    "xmodal_core.labels",  # export-labels
    "xmodal_core.cli.zeroshot",  # zeroshot
    "xmodal_core.cli.search",  # search
    "xmodal_core.cli.adapt",  # adapt
    "trainers.default_model.commands",  # default-model
    "trainers.commands",  # train, runs, eval, cancel, worker
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmodal", description="Align speech, images and text in one embedding space.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    groups: dict = {}
    for module_name in COMMAND_MODULES:
        added = importlib.import_module(module_name).add_commands(sub)
        groups.update(added or {})
    if "data" in groups:  # `xmodal data export-labels NAME`, as well as the top-level alias
        importlib.import_module("xmodal_core.labels").add_commands(groups["data"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except XmodalError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # never a bare traceback for a person; --debug shows it
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback "
              "and please report it)", file=sys.stderr)
        return 1
