"""Schema step 13, "scale": a rollout's running figures per arm, and retention limits.

- ``rollout_arms``, ``rollout_latency``, ``rollout_models``: what each arm of a rollout has
  gathered (see `kaizen_server.storage.rollout_tally`), filled here for the rollouts already
  stored from the rows their window counts, exactly as the store counted them before.
- ``tasks``: ``trace_retention_limit``, ``trace_retention_days``, ``feedback_retention_days``
  (``feedback_retention_limit`` exists since step 1).

FROZEN once released: never edit a step that shipped; add a new numbered step instead. A
Python step because the latency histogram rounds values as the store does.
"""

from __future__ import annotations

import math
import sqlite3

__all__ = ["backfill", "upgrade"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS rollout_arms (rollout_id TEXT NOT NULL REFERENCES rollouts(id),"
    " version_id TEXT NOT NULL, n INTEGER NOT NULL, total REAL NOT NULL,"
    " total_sq REAL NOT NULL, calls INTEGER NOT NULL, errors INTEGER NOT NULL,"
    " PRIMARY KEY (rollout_id, version_id))",
    "CREATE TABLE IF NOT EXISTS rollout_latency (rollout_id TEXT NOT NULL"
    " REFERENCES rollouts(id), version_id TEXT NOT NULL, latency_ms REAL NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (rollout_id, version_id, latency_ms))",
    "CREATE TABLE IF NOT EXISTS rollout_models (rollout_id TEXT NOT NULL"
    " REFERENCES rollouts(id), version_id TEXT NOT NULL, model TEXT NOT NULL,"
    " calls INTEGER NOT NULL, tokens INTEGER NOT NULL,"
    " PRIMARY KEY (rollout_id, version_id, model))",
    "ALTER TABLE tasks ADD COLUMN trace_retention_limit INTEGER",
    "ALTER TABLE tasks ADD COLUMN trace_retention_days INTEGER",
    "ALTER TABLE tasks ADD COLUMN feedback_retention_days INTEGER",
)


def _key(ms: float) -> float:
    if not math.isfinite(ms) or ms <= 0:
        return 0.0
    return float(f"{ms:.3g}")


def _fill(conn: sqlite3.Connection, rollout: tuple[object, ...]) -> None:
    rid, task, t_from, t_to, f_from, f_to, active, candidate = rollout
    t_to = t_to or 2**62
    f_to = f_to or 2**62
    for version in (active, candidate):
        t = conn.execute(
            "SELECT COUNT(score), COALESCE(SUM(score), 0), COALESCE(SUM(score * score), 0),"
            " COUNT(*), COALESCE(SUM(error), 0) FROM traces"
            " WHERE task_id = ? AND seq > ? AND seq <= ? AND prompt_version_id = ?",
            (task, t_from, t_to, version),
        ).fetchone()
        f = conn.execute(
            "SELECT COUNT(score), COALESCE(SUM(score), 0), COALESCE(SUM(score * score), 0)"
            " FROM feedback WHERE task_id = ? AND seq > ? AND seq <= ? AND prompt_version_id = ?"
            " AND score IS NOT NULL AND json_extract(metadata, '$.trace_id') IS NULL",
            (task, f_from, f_to, version),
        ).fetchone()
        conn.execute(
            "INSERT INTO rollout_arms (rollout_id, version_id, n, total, total_sq, calls,"
            " errors) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, version, t[0] + f[0], t[1] + f[1], t[2] + f[2], t[3], t[4]),
        )
        buckets: dict[float, int] = {}
        for (ms,) in conn.execute(
            "SELECT latency_ms FROM traces WHERE task_id = ? AND seq > ? AND seq <= ?"
            " AND prompt_version_id = ? AND latency_ms IS NOT NULL",
            (task, t_from, t_to, version),
        ):
            key = _key(float(ms))
            buckets[key] = buckets.get(key, 0) + 1
        conn.executemany(
            "INSERT INTO rollout_latency (rollout_id, version_id, latency_ms, n)"
            " VALUES (?, ?, ?, ?)",
            [(rid, version, key, n) for key, n in buckets.items()],
        )
        conn.execute(
            "INSERT INTO rollout_models (rollout_id, version_id, model, calls, tokens)"
            " SELECT ?, ?, COALESCE(model, ''), COUNT(*), SUM(tokens) FROM traces"
            " WHERE task_id = ? AND seq > ? AND seq <= ? AND prompt_version_id = ?"
            " AND tokens IS NOT NULL GROUP BY COALESCE(model, '')",
            (rid, version, task, t_from, t_to, version),
        )


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a version-12 database to version 13 (inside the runner's transaction)."""
    for statement in _DDL:
        conn.execute(statement)
    backfill(conn)


def backfill(conn: sqlite3.Connection) -> None:
    """Fill the arms' figures of every stored rollout (portable SQL with ``?`` placeholders:
    PostgreSQL's twin step runs it through the store's connection adapter)."""
    for rollout in conn.execute(
        "SELECT id, task_id, trace_seq, end_trace_seq, feedback_seq, end_feedback_seq,"
        " active_version_id, candidate_version_id FROM rollouts ORDER BY seq"
    ).fetchall():
        _fill(conn, tuple(rollout))
