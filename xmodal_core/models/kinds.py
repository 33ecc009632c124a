"""The one registry of run kinds: kind name -> config class, loader of a trained run folder,
and the training function.

Every target is an import string ("package.module:name"), resolved on use, so reading this
registry imports nothing heavy and the library never imports `trainers/` (the train functions
live there; only the worker process and the `xmodal train` command resolve them).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from xmodal_core.errors import InputError

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        name: the kind as the store and `config.json` record it ("align", "vgs").
        config: import string of its config dataclass (`from_dict` / `to_dict`).
        loader: import string of `fn(run_dir_or_id, device="cpu")` -> the trained model.
        train: import string of `fn(run, ctx)`, what the run queue calls.
    """

    name: str
    config: str
    loader: str
    train: str

    def config_class(self) -> type:
        return import_target(self.config, f"the {self.name} config")

    def load(self, run_dir_or_id: str | int | Path, device: str = "cpu") -> Any:
        return import_target(self.loader, f"the {self.name} loader")(run_dir_or_id, device=device)

    def train_fn(self) -> Callable[[Any, Any], None]:
        return import_target(self.train, f"the {self.name} trainer")

    def trainer_available(self) -> bool:
        """Whether the training module exists in this checkout (found without importing it)."""
        try:
            return importlib.util.find_spec(self.train.partition(":")[0]) is not None
        except (ImportError, ValueError):
            return False


KINDS: dict[str, RunKind] = {k.name: k for k in (
    RunKind("align", "xmodal_core.models.aligned:AlignConfig", "xmodal_core.models.aligned:load_aligned",
            "trainers.align:train_run"),
    RunKind("vgs", "xmodal_core.models.vgs:VGSConfig", "xmodal_core.models.vgs:load_vgs",
            "trainers.vgs:train_run"),
)}


def import_target(target: str, what: str = "the target") -> Any:
    """The object named by "package.module:name"."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InputError(f"{what}: {target!r} is not of the form 'package.module:name'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"{what}: cannot import {target} ({exc})") from exc


def get_kind(name: str) -> RunKind:
    """The registered kind `name`; InputError naming the known ones otherwise."""
    if name not in KINDS:
        raise InputError(f"unknown run kind {name!r}; use one of {', '.join(KINDS)}")
    return KINDS[name]


def config_class(kind: str) -> type:
    """The config dataclass of a run kind."""
    return get_kind(kind).config_class()


def train_function(kind: str) -> Callable[[Any, Any], None]:
    """The training function of a run kind: a registered name, or any "package.module:function"."""
    if kind in KINDS:
        return KINDS[kind].train_fn()
    if ":" not in kind:
        raise InputError(f"unknown run kind {kind!r}; use one of {', '.join(sorted(KINDS))} "
                         "or 'package.module:function'")
    return import_target(kind, f"run kind {kind!r}")


def load_run(run_dir_or_id: str | int | Path, device: str = "cpu") -> Any:
    """A trained run folder (or run id) loaded by its own kind's loader, read from its config.json."""
    from xmodal_core.models.aligned import resolve_run_dir

    run_dir = resolve_run_dir(run_dir_or_id)
    kind = json.loads((run_dir / CONFIG_FILE).read_text(encoding="utf-8")).get("kind")
    if kind not in KINDS:
        raise InputError(f"run folder {run_dir} holds a {kind!r} run, which has no loader; "
                         f"known kinds: {', '.join(KINDS)}")
    return KINDS[kind].load(run_dir, device=device)
