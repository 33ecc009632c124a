"""Shared fixtures: real data locations and isolated xmodal homes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent
FSDD = Path(os.environ.get("XMODAL_SHARED_DATA", REPO.parent / "shared" / "data")) / "fsdd" / "recordings"
TUXPAINT = Path("/usr/share/tuxpaint/stamps")


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    assert FSDD.is_dir(), f"FSDD recordings expected at {FSDD} (../shared/data/fsdd beside the repo)"
    return FSDD


@pytest.fixture(scope="session")
def chelsea_png(tmp_path_factory) -> Path:
    """scikit-image's real photo of a cat, as a PNG file."""
    import skimage.data
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


@pytest.fixture()
def xmodal_home(tmp_path, monkeypatch) -> Path:
    """A fresh, empty XMODAL_HOME for tests that write datasets, runs or the store."""
    home = tmp_path / "xmodal-home"
    monkeypatch.setenv("XMODAL_HOME", str(home))
    return home

# Folder galleries may be indexed only under allowed roots (home and shared data folders by
# default); tests index folders they make under the system temp folder.
os.environ.setdefault("XMODAL_ALLOW_DIRS", os.pathsep.join([__import__("tempfile").gettempdir(), "~", "/usr/share"]))
