"""The default model, `xmodal-default`: its data, features, training, evaluation and registration.

No package ships image-text (CLIP) weights, so xmodal builds its shared space itself: the MiniLM
text tower is locked and has no head (its space *is* the shared space), and two small heads are
trained into it with CWCL on cached frozen features:

- speech: `whisper-tiny.en-tail` (Whisper tiny.en encoder, 0.6 s of silence appended, mean over
  the real frames) -> MLP head, on synthetic speech only (espeak-ng and flite voices with random
  rate and pitch, then speed / noise / crop augmentation): digit and number words, the Tux Paint
  training captions and the emoji names. Human speech (FSDD, Tux Paint `*_desc.ogg`) is never
  trained on; it is what the model is evaluated on.
- image: `efficientnet-lite0` -> MLP head, on the Tux Paint training stamps (less a dev tenth of
  their groups, which picks the epoch) and every emoji, each with its caption.

Everything is set by the committed config `assets/configs/xmodal-default.json`.
`ensure_default_model()` returns the trained model, building what is missing first (data sets,
speech synthesis, features, the two runs, their evaluation), each stage with progress, and
registers the runs (`xmodal-default-speech`, `xmodal-default-image`) in the run store with their
evaluations; `spaces.load_selection` then picks them up as the model in use. A second call with
the same config is a lookup. `python -m trainers.default_model` does the same from a shell.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.errors import DatasetError, InputError, StoreError, XmodalError

NAME = "xmodal-default"
CONFIG_PATH = paths.ASSETS / "configs" / f"{NAME}.json"
SPEECH_RUN = f"{NAME}-speech"
IMAGE_RUN = f"{NAME}-image"
MARKER = f"{NAME}.json"  # under paths.home(): which runs are the default model, for which config
# Bump when the data recipe below changes in a way the config does not show (invalidates the model).
RECIPE_VERSION = "d1"
SOURCE_SETS = ("tuxpaint", "emoji", "glyphs", "fsdd")
EVALUATION_ONLY = ("fsdd",)  # the model trains without these; their evaluation is skipped when absent
# Tux Paint: the held-out fifth of the stamps (by group; the manifest's val and test splits).
HELDOUT_SPLITS = ("val", "test")
# The one FSDD speaker whose results were looked at while choosing settings (docs/RESULTS_issue5.md);
# every FSDD number is also reported without him.
FSDD_DEV_SPEAKER = "fsdd:nicolas"
NUMBER_WORDS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "million",
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "oh", "nought", "dozen", "half", "number", "digit", "count",
)

# progress(stage, done, total): one call per step of a stage ("speak", "features speech", ...).
Progress = Callable[[str, int, int], None]


# =============================================================================== config

@dataclass
class SpeechDataConfig:
    """How the synthetic speech training set is made (all ranges are uniform draws).

    digit_voices / word_voices / caption_voices: utterances (each a random voice, rate and pitch)
    per digit word, per other number word, per caption or emoji name. val_voices_per_word:
    utterances per digit and number word by held-out voices (the validation split).
    flite_share: fraction of utterances by flite voices (the rest espeak-ng English voice x variant).
    speed: resampling factor (tempo and pitch together); snr_db: white noise; crop_*: a "crop" copy
    first trims silence, then cuts the start by a fraction in crop_start and, with probability
    crop_p, keeps a fraction in crop_end of what is left (real recordings are often cut tight).
    word_copies / caption_copies: augmented copies per utterance ("noise" = speed + noise,
    "crop" = crop + speed + noise).
    """

    digit_voices: int = 150
    word_voices: int = 20
    caption_voices: int = 1
    val_voices_per_word: int = 6
    engines: tuple[str, ...] = ("espeak-ng", "flite")
    flite_share: float = 0.15
    espeak_rate: tuple[float, float] = (0.65, 1.25)
    espeak_pitch: tuple[int, int] = (10, 90)
    flite_rate: tuple[float, float] = (0.75, 1.3)
    speed: tuple[float, float] = (0.85, 1.15)
    snr_db: tuple[float, float] = (15.0, 40.0)
    crop_start: tuple[float, float] = (0.0, 0.15)
    crop_end: tuple[float, float] = (0.5, 1.0)
    crop_p: float = 0.5
    word_copies: tuple[str, ...] = ("noise", "crop")
    caption_copies: tuple[str, ...] = ("noise",)

    def __post_init__(self) -> None:
        for name in ("engines", "word_copies", "caption_copies"):
            setattr(self, name, tuple(getattr(self, name)))
        for name in ("espeak_rate", "espeak_pitch", "flite_rate", "speed", "snr_db", "crop_start", "crop_end"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise InputError(f"speech_data.{name} must be [low, high]; got {[lo, hi]}")
            setattr(self, name, (lo, hi))
        bad = sorted(set(self.word_copies + self.caption_copies) - {"noise", "crop", "clean"})
        if bad:
            raise InputError(f"speech_data copies must be noise, crop or clean; got {bad}")
        if min(self.digit_voices, self.word_voices, self.caption_voices, self.val_voices_per_word) < 0:
            raise InputError("speech_data voice counts must not be negative")


@dataclass
class ImageDataConfig:
    """dev_fraction: share of the Tux Paint training groups kept out to pick the epoch;
    emoji: add every emoji image with its name; glyphs: add the `glyphs` set (letters, digits and
    arithmetic signs typeset in the installed fonts); mirror: add a left-right mirrored copy of
    every training image of these sources ("tuxpaint", "emoji"), except Tux Paint's symbols and
    road signs, whose writing a mirror would turn into other letters."""

    dev_fraction: float = 0.1
    emoji: bool = True
    glyphs: bool = False
    mirror: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.mirror = tuple(self.mirror)
        bad = sorted(set(self.mirror) - set(MIRROR_SOURCES))
        if bad:
            raise InputError(f"image_data.mirror takes {', '.join(MIRROR_SOURCES)}; got {bad}")
        if not 0.0 <= self.dev_fraction < 1.0:
            raise InputError(f"image_data.dev_fraction must be in [0, 1); got {self.dev_fraction}")


MIRROR_SOURCES = ("tuxpaint", "emoji")
# Tux Paint categories whose stamps carry writing or a handed shape (letters, signs): never mirrored.
NO_MIRROR = ("tuxpaint:symbols/", "tuxpaint:town/roadsigns/")


@dataclass
class DefaultModelConfig:
    """The committed recipe: `assets/configs/xmodal-default.json`."""

    name: str
    seed: int
    speech_data: SpeechDataConfig
    image_data: ImageDataConfig
    speech: Any  # trainers.align.AlignConfig
    image: Any

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DefaultModelConfig":
        from xmodal_core.models.aligned import AlignConfig
        from xmodal_core.models.config import config_from_dict

        known = {"name", "seed", "speech_data", "image_data", "speech", "image"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown default-model setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        speech = AlignConfig.from_dict(data.get("speech", {}))
        image = AlignConfig.from_dict(data.get("image", {}))
        if set(speech.towers) != {"speech", "text"} or set(image.towers) != {"image", "text"}:
            raise InputError("the default model's speech run must align speech and text, its image run image and text")
        return cls(name=str(data.get("name", NAME)), seed=int(data.get("seed", 0)),
                   speech_data=config_from_dict(SpeechDataConfig, data.get("speech_data", {})),
                   image_data=config_from_dict(ImageDataConfig, data.get("image_data", {})),
                   speech=speech, image=image)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "speech_data": asdict(self.speech_data),
                "image_data": asdict(self.image_data), "speech": self.speech.to_dict(), "image": self.image.to_dict()}

    def digest(self) -> str:
        """Identity of the recipe: a changed config (or RECIPE_VERSION) means a new model."""
        blob = json.dumps([RECIPE_VERSION, self.to_dict()], sort_keys=True, default=list)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def load_config(path: str | Path | None = None) -> DefaultModelConfig:
    """The default model's config from `path` (default: the committed one)."""
    path = Path(path) if path else CONFIG_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the default-model config {path}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from None
    return DefaultModelConfig.from_dict(data)


# =============================================================================== progress

def console_progress(quiet: bool = False) -> Progress:
    """A `Progress` that draws one tqdm bar per stage on stderr."""
    from tqdm import tqdm

    state: dict[str, Any] = {"stage": None, "bar": None}

    def update(stage: str, done: int, total: int) -> None:
        if quiet:
            return
        if stage != state["stage"]:
            if state["bar"] is not None:
                state["bar"].close()
            state["stage"] = stage
            state["bar"] = tqdm(total=total or None, desc=stage, file=sys.stderr, dynamic_ncols=True, leave=True)
        bar = state["bar"]
        if total and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))

    return update


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """A (done, total) callback for one stage, or None."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, int(done), int(total))


# =============================================================================== data: sources

def build_sources(progress: Progress | None = None) -> dict[str, str]:
    """Build the real data sets the default model trains or is evaluated on, if missing.

    Returns:
        set name -> why it is unavailable, for the evaluation-only sets that could not be built
        (FSDD lives outside the repository, in ../shared/data); the model trains without them.
    """
    from xmodal_core.data import build_dataset, load_manifest

    missing: dict[str, str] = {}
    for name in SOURCE_SETS:
        try:
            load_manifest(name)
        except DatasetError:
            try:
                build_dataset(name, progress=_stage(progress, f"build {name}"))
            except DatasetError as exc:
                if name not in EVALUATION_ONLY:
                    raise
                missing[name] = str(exc)
    return missing


def _have(name: str) -> bool:
    from xmodal_core.data.manifest import manifest_path

    return manifest_path(name).is_file()


def heldout_tuxpaint() -> list:
    """Tux Paint records of the held-out fifth (val + test groups): images, captions, recordings."""
    from xmodal_core.data import load_manifest

    return [r for r in load_manifest("tuxpaint") if r.split in HELDOUT_SPLITS]


# =============================================================================== data: speech

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


def _trim(samples: np.ndarray, threshold_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing 10-ms frames quieter than `threshold_db` below the loudest frame."""
    hop = 160
    n = len(samples) // hop
    if n < 3:
        return samples
    energy = np.sqrt((samples[: n * hop].reshape(n, hop) ** 2).mean(axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(energy / energy.max()) > threshold_db)
    return samples[loud[0] * hop:(loud[-1] + 1) * hop] if len(loud) else samples


def augment(samples: np.ndarray, copy: str, cfg: SpeechDataConfig, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of a 16 kHz clip: "clean" (as is), "noise" (speed + white noise) or
    "crop" (trim, cut start/end, then speed + noise). Returns float32 in [-1, 1]."""
    from scipy.signal import resample_poly

    x = np.asarray(samples, dtype=np.float32)
    if copy == "clean":
        return x
    if copy == "crop":
        x = _trim(x)
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
    from xmodal_core.data.manifest import (BuildSummary, Record, count_records, dataset_dir, write_manifest,
                                           write_summary)
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
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.flac")
        sf.write(tmp, x, 16_000, subtype="PCM_16", format="FLAC")
        os.replace(tmp, out)
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


# =============================================================================== data: images

def build_image_set(cfg: DefaultModelConfig) -> dict[str, Any]:
    """The image-text training set `cfg.image.dataset`: Tux Paint training stamps (a dev tenth of
    their groups as "val"), every emoji, the typeset glyphs, and mirrored copies of the training
    images of `cfg.image_data.mirror` (same caption and group). Source media are not copied; the
    mirrored ones are written once under the set's folder."""
    from dataclasses import replace

    from xmodal_core.data import load_manifest
    from xmodal_core.data.manifest import BuildSummary, count_records, dataset_dir, hash_unit, write_manifest, write_summary

    records = []
    for r in load_manifest("tuxpaint", split="train"):
        if r.image and r.text:
            dev = hash_unit(r.group, f"{NAME}-dev-{cfg.seed}") < cfg.image_data.dev_fraction
            records.append(replace(r, split="val" if dev else "train"))
    if cfg.image_data.emoji:
        records += [replace(r, split="train") for r in load_manifest("emoji") if r.image and r.text]
    if cfg.image_data.glyphs:
        records += [replace(r, split="train") for r in load_manifest("glyphs") if r.image and r.text]
    out_dir = dataset_dir(cfg.image.dataset)
    mirrored = [r for r in records if r.split == "train" and r.id.split(":")[0] in cfg.image_data.mirror
                and not r.id.startswith(NO_MIRROR)]
    records += [replace(r, id=f"{r.id}#mirror", image=str(mirror_image(Path(r.image), out_dir / "media-mirror")))
                for r in mirrored]
    summary = BuildSummary(name=cfg.image.dataset, records=len(records), counts=count_records(records))
    summary.notes.append("Tux Paint held-out fifth (its val and test splits) is not in this set; "
                         "val here is a dev tenth of the Tux Paint training groups")
    if mirrored:
        summary.notes.append(f"{len(mirrored)} training images also appear mirrored left-right ({', '.join(cfg.image_data.mirror)})")
    summary.path = str(write_manifest(out_dir / "manifest.jsonl", records))
    write_summary(out_dir, summary)
    return summary.to_dict()


def mirror_image(src: Path, out_dir: Path) -> Path:
    """A left-right mirrored copy of `src` under `out_dir`, named by the source's bytes (so an
    unchanged source is not mirrored twice, and a changed one gets a new file)."""
    from PIL import Image, ImageOps

    from xmodal_core.data.render import save_png

    data = src.read_bytes()
    out = out_dir / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
    if not out.is_file():
        with Image.open(src) as img:
            img.load()
            save_png(ImageOps.mirror(img.convert("RGBA")), out)
    return out


# =============================================================================== features

def extract_features(cfg: DefaultModelConfig, progress: Progress | None = None) -> None:
    """Fill the frozen-feature cache for both training sets and the evaluation sets."""
    from xmodal_core.data import FeatureCache, load_manifest

    speech_enc, image_enc = cfg.speech.encoders["speech"], cfg.image.encoders["image"]
    text_enc = cfg.speech.encoders["text"]
    speech_records = [r for r in load_manifest(cfg.speech.dataset) if r.audio]
    fsdd = [r for r in load_manifest("fsdd") if r.audio] if _have("fsdd") else []
    heldout = heldout_tuxpaint()
    image_records = [r for r in load_manifest(cfg.image.dataset) if r.image]
    jobs = [
        (speech_enc, speech_records + fsdd + [r for r in heldout if r.audio], "features speech"),
        (image_enc, image_records + [r for r in heldout if r.image], "features images"),
        (text_enc, [r for r in speech_records + image_records + heldout if r.text], "features text"),
    ]
    for encoder, records, stage in jobs:
        cache = FeatureCache(encoder)
        cache.extract(records, progress=_stage(progress, stage))
        cache.compact()


# =============================================================================== training

def train_align_run(name: str, align_cfg: Any, progress: Progress | None = None, store=None):
    """Create an align run in the store and train it in this process; returns the finished `Run`.

    Raises:
        XmodalError: the run failed (the message has its last error line) or was cancelled.
    """
    from trainers.align import train_run
    from xmodal_core.runner import execute, last_error_line
    from xmodal_core.store import Store

    import torch

    store = store or Store()
    run_id = store.create_run(name, "align", align_cfg.to_dict())
    stage = f"train {name}"
    on_log = (lambda step, total, metrics: progress(stage, step, total or 0)) if progress else None
    threads = torch.get_num_threads()
    if align_cfg.locked == "both":  # heads only: small matmuls, one thread is as fast and never oversubscribes
        torch.set_num_threads(1)
    try:
        finished = execute(run_id, train_run, store, on_log=on_log)
    finally:
        torch.set_num_threads(threads)
    if finished.status != "completed":
        raise XmodalError(f"training run {run_id} ({name}) {finished.status}: {last_error_line(finished)} "
                          f"(details: `xmodal runs --show {run_id}`)")
    return finished


# =============================================================================== evaluation

def _features(encoder: str, records: Sequence, modality: str) -> "Any":
    import torch

    from xmodal_core.data import FeatureCache

    return torch.as_tensor(np.asarray(FeatureCache(encoder).get(records, modality)), dtype=torch.float32)


def embed_records(aligned, records: Sequence, modality: str):
    """(N, d) shared-space embeddings of manifest records through a trained run (cached features
    for its locked towers). Returns a torch tensor."""
    import torch

    cfg = aligned.config
    if modality in aligned.model.towers:
        return torch.as_tensor(aligned.embed(modality, [r.item(modality) for r in records]))
    with torch.no_grad():
        return aligned.model.embed(modality, _features(cfg.encoders[modality], records, modality)).float()


def fsdd_zeroshot(aligned, templates: Sequence[str] | str = ("{}",), records: Sequence | None = None) -> dict[str, Any]:
    """FSDD zero-shot: the 10 bare digit words through `templates` (default the k = 1 template
    "{}"), argmax cosine. Returns top1/top5/n, top-1 per speaker, and top-1 without the dev speaker."""
    import torch

    from xmodal_core.models.aligned import text_encoder_fn
    from xmodal_core.data import load_manifest
    from xmodal_core.data.builders import DIGIT_WORDS
    from xmodal_core.metrics import topk_accuracy
    from xmodal_core.zeroshot import class_embeddings, classify, load_templates

    records = list(records) if records is not None else [r for r in load_manifest("fsdd") if r.audio]
    if not records:
        raise DatasetError("no FSDD recordings to evaluate on: build the set (`xmodal data build fsdd`)")
    emb = embed_records(aligned, records, "speech")
    templates = load_templates(templates if isinstance(templates, str) else list(templates))
    classes = class_embeddings(DIGIT_WORDS, templates, text_encoder_fn(aligned.model, aligned.config))
    logits = classify(emb, classes)
    labels = torch.tensor([DIGIT_WORDS.index(r.label) for r in records])
    acc = topk_accuracy(logits, labels, ks=(1, 5))
    correct = (logits.argmax(1) == labels).numpy()
    return {"top1": float(acc["top1"]), "top5": float(acc["top5"]), "n": len(records),
            **per_speaker_top1(correct, records)}


def per_speaker_top1(correct: np.ndarray, records: Sequence) -> dict[str, float]:
    """`top1_<speaker>` for each FSDD speaker, and `top1_without_dev_speaker`."""
    speakers = np.array([r.speaker or "" for r in records])
    out = {f"top1_{s.split(':')[-1]}": float(correct[speakers == s].mean()) for s in sorted(set(speakers))}
    others = speakers != FSDD_DEV_SPEAKER
    if others.any() and not others.all():
        out["top1_without_dev_speaker"] = float(correct[others].mean())
    return out


def _retrieval(queries, gallery, positives) -> dict[str, float]:
    from xmodal_core.metrics import recall_at_k

    r = recall_at_k(queries @ gallery.T, positives, (1, 5, 10))
    return {f"r@{k}": float(r[f"R@{k}"]) for k in (1, 5, 10)}


def tuxpaint_gallery(records: Sequence | None = None):
    """The held-out Tux Paint gallery: (image records, one caption record per group, positives
    (queries x images) bool tensor)."""
    import torch

    records = list(records) if records is not None else heldout_tuxpaint()
    images = [r for r in records if r.image]
    seen, captions = set(), []
    for r in images:
        if r.group not in seen:
            seen.add(r.group)
            captions.append(r)
    groups = np.array([r.group for r in images])
    positives = torch.as_tensor(np.array([r.group for r in captions])[:, None] == groups[None, :])
    return images, captions, positives


def tuxpaint_caption_to_image(image_aligned) -> dict[str, Any]:
    """Caption -> image retrieval over the held-out fifth of Tux Paint: R@1/5/10, queries, gallery."""
    images, captions, positives = tuxpaint_gallery()
    gallery = embed_records(image_aligned, images, "image")
    queries = embed_records(image_aligned, captions, "text")
    return {**_retrieval(queries, gallery, positives), "queries": len(captions), "gallery": len(images)}


def tuxpaint_speech_to_image(speech_aligned, image_aligned) -> dict[str, Any]:
    """People's spoken descriptions (`*_desc.ogg`) -> held-out images, three ways through the same
    image head: the speech head ("model"), Whisper ASR -> MiniLM ("cascade"), and the written
    caption ("text", an upper reference)."""
    import torch

    from xmodal_core import spaces
    from xmodal_core.registry import get_encoder

    records = heldout_tuxpaint()
    images, _, _ = tuxpaint_gallery(records)
    speech = [r for r in records if r.audio]
    if not speech:
        return {}
    groups = np.array([r.group for r in images])
    positives = torch.as_tensor(np.array([r.group for r in speech])[:, None] == groups[None, :])
    gallery = embed_records(image_aligned, images, "image")
    out: dict[str, Any] = {"queries": len(speech), "gallery": len(images)}
    model_q = embed_records(speech_aligned, speech, "speech")
    out.update({f"model_{k}": v for k, v in _retrieval(model_q, gallery, positives).items()})
    transcripts = spaces.transcribe([r.audio for r in speech])
    cascade_q = torch.as_tensor(get_encoder("minilm").encode(transcripts))
    out.update({f"cascade_{k}": v for k, v in _retrieval(cascade_q, gallery, positives).items()})
    text_q = embed_records(image_aligned, speech, "text")
    out.update({f"text_{k}": v for k, v in _retrieval(text_q, gallery, positives).items()})
    return out


def speech_latency_ms(speech_aligned, n: int = 30) -> float:
    """Median milliseconds to embed one FSDD clip, from its file (decode, tower, head)."""
    from xmodal_core.data import load_manifest

    records = [r for r in load_manifest("fsdd") if r.audio][:: max(1, 2000 // n)][:n]
    speech_aligned.embed_speech([records[0].audio])  # warm-up
    times = []
    for r in records:
        t0 = time.perf_counter()
        speech_aligned.embed_speech([r.audio])
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def evaluate_default(speech_run: int, image_run: int, store=None) -> dict[str, dict[str, Any]]:
    """Measure the default model on the targets and store the evaluations with the runs."""
    from xmodal_core.models.aligned import load_aligned
    from xmodal_core.store import Store

    store = store or Store()
    speech, image = load_aligned(speech_run), load_aligned(image_run)
    results = {
        "fsdd_zeroshot": fsdd_zeroshot(speech) if _have("fsdd") else {
            "skipped": "FSDD is not built here (its recordings live in ../shared/data/fsdd); "
                       "`xmodal data build fsdd --source DIR`, then `xmodal default-model --force`"},
        "tuxpaint_caption_to_image": tuxpaint_caption_to_image(image),
        "tuxpaint_speech_to_image": tuxpaint_speech_to_image(speech, image),
    }
    if "skipped" not in results["fsdd_zeroshot"]:
        results["fsdd_zeroshot"]["ms_per_query"] = speech_latency_ms(speech)
        store.add_evaluation(speech_run, "fsdd", "test",
                             {f"zeroshot_{k}": float(v) for k, v in results["fsdd_zeroshot"].items()})
    store.add_evaluation(image_run, "tuxpaint", "heldout", {f"caption2image_{k}": float(v) for k, v in
                                                            results["tuxpaint_caption_to_image"].items()})
    if results["tuxpaint_speech_to_image"]:
        for run in (speech_run, image_run):
            store.add_evaluation(run, "tuxpaint-desc", "test", {f"speech2image_{k}": float(v) for k, v in
                                                                 results["tuxpaint_speech_to_image"].items()})
    return results


# =============================================================================== the model

@dataclass
class DefaultModel:
    """The trained default model: its two runs (ids and folders) and its measured results."""

    name: str
    config_digest: str
    speech_run: int
    image_run: int
    speech_dir: str
    image_dir: str
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    created_at: float = 0.0

    @property
    def run_ids(self) -> tuple[int, int]:
        return self.speech_run, self.image_run

    def for_modality(self, modality: str) -> int:
        """The run that embeds `modality` ("speech" or "image")."""
        if modality == "speech":
            return self.speech_run
        if modality == "image":
            return self.image_run
        raise InputError(f"the default model has a speech run and an image run; {modality!r} is neither")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _marker_path() -> Path:
    return paths.home() / MARKER


def find_default_model(config: DefaultModelConfig | None = None, store=None, *,
                       any_config: bool = False) -> DefaultModel | None:
    """The trained default model for `config` (default: the committed one), or None when it is
    missing, was trained from another config (unless `any_config`: then whatever this home
    registered as the default model), or its runs or heads are gone."""
    from xmodal_core.runner import run_dir
    from xmodal_core.store import Store

    config = config or load_config()
    try:
        data = json.loads(_marker_path().read_text(encoding="utf-8"))
        model = DefaultModel(**data)
    except (OSError, ValueError, TypeError):
        return None
    if not any_config and model.config_digest != config.digest():
        return None
    store = store or Store()
    for run_id in model.run_ids:
        try:
            run = store.get_run(run_id)
        except StoreError:
            return None
        if run.status != "completed" or not (run_dir(run_id) / "heads.safetensors").is_file():
            return None
    return model


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One process at a time builds the default model (the app, a test, the CLI may all ask)."""
    import fcntl

    path = paths.home() / f".{name}.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_default_model(progress: Progress | None = None, *, config: DefaultModelConfig | str | Path | None = None,
                         force: bool = False) -> DefaultModel:
    """The default model, trained first when missing (or when `force`).

    From a clean `XMODAL_HOME` this builds the Tux Paint, emoji and FSDD sets, synthesises and
    augments the speech set, extracts features, trains the speech and image runs, evaluates them
    and registers them; about 10-15 minutes on 2 CPU cores (synthesis and features are cached,
    so a retrain with another config is faster). With the model present it is a lookup.

    Args:
        progress: callable(stage, done, total), e.g. `console_progress()`; None for silence.
        config: a `DefaultModelConfig` or a path to one (default: the committed config).
        force: train again even when a model for this config exists.

    Returns:
        The `DefaultModel` (run ids, run folders, evaluation results, seconds per stage).
    """
    if not isinstance(config, DefaultModelConfig):
        config = load_config(config)
    if not force:
        found = find_default_model(config)
        if found is not None:
            return found
    with _exclusive(config.name):
        if not force:
            found = find_default_model(config)  # another process may have trained it meanwhile
            if found is not None:
                return found
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[name] = round(now - clock, 2)
            clock = now

        build_sources(progress)
        lap("build data sets")
        build_speech_set(config, progress)
        build_image_set(config)
        lap("speech synthesis + augmentation")
        extract_features(config, progress)
        lap("features")
        speech_run = train_align_run(SPEECH_RUN, config.speech, progress)
        image_run = train_align_run(IMAGE_RUN, config.image, progress)
        lap("training")
        if progress:
            progress("evaluate", 0, 1)
        results = evaluate_default(speech_run.id, image_run.id)
        if progress:
            progress("evaluate", 1, 1)
        lap("evaluation")
        seconds["total"] = round(sum(seconds.values()), 2)
        from xmodal_core.runner import run_dir

        model = DefaultModel(name=config.name, config_digest=config.digest(), speech_run=speech_run.id,
                             image_run=image_run.id, speech_dir=str(run_dir(speech_run.id)),
                             image_dir=str(run_dir(image_run.id)), results=results, seconds=seconds,
                             created_at=time.time())
        tmp = _marker_path().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(model.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(_marker_path())
        return model


def adopt_default_model(source_home: str | Path, config: DefaultModelConfig | None = None) -> DefaultModel:
    """Register the default model trained under another xmodal home in this one: its two run
    folders are copied, the runs and their evaluations recorded in this home's store, and the
    marker written, so this home uses the same weights without training (a second machine
    sharing a home's `runs/`, the browser tests' throwaway homes). A lookup when present.

    Raises:
        InputError: `source_home` has no trained default model for this config.
    """
    import shutil

    from xmodal_core.runner import run_dir
    from xmodal_core.store import Store

    config = config or load_config()
    found = find_default_model(config)
    if found is not None:
        return found
    source_home = Path(source_home).expanduser().resolve()
    try:
        data = json.loads((source_home / MARKER).read_text(encoding="utf-8"))
        source = DefaultModel(**data)
    except (OSError, ValueError, TypeError):
        raise InputError(f"no trained default model under {source_home}: train it there first "
                         f"(XMODAL_HOME={source_home} xmodal default-model)") from None
    if source.config_digest != config.digest():
        raise InputError(f"the default model under {source_home} was trained from another config; "
                         "train it again there (xmodal default-model)")
    source_store = Store(source_home / "xmodal.db", recover=False)
    store = Store()
    with _exclusive(config.name):
        new_ids = []
        for old_id in source.run_ids:
            run = source_store.get_run(old_id)
            new_id = store.create_run(run.name, run.kind, run.config)
            store.start_run(new_id, device=run.device, total_steps=run.total_steps)
            target = run_dir(new_id)
            shutil.copytree(source_home / "runs" / str(old_id), target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("last.pt", "*.tmp"))
            by_split: dict[tuple[str, str], dict[str, float]] = {}
            for e in source_store.evaluations(old_id):
                by_split.setdefault((e.dataset, e.split), {})[e.metric] = e.value
            for (dataset, split), metrics in by_split.items():
                store.add_evaluation(new_id, dataset, split, metrics)
            store.finish_run(new_id, "completed")
            new_ids.append(new_id)
        model = replace(source, speech_run=new_ids[0], image_run=new_ids[1], speech_dir=str(run_dir(new_ids[0])),
                        image_dir=str(run_dir(new_ids[1])))
        tmp = _marker_path().with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(model.to_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(_marker_path())
    source_store.close()
    return model


def require_default_model() -> DefaultModel:
    """The default model this home registered (trained from the committed config or, e.g. in a
    test home, a smaller one); otherwise an InputError saying how to train it."""
    found = find_default_model(any_config=True)
    if found is None:
        raise InputError("the default model (xmodal-default) is not trained yet: run `xmodal default-model` "
                         "(or `make run`, which trains it first; about 15 minutes on 2 CPU cores)")
    return found


# =============================================================================== shell

def format_results(model: DefaultModel) -> str:
    """A few readable lines: the runs and what they measured."""
    r = model.results
    lines = [f"{model.name}: speech run {model.speech_run} ({model.speech_dir}), image run {model.image_run} "
             f"({model.image_dir})"]
    z = r.get("fsdd_zeroshot", {})
    if "skipped" in z:
        lines.append(f"  FSDD zero-shot: not measured: {z['skipped']}")
    elif z:
        lines.append(f"  FSDD zero-shot (10 digit words, template '{{}}', {z.get('n')} clips by 4 people): "
                     f"top-1 {z['top1']:.3f}, top-5 {z['top5']:.3f}; without the dev speaker "
                     f"{z.get('top1_without_dev_speaker', float('nan')):.3f}; {z.get('ms_per_query', 0):.0f} ms/query")
    c = r.get("tuxpaint_caption_to_image", {})
    if c:
        lines.append(f"  Tux Paint caption -> image, held-out fifth ({c['queries']} captions, {c['gallery']} images): "
                     f"R@1 {c['r@1']:.3f}, R@5 {c['r@5']:.3f}, R@10 {c['r@10']:.3f}")
    s = r.get("tuxpaint_speech_to_image", {})
    if s:
        lines.append(f"  Tux Paint spoken description -> image ({s['queries']} recordings): model R@1 {s['model_r@1']:.3f} "
                     f"R@10 {s['model_r@10']:.3f}; cascade R@1 {s['cascade_r@1']:.3f} R@10 {s['cascade_r@10']:.3f}; "
                     f"written caption R@1 {s['text_r@1']:.3f} R@10 {s['text_r@10']:.3f}")
    if model.seconds:
        lines.append("  seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in model.seconds.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainers.default_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="default-model config (default: the committed one)")
    parser.add_argument("--force", action="store_true", help="train again even when the model exists")
    parser.add_argument("--from", dest="adopt_from", metavar="HOME", type=Path,
                        help="copy the default model trained under another xmodal home instead of training")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.adopt_from:
            model = adopt_default_model(args.adopt_from, load_config(args.config))
        else:
            model = ensure_default_model(None if args.quiet else console_progress(), config=args.config,
                                         force=args.force)
    except XmodalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if not args.adopt_from:
            print("(the app starts without the default model: make run SKIP_DEFAULT_MODEL=1)", file=sys.stderr)
        return 2
    print(json.dumps(model.to_dict(), indent=2) if args.json else format_results(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
