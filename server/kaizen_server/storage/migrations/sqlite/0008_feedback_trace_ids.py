"""Schema step 8, "feedback trace ids": fill ``feedback.trace_id`` where only the metadata
names the trace.

Feedback stored before step 2 names its trace only in ``metadata.trace_id``; since step 2
every write fills the ``trace_id`` column from it (the UUID in its canonical form, as the
store's ``_feedback_trace`` does). With the old rows filled the same way, a score finds its
feedback through the ``feedback_trace`` index alone, instead of also reading the metadata of
every row of the task. A Python step because the UUIDs are checked and made canonical.
Batched by ``seq``, so a large file is never read whole.

FROZEN once released: never edit a step that shipped; add a new numbered step instead.
"""

from __future__ import annotations

import sqlite3
import uuid

__all__ = ["upgrade"]

_BATCH = 1000


def _canonical(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a version-7 database to version 8 (inside the runner's transaction)."""
    after = 0
    while True:
        rows = conn.execute(
            "SELECT seq, json_extract(metadata, '$.trace_id') FROM feedback"
            " WHERE seq > ? AND trace_id IS NULL AND json_type(metadata, '$.trace_id') = 'text'"
            " ORDER BY seq LIMIT ?",
            (after, _BATCH),
        ).fetchall()
        if not rows:
            return
        conn.executemany(
            "UPDATE feedback SET trace_id = ? WHERE seq = ?",
            [(key, seq) for seq, raw in rows if (key := _canonical(raw)) is not None],
        )
        after = rows[-1][0]
