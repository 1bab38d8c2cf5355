"""Rows the server makes ids for get UUID7s (`kaizen_server.storage.ids`): they sort by time,
so the ``traces`` and ``feedback`` primary-key indexes grow at their end."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from kaizen_sdk.models import FeedbackRequest, TraceRequest
from kaizen_server.storage.ids import uuid7
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


def test_uuid7_is_a_version_7_uuid_that_sorts_by_the_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    parsed = [uuid.UUID(i) for i in ids]
    assert all(str(p) == i for p, i in zip(parsed, ids, strict=True))
    assert {(p.version, p.variant) for p in parsed} == {(7, uuid.RFC_4122)}
    stamps = [p.int >> 80 for p in parsed]
    assert stamps == sorted(stamps) and before <= stamps[0] <= stamps[-1] <= after
    assert len(set(ids)) == 1000


def test_traces_and_feedback_stored_without_an_id_get_uuid7s(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "ids.db"))
    try:
        one = store.add_trace(TraceRequest(task_id="t", response_text="r"))
        given = uuid.uuid4()
        kept = store.add_trace(TraceRequest(task_id="t", id=given, response_text="r"))
        store.ingest([TraceRequest(task_id="t", response_text="r")],
                     [FeedbackRequest(task_id="t", output="o")])
        fb, _ = store.add_feedback(FeedbackRequest(task_id="t", output="o"))
        store.score_trace(str(one.id), 0.5, "judge")  # makes the trace's entry
        traces = store.list_traces("t", 10).items
        feedback = store.list_feedback("t", 10).items
        assert kept.id == given  # a client's id is kept as it is
        assert sorted(t.id.version for t in traces) == [4, 7, 7]
        assert [f.id.version for f in feedback] == [7, 7, 7]
        assert fb.id.version == 7
    finally:
        store.close()
