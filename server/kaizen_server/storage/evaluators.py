"""The SQL of online evaluators (tables: schema step `0011_evaluators.sql`) of the SQLite store.

Each function takes an open connection inside the caller's transaction. Portable SQL only
(``INSERT ... ON CONFLICT ... DO NOTHING``, conditional ``UPDATE ... WHERE`` as
compare-and-set), so the PostgreSQL backend runs the same statements:

- ``evaluators`` keeps each evaluator's settings as one JSON object (``config``) and
  ``scan_seq``, the last trace ``seq`` its sampler looked at (only moves forward);
- a worker takes a trace by inserting its ``evaluation_results`` row (primary key
  ``(evaluator_id, trace_id)``, ``ON CONFLICT DO NOTHING``): the one whose insert counted
  judges it, so no trace is judged twice per evaluator by any number of workers or processes;
  the row then moves ``claimed`` -> ``judged`` / ``unjudged`` (or ``skipped`` when the day's
  budget refused it), by its owner only. A claim whose lease ran out (its worker died) is
  taken over by a compare-and-set on ``(owner, lease_until)``;
- ``evaluator_days`` holds the day's judge calls and dollars: a call is reserved by an
  ``UPDATE`` whose ``WHERE`` keeps both under the cap, so the cap is exact whatever runs at
  once, and the charge replaces the reservation when the call returns.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import msgspec

from kaizen_server.domain import evaluators as rules

__all__ = [
    "CLAIM_SECONDS",
    "Claim",
    "agreement_pairs",
    "claim",
    "day_of",
    "day_row",
    "days",
    "human_scored",
    "judged_arm",
    "judged_examples",
    "record",
]

CLAIM_SECONDS = 120.0
"""How long a claimed trace stays its worker's; past it another worker takes it over."""

_MAX_PAIRS = 10_000


def day_of(now: float | None = None) -> str:
    """The UTC day (``YYYY-MM-DD``) of *now* (epoch seconds; default: now)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return moment.date().isoformat()


def day_row(conn: sqlite3.Connection, evaluator_id: str, day: str) -> dict[str, Any]:
    """The evaluator's books for *day* (zeros when nothing happened)."""
    row = conn.execute(
        "SELECT * FROM evaluator_days WHERE evaluator_id = ? AND day = ?", (evaluator_id, day)
    ).fetchone()
    if row is None:
        return {"day": day, "calls": 0, "spent_usd": 0.0, "judged": 0, "unjudged": 0,
                "skipped_budget": 0}
    return {k: row[k] for k in ("day", "calls", "spent_usd", "judged", "unjudged",
                                "skipped_budget")}


def days(conn: sqlite3.Connection, evaluator_id: str, limit: int = 7) -> list[dict[str, Any]]:
    """The evaluator's books of its last *limit* days with activity, newest first."""
    rows = conn.execute(
        "SELECT day FROM evaluator_days WHERE evaluator_id = ? ORDER BY day DESC LIMIT ?",
        (evaluator_id, limit),
    ).fetchall()
    return [day_row(conn, evaluator_id, r["day"]) for r in rows]


def _ensure_day(conn: sqlite3.Connection, evaluator_id: str, day: str) -> None:
    conn.execute(
        "INSERT INTO evaluator_days (evaluator_id, day) VALUES (?, ?)"
        " ON CONFLICT (evaluator_id, day) DO NOTHING",
        (evaluator_id, day),
    )


def _reserve(conn: sqlite3.Connection, ev: sqlite3.Row, config: dict[str, Any], day: str,
             estimate: float) -> str | None:
    """Count one judge call of ~*estimate* dollars today, or say why the budget refuses it."""
    _ensure_day(conn, ev["id"], day)
    calls_cap = config.get("daily_calls")
    usd_cap = config.get("daily_budget_usd")
    # only the caps that are set: no untyped NULL parameter (PostgreSQL cannot type one)
    where, args = "", []
    if calls_cap is not None:
        where += " AND calls + 1 <= ?"
        args.append(calls_cap)
    if usd_cap is not None:
        where += " AND spent_usd + ? <= ?"
        args += [estimate, usd_cap + 1e-12]
    taken = conn.execute(
        "UPDATE evaluator_days SET calls = calls + 1, spent_usd = spent_usd + ?"
        f" WHERE evaluator_id = ? AND day = ?{where}",
        (estimate, ev["id"], day, *args),
    ).rowcount
    if taken:
        return None
    books = day_row(conn, ev["id"], day)
    reason = rules.budget_refusal(calls=books["calls"], spent_usd=books["spent_usd"],
                                  estimate_usd=estimate, daily_calls=calls_cap,
                                  daily_budget_usd=usd_cap)
    return reason or "the day's budget refuses the call"


class Claim(msgspec.Struct, kw_only=True, frozen=True):
    """One trace a worker took for one evaluator, with what the evaluation needs."""

    evaluator_id: str
    trace_id: str
    task_id: str
    inputs: Any
    output: str | None
    correction: Any
    reserved_usd: float
    trace_created_at: str | None


def _trace_claim(conn: sqlite3.Connection, evaluator_id: str, trace: sqlite3.Row,
                 reserved: float) -> Claim:
    entry = conn.execute(
        "SELECT inputs, correction FROM feedback WHERE trace_id = ? ORDER BY seq LIMIT 1",
        (trace["id"],),
    ).fetchone()
    inputs: Any = None
    correction: Any = None
    if entry is not None:
        inputs = _unjson(entry["inputs"])
        correction = _unjson(entry["correction"])
    if inputs is None:
        metadata = _unjson(trace["metadata"])
        inputs = metadata.get("inputs") if isinstance(metadata, dict) else None
    if inputs is None and trace["prompt_text"] is not None:
        inputs = {"prompt": trace["prompt_text"]}
    return Claim(evaluator_id=evaluator_id, trace_id=trace["id"], task_id=trace["task_id"],
                 inputs=inputs, output=trace["response_text"], correction=correction,
                 reserved_usd=reserved, trace_created_at=trace["created_at"])


def _unjson(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


_TRACE_COLUMNS = ("SELECT seq, id, task_id, prompt_text, response_text, metadata,"
                  " prompt_version_id, created_at FROM traces")


def _chars(item: Claim) -> int:
    """Characters of what the judge reads of the trace (input, output, reference)."""
    def size(value: Any) -> int:
        if value is None:
            return 0
        return len(value) if isinstance(value, str) else len(msgspec.json.encode(value))

    return size(item.inputs) + size(item.output) + size(item.correction)


def claim(conn: sqlite3.Connection, ev: sqlite3.Row, owner: str, *, limit: int,
          estimate_usd: float, arms: Sequence[str] | None, usd_per_char: float = 0.0,
          now: float | None = None) -> tuple[list[Claim], int]:
    """Take up to *limit* traces for evaluator *ev*: ones whose claim ran out first, then the
    sampled new traces after its ``scan_seq``; ``(claims, skipped for the budget)``.

    *arms* are the version ids of a running rollout (``None``: none runs); an evaluator that
    watches ``rollout`` takes only traces of those versions. A judge's trace is taken only
    with a call reserved in the day's books, at *estimate_usd* plus *usd_per_char* for each
    character of the trace the judge reads; a refused one is kept as ``skipped``.
    """
    now = time.time() if now is None else now
    config: dict[str, Any] = msgspec.json.decode(ev["config"])
    judge = ev["kind"] == rules.LLM_JUDGE
    claims: list[Claim] = []
    stale = conn.execute(
        "SELECT trace_id, owner, lease_until, reserved_usd FROM evaluation_results"
        " WHERE evaluator_id = ? AND status = 'claimed' AND lease_until < ? LIMIT ?",
        (ev["id"], now, limit),
    ).fetchall()
    for row in stale:
        taken = conn.execute(
            "UPDATE evaluation_results SET owner = ?, lease_until = ? WHERE evaluator_id = ?"
            " AND trace_id = ? AND status = 'claimed' AND owner = ? AND lease_until = ?",
            (owner, now + CLAIM_SECONDS, ev["id"], row["trace_id"], row["owner"],
             row["lease_until"]),
        ).rowcount
        trace = conn.execute(f"{_TRACE_COLUMNS} WHERE id = ?", (row["trace_id"],)).fetchone()
        if taken and trace is not None:
            claims.append(_trace_claim(conn, ev["id"], trace, float(row["reserved_usd"])))
    room = limit - len(claims)
    if room <= 0 or not ev["enabled"]:
        return claims, 0
    watch_rollout = config.get("watch") == "rollout"
    if watch_rollout and not arms:
        # nothing to watch: move past the traces without taking any
        conn.execute(
            "UPDATE evaluators SET scan_seq = (SELECT COALESCE(MAX(seq), 0) FROM traces)"
            " WHERE id = ?", (ev["id"],))
        return claims, 0
    rows = conn.execute(
        f"{_TRACE_COLUMNS} WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (ev["task_id"], ev["scan_seq"], room),
    ).fetchall()
    if not rows:
        return claims, 0
    day = day_of(now)
    skipped = 0
    stamp = datetime.fromtimestamp(now, timezone.utc).isoformat()
    rate = float(config.get("sample_rate", 1.0))
    for trace in rows:
        if watch_rollout and trace["prompt_version_id"] not in (arms or ()):
            continue
        if not rules.sampled(ev["id"], trace["id"], rate):
            continue
        inserted = conn.execute(
            "INSERT INTO evaluation_results (evaluator_id, trace_id, status, owner,"
            " lease_until, claimed_at) VALUES (?, ?, 'claimed', ?, ?, ?)"
            " ON CONFLICT (evaluator_id, trace_id) DO NOTHING",
            (ev["id"], trace["id"], owner, now + CLAIM_SECONDS, stamp),
        ).rowcount
        if not inserted:
            continue  # another worker has it
        item = _trace_claim(conn, ev["id"], trace, 0.0)
        if judge:
            reserved = estimate_usd + usd_per_char * _chars(item)
            refused = _reserve(conn, ev, config, day, reserved)
            if refused is not None:
                conn.execute(
                    "UPDATE evaluation_results SET status = 'skipped', owner = NULL,"
                    " reason = ?, judged_at = ? WHERE evaluator_id = ? AND trace_id = ?",
                    (refused, stamp, ev["id"], trace["id"]),
                )
                conn.execute(
                    "UPDATE evaluator_days SET skipped_budget = skipped_budget + 1"
                    " WHERE evaluator_id = ? AND day = ?", (ev["id"], day))
                skipped += 1
                continue
            conn.execute(
                "UPDATE evaluation_results SET reserved_usd = ? WHERE evaluator_id = ?"
                " AND trace_id = ?", (reserved, ev["id"], trace["id"]))
            item = msgspec.structs.replace(item, reserved_usd=reserved)
        claims.append(item)
    last = int(rows[-1]["seq"])
    conn.execute("UPDATE evaluators SET scan_seq = ? WHERE id = ? AND scan_seq < ?",
                 (last, ev["id"], last))
    return claims, skipped


def record(conn: sqlite3.Connection, ev: sqlite3.Row, item: Claim, owner: str, *,
           score: float | None, reason: str, called: bool, charged_usd: float,
           now: float | None = None) -> bool:
    """Keep the outcome of *item* if *owner* still holds its claim; True when kept.

    A score becomes a feedback entry of the trace's task (``source`` ``evaluator:NAME``,
    the reason as comment, the trace and evaluator in its metadata); no score keeps the trace
    ``unjudged`` with the reason. The day's books take the charge in place of the
    reservation (and give the call back when none was made).
    """
    now = time.time() if now is None else now
    stamp = datetime.fromtimestamp(now, timezone.utc).isoformat()
    status = "judged" if score is not None else "unjudged"
    kept = conn.execute(
        "UPDATE evaluation_results SET status = ?, score = ?, reason = ?, charged_usd = ?,"
        " judged_at = ? WHERE evaluator_id = ? AND trace_id = ?"
        " AND status = 'claimed' AND owner = ?",
        (status, score, reason, charged_usd, stamp, item.evaluator_id, item.trace_id, owner),
    ).rowcount
    if not kept:
        return False
    day = day_of(now)
    _ensure_day(conn, item.evaluator_id, day)
    conn.execute(
        f"UPDATE evaluator_days SET {status} = {status} + 1, spent_usd = spent_usd + ?,"
        " calls = calls - ? WHERE evaluator_id = ? AND day = ?",
        (charged_usd - item.reserved_usd, int(ev["kind"] == rules.LLM_JUDGE and not called),
         item.evaluator_id, day),
    )
    if score is not None:
        metadata = {"trace_id": item.trace_id, "evaluator_id": item.evaluator_id,
                    "evaluator": ev["name"], "judged": True}
        fid = str(uuid.uuid4())
        conn.execute(
            "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
            " created_at, comment) VALUES (?,?,?,?,?,?,?,?,?)",
            (fid, item.task_id, _json(item.inputs), _json(item.output), score,
             f"evaluator:{ev['name']}", _json(metadata), stamp, reason),
        )
        conn.execute("UPDATE evaluation_results SET feedback_id = ? WHERE evaluator_id = ?"
                     " AND trace_id = ?", (fid, item.evaluator_id, item.trace_id))
    return True


def human_scored(conn: sqlite3.Connection, trace_id: str) -> bool:
    """True when a person (or the application) scored the trace: its score, or a scored
    feedback entry naming it (judged entries name no trace)."""
    row = conn.execute(
        "SELECT 1 FROM traces WHERE id = ? AND score IS NOT NULL UNION ALL"
        " SELECT 1 FROM feedback WHERE trace_id = ? AND score IS NOT NULL LIMIT 1",
        (trace_id, trace_id),
    ).fetchone()
    return row is not None


def judged_examples(conn: sqlite3.Connection, task_id: str,
                    evaluator_ids: Sequence[str], limit: int) -> list[sqlite3.Row]:
    """The judged feedback of *evaluator_ids* on the task's traces that no person scored,
    one entry per trace (the first judged), oldest first, from the newest *limit* traces'
    worth of entries (a bounded read); columns of an optimizer example and ``seq``."""
    if not evaluator_ids:
        return []
    marks = ", ".join("?" for _ in evaluator_ids)
    rows = conn.execute(
        "SELECT f.seq, f.id, f.inputs, f.output, f.score, f.correction, f.comment, r.trace_id"
        " FROM evaluation_results r JOIN feedback f ON f.id = r.feedback_id"
        " JOIN traces t ON t.id = r.trace_id"
        f" WHERE f.task_id = ? AND r.status = 'judged' AND r.evaluator_id IN ({marks})"
        " AND t.score IS NULL AND NOT EXISTS (SELECT 1 FROM feedback h"
        " WHERE h.trace_id = r.trace_id AND h.score IS NOT NULL) ORDER BY f.seq DESC LIMIT ?",
        (task_id, *evaluator_ids, limit * len(evaluator_ids)),
    ).fetchall()
    seen: set[str] = set()
    out = []
    for row in reversed(rows):
        if row["trace_id"] not in seen:
            seen.add(row["trace_id"])
            out.append(row)
    return out


def judged_arm(conn: sqlite3.Connection, task_id: str, version: str, bounds: tuple[int, int],
               evaluator_ids: Sequence[str]) -> tuple[int, float, float]:
    """``(n, sum, sum of squares)`` of judged scores (a trace's mean over *evaluator_ids*) of
    the version's traces in *bounds* (trace ``seq``) that no person scored."""
    if not evaluator_ids:
        return 0, 0.0, 0.0
    marks = ", ".join("?" for _ in evaluator_ids)
    row = conn.execute(
        "SELECT COUNT(*) AS n, COALESCE(SUM(s), 0) AS s, COALESCE(SUM(s * s), 0) AS ss FROM"
        " (SELECT AVG(r.score) AS s FROM traces t JOIN evaluation_results r"
        " ON r.trace_id = t.id WHERE t.task_id = ? AND t.seq > ? AND t.seq <= ?"
        " AND t.prompt_version_id = ? AND t.score IS NULL AND r.status = 'judged'"
        f" AND r.evaluator_id IN ({marks}) GROUP BY r.trace_id) j",
        (task_id, *bounds, version, *evaluator_ids),
    ).fetchone()
    return int(row["n"]), float(row["s"]), float(row["ss"])


def _json(value: Any) -> str | None:
    return None if value is None else msgspec.json.encode(value).decode()


def agreement_pairs(conn: sqlite3.Connection, evaluator_id: str) -> list[tuple[float, float]]:
    """``(judge, human)`` scores of the evaluator's newest judged traces that people scored
    too (the trace's score, else a scored feedback entry of the trace), at most 10 000."""
    rows = conn.execute(
        "SELECT r.score AS judge, COALESCE(t.score, (SELECT f.score FROM feedback f"
        " WHERE f.trace_id = r.trace_id AND f.score IS NOT NULL ORDER BY f.seq LIMIT 1))"
        " AS human FROM evaluation_results r JOIN traces t ON t.id = r.trace_id"
        " WHERE r.evaluator_id = ? AND r.status = 'judged' ORDER BY t.seq DESC LIMIT ?",
        (evaluator_id, _MAX_PAIRS),
    ).fetchall()
    return [(float(r["judge"]), float(r["human"])) for r in rows if r["human"] is not None]
