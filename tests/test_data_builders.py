"""Data set builders on the real installed sources (small slices), and what they do with bad files."""
from __future__ import annotations

import gzip
import shutil
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xmodal_core.data import builders
from xmodal_core.data.builders import DIGIT_WORDS, FASHION_CLASSES, build_dataset
from xmodal_core.data.manifest import check_disjoint, load_manifest
from xmodal_core.errors import DatasetError, InputError

TUX = Path("/usr/share/tuxpaint/stamps")
KTUBERLING = Path("/usr/share/ktuberling")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _load_ok(record):
    from xmodal_core.audio import load_audio
    from xmodal_core.images import load_image

    if record.image:
        assert load_image(record.image).size[0] > 0
    if record.audio:
        assert load_audio(record.audio).duration > 0.1


def test_tuxpaint_slice_pairs_images_descriptions_categories_and_human_speech(xmodal_home):
    summary = build_dataset("tuxpaint", limit=40)
    records = load_manifest("tuxpaint")
    assert summary.records == len(records) > 40
    assert check_disjoint(records) == []
    for r in records:
        rel = r.group.split(":", 1)[1]
        # text = first line of the stamp's .txt; label = its folder path
        assert r.text == (TUX / f"{rel}.txt").read_text(encoding="utf-8").splitlines()[0].strip()
        assert r.label == str(Path(rel).parent)
        assert r.license.startswith("GPL-2") and r.source == "tuxpaint-stamps-default"
    speech = [r for r in records if r.audio]
    assert speech and all(r.audio.endswith("_desc.ogg") and r.split == "test" for r in speech)
    # Human speech is evaluation-only, and so is every image of those stamps (groups never straddle splits).
    spoken_groups = {r.group for r in speech}
    assert all(r.split == "test" for r in records if r.group in spoken_groups)
    svg = [r for r in records if r.id.endswith(".svg")]
    assert svg and all(Path(r.image).suffix == ".png" and Path(r.image).is_file() for r in svg)
    assert {r.split for r in records} >= {"train", "test"}
    for r in records[:10] + svg + speech[:3]:
        _load_ok(r)
    # Files without a description are listed with the reason, not dropped silently.
    assert summary.skipped_by_reason().get("no description", 0) >= 17


def test_emoji_slice_is_rendered_and_captioned_by_unicode_names(xmodal_home):
    summary = build_dataset("emoji", limit=40)
    records = load_manifest("emoji")
    assert len(records) == summary.records >= 38
    for r in records:
        char = chr(int(r.id.split(":")[1], 16))
        assert r.text == unicodedata.name(char).lower()
        img = Image.open(r.image)
        assert img.size == (128, 128) and img.getchannel("A").getbbox() is not None
    assert Counter(r.label for r in records)["smileys & emotion"] >= 30
    assert check_disjoint(records) == []


def test_glyphs_are_typeset_letters_digits_and_signs_drawn_the_same_on_a_rebuild(xmodal_home):
    from xmodal_core.data import render

    summary = build_dataset("glyphs", variants=3)
    records = load_manifest("glyphs")
    catalogue = builders.glyph_catalogue()
    assert len(catalogue) == 52 + 10 + 7 and summary.records == len(records) == 3 * len(catalogue)
    assert summary.extra["fonts"] == len(render.text_fonts()) >= 1
    by_text = Counter(r.text for r in records)
    assert by_text["The letter m."] == by_text["The letter M."] == 3
    assert by_text["The number three."] == 3 and by_text["A multiplication sign."] == 3
    assert {r.label for r in records} == {"letter", "digit", "sign"}
    assert all(r.group == "glyphs:U+" + r.id.split("U+")[1][:4] for r in records)
    assert check_disjoint(records) == []                    # whole glyphs per split
    # Real pixels: a typeset "m" is wider than tall, an "l" taller than wide, and each is drawn
    # in the colour its record says (filled dark, or outlined with a white inside).
    def size_of(char):
        img = Image.open(next(r.image for r in records if r.text == f"The letter {char}."))
        return img.getchannel("A").getbbox()
    m, l = size_of("m"), size_of("l")
    assert (m[2] - m[0]) > (m[3] - m[1]) and (l[3] - l[1]) > (l[2] - l[0])
    first = {r.id: Image.open(r.image).tobytes() for r in records}
    build_dataset("glyphs", variants=3)              # same seed: the same fonts, styles and pixels
    assert {r.id: Image.open(r.image).tobytes() for r in load_manifest("glyphs")} == first


def test_glyph_fonts_skip_missing_glyphs_and_symbol_fonts(tmp_path):
    from xmodal_core.data import render

    fonts = render.text_fonts()
    assert fonts and all(any(p.name.startswith(k) for k in render.TEXT_FONTS) for p, _ in fonts)
    dejavu = next(p for p, _ in fonts if p.name.startswith("DejaVuSans"))
    assert render.has_glyph(dejavu, "m") and render.has_glyph(dejavu, "\u00f7")
    assert not render.has_glyph(dejavu, "\u4e00")   # no CJK in DejaVu: it is not drawn from for that
    assert render.text_fonts((tmp_path,)) == []
    with pytest.raises(InputError, match="variants"):
        build_dataset("glyphs", variants=0)


def _idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    return np.frombuffer(raw, dtype=np.uint8)


def test_fashion_mnist_per_class_cap_uses_class_names_and_official_test_split(xmodal_home):
    summary = build_dataset("fashion-mnist", per_class=3)
    records = load_manifest("fashion-mnist")
    assert summary.records == 30
    assert Counter(r.label for r in records) == {name: 3 for name in FASHION_CLASSES}
    assert {r.split for r in records} == {"test"}
    images = _idx(Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"))[16:].reshape(-1, 28, 28)
    labels = _idx(Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"))[8:]
    for r in records:
        i = int(r.id.rsplit("-", 1)[1])
        assert r.text == r.label == FASHION_CLASSES[labels[i]]
        assert np.array_equal(np.asarray(Image.open(r.image)), images[i])


def test_fashion_mnist_train_part_is_hashed_into_train_and_val(xmodal_home):
    build_dataset("fashion-mnist", which="train", limit=200)
    splits = Counter(r.split for r in load_manifest("fashion-mnist"))
    assert set(splits) == {"train", "val"} and splits["val"] > 5


def test_fsdd_slice_covers_all_digits_and_speakers_and_is_evaluation_only(xmodal_home, fsdd_dir):
    build_dataset("fsdd", limit=40, source=fsdd_dir)
    records = load_manifest("fsdd")
    assert len(records) == 40
    assert {r.label for r in records} == set(DIGIT_WORDS)
    assert {r.speaker for r in records} == {"fsdd:george", "fsdd:jackson", "fsdd:lucas", "fsdd:nicolas"}
    for r in records:
        digit, speaker, _ = Path(r.audio).stem.split("_")
        assert r.text == r.label == DIGIT_WORDS[int(digit)] and r.speaker == f"fsdd:{speaker}"
        assert r.split == "test" and r.license == "CC BY-SA 4.0"


def test_fsdd_can_be_split_by_speaker_when_asked(xmodal_home, fsdd_dir):
    build_dataset("fsdd", limit=80, source=fsdd_dir, human_speech_split=None, fractions=(0.5, 0.25, 0.25))
    records = load_manifest("fsdd")
    assert check_disjoint(records, by_speaker=True) == []


def test_ktuberling_links_spoken_words_to_the_theme_drawings(xmodal_home):
    summary = build_dataset("ktuberling", limit=4)
    records = load_manifest("ktuberling")
    speech = {r.group: r for r in records if r.audio}
    images = [r for r in records if r.image]
    assert len(speech) == 4 and images
    assert all(r.group in speech and r.text == speech[r.group].text for r in images)
    assert {r.split for r in records} == {"test"}
    assert speech["ktuberling:ball"].text == "ball"
    for r in images[:5]:
        img = Image.open(r.image)
        assert max(img.size) == 256 and img.getchannel("A").getbbox() is not None
    assert "no English recording" in summary.skipped_by_reason()


def test_ktuberling_words_from_sound_names():
    assert builders.ktuberling_word("egypt_palmtree") == "palm tree"
    assert builders.ktuberling_word("robot_workshop_wheel") == "wheel"
    assert builders.ktuberling_word("pizzeria_broccolli") == "broccoli"


def test_librivox_sentences_keep_their_transcripts(xmodal_home):
    build_dataset("librivox")
    records = load_manifest("librivox")
    assert len(records) == 5
    lines = (LIBRIVOX / "transcription").read_text().splitlines()
    assert records[1].text == "he was not an ill disposed young man" and records[1].text in lines[1]
    assert {r.speaker for r in records} == {"librivox:sense_and_sensibility_01_austen_64kb"}
    for r in records:
        info = sf.info(r.audio)
        assert 1.0 < info.duration < 15.0 and r.split == "test"


def _fsdd_folder_with_bad_files(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("3_jackson_0.wav", "4_lucas_1.wav"):
        shutil.copy(src / name, dst / name)
    (dst / "5_jackson_2.wav").write_bytes(b"RIFF....WAVEfmt not really audio")   # corrupt
    (dst / "6_jackson_3.wav").write_bytes(b"")                                  # empty
    sf.write(dst / "7_jackson_4.wav", np.zeros(8000, dtype=np.float32), 8000)    # silent
    sf.write(dst / "hello.wav", np.ones(800, dtype=np.float32) * 0.1, 8000)      # bad name
    return dst


def test_bad_files_are_skipped_with_reasons_and_the_rest_is_built(xmodal_home, fsdd_dir, tmp_path):
    source = _fsdd_folder_with_bad_files(fsdd_dir, tmp_path / "recordings")
    summary = build_dataset("fsdd", source=source)
    assert sorted(Path(r.audio).name for r in load_manifest("fsdd")) == ["3_jackson_0.wav", "4_lucas_1.wav"]
    reasons = {Path(s.source).name: s.reason for s in summary.skipped}
    assert set(reasons) == {"5_jackson_2.wav", "6_jackson_3.wav", "7_jackson_4.wav", "hello.wav"}
    assert "could not decode" in reasons["5_jackson_2.wav"]
    assert "empty" in reasons["6_jackson_3.wav"]
    assert "silent" in reasons["7_jackson_4.wav"]
    assert "file name" in reasons["hello.wav"]


def test_missing_recording_is_skipped(xmodal_home, tmp_path):
    src = tmp_path / "librivox"
    src.mkdir()
    shutil.copy(LIBRIVOX / "transcription", src / "transcription")
    for wav in sorted(LIBRIVOX.glob("*.wav"))[:2]:
        shutil.copy(wav, src / wav.name)
    summary = build_dataset("librivox", source=src)
    assert summary.records == 2
    assert summary.skipped_by_reason() == {"unreadable audio": 3}
    assert all("not found" in s.reason for s in summary.skipped)


def test_a_failed_build_leaves_the_previous_manifest_intact(xmodal_home, fsdd_dir, monkeypatch):
    build_dataset("fsdd", limit=10, source=fsdd_dir)
    before = (xmodal_home / "datasets" / "fsdd" / "manifest.jsonl").read_bytes()
    calls = iter(range(1000))

    def flaky(path):
        if next(calls) == 5:
            raise RuntimeError("power cut")
        return 1.0

    monkeypatch.setattr(builders, "check_audio", flaky)
    with pytest.raises(RuntimeError, match="power cut"):
        build_dataset("fsdd", limit=20, source=fsdd_dir)
    folder = xmodal_home / "datasets" / "fsdd"
    assert (folder / "manifest.jsonl").read_bytes() == before
    assert not list(folder.glob("*.tmp"))


def test_unknown_set_and_bad_options_are_input_errors(xmodal_home):
    with pytest.raises(InputError, match="unknown data set"):
        build_dataset("imagenet")
    with pytest.raises(InputError):
        build_dataset("librivox", which="train")
    with pytest.raises(InputError):
        build_dataset("fashion-mnist", which="everything")
    with pytest.raises(DatasetError, match="not found"):
        build_dataset("fsdd", source=Path("/nonexistent/fsdd"))


def test_class_words_of_evaluation_sets_in_training_texts_are_reported(xmodal_home):
    from xmodal_core.data.manifest import Record

    records = [Record(id="a", text="Two friends and a dog.", group="a", split="train"),
               Record(id="b", text="A blue coat.", group="b", split="train"),
               Record(id="c", text="Seven dwarfs.", group="c", split="test")]
    overlap = builders.class_word_overlap(records, {"fsdd": DIGIT_WORDS, "fashion-mnist": FASHION_CLASSES})
    assert overlap == {"fsdd": {"two": 1}, "fashion-mnist": {"coat": 1}}   # test texts do not count
    summary = build_dataset("tuxpaint", limit=40)
    assert any("evaluation set fsdd" in n for n in summary.notes)


@pytest.mark.slow
def test_full_tuxpaint_and_emoji_builds_have_the_expected_sizes(xmodal_home):
    tux = build_dataset("tuxpaint")
    assert 1000 <= sum(row.get("image", 0) for row in tux.counts.values()) <= 1100
    assert sum(row.get("speech", 0) for row in tux.counts.values()) == 65
    emoji = build_dataset("emoji")
    assert 1300 <= emoji.records <= 1450


def test_cli_builds_lists_and_reports_bad_options(xmodal_home, capsys):
    import json

    from xmodal_core.cli import main

    assert main(["data", "build", "librivox", "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["records"] == 5 and summary["counts"] == {"test": {"records": 5, "speech": 5, "text": 5}}
    assert main(["data", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "librivox" and listed["counts"]["test"]["speech"] == 5
    assert main(["data", "list"]) == 0
    assert "librivox" in capsys.readouterr().out
    assert main(["data", "build", "fsdd", "--which", "test"]) == 2
    assert "fsdd does not take which" in capsys.readouterr().err
