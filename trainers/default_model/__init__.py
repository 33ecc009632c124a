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

One module per concern: `recipe` (names, config, digest), `sources` (the real data sets),
`speech_data` (texts, voices, plan, augmentation, the synthetic speech set), `image_data` (the
image-text set, mirroring), `training` (features, the two runs), `evaluation` (the targets,
through `xmodal_core.evaluate`), `registration` (marker, find / ensure / adopt / require, the
lock) and `commands` (`python -m trainers.default_model`, `xmodal default-model`).
"""
from __future__ import annotations

from trainers.default_model import sources
from trainers.default_model.commands import format_results, main
from trainers.default_model.evaluation import (
                                               cached_features,
                                               embed_records,
                                               evaluate_default,
                                               fsdd_records,
                                               fsdd_zeroshot,
                                               speaker_top1,
                                               speech_latency_ms,
                                               tuxpaint_caption_to_image,
                                               tuxpaint_gallery,
                                               tuxpaint_speech_to_image,
)
from trainers.default_model.image_data import build_image_set, mirror_image
from trainers.default_model.recipe import (
                                               CONFIG_PATH,
                                               EVALUATION_ONLY,
                                               FSDD_DEV_SPEAKER,
                                               HELDOUT_SPLITS,
                                               IMAGE_RUN,
                                               MARKER,
                                               MIRROR_SOURCES,
                                               NAME,
                                               NO_MIRROR,
                                               RECIPE_VERSION,
                                               SOURCE_SETS,
                                               SPEECH_RUN,
                                               DefaultModelConfig,
                                               ImageDataConfig,
                                               SpeechDataConfig,
                                               load_config,
)
from trainers.default_model.registration import (
                                               DefaultModel,
                                               adopt_default_model,
                                               ensure_default_model,
                                               find_default_model,
                                               require_default_model,
)
from trainers.default_model.sources import build_sources, have_set, heldout_tuxpaint
from xmodal_core.adapt.speech import trim_silence as _trim  # noqa: F401 - one silence trim for both recipes
from trainers.default_model.speech_data import (
                                               NUMBER_WORDS,
                                               PlannedUtterance,
                                               augment,
                                               build_speech_set,
                                               plan_speech_set,
                                               speech_texts,
                                               voice_pools,
)
from trainers.default_model.training import extract_features, train_align_run
from xmodal_core.errors import DatasetError, InputError, StoreError, XmodalError  # noqa: F401 - as before the split
from xmodal_core.progress import Progress, console_progress

__all__ = [
    "CONFIG_PATH", "EVALUATION_ONLY", "FSDD_DEV_SPEAKER", "HELDOUT_SPLITS", "IMAGE_RUN", "MARKER", "MIRROR_SOURCES",
    "NAME", "NO_MIRROR", "NUMBER_WORDS", "RECIPE_VERSION", "SOURCE_SETS", "SPEECH_RUN",
    "DefaultModel", "DefaultModelConfig", "ImageDataConfig", "PlannedUtterance", "Progress", "SpeechDataConfig",
    "adopt_default_model", "augment", "build_image_set", "build_sources", "build_speech_set", "cached_features",
    "console_progress", "embed_records", "ensure_default_model", "evaluate_default", "extract_features",
    "find_default_model", "format_results", "fsdd_records", "fsdd_zeroshot", "have_set", "heldout_tuxpaint",
    "load_config", "main", "mirror_image", "plan_speech_set", "require_default_model", "sources", "speaker_top1",
    "speech_latency_ms", "speech_texts", "train_align_run", "tuxpaint_caption_to_image", "tuxpaint_gallery",
    "tuxpaint_speech_to_image", "voice_pools",
]
