"""An instrumented openai call's trace has a cost: the SDK sends the usage split (in the
trace's metadata, which every CT server keeps) and the local server prices it."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]

PROMPT = "Price this call (trace cost)"


@pytest.fixture(scope="module")
def priced_server() -> Iterator[LocalServer]:
    # the stand-in answers as "<model>-resp": a model only a custom price knows
    with LocalServer(llm_prices={"m-resp": (1.0, 2.0)}) as server:
        yield server


def test_an_instrumented_call_is_priced_and_an_unknown_model_is_not(
    priced_server: LocalServer, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    with CTClient(base_url=priced_server.base_url, api_key=priced_server.api_key) as client:
        ct.instrument(openai, client=client, tracer_provider=provider[0],
                      task_map={PROMPT: "trace-cost"})
        try:
            llm = openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0)
            ids = [llm.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPT}]).ct_trace_id
                for model in ("m", "unknown-model")]
        finally:
            ct.uninstrument(openai)
        assert client.flush(10)
        priced, unknown = (client.get_trace(i) for i in ids)
    words = len(PROMPT.split())
    echo = len(f"echo: {PROMPT}".split())
    assert priced.tokens == words + echo
    assert (priced.metadata or {})["usage"] == {"input_tokens": words, "output_tokens": echo}
    assert priced.cost_usd == pytest.approx((words * 1.0 + echo * 2.0) / 1e6)
    assert unknown.tokens == words + echo and unknown.cost_usd is None
