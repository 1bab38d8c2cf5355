"""Contract: a batch's task counters, threshold jobs and held scores, on every backend
(`BACKENDS`); and the round trips one PostgreSQL batch takes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from kaizen_sdk.models import FeedbackRequest, ScoreItem, TaskCreateRequest, TraceRequest
from kaizen_server.storage.interface import StorageInterface
from kaizen_server.storage.postgres import PostgresStore

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "sqlite-before-3.35"])
def test_a_batch_over_two_tasks_counts_each_and_starts_the_job_at_the_crossing_entry(
    store: StorageInterface, returning: bool, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store, "update_returning", returning)  # both ways on each backend
    store.create_task(TaskCreateRequest(name="a", feedback_threshold=5))
    store.create_task(TaskCreateRequest(name="b", feedback_threshold=10**6))
    stored = uuid.uuid4()
    store.add_feedback(FeedbackRequest(task_id="b", id=stored, output="o", score=0.5))
    twice = uuid.uuid4()
    accepted, errors, jobs = store.ingest([], [
        *(FeedbackRequest(task_id="a", output=str(i), score=0.5) for i in range(3)),
        FeedbackRequest(task_id="b", id=stored, output="again", score=0.5),  # stored before
        FeedbackRequest(task_id="b", id=twice, output="x", score=None),
        FeedbackRequest(task_id="b", id=twice, output="x", score=None),  # twice in the batch
        *(FeedbackRequest(task_id="a", output=str(i), score=0.5) for i in range(3, 8)),
        FeedbackRequest(task_id="b", output="y", score=0.25),
    ])
    assert (accepted, errors, len(jobs)) == (12, [], 1)
    job = store.get_job(jobs[0])
    assert job.task_id == uuid.UUID(store.task_id("a"))
    assert job.feedback_count == 5  # the fifth entry of "a" crossed the threshold
    assert store.get_task("a").feedback_count == 8
    assert store.get_task("a").threshold_progress == "3/5"  # the three after the job
    assert store.get_task("b").feedback_count == 3  # stored before, then two new ones
    assert len(store.list_feedback("b", 10).items) == 3


def test_a_score_held_for_a_trace_is_applied_when_a_batch_brings_it(
    store: StorageInterface,
) -> None:
    store.create_task(TaskCreateRequest(name="h", feedback_threshold=10**6))
    later = uuid.uuid4()
    assert store.apply_scores([ScoreItem(id=uuid.uuid4(), trace_id=later, score=0.75)]) == (
        1, [])
    assert store.ingest([TraceRequest(task_id="h", id=later, response_text="late")],
                        [FeedbackRequest(task_id="h", output="o", score=0.5)])[0] == 2
    assert store.get_trace(str(later)).score == 0.75
    assert sorted(e.score or 0 for e in store.list_feedback("h", 10).items) == [0.5, 0.75]
    assert store.get_task("h").feedback_count == 2


def test_batch_traces_link_to_the_active_version_by_its_text(store: StorageInterface) -> None:
    store.create_task(TaskCreateRequest(name="v", feedback_threshold=10**6))
    first = store.ingest([TraceRequest(task_id="v", prompt_text="P", prompt_is_default=True,
                                       response_text="a")], [])
    assert first == (1, [], [])
    store.ingest([TraceRequest(task_id="v", prompt_text="P", response_text="b"),
                  TraceRequest(task_id="v", prompt_text="other", response_text="c")], [])
    active = store.active_prompt("v")
    assert active.id is not None and active.version_number == 1
    linked = {t.response_text: t.prompt_version_id for t in store.list_traces("v", 10).items}
    assert linked == {"a": active.id, "b": active.id, "c": None}


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every statement psycopg sends (one round trip each; ``executemany`` is pipelined)."""
    sent: list[str] = []
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany

    def one(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(self, query, *args, **kwargs)

    def many(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return executemany(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", one)
    monkeypatch.setattr(psycopg.Cursor, "executemany", many)
    yield sent


def test_a_postgres_batch_of_one_task_takes_10_or_12_round_trips(
    pg_url: str, statements: list[str],
) -> None:
    store = PostgresStore(pg_url)
    try:
        store.create_task(TaskCreateRequest(name="few", feedback_threshold=10**6))
        store.create_task(TaskCreateRequest(name="job", feedback_threshold=5))

        def batch(task: str) -> tuple[list[TraceRequest], list[FeedbackRequest]]:
            return ([TraceRequest(task_id=task, prompt_text="p", response_text=str(i))
                     for i in range(20)],
                    [FeedbackRequest(task_id=task, output=str(i), score=0.5)
                     for i in range(20)])

        assert len(store.ingest(*batch("job"))[2]) == 1  # its job starts (and stays pending)
        # below the threshold; then over it beside the pending job (the benchmark's case)
        for task, expected in (("few", 10), ("few", 10), ("job", 12), ("job", 12)):
            statements.clear()
            assert store.ingest(*batch(task)) == (40, [], [])
            assert len(statements) == expected, "\n".join(statements)
    finally:
        store.close()
