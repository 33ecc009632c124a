"""Spoken vocabulary adaptation, its data side: what a gallery names, how each name is spoken by
held-out and training voices, and the simulated microphone and room (real TTS, real signals)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from xmodal_core.adapt import speech as sp
from xmodal_core.adapt.vocabulary import Entry, VocabularyBuilder, entry_of, gallery_vocabulary, stem_words
from xmodal_core.errors import InputError


def test_captions_names_and_stems_collapse_to_the_words_a_person_says():
    assert entry_of("An Adelaide Rosella.") == "adelaide rosella"
    assert entry_of("The letter A.") == entry_of("the letter a") == "letter a"
    assert entry_of("  A   frog!  ") == "frog"
    assert stem_words("red_fox-2") == "red fox"
    assert stem_words("BigCat") == "big cat"
    b = VocabularyBuilder()
    b.add("A frog.", "caption")
    b.add("frog", "stem")
    vocab = b.build()
    assert vocab.texts == ["frog"]
    assert vocab.entries[0].forms == ("frog", "a frog")  # people read the caption with its article


def test_names_no_voice_can_say_are_left_out_with_the_reason():
    b = VocabularyBuilder()
    b.add("猫", "caption")
    b.add("\u0000\u200b", "caption")
    b.add("owl", "caption")
    vocab = b.build()
    assert vocab.texts == ["owl"]
    assert len(vocab.dropped) == 1 and "voice" in vocab.dropped[0][1]


def test_very_long_captions_are_cut_to_what_a_person_would_say():
    long = "A " + " ".join(["very"] * 300) + " long caption."
    assert len(entry_of(long).split()) <= 16 and len(entry_of(long)) <= 120


def test_a_folder_gallery_names_its_files_and_folders(tmp_path):
    from xmodal_core.gallery import GalleryItem

    class FolderGallery:
        name, kind = "pets", "folder"
        items = [GalleryItem(id="folder:cats/tabby_cat.png", image=str(tmp_path / "cats" / "tabby_cat.png"),
                             caption=None, label=None),
                 GalleryItem(id="folder:dogs/Beagle-2.png", image=str(tmp_path / "dogs" / "Beagle-2.png"),
                             caption="A beagle on a sofa.", label=None)]

    vocab = gallery_vocabulary(FolderGallery(), base=False)
    assert set(vocab.texts) == {"tabby cat", "cats", "beagle", "dogs", "beagle on a sofa"}
    assert vocab.counts()["stem"] == 2


def test_a_gallery_that_names_nothing_speakable_is_refused_clearly():
    from xmodal_core.gallery import GalleryItem

    class Unnamed:
        name, kind = "scans", "folder"
        items = [GalleryItem(id="folder:0001.png", image="/x/0001/0001.png", caption=None, label=None)]

    with pytest.raises(InputError, match="names nothing that can be spoken"):
        gallery_vocabulary(Unnamed(), base=False)


# -- voices and plans

@pytest.fixture(scope="module")
def pools():
    return sp.voice_pools(("espeak-ng", "flite", "festival"))


def test_validation_voices_never_speak_in_training(pools):
    from xmodal_core.data.tts import voice_person

    train = {voice_person(v) for v in pools["train"]}
    val = {voice_person(v) for v in pools["val"]}
    assert train and val and not train & val
    assert len(pools["train"]) >= 50  # many voices: the point of adaptation


def test_an_entrys_utterances_do_not_depend_on_the_rest_of_the_vocabulary(pools):
    cfg = sp.SpeechPlanConfig(voices=5, val_voices=1)
    frog = Entry("frog", ("frog", "a frog"), "caption")
    alone = sp.plan_utterances([frog], cfg, pools)
    among = sp.plan_utterances([Entry("owl", ("owl",), "caption"), frog], cfg, pools)
    assert [u.key() for u in alone] == [u.key() for u in among if u.entry == "frog"]
    assert len(alone) == 6 and sum(u.split == "val" for u in alone) == 1
    val_voice = next(u.request.voice for u in alone if u.split == "val")
    assert val_voice in pools["val"] and val_voice not in pools["train"]
    assert len({u.key() for u in alone}) == 6


# -- the simulated recording chain

def _tone(freqs, seconds=1.0, rate=16_000):
    t = np.arange(int(seconds * rate)) / rate
    return (sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) * 0.5).astype(np.float32)


def _band_power(x, lo, hi, rate=16_000):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_band_limiting_removes_what_a_cheap_microphone_cannot_hear():
    x = _tone([500, 7000])
    y = sp.apply_augmentation(x, sp.Augmentation(lowpass_hz=3000), np.random.default_rng(0))
    before = _band_power(x, 6500, 7500) / _band_power(x, 400, 600)
    after = _band_power(y, 6500, 7500) / _band_power(y, 400, 600)
    assert after < before * 1e-3


def test_noise_is_added_at_the_requested_snr():
    x = _tone([440])
    rng = np.random.default_rng(1)
    y = sp.apply_augmentation(x, sp.Augmentation(snr_db=10.0, gain_db=-10.0), rng)
    clean = sp.apply_augmentation(x, sp.Augmentation(gain_db=-10.0), np.random.default_rng(1))
    speech = clean * float(y @ clean / (clean @ clean))  # both are scaled to the same peak after mixing
    noise = y - speech
    snr = 10 * np.log10((speech ** 2).mean() / (noise ** 2).mean())
    assert 9.0 < snr < 11.0


def test_reverberation_adds_a_decaying_tail_and_gain_clips_at_full_scale():
    x = np.zeros(16_000, np.float32)
    x[:1600] = _tone([300], 0.1)
    dry = sp.apply_augmentation(x, sp.Augmentation(), np.random.default_rng(2))
    wet = sp.apply_augmentation(x, sp.Augmentation(rt60=0.6, wet=0.5), np.random.default_rng(2))
    assert len(wet) > len(dry)  # the room keeps ringing after the speech
    loud = sp.apply_augmentation(x, sp.Augmentation(gain_db=12.0), np.random.default_rng(3))
    assert np.abs(loud).max() == pytest.approx(1.0) and np.mean(np.abs(loud) >= 0.999) > 0.01


def test_clips_are_synthesised_once_and_found_by_their_content(xmodal_home, pools):
    cfg = sp.SpeechPlanConfig(voices=2, val_voices=1)
    plan = sp.plan_utterances([Entry("teapot", ("teapot",), "caption")], cfg, pools)
    paths, errors = sp.render_clips(plan)
    assert not errors and all(p.is_file() for p in paths)
    audio, rate = sf.read(paths[0])
    assert rate == 16_000 and 0.3 < len(audio) / rate < 4.0 and np.abs(audio).max() > 0.05
    stamps = [p.stat().st_mtime_ns for p in paths]
    again, _ = sp.render_clips(sp.plan_utterances([Entry("teapot", ("teapot",), "caption")], cfg, pools))
    assert again == paths and [p.stat().st_mtime_ns for p in again] == stamps


def test_a_name_an_engine_cannot_say_is_reported_not_raised(xmodal_home, pools):
    from xmodal_core.data.tts import SpeechRequest, Voice

    bad = sp.Utterance("x", "x", "train", 0, SpeechRequest("x", Voice("espeak-ng", "xx-nonexistent")),
                       sp.Augmentation())
    paths, errors = sp.render_clips([bad])
    assert paths == [None] and "not an installed voice" in errors[0]
