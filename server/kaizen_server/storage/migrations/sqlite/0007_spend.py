"""Schema step 7, "spend": job books, leases, the calls table, budget and verdict columns.

FROZEN: never edit a step that shipped; add a new numbered step instead. A Python step
because its columns are added only where missing.
"""

from __future__ import annotations

import sqlite3

__all__ = ["upgrade"]

_COLUMNS = (
    ("jobs", "spent_usd", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "llm_calls", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "input_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "output_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "reserved_usd", "REAL NOT NULL DEFAULT 0"),
    ("jobs", "lease_owner", "TEXT"),
    ("jobs", "lease_until", "REAL"),
    ("tasks", "daily_budget_usd", "REAL"),
    ("tasks", "max_jobs_per_day", "INTEGER"),
    ("tasks", "cooldown_minutes", "REAL"),
    ("prompts", "verdict", "TEXT"),
    ("prompts", "baseline_version", "INTEGER"),
    ("prompts", "baseline_score", "REAL"),
    ("prompts", "eval_sample_size", "INTEGER"),
)

_DDL = (
    "CREATE TABLE IF NOT EXISTS job_calls ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL REFERENCES jobs(id),"
    " model TEXT NOT NULL, purpose TEXT NOT NULL, input_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, charged_usd REAL NOT NULL,"
    " retries INTEGER NOT NULL, usage_reported INTEGER NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS job_calls_job ON job_calls (job_id, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_task_created ON jobs (task_id, created_at)",
)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring a version-6 database to version 7 (inside the runner's transaction)."""
    for table, column, kind in _COLUMNS:
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    for statement in _DDL:
        conn.execute(statement)
