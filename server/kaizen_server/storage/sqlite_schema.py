"""The SQLite schema runner: where a database stands, and bringing it up to date.

The steps are the files of ``kaizen_server/storage/migrations/sqlite/`` (see
`kaizen_server.storage.migrations`). The version a database is at is the highest row of its
``schema_version`` table; each step runs inside the caller's transaction and adds its row, so
a failed step leaves the database at the version before it.

Step 1 is special, and only step 1: it was extended after its first release, so its statements
all say ``IF NOT EXISTS`` and `upgrade` applies it on every run. A file made by an early
release, which records version 1 (or later) but lacks tables step 1 has now, gains them.
`status` reports such a file as needing step 1.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sqlite3
from datetime import datetime, timezone

from kaizen_server.storage.migrations import Step, load_steps

__all__ = [
    "SCHEMA_VERSION",
    "STEPS",
    "SchemaError",
    "SchemaOutdated",
    "Status",
    "read_status",
    "require_current",
    "status",
    "upgrade",
]

STEPS: tuple[Step, ...] = tuple(load_steps("sqlite"))
"""Every SQLite schema step, by version."""

SCHEMA_VERSION = STEPS[-1].version
"""Version of the schema this server writes (the highest step's number)."""

_CREATED = re.compile(r"CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)


class SchemaError(RuntimeError):
    """The database's schema is not one this server can use; ``str()`` says what to do."""


class SchemaOutdated(SchemaError):
    """The database needs steps this server would run, but it was told not to migrate."""


@dataclasses.dataclass(frozen=True)
class Status:
    """Where a database stands: *current* version (``None``: no schema yet), the *target*
    this server writes, and the *pending* steps an upgrade would run."""

    current: int | None
    target: int
    pending: tuple[Step, ...]

    @property
    def up_to_date(self) -> bool:
        """True when an upgrade would change nothing."""
        return not self.pending


def _current(conn: sqlite3.Connection) -> int | None:
    have = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if have is None:
        return None
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return None if row[0] is None else int(row[0])


def _initial_complete(conn: sqlite3.Connection) -> bool:
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    wanted = {m[2] for s in STEPS[0].statements for m in [_CREATED.search(s)] if m}
    return wanted <= names


def status(conn: sqlite3.Connection) -> Status:
    """Where the database of *conn* stands; raises `SchemaError` when it is newer than
    this server."""
    current = _current(conn)
    if current is not None and current > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {current}, newer than this kaizen-server "
            f"supports ({SCHEMA_VERSION}); upgrade kaizen-server"
        )
    done = current or 0
    pending = [s for s in STEPS if s.version > done]
    if done >= 1 and not _initial_complete(conn):
        pending.insert(0, STEPS[0])
    return Status(current, SCHEMA_VERSION, tuple(pending))


def read_status(path: str | os.PathLike[str]) -> Status:
    """`status` of the database file at *path*, opened read-only (a missing file has no
    schema yet; nothing is created)."""
    if not os.path.exists(path):
        return Status(None, SCHEMA_VERSION, STEPS)
    conn = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        return status(conn)
    finally:
        conn.close()


def require_current(conn: sqlite3.Connection, path: str) -> None:
    """Raise `SchemaOutdated` (naming ``kaizen db upgrade``) unless the database is current."""
    state = status(conn)
    if not state.up_to_date:
        at = "no schema" if state.current is None else f"schema version {state.current}"
        raise SchemaOutdated(
            f"the database {path} has {at}; this kaizen-server needs version "
            f"{state.target} ({len(state.pending)} step(s) pending). Run "
            f"`kaizen db upgrade --db {path}` (back the file up first), or start without "
            "--no-migrate"
        )


def _run(conn: sqlite3.Connection, step: Step) -> None:
    if step.upgrade is not None:
        step.upgrade(conn)
    for statement in step.statements:
        conn.execute(statement)


def upgrade(conn: sqlite3.Connection, *, to: int | None = None) -> list[Step]:
    """Bring the database up to version *to* (default `SCHEMA_VERSION`) inside the
    caller's transaction; return the steps run (step 1 is re-applied every time, see the
    module docstring, and listed only when it added something)."""
    target = SCHEMA_VERSION if to is None else to
    state = status(conn)
    ran = [STEPS[0]] if STEPS[0] in state.pending else []
    _run(conn, STEPS[0])
    current = state.current
    if current is None:
        current = 1
        _record(conn, 1)
    for step in STEPS[current:target]:
        _run(conn, step)
        _record(conn, step.version)
        ran.append(step)
    return ran


def _record(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                 (version, datetime.now(timezone.utc).isoformat()))
