"""What every page shares: turning library errors into visible messages, progress, small formatters.

A handler wrapped with `guarded` never leaks a traceback to the page: an `XmodalError`
(bad input, a missing model, a busy store) becomes a red `gr.Error` toast with its message,
anything else a toast that says it is a bug; the page keeps working either way.
"""
from __future__ import annotations

import functools
import inspect
import logging
import traceback
from typing import Any, Callable, Iterable

import gradio as gr

from xmodal_core.errors import XmodalError

log = logging.getLogger("xmodal.app")

# Handlers that load models or encode many items share this concurrency id, so at most
# `HEAVY_LIMIT` of them run at once (one slot stays free when one person starts a long map or
# index), while light handlers (tables, status, checks) skip the queue and stay responsive.
HEAVY = "heavy"
HEAVY_LIMIT = 2


def _to_gr_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, XmodalError):
        return gr.Error(str(exc), print_exception=False)
    log.error("unexpected error in a page handler:\n%s", traceback.format_exc())
    return gr.Error(f"unexpected {type(exc).__name__}: {exc} (this is a bug; the server log has the details)",
                    print_exception=False)


def guarded(fn: Callable) -> Callable:
    """Wrap a Gradio handler (plain or generator) so errors become visible messages.

    The wrapper keeps `fn`'s signature (Gradio reads it for `gr.Progress` defaults).
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every error becomes a message on the page
                raise _to_gr_error(exc) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every error becomes a message on the page
            raise _to_gr_error(exc) from None
    return wrapper


def warn(notes: Iterable[str]) -> None:
    """Show soft problems (a clipped recording, a clamped setting) as yellow toasts."""
    for note in notes:
        if note:
            gr.Warning(str(note))


def progress_fn(progress: Any, desc: str) -> Callable[[int, int], None]:
    """Adapt a `gr.Progress` to the library's `progress(done, total)` callbacks."""
    def report(done: int, total: int) -> None:
        if progress is not None and total:
            progress((done, total), desc=desc, unit="items")
    return report


def fmt(value: Any, digits: int = 3) -> Any:
    """Round floats for tables; None/NaN shows as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return ""
        return round(value, digits)
    return value


def status_markdown() -> str:
    """The model-in-use line plus background work (model loading, gallery preparation)."""
    from xmodal_core import background, spaces

    lines = [spaces.status_line()]
    bg = background.summary()
    if bg:
        lines.append(bg)
    return "\n\n".join(lines)
