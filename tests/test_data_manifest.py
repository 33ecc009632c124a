"""Manifests: the record format, atomic writes, and splits that never mix a group or a speaker."""
from __future__ import annotations

import json
from collections import defaultdict

import pytest

from xmodal_core.data.manifest import (
    BuildSummary,
    Record,
    check_disjoint,
    count_records,
    list_datasets,
    load_manifest,
    split_by_group,
    split_for_key,
    write_manifest,
)
from xmodal_core.errors import DatasetError, InputError

FIELDS = ["id", "image", "audio", "text", "label", "group", "speaker", "source", "split", "license"]


def test_manifest_round_trip_keeps_every_field_and_stores_set_media_relative(xmodal_home):
    from xmodal_core import paths

    media = paths.datasets_dir() / "demo" / "media" / "a.png"
    media.parent.mkdir(parents=True)
    media.write_bytes(b"x")
    records = [
        Record(id="demo:a", image=str(media), text="a red apple", label="fruit", group="demo:a", source="test",
               split="train", license="CC0"),
        Record(id="demo:b", audio="/usr/share/x.wav", text="hello", group="demo:b", speaker="p1", split="test"),
    ]
    path = write_manifest(paths.datasets_dir() / "demo" / "manifest.jsonl", records)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [list(r) for r in rows] == [FIELDS, FIELDS]
    assert rows[0]["image"] == "media/a.png"           # inside the set: relative, so a home can move
    assert rows[1]["audio"] == "/usr/share/x.wav"      # system sources stay absolute
    assert load_manifest("demo") == records
    assert [r.id for r in load_manifest("demo", split="test")] == ["demo:b"]


def test_write_manifest_is_atomic_and_refuses_duplicate_ids(xmodal_home, tmp_path):
    path = tmp_path / "m.jsonl"
    write_manifest(path, [Record(id="a", text="first", group="a")])
    with pytest.raises(DatasetError, match="duplicate"):
        write_manifest(path, [Record(id="b", group="b"), Record(id="b", group="b")])
    assert [r.text for r in load_manifest(path)] == ["first"]   # the old manifest is intact
    assert list(tmp_path.glob("*.tmp")) == []


def test_load_manifest_explains_a_missing_or_malformed_set(xmodal_home, tmp_path):
    with pytest.raises(DatasetError, match="xmodal data build"):
        load_manifest("never-built")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "colour": "red"}\n')
    with pytest.raises(DatasetError, match="line 1"):
        load_manifest(bad)
    with pytest.raises(InputError):
        load_manifest(bad, split="holdout")


def test_split_by_group_keeps_each_group_whole_and_matches_fractions():
    records = [Record(id=f"r{i}-{j}", group=f"g{i}") for i in range(2000) for j in range(3)]
    out = split_by_group(records, (0.7, 0.2, 0.1))
    assert check_disjoint(out) == []
    per_group = {r.group: r.split for r in out}
    share = {s: sum(v == s for v in per_group.values()) / len(per_group) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.04)
    assert share["val"] == pytest.approx(0.2, abs=0.04)
    assert share["test"] == pytest.approx(0.1, abs=0.03)
    # Stable: a group's split depends only on its id, not on what else is in the set.
    assert split_by_group(records[:30], (0.7, 0.2, 0.1)) == out[:30]
    assert all(r.split == split_for_key(f"g:{r.group}", (0.7, 0.2, 0.1)) for r in out[:30])


def test_split_by_speaker_links_groups_through_shared_speakers():
    # Each utterance is its own group; speakers must still not cross splits.
    records = [Record(id=f"u{i}", group=f"u{i}", speaker=f"s{i % 7}") for i in range(140)]
    out = split_by_group(records, by_speaker=True)
    assert check_disjoint(out, by_speaker=True) == []
    by_speaker = defaultdict(set)
    for r in out:
        by_speaker[r.speaker].add(r.split)
    assert all(len(s) == 1 for s in by_speaker.values())


def test_forced_split_pins_the_whole_group_and_stricter_pin_wins():
    records = [Record(id="img", image="x.png", group="g"), Record(id="rec", audio="x.wav", group="g"),
               Record(id="other", group="h")]
    out = split_by_group(records, (1.0, 0.0, 0.0), forced=lambda r: "test" if r.audio else None)
    assert [r.split for r in out] == ["test", "test", "train"]
    out = split_by_group(records, (1.0, 0.0, 0.0), forced=lambda r: "val" if r.image else ("test" if r.audio else None))
    assert {r.split for r in out if r.group == "g"} == {"test"}


def test_bad_fractions_are_refused():
    with pytest.raises(InputError, match="fractions"):
        split_by_group([Record(id="a", group="a")], (0.5, 0.2))
    with pytest.raises(InputError, match="fractions"):
        split_by_group([Record(id="a", group="a")], (0.9, 0.2, 0.1))


def test_counts_and_list_report_splits_and_modalities(xmodal_home):
    from xmodal_core import paths

    records = [Record(id="a", image="a.png", text="a", group="a", split="train"),
               Record(id="b", audio="b.wav", text="b", group="b", split="test"),
               Record(id="c", audio="c.wav", group="c", split="test")]
    assert count_records(records) == {"train": {"records": 1, "image": 1, "text": 1},
                                      "test": {"records": 2, "speech": 2, "text": 1}}
    write_manifest(paths.datasets_dir() / "mini" / "manifest.jsonl", records)
    (info,) = list_datasets()
    assert (info.name, info.records) == ("mini", 3)
    assert info.counts["test"]["speech"] == 2


def test_summary_groups_skips_by_reason():
    s = BuildSummary(name="x")
    s.skip("a.wav", "unreadable audio: could not decode")
    s.skip("b.wav", "unreadable audio: silent")
    s.skip("c.png", "no description: stamp has no .txt")
    assert s.skipped_by_reason() == {"unreadable audio": 2, "no description": 1}
    assert "unreadable audio" in s.format()
