"""The default model's frozen features and its two training runs."""
from __future__ import annotations

from typing import Any

from trainers.default_model.recipe import DefaultModelConfig
from trainers.default_model.sources import have_set, heldout_tuxpaint
from xmodal_core.errors import XmodalError
from xmodal_core.progress import Progress
from xmodal_core.progress import stage_callback as _stage


def extract_features(cfg: DefaultModelConfig, progress: Progress | None = None) -> None:
    """Fill the frozen-feature cache for both training sets and the evaluation sets."""
    from xmodal_core.data import FeatureCache, load_manifest

    speech_enc, image_enc = cfg.speech.encoders["speech"], cfg.image.encoders["image"]
    text_enc = cfg.speech.encoders["text"]
    speech_records = [r for r in load_manifest(cfg.speech.dataset) if r.audio]
    fsdd = [r for r in load_manifest("fsdd") if r.audio] if have_set("fsdd") else []
    heldout = heldout_tuxpaint()
    image_records = [r for r in load_manifest(cfg.image.dataset) if r.image]
    jobs = [
        (speech_enc, speech_records + fsdd + [r for r in heldout if r.audio], "features speech"),
        (image_enc, image_records + [r for r in heldout if r.image], "features images"),
        (text_enc, [r for r in speech_records + image_records + heldout if r.text], "features text"),
    ]
    for encoder, records, stage in jobs:
        cache = FeatureCache(encoder)
        cache.extract(records, progress=_stage(progress, stage))
        cache.compact()


def train_align_run(name: str, align_cfg: Any, progress: Progress | None = None, store=None):
    """Create an align run in the store and train it in this process; returns the finished `Run`.

    Raises:
        XmodalError: the run failed (the message has its last error line) or was cancelled.
    """
    import torch

    from trainers.align import train_run
    from xmodal_core.runner import execute, last_error_line
    from xmodal_core.store import Store

    store = store or Store()
    run_id = store.create_run(name, "align", align_cfg.to_dict())
    stage = f"train {name}"
    on_log = (lambda step, total, metrics: progress(stage, step, total or 0)) if progress else None
    threads = torch.get_num_threads()
    if align_cfg.locked == "both":  # heads only: small matmuls, one thread is as fast and never oversubscribes
        torch.set_num_threads(1)
    try:
        finished = execute(run_id, train_run, store, on_log=on_log)
    finally:
        torch.set_num_threads(threads)
    if finished.status != "completed":
        raise XmodalError(f"training run {run_id} ({name}) {finished.status}: {last_error_line(finished)} "
                          f"(details: `xmodal runs --show {run_id}`)")
    return finished
