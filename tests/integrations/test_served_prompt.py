"""An instrument-only application (no ``@ct.task``) takes part: ``ct.prompt`` serves the task's
version (rollout arm by key), each openai call made with it is the task's trace with the
version and arm, its scores decide the rollout, and its calls are the optimizer's data."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

SETTINGS = {"model": "m", "temperature": 0}
V1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{{ ticket }}"}]
V2 = [{"role": "system", "content": "Be brief and kind."},
      {"role": "user", "content": "{{ ticket }}"}]
USERS = 24


@pytest.fixture
def ct_client(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        yield client


@pytest.fixture
def llm(standin: StandIn) -> Iterator[Any]:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def test_instrument_only_app_is_traced_rolled_out_and_optimized(
    ct_client: CTClient, llm: Any, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    task = f"served-{uuid.uuid4().hex[:10]}"
    ct_client.create_task(task, messages=V1, config=SETTINGS)
    v1 = ct_client.get_prompt(task)
    v2 = ct_client.create_prompt_version(task, messages=V2, config=SETTINGS)
    ct_client.start_rollout(task, str(v2.id), share=0.5, min_samples=4, alpha=0.2,
                            latency_margin=1000.0)  # loopback latencies are noise

    ct.instrument(openai, client=ct_client, tracer_provider=provider[0])
    try:
        served_by_user: dict[str, tuple[str, str | None]] = {}
        traces: dict[str, tuple[str, str | None, str]] = {}
        for i in range(USERS):
            user = f"user-{i}"
            served = ct.prompt(task, key=user, client=ct_client)
            again = ct.prompt(task, key=user, client=ct_client)
            assert (again.id, again.served_arm) == (served.id, served.served_arm)  # sticky
            served_by_user[user] = (str(served.id), served.served_arm)
            ticket = f"ticket {i}"
            before = len(standin.requests)
            reply = llm.chat.completions.create(**served.call_args(ticket=ticket))
            sent = standin.requests[before][1]
            assert (sent["model"], sent["temperature"]) == ("m", 0)
            assert sent["messages"][0]["content"] == served.messages[0].content  # type: ignore[index]
            traces[reply.ct_trace_id] = (str(served.id), served.served_arm, ticket)
            # the new version answers better: its calls score high, the old one's low
            reply.ct_score(0.9 if served.id == v2.id else 0.2)
        assert ct_client.flush(15)
    finally:
        ct.uninstrument(openai)

    arms = {arm for _, arm in served_by_user.values()}
    assert arms == {"active", "candidate"}, served_by_user
    assert {version for version, _ in served_by_user.values()} == {str(v1.id), str(v2.id)}

    stored = {str(t.id): t for t in ct_client.list_traces(task, limit=100)}
    assert set(stored) == set(traces)  # every call is the task's trace, none lost or extra
    for trace_id, (version, arm, _ticket) in traces.items():
        assert (str(stored[trace_id].prompt_version_id), stored[trace_id].arm) == (version, arm)

    # the variables and answers are the optimizer's examples
    entries = ct_client.list_feedback(task, limit=100)
    assert len(entries) == USERS
    by_trace = {str(e.trace_id): e for e in entries}
    some = next(iter(traces))
    assert by_trace[some].inputs == {"ticket": traces[some][2]}
    assert by_trace[some].output == f"echo: {traces[some][2]}"

    deadline = time.monotonic() + 20
    rollout = ct_client.get_rollout(task)
    while rollout.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
        rollout = ct_client.get_rollout(task)
    candidate_calls = sum(1 for _, arm, _t in traces.values() if arm == "candidate")
    assert rollout.state == "promoted", (rollout.reason, rollout.difference)
    # the decision may land while later scores still arrive: those count no more
    assert 4 <= rollout.active.n <= USERS - candidate_calls
    assert 4 <= rollout.candidate.n <= candidate_calls
    assert ct_client.get_prompt(task).id == v2.id
    print(f"instrument-only rollout: {candidate_calls}/{USERS} calls on the candidate, "
          f"promoted with p={rollout.difference.p_value:.3g}")

    job = ct_client.trigger_optimization(task).job
    done = ct_client.wait_for_job(str(job.id), timeout=30, poll_interval=0.05)
    assert done.is_success, done.error_message
    meta = done.job_metadata or {}
    assert meta["train_size"] + meta["val_size"] == USERS


def test_a_new_task_takes_the_served_default_as_version_1(
    ct_client: CTClient, llm: Any, provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    task = f"served-new-{uuid.uuid4().hex[:10]}"
    default = ct.chat_prompt(V1, config=SETTINGS)
    ct.instrument(openai, client=ct_client, tracer_provider=provider[0])
    try:
        served = ct.prompt(task, default=default, client=ct_client)
        assert (served.id, served.status, served.served_arm) == (None, "default", None)
        reply = llm.chat.completions.create(**served.call_args(ticket="first"))
        assert ct_client.flush(15)
    finally:
        ct.uninstrument(openai)
    [version] = ct_client.list_prompt_versions(task)
    assert (version.version_number, version.messages, version.config) == (
        1, default.messages, default.config
    )
    trace = ct_client.get_trace(reply.ct_trace_id)
    assert trace.prompt_version_id == version.id  # the call ran on what became version 1


def test_model_only_canary_reports_cost_per_call_and_does_not_promote_on_equal_scores(
    ct_client: CTClient, llm: Any, provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Versions A and B differ only in ``config.model``; B's answers score the same. The
    rollout shows B cheaper per call, and with equal scores nothing is promoted."""
    task = f"canary-{uuid.uuid4().hex[:10]}"
    ct_client.create_task(task, messages=V1, config={"model": "gpt-4o", "temperature": 0})
    a = ct_client.get_prompt(task)
    b = ct_client.create_prompt_version(task, messages=V1,
                                        config={"model": "gpt-4o-mini", "temperature": 0})
    ct_client.start_rollout(task, str(b.id), share=0.5, min_samples=4, alpha=0.05,
                            latency_margin=1000.0)
    ct.instrument(openai, client=ct_client, tracer_provider=provider[0])
    try:
        for i in range(USERS):
            served = ct.prompt(task, key=f"user-{i}", client=ct_client)
            reply = llm.chat.completions.create(**served.call_args(ticket=f"ticket {i:02d}"))
            reply.ct_score(0.7)  # the same quality on both models
        assert ct_client.flush(15)
    finally:
        ct.uninstrument(openai)
    rollout = ct_client.get_rollout(task)
    assert rollout.is_running, rollout.reason  # no difference: neither promoted nor rolled back
    assert rollout.active.n + rollout.candidate.n == USERS
    assert (rollout.active.version_id, rollout.candidate.version_id) == (a.id, b.id)
    cost_a, cost_b = rollout.active.cost_per_call_usd, rollout.candidate.cost_per_call_usd
    assert cost_a is not None and cost_b is not None
    # every call has the same tokens; gpt-4o costs (2.50 + 10.00) / 2, mini (0.15 + 0.60) / 2
    assert cost_b < cost_a
    assert cost_a / cost_b == pytest.approx(6.25 / 0.375)
    print(f"model-only canary: cost per call {cost_a:.8f} (gpt-4o) vs {cost_b:.8f} (mini)")
