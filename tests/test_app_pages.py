"""Train, Templates, Explorer and Label page functions against small real data sets built in a
fresh xmodal home: bad input gives a message; good input gives the tables and plots."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

import pages.explorer as ex
import pages.label as lp
import pages.templates as tpage
import pages.train as tr
from xmodal_core import gallery as galleries
from xmodal_core import spaces
from xmodal_core.data.manifest import Record, dataset_dir, write_manifest
from xmodal_core.runner import Runner
from xmodal_core.store import Store

DIGITS = ("zero", "one", "two", "three")


@pytest.fixture(autouse=True)
def _fresh(xmodal_home):
    galleries.forget_loaded()
    spaces._models.clear()
    yield
    galleries.forget_loaded()
    spaces._models.clear()


@pytest.fixture()
def runner(xmodal_home):
    r = Runner(Store(), poll_interval_s=0.2)
    tr._state["runner"] = r
    yield r
    tr._state["runner"] = None


@pytest.fixture()
def tiny_images(xmodal_home, tmp_path):
    """A 24-pair image-text set ("tuxpaint" by name, so presets find it): coloured shapes with captions."""
    from PIL import ImageDraw

    media = tmp_path / "media"
    media.mkdir()
    records = []
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 170, 30)}
    shapes = ("circle", "square")
    n = 0
    for colour, rgb in colours.items():
        for shape in shapes:
            for size in (30, 44, 56, 70):
                img = Image.new("RGB", (96, 96), "white")
                d = ImageDraw.Draw(img)
                box = (48 - size // 2, 48 - size // 2, 48 + size // 2, 48 + size // 2)
                (d.ellipse if shape == "circle" else d.rectangle)(box, fill=rgb)
                path = media / f"{colour}_{shape}_{size}.png"
                img.save(path)
                split = "val" if size == 44 else "train"
                records.append(Record(id=f"tiny:{n}", image=str(path), text=f"a {colour} {shape}",
                                      label=f"shapes/{shape}", group=f"tiny:{n}", split=split))
                n += 1
    write_manifest(dataset_dir("tuxpaint") / "manifest.jsonl", records)
    return records


@pytest.fixture()
def tiny_fsdd(xmodal_home, fsdd_dir):
    """Two recordings of each of four digits from FSDD, as the set "fsdd"."""
    records = []
    for d, word in enumerate(DIGITS):
        for i in range(2):
            path = fsdd_dir / f"{d}_jackson_{i}.wav"
            records.append(Record(id=f"fsdd:{path.stem}", audio=str(path), text=word, label=word,
                                  group=f"fsdd:{path.stem}", speaker="fsdd:jackson", split="test"))
    write_manifest(dataset_dir("fsdd") / "manifest.jsonl", records)
    return records


# ---------------------------------------------------------------- Train

def _launch(preset=tr.tp.ONE_MINUTE, kind="align", dataset="tuxpaint", towers="image-text", locked="both", loss="cwcl",
            batch=8, lr=0.01, epochs=2, max_pairs=0):
    return tr.launch(preset, "", kind, dataset, towers, locked, loss, batch, lr, epochs, max_pairs)


def test_train_form_refuses_impossible_settings(runner, tiny_images):
    with pytest.raises(gr.Error, match="one tower into the text space"):
        _launch(towers="speech-image")
    with pytest.raises(gr.Error, match="lr must be between 1e-08 and 1; got -1"):
        _launch(lr=-1)
    with pytest.raises(gr.Error, match="no manifest.*build the set first"):
        _launch(dataset="emoji")
    with pytest.raises(gr.Error, match="no records with speech and text"):
        _launch(towers="speech-text")
    assert runner.store.list_runs() == []


def test_launching_queues_a_run_that_can_be_cancelled(runner, tiny_images):
    message, run_id = _launch()
    assert f"run {run_id}" in message
    run = runner.store.get_run(run_id)
    assert run.status == "queued" and run.config["towers"] == ["image", "text"] and run.config["lr"] == 0.01
    status, rows, fig, _ = tr.refresh(run_id, [])
    assert "1 queued" in status and rows[0][0] == run_id and rows[0][3] == "queued"
    assert "cancelled" in tr.cancel(run_id)
    with pytest.raises(gr.Error, match="not a completed alignment or FaST-VGS run"):
        tr.use_model(run_id)
    with pytest.raises(gr.Error, match="select a run"):
        tr.cancel(None)


@pytest.mark.slow
def test_a_run_completes_into_the_table_and_becomes_the_model_in_use(runner, tiny_images, tmp_path):
    message, run_id = _launch(epochs=3)
    (done,) = runner.run_pending()
    assert done.status == "completed", done.error
    status, rows, fig, _ = tr.refresh(run_id, [])
    row = rows[0]
    # 18 training pairs / batch 8 = 2 steps per epoch, 3 epochs; the validation R-mean is filled in
    assert row[3] == "completed" and row[4] == "6/6" and row[9] != ""
    assert len(fig.data) >= 2  # the loss curve and the validation curve
    assert "model in use" in tr.use_model(run_id)
    assert spaces.load_selection().image == run_id
    assert f"run {run_id}" in spaces.status_line()
    headers, table = tr.tp.compare_rows(runner.store, [run_id])
    assert headers[1].startswith(f"run {run_id}") and any(r[0].endswith("r_mean") for r in table)

    # Search's coarse mode now works through the trained image head
    import pages.search as sp

    pics = tmp_path / "pics"
    pics.mkdir()
    for r in tiny_images[:6]:
        Image.open(r.image).save(pics / Path(r.image).name)
    _, drop = sp.index_folder(str(pics))
    heard, grid, timings, hits, _ = sp.run_search("text", None, None, None, "a red circle", drop["value"], "coarse",
                                                  6, 100, 90, 8.0)
    assert len(hits) == 6 and "run" in heard


# ---------------------------------------------------------------- Templates

def test_template_box_flags_bad_lines_by_number():
    assert tpage.check("a photo of a {}\nno hole here\nboth {} and {}") == (
        tpage.check("a photo of a {}\nno hole here\nboth {} and {}"))
    msg = tpage.check("a photo of a {}\nno hole here\nboth {} and {}")
    assert "line 2 has 0" in msg and "line 3 has 2" in msg
    assert tpage.check("a photo of a {}\n\n# a comment\nthis is {}").startswith("✓ 2 templates")
    with pytest.raises(gr.Error, match="line 2"):
        tpage.evaluate("a {}\noops", "fsdd", ["cascade"], 2)


def test_template_lists_are_saved_in_sqlite_and_loaded_back(xmodal_home):
    assert "simple" in tpage.list_choices() and "general" in tpage.list_choices()
    message, dropdown = tpage.save_list("digits", "the number {}\nsomeone says {}")
    assert "digits" in message and dropdown["value"] == "saved: digits"
    assert "saved: digits" in tpage.list_choices()
    assert tpage.load_list("saved: digits") == "the number {}\nsomeone says {}"
    assert Store().get_templates("digits").templates == ["the number {}", "someone says {}"]
    assert tpage.load_list("simple").splitlines()[0] == "a photo of a {}"
    with pytest.raises(gr.Error, match="exactly one"):
        tpage.save_list("bad", "no hole")
    with pytest.raises(gr.Error, match="name"):
        tpage.save_list("", "a {}")


def test_zero_shot_refuses_an_unknown_set_and_a_cascade_on_images(xmodal_home):
    with pytest.raises(gr.Error, match="unknown set .no-such-set.; choose one of fsdd"):
        tpage.evaluate("a {}", "no-such-set", ["cascade"], 2)
    with pytest.raises(gr.Error, match="cascade has no image vector"):
        tpage.evaluate("a {}", "fashion-mnist", ["cascade"], 2)


@pytest.mark.slow
def test_zero_shot_curve_has_one_point_per_template_and_moves_with_the_list(tiny_fsdd):
    fig, table = tpage.evaluate("the number {}\nsomeone says {}\n{}", "fsdd", ["cascade"], 2)
    (trace,) = fig.data
    assert list(trace.x) == [1, 2, 3] and all(0 <= y <= 1 for y in trace.y)
    assert table["headers"] == ["model", "k=1", "k=2", "k=3"]
    fig2, _ = tpage.evaluate("{}\nthe number {}", "fsdd", ["cascade"], 2)
    assert list(fig2.data[0].x) == [1, 2]
    # a bare "{}" is the digit word itself: the transcripts ("Zero.", "One." ...) match it exactly
    assert fig2.data[0].y[0] >= 0.75


# ---------------------------------------------------------------- Explorer

def test_explorer_refuses_a_joint_map_of_unaligned_spaces(xmodal_home):
    with pytest.raises(gr.Error, match="different spaces.*image 1280-d, text 384-d"):
        ex.draw_map("fashion-mnist", "pretrained", ["image", "text"], "pca", "class", 5)
    with pytest.raises(gr.Error, match="unknown set .no-such-set.; choose one of fsdd"):
        ex.draw_map("no-such-set", "pretrained", ["speech"], "pca", "class", 5)
    with pytest.raises(gr.Error, match="at least one modality"):
        ex.draw_map("fsdd", "pretrained", [], "pca", "class", 5)
    with pytest.raises(gr.Error, match="two different modalities"):
        ex.draw_heatmap("fsdd", "pretrained", "speech", "speech", ["zero"], 2)


@pytest.mark.slow
def test_map_heatmap_and_probe_on_spoken_digits(tiny_fsdd):
    fig, note = ex.draw_map("fsdd", "pretrained", ["speech", "text"], "pca", "class", 2)
    points = sum(len(t.x) for t in fig.data)
    assert points == 16 and "16 points" in note
    symbols = {s for t in fig.data for s in t.marker.symbol}
    assert symbols == {"circle", "x"}  # speech as dots, text as crosses
    assert {t.name for t in fig.data} == set(DIGITS)
    fig, note = ex.draw_map("fsdd", "pretrained", ["speech", "text"], "pca", "modality", 2)
    assert "from the cache" in note and {t.name for t in fig.data} == {"speech", "text"}

    fig, contrast = ex.draw_heatmap("fsdd", "cascade", "speech", "text", ["zero", "one", "two"], 2)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (6, 6) and "within a class" in contrast
    # the cascade hears the digits: within-class cosines beat across-class ones
    same = np.kron(np.eye(3), np.ones((2, 2))).astype(bool)
    assert z[same].mean() > z[~same].mean()

    rows = ex.run_probe("fsdd", "cascade", "speech", "text", 4, 2, 8.0, 3)
    assert [r[0].split(":")[0] for r in rows] == ["before alignment", "after"]
    assert rows[0][4] == 8  # pairs


# ---------------------------------------------------------------- Label

@pytest.fixture()
def folder_gallery(xmodal_home, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("red_car.png", "blue_boat.png"):
        Image.new("RGB", (16, 16), (100, 100, 100)).save(root / name)
    gallery, _ = galleries.index_folder(root, encoder_name=None)
    return gallery


def test_label_queue_accept_edit_and_saved_table(folder_gallery, tmp_path):
    assert lp.source_choices("uncaptioned")[0][1] == folder_gallery.name
    items, done, image, info, caption, label, status = lp.load_queue("uncaptioned", folder_gallery.name, [])
    assert len(items) == 2 and caption == "blue boat" and image is not None and "2 to review" in status
    with pytest.raises(gr.Error, match="nothing was edited"):
        lp.decide(items, done, "edit", caption, label)
    out = lp.decide(items, done, "accept", caption, label)
    items, done, table = out[0], out[1], out[-1]
    assert done == 1 and len(items) == 1 and table[0][2] == "accept" and table[0][3] == "blue boat"
    out = lp.decide(items, done, "edit", "a small red car", "")
    assert out[2] is None and "Nothing left" in out[3] and out[-1][0][3] == "a small red car"
    assert [r[2] for r in lp.saved_rows()] == ["edit", "accept"]
    # the queue now skips decided items
    with pytest.raises(gr.Error, match="empty"):
        lp.decide([], 2, "accept", "", "")
    assert lp.load_queue("uncaptioned", folder_gallery.name, [])[0] == []


def test_label_page_messages(folder_gallery, tmp_path):
    with pytest.raises(gr.Error, match="no search results"):
        lp.load_queue("search", "search", [])
    items = lp.load_queue("uncaptioned", folder_gallery.name, [])[0]
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.zeros(4000, np.float32), 16000)
    with pytest.raises(gr.Error, match="silent"):
        lp.save_audio(items, str(quiet))
    with pytest.raises(gr.Error, match="type a name"):
        lp.export(" ")
    with pytest.raises(gr.Error, match="no accepted"):
        lp.export("nothing-yet")
    skipped = lp.skip(items, 0)
    assert skipped[0][0].item_id == items[1].item_id


# ---------------------------------------------------------------- FaST-VGS through the pages

@pytest.fixture()
def spoken_digits_with_pictures(xmodal_home, fsdd_dir, tmp_path):
    """Jackson saying 0-3 (three takes each), each paired with a drawing of the digit: speech-image pairs."""
    from PIL import ImageDraw

    pics = tmp_path / "digit-pictures"
    pics.mkdir()
    records = []
    for d, word in enumerate(DIGITS):
        img = Image.new("RGB", (96, 96), "white")
        ImageDraw.Draw(img).text((30, 20), str(d), fill=(0, 0, 0), font_size=56)
        img.save(pics / f"digit_{word}.png")
        for take in range(3):
            path = fsdd_dir / f"{d}_jackson_{take}.wav"
            records.append(Record(id=f"dv:{d}:{take}", audio=str(path), image=str(pics / f"digit_{word}.png"),
                                  text=word, label=word, group=f"digit:{word}", speaker="fsdd:jackson",
                                  split="val" if take == 2 else "train"))
    write_manifest(dataset_dir("digits-vgs") / "manifest.jsonl", records)
    return pics


@pytest.mark.slow
def test_a_fast_vgs_run_enables_coarse_to_fine_and_fine_search(runner, spoken_digits_with_pictures, fsdd_dir):
    import pages.search as sp

    preset = next(name for name, p in tr.tp.presets().items() if p.kind == "vgs")
    message, run_id = tr.launch(preset, "tiny-vgs", "vgs", "digits-vgs", "speech-image", "both", "cwcl", 4, 1e-3, 2, 0)
    (done,) = runner.run_pending()
    assert done.status == "completed", done.error
    assert "FaST-VGS" in tr.use_model(run_id)
    assert spaces.load_selection().vgs == run_id and "coarse-to-fine" in spaces.status_line()

    _, drop = sp.index_folder(str(spoken_digits_with_pictures))
    query = str(fsdd_dir / "2_jackson_5.wav")
    for mode, stage in (("coarse-to-fine", "fine rerank of 4 (one batch)"), ("fine", "fine scorer over all 4 images")):
        heard, grid, timings, hits, _ = sp.run_search("speech-file", None, query, None, "", drop["value"], mode,
                                                      4, 100, 90, 8.0)
        assert len(hits) == 4 and sorted(h[3] for h in hits) == sorted(f"folder:digit_{w}.png" for w in DIGITS)
        assert stage in [t[0] for t in timings] and "FaST-VGS" in heard
    with pytest.raises(gr.Error, match="spoken query"):
        sp.run_search("text", None, None, None, "two", drop["value"], "coarse-to-fine", 4, 100, 90, 8.0)


@pytest.mark.slow
def test_low_score_queue_puts_the_worst_captioned_pairs_first(tiny_images, tmp_path):
    from xmodal_core import labels

    # a wrong caption among right ones: it should come out near the top of the queue
    emoji = tmp_path / "emoji.png"
    Image.new("RGB", (64, 64), (250, 200, 0)).save(emoji)
    write_manifest(dataset_dir("emoji") / "manifest.jsonl",
                   [Record(id="emoji:sun", image=str(emoji), text="a yellow sun", label="sky", group="emoji:sun")])
    records = list(tiny_images)
    records[0] = Record(**{**records[0].to_dict(), "text": "a spaceship landing on the moon"})
    write_manifest(dataset_dir("tuxpaint") / "manifest.jsonl", records)

    items, done, image, info, caption, label, status = lp.load_queue("low-score", "tuxpaint", [])
    assert len(items) == len(records) and image is not None and "low alignment score" in info
    scores = [it.score for it in items]
    assert scores == sorted(scores)
    # with 24 toy pairs the smallest shapes also score low; the wrong caption is in the bottom quarter
    assert records[0].id in [it.item_id for it in items[:6]]
    first = labels.low_score_queue("tuxpaint", limit=2)
    assert len(first) == 2 and first[0].score <= first[1].score
