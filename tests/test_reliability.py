"""Reliability and security at the boundaries: folder indexing only under allowed roots, items
re-checked when served, gallery names that cannot be paths, the recordings gallery from the CLI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from xmodal_core import gallery as galleries
from xmodal_core import paths
from xmodal_core.errors import InputError


@pytest.fixture()
def pictures(xmodal_home, tmp_path):
    galleries.forget_loaded()
    root = tmp_path / "pictures"
    root.mkdir()
    for name, color in (("red.png", (200, 0, 0)), ("blue.png", (0, 0, 200))):
        Image.new("RGB", (16, 16), color).save(root / name)
    yield root
    galleries.forget_loaded()
    galleries.set_index_roots(None)


@pytest.mark.parametrize("folder", ["/", "/proc/self", "/proc", "/sys", "/dev", "/etc", str(paths.REPO_ROOT),
                                    str(paths.REPO_ROOT / "assets"), "/root/\udcff", "/tmp/a\x00b",
                                    "/tmp/" + "x" * 400])
def test_system_and_program_folders_are_never_indexed(pictures, folder):
    with pytest.raises(InputError) as info:
        galleries.index_folder(folder, encoder_name=None)
    message = str(info.value)
    assert "unexpected" not in message and len(message) < 600


def test_folders_are_indexed_only_under_the_allowed_roots(pictures, tmp_path):
    galleries.set_index_roots([tmp_path / "elsewhere"])
    with pytest.raises(InputError, match="outside the folders it may be read from"):
        galleries.index_folder(pictures, encoder_name=None)
    galleries.set_index_roots([tmp_path])
    gallery, report = galleries.index_folder(pictures, encoder_name=None)
    assert report.items == 2 and gallery.root == str(pictures.resolve())


def test_default_roots_are_home_and_shared_data_folders(monkeypatch):
    monkeypatch.delenv("XMODAL_ALLOW_DIRS", raising=False)
    galleries.set_index_roots(None)
    roots = galleries.index_roots()
    assert Path.home().resolve() in roots and Path("/usr/share") in roots
    assert not any(str(r).startswith(("/proc", "/sys", "/dev")) for r in roots)
    with pytest.raises(InputError, match="outside"):
        galleries.check_index_folder("/var/tmp")
    assert galleries.check_index_folder("/usr/share/tuxpaint/stamps") == Path("/usr/share/tuxpaint/stamps")


def test_a_file_swapped_for_a_link_after_indexing_is_not_served(pictures, tmp_path):
    gallery, _ = galleries.index_folder(pictures, encoder_name=None)
    red = gallery.item("folder:red.png")
    assert galleries.served_image(gallery, red) == red.image
    outside = tmp_path / "secret.png"
    Image.new("RGB", (16, 16), (1, 2, 3)).save(outside)
    os.unlink(red.image)
    os.symlink(outside, red.image)
    assert galleries.served_image(gallery, red) is None
    os.unlink(red.image)
    os.mkfifo(red.image)  # not a regular file any more
    assert galleries.served_image(gallery, red) is None
    blue = gallery.item("folder:blue.png")
    assert galleries.served_image(gallery, blue) == blue.image


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc", "a/b", "x" * 300, "bad\udcffname", "nul\x00"])
def test_gallery_names_cannot_be_paths(xmodal_home, name):
    with pytest.raises(InputError):
        galleries.open_gallery(name)


def test_cli_search_refuses_a_path_as_gallery(xmodal_home):
    from xmodal_core.cli.search import search_query

    with pytest.raises(InputError, match="not a valid gallery name"):
        search_query(text="a frog", gallery="/etc/passwd")


def test_app_serves_the_media_folders_and_not_the_store(xmodal_home):
    roots = galleries.media_roots()
    assert Path("/usr/share/tuxpaint/stamps") in roots
    assert all(not paths.db_path().resolve().is_relative_to(r.resolve()) for r in roots)
    assert paths.home().resolve() not in [r.resolve() for r in roots]


# ------------------------------------------------------------ stale runs

_CLAIM_AND_HANG = """
import sys, time
from xmodal_core.store import Store
store = Store(sys.argv[1])
run = store.claim_next_run()
print(run.id, flush=True)
time.sleep(600)
"""


def _run_killed_with_sigkill(store, name="stale"):
    """A real process claims a queued run (as `xmodal train` does), then is killed with SIGKILL."""
    import signal
    import subprocess
    import sys

    run_id = store.create_run(name, "align", {"epochs": 1})
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_HANG, str(store.path)], stdout=subprocess.PIPE,
                             text=True, env=dict(os.environ, PYTHONPATH=str(paths.REPO_ROOT)))
    try:
        assert int(child.stdout.readline()) == run_id
        running = store.get_run(run_id)
        assert running.status == "running" and running.pid == child.pid
        assert store.dead_runs() == []  # alive: left alone
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    return run_id


def test_a_killed_run_is_marked_failed_when_the_train_page_refreshes(xmodal_home):
    from pages import train as tr
    from xmodal_core.runner import Runner
    from xmodal_core.store import Store

    store = Store()  # opened before the kill, as the app's store is
    run_id = _run_killed_with_sigkill(store)
    assert store.get_run(run_id).status == "running"  # nothing has looked yet
    tr._state["runner"] = Runner(store)
    try:
        status, rows, _, _ = tr.refresh(None, [])
    finally:
        tr._state["runner"] = None
    run = store.get_run(run_id)
    assert run.status == "failed" and "exited without finishing" in run.error
    assert "running" not in status
    assert [r for r in rows if r[0] == run_id]


def test_a_killed_run_is_marked_failed_when_the_app_starts(xmodal_home):
    from xmodal_core.store import Store

    run_id = _run_killed_with_sigkill(Store(recover=False))
    assert Store().get_run(run_id).status == "failed"  # what app.py's Runner() opens


def test_cancel_on_a_run_whose_process_is_gone_cancels_it(xmodal_home):
    from xmodal_core.runner import Runner
    from xmodal_core.store import Store

    store = Store()
    run_id = _run_killed_with_sigkill(store)
    run = Runner(store).cancel(run_id)
    assert run.status == "cancelled" and store.get_run(run_id).finished_at is not None
    assert Runner(store).resume(run_id).status == "queued"  # and it can be resumed
