"""The storage contract of `StorageInterface.task_costs`: totals and per-version figures of a
task's calls, each call counted once, read from a bounded number of newest traces."""

from __future__ import annotations

import uuid

import pytest

from kaizen_sdk.models import TaskCreateRequest, TraceRequest
from kaizen_server.storage.errors import NotFound
from kaizen_server.storage.interface import StorageInterface

pytestmark = pytest.mark.unit


def _priced_by_metadata(req: TraceRequest) -> float | None:
    """A pricer for the test: the cost a trace's metadata names (``None``: unpriced)."""
    cost = (req.metadata or {}).get("usd")
    return None if cost is None else float(cost)


def _trace(store: StorageInterface, task: str, usd: float | None, **fields: object) -> str:
    trace_id = str(uuid.uuid4())
    store.add_trace(TraceRequest(task_id=task, id=uuid.UUID(trace_id), response_text="r",  # type: ignore[arg-type]
                                 model="m", tokens=10, metadata={"usd": usd}, **fields))
    return trace_id


def test_task_costs_count_each_call_once_per_version(store: StorageInterface) -> None:
    store.pricer = _priced_by_metadata  # type: ignore[attr-defined]
    task = str(store.create_task(TaskCreateRequest(name="t", prompt_text="v1 {{ x }}")).id)
    v1 = store.active_prompt(task).id
    v2 = store.create_version(task, "v2 {{ x }}", activate=False).id
    for _ in range(3):
        _trace(store, task, 0.25, prompt_version_id=v1)
    _trace(store, task, None, prompt_version_id=v1)
    parent = _trace(store, task, 1.0, prompt_version_id=v2)
    _trace(store, task, 0.5, parent_trace_id=uuid.UUID(parent))  # part of its parent's cost
    unpriced = _trace(store, task, None, prompt_version_id=v2)
    _trace(store, task, 0.125, parent_trace_id=uuid.UUID(unpriced))  # counts on its own
    other = str(store.create_task(TaskCreateRequest(name="other")).id)
    _trace(store, other, 8.0)

    costs = store.task_costs("t", days=7)
    assert (costs.calls, costs.priced_calls, costs.cost_usd) == (7, 5, 1.875)
    assert costs.cost_per_call_usd == 0.375
    assert (costs.scanned, costs.complete, costs.days) == (8, True, 7)
    rows = [(v.version_id, v.version_number, v.calls, v.priced_calls, v.cost_usd,
             v.cost_per_call_usd) for v in costs.versions]
    assert rows == [(v2, 2, 2, 1, 1.0, 1.0), (v1, 1, 4, 3, 0.75, 0.25),
                    (None, None, 1, 1, 0.125, 0.125)]

    newest = store.task_costs(task, days=7, recent=2)  # the two newest traces only
    assert (newest.calls, newest.cost_usd, newest.scanned, newest.complete) == (2, 0.125, 2,
                                                                                False)
    with pytest.raises(NotFound):
        store.task_costs("no-such-task", days=7)
