"""The SQL of job spend and job leases (tables: schema step `0007_spend.py`) of the SQLite store.

Each function takes an open connection inside the caller's write transaction:

- the job row carries its books (``spent_usd``, ``llm_calls``, tokens) and ``reserved_usd``,
  the part of its cost estimate that counts against the task's day while it runs;
- ``job_calls`` keeps one row per LLM call (model, purpose, tokens, cost, charge), read page
  by page (``GET /api/v1/jobs/{job_id}/calls``), never inside the job object;
- a job is run by the worker holding its lease (``lease_owner``, ``lease_until``): a worker
  takes a job only when nobody holds it, the lease ran out, or its holder is a process of
  this machine that no longer exists (a server killed with ``kill -9``); the compare-and-set
  that takes it is `kaizen_server.storage.leases`, and each call's reservation renews it.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from typing import Any

from kaizen_server.domain.budget import LEASE_LOST

__all__ = [
    "LEASE_LOST",
    "LEASE_SECONDS",
    "day_used",
    "holder_is_gone",
    "job_calls",
    "new_owner",
    "reserve",
    "settle",
]

LEASE_SECONDS = 60.0
"""How long a job's lease lasts without renewal unless ``KAIZEN_JOB_LEASE_SECONDS`` says
otherwise: the worker renews it every third of that while the job runs (and at each LLM call
and step), so it runs out only when the worker stopped: crashed, hung or cut off."""

def new_owner() -> str:
    """A lease owner name for one worker: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def holder_is_gone(owner: str) -> bool:
    """True when *owner* names a process of this machine that no longer runs."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def day_used(conn: sqlite3.Connection, task_id: str, since: str,
             *, except_job: str | None = None) -> float:
    """The task's spend since *since* (ISO time), a running job's unspent reservation too."""
    row = conn.execute(
        "SELECT COALESCE(SUM(MAX(spent_usd, reserved_usd)), 0) AS used FROM jobs"
        " WHERE task_id = ? AND created_at >= ? AND id != ?",
        (task_id, since, except_job or ""),
    ).fetchone()
    return float(row["used"])


def reserve(conn: sqlite3.Connection, job_id: str, owner: str, estimate_usd: float, *,
            job_budget: float, daily_budget: float, since: str,
            lease_seconds: float = LEASE_SECONDS) -> str | None:
    """Add *estimate_usd* to the job's spend if both budgets allow it; else say why not."""
    row = conn.execute(
        "SELECT task_id, spent_usd, llm_calls, lease_owner FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None or row["lease_owner"] != owner:
        return LEASE_LOST
    spent = float(row["spent_usd"])
    if spent + estimate_usd > job_budget:
        return (
            f"the job reached its cost budget: spent ${spent:.4f} of ${job_budget:.4f} after"
            f" {row['llm_calls']} LLM calls; raise the task's cost_budget"
            " (`kaizen tasks update TASK --cost-budget USD`) to allow more"
        )
    others = day_used(conn, row["task_id"], since, except_job=job_id)
    if others + spent + estimate_usd > daily_budget:
        return (
            f"the task reached its daily budget: ${others + spent:.4f} of ${daily_budget:.4f}"
            " spent today (UTC); raise the task's daily_budget_usd"
            " (`kaizen tasks update TASK --daily-budget-usd USD`) or wait for the next day"
        )
    cur = conn.execute(
        "UPDATE jobs SET spent_usd = spent_usd + ?, lease_until = ? WHERE id = ?"
        " AND lease_owner = ?",
        (estimate_usd, time.time() + lease_seconds, job_id, owner),
    )
    return None if cur.rowcount == 1 else LEASE_LOST


def settle(conn: sqlite3.Connection, job_id: str, record: Any, reserved_usd: float) -> None:
    """Replace a call's reservation by its charge and keep the call's record."""
    conn.execute(
        "UPDATE jobs SET spent_usd = spent_usd + ?, llm_calls = llm_calls + 1,"
        " input_tokens = input_tokens + ?, output_tokens = output_tokens + ? WHERE id = ?",
        (record.charged_usd - reserved_usd, record.input_tokens, record.output_tokens, job_id),
    )
    conn.execute(
        "INSERT INTO job_calls (job_id, model, purpose, input_tokens, output_tokens, cost_usd,"
        " charged_usd, retries, usage_reported, at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (job_id, record.model, record.purpose, record.input_tokens, record.output_tokens,
         record.cost_usd, record.charged_usd, record.retries, int(record.usage_reported),
         time.time()),
    )


def job_calls(conn: sqlite3.Connection, job_id: str, limit: int,
              after: int | None) -> list[sqlite3.Row]:
    """Up to *limit* + 1 call rows of a job, oldest first, after the row *after*."""
    return conn.execute(
        "SELECT * FROM job_calls WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (job_id, after or 0, limit + 1),
    ).fetchall()
