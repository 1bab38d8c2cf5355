"""Third-party GenAI instrumentations of openai, exporting with the standard OTLP/HTTP exporter
to the local CT server, make complete CT traces (task, model, tokens, content, cost, latency,
error), and a score on one becomes scored feedback.

For each instrumentation of openai (openai-v2, OpenLLMetry, OpenInference), ``otlp_app.py``
runs in a process of its own against the OpenAI stand-in: a chat call inside a span carrying
``ct.task.name``, a streamed call whose task comes from the server's task map (by service
name), a call that fails, and an embeddings call (not an LLM call: dropped). OpenLLMetry's and
OpenInference's anthropic instrumentations run ``otlp_anthropic_app.py`` (the real
``anthropic`` client against a Messages API stand-in in that process).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from openai_standin import StandIn

from kaizen_sdk.client import CTClient
from kaizen_sdk.models import TraceResult
from kaizen_server import LocalServer
from kaizen_server.api.otlp import trace_id_of
from kaizen_server.llm.pricing import PriceTable

pytestmark = [pytest.mark.e2e]

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
PEERS = ("openai-v2", "openllmetry", "openinference")
# each peer's content switch: openai-v2 keeps content on spans only when asked
ENV = {
    "openai-v2": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
                  "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"},
    "openllmetry": {"TRACELOOP_TRACE_CONTENT": "true"},
    "openinference": {},
}
# the stand-in's usage: system (6 words) + "say tuned" in, "echo: say tuned" out
CHAT_USAGE = (8, 3)


@pytest.fixture(scope="module")
def otlp_server() -> Iterator[LocalServer]:
    """A server of this module's own, mapping each app's service to a task."""
    task_map = ",".join(f"service:svc-{peer}=otlp-{peer}-mapped" for peer in PEERS)
    with LocalServer(otlp_task_map=task_map) as server:
        yield server


_RUNS: dict[str, Any] = {}


@pytest.fixture
def run(otlp_server: LocalServer, standin: StandIn, peer: str) -> Any:
    """The app's output and what the server stored; each peer runs once for the module."""
    if peer not in _RUNS:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KAIZEN_", "OTEL_", "TRACELOOP_"))}
        env.update(ENV[peer], PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
        proc = subprocess.run(
            [sys.executable, str(HERE / "otlp_app.py"), peer, standin.base_url,
             otlp_server.base_url, otlp_server.api_key],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        with CTClient(base_url=otlp_server.base_url, api_key=otlp_server.api_key) as reader:
            out["task"] = reader.list_traces(task_id=f"otlp-{peer}-task", limit=100)
            out["mapped"] = reader.list_traces(task_id=f"otlp-{peer}-mapped", limit=100)
            out["all"] = [t for t in reader.list_traces(limit=1000)
                          if (t.metadata or {}).get("otlp", {}).get("service") == f"svc-{peer}"]
        _RUNS[peer] = out
    return _RUNS[peer]


def _llm_spans(out: Any) -> list[dict[str, str]]:
    return [s for s in out["spans"]
            if "embedding" not in s["name"].lower() and "request" not in s["name"]]


def _by_prompt(traces: list[TraceResult], prompt: str) -> TraceResult:
    found = [t for t in traces if t.prompt_text == prompt and not t.error]
    assert len(found) == 1, traces
    return found[0]


@pytest.mark.parametrize("peer", PEERS)
def test_each_llm_span_is_one_trace_under_a_deterministic_id(run: Any, peer: str) -> None:
    assert run["results"] == ["SUCCESS"]
    assert len(_llm_spans(run)) == 3
    expected = {str(trace_id_of(s["trace_id"], s["span_id"])) for s in _llm_spans(run)}
    # the embeddings call and the enclosing spans are not LLM calls: nothing stored for them
    assert {str(t.id) for t in run["all"]} == expected
    assert len(run["task"]) == 2 and len(run["mapped"]) == 1


@pytest.mark.parametrize("peer", PEERS)
def test_a_chat_trace_is_complete_with_its_cost(run: Any, peer: str) -> None:
    trace = _by_prompt(run["task"], "say tuned")
    assert trace.response_text == "echo: say tuned"
    assert trace.model == "gpt-4o-mini-resp"
    assert trace.tokens == sum(CHAT_USAGE)
    assert trace.latency_ms is not None and trace.latency_ms > 0
    expected = PriceTable(environ={}).trace_cost("gpt-4o-mini", input_tokens=CHAT_USAGE[0],
                                                 output_tokens=CHAT_USAGE[1])
    assert expected is not None and expected > 0
    assert trace.cost_usd == pytest.approx(expected)
    assert trace.error is None


@pytest.mark.parametrize("peer", PEERS)
def test_the_task_map_and_the_failed_call(run: Any, peer: str) -> None:
    (streamed,) = run["mapped"]
    assert (streamed.prompt_text, streamed.response_text) == ("stream mapped",
                                                              "echo: stream mapped")
    assert streamed.tokens == 5 and streamed.cost_usd is not None
    (failed,) = [t for t in run["task"] if t.error]
    assert failed.prompt_text == "say tuned" and failed.response_text is None
    assert failed.cost_usd is None  # no usage: no cost, never a guessed one


@pytest.mark.parametrize("peer", PEERS)
def test_a_score_on_an_otlp_trace_becomes_scored_feedback(
    run: Any, peer: str, otlp_server: LocalServer
) -> None:
    trace = _by_prompt(run["task"], "say tuned")
    with CTClient(base_url=otlp_server.base_url, api_key=otlp_server.api_key) as client:
        scored = client.score(str(trace.id), 0.9)
        assert scored.score == 0.9
        feedback = client.list_feedback(task_id=f"otlp-{peer}-task", limit=100)
    (entry,) = feedback  # the task's only feedback: training data for the optimizer
    assert (entry.source, entry.score) == ("trace_score", 0.9)
    assert (entry.metadata or {})["trace_id"] == str(trace.id)
    assert entry.inputs == {"prompt": "say tuned"} and entry.output == "echo: say tuned"


CLAUDE_PEERS = ("openllmetry", "openinference")


@pytest.mark.parametrize("peer", CLAUDE_PEERS)
def test_anthropic_instrumentations_make_complete_traces(
    otlp_server: LocalServer, peer: str
) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAIZEN_", "OTEL_", "TRACELOOP_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    proc = subprocess.run(
        [sys.executable, str(HERE / "otlp_anthropic_app.py"), peer, otlp_server.base_url,
         otlp_server.api_key],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["results"] == ["SUCCESS"]
    (llm,) = [s for s in out["spans"] if s["name"] != "handle request"]
    with CTClient(base_url=otlp_server.base_url, api_key=otlp_server.api_key) as client:
        (trace,) = client.list_traces(task_id=f"otlp-{peer}-claude")
        assert str(trace.id) == str(trace_id_of(llm["trace_id"], llm["span_id"]))
        assert (trace.prompt_text, trace.response_text) == ("say claude", "echo: say claude")
        assert (trace.model, trace.tokens) == ("claude-3-5-haiku-20241022", 10)
        expected = PriceTable(environ={}).trace_cost("claude-3-5-haiku-20241022",
                                                     input_tokens=7, output_tokens=3)
        assert expected is not None and trace.cost_usd == pytest.approx(expected)
        client.score(str(trace.id), 0.4)
        (entry,) = client.list_feedback(task_id=f"otlp-{peer}-claude")
    assert (entry.source, entry.score, entry.output) == ("trace_score", 0.4, "echo: say claude")
