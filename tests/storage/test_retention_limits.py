"""Retention limits by task and server-wide, by count and by age, for traces and feedback
apart (`kaizen_server.domain.retention`), applied by `Store.prune` in bounded batches; rows a
running rollout counts are kept. Exact counts throughout."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kaizen_sdk.models import FeedbackRequest, RolloutRequest, TaskCreateRequest, TraceRequest
from kaizen_server.domain.decisions import retention_cutoff
from kaizen_server.domain.retention import RetentionDefaults, RetentionLimits
from kaizen_server.jobs.retention import Pruner
from kaizen_server.storage.errors import utcnow
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(str(tmp_path / "limits.db"))
    try:
        yield s
    finally:
        s.close()


def _task(store: Store, name: str, **limits: int) -> None:
    store.create_task(TaskCreateRequest(name=name, prompt_text="v1 {{ x }}",
                                        feedback_threshold=10**6, **limits))  # type: ignore[arg-type]


def _fill(store: Store, name: str, traces: int, feedback: int = 0) -> None:
    store.ingest([TraceRequest(task_id=name, response_text=str(i)) for i in range(traces)],
                 [FeedbackRequest(task_id=name, output=str(i), score=0.5)
                  for i in range(feedback)])


def _rows(store: Store, table: str, name: str) -> list[str]:
    """The task's rows of *table*, oldest first: their response text / output."""
    column = "response_text" if table == "traces" else "output"
    rows = store._conn().execute(
        f"SELECT {column} FROM {table} WHERE task_id = ? ORDER BY seq", (store.task_id(name),)
    ).fetchall()
    return [str(r[0]).strip('"') for r in rows]


def _age(store: Store, table: str, name: str, oldest: int, days: float) -> None:
    """Make the task's *oldest* rows of *table* *days* old."""
    conn = store._conn()
    conn.execute(
        f"UPDATE {table} SET created_at = ? WHERE seq IN (SELECT seq FROM {table}"
        " WHERE task_id = ? ORDER BY seq LIMIT ?)",
        ((utcnow() - timedelta(days=days)).isoformat(), store.task_id(name), oldest),
    )


def _drain(store: Store, batch: int) -> list[int]:
    passes = []
    for _ in range(100):
        n = store.prune(batch)
        passes.append(n)
        if n == 0:
            return passes
    raise AssertionError("prune never finished")


def test_a_trace_count_limit_keeps_the_newest_in_bounded_batches(store: Store) -> None:
    _task(store, "t", trace_retention_limit=10)
    _fill(store, "t", 35, feedback=12)
    assert _drain(store, 10) == [10, 10, 5, 0]
    assert _rows(store, "traces", "t") == [str(i) for i in range(25, 35)]
    assert len(_rows(store, "feedback", "t")) == 12  # feedback has its own limits: none here
    assert store.get_task("t").feedback_count == 12


def test_an_age_limit_deletes_only_older_rows(store: Store) -> None:
    _task(store, "a", trace_retention_days=7, feedback_retention_days=30)
    _fill(store, "a", 20, feedback=20)
    _age(store, "traces", "a", 12, days=8)  # older than 7 days: they go
    _age(store, "feedback", "a", 5, days=31)
    _age(store, "feedback", "a", 9, days=29)  # within 30 days (the 5 oldest made older again)
    _age(store, "feedback", "a", 5, days=31)
    assert _drain(store, 5) == [5, 5, 2, 5, 0]
    assert _rows(store, "traces", "a") == [str(i) for i in range(12, 20)]
    assert _rows(store, "feedback", "a") == [str(i) for i in range(5, 20)]


def test_feedback_that_trains_is_kept_longer_than_raw_traces(store: Store) -> None:
    _task(store, "k", trace_retention_limit=5, feedback_retention_limit=50)
    _fill(store, "k", 30, feedback=30)
    assert sum(_drain(store, 100)) == 25
    assert (len(_rows(store, "traces", "k")), len(_rows(store, "feedback", "k"))) == (5, 30)


def test_server_wide_limits_apply_where_a_task_sets_none(store: Store) -> None:
    store.retention_defaults = RetentionLimits(trace_retention_limit=3,
                                               feedback_retention_limit=4)
    _task(store, "plain")
    _task(store, "own", trace_retention_limit=8)
    for name in ("plain", "own"):
        _fill(store, name, 12, feedback=12)
    assert sum(_drain(store, 100)) == (12 - 3) + (12 - 4) + (12 - 8) + (12 - 4)
    assert [len(_rows(store, t, n)) for n in ("plain", "own") for t in ("traces", "feedback")
            ] == [3, 4, 8, 4]


def test_rows_a_running_rollout_counts_are_kept(store: Store) -> None:
    _task(store, "r", trace_retention_limit=5, feedback_retention_limit=5)
    candidate = store.create_version("r", "v2 {{ x }}", activate=False).id
    _fill(store, "r", 10, feedback=10)
    store.start_rollout("r", RolloutRequest(candidate_version_id=candidate, share=0.5,
                                            min_samples=10**6))
    for i in range(10, 20):
        store.add_trace(TraceRequest(task_id="r", response_text=str(i), arm="candidate"))
        store.add_feedback(FeedbackRequest(task_id="r", output=str(i)))
    assert sum(_drain(store, 100)) == 20  # the 10 before the rollout, of each table
    assert _rows(store, "traces", "r") == [str(i) for i in range(10, 20)]
    assert _rows(store, "feedback", "r") == [str(i) for i in range(10, 20)]
    store.stop_rollout("r", "rollback")
    assert sum(_drain(store, 100)) == 10
    assert len(_rows(store, "traces", "r")) == len(_rows(store, "feedback", "r")) == 5


def test_the_pruner_thread_applies_every_limit(store: Store) -> None:
    _task(store, "p", trace_retention_limit=4)
    _fill(store, "p", 24)
    pruner = Pruner(store, batch=5, max_batches=2)
    assert pruner.run_once() == 10
    assert pruner.run_once() == 10
    assert pruner.run_once() == 0
    assert len(_rows(store, "traces", "p")) == 4


def test_retention_cutoff_takes_either_limit_and_spares_the_rollout() -> None:
    assert retention_cutoff(beyond_count=None, beyond_age=None, rollout_start=3) is None
    assert retention_cutoff(beyond_count=10, beyond_age=None, rollout_start=None) == 10
    assert retention_cutoff(beyond_count=10, beyond_age=14, rollout_start=None) == 14
    assert retention_cutoff(beyond_count=10, beyond_age=14, rollout_start=12) == 12


def test_server_wide_limits_come_from_arguments_then_the_environment() -> None:
    env = {"KAIZEN_TRACE_RETENTION_DAYS": "30", "KAIZEN_FEEDBACK_RETENTION_LIMIT": "9"}
    got = RetentionDefaults.resolve(env, trace_retention_days=7)
    assert (got.trace_retention_limit, got.trace_retention_days,
            got.feedback_retention_limit, got.feedback_retention_days) == (None, 7, 9, None)
    with pytest.raises(ValueError, match="KAIZEN_TRACE_RETENTION_LIMIT"):
        RetentionDefaults.resolve({"KAIZEN_TRACE_RETENTION_LIMIT": "0"})
    with pytest.raises(ValueError, match="KAIZEN_FEEDBACK_RETENTION_DAYS"):
        RetentionDefaults.resolve({"KAIZEN_FEEDBACK_RETENTION_DAYS": "a week"})
    assert not RetentionDefaults.resolve({}).any


def test_a_limit_below_one_is_refused_naming_the_field(store: Store) -> None:
    from kaizen_server.storage.errors import Invalid

    with pytest.raises(Invalid, match="trace_retention_days"):
        _task(store, "bad", trace_retention_days=0)
    assert uuid.UUID(str(store.create_task(TaskCreateRequest(name="ok")).id))
