"""The FaST-VGS run that ships with the repository, so `coarse-to-fine` and `fine` work on a
fresh machine: the shared-space FaST-VGS (`models.vgs.SharedVGS`) trained on the default
gallery's adaptation pairs by the recipe `assets/configs/xmodal-default-vgs.json`.

Training it needs the default adaptation's clips and their Whisper frames (about 20 minutes cold
on 2 cores, a few with the caches warm), so the trained model is committed
(`assets/models/xmodal-default-vgs/`, half-precision safetensors + config + `shipped.json` with
the recipe's digest, which a test checks) and installed into a home as a completed run on the
first FaST-VGS search. `python -m xmodal_core.adapt.shipped_vgs --build` retrains and exports it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from xmodal_core import paths
from xmodal_core.errors import StoreError
from xmodal_core.fsio import atomic_write_json

RECIPE_PATH = paths.ASSETS / "configs" / "xmodal-default-vgs.json"
SHIPPED_DIR = paths.ASSETS / "models" / "xmodal-default-vgs"
RUN_NAME = "xmodal-default-vgs"
STATE_FILE = "shipped.json"
FILES = ("model.safetensors", "config.json", STATE_FILE)


def load_recipe(path: str | Path | None = None):
    from xmodal_core.models.vgs import VGSConfig

    return VGSConfig.from_dict(json.loads(Path(path or RECIPE_PATH).read_text(encoding="utf-8")))


def recipe_digest(cfg: Any = None) -> str:
    """16 hex digits of the recipe's config (a `VGSConfig` or its dict; default: the committed recipe)."""
    cfg = load_recipe() if cfg is None else cfg
    data = cfg if isinstance(cfg, dict) else cfg.to_dict()
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def shipped_info() -> dict[str, Any] | None:
    path = SHIPPED_DIR / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def origin() -> str:
    """"shipped:" + a digest of the shipped files (a new commit of them gets installed anew)."""
    from xmodal_core.adapt.shipped import files_origin

    return files_origin(SHIPPED_DIR, FILES)


def _installed(store) -> int | None:
    """The run id of this shipped model in the home's store, when installed (same origin)."""
    want = run_name()
    return next((run.id for run in store.list_runs(status="completed", kind="vgs") if run.name == want), None)


def run_name() -> str:
    """The installed run's name: which shipped version it is (starts with the default model's name,
    so the model selection picks it when no other FaST-VGS run is chosen)."""
    return f"{RUN_NAME}@{origin().split(':', 1)[1]}"


def install(store=None) -> int | None:
    """The shipped FaST-VGS as a completed run of this home (installed once per shipped version);
    its id, or None when nothing is shipped."""
    from xmodal_core.runner import run_dir
    from xmodal_core.spaces import shared_store

    info = shipped_info()
    if info is None:
        return None
    store = store or shared_store()
    have = _installed(store)
    if have is not None:
        return have
    saved = json.loads((SHIPPED_DIR / "config.json").read_text(encoding="utf-8"))
    run_id = store.create_run(run_name(), "vgs", saved["config"])
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    weights = load_file(str(SHIPPED_DIR / "model.safetensors"))
    save_file({k: v.float().contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "xmodal-vgs-v1"})
    shutil.copyfile(SHIPPED_DIR / "config.json", folder / "config.json")
    store.start_run(run_id)
    store.add_artifact(run_id, "model", folder / "model.safetensors")
    store.add_evaluation(run_id, f"pairs-{saved['config'].get('gallery', 'default')}", "val",
                         {k: float(v) for k, v in info["metrics"].items()})
    store.finish_run(run_id, "completed")
    return run_id


def export(run_id: int, out: Path = SHIPPED_DIR) -> Path:
    """Copy a home's trained shared-space FaST-VGS run into the repository (what `--build` commits)."""
    from safetensors.torch import load_file, save_file

    from xmodal_core.runner import run_dir
    from xmodal_core.spaces import shared_store

    folder = run_dir(run_id)
    if not (folder / "model.safetensors").is_file():
        raise StoreError(f"run {run_id} has no trained model ({folder})")
    saved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "config.json", out / "config.json")
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "xmodal-vgs-v1", "dtype": "float16"})
    (out / "model.safetensors").chmod(0o644)
    evals = shared_store().evaluations(run_id)
    metrics = {e.metric: e.value for e in evals}
    return atomic_write_json(out / STATE_FILE, {"recipe_digest": recipe_digest(saved["config"]), "metrics": metrics,
                                                "source": saved.get("source", {})})


def build(cfg=None, progress=None, store=None) -> int:
    """Train the recipe in this process (a run in the store); its id."""
    from xmodal_core.models.kinds import get_kind
    from xmodal_core.runner import execute, last_error_line
    from xmodal_core.spaces import shared_store

    cfg = cfg or load_recipe()
    store = store or shared_store()
    run_id = store.create_run("vgs-default", "vgs", cfg.to_dict())
    on_log = (lambda step, total, _m: progress("train", step, total or step)) if progress else None
    run = execute(run_id, get_kind("vgs").train_fn(), store, on_log=on_log)
    if run.status != "completed":
        raise StoreError(f"FaST-VGS run {run_id} did not complete ({last_error_line(run)})")
    return run_id


def main(argv=None) -> int:
    from xmodal_core.progress import console_progress

    from dataclasses import replace

    from xmodal_core.errors import XmodalError

    p = argparse.ArgumentParser(prog="python -m xmodal_core.adapt.shipped_vgs", description=__doc__)
    p.add_argument("--build", action="store_true", help="train the recipe on the default gallery, then export")
    p.add_argument("--run", type=int, help="export this trained run instead of building one")
    p.add_argument("--gallery", help="train the recipe on this gallery's names instead (a run in the store; "
                                     "nothing is exported)")
    args = p.parse_args(argv)
    if not args.build and args.run is None and not args.gallery:
        p.error("give --build, --run ID or --gallery NAME")
    try:
        if args.gallery:
            run_id = build(replace(load_recipe(), gallery=args.gallery), progress=console_progress())
            print(f"trained FaST-VGS run {run_id} on {args.gallery}: choose it on the Train page ('use this model') "
                  "for coarse-to-fine search")
            return 0
        run_id = build(progress=console_progress()) if args.build else args.run
        print(f"wrote {export(run_id)}")
    except XmodalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
