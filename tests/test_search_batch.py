"""`xmodal search --queries FILE.csv`: a batch of real spoken and written queries against the default
gallery (cascade: no training), one result per row, R@k and latency that agree with the rows, bad rows
reported while the others run, and one clear line (exit 2) for a file that cannot be used at all."""
from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from contextlib import redirect_stdout
from io import StringIO

import numpy as np
import pytest

from tests.browser_helpers import make_home
from xmodal_core.cli import main


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A fresh home whose built data sets, models and default gallery link into the test cache."""
    from xmodal_core import gallery

    with pytest.MonkeyPatch.context() as mp:
        path = make_home(tmp_path_factory.mktemp("batch"))
        mp.setenv("XMODAL_HOME", str(path))
        gallery.forget_loaded()  # galleries are held by name; this home's are its own
        yield path
    gallery.forget_loaded()


@pytest.fixture(scope="module")
def picked(home):
    """Two default-gallery items whose caption no other item shares (not even in other case)."""
    from xmodal_core.gallery import default_gallery

    items = default_gallery().items
    counts = Counter(it.text.lower().strip(" .") for it in items)
    unique = [it for it in items if it.caption and counts[it.text.lower().strip(" .")] == 1]
    return unique[0], unique[len(unique) // 2]


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


@pytest.fixture(scope="module")
def batch(home, picked, fsdd_dir, tmp_path_factory):
    """The CSV (eleven rows: six good, five bad) and the command's JSON for it."""
    folder = tmp_path_factory.mktemp("queries")
    (folder / "clips").mkdir()
    shutil.copy(fsdd_dir / "3_jackson_0.wav", folder / "clips" / "3_jackson_0.wav")  # named relative to the CSV
    (folder / "clips" / "broken.wav").write_bytes(b"\x00\x01not a sound" * 64)
    a, b = picked
    rows = [
        ("spoken-3", "clips/3_jackson_0.wav", "", "", "three"),
        ("spoken-3b", str(fsdd_dir / "3_george_0.wav"), "", "", "three"),
        ("caption-a", "", a.caption, a.id, ""),
        ("caption-b", "", b.caption, f"{a.id}|{b.id}", ""),
        ("frog", "", "a green frog", "", "frog"),
        ("no-expectation", "", "a red apple", "", ""),
        ("missing-file", "clips/nope.wav", "", "", "three"),
        ("broken-file", "clips/broken.wav", "", "", ""),
        ("two-queries", "clips/3_jackson_0.wav", "three", "", ""),
        ("unknown-id", "", "a cat", "no-such-item", ""),
        ("unknown-label", "", "a frog", "", "frogg"),
    ]
    csv_path = write_csv(folder / "queries.csv", [("id", "audio", "text", "expected", "label"), *rows])
    out = StringIO()
    with redirect_stdout(out):
        code = main(["search", "--queries", str(csv_path), "--mode", "cascade", "--k", "10", "--json"])
    return {"code": code, "rows": rows, "folder": folder, "doc": json.loads(out.getvalue())}


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _is_correct(hit_id: str, expected: str, label: str) -> bool:
    from xmodal_core.adapt.vocabulary import entry_of
    from xmodal_core.gallery import default_gallery

    if hit_id in expected.split("|"):
        return True
    return bool(label) and entry_of(default_gallery().item(hit_id).text) == entry_of(label)


def test_one_result_per_row_in_order_with_bad_rows_reported_and_the_others_searched(batch):
    doc = batch["doc"]
    assert batch["code"] == 0
    assert [q["id"] for q in doc["queries"]] == [r[0] for r in batch["rows"]]
    by_id = {q["id"]: q for q in doc["queries"]}
    errors = {i: by_id[i]["error"] for i in ("missing-file", "broken-file", "two-queries", "unknown-id",
                                              "unknown-label")}
    assert "does not exist" in errors["missing-file"] and "could not decode" in errors["broken-file"]
    assert "several queries" in errors["two-queries"] and "no-such-item" in errors["unknown-id"]
    assert "no item of gallery default has a caption saying the label 'frogg'" in errors["unknown-label"]
    assert all(not by_id[i]["ok"] and by_id[i]["hits"] == [] for i in errors)
    good = [q for q in doc["queries"] if q["id"] not in errors]
    assert all(q["ok"] and q["error"] is None and len(q["hits"]) == 10 for q in good)
    assert doc["summary"]["n"] == 11 and doc["summary"]["n_failed"] == 5


def test_relative_paths_are_read_from_the_csv_folder_and_speech_rows_carry_their_transcript(batch):
    spoken = batch["doc"]["queries"][0]
    assert spoken["input"] == str(batch["folder"] / "clips" / "3_jackson_0.wav")
    assert spoken["query"] == "speech" and spoken["transcript"].strip()
    assert "transcript" not in batch["doc"]["queries"][2]  # a written query has none


def test_a_caption_typed_exactly_finds_its_own_item_first(batch, picked):
    a, b = picked
    by_id = {q["id"]: q for q in batch["doc"]["queries"]}
    assert by_id["caption-a"]["hits"][0]["id"] == a.id and by_id["caption-a"]["rank"] == 1
    assert by_id["caption-b"]["hits"][0]["id"] == b.id and by_id["caption-b"]["rank"] == 1  # one of "a|b"


def test_recall_and_latency_in_the_summary_follow_from_the_rows(batch):
    doc, rows = batch["doc"], batch["rows"]
    judged = [(q, r) for q, r in zip(doc["queries"], rows) if r[3] or r[4]]  # rows with expected ids or a label
    assert doc["summary"]["n_with_expectations"] == len(judged) == 8
    for k in (1, 5, 10):
        found = [q["ok"] and any(_is_correct(h["id"], r[3], r[4]) for h in q["hits"][:k]) for q, r in judged]
        assert doc["summary"][f"R@{k}"] == pytest.approx(sum(found) / len(judged), abs=1e-4)
    ms = [q["total_ms"] for q in doc["queries"] if q["ok"]]
    assert doc["summary"]["p50_ms"] == pytest.approx(np.percentile(ms, 50), abs=0.2)
    assert doc["summary"]["p95_ms"] == pytest.approx(np.percentile(ms, 95), abs=0.2)


def test_models_load_once_for_the_batch(batch):
    """Only the first query may pay for loading a model; later ones report no "(first use)" stage."""
    ran = [q for q in batch["doc"]["queries"] if q["ok"]]
    assert ran[1]["query"] == ran[0]["query"] == "speech"
    later = [t["stage"] for q in ran[1:] for t in q["timings"]]
    assert later and not [s for s in later if "(first use)" in s]


def test_json_is_one_document_of_queries_and_summary(batch):
    doc = batch["doc"]
    assert set(doc) == {"queries", "summary"}
    assert {"n", "n_failed", "R@1", "R@5", "R@10", "p50_ms", "p95_ms"} <= set(doc["summary"])
    first = doc["queries"][2]
    assert {"id", "query", "hits", "total_ms", "ok", "error"} <= set(first)
    assert set(first["hits"][0]) == {"rank", "id", "score"} and isinstance(first["hits"][0]["score"], float)


def test_readable_output_has_a_line_per_query_a_summary_and_a_progress_bar(home, picked, tmp_path, capsys):
    a, _ = picked
    csv_path = write_csv(tmp_path / "q.csv", [("text", "expected"), (a.caption, a.id), ("a red apple", "")])
    code, out, err = run_cli(capsys, "search", "--queries", str(csv_path), "--mode", "cascade", "--k", "3")
    assert code == 0
    assert f"[{a.id}]" in out and "\n1  text" in out and "\n2  text" in out  # ids default to the row number
    assert out.strip().splitlines()[-1].startswith("2 queries, 0 failed; R@1 1.000")
    assert "2/2" in err  # the tqdm bar on stderr


def test_all_rows_failing_exits_1_after_reporting_them(home, tmp_path, capsys):
    csv_path = write_csv(tmp_path / "q.csv", [("audio",), ("missing.wav",)])
    code, out, err = run_cli(capsys, "search", "--queries", str(csv_path), "--json", "--mode", "cascade")
    assert code == 1 and json.loads(out)["summary"]["n_failed"] == 1 and "all 1 queries failed" in err


@pytest.mark.parametrize("lines, message", [
    (None, "does not exist"),
    ([], "is empty"),
    (["id,expected", "1,tuxpaint:animals/amphibians/frog.png"], "no query column"),
    (["text"], "no rows"),
    (["text"] + ["a frog"] * 10_001, "more than 10,000 rows"),
])
def test_a_file_that_cannot_be_used_exits_2_with_one_line(home, tmp_path, capsys, lines, message):
    csv_path = tmp_path / "queries.csv"
    if lines is not None:
        csv_path.write_text("\n".join(lines), encoding="utf-8")
    code, out, err = run_cli(capsys, "search", "--queries", str(csv_path), "--mode", "cascade")
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_queries_and_a_single_query_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["search", "--queries", "q.csv", "--query-text", "a frog"])
    assert exc.value.code == 2 and "not allowed with" in capsys.readouterr().err
