"""The run store: one SQLite file (via sqlmodel) holding runs, their metrics,
evaluations and artifacts, labeling decisions and saved template lists.

Safe to share between the threads of the app and between processes (the app, a
training worker, the CLI): WAL journal, a busy timeout, and every write is one
short `BEGIN IMMEDIATE` transaction, so a writer killed mid-run loses at most the
row it was writing. Reads return frozen dataclasses, never live ORM objects.
Timestamps are Unix seconds (float, UTC).

Run status moves only along these edges (anything else raises `StoreError`):

    queued  -> running | cancelled | failed
    running -> completed | failed | cancelled
    failed | cancelled -> queued          (resume)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

from sqlalchemy import UniqueConstraint, delete, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from xmodal_core import paths
from xmodal_core.errors import InputError, StoreError

RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
Decision = Literal["accept", "reject", "edit"]

STATUSES: tuple[str, ...] = ("queued", "running", "completed", "failed", "cancelled")
FINISHED: tuple[str, ...] = ("completed", "failed", "cancelled")
DECISIONS: tuple[str, ...] = ("accept", "reject", "edit")
_TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"completed", "failed", "cancelled"}),
    "failed": frozenset({"queued"}),
    "cancelled": frozenset({"queued"}),
    "completed": frozenset(),
}
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0


# ---------------------------------------------------------------- tables (private)

class _RunTable(SQLModel, table=True):
    __tablename__ = "runs"
    id: int | None = Field(default=None, primary_key=True)
    name: str
    kind: str = Field(index=True)
    config: str  # JSON object
    status: str = Field(index=True)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    device: str | None = None
    error: str | None = None
    cancel_requested: bool = False
    pid: int | None = None
    pid_start: int | None = None  # process start time (clock ticks since boot) to catch pid reuse
    hostname: str | None = None
    step: int = 0
    total_steps: int | None = None


class _MetricTable(SQLModel, table=True):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("run_id", "step", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", index=True)
    step: int
    epoch: float
    name: str
    value: float | None  # NULL stands for NaN (SQLite cannot store NaN)
    time: float


class _EvaluationTable(SQLModel, table=True):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("run_id", "dataset", "split", "metric"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", index=True)
    dataset: str
    split: str
    metric: str
    value: float | None
    created_at: float


class _ArtifactTable(SQLModel, table=True):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "path"),)
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="runs.id", ondelete="CASCADE", index=True)
    kind: str
    path: str
    sha256: str
    size: int
    created_at: float


class _LabelTable(SQLModel, table=True):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("dataset", "item_id"),)
    id: int | None = Field(default=None, primary_key=True)
    dataset: str = Field(index=True)
    item_id: str
    decision: str
    text: str | None = None
    label: str | None = None
    audio_path: str | None = None
    note: str | None = None
    created_at: float
    updated_at: float


class _TemplateListTable(SQLModel, table=True):
    __tablename__ = "template_lists"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    text: str
    created_at: float
    updated_at: float


_TABLES = [t.__table__ for t in (_RunTable, _MetricTable, _EvaluationTable, _ArtifactTable,
                                 _LabelTable, _TemplateListTable)]


# ---------------------------------------------------------------- public rows

@dataclass(frozen=True)
class Run:
    """One training (or evaluation) run. `config` is the JSON object it was created with."""
    id: int
    name: str
    kind: str
    config: dict[str, Any]
    status: RunStatus
    created_at: float
    started_at: float | None
    finished_at: float | None
    device: str | None
    error: str | None
    cancel_requested: bool
    pid: int | None
    hostname: str | None
    step: int
    total_steps: int | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True)
class Metric:
    run_id: int
    step: int
    epoch: float
    name: str
    value: float
    time: float


@dataclass(frozen=True)
class Evaluation:
    run_id: int
    dataset: str
    split: str
    metric: str
    value: float
    created_at: float


@dataclass(frozen=True)
class Artifact:
    run_id: int
    kind: str
    path: str
    sha256: str
    size: int
    created_at: float


@dataclass(frozen=True)
class Label:
    dataset: str
    item_id: str
    decision: Decision
    text: str | None
    label: str | None
    audio_path: str | None
    note: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class TemplateList:
    name: str
    text: str
    created_at: float
    updated_at: float

    @property
    def templates(self) -> list[str]:
        """Non-empty, stripped lines, e.g. ["a photo of a {}", ...]."""
        return [line.strip() for line in self.text.splitlines() if line.strip()]


# ---------------------------------------------------------------- helpers

def _to_float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _from_float(value: Any, what: str) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a number, got {value!r}") from exc
    return None if math.isnan(value) else value


def _run(row: _RunTable) -> Run:
    return Run(id=row.id, name=row.name, kind=row.kind, config=json.loads(row.config),
               status=row.status, created_at=row.created_at, started_at=row.started_at,
               finished_at=row.finished_at, device=row.device, error=row.error,
               cancel_requested=bool(row.cancel_requested), pid=row.pid, hostname=row.hostname,
               step=row.step, total_steps=row.total_steps)


def _label(row: _LabelTable) -> Label:
    return Label(dataset=row.dataset, item_id=row.item_id, decision=row.decision, text=row.text,
                 label=row.label, audio_path=row.audio_path, note=row.note,
                 created_at=row.created_at, updated_at=row.updated_at)


def _templates(row: _TemplateListTable) -> TemplateList:
    return TemplateList(name=row.name, text=row.text, created_at=row.created_at, updated_at=row.updated_at)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def process_start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot) on Linux; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # fields after "(comm)", starting at state
    try:
        return int(fields[19])  # field 22 of proc(5)
    except (IndexError, ValueError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether `pid` is a live (not zombie) process on this host, and the same one
    that had `start_ticks` when that is known (a dead run's pid may have been reused)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    if stat[stat.rfind(")") + 2:].split()[0] in ("Z", "X"):
        return False
    if start_ticks is not None:
        return process_start_ticks(pid) == start_ticks
    return True


# ---------------------------------------------------------------- the store

class Store:
    """The run store at `path` (default `xmodal_core.paths.db_path()`).

    One `Store` per process; it may be shared by that process's threads. Opening
    creates the tables if needed and marks runs left 'running' by a dead process on
    this host as failed (`recover_dead_runs`).
    """

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = BUSY_TIMEOUT_S,
                 recover: bool = True):
        self.path = Path(path) if path is not None else paths.db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
        )
        event.listen(self._engine, "connect", self._on_connect)
        event.listen(self._engine, "begin", self._on_begin)
        self._writer = self._engine.execution_options(sqlite_begin="IMMEDIATE")
        self._hostname = socket.gethostname()
        self._create_schema()
        if recover:
            self.recover_dead_runs()

    # -- connection plumbing

    def _on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (the pysqlite driver's own
        # implicit BEGIN is DEFERRED, which can fail with SQLITE_BUSY on upgrade to a write).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @staticmethod
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    def _locked(self, exc: OperationalError) -> StoreError:
        return StoreError(f"the run store {self.path} is busy or unwritable ({exc.orig}); another process "
                          f"held it for more than {self.busy_timeout_s:g} s — try again, or check the disk")

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One short write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        try:
            with Session(self._writer, expire_on_commit=False) as session:
                yield session
                session.commit()
        except OperationalError as exc:
            raise self._locked(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self._engine) as session:
                yield session
        except OperationalError as exc:
            raise self._locked(exc) from exc

    def _create_schema(self) -> None:
        try:
            with self._writer.begin() as conn:  # under the write lock: safe if two processes open at once
                version = conn.exec_driver_sql("PRAGMA user_version").scalar()
                if version > SCHEMA_VERSION:
                    raise StoreError(f"the run store {self.path} has schema version {version}, newer than "
                                     f"this xmodal understands ({SCHEMA_VERSION}); upgrade xmodal")
                SQLModel.metadata.create_all(conn, tables=_TABLES)
                conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except OperationalError as exc:
            raise self._locked(exc) from exc

    def close(self) -> None:
        """Close pooled connections. The store reopens them if used again."""
        self._engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def integrity_check(self) -> str:
        """SQLite's `PRAGMA integrity_check`: "ok" when the file is sound."""
        with self._read() as session:
            rows = session.connection().exec_driver_sql("PRAGMA integrity_check").all()
        return "\n".join(str(r[0]) for r in rows)

    # -- runs

    def _get_run_row(self, session: Session, run_id: int) -> _RunTable:
        row = session.get(_RunTable, int(run_id))
        if row is None:
            raise StoreError(f"no run with id {run_id} in {self.path}; `xmodal runs` lists the runs")
        return row

    @staticmethod
    def _move(row: _RunTable, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"unknown run status {status!r}; use one of {', '.join(STATUSES)}")
        if status not in _TRANSITIONS[row.status]:
            raise StoreError(f"run {row.id} is {row.status}; it cannot become {status}")
        row.status = status

    def create_run(self, name: str, kind: str, config: Mapping[str, Any]) -> int:
        """A new queued run; returns its id. `config` must be JSON-serialisable."""
        try:
            config_json = json.dumps(dict(config), sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InputError(f"run config is not plain JSON ({exc}); use numbers, strings, lists and dicts") from exc
        if not str(kind).strip():
            raise InputError("a run needs a kind, e.g. 'align' or 'vgs'")
        with self._write() as session:
            row = _RunTable(name=str(name), kind=str(kind), config=config_json, status="queued",
                            created_at=time.time())
            session.add(row)
            session.flush()
            return int(row.id)

    def _claim(self, row: _RunTable, pid: int | None, device: str | None, total_steps: int | None) -> None:
        self._move(row, "running")
        pid = os.getpid() if pid is None else int(pid)
        row.pid, row.pid_start, row.hostname = pid, process_start_ticks(pid), self._hostname
        row.started_at = time.time()
        row.finished_at, row.error, row.cancel_requested = None, None, False
        if device is not None:
            row.device = str(device)
        if total_steps is not None:
            row.total_steps = int(total_steps)

    def start_run(self, run_id: int, *, device: str | None = None, total_steps: int | None = None,
                  pid: int | None = None) -> Run:
        """queued -> running, owned by process `pid` (default: this one) on this host."""
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            self._claim(row, pid, device, total_steps)
            return _run(row)

    def claim_next_run(self, *, pid: int | None = None) -> Run | None:
        """Atomically take the oldest queued run (queued -> running), or None if there is none."""
        with self._write() as session:
            row = session.exec(select(_RunTable).where(_RunTable.status == "queued")
                               .order_by(_RunTable.id).limit(1)).first()
            if row is None:
                return None
            self._claim(row, pid, None, None)
            return _run(row)

    def update_run(self, run_id: int, *, pid: int | None = None, device: str | None = None,
                   total_steps: int | None = None) -> Run:
        """Change the owner process, device or step count of a running run (a worker
        taking over a run its parent claimed)."""
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            if row.status != "running":
                raise StoreError(f"run {run_id} is {row.status}, not running; only a running run can be updated")
            if pid is not None:
                row.pid, row.pid_start, row.hostname = int(pid), process_start_ticks(int(pid)), self._hostname
            if device is not None:
                row.device = str(device)
            if total_steps is not None:
                row.total_steps = int(total_steps)
            return _run(row)

    def finish_run(self, run_id: int, status: RunStatus, error: str | None = None) -> Run:
        """Move a run to completed / failed / cancelled, with the error text (traceback) if any."""
        if status not in FINISHED:
            raise StoreError(f"finish_run needs one of {', '.join(FINISHED)}, not {status!r}")
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            self._move(row, status)
            row.finished_at = time.time()
            if error is not None:
                row.error = str(error)
            return _run(row)

    def requeue_run(self, run_id: int) -> Run:
        """failed / cancelled -> queued, to resume from its last checkpoint."""
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            self._move(row, "queued")
            row.cancel_requested, row.finished_at, row.error = False, None, None
            return _run(row)

    def request_cancel(self, run_id: int) -> Run:
        """Ask a run to stop. A queued run is cancelled at once; a running one gets the
        flag and its trainer stops at the next step; a running one whose process on this host
        is gone is cancelled at once. Finished runs raise StoreError."""
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            if row.status == "queued" or (row.status == "running" and self._is_dead(row)):
                # nobody would ever see the flag of a run whose process is gone: cancel it now
                self._move(row, "cancelled")
                row.finished_at = time.time()
            elif row.status != "running":
                raise StoreError(f"run {run_id} is already {row.status}; there is nothing to cancel")
            row.cancel_requested = True
            return _run(row)

    def cancel_requested(self, run_id: int) -> bool:
        with self._read() as session:
            flag = session.exec(select(_RunTable.cancel_requested).where(_RunTable.id == int(run_id))).first()
        if flag is None:
            raise StoreError(f"no run with id {run_id} in {self.path}")
        return bool(flag)

    def get_run(self, run_id: int) -> Run:
        with self._read() as session:
            return _run(self._get_run_row(session, run_id))

    def list_runs(self, *, status: str | Sequence[str] | None = None, kind: str | None = None,
                  limit: int | None = None) -> list[Run]:
        """Runs, newest first, optionally filtered by status(es) and kind."""
        query = select(_RunTable).order_by(_RunTable.id.desc())
        if status is not None:
            query = query.where(_RunTable.status.in_([status] if isinstance(status, str) else list(status)))
        if kind is not None:
            query = query.where(_RunTable.kind == kind)
        if limit is not None:
            query = query.limit(int(limit))
        with self._read() as session:
            return [_run(r) for r in session.exec(query).all()]

    def delete_run(self, run_id: int) -> None:
        """Forget a finished or queued run and its metrics, evaluations and artifact rows
        (files on disk are left alone)."""
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            if row.status == "running":
                raise StoreError(f"run {run_id} is running; cancel it before deleting it")
            session.delete(row)

    def _is_dead(self, row: _RunTable) -> bool:
        """A running row owned by this host whose process no longer exists."""
        return row.hostname == self._hostname and (row.pid is None or not pid_alive(row.pid, row.pid_start))

    def dead_runs(self) -> list[int]:
        """Ids of runs 'running' on this host whose process is gone (read only: cheap enough
        for a page's refresh timer)."""
        with self._read() as session:
            rows = session.exec(select(_RunTable).where(_RunTable.status == "running")).all()
            return [int(r.id) for r in rows if self._is_dead(r)]

    def recover_dead_runs(self) -> list[int]:
        """Mark runs left 'running' by a process on this host that no longer exists as
        failed (with a note); returns their ids. Runs owned by other hosts are left alone.
        Called when a store is opened and on each Train page refresh."""
        if not self.dead_runs():
            return []  # the common case takes no write lock
        recovered = []
        with self._write() as session:
            rows = session.exec(select(_RunTable).where(_RunTable.status == "running",
                                                        _RunTable.hostname == self._hostname)).all()
            for row in rows:
                if not self._is_dead(row):
                    continue
                note = (f"the process running it (pid {row.pid} on {row.hostname}) exited without finishing "
                        f"(killed or crashed); marked failed at "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
                row.status, row.finished_at = "failed", time.time()
                row.error = f"{row.error}\n{note}" if row.error else note
                recovered.append(int(row.id))
        return recovered

    # -- metrics

    def log_metrics(self, run_id: int, step: int, epoch: float, metrics: Mapping[str, float],
                    *, at: float | None = None) -> None:
        """Record `{name: value}` at `step` in one transaction. Logging the same
        (step, name) again replaces the value (a resumed run re-logs steps after its
        last checkpoint). NaN is kept as NaN."""
        if not metrics:
            return
        at = time.time() if at is None else float(at)
        values = [dict(run_id=int(run_id), step=int(step), epoch=float(epoch), name=str(name),
                       value=_from_float(value, f"metric {name!r}"), time=at)
                  for name, value in metrics.items()]
        stmt = sqlite_insert(_MetricTable).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "step", "name"],
                                          set_=dict(epoch=stmt.excluded.epoch, value=stmt.excluded.value,
                                                    time=stmt.excluded.time))
        with self._write() as session:
            row = self._get_run_row(session, run_id)
            session.connection().execute(stmt)
            row.step = max(row.step, int(step))

    def metrics(self, run_id: int, name: str | None = None, *, since_step: int | None = None) -> list[Metric]:
        """Metric rows of a run ordered by (step, name); `since_step` keeps steps > it (polling)."""
        query = select(_MetricTable).where(_MetricTable.run_id == int(run_id))
        if name is not None:
            query = query.where(_MetricTable.name == name)
        if since_step is not None:
            query = query.where(_MetricTable.step > int(since_step))
        with self._read() as session:
            self._get_run_row(session, run_id)
            rows = session.exec(query.order_by(_MetricTable.step, _MetricTable.name)).all()
            return [Metric(run_id=r.run_id, step=r.step, epoch=r.epoch, name=r.name, value=_to_float(r.value),
                           time=r.time) for r in rows]

    # -- evaluations and artifacts

    def add_evaluation(self, run_id: int, dataset: str, split: str, metrics: Mapping[str, float]) -> None:
        """Record evaluation results `{metric: value}` of a run on a dataset split;
        evaluating again replaces the earlier values of the same metrics."""
        if not metrics:
            return
        now = time.time()
        values = [dict(run_id=int(run_id), dataset=str(dataset), split=str(split), metric=str(metric),
                       value=_from_float(value, f"evaluation metric {metric!r}"), created_at=now)
                  for metric, value in metrics.items()]
        stmt = sqlite_insert(_EvaluationTable).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "dataset", "split", "metric"],
                                          set_=dict(value=stmt.excluded.value, created_at=stmt.excluded.created_at))
        with self._write() as session:
            self._get_run_row(session, run_id)
            session.connection().execute(stmt)

    def evaluations(self, run_id: int | None = None, *, dataset: str | None = None) -> list[Evaluation]:
        """Evaluation rows (of one run, or all runs), ordered by run, dataset, split, metric."""
        query = select(_EvaluationTable)
        if run_id is not None:
            query = query.where(_EvaluationTable.run_id == int(run_id))
        if dataset is not None:
            query = query.where(_EvaluationTable.dataset == dataset)
        query = query.order_by(_EvaluationTable.run_id, _EvaluationTable.dataset, _EvaluationTable.split,
                               _EvaluationTable.metric)
        with self._read() as session:
            if run_id is not None:
                self._get_run_row(session, run_id)
            return [Evaluation(run_id=r.run_id, dataset=r.dataset, split=r.split, metric=r.metric,
                               value=_to_float(r.value), created_at=r.created_at)
                    for r in session.exec(query).all()]

    def add_artifact(self, run_id: int, kind: str, path: str | Path) -> Artifact:
        """Record a file a run produced (checkpoint, heads, config) with its sha256.
        Recording the same path again updates its hash (a rewritten checkpoint)."""
        file = Path(path).resolve()
        if not file.is_file():
            raise StoreError(f"artifact {file} does not exist or is not a file")
        digest, size, now = sha256_file(file), file.stat().st_size, time.time()
        stmt = sqlite_insert(_ArtifactTable).values(run_id=int(run_id), kind=str(kind), path=str(file),
                                                    sha256=digest, size=size, created_at=now)
        stmt = stmt.on_conflict_do_update(index_elements=["run_id", "path"],
                                          set_=dict(kind=stmt.excluded.kind, sha256=stmt.excluded.sha256,
                                                    size=stmt.excluded.size, created_at=stmt.excluded.created_at))
        with self._write() as session:
            self._get_run_row(session, run_id)
            session.connection().execute(stmt)
        return Artifact(run_id=int(run_id), kind=str(kind), path=str(file), sha256=digest, size=size, created_at=now)

    def artifacts(self, run_id: int, kind: str | None = None) -> list[Artifact]:
        query = select(_ArtifactTable).where(_ArtifactTable.run_id == int(run_id))
        if kind is not None:
            query = query.where(_ArtifactTable.kind == kind)
        with self._read() as session:
            self._get_run_row(session, run_id)
            return [Artifact(run_id=r.run_id, kind=r.kind, path=r.path, sha256=r.sha256, size=r.size,
                             created_at=r.created_at)
                    for r in session.exec(query.order_by(_ArtifactTable.id)).all()]

    # -- labels

    def save_label(self, dataset: str, item_id: str, decision: Decision, *, text: str | None = None,
                   label: str | None = None, audio_path: str | Path | None = None,
                   note: str | None = None) -> Label:
        """Record a person's decision on one dataset item (accept | reject | edit, with
        edited text / label / a re-recorded audio path). Saving again replaces it."""
        if decision not in DECISIONS:
            raise InputError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        if not str(dataset).strip() or not str(item_id).strip():
            raise InputError("a label needs a dataset name and an item id")
        now = time.time()
        with self._write() as session:
            row = session.exec(select(_LabelTable).where(_LabelTable.dataset == str(dataset),
                                                         _LabelTable.item_id == str(item_id))).first()
            if row is None:
                row = _LabelTable(dataset=str(dataset), item_id=str(item_id), decision=decision, created_at=now,
                                  updated_at=now)
                session.add(row)
            row.decision, row.text, row.label, row.note = decision, text, label, note
            row.audio_path = None if audio_path is None else str(audio_path)
            row.updated_at = now
            return _label(row)

    def labels(self, dataset: str | None = None, *, decision: str | None = None) -> list[Label]:
        """Saved labels, ordered by dataset and item id."""
        query = select(_LabelTable)
        if dataset is not None:
            query = query.where(_LabelTable.dataset == dataset)
        if decision is not None:
            query = query.where(_LabelTable.decision == decision)
        with self._read() as session:
            return [_label(r) for r in session.exec(query.order_by(_LabelTable.dataset, _LabelTable.item_id)).all()]

    def delete_label(self, dataset: str, item_id: str) -> None:
        with self._write() as session:
            result = session.connection().execute(delete(_LabelTable).where(_LabelTable.dataset == dataset,
                                                            _LabelTable.item_id == str(item_id)))
            if result.rowcount == 0:
                raise StoreError(f"no label for item {item_id!r} of dataset {dataset!r}")

    # -- template lists

    def save_templates(self, name: str, text: str) -> TemplateList:
        """Save (or replace) a named template list; `text` has one template per line."""
        from xmodal_core.validate import MAX_NAME_CHARS, MAX_TEMPLATE_CHARS, MAX_TEMPLATES, check_text

        if not isinstance(name, str) or not name.strip():
            raise InputError("a template list needs a name")
        name = check_text(name, "template list name", max_chars=MAX_NAME_CHARS).strip()
        text = check_text(text, "template list", max_chars=MAX_TEMPLATES * MAX_TEMPLATE_CHARS, allow_empty=True)
        now = time.time()
        with self._write() as session:
            row = session.exec(select(_TemplateListTable).where(_TemplateListTable.name == name)).first()
            if row is None:
                row = _TemplateListTable(name=str(name), text=str(text), created_at=now, updated_at=now)
                session.add(row)
            row.text, row.updated_at = str(text), now
            return _templates(row)

    def template_lists(self) -> list[TemplateList]:
        """Saved template lists, by name."""
        with self._read() as session:
            return [_templates(r) for r in
                    session.exec(select(_TemplateListTable).order_by(_TemplateListTable.name)).all()]

    def get_templates(self, name: str) -> TemplateList:
        with self._read() as session:
            row = session.exec(select(_TemplateListTable).where(_TemplateListTable.name == name)).first()
        if row is None:
            raise StoreError(f"no saved template list named {name!r}")
        return _templates(row)

    def delete_templates(self, name: str) -> None:
        with self._write() as session:
            result = session.connection().execute(delete(_TemplateListTable).where(_TemplateListTable.name == name))
            if result.rowcount == 0:
                raise StoreError(f"no saved template list named {name!r}")
