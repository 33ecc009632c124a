"""Progress bars on stderr for shell commands: one tqdm bar per stage of a long job.

A `Progress` is `progress(stage, done, total)`, one call per step of a stage ("speak",
"features speech", ...); `console_progress()` draws it, `stage_callback` narrows it to one stage.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

Progress = Callable[[str, int, int], None]

__all__ = ["Progress", "console_progress", "stage_callback"]


def console_progress(quiet: bool = False) -> Progress:
    """A `Progress` that draws one tqdm bar per stage on stderr (nothing when `quiet`)."""
    from tqdm import tqdm

    state: dict[str, Any] = {"stage": None, "bar": None}

    def update(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["stage"] = stage
            state["bar"] = tqdm(total=total or None, desc=stage, file=sys.stderr, dynamic_ncols=True, leave=True)
        bar = state["bar"]
        if total and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))

    return update


def stage_callback(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """A (done, total) callback reporting to `progress` as `stage`, or None without progress."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, int(done), int(total))
