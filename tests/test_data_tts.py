"""Synthetic speech: voices from the installed engines, seeded and cached synthesis, spoken data sets."""
from __future__ import annotations

import io
import random
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xmodal_core.data import tts
from xmodal_core.data.manifest import check_disjoint, load_manifest
from xmodal_core.data.tts import Voice, plan_speech, request_for, speak_texts, synthesize
from xmodal_core.errors import InputError

ENGINES = tts.available_engines()


@pytest.fixture(scope="session")
def tts_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tts-cache")


@pytest.fixture(autouse=True)
def _shared_tts_cache(tts_cache, monkeypatch):
    # Every test shares one cache (synthesis is the slow part); homes stay per test.
    monkeypatch.setenv("XMODAL_TTS_CACHE", str(tts_cache))


def test_engines_list_their_own_voices():
    assert "espeak-ng" in ENGINES and "flite" in ENGINES
    espeak = tts.espeak_english_voices()
    assert {"en-us", "en-gb", "en-gb-scotland"} <= set(espeak) and len(espeak) >= 8
    assert {"m3", "f2", "klatt"} <= set(tts.espeak_variants())
    assert len(tts.list_voices("espeak-ng")) == len(espeak) * (1 + len(tts.espeak_variants()))
    assert Voice("flite", "slt") in tts.list_voices("flite")
    assert Voice("flite", "awb_time") not in tts.list_voices("flite")   # can only say clock times
    defaults = tts.default_voices()
    assert len({v.engine for v in defaults}) == len(ENGINES) and len(defaults) >= 100


def test_voice_names_are_checked():
    assert Voice.parse("espeak-ng:en-us+f3") == Voice("espeak-ng", "en-us+f3")
    for bad in ("en-us", "say:hello", "espeak-ng:en-us; rm -rf /"):
        with pytest.raises(InputError):
            Voice.parse(bad)
    with pytest.raises(InputError, match="not an installed voice"):
        tts.check_voice(Voice("espeak-ng", "en-us+nosuchvariant"))


def test_same_request_same_audio_and_seed_changes_the_jitter():
    voices = [Voice("espeak-ng", "en-us+m3"), Voice("espeak-ng", "en-gb+f2"), Voice("flite", "slt")]
    a = plan_speech(["a red apple", "seven"], voices, per_text=2, seed=1)
    assert a == plan_speech(["a red apple", "seven"], voices, per_text=2, seed=1)
    assert len(a) == 4 and a[0].voice != a[1].voice
    b = plan_speech(["a red apple", "seven"], voices, per_text=2, seed=2)
    assert [(r.rate, r.pitch) for r in a] != [(r.rate, r.pitch) for r in b]
    assert all(0.85 <= r.rate <= 1.15 for r in a + b)
    first = synthesize(a)
    stamp = [p.stat().st_mtime_ns for p in first]
    t0 = time.perf_counter()
    again = synthesize(plan_speech(["a red apple", "seven"], voices, per_text=2, seed=1))
    assert again == first and [p.stat().st_mtime_ns for p in again] == stamp   # served from the cache
    assert time.perf_counter() - t0 < 1.0
    assert first[0].name == f"{a[0].key()}.wav"


@pytest.mark.parametrize("voice", [Voice("espeak-ng", "en-us"), Voice("espeak-ng", "en-gb-x-rp+f3"),
                                   Voice("flite", "slt"), Voice("flite", "awb"), Voice("festival", "kal_diphone")])
def test_every_engine_gives_16khz_mono_speech_of_plausible_length(voice):
    if voice.engine not in ENGINES:
        pytest.skip(f"{voice.engine} not installed")
    text = "a small brown dog is sitting on the grass"
    (path,) = synthesize([request_for(text, voice, seed=0)])
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    words = len(text.split())
    assert 0.15 * words < info.duration < 0.8 * words + 1.0    # ~0.3-0.5 s a word, plus edges
    from xmodal_core.audio import load_audio

    assert load_audio(path).peak > 0.05


def _command_samples(req: tts.SpeechRequest, tmp_path: Path):
    """What the engine's own command writes for `req` (the way synthesis worked before the long-lived
    processes): decoded 16-bit samples and the sample rate."""
    v = req.voice
    if v.engine == "espeak-ng":
        wav = subprocess.run(["espeak-ng", "-v", v.name, "-s", str(round(tts.ESPEAK_RATE * req.rate)),
                              "-p", str(req.pitch or 50), "--stdout"], input=req.text.encode(), capture_output=True,
                             check=True).stdout
        # --stdout cannot go back to fill in the sizes: read the 44-byte header's rate, then the samples
        return np.frombuffer(wav[44:], dtype="<i2"), int.from_bytes(wav[24:28], "little")
    txt, out = tmp_path / "t.txt", tmp_path / "o.wav"
    txt.write_text(req.text + "\n", encoding="utf-8")
    stretch = f"{1.0 / req.rate:.4f}"
    if v.engine == "flite":
        cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={stretch}", "-f", str(txt), "-o", str(out)]
    else:
        cmd = ["text2wave", "-eval", f"(voice_{v.name})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch})",
               str(txt), "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    return sf.read(out, dtype="int16")


@pytest.mark.parametrize("engine", ["espeak-ng", "flite", "festival"])
def test_long_lived_engine_processes_give_the_commands_samples_bit_for_bit(engine, tmp_path):
    # espeak-ng, flite and festival run as long-lived processes (~12 ms, ~15-60 ms and 0.3-1 s of
    # start-up saved a clip); the audio must stay exactly what each engine's command makes, in any
    # order, so the clip cache stays valid. Random voices, rates, pitches and awkward texts, in one
    # process each.
    if engine not in ENGINES:
        pytest.skip(f"{engine} not installed")
    voices = tts.default_voices([engine])
    texts = ["pencil", "A brown hen. And a duck!", 'say "hi" \\ back', "ice-cream cone", "Über café", "42",
             "two\nlines", "日本 and ß", "x" * 1200]
    rng = random.Random(7)
    for _ in range({"espeak-ng": 24, "flite": 16}.get(engine, 8)):
        req = tts.SpeechRequest(rng.choice(texts[:-1] if engine == "festival" else texts), rng.choice(voices),
                                rate=round(rng.uniform(0.7, 1.3), 3),
                                pitch=rng.randint(10, 90) if engine == "espeak-ng" else None)
        raw = tts._synthesize_raw(req, tmp_path)
        got, rate = sf.read(io.BytesIO(raw), dtype="int16")
        want, want_rate = _command_samples(req, tmp_path)
        assert rate == want_rate and len(got) == len(want) and (got == want).all(), (req.voice.id, req.text)
    assert tts._ESPEAK_WORKER[0] and tts._FLITE_WORKER[0]  # the workers answered every request; nothing fell back


@pytest.mark.parametrize("engine, voice, pool, flag", [("espeak-ng", "en-gb+f2", "_ESPEAK", "_ESPEAK_WORKER"),
                                                       ("flite", "slt", "_FLITE", "_FLITE_WORKER")])
def test_a_lost_engine_worker_falls_back_to_the_command_with_the_same_audio(engine, voice, pool, flag, monkeypatch,
                                                                            tmp_path):
    if engine not in ENGINES:
        pytest.skip(f"{engine} not installed")
    req = request_for("a small brown dog", Voice(engine, voice), seed=3)
    first = tts._synthesize_raw(req, tmp_path)
    workers = getattr(tts, pool)
    server = workers.acquire()
    server.proc.kill()          # a worker that died (killed, or crashed in the C library)
    server.proc.wait()
    workers._idle.append(server)   # the pool skips dead workers, so force the dead one back in
    monkeypatch.setattr(type(server), "alive", lambda self: True)
    monkeypatch.setattr(tts, flag, [True])
    again = tts._synthesize_raw(req, tmp_path)
    assert getattr(tts, flag) == [False]    # later requests go to the command
    assert (sf.read(io.BytesIO(again), dtype="int16")[0] == sf.read(io.BytesIO(first), dtype="int16")[0]).all()


def test_festival_errors_come_back_as_messages_and_the_process_keeps_serving(tmp_path):
    if "festival" not in ENGINES:
        pytest.skip("festival not installed")
    from xmodal_core.errors import AudioError

    server = tts._FESTIVAL.acquire()
    try:
        with pytest.raises(AudioError, match="festival failed for festival:nosuchvoice"):
            server.say("nosuchvoice", "1.0", tmp_path / "missing.txt", tmp_path / "out.wav")
        txt = tmp_path / "ok.txt"
        txt.write_text("hello there\n")
        server.say("kal_diphone", "1.0", txt, tmp_path / "ok.wav")
        assert server.alive() and sf.info(tmp_path / "ok.wav").frames > 1000
    finally:
        tts._FESTIVAL.release(server)


def test_speak_texts_returns_one_path_per_text_and_voice():
    paths = speak_texts(["zero", "one", "two"], voices=["espeak-ng:en-us", "flite:rms"], per_text=2, seed=0)
    assert len(paths) == 6 and len(set(paths)) == 6 and all(p.is_file() for p in paths)
    with pytest.raises(InputError):
        speak_texts([""], voices=["espeak-ng:en-us"])


def test_engine_failure_is_reported_not_raised_in_a_report():
    good = request_for("hello", Voice("espeak-ng", "en-us"))
    broken = tts.SpeechRequest("hello", Voice("flite", "nosuchvoice"))
    wavs, errors = tts.synthesize_report([good, broken])
    assert wavs[0] is not None and wavs[1] is None and 1 in errors


def test_voice_splits_keep_each_person_in_one_split():
    from xmodal_core.data.speak import assign_voice_splits

    voices = tts.default_voices()
    splits = assign_voice_splits(voices)
    assert set(splits.values()) == {"train", "val", "test"}
    by_person = {}
    for v, s in splits.items():
        by_person.setdefault(tts.voice_person(v), set()).add(s)
    assert all(len(s) == 1 for s in by_person.values())
    if "festival" in ENGINES:
        assert splits[Voice("flite", "kal16")] == splits[Voice("festival", "kal_diphone")]   # the same man
    assert assign_voice_splits(voices) == splits


def test_speak_dataset_adds_spoken_captions_with_the_same_group_split_and_image(xmodal_home):
    from xmodal_core.data.builders import build_dataset
    from xmodal_core.data.speak import speak_dataset

    build_dataset("tuxpaint", limit=25)
    source_manifest = (xmodal_home / "datasets" / "tuxpaint" / "manifest.jsonl").read_bytes()
    summary = speak_dataset("tuxpaint", limit=14, per_text=2, check_wer=0)
    spoken = load_manifest("tuxpaint-tts")
    parents = {r.id: r for r in load_manifest("tuxpaint")}
    assert summary.records == len(spoken) >= 14
    for r in spoken:
        parent = parents[r.id.split("@")[0]]
        assert (r.group, r.split, r.text, r.image, r.label) == (parent.group, parent.split, parent.text,
                                                                parent.image, parent.label)
        assert r.audio and r.speaker == r.id.split("@")[1] and r.source.startswith("tts:")
        info = sf.info(r.audio)
        assert info.samplerate == 16000 and 0.2 < info.duration < 0.8 * len(r.text.split()) + 2.0
    assert check_disjoint(spoken, by_speaker=True) == []
    per_parent = {}
    for r in spoken:
        per_parent.setdefault(r.id.split("@")[0], []).append(r)
    assert all(len(v) == (2 if v[0].split == "train" else 1) for v in per_parent.values())
    # The source set (with its human recordings) is untouched.
    assert (xmodal_home / "datasets" / "tuxpaint" / "manifest.jsonl").read_bytes() == source_manifest
    assert summary.extra["voice_splits"]["test"]


@pytest.mark.slow
def test_round_trip_wer_per_engine_is_reported():
    sentences = ["the quick brown fox jumps over the lazy dog", "she sells sea shells by the sea shore",
                 "a picture of a brown dog sitting on the grass"]
    voices = [Voice("espeak-ng", "en-us"), Voice("flite", "rms"), Voice("flite", "awb")]
    if "festival" in ENGINES:
        voices.append(Voice("festival", "cmu_us_slt_arctic_hts"))
    requests = [request_for(s, v, seed=0) for v in voices for s in sentences]
    wer = tts.round_trip_wer(requests, synthesize(requests), per_engine=3)
    assert set(wer) == {v.engine for v in voices}
    for result in wer.values():
        assert result.utterances == 3 and result.wer < 0.5, result
    # A voice that says something else shows up as a high WER.
    wrong = [tts.SpeechRequest("an entirely different sentence about cats", r.voice) for r in requests[:3]]
    bad = tts.round_trip_wer(wrong, synthesize(requests[:3]), per_engine=3)
    assert bad["espeak-ng"].wer > 0.8
