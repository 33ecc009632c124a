"""Running training jobs: a queue worker for the app and CLI, and the per-run harness.

`Runner` takes queued runs from the store one at a time and runs each in its own
worker process (`python -m trainers.run RUN_ID`), so a crash or a CUDA OOM in a
trainer cannot take the app down. One worker per store file is active at a time
(a lock file beside the database), whichever process it lives in.

`execute(run_id, train_fn, store)` is the harness around one trainer call, used
both by that worker process and by `xmodal train` in the foreground: it marks the
run running, hands the trainer a `RunContext` (metrics, cancel flag, checkpoints),
and marks it completed, cancelled (the trainer stopped at a cancel request) or
failed (with the traceback).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from xmodal_core import paths
from xmodal_core.errors import StoreError, XmodalError
from xmodal_core.fsio import atomic_path
from xmodal_core.store import Artifact, Run, Store

try:  # POSIX advisory locks; elsewhere the single-worker guarantee is per process only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

TrainFn = Callable[[Run, "RunContext"], None]
CHECKPOINT_NAME = "last.pt"
WORKER_LOG_NAME = "worker.log"


class RunFailedError(XmodalError):
    """A run ended as failed; the message carries the last line of its error."""


def save_checkpoint_file(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write a torch-serialisable `state` to `path` atomically: never a half-written checkpoint."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none (a fresh start)."""
    path = Path(path)
    if not path.is_file():
        return None
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)


def run_dir(run_id: int, runs_root: str | Path | None = None) -> Path:
    """The folder of one run: `runs_root/RUN_ID/` (default root `paths.runs_dir()`), created."""
    path = Path(runs_root if runs_root is not None else paths.runs_dir()) / str(int(run_id))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class RunContext:
    """What a trainer gets besides its config: where to write, how to report, when to stop.

    A trainer calls `log(step, epoch, metrics)` every step, checks `should_stop()`
    every step and returns early when it is True (after `save_checkpoint`), and
    calls `load_checkpoint()` at start to resume.
    """

    store: Store
    run_id: int
    run_dir: Path
    on_log: Callable[[int, int | None, Mapping[str, float]], None] | None = None
    cancel_poll_s: float = 0.5
    stopped: bool = False  # set once should_stop() said yes
    interrupted: threading.Event = field(default_factory=threading.Event)  # SIGTERM / in-process stop
    total_steps: int | None = None
    _last_poll: float = 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def log(self, step: int, epoch: float, metrics: Mapping[str, float]) -> None:
        """Record metrics of one step (loss, lr, ...) in the store and tell the progress callback."""
        self.store.log_metrics(self.run_id, step, epoch, metrics)
        if self.on_log is not None:
            self.on_log(step, self.total_steps, metrics)

    def set_total_steps(self, total_steps: int, device: str | None = None) -> None:
        """How many optimiser steps the run will take (for progress bars), and its device."""
        self.total_steps = int(total_steps)
        self.store.update_run(self.run_id, total_steps=self.total_steps, device=device)

    def should_stop(self) -> bool:
        """True once a cancel was requested (polled from the store at most every
        `cancel_poll_s` seconds) or the worker was asked to terminate."""
        if not self.stopped:
            if self.interrupted.is_set():
                self.stopped = True
            elif time.monotonic() - self._last_poll >= self.cancel_poll_s:
                self._last_poll = time.monotonic()
                self.stopped = self.store.cancel_requested(self.run_id)
        return self.stopped

    def save_checkpoint(self, state: Mapping[str, Any]) -> Artifact:
        """Write `state` (torch-serialisable) to `run_dir/last.pt` atomically, record it."""
        save_checkpoint_file(self.checkpoint_path, state)
        return self.store.add_artifact(self.run_id, "checkpoint", self.checkpoint_path)

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The last checkpoint of this run (a resumed run), or None on a fresh start."""
        return load_checkpoint_file(self.checkpoint_path, map_location)

    def add_artifact(self, kind: str, path: str | Path) -> Artifact:
        return self.store.add_artifact(self.run_id, kind, path)

    def add_evaluation(self, dataset: str, split: str, metrics: Mapping[str, float]) -> None:
        self.store.add_evaluation(self.run_id, dataset, split, metrics)


def execute(run_id: int, train_fn: TrainFn, store: Store, *, claimed: bool = False,
            runs_root: str | Path | None = None,
            on_log: Callable[[int, int | None, Mapping[str, float]], None] | None = None,
            cancel_poll_s: float = 0.5, context: RunContext | None = None) -> Run:
    """Run `train_fn(run, ctx)` for a queued run and record how it ended.

    Args:
        claimed: the run was already moved to running by a `Runner` (this process takes
            it over); otherwise it must be queued and is started here.
        on_log: progress callback `(step, total_steps or None, metrics)`.
        context: a prepared `RunContext` (its `interrupted` event lets another thread stop
            the run); built here when None.

    Returns:
        The finished run: completed, cancelled (the trainer saw `should_stop()`, or
        Ctrl-C), or failed with the traceback in `error`. Never raises for trainer errors.
    """
    if claimed:
        run = store.update_run(run_id, pid=os.getpid())
    else:
        run = store.start_run(run_id)
    ctx = context or RunContext(store=store, run_id=run.id, run_dir=run_dir(run.id, runs_root))
    ctx.on_log, ctx.cancel_poll_s = on_log or ctx.on_log, cancel_poll_s
    ctx.total_steps = run.total_steps
    try:
        train_fn(run, ctx)
    except KeyboardInterrupt:
        return store.finish_run(run.id, "cancelled", error="interrupted (Ctrl-C / SIGINT); the last saved "
                                                        "checkpoint is kept")
    except BaseException:  # noqa: BLE001 - any trainer error ends the run as failed, with its traceback
        return store.finish_run(run.id, "failed", error=traceback.format_exc())
    return store.finish_run(run.id, "cancelled" if ctx.stopped else "completed")


def last_error_line(run: Run) -> str:
    """The last non-empty line of a run's error text (e.g. 'RuntimeError: CUDA out of memory')."""
    lines = [line for line in (run.error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no error recorded"


class Runner:
    """A queue worker: runs queued runs one at a time, each in a worker subprocess.

    Use `start()` for a background thread (the app) or `run_pending()` to drain the
    queue in the calling thread (CLI, tests). `submit`, `cancel` and `resume` only
    touch the store, so they work from any thread or process.

    Args:
        store: the run store (default: the one at `paths.db_path()`).
        runs_root: where run folders go (default `paths.runs_dir()`); passed to workers.
        poll_interval_s: how often the worker looks for new runs and at its child.
        cancel_grace_s: after a cancel request, how long a worker may take to stop on
            its own before it is sent SIGTERM (and SIGKILL `cancel_grace_s` later).
        worker_command: `fn(run_id) -> argv` to start a worker (default
            `python -m trainers.run RUN_ID --db ... --claimed`).
    """

    def __init__(self, store: Store | None = None, *, runs_root: str | Path | None = None,
                 poll_interval_s: float = 1.0, cancel_grace_s: float = 30.0,
                 worker_command: Callable[[int], Sequence[str]] | None = None,
                 env: Mapping[str, str] | None = None):
        self.store = store or Store()
        self.runs_root = Path(runs_root) if runs_root is not None else paths.runs_dir()
        self.poll_interval_s = poll_interval_s
        self.cancel_grace_s = cancel_grace_s
        self.worker_command = worker_command or self._default_command
        self.env = dict(env) if env is not None else None
        self.lock_path = self.store.path.with_name(self.store.path.name + ".worker.lock")
        self.current: int | None = None  # id of the run this worker is running
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- queue operations (store only)

    def submit(self, name: str, kind: str, config: Mapping[str, Any]) -> int:
        """Queue a run; returns its id. A started worker picks it up within a poll."""
        run_id = self.store.create_run(name, kind, config)
        self._wake.set()
        return run_id

    def cancel(self, run_id: int) -> Run:
        """Cancel a queued run now, or ask a running one to stop at its next step."""
        return self.store.request_cancel(run_id)

    def resume(self, run_id: int) -> Run:
        """Queue a failed or cancelled run again; its trainer continues from its last checkpoint."""
        run = self.store.requeue_run(run_id)
        self._wake.set()
        return run

    # -- the worker

    def _default_command(self, run_id: int) -> list[str]:
        return [sys.executable, "-m", "trainers.run", str(run_id), "--db", str(self.store.path),
                "--runs-dir", str(self.runs_root), "--claimed"]

    @contextmanager
    def worker_lock(self) -> Iterator[bool]:
        """Yields True when this process holds the single-worker lock of this store file."""
        if fcntl is None:  # pragma: no cover
            yield True
            return
        with open(self.lock_path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def run_pending(self, max_runs: int | None = None) -> list[Run]:
        """Run queued runs, oldest first, until none is left (or `max_runs`); returns them
        finished. Returns [] at once when another worker holds this store's lock."""
        done: list[Run] = []
        with self.worker_lock() as mine:
            if not mine:
                return done
            while (max_runs is None or len(done) < max_runs) and not self._stop.is_set():
                claimed = self.store.claim_next_run()
                if claimed is None:
                    break
                done.append(self._run_claimed(claimed))
        return done

    def _run_claimed(self, run: Run) -> Run:
        """Start the worker process for a run this process claimed, watch it, reconcile."""
        self.current = run.id
        folder = run_dir(run.id, self.runs_root)
        log_path = folder / WORKER_LOG_NAME
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.REPO_ROOT), env.get("PYTHONPATH")]))
        try:
            with open(log_path, "ab") as log:
                try:
                    child = subprocess.Popen(list(self.worker_command(run.id)), cwd=paths.REPO_ROOT, env=env,
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                except OSError as exc:
                    return self.store.finish_run(run.id, "failed", error=f"could not start the worker: {exc}")
                returncode, killed = self._watch(run.id, child)
            return self._reconcile(run.id, child.pid, returncode, killed, log_path)
        finally:
            self.current = None

    def _watch(self, run_id: int, child: subprocess.Popen) -> tuple[int, bool]:
        """Wait for the worker; past the cancel grace period, terminate it. Returns
        (exit code, whether we had to stop it ourselves)."""
        cancel_seen: float | None = None
        terminated = False
        while True:
            try:
                return child.wait(timeout=self.poll_interval_s), terminated
            except subprocess.TimeoutExpired:
                pass
            if cancel_seen is None:
                try:
                    if self.store.cancel_requested(run_id):
                        cancel_seen = time.monotonic()
                except StoreError:
                    cancel_seen = time.monotonic()  # the run was deleted under us
                continue
            waited = time.monotonic() - cancel_seen
            if waited > 2 * self.cancel_grace_s:
                child.kill()
            elif waited > self.cancel_grace_s and not terminated:
                child.send_signal(signal.SIGTERM)  # trainers.run turns SIGTERM into a stop at the next step
                terminated = True

    def _reconcile(self, run_id: int, child_pid: int, returncode: int, killed: bool, log_path: Path) -> Run:
        """A worker that exited without finishing its run (crash, OOM kill, SIGKILL) gets
        its run marked failed (or cancelled, if it was stopped after a cancel)."""
        run = self.store.get_run(run_id)
        if run.status != "running" or run.pid not in (child_pid, os.getpid()):
            return run  # the worker finished it (and someone may already have resumed it)
        how = (f"killed by signal {signal.Signals(-returncode).name}" if returncode < 0
               else f"exited with code {returncode}")
        tail = _tail(log_path, 4000)
        if killed or (run.cancel_requested and returncode != 0):
            return self.store.finish_run(run_id, "cancelled", error=f"worker {how} after a cancel request; "
                                                                   f"the last saved checkpoint is kept")
        return self.store.finish_run(run_id, "failed", error=f"worker process {how} without finishing the run "
                                                            f"(crash or out of memory?). Last output:\n{tail}")

    def start(self) -> None:
        """Start the background worker thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="xmodal-runner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except XmodalError as exc:  # a busy store must not kill the worker thread
                print(f"xmodal runner: {exc}", file=sys.stderr)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def stop(self, *, cancel_current: bool = False, timeout: float | None = None) -> None:
        """Stop taking new runs; optionally cancel the current one; wait for the thread."""
        self._stop.set()
        self._wake.set()
        if cancel_current and self.current is not None:
            try:
                self.cancel(self.current)
            except StoreError:
                pass  # it finished meanwhile
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _tail(path: Path, n_chars: int) -> str:
    try:
        data = path.read_bytes()[-n_chars:]
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")
