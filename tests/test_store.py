"""The run store keeps every committed row through crashes, concurrent writers and reopening."""
from __future__ import annotations

import hashlib
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xmodal_core.errors import InputError, StoreError
from xmodal_core.paths import REPO_ROOT
from xmodal_core.store import Store, pid_alive


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "runs.db") as s:
        yield s


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=env, text=True, **kw)


# A writer process: starts a run, then logs one metric row per step and prints the
# step only after the transaction committed.
WRITER = """
import sys
from xmodal_core.store import Store
store = Store(sys.argv[1])
run_id = int(sys.argv[2])
store.start_run(run_id, device="cpu")
step = 0
while True:
    store.log_metrics(run_id, step, step / 100, {"loss": 1.0 / (step + 1), "lr": 0.001})
    print(step, flush=True)
    step += 1
"""

# A writer that logs a fixed number of rows under its own run and exits.
BURST = """
import sys
from xmodal_core.store import Store
store = Store(sys.argv[1])
run_id, n = int(sys.argv[2]), int(sys.argv[3])
for step in range(n):
    store.log_metrics(run_id, step, 0.0, {"loss": float(step)})
    store.save_label("burst", f"{run_id}-{step}", "accept")
"""


def test_run_moves_queued_running_completed(store: Store):
    run_id = store.create_run("first", "align", {"lr": 1e-3, "towers": ["speech", "text"]})
    run = store.get_run(run_id)
    assert (run.status, run.config, run.started_at) == ("queued", {"lr": 1e-3, "towers": ["speech", "text"]}, None)

    run = store.start_run(run_id, device="cpu", total_steps=10)
    assert (run.status, run.device, run.pid, run.total_steps) == ("running", "cpu", os.getpid(), 10)
    run = store.finish_run(run_id, "completed")
    assert run.status == "completed" and run.finished_at >= run.started_at >= run.created_at


@pytest.mark.parametrize("path, bad", [
    ([], "completed"),                         # queued cannot complete without running
    (["running", "completed"], "running"),     # finished runs stay finished
    (["running", "completed"], "queued"),      # a completed run cannot be resumed
    (["running"], "queued"),                   # a running run cannot be re-queued
])
def test_illegal_status_change_raises_store_error(store: Store, path, bad):
    run_id = store.create_run("r", "align", {})
    moves = {"running": store.start_run, "completed": lambda i: store.finish_run(i, "completed")}
    for status in path:
        moves[status](run_id)
    with pytest.raises(StoreError, match=f"run {run_id} is"):
        if bad == "running":
            store.start_run(run_id)
        elif bad == "queued":
            store.requeue_run(run_id)
        else:
            store.finish_run(run_id, bad)


def test_unknown_run_and_bad_status_raise_store_error(store: Store):
    with pytest.raises(StoreError, match="no run with id 42"):
        store.get_run(42)
    with pytest.raises(StoreError, match="no run with id 42"):
        store.log_metrics(42, 0, 0, {"loss": 1.0})
    with pytest.raises(StoreError, match="no run with id 42"):
        store.cancel_requested(42)
    run_id = store.create_run("r", "align", {})
    with pytest.raises(StoreError, match="finish_run needs one of"):
        store.finish_run(run_id, "running")
    with pytest.raises(InputError, match="not plain JSON"):
        store.create_run("r", "align", {"x": object()})


def test_failed_and_cancelled_runs_resume_as_queued(store: Store):
    run_id = store.create_run("r", "align", {})
    store.start_run(run_id)
    store.finish_run(run_id, "failed", error="Traceback ...\nRuntimeError: boom")
    assert store.get_run(run_id).error.endswith("RuntimeError: boom")
    run = store.requeue_run(run_id)
    assert (run.status, run.error, run.finished_at) == ("queued", None, None)
    store.start_run(run_id)
    assert store.request_cancel(run_id).cancel_requested
    store.finish_run(run_id, "cancelled")
    assert store.requeue_run(run_id).cancel_requested is False


def test_cancel_queued_is_immediate_running_is_a_flag(store: Store):
    queued = store.create_run("q", "align", {})
    assert store.request_cancel(queued).status == "cancelled"
    running = store.create_run("r", "align", {})
    store.start_run(running)
    assert not store.cancel_requested(running)
    assert store.request_cancel(running).status == "running"
    assert store.cancel_requested(running)
    store.finish_run(running, "cancelled")
    with pytest.raises(StoreError, match="nothing to cancel"):
        store.request_cancel(running)


def test_metrics_round_trip_replace_and_keep_nan(store: Store):
    run_id = store.create_run("r", "align", {})
    store.start_run(run_id)
    store.log_metrics(run_id, 1, 0.5, {"loss": 2.0, "lr": 1e-4})
    store.log_metrics(run_id, 2, 1.0, {"loss": float("nan")})
    store.log_metrics(run_id, 1, 0.5, {"loss": 1.5})  # a resumed run re-logs step 1
    rows = store.metrics(run_id)
    assert [(m.step, m.name) for m in rows] == [(1, "loss"), (1, "lr"), (2, "loss")]
    assert rows[0].value == 1.5 and rows[1].value == 1e-4 and math.isnan(rows[2].value)
    assert [m.step for m in store.metrics(run_id, "loss", since_step=1)] == [2]
    assert store.get_run(run_id).step == 2


def test_evaluations_and_artifacts(store: Store, tmp_path: Path):
    run_id = store.create_run("r", "align", {})
    store.add_evaluation(run_id, "fsdd", "test", {"s2t_r@1": 0.25, "zeroshot_top1": 0.5})
    store.add_evaluation(run_id, "fsdd", "test", {"s2t_r@1": 0.5})
    assert {(e.metric, e.value) for e in store.evaluations(run_id)} == {("s2t_r@1", 0.5), ("zeroshot_top1", 0.5)}

    heads = tmp_path / "heads.safetensors"
    heads.write_bytes(b"weights v1")
    art = store.add_artifact(run_id, "heads", heads)
    assert art.sha256 == hashlib.sha256(b"weights v1").hexdigest() and art.size == 10
    heads.write_bytes(b"weights v2")
    store.add_artifact(run_id, "heads", heads)
    assert [a.sha256 for a in store.artifacts(run_id)] == [hashlib.sha256(b"weights v2").hexdigest()]
    with pytest.raises(StoreError, match="does not exist"):
        store.add_artifact(run_id, "heads", tmp_path / "missing.pt")

    store.delete_run(run_id)  # rows of a deleted run go with it
    other = store.create_run("r2", "align", {})
    assert store.evaluations() == [] and store.artifacts(other) == []


def test_labels_and_templates_survive_reopen(tmp_path: Path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        store.save_label("tuxpaint", "dog-1", "accept")
        store.save_label("tuxpaint", "cat-2", "edit", text="a grey cat", label="cat", audio_path="/a/cat.wav",
                         note="re-recorded")
        store.save_label("tuxpaint", "dog-1", "reject", note="wrong picture")  # replaces the first decision
        store.save_label("fsdd", "3_jackson_0", "accept")
        store.save_templates("short", "a photo of a {}.\n\nit is about {}.\n")
        with pytest.raises(InputError, match="decision must be"):
            store.save_label("tuxpaint", "x", "maybe")
    with Store(path) as store:
        labels = store.labels("tuxpaint")
        assert [(l.item_id, l.decision) for l in labels] == [("cat-2", "edit"), ("dog-1", "reject")]
        cat = labels[0]
        assert (cat.text, cat.label, cat.audio_path, cat.note) == ("a grey cat", "cat", "/a/cat.wav", "re-recorded")
        assert labels[1].note == "wrong picture" and labels[1].updated_at >= labels[1].created_at
        assert len(store.labels()) == 3
        assert store.get_templates("short").templates == ["a photo of a {}.", "it is about {}."]
        assert [t.name for t in store.template_lists()] == ["short"]
        store.delete_templates("short")
        with pytest.raises(StoreError, match="no saved template list"):
            store.get_templates("short")


def test_writer_killed_mid_run_keeps_every_committed_row(tmp_path: Path):
    path = tmp_path / "runs.db"
    with Store(path) as store:
        run_id = store.create_run("crashy", "align", {})
    writer = _python(WRITER, str(path), str(run_id), stdout=subprocess.PIPE)
    committed = []
    for line in writer.stdout:
        committed.append(int(line))
        if len(committed) >= 200:
            break
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()

    with Store(path) as store:
        assert store.integrity_check() == "ok"
        steps = {m.step for m in store.metrics(run_id, "loss")}
        assert set(committed) <= steps  # every step the writer saw committed is there
        assert len(store.metrics(run_id, "lr")) == len(steps)  # no half-written step
        run = store.get_run(run_id)
        assert run.status == "failed" and f"pid {writer.pid}" in run.error and "exited without finishing" in run.error


def test_dead_owner_marked_failed_live_owner_left_alone(tmp_path: Path):
    path = tmp_path / "runs.db"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Store(path) as store:
        orphan = store.create_run("orphan", "align", {})
        store.start_run(orphan, pid=dead.pid)
        mine = store.create_run("mine", "align", {})
        store.start_run(mine)
    assert not pid_alive(dead.pid) and pid_alive(os.getpid())
    with Store(path) as store:
        assert store.get_run(orphan).status == "failed"
        assert store.get_run(mine).status == "running"


def test_concurrent_writers_two_processes_and_two_threads(tmp_path: Path):
    path = tmp_path / "runs.db"
    n = 150
    with Store(path) as store:
        run_ids = [store.create_run(f"w{i}", "align", {}) for i in range(4)]
        procs = [_python(BURST, str(path), str(run_ids[i]), str(n)) for i in (0, 1)]
        errors = []

        def burst(run_id: int) -> None:
            try:
                for step in range(n):
                    store.log_metrics(run_id, step, 0.0, {"loss": float(step)})
                    store.save_label("burst", f"{run_id}-{step}", "accept")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=burst, args=(run_ids[i],)) for i in (2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
        assert errors == []
        for run_id in run_ids:
            assert [m.value for m in store.metrics(run_id)] == [float(s) for s in range(n)]
        assert len(store.labels("burst")) == 4 * n
        assert store.integrity_check() == "ok"


def test_claim_next_run_gives_each_queued_run_to_one_thread(store: Store):
    queued = [store.create_run(f"q{i}", "align", {}) for i in range(40)]
    claimed: list[list[int]] = [[] for _ in range(4)]

    def claim(out: list[int]) -> None:
        while (run := store.claim_next_run()) is not None:
            out.append(run.id)

    threads = [threading.Thread(target=claim, args=(out,)) for out in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for out in claimed for i in out]
    assert sorted(flat) == queued  # each exactly once
    assert {r.status for r in store.list_runs()} == {"running"}
    assert [r.id for r in store.list_runs(limit=3)] == queued[::-1][:3]
