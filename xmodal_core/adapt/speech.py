"""Synthetic speech of a vocabulary: every entry said by many voices, through a simulated microphone and room.

Each utterance is a TTS request (voice, rate, pitch, which written form) plus an augmentation
(noise at a random SNR, reverberation, band-limiting, gain and clipping, speed, crops, silence
around it), both drawn from a hash of (seed, entry, n): the same entry always gets the same
utterances, so adapting again after adding names synthesises and encodes only the new ones.
The augmented clip is stored as FLAC under a key of its content (the TTS request's key and the
augmentation's parameters) in `datasets_dir()/_adapt`; features are cached by the file's bytes.

Voices are split as speakers are (`assign_voice_splits`): validation uses voices that never
speak in training. People's recordings are never used here.
"""
from __future__ import annotations

import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.adapt.vocabulary import Entry
from xmodal_core.errors import DatasetError
from xmodal_core.fsio import atomic_path

AUGMENT_VERSION = "aug1"
SAMPLE_RATE = 16_000
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SpeechPlanConfig:
    """How a vocabulary is spoken.

    voices: training utterances per entry (each a random voice, rate, pitch and augmentation);
    val_voices: utterances per entry by held-out voices (validation); engines: TTS engines to use
    when installed; clean_share: utterances left without augmentation.
    """

    voices: int = 20
    val_voices: int = 1
    engines: tuple[str, ...] = ("espeak-ng", "flite", "festival")
    engine_share: tuple[float, ...] = (0.83, 0.15, 0.02)
    espeak_rate: tuple[float, float] = (0.65, 1.3)
    espeak_pitch: tuple[int, int] = (10, 90)
    recorded_rate: tuple[float, float] = (0.75, 1.3)
    clean_share: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Augmentation:
    """One simulated recording chain, applied in field order. Zero / None means off."""

    pad_before: float = 0.0     # seconds of room noise before and after the speech
    pad_after: float = 0.0
    crop_start: float = 0.0     # fraction of the (silence-trimmed) speech cut at the start
    crop_end: float = 1.0       # fraction kept at the end
    speed: float = 1.0          # resampling factor (tempo and pitch)
    rt60: float = 0.0           # reverberation time in seconds (0 = dry)
    wet: float = 0.0            # reverberant share
    highpass_hz: float = 0.0
    lowpass_hz: float = 0.0
    snr_db: float | None = None  # noise level below the speech
    pink: bool = False
    gain_db: float = 0.0        # then clipped to [-1, 1]

    def key(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in ((name, getattr(self, name)) for name in self.__dataclass_fields__)}


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def draw_augmentation(rng: np.random.Generator, clean_share: float = 0.1) -> Augmentation:
    """A random microphone-and-room chain (or none, with probability `clean_share`)."""
    if rng.random() < clean_share:
        return Augmentation()
    u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    return Augmentation(
        pad_before=u(0.0, 0.4), pad_after=u(0.0, 0.4),
        crop_start=u(0.0, 0.12) if rng.random() < 0.3 else 0.0,
        crop_end=u(0.85, 1.0) if rng.random() < 0.3 else 1.0,
        speed=u(0.88, 1.12) if rng.random() < 0.6 else 1.0,
        rt60=u(0.1, 0.7) if rng.random() < 0.4 else 0.0, wet=u(0.1, 0.5),
        highpass_hz=u(80, 300) if rng.random() < 0.4 else 0.0,
        lowpass_hz=u(3000, 7000) if rng.random() < 0.4 else 0.0,
        snr_db=u(5.0, 35.0) if rng.random() < 0.85 else None, pink=bool(rng.random() < 0.5),
        gain_db=u(-18.0, 8.0),
    )


def trim_silence(x: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing 10-ms frames quieter than `threshold_db` below the loudest frame."""
    hop = 160
    n = len(x) // hop
    if n < 3:
        return x
    energy = np.sqrt((x[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    return x[loud[0] * hop:(loud[-1] + 1) * hop] if len(loud) else x


def _noise(n: int, pink: bool, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if not pink or n < 2:
        return white
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    pinkish = np.fft.irfft(spectrum, n).astype(np.float32)
    return pinkish / (pinkish.std() + 1e-8)


def apply_augmentation(samples: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """The clip as if recorded through `aug`: (T,) float32 16 kHz in, (T',) float32 in [-1, 1] out."""
    from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

    x = trim_silence(np.asarray(samples, dtype=np.float32))
    n = len(x)
    a, b = int(n * aug.crop_start), max(int(n * aug.crop_end), int(n * aug.crop_start) + 1600)
    x = x[a:b]
    factor = int(round(100 * aug.speed))
    if factor != 100:
        x = resample_poly(x, 100, factor).astype(np.float32)
    if aug.rt60 > 0:
        t = np.arange(int(aug.rt60 * SAMPLE_RATE)) / SAMPLE_RATE
        rir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / aug.rt60)
        rir[0] = 1.0
        wet = fftconvolve(x, rir / np.abs(rir).sum() * 8.0)[: len(x) + len(t) // 2]
        dry = np.pad(x, (0, len(wet) - len(x)))
        x = ((1 - aug.wet) * dry + aug.wet * wet).astype(np.float32)
    x = np.concatenate([np.zeros(int(aug.pad_before * SAMPLE_RATE), np.float32), x,
                        np.zeros(int(aug.pad_after * SAMPLE_RATE), np.float32)])
    if aug.highpass_hz > 0:
        x = sosfilt(butter(2, aug.highpass_hz, "highpass", fs=SAMPLE_RATE, output="sos"), x).astype(np.float32)
    if aug.lowpass_hz > 0:
        x = sosfilt(butter(4, aug.lowpass_hz, "lowpass", fs=SAMPLE_RATE, output="sos"), x).astype(np.float32)
    if aug.snr_db is not None:
        power = float((x ** 2).mean())
        if power > 0:
            x = x + _noise(len(x), aug.pink, rng) * math.sqrt(power / 10 ** (aug.snr_db / 10))
    peak = float(np.abs(x).max()) or 1.0
    x = x / peak * 0.7 * 10 ** (aug.gain_db / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Utterance:
    """One planned clip of an entry: who says which form, through which chain."""

    entry: str
    form: str
    split: str  # "train" or "val" (held-out voices)
    index: int
    request: object  # tts.SpeechRequest
    augmentation: Augmentation

    def key(self) -> str:
        """sha256 of (augmentation version, TTS request key, augmentation, n): the clip's cache name."""
        cached = self.__dict__.get("_key")
        if cached is None:
            blob = json.dumps([AUGMENT_VERSION, self.request.key(), self.augmentation.key(), self.index],
                              sort_keys=True)
            cached = self.__dict__["_key"] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        return cached

    def path(self, root: Path | None = None) -> Path:
        key = self.key()
        return (root or clips_dir()) / key[:2] / f"{key}.flac"


def clips_dir() -> Path:
    return paths.datasets_dir() / "_adapt"


def missing_clips(plan: Sequence[Utterance]) -> list[int]:
    """Indexes of the utterances whose clip is not in the cache yet."""
    root = clips_dir()
    return [i for i, u in enumerate(plan) if not u.path(root).is_file()]


def voice_pools(engines: Sequence[str]) -> dict[str, list]:
    """Installed voices by split: "train" and "val" (the val and test voices of `assign_voice_splits`)."""
    from xmodal_core.data.speak import assign_voice_splits
    from xmodal_core.data.tts import available_engines, default_voices

    installed = [e for e in engines if e in available_engines()]
    if not installed:
        raise DatasetError(f"no TTS engine is installed (looked for {', '.join(engines)}): install Debian "
                           "espeak-ng (`make setup` does), then adapt again")
    split = assign_voice_splits(sorted(set(default_voices(installed))))
    out: dict[str, list] = {"train": [], "val": []}
    for v, s in sorted(split.items()):
        out["train" if s == "train" else "val"].append(v)
    if not out["train"] or not out["val"]:
        raise DatasetError("too few TTS voices to hold some out for validation: install espeak-ng")
    return out


def _by_engine(voices: Sequence, cfg: SpeechPlanConfig) -> dict[str, list]:
    return {e: [v for v in voices if v.engine == e] for e in cfg.engines}


def _request(form: str, by_engine: dict[str, list], cfg: SpeechPlanConfig, rng: np.random.Generator):
    from xmodal_core.data.tts import SpeechRequest

    present = [(e, w) for e, w in zip(cfg.engines, cfg.engine_share) if by_engine.get(e)]
    total = sum(w for _, w in present)
    r, engine = rng.random() * total, present[-1][0]
    for e, w in present:
        if r < w:
            engine = e
            break
        r -= w
    pool = by_engine[engine]
    voice = pool[int(rng.integers(len(pool)))]
    if engine == "espeak-ng":
        return SpeechRequest(form, voice, rate=round(float(rng.uniform(*cfg.espeak_rate)), 3),
                             pitch=int(rng.integers(cfg.espeak_pitch[0], cfg.espeak_pitch[1] + 1)))
    return SpeechRequest(form, voice, rate=round(float(rng.uniform(*cfg.recorded_rate)), 3))


def plan_utterances(entries: Sequence[Entry], cfg: SpeechPlanConfig, voices: dict[str, list] | None = None,
                    *, voices_for: Callable[[Entry], int] | None = None) -> list[Utterance]:
    """Every clip of the vocabulary, deterministic in (seed, entry, n).

    `voices_for(entry)` overrides `cfg.voices` per entry (e.g. more voices for digit words).
    The n-th utterance of an entry is the same whatever else is in the vocabulary.
    """
    voices = voices or voice_pools(cfg.engines)
    pools = {split: _by_engine(vs, cfg) for split, vs in voices.items()}
    plan = []
    for e in entries:
        n_train = voices_for(e) if voices_for else cfg.voices
        for split, count in (("train", n_train), ("val", cfg.val_voices)):
            for n in range(count):
                rng = _rng("adapt-utterance", cfg.seed, split, e.text, n)
                form = e.forms[int(rng.integers(len(e.forms)))]
                req = _request(form, pools[split], cfg, rng)
                plan.append(Utterance(e.text, form, split, n, req, draw_augmentation(rng, cfg.clean_share)))
    return plan


def render_clips(plan: Sequence[Utterance], *, workers: int = 2, progress: Callable[[str, int, int], None] | None = None,
                 todo: Sequence[int] | None = None) -> tuple[list[Path | None], dict[int, str]]:
    """Synthesise and augment every utterance not yet in the clip cache (one FLAC per clip key).

    `todo`: the indexes `missing_clips(plan)` gave (saves looking again).
    Returns one FLAC path per utterance (None where synthesis failed) and {index: reason}.
    """
    import soundfile as sf

    from xmodal_core.data.tts import synthesize_samples
    from xmodal_core.errors import InputError

    root = clips_dir()
    todo = missing_clips(plan) if todo is None else list(todo)
    reasons: dict[int, str] = {}

    def work(i: int) -> None:
        u = plan[i]
        try:
            samples = synthesize_samples(u.request)
        except (InputError, DatasetError, OSError) as exc:  # InputError covers AudioError
            reasons[i] = str(exc)
            return
        x = apply_augmentation(samples, u.augmentation, _rng("adapt-augment", u.key()))
        with atomic_path(u.path(root)) as tmp:
            sf.write(tmp, x, SAMPLE_RATE, subtype="PCM_16", format="FLAC")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, _ in enumerate(pool.map(work, todo), 1):
            if progress and (n % 50 == 0 or n == len(todo)):
                progress("speak", n, len(todo))
    out = [None if i in reasons else u.path(root) for i, u in enumerate(plan)]
    return out, reasons
