"""Spoken vocabulary adaptation end to end: a gallery's names become a trained speech head (a run in
the store), re-adapting costs only the new names, and the shipped head answers people's voices."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.browser_helpers import cache_home, make_home
from xmodal_core.errors import InputError

pytestmark = pytest.mark.slow

TUX_FROG = Path("/usr/share/tuxpaint/stamps/animals/amphibians/frog_desc.ogg")


@pytest.fixture()
def home(tmp_path, monkeypatch):
    """A fresh home whose data sets, features and model weights link into the test cache."""
    from xmodal_core import gallery

    h = make_home(tmp_path)
    monkeypatch.setenv("XMODAL_HOME", str(h))
    gallery.forget_loaded()
    yield h
    gallery.forget_loaded()


def _captioned_gallery(tmp_path, names):
    """An indexed folder of real pictures whose captions are the names (as the Label page sets them)."""
    import skimage.data
    from PIL import Image

    from xmodal_core import gallery

    folder = tmp_path / "pics"
    folder.mkdir()
    sources = {"rocket": skimage.data.rocket, "coffee": skimage.data.coffee, "astronaut": skimage.data.astronaut,
               "cat": skimage.data.chelsea}
    for n in names:
        Image.fromarray(sources[n]()).save(folder / f"{n}.png")
    g, _ = gallery.index_folder(folder, encoder_name=None)
    g.with_captions({it.id: f"A {Path(it.image).stem}." for it in g.items})
    g.save()
    return g


def test_adapting_a_gallery_trains_a_run_and_readapting_costs_only_the_new_names(home, tmp_path):
    from xmodal_core.adapt import AdaptConfig, adapt, load_state
    from xmodal_core.spaces import shared_store

    g = _captioned_gallery(tmp_path, ["rocket", "coffee", "astronaut"])
    cfg = AdaptConfig(voices=4, digit_voices=4, epochs=3, base=False, min_replay=50)
    first = adapt(g.name, config=cfg)
    first_state = load_state(g.name)
    assert first.vocabulary >= 3 and first.new_entries >= 3
    run = shared_store().get_run(first.run_id)
    assert run.status == "completed" and run.kind == "align"
    assert json.loads(Path(load_state(g.name).run_dir, "config.json").read_text())["config"]["templates"] == "name"
    assert 0.0 <= first.metrics["heldout_top1"] <= 1.0 and first.threshold is not None

    # one more picture: only its name is synthesised (and encoded), the rest comes from the caches
    import skimage.data
    from PIL import Image

    from xmodal_core import gallery

    import uuid

    Image.fromarray(skimage.data.chelsea()).save(Path(g.root) / "cat.png")
    g2, _ = gallery.index_folder(g.root, encoder_name=None)
    name = "cat called " + "".join(c for c in uuid.uuid4().hex if c.isalpha())[:6]  # never synthesised before
    g2.with_captions({it.id: (f"A {name}." if "cat" in it.image else f"A {Path(it.image).stem}.") for it in g2.items})
    g2.save()
    second = adapt(g2.name, config=cfg)
    per_name = cfg.voices + cfg.val_voices  # 4 training voices and 1 held-out one
    assert second.mode == "incremental" and second.new_entries == 2  # the caption and the file stem "cat"
    assert per_name <= second.clips_made <= 2 * per_name  # only the new names were synthesised
    assert load_state(g2.name).run_id == second.run_id != first.run_id

    # only the new names learnt: every name the first head knew keeps its row, bit for bit
    from safetensors.torch import load_file

    def rows(state):
        heads = load_file(str(Path(state.run_dir) / "heads.safetensors"))
        vocab = json.loads(Path(state.run_dir, "config.json").read_text())["config"]["vocabulary"]
        return heads, {name: heads["heads.speech.out.weight"][i] for i, name in enumerate(vocab)}

    (heads1, rows1), (heads2, rows2) = rows(first_state), rows(load_state(g2.name))
    assert set(rows1) < set(rows2) and all((rows2[n] == rows1[n]).all() for n in rows1)
    assert (heads2["heads.speech.body.0.weight"] == heads1["heads.speech.body.0.weight"]).all()

    runs = len(shared_store().list_runs())
    again = adapt(g2.name, config=cfg)  # nothing new: no run, no clips, the same head in use
    assert again.mode == "unchanged" and again.run_id == second.run_id and "already adapted" in again.format()
    assert len(shared_store().list_runs()) == runs and load_state(g2.name).run_id == second.run_id


def test_the_replay_sample_takes_clips_an_earlier_adaptation_rendered_first():
    # Re-adapting after a few names must not render a fresh replay sample each time the
    # vocabulary changes: cached old clips are replayed first, uncached ones only fill the rest.
    from xmodal_core.adapt import AdaptConfig
    from xmodal_core.adapt.core import choose_utterances
    from xmodal_core.adapt.speech import plan_utterances
    from xmodal_core.adapt.vocabulary import Entry

    cfg = AdaptConfig(voices=6, digit_voices=6, base=False, min_replay=10, replay=1.0, val_sample=3)
    old = [f"old{i}" for i in range(8)]
    plan = plan_utterances([Entry(t, (t,), "test") for t in old + ["new0"]], cfg.plan_config())
    stale = [u for u in plan if u.entry in old and u.split == "train"]
    have = {u.key() for u in stale[::4]}  # 12 of the 48 old training clips are cached
    cached = lambda u: u.key() in have  # noqa: E731
    chosen = choose_utterances(plan, set(old), {"new0"}, cfg, True, cached=cached)
    replay = [u for u in chosen if u.entry in old and u.split == "train"]
    assert len(replay) == 10 and all(cached(u) for u in replay)          # enough cached: only those
    assert {u.key() for u in chosen if u.entry == "new0"} == {u.key() for u in plan if u.entry == "new0"}
    few = {u.key() for u in stale[:4]}
    chosen = choose_utterances(plan, set(old), {"new0"}, cfg, True, cached=lambda u: u.key() in few)
    replay = [u for u in chosen if u.entry in old and u.split == "train"]
    assert len(replay) == 10 and few <= {u.key() for u in replay}       # all 4 cached, 6 drawn to fill
    assert choose_utterances(plan, set(old), {"new0"}, cfg, True) == choose_utterances(plan, set(old), {"new0"},
                                                                                        cfg, True)


def test_an_empty_vocabulary_leaves_the_head_in_use_untouched(home, tmp_path):
    from xmodal_core import gallery
    from xmodal_core.adapt import AdaptConfig, adapt, load_state
    from xmodal_core.adapt.vocabulary import Vocabulary
    from xmodal_core.adapt.core import adapt_vocabulary

    with pytest.raises(InputError, match="empty"):
        adapt_vocabulary("nothing", Vocabulary([]))
    folder = tmp_path / "0001"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64), "red").save(folder / "0001.png")
    g, _ = gallery.index_folder(folder, encoder_name=None)
    with pytest.raises(InputError, match="names nothing"):
        adapt(g.name, config=AdaptConfig(base=False))
    assert load_state(g.name) is None


def test_a_missing_tts_engine_is_a_clear_error(home, tmp_path, monkeypatch):
    from xmodal_core.adapt import AdaptConfig, adapt
    from xmodal_core.data import tts
    from xmodal_core.errors import DatasetError

    g = _captioned_gallery(tmp_path, ["rocket"])
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)  # as on a machine without espeak-ng / flite
    with pytest.raises(DatasetError, match="no TTS engine is installed"):
        adapt(g.name, config=AdaptConfig(voices=2, base=False))


# -- the shipped head on people's voices (evaluation data, never trained on)

def test_the_shipped_head_matches_its_recipe():
    from xmodal_core.adapt import shipped

    state = shipped.shipped_state()
    assert state is not None, "assets/models/xmodal-default-adapted is missing: python -m xmodal_core.adapt.shipped --build"
    assert state["recipe_digest"] == shipped.recipe_digest(), \
        "the committed adapted head was trained with another recipe: rebuild it (python -m xmodal_core.adapt.shipped --build)"
    assert len(state["vocabulary"]) > 2000 and state["threshold"] is not None


def test_a_person_saying_frog_finds_frog_directly_without_asr(home):
    from xmodal_core.adapt import base_state
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search import Query, search

    state = base_state(install=True)
    assert state is not None and state.gallery == "default"
    result = search(open_gallery("default"), Query.from_input("speech", str(TUX_FROG)), "direct", k=10)
    assert result.path == "direct" and result.transcript is None  # no ASR ran
    assert result.heard_as == "frog"
    assert any("frog" in (h.item.caption or "").lower() for h in result.hits)
    stages = [name for name, _ in result.timings]
    assert not any("ASR" in s for s in stages)


def test_auto_answers_out_of_vocabulary_speech_with_the_cascade(home, tmp_path):
    from dataclasses import replace

    from xmodal_core.adapt import base_state
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search import Query, search

    state = base_state(install=True)
    frog = Query.from_input("speech", str(TUX_FROG))
    sure = search(open_gallery("default"), frog, "auto", k=5)
    assert sure.path == "direct" and sure.confidence >= state.threshold
    # the same recording against an adaptation that never heard "frog": the head is unsure -> cascade
    unsure = replace(state, threshold=1.01)
    answered = search(open_gallery("default"), frog, "auto", k=5, adapted=unsure)
    assert answered.path == "cascade" and answered.transcript and "frog" in answered.transcript.lower()
    assert any("out of vocabulary" in n for n in answered.notes)


def test_the_search_page_says_what_the_direct_path_heard_and_how_sure_it_was(home):
    import pages.search as page

    status = page.adaptation_status("default")
    assert "names" in status and "adapted" in status
    heard, grid, timings, hits, _review = page.run_search("speech-file", None, str(TUX_FROG), None, "", "default",
                                                         "direct", 12, 100, 90, 8.0)
    assert "direct, no ASR" in heard and "frog" in heard
    assert grid and any("frog" in str(row[2]).lower() for row in hits)
    assert not any("ASR" in str(row[0]) for row in timings)


def test_the_adapt_command_reports_a_gallerys_state_as_json(home, capsys):
    from xmodal_core.adapt import base_state
    from xmodal_core.cli import main

    base_state(install=True)
    assert main(["adapt", "--gallery", "default", "--status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gallery"] == "default" and out["vocabulary"] > 2000 and out["threshold"] is not None
    assert main(["adapt", "--gallery", "../etc", "--status"]) == 2  # a gallery name is never a path
    assert main(["adapt", "--gallery", "default", "--voices", "100000"]) == 2
    assert "voices per name" in capsys.readouterr().err
