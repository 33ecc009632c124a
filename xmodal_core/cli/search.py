"""`xmodal search`: search a gallery with a spoken, pictured or written query.

    xmodal search --query-audio owl.wav --gallery default [--k 10] [--mode coarse|ctf|fine|cascade|asif|direct|auto] [--json]
    xmodal search --queries queries.csv --gallery default --mode cascade [--k 10] [--json]

`--queries` runs a CSV of queries in one process and summarises R@1/5/10 and latency
(`xmodal_core.search.batch`).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from xmodal_core.cli.common import item_bar, print_json
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
    if args.queries is not None:
        return cmd_search_batch(args)
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


def _print_row(row) -> None:
    if not row.ok:
        print(f"{row.id}  FAILED (row {row.row}): {row.error}")
        return
    found = "" if not row.has_expectation else f"  correct at {row.rank}" if row.rank else "  no correct hit found"
    print(f"{row.id}  {row.kind}  {row.total_ms:.0f} ms{found}")
    if row.transcript is not None:
        print(f"    heard: {row.transcript!r}" + (f" ({row.path}: {row.heard_as!r})" if row.path else ""))
    for h in row.hits:
        print(f"    {h.rank:>3}  {h.score:.3f}  {h.item.text}  [{h.item.id}]")


def _print_summary(summary) -> None:
    line = f"{summary.n} queries, {summary.n_failed} failed"
    if summary.recall is not None:
        line += ("; " + "  ".join(f"R@{k} {v:.3f}" for k, v in summary.recall.items())
                 + f" over {summary.n_with_expectations} with expectations")
    if summary.p50_ms is not None:
        line += f"; latency p50 {summary.p50_ms:.0f} ms, p95 {summary.p95_ms:.0f} ms"
    print(line)


@contextmanager
def _queries_bar(quiet: bool):
    """progress(done, total) over the queries; the bar opens on the first call, once the file has been read."""
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = item_bar(total, "search", quiet)
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.close()


def cmd_search_batch(args) -> int:
    """`--queries FILE`: every row searched, one result each, then the summary; exits 1 when every row failed."""
    import sys

    from xmodal_core.search.batch import search_batch

    mode, quiet = SEARCH_MODES[args.mode], args.quiet or args.json
    with _queries_bar(quiet) as progress:
        results, summary = search_batch(args.queries, args.gallery, mode, k=args.k, progress=progress,
                                        gallery_progress=_bar(quiet))
    if args.json:
        print_json({"queries": [r.as_dict() for r in results],
                    "summary": {**summary.as_dict(), "gallery": args.gallery, "mode": mode, "k": args.k}})
    else:
        print(f"{mode} search of gallery {args.gallery}, {len(results)} queries")
        for row in results:
            _print_row(row)
        _print_summary(summary)
    if summary.n_failed == summary.n:
        print(f"error: all {summary.n} queries failed: see each row's error", file=sys.stderr)
        return 1
    return 0


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("search", help="search a gallery with a spoken, pictured or written query")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query-audio", metavar="FILE")
    q.add_argument("--query-image", metavar="FILE")
    q.add_argument("--query-text", metavar="TEXT")
    q.add_argument("--queries", metavar="CSV", help="a CSV of queries (columns audio|image|text, optional id, "
                                                   "expected, label): one result each, then R@1/5/10 and latency")
    p.add_argument("--gallery", default="default", help="default, recordings, or a folder gallery's name")
    p.add_argument("--k", type=int, default=10, help="hits shown per query (recall looks at the top max(k, 10))")
    p.add_argument("--mode", default="coarse", choices=sorted(SEARCH_MODES))
    p.add_argument("--quiet", action="store_true", help="no progress bars (queries done, a gallery first embedded)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)
