"""The model-only canary, end to end: versions A and B of a task differ only in
``config.model``; a ``@ct.task`` function calls the real openai client (instrumented) with the
served version's call arguments against the loopback stand-in, and the decorated traces carry
the calls' cost. Real HTTP to a `LocalServer` that knows both models' prices.

- equal scores: the canary's cost per call shows B cheaper (exactly, from the price table) and
  the always-valid test promotes nothing;
- B better: it is promoted;
- B better but dearer than the cost guard allows: it is rolled back, the guard named.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai_standin import StandIn, reply_for, words
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.models import Rollout
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]

# the stand-in answers as "<model>-resp": USD per million input, output tokens
PRICES = {"big-resp": (2.50, 10.00), "small-resp": (0.15, 0.60)}
SYSTEM = "Answer briefly."
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "{{ ticket }}"}]
USERS = 40  # at share 0.5 each arm gets MIN_SAMPLES scores but with chance < 1e-5
MIN_SAMPLES = 6


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(llm_prices=PRICES) as running:
        yield running


@pytest.fixture
def client(
    server: LocalServer, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[CTClient]:
    with CTClient(base_url=server.base_url, api_key=server.api_key) as ct_client:
        ct.instrument(openai, client=ct_client, tracer_provider=provider[0])
        try:
            yield ct_client
        finally:
            ct.uninstrument(openai)


def _per_call(model: str, ticket: str) -> float:
    """What one call costs on *model* (every ticket has the same number of words)."""
    per_in, per_out = PRICES[f"{model}-resp"]
    return (words(SYSTEM) + words(ticket)) * per_in / 1e6 + words(reply_for(ticket)) * per_out / 1e6


def _canary(
    client: CTClient, standin: StandIn, *, active_model: str, candidate_model: str,
    candidate_score: float, **options: Any,
) -> tuple[str, str, Rollout]:
    """Run USERS decorated calls through a rollout of *candidate_model* against
    *active_model*; score the active's answers 0.7 and the candidate's *candidate_score*.
    Returns (active version id, candidate version id, the rollout once it has every score)."""
    task = f"canary-{uuid.uuid4().hex[:10]}"
    client.create_task(task, messages=MESSAGES, config={"model": active_model, "temperature": 0})
    a = client.get_prompt(task)
    b = client.create_prompt_version(task, messages=MESSAGES,
                                     config={"model": candidate_model, "temperature": 0})
    client.start_rollout(task, str(b.id), share=0.5, min_samples=MIN_SAMPLES,
                         latency_margin=1000.0, **options)  # loopback latencies are noise
    llm = openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0)

    @ct.task(task, client=client, assign_by="user")
    def answer(ticket: str, user: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        reply = llm.chat.completions.create(**prompt.call_args(ticket=ticket))
        return str(reply.choices[0].message.content)

    models: list[str] = []
    for i in range(USERS):
        _, run = answer.call(f"ticket {i:02d}", user=f"user-{i}")
        assert run.prompt is not None
        on_candidate = run.prompt.id == b.id
        models.append(str((run.prompt.config or {})["model"]))
        assert run.score(candidate_score if on_candidate else 0.7) is not None
    assert client.flush(15)
    assert sorted(m for m in set(models)) == sorted({active_model, candidate_model})
    deadline = time.monotonic() + 20
    rollout = client.get_rollout(task)
    while (rollout.is_running and rollout.active.n + rollout.candidate.n < USERS
           and time.monotonic() < deadline):
        time.sleep(0.05)
        rollout = client.get_rollout(task)
    counts = (models.count(active_model), models.count(candidate_model))
    if rollout.is_running:
        assert (rollout.active.n, rollout.candidate.n) == counts
    else:
        # a decision can land while later scores are still arriving; those count no more
        assert MIN_SAMPLES <= rollout.active.n <= counts[0]
        assert MIN_SAMPLES <= rollout.candidate.n <= counts[1]
    return str(a.id), str(b.id), rollout


def test_equal_scores_show_the_cheaper_model_and_promote_nothing(
    client: CTClient, standin: StandIn
) -> None:
    _a, _b, rollout = _canary(client, standin, active_model="big", candidate_model="small",
                              candidate_score=0.7)
    assert rollout.is_running, rollout.reason  # no difference: neither promoted nor rolled back
    assert not rollout.difference.significant
    assert rollout.active.cost_per_call_usd == pytest.approx(_per_call("big", "ticket 00"),
                                                             rel=1e-12)
    assert rollout.candidate.cost_per_call_usd == pytest.approx(
        _per_call("small", "ticket 00"), rel=1e-12)
    ratio = rollout.guards.cost_ratio
    assert ratio == pytest.approx(_per_call("small", "x 00") / _per_call("big", "x 00"))
    print(f"model-only canary: ${rollout.active.cost_per_call_usd:.8f} (big) vs "
          f"${rollout.candidate.cost_per_call_usd:.8f} (small) per call, ratio {ratio:.4f}")


def test_a_cheaper_model_that_scores_better_is_promoted_within_its_cost_guard(
    client: CTClient, standin: StandIn
) -> None:
    _a, b, rollout = _canary(client, standin, active_model="big", candidate_model="small",
                             candidate_score=0.9, max_cost_ratio=1.0)
    assert rollout.state == "promoted", (rollout.reason, rollout.difference)
    assert rollout.reason == "candidate scores higher (always-valid test)"
    assert rollout.guards.max_cost_ratio == 1.0 and rollout.guards.breached == []
    assert str(client.get_prompt(str(rollout.task_id)).id) == b


def test_a_dearer_model_that_scores_better_is_rolled_back_by_the_cost_guard(
    client: CTClient, standin: StandIn
) -> None:
    a, b, rollout = _canary(client, standin, active_model="small", candidate_model="big",
                            candidate_score=0.9, max_cost_ratio=2.0)
    assert rollout.state == "rolled_back", (rollout.reason, rollout.difference)
    assert rollout.reason == "guard breached: cost_per_call"
    assert rollout.guards.breached == ["cost_per_call"]
    assert rollout.guards.cost_ratio == pytest.approx(
        _per_call("big", "x 00") / _per_call("small", "x 00"))
    assert rollout.audit[-1].event == "rolled_back"
    assert (rollout.audit[-1].stats or {})["cost_ratio"] == pytest.approx(
        rollout.guards.cost_ratio)
    assert str(client.get_prompt(str(rollout.task_id)).id) == a
    assert [v.status for v in client.list_prompt_versions(str(rollout.task_id))
            if str(v.id) == b] == ["rejected"]
