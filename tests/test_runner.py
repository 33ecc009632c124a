"""The run queue runs each queued run in its own worker process and records how it ended."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from xmodal_core.runner import RunContext, Runner, execute, last_error_line
from xmodal_core.store import Run, Store

HERE = "tests.test_runner"


# ---- trainers the worker processes import by "module:function" kind

def counting_trainer(run: Run, ctx: RunContext) -> None:
    """Counts to config['steps'], one checkpoint per step, stops when asked, resumes."""
    steps, pause = run.config["steps"], run.config.get("sleep", 0.0)
    state = ctx.load_checkpoint() or {"step": 0}
    ctx.set_total_steps(steps, device="cpu")
    for step in range(state["step"] + 1, steps + 1):
        if ctx.should_stop():
            return
        time.sleep(pause)
        ctx.log(step, step / steps, {"loss": 1.0 / step})
        ctx.save_checkpoint({"step": step})


def quick_trainer(run: Run, ctx: RunContext) -> None:
    """Logs config['steps'] steps; no checkpoints (so its worker never imports torch)."""
    for step in range(1, run.config["steps"] + 1):
        ctx.log(step, 1.0, {"loss": 1.0 / step})


def failing_trainer(run: Run, ctx: RunContext) -> None:
    ctx.log(1, 0.0, {"loss": 1.0})
    raise RuntimeError("boom at step 1")


def dying_trainer(run: Run, ctx: RunContext) -> None:
    """Dies the way an OOM-killed or segfaulting process does: no Python cleanup."""
    print("about to die", flush=True)
    if run.config["how"] == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def stubborn_trainer(run: Run, ctx: RunContext) -> None:
    """Never looks at should_stop(), and ignores SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    step = 0
    while True:
        step += 1
        ctx.log(step, 0.0, {"loss": 1.0})
        time.sleep(0.02)


# ---- helpers

@pytest.fixture()
def store(xmodal_home: Path) -> Store:
    with Store(xmodal_home / "runs.db") as s:
        yield s


@pytest.fixture()
def runner(store: Store, xmodal_home: Path) -> Runner:
    r = Runner(store, runs_root=xmodal_home / "runs", poll_interval_s=0.05, cancel_grace_s=30.0)
    yield r
    r.stop(cancel_current=True, timeout=30)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ---- tests

def test_queued_run_completes_in_a_worker_process(runner: Runner, store: Store):
    run_id = runner.submit("count", f"{HERE}:counting_trainer", {"steps": 5})
    [run] = runner.run_pending()
    assert (run.id, run.status, run.error, run.device, run.total_steps) == (run_id, "completed", None, "cpu", 5)
    assert run.pid != os.getpid()  # it ran in another process
    assert [m.step for m in store.metrics(run_id, "loss")] == [1, 2, 3, 4, 5]
    [ckpt] = store.artifacts(run_id, "checkpoint")
    assert Path(ckpt.path) == runner.runs_root / str(run_id) / "last.pt"
    assert "run %d completed" % run_id in (runner.runs_root / str(run_id) / "worker.log").read_text()


def test_runs_go_one_at_a_time_oldest_first(runner: Runner):
    ids = [runner.submit(f"r{i}", f"{HERE}:quick_trainer", {"steps": 2}) for i in range(3)]
    runs = runner.run_pending()
    assert [r.id for r in runs] == ids and {r.status for r in runs} == {"completed"}
    for before, after in zip(runs, runs[1:]):
        assert after.started_at >= before.finished_at


def test_trainer_exception_fails_the_run_with_its_traceback(runner: Runner):
    runner.submit("fail", f"{HERE}:failing_trainer", {})
    [run] = runner.run_pending()
    assert run.status == "failed"
    assert "Traceback" in run.error and "failing_trainer" in run.error
    assert last_error_line(run) == "RuntimeError: boom at step 1"


@pytest.mark.parametrize("how, expected", [("exit", "exited with code 3"), ("kill", "killed by signal SIGKILL")])
def test_worker_dying_hard_fails_the_run_with_its_output(runner: Runner, how: str, expected: str):
    runner.submit("die", f"{HERE}:dying_trainer", {"how": how})
    [run] = runner.run_pending()
    assert run.status == "failed" and expected in run.error and "about to die" in run.error


def test_unknown_kind_fails_with_a_clear_message(runner: Runner):
    runner.submit("nope", "no-such-trainer", {})
    [run] = runner.run_pending()
    assert run.status == "failed" and "unknown run kind 'no-such-trainer'" in last_error_line(run)


def test_cancel_stops_at_next_step_keeps_checkpoint_and_resume_continues(runner: Runner, store: Store):
    import torch

    run_id = runner.submit("long", f"{HERE}:counting_trainer", {"steps": 20, "sleep": 0.05})
    runner.start()
    wait_for(lambda: store.get_run(run_id).step >= 3, what="3 steps")
    cancelled_at = time.time()
    runner.cancel(run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).finished and r, what="the run to stop")
    assert run.status == "cancelled" and run.error is None
    stopped_step = torch.load(runner.runs_root / str(run_id) / "last.pt")["step"]
    assert 3 <= stopped_step == run.step < 20

    runner.resume(run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).finished and r, what="the resumed run")
    assert run.status == "completed", run.error
    loss = store.metrics(run_id, "loss")
    assert [m.step for m in loss] == list(range(1, 21))
    assert loss[0].time < cancelled_at < loss[-1].time  # steps before the cancel were not redone
    assert torch.load(runner.runs_root / str(run_id) / "last.pt")["step"] == 20


def test_cancelled_queued_run_never_starts(runner: Runner, store: Store):
    run_id = runner.submit("q", f"{HERE}:counting_trainer", {"steps": 2})
    assert runner.cancel(run_id).status == "cancelled"
    assert runner.run_pending() == []
    assert store.get_run(run_id).started_at is None


def test_worker_ignoring_cancel_is_killed_after_the_grace_period(store: Store, xmodal_home: Path):
    runner = Runner(store, runs_root=xmodal_home / "runs", poll_interval_s=0.05, cancel_grace_s=0.5)
    run_id = runner.submit("stubborn", f"{HERE}:stubborn_trainer", {})
    runner.start()
    wait_for(lambda: store.get_run(run_id).step >= 2, what="the stubborn run to start")
    runner.cancel(run_id)
    run = wait_for(lambda: (r := store.get_run(run_id)).finished and r, what="the kill")
    runner.stop(timeout=10)
    assert run.status == "cancelled" and "killed by signal SIGKILL after a cancel request" in run.error


def test_only_one_worker_per_store(runner: Runner, store: Store):
    other = Runner(store, runs_root=runner.runs_root, poll_interval_s=0.05)
    run_id = runner.submit("q", f"{HERE}:quick_trainer", {"steps": 1})
    with runner.worker_lock() as mine:
        assert mine
        assert other.run_pending() == []  # the lock is taken: the other worker leaves the queue alone
        assert store.get_run(run_id).status == "queued"
    assert [r.status for r in other.run_pending()] == ["completed"]


def test_execute_in_process_records_failure_and_interrupt(store: Store, xmodal_home: Path):
    def broken(run, ctx):
        raise ValueError("bad batch")

    def interrupted(run, ctx):
        raise KeyboardInterrupt

    failed = execute(store.create_run("a", "x", {}), broken, store, runs_root=xmodal_home)
    assert failed.status == "failed" and last_error_line(failed) == "ValueError: bad batch"
    stopped = execute(store.create_run("b", "x", {}), interrupted, store, runs_root=xmodal_home)
    assert stopped.status == "cancelled" and "interrupted" in stopped.error
