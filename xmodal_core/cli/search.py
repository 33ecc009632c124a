"""`xmodal search`: search a gallery with a spoken, pictured or written query.

    xmodal search --query-audio owl.wav --gallery default [--k 10] [--mode coarse|ctf|fine|cascade|asif|direct|auto] [--json]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from xmodal_core.cli.common import print_json
from xmodal_core.errors import InputError

SEARCH_MODES = {"coarse": "coarse", "ctf": "coarse-to-fine", "coarse-to-fine": "coarse-to-fine", "fine": "fine",
                "cascade": "cascade", "asif": "asif", "direct": "direct", "auto": "auto"}


def search_query(*, audio: str | None = None, image: str | None = None, text: str | None = None,
                 gallery: str = "default", k: int = 10, mode: str = "coarse", progress=None) -> dict[str, Any]:
    """One search from a shell: exactly one query, a gallery name, a mode; returns JSON-able hits."""
    from xmodal_core.gallery import open_gallery
    from xmodal_core.search import Query, format_timings, search, search_recordings

    given = [(kind, value) for kind, value in (("speech", audio), ("image", image), ("text", text)) if value is not None]
    if len(given) != 1:
        raise InputError("give exactly one query: --query-audio FILE, --query-image FILE or --query-text TEXT")
    if mode not in SEARCH_MODES:
        raise InputError(f"unknown mode {mode!r}; use one of {', '.join(SEARCH_MODES)}")
    kind, value = given[0]
    if kind != "text" and not Path(value).expanduser().is_file():
        raise InputError(f"query file {value} does not exist")
    query = Query.from_input(kind, str(Path(value).expanduser()) if kind != "text" else value)
    opened = open_gallery(gallery, progress=progress)
    if opened.kind == "recordings":  # spoken captions: ranked by their own search (see search_recordings)
        result = search_recordings(opened, query, SEARCH_MODES[mode], k=int(k), progress=progress)
    else:
        result = search(opened, query, SEARCH_MODES[mode], k=int(k), progress=progress)
    return {"mode": result.mode, "query": kind, "model": result.model, "transcript": result.transcript,
            "path": result.path or None, "heard_as": result.heard_as, "confidence": result.confidence,
            "notes": result.notes, "total_ms": round(result.total_ms, 1),
            "timings": [{"stage": s, "ms": ms} for s, ms in format_timings(result)],
            "hits": [{"rank": h.rank, "score": round(h.score, 4), "id": h.item.id, "caption": h.item.text,
                      "image": h.item.image, **({"audio": h.item.audio} if h.item.audio else {})}
                     for h in result.hits]}


def _bar(quiet: bool):
    if quiet:
        return None
    from xmodal_core.progress import console_progress

    report = console_progress()
    return lambda done, total: report("prepare gallery", done, total)


def cmd_search(args) -> int:
    result = search_query(audio=args.query_audio, image=args.query_image, text=args.query_text, gallery=args.gallery,
                          k=args.k, mode=args.mode, progress=_bar(args.quiet or args.json))
    if args.json:
        print_json(result)
        return 0
    print(f"{result['mode']} search ({result['model']}), {result['total_ms']:.0f} ms")
    if result["transcript"] is not None:
        print(f"heard: {result['transcript']!r}")
    for note in result["notes"]:
        print(f"note: {note}")
    for h in result["hits"]:
        print(f"{h['rank']:>3}  {h['score']:.3f}  {h['caption']}  [{h['id']}]")
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("search", help="search a gallery with a spoken, pictured or written query")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query-audio", metavar="FILE")
    q.add_argument("--query-image", metavar="FILE")
    q.add_argument("--query-text", metavar="TEXT")
    p.add_argument("--gallery", default="default", help="default, recordings, or a folder gallery's name")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--mode", default="coarse", choices=sorted(SEARCH_MODES))
    p.add_argument("--quiet", action="store_true", help="no progress bar while a gallery is first embedded")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
