"""The default model: its committed config, its data recipe, an end-to-end training on real data
(a small slice with the committed recipe), the `xmodal zeroshot` / `xmodal search` commands on
real inputs, and (slow) the real default model against the targets it reaches."""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers import default_model as dm
from xmodal_core.cli import main as cli_main
from xmodal_core.errors import InputError

# What the full default model measured (docs/RESULTS.md: FSDD 0.953, Tux Paint 0.336-0.348 / 0.696-0.713),
# less a margin for run-to-run spread (about +-0.02 over image seeds), so that a regression fails the
# slow test. These are regression floors, not the targets (R@1 >= 0.45, R@10 >= 0.85: not met).
TARGET_FSDD_TOP1 = 0.94
TARGET_TUX_R1 = 0.30
TARGET_TUX_R10 = 0.65


# ----------------------------------------------------------------------------- config and recipe

def test_committed_config_is_the_cwcl_recipe_on_locked_minilm():
    cfg = dm.load_config()
    assert cfg.name == "xmodal-default"
    for run, other in ((cfg.speech, "speech"), (cfg.image, "image")):
        assert set(run.towers) == {other, "text"}
        assert run.loss == "cwcl" and run.locked == "both" and run.no_head == ("text",)
        assert run.encoders["text"] == "minilm"
    assert cfg.speech.encoders["speech"] == "whisper-tiny.en-tail"
    assert cfg.image.encoders["image"] == "efficientnet-lite0"
    assert cfg.digest() == dm.load_config().digest()  # a pure function of the file
    assert replace(cfg, seed=1).digest() != cfg.digest()


def test_a_bad_config_is_refused_with_what_to_fix(tmp_path):
    data = json.loads(dm.CONFIG_PATH.read_text())
    data["speech_data"]["speed"] = [1.2, 0.8]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="speed"):
        dm.load_config(path)
    data = json.loads(dm.CONFIG_PATH.read_text())
    data["speech"]["towers"] = ["image", "text"]
    data["speech"]["encoders"]["image"] = "efficientnet-lite0"
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="speech run"):
        dm.load_config(path)
    with pytest.raises(InputError, match="cannot read"):
        dm.load_config(tmp_path / "missing.json")


def test_augmented_copies_change_speed_noise_and_length_as_configured():
    cfg = dm.load_config().speech_data
    sr = 16_000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    silence = np.zeros(sr // 2, dtype=np.float32)
    clip = np.concatenate([silence, tone, silence])
    clean = dm.augment(clip, "clean", cfg, np.random.default_rng(0))
    assert np.array_equal(clean, clip)
    for seed in range(5):
        noisy = dm.augment(clip, "noise", cfg, np.random.default_rng(seed))
        factor = len(clip) / len(noisy)  # resampling by 100/f: f in the speed range
        assert cfg.speed[0] - 0.01 <= factor <= cfg.speed[1] + 0.01
        assert noisy.dtype == np.float32 and np.abs(noisy).max() <= 1.0
        cropped = dm.augment(clip, "crop", cfg, np.random.default_rng(seed))
        # silence trimmed, then at most the whole tone (sped up by at most speed[0])
        assert len(cropped) <= len(tone) / cfg.speed[0] + 1600
        assert len(cropped) >= 1600 / cfg.speed[1] - 1


def test_image_data_config_rejects_unknown_mirror_sources_and_bad_dev_fractions():
    assert dm.ImageDataConfig(mirror=["tuxpaint"]).mirror == ("tuxpaint",)
    with pytest.raises(InputError, match="mirror takes tuxpaint, emoji"):
        dm.ImageDataConfig(mirror=["glyphs"])  # mirrored letters are other letters
    with pytest.raises(InputError, match="dev_fraction"):
        dm.ImageDataConfig(dev_fraction=1.0)


def test_mirror_image_flips_left_right_once_per_source_content(tmp_path):
    src = Path("/usr/share/tuxpaint/stamps/animals/amphibians/frog.png")
    out = dm.mirror_image(src, tmp_path)
    original = np.asarray(Image.open(src).convert("RGBA"))
    assert np.array_equal(np.asarray(Image.open(out)), original[:, ::-1])
    stamp = out.stat().st_mtime_ns
    assert dm.mirror_image(src, tmp_path) == out and out.stat().st_mtime_ns == stamp  # reused


def test_trim_cuts_leading_and_trailing_silence_only():
    tone = np.ones(3200, dtype=np.float32) * 0.3
    clip = np.concatenate([np.zeros(1600, np.float32), tone, np.zeros(4800, np.float32)])
    trimmed = dm._trim(clip)
    assert len(trimmed) == len(tone) and np.allclose(trimmed, 0.3)


def test_speech_plan_keeps_validation_voices_out_of_training():
    cfg = dm.load_config()
    small = replace(cfg, speech_data=replace(cfg.speech_data, digit_voices=5, word_voices=2, caption_voices=1,
                                             val_voices_per_word=2))
    texts = {"digit": ["zero", "one"], "number": ["ten"], "caption": ["a red apple."], "emoji": ["dog face"]}
    plan = dm.plan_speech_set(small, texts=texts)
    assert len([p for p in plan if p.split == "train"]) == 2 * 5 + 2 + 1 + 1
    assert len([p for p in plan if p.split == "val"]) == 3 * 2
    train_voices = {p.request.voice for p in plan if p.split == "train"}
    val_voices = {p.request.voice for p in plan if p.split == "val"}
    assert not train_voices & val_voices
    assert plan == dm.plan_speech_set(small, texts=texts)  # deterministic
    words = [p for p in plan if p.kind in ("digit", "number")]
    assert all(p.copies == small.speech_data.word_copies for p in words if p.split == "train")


def test_tail_encoder_appends_silence_and_pools_the_real_frames(fsdd_dir):
    from xmodal_core.audio import load_audio
    from xmodal_core.encoders.whisper import log_mel, n_mel_frames, run_encoder
    from xmodal_core.registry import get_encoder

    encoder = get_encoder("whisper-tiny.en-tail")
    assert encoder.tail_seconds == pytest.approx(0.6) and encoder.dim == 384
    assert encoder.weights_id != get_encoder("whisper-tiny.en").weights_id
    files = sorted(fsdd_dir.glob("*_jackson_0.wav"))[:3]
    got = encoder.encode(files)
    for f, row in zip(files, got):
        samples = load_audio(f).samples
        padded = np.concatenate([samples, np.zeros(9600, np.float32)])
        hidden, _ = run_encoder(encoder.model, [log_mel(padded)])
        n = n_mel_frames(len(samples)) // 2
        expected = torch.nn.functional.normalize(hidden[0, :n].mean(0), dim=0).numpy()
        assert np.allclose(row, expected, atol=1e-5)


# ----------------------------------------------------------------------------- end to end, small

def small_config() -> dm.DefaultModelConfig:
    """The committed recipe with fewer voices and epochs (the slices below keep it fast), and with
    every image source and mirroring on, so each path of the image set is built."""
    cfg = dm.load_config()
    return replace(cfg, speech_data=replace(cfg.speech_data, digit_voices=4, word_voices=1, val_voices_per_word=1),
                   image_data=replace(cfg.image_data, glyphs=True, mirror=("tuxpaint", "emoji")),
                   speech=replace(cfg.speech, epochs=3, batch_size=64),
                   image=replace(cfg.image, epochs=3, batch_size=64))


@pytest.fixture(scope="session")
def small_home(tmp_path_factory):
    """A home with real slices of Tux Paint, emoji and FSDD and a small default model trained on them."""
    from xmodal_core import gallery, spaces
    from xmodal_core.data import build_dataset

    home = tmp_path_factory.mktemp("default-model-home")
    with pytest.MonkeyPatch.context() as mp:  # only while building: later tests get their own home
        mp.setenv("XMODAL_HOME", str(home))
        spaces._models.clear()
        gallery.forget_loaded()
        build_dataset("tuxpaint", limit=80)
        build_dataset("emoji", limit=60)
        build_dataset("glyphs", limit=12, variants=2)
        build_dataset("fsdd", limit=60)
        stages = []
        model = dm.ensure_default_model(lambda stage, done, total: stages.append(stage), config=small_config())
        spaces._models.clear()
        gallery.forget_loaded()
    yield home, model, stages


@pytest.fixture()
def in_small_home(small_home, monkeypatch):
    from xmodal_core import gallery, spaces

    home, model, stages = small_home
    monkeypatch.setenv("XMODAL_HOME", str(home))
    spaces._models.clear()  # loaded runs are cached by id, and ids repeat across homes
    gallery.forget_loaded()
    yield small_home
    spaces._models.clear()
    gallery.forget_loaded()


@pytest.mark.slow
def test_small_default_model_trains_end_to_end_on_real_data(in_small_home):
    from xmodal_core import spaces
    from xmodal_core.data import load_manifest
    from xmodal_core.store import Store

    home, model, stages = in_small_home
    for stage in ("speak", "augment speech", "features speech", "features images", "train xmodal-default-speech",
                  "train xmodal-default-image", "evaluate"):
        assert stage in stages
    store = Store()
    for run_id, name in ((model.speech_run, "xmodal-default-speech"), (model.image_run, "xmodal-default-image")):
        run = store.get_run(run_id)
        assert run.name == name and run.status == "completed" and run.kind == "align"
        assert (Path(model.speech_dir if run_id == model.speech_run else model.image_dir) / "heads.safetensors").is_file()
    evals = {(e.dataset, e.metric): e.value for e in store.evaluations(model.speech_run)}
    z = model.results["fsdd_zeroshot"]
    assert z["n"] == 60 and 0.0 <= z["top1"] <= z["top5"] <= 1.0
    assert evals[("fsdd", "zeroshot_top1")] == pytest.approx(z["top1"])
    c = model.results["tuxpaint_caption_to_image"]
    assert 0.0 <= c["r@1"] <= c["r@5"] <= c["r@10"] <= 1.0 and c["queries"] > 0
    # the image set: Tux Paint training stamps (dev tenth as val), emoji, glyphs, and mirrored
    # copies of the training images, pixel for pixel, except Tux Paint symbols (their writing)
    images = load_manifest(small_config().image.dataset)
    by_id = {r.id: r for r in images}
    assert {r.id.split(":")[0] for r in images} == {"tuxpaint", "emoji", "glyphs"}
    assert {r.split for r in images if r.id.startswith("tuxpaint:")} == {"train", "val"}
    assert not {r.id for r in images} & {r.id for r in dm.heldout_tuxpaint()}
    mirrors = [r for r in images if r.id.endswith("#mirror")]
    originals = [by_id[r.id[: -len("#mirror")]] for r in mirrors]
    assert mirrors and all(o.split == "train" and not o.id.startswith(("glyphs:", *dm.NO_MIRROR)) for o in originals)
    assert {o.id.split(":")[0] for o in originals} == {"tuxpaint", "emoji"}
    for m, o in list(zip(mirrors, originals))[:5]:
        assert (m.text, m.group) == (o.text, o.group)
        mirrored = np.asarray(Image.open(m.image).convert("RGBA"))
        assert np.array_equal(mirrored, np.asarray(Image.open(o.image).convert("RGBA"))[:, ::-1])
    # the speech set is synthetic only, and val voices never speak in train
    speech = load_manifest(small_config().speech.dataset)
    assert all(r.source.startswith("tts:") for r in speech)
    assert not {r.speaker for r in speech if r.split == "train"} & {r.speaker for r in speech if r.split == "val"}
    # registered: the app's model in use picks both runs up, and a second call is a lookup
    assert spaces.load_selection() == spaces.Selection(speech=model.speech_run, image=model.image_run)
    again = dm.ensure_default_model(config=small_config())
    assert again.run_ids == model.run_ids
    assert dm.find_default_model(dm.load_config()) is None  # the committed (full) config is another model


@pytest.mark.slow
def test_fsdd_zeroshot_recomputed_independently_matches(in_small_home):
    from xmodal_core.models.aligned import load_aligned
    from xmodal_core.data import load_manifest
    from xmodal_core.registry import get_encoder

    _, model, _ = in_small_home
    aligned = load_aligned(model.speech_run)
    records = [r for r in load_manifest("fsdd") if r.audio]
    speech = aligned.embed_speech([r.audio for r in records])  # tower -> head, no feature cache
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    classes = get_encoder("minilm").encode(words)  # template "{}": the bare word
    predicted = (speech @ classes.T).argmax(1)
    expected = np.mean([words[p] == r.label for p, r in zip(predicted, records)])
    assert dm.fsdd_zeroshot(aligned)["top1"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_a_home_adopts_the_trained_default_model_without_training(in_small_home, tmp_path, monkeypatch):
    from xmodal_core.models.aligned import load_aligned
    from xmodal_core import spaces
    from xmodal_core.store import Store

    source_home, model, _ = in_small_home
    source_vectors = load_aligned(model.image_run).embed_text(["a frog"]), load_aligned(model.speech_run).dim
    monkeypatch.setenv("XMODAL_HOME", str(tmp_path / "other-home"))
    spaces._models.clear()
    Store().create_run("someone else's run", "align", {})  # ids differ from the source home's
    with pytest.raises(InputError, match="no trained default model under"):
        dm.adopt_default_model(tmp_path / "nowhere", small_config())
    copy = dm.adopt_default_model(source_home, small_config())
    assert copy.run_ids != model.run_ids and copy.results == model.results
    assert dm.find_default_model(small_config()) == copy
    for run_id in copy.run_ids:
        run = Store().get_run(run_id)
        assert run.status == "completed" and run.name.startswith("xmodal-default")
        assert {(e.dataset, e.metric) for e in Store().evaluations(run_id)}
    image = load_aligned(copy.image_run)
    np.testing.assert_allclose(image.embed_text(["a frog"]), source_vectors[0], atol=1e-6)
    assert spaces.load_selection() == spaces.Selection(speech=copy.speech_run, image=copy.image_run)
    assert dm.adopt_default_model(source_home, small_config()) == copy  # a lookup the second time
    spaces._models.clear()


def test_class_prior_puts_a_real_cat_photo_near_cat_words(chelsea_png):
    """The image head's zero-shot prior: EfficientNet's own ImageNet probabilities x MiniLM class names."""
    from xmodal_core.models.aligned import class_prior
    from xmodal_core.registry import get_encoder

    prior = class_prior("efficientnet-lite0", "minilm")
    assert prior.weight.shape == (1000, 1280) and prior.class_text.shape == (1000, 384)
    x = torch.as_tensor(get_encoder("efficientnet-lite0").encode([str(chelsea_png)]))
    z = prior(x)
    assert torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5)
    words = torch.as_tensor(get_encoder("minilm").encode(["a cat", "a truck", "a violin", "a mountain"]))
    sims = (z @ words.T)[0]
    assert int(sims.argmax()) == 0 and float(sims[0] - sims[1:].max()) > 0.1, sims


# ----------------------------------------------------------------------------- the commands

def _fsdd_csv(path: Path, fsdd_dir: Path, n: int = 12) -> Path:
    files = sorted(fsdd_dir.glob("*_lucas_1*.wav"))[:n]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["audio", "label"])
        for f in files:
            writer.writerow([str(f), ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][int(f.name[0])]])
    return path


@pytest.mark.slow
def test_zeroshot_command_classifies_real_speech_with_the_default_model(in_small_home, fsdd_dir, tmp_path, capsys):
    manifest = _fsdd_csv(tmp_path / "digits.csv", fsdd_dir)
    classes = "zero,one,two,three,four,five,six,seven,eight,nine"
    assert cli_main(["zeroshot", "--manifest", str(manifest), "--classes", classes, "--templates", "{}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 12 and out["modality"] == "speech" and out["run"] == in_small_home[1].speech_run
    assert len(out["predictions"]) == 12
    correct = [p["prediction"] == p["label"] for p in out["predictions"]]
    assert out["top1"] == pytest.approx(np.mean(correct))
    assert out["top5"] == pytest.approx(np.mean([p["label"] in p["top5"] for p in out["predictions"]]))
    # a run id works as well as the default's name; simple:K templates too
    assert cli_main(["zeroshot", "--manifest", str(manifest), "--classes", classes, "--templates", "simple:5",
                     "--model", str(in_small_home[1].speech_run)]) == 0
    assert "top-1" in capsys.readouterr().out


@pytest.mark.slow
def test_zeroshot_command_classifies_images(in_small_home, tmp_path, capsys):
    from xmodal_core.data import load_manifest

    records = [r for r in load_manifest("emoji") if r.image][:6]
    manifest = tmp_path / "emoji.csv"
    manifest.write_text("image,label\n" + "".join(f"{r.image},{r.text.replace(',', ' ')}\n" for r in records))
    classes = ",".join(r.text.replace(",", " ") for r in records)
    assert cli_main(["zeroshot", "--manifest", str(manifest), "--classes", classes, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["modality"] == "image" and out["n"] == 6 and out["run"] == in_small_home[1].image_run


@pytest.mark.slow
def test_zeroshot_command_errors_are_one_clear_line(in_small_home, fsdd_dir, tmp_path, capsys):
    good = _fsdd_csv(tmp_path / "ok.csv", fsdd_dir, n=3)
    bad_cols = tmp_path / "cols.csv"
    bad_cols.write_text("file,label\nx.wav,one\n")
    missing_file = tmp_path / "missing-file.csv"
    missing_file.write_text("audio,label\nnope.wav,one\n")
    cases = [
        (["--manifest", str(tmp_path / "none.csv"), "--classes", "a,b"], "does not exist"),
        (["--manifest", str(bad_cols), "--classes", "one,two"], "'audio' or 'image'"),
        (["--manifest", str(missing_file), "--classes", "one,two"], "nope.wav does not exist"),
        (["--manifest", str(good), "--classes", "one"], "at least two"),
        (["--manifest", str(good), "--classes", "apple,pear"], "not among --classes"),
        (["--manifest", str(good), "--classes", "zero,one,two,three,four,five,six,seven,eight,nine",
          "--templates", "nosuchlist"], "no template list"),
        (["--manifest", str(good), "--classes", "zero,one,two,three,four,five,six,seven,eight,nine",
          "--model", "banana"], "run id"),
        (["--manifest", str(good), "--classes", "zero,one,two,three,four,five,six,seven,eight,nine",
          "--model", "9999"], "9999"),
    ]
    for args, message in cases:
        assert cli_main(["zeroshot", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (args, err)


def test_zeroshot_without_a_trained_default_model_says_how_to_train_it(xmodal_home, fsdd_dir, tmp_path, capsys):
    manifest = _fsdd_csv(tmp_path / "d.csv", fsdd_dir, n=2)
    assert cli_main(["zeroshot", "--manifest", str(manifest), "--classes", "zero,one,two,three,four,five,six,seven,"
                     "eight,nine"]) == 2
    assert "xmodal default-model" in capsys.readouterr().err


@pytest.mark.slow
def test_search_command_finds_images_for_text_speech_and_image_queries(in_small_home, fsdd_dir, capsys):
    from xmodal_core.data import load_manifest

    image = next(r for r in load_manifest("emoji") if r.image)
    for args in (["--query-text", image.text], ["--query-audio", str(sorted(fsdd_dir.glob("*.wav"))[0])],
                 ["--query-image", image.image]):
        assert cli_main(["search", *args, "--gallery", "default", "--k", "5", "--mode", "coarse", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert len(out["hits"]) == 5 and [h["rank"] for h in out["hits"]] == [1, 2, 3, 4, 5]
        scores = [h["score"] for h in out["hits"]]
        assert scores == sorted(scores, reverse=True) and all(Path(h["image"]).is_file() for h in out["hits"])
        assert "run" in out["model"]
    # an image's own picture finds it first
    assert cli_main(["search", "--query-image", image.image, "--k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"][0]["id"] == image.id
    assert cli_main(["search", "--query-text", "a dog", "--mode", "cascade", "--k", "3"]) == 0
    assert "cascade search" in capsys.readouterr().out


@pytest.mark.slow
def test_search_command_errors(in_small_home, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    cases = [
        (["--query-audio", str(tmp_path / "none.wav")], "does not exist"),
        (["--query-audio", str(corrupt)], "error: "),
        (["--query-text", "   "], "empty"),
        (["--query-text", "dog", "--k", "0"], "k must be"),
        (["--query-text", "dog", "--gallery", "no-such-gallery"], "error: "),
        (["--query-text", "dog", "--mode", "ctf"], "FaST-VGS"),
    ]
    for args, message in cases:
        assert cli_main(["search", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    with pytest.raises(SystemExit) as exc:  # two queries: argparse refuses (status 2)
        cli_main(["search", "--query-text", "dog", "--query-image", "x.png"])
    assert exc.value.code == 2


# ----------------------------------------------------------------------------- the real default model

@pytest.mark.slow
def test_the_default_model_reaches_its_targets(monkeypatch):
    """The real default model in the shared test home (the home `make run` uses; the browser tests
    train it there first when missing, about 6 minutes on 2 cores)."""
    from tests.browser_helpers import cache_home
    from xmodal_core import gallery, spaces

    monkeypatch.setenv("XMODAL_HOME", str(cache_home()))
    spaces._models.clear()
    gallery.forget_loaded()
    model = dm.ensure_default_model(dm.console_progress(quiet=True))
    z = model.results["fsdd_zeroshot"]
    c = model.results["tuxpaint_caption_to_image"]
    assert z["n"] == 2000
    assert z["top1"] >= TARGET_FSDD_TOP1, dm.format_results(model)
    assert c["r@1"] >= TARGET_TUX_R1 and c["r@10"] >= TARGET_TUX_R10, dm.format_results(model)
    assert not math.isnan(model.results["tuxpaint_speech_to_image"]["model_r@10"])


def test_a_machine_without_fsdd_still_trains_the_model_and_says_what_was_not_measured(xmodal_home, tmp_path,
                                                                                     monkeypatch):
    """FSDD lives outside the repository (../shared/data); without it the default model still trains
    (FSDD is evaluation only) and its FSDD figure is reported as not measured, with what to do."""
    from xmodal_core.data import builders

    monkeypatch.setattr(builders, "default_fsdd_dir", lambda: tmp_path / "no-fsdd-here")
    monkeypatch.setattr(dm.sources, "SOURCE_SETS", ("fsdd",))
    missing = dm.build_sources()
    assert list(missing) == ["fsdd"] and "FSDD recordings not found" in missing["fsdd"]
    monkeypatch.setattr(dm.sources, "EVALUATION_ONLY", ())
    with pytest.raises(dm.DatasetError, match="FSDD recordings not found"):
        dm.build_sources()  # a set the model trains on is never skipped
    model = dm.DefaultModel(name="x", config_digest="d", speech_run=1, image_run=2, speech_dir="a", image_dir="b",
                            results={"fsdd_zeroshot": {"skipped": "FSDD is not built here"}})
    assert "FSDD zero-shot: not measured: FSDD is not built here" in dm.format_results(model)


@pytest.mark.slow
def test_cwcl_vs_cl_trains_each_loss_per_seed_and_reports_mean_and_spread(in_small_home):
    from trainers.experiments import cwcl_vs_cl
    from xmodal_core.store import Store

    out = cwcl_vs_cl(epochs=1, seeds=(0, 1))
    store = Store()
    for loss in ("cwcl", "cl"):
        part = out[loss]
        assert [r["seed"] for r in part["per_seed"]] == [0, 1] and len(set(part["runs"])) == 2
        for r in part["per_seed"]:
            config = store.get_run(r["run"]).config
            assert (config["loss"], config["seed"]) == (loss, r["seed"])
            assert all(0.0 <= r[k] <= 1.0 for k in ("simple k=1", "simple k=10", "general k=48", "bare {}"))
        for k in ("simple k=1", "simple k=5", "simple k=10", "general k=48", "bare {}"):
            values = [r[k] for r in part["per_seed"]]
            assert part[k] == pytest.approx(np.mean(values)) and part["std"][k] == pytest.approx(np.std(values))
        drops = [r["simple k=10"] - r["simple k=1"] for r in part["per_seed"]]
        assert out["drop k=10 -> k=1 per seed"][loss] == pytest.approx(drops)
        assert out["drop k=10 -> k=1"][loss] == pytest.approx(np.mean(drops))
    assert out["cwcl drops less in"].endswith("of 2 seeds")
    with pytest.raises(InputError, match="at least one seed"):
        cwcl_vs_cl(seeds=())


@pytest.mark.slow
def test_image_ceiling_measures_head_prior_mix_and_oracle_per_seed(in_small_home):
    from xmodal_core.models.aligned import load_aligned
    from trainers.experiments import image_ceiling
    from xmodal_core.store import Store

    out = image_ceiling(seeds=(0,), epochs=2)
    (entry,) = out["per_seed"]
    config = Store().get_run(entry["run"]).config
    assert (config["seed"], config["epochs"], config["dataset"]) == (0, 2, small_config().image.dataset)
    held = entry["heldout"]
    # the recipe's mix is what the model's own evaluation path measures (embed mixes head and prior)
    direct = dm.tuxpaint_caption_to_image(load_aligned(entry["run"]))
    for k in ("R@1", "R@5", "R@10"):
        assert held["recipe mix"][k] == pytest.approx(direct[f"r@{k[2:]}"], abs=1e-6)
        assert held["per-query oracle"][k] >= max(held[row][k] for row in out["rows"][:4])
    assert held["best fixed weight"]["R@1"] >= held["recipe mix"]["R@1"]
    assert held["queries"] == direct["queries"] and held["gallery"] == direct["gallery"]
    assert out["heldout"]["recipe mix"] == held["recipe mix"] and out["recipe_weight"] == 0.3
    with pytest.raises(InputError, match="at least one seed"):
        image_ceiling(seeds=())
