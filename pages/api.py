"""Named HTTP endpoints for `gradio_client` and curl: `/search`, `/embed`, `/zeroshot`, `/runs`.

Plain JSON in and out, over the same library calls as the pages (`xmodal_core.api`). Files
travel as base64 strings (`kind="speech"` or `"image"`), so no upload step is needed. Every
other event of the app is hidden from the API page (`hide_other_endpoints`).
"""
from __future__ import annotations

import base64
import binascii
import os
from typing import Any

import gradio as gr

from pages._ui import HEAVY, HEAVY_LIMIT, guarded
from xmodal_core.errors import InputError

API_NAMES = ("search", "embed", "zeroshot", "runs")


def _decode(kind: str, data: str) -> Any:
    """text as is; speech / image: base64 file bytes -> bytes (audio) or a PIL image."""
    if kind == "text":
        return data
    if kind not in ("speech", "image"):
        raise InputError(f"unknown kind {kind!r}; use text, speech or image")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InputError(f"a {kind} item must be the file's bytes in base64") from None
    if kind == "speech":
        return raw
    from xmodal_core.images import load_image

    return load_image(raw)


def _model(name: str):
    import xmodal_core as xm
    from xmodal_core import spaces
    from xmodal_core.api import Model

    return Model("in-use", spaces.current_space()) if name in ("", "in-use") else xm.load(name)


@guarded
def search(query: str, kind: str = "text", mode: str = "cascade", k: int = 12, gallery: str = "default",
           target: str = "images") -> dict:
    """Search a gallery -> {"hits": [{rank, score, id, caption, image, audio}], "transcript", "model",
    "timings_ms"}. `query`: text, or base64 file bytes with kind "speech" / "image"."""
    import xmodal_core as xm

    result = xm.search(_decode(kind, query), kind=kind, mode=mode, k=int(k), gallery=gallery or "default",
                       target=target)
    return {"hits": [{"rank": h.rank, "score": h.score, "id": h.item.id, "caption": h.item.text,
                      "image": h.item.image, "audio": h.item.audio} for h in result.hits],
            "transcript": result.transcript, "model": result.model,
            "timings_ms": [[name, ms] for name, ms in result.timings]}


@guarded
def embed(items: list[str], kind: str = "text", model: str = "in-use") -> list[list[float]]:
    """Unit-norm embeddings in the shared space, one row per item (texts, or base64 files)."""
    if not items:
        raise InputError("no items to embed")
    m = _model(model)
    decoded = [_decode(kind, x) for x in items]
    if kind == "speech":
        from xmodal_core.audio import load_audio

        out = m.encode_speech([load_audio(x) for x in decoded])
    else:
        out = m.encode_text(decoded) if kind == "text" else m.encode_image(decoded)
    return out.tolist()


@guarded
def zeroshot(items: list[str], classes: list[str], kind: str = "speech", templates: list[str] | None = None,
             model: str = "in-use") -> dict:
    """Zero-shot classes of recordings or images (base64 files) -> {"classes", "predicted", "scores"}."""
    import xmodal_core as xm
    from xmodal_core.audio import load_audio

    decoded = [_decode(kind, x) for x in items]
    if kind == "speech":
        decoded = [load_audio(x).samples for x in decoded]
    result = xm.zeroshot(decoded, classes, templates=templates or ["{}"], model=_model(model), modality=kind)
    return {"classes": result.classes, "predicted": result.predicted, "scores": result.scores.tolist()}


@guarded
def runs(status: str = "") -> list[dict]:
    """Training runs in this home, newest first: id, name, kind, status, step, total_steps."""
    from xmodal_core import spaces

    return [{"id": r.id, "name": r.name, "kind": r.kind, "status": r.status, "step": r.step,
             "total_steps": r.total_steps} for r in spaces.shared_store().list_runs(status=status or None)]


def build() -> None:
    """Register the endpoints (inside the app's Blocks)."""
    for fn in (search, embed, zeroshot):
        gr.api(fn, api_name=fn.__name__, concurrency_id=HEAVY, concurrency_limit=HEAVY_LIMIT)
    gr.api(runs, api_name="runs", queue=False)


def hide_other_endpoints(demo: gr.Blocks) -> None:
    """Every event that is not one of `API_NAMES` becomes private: the API page lists only those."""
    # XMODAL_UI_ENDPOINTS=1 (robustness drivers only) leaves the page handlers callable but unlisted,
    # so a script can send them the same bad inputs a person types into the page.
    hidden = "undocumented" if os.environ.get("XMODAL_UI_ENDPOINTS") == "1" else "private"
    for fn in demo.fns.values():
        if fn.api_name not in API_NAMES:
            fn.api_visibility = hidden
