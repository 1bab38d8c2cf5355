"""Schema step 3, "rollouts": rollout tables, and arm/error/version columns on records.

FROZEN: never edit a step that shipped; add a new numbered step instead. A Python step
because its columns are added only where missing (a file may have one from a pre-release).
"""

from __future__ import annotations

import sqlite3

__all__ = ["upgrade"]

_ROLLOUTS_DDL = """
CREATE TABLE IF NOT EXISTS rollouts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id),
    active_version_id TEXT NOT NULL,
    candidate_version_id TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,
    step INTEGER NOT NULL,
    step_start_n INTEGER NOT NULL,
    salt TEXT NOT NULL,
    recommendation TEXT,
    reason TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    trace_seq INTEGER NOT NULL,
    feedback_seq INTEGER NOT NULL,
    end_trace_seq INTEGER,
    end_feedback_seq INTEGER,
    scores_seen INTEGER NOT NULL DEFAULT 0,
    evaluated_at INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_running ON rollouts (task_id)
    WHERE state = 'running';
CREATE TABLE IF NOT EXISTS rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL REFERENCES rollouts(id),
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    share REAL,
    reason TEXT,
    stats TEXT
);
CREATE INDEX IF NOT EXISTS rollout_events_rollout ON rollout_events (rollout_id, seq);
"""

_ROLLOUT_INDEXES = """
CREATE INDEX IF NOT EXISTS traces_version ON traces (prompt_version_id, seq);
CREATE INDEX IF NOT EXISTS feedback_version ON feedback (prompt_version_id, seq);
"""

_ROLLOUT_COLUMNS = (
    ("traces", "arm", "TEXT"),
    ("traces", "error", "INTEGER"),
    ("feedback", "prompt_version_id", "TEXT"),
    ("feedback", "arm", "TEXT"),
)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a version-2 database to version 3 (inside the runner's transaction)."""
    for statement in _ROLLOUTS_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)
    for table, column, kind in _ROLLOUT_COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _ROLLOUT_INDEXES.split(";"):
        if statement.strip():
            conn.execute(statement)
