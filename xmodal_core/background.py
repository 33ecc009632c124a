"""Work the app starts in the background (loading models, preparing the default gallery), with a
status a page can show while it runs, so the app starts serving in seconds.

Tasks run one after another on one daemon thread (the machine may have two cores; the
person's own requests should not wait behind four model loads at once).
"""
from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from xmodal_core.errors import XmodalError

# A task function receives progress(done, total).
TaskFn = Callable[[Callable[[int, int], None]], object]


@dataclass
class TaskState:
    name: str
    state: str = "waiting"  # waiting | running | done | failed
    done: int = 0
    total: int = 0
    message: str = ""
    started: float | None = None
    finished: float | None = None

    def describe(self) -> str:
        if self.state == "running":
            part = f" {self.done}/{self.total}" if self.total else ""
            return f"{self.name}: working{part}…"
        if self.state == "failed":
            return f"{self.name}: failed ({self.message})"
        if self.state == "done":
            took = f" in {self.finished - self.started:.0f} s" if self.started and self.finished else ""
            return f"{self.name}: ready{took}" + (f" ({self.message})" if self.message else "")
        return f"{self.name}: waiting"


_tasks: dict[str, TaskState] = {}
_queue: list[tuple[str, TaskFn]] = []
_lock = threading.Lock()
_wake = threading.Event()
_thread: threading.Thread | None = None


def _loop() -> None:
    while True:
        _wake.wait(1.0)
        with _lock:
            if not _queue:
                _wake.clear()
                continue
            name, fn = _queue.pop(0)
            state = _tasks[name]
            state.state, state.started = "running", time.time()

        def progress(done: int, total: int, _s=state) -> None:
            _s.done, _s.total = int(done), int(total)

        try:
            out = fn(progress)
            state.message = out if isinstance(out, str) else ""
            state.state = "done"
        except XmodalError as exc:
            state.state, state.message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up is shown, never kills the thread
            state.state, state.message = "failed", f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        state.finished = time.time()


def submit(name: str, fn: TaskFn) -> None:
    """Queue `fn(progress)` under a display name (a name already queued or running is not added again)."""
    global _thread
    with _lock:
        current = _tasks.get(name)
        if current is not None and current.state in ("waiting", "running"):
            return
        _tasks[name] = TaskState(name)
        _queue.append((name, fn))
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="xmodal-background", daemon=True)
            _thread.start()
    _wake.set()


def states() -> list[TaskState]:
    with _lock:
        return list(_tasks.values())


def busy() -> bool:
    return any(s.state in ("waiting", "running") for s in states())


def summary() -> str:
    """One line, e.g. "Background: MiniLM: ready in 4 s · default gallery: working 120/2410…"
    ("" before anything was started)."""
    items = states()
    if not items:
        return ""
    return "Background: " + " · ".join(s.describe() for s in items)


def wait(timeout: float | None = None) -> bool:
    """Block until no task is waiting or running (tests); True when idle."""
    end = None if timeout is None else time.time() + timeout
    while busy():
        if end is not None and time.time() > end:
            return False
        time.sleep(0.1)
    return True
