"""The default model's recipe: its names, its config dataclasses (`assets/configs/xmodal-default.json`)
and the digest that identifies a trained model.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from xmodal_core import paths
from xmodal_core.errors import InputError

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
# AlignConfig settings newer than the recipe: unset, they are not part of its digest.
LATER_SETTINGS = ("hidden_dim", "init_from", "vocabulary", "freeze_body", "eval_every")
# The one FSDD speaker whose results were looked at while choosing settings (docs/RESULTS_issue5.md);
# every FSDD number is also reported without him.
FSDD_DEV_SPEAKER = "fsdd:nicolas"


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
        data = self.to_dict()
        for run in ("speech", "image"):  # settings added later leave the digest as it was while unset
            for name in LATER_SETTINGS:
                if not data[run].get(name):
                    data[run].pop(name, None)
        blob = json.dumps([RECIPE_VERSION, data], sort_keys=True, default=list)
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
