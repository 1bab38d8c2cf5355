"""kaizen beside other GenAI instrumentations of openai, in either order of instrumenting.

For each peer (openai-v2, OpenLLMetry, OpenInference) and each order, ``coexist_app.py`` runs
in a process of its own (a global provider can be set once per process) against the OpenAI
stand-in and the local CT server, and makes one call of each kind: sync, async, streamed,
Responses, a stream that fails midway, an abandoned stream. Each call must give exactly one
LLM span (the peer's, carrying our ``ct.*`` attributes when we can reach it), leave the
OpenTelemetry context as it found it, and give exactly one CT record under its
``ct_trace_id``.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import openai
import pytest
from openai_standin import StandIn

from kaizen_sdk.client import CTClient
from kaizen_sdk.tracing import SCOPE, Attr
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
PEERS = ("openai-v2", "openllmetry", "openinference")
ORDERS = ("theirs-first", "ours-first")
KINDS = (
    "chat", "chat-async", "chat-stream", "chat-stream-async", "responses", "responses-async",
    "responses-stream", "stream-error", "stream-error-async", "stream-abandoned",
)
SCENARIOS = [(peer, order) for peer in PEERS for order in ORDERS]
RESPONSES = ("responses", "responses-async", "responses-stream")
# openai-v2 (2.4b0) does not trace the Responses API: the one span is ours.
OURS = {("openai-v2", order, kind) for order in ORDERS for kind in RESPONSES}
# The peer's span is made where our ``ct.*`` attributes cannot reach it: OpenLLMetry starts its
# Responses span only after the call has returned (ours-first: its patch is outside ours).
UNREACHABLE = {("openllmetry", "ours-first", kind) for kind in RESPONSES}
# openai-v2's stream wrapper has no finalizer: when it is dropped unread (it is outside ours),
# its span never ends and its context stays attached. Ours is gone all the same.
PEER_LEAK = {("openai-v2", "ours-first", "stream-abandoned")}


def _run(server: LocalServer, standin: StandIn, peer: str, order: str, task: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env.update(
        KAIZEN_BASE_URL=server.base_url, KAIZEN_API_KEY=server.api_key,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]),
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "coexist_app.py"), peer, order, standin.base_url, task],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["task"] = task
    with CTClient(base_url=server.base_url, api_key=server.api_key) as reader:
        out["stored"] = [str(t.id) for t in reader.list_traces(task_id=task, limit=100)]
    return out


_RUNS: dict[tuple[str, str], Any] = {}


@pytest.fixture
def run(local_server: LocalServer, standin: StandIn, peer: str, order: str) -> Any:
    """The scenario's output; each scenario runs once (a process) for the whole module."""
    if (peer, order) not in _RUNS:
        task = f"co-{uuid.uuid4().hex[:10]}"
        _RUNS[peer, order] = _run(local_server, standin, peer, order, task)
    return _RUNS[peer, order]


@pytest.mark.parametrize(("peer", "order"), SCENARIOS)
def test_every_call_is_one_record_under_its_ct_trace_id(
    run: Any, peer: str, order: str
) -> None:
    out = run
    assert [c["kind"] for c in out["calls"]] == list(KINDS)
    trace_ids = [c["trace_id"] for c in out["calls"]]
    assert len(set(trace_ids)) == len(KINDS)
    assert sorted(out["stored"]) == sorted(trace_ids)
    assert out["stats"] == {"queued": len(KINDS), "sent": len(KINDS), "dropped": 0}


@pytest.mark.parametrize(("peer", "order"), SCENARIOS)
@pytest.mark.parametrize("kind", KINDS)
def test_each_call_is_one_llm_span_and_leaves_the_context_clean(
    run: Any, peer: str, order: str, kind: str
) -> None:
    call = next(c for c in run["calls"] if c["kind"] == kind)
    assert not call["inside_call"], "kaizen's in-call mark was left set"
    if (peer, order, kind) in PEER_LEAK:
        assert (call["context_same"], call["spans"]) == (False, [])
        return
    assert call["context_same"], "an OpenTelemetry context was left attached"
    spans = call["spans"]
    assert len(spans) == 1, spans
    (span,) = spans
    attributes = span["attributes"]
    if (peer, order, kind) in OURS:
        assert span["scope"] == SCOPE
        assert (span["name"], attributes["gen_ai.operation.name"]) == ("chat m", "chat")
    else:
        assert span["scope"] != SCOPE, span  # the peer's span, never a second one of ours
    if (peer, order, kind) in UNREACHABLE:
        assert Attr.TRACE_ID not in attributes
    else:
        assert attributes[Attr.TRACE_ID] == call["trace_id"]
        assert attributes[Attr.TASK_NAME] == run["task"]


@pytest.mark.parametrize("latest", [False, True])
def test_a_responses_call_is_a_chat_operation_of_the_responses_api(
    patch: Any, standin: StandIn, latest: bool
) -> None:
    # GenAiOperationNameValues has no other name than chat for it; openai.api.type (an
    # openai.* name, so latest mode only) tells the two APIs apart.
    cap = patch(openai, latest=latest)
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as llm:
        llm.responses.create(model="m", input="hello")
        llm.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    spans = cap.spans()
    assert [(s.name, (s.attributes or {})["gen_ai.operation.name"]) for s in spans] == [
        ("chat m", "chat"), ("chat m", "chat"),
    ]
    api_types = [(s.attributes or {}).get("openai.api.type") for s in spans]
    assert api_types == (["responses", "chat_completions"] if latest else [None, None])
