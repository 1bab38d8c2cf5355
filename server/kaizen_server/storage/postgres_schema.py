"""The PostgreSQL schema runner: where a database stands, and bringing it up to date.

The steps are the files of ``kaizen_server/storage/migrations/postgres/`` (see
`kaizen_server.storage.migrations`); they are numbered on their own (PostgreSQL step 1 is the
schema of SQLite version 10). The version a database is at is the highest row of its
``schema_version`` table, as on SQLite; each step runs inside the caller's transaction and
adds its row, so a failed step leaves the database at the version before it.

The functions take a raw psycopg connection (``psycopg.Connection``) with a transaction open.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kaizen_server.storage.migrations import Step, load_steps
from kaizen_server.storage.sqlite_schema import SchemaError, SchemaOutdated, Status

__all__ = [
    "SCHEMA_VERSION",
    "STEPS",
    "SchemaError",
    "SchemaOutdated",
    "Status",
    "require_current",
    "status",
    "upgrade",
]

STEPS: tuple[Step, ...] = tuple(load_steps("postgres"))
"""Every PostgreSQL schema step, by version."""

SCHEMA_VERSION = STEPS[-1].version
"""Version of the PostgreSQL schema this server writes (the highest step's number)."""


def _current(conn: Any) -> int | None:
    have = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not have[0]:
        return None
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return None if row[0] is None else int(row[0])


def status(conn: Any) -> Status:
    """Where the database of *conn* stands; raises `SchemaError` when it is newer than
    this server."""
    current = _current(conn)
    if current is not None and current > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has PostgreSQL schema version {current}, newer than this "
            f"kaizen-server supports ({SCHEMA_VERSION}); upgrade kaizen-server"
        )
    done = current or 0
    return Status(current, SCHEMA_VERSION, tuple(s for s in STEPS if s.version > done))


def require_current(conn: Any, shown: str) -> None:
    """Raise `SchemaOutdated` (naming ``kaizen db upgrade``) unless the database is current;
    *shown* is the database's URL without its password."""
    state = status(conn)
    if not state.up_to_date:
        at = "no schema" if state.current is None else f"schema version {state.current}"
        raise SchemaOutdated(
            f"the database {shown} has {at}; this kaizen-server needs version "
            f"{state.target} ({len(state.pending)} step(s) pending). Run "
            f"`kaizen db upgrade --db URL` (back it up first with pg_dump), or start without "
            "--no-migrate"
        )


def upgrade(conn: Any, *, to: int | None = None, adapted: Any = None) -> list[Step]:
    """Bring the database up to version *to* (default `SCHEMA_VERSION`) inside the caller's
    transaction; return the steps run. A ``.py`` step gets *adapted* (the store's
    connection adapter, which takes ``?`` placeholders), else *conn*."""
    target = SCHEMA_VERSION if to is None else to
    state = status(conn)
    ran: list[Step] = []
    for step in state.pending:
        if step.version > target:
            break
        if step.upgrade is not None:
            step.upgrade(adapted if adapted is not None else conn)
        for statement in step.statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                     (step.version, datetime.now(timezone.utc).isoformat()))
        ran.append(step)
    return ran
