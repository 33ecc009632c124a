"""The real data sets the default model trains on or is evaluated on (built when missing)."""
from __future__ import annotations

from trainers.default_model.recipe import EVALUATION_ONLY, HELDOUT_SPLITS, SOURCE_SETS
from xmodal_core.errors import DatasetError
from xmodal_core.progress import Progress
from xmodal_core.progress import stage_callback as _stage


def build_sources(progress: Progress | None = None) -> dict[str, str]:
    """Build the real data sets the default model trains or is evaluated on, if missing.

    Returns:
        set name -> why it is unavailable, for the evaluation-only sets that could not be built
        (FSDD lives outside the repository, in ../shared/data); the model trains without them.
    """
    from xmodal_core.data import build_dataset, load_manifest

    missing: dict[str, str] = {}
    for name in SOURCE_SETS:
        try:
            load_manifest(name)
        except DatasetError:
            try:
                build_dataset(name, progress=_stage(progress, f"build {name}"))
            except DatasetError as exc:
                if name not in EVALUATION_ONLY:
                    raise
                missing[name] = str(exc)
    return missing


def have_set(name: str) -> bool:
    from xmodal_core.data.manifest import manifest_path

    return manifest_path(name).is_file()


def heldout_tuxpaint() -> list:
    """Tux Paint records of the held-out fifth (val + test groups): images, captions, recordings."""
    from xmodal_core.data import load_manifest

    return [r for r in load_manifest("tuxpaint") if r.split in HELDOUT_SPLITS]
