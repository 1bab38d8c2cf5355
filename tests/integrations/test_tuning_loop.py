"""The reference's ``instrument(litellm)`` scoring example trains the optimizer.

A litellm call against the OpenAI-compatible stand-in, named by a module constant, is scored
with ``client.score(response.ct_trace_id)``; the optimization job that follows on the real
local server learns from exactly those scored calls.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

SUMMARIZE_LOOP_TICKET = "Summarize this support ticket in one line (tuning loop)"


@pytest.fixture
def ct_client(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        yield client


def test_scored_instrumented_calls_are_the_optimizers_training_data(
    ct_client: CTClient,
    standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    task = "summarize_loop_ticket"  # the module constant's lower-cased name
    ct.instrument(litellm, client=ct_client, tracer_provider=provider[0])
    try:
        trace_ids = []
        for score in (0.9, 0.8, 0.3):
            response = litellm.completion(
                model="openai/m",
                messages=[{"role": "user", "content": SUMMARIZE_LOOP_TICKET}],
                api_base=standin.base_url, api_key="sk-test",
            )
            # the reference's example, with a second client as a reviewer would have
            with CTClient(base_url=ct_client.settings.base_url,
                          api_key=ct_client.settings.api_key) as reviewer:
                reviewer.score(response.ct_trace_id, score, scored_by="human-review")
            trace_ids.append(response.ct_trace_id)
    finally:
        ct.uninstrument(litellm)

    entries = ct_client.list_feedback(task, limit=10)
    by_trace = {str(e.trace_id): e for e in entries}
    assert set(by_trace) == set(trace_ids)  # one entry per scored call, none twice
    entry = by_trace[trace_ids[0]]
    assert entry.inputs == {"prompt": SUMMARIZE_LOOP_TICKET}
    assert entry.output == f"echo: {SUMMARIZE_LOOP_TICKET}"
    assert sorted(e.score for e in entries) == [0.3, 0.8, 0.9]

    job = ct_client.trigger_optimization(task).job
    done = ct_client.wait_for_job(str(job.id), timeout=30, poll_interval=0.05)
    assert done.is_success, done.error_message
    meta = done.job_metadata or {}
    assert meta["train_size"] + meta["val_size"] == 3
    assert meta["train_size"] == 2
    assert set(meta["demo_feedback_ids"]) <= {str(e.id) for e in entries}
    assert meta["demo_feedback_ids"]  # a scored call became a demonstration
    print(f"optimizer train size from instrumented calls: {meta['train_size']} "
          f"(val {meta['val_size']}, demos {len(meta['demo_feedback_ids'])})")
    assert uuid.UUID(str(done.prompt_version_id))
