"""Audio input: real recordings decode to mono 16 kHz; every bad input gets a clear AudioError."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from tests.conftest import TUXPAINT
from xmodal_core.audio import SAMPLE_RATE, Audio, load_audio, save_wav
from xmodal_core.errors import AudioError


def test_real_8khz_wav_is_resampled_to_16khz(fsdd_dir):
    path = fsdd_dir / "7_jackson_32.wav"
    raw, rate = sf.read(path, dtype="float32")
    audio = load_audio(path)
    assert rate == 8000 and audio.sample_rate == SAMPLE_RATE
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.duration - len(raw) / rate) < 0.01
    # Same signal: energy in the speech band is preserved by resampling.
    assert abs(np.sqrt(np.mean(audio.samples ** 2)) - np.sqrt(np.mean(raw ** 2))) < 0.1 * np.sqrt(np.mean(raw ** 2))


@pytest.mark.parametrize("rate", [7919, 96_001])
def test_odd_sample_rate_resamples_in_bounded_time_and_memory(fsdd_dir, tmp_path, rate):
    # A prime rate (or a broken header) has no small exact 16 kHz ratio: the exact polyphase
    # kernel took 17 s and 4.7 GB at 7919 Hz and ran out of memory at 96001 Hz.
    import resource

    raw, _ = sf.read(fsdd_dir / "2_lucas_7.wav", dtype="float32")
    path = tmp_path / f"odd{rate}.wav"
    sf.write(path, raw, rate)  # the same samples, labelled with the odd rate
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    audio = load_audio(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert audio.sample_rate == SAMPLE_RATE
    assert abs(len(audio.samples) - len(raw) * SAMPLE_RATE / rate) <= 2
    assert grown_mib < 500
    assert 0.5 < audio.peak / np.abs(raw).max() < 1.5


def test_resample_ratio_is_exact_for_usual_rates_and_close_for_odd_ones():
    from fractions import Fraction

    from xmodal_core.audio import MAX_RESAMPLE_TERMS, resample_ratio

    for rate in (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 192000):
        orig, new = resample_ratio(rate)
        assert Fraction(new, orig) == Fraction(SAMPLE_RATE, rate)
    for rate in (7919, 15999, 16001, 44099, 96001, 1_000_003):
        orig, new = resample_ratio(rate)
        assert max(orig, new) <= 2 * MAX_RESAMPLE_TERMS
        assert abs(new / orig - SAMPLE_RATE / rate) <= 1e-4 * SAMPLE_RATE / rate


def test_48khz_stereo_flac_is_mixed_to_mono_16khz(fsdd_dir, tmp_path):
    raw, rate = sf.read(fsdd_dir / "3_george_5.wav", dtype="float32")
    up = AF.resample(torch.from_numpy(raw), rate, 48_000).numpy()
    stereo = np.stack([up, 0.5 * up], axis=1)
    path = tmp_path / "stereo48k.flac"
    sf.write(path, stereo, 48_000)
    audio = load_audio(path)
    ref = load_audio(fsdd_dir / "3_george_5.wav")
    assert audio.sample_rate == 16_000
    assert abs(len(audio.samples) - len(ref.samples)) <= 2
    n = min(len(audio.samples), len(ref.samples))
    corr = np.corrcoef(audio.samples[:n], ref.samples[:n])[0, 1]
    assert corr > 0.95  # mono mix of (x, x/2) is 0.75 x: same waveform shape


def test_real_ogg_recording_decodes():
    path = next(TUXPAINT.rglob("*_desc.ogg"))
    audio = load_audio(path)
    assert 0.3 < audio.duration < 30


def test_gradio_microphone_tuple_int16(fsdd_dir):
    raw, rate = sf.read(fsdd_dir / "1_lucas_3.wav", dtype="int16")
    audio = load_audio((rate, raw))
    assert audio.sample_rate == 16_000 and audio.peak <= 1.0 and audio.peak > 0.01


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10), "could not decode"),
])
def test_empty_and_corrupt_files_are_refused(tmp_path, make, message):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=message):
        load_audio(path)


def test_truncated_real_wav_is_refused_or_shorter(fsdd_dir, tmp_path):
    data = (fsdd_dir / "0_george_0.wav").read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:30])  # header cut inside the fmt chunk
    with pytest.raises(AudioError):
        load_audio(path)


def test_silent_audio_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(16_000, dtype=np.float32), 16_000)
    with pytest.raises(AudioError, match="silent"):
        load_audio(path)
    assert load_audio(path, allow_silent=True).duration == pytest.approx(1.0)


def test_over_long_audio_is_refused_or_truncated(fsdd_dir, tmp_path):
    raw, rate = sf.read(fsdd_dir / "5_nicolas_1.wav", dtype="float32")
    long = np.tile(raw, int(31 * rate / len(raw)) + 1)
    path = tmp_path / "long.wav"
    sf.write(path, long, rate)
    with pytest.raises(AudioError, match="limit is 30 s"):
        load_audio(path)
    assert load_audio(path, truncate=True).duration == pytest.approx(30.0, abs=0.01)


def test_missing_file_and_wrong_type():
    with pytest.raises(AudioError, match="not found"):
        load_audio("/nonexistent/x.wav")
    with pytest.raises(AudioError):
        load_audio(None)
    with pytest.raises(AudioError):
        load_audio(3.5)


def test_save_wav_round_trip(fsdd_dir, tmp_path):
    audio = load_audio(fsdd_dir / "9_jackson_0.wav")
    back = load_audio(save_wav(tmp_path / "x.wav", audio))
    assert np.max(np.abs(back.samples - audio.samples)) < 1e-3
    assert isinstance(back, Audio)
