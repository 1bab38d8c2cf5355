"""Only people and ``default_prompt`` make prompt versions; a call's text never does.

Each test runs against a fresh local CT server (its own temporary database), so "no version"
and "no ``default`` task" are exact statements about that server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import CTNotFoundError
from kaizen_sdk.integrations import _task
from kaizen_sdk.tracing import Attr
from kaizen_server import LocalServer

CLASSIFY = "Classify the sentiment of this review: {text}"
TICKETS = [
    "My card 4111 1111 1111 1111 was charged twice, fix it now",
    "Parcel 88231 never arrived, I want a refund",
    "The app logs me out every five minutes",
]


@pytest.fixture
def fresh() -> Iterator[CTClient]:
    """A client of a fresh local CT server (nothing stored yet)."""
    with LocalServer() as server, CTClient(
        base_url=server.base_url, api_key=server.api_key
    ) as client:
        yield client


@pytest.fixture
def oai(standin: StandIn) -> Iterator[Any]:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
def instrumented(
    fresh: CTClient, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[InMemorySpanExporter]:
    tracer_provider, exporter = provider
    ct.instrument(openai, client=fresh, tracer_provider=tracer_provider)
    yield exporter
    ct.uninstrument(openai)


def _ask(oai: Any, text: str) -> Any:
    return oai.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])


def test_a_decorated_task_calling_an_instrumented_client_gets_its_default_as_version_1(
    fresh: CTClient, instrumented: InMemorySpanExporter, oai: Any
) -> None:
    default = "Answer the customer briefly: {{ ticket }}"

    @ct.task("answer_ticket", client=fresh, default_prompt=default)
    def answer(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        out = _ask(oai, prompt.render(ticket=ticket))
        return str(out.choices[0].message.content)

    runs = [answer.call(ticket)[1] for ticket in TICKETS]
    assert fresh.flush() is True

    assert [t.name for t in fresh.list_tasks()] == ["answer_ticket"]
    versions = fresh.list_prompt_versions("answer_ticket")
    assert [(v.version_number, v.status, v.prompt_text) for v in versions] == [
        (1, "active", default)
    ]
    # every call is stored: the task's own trace on its template, the LLM call beneath it
    # with the rendered text as the call's data (never a version)
    traces = fresh.list_traces("answer_ticket")
    assert len(traces) == 2 * len(TICKETS)
    children = {str(t.parent_trace_id): t for t in traces if t.parent_trace_id is not None}
    assert set(children) == {run.trace_id for run in runs}
    for run, ticket in zip(runs, TICKETS, strict=True):
        child = children[run.trace_id]
        assert child.prompt_text == f"Answer the customer briefly: {ticket}"
        assert child.prompt_version_id is None
        assert fresh.get_trace(run.trace_id).prompt_text == default
    assert {v.prompt_text for v in versions}.isdisjoint(t.prompt_text for t in traces
                                                        if t.parent_trace_id is not None)
    # the LLM span is a child of the task's span
    spans = instrumented.get_finished_spans()
    llm = [s for s in spans if s.name.startswith("chat")]
    assert len(llm) == len(TICKETS)
    assert {s.attributes[Attr.TASK_NAME] for s in llm} == {"answer_ticket"}  # type: ignore[index]
    assert all(s.parent is not None for s in llm)


def test_instrument_only_calls_with_format_prompts_make_no_task_and_no_version(
    fresh: CTClient, instrumented: InMemorySpanExporter, oai: Any,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_task, "_unattributed_logged", False)  # "once" starts afresh
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk.instrument"):
        responses = [_ask(oai, CLASSIFY.format(text=t)) for t in TICKETS]
        assert responses[0].ct_score(0.5) is None  # nothing was sent: nothing to score
    assert fresh.flush() is True
    assert fresh.list_tasks() == []  # no silent "default" task, no version anywhere
    with pytest.raises(CTNotFoundError):
        fresh.get_task("default")
    for response in responses:
        with pytest.raises(CTNotFoundError):
            fresh.get_trace(response.ct_trace_id)
    # still traced: one span each, with a CT trace id and no task
    spans = instrumented.get_finished_spans()
    assert len(spans) == len(TICKETS)
    assert all(Attr.TASK_NAME not in (s.attributes or {}) for s in spans)
    assert [s.attributes[Attr.TRACE_ID] for s in spans] == [  # type: ignore[index]
        r.ct_trace_id for r in responses
    ]
    said = [r.getMessage() for r in caplog.records if "no task names it" in r.getMessage()]
    assert len(said) == 1  # once per process


def test_a_context_task_names_instrument_only_calls_without_making_a_version(
    fresh: CTClient, instrumented: InMemorySpanExporter, oai: Any
) -> None:
    with ct.context(task="sentiment", user_id="u-1"):
        responses = [_ask(oai, CLASSIFY.format(text=t)) for t in TICKETS]
    outside = _ask(oai, CLASSIFY.format(text="outside the block"))
    assert fresh.flush() is True
    assert [t.name for t in fresh.list_tasks()] == ["sentiment"]
    assert fresh.list_prompt_versions("sentiment") == []
    with pytest.raises(CTNotFoundError):
        fresh.get_prompt("sentiment")
    stored = fresh.list_traces("sentiment")
    assert sorted(str(t.id) for t in stored) == sorted(r.ct_trace_id for r in responses)
    assert {t.prompt_text for t in stored} == {CLASSIFY.format(text=t) for t in TICKETS}
    with pytest.raises(CTNotFoundError):
        fresh.get_trace(outside.ct_trace_id)


def test_a_decorated_task_inside_a_context_task_keeps_its_own_name(
    fresh: CTClient, instrumented: InMemorySpanExporter, oai: Any
) -> None:
    @ct.task("inner", client=fresh, default_prompt="Say: {{ x }}")
    def inner(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return str(_ask(oai, prompt.render(x=x)).choices[0].message.content)

    with ct.context(task="outer"):
        inner("hi")
    assert fresh.flush() is True
    assert [t.name for t in fresh.list_tasks()] == ["inner"]
    assert [v.prompt_text for v in fresh.list_prompt_versions("inner")] == ["Say: {{ x }}"]
