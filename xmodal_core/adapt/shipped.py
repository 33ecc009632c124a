"""The adapted speech head that ships with the repository: the default model adapted to the base
vocabulary (`assets/configs/xmodal-default-adapt.json`), installed into a home on first use.

Adapting to the ~2,100 base names with 20 voices each takes about half an hour on 2 cores (most of
it synthesis and Whisper features), too long for a fresh machine's first `make run`; so the trained
head is committed (`assets/models/xmodal-default-adapted/`, safetensors + JSON) together with the
digest of the recipe that produced it, and `xmodal adapt --gallery default --full` (or
`python -m xmodal_core.adapt.shipped --build`) retrains it.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xmodal_core import paths
from xmodal_core.adapt.core import AdaptConfig, AdaptState, load_state, save_state
from xmodal_core.errors import StoreError
from xmodal_core.fsio import atomic_write_json

RECIPE_PATH = paths.ASSETS / "configs" / "xmodal-default-adapt.json"
SHIPPED_DIR = paths.ASSETS / "models" / "xmodal-default-adapted"
RUN_NAME = "xmodal-default-adapted"
STATE_FILE = "adapted.json"
FILES = ("heads.safetensors", "config.json", STATE_FILE)


def load_recipe(path: str | Path | None = None) -> AdaptConfig:
    data = json.loads(Path(path or RECIPE_PATH).read_text(encoding="utf-8"))
    return AdaptConfig(**data)


# Settings of incremental adaptations only: a full build (what is shipped) does not depend on them.
INCREMENTAL_ONLY = ("incremental_epochs", "incremental_steps", "incremental_batch_size", "replay", "min_replay",
                    "val_sample", "incremental_limit")


def recipe_digest(cfg: AdaptConfig | dict | None = None) -> str:
    """Identity of the adaptation recipe (the settings a full build depends on); the shipped head
    records the one it came from."""
    data = dict(cfg) if isinstance(cfg, dict) else asdict(cfg or load_recipe())
    data = {k: v for k, v in data.items() if k not in INCREMENTAL_ONLY}
    blob = json.dumps(data, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def shipped_state() -> dict[str, Any] | None:
    path = SHIPPED_DIR / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def origin() -> str:
    """"shipped:" + a digest of the shipped head's files (changes when a new head is committed)."""
    return files_origin(SHIPPED_DIR, FILES)


def files_origin(folder: Path, files: tuple[str, ...]) -> str:
    """"shipped:" + 16 hex digits of the files' bytes; hashed once per file state (size, mtime),
    since every search that uses a shipped model asks."""
    stats = tuple((name, p.stat().st_size, p.stat().st_mtime_ns) if (p := folder / name).is_file() else (name,)
                  for name in files)
    return _origin(str(folder), files, stats)


@functools.lru_cache(maxsize=8)
def _origin(folder: str, files: tuple[str, ...], stats: tuple) -> str:
    h = hashlib.sha256()
    for name in files:
        path = Path(folder) / name
        h.update(path.read_bytes() if path.is_file() else b"")
    return "shipped:" + h.hexdigest()[:16]


def install(store=None, *, replace_installed: bool = False) -> AdaptState | None:
    """Make the shipped head this home's base adaptation (a completed run in the store), unless the
    home already has one (`replace_installed`: unless it has its own, trained here). Returns the base
    state (None when nothing is shipped)."""
    from xmodal_core.runner import run_dir
    from xmodal_core.spaces import shared_store

    have = load_state("default")
    shipped = shipped_state()
    own = have is not None and not (replace_installed and have.origin.startswith("shipped:"))
    if own or shipped is None:
        return have
    store = store or shared_store()
    config = json.loads((SHIPPED_DIR / "config.json").read_text(encoding="utf-8"))
    run_id = store.create_run(RUN_NAME, "align", config["config"])
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES[:2]:
        shutil.copyfile(SHIPPED_DIR / name, folder / name)
    store.start_run(run_id)
    store.add_artifact(run_id, "heads", folder / "heads.safetensors")
    store.add_evaluation(run_id, "adapt-default", "val", {k: float(v) for k, v in shipped["metrics"].items()})
    store.finish_run(run_id, "completed")
    state = AdaptState("default", run_id, str(folder), shipped["vocabulary"], shipped["vocabulary_digest"],
                       shipped["threshold"], shipped["metrics"], shipped["config"], time.time(), origin())
    save_state(state)
    return state


def export(gallery: str = "default", out: Path = SHIPPED_DIR) -> Path:
    """Copy a home's adaptation of `gallery` into the repository (what `--build` commits)."""
    state = load_state(gallery)
    if state is None:
        raise StoreError(f"{gallery} is not adapted in {paths.home()}: `xmodal adapt --gallery {gallery} --full`")
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(state.run_dir) / "config.json", out / "config.json")
    weights = load_file(str(Path(state.run_dir) / "heads.safetensors"))  # half precision: half the repository size
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(out / "heads.safetensors"),
              metadata={"format": "xmodal-align-v1", "dtype": "float16"})
    (out / "heads.safetensors").chmod(0o644)
    data = asdict(state)
    for key in ("run_id", "run_dir", "created_at", "gallery", "origin"):
        data.pop(key)
    data["recipe_digest"] = recipe_digest(state.config)
    return atomic_write_json(out / STATE_FILE, data)


def main(argv=None) -> int:
    from xmodal_core.adapt.core import adapt
    from xmodal_core.progress import console_progress

    p = argparse.ArgumentParser(prog="python -m xmodal_core.adapt.shipped", description=__doc__)
    p.add_argument("--build", action="store_true", help="adapt the default gallery with the recipe, then export")
    args = p.parse_args(argv)
    if args.build:
        report = adapt("default", config=load_recipe(), full=True, progress=console_progress())
        print(report.format())
    print(f"wrote {export()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
