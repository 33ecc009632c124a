"""Small helpers shared by the towers."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import torch

HF_LOCK = threading.RLock()
"""Held while transformers / sentence-transformers are imported or a model of theirs is built.

transformers resolves its names lazily; two threads doing that at once (the app's warm-up loading
MiniLM while a request loads Whisper) can meet a half-initialised module and fail with
"cannot import name 'WhisperFeatureExtractor' from 'transformers'". One lock serialises them.
"""


def auto_device(device: str | torch.device | None) -> torch.device:
    """`None` or "auto" -> CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def file_fingerprint(path: str | Path, extra: str = "") -> str:
    """A 16-hex-digit id of a weights file: sha256 of its size, first and last MiB, plus `extra`.

    Cheap on a 70 MB file and changes whenever the weights do in practice.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:{extra}".encode())
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 1 << 20:
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:16]
