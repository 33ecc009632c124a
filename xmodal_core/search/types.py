"""What a search takes and gives: the checked query, hits, the result with its per-stage timings."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from xmodal_core.errors import InputError
from xmodal_core.gallery import GalleryItem

MODES = ("cascade", "asif", "coarse", "coarse-to-fine", "fine", "direct", "auto")
MODE_HELP = {
    "cascade": "ASR then text: transcript → MiniLM → nearest captions (no training needed)",
    "asif": "ASIF: pretrained spaces compared through paired caption/image anchors (no training needed)",
    "coarse": "one vector per query and image in the shared space of the trained model in use",
    "coarse-to-fine": "FaST-VGS: coarse top-K_c (adapted speech head → captions + pictures), reranked by the fine "
                      "cross-attention scorer over Whisper frames and picture grids (no ASR)",
    "fine": "FaST-VGS: every gallery item scored by the fine cross-attention scorer (slower, for comparison)",
    "direct": "speech head adapted to the gallery's names (no ASR) → captions and pictures, fused",
    "auto": "direct when the adapted head is sure of the name, else the ASR cascade (says which answered)",
}
MAX_TEXT_CHARS = 1000
# Coarse candidates the FaST-VGS fine scorer reranks by default, chosen on held-out synthetic voices by the
# K_c sweep of bench/vgs.py: the smallest K_c whose R@10 is within 0.005 of the fine scorer's over all items
# (10: 0.951 vs 0.951). People's recordings are only measured, never used to choose it.
DEFAULT_K_COARSE = 10
CLIPPED_WARNING = 0.01  # share of samples at full scale above which a recording counts as clipped


@dataclass(frozen=True)
class Query:
    """Exactly one of: `audio` (an `xmodal_core.audio.Audio`), `image` (RGB PIL), `text`."""

    kind: str  # "speech" | "image" | "text"
    audio: Any = None
    image: Any = None
    text: str | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def from_input(cls, kind: str, value: Any) -> "Query":
        """Check and decode what a person gave: audio (path, bytes or Gradio's `(rate, array)`),
        an image (path, PIL or array) or text. Raises `InputError` (AudioError, ImageError) with
        a message a person can act on; soft problems (a clipped recording) become `notes`."""
        if kind == "speech":
            from xmodal_core.audio import load_audio

            audio = load_audio(value)
            notes = []
            if audio.clipped_fraction > CLIPPED_WARNING:
                notes.append(f"the recording is clipped ({audio.clipped_fraction:.0%} of samples at full scale): "
                             "results may suffer; record a little further from the microphone")
            if audio.duration < 0.2:
                notes.append(f"the recording is very short ({audio.duration:.2f} s)")
            return cls("speech", audio=audio, notes=tuple(notes))
        if kind == "image":
            from xmodal_core.images import load_image

            return cls("image", image=load_image(value))
        if kind == "text":
            text = (value or "").strip() if isinstance(value, str) or value is None else None
            if text is None:
                raise InputError(f"text query must be a string, not {type(value).__name__}")
            if not text:
                raise InputError("the text query is empty: type a few words, e.g. 'a red apple'")
            from xmodal_core.validate import check_text

            return cls("text", text=check_text(text, "text query", max_chars=MAX_TEXT_CHARS))
        raise InputError(f"unknown query kind {kind!r}; use speech, image or text")


@dataclass(frozen=True)
class Hit:
    item: GalleryItem
    score: float
    rank: int


@dataclass
class SearchResult:
    """Hits best first, the transcript (speech queries), latency per stage in milliseconds."""

    mode: str
    query_kind: str
    hits: list[Hit]
    transcript: str | None = None
    timings: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: str = ""
    path: str = ""  # direct / auto: which path answered ("direct" or "cascade")
    confidence: float | None = None  # direct / auto: top cosine of the query to the gallery's names
    heard_as: str | None = None  # direct / auto: the nearest name

    @property
    def total_ms(self) -> float:
        return float(sum(ms for _, ms in self.timings))


class Clock:
    """Per-stage wall time in milliseconds, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, float]] = []

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings.append((name, (time.perf_counter() - start) * 1000.0))


def check_mode(mode: str) -> str:
    """`mode` when it is one of `MODES`, else InputError (cheap: call it before opening a gallery)."""
    if mode not in MODES:
        raise InputError(f"unknown search mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def check_k(k: int, max_k: int = 100) -> int:
    """`k` as an int when it is 1 .. `max_k`, else InputError (cheap: call it before opening a gallery)."""
    if not 1 <= int(k) <= max_k:
        raise InputError(f"k must be between 1 and {max_k}, not {k}")
    return int(k)


def format_timings(result: SearchResult) -> list[list]:
    """Rows [stage, milliseconds] plus a total row, for a table."""
    rows = [[name, round(ms, 1)] for name, ms in result.timings]
    rows.append(["total", round(result.total_ms, 1)])
    return rows


def hit_rows(result: SearchResult) -> list[list]:
    """Rows [rank, score, caption, item id] for a table."""
    return [[h.rank, round(h.score, 4), h.item.text, h.item.id] for h in result.hits]
