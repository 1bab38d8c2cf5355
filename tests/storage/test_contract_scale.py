"""Contract: bounded long reads and retention limits, on every backend (`BACKENDS`)."""

from __future__ import annotations

import pytest

from kaizen_sdk.models import FeedbackRequest, TaskCreateRequest
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
