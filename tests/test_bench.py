"""Benchmarks: the quick variant writes complete JSON (every expected number present) and the
report renders every table from it, each naming its data, machine and date."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report, run_all

REPO = Path(__file__).resolve().parent.parent


def test_validate_names_every_missing_or_non_numeric_value():
    doc = {"date": "2026-01-01", "runs": [{"n": 10, "ms": 1.5}, {"n": 20, "ms": None}], "empty": [],
           "section": {"blocked": "waiting for trainers.experiments"}, "ok": {"error": None}}
    problems = run_all.validate(doc, ["date:str", "runs.*.n", "runs.*.ms", "empty.*.x", "nope.x",
                                      "section:present", "runs.*.n:str"])
    text = "\n".join(problems)
    assert "runs.1.ms: expected a number, got None" in text
    assert "empty: expected a non-empty list" in text
    assert "(top): missing 'nope'" in text
    assert "section: waiting for trainers.experiments" in text
    assert "runs.0.n: expected a non-empty string" in text
    assert not run_all.validate(doc, ["date:str", "runs.0.ms", "runs.*.n"])
    assert run_all.validate({"x": True}, ["x"]) and run_all.validate({"x": float("nan")}, ["x"])
    # the quick variant may skip what only a full run can measure, and say so
    skipped = {"s": {"skipped": "needs the full data"}}
    assert not run_all.validate(skipped, ["s:present", "full:s.cwcl.top1"], quick=True)
    assert run_all.validate(skipped, ["s:present"]) == ["s: needs the full data"]
    assert run_all.validate(skipped, ["full:s.cwcl.top1"]) == ["s: missing 'cwcl'"]


def test_every_benchmark_module_exists_and_has_a_schema():
    for bench in run_all.BENCHES:
        assert (REPO / "bench" / f"{bench.name}.py").is_file(), bench.name
        assert bench.schema and bench.quick_timeout_s <= 600


@pytest.mark.slow
def test_quick_benchmarks_write_every_number_and_the_report_shows_them(tmp_path):
    from tests.browser_helpers import cache_home

    # Every benchmark's quick variant (about 5 minutes on 2 cores once the shared test home's
    # content-keyed caches — built sets, frozen features, converted weights — exist).
    env = dict(os.environ, XMODAL_HOME=str(cache_home()), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "bench.run_all", "--quick"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "every expected number is present" in proc.stdout

    for name in (b.name for b in run_all.BENCHES):
        doc = json.loads(run_all.result_path(name, quick=True).read_text())
        assert doc["machine"]["cpu_count"] >= 1 and doc["date"]

    out = tmp_path / "RESULTS.md"
    text = report.build(run_all.RESULTS, out, quick_only=True)
    assert out.read_text(encoding="utf-8") == text
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    assert "cached epoch ≥ 20x faster than recomputing (image_text)" in targets
    assert "CWCL step ≤ 1.2x CL (speech_text, full train step)" in targets
    assert "**met**" in targets or "**not met**" in targets
    # every table of the measured sections is followed by its caption: data, machine, date
    for section in ("## Vector index", "## Training", "## The default model", "## App"):
        body = text.split(section, 1)[1].split("\n## ", 1)[0]
        assert "|---" in body and "*Data:" in body and "Machine:" in body and "Date: 20" in body
        assert "Quick variant" in body


def test_the_vocabulary_curve_keeps_rows_measured_in_earlier_runs(tmp_path, monkeypatch):
    """`bench.adapt --factors 5 10` after `--factors 1 2` adds rows: the earlier ones stay, stamped with
    the run that measured them, and a re-measured factor replaces its old row."""
    import bench._common as common
    from bench import adapt

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert adapt.kept_vocabulary_rows([1]) == []
    old = {"date": "2026-12-01T00:00:00+00:00", "machine": {"git_commit": "abc1234"},
           "vocabulary": [{"factor": 1, "entries": 10}, {"factor": 2, "entries": 20, "date": "2026-11-30"}]}
    (tmp_path / f"{adapt.VOCABULARY_OUT}.json").write_text(json.dumps(old))
    kept = adapt.kept_vocabulary_rows([2, 5])
    assert kept == [{"date": "2026-12-01T00:00:00+00:00", "git_commit": "abc1234", "factor": 1, "entries": 10}]
    merged = adapt.merge_rows(kept, [{"factor": 5, "entries": 50}, {"factor": 2, "entries": 21}])
    assert [(r["factor"], r["entries"]) for r in merged] == [(1, 10), (2, 21), (5, 50)]


def test_the_vocabulary_curve_draws_each_general_word_once_and_never_a_gallery_name():
    from bench import adapt
    from xmodal_core.adapt.core import general_words

    exclude = ["apple tree", "Zebra"]
    pool = adapt.curve_pool(exclude, 100)
    everything = general_words(10 ** 9)
    assert len(pool) == len(set(pool)) == len(everything) - len({"apple", "tree", "zebra"} & set(everything))
    assert not {"apple", "tree", "zebra"} & set(pool)
    assert pool[:400] != sorted(pool[:400])  # a shuffled draw, so a prefix is not alphabetical
    assert set(pool[:400]) == set(general_words(400, exclude, seed=7))  # 5x's words, as first measured
