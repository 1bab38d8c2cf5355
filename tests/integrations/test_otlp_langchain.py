"""A framework end to end: a LangChain chain traced by OpenInference's LangChain instrumentation,
exported with the standard OTLP/HTTP exporter to the local CT server, makes complete CT traces
(task, model, tokens, cost, content), and scores on them train the optimizer.

``otlp_langchain_app.py`` runs once, in a process of its own, against the OpenAI stand-in: three
chain invocations inside a span carrying ``ct.task.name`` and one streamed invocation whose task
comes from the server's task map (by service name). Only the ``ChatOpenAI`` spans are LLM calls;
the chain, prompt-template and parser spans (and the application's own span) are dropped.
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
from kaizen_server import LocalServer
from kaizen_server.api.otlp import trace_id_of
from kaizen_server.llm.pricing import PriceTable

pytestmark = [pytest.mark.e2e]

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
TASK = "otlp-langchain-task"
MAPPED = "otlp-langchain-mapped"
TICKETS = ("printer on fire", "vpn drops hourly", "refund not received")
# the stand-in counts words: the system message (6) + the ticket (3) in, "echo: " + ticket out
USAGE = (9, 4)


@pytest.fixture(scope="module")
def run(standin: StandIn) -> Iterator[dict[str, Any]]:
    """The app's output, and the server it exported to (the task map names the streamed call)."""
    with LocalServer(otlp_task_map=f"service:svc-langchain={MAPPED}") as server:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KAIZEN_", "OTEL_", "LANGCHAIN_", "LANGSMITH_"))}
        env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
        proc = subprocess.run(
            [sys.executable, str(HERE / "otlp_langchain_app.py"), standin.base_url,
             server.base_url, server.api_key, *TICKETS],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        out["server"] = server
        yield out


def _client(run: dict[str, Any]) -> CTClient:
    server: LocalServer = run["server"]
    return CTClient(base_url=server.base_url, api_key=server.api_key)


def test_each_chat_model_call_is_one_trace_and_nothing_else_is_stored(
    run: dict[str, Any],
) -> None:
    assert run["results"] == ["SUCCESS"]
    assert run["answers"] == [f"echo: {t}" for t in TICKETS] + ["echo: stream mapped"]
    llm = [s for s in run["spans"] if s["kind"] == "LLM"]
    assert [s["name"] for s in llm] == ["ChatOpenAI"] * 4
    assert len(run["spans"]) > len(llm)  # chains, prompt templates, parsers, the app's span
    expected = {str(trace_id_of(s["trace_id"], s["span_id"])) for s in llm}
    with _client(run) as client:
        stored = client.list_traces(limit=1000)
    assert {str(t.id) for t in stored} == expected


def test_chain_traces_are_complete_with_task_model_tokens_cost_and_content(
    run: dict[str, Any],
) -> None:
    with _client(run) as client:
        traces = client.list_traces(task_id=TASK, limit=100)
        (streamed,) = client.list_traces(task_id=MAPPED, limit=100)
    assert sorted(t.prompt_text or "" for t in traces) == sorted(TICKETS)
    price = PriceTable(environ={}).trace_cost("gpt-4o-mini", input_tokens=USAGE[0],
                                              output_tokens=USAGE[1])
    assert price is not None and price > 0
    for trace in traces:
        assert trace.response_text == f"echo: {trace.prompt_text}"
        assert trace.model == "gpt-4o-mini-resp"
        assert trace.tokens == sum(USAGE)
        assert trace.cost_usd == pytest.approx(price)
        assert trace.latency_ms is not None and trace.latency_ms > 0
        assert trace.error is None
        assert (trace.metadata or {})["otlp"]["span_name"] == "ChatOpenAI"
    # streamed: the task from the map, the usage from the stream's last chunk
    assert (streamed.prompt_text, streamed.response_text) == ("stream mapped",
                                                              "echo: stream mapped")
    assert streamed.tokens == 6 + 2 + 3 and streamed.cost_usd is not None


def test_scores_on_chain_traces_train_the_optimizer(run: dict[str, Any]) -> None:
    with _client(run) as client:
        traces = client.list_traces(task_id=TASK, limit=100)
        for trace, score in zip(sorted(traces, key=lambda t: t.prompt_text or ""),
                                (0.9, 0.8, 0.3), strict=True):
            assert client.score(str(trace.id), score).score == score
        entries = client.list_feedback(task_id=TASK, limit=100)
        assert {str((e.metadata or {})["trace_id"]) for e in entries} == {
            str(t.id) for t in traces}
        assert sorted(e.score for e in entries) == [0.3, 0.8, 0.9]
        assert {(e.inputs or {}).get("prompt") for e in entries} == set(TICKETS)
        assert all(e.source == "trace_score" for e in entries)
        job = client.trigger_optimization(TASK).job
        done = client.wait_for_job(str(job.id), timeout=60, poll_interval=0.05)
    assert done.is_success, done.error_message
    meta = done.job_metadata or {}
    assert meta["train_size"] + meta["val_size"] == 3  # exactly the three scored chain calls
    assert meta["demo_feedback_ids"]
    assert set(meta["demo_feedback_ids"]) <= {str(e.id) for e in entries}
    assert done.prompt_version_id is not None
