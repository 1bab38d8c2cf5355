"""The whole loop for an instrument-only application (no ``@ct.task``), on the local server:
its scored calls train a candidate that keeps the chat recipe, the candidate is rolled out to
the same application through ``ct.prompt`` with a sticky arm per user, wins on the
application's scores, is promoted, and reaches the running application (issue 24)."""

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

MESSAGES = [{"role": "system", "content": "Triage for the {{ team }} team."},
            {"role": "user", "content": "Ticket: {{ ticket }}"}]
CONFIG = {"model": "m", "temperature": 0, "max_tokens": 64}
USERS = 24
DEADLINE = 30.0


@pytest.fixture
def app_client(local_server: LocalServer) -> Iterator[CTClient]:
    """The application's client: revalidates served prompts every 0.2 s."""
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  prompt_refresh=0.2) as client:
        yield client


def _judge(answer: str) -> float:
    """The application's own check: an answer grounded by worked examples is better."""
    return 0.9 if "### Examples" in answer else 0.3


def _calls(app: CTClient, llm: Any, task: str, rnd: str) -> dict[str, tuple[str, str | None]]:
    """One scored call per user through ``ct.prompt``: {trace id: (version id, arm)}."""
    made: dict[str, tuple[str, str | None]] = {}
    for i in range(USERS):
        served = ct.prompt(task, key=f"{rnd}-user-{i}", client=app)
        reply = llm.chat.completions.create(
            **served.call_args(team="billing", ticket=f"{rnd} ticket {i}"))
        reply.ct_score(_judge(reply.choices[0].message.content) if rnd == "rollout"
                       else (0.9 if i % 2 else 0.2))
        made[reply.ct_trace_id] = (str(served.id), served.served_arm)
    assert app.flush(15)
    return made


def test_instrument_only_app_optimized_rolled_out_and_promoted(
    app_client: CTClient, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    task = f"loop-{uuid.uuid4().hex[:10]}"
    app_client.create_task(task, messages=MESSAGES, config=CONFIG, feedback_threshold=1000)
    v1 = app_client.get_prompt(task)
    ct.instrument(openai, client=app_client, tracer_provider=provider[0])
    try:
        with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as llm:
            # 1. the application's scored calls are the task's traces and training data
            first = _calls(app_client, llm, task, "start")
            assert {v for v, _ in first.values()} == {str(v1.id)}
            assert len(app_client.list_feedback(task, limit=100)) == USERS

            # 2. optimized: the candidate keeps the recipe and learned from those calls
            job = app_client.trigger_optimization(task).job
            done = app_client.wait_for_job(str(job.id), timeout=DEADLINE, poll_interval=0.05)
            assert done.is_success and done.prompt_version_id is not None, done.error_message
            candidate = next(p for p in app_client.list_prompt_versions(task)
                             if p.id == done.prompt_version_id)
            assert candidate.config == CONFIG
            assert candidate.messages is not None
            assert [m.role for m in candidate.messages] == ["system", "user"]
            assert candidate.messages[0] == v1.messages[0]  # type: ignore[index]
            user = candidate.messages[1].content
            assert user.startswith("Ticket: {{ ticket }}\n\n### Examples")
            assert "start ticket" in user  # demonstrations from the instrumented calls

            # 3. rolled out to the same application, sticky per user
            app_client.start_rollout(task, str(candidate.id), share=0.5, min_samples=4,
                                     alpha=0.2, latency_margin=1000.0)
            deadline = time.monotonic() + DEADLINE  # the app sees the rollout by revalidation
            while ct.prompt(task, client=app_client).served_arm is None:
                assert time.monotonic() < deadline, "the rollout never reached the app"
                time.sleep(0.02)
            second = _calls(app_client, llm, task, "rollout")
    finally:
        ct.uninstrument(openai)

    arms = {arm for _, arm in second.values()}
    assert arms == {"active", "candidate"}, second
    on_candidate = sum(1 for version, _ in second.values() if version == str(candidate.id))
    stored = {str(t.id): t for t in app_client.list_traces(task, limit=200)}
    assert len(stored) == 2 * USERS
    for trace_id, (version, arm) in second.items():
        assert (str(stored[trace_id].prompt_version_id), stored[trace_id].arm) == (version, arm)

    # 4. promoted on the application's scores, and served to the running application
    deadline = time.monotonic() + DEADLINE
    rollout = app_client.get_rollout(task)
    while rollout.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
        rollout = app_client.get_rollout(task)
    assert rollout.state == "promoted", (rollout.reason, rollout.difference)
    # the decision may land while later scores still arrive: those count no more
    assert 4 <= rollout.active.n <= USERS - on_candidate
    assert 4 <= rollout.candidate.n <= on_candidate
    deadline = time.monotonic() + DEADLINE
    while ((served := ct.prompt(task, key="after", client=app_client)).id, served.served_arm) != (
            candidate.id, None):  # the promoted version, no longer one arm of a rollout
        assert time.monotonic() < deadline, "the promotion never reached the app"
        time.sleep(0.02)
    assert (served.served_arm, served.messages, served.config) == (
        None, candidate.messages, CONFIG)
    print(f"\ninstrument-only loop: candidate v{candidate.version_number} from {USERS} calls,"
          f" {on_candidate}/{USERS} rollout calls on it, promoted")
