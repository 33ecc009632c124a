"""Where xmodal keeps what it builds: converted weights, datasets, features, the run store.

Everything lives under one home folder, `$XMODAL_HOME` (default `.xmodal` in the
current directory), so a checkout is self-contained and a test can point it elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "assets"
# Real human speech and template lists shipped beside the repository (evaluation only).
SHARED_DATA = Path(os.environ.get("XMODAL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def home() -> Path:
    """The xmodal home folder, created on first use."""
    path = Path(os.environ.get("XMODAL_HOME") or Path.cwd() / ".xmodal").expanduser().resolve()  # "" = unset
    path.mkdir(parents=True, exist_ok=True)
    return path


def _sub(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    """Converted or cached model weights (e.g. Whisper converted from CTranslate2)."""
    return _sub("models")


def datasets_dir() -> Path:
    """Built dataset manifests and the media rendered for them."""
    return _sub("datasets")


def features_dir() -> Path:
    """The frozen-feature cache."""
    return _sub("features")


def runs_dir() -> Path:
    """Training run folders: checkpoints, heads, configs."""
    return _sub("runs")


def db_path() -> Path:
    """The SQLite run store."""
    return home() / "xmodal.db"


def subprocess_env() -> dict[str, str]:
    """This process's environment with the repository on PYTHONPATH, for `python -m xmodal_core...` workers
    (they must import this checkout wherever the caller's working directory is)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env
