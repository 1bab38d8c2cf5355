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
