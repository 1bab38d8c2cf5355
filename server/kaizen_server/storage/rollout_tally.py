"""A rollout's running figures per arm, kept as its calls and scores arrive.

Each arm (a rollout and one of its two versions) has one ``rollout_arms`` row — scores
counted, their sum and sum of squares, calls and errors — a latency histogram in
``rollout_latency`` (values rounded to three significant digits, so a p95 reads at most a few
thousand buckets whatever the number of calls, and is within 0.5 % of the exact nearest-rank
value) and the tokens per model in ``rollout_models`` (the arm's cost per call). The store
updates them in the transaction that stores the call or the score, so evaluating a rollout or
answering ``GET /rollouts/{task}`` reads a few rows instead of every call of the arm.

What counts is what the rollout's window counted before (schema step 11 filled these rows
from it): traces of the task stored while the rollout runs with an arm's version, their
scores, and scored feedback entries of that version that name no trace. A rollout's figures
stop changing when it ends. Portable SQL: plain ``UPDATE``\\s of rows made when the rollout
starts, and ``INSERT ... ON CONFLICT ... DO UPDATE`` for histogram and model rows.
"""

from __future__ import annotations

import math
import sqlite3
from typing import Any

from kaizen_server.domain import rollouts

__all__ = ["add_call", "add_score", "arm_models", "arm_stats", "latency_key", "open_arms"]

_Conn = sqlite3.Connection | Any  # a DB-API connection with ``?`` parameters


def latency_key(ms: float) -> float:
    """The histogram bucket of a latency: *ms* rounded to three significant digits."""
    if not math.isfinite(ms) or ms <= 0:
        return 0.0
    return float(f"{ms:.3g}")


def open_arms(conn: _Conn, rollout_id: str, versions: tuple[str, str]) -> None:
    """Make the empty figures of a new rollout's two arms."""
    conn.executemany(
        "INSERT INTO rollout_arms (rollout_id, version_id, n, total, total_sq, calls, errors)"
        " VALUES (?, ?, 0, 0, 0, 0, 0)",
        [(rollout_id, version) for version in versions],
    )


def add_call(
    conn: _Conn, rollout_id: str, version: str, *, error: bool | None,
    latency_ms: float | None, model: str | None, tokens: int | None,
) -> None:
    """Count one call (a trace) of the arm: errors, latency bucket, tokens of its model."""
    conn.execute(
        "UPDATE rollout_arms SET calls = calls + 1, errors = errors + ?"
        " WHERE rollout_id = ? AND version_id = ?",
        (int(bool(error)), rollout_id, version),
    )
    if latency_ms is not None:
        conn.execute(
            "INSERT INTO rollout_latency (rollout_id, version_id, latency_ms, n)"
            " VALUES (?, ?, ?, 1) ON CONFLICT (rollout_id, version_id, latency_ms)"
            " DO UPDATE SET n = rollout_latency.n + 1",
            (rollout_id, version, latency_key(latency_ms)),
        )
    if tokens is not None:
        conn.execute(
            "INSERT INTO rollout_models (rollout_id, version_id, model, calls, tokens)"
            " VALUES (?, ?, ?, 1, ?) ON CONFLICT (rollout_id, version_id, model)"
            " DO UPDATE SET calls = rollout_models.calls + 1,"
            " tokens = rollout_models.tokens + excluded.tokens",
            (rollout_id, version, model or "", tokens),
        )


def add_score(
    conn: _Conn, rollout_id: str, version: str, old: float | None, new: float | None
) -> None:
    """A score of the arm went from *old* to *new* (``None``: none)."""
    if old == new:
        return
    o, w = (0.0 if old is None else old), (0.0 if new is None else new)
    conn.execute(
        "UPDATE rollout_arms SET n = n + ?, total = total + ?, total_sq = total_sq + ?"
        " WHERE rollout_id = ? AND version_id = ?",
        ((new is not None) - (old is not None), w - o, w * w - o * o, rollout_id, version),
    )


def arm_stats(conn: _Conn, rollout_id: str, version: str,
              extra: tuple[int, float, float] = (0, 0.0, 0.0)) -> rollouts.ArmStats:
    """The arm's figures: scores, calls, errors and p95 latency (nearest rank, bucketed);
    *extra* adds scores kept elsewhere (count, sum, sum of squares: online judges')."""
    row = conn.execute(
        "SELECT n, total, total_sq, calls, errors FROM rollout_arms"
        " WHERE rollout_id = ? AND version_id = ?",
        (rollout_id, version),
    ).fetchone()
    if row is None:
        return rollouts.arm_stats(*extra)
    buckets = conn.execute(
        "SELECT latency_ms, n FROM rollout_latency WHERE rollout_id = ? AND version_id = ?"
        " ORDER BY latency_ms",
        (rollout_id, version),
    ).fetchall()
    latency = None
    timed = sum(int(b[1]) for b in buckets)
    if timed:
        rank, seen = max(1, math.ceil(0.95 * timed)), 0
        for value, n in buckets:
            seen += int(n)
            if seen >= rank:
                latency = float(value)
                break
    return rollouts.arm_stats(
        int(row[0]) + extra[0], float(row[1]) + extra[1], float(row[2]) + extra[2],
        calls=int(row[3]), errors=int(row[4]), p95_latency_ms=latency,
    )


def arm_models(conn: _Conn, rollout_id: str, version: str) -> list[tuple[str, int, int]]:
    """``(model, calls, tokens)`` of the arm's calls that reported tokens (``""``: no model)."""
    rows = conn.execute(
        "SELECT model, calls, tokens FROM rollout_models WHERE rollout_id = ? AND version_id = ?"
        " ORDER BY model",
        (rollout_id, version),
    ).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]
