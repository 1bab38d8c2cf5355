"""Contract: bounded long reads and retention limits, on every backend (`BACKENDS`)."""

from __future__ import annotations

import pytest

from kaizen_sdk.models import FeedbackRequest, TaskCreateRequest, TraceRequest
from kaizen_server.storage.interface import StorageInterface

pytestmark = pytest.mark.unit


def test_scored_examples_are_the_newest_scored_entries_oldest_first(
    store: StorageInterface,
) -> None:
    store.create_task(TaskCreateRequest(name="ex", feedback_threshold=10**6))
    for i in range(15):
        store.add_feedback(FeedbackRequest(task_id="ex", inputs={"i": i}, output="o",
                                           score=None if i % 5 == 4 else i / 20))
    task = store.task_id("ex")
    # scored: every i but 4, 9 and 14; the newest five of them, in the order they came
    assert [e.inputs for e in store.scored_examples(task, 5)] == [
        {"i": i} for i in (8, 10, 11, 12, 13)]
    assert len(store.scored_examples(task)) == 12


def test_prune_keeps_each_tables_own_count_limit(store: StorageInterface) -> None:
    store.create_task(TaskCreateRequest(name="keep", feedback_threshold=10**6,
                                        trace_retention_limit=3, feedback_retention_limit=6))
    store.ingest([TraceRequest(task_id="keep", response_text=str(i)) for i in range(10)],
                 [FeedbackRequest(task_id="keep", output=str(i), score=0.5) for i in range(10)])
    deleted = [store.prune(4) for _ in range(5)]
    assert deleted == [4, 3, 4, 0, 0]
    assert [t.response_text for t in store.list_traces("keep", 100).items] == ["9", "8", "7"]
    assert [f.output for f in store.list_feedback("keep", 100).items] == [
        str(i) for i in range(9, 3, -1)]
    assert store.get_task("keep").feedback_count == 10


def test_a_batch_of_scores_means_what_the_scores_one_by_one_mean(
    store: StorageInterface,
) -> None:
    """One write for the whole batch: entries updated or made, a repeated score id applied
    once, a trace scored twice keeps the last score, a score for an unknown trace held."""
    import uuid

    from kaizen_sdk.models import ScoreItem

    store.create_task(TaskCreateRequest(name="b", feedback_threshold=10**6))
    ids = [uuid.uuid4() for _ in range(6)]
    store.ingest([TraceRequest(task_id="b", id=i, response_text=f"r{n}")
                  for n, i in enumerate(ids)],
                 [FeedbackRequest(task_id="b", output="own", inputs={"q": n},
                                  metadata={"trace_id": str(i)})
                  for n, i in enumerate(ids[:3])])  # the first three have their own entry
    again = uuid.uuid4()
    unknown = uuid.uuid4()
    items = [ScoreItem(id=uuid.uuid4(), trace_id=i, score=0.25) for i in ids[:5]]
    items += [ScoreItem(id=again, trace_id=ids[5], score=0.5),
              ScoreItem(id=again, trace_id=ids[5], score=0.5),
              ScoreItem(id=uuid.uuid4(), trace_id=unknown, score=1.0)]
    assert store.apply_scores(items) == (8, [])
    assert store.apply_scores(items[:1]) == (1, [])  # applied before: once
    entries = {str(f.trace_id): f for f in store.list_feedback("b", 100).items}
    assert len(entries) == 6
    assert [entries[str(i)].score for i in ids] == [0.25] * 5 + [0.5]
    assert [entries[str(i)].output for i in ids] == ["own"] * 3 + ["r3", "r4", "r5"]
    assert [store.get_trace(str(i)).score for i in ids] == [0.25] * 5 + [0.5]
    task = store.get_task("b")
    assert task.feedback_count == 6  # 3 sent + 3 made by scores
    store.add_trace(TraceRequest(task_id="b", id=unknown, response_text="late"))
    assert store.get_trace(str(unknown)).score == 1.0  # the held score, applied on arrival


def test_a_batch_of_scores_crossing_the_threshold_starts_one_job(
    store: StorageInterface,
) -> None:
    import uuid

    from kaizen_sdk.models import ScoreItem

    store.create_task(TaskCreateRequest(name="th", prompt_text="v1 {{ x }}",
                                        feedback_threshold=4))
    ids = [uuid.uuid4() for _ in range(10)]
    store.ingest([TraceRequest(task_id="th", id=i, response_text="r") for i in ids], [])
    jobs: list[str] = []
    assert store.apply_scores([ScoreItem(id=uuid.uuid4(), trace_id=i, score=0.5)
                               for i in ids], jobs) == (10, [])
    assert len(jobs) == 1  # at the fourth entry; one job per task at a time
    assert store.get_task("th").feedback_count == 10
