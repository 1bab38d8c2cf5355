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
import itertools
import logging
import math
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec

from kaizen_sdk.models import (
    MAX_PROMPT_CHARS,
    ApiKey,
    ApiKeyCreated,
    AuditEntry,
    ChatMessage,
    Evaluator,
    EvaluatorAgreement,
    EvaluatorDay,
    EvaluatorRequest,
    EvaluatorUpdateRequest,
    FeedbackRequest,
    FeedbackResult,
    Job,
    Prompt,
    Rollout,
    RolloutArm,
    RolloutDifference,
    RolloutEvent,
    RolloutGuards,
    RolloutRequest,
    RolloutServing,
    ScoreItem,
    Task,
    TaskCosts,
    TaskCreateRequest,
    TaskUpdateRequest,
    TraceRequest,
    TraceResult,
    VersionCost,
)
from kaizen_sdk.templates import (
    MAX_PLACEHOLDERS,
    PLACEHOLDER,
    PRODUCTION,
    BadRecipe,
    check_label,
    check_recipe,
    count_placeholders,
    parse_messages_text,
)
from kaizen_server.domain import budget, decisions, keys, rollouts, task_settings
from kaizen_server.domain import evaluators as evaluator_rules
from kaizen_server.domain.retention import RETENTION_FIELDS, RetentionLimits
from kaizen_server.llm.pricing import PriceTable
from kaizen_server.optimize.fewshot import Example
from kaizen_server.storage import evaluators as evaluator_sql
from kaizen_server.storage import leases, rollout_tally, sqlite_schema, ui_sessions
from kaizen_server.storage import spend as spend_store
from kaizen_server.storage.errors import (
    Conflict,
    Invalid,
    NotFound,
    Page,
    StoreError,
    StoreFull,
    utcnow,
)
from kaizen_server.storage.ids import uuid7
from kaizen_server.storage.interface import (
    ACTIVE_JOB_STATUSES,
    AUTO_TASK_THRESHOLD,
    HELD_SCORES_MAX,
    MAX_EXAMPLES,
    StorageInterface,
)

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "AUTO_TASK_THRESHOLD",
    "SCHEMA_VERSION",
    "Conflict",
    "Invalid",
    "NotFound",
    "Page",
    "Store",
    "StoreError",
    "StoreFull",
    "utcnow",
]

logger = logging.getLogger("kaizen_server.storage.sqlite")

SCHEMA_VERSION = sqlite_schema.SCHEMA_VERSION
"""Version of the schema this module writes: the highest step of
``kaizen_server/storage/migrations/sqlite/`` (see `kaizen_server.storage.sqlite_schema`)."""

BUSY_TIMEOUT_MS = 30_000

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
    "daily_budget_usd",
    "max_jobs_per_day",
    "cooldown_minutes",
    "feedback_retention_days",
    "trace_retention_limit",
    "trace_retention_days",
)


_T = TypeVar("_T")


def _page(rows: list[sqlite3.Row], limit: int, make: Any) -> Page[Any]:
    """Turn up to ``limit + 1`` rows into a page (the extra row only says "more remain")."""
    if len(rows) > limit:
        return Page([make(row) for row in rows[:limit]], int(rows[limit - 1]["seq"]))
    return Page([make(row) for row in rows])


def _keyset(after: int | None, newest_first: bool = True) -> tuple[str, tuple[int, ...]]:
    """The ``seq`` condition for the rows after key *after* (``""`` on the first page)."""
    if after is None:
        return "", ()
    return ("seq < ?" if newest_first else "seq > ?"), (after,)


_SQLITE_FULL = 13  # SQLite's result code "database or disk is full"


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return bool(code & 0xFF == _SQLITE_FULL)
    return "database or disk is full" in str(exc)


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


def _check_prompt_text(text: str) -> None:
    if not text.strip():
        raise Invalid("`prompt_text` must not be empty or only whitespace")
    if len(text) > MAX_PROMPT_CHARS:
        raise Invalid(
            f"`prompt_text` has {len(text)} characters; at most {MAX_PROMPT_CHARS} are allowed"
        )
    placeholders = count_placeholders(text)
    if placeholders > MAX_PLACEHOLDERS:
        raise Invalid(
            f"`prompt_text` has {placeholders} placeholders; at most {MAX_PLACEHOLDERS} are"
            " allowed"
        )


def _recipe_text(
    messages: Sequence[Any] | None, config: dict[str, Any] | None, prompt_text: str | None
) -> str:
    """The ``prompt_text`` of a version with messages or settings; `Invalid` names a bad field."""
    try:
        return check_recipe(messages, config, prompt_text, max_chars=MAX_PROMPT_CHARS)
    except BadRecipe as exc:
        raise Invalid(str(exc)) from None


def _kept_recipe(conn: sqlite3.Connection, task_id: str, text: str) -> dict[str, Any]:
    """What an optimized version keeps of the active one: its settings always; its messages
    when *text* still reads as messages of the same roles, each keeping its variables."""
    active = conn.execute(
        "SELECT messages, config FROM prompts WHERE task_id = ? AND status = 'active'",
        (task_id,),
    ).fetchone()
    if active is None:
        return {}
    kept: dict[str, Any] = {"config": _unjson(active["config"])}
    base = _unjson(active["messages"])
    if base:
        parsed = parse_messages_text(text, [m["role"] for m in base])
        if parsed is not None and all(
            set(PLACEHOLDER.findall(old["content"])) <= set(PLACEHOLDER.findall(new["content"]))
            for old, new in zip(base, parsed, strict=True)
        ):
            kept["messages"] = msgspec.convert(parsed, list[ChatMessage])
    return kept


def _default_recipe(req: TraceRequest) -> dict[str, Any]:
    """The messages and settings of a trace's default prompt, for its version 1: none when
    absent or not a valid recipe of its ``prompt_text`` (the text version is made then)."""
    if req.prompt_messages is None and req.prompt_config is None:
        return {}
    try:
        check_recipe(req.prompt_messages, req.prompt_config, req.prompt_text,
                     max_chars=MAX_PROMPT_CHARS)
    except BadRecipe:
        return {}
    return {"messages": req.prompt_messages, "config": req.prompt_config}


def _critique(comment: Any, correction: Any, output: Any) -> tuple[str | None, Any]:
    """Check a comment and correction (UNSET counts as absent); return them as stored."""
    comment = None if comment is msgspec.UNSET else comment
    correction = None if correction is msgspec.UNSET else correction
    if correction is not None and output is None:
        raise Invalid(
            "`correction` needs an `output` to correct: this feedback entry has no output"
        )
    return comment, correction


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _as_uuid(ref: str) -> str | None:
    if _CANONICAL_UUID.fullmatch(ref):  # already as stored (the usual case): no parsing
        return ref
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

    update_returning = sqlite3.sqlite_version_info >= (3, 35, 0)
    """Whether the database takes ``UPDATE ... RETURNING`` (SQLite 3.35+; PostgreSQL does),
    which saves a round trip where a write reads what it changed."""

    def __init__(self, path: str, *, migrate: bool = True) -> None:
        """Open (creating) the database at *path* and run its pending schema steps; with
        *migrate* false, raise `SchemaOutdated` instead when any are pending."""
        self.path = path
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._conns_lock = threading.Lock()
        self._closed = False
        self.budget_defaults = budget.BudgetDefaults()
        """The server-wide spend limits (`kaizen_server.domain.budget`); the server sets them."""
        self.pricer: Callable[[TraceRequest], float | None] | None = None
        """What a trace's call cost (``cost_usd``), set by the server; ``None``: no costs."""
        self.prices: PriceTable | None = None
        """LLM prices for each rollout arm's cost per call; the server sets them."""
        self.lease_seconds = spend_store.LEASE_SECONDS
        """How long a job's lease lasts unless renewed (`kaizen_server.storage.leases`); the
        server sets it (``KAIZEN_JOB_LEASE_SECONDS``)."""
        self.retention_defaults = RetentionLimits()
        """The server-wide retention limits (`kaizen_server.domain.retention`); none: keep
        everything. The server sets them."""
        self._migrate(migrate)

    def __repr__(self) -> str:
        return f"Store(path={self.path!r})"

    def trace_cost(self, req: TraceRequest) -> float | None:
        """The ``cost_usd`` stored with *req*: `pricer`'s answer (``None`` if it fails)."""
        pricer = self.pricer
        if pricer is None:
            return None
        try:
            cost: float | None = pricer(req)
        except Exception:  # a price is never worth losing the trace
            logger.exception("local CT server: pricing a trace failed")
            return None
        return cost

    def traced_models(self, recent: int = 10_000) -> list[tuple[str, int]]:
        """``(model, traces)`` of the models named by the *recent* newest traces with tokens."""
        rows = self._conn().execute(
            "SELECT model, COUNT(*) AS n FROM (SELECT model FROM traces WHERE tokens IS NOT NULL"
            " AND model IS NOT NULL ORDER BY seq DESC LIMIT ?) AS recent GROUP BY model"
            " ORDER BY model",
            (recent,),
        ).fetchall()
        return [(str(r["model"]), int(r["n"])) for r in rows]

    def task_costs(self, ref: str, *, days: float, recent: int = 10_000) -> TaskCosts:
        """What the task's calls of the last *days* days cost (see `StorageInterface`)."""
        conn = self._conn()
        task_id = str(self._require_task(conn, ref)["id"])
        since = utcnow() - timedelta(days=days)
        # the newest `recent` traces of the task (index traces_task), then the window; an LLM
        # call whose same-task parent has a cost is part of that parent's (unique index on id)
        rows = conn.execute(
            "SELECT t.prompt_version_id AS version, v.version_number AS number,"
            " COUNT(*) AS calls, COUNT(t.cost_usd) AS priced, SUM(t.cost_usd) AS usd"
            " FROM (SELECT prompt_version_id, cost_usd, parent_trace_id, created_at"
            " FROM traces WHERE task_id = ? ORDER BY seq DESC LIMIT ?) AS t"
            " LEFT JOIN prompts v ON v.id = t.prompt_version_id"
            " WHERE t.created_at >= ? AND NOT EXISTS (SELECT 1 FROM traces p"
            " WHERE p.id = t.parent_trace_id AND p.task_id = ? AND p.cost_usd IS NOT NULL)"
            " GROUP BY t.prompt_version_id, v.version_number",
            (task_id, recent, _ts(since), task_id),
        ).fetchall()
        scan = conn.execute(
            "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM (SELECT created_at FROM traces"
            " WHERE task_id = ? ORDER BY seq DESC LIMIT ?) AS t",
            (task_id, recent),
        ).fetchone()
        versions = sorted(
            (VersionCost(
                version_id=_uuid(r["version"]), version_number=r["number"],
                calls=int(r["calls"]), priced_calls=int(r["priced"]),
                cost_usd=float(r["usd"] or 0.0),
                cost_per_call_usd=float(r["usd"]) / int(r["priced"]) if r["priced"] else None,
            ) for r in rows),
            key=lambda v: -1 if v.version_number is None else v.version_number, reverse=True,
        )
        priced = sum(v.priced_calls for v in versions)
        usd = sum(v.cost_usd for v in versions)
        cut = int(scan["n"]) >= recent and scan["oldest"] is not None and (
            scan["oldest"] > _ts(since))
        return TaskCosts(
            task_id=uuid.UUID(task_id), days=days, since=since,
            calls=sum(v.calls for v in versions), priced_calls=priced, cost_usd=usd,
            cost_per_call_usd=usd / priced if priced else None,
            scanned=int(scan["n"]), complete=not cut, versions=versions,
        )

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
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does); a failed COMMIT
                # leaves the transaction open. Either way nothing of it is kept.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and _is_full(exc):
                    raise StoreFull(
                        "the server's database is full (SQLite: database or disk is full);"
                        " this write was not stored. Free disk space on the server; reads"
                        " still work."
                    ) from None
                raise

    def _migrate(self, migrate: bool) -> None:
        with self._write() as conn:
            if migrate:
                ran = sqlite_schema.upgrade(conn)
                if ran:
                    logger.info("database %s: schema steps run: %s", self.path,
                                ", ".join(step.filename for step in ran))
            else:
                sqlite_schema.require_current(conn, self.path)

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
            " prompt_format, created_at, daily_budget_usd, max_jobs_per_day, cooldown_minutes,"
            " feedback_retention_days, trace_retention_limit, trace_retention_days)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                task_id, req.name, req.description, _json(req.schema_json),
                req.feedback_threshold, req.feedback_retention_limit,
                _json(req.evaluator_config), req.teacher_model, req.judge_model,
                req.module_type, req.cost_budget, req.github_repo, req.github_base_branch,
                req.prompt_path, req.prompt_format, _ts(), req.daily_budget_usd,
                req.max_jobs_per_day, req.cooldown_minutes, req.feedback_retention_days,
                req.trace_retention_limit, req.trace_retention_days,
            ),
        )
        self._audit(conn, "task.created", task_id=task_id, target=req.name)
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
            threshold_waiting=self._threshold_waiting(conn, row),
            **{name: row[name] for name in _TASK_OPTIONAL},
        )

    def create_task(self, req: TaskCreateRequest) -> Task:
        """Create a task; raises `Conflict` when the name is taken, `Invalid` for a bad setting."""
        try:
            task_settings.check_create(req)
        except task_settings.BadSetting as exc:
            raise Invalid(str(exc)) from None
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM tasks WHERE name = ?", (req.name,)).fetchone():
                raise Conflict(f"a task named {req.name!r} already exists")
            messages, config = _given(req.messages), _given(req.config)
            if messages is not None or config is not None:
                text = _recipe_text(messages, config, req.prompt_text)
                task_id = self._insert_task(conn, req)
                self._insert_prompt(conn, task_id, text, status="active", optimizer="manual",
                                    messages=messages, config=config)
                return self._task(conn, self._require_task(conn, task_id))
            task_id = self._insert_task(conn, req)
            if req.prompt_text is not None:
                _check_prompt_text(req.prompt_text)
                self._insert_prompt(
                    conn, task_id, req.prompt_text, status="active", optimizer="manual"
                )
            return self._task(conn, self._require_task(conn, task_id))

    def update_task(self, ref: str, req: TaskUpdateRequest) -> Task:
        """Change the settings *req* gives, in one transaction; return the task as it is now.

        Raises `NotFound` for an unknown task and `Invalid` naming the first bad field (then
        nothing is changed). See `kaizen_server.domain.task_settings`.
        """
        with self._write() as conn:
            row = self._require_task(conn, ref)
            settings = task_settings.SETTINGS.values()
            current = {s.column: _unjson(row[s.column]) if s.json else row[s.column]
                       for s in settings}
            try:
                values = task_settings.column_values(req, current)
            except task_settings.BadSetting as exc:
                raise Invalid(str(exc)) from None
            json_columns = {s.column for s in settings if s.json}
            if values:
                # column names come from task_settings.SETTINGS, never from the request
                assignments = ", ".join(f"{column} = ?" for column in values)
                conn.execute(
                    f"UPDATE tasks SET {assignments} WHERE id = ?",
                    (
                        *(_json(v) if c in json_columns else v for c, v in values.items()),
                        row["id"],
                    ),
                )
                self._audit(conn, "task.updated", task_id=row["id"], target=row["name"],
                            detail=", ".join(sorted(values)))
            return self._task(conn, self._require_task(conn, row["id"]))

    def get_task(self, ref: str) -> Task:
        """Return the task with this id or name."""
        conn = self._conn()
        return self._task(conn, self._require_task(conn, ref))

    def list_tasks(self, limit: int = 1000, *, after: int | None = None) -> Page[Task]:
        """Return a page of tasks, oldest first."""
        conn = self._conn()
        cond, args = _keyset(after, newest_first=False)
        rows = conn.execute(
            f"SELECT * FROM tasks {'WHERE ' + cond if cond else ''} ORDER BY seq LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return _page(rows, limit, lambda row: self._task(conn, row))

    def _list_rows(
        self, table: str, ref: str | None, limit: int, after: int | None
    ) -> list[sqlite3.Row]:
        """Up to ``limit + 1`` rows of *table* (a constant), newest first, after key *after*."""
        conn = self._conn()
        conds: list[str] = []
        args: list[Any] = []
        if ref is not None:
            conds.append("task_id = ?")
            args.append(self._require_task(conn, ref)["id"])
        cond, key = _keyset(after)
        if cond:
            conds.append(cond)
            args.extend(key)
        where = f"WHERE {' AND '.join(conds)}" if conds else ""
        rows: list[sqlite3.Row] = conn.execute(
            f"SELECT * FROM {table} {where} ORDER BY seq DESC LIMIT ?", (*args, limit + 1)
        ).fetchall()
        return rows

    def task_id(self, ref: str) -> str:
        """Return the UUID string of the task with this id or name."""
        return str(self._require_task(self._conn(), ref)["id"])

    # --- prompts ---------------------------------------------------------------------

    def _prompt(self, row: sqlite3.Row) -> Prompt:
        labels = [PRODUCTION] if row["status"] == "active" else []
        labels += [r["label"] for r in self._conn().execute(
            "SELECT label FROM prompt_labels WHERE version_id = ? ORDER BY label", (row["id"],)
        )]
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
            verdict=row["verdict"],
            baseline_version=row["baseline_version"],
            baseline_score=row["baseline_score"],
            eval_sample_size=row["eval_sample_size"],
            messages=(None if row["messages"] is None
                      else msgspec.json.decode(row["messages"], type=list[ChatMessage])),
            config=_unjson(row["config"]),
            labels=labels,
        )

    def _insert_prompt(
        self, conn: sqlite3.Connection, task_id: str, text: str, *, status: str,
        optimizer: str, eval_score: float | None = None, dspy_version: str | None = None,
        messages: list[Any] | None = None, config: dict[str, Any] | None = None,
    ) -> str:
        row = conn.execute(
            "SELECT COALESCE(MAX(version_number), 0) AS n FROM prompts WHERE task_id = ?",
            (task_id,),
        ).fetchone()
        prompt_id = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO prompts (id, task_id, version_number, prompt_text, eval_score, status,"
            " optimizer, dspy_version, created_at, messages, config)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (prompt_id, task_id, row["n"] + 1, text, eval_score, status, optimizer,
             dspy_version, _ts(), _json(messages), _json(config)),
        )
        self._audit(conn, "version.created", task_id=task_id, target=prompt_id,
                    detail=f"v{row['n'] + 1} {status} ({optimizer})")
        return prompt_id

    def create_version(
        self, ref: str, prompt_text: str | None, *, activate: bool,
        messages: list[Any] | None = None, config: dict[str, Any] | None = None,
    ) -> Prompt:
        """Store a hand-written prompt version (``optimizer="manual"``), active if asked.

        Not activated, it is a ``candidate`` until someone activates it. A chat version
        (*messages*, and/or *config*) is checked by `kaizen_sdk.templates.check_recipe`; its
        ``prompt_text`` is the text of its messages.
        """
        if messages is not None or config is not None:
            prompt_text = _recipe_text(messages, config, prompt_text)
        elif prompt_text is None:
            raise Invalid("`prompt_text` or `messages` is required")
        _check_prompt_text(prompt_text)
        with self._write() as conn:
            task = self._require_task(conn, ref)
            if activate:
                conn.execute(
                    "UPDATE prompts SET status = 'inactive' WHERE task_id = ?"
                    " AND status = 'active'",
                    (task["id"],),
                )
            prompt_id = self._insert_prompt(
                conn, task["id"], prompt_text, status="active" if activate else "candidate",
                optimizer="manual", messages=messages, config=config,
            )
            row = conn.execute("SELECT * FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
            if activate:
                self._activated(conn, task, row)
            return self._prompt(row)

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

    def list_versions(
        self, ref: str, limit: int = 1000, *, after: int | None = None
    ) -> Page[Prompt]:
        """Return a page of the task's prompt versions, newest first."""
        conn = self._conn()
        task = self._require_task(conn, ref)
        cond, args = _keyset(after)
        # Version numbers grow with seq within a task, so seq order is version order.
        rows = conn.execute(
            f"SELECT * FROM prompts WHERE task_id = ? {'AND ' + cond if cond else ''}"
            " ORDER BY seq DESC LIMIT ?",
            (task["id"], *args, limit + 1),
        ).fetchall()
        return _page(rows, limit, self._prompt)

    def activate(self, ref: str, version_id: uuid.UUID) -> Prompt:
        """Make *version_id* the task's active version; the previous one becomes inactive."""
        with self._write() as conn:
            task = self._require_task(conn, ref)
            row = conn.execute(
                "SELECT * FROM prompts WHERE id = ? AND task_id = ?",
                (str(version_id), task["id"]),
            ).fetchone()
            if row is None:
                raise NotFound(
                    f"version_id {version_id} is not a prompt version of task {task['name']!r}"
                )
            conn.execute(
                "UPDATE prompts SET status = 'inactive' WHERE task_id = ? AND status = 'active'"
                " AND id != ?",
                (task["id"], row["id"]),
            )
            conn.execute("UPDATE prompts SET status = 'active' WHERE id = ?", (row["id"],))
            updated = conn.execute("SELECT * FROM prompts WHERE id = ?", (row["id"],)).fetchone()
            self._activated(conn, task, updated)
            return self._prompt(updated)

    def _activated(self, conn: sqlite3.Connection, task: sqlite3.Row, version: sqlite3.Row) -> None:
        """A version was activated by hand: audit it, and end the task's running rollout
        (``overridden``) in the same transaction, so no later decision or stop overrides the
        person who activated it."""
        self._audit(conn, "version.activated", task_id=task["id"], target=version["id"],
                    detail=f"v{version['version_number']}")
        rollout = self._running_rollout(conn, task["id"])
        if rollout is not None:
            self._override_rollout(conn, rollout, version)

    def _override_rollout(
        self, conn: sqlite3.Connection, rollout: sqlite3.Row, version: sqlite3.Row
    ) -> None:
        """End *rollout* as ``overridden``: *version* was activated by hand while it ran."""
        reason = (f"v{version['version_number']} was activated by hand"
                  f" (by {self._actor()[0]}) while the rollout ran")
        if not self._rollout_moves(
            conn, rollout, "state = 'overridden', reason = ?, ended_at = ?,"
            " end_trace_seq = ?, end_feedback_seq = ?",
            (reason, _ts(), self._max_seq(conn, "traces"), self._max_seq(conn, "feedback")),
        ):
            return
        share = self._rollout_config(rollout).ramp[rollout["step"]]
        self._rollout_event(conn, rollout["id"], "overridden", share, reason,
                            {"share": share, "activated_version_id": version["id"]})
        self._audit(conn, "rollout.overridden", task_id=rollout["task_id"],
                    target=rollout["id"], detail=reason)

    # --- labels (schema step 10) ------------------------------------------------------
    # "production" is the active version (status 'active'); every other label is a row of
    # prompt_labels, set and moved by hand.

    def labelled_prompt(self, ref: str, label: str) -> Prompt:
        """Return the version *label* names (``production``: the active one); `NotFound` when
        the label is not set on the task, `Invalid` when it is not a label."""
        try:
            check_label(label)
        except BadRecipe as exc:
            raise Invalid(str(exc)) from None
        if label == PRODUCTION:
            return self.active_prompt(ref)
        conn = self._conn()
        task = self._require_task(conn, ref)
        row = conn.execute(
            "SELECT p.* FROM prompt_labels l JOIN prompts p ON p.id = l.version_id"
            " WHERE l.task_id = ? AND l.label = ?", (task["id"], label),
        ).fetchone()
        if row is None:
            raise NotFound(f"label {label!r} is not set on task {task['name']!r}")
        return self._prompt(row)

    def set_label(self, ref: str, label: str, version_id: uuid.UUID) -> Prompt:
        """Put *label* on *version_id* (moving it from the version that had it); audited."""
        try:
            check_label(label, settable=True)
        except BadRecipe as exc:
            raise Invalid(str(exc)) from None
        with self._write() as conn:
            task = self._require_task(conn, ref)
            row = conn.execute(
                "SELECT * FROM prompts WHERE id = ? AND task_id = ?",
                (str(version_id), task["id"]),
            ).fetchone()
            if row is None:
                raise NotFound(
                    f"version_id {version_id} is not a prompt version of task {task['name']!r}"
                )
            conn.execute(
                "INSERT INTO prompt_labels (task_id, label, version_id, set_at) VALUES (?,?,?,?)"
                " ON CONFLICT (task_id, label) DO UPDATE SET version_id = excluded.version_id,"
                " set_at = excluded.set_at",
                (task["id"], label, row["id"], _ts()),
            )
            self._audit(conn, "label.set", task_id=task["id"], target=row["id"],
                        detail=f"{label} -> v{row['version_number']}")
            return self._prompt(row)

    def remove_label(self, ref: str, label: str) -> Prompt:
        """Take *label* off the task's version that has it; return that version. Audited."""
        try:
            check_label(label, settable=True)
        except BadRecipe as exc:
            raise Invalid(str(exc)) from None
        with self._write() as conn:
            task = self._require_task(conn, ref)
            row = conn.execute(
                "SELECT p.* FROM prompt_labels l JOIN prompts p ON p.id = l.version_id"
                " WHERE l.task_id = ? AND l.label = ?", (task["id"], label),
            ).fetchone()
            if row is None:
                raise NotFound(f"label {label!r} is not set on task {task['name']!r}")
            conn.execute("DELETE FROM prompt_labels WHERE task_id = ? AND label = ?",
                         (task["id"], label))
            self._audit(conn, "label.removed", task_id=task["id"], target=row["id"],
                        detail=f"{label} (was on v{row['version_number']})")
            return self._prompt(row)

    def _arm_costs(
        self, conn: sqlite3.Connection, rollout: sqlite3.Row, config: rollouts.RolloutConfig
    ) -> tuple[float | None, float | None]:
        """The (active, candidate) cost per call for the cost guard; none without a guard."""
        if config.max_cost_ratio is None:
            return None, None
        return (self._arm_cost(conn, rollout, rollout["active_version_id"]),
                self._arm_cost(conn, rollout, rollout["candidate_version_id"]))

    def _arm_cost(
        self, conn: sqlite3.Connection, rollout: sqlite3.Row, version: str
    ) -> float | None:
        """A rollout arm's US dollars per call (see `RolloutArm.cost_per_call_usd`): the mean
        ``cost_usd`` of its priced calls; when none is priced (an unknown traced model), an
        estimate: their total tokens at the mean of the input and output price of the
        version's configured model (else the traced model)."""
        prices = self.prices
        if prices is None:
            return None
        priced = conn.execute(
            "SELECT COUNT(cost_usd) AS calls, SUM(cost_usd) AS usd FROM traces"
            " WHERE prompt_version_id = ? AND seq > ? AND seq <= ? AND task_id = ?",
            (version, rollout["trace_seq"], rollout["end_trace_seq"] or 2**62,
             rollout["task_id"]),
        ).fetchone()
        if priced["calls"]:
            return float(priced["usd"]) / int(priced["calls"])
        config = _unjson(conn.execute(
            "SELECT config FROM prompts WHERE id = ?", (version,)
        ).fetchone()["config"]) or {}
        configured = config.get("model") if isinstance(config.get("model"), str) else None
        rows = rollout_tally.arm_models(conn, rollout["id"], version)
        calls = sum(n for _model, n, _tokens in rows)
        if not calls:
            return None
        usd = 0.0
        for model, _n, tokens in rows:
            per_in, per_out = prices.price(configured or model)
            usd += float(tokens) * (per_in + per_out) / 2 / 1_000_000
        return usd / calls

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
            comment=row["comment"],
            correction=_unjson(row["correction"]),
            trace_id=_uuid(row["trace_id"]),
            prompt_version_id=_uuid(row["prompt_version_id"]),
            arm=row["arm"],
        )

    def _add_feedback(
        self, conn: sqlite3.Connection, req: FeedbackRequest, new_jobs: list[str]
    ) -> FeedbackResult:
        if req.id is not None:
            old = conn.execute("SELECT * FROM feedback WHERE id = ?", (str(req.id),)).fetchone()
            if old is not None:
                return self._feedback(old)
        comment, correction = _critique(req.comment, req.correction, req.output)
        task = self._task_for_write(conn, req.task_id)
        fid = str(req.id or uuid7())
        trace_key = _feedback_trace(req)
        if trace_key is not None:
            # The trace was scored before its call's own entry arrived: that score made an
            # entry from the trace; the call's entry fills in its inputs and output.
            made = conn.execute(
                "SELECT id FROM feedback WHERE task_id = ? AND trace_id = ?"
                " AND source = 'trace_score'",
                (task["id"], trace_key),
            ).fetchone()
            if made is not None:
                conn.execute(
                    "UPDATE feedback SET inputs = ?, output = COALESCE(?, output),"
                    " source = ?, metadata = ? WHERE id = ?",
                    (_json(req.inputs), _json(req.output), req.source, _json(req.metadata),
                     made["id"]),
                )
                row = conn.execute("SELECT * FROM feedback WHERE id = ?", (made["id"],))
                return self._feedback(row.fetchone())
        conn.execute(
            "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
            " created_at, comment, correction, trace_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                fid, task["id"], _json(req.inputs), _json(req.output), req.score, req.source,
                _json(req.metadata), _ts(), comment, _json(correction), trace_key,
            ),
        )
        conn.execute(
            "UPDATE tasks SET feedback_count = feedback_count + 1,"
            " feedback_since_optimization = feedback_since_optimization + 1,"
            " scored_since_job = scored_since_job + ? WHERE id = ?",
            (int(req.score is not None), task["id"]),
        )
        job_id = self._maybe_trigger(conn, task["id"])
        if job_id is not None:
            new_jobs.append(job_id)
        self._rollout_record(conn, "feedback", fid, task["id"], _given(req.prompt_version_id),
                             _given(req.arm), None, scored=req.score is not None)
        row = conn.execute("SELECT * FROM feedback WHERE id = ?", (fid,)).fetchone()
        return self._feedback(row)

    def add_feedback(self, req: FeedbackRequest) -> tuple[FeedbackResult, list[str]]:
        """Store feedback (idempotent by id); returns it and the ids of jobs it started."""
        new_jobs: list[str] = []
        with self._write() as conn:
            result = self._add_feedback(conn, req, new_jobs)
        return result, new_jobs

    def list_feedback(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[FeedbackResult]:
        """Return a page of feedback, newest first, optionally for one task."""
        return _page(self._list_rows("feedback", ref, limit, after), limit, self._feedback)

    def scored_examples(self, task_id: str, limit: int = MAX_EXAMPLES) -> list[Example]:
        """Return the task's newest *limit* scored feedback entries, oldest first, as
        optimizer examples (a bounded read on this thread's connection, outside any write)."""
        conn = self._conn()
        rows = conn.execute(
            "SELECT seq, id, inputs, output, score, correction, comment FROM feedback"
            " WHERE task_id = ? AND score IS NOT NULL AND source NOT LIKE ?"
            " ORDER BY seq DESC LIMIT ?",
            (task_id, "evaluator:%", limit),  # a parameter: no literal % for any driver
        ).fetchall()
        if self._uses_judged(conn, task_id):  # people's scores first, judges' where none
            judged = evaluator_sql.judged_examples(conn, task_id,
                                                   self._feeding_evaluators(conn, task_id),
                                                   limit)
            rows = sorted([*rows, *judged], key=lambda r: int(r["seq"]), reverse=True)[:limit]
        return [
            Example(id=r["id"], inputs=_unjson(r["inputs"]), output=_unjson(r["output"]),
                    score=float(r["score"]), correction=_unjson(r["correction"]),
                    comment=r["comment"])
            for r in reversed(rows)
        ]

    # --- traces ----------------------------------------------------------------------

    def prune_feedback(self, batch: int) -> int:
        """Delete the oldest feedback entries of tasks past their ``feedback_retention_limit``,
        at most *batch* in one short write; return how many (see `StorageInterface`)."""
        conn = self._conn()
        tasks = conn.execute(
            "SELECT id, feedback_retention_limit AS keep FROM tasks"
            " WHERE feedback_retention_limit IS NOT NULL ORDER BY seq"
        ).fetchall()
        for task in tasks:
            # read outside the write (WAL readers never wait): the newest entry past the
            # limit; new entries only ever come after it, so it stays past the limit
            row = conn.execute(
                "SELECT seq FROM feedback WHERE task_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                (task["id"], task["keep"]),
            ).fetchone()
            if row is None:
                continue
            with self._write() as wconn:
                rollout = self._running_rollout(wconn, task["id"])
                cutoff = decisions.prune_cutoff(
                    beyond_limit=row["seq"],
                    rollout_start=None if rollout is None else rollout["feedback_seq"],
                )
                if cutoff is None:
                    continue
                deleted = wconn.execute(
                    "DELETE FROM feedback WHERE seq IN (SELECT seq FROM feedback"
                    " WHERE task_id = ? AND seq <= ? ORDER BY seq LIMIT ?)",
                    (task["id"], cutoff, batch),
                ).rowcount
            if deleted:
                return int(deleted)
        return 0

    def prune(self, batch: int) -> int:
        """Delete the oldest traces or feedback entries of one task past its retention
        limits, at most *batch* in one short write; return how many (see `StorageInterface`)."""
        conn = self._conn()
        now = utcnow()
        tasks = conn.execute(
            f"SELECT id, {', '.join(RETENTION_FIELDS)} FROM tasks ORDER BY seq"
        ).fetchall()
        for task in tasks:
            limits = RetentionLimits.of(task, self.retention_defaults)
            for table, keep, days, start in (
                ("traces", limits.trace_retention_limit, limits.trace_retention_days,
                 "trace_seq"),
                ("feedback", limits.feedback_retention_limit, limits.feedback_retention_days,
                 "feedback_seq"),
            ):
                deleted = self._prune_table(conn, table, task["id"], keep, days, start, batch,
                                            now)
                if deleted:
                    return deleted
        return 0

    def _prune_table(
        self, conn: sqlite3.Connection, table: str, task_id: str, keep: int | None,
        days: int | None, start: str, batch: int, now: datetime,
    ) -> int:
        # read outside the write (WAL readers never wait): the newest row past the count
        # limit, and the newest of the oldest *batch* rows past the age limit; new rows only
        # ever come after them, so they stay past their limit
        beyond_count = beyond_age = None
        if keep is not None:
            row = conn.execute(
                f"SELECT seq FROM {table} WHERE task_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
                (task_id, keep),
            ).fetchone()
            beyond_count = None if row is None else row["seq"]
        if days is not None:
            row = conn.execute(
                f"SELECT MAX(seq) AS seq FROM (SELECT seq, created_at FROM {table}"
                " WHERE task_id = ? ORDER BY seq LIMIT ?) AS oldest WHERE created_at < ?",
                (task_id, batch, _ts(now - timedelta(days=days))),
            ).fetchone()
            beyond_age = row["seq"]
        if beyond_count is None and beyond_age is None:
            return 0
        with self._write() as wconn:
            rollout = self._running_rollout(wconn, task_id)
            cutoff = decisions.retention_cutoff(
                beyond_count=beyond_count, beyond_age=beyond_age,
                rollout_start=None if rollout is None else rollout[start],
            )
            if cutoff is None:
                return 0
            deleted = wconn.execute(
                f"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table}"
                " WHERE task_id = ? AND seq <= ? ORDER BY seq LIMIT ?)",
                (task_id, cutoff, batch),
            ).rowcount
        return int(deleted)

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
            arm=row["arm"],
            error=None if row["error"] is None else bool(row["error"]),
            user_id=row["user_id"],
            session_id=row["session_id"],
            tags=_unjson(row["tags"]),
            cost_usd=row["cost_usd"],
        )

    def _add_trace(self, conn: sqlite3.Connection, req: TraceRequest) -> TraceResult:
        if req.id is not None:
            old = conn.execute("SELECT * FROM traces WHERE id = ?", (str(req.id),)).fetchone()
            if old is not None:
                return self._trace(old)
        task = self._task_for_write(conn, req.task_id)
        version_id = None if req.prompt_version_id is None else str(req.prompt_version_id)
        prompt_text = req.prompt_text
        if prompt_text is None and version_id is not None:  # named by id: its text
            prompt_text = _version_text(conn, task["id"], version_id)
        if req.prompt_text is not None:
            active = conn.execute(
                "SELECT id, prompt_text FROM prompts WHERE task_id = ? AND status = 'active'",
                (task["id"],),
            ).fetchone()
            # A trace records the prompt it used and never makes a version, but for the
            # developer's default_prompt (flagged by the SDK) of a task without any: version 1.
            if req.prompt_is_default and active is None and not conn.execute(
                "SELECT 1 FROM prompts WHERE task_id = ? LIMIT 1", (task["id"],)
            ).fetchone():
                baseline = self._insert_prompt(
                    conn, task["id"], req.prompt_text, status="active", optimizer="baseline",
                    **_default_recipe(req),
                )
                version_id = version_id or baseline
            elif version_id is None and active is not None and (
                active["prompt_text"] == req.prompt_text
            ):
                version_id = active["id"]
        tid = str(req.id or uuid7())
        conn.execute(
            "INSERT INTO traces (id, task_id, prompt_text, response_text, model, tokens,"
            " latency_ms, prompt_version_id, parent_trace_id, metadata, created_at, user_id,"
            " session_id, tags, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                tid, task["id"], prompt_text, req.response_text, req.model, req.tokens,
                req.latency_ms, version_id,
                None if req.parent_trace_id is None else str(req.parent_trace_id),
                _json(req.metadata), _ts(), req.user_id, req.session_id, _json(req.tags),
                self.trace_cost(req),
            ),
        )
        self._rollout_record(conn, "traces", tid, task["id"], version_id, req.arm, req.error,
                             scored=False)
        return self._trace(conn.execute("SELECT * FROM traces WHERE id = ?", (tid,)).fetchone())

    def add_trace(self, req: TraceRequest) -> TraceResult:
        """Store a trace (idempotent by id), and apply the scores held for it."""
        with self._write() as conn:
            result = self._add_trace(conn, req)
        if self.apply_held_scores([str(result.id)]):
            result = self.get_trace(str(result.id))
        return result

    def get_trace(self, trace_id: str) -> TraceResult:
        """Return one trace."""
        row = self._conn().execute(
            "SELECT * FROM traces WHERE id = ?", (_as_uuid(trace_id) or trace_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"trace {trace_id!r} not found")
        return self._trace(row)

    def list_traces(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[TraceResult]:
        """Return a page of traces, newest first, optionally for one task."""
        return _page(self._list_rows("traces", ref, limit, after), limit, self._trace)

    def score_trace(
        self,
        trace_id: str,
        score: float,
        scored_by: str,
        *,
        comment: str | None = None,
        correction: Any = None,
        new_jobs: list[str] | None = None,
    ) -> TraceResult:
        """Score a trace, and its feedback entry, which the optimizer learns from.

        A decorated call sent its own feedback entry (naming the trace in its metadata): it
        takes the score. A trace without one (an instrumented call) gets one, built from the
        trace: inputs are the call's template variables when the trace's metadata has them
        (``inputs``), else its prompt text; the output is the response text. Scoring again
        updates the same entry. Ids of jobs the score started are appended to *new_jobs*.
        """
        key = _as_uuid(trace_id) or trace_id
        with self._write() as conn:
            row = conn.execute("SELECT * FROM traces WHERE id = ?", (key,)).fetchone()
            if row is None:
                raise NotFound(f"trace {trace_id!r} not found")
            self._score(conn, row, score, scored_by, comment, correction, new_jobs)
            return self._trace(
                conn.execute("SELECT * FROM traces WHERE id = ?", (key,)).fetchone()
            )

    def _score(
        self, conn: sqlite3.Connection, row: sqlite3.Row, score: float, scored_by: str,
        comment: str | None, correction: Any, new_jobs: list[str] | None,
    ) -> None:
        """Score the trace *row* inside the caller's write (see `score_trace`)."""
        key = row["id"]
        self._score_feedback(conn, row, score, comment, correction)
        conn.execute(
            "UPDATE traces SET score = ?, scored_by = ? WHERE id = ?", (score, scored_by, key)
        )
        self._tally_score(conn, row, score)
        job_id = self._maybe_trigger(conn, row["task_id"])
        if job_id is not None and new_jobs is not None:
            new_jobs.append(job_id)
        self._rollout_scored(conn, key)

    def _score_feedback(
        self, conn: sqlite3.Connection, trace: sqlite3.Row, score: float,
        comment: str | None, correction: Any, counts: list[int] | None = None,
    ) -> None:
        """Give the trace's feedback entry the score (made from the trace when it has none).
        The task's counters are updated here, or added to *counts* (entries made, newly
        scored) for the caller to update once a batch."""
        key = trace["id"]
        # Through the trace index only (schema step 8 filled the column of old rows): a
        # score costs the same at any number of the task's rows.
        found = conn.execute(
            "SELECT id, output, score FROM feedback INDEXED BY feedback_trace"
            " WHERE task_id = ? AND trace_id = ? ORDER BY seq LIMIT 1",
            (trace["task_id"], key),
        ).fetchone()
        output = found["output"] if found is not None else trace["response_text"]
        comment, correction = _critique(comment, correction, output)
        if found is not None:
            conn.execute(
                "UPDATE feedback SET score = ?, trace_id = ?,"
                " comment = COALESCE(?, comment), correction = COALESCE(?, correction)"
                " WHERE id = ?",
                (score, key, comment, _json(correction), found["id"]),
            )
            newly = found["score"] is None or found["score"] != score
        else:
            metadata = _unjson(trace["metadata"])
            inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
            if not isinstance(inputs, dict):
                inputs = None if trace["prompt_text"] is None else {
                    "prompt": trace["prompt_text"]
                }
            conn.execute(
                "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
                " created_at, comment, correction, trace_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    uuid7(), trace["task_id"], _json(inputs),
                    _json(trace["response_text"]), score, "trace_score",
                    _json({"trace_id": key, "prompt_version_id": trace["prompt_version_id"]}),
                    _ts(), comment, _json(correction), key,
                ),
            )
            if counts is None:
                conn.execute(
                    "UPDATE tasks SET feedback_count = feedback_count + 1,"
                    " feedback_since_optimization = feedback_since_optimization + 1"
                    " WHERE id = ?",
                    (trace["task_id"],),
                )
            else:
                counts[0] += 1
            newly = True
        if newly and counts is not None:
            counts[1] += 1
        elif newly:
            conn.execute(
                "UPDATE tasks SET scored_since_job = scored_since_job + 1 WHERE id = ?",
                (trace["task_id"],),
            )

    def apply_scores(
        self, scores: Sequence[ScoreItem], new_jobs: list[str] | None = None
    ) -> tuple[int, list[tuple[str, str]]]:
        """Apply in-process scores (from an ingest batch) as `score_trace` does, in one write
        for the batch (scores of plain tasks with a few statements for all of them).

        Idempotent by score id: a score already applied is counted as applied and not applied
        again. A score whose trace is not stored yet (a client spooled it while the server
        was down) is held, counted as applied, and applied when the trace arrives
        (`apply_held_scores`). Returns ``(applied, errors)``; each error is
        ``(score_id, detail)`` for a score that can be neither applied nor held (more than
        `HELD_SCORES_MAX` wait). Ids of jobs the scores started go to *new_jobs*.
        """
        applied = 0
        errors: list[tuple[str, str]] = []
        later: list[ScoreItem] = []
        if scores:
            # One write for the batch: a score costs its own statements, not a transaction.
            # A task that can neither reach its threshold in this batch nor has a running
            # rollout has its counters added up and written once (the plain case); any other
            # takes the full path of `score_trace`, score by score.
            with self._write() as conn:
                ids = [(str(item.id), str(item.trace_id)) for item in scores]
                done = _existing(conn, "applied_scores", [sid for sid, _tid in ids])
                now = _ts()
                tids = [tid for _sid, tid in ids]
                # a trace scored twice in one batch: read it again each time (rare)
                once = len(set(tids)) == len(tids)
                rows = _rows_by_id(conn, "traces", tids) if once else {}
                batched: dict[str, list[int] | None] = {}  # task -> counts, None: full path
                plain: list[tuple[ScoreItem, sqlite3.Row]] = []
                applied_rows: list[tuple[str, str, str]] = []
                for item, (sid, tid) in zip(scores, ids, strict=True):
                    if sid in done:
                        applied += 1
                        continue
                    row = rows.get(tid) if once else conn.execute(
                        "SELECT * FROM traces WHERE id = ?", (tid,)).fetchone()
                    if row is None:  # held (or refused) below, one by one
                        later.append(item)
                        continue
                    task_id = row["task_id"]
                    if task_id not in batched:
                        batched[task_id] = self._batch_counts(conn, task_id, len(scores))
                    counts = batched[task_id]
                    if counts is None:
                        self._score(conn, row, item.score, item.scored_by, None, None, new_jobs)
                    elif once:
                        plain.append((item, row))
                    else:
                        self._score_feedback(conn, row, item.score, None, None, counts)
                        conn.execute("UPDATE traces SET score = ?, scored_by = ? WHERE id = ?",
                                     (item.score, item.scored_by, tid))
                    applied_rows.append((sid, tid, now))
                    done.add(sid)
                    applied += 1
                self._score_plain(conn, plain, batched, now)
                conn.executemany(
                    "INSERT INTO applied_scores (id, trace_id, applied_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (id) DO NOTHING",
                    applied_rows,
                )
                for task_id, counts in batched.items():
                    if counts is not None and (counts[0] or counts[1]):
                        conn.execute(
                            "UPDATE tasks SET feedback_count = feedback_count + ?,"
                            " feedback_since_optimization = feedback_since_optimization + ?,"
                            " scored_since_job = scored_since_job + ? WHERE id = ?",
                            (counts[0], counts[0], counts[1], task_id),
                        )
        for item in later:
            sid, tid = str(item.id), str(item.trace_id)
            with self._write() as conn:
                seen = conn.execute(
                    "SELECT 1 FROM applied_scores WHERE id = ?", (sid,)
                ).fetchone()
            if seen is not None:
                applied += 1
                continue
            try:
                # the one scoring path
                self.score_trace(tid, item.score, item.scored_by, new_jobs=new_jobs)
            except NotFound as exc:
                held = self._hold_score(item)
                if held is None:  # the trace arrived meanwhile
                    try:
                        self.score_trace(tid, item.score, item.scored_by, new_jobs=new_jobs)
                    except NotFound:
                        held = False
                if held is False:
                    errors.append((sid, str(exc)))
                    continue
                if held:
                    applied += 1
                    continue
            with self._write() as conn:
                conn.execute(
                    "INSERT OR IGNORE INTO applied_scores (id, trace_id, applied_at)"
                    " VALUES (?, ?, ?)",
                    (sid, tid, _ts()),
                )
            applied += 1
        return applied, errors

    @staticmethod
    def _score_plain(
        conn: sqlite3.Connection, plain: list[tuple[ScoreItem, sqlite3.Row]],
        counts: dict[str, list[int] | None], now: str,
    ) -> None:
        """`_score_feedback` and the trace update of *plain* scores (distinct traces of tasks
        whose counters are written once, see `_batch_counts`), a few statements for all."""
        if not plain:
            return
        keys = [row["id"] for _item, row in plain]
        found: dict[str, sqlite3.Row] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            for entry in conn.execute(  # through the trace index; the first entry wins
                "SELECT seq, id, task_id, trace_id, output, score FROM feedback"
                f" WHERE trace_id IN ({','.join('?' * len(chunk))})", chunk,
            ):
                at = f"{entry['task_id']} {entry['trace_id']}"
                if at not in found or entry["seq"] < found[at]["seq"]:
                    found[at] = entry
        updates, inserts, traces = [], [], []
        for item, row in plain:
            key, task_id, score = row["id"], row["task_id"], item.score
            task_counts = counts[task_id]
            assert task_counts is not None
            entry = found.get(f"{task_id} {key}")
            if entry is not None:
                updates.append((score, key, entry["id"]))
                newly = entry["score"] is None or entry["score"] != score
            else:
                metadata = _unjson(row["metadata"])
                inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
                if not isinstance(inputs, dict):
                    inputs = None if row["prompt_text"] is None else {"prompt": row["prompt_text"]}
                inserts.append((
                    uuid7(), task_id, _json(inputs), _json(row["response_text"]), score,
                    "trace_score",
                    _json({"trace_id": key, "prompt_version_id": row["prompt_version_id"]}),
                    now, key,
                ))
                task_counts[0] += 1
                newly = True
            task_counts[1] += int(newly)
            traces.append((score, item.scored_by, key))
        conn.executemany("UPDATE feedback SET score = ?, trace_id = ? WHERE id = ?", updates)
        conn.executemany(
            "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
            " created_at, trace_id) VALUES (?,?,?,?,?,?,?,?,?)", inserts)
        conn.executemany("UPDATE traces SET score = ?, scored_by = ? WHERE id = ?", traces)

    def _batch_counts(self, conn: sqlite3.Connection, task_id: str, scores: int
                      ) -> list[int] | None:
        """``[0, 0]`` when *scores* more entries cannot bring the task to its threshold and
        no rollout of it runs (its counters may be written once for the batch), else None."""
        task = conn.execute(
            "SELECT feedback_since_optimization AS since, feedback_threshold AS threshold"
            " FROM tasks WHERE id = ?", (task_id,),
        ).fetchone()
        if task["since"] + scores >= task["threshold"]:
            return None
        if self._running_rollout(conn, task_id) is not None:
            return None
        return [0, 0]

    def _hold_score(self, item: ScoreItem) -> bool | None:
        """Keep a score whose trace is not stored yet: True when held, False when too many
        wait already, None when the trace is stored by now (apply it instead)."""
        with self._write() as conn:  # one writer: a trace stored after this sees the row
            if conn.execute(
                "SELECT 1 FROM traces WHERE id = ?", (str(item.trace_id),)
            ).fetchone() is not None:
                return None
            held = conn.execute("SELECT COUNT(*) AS n FROM held_scores").fetchone()["n"]
            if held >= HELD_SCORES_MAX:
                return False
            conn.execute(
                "INSERT OR IGNORE INTO held_scores (id, trace_id, score, scored_by, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (str(item.id), str(item.trace_id), item.score, item.scored_by, _ts()),
            )
        return True

    def apply_held_scores(
        self, trace_ids: Sequence[str], new_jobs: list[str] | None = None
    ) -> int:
        """Apply the held scores of the traces *trace_ids* (just stored), oldest first;
        return how many were applied."""
        conn = self._conn()
        if conn.execute("SELECT 1 FROM held_scores LIMIT 1").fetchone() is None:
            return 0  # the usual case: one cheap query per batch
        keys = [_as_uuid(t) or t for t in trace_ids]
        rows: list[sqlite3.Row] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows += conn.execute(
                f"SELECT * FROM held_scores WHERE trace_id IN ({marks})", chunk
            ).fetchall()
        rows.sort(key=lambda r: r["seq"])
        items = [
            ScoreItem(id=uuid.UUID(r["id"]), trace_id=uuid.UUID(r["trace_id"]),
                      score=r["score"], scored_by=r["scored_by"])
            for r in rows
        ]
        with self._write() as conn:
            for r in rows:
                conn.execute("DELETE FROM held_scores WHERE id = ?", (r["id"],))
        applied, _errors = self.apply_scores(items, new_jobs)
        return applied

    # --- ingest ----------------------------------------------------------------------

    def ingest(
        self, traces: Sequence[TraceRequest], feedback: Sequence[FeedbackRequest]
    ) -> tuple[int, list[tuple[str, str | None, str]], list[str]]:
        """Store a batch in one transaction, with one multi-row insert per table and task.

        Returns ``(accepted, errors, new_job_ids)``; each error is ``(kind, id, detail)`` for
        an item that refers to a task that does not exist. The other items are kept. A repeated
        client id (stored before, or twice in the batch) is accepted and stored once. Items
        that need more than an insert (a task with a running rollout, feedback for a trace
        that was scored before it arrived) take the single-record path, so a batch means
        exactly what the same items sent one by one mean.
        """
        errors: list[tuple[str, str | None, str]] = []
        new_jobs: list[str] = []
        now = _ts()
        with self._write() as conn:
            tasks = _BatchTasks(self, conn)
            trace_rows: list[tuple[Any, ...]] = []
            trace_ids = _id_texts([req.id for req in traces])
            for req, trace_id in zip(traces, trace_ids, strict=True):
                task_id = tasks.resolve(req, "trace", "traces", errors)
                if task_id is None:
                    continue
                if tasks.rollout_running(task_id):
                    self._add_trace(conn, req)
                else:
                    trace_rows.append(
                        self._trace_row(conn, tasks, task_id, req, now, trace_id or uuid7()))
            conn.executemany(
                "INSERT INTO traces (id, task_id, prompt_text, response_text, model, tokens,"
                " latency_ms, prompt_version_id, parent_trace_id, metadata, created_at, arm,"
                " error, user_id, session_id, tags, cost_usd)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (id) DO NOTHING",
                trace_rows,
            )
            plain: dict[str, dict[str, tuple[tuple[Any, ...], bool]]] = {}
            trace_keys = [_feedback_trace(fb) for fb in feedback]
            # traces scored before their call's own entry arrived (one indexed query a batch)
            scored_early = _scored_traces(conn, [k for k in trace_keys if k is not None])
            feedback_ids = _id_texts([fb.id for fb in feedback])
            for fb, trace_key, fid in zip(feedback, trace_keys, feedback_ids, strict=True):
                task_id = tasks.resolve(fb, "feedback", "feedback", errors)
                if task_id is None:
                    continue
                if tasks.rollout_running(task_id) or trace_key in scored_early:
                    self._add_feedback(conn, fb, new_jobs)
                    continue
                comment, correction = _critique(fb.comment, fb.correction, fb.output)
                fid = fid or uuid7()
                rows = plain.setdefault(task_id, {})
                if fid not in rows:  # twice in one batch: stored once
                    rows[fid] = ((
                        fid, task_id, _json(fb.inputs), _json(fb.output), fb.score, fb.source,
                        _json(fb.metadata), now, comment, _json(correction), trace_key,
                        _text(_given(fb.prompt_version_id)), _given(fb.arm),
                    ), fb.score is not None)
            # One query a batch: the newest feedback key before the inserts below, and whether
            # scores wait for their traces (held by `apply_scores` under this same lock, so
            # none can be held for these traces after this write).
            state = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) AS s,"
                " CASE WHEN EXISTS (SELECT 1 FROM held_scores) THEN 1 ELSE 0 END AS held"
                " FROM feedback"
            ).fetchone()
            before, held = int(state["s"]), bool(state["held"])
            for task_id, rows in plain.items():
                # an id stored before is not inserted again; what was inserted is what has a
                # higher key than the newest before (the write lock is ours), for this task
                conn.executemany(
                    "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
                    " created_at, comment, correction, trace_id, prompt_version_id, arm)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
                    [row for row, _scored in rows.values()],
                )
                added = conn.execute(
                    "SELECT COUNT(*) AS n, COUNT(score) AS scored FROM feedback"
                    " WHERE seq > ? AND task_id = ?",
                    (before, task_id),
                ).fetchone()
                self._count_feedback(conn, task_id, added["n"], added["scored"], new_jobs)
        # scores that arrived before these traces (held by `apply_scores`)
        if held:
            self.apply_held_scores([str(t.id) for t in traces if t.id is not None], new_jobs)
        return len(traces) + len(feedback) - len(errors), errors, new_jobs

    def _trace_row(
        self, conn: sqlite3.Connection, tasks: _BatchTasks, task_id: str, req: TraceRequest,
        now: str, trace_id: str,
    ) -> tuple[Any, ...]:
        """The ``traces`` row of *req* (stored as *trace_id*), linking it to a prompt version
        as `_add_trace` does."""
        version_id = None if req.prompt_version_id is None else str(req.prompt_version_id)
        if req.prompt_text is not None:
            active = tasks.active_prompt(task_id)
            # only the developer's default_prompt may become version 1 (see `_add_trace`)
            if req.prompt_is_default and active is None and not tasks.has_versions(task_id):
                baseline = self._insert_prompt(
                    conn, task_id, req.prompt_text, status="active", optimizer="baseline",
                    **_default_recipe(req),
                )
                tasks.set_active(task_id, baseline, req.prompt_text)
                version_id = version_id or baseline
            elif version_id is None and active is not None and active[1] == req.prompt_text:
                version_id = active[0]
        prompt_text = req.prompt_text
        if prompt_text is None and version_id is not None:  # named by id: its text
            prompt_text = tasks.version_text(task_id, version_id)
        return (
            trace_id, task_id, prompt_text, req.response_text, req.model,
            req.tokens, req.latency_ms, version_id,
            None if req.parent_trace_id is None else str(req.parent_trace_id),
            _json(req.metadata), now, req.arm, None if req.error is None else int(req.error),
            req.user_id, req.session_id, _json(req.tags), self.trace_cost(req),
        )

    def _count_feedback(
        self, conn: sqlite3.Connection, task_id: str, added: int, scored: int,
        new_jobs: list[str],
    ) -> None:
        """Count *added* new feedback entries (*scored* of them with a score); start a job
        where the threshold is crossed.

        Equivalent to counting them one at a time: the job starts at the entry that reaches
        the threshold, and the entries after it count towards the next one.
        """
        if added <= 0:
            return
        # Scored entries only make a threshold job worth running (see _maybe_trigger); counted
        # first, so the entry that crosses the threshold finds them.
        # one round trip each (PostgreSQL): the scored count with the values the rest needs,
        # and the feedback count with the task row `_maybe_trigger` reads
        scored_sql = "UPDATE tasks SET scored_since_job = scored_since_job + ? WHERE id = ?"
        counts_sql = ("SELECT feedback_since_optimization AS since,"
                      " feedback_threshold AS threshold FROM tasks WHERE id = ?")
        if self.update_returning:
            row = conn.execute(
                scored_sql + " RETURNING feedback_since_optimization AS since,"
                " feedback_threshold AS threshold", (scored, task_id),
            ).fetchone()
        else:
            conn.execute(scored_sql, (scored, task_id))
            row = conn.execute(counts_sql, (task_id,)).fetchone()
        first = added
        if row["since"] + added >= row["threshold"]:
            first = min(added, max(row["threshold"] - row["since"], 1))
        update = (
            "UPDATE tasks SET feedback_count = feedback_count + ?,"
            " feedback_since_optimization = feedback_since_optimization + ? WHERE id = ?"
        )
        if first < added or row["since"] + first >= row["threshold"]:
            task = None
            if self.update_returning:
                task = conn.execute(update + " RETURNING *", (first, first, task_id)).fetchone()
            else:
                conn.execute(update, (first, first, task_id))
            job_id = self._maybe_trigger(conn, task_id, task)
            if job_id is not None:
                new_jobs.append(job_id)
        else:
            conn.execute(update, (first, first, task_id))
        if added > first:
            conn.execute(update, (added - first, added - first, task_id))

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
        self._audit(conn, "job.started", task_id=task["id"], target=job_id,
                    detail=f"triggered by {triggered_by}")
        conn.execute(
            "UPDATE tasks SET feedback_since_optimization = 0, scored_since_job = 0,"
            " last_optimization = ? WHERE id = ?",
            (now, task["id"]),
        )
        return job_id

    def _maybe_trigger(
        self, conn: sqlite3.Connection, task_id: str, task: sqlite3.Row | None = None
    ) -> str | None:
        """Insert the task's threshold job when `decisions.threshold_job` says it starts
        (*task*: the task's row as it stands now, when the caller has it)."""
        if task is None:
            task = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if not decisions.threshold_due(new_feedback=task["feedback_since_optimization"],
                                       threshold=task["feedback_threshold"],
                                       scored_since_job=task["scored_since_job"]):
            return None  # most feedback ends here, on the task row alone
        decision = self._threshold_decision(conn, task)
        if not decision.start:
            if decision.waiting is not None:
                logger.debug("threshold job of task %r deferred: %s", task["name"],
                             decision.waiting)
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

    def list_jobs(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[Job]:
        """Return a page of jobs, newest first, optionally for one task."""
        return _page(self._list_rows("jobs", ref, limit, after), limit, self._job)

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

    def version_with_text(self, task_id: str, prompt_text: str) -> int | None:
        """The number of the task's first version with exactly *prompt_text*, else ``None``."""
        return _same_version(self._conn(), task_id, prompt_text)

    def finish_job_success(
        self, job_id: str, prompt_text: str, *, eval_score: float, optimizer: str,
        metadata: dict[str, Any], dspy_version: str | None = None, pr_url: str | None = None,
        pr_error: str | None = None, version_status: str = "candidate",
        comparison: dict[str, Any] | None = None, owner: str | None = None,
    ) -> Job:
        """Store the job's new prompt version as ``candidate`` and mark the job SUCCESS.

        A candidate whose text equals an existing version of the task makes no new version:
        the job succeeds without ``prompt_version_id`` and its metadata says why
        (``no_new_version``, ``same_as_version``). The job's pull request, if it has one, is
        recorded in the same write (*pr_url*, or ``PR_FAILED`` with *pr_error*), so nobody
        sees the job SUCCESS first and PR_FAILED later. *version_status* is ``rejected`` for a
        candidate judged worse; *comparison* (``verdict``, ``baseline_version``,
        ``baseline_score``, ``eval_sample_size``) says what its score was compared against.
        With *owner*, the job ends only while *owner* holds its lease (else `LeaseLost`).
        """
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            self._finish_lease(conn, job_id, owner)
            same = _same_version(conn, row["task_id"], prompt_text)
            version_id: str | None = None
            if same is not None:
                metadata = {
                    **metadata,
                    "no_new_version": f"the optimized prompt is identical to version {same}",
                    "same_as_version": same,
                }
            else:
                version_id = self._insert_prompt(
                    conn, row["task_id"], prompt_text, status=version_status,
                    optimizer=optimizer, eval_score=eval_score, dspy_version=dspy_version,
                    **_kept_recipe(conn, row["task_id"], prompt_text),
                )
                if comparison:
                    conn.execute(
                        "UPDATE prompts SET verdict = ?, baseline_version = ?,"
                        " baseline_score = ?, eval_sample_size = ? WHERE id = ?",
                        (comparison.get("verdict"), comparison.get("baseline_version"),
                         comparison.get("baseline_score"), comparison.get("eval_sample_size"),
                         version_id),
                    )
            conn.execute(
                "UPDATE jobs SET status = ?, progress_step = 'done', prompt_version_id = ?,"
                " job_metadata = ?, completed_at = ?, pr_url = ?, error_message = ?,"
                " reserved_usd = 0, lease_owner = NULL WHERE id = ?",
                ("SUCCESS" if pr_error is None else "PR_FAILED", version_id, _json(metadata),
                 _ts(), pr_url, pr_error, job_id),
            )
            return self._job(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def finish_job_failure(
        self, job_id: str, message: str, *, metadata: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Job:
        """Mark the job FAILURE with *message* (and *metadata*, e.g. the calls made so far).

        With *owner*, only while *owner* holds the job's lease (else `LeaseLost`)."""
        with self._write() as conn:
            self._finish_lease(conn, job_id, owner)
            conn.execute(
                "UPDATE jobs SET status = 'FAILURE', progress_step = 'failed',"
                " error_message = ?, job_metadata = COALESCE(?, job_metadata), completed_at = ?,"
                " reserved_usd = 0, lease_owner = NULL WHERE id = ?",
                (message, _json(metadata), _ts(), job_id),
            )
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            return self._job(row)

    @staticmethod
    def _finish_lease(conn: sqlite3.Connection, job_id: str, owner: str | None) -> None:
        if owner is not None and not leases.finish(conn, job_id, owner):
            raise budget.LeaseLost(budget.LEASE_LOST)

    def set_job_options(self, job_id: str, options: dict[str, Any]) -> None:
        """Keep a pending job's options (e.g. ``{"strategy": "gepa"}``) in its metadata."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET job_metadata = ? WHERE id = ? AND status = 'PENDING'",
                (_json({"options": options}), job_id),
            )

    def merge_job_metadata(self, job_id: str, values: dict[str, Any]) -> Job:
        """Set *values* (top-level keys) in a job's metadata, keeping the other keys."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job_id!r} not found")
            merged = {**(_unjson(row["job_metadata"]) or {}), **values}
            conn.execute("UPDATE jobs SET job_metadata = ? WHERE id = ?",
                         (_json(merged), job_id))
            return self._job(conn.execute("SELECT * FROM jobs WHERE id = ?",
                                          (job_id,)).fetchone())

    # --- spend and leases (see kaizen_server.storage.spend) -----------------------------

    def limits(self, task: Task) -> budget.Limits:
        """The task's spend limits: its own fields, else the server's defaults."""
        return budget.Limits.of(task, self.budget_defaults)

    def claim_job(self, job_id: str, owner: str) -> bool:
        """Take (or renew) the job's lease for *owner*; False when another worker runs it."""
        with self._write() as conn:
            return self._claim(conn, job_id, owner)

    def claim_next_job(self, owner: str) -> str | None:
        """Take the lease of the oldest unfinished job nobody runs; its id, else ``None``."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, lease_owner, lease_until FROM jobs WHERE status IN (?, ?)"
                " ORDER BY seq LIMIT ?", (*ACTIVE_JOB_STATUSES, leases.CANDIDATES),
            ).fetchall()
            now = time.time()
            for row in rows:
                if row["lease_owner"] == owner:
                    continue  # this worker's own job: it runs it already
                if leases.takeable(row["lease_owner"], row["lease_until"], owner, now) \
                        and self._claim(conn, str(row["id"]), owner, now):
                    return str(row["id"])
        return None

    def _claim(self, conn: sqlite3.Connection, job_id: str, owner: str,
               now: float | None = None) -> bool:
        previous = leases.claim(conn, job_id, owner, seconds=self.lease_seconds, now=now)
        if previous is None:
            return False
        if previous != owner:  # changed hands: who runs the job is worth keeping
            task = conn.execute("SELECT task_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
            self._audit(conn, "job.claimed", task_id=task["task_id"], target=job_id,
                        detail=f"by {owner}" + (f", taken over from {previous}" if previous
                                                else ""),
                        actor=(keys.SYSTEM_NAME, None))
        return True

    def release_job(self, job_id: str, owner: str) -> None:
        """Give up the job's lease (the worker is stopping; another may resume the job)."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET lease_owner = NULL WHERE id = ? AND lease_owner = ?",
                         (job_id, owner))

    def day_used(self, task_id: str, *, except_job: str | None = None) -> float:
        """The task's LLM spend today (UTC), unspent reservations of running jobs included."""
        since = _ts(budget.day_start(utcnow()))
        return spend_store.day_used(self._conn(), task_id, since, except_job=except_job)

    def reserve_job(self, job_id: str, owner: str, estimate_usd: float,
                    daily_budget: float) -> str | None:
        """Count a starting job's estimate against its task's day; say why it cannot start."""
        with self._write() as conn:
            row = conn.execute("SELECT task_id, lease_owner FROM jobs WHERE id = ?",
                               (job_id,)).fetchone()
            if row is None or row["lease_owner"] != owner:
                return spend_store.LEASE_LOST
            since = _ts(budget.day_start(utcnow()))
            used = spend_store.day_used(conn, row["task_id"], since, except_job=job_id)
            if used + estimate_usd > daily_budget:
                return (
                    f"refused: the task's spend today (UTC) ${used:.4f} plus this job's"
                    f" estimate ${estimate_usd:.4f} exceeds its daily budget"
                    f" ${daily_budget:.4f}; raise daily_budget_usd (`kaizen tasks update"
                    " TASK --daily-budget-usd USD`) or wait for the next day"
                )
            conn.execute("UPDATE jobs SET reserved_usd = ? WHERE id = ?", (estimate_usd, job_id))
            return None

    def reserve_call(self, job_id: str, owner: str, estimate_usd: float, *,
                     job_budget: float, daily_budget: float) -> str | None:
        """Reserve an LLM call's estimate in the job row, or say which budget refuses it."""
        with self._write() as conn:
            return spend_store.reserve(conn, job_id, owner, estimate_usd, job_budget=job_budget,
                                       daily_budget=daily_budget,
                                       since=_ts(budget.day_start(utcnow())),
                                       lease_seconds=self.lease_seconds)

    def settle_call(self, job_id: str, owner: str, record: Any, reserved_usd: float) -> None:
        """Replace a call's reservation by its charge and keep its record (*record* is a
        `kaizen_server.llm.client.CallRecord`)."""
        with self._write() as conn:
            spend_store.settle(conn, job_id, record, reserved_usd)

    def job_books(self, job_id: str) -> dict[str, Any]:
        """The job's LLM books as kept call by call: calls, tokens, spend, by model."""
        conn = self._conn()
        row = conn.execute(
            "SELECT llm_calls, input_tokens, output_tokens, spent_usd FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        by_model: dict[str, dict[str, int]] = {}
        for m in conn.execute(
            "SELECT model, COUNT(*) AS calls, SUM(input_tokens) AS i, SUM(output_tokens) AS o"
            " FROM job_calls WHERE job_id = ? GROUP BY model ORDER BY model", (job_id,)
        ):
            by_model[m["model"]] = {"calls": m["calls"], "input_tokens": m["i"],
                                    "output_tokens": m["o"]}
        return {"llm_calls": row["llm_calls"], "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "spent_usd": round(row["spent_usd"], 6), "by_model": by_model}

    def list_job_calls(self, job_id: str, limit: int, *,
                       after: int | None = None) -> Page[dict[str, Any]]:
        """A page of the job's LLM calls, oldest first."""
        self.get_job(job_id)
        rows = spend_store.job_calls(self._conn(), str(_as_uuid(job_id) or job_id), limit,
                                     after)

        def call(r: sqlite3.Row) -> dict[str, Any]:
            return {"model": r["model"], "purpose": r["purpose"],
                    "input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"],
                    "cost_usd": r["cost_usd"], "charged_usd": r["charged_usd"],
                    "retries": r["retries"], "usage_reported": bool(r["usage_reported"])}

        items = [call(r) for r in rows[:limit]]
        next_key = int(rows[limit - 1]["seq"]) if len(rows) > limit else None
        return Page(items, next_key)

    def _threshold_waiting(self, conn: sqlite3.Connection, task: sqlite3.Row) -> str | None:
        """Why a due threshold job has not started, for the task's answer (else ``None``)."""
        return self._threshold_decision(conn, task).waiting

    def _threshold_decision(
        self, conn: sqlite3.Connection, task: sqlite3.Row
    ) -> decisions.ThresholdDecision:
        """Read what `decisions.threshold_job` needs of the task and ask it."""
        now = utcnow()
        since = _ts(budget.day_start(now))

        def usage() -> decisions.ThresholdUsage:
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM jobs WHERE task_id = ?"
                " AND triggered_by = 'threshold' AND created_at >= ?",
                (task["id"], since),
            ).fetchone()
            last = conn.execute(
                "SELECT MAX(created_at) AS last FROM jobs WHERE task_id = ?"
                " AND triggered_by = 'threshold'", (task["id"],),
            ).fetchone()["last"]
            return decisions.ThresholdUsage(
                jobs_today=row["n"], last_job_at=_dt(last),
                day_used_usd=spend_store.day_used(conn, task["id"], since),
            )

        return decisions.threshold_job(
            budget.Limits.of(task, self.budget_defaults),
            new_feedback=task["feedback_since_optimization"],
            threshold=task["feedback_threshold"], scored_since_job=task["scored_since_job"],
            job_active=self._active_job(conn, task["id"]) is not None, usage=usage, now=now,
        )

    # --- rollouts --------------------------------------------------------------------
    # A task has at most one running rollout (a partial unique index says so). Its live
    # figures are aggregates over the traces (scores, errors, latency) and the scored
    # feedback that names a version but no trace, stored after the rollout started; a
    # finished rollout keeps the sequence numbers it ended at, so its figures stay put.

    def _rollout_row(self, conn: sqlite3.Connection, task_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM rollouts WHERE task_id = ? ORDER BY seq DESC LIMIT 1", (task_id,)
        ).fetchone()
        return row

    def _running_rollout(self, conn: sqlite3.Connection, task_id: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM rollouts WHERE task_id = ? AND state = 'running'", (task_id,)
        ).fetchone()
        return row

    @staticmethod
    def _max_seq(conn: sqlite3.Connection, table: str) -> int:
        row = conn.execute(f"SELECT COALESCE(MAX(seq), 0) AS s FROM {table}").fetchone()
        return int(row["s"])

    def _rollout_record(
        self, conn: sqlite3.Connection, table: str, record_id: str, task_id: str,
        version_id: str | uuid.UUID | None, arm: str | None, error: bool | None, *,
        scored: bool,
    ) -> None:
        """Keep a trace's or feedback entry's arm, version and error flag; evaluate on a score."""
        version = None if version_id is None else str(version_id)
        rollout = self._running_rollout(conn, task_id)
        if rollout is not None and version is None and arm in ("active", "candidate"):
            version = rollout[f"{arm}_version_id"]
        if rollout is not None and arm is None and version is not None:
            if version == rollout["candidate_version_id"]:
                arm = "candidate"
            elif version == rollout["active_version_id"]:
                arm = "active"
        if rollout is not None and version in (rollout["active_version_id"],
                                               rollout["candidate_version_id"]):
            self._tally_record(conn, table, record_id, rollout["id"], str(version), error)
        if arm is None and error is None and (table == "traces" or version is None):
            return
        if table == "traces":
            conn.execute(
                "UPDATE traces SET arm = ?, error = ?, prompt_version_id ="
                " COALESCE(prompt_version_id, ?) WHERE id = ?",
                (arm, None if error is None else int(error), version, record_id),
            )
        else:
            conn.execute(
                "UPDATE feedback SET arm = ?, prompt_version_id = ? WHERE id = ?",
                (arm, version, record_id),
            )
        if scored and rollout is not None:
            self._score_arrived(conn, rollout)

    @staticmethod
    def _tally_record(
        conn: sqlite3.Connection, table: str, record_id: str, rollout_id: str, version: str,
        error: bool | None,
    ) -> None:
        """Count a record just stored in a running rollout's arm *version* (`rollout_tally`)."""
        if table == "traces":
            row = conn.execute(
                "SELECT latency_ms, model, tokens FROM traces WHERE id = ?", (record_id,)
            ).fetchone()
            rollout_tally.add_call(conn, rollout_id, version, error=error,
                                   latency_ms=row["latency_ms"], model=row["model"],
                                   tokens=row["tokens"])
            return
        row = conn.execute(
            "SELECT score, metadata FROM feedback WHERE id = ?", (record_id,)
        ).fetchone()
        metadata = _unjson(row["metadata"])
        names_trace = isinstance(metadata, dict) and metadata.get("trace_id") is not None
        if row["score"] is not None and not names_trace:  # a trace's score counts by the trace
            rollout_tally.add_score(conn, rollout_id, version, None, float(row["score"]))

    def _tally_score(self, conn: sqlite3.Connection, trace: sqlite3.Row, score: float) -> None:
        """*trace* (as it was) gets *score*: count it when a running rollout counts the trace."""
        version = trace["prompt_version_id"]
        if version is None:
            return
        rollout = self._running_rollout(conn, trace["task_id"])
        if rollout is None or trace["seq"] <= rollout["trace_seq"] or version not in (
            rollout["active_version_id"], rollout["candidate_version_id"]
        ):
            return
        rollout_tally.add_score(conn, rollout["id"], version, trace["score"], score)

    def _rollout_scored(self, conn: sqlite3.Connection, trace_id: str) -> None:
        """A trace got a score: evaluate its task's running rollout, if any."""
        row = conn.execute("SELECT task_id FROM traces WHERE id = ?", (trace_id,)).fetchone()
        rollout = None if row is None else self._running_rollout(conn, row["task_id"])
        if rollout is not None:
            self._score_arrived(conn, rollout)

    def _score_arrived(self, conn: sqlite3.Connection, rollout: sqlite3.Row) -> None:
        """Count a score; evaluate once both arms can have their minimum, then every 10 %.

        Evaluating reads the arms' running figures (`rollout_tally`), a few rows at any arm
        size; the cadence is `decisions.evaluation_due`'s. The test stays valid at any
        stopping time, and every GET evaluates as well.
        """
        counted = decisions.evaluation_due(
            scores_seen=rollout["scores_seen"], evaluated_at=rollout["evaluated_at"],
            min_samples=_unjson(rollout["config"])["min_samples"],
        )
        conn.execute("UPDATE rollouts SET scores_seen = ?, evaluated_at = ? WHERE id = ?",
                     (counted.scores_seen, counted.evaluated_at, rollout["id"]))
        if counted.due:
            self._evaluate_rollout(conn, rollout)

    def _arm_stats(
        self, conn: sqlite3.Connection, rollout: sqlite3.Row, version: str
    ) -> rollouts.ArmStats:
        # kept as calls and scores arrive (`rollout_tally`): a few rows, at any arm size
        judged = (0, 0.0, 0.0)
        if self._uses_judged(conn, rollout["task_id"]):  # judges' scores of traces no person
            bounds = (rollout["trace_seq"], rollout["end_trace_seq"] or 2**62)  # scored
            judged = evaluator_sql.judged_arm(conn, rollout["task_id"], version, bounds,
                                              self._feeding_evaluators(conn, rollout["task_id"]))
        return rollout_tally.arm_stats(conn, rollout["id"], version, extra=judged)

    @staticmethod
    def _rollout_config(rollout: sqlite3.Row) -> rollouts.RolloutConfig:
        config = _unjson(rollout["config"])
        return rollouts.RolloutConfig(
            ramp=tuple(config["ramp"]),
            min_samples=config["min_samples"],
            alpha=config["alpha"],
            error_margin=config["error_margin"],
            latency_margin=config["latency_margin"],
            max_duration=config["max_duration"],
            auto_promote=config["auto_promote"],
            auto_rollback=config["auto_rollback"],
            max_cost_ratio=config.get("max_cost_ratio"),
        )

    def _rollout_event(
        self, conn: sqlite3.Connection, rollout_id: str, event: str, share: float,
        reason: str, stats: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO rollout_events (rollout_id, at, event, share, reason, stats)"
            " VALUES (?,?,?,?,?,?)",
            (rollout_id, _ts(), event, share, reason, _json(stats)),
        )

    def _evaluate_rollout(self, conn: sqlite3.Connection, rollout: sqlite3.Row) -> None:
        """Run the test and the guards; store a ramp step, recommendation or decision."""
        config = self._rollout_config(rollout)
        moved = self._activated_by_hand(conn, rollout)
        if moved is not None:
            self._end_rollout(conn, rollout, moved.action, moved.reason,
                              {"share": config.ramp[rollout["step"]]})
            return
        active = self._arm_stats(conn, rollout, rollout["active_version_id"])
        candidate = self._arm_stats(conn, rollout, rollout["candidate_version_id"])
        elapsed = (utcnow() - datetime.fromisoformat(rollout["started_at"])).total_seconds()
        decision = rollouts.evaluate(
            config, active, candidate, step=rollout["step"], step_start_n=rollout["step_start_n"],
            elapsed=elapsed, recommended=rollout["recommendation"],
            costs=self._arm_costs(conn, rollout, config),
        )
        share = config.ramp[rollout["step"]]
        stats = decision.stats(active, candidate, share)
        if decision.action == "advance":
            step, start_n = decisions.ramp_step(step=rollout["step"], candidate_n=candidate.n)
            if self._rollout_moves(conn, rollout, "step = ?, step_start_n = ?",
                                   (step, start_n)):
                self._rollout_event(conn, rollout["id"], "ramp", config.ramp[step],
                                    decision.reason, stats)
        elif decision.action in ("recommend_promote", "recommend_rollback"):
            action = decision.action.removeprefix("recommend_")
            if self._rollout_moves(conn, rollout, "recommendation = ?", (action,)):
                self._rollout_event(conn, rollout["id"], decision.action, share,
                                    decision.reason, stats)
        elif decision.action in ("promote", "rollback"):
            self._end_rollout(conn, rollout, decision.action, decision.reason, stats)

    @staticmethod
    def _activated_by_hand(
        conn: sqlite3.Connection, rollout: sqlite3.Row
    ) -> decisions.HandActivation | None:
        """How the rollout ends when a version was activated outside it, else None."""
        row = conn.execute(
            "SELECT id FROM prompts WHERE task_id = ? AND status = 'active'",
            (rollout["task_id"],),
        ).fetchone()
        return decisions.hand_activation(
            current_active=None if row is None else row["id"],
            active_version=rollout["active_version_id"],
            candidate_version=rollout["candidate_version_id"],
        )

    @staticmethod
    def _rollout_moves(conn: sqlite3.Connection, rollout: sqlite3.Row, assignments: str,
                       values: tuple[Any, ...]) -> bool:
        """Apply *assignments* to *rollout* only if it is still as it was read: running, at
        the same step, with the same recommendation. A compare-and-set checked by its row
        count, so of several server processes deciding at once exactly one moves it (one
        ramp step, one promotion or rollback), whatever the database's isolation level."""
        cur = conn.execute(
            f"UPDATE rollouts SET {assignments} WHERE id = ? AND state = 'running'"
            " AND step = ? AND COALESCE(recommendation, '') = ?",
            (*values, rollout["id"], rollout["step"], rollout["recommendation"] or ""),
        )
        return bool(cur.rowcount == 1)

    def _end_rollout(
        self, conn: sqlite3.Connection, rollout: sqlite3.Row, action: str, reason: str,
        stats: dict[str, Any], *, by_request: bool = False,
    ) -> None:
        candidate = rollout["candidate_version_id"]
        state = "promoted" if action == "promote" else "rolled_back"
        if not self._rollout_moves(
            conn, rollout, "state = ?, reason = ?, ended_at = ?, end_trace_seq = ?,"
            " end_feedback_seq = ?",
            (state, reason, _ts(), self._max_seq(conn, "traces"),
             self._max_seq(conn, "feedback")),
        ):
            return  # another process decided first: its decision stands
        if action == "promote":
            conn.execute(
                "UPDATE prompts SET status = 'inactive' WHERE task_id = ? AND status = 'active'",
                (rollout["task_id"],),
            )
            conn.execute("UPDATE prompts SET status = 'active' WHERE id = ?", (candidate,))
            state, event = "promoted", "promoted"
        else:
            conn.execute("UPDATE prompts SET status = 'rejected' WHERE id = ? AND status != "
                         "'active'", (candidate,))
            state, event = "rolled_back", "rolled_back"
        share = stats.get("share", 0.0)
        self._rollout_event(conn, rollout["id"], event, share, reason, stats)
        self._audit(
            conn, "rollout.stopped" if by_request else "rollout.decided",
            task_id=rollout["task_id"], target=rollout["id"], detail=f"{state}: {reason}",
            actor=None if by_request else (keys.SYSTEM_NAME, None),
        )

    def _rollout(self, conn: sqlite3.Connection, rollout: sqlite3.Row) -> Rollout:
        config = self._rollout_config(rollout)
        arms: dict[str, RolloutArm] = {}
        stats: dict[str, rollouts.ArmStats] = {}
        for arm in ("active", "candidate"):
            version = rollout[f"{arm}_version_id"]
            a = stats[arm] = self._arm_stats(conn, rollout, version)
            interval = rollouts.arm_interval(a, alpha=config.alpha)
            arms[arm] = RolloutArm(
                version_id=uuid.UUID(version), n=a.n, mean=a.mean if a.n else None,
                lower=None if interval is None else interval[0],
                upper=None if interval is None else interval[1],
                calls=a.calls, errors=a.errors, error_rate=a.error_rate,
                p95_latency_ms=a.p95_latency_ms,
                cost_per_call_usd=self._arm_cost(conn, rollout, version),
            )
        test = rollouts.msprt(stats["active"], stats["candidate"], alpha=config.alpha)
        guards = rollouts.check_guards(
            stats["active"], stats["candidate"], error_margin=config.error_margin,
            latency_margin=config.latency_margin, max_cost_ratio=config.max_cost_ratio,
            costs=(arms["active"].cost_per_call_usd, arms["candidate"].cost_per_call_usd))
        events = conn.execute(
            "SELECT * FROM rollout_events WHERE rollout_id = ? ORDER BY seq", (rollout["id"],)
        ).fetchall()
        ready = test.difference if test.lower > -math.inf else None
        return Rollout(
            id=uuid.UUID(rollout["id"]),
            task_id=uuid.UUID(rollout["task_id"]),
            state=rollout["state"],
            active_version_id=uuid.UUID(rollout["active_version_id"]),
            candidate_version_id=uuid.UUID(rollout["candidate_version_id"]),
            share=config.ramp[rollout["step"]],
            ramp=list(config.ramp),
            step=rollout["step"],
            salt=rollout["salt"],
            min_samples=config.min_samples,
            alpha=config.alpha,
            max_duration=config.max_duration,
            auto_promote=config.auto_promote,
            auto_rollback=config.auto_rollback,
            recommendation=rollout["recommendation"],
            reason=rollout["reason"],
            started_at=_dt(rollout["started_at"]),
            ended_at=_dt(rollout["ended_at"]),
            active=arms["active"],
            candidate=arms["candidate"],
            difference=RolloutDifference(
                estimate=ready,
                lower=None if ready is None else test.lower,
                upper=None if ready is None else test.upper,
                p_value=test.p_value,
                significant=test.significant,
            ),
            guards=RolloutGuards(
                error_rate_delta=guards.error_rate_delta,
                latency_p95_ratio=guards.latency_p95_ratio,
                error_margin=config.error_margin,
                latency_margin=config.latency_margin,
                breached=list(guards.breached),
                cost_ratio=guards.cost_ratio if guards.cost_ratio != math.inf else None,
                max_cost_ratio=config.max_cost_ratio,
            ),
            audit=[
                RolloutEvent(at=_dt(e["at"]), event=e["event"], share=e["share"],
                             reason=e["reason"], stats=_unjson(e["stats"]))
                for e in events
            ],
        )

    def start_rollout(self, ref: str, req: RolloutRequest) -> Rollout:
        """Start a rollout of ``req.candidate_version_id`` against the task's active version.

        Raises `NotFound` (task or version), `Invalid` (a version of another task, the active
        one, or no active version) and `Conflict` (a rollout is already running).
        """
        if req.share is not None and req.ramp is not None:
            raise Invalid("give either `share` or `ramp`, not both")
        ramp = [req.share] if req.share is not None else req.ramp
        if ramp is None:
            ramp = [0.05, 0.2, 0.5, 1.0]
        if not ramp:
            raise Invalid("`ramp` must list at least one share")
        if any(b <= a for a, b in itertools.pairwise(ramp)):
            raise Invalid(f"`ramp` must increase step by step, got {ramp}")
        with self._write() as conn:
            task = self._require_task(conn, ref)
            cand = conn.execute(
                "SELECT * FROM prompts WHERE id = ?", (str(req.candidate_version_id),)
            ).fetchone()
            if cand is None:
                raise NotFound(f"prompt version {req.candidate_version_id} not found")
            if cand["task_id"] != task["id"]:
                raise Invalid(f"candidate_version_id {req.candidate_version_id} is a version of"
                              f" another task, not of {task['name']!r}")
            if cand["status"] == "active":
                raise Invalid(f"candidate_version_id {req.candidate_version_id} is already the"
                              f" active version of {task['name']!r}")
            active = conn.execute(
                "SELECT id FROM prompts WHERE task_id = ? AND status = 'active'", (task["id"],)
            ).fetchone()
            if active is None:
                raise Invalid(f"task {task['name']!r} has no active version to compare against")
            running = self._running_rollout(conn, task["id"])
            if running is not None:
                raise Conflict(f"a rollout ({running['id']}) is already running for task"
                               f" {task['name']!r}: stop it first")
            rollout_id = str(uuid.uuid4())
            config = {
                "ramp": ramp, "min_samples": req.min_samples, "alpha": req.alpha,
                "error_margin": req.error_margin, "latency_margin": req.latency_margin,
                "max_duration": req.max_duration, "auto_promote": req.auto_promote,
                "auto_rollback": req.auto_rollback,
            }
            if req.max_cost_ratio is not None:  # only then: configs stay as they were
                config["max_cost_ratio"] = req.max_cost_ratio
            conn.execute(
                "INSERT INTO rollouts (id, task_id, active_version_id, candidate_version_id,"
                " state, config, step, step_start_n, salt, started_at, trace_seq,"
                " feedback_seq) VALUES (?,?,?,?,'running',?,0,0,?,?,?,?)",
                (rollout_id, task["id"], active["id"], cand["id"], _json(config),
                 uuid.uuid4().hex, _ts(), self._max_seq(conn, "traces"),
                 self._max_seq(conn, "feedback")),
            )
            rollout_tally.open_arms(conn, rollout_id, (active["id"], cand["id"]))
            self._rollout_event(conn, rollout_id, "started", ramp[0],
                                f"candidate v{cand['version_number']} at {ramp[0]:.0%}",
                                {"ramp": ramp, "min_samples": req.min_samples})
            self._audit(conn, "rollout.started", task_id=task["id"], target=rollout_id,
                        detail=f"candidate v{cand['version_number']}, ramp {ramp}")
            row = conn.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
            return self._rollout(conn, row)

    def get_rollout(self, ref: str) -> Rollout:
        """Return the task's latest rollout, evaluating it first while it runs.

        With the database full, the rollout is returned as stored (not evaluated).
        """
        with contextlib.suppress(StoreFull), self._write() as conn:  # a short write
            task = self._require_task(conn, ref)
            row = self._running_rollout(conn, task["id"])
            if row is not None:
                self._evaluate_rollout(conn, row)
        # the report: read after the write, on this thread's connection
        return self._latest_rollout(self._conn(), ref, evaluate=False)

    def _latest_rollout(self, conn: sqlite3.Connection, ref: str, *, evaluate: bool) -> Rollout:
        task = self._require_task(conn, ref)
        row = self._running_rollout(conn, task["id"])
        if row is not None and evaluate:
            self._evaluate_rollout(conn, row)
        row = self._rollout_row(conn, task["id"])
        if row is None:
            raise NotFound(f"task {task['name']!r} has no rollout")
        return self._rollout(conn, row)

    def stop_rollout(self, ref: str, action: str) -> Rollout:
        """End the running rollout by *action* (``promote`` or ``rollback``); `Conflict` if none.

        A rollout whose task had a version activated by hand (by a server that did not end
        it then) ends ``overridden`` instead, and the stop is answered with `Conflict`: the
        person who activated wins, and no rollback leaves the candidate active.
        """
        overridden = ""
        with self._write() as conn:
            task = self._require_task(conn, ref)
            row = self._running_rollout(conn, task["id"])
            if row is None:
                last = self._rollout_row(conn, task["id"])
                ended = "" if last is None else (
                    f": the last one ended {last['state']} ({last['reason']})")
                raise Conflict(f"no rollout is running for task {task['name']!r}{ended}")
            version = None
            if self._activated_by_hand(conn, row) is not None:
                version = conn.execute(
                    "SELECT * FROM prompts WHERE task_id = ? AND status = 'active'",
                    (task["id"],),
                ).fetchone()
            if version is not None:
                self._override_rollout(conn, row, version)
                overridden = (f"no rollout is running for task {task['name']!r}: v"
                              f"{version['version_number']} was activated by hand, which ended"
                              " it")
            else:
                current = self._rollout(conn, row)
                stats = {"share": current.share, "active": {"n": current.active.n,
                         "mean": current.active.mean}, "candidate": {"n": current.candidate.n,
                         "mean": current.candidate.mean}, "p_value": current.difference.p_value}
                self._end_rollout(conn, row, action, f"stopped by request ({action})", stats,
                                  by_request=True)
                return self._rollout(conn, conn.execute(
                    "SELECT * FROM rollouts WHERE id = ?", (row["id"],)).fetchone())
        raise Conflict(overridden)  # after the commit: the override is kept

    def rollout_serving(self, ref: str) -> RolloutServing | None:
        """What ``GET /prompts/{task}`` carries while a rollout runs (ends an expired one)."""
        conn = self._conn()
        task = self._require_task(conn, ref)
        row = self._running_rollout(conn, task["id"])
        if row is None:
            return None
        config = self._rollout_config(row)
        elapsed = (utcnow() - datetime.fromisoformat(row["started_at"])).total_seconds()
        if elapsed >= config.max_duration or self._activated_by_hand(conn, row) is not None:
            # a full database: serve what is stored
            with contextlib.suppress(StoreFull), self._write() as wconn:
                fresh = self._running_rollout(wconn, task["id"])
                if fresh is not None:
                    self._evaluate_rollout(wconn, fresh)
            row = self._running_rollout(conn, task["id"])
            if row is None:
                return None
        cand = conn.execute(
            "SELECT * FROM prompts WHERE id = ?", (row["candidate_version_id"],)
        ).fetchone()
        return RolloutServing(id=uuid.UUID(row["id"]), candidate=self._prompt(cand),
                              share=config.ramp[row["step"]], salt=row["salt"])

    def auto_rollout(self, job: Job) -> Rollout | None:
        """Start a rollout of a successful job's candidate when the task asks for one.

        The option is ``evaluator_config["auto_rollout"]``: ``true`` (defaults) or an object
        of `RolloutRequest` fields. Trouble is logged, never raised (the job stays a success).
        """
        if job.task_id is None or job.prompt_version_id is None:
            return None
        try:
            auto = decisions.auto_rollout_request(
                candidate_version_id=str(job.prompt_version_id), job_metadata=job.job_metadata,
                evaluator_config=self.get_task(str(job.task_id)).evaluator_config,
            )
            if auto.request is None:
                if auto.skipped is not None:
                    logger.warning("automatic rollout after job %s not started: %s", job.id,
                                   auto.skipped)
                return None
            return self.start_rollout(str(job.task_id), auto.request)
        except StoreError as exc:
            logger.warning("automatic rollout after job %s not started: %s", job.id, exc)
            return None

    # --- keys and the audit log -------------------------------------------------------
    # Who changes state is a per-thread setting (`acting_as`, set by the API around each
    # operation); every state change writes an audit row in its own transaction. Work the
    # server does by itself (jobs, automatic rollouts and decisions) is by ``system``.

    @contextlib.contextmanager
    def acting_as(self, name: str, key_id: str | None = None) -> Iterator[None]:
        """Attribute the state changes this thread makes meanwhile to key *name*."""
        previous = getattr(self._local, "actor", None)
        self._local.actor = (name, key_id)
        try:
            yield
        finally:
            self._local.actor = previous

    def _actor(self) -> tuple[str, str | None]:
        actor: tuple[str, str | None] | None = getattr(self._local, "actor", None)
        return actor or (keys.SYSTEM_NAME, None)

    def audit(self, action: str, *, task_id: str | None = None, target: str | None = None,
              detail: str | None = None) -> None:
        """Record *action* in the audit log, in a transaction of its own."""
        with self._write() as conn:
            self._audit(conn, action, task_id=task_id, target=target, detail=detail)

    def _audit(
        self, conn: sqlite3.Connection, action: str, *, task_id: str | None = None,
        target: str | None = None, detail: str | None = None,
        actor: tuple[str, str | None] | None = None,
    ) -> None:
        name, key_id = actor or self._actor()
        conn.execute(
            "INSERT INTO audit_log (at, actor, key_id, action, task_id, target, detail)"
            " VALUES (?,?,?,?,?,?,?)",
            (_ts(), name, key_id, action, task_id, target, detail),
        )

    @staticmethod
    def _api_key(row: sqlite3.Row) -> ApiKey:
        return ApiKey(
            id=uuid.UUID(row["id"]), name=row["name"], scope=row["scope"],
            created_at=_dt(row["created_at"]), created_by=row["created_by"],
            revoked_at=_dt(row["revoked_at"]),
        )

    def create_key(self, name: str, scope: str) -> ApiKeyCreated:
        """Create a key; the answer carries its secret, which is stored only hashed.

        Raises `Conflict` when a live key already has *name*.
        """
        if not keys.valid_name(name):
            raise Invalid(f"`name` must be letters, digits or ._@- and start with a letter or"
                          f" digit, got {name!r}")
        if name in (keys.BOOTSTRAP_NAME, keys.SYSTEM_NAME):
            raise Invalid(f"`name` {name!r} is reserved for the audit log")
        secret = keys.new_secret()
        key_id = str(uuid.uuid4())
        with self._write() as conn:
            if conn.execute(
                "SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)
            ).fetchone():
                raise Conflict(f"a key named {name!r} already exists: revoke it first")
            conn.execute(
                "INSERT INTO api_keys (id, name, scope, secret_hash, created_at, created_by)"
                " VALUES (?,?,?,?,?,?)",
                (key_id, name, scope, keys.hash_secret(secret), _ts(), self._actor()[0]),
            )
            self._audit(conn, "key.created", target=key_id, detail=f"{name} ({scope})")
            row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        key = self._api_key(row)
        return ApiKeyCreated(**{f: getattr(key, f) for f in key.__struct_fields__},
                             secret=secret)

    def list_keys(self, limit: int = 1000, *, after: int | None = None) -> Page[ApiKey]:
        """Return a page of keys (revoked ones too), oldest first; never a secret."""
        cond, args = _keyset(after, newest_first=False)
        rows = self._conn().execute(
            f"SELECT * FROM api_keys {'WHERE ' + cond if cond else ''} ORDER BY seq LIMIT ?",
            (*args, limit + 1),
        ).fetchall()
        return _page(rows, limit, self._api_key)

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (its requests get 401 from now on); revoking again changes nothing."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM api_keys WHERE id = ?", (_as_uuid(key_id) or key_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"key {key_id!r} not found")
            if row["revoked_at"] is None:
                conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_ts(), row["id"]))
                self._audit(conn, "key.revoked", target=row["id"],
                            detail=f"{row['name']} ({row['scope']})")
                row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (row["id"],)).fetchone()
            return self._api_key(row)

    def key_for_hash(self, secret_hash: str) -> tuple[str, str, str, str] | None:
        """``(id, name, scope, secret_hash)`` of the live key with this hash, else ``None``."""
        row = self._conn().execute(
            "SELECT id, name, scope, secret_hash FROM api_keys WHERE secret_hash = ?"
            " AND revoked_at IS NULL",
            (secret_hash,),
        ).fetchone()
        return None if row is None else (row["id"], row["name"], row["scope"], row["secret_hash"])

    @staticmethod
    def _audit_entry(row: sqlite3.Row) -> AuditEntry:
        return AuditEntry(
            id=row["seq"], at=_dt(row["at"]), actor=row["actor"], action=row["action"],
            task_id=_uuid(row["task_id"]), target=row["target"], detail=row["detail"],
        )

    def list_audit(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[AuditEntry]:
        """Return a page of the audit log, newest first, optionally for one task."""
        return _page(self._list_rows("audit_log", ref, limit, after), limit, self._audit_entry)

    # --- online evaluators --------------------------------------------------------------
    # Settings checked by `kaizen_server.domain.evaluators`; the SQL of claims and books in
    # `kaizen_server.storage.evaluators`.

    judge_endpoint: bool = True
    """False when the server has no LLM endpoint (an LLM judge then shows ``no_endpoint``)."""

    _EVALUATOR_FIELDS = ("rubric", "judge_model", "scale", "pattern", "json_schema",
                         "min_length", "max_length", "sample_rate", "daily_budget_usd",
                         "daily_calls", "watch", "pass_threshold", "min_kappa")

    def _check_evaluator(self, config: dict[str, Any]) -> None:
        prices = self.prices if self.prices is not None else PriceTable()
        try:
            evaluator_rules.check_config(config, prices.known)
        except evaluator_rules.BadEvaluator as exc:
            raise Invalid(str(exc)) from None

    def _evaluator_row(self, conn: sqlite3.Connection, ref: str, evaluator: str) -> sqlite3.Row:
        task = self._require_task(conn, ref)
        row: sqlite3.Row | None = conn.execute(
            "SELECT * FROM evaluators WHERE task_id = ? AND (id = ? OR name = ?)",
            (task["id"], _as_uuid(evaluator) or "", evaluator),
        ).fetchone()
        if row is None:
            raise NotFound(f"evaluator {evaluator!r} of task {ref!r} not found")
        return row

    def _evaluator(self, conn: sqlite3.Connection, row: sqlite3.Row) -> Evaluator:
        config: dict[str, Any] = msgspec.json.decode(row["config"])
        today = evaluator_sql.day_row(conn, row["id"], evaluator_sql.day_of())
        agreement = evaluator_rules.agreement(
            evaluator_sql.agreement_pairs(conn, row["id"]), config.get("pass_threshold", 0.5))
        refusal = None
        if row["kind"] == evaluator_rules.LLM_JUDGE:
            refusal = evaluator_rules.budget_refusal(
                calls=today["calls"], spent_usd=today["spent_usd"], estimate_usd=0.0,
                daily_calls=config.get("daily_calls"),
                daily_budget_usd=config.get("daily_budget_usd"))
            if refusal is None and today["skipped_budget"]:
                # refused since the settings last changed (a raised cap clears it)
                last = conn.execute(
                    "SELECT reason FROM evaluation_results WHERE evaluator_id = ?"
                    " AND status = 'skipped' AND judged_at >= ? ORDER BY judged_at DESC"
                    " LIMIT 1", (row["id"], row["updated_at"])).fetchone()
                refusal = None if last is None else last["reason"]
        settings: dict[str, Any] = {k: config[k] for k in self._EVALUATOR_FIELDS
                                    if config.get(k) is not None}
        status, reason = evaluator_rules.status(
            enabled=bool(row["enabled"]), refusal=refusal, min_kappa=config.get("min_kappa"),
            kappa=agreement.get("kappa"),
            endpoint=self.judge_endpoint or row["kind"] != evaluator_rules.LLM_JUDGE)
        return Evaluator(
            id=uuid.UUID(row["id"]), task_id=uuid.UUID(row["task_id"]), name=row["name"],
            kind=row["kind"], enabled=bool(row["enabled"]), status=status, status_reason=reason,
            today=EvaluatorDay(**today),
            days=[EvaluatorDay(**d) for d in evaluator_sql.days(conn, row["id"])],
            agreement=EvaluatorAgreement(**agreement), created_at=_dt(row["created_at"]),
            updated_at=_dt(row["updated_at"]),
            **settings,
        )

    def create_evaluator(self, ref: str, req: EvaluatorRequest) -> Evaluator:
        """Add an online evaluator to a task; it takes the traces stored from now on."""
        config = {k: getattr(req, k) for k in ("kind", *self._EVALUATOR_FIELDS)}
        self._check_evaluator(config)
        with self._write() as conn:
            task = self._require_task(conn, ref)
            if conn.execute("SELECT 1 FROM evaluators WHERE task_id = ? AND name = ?",
                            (task["id"], req.name)).fetchone():
                raise Conflict(f"task {task['name']!r} already has an evaluator {req.name!r}")
            count = conn.execute("SELECT COUNT(*) AS n FROM evaluators WHERE task_id = ?",
                                 (task["id"],)).fetchone()["n"]
            if count >= evaluator_rules.MAX_EVALUATORS_PER_TASK:
                raise Invalid(f"`name`: task {task['name']!r} has {count} evaluators, the most"
                              " a task may have; remove one first")
            eid, now = str(uuid.uuid4()), _ts()
            conn.execute(
                "INSERT INTO evaluators (id, task_id, name, kind, config, enabled, scan_seq,"
                " created_at, updated_at) VALUES (?,?,?,?,?,?,"
                " (SELECT COALESCE(MAX(seq), 0) FROM traces),?,?)",
                (eid, task["id"], req.name, req.kind, _json(config), int(req.enabled), now, now),
            )
            self._audit(conn, "evaluator.created", task_id=task["id"], target=eid,
                        detail=f"{req.name} ({req.kind})")
            return self._evaluator(conn, self._evaluator_row(conn, task["id"], eid))

    def list_evaluators(self, ref: str) -> list[Evaluator]:
        """The task's evaluators, oldest first (at most `MAX_EVALUATORS_PER_TASK`)."""
        conn = self._conn()
        task = self._require_task(conn, ref)
        rows = conn.execute("SELECT * FROM evaluators WHERE task_id = ? ORDER BY seq",
                            (task["id"],)).fetchall()
        return [self._evaluator(conn, row) for row in rows]

    def get_evaluator(self, ref: str, evaluator: str) -> Evaluator:
        """One evaluator of the task, by id or name, with its status, books and agreement."""
        conn = self._conn()
        return self._evaluator(conn, self._evaluator_row(conn, ref, evaluator))

    def update_evaluator(self, ref: str, evaluator: str,
                         req: EvaluatorUpdateRequest) -> Evaluator:
        """Change the fields *req* gives, all or none."""
        with self._write() as conn:
            row = self._evaluator_row(conn, ref, evaluator)
            config: dict[str, Any] = msgspec.json.decode(row["config"])
            for field in self._EVALUATOR_FIELDS:
                value = getattr(req, field)
                if value is not msgspec.UNSET:
                    config[field] = value
            for field in ("sample_rate", "watch", "pass_threshold"):
                if config.get(field) is None:
                    raise Invalid(f"`{field}` cannot be cleared")
            self._check_evaluator(config)
            name = row["name"] if req.name is msgspec.UNSET else req.name
            if name != row["name"] and conn.execute(
                    "SELECT 1 FROM evaluators WHERE task_id = ? AND name = ?",
                    (row["task_id"], name)).fetchone():
                raise Conflict(f"the task already has an evaluator {name!r}")
            enabled = row["enabled"] if req.enabled is msgspec.UNSET else int(req.enabled)
            conn.execute(
                "UPDATE evaluators SET name = ?, config = ?, enabled = ?, updated_at = ?"
                " WHERE id = ?", (name, _json(config), enabled, _ts(), row["id"]))
            self._audit(conn, "evaluator.updated", task_id=row["task_id"], target=row["id"],
                        detail=name)
            return self._evaluator(conn, self._evaluator_row(conn, row["task_id"], row["id"]))

    def remove_evaluator(self, ref: str, evaluator: str) -> Evaluator:
        """Delete an evaluator and its books; the feedback it stored stays. Returns it as it
        was."""
        with self._write() as conn:
            row = self._evaluator_row(conn, ref, evaluator)
            gone = self._evaluator(conn, row)
            for table in ("evaluation_results", "evaluator_days"):
                conn.execute(f"DELETE FROM {table} WHERE evaluator_id = ?", (row["id"],))
            conn.execute("DELETE FROM evaluators WHERE id = ?", (row["id"],))
            self._audit(conn, "evaluator.removed", task_id=row["task_id"], target=row["id"],
                        detail=row["name"])
            return gone

    def evaluators_to_run(self) -> list[dict[str, Any]]:
        """Every enabled evaluator as ``{id, task_id, name, kind, ...settings}``, oldest first."""
        rows = self._conn().execute(
            "SELECT id, task_id, name, kind, config FROM evaluators WHERE enabled = 1"
            " ORDER BY seq").fetchall()
        return [{**msgspec.json.decode(r["config"]), "id": r["id"], "task_id": r["task_id"],
                 "name": r["name"], "kind": r["kind"]} for r in rows]

    def claim_evaluations(self, evaluator_id: str, owner: str, *, limit: int,
                          estimate_usd: float,
                          usd_per_char: float = 0.0) -> list[evaluator_sql.Claim]:
        """Take up to *limit* traces for the evaluator (see `StorageInterface`)."""
        read = self._conn()  # outside the write lock first: most passes find nothing
        ev = read.execute("SELECT task_id, scan_seq FROM evaluators WHERE id = ?",
                          (evaluator_id,)).fetchone()
        if ev is None or (
            read.execute("SELECT 1 FROM traces WHERE task_id = ? AND seq > ? LIMIT 1",
                         (ev["task_id"], ev["scan_seq"])).fetchone() is None
            and read.execute("SELECT 1 FROM evaluation_results WHERE evaluator_id = ? AND"
                             " status = 'claimed' AND lease_until < ? LIMIT 1",
                             (evaluator_id, time.time())).fetchone() is None
        ):
            return []
        with self._write() as conn:
            ev = conn.execute("SELECT * FROM evaluators WHERE id = ?",
                              (evaluator_id,)).fetchone()
            if ev is None:
                return []
            rollout = self._running_rollout(conn, ev["task_id"])
            arms = None if rollout is None else [rollout["active_version_id"],
                                                 rollout["candidate_version_id"]]
            claims, _skipped = evaluator_sql.claim(conn, ev, owner, limit=limit,
                                                   estimate_usd=estimate_usd, arms=arms,
                                                   usd_per_char=usd_per_char)
            return claims

    def record_evaluation(self, item: evaluator_sql.Claim, owner: str, *,
                          score: float | None, reason: str, called: bool,
                          charged_usd: float = 0.0, new_jobs: list[str] | None = None) -> bool:
        """Keep an evaluation's outcome (see `StorageInterface`)."""
        with self._write() as conn:
            ev = conn.execute("SELECT * FROM evaluators WHERE id = ?",
                              (item.evaluator_id,)).fetchone()
            if ev is None:
                return False
            kept = evaluator_sql.record(conn, ev, item, owner, score=score, reason=reason,
                                        called=called, charged_usd=charged_usd)
            if kept and score is not None and self._uses_judged(conn, item.task_id) \
                    and ev["id"] in self._feeding_evaluators(conn, item.task_id) \
                    and not evaluator_sql.human_scored(conn, item.trace_id):
                # a judged score drives the loop like a person's: the threshold, rollouts
                own_entry = conn.execute("SELECT 1 FROM feedback WHERE trace_id = ? LIMIT 1",
                                         (item.trace_id,)).fetchone() is not None
                conn.execute(  # a trace without an entry of its own (instrumented) counts now
                    "UPDATE tasks SET judged_since_job = judged_since_job + 1,"
                    " feedback_since_optimization = feedback_since_optimization + ?"
                    " WHERE id = ?", (int(not own_entry), item.task_id))
                task = conn.execute("SELECT judged_since_job, feedback_threshold FROM tasks"
                                    " WHERE id = ?", (item.task_id,)).fetchone()
                if task["judged_since_job"] >= task["feedback_threshold"]:
                    # threshold judged scores since the last job: one scored entry for the
                    # threshold rule (a job learns from all of them, not from the first)
                    conn.execute("UPDATE tasks SET judged_since_job = 0,"
                                 " scored_since_job = scored_since_job + 1 WHERE id = ?",
                                 (item.task_id,))
                    job_id = self._maybe_trigger(conn, item.task_id)
                    if job_id is not None and new_jobs is not None:
                        new_jobs.append(job_id)
                self._rollout_scored(conn, item.trace_id)
            return kept

    def _uses_judged(self, conn: sqlite3.Connection, task_id: str) -> bool:
        """True when the task lets judged scores drive its loop."""
        row = conn.execute("SELECT evaluator_config FROM tasks WHERE id = ?",
                           (task_id,)).fetchone()
        return row is not None and evaluator_rules.judged_scores(_unjson(row["evaluator_config"]))

    def _feeding_evaluators(self, conn: sqlite3.Connection, task_id: str) -> list[str]:
        """Ids of the task's evaluators whose scores may feed the loop (agreement allows)."""
        feeding = []
        for row in conn.execute("SELECT id, config FROM evaluators WHERE task_id = ?"
                                " ORDER BY seq", (task_id,)).fetchall():
            config = msgspec.json.decode(row["config"])
            kappa = None
            if config.get("min_kappa") is not None:
                kappa = evaluator_rules.agreement(
                    evaluator_sql.agreement_pairs(conn, row["id"]),
                    config.get("pass_threshold", 0.5)).get("kappa")
            if evaluator_rules.feeds_loop(config.get("min_kappa"), kappa):
                feeding.append(str(row["id"]))
        return feeding


    # --- web UI sessions (see kaizen_server.storage.ui_sessions) -------------------------

    def open_session(self, id_hash: str, record: ui_sessions.SessionRecord, *, keep: int,
                     expired_before: float) -> None:
        """Store a UI session; drop expired ones and the least recently seen past *keep*."""
        with self._write() as conn:
            ui_sessions.open_session(conn, id_hash, record, keep=keep,
                                     expired_before=expired_before)

    def get_session(self, id_hash: str) -> ui_sessions.SessionRecord | None:
        """The UI session named *id_hash*, or ``None``."""
        return ui_sessions.get(self._conn(), id_hash)

    def touch_session(self, id_hash: str, seen: float) -> None:
        """Note that the UI session was used at *seen*."""
        with self._write() as conn:
            ui_sessions.touch(conn, id_hash, seen)

    def close_session(self, id_hash: str) -> None:
        """End the UI session named *id_hash*."""
        with self._write() as conn:
            ui_sessions.close(conn, id_hash)


def _same_version(conn: sqlite3.Connection, task_id: str, prompt_text: str) -> int | None:
    row = conn.execute(
        "SELECT version_number FROM prompts WHERE task_id = ? AND prompt_text = ?"
        " ORDER BY version_number LIMIT 1",
        (task_id, prompt_text),
    ).fetchone()
    return None if row is None else int(row["version_number"])


class _BatchTasks:
    """Task lookups of one ingest batch: each task and its active prompt read once."""

    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self._ids: dict[str, str | NotFound] = {}
        self._active: dict[str, tuple[str, str] | None] = {}
        self._versions: dict[str, bool] = {}
        self._rollouts: dict[str, bool] = {}
        self._texts: dict[tuple[str, str], str | None] = {}

    def resolve(
        self, req: TraceRequest | FeedbackRequest, kind: str, table: str,
        errors: list[tuple[str, str | None, str]],
    ) -> str | None:
        """The task id of *req* (creating a task for a new name); ``None`` after an error."""
        found = self._ids.get(req.task_id)
        if found is None:
            try:
                found = str(self._store._task_for_write(self._conn, req.task_id)["id"])
            except NotFound as exc:
                found = exc
            self._ids[req.task_id] = found
        if isinstance(found, str):
            return found
        item_id = None if req.id is None else str(req.id)
        # A retry of an item stored earlier is accepted, as the single-record endpoints do.
        if item_id is None or not self._conn.execute(
            f"SELECT 1 FROM {table} WHERE id = ?", (item_id,)
        ).fetchone():
            errors.append((kind, item_id, str(found)))
        return None

    def active_prompt(self, task_id: str) -> tuple[str, str] | None:
        """``(id, prompt_text)`` of the task's active version, or ``None``."""
        if task_id not in self._active:
            row = self._conn.execute(
                "SELECT id, prompt_text FROM prompts WHERE task_id = ? AND status = 'active'",
                (task_id,),
            ).fetchone()
            self._active[task_id] = None if row is None else (row["id"], row["prompt_text"])
        return self._active[task_id]

    def has_versions(self, task_id: str) -> bool:
        """True when the task has any prompt version."""
        if task_id not in self._versions:
            self._versions[task_id] = self._conn.execute(
                "SELECT 1 FROM prompts WHERE task_id = ? LIMIT 1", (task_id,)
            ).fetchone() is not None
        return self._versions[task_id]

    def rollout_running(self, task_id: str) -> bool:
        """True when the task has a running rollout (its records take the single path).

        The same query reads the task's active version (one round trip, not two): without
        a running rollout nothing in the batch changes it before `active_prompt` asks, and
        with one the task's traces take the single path and never ask."""
        if task_id not in self._rollouts:
            row = self._conn.execute(
                "SELECT p.id AS id, p.prompt_text AS prompt_text, (SELECT COUNT(*) FROM"
                " rollouts WHERE task_id = ? AND state = 'running') AS running"
                " FROM (SELECT 1 AS one) AS x"
                " LEFT JOIN prompts p ON p.task_id = ? AND p.status = 'active'",
                (task_id, task_id),
            ).fetchone()
            self._rollouts[task_id] = row["running"] > 0
            if task_id not in self._active:
                self._active[task_id] = (
                    None if row["id"] is None else (row["id"], row["prompt_text"]))
        return self._rollouts[task_id]

    def version_text(self, task_id: str, version_id: str) -> str | None:
        """The prompt text of the task's version *version_id* (read once a batch), or None."""
        key = (task_id, version_id)
        if key not in self._texts:
            self._texts[key] = _version_text(self._conn, task_id, version_id)
        return self._texts[key]

    def set_active(self, task_id: str, version_id: str, text: str) -> None:
        """Note the baseline version this batch just created."""
        self._active[task_id] = (version_id, text)
        self._versions[task_id] = True


def _version_text(conn: sqlite3.Connection, task_id: str, version_id: str) -> str | None:
    """The prompt text of *task_id*'s version *version_id*; None for no such version."""
    row = conn.execute(
        "SELECT prompt_text FROM prompts WHERE id = ? AND task_id = ?", (version_id, task_id)
    ).fetchone()
    return None if row is None else str(row["prompt_text"])


_ID_TEXTS = msgspec.json.Decoder(list[str | None])


def _id_texts(ids: list[uuid.UUID | None]) -> list[str | None]:
    """*ids* as their canonical text (``str(id)``), ``None`` kept: one encoding pass for a
    whole batch instead of `uuid.UUID.__str__` per id."""
    return _ID_TEXTS.decode(msgspec.json.encode(ids))


def _feedback_trace(req: FeedbackRequest) -> str | None:
    """The trace a feedback entry names in its metadata (a decorated call's own entry)."""
    trace_id = req.metadata.get("trace_id") if isinstance(req.metadata, dict) else None
    return _as_uuid(trace_id) if isinstance(trace_id, str) else None


def _scored_traces(conn: sqlite3.Connection, trace_ids: list[str]) -> set[str]:
    """Those of *trace_ids* whose score already made a feedback entry (``trace_score``)."""
    found: set[str] = set()
    for start in range(0, len(trace_ids), 500):
        chunk = trace_ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT trace_id FROM feedback WHERE trace_id IN ({marks})"
            " AND source = 'trace_score'", chunk,
        )
        found.update(row["trace_id"] for row in rows)
    return found


def _rows_by_id(conn: sqlite3.Connection, table: str, ids: list[str]) -> dict[str, sqlite3.Row]:
    """The rows of *table* with the ids *ids* that exist, by id (asked in chunks)."""
    found: dict[str, sqlite3.Row] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT * FROM {table} WHERE id IN ({marks})", chunk):
            found[row["id"]] = row
    return found


def _existing(conn: sqlite3.Connection, table: str, ids: list[str]) -> set[str]:
    """Those of *ids* already stored in *table* (asked in chunks under SQLite's variable cap)."""
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)
        found.update(row["id"] for row in rows)
    return found


def _given(value: _T | msgspec.UnsetType) -> _T | None:
    """*value*, with an optional wire field that was not sent (UNSET) as ``None``."""
    return None if isinstance(value, msgspec.UnsetType) else value


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _implements(store: Store) -> StorageInterface:
    """Never called: mypy checks here that `Store` implements `StorageInterface`."""
    return store
