"""Which model the app uses: one shared space (MiniLM text), reached per modality.

Every alignment run whose MiniLM text tower is locked and has no head lands in the same
space, MiniLM's own (see `trainers/align.py`). So "the model in use" is a choice per
modality, persisted in `paths.home()/model_in_use.json`:

- text: MiniLM itself, always;
- speech: a speech-text run's head, or, with no run, the untrained cascade
  (Whisper transcript -> MiniLM);
- image: an image-text run's head, or none (images are then found through their captions
  or ASIF, which need no training).

A run that trained its text tower (or used another text model) is a space of its own:
it can be used on its own towers (Templates, Explorer) but not mixed with others.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xmodal_core import paths
from xmodal_core.caching import LoadCache
from xmodal_core.errors import InputError, StoreError, XmodalError
from xmodal_core.fsio import atomic_write

TEXT_ENCODER = "minilm"
PRETRAINED = {"speech": "whisper-tiny.en", "text": "minilm", "image": "efficientnet-lite0"}  # towers as installed
SELECTION_FILE = "model_in_use.json"
DEFAULT_RUN_NAME = "xmodal-default"
CASCADE = "cascade"


@dataclass(frozen=True)
class RunChoice:
    """A completed alignment run that can embed things.

    Attributes:
        run_id, name: from the store.
        towers: the two modalities it aligned, e.g. ("speech", "text").
        loss: "cl" | "cwcl" | ...
        dataset: what it trained on.
        shared: True when its space is the shared MiniLM space (locked, head-less MiniLM text).
    """

    run_id: int
    name: str
    towers: tuple[str, ...]
    loss: str
    dataset: str
    shared: bool
    kind: str = "align"

    @property
    def modality(self) -> str:
        """The tower that is not text (or the first tower when neither is text)."""
        others = [m for m in self.towers if m != "text"]
        return others[0] if others else self.towers[0]

    @property
    def title(self) -> str:
        if self.kind == "vgs":
            return f"run {self.run_id} · {self.name} (FaST-VGS speech-image, {self.dataset})"
        return f"run {self.run_id} · {self.name} ({'-'.join(self.towers)}, {self.loss.upper()}, {self.dataset})"


def _is_shared(config: dict[str, Any]) -> bool:
    no_head = tuple(config.get("no_head", ()))
    locked = config.get("locked", "")
    encoders = config.get("encoders", {})
    return ("text" in config.get("towers", ()) and "text" in no_head and locked in ("both", "text")
            and encoders.get("text", TEXT_ENCODER) == TEXT_ENCODER)


def run_folder(run: int | str | Path) -> Path:
    """A run's folder: `paths.runs_dir()/ID` for a run id, the folder itself for a path."""
    if isinstance(run, Path) or not str(run).isdigit():
        return Path(run)
    return paths.runs_dir() / str(int(run))


def _has_heads(run_id: int) -> bool:
    folder = run_folder(run_id)
    return (folder / "config.json").is_file() and (folder / "heads.safetensors").is_file()


def weights_tag(run: int | str | Path, weights: str = "heads.safetensors") -> str:
    """A short fingerprint of a run's saved weights (run id, the weights file's size and modification
    time): caches keyed by it never serve another run's vectors under the same id."""
    folder = run_folder(run)
    try:
        st = (folder / weights).stat()
    except OSError:
        return "none"
    return hashlib.sha1(f"{folder.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]


_stores: dict[str, Any] = {}
_stores_lock = threading.Lock()


def shared_store():
    """The process-wide `store.Store` at `paths.db_path()` (opening one costs a write transaction;
    the store is safe to share between threads), opened again when XMODAL_HOME changes."""
    from xmodal_core.store import Store

    path = str(paths.db_path())
    with _stores_lock:
        if path not in _stores:
            _stores[path] = Store(path)
        return _stores[path]


def vgs_runs(store=None) -> list[RunChoice]:
    """Completed FaST-VGS runs with a trained model, newest first."""
    store = store or shared_store()
    out = []
    for run in store.list_runs(status="completed", kind="vgs"):
        if (paths.runs_dir() / str(run.id) / "model.safetensors").is_file():
            out.append(RunChoice(run.id, run.name, ("speech", "image"), "mms", str(run.config.get("dataset", "?")),
                                 False, "vgs"))
    return out


def usable_runs(store=None, *, modality: str | None = None) -> list[RunChoice]:
    """Completed alignment runs with trained heads, newest first; `modality` keeps those that embed it."""
    store = store or shared_store()
    out = []
    for run in store.list_runs(status="completed", kind="align"):
        towers = tuple(run.config.get("towers", ()))
        if not towers or not _has_heads(run.id):
            continue
        if modality is not None and modality not in towers:
            continue
        out.append(RunChoice(run.id, run.name, towers, str(run.config.get("loss", "?")),
                             str(run.config.get("dataset", "?")), _is_shared(run.config)))
    return out


@dataclass(frozen=True)
class Selection:
    """The run used for speech and for images (None: no trained model for that modality), and the
    FaST-VGS run for coarse-to-fine and fine search."""

    speech: int | None = None
    image: int | None = None
    vgs: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def _selection_path() -> Path:
    return paths.home() / SELECTION_FILE


_lock = threading.RLock()


def load_selection(store=None) -> Selection:
    """The saved selection; runs that no longer exist are dropped. With nothing saved, the
    newest usable runs named "xmodal-default" are used."""
    with _lock:
        try:
            data = json.loads(_selection_path().read_text(encoding="utf-8"))
            saved = Selection(speech=data.get("speech"), image=data.get("image"), vgs=data.get("vgs"))
            explicit = True
        except (OSError, ValueError):
            saved, explicit = Selection(), False
        runs = {r.run_id: r for r in usable_runs(store)}
        speech = saved.speech if saved.speech in runs and "speech" in runs[saved.speech].towers else None
        image = saved.image if saved.image in runs and "image" in runs[saved.image].towers else None
        vgs_ids = [r.run_id for r in vgs_runs(store)]
        vgs = saved.vgs if saved.vgs in vgs_ids else None
        if not explicit:
            default_speech, default_image = _default_runs(list(runs.values()))
            speech = default_speech if speech is None else speech
            image = default_image if image is None else image
            if vgs is None:
                vgs = next((r.run_id for r in vgs_runs(store) if r.name.startswith(DEFAULT_RUN_NAME)), None)
        return Selection(speech=speech, image=image, vgs=vgs)


def _default_runs(runs: Sequence[RunChoice]) -> tuple[int | None, int | None]:
    """The newest shared runs named "xmodal-default..." for speech and for images (`runs` newest first)."""
    def newest(modality: str) -> int | None:
        return next((r.run_id for r in runs if r.name.startswith(DEFAULT_RUN_NAME) and r.shared
                     and r.modality == modality), None)

    return newest("speech"), newest("image")


def default_space(store=None) -> "Space":
    """The trained default model of this home (its newest "xmodal-default" speech and image runs).

    Raises:
        ModelNotFoundError: this home has no trained default model (with how to train one).
    """
    from xmodal_core.errors import ModelNotFoundError

    speech, image = _default_runs(usable_runs(store))
    if speech is None and image is None:
        raise ModelNotFoundError(f"no trained default model in {paths.home()}: train it with `xmodal default-model` "
                                 "(10-15 minutes on 2 cores), or set XMODAL_HOME to a home that has one")
    return Space(speech_run=speech, image_run=image)


def save_selection(selection: Selection) -> Selection:
    with _lock:
        path = _selection_path()
        atomic_write(path, json.dumps(selection.to_dict()))
        return selection


def use_run(run_id: int | None, modality: str | None = None, store=None) -> Selection:
    """Make a run the model in use for its non-text tower ("use this model"); `run_id=None`
    with a `modality` goes back to the untrained fallback for that modality.

    Raises:
        InputError: the run is not a completed alignment run with heads, or its space is not
            the shared MiniLM space (it could not be searched together with the others).
    """
    current = load_selection(store)
    if run_id is not None and int(run_id) in {r.run_id for r in vgs_runs(store)}:
        return save_selection(Selection(**{**current.to_dict(), "vgs": int(run_id)}))
    if run_id is None:
        if modality not in ("speech", "image"):
            raise InputError("say which modality goes back to the untrained model: speech or image")
        return save_selection(Selection(**{**current.to_dict(), modality: None}))
    runs = {r.run_id: r for r in usable_runs(store)}
    if int(run_id) not in runs:
        raise InputError(f"run {run_id} is not a completed alignment or FaST-VGS run with a trained model; "
                         "pick a completed one from the run table")
    run = runs[int(run_id)]
    if not run.shared:
        raise InputError(f"run {run_id} trained its own text space (text tower not locked or with a head), so it "
                         "cannot be combined with other runs in Search; it still works in Templates and Explorer")
    target = modality or run.modality
    if target not in ("speech", "image") or target not in run.towers:
        raise InputError(f"run {run_id} aligned {' and '.join(run.towers)}; it has no {target} tower")
    return save_selection(Selection(**{**current.to_dict(), target: int(run_id)}))


# ---------------------------------------------------------------- the space itself

# Loaded runs by (kind, run folder, weights fingerprint): ids repeat across homes (and a home whose
# store was reset), folders and fingerprints do not. Loads run outside any shared lock.
_models = LoadCache()


def _model_key(kind: str, run: int | str | Path, weights: str) -> tuple[str, str, str]:
    return kind, str(run_folder(run).resolve()), weights_tag(run, weights)


def _load_once(kind: str, run_id: int | str | Path, weights: str, module: str, loader: str, what: str):
    """`module.loader(run_id)`, loaded once per process and weights; InputError naming `what` if it cannot import."""
    def load():
        try:
            load_fn = getattr(importlib.import_module(module), loader)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"the {what} is not available ({exc})") from None
        return load_fn(run_id)

    return _models.get(_model_key(kind, run_id, weights), load)


def load_run_model(run_id: int | str | Path):
    """`load_aligned(run)` (a run id in this home, or a run folder), loaded once per process and weights."""
    return _load_once("align", run_id, "heads.safetensors", "xmodal_core.models.aligned", "load_aligned",
                      "alignment trainer")


def run_embed(run_id: int, modality: str, items: Sequence[Any]) -> np.ndarray:
    """(N, d) unit embeddings of `items` through one alignment run.

    A locked tower's features of files (paths) and texts come from the shared frozen-feature
    cache, so only the run's small head runs; in-memory items (a recorded `Audio`, a PIL image)
    and fine-tuned towers go through the run's own `embed`.
    """
    import torch

    from xmodal_core.data.features import FeatureCache
    from xmodal_core.data.manifest import Record

    aligned = load_run_model(run_id)
    items = list(items)
    if modality not in aligned.config.towers:
        raise InputError(f"run {run_id} aligned {' and '.join(aligned.config.towers)}; it cannot embed {modality}")
    cacheable = all(isinstance(x, str) for x in items) if modality == "text" else \
        all(isinstance(x, (str, Path)) for x in items)
    if modality in aligned.model.towers or not cacheable or not items:
        return aligned.embed(modality, items)
    view = {"image": "image", "speech": "audio", "text": "text"}[modality]
    records = [Record(id=f"q{i}", **{view: str(x)}) for i, x in enumerate(items)]
    feats = FeatureCache(aligned.config.encoders[modality]).get(records, modality)
    with torch.no_grad():
        out = aligned.model.embed(modality, torch.as_tensor(feats, dtype=torch.float32).to(aligned.device))
    return out.float().cpu().numpy()


def load_vgs_model(run_id: int):
    """`load_vgs(run_id)`, loaded once per process and weights."""
    return _load_once("vgs", run_id, "model.safetensors", "xmodal_core.models.vgs", "load_vgs", "FaST-VGS trainer")


def _tower(modality: str, items: Sequence[Any]) -> np.ndarray:
    from xmodal_core.registry import get_encoder

    return get_encoder(PRETRAINED[modality]).encode(list(items))


def _text_encoder():
    from xmodal_core.registry import get_encoder

    return get_encoder(TEXT_ENCODER)


_transcripts: dict[str, str] = {}
_transcripts_from: dict[str, str] = {}
_transcripts_lock = threading.Lock()


def _audio_key(audio) -> str:
    samples = np.ascontiguousarray(audio.samples, dtype=np.float32)
    return hashlib.sha1(samples.tobytes()).hexdigest() + f":{audio.sample_rate}"


def is_transcribed(audio) -> bool:
    """Whether this `Audio`'s transcript is already cached (then `transcribe` costs no ASR)."""
    transcribe([])  # loads the disk cache once
    with _transcripts_lock:
        return _audio_key(audio) in _transcripts


def transcribe(audios: Sequence[Any]) -> list[str]:
    """Whisper tiny.en transcripts of `Audio`s or paths, cached (memory, and disk for files)."""
    from xmodal_core.audio import Audio, load_audio
    from xmodal_core.registry import get_transcriber

    loaded = [a if isinstance(a, Audio) else load_audio(a) for a in audios]
    keys = [_audio_key(a) for a in loaded]
    disk = paths.features_dir() / "transcripts-whisper-tiny.en.json"
    with _transcripts_lock:
        if _transcripts_from.get("path") != str(disk):  # first use, or another home (tests)
            _transcripts.clear()
            _transcripts_from["path"] = str(disk)
        if not _transcripts and disk.is_file():
            try:
                _transcripts.update(json.loads(disk.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
        todo = [i for i, k in enumerate(keys) if k not in _transcripts]
    if todo:
        texts = get_transcriber().transcribe([loaded[i] for i in todo])
        with _transcripts_lock:
            for i, text in zip(todo, texts):
                _transcripts[keys[i]] = text
            if len(_transcripts) < 200_000:
                atomic_write(disk, json.dumps(_transcripts))
    with _transcripts_lock:
        return [_transcripts[k] for k in keys]


class Space:
    """Embedding functions into one space.

    `embed_text`, `embed_speech`, `embed_image`: items -> (N, d) float32 unit rows.
    `can(modality)` says whether a modality has a vector here; `key(modality)` names the
    embedding for caches ("speech:run-3", "speech:cascade", ...).
    """

    def __init__(self, *, speech_run: int | None = None, image_run: int | None = None, own_run: int | None = None,
                 vgs_run: int | None = None, pretrained: bool = False):
        self.speech_run, self.image_run, self.own_run = speech_run, image_run, own_run
        self.vgs_run = vgs_run  # FaST-VGS (speech -> image, coarse + fine), independent of the shared space
        # The towers as installed, before alignment: one space per modality (different widths).
        self.pretrained = pretrained

    @classmethod
    def pretrained_towers(cls) -> "Space":
        """The towers as installed (Whisper, MiniLM, EfficientNet), each its own space."""
        return cls(pretrained=True)

    @property
    def title(self) -> str:
        if self.pretrained:
            return "pretrained towers (before alignment)"
        if self.own_run is not None:
            return f"run {self.own_run} (its own space)"
        speech = (f"run {self.speech_run}" if self.speech_run is not None
                  else "cascade (Whisper ASR → MiniLM, untrained)")
        image = f"run {self.image_run}" if self.image_run is not None else "none (found through captions / ASIF)"
        return f"text: MiniLM · speech: {speech} · images: {image}"

    def can(self, modality: str) -> bool:
        if self.pretrained:
            return modality in PRETRAINED
        if self.own_run is not None:
            return modality in load_run_model(self.own_run).modalities
        return modality in ("text", "speech") or (modality == "image" and self.image_run is not None)

    def key(self, modality: str) -> str:
        """Names the weights, not only the run id: caches shared between homes (or a home whose
        store was reset) never serve another run's vectors under the same id."""
        if self.pretrained:
            return f"{modality}:pretrained-{PRETRAINED[modality]}"
        if self.own_run is not None:
            return f"{modality}:run-{self.own_run}-{weights_tag(self.own_run)}"
        if modality == "speech":
            return (f"speech:run-{self.speech_run}-{weights_tag(self.speech_run)}" if self.speech_run is not None
                    else f"speech:{CASCADE}")
        if modality == "image":
            return (f"image:run-{self.image_run}-{weights_tag(self.image_run)}" if self.image_run is not None
                    else "image:none")
        return f"text:{TEXT_ENCODER}"

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if self.pretrained:
            return _tower("text", texts)
        if self.own_run is not None:
            return run_embed(self.own_run, "text", texts)
        return _text_encoder().encode(texts)

    def embed_speech(self, audios: Sequence[Any]) -> np.ndarray:
        if self.pretrained:
            return _tower("speech", audios)
        if self.own_run is not None:
            return run_embed(self.own_run, "speech", audios)
        if self.speech_run is not None:
            return run_embed(self.speech_run, "speech", audios)
        return self.embed_text(transcribe(audios))

    def embed_image(self, images: Sequence[Any]) -> np.ndarray:
        """Images (paths: features from the cache; PIL images: encoded now) -> (N, d)."""
        if self.pretrained:
            return _tower("image", images)
        if self.own_run is not None:
            return run_embed(self.own_run, "image", images)
        if self.image_run is None:
            raise InputError("no trained image model is in use: train an image-text run on the Train page and "
                             "press 'use this model', or search images by caption (cascade) or ASIF")
        return run_embed(self.image_run, "image", images)

    def embed(self, modality: str, items: Sequence[Any]) -> np.ndarray:
        fn = {"text": self.embed_text, "speech": self.embed_speech, "image": self.embed_image}.get(modality)
        if fn is None:
            raise InputError(f"unknown modality {modality!r}; use text, speech or image")
        return fn(items)

    def run_for(self, modality: str) -> int | None:
        """The run that embeds `modality` here (None: a frozen tower, or the cascade, does)."""
        if self.pretrained:
            return None
        if self.own_run is not None:
            return self.own_run
        return {"speech": self.speech_run, "image": self.image_run}.get(modality)

    def embed_records(self, modality: str, records: Sequence[Any], progress=None) -> np.ndarray:
        """(N, d) unit embeddings of manifest records' `modality` view. Frozen-tower features (and
        the cascade's transcripts) come from the shared caches, so analysis of a labelled set
        re-encodes nothing; a run embeds through `run_embed` (cached features + its head)."""
        from xmodal_core.data.features import FeatureCache

        records = list(records)
        if not records:
            raise InputError("no records to embed")
        if self.pretrained:
            return FeatureCache(PRETRAINED[modality]).get(records, modality, progress=progress)
        run = self.run_for(modality)
        if run is not None:
            return run_embed(run, modality, [r.item(modality) for r in records])
        if modality == "image":
            raise InputError("the cascade has no image vector: pick a trained model for images")
        if modality == "speech":
            from dataclasses import replace

            texts = transcribe([r.audio for r in records])
            records = [replace(r, text=t or " ") for r, t in zip(records, texts)]
        return FeatureCache(TEXT_ENCODER).get(records, "text", progress=progress)


def current_space(store=None) -> Space:
    """The space of the saved selection (see `load_selection`)."""
    sel = load_selection(store)
    return Space(speech_run=sel.speech, image_run=sel.image, vgs_run=sel.vgs)


def run_space(run_id: int) -> Space:
    """One run on its own: its towers (and its text path) only."""
    runs = {r.run_id: r for r in usable_runs()}
    if int(run_id) not in runs:
        raise InputError(f"run {run_id} is not a completed alignment run with trained heads")
    run = runs[int(run_id)]
    if run.shared:
        return Space(speech_run=run.run_id if "speech" in run.towers else None,
                     image_run=run.run_id if "image" in run.towers else None)
    return Space(own_run=run.run_id)


def status_line(store=None) -> str:
    """One line for the top of the pages: which model is in use for each modality."""
    try:
        sel = load_selection(store)
    except (XmodalError, StoreError) as exc:
        return f"Model in use: unknown ({exc})"
    runs = {r.run_id: r for r in usable_runs(store) + vgs_runs(store)}

    def describe(run_id: int | None, fallback: str) -> str:
        return runs[run_id].title if run_id in runs else fallback

    line = ("**Model in use** — text: MiniLM · speech: "
            + describe(sel.speech, "cascade (Whisper tiny.en transcript → MiniLM; no trained speech model yet)")
            + " · images: "
            + describe(sel.image, "captions / ASIF (no trained image model yet)"))
    if sel.vgs is not None:
        line += " · coarse-to-fine: " + describe(sel.vgs, f"run {sel.vgs}")
    return line
