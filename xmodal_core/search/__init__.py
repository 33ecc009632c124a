"""Search a gallery with a spoken, written or pictured query, in one of five modes.

Modes (what each needs):
- `cascade`: speech -> Whisper transcript -> MiniLM -> the nearest captions' images; text
  -> MiniLM -> captions; an image -> ImageNet features compared image to image. No training.
- `asif`: the query (or its transcript) and the gallery items stay in their own pretrained
  spaces (MiniLM, EfficientNet) and are compared through paired caption/image anchors
  (ASIF relative representations). No training.
- `coarse`: the query and the items embedded into the shared space by the trained model in
  use (`spaces`); dot product over a vector index.
- `direct` / `auto`: speech through the head adapted to the gallery's names (`xmodal adapt`),
  against captions and pictures; `auto` falls back to the cascade when unsure (`search.direct`).
- `coarse-to-fine` / `fine`: FaST-VGS: coarse top-K_c reranked by the cross-attention scorer,
  or every item scored by it (images only). The shipped run (`adapt.shipped_vgs`) is used when
  no other FaST-VGS run is chosen; its coarse stage is the direct path's (adapted head against
  captions + pictures).

A search knows its target: gallery images, or spoken captions (`gallery.recordings_gallery()`,
whose items are recordings by people; their text is their Whisper transcript). Every search
returns its hits, what the query was heard as, and a per-stage latency breakdown.

Layout: `types` (Query, Hit, SearchResult), `targets` (images / recordings), `modes` (cascade,
ASIF, coarse), `vgs` (coarse-to-fine, fine), `anchors` (the ASIF anchors and their caches).
"""
from __future__ import annotations

from xmodal_core.errors import InputError
from xmodal_core.gallery import DEFAULT_NAME, Gallery, open_gallery
from xmodal_core.search import direct, modes, vgs
from xmodal_core.search.anchors import MAX_ANCHORS, anchor_ids, anchor_pairs, split_of
from xmodal_core.search.targets import IMAGES, RECORDINGS, TARGETS, Target, target_of, transcript_embed_fn
from xmodal_core.search.types import (CLIPPED_WARNING, DEFAULT_K_COARSE, MAX_TEXT_CHARS, MODE_HELP, MODES, Clock, Hit,
                                      Query, SearchResult, check_k, check_mode, format_timings, hit_rows)

MODE_FUNCTIONS = {
    "cascade": modes.cascade,
    "asif": modes.asif,
    "coarse": modes.coarse,
    "coarse-to-fine": vgs.coarse_to_fine,
    "fine": vgs.fine,
    "direct": direct.direct,
    "auto": direct.auto,
}
MAX_K = 100

__all__ = ["CLIPPED_WARNING", "DEFAULT_K_COARSE", "IMAGES", "MAX_ANCHORS", "MAX_K", "MAX_TEXT_CHARS", "MODES", "MODE_FUNCTIONS",
           "MODE_HELP", "RECORDINGS", "TARGETS", "Hit", "Query", "SearchResult", "Target", "anchor_ids",
           "anchor_pairs", "check_mode", "find_gallery", "format_timings", "hit_rows", "search",
           "search_recordings", "split_of", "target_of", "transcript_embed_fn"]


def search(gallery: Gallery, query: Query, mode: str = "cascade", *, target: str | None = None, k: int = 12,
           k_coarse: int = DEFAULT_K_COARSE, asif_k: int = 90, asif_p: float = 8.0, space=None, progress=None,
           adapted=None) -> SearchResult:
    """Find the `k` items of `gallery` that best match `query`.

    Args:
        gallery: what to search (`gallery.default_gallery()`, `gallery.index_folder(...)`,
            `gallery.recordings_gallery()`).
        query: a checked `Query`.
        mode: one of `MODES`.
        target: "images" or "recordings" (default: what the gallery holds).
        k: hits to return, 1 .. 100.
        k_coarse: coarse candidates reranked in coarse-to-fine (K_c; default from the benchmark's sweep).
        asif_k, asif_p: ASIF's kept anchors per row and exponent.
        space: a `spaces.Space` (default: the model in use).
        progress: callable(done, total) while a gallery is (re-)embedded for the first time.
        adapted: direct / auto: an `adapt.AdaptState` instead of the gallery's own adaptation.

    Raises:
        InputError: a mode the current models cannot do (with what to do instead), bad k.
    """
    from xmodal_core import spaces

    check_mode(mode)
    check_k(k, MAX_K)
    if len(gallery) == 0:
        raise InputError(f"gallery {gallery.name} is empty")
    result = SearchResult(mode=mode, query_kind=query.kind, hits=[], notes=list(query.notes))
    clock = Clock()
    request = modes.Request(gallery, query, mode, target_of(gallery, target), space or spaces.current_space(), clock,
                            result, k=int(k), k_coarse=int(k_coarse), asif_k=int(asif_k), asif_p=float(asif_p),
                            progress=progress, adapted=adapted)
    MODE_FUNCTIONS[mode](request)
    result.timings = clock.timings
    return result


def search_recordings(recordings: Gallery, query: Query, mode: str = "cascade", *, k: int = 6, **kwargs) -> SearchResult:
    """`search` for spoken captions (`gallery.recordings_gallery()`); kept for existing callers."""
    return search(recordings, query, mode, target="recordings", k=k, **kwargs)


def find_gallery(name: str | None) -> Gallery:
    """A gallery by name, default when empty."""
    return open_gallery(name or DEFAULT_NAME)


from xmodal_core.api import callable_module  # noqa: E402 - after the names it forwards to exist

callable_module(__name__, "search")  # `xm.search(...)`: the public function (api.search)
