"""SQLite storage of the local CT server: tasks, prompt versions, feedback, traces and jobs.

One `Store` per database file. Each thread gets its own connection (`release_thread` closes
it when the thread is done); the database runs in WAL mode so readers never wait for the
writer. Writes are serialised by an in-process lock and ``BEGIN IMMEDIATE`` with a busy
timeout, so concurrent request threads (and a second process on the same file) wait their
turn instead of failing with "database is locked". Every statement is parameterised.

The schema is created on first use and its version is kept in ``schema_version`` so later
releases can migrate old files. Methods return the wire Structs of `kaizen_sdk.models`;
a missing object raises `NotFound`, a clash `Conflict`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec

from kaizen_sdk.local.optimizer import Example
from kaizen_sdk.models import (
    FeedbackRequest,
    FeedbackResult,
    Job,
    Prompt,
    ScoreItem,
    Task,
    TaskCreateRequest,
    TraceRequest,
    TraceResult,
)

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "AUTO_TASK_THRESHOLD",
    "SCHEMA_VERSION",
    "Conflict",
    "NotFound",
    "Store",
    "StoreError",
    "utcnow",
]

logger = logging.getLogger("kaizen_sdk.local.store")

SCHEMA_VERSION = 1
"""Version of the schema this module writes; stored in the ``schema_version`` table."""

AUTO_TASK_THRESHOLD = 50
"""``feedback_threshold`` of a task created implicitly by a trace or feedback naming it."""

ACTIVE_JOB_STATUSES = ("PENDING", "RUNNING")
"""Job statuses that count as "in progress": at most one such job per task."""

BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    schema_json TEXT,
    feedback_threshold INTEGER NOT NULL,
    feedback_retention_limit INTEGER,
    evaluator_config TEXT,
    teacher_model TEXT,
    judge_model TEXT,
    module_type TEXT,
    cost_budget REAL,
    github_repo TEXT,
    github_base_branch TEXT,
    prompt_path TEXT,
    prompt_format TEXT,
    created_at TEXT NOT NULL,
    feedback_count INTEGER NOT NULL DEFAULT 0,
    feedback_since_optimization INTEGER NOT NULL DEFAULT 0,
    last_optimization TEXT
);
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    version_number INTEGER NOT NULL,
    prompt_text TEXT NOT NULL,
    eval_score REAL,
    status TEXT NOT NULL,
    optimizer TEXT,
    dspy_version TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (task_id, version_number)
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    inputs TEXT,
    output TEXT,
    score REAL,
    source TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_task ON feedback (task_id, seq);
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    prompt_text TEXT,
    response_text TEXT,
    model TEXT,
    tokens INTEGER,
    latency_ms REAL,
    score REAL,
    scored_by TEXT,
    prompt_version_id TEXT,
    parent_trace_id TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_task ON traces (task_id, seq);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    prompt_version_id TEXT,
    status TEXT NOT NULL,
    triggered_by TEXT,
    feedback_count INTEGER,
    pr_url TEXT,
    error_message TEXT,
    job_metadata TEXT,
    progress_step TEXT,
    started_at TEXT,
    completed_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_task ON jobs (task_id, seq);
CREATE TABLE IF NOT EXISTS applied_scores (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    applied_at TEXT NOT NULL
);
"""

_TASK_OPTIONAL = (
    "description",
    "feedback_retention_limit",
    "teacher_model",
    "judge_model",
    "module_type",
    "cost_budget",
    "github_repo",
    "github_base_branch",
    "prompt_path",
    "prompt_format",
)


class StoreError(Exception):
    """Base of the errors the store raises on purpose; ``str()`` is a client-safe detail."""


class NotFound(StoreError):
    """The task, trace, job or prompt version does not exist."""


class Conflict(StoreError):
    """The write clashes with existing data (e.g. a duplicate task name)."""


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)


def _ts(value: datetime | None = None) -> str:
    return (value or utcnow()).isoformat()


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _uuid(text: str | None) -> uuid.UUID | None:
    return None if text is None else uuid.UUID(text)


def _as_uuid(ref: str) -> str | None:
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        return None


class Store:
    """The local server's database. Thread-safe; call `close` when done.

    Example::

        store = Store("/tmp/kaizen.db")
        task = store.create_task(TaskCreateRequest(name="summarize"))
        store.close()
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._conns_lock = threading.Lock()
        self._closed = False
        self._migrate()

    def __repr__(self) -> str:
        return f"Store(path={self.path!r})"

    # --- connections ---------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("The store is closed.")
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._conns_lock:
                self._conns[threading.get_ident()] = conn
        return conn

    def release_thread(self) -> None:
        """Close the calling thread's connection, if it has one."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._conns_lock:
                self._conns.pop(threading.get_ident(), None)
            conn.close()

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        self._closed = True
        with self._conns_lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
            current = row["v"]
            if current is None:
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (SCHEMA_VERSION, _ts()),
                )
            elif current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"Database {self.path} has schema version {current}, newer than this "
                    f"kaizen_sdk supports ({SCHEMA_VERSION}); upgrade kaizen_sdk."
                )

    def schema_version(self) -> int:
        """Return the schema version recorded in the database."""
        row = self._conn().execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        return int(row["v"])

    # --- tasks -----------------------------------------------------------------------

    def _task_row(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row | None:
        as_id = _as_uuid(ref)
        row: sqlite3.Row | None = None
        if as_id is not None:
            row = conn.execute("SELECT * FROM tasks WHERE id = ?", (as_id,)).fetchone()
        if row is None:
            row = conn.execute("SELECT * FROM tasks WHERE name = ?", (ref,)).fetchone()
        return row

    def _require_task(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
        row = self._task_row(conn, ref)
        if row is None:
            raise NotFound(f"task {ref!r} not found")
        return row

    def _task_for_write(self, conn: sqlite3.Connection, ref: str) -> sqlite3.Row:
        """Find a task by id or name; create it when *ref* is an unknown name."""
        row = self._task_row(conn, ref)
        if row is not None:
            return row
        if _as_uuid(ref) is not None:
            raise NotFound(f"task {ref!r} not found (create it first or send its name)")
        self._insert_task(conn, TaskCreateRequest(name=ref, feedback_threshold=AUTO_TASK_THRESHOLD))
        return self._require_task(conn, ref)

    def _insert_task(self, conn: sqlite3.Connection, req: TaskCreateRequest) -> str:
        task_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO tasks (id, name, description, schema_json, feedback_threshold,"
            " feedback_retention_limit, evaluator_config, teacher_model, judge_model,"
            " module_type, cost_budget, github_repo, github_base_branch, prompt_path,"
            " prompt_format, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                task_id, req.name, req.description, _json(req.schema_json),
                req.feedback_threshold, req.feedback_retention_limit,
                _json(req.evaluator_config), req.teacher_model, req.judge_model,
                req.module_type, req.cost_budget, req.github_repo, req.github_base_branch,
                req.prompt_path, req.prompt_format, _ts(),
            ),
        )
        return task_id

    def _task(self, conn: sqlite3.Connection, row: sqlite3.Row) -> Task:
        active = conn.execute(
            "SELECT eval_score FROM prompts WHERE task_id = ? AND status = 'active'",
            (row["id"],),
        ).fetchone()
        return Task(
            id=uuid.UUID(row["id"]),
            name=row["name"],
            schema_json=_unjson(row["schema_json"]),
            feedback_threshold=row["feedback_threshold"],
            evaluator_config=_unjson(row["evaluator_config"]),
            created_at=_dt(row["created_at"]),
            feedback_count=row["feedback_count"],
            last_optimization=_dt(row["last_optimization"]),
            active_prompt_score=None if active is None else active["eval_score"],
            threshold_progress=(
                f"{row['feedback_since_optimization']}/{row['feedback_threshold']}"
            ),
            **{name: row[name] for name in _TASK_OPTIONAL},
        )

    def create_task(self, req: TaskCreateRequest) -> Task:
        """Create a task; raises `Conflict` when the name is taken."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM tasks WHERE name = ?", (req.name,)).fetchone():
                raise Conflict(f"a task named {req.name!r} already exists")
            task_id = self._insert_task(conn, req)
            return self._task(conn, self._require_task(conn, task_id))

    def get_task(self, ref: str) -> Task:
        """Return the task with this id or name."""
        conn = self._conn()
        return self._task(conn, self._require_task(conn, ref))

    def list_tasks(self) -> list[Task]:
        """Return every task, oldest first."""
        conn = self._conn()
        rows = conn.execute("SELECT * FROM tasks ORDER BY seq").fetchall()
        return [self._task(conn, row) for row in rows]

    def task_id(self, ref: str) -> str:
        """Return the UUID string of the task with this id or name."""
        return str(self._require_task(self._conn(), ref)["id"])

    # --- prompts ---------------------------------------------------------------------

    @staticmethod
    def _prompt(row: sqlite3.Row) -> Prompt:
        return Prompt(
            id=uuid.UUID(row["id"]),
            task_id=uuid.UUID(row["task_id"]),
            version_number=row["version_number"],
            prompt_text=row["prompt_text"],
            eval_score=row["eval_score"],
            status=row["status"],
            optimizer=row["optimizer"],
            dspy_version=row["dspy_version"],
            created_at=_dt(row["created_at"]),
        )

    def _insert_prompt(
        self, conn: sqlite3.Connection, task_id: str, text: str, *, status: str,
        optimizer: str, eval_score: float | None = None,
    ) -> str:
        row = conn.execute(
            "SELECT COALESCE(MAX(version_number), 0) AS n FROM prompts WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        prompt_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO prompts (id, task_id, version_number, prompt_text, eval_score, status,"
            " optimizer, created_at) VALUES (?,?,?,?,?,?,?,?)",
            (prompt_id, task_id, row["n"] + 1, text, eval_score, status, optimizer, _ts()),
        )
        return prompt_id

    def active_prompt(self, ref: str) -> Prompt:
        """Return the task's active prompt version."""
        conn = self._conn()
        task = self._require_task(conn, ref)
        row = conn.execute(
            "SELECT * FROM prompts WHERE task_id = ? AND status = 'active'", (task["id"],)
        ).fetchone()
        if row is None:
            raise NotFound(f"task {task['name']!r} has no active prompt version yet")
        return self._prompt(row)

    def list_versions(self, ref: str) -> list[Prompt]:
        """Return every prompt version of the task, newest first."""
        conn = self._conn()
        task = self._require_task(conn, ref)
        rows = conn.execute(
            "SELECT * FROM prompts WHERE task_id = ? ORDER BY version_number DESC",
            (task["id"],),
        ).fetchall()
        return [self._prompt(row) for row in rows]

    def activate(self, ref: str, version_id: uuid.UUID) -> Prompt:
        """Make *version_id* the task's active version; the previous one becomes inactive."""
        with self._write() as conn:
            task = self._require_task(conn, ref)
            row = conn.execute(
                "SELECT * FROM prompts WHERE id = ? AND task_id = ?",
                (str(version_id), task["id"]),
            ).fetchone()
            if row is None:
                raise NotFound(f"prompt version {version_id} not found for task {task['name']!r}")
            conn.execute(
                "UPDATE prompts SET status = 'inactive' WHERE task_id = ? AND status = 'active'"
                " AND id != ?",
                (task["id"], row["id"]),
            )
            conn.execute("UPDATE prompts SET status = 'active' WHERE id = ?", (row["id"],))
            updated = conn.execute("SELECT * FROM prompts WHERE id = ?", (row["id"],)).fetchone()
            return self._prompt(updated)

    # --- feedback --------------------------------------------------------------------

    @staticmethod
    def _feedback(row: sqlite3.Row) -> FeedbackResult:
        return FeedbackResult(
            id=uuid.UUID(row["id"]),
            task_id=uuid.UUID(row["task_id"]),
            inputs=_unjson(row["inputs"]),
            output=_unjson(row["output"]),
            score=row["score"],
            source=row["source"],
            metadata=_unjson(row["metadata"]),
            created_at=_dt(row["created_at"]),
        )

    def _add_feedback(
        self, conn: sqlite3.Connection, req: FeedbackRequest, new_jobs: list[str]
    ) -> FeedbackResult:
        if req.id is not None:
            old = conn.execute("SELECT * FROM feedback WHERE id = ?", (str(req.id),)).fetchone()
            if old is not None:
                return self._feedback(old)
        task = self._task_for_write(conn, req.task_id)
        fid = str(req.id or uuid.uuid4())
        conn.execute(
            "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
            " created_at) VALUES (?,?,?,?,?,?,?,?)",
            (
                fid, task["id"], _json(req.inputs), _json(req.output), req.score, req.source,
                _json(req.metadata), _ts(),
            ),
        )
        conn.execute(
            "UPDATE tasks SET feedback_count = feedback_count + 1,"
            " feedback_since_optimization = feedback_since_optimization + 1 WHERE id = ?",
            (task["id"],),
        )
        job_id = self._maybe_trigger(conn, task["id"])
        if job_id is not None:
            new_jobs.append(job_id)
        row = conn.execute("SELECT * FROM feedback WHERE id = ?", (fid,)).fetchone()
        return self._feedback(row)

    def add_feedback(self, req: FeedbackRequest) -> tuple[FeedbackResult, list[str]]:
        """Store feedback (idempotent by id); returns it and the ids of jobs it started."""
        new_jobs: list[str] = []
        with self._write() as conn:
            result = self._add_feedback(conn, req, new_jobs)
        return result, new_jobs

    def list_feedback(self, ref: str | None, limit: int) -> list[FeedbackResult]:
        """Return feedback, newest first, optionally for one task."""
        conn = self._conn()
        if ref is None:
            rows = conn.execute(
                "SELECT * FROM feedback ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            task = self._require_task(conn, ref)
            rows = conn.execute(
                "SELECT * FROM feedback WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                (task["id"], limit),
            ).fetchall()
        return [self._feedback(row) for row in rows]

    def scored_examples(self, task_id: str) -> list[Example]:
        """Return the task's feedback that has a score, as optimizer examples."""
        rows = self._conn().execute(
            "SELECT id, inputs, output, score FROM feedback WHERE task_id = ? AND score IS NOT"
            " NULL ORDER BY seq",
            (task_id,),
        ).fetchall()
        return [
            Example(id=r["id"], inputs=_unjson(r["inputs"]), output=_unjson(r["output"]),
                    score=float(r["score"]))
            for r in rows
        ]

    # --- traces ----------------------------------------------------------------------

    @staticmethod
    def _trace(row: sqlite3.Row) -> TraceResult:
        return TraceResult(
            id=uuid.UUID(row["id"]),
            task_id=uuid.UUID(row["task_id"]),
            prompt_text=row["prompt_text"],
            response_text=row["response_text"],
            model=row["model"],
            tokens=row["tokens"],
            latency_ms=row["latency_ms"],
            score=row["score"],
            scored_by=row["scored_by"],
            prompt_version_id=_uuid(row["prompt_version_id"]),
            parent_trace_id=_uuid(row["parent_trace_id"]),
            metadata=_unjson(row["metadata"]),
            created_at=_dt(row["created_at"]),
        )

    def _add_trace(self, conn: sqlite3.Connection, req: TraceRequest) -> TraceResult:
        if req.id is not None:
            old = conn.execute("SELECT * FROM traces WHERE id = ?", (str(req.id),)).fetchone()
            if old is not None:
                return self._trace(old)
        task = self._task_for_write(conn, req.task_id)
        version_id = None if req.prompt_version_id is None else str(req.prompt_version_id)
        if req.prompt_text is not None:
            active = conn.execute(
                "SELECT id, prompt_text FROM prompts WHERE task_id = ? AND status = 'active'",
                (task["id"],),
            ).fetchone()
            has_versions = conn.execute(
                "SELECT 1 FROM prompts WHERE task_id = ? LIMIT 1", (task["id"],)
            ).fetchone()
            if not has_versions:
                baseline = self._insert_prompt(
                    conn, task["id"], req.prompt_text, status="active", optimizer="baseline"
                )
                version_id = version_id or baseline
            elif version_id is None and active is not None and (
                active["prompt_text"] == req.prompt_text
            ):
                version_id = active["id"]
        tid = str(req.id or uuid.uuid4())
        conn.execute(
            "INSERT INTO traces (id, task_id, prompt_text, response_text, model, tokens,"
            " latency_ms, prompt_version_id, parent_trace_id, metadata, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                tid, task["id"], req.prompt_text, req.response_text, req.model, req.tokens,
                req.latency_ms, version_id,
                None if req.parent_trace_id is None else str(req.parent_trace_id),
                _json(req.metadata), _ts(),
            ),
        )
        return self._trace(conn.execute("SELECT * FROM traces WHERE id = ?", (tid,)).fetchone())

    def add_trace(self, req: TraceRequest) -> TraceResult:
        """Store a trace (idempotent by id)."""
        with self._write() as conn:
            return self._add_trace(conn, req)

    def get_trace(self, trace_id: str) -> TraceResult:
        """Return one trace."""
        row = self._conn().execute(
            "SELECT * FROM traces WHERE id = ?", (_as_uuid(trace_id) or trace_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"trace {trace_id!r} not found")
        return self._trace(row)

    def list_traces(self, ref: str | None, limit: int) -> list[TraceResult]:
        """Return traces, newest first, optionally for one task."""
        conn = self._conn()
        if ref is None:
            rows = conn.execute(
                "SELECT * FROM traces ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            task = self._require_task(conn, ref)
            rows = conn.execute(
                "SELECT * FROM traces WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                (task["id"], limit),
            ).fetchall()
        return [self._trace(row) for row in rows]

    def score_trace(self, trace_id: str, score: float, scored_by: str) -> TraceResult:
        """Set a trace's score and who gave it."""
        key = _as_uuid(trace_id) or trace_id
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE traces SET score = ?, scored_by = ? WHERE id = ?", (score, scored_by, key)
            )
            if cur.rowcount == 0:
                raise NotFound(f"trace {trace_id!r} not found")
            # The feedback entry a traced call sent names its trace in its metadata: it takes
            # the score too, so scoring traces is what feeds the optimizer.
            conn.execute(
                "UPDATE feedback SET score = ? WHERE task_id ="
                " (SELECT task_id FROM traces WHERE id = ?)"
                " AND json_extract(metadata, '$.trace_id') = ?",
                (score, key, key),
            )
            return self._trace(
                conn.execute("SELECT * FROM traces WHERE id = ?", (key,)).fetchone()
            )

    def apply_scores(self, scores: Sequence[ScoreItem]) -> tuple[int, list[tuple[str, str]]]:
        """Apply in-process scores (from an ingest batch) through `score_trace`.

        Idempotent by score id: a score already applied is counted as applied and not applied
        again. Returns ``(applied, errors)``; each error is ``(score_id, detail)`` for a
        score whose trace does not exist.
        """
        applied = 0
        errors: list[tuple[str, str]] = []
        for item in scores:
            sid, tid = str(item.id), str(item.trace_id)
            with self._write() as conn:
                seen = conn.execute(
                    "SELECT 1 FROM applied_scores WHERE id = ?", (sid,)
                ).fetchone()
            if seen is not None:
                applied += 1
                continue
            try:
                self.score_trace(tid, item.score, item.scored_by)  # the one scoring path
            except NotFound as exc:
                errors.append((sid, str(exc)))
                continue
            with self._write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO applied_scores (id, trace_id, applied_at)"
                    " VALUES (?, ?, ?)",
                    (sid, tid, _ts()),
                )
            applied += 1
        return applied, errors

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self, traces: Sequence[TraceRequest], feedback: Sequence[FeedbackRequest]
    ) -> tuple[int, list[tuple[str, str | None, str]], list[str]]:
        """Store a batch in one transaction.

        Returns ``(accepted, errors, new_job_ids)``; each error is ``(kind, id, detail)`` for
        an item that refers to a task that does not exist. The other items are kept.
        """
        accepted = 0
        errors: list[tuple[str, str | None, str]] = []
        new_jobs: list[str] = []
        with self._write() as conn:
            for kind, items in (("trace", traces), ("feedback", feedback)):
                for item in items:
                    try:
                        if isinstance(item, TraceRequest):
                            self._add_trace(conn, item)
                        else:
                            self._add_feedback(conn, item, new_jobs)
                    except NotFound as exc:
                        errors.append((kind, None if item.id is None else str(item.id), str(exc)))
                    else:
                        accepted += 1
        return accepted, errors, new_jobs

    # --- jobs ------------------------------------------------------------------------

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=uuid.UUID(row["id"]),
            task_id=uuid.UUID(row["task_id"]),
            prompt_version_id=_uuid(row["prompt_version_id"]),
            status=row["status"],
            triggered_by=row["triggered_by"],
            feedback_count=row["feedback_count"],
            pr_url=row["pr_url"],
            error_message=row["error_message"],
            job_metadata=_unjson(row["job_metadata"]),
            progress_step=row["progress_step"],
            started_at=_dt(row["started_at"]),
            completed_at=_dt(row["completed_at"]),
            created_at=_dt(row["created_at"]),
        )

    def _active_job(self, conn: sqlite3.Connection, task_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM jobs WHERE task_id = ? AND status IN (?, ?) ORDER BY seq DESC"
            " LIMIT 1",
            (task_id, *ACTIVE_JOB_STATUSES),
        ).fetchone()
        return row

    def _insert_job(self, conn: sqlite3.Connection, task: sqlite3.Row, triggered_by: str) -> str:
        job_id = str(uuid.uuid4())
        now = _ts()
        conn.execute(
            "INSERT INTO jobs (id, task_id, status, triggered_by, feedback_count, progress_step,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (job_id, task["id"], "PENDING", triggered_by, task["feedback_count"], "queued", now),
        )
        conn.execute(
            "UPDATE tasks SET feedback_since_optimization = 0, last_optimization = ?"
            " WHERE id = ?",
            (now, task["id"]),
        )
        return job_id

    def _maybe_trigger(self, conn: sqlite3.Connection, task_id: str) -> str | None:
        task = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if task["feedback_since_optimization"] < task["feedback_threshold"]:
            return None
        if self._active_job(conn, task_id) is not None:
            return None
        return self._insert_job(conn, task, "threshold")

    def start_job(self, ref: str, triggered_by: str = "manual") -> tuple[Job, bool]:
        """Queue an optimization job for the task.

        Returns ``(job, created)``; when a job is already pending or running for the task,
        that job is returned with ``created=False`` (never two at once per task).
        """
        with self._write() as conn:
            task = self._require_task(conn, ref)
            active = self._active_job(conn, task["id"])
            if active is not None:
                return self._job(active), False
            job_id = self._insert_job(conn, task, triggered_by)
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return self._job(row), True

    def get_job(self, job_id: str) -> Job:
        """Return one job."""
        row = self._conn().execute(
            "SELECT * FROM jobs WHERE id = ?", (_as_uuid(job_id) or job_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        return self._job(row)

    def list_jobs(self, ref: str | None, limit: int) -> list[Job]:
        """Return jobs, newest first, optionally for one task."""
        conn = self._conn()
        if ref is None:
            rows = conn.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        else:
            task = self._require_task(conn, ref)
            rows = conn.execute(
                "SELECT * FROM jobs WHERE task_id = ? ORDER BY seq DESC LIMIT ?",
                (task["id"], limit),
            )
        return [self._job(row) for row in rows.fetchall()]

    def unfinished_jobs(self) -> list[str]:
        """Return the ids of pending or running jobs, oldest first (to resume after restart)."""
        rows = self._conn().execute(
            "SELECT id FROM jobs WHERE status IN (?, ?) ORDER BY seq", ACTIVE_JOB_STATUSES
        ).fetchall()
        return [str(r["id"]) for r in rows]

    def job_context(self, job_id: str) -> tuple[str, str, str | None]:
        """Return ``(task_id, task_name, active_prompt_text)`` for a job."""
        conn = self._conn()
        row = conn.execute(
            "SELECT t.id AS id, t.name AS name FROM jobs j JOIN tasks t ON t.id = j.task_id"
            " WHERE j.id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        active = conn.execute(
            "SELECT prompt_text FROM prompts WHERE task_id = ? AND status = 'active'",
            (row["id"],),
        ).fetchone()
        return str(row["id"]), str(row["name"]), None if active is None else active["prompt_text"]

    def set_job_step(self, job_id: str, step: str) -> None:
        """Mark the job running (setting ``started_at`` once) at *step*."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'RUNNING', progress_step = ?,"
                " started_at = COALESCE(started_at, ?) WHERE id = ?",
                (step, _ts(), job_id),
            )

    def finish_job_success(
        self, job_id: str, prompt_text: str, *, eval_score: float, optimizer: str,
        metadata: dict[str, Any],
    ) -> Job:
        """Store the job's new prompt version as ``candidate`` and mark the job SUCCESS."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            version_id = self._insert_prompt(
                conn, row["task_id"], prompt_text, status="candidate", optimizer=optimizer,
                eval_score=eval_score,
            )
            conn.execute(
                "UPDATE jobs SET status = 'SUCCESS', progress_step = 'done',"
                " prompt_version_id = ?, job_metadata = ?, completed_at = ? WHERE id = ?",
                (version_id, _json(metadata), _ts(), job_id),
            )
            return self._job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def finish_job_failure(self, job_id: str, message: str) -> Job:
        """Mark the job FAILURE with *message*."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET status = 'FAILURE', progress_step = 'failed',"
                " error_message = ?, completed_at = ? WHERE id = ?",
                (message, _ts(), job_id),
            )
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            return self._job(row)
