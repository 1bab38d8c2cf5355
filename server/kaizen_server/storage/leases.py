"""The SQL of job leases: which worker of which server process runs a job (portable SQL).

Several server processes (``kaizen serve --workers N``, or N machines) share one database, so a
job is run by the worker holding its lease (``jobs.lease_owner``, ``jobs.lease_until``, epoch
seconds). Every change of hands is a compare-and-set: one conditional ``UPDATE`` whose
``WHERE`` says who may take the job, checked by its row count. It never relies on a lock of
this process nor on the isolation level: under SQLite's ``BEGIN IMMEDIATE`` the writers take
turns; under PostgreSQL's READ COMMITTED the second ``UPDATE`` of the row waits for the first
to commit, re-reads the row and no longer matches.

A worker may take a job that is pending or running when nobody holds it, when its lease ran
out (the holder stopped renewing: crashed, hung or cut off), or when the holder is a process of
this machine that no longer exists (``kill -9``: no need to wait for the lease to run out).
Each change of hands is written to the audit log (``job.claimed``, by ``system``), so who ran
a job, and who took it over, can be read afterwards.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from kaizen_server.storage.spend import holder_is_gone

__all__ = ["CANDIDATES", "claim", "finish", "takeable"]

CANDIDATES = 50
"""Unfinished jobs one `claim` of "the next job" looks at, oldest first."""

_ACTIVE = ("PENDING", "RUNNING")


def takeable(holder: str | None, until: float | None, owner: str, now: float) -> bool:
    """Whether *owner* may take (or renew) a lease held by *holder* until *until*."""
    return (holder is None or holder == owner or (until or 0.0) < now
            or holder_is_gone(holder))


def claim(conn: sqlite3.Connection | Any, job_id: str, owner: str, *, seconds: float,
          now: float | None = None) -> str | None:
    """Take or renew the lease of the unfinished job *job_id* for *owner* until now + *seconds*.

    Returns the previous holder's name when the job changed hands (``""`` when nobody held
    it), ``owner`` itself for a renewal, and ``None`` when another live worker holds an
    unexpired lease or the job is finished. Runs inside the caller's write transaction.
    """
    now = time.time() if now is None else now
    row = conn.execute(
        "SELECT status, lease_owner, lease_until FROM jobs WHERE id = ?", (job_id,)
    ).fetchone()
    if row is None or row["status"] not in _ACTIVE:
        return None
    holder, until = row["lease_owner"], row["lease_until"]
    if not takeable(holder, until, owner, now):
        return None
    # Compare-and-set on what was read: a worker that took the job in between makes it miss.
    cur = conn.execute(
        "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ? AND status IN (?, ?)"
        " AND (lease_owner IS NULL OR lease_owner = ? OR lease_owner = ? OR lease_until < ?)",
        (owner, now + seconds, job_id, *_ACTIVE, owner, holder or owner, now),
    )
    if cur.rowcount != 1:
        return None
    return "" if holder is None else str(holder)


def finish(conn: sqlite3.Connection | Any, job_id: str, owner: str) -> bool:
    """Give up *owner*'s lease of an unfinished job to finish it; False when it is not held.

    The caller then writes the job's end in the same transaction: a worker that lost the
    lease never finishes a job another worker runs.
    """
    cur = conn.execute(
        "UPDATE jobs SET lease_owner = NULL WHERE id = ? AND lease_owner = ?"
        " AND status IN (?, ?)",
        (job_id, owner, *_ACTIVE),
    )
    return bool(cur.rowcount == 1)
