"""The public API behind `import xmodal_core as xm`: load a model, embed text, speech and images
into its shared space, search a gallery, classify zero-shot. Thin over what the app uses
(`spaces.Space`, `search.search`, `zeroshot.class_embeddings` / `classify`).
"""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xmodal_core.errors import InputError, ModelNotFoundError

DEFAULT_MODEL = "xmodal-default"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus", ".aac", ".webm"}


@dataclass
class Model:
    """Embedding functions into one space; each returns (N, d) unit-norm float32 numpy rows.

    Attributes:
        name: what `load` was given.
        space: the `spaces.Space` (None for a single tower).
        tower: a registered tower name when the model is one frozen tower ("minilm").
    """

    name: str
    space: Any = None
    tower: str | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        if self.tower is not None:
            from xmodal_core.registry import REGISTERED

            return (REGISTERED[self.tower].modality,)
        return tuple(m for m in ("text", "speech", "image") if self.space.can(m))

    def _embed(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        if modality not in self.modalities:
            raise InputError(f"model {self.name!r} embeds {', '.join(self.modalities)}, not {modality}")
        if self.tower is not None:
            from xmodal_core.registry import get_encoder

            out = get_encoder(self.tower).encode(list(items))
        else:
            out = self.space.embed(modality, list(items))
        out = np.asarray(out, dtype=np.float32).reshape(len(items), -1)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def encode_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Sentences -> (N, d)."""
        return self._embed("text", [texts] if isinstance(texts, str) else [str(t) for t in texts])

    def encode_speech(self, audio: Any | Sequence[Any], sample_rate: int = 16000) -> np.ndarray:
        """Recordings (file paths, or 1-D sample arrays at `sample_rate` Hz) -> (N, d)."""
        from xmodal_core.audio import load_audio

        items = [audio] if isinstance(audio, (str, Path, np.ndarray)) else list(audio)
        items = [str(x) if isinstance(x, Path) else
                 load_audio((int(sample_rate), np.asarray(x))) if isinstance(x, np.ndarray) else x for x in items]
        return self._embed("speech", items)

    def encode_image(self, images: Any | Sequence[Any]) -> np.ndarray:
        """Images (file paths or PIL images) -> (N, d)."""
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        return self._embed("image", [str(x) if isinstance(x, Path) else x for x in items])

    def __repr__(self) -> str:
        title = self.tower if self.tower is not None else self.space.title
        return f"Model({self.name!r}: {title})"


def _run_folder_space(folder: Path):
    import json

    from xmodal_core import spaces

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("kind") != "align":
        raise InputError(f"{folder} holds a {config.get('kind')!r} run; xm.load takes alignment runs")
    towers = tuple(config.get("towers", ()))
    if spaces._is_shared(config):
        return spaces.Space(speech_run=folder if "speech" in towers else None,
                            image_run=folder if "image" in towers else None)
    return spaces.Space(own_run=folder)


def load(name: str | int | Path = DEFAULT_MODEL) -> Model:
    """A model by name: "xmodal-default" (the trained default model of this home), a run id, a run
    folder, or a registered tower ("minilm", "efficientnet-lite0", ...: that one modality only).

    Raises:
        ModelNotFoundError: nothing by that name here (with what was tried and what to do).
    """
    from xmodal_core import spaces
    from xmodal_core.registry import REGISTERED

    text = str(name)
    if text == DEFAULT_MODEL:
        return Model(text, spaces.default_space())
    if isinstance(name, int) or text.isdigit():
        return Model(text, spaces.run_space(int(text)))
    if text in REGISTERED:
        return Model(text, tower=text)
    folder = Path(text).expanduser()
    if (folder / "config.json").is_file() and (folder / "heads.safetensors").is_file():
        return Model(text, _run_folder_space(folder.resolve()))
    raise ModelNotFoundError(f"no model called {text!r}: give {DEFAULT_MODEL!r} (train it with `xmodal "
                             f"default-model`), a run id from `xmodal runs`, a run folder with config.json and "
                             f"heads.safetensors, or a tower ({', '.join(REGISTERED)})")


def query_kind(value: Any) -> str:
    """"speech", "image" or "text" for what a person passed: a PIL image, a sample array, a file path by its
    suffix, else text."""
    from xmodal_core.images import IMAGE_SUFFIXES

    if isinstance(value, (np.ndarray, tuple)):
        return "speech"
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return "image"
    if isinstance(value, (str, Path)) and len(str(value)) < 4096 and Path(value).is_file():
        suffix = Path(value).suffix.lower()
        if suffix in AUDIO_SUFFIXES:
            return "speech"
        if suffix in IMAGE_SUFFIXES:
            return "image"
    return "text"


def search(query: Any, *, gallery: str = "default", mode: str = "cascade", k: int = 12, target: str = "images",
           model: Model | None = None, kind: str | None = None, **settings):
    """Search a gallery as the app's Search page does -> `search.SearchResult` (hits best first).

    Args:
        query: text, a recording (path or `(rate, samples)`), or an image (path or PIL); `kind`
            ("text", "speech", "image") overrides the guess.
        gallery: "default" or an indexed folder's gallery name (target "images").
        mode: one of `search.MODES`; target: "images" or "recordings" (spoken captions by people).
        model: a loaded `Model` (default: the model in use in this home); settings: k_coarse,
            asif_k, asif_p.
    """
    from xmodal_core import gallery as galleries
    from xmodal_core import labels
    from xmodal_core import search as search_mod

    q = query if isinstance(query, search_mod.Query) else search_mod.Query.from_input(kind or query_kind(query), query)
    search_mod.check_mode(mode)
    if target == "recordings":
        g = galleries.recordings_gallery()
    else:
        g = search_mod.find_gallery(gallery)
        labels.apply_captions(g)  # captions people corrected on the Label page, as the app searches them
    space = model.space if model is not None and model.space is not None else None
    return search_mod.search(g, q, mode, target=target, k=k, space=space, **settings)


@dataclass
class ZeroShot:
    """classes: C names; scores: (N, C) cosine; predicted: N names (argmax)."""

    classes: list[str]
    scores: np.ndarray
    predicted: list[str]


def zeroshot(items: Any | Sequence[Any], classes: Sequence[str], *, templates: str | Sequence[str] = ("{}",),
             model: Model | None = None, modality: str | None = None) -> ZeroShot:
    """Zero-shot classification of recordings or images: class embedding = mean of the text
    embeddings of each class name put into each template; predict by cosine.

    Args:
        items: recordings (paths or arrays at 16 kHz) or images (paths or PIL).
        templates: a template list name ("simple", "general"), a file, or templates with `{}`.
        model: a loaded `Model` (default: `load()`); modality: "speech" or "image" (default: guessed).
    """
    import torch

    from xmodal_core.zeroshot import class_embeddings, classify, load_templates

    model = model or load()
    batch = list(items) if isinstance(items, (list, tuple)) else [items]
    if not batch:
        raise InputError("no items to classify")
    modality = modality or query_kind(batch[0])
    if modality not in ("speech", "image"):
        raise InputError(f"zero-shot classifies recordings or images; {batch[0]!r} looks like {modality}")
    emb = model.encode_speech(batch) if modality == "speech" else model.encode_image(batch)
    names = [str(c) for c in classes]
    class_emb = class_embeddings(names, load_templates(templates if isinstance(templates, str) else list(templates)),
                                 model.encode_text)
    scores = classify(torch.from_numpy(emb), class_emb).numpy()
    return ZeroShot(names, scores, [names[i] for i in scores.argmax(1)])


def callable_module(module_name: str, function: str) -> None:
    """Let the submodule `xmodal_core.<name>` be called as the public function of the same name:
    once `xmodal_core.search` is imported, Python binds the package attribute `xm.search` to the
    submodule, so the submodule forwards calls (`xm.search("a cat")`) to `api.<function>`."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(sys.modules[__name__], function)(*args, **kwargs)

    CallableModule.__call__.__doc__ = getattr(sys.modules[__name__], function).__doc__
    module.__class__ = CallableModule
