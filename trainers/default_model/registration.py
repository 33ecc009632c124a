"""Which runs are the default model: the marker under the home, lookup, training when missing,
adoption from another home, and the one-process-at-a-time lock.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from trainers.default_model.evaluation import evaluate_default
from trainers.default_model.image_data import build_image_set
from trainers.default_model.recipe import (
    IMAGE_RUN,
    MARKER,
    SPEECH_RUN,
    DefaultModelConfig,
    load_config,
)
from trainers.default_model.sources import build_sources
from trainers.default_model.speech_data import build_speech_set
from trainers.default_model.training import extract_features, train_align_run
from xmodal_core import paths
from xmodal_core.errors import InputError, StoreError
from xmodal_core.progress import Progress


@dataclass
class DefaultModel:
    """The trained default model: its two runs (ids and folders) and its measured results."""

    name: str
    config_digest: str
    speech_run: int
    image_run: int
    speech_dir: str
    image_dir: str
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def run_ids(self) -> tuple[int, int]:
        return self.speech_run, self.image_run

    def for_modality(self, modality: str) -> int:
        """The run that embeds `modality` ("speech" or "image")."""
        if modality == "speech":
            return self.speech_run
        if modality == "image":
            return self.image_run
        raise InputError(f"the default model has a speech run and an image run; {modality!r} is neither")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _marker_path() -> Path:
    return paths.home() / MARKER


def _write_marker(model: DefaultModel) -> None:
    """Record `model` as this home's default model (atomically: readers see the old or the new one)."""
    from xmodal_core.fsio import atomic_write_json

    atomic_write_json(_marker_path(), model.to_dict())


def find_default_model(config: DefaultModelConfig | None = None, store=None, *,
                       any_config: bool = False) -> DefaultModel | None:
    """The trained default model for `config` (default: the committed one), or None when it is
    missing, was trained from another config (unless `any_config`: then whatever this home
    registered as the default model), or its runs or heads are gone."""
    from xmodal_core.runner import run_dir
    from xmodal_core.store import Store

    config = config or load_config()
    try:
        data = json.loads(_marker_path().read_text(encoding="utf-8"))
        model = DefaultModel(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not any_config and model.config_digest != config.digest():
        return None
    store = store or Store()
    for run_id in model.run_ids:
        try:
            run = store.get_run(run_id)
        except StoreError:
            return None
        if run.status != "completed" or not (run_dir(run_id) / "heads.safetensors").is_file():
            return None
    return model


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One process at a time builds the default model (the app, a test, the CLI may all ask)."""
    import fcntl

    path = paths.home() / f".{name}.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_default_model(progress: Progress | None = None, *, config: DefaultModelConfig | str | Path | None = None,
                         force: bool = False) -> DefaultModel:
    """The default model, trained first when missing (or when `force`).

    From a clean `XMODAL_HOME` this builds the Tux Paint, emoji and FSDD sets, synthesises and
    augments the speech set, extracts features, trains the speech and image runs, evaluates them
    and registers them; about 10-15 minutes on 2 CPU cores (synthesis and features are cached,
    so a retrain with another config is faster). With the model present it is a lookup.

    Args:
        progress: callable(stage, done, total), e.g. `console_progress()`; None for silence.
        config: a `DefaultModelConfig` or a path to one (default: the committed config).
        force: train again even when a model for this config exists.

    Returns:
        The `DefaultModel` (run ids, run folders, evaluation results, seconds per stage).
    """
    if not isinstance(config, DefaultModelConfig):
        config = load_config(config)
    if not force:
        found = find_default_model(config)
        if found is not None:
            return found
    with _exclusive(config.name):
        if not force:
            found = find_default_model(config)  # another process may have trained it meanwhile
            if found is not None:
                return found
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[name] = round(now - clock, 2)
            clock = now

        build_sources(progress)
        lap("build data sets")
        build_speech_set(config, progress)
        build_image_set(config)
        lap("speech synthesis + augmentation")
        extract_features(config, progress)
        lap("features")
        speech_run = train_align_run(SPEECH_RUN, config.speech, progress)
        image_run = train_align_run(IMAGE_RUN, config.image, progress)
        lap("training")
        if progress:
            progress("evaluate", 0, 1)
        results = evaluate_default(speech_run.id, image_run.id)
        if progress:
            progress("evaluate", 1, 1)
        lap("evaluation")
        seconds["total"] = round(sum(seconds.values()), 2)
        from xmodal_core.runner import run_dir

        model = DefaultModel(name=config.name, config_digest=config.digest(), speech_run=speech_run.id,
                             image_run=image_run.id, speech_dir=str(run_dir(speech_run.id)),
                             image_dir=str(run_dir(image_run.id)), results=results, seconds=seconds,
                             created_at=time.time())
        _write_marker(model)
        return model


def adopt_default_model(source_home: str | Path, config: DefaultModelConfig | None = None) -> DefaultModel:
    """Register the default model trained under another xmodal home in this one: its two run
    folders are copied, the runs and their evaluations recorded in this home's store, and the
    marker written, so this home uses the same weights without training (a second machine
    sharing a home's `runs/`, the browser tests' throwaway homes). A lookup when present.

    Raises:
        InputError: `source_home` has no trained default model for this config.
    """
    import shutil

    from xmodal_core.runner import run_dir
    from xmodal_core.store import Store

    config = config or load_config()
    found = find_default_model(config)
    if found is not None:
        return found
    source_home = Path(source_home).expanduser().resolve()
    try:
        data = json.loads((source_home / MARKER).read_text(encoding="utf-8"))
        source = DefaultModel(**data)
    except (OSError, ValueError, TypeError):
        raise InputError(f"no trained default model under {source_home}: train it there first "
                         f"(XMODAL_HOME={source_home} xmodal default-model)") from None
    if source.config_digest != config.digest():
        raise InputError(f"the default model under {source_home} was trained from another config; "
                         "train it again there (xmodal default-model)")
    source_store = Store(source_home / "xmodal.db", recover=False)
    store = Store()
    with _exclusive(config.name):
        new_ids = []
        for old_id in source.run_ids:
            run = source_store.get_run(old_id)
            new_id = store.create_run(run.name, run.kind, run.config)
            store.start_run(new_id, device=run.device, total_steps=run.total_steps)
            target = run_dir(new_id)
            shutil.copytree(source_home / "runs" / str(old_id), target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("last.pt", "*.tmp"))
            by_split: dict[tuple[str, str], dict[str, float]] = {}
            for e in source_store.evaluations(old_id):
                by_split.setdefault((e.dataset, e.split), {})[e.metric] = e.value
            for (dataset, split), metrics in by_split.items():
                store.add_evaluation(new_id, dataset, split, metrics)
            store.finish_run(new_id, "completed")
            new_ids.append(new_id)
        model = replace(source, speech_run=new_ids[0], image_run=new_ids[1], speech_dir=str(run_dir(new_ids[0])),
                        image_dir=str(run_dir(new_ids[1])))
        _write_marker(model)
    source_store.close()
    return model


def require_default_model() -> DefaultModel:
    """The default model this home registered (trained from the committed config or, e.g. in a
    test home, a smaller one); otherwise an InputError saying how to train it."""
    found = find_default_model(any_config=True)
    if found is None:
        raise InputError("the default model (xmodal-default) is not trained yet: run `xmodal default-model` "
                         "(or `make run`, which trains it first; about 15 minutes on 2 CPU cores)")
    return found
