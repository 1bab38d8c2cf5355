"""The web UI's sign-in sessions in the database (schema step 11, ``ui_sessions``), portable SQL.

Every server process on one database (``kaizen serve --workers N``, or N machines behind a
proxy) knows every session, so a browser stays signed in whichever process answers it. A row
is named by the SHA-256 of the cookie's session id: the id itself, which is what signs a
browser in, is never stored. Times are epoch seconds (wall clock: processes and machines
share it, not a monotonic clock).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

__all__ = ["SessionRecord", "close", "get", "open_session", "touch"]


@dataclasses.dataclass(frozen=True)
class SessionRecord:
    """One signed-in browser: who (the key's name, scope and id), the key's hash (``None``
    for the server's own key), the session's CSRF token, when it began and was last seen."""

    name: str
    scope: str
    key_id: str | None
    key_hash: str | None
    csrf: str
    created: float
    seen: float

    def __repr__(self) -> str:
        return f"SessionRecord({self.name!r}, {self.scope})"


def open_session(conn: sqlite3.Connection | Any, id_hash: str, record: SessionRecord, *,
                 keep: int, expired_before: float) -> None:
    """Store *record*; drop sessions last seen before *expired_before*, and the least recently
    seen ones past *keep*."""
    conn.execute("DELETE FROM ui_sessions WHERE seen < ?", (expired_before,))
    conn.execute(
        "INSERT INTO ui_sessions (id_hash, name, scope, key_id, key_hash, csrf, created, seen)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (id_hash, record.name, record.scope, record.key_id, record.key_hash, record.csrf,
         record.created, record.seen),
    )
    row = conn.execute("SELECT seen FROM ui_sessions ORDER BY seen DESC LIMIT 1 OFFSET ?",
                       (keep,)).fetchone()
    if row is not None:  # more than *keep*: the oldest go
        conn.execute("DELETE FROM ui_sessions WHERE seen <= ? AND id_hash != ?",
                     (row["seen"], id_hash))


def get(conn: sqlite3.Connection | Any, id_hash: str) -> SessionRecord | None:
    """The session named *id_hash*, or ``None``."""
    row = conn.execute(
        "SELECT name, scope, key_id, key_hash, csrf, created, seen FROM ui_sessions"
        " WHERE id_hash = ?", (id_hash,),
    ).fetchone()
    if row is None:
        return None
    return SessionRecord(row["name"], row["scope"], row["key_id"], row["key_hash"],
                         row["csrf"], float(row["created"]), float(row["seen"]))


def touch(conn: sqlite3.Connection | Any, id_hash: str, seen: float) -> None:
    """Note that the session was used at *seen*."""
    conn.execute("UPDATE ui_sessions SET seen = ? WHERE id_hash = ? AND seen < ?",
                 (seen, id_hash, seen))


def close(conn: sqlite3.Connection | Any, id_hash: str) -> None:
    """End the session (sign-out, expiry, a revoked key); nothing for an unknown one."""
    conn.execute("DELETE FROM ui_sessions WHERE id_hash = ?", (id_hash,))
