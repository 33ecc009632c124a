"""Labelling: decisions are saved at once and survive a restart (a new Store on the same file);
`export-labels` turns accepted and edited items into a manifest the trainers can read."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xmodal_core import gallery as galleries
from xmodal_core import labels
from xmodal_core.data import load_manifest
from xmodal_core.errors import AudioError, DatasetError, InputError
from xmodal_core.store import Store


@pytest.fixture()
def folder_gallery(xmodal_home, tmp_path):
    galleries.forget_loaded()
    root = tmp_path / "photos"
    root.mkdir()
    for name, color in (("red_car.png", (200, 0, 0)), ("blue_boat.png", (0, 0, 200)), ("green_tree.png", (0, 150, 0))):
        Image.new("RGB", (16, 16), color).save(root / name)
    gallery, _ = galleries.index_folder(root, encoder_name=None)
    yield gallery
    galleries.forget_loaded()


def test_uncaptioned_images_are_queued_with_a_suggestion_from_the_file_name(folder_gallery):
    queue = labels.uncaptioned_queue(folder_gallery)
    assert [it.caption for it in queue] == ["blue boat", "green tree", "red car"]
    assert all(it.dataset == folder_gallery.name for it in queue)


def test_decisions_are_saved_at_once_and_survive_a_restart(folder_gallery):
    queue = labels.uncaptioned_queue(folder_gallery)
    labels.record_decision(queue[0], "accept")
    labels.record_decision(queue[1], "edit", text="  a tall   green tree ")
    labels.record_decision(queue[2], "reject")
    reopened = Store()  # what the app sees after a restart
    saved = {lab.item_id: lab for lab in reopened.labels(folder_gallery.name)}
    assert saved[queue[0].item_id].decision == "accept" and saved[queue[0].item_id].text == "blue boat"
    assert saved[queue[1].item_id].text == "a tall green tree"
    assert saved[queue[2].item_id].decision == "reject" and saved[queue[2].item_id].text is None
    assert labels.pending(queue, reopened) == []


def test_accepted_and_edited_captions_are_applied_to_the_gallery(folder_gallery):
    queue = labels.uncaptioned_queue(folder_gallery)
    labels.record_decision(queue[1], "edit", text="an oak")
    assert labels.apply_captions(folder_gallery) == 1
    assert folder_gallery.item(queue[1].item_id).caption == "an oak"
    assert [it.item_id for it in labels.uncaptioned_queue(folder_gallery)] == [queue[0].item_id, queue[2].item_id]


@pytest.mark.parametrize("text, match", [("   ", "empty"), ("x" * 600, "limit")])
def test_an_unusable_edit_is_refused(folder_gallery, text, match):
    item = labels.uncaptioned_queue(folder_gallery)[0]
    with pytest.raises(InputError, match=match):
        labels.record_decision(item, "edit", text=text)
    assert Store().labels(folder_gallery.name) == []


def test_a_spoken_caption_is_checked_and_kept_as_16k_wav(folder_gallery, tmp_path):
    item = labels.uncaptioned_queue(folder_gallery)[0]
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="silent"):
        labels.save_spoken_caption(item, str(silent))
    t = np.arange(22050) / 22050
    tone = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    lab = labels.save_spoken_caption(item, (22050, tone))
    data, rate = sf.read(lab.audio_path)
    assert rate == 16000 and abs(len(data) - 16000) <= 1
    assert lab.decision == "accept" and lab.text == item.caption
    # a later caption edit keeps the recording
    labels.record_decision(item, "edit", text="a blue sailing boat")
    assert Store().labels(folder_gallery.name)[0].audio_path == lab.audio_path


def test_export_writes_accepted_and_edited_items_as_a_manifest(folder_gallery):
    queue = labels.uncaptioned_queue(folder_gallery)
    labels.record_decision(queue[0], "accept")
    labels.record_decision(queue[1], "edit", text="an oak", label="tree")
    labels.record_decision(queue[2], "reject")
    summary = labels.export_labels("my-labels")
    records = {r.id.rsplit(":", 1)[-1]: r for r in load_manifest("my-labels")}
    assert set(records) == {"blue_boat.png", "green_tree.png"}
    assert records["green_tree.png"].text == "an oak" and records["green_tree.png"].label == "tree"
    assert Path(records["blue_boat.png"].image).is_file()
    assert all(r.split in ("train", "val", "test") for r in records.values())
    assert summary.records == 2 and any(s.reason == "rejected" for s in summary.skipped)


def test_export_with_nothing_accepted_says_so(xmodal_home):
    with pytest.raises(DatasetError, match="no accepted or edited labels"):
        labels.export_labels("empty-set")


def test_export_labels_command(folder_gallery, capsys):
    labels.record_decision(labels.uncaptioned_queue(folder_gallery)[0], "accept")
    parser = argparse.ArgumentParser()
    labels.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export-labels", "cli-labels", "--source", folder_gallery.name])
    assert args.func(args) == 0
    assert "cli-labels: 1 records" in capsys.readouterr().out
    assert len(load_manifest("cli-labels")) == 1


def test_search_results_become_query_image_pairs(folder_gallery):
    from xmodal_core.search import Hit

    hits = [Hit(folder_gallery.items[0], 0.9, 1), Hit(folder_gallery.items[1], 0.4, 2)]
    queue = labels.search_queue(folder_gallery.name, "a blue boat", hits)
    assert [q.caption for q in queue] == ["a blue boat", "a blue boat"]
    labels.record_decision(queue[0], "accept")
    labels.record_decision(queue[1], "reject")
    labels.export_labels("pairs")
    (record,) = load_manifest("pairs")
    assert record.text == "a blue boat" and record.image == folder_gallery.items[0].image
    with pytest.raises(InputError, match="no text"):
        labels.search_queue(folder_gallery.name, "", hits)


def _built_tuxpaint(tmp_path, n=12):
    """A stand-in for the built `tuxpaint` set: n real records in the home's datasets folder."""
    from xmodal_core.data.manifest import Record, dataset_dir, write_manifest

    img = tmp_path / "stamp.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(img)
    records = [Record(id=f"tuxpaint:{i}", image=str(img), text=f"stamp {i}", group=str(i), split="train")
               for i in range(n)]
    return write_manifest(dataset_dir("tuxpaint") / "manifest.jsonl", records)


def test_export_never_overwrites_a_built_data_set(folder_gallery, tmp_path):
    manifest = _built_tuxpaint(tmp_path)
    before = manifest.read_bytes()
    labels.record_decision(labels.uncaptioned_queue(folder_gallery)[0], "accept")
    with pytest.raises(InputError, match=r"already exists.*'tuxpaint-labels'"):
        labels.export_labels("tuxpaint")
    assert manifest.read_bytes() == before and len(load_manifest("tuxpaint")) == 12
    # the name the message offers is free and works
    assert labels.export_labels("tuxpaint-labels").records == 1
    assert labels.free_dataset_name("tuxpaint") == "tuxpaint-labels-2"
    # an export may replace its own earlier export
    assert labels.export_labels("tuxpaint-labels").records == 1
    # and a person may replace a built set only by saying so
    labels.export_labels("tuxpaint", overwrite=True)
    assert len(load_manifest("tuxpaint")) == 1


def test_export_command_refuses_then_overwrites_with_the_flag(folder_gallery, tmp_path):
    _built_tuxpaint(tmp_path)
    labels.record_decision(labels.uncaptioned_queue(folder_gallery)[0], "accept")
    parser = argparse.ArgumentParser()
    labels.add_commands(parser.add_subparsers(dest="command"))
    with pytest.raises(InputError, match="--overwrite"):
        args = parser.parse_args(["export-labels", "tuxpaint"])
        args.func(args)
    assert len(load_manifest("tuxpaint")) == 12
    args = parser.parse_args(["export-labels", "tuxpaint", "--overwrite"])
    assert args.func(args) == 0 and len(load_manifest("tuxpaint")) == 1


@pytest.mark.parametrize("name", ["'; DROP TABLE runs;--", "../escape", "/etc/passwd", "a b", "-lead", ".hidden",
                                  "x" * 300, "x" * 65, "caf\udce9", "nul\x00name", ""])
def test_export_names_are_checked_as_the_message_says(folder_gallery, name):
    from xmodal_core import paths
    from xmodal_core.validate import NAME_RULE

    labels.record_decision(labels.uncaptioned_queue(folder_gallery)[0], "accept")
    before = sorted(p.name for p in paths.datasets_dir().iterdir()) if paths.datasets_dir().exists() else []
    with pytest.raises(InputError) as info:
        labels.export_labels(name)
    message = str(info.value)
    assert NAME_RULE in message or "NUL" in message or "surrogate" in message or "empty" in message
    after = sorted(p.name for p in paths.datasets_dir().iterdir()) if paths.datasets_dir().exists() else []
    assert after == before


def test_names_the_rule_accepts_export(folder_gallery):
    labels.record_decision(labels.uncaptioned_queue(folder_gallery)[0], "accept")
    for name in ("my_labels-2", "X" * 64):
        assert labels.export_labels(name).records == 1
