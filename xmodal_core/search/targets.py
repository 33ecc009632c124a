"""What a search looks for: gallery images, or spoken captions (recordings by people).

A target says how its items are embedded in each way a search can compare them: by their
text (captions, or the recordings' Whisper transcripts) through MiniLM, in the shared space
of the model in use, or in their own pretrained space for ASIF.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from xmodal_core.gallery import Gallery, GalleryItem, image_embed_fn, text_embed_fn


@dataclass(frozen=True)
class Target:
    """name: "images" | "recordings"; modality: what an item is in the shared space ("image" | "speech");
    text_what: what the text index is stale on ("text": the caption, "image": the file)."""

    name: str
    modality: str
    noun: str
    text_what: str

    def value(self, item: GalleryItem) -> Any:
        """The item as its shared-space modality sees it: the image path or the recording path."""
        return item.image if self.modality == "image" else item.audio

    def text_embed(self) -> tuple[str, Callable]:
        """(cache key, embed function) of the items' text under MiniLM."""
        return text_embed_fn() if self.name == "images" else transcript_embed_fn()

    def asif_side(self) -> str:
        """Which anchors the items are compared through: "image" (EfficientNet) or "text" (MiniLM)."""
        return "image" if self.name == "images" else "text"

    def asif_embed(self) -> tuple[str, Callable]:
        """(cache key, embed function) of the items in their own pretrained space, for ASIF."""
        return image_embed_fn() if self.name == "images" else transcript_embed_fn()


IMAGES = Target("images", "image", "images", "text")
RECORDINGS = Target("recordings", "speech", "spoken captions", "image")
TARGETS = {t.name: t for t in (IMAGES, RECORDINGS)}


def target_of(gallery: Gallery, target: str | None = None) -> Target:
    """The named target, or the one a gallery holds (`recordings_gallery()` holds recordings)."""
    from xmodal_core.errors import InputError

    if target is None:
        return RECORDINGS if gallery.kind == "recordings" else IMAGES
    if target not in TARGETS:
        raise InputError(f"unknown search target {target!r}; use images or recordings")
    return TARGETS[target]


def transcript_embed_fn() -> tuple[str, Callable]:
    """(cache key, embed function) for recordings: Whisper transcript -> MiniLM (cached both ways)."""
    from xmodal_core import spaces as spaces_mod

    key, text_fn = text_embed_fn()

    def embed(items):
        texts = spaces_mod.transcribe([it.audio for it in items])
        return text_fn([replace(it, caption=t or " ") for it, t in zip(items, texts)])

    return "transcript-" + key, embed
