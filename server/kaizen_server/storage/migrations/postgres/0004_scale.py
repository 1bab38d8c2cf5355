"""PostgreSQL step 4, the twin of SQLite step 13 "scale": a rollout's running figures per arm,
and retention limits.

The tables in PostgreSQL's types; the stored rollouts' figures are filled by the SQLite step's
own `backfill` (portable SQL, run through the store's connection adapter, which takes ``?``
placeholders), so both engines count exactly alike.

FROZEN once released: never edit a step that shipped; add a new numbered step instead.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["upgrade"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS rollout_arms (rollout_id TEXT NOT NULL REFERENCES rollouts(id),"
    " version_id TEXT NOT NULL, n BIGINT NOT NULL, total DOUBLE PRECISION NOT NULL,"
    " total_sq DOUBLE PRECISION NOT NULL, calls BIGINT NOT NULL, errors BIGINT NOT NULL,"
    " PRIMARY KEY (rollout_id, version_id))",
    "CREATE TABLE IF NOT EXISTS rollout_latency (rollout_id TEXT NOT NULL"
    " REFERENCES rollouts(id), version_id TEXT NOT NULL, latency_ms DOUBLE PRECISION NOT NULL,"
    " n BIGINT NOT NULL, PRIMARY KEY (rollout_id, version_id, latency_ms))",
    "CREATE TABLE IF NOT EXISTS rollout_models (rollout_id TEXT NOT NULL"
    " REFERENCES rollouts(id), version_id TEXT NOT NULL, model TEXT NOT NULL,"
    " calls BIGINT NOT NULL, tokens BIGINT NOT NULL,"
    " PRIMARY KEY (rollout_id, version_id, model))",
    "ALTER TABLE tasks ADD COLUMN trace_retention_limit BIGINT",
    "ALTER TABLE tasks ADD COLUMN trace_retention_days BIGINT",
    "ALTER TABLE tasks ADD COLUMN feedback_retention_days BIGINT",
)


def upgrade(conn: Any) -> None:
    """Bring a version-3 database to version 4 (inside the runner's transaction)."""
    for statement in _DDL:
        conn.execute(statement)
    step = importlib.import_module("kaizen_server.storage.migrations.sqlite.0013_scale")
    step.backfill(conn)
