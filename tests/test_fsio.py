"""Atomic writes: a failed write leaves the old file whole; concurrent writers never tear a file."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from xmodal_core.fsio import atomic_path, atomic_write, atomic_write_json


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "index.npz"
    with atomic_path(target) as tmp:
        np.savez(open(tmp, "wb"), x=np.arange(5))
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed while writing")
    assert np.load(target)["x"].tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in target.parent.iterdir()] == ["index.npz"]


def test_concurrent_writers_of_one_file_leave_one_complete_version(tmp_path):
    target = tmp_path / "state.json"
    payloads = [{"writer": i, "rows": list(range(i * 1000, i * 1000 + 5000))} for i in range(8)]
    threads = [threading.Thread(target=atomic_write_json, args=(target, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert json.loads(target.read_text()) in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_text_is_written_in_utf8_and_the_file_is_readable_by_others(tmp_path):
    path = atomic_write(tmp_path / "caption.txt", "Ærøskøbing – ünïcode")
    assert path.read_bytes() == "Ærøskøbing – ünïcode".encode("utf-8")
    assert path.stat().st_mode & 0o044 == 0o044  # mkstemp's 0600 is replaced: caches are shared
