"""A rollout's figures are kept as calls and scores arrive (`kaizen_server.storage.rollout_tally`).

A score during a rollout, and reading the rollout (which evaluates it), do the same work at
any number of scores per arm: proved by SQLite's virtual-machine step counts at two sizes,
not by time. The running figures equal what the old full aggregation over the rollout's rows
gave, and schema step 13 fills them for rollouts stored before it.
"""

from __future__ import annotations

import math
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kaizen_sdk.models import (
    FeedbackRequest,
    RolloutRequest,
    TaskCreateRequest,
    TraceRequest,
)
from kaizen_server.storage import sqlite_schema
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


def _rollout(store: Store, name: str, **fields: Any) -> tuple[str, str]:
    # no threshold job starts meanwhile (it would change what a score does)
    store.create_task(TaskCreateRequest(name=name, prompt_text="v1 {{ x }}",
                                        feedback_threshold=10**6))
    active = str(store.active_prompt(name).id)
    candidate = str(store.create_version(name, "v2 {{ x }}", activate=False).id)
    store.start_rollout(name, RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                             share=0.5, **fields))
    return active, candidate


def _call(store: Store, task: str, version: str, i: int, *, score: float | None = None,
          **fields: Any) -> str:
    trace = uuid.uuid4()
    store.add_trace(TraceRequest(task_id=task, id=trace, response_text="r",
                                 prompt_version_id=uuid.UUID(version),
                                 latency_ms=float(100 + i % 7), tokens=10, model="m",
                                 **fields))
    if score is not None:
        store.score_trace(str(trace), score, "judge")
    return str(trace)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "tally.db"))
    try:
        yield s
    finally:
        s.close()


def _steps(store: Store, work: Callable[[], object]) -> int:
    """How many SQLite virtual-machine instructions *work* runs on this thread's connection."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn = store._conn()
    conn.set_progress_handler(count, 1)
    try:
        work()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def test_a_score_and_the_report_cost_the_same_at_any_arm_size(store: Store) -> None:
    """One score, and ``get_rollout`` (evaluate + report), at 40 and at 400 scores per arm:
    the same number of VM steps (before: every evaluation and report read every arm row)."""
    # no decision on scores: every read evaluates, and the test stays undecided
    active, candidate = _rollout(store, "big", min_samples=10**6, auto_promote=False,
                                 auto_rollback=False)
    done = 0

    def grow(per_arm: int) -> None:
        nonlocal done
        for i in range(done, per_arm):
            for version in (active, candidate):
                _call(store, "big", version, i, score=(i % 5) / 5)
        done = per_arm

    def measure() -> tuple[int, int]:
        trace = _call(store, "big", candidate, 3)
        score = _steps(store, lambda: store.score_trace(trace, 0.5, "judge"))
        report = _steps(store, lambda: store.get_rollout("big"))
        return score, report

    grow(40)
    small = measure()
    grow(400)
    large = measure()
    assert large == small
    rollout = store.get_rollout("big")
    assert (rollout.active.n, rollout.candidate.n) == (400, 402)


def _old_arm(conn: sqlite3.Connection, rollout: sqlite3.Row, version: str) -> dict[str, Any]:
    """The figures as the store computed them before step 13: every row of the window."""
    bounds = (rollout["trace_seq"], rollout["end_trace_seq"] or 2**62)
    t = conn.execute(
        "SELECT COUNT(score), COALESCE(SUM(score), 0), COUNT(*), COALESCE(SUM(error), 0)"
        " FROM traces WHERE task_id = ? AND seq > ? AND seq <= ? AND prompt_version_id = ?",
        (rollout["task_id"], *bounds, version)).fetchone()
    f = conn.execute(
        "SELECT COUNT(score), COALESCE(SUM(score), 0) FROM feedback WHERE task_id = ?"
        " AND seq > ? AND prompt_version_id = ? AND score IS NOT NULL"
        " AND json_extract(metadata, '$.trace_id') IS NULL",
        (rollout["task_id"], rollout["feedback_seq"], version)).fetchone()
    latencies = sorted(r[0] for r in conn.execute(
        "SELECT latency_ms FROM traces WHERE task_id = ? AND seq > ? AND seq <= ?"
        " AND prompt_version_id = ? AND latency_ms IS NOT NULL",
        (rollout["task_id"], *bounds, version)))
    p95 = latencies[max(1, math.ceil(0.95 * len(latencies))) - 1] if latencies else None
    n = t[0] + f[0]
    return {"n": n, "mean": (t[1] + f[1]) / n if n else None, "calls": t[2], "errors": t[3],
            "p95": p95}


def _mix(store: Store, task: str, active: str, candidate: str) -> None:
    """Calls, errors, scores, a score changed, feedback with and without a trace."""
    for i in range(30):
        version = (active, candidate)[i % 2]
        trace = _call(store, task, version, i, error=i % 6 == 1,
                      score=None if i % 4 == 3 else (i % 10) / 10)
        if i % 9 == 0:
            store.score_trace(trace, 1.0, "human")  # changed: counted once, with the new score
        if i % 8 == 0:  # the call's own entry, naming its trace: counted by the trace
            store.add_feedback(FeedbackRequest(task_id=task, output="o", score=0.3,
                                               metadata={"trace_id": trace},
                                               prompt_version_id=uuid.UUID(version)))
    for i in range(5):  # scored entries of a version without a trace
        store.add_feedback(FeedbackRequest(task_id=task, output="o", score=0.2 * i,
                                           prompt_version_id=uuid.UUID(candidate)))
    store.add_feedback(FeedbackRequest(task_id=task, output="o",  # unscored: not counted
                                       prompt_version_id=uuid.UUID(active)))
    # a trace arm without a version: the rollout's version of that arm
    store.add_trace(TraceRequest(task_id=task, response_text="r", arm="active", latency_ms=5.0))


def _report(store: Store, task: str) -> dict[str, dict[str, Any]]:
    r = store.get_rollout(task)
    return {arm: {"n": a.n, "mean": a.mean, "calls": a.calls, "errors": a.errors,
                  "p95": a.p95_latency_ms}
            for arm, a in (("active", r.active), ("candidate", r.candidate))}


def test_the_running_figures_equal_the_full_aggregation(store: Store) -> None:
    active, candidate = _rollout(store, "mix", min_samples=10**6)
    _mix(store, "mix", active, candidate)
    conn = store._conn()
    row = conn.execute("SELECT * FROM rollouts").fetchone()
    expected = {"active": _old_arm(conn, row, active),
                "candidate": _old_arm(conn, row, candidate)}
    assert expected["active"]["calls"] == 16 and expected["candidate"]["n"] == 14
    got = _report(store, "mix")
    for arm in ("active", "candidate"):
        assert got[arm]["mean"] == pytest.approx(expected[arm]["mean"])
        assert {k: v for k, v in got[arm].items() if k != "mean"} == {
            k: v for k, v in expected[arm].items() if k != "mean"}


def test_latency_is_bucketed_to_three_significant_digits(store: Store) -> None:
    _active, candidate = _rollout(store, "lat", min_samples=10**6)
    for ms in (1234.5, 99.94, 0.0, 151.0):
        store.add_trace(TraceRequest(task_id="lat", response_text="r", latency_ms=ms,
                                     prompt_version_id=uuid.UUID(candidate)))
    buckets = store._conn().execute(
        "SELECT latency_ms, n FROM rollout_latency WHERE version_id = ? ORDER BY latency_ms",
        (candidate,)).fetchall()
    assert [tuple(b) for b in buckets] == [(0.0, 1), (99.9, 1), (151.0, 1), (1230.0, 1)]
    assert store.get_rollout("lat").candidate.p95_latency_ms == 1230.0


def test_an_ended_rollouts_figures_stay_as_they_were(store: Store) -> None:
    _active, candidate = _rollout(store, "end", min_samples=10**6)
    trace = _call(store, "end", candidate, 0, score=0.5)
    store.stop_rollout("end", "rollback")
    store.score_trace(trace, 1.0, "human")
    _call(store, "end", candidate, 1, score=1.0)  # after the end: not the rollout's
    r = store.get_rollout("end")
    assert (r.candidate.n, r.candidate.mean, r.candidate.calls) == (1, 0.5, 1)


def test_step_13_fills_the_figures_of_stored_rollouts(tmp_path: Path) -> None:
    """A version-12 file with a running and an ended rollout: step 13 fills both arms of
    each with what the old aggregation gave."""
    path = str(tmp_path / "old.db")
    store = Store(path)
    try:
        a1, c1 = _rollout(store, "ended", min_samples=10**6)
        _mix(store, "ended", a1, c1)
        store.stop_rollout("ended", "rollback")
        a2, c2 = _rollout(store, "running", min_samples=10**6)
        _mix(store, "running", a2, c2)
        before = {t: _report(store, t) for t in ("ended", "running")}
    finally:
        store.close()
    conn = sqlite3.connect(path)
    for table in ("rollout_arms", "rollout_latency", "rollout_models"):
        conn.execute(f"DROP TABLE {table}")
    for column in ("trace_retention_limit", "trace_retention_days", "feedback_retention_days"):
        conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
    conn.execute("DELETE FROM schema_version WHERE version = 13")
    conn.commit()
    conn.close()
    assert [s.version for s in sqlite_schema.read_status(path).pending] == [13]
    store = Store(path)
    try:
        after = {t: _report(store, t) for t in ("ended", "running")}
    finally:
        store.close()
    for task, arms in before.items():
        for arm, figures in arms.items():
            assert after[task][arm]["mean"] == pytest.approx(figures["mean"])
            assert {k: v for k, v in after[task][arm].items() if k != "mean"} == {
                k: v for k, v in figures.items() if k != "mean"}
