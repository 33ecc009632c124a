"""Decode any audio a person gives us into mono 16 kHz float32, or say clearly why not.

Accepted: a path to anything soundfile reads (wav, flac, ogg/vorbis, ...), raw bytes of
such a file, a `(rate, array)` pair (what a Gradio microphone sends), or an `Audio`.
Limits (duration, file size, silence) are arguments with documented defaults.
"""
from __future__ import annotations

import functools
import io
from fractions import Fraction
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as AT

from xmodal_core.errors import AudioError
from xmodal_core.validate import check_media_size

SAMPLE_RATE = 16_000
MAX_SECONDS = 30.0
MAX_BYTES = 50 * 1024 * 1024
# Peak below this (about -60 dBFS) counts as silence: nothing a speech model can use.
SILENCE_PEAK = 1e-3


@dataclass(frozen=True)
class Audio:
    """Mono audio.

    Attributes:
        samples: (T,) float32 in [-1, 1].
        sample_rate: Hz (16 000 after `load_audio`).
        source: where it came from (a path or a short description), for messages.
    """

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    source: str = ""

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / float(self.sample_rate)

    @property
    def peak(self) -> float:
        return float(np.abs(self.samples).max()) if len(self.samples) else 0.0

    @property
    def clipped_fraction(self) -> float:
        """Share of samples at full scale (>= 0.999): a hint that the recording is clipped."""
        if not len(self.samples):
            return 0.0
        return float(np.mean(np.abs(self.samples) >= 0.999))


def _decode(data: Any, label: str) -> tuple[np.ndarray, int]:
    try:
        samples, rate = sf.read(data, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, EOFError) as exc:
        raise AudioError(
            f"could not decode audio from {label} ({exc}); "
            "use a WAV, FLAC or OGG file (MP3/M4A: convert it first, e.g. with ffmpeg or sox)"
        ) from None
    return samples, int(rate)


def _from_array(array: Any, rate: int, label: str) -> tuple[np.ndarray, int]:
    samples = np.asarray(array)
    if samples.size == 0:
        raise AudioError(f"audio from {label} is empty: record or upload at least a short word")
    if samples.dtype.kind == "i":
        samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max)
    elif samples.dtype.kind == "u":
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    elif samples.dtype.kind != "f":
        raise AudioError(f"audio from {label} has unsupported sample type {samples.dtype}")
    samples = samples.astype(np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    elif samples.ndim == 2 and samples.shape[0] < samples.shape[1] and samples.shape[0] <= 8:
        samples = samples.T  # (channels, T) -> (T, channels)
    elif samples.ndim != 2:
        raise AudioError(f"audio from {label} has shape {samples.shape}; expected (samples,) or (samples, channels)")
    return samples, int(rate)


MAX_RESAMPLE_TERMS = 1000


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> AT.Resample:
    """orig -> new (a reduced ratio), its windowed-sinc kernel built once: building it is most of
    the cost of `torchaudio.functional.resample` on a short clip (6.5 ms vs 0.7 ms for one second
    at 22.05 kHz)."""
    return AT.Resample(orig, new)


def resample_ratio(rate: int) -> tuple[int, int]:
    """(orig, new) with new / orig = SAMPLE_RATE / rate, both at most about 2 x MAX_RESAMPLE_TERMS.

    Every usual rate is exact (22050 -> 441:320, 44100 -> 441:160, 48000 -> 3:1, 8000 -> 1:2). An
    odd rate (a prime such as 7919 Hz, or 96001 Hz from a broken header) has no small exact
    ratio, and the polyphase kernel grows with it (7919 Hz took 17 s and 4.7 GB; 96001 Hz ran out
    of memory), so it is approximated: the clip's duration is off by under 1e-4.
    """
    ratio = Fraction(SAMPLE_RATE, rate)
    if max(ratio.numerator, ratio.denominator) > MAX_RESAMPLE_TERMS:
        ratio = ratio.limit_denominator(MAX_RESAMPLE_TERMS)  # rate < 16 Hz keeps an exact 16000 / rate
    return ratio.denominator, ratio.numerator


def load_audio(
    source: Any,
    *,
    max_seconds: float = MAX_SECONDS,
    max_bytes: int = MAX_BYTES,
    truncate: bool = False,
    allow_silent: bool = False,
) -> Audio:
    """Decode, mix to mono, resample to 16 kHz and check limits.

    Args:
        source: path, bytes, `(rate, array)` or `Audio`.
        max_seconds: longest accepted duration; longer input raises `AudioError`
            unless `truncate` is set, in which case the first `max_seconds` are kept.
        max_bytes: largest accepted file or byte string.
        allow_silent: accept audio whose peak is below -60 dBFS (otherwise `AudioError`).

    Returns:
        `Audio` with (T,) float32 samples at 16 kHz.
    """
    if isinstance(source, Audio):
        samples, rate, label = source.samples[:, None], source.sample_rate, source.source or "audio"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        label = str(path)
        check_media_size(path, "audio", max_bytes, AudioError)
        samples, rate = _decode(str(path), label)
    elif isinstance(source, (bytes, bytearray)):
        label = "uploaded bytes"
        check_media_size(source, "audio", max_bytes, AudioError)
        samples, rate = _decode(io.BytesIO(bytes(source)), label)
    elif isinstance(source, tuple) and len(source) == 2:
        label = "recording"
        rate, array = source
        if isinstance(array, (int, float)) and not isinstance(rate, (int, float)):
            rate, array = array, rate  # accept (array, rate) too
        samples, rate = _from_array(array, int(rate), label)
    elif source is None:
        raise AudioError("no audio given: record with the microphone or upload a file")
    else:
        raise AudioError(f"cannot read audio from a {type(source).__name__}; give a file path or (rate, samples)")

    if rate <= 0:
        raise AudioError(f"audio from {label} has an invalid sample rate ({rate} Hz)")
    if samples.shape[0] == 0:
        raise AudioError(f"audio from {label} has no samples: record or upload at least a short word")
    if not np.isfinite(samples).all():
        raise AudioError(f"audio from {label} contains NaN or infinite samples")
    mono = samples.mean(axis=1)
    duration = len(mono) / rate
    if duration > max_seconds:
        if not truncate:
            raise AudioError(
                f"audio from {label} is {duration:.1f} s long; the limit is {max_seconds:.0f} s: trim it or upload a shorter clip"
            )
        mono = mono[: int(max_seconds * rate)]
    if rate != SAMPLE_RATE:
        with torch.inference_mode():
            mono = _resampler(*resample_ratio(rate))(torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32))).numpy()
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32)
    audio = Audio(samples=mono, sample_rate=SAMPLE_RATE, source=label)
    if not allow_silent and audio.peak < SILENCE_PEAK:
        raise AudioError(
            f"audio from {label} is silent (peak {audio.peak:.1e}, below -60 dBFS): check the microphone and record again"
        )
    return audio


def save_wav(path: str | Path, audio: Audio) -> Path:
    """Write 16-bit PCM WAV atomically (temp file, then rename)."""
    from xmodal_core.fsio import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio.samples, audio.sample_rate, subtype="PCM_16", format="WAV")
    return path
