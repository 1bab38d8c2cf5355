"""The ingest fast path (issue #23) keeps every check and every stored value of the slow one."""

from __future__ import annotations

import uuid

import httpx
import pytest

from kaizen_sdk import models as m


@pytest.mark.parametrize(
    ("kind", "item", "field"),
    [
        ("traces", {"tokens": 2**64}, "tokens"),
        ("traces", {"input_tokens": -(2**63) - 1}, "input_tokens"),
        ("traces", {"cached_input_tokens": 2**70}, "cached_input_tokens"),
        # fields typed Any hold any JSON value: an integer there must fit 64 bits too
        ("feedback", {"output": 2**64}, "output"),
        ("feedback", {"output": "x", "correction": -(2**64)}, "correction"),
    ],
)
def test_every_field_that_can_hold_an_int_is_checked_in_a_batch(
    client: httpx.Client, task_name: str, kind: str, item: dict[str, object], field: str
) -> None:
    body = {kind: [{"task_id": task_name, **item}, {"task_id": task_name}]}
    result = m.decode(client.post("/api/v1/ingest", json=body).content, m.IngestResult)
    assert result.accepted == 1
    assert [e.detail for e in result.errors] == [
        f"{kind}[0]: Expected `int` within 64 bits - at `$.{field}`"
    ]


def test_batch_ids_are_stored_as_sent_and_made_when_absent(
    client: httpx.Client, task_name: str
) -> None:
    trace_id, feedback_id = uuid.uuid4(), uuid.UUID(int=0)
    body = {
        "traces": [{"task_id": task_name, "id": str(trace_id).upper(), "response_text": "a"},
                   {"task_id": task_name, "response_text": "b"}],
        "feedback": [{"task_id": task_name, "id": str(feedback_id), "output": "a",
                      "metadata": {"trace_id": str(trace_id)}},
                     {"task_id": task_name, "output": "b"}],
    }
    result = m.decode(client.post("/api/v1/ingest", json=body).content, m.IngestResult)
    assert (result.accepted, result.errors) == (4, [])
    traces = client.get("/api/v1/traces", params={"task_id": task_name}).json()
    assert sorted(t["response_text"] for t in traces) == ["a", "b"]
    by_text = {t["response_text"]: t["id"] for t in traces}
    assert by_text["a"] == str(trace_id)
    assert uuid.UUID(by_text["b"]).version == 7
    entries = client.get("/api/v1/feedback", params={"task_id": task_name}).json()
    ids = {e["output"]: e["id"] for e in entries}
    assert ids["a"] == str(feedback_id)
    assert uuid.UUID(ids["b"]).version == 7
    # the entry is found by its trace (feedback.trace_id is filled from the metadata)
    scored = client.post(f"/api/v1/traces/{trace_id}/score", json={"score": 0.9})
    assert scored.status_code == 200, scored.text
    entries = client.get("/api/v1/feedback", params={"task_id": task_name}).json()
    assert {e["output"]: e["score"] for e in entries} == {"a": 0.9, "b": None}
