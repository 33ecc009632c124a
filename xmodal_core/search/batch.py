"""Batch search for evaluation, as CLIP_benchmark does: a CSV of queries goes in, one result per
query and a summary (R@1/5/10 against the expected items, latency p50/p95) come out.

A queries file is a CSV with a header and one query per row: exactly one of `audio` (a sound
file), `image` (a picture) or `text` (a written query) filled; optional `id` (default: the row
number), `expected` (gallery item ids, several separated by `|`) and `label` (a name: a hit
counts when `adapt.vocabulary.entry_of` of its caption equals that of the label). Relative
paths are read from the CSV's own folder; other columns are ignored. Problems with the whole
file raise `InputError`; problems with one row fail that row only, and the batch goes on.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from xmodal_core.errors import InputError
from xmodal_core.gallery import Gallery, open_gallery
from xmodal_core.search import MAX_K, Hit, Query, check_k, check_mode, search
from xmodal_core.validate import check_path_text, read_text_file

__all__ = ["MAX_ROWS", "RECALL_KS", "BatchQuery", "BatchSummary", "QueryResult", "read_queries", "run_queries",
           "search_batch", "summarize"]

MAX_ROWS = 10_000
MAX_FILE_BYTES = 16 * 1024 * 1024  # 10,000 rows of the longest text queries (1,000 characters) fit
RECALL_KS = (1, 5, 10)
QUERY_COLUMNS = {"audio": "speech", "image": "image", "text": "text"}  # column -> `Query` kind
COLUMNS = ("id", *QUERY_COLUMNS, "expected", "label")
HEADER_EXAMPLE = "id,audio,image,text,expected,label"

# progress(done, total): one call after each query.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BatchQuery:
    """One row of a queries file, read but not decoded yet.

    Attributes:
        id: the row's `id`, or its row number (1 = the first row after the header).
        row: the row number.
        kind: "speech" | "image" | "text", or None when the row names no single query.
        value: the text, or the absolute path of the sound or picture file.
        expected: gallery item ids that count as a correct hit.
        label: a name that counts as correct for any item whose caption says it.
        error: what is wrong with the row (then it is not searched).
    """

    id: str
    row: int
    kind: str | None = None
    value: str = ""
    expected: tuple[str, ...] = ()
    label: str | None = None
    error: str | None = None

    @property
    def has_expectation(self) -> bool:
        return bool(self.expected) or bool(self.label)


@dataclass
class QueryResult:
    """What one query found: hits best first (at most k), where the first correct one ranked,
    and the search's latency in milliseconds; or the error that failed the row."""

    id: str
    row: int
    kind: str | None
    value: str
    expected: tuple[str, ...] = ()
    label: str | None = None
    hits: list[Hit] = field(default_factory=list)
    rank: int | None = None  # 1-based rank of the first correct hit within the top max(k, 10); None: not there
    total_ms: float = 0.0
    timings: list[tuple[str, float]] = field(default_factory=list)
    transcript: str | None = None
    heard_as: str | None = None
    path: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def has_expectation(self) -> bool:
        return bool(self.expected) or bool(self.label)

    def found_within(self, k: int) -> bool:
        """Whether a correct item was among the first `k` hits (False for a failed row)."""
        return self.rank is not None and self.rank <= k

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: id, row, query kind and input, hits (rank, item id, score), total_ms, the
        transcript / heard_as / path of a spoken query when there are any, the error of a failed row."""
        hits = [{"rank": h.rank, "id": h.item.id, "score": round(h.score, 4)} for h in self.hits]
        out: dict[str, Any] = {"id": self.id, "row": self.row, "query": self.kind, "input": self.value,
                               "ok": self.ok, "error": self.error, "hits": hits, "total_ms": round(self.total_ms, 1),
                               "timings": [{"stage": s, "ms": round(ms, 1)} for s, ms in self.timings]}
        for key in ("transcript", "heard_as", "path"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.notes:
            out["notes"] = list(self.notes)
        if self.has_expectation:
            out.update(expected=list(self.expected), label=self.label, rank=self.rank)
        return out


@dataclass(frozen=True)
class BatchSummary:
    """Counts, recall over the rows with expectations (failed ones count as misses), latency of
    the queries that ran (milliseconds, linear-interpolated percentiles of `total_ms`)."""

    n: int
    n_failed: int
    n_with_expectations: int
    recall: dict[int, float] | None  # k -> fraction of rows with expectations found within the top k
    p50_ms: float | None
    p95_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: n, n_failed, n_with_expectations, R@1 / R@5 / R@10 (None without
        expectations), p50_ms, p95_ms (None when no query ran)."""
        recall = {f"R@{k}": (round(self.recall[k], 4) if self.recall is not None else None) for k in RECALL_KS}
        return {"n": self.n, "n_failed": self.n_failed, "n_with_expectations": self.n_with_expectations, **recall,
                "p50_ms": self.p50_ms, "p95_ms": self.p95_ms}


# ---------------------------------------------------------------- reading the CSV

def _read_text(path: Path) -> str:
    if not path.exists():
        raise InputError(f"the queries file {str(path)[:200]} does not exist: give a CSV with a header "
                         f"({HEADER_EXAMPLE}) and one query per row")
    text = read_text_file(path, "queries file", max_bytes=MAX_FILE_BYTES).lstrip("\ufeff")  # a spreadsheet's BOM
    if not text.strip():
        raise InputError(f"the queries file {path.name} is empty: write a header ({HEADER_EXAMPLE}) and one query "
                         "per row")
    return text


def _header(cells: list[str], name: str) -> list[str]:
    header = [c.strip().lower() for c in cells]
    named = [h for h in header if h]
    duplicated = sorted({h for h in named if named.count(h) > 1})
    if duplicated:
        raise InputError(f"the queries file {name} has the column {duplicated[0]!r} twice in its header: "
                         "keep one")
    if not any(h in QUERY_COLUMNS for h in header):  # the line itself is not shown: the file may be anything
        raise InputError(f"the queries file {name} has no query column: its first line must be a header naming an "
                         f"audio, image or text column, e.g. {HEADER_EXAMPLE}")
    return header


def _media_path(value: str, column: str, folder: Path) -> str:
    path = check_path_text(value, f"{column} path")
    return str(path if path.is_absolute() else folder / path)


def _parse_row(cells: list[str], header: list[str], row: int, folder: Path) -> BatchQuery:
    values = {h: c.strip() for h, c in zip(header, cells) if h}
    query_id = values.get("id") or str(row)
    if len(cells) > len(header):
        return BatchQuery(query_id, row, error=f"the row has {len(cells)} cells but the header has {len(header)}: "
                                                "put a cell that contains a comma in double quotes")
    filled = [c for c in QUERY_COLUMNS if values.get(c)]
    if len(filled) != 1:
        what = "no query" if not filled else f"several queries ({' and '.join(filled)})"
        return BatchQuery(query_id, row, error=f"the row has {what}: fill exactly one of the columns "
                                                f"{', '.join(c for c in QUERY_COLUMNS if c in header)}")
    column = filled[0]
    expected = tuple(e.strip() for e in values.get("expected", "").split("|") if e.strip())
    base = BatchQuery(query_id, row, QUERY_COLUMNS[column], values[column], expected, values.get("label") or None)
    if column == "text":
        return base
    try:
        return replace(base, value=_media_path(values[column], column, folder))
    except InputError as exc:
        return replace(base, error=str(exc))


def read_queries(path: str | Path) -> list[BatchQuery]:
    """The rows of a queries file, in order; a row with a problem carries it in `error`.

    Rows whose cells are all blank are skipped. A repeated id fails the later row.

    Raises:
        InputError: the file is missing, unreadable, empty, not UTF-8 CSV, has no header with an
            audio, image or text column, or more than `MAX_ROWS` rows.
    """
    path = Path(path).expanduser()
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    queries: list[BatchQuery] = []
    seen: dict[str, int] = {}
    try:
        header = _header(next(reader), path.name)
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(queries) == MAX_ROWS:
                raise InputError(f"the queries file {path.name} has more than {MAX_ROWS:,} rows: split it into files "
                                 f"of at most {MAX_ROWS:,} queries")
            query = _parse_row(cells, header, len(queries) + 1, path.parent.absolute())
            if query.id in seen and query.error is None:
                query = replace(query, error=f"the id {query.id[:200]!r} is already used by row {seen[query.id]}: "
                                             "give every row its own id")
            seen.setdefault(query.id, query.row)
            queries.append(query)
    except csv.Error as exc:
        raise InputError(f"the queries file {path.name} is not valid CSV at line {reader.line_num} ({exc}): "
                         "check its quotes") from None
    if not queries:
        raise InputError(f"the queries file {path.name} has a header but no rows: add one query per row")
    return queries


# ---------------------------------------------------------------- running

class _Judge:
    """Which hits are correct for a row: its expected ids, or items whose caption says its label."""

    def __init__(self, gallery: Gallery):
        self.gallery = gallery
        self._entries: dict[str, str] | None = None  # item id -> entry_of(its text), built on first use
        self._said: set[str] = set()  # every entry some item's caption says

    def entries(self) -> dict[str, str]:
        if self._entries is None:
            from xmodal_core.adapt.vocabulary import entry_of

            self._entries = {it.id: entry_of(it.text) for it in self.gallery.items}
            self._said = set(self._entries.values())
        return self._entries

    def check(self, query: BatchQuery) -> None:
        """InputError when an expected id is not in the gallery or no item's caption says the label."""
        from xmodal_core.adapt.vocabulary import entry_of

        entries = self.entries()  # also fills `_said`
        unknown = [e for e in query.expected if e not in entries]
        if unknown:
            example = self.gallery.items[0].id if len(self.gallery) else "..."
            raise InputError(f"the expected id {unknown[0][:200]!r} is not in gallery {self.gallery.name}: use its "
                             f"items' ids (e.g. {example!r})")
        if query.label is not None and entry_of(query.label) not in self._said:
            raise InputError(f"no item of gallery {self.gallery.name} has a caption saying the label "
                             f"{query.label[:200]!r}: check its spelling, or give expected ids instead")

    def rank(self, query: BatchQuery, hits: Sequence[Hit]) -> int | None:
        """1-based rank of the first correct hit, None when none is."""
        if not query.has_expectation:
            return None
        from xmodal_core.adapt.vocabulary import entry_of

        label = entry_of(query.label) if query.label is not None else None
        for hit in hits:
            if hit.item.id in query.expected or (label is not None and self.entries().get(hit.item.id) == label):
                return hit.rank
        return None


def _run_one(query: BatchQuery, gallery: Gallery, judge: _Judge, mode: str, k: int, gallery_progress) -> QueryResult:
    row = QueryResult(query.id, query.row, query.kind, query.value, query.expected, query.label)
    if query.error is not None:
        row.error = query.error
        return row
    try:
        judge.check(query)
        if query.kind != "text" and not Path(query.value).is_file():
            raise InputError(f"the {'sound' if query.kind == 'speech' else 'picture'} file "
                             f"{query.value[:200]} does not exist or is not a file: check the path (relative paths "
                             "are read from the CSV's folder)")
        found = search(gallery, Query.from_input(query.kind, query.value), mode, k=max(k, RECALL_KS[-1]),
                       progress=gallery_progress)
    except InputError as exc:  # this row's input (AudioError, ImageError too); other rows go on
        row.error = str(exc)
        return row
    row.hits, row.rank = found.hits[:k], judge.rank(query, found.hits)
    row.total_ms, row.timings, row.notes = found.total_ms, list(found.timings), list(found.notes)
    row.transcript, row.heard_as, row.path = found.transcript, found.heard_as, found.path
    return row


def _check_settings(mode: str, k: int) -> None:
    check_mode(mode)
    check_k(k, MAX_K)


def run_queries(gallery: Gallery, queries: Sequence[BatchQuery], mode: str = "cascade", *, k: int = 10,
                progress: Progress | None = None, gallery_progress: Progress | None = None) -> list[QueryResult]:
    """Every query through `search.search`, in one process (the models load once, on the first
    query that needs them), in order; one `QueryResult` per query.

    Args:
        gallery: what to search.
        queries: from `read_queries`.
        mode: one of `search.MODES`.
        k: hits kept per query, 1 .. `search.MAX_K` (recall looks at the top max(k, 10)).
        progress: called with (0, total) before the first query, then (done, total) after each.
        gallery_progress: passed to `search` while a gallery is embedded for the first time.

    Raises:
        InputError: an unknown mode or a bad k (before any query runs). Errors that are not
            about a row's input (a missing model, a damaged data set) stop the batch.
    """
    _check_settings(mode, k)
    judge, results = _Judge(gallery), []
    if progress is not None:
        progress(0, len(queries))
    for query in queries:
        results.append(_run_one(query, gallery, judge, mode, int(k), gallery_progress))
        if progress is not None:
            progress(len(results), len(queries))
    return results


def summarize(results: Sequence[QueryResult]) -> BatchSummary:
    """n, n_failed, R@1/5/10 over the rows with expectations, p50/p95 of the successful rows' total_ms."""
    import numpy as np

    judged = [r for r in results if r.has_expectation]
    recall = {k: sum(r.found_within(k) for r in judged) / len(judged) for k in RECALL_KS} if judged else None
    latencies = [r.total_ms for r in results if r.ok]
    p50, p95 = (round(float(v), 1) for v in np.percentile(latencies, [50, 95])) if latencies else (None, None)
    return BatchSummary(n=len(results), n_failed=sum(not r.ok for r in results), n_with_expectations=len(judged),
                        recall=recall, p50_ms=p50, p95_ms=p95)


def search_batch(path: str | Path, gallery: str = "default", mode: str = "cascade", *, k: int = 10,
                 progress: Progress | None = None,
                 gallery_progress: Progress | None = None) -> tuple[list[QueryResult], BatchSummary]:
    """Read a queries file, open the gallery by name, run every query, summarise.

    The file is read and checked before the gallery opens, so a bad file fails fast."""
    _check_settings(mode, k)
    queries = read_queries(path)
    opened = open_gallery(gallery, progress=gallery_progress)
    results = run_queries(opened, queries, mode, k=k, progress=progress, gallery_progress=gallery_progress)
    return results, summarize(results)
