"""The default model's synthetic speech training set: texts, voice pools, the plan, augmentation,
and the build (synthesis + augmented copies + manifest).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trainers.default_model.recipe import (
    RECIPE_VERSION,
    DefaultModelConfig,
    SpeechDataConfig,
)
from xmodal_core.adapt.speech import trim_silence
from xmodal_core.errors import DatasetError
from xmodal_core.fsio import atomic_path
from xmodal_core.progress import Progress
from xmodal_core.progress import stage_callback as _stage

NUMBER_WORDS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "oh", "nought", "dozen", "half", "number", "digit", "count",
)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("\x00".join(str(p) for p in parts).encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def speech_texts() -> dict[str, list[str]]:
    """Texts to speak, by kind: digit words, other number words, Tux Paint training captions
    (never the held-out fifth's), emoji names."""
    from xmodal_core.data import load_manifest
    from xmodal_core.data.builders import DIGIT_WORDS

    captions = sorted({r.text for r in load_manifest("tuxpaint", split="train") if r.text})
    emoji = sorted({r.text for r in load_manifest("emoji") if r.text})
    return {"digit": list(DIGIT_WORDS), "number": list(NUMBER_WORDS), "caption": captions, "emoji": emoji}


def voice_pools(engines: Sequence[str]) -> dict[str, list]:
    """Voices by split: every espeak-ng English voice x variant and the flite voices, split so
    that no voice (or recorded person) is in both; val and test voices form the validation pool."""
    from xmodal_core.data.speak import assign_voice_splits
    from xmodal_core.data.tts import available_engines, list_voices

    installed = [e for e in engines if e in available_engines()]
    if "espeak-ng" not in installed:
        raise DatasetError("the default model needs espeak-ng for its synthetic speech: "
                           "install Debian espeak-ng (`make setup` does)")
    pool = [v for e in installed for v in list_voices(e)]
    split = assign_voice_splits(sorted(set(pool)))
    out: dict[str, list] = {"train": [], "val": []}
    for v, s in sorted(split.items()):
        out["train" if s == "train" else "val"].append(v)
    return out


def _request(text: str, voices: Sequence, cfg: SpeechDataConfig, rng: np.random.Generator):
    """One utterance: a random voice (flite with probability flite_share), rate and pitch."""
    from xmodal_core.data.tts import SpeechRequest

    flite = [v for v in voices if v.engine == "flite"]
    espeak = [v for v in voices if v.engine == "espeak-ng"]
    if flite and (not espeak or rng.random() < cfg.flite_share):
        voice = flite[int(rng.integers(len(flite)))]
        return SpeechRequest(text, voice, rate=round(float(rng.uniform(*cfg.flite_rate)), 3))
    voice = espeak[int(rng.integers(len(espeak)))]
    return SpeechRequest(text, voice, rate=round(float(rng.uniform(*cfg.espeak_rate)), 3),
                         pitch=int(rng.integers(cfg.espeak_pitch[0], cfg.espeak_pitch[1] + 1)))


@dataclass(frozen=True)
class PlannedUtterance:
    request: Any  # SpeechRequest
    kind: str  # digit | number | caption | emoji
    split: str
    copies: tuple[str, ...]
    index: int = 0  # n-th utterance of this text and split (two may draw the same voice and rate)


def plan_speech_set(cfg: DefaultModelConfig, texts: Mapping[str, Sequence[str]] | None = None,
                    voices: Mapping[str, Sequence] | None = None) -> list[PlannedUtterance]:
    """Every utterance of the speech set, deterministic in the config's seed."""
    d = cfg.speech_data
    texts = texts or speech_texts()
    voices = voices or voice_pools(d.engines)
    per_kind = {"digit": d.digit_voices, "number": d.word_voices, "caption": d.caption_voices, "emoji": d.caption_voices}
    plan = []
    for kind, items in texts.items():
        copies = d.word_copies if kind in ("digit", "number") else d.caption_copies
        for text in items:
            rng = _rng("speech-plan", cfg.seed, kind, text)
            for n in range(per_kind[kind]):
                plan.append(PlannedUtterance(_request(text, voices["train"], d, rng), kind, "train", copies, n))
            if kind in ("digit", "number") and voices["val"]:
                for n in range(d.val_voices_per_word):
                    plan.append(PlannedUtterance(_request(text, voices["val"], d, rng), kind, "val", ("noise",), n))
    return plan


def augment(samples: np.ndarray, copy: str, cfg: SpeechDataConfig, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of a 16 kHz clip: "clean" (as is), "noise" (speed + white noise) or
    "crop" (trim, cut start/end, then speed + noise). Returns float32 in [-1, 1]."""
    from scipy.signal import resample_poly

    x = np.asarray(samples, dtype=np.float32)
    if copy == "clean":
        return x
    if copy == "crop":
        x = trim_silence(x)
        n = len(x)
        start = int(n * rng.uniform(*cfg.crop_start))
        end = int(n * rng.uniform(*cfg.crop_end)) if rng.random() < cfg.crop_p else n
        x = x[start:max(end, start + 1600)]  # at least 0.1 s
    factor = int(round(100 * rng.uniform(*cfg.speed)))
    if factor != 100:  # resampling by 100/factor: faster and higher for factor > 100, like sox `speed`
        x = resample_poly(x, 100, factor).astype(np.float32)
    snr = rng.uniform(*cfg.snr_db)
    power = float((x ** 2).mean())
    if power > 0:
        x = x + rng.normal(0.0, math.sqrt(power / 10 ** (snr / 10)), len(x)).astype(np.float32)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def build_speech_set(cfg: DefaultModelConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Synthesise, augment and write the speech set `cfg.speech.dataset` (manifest + FLAC files).

    Cached: speech synthesis by request (`datasets/_tts`), augmented copies by file name; a
    rebuild with the same config writes the same manifest. Returns a summary dict.
    """
    import soundfile as sf

    from xmodal_core.audio import load_audio
    from xmodal_core.data.builders import class_word_overlap, overlap_notes
    from xmodal_core.data.manifest import (
        BuildSummary,
        Record,
        count_records,
        dataset_dir,
        write_manifest,
        write_summary,
    )
    from xmodal_core.data.tts import synthesize_report

    start = time.perf_counter()
    d = cfg.speech_data
    plan = plan_speech_set(cfg)
    wavs, errors = synthesize_report([p.request for p in plan], progress=_stage(progress, "speak"))
    out_dir = dataset_dir(cfg.speech.dataset)
    media = out_dir / f"audio-{RECIPE_VERSION}"
    jobs = []
    for p, wav in zip(plan, wavs):
        if wav is None:
            continue
        for i, copy in enumerate(p.copies):
            key = hashlib.sha1(json.dumps([wav.stem, p.split, p.index, copy, i, cfg.seed, asdict(d)], sort_keys=True,
                                          default=list).encode()).hexdigest()
            jobs.append((p, wav, copy, i, media / key[:2] / f"{key}.flac"))

    def work(job) -> Path:
        p, wav, copy, i, out = job
        if out.is_file() and out.stat().st_size > 0:
            return out
        samples = load_audio(wav, allow_silent=True).samples
        x = augment(samples, copy, d, _rng("augment", cfg.seed, wav.stem, p.split, p.index, copy, i))
        with atomic_path(out) as tmp:
            sf.write(tmp, x, 16_000, subtype="PCM_16", format="FLAC")
        return out

    tick = _stage(progress, "augment speech")
    outs = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for n, out in enumerate(pool.map(work, jobs), 1):
            outs.append(out)
            if tick and (n % 50 == 0 or n == len(jobs)):
                tick(n, len(jobs))
    records = []
    for (p, wav, copy, i, _), out in zip(jobs, outs):
        req = p.request
        text = req.text
        records.append(Record(
            id=f"{p.kind}:{text}@{req.voice.id}:{p.split}{p.index}#{copy}{i}", audio=str(out), text=text,
            label=text if p.kind in ("digit", "number") else None, group=f"{p.kind}:{text}", speaker=req.voice.id,
            source=f"tts:{req.voice.engine}+{copy}", split=p.split, license="synthetic (espeak-ng / flite, GPL)"))
    summary = BuildSummary(name=cfg.speech.dataset)
    for i, msg in list(errors.items())[:50]:
        summary.skip(f"{plan[i].request.voice.id}: {plan[i].request.text[:40]}", f"synthesis failed: {msg}")
    summary.notes.append("synthetic speech only: no human recording is in this set; voices of the val split "
                         "speak nowhere in train")
    summary.notes += overlap_notes(class_word_overlap(records), "spoken training texts")
    summary.records = len(records)
    summary.counts = count_records(records)
    summary.extra = {"utterances": len(plan), "synthesis_failures": len(errors), "recipe": RECIPE_VERSION}
    summary.path = str(write_manifest(out_dir / "manifest.jsonl", records))
    summary.seconds = round(time.perf_counter() - start, 2)
    write_summary(out_dir, summary)
    return summary.to_dict()
