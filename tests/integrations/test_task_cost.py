"""A ``@ct.task`` call has a cost: the model and token split of the LLM calls it makes (through
an instrumented client, or reported with ``ct.report_usage``) travel on its trace, and the
local server prices them. Real HTTP to a `LocalServer`, the openai client against the
loopback stand-in, which answers as model ``"<model>-resp"`` with one token per word."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import CTValidationError
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]

# USD per million tokens: input, output, cached input
PRICES = {
    "a-resp": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5},
    "b-resp": (10.0, 20.0),
    "reported": {"input_per_mtok": 3.0, "output_per_mtok": 7.0, "cached_input_per_mtok": 0.25},
}


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


def _words(text: str) -> int:
    return len(text.split())


def _ask(llm: openai.OpenAI, model: str, text: str) -> Any:
    return llm.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def test_a_decorated_call_carries_its_llm_calls_usage_and_is_priced(
    client: CTClient, standin: StandIn, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    llm = openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0)
    seen: dict[str, Any] = {}
    questions = ("what does the ticket say", "and how long is it")

    @ct.task("task-cost-one-model", client=client, default_prompt="Answer {{ q }}")
    def answer(q: str) -> str:
        seen["trace"] = ct.current_trace_id()
        seen["children"] = [_ask(llm, "a", text).ct_trace_id for text in questions]
        return q

    answer("q")
    assert client.flush(10)
    stored = client.get_trace(seen["trace"])
    inputs = sum(_words(q) for q in questions)
    outputs = sum(_words(f"echo: {q}") for q in questions)
    assert stored.model == "a-resp"
    assert stored.tokens == inputs + outputs
    assert (stored.metadata or {})["usage"] == {"input_tokens": inputs, "output_tokens": outputs}
    assert stored.cost_usd == pytest.approx((inputs * 1.0 + outputs * 2.0) / 1e6, rel=1e-12)
    children = [client.get_trace(i) for i in seen["children"]]  # each LLM call keeps its own
    assert [str(c.parent_trace_id) for c in children] == [seen["trace"]] * 2
    assert sum(c.cost_usd or 0 for c in children) == pytest.approx(stored.cost_usd, rel=1e-12)


def test_calls_to_several_models_are_each_priced_at_their_own_rate(
    client: CTClient, standin: StandIn, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    llm = openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0)
    seen: dict[str, Any] = {}

    @ct.task("task-cost-two-models", client=client, default_prompt="Route {{ q }}")
    def route(q: str) -> str:
        seen["trace"] = ct.current_trace_id()
        _ask(llm, "a", "draft an answer")
        _ask(llm, "b", "check the draft please")
        return q

    route("q")
    assert client.flush(10)
    stored = client.get_trace(seen["trace"])
    a_in, a_out = 3, _words("echo: draft an answer")
    b_in, b_out = 4, _words("echo: check the draft please")
    assert stored.model == "a-resp"  # the first model; the cost prices each one
    assert stored.tokens == a_in + a_out + b_in + b_out
    assert stored.cost_usd == pytest.approx(
        (a_in * 1.0 + a_out * 2.0 + b_in * 10.0 + b_out * 20.0) / 1e6, rel=1e-12)


def test_reported_usage_prices_cached_tokens_at_the_cached_rate(
    client: CTClient, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    seen: dict[str, Any] = {}

    @ct.task("task-cost-reported", client=client, default_prompt="Own client {{ q }}")
    def own_client(q: str) -> str:
        seen["trace"] = ct.current_trace_id()
        assert ct.report_usage("reported", input_tokens=1000, output_tokens=100,
                               cached_input_tokens=600)
        assert ct.report_usage("reported", input_tokens=500, output_tokens=50)
        return q

    own_client("q")
    assert client.flush(10)
    stored = client.get_trace(seen["trace"])
    assert stored.model == "reported"
    assert stored.tokens == 1650
    assert (stored.metadata or {})["usage"] == {
        "input_tokens": 1500, "output_tokens": 150, "cached_input_tokens": 600}
    # 900 fresh input tokens at $3, 600 cached at $0.25, 150 output at $7 (per million)
    assert stored.cost_usd == pytest.approx((900 * 3.0 + 600 * 0.25 + 150 * 7.0) / 1e6,
                                            rel=1e-12)


def test_report_usage_outside_a_task_sends_nothing_and_checks_its_counts() -> None:
    assert ct.report_usage("reported", input_tokens=1, output_tokens=1) is False
    with pytest.raises(CTValidationError, match="output_tokens"):
        ct.report_usage("reported", input_tokens=1, output_tokens=-1)
    with pytest.raises(CTValidationError, match="cached_input_tokens"):
        ct.report_usage("reported", input_tokens=1, output_tokens=1,
                        cached_input_tokens=1.5)  # type: ignore[arg-type]


def test_a_stream_read_inside_the_call_counts_toward_it(client: CTClient, standin: StandIn) -> None:
    llm = openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0)
    seen: dict[str, Any] = {}
    question = "stream the answer please"

    @ct.task("task-cost-stream", client=client, default_prompt="Stream {{ q }}")
    def streamed(q: str) -> str:
        seen["trace"] = ct.current_trace_id()
        stream = llm.chat.completions.create(
            model="a", messages=[{"role": "user", "content": question}], stream=True,
            stream_options={"include_usage": True})
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    assert streamed("q") == f"echo: {question}"
    assert client.flush(10)
    stored = client.get_trace(seen["trace"])
    inputs, outputs = _words(question), _words(f"echo: {question}")
    assert (stored.model, stored.tokens) == ("a-resp", inputs + outputs)
    assert stored.cost_usd == pytest.approx((inputs * 1.0 + outputs * 2.0) / 1e6, rel=1e-12)
