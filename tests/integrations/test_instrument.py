"""``ct.instrument`` end to end: the registry, the CT pipeline, tasks, and scoring.

Records travel to a real local CT server; spans also land in an in-memory exporter.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.tracing import Attr
from kaizen_server import LocalServer

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

instrument_module = importlib.import_module("kaizen_sdk.instrument")


SUMMARIZE_TICKET = "Summarize this support ticket in one line"
TRIAGE_BUG = "Triage this bug report"


def _messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def ct_client(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        yield client


@pytest.fixture
def oai(standin: StandIn) -> Iterator[Any]:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


Instrument = Callable[..., InMemorySpanExporter]


@pytest.fixture
def instrumented(
    ct_client: CTClient, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[Instrument]:
    """``instrumented(openai, **options)``: ct.instrument with the test client and provider."""
    tracer_provider, exporter = provider
    done: list[ModuleType] = []

    def do(module: ModuleType, **options: Any) -> InMemorySpanExporter:
        options.setdefault("client", ct_client)
        options.setdefault("tracer_provider", tracer_provider)
        ct.instrument(module, **options)
        done.append(module)
        return exporter

    yield do
    for module in done:
        ct.uninstrument(module)


@pytest.fixture
def named() -> Iterator[None]:
    """Name the task of the test's calls: without one, a call outside a task sends nothing."""
    with ct.context(task="instrumented_calls"):
        yield


def _stored(client: CTClient, trace_id: str) -> Any:
    client.flush()
    return client.get_trace(trace_id)


# --- the registry --------------------------------------------------------------------------


def test_other_modules_are_refused_with_the_supported_list() -> None:
    supported = "anthropic, google.genai, litellm, openai"
    with pytest.raises(ValueError, match=rf"supported modules \({supported}\)"):
        ct.instrument(json)
    with pytest.raises(ValueError, match=supported):
        ct.uninstrument(json)
    with pytest.raises(ValueError, match=supported):
        ct.instrument("openai")  # type: ignore[arg-type]


def test_double_instrument_warns_and_changes_nothing(
    instrumented: Instrument, oai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    exporter = instrumented(openai)
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        instrumented(openai)
    assert [r.getMessage() for r in caplog.records] == [
        "openai is already instrumented; this call does nothing."
    ]
    oai.chat.completions.create(model="m", messages=_messages("once"))
    assert len(exporter.get_finished_spans()) == 1


def test_concurrent_instrument_patches_once(
    instrumented: Instrument, oai: Any, caplog: pytest.LogCaptureFixture
) -> None:
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []
    exporter: list[InMemorySpanExporter] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            exporter.append(instrumented(openai))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert errors == []
    assert len([r for r in caplog.records if "already instrumented" in r.getMessage()]) == 7
    oai.chat.completions.create(model="m", messages=_messages("once"))
    assert len(exporter[0].get_finished_spans()) == 1


def test_uninstrument_restores_the_originals(instrumented: Instrument, oai: Any) -> None:
    original_create = vars(openai.resources.chat.completions.Completions)["create"]
    original_completion = litellm.completion
    exporter = instrumented(openai)
    instrumented(litellm)
    assert instrument_module.instrumented(openai) and instrument_module.instrumented(litellm)
    assert vars(openai.resources.chat.completions.Completions)["create"] is not original_create
    ct.uninstrument(openai)
    ct.uninstrument(litellm)
    ct.uninstrument(openai)  # twice is fine
    assert vars(openai.resources.chat.completions.Completions)["create"] is original_create
    assert litellm.completion is original_completion
    assert not instrument_module.instrumented(openai)
    response = oai.chat.completions.create(model="m", messages=_messages("plain"))
    assert not hasattr(response, "ct_trace_id")
    assert exporter.get_finished_spans() == ()


def test_instrument_again_after_uninstrument(instrumented: Instrument, oai: Any) -> None:
    exporter = instrumented(openai)
    ct.uninstrument(openai)
    instrumented(openai)
    oai.chat.completions.create(model="m", messages=_messages("again"))
    assert len(exporter.get_finished_spans()) == 1


# --- records on the CT server, and scoring ---------------------------------------------------


def test_record_reaches_the_ct_server(
    named: None, instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    instrumented(openai)
    response = oai.chat.completions.create(model="m", messages=_messages("hello server"))
    stored = _stored(ct_client, response.ct_trace_id)
    assert str(stored.id) == response.ct_trace_id
    assert stored.prompt_text == "hello server"
    assert stored.response_text == "echo: hello server"
    assert stored.model == "m-resp"
    assert stored.tokens == 2 + 3
    assert stored.latency_ms is not None and stored.latency_ms > 0
    assert stored.task_id == ct_client.get_task("instrumented_calls").id


def test_scoring_a_fresh_trace_id_right_away(
    named: None, instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    instrumented(openai)
    response = oai.chat.completions.create(model="m", messages=_messages("score me"))
    assert response.ct_score(0.8) is not None  # queued after the trace, never raises
    assert ct_client.flush() is True
    scored = ct_client.get_trace(response.ct_trace_id)
    assert (scored.score, scored.scored_by) == (0.8, "sdk")
    # and through a second client, as the reference example does
    with CTClient(base_url=ct_client.settings.base_url,
                  api_key=ct_client.settings.api_key) as other:
        again = other.score(response.ct_trace_id, 0.4, scored_by="human")
    assert (again.score, again.scored_by) == (0.4, "human")


def test_scoring_a_litellm_stream_right_away(
    named: None, instrumented: Instrument, standin: StandIn, ct_client: CTClient
) -> None:
    instrumented(litellm)
    stream = litellm.completion(
        model="openai/m", messages=_messages("stream me"), stream=True,
        api_base=standin.base_url, api_key="sk-test",
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "echo: stream me"
    assert stream.ct_score(1.0) is not None
    assert ct_client.flush() is True
    stored = ct_client.get_trace(stream.ct_trace_id)
    assert (stored.score, stored.response_text) == (1.0, "echo: stream me")


def test_capture_content_off_leaves_text_out_of_the_record(
    named: None, instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    instrumented(openai, capture_content=False)
    response = oai.chat.completions.create(model="m", messages=_messages("secret words"))
    stored = _stored(ct_client, response.ct_trace_id)
    assert stored.prompt_text is None
    assert stored.response_text is None
    assert stored.model == "m-resp"
    assert stored.tokens == 5


def test_kaizen_capture_content_false_leaves_text_out(
    named: None, monkeypatch: pytest.MonkeyPatch, local_server: LocalServer, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter], oai: Any,
) -> None:
    monkeypatch.setenv("KAIZEN_CAPTURE_CONTENT", "false")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        ct.instrument(openai, client=client, tracer_provider=provider[0])
        try:
            response = oai.chat.completions.create(model="m", messages=_messages("hush"))
        finally:
            ct.uninstrument(openai)
        stored = _stored(client, response.ct_trace_id)
    assert (stored.prompt_text, stored.response_text) == (None, None)
    attributes = provider[1].get_finished_spans()[0].attributes or {}
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes


def test_opt_in_puts_content_on_spans(
    monkeypatch: pytest.MonkeyPatch, local_server: LocalServer,
    provider: tuple[TracerProvider, InMemorySpanExporter], oai: Any,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        ct.instrument(openai, client=client, tracer_provider=provider[0])
        try:
            oai.chat.completions.create(model="m", messages=_messages("visible"))
        finally:
            ct.uninstrument(openai)
    attributes = provider[1].get_finished_spans()[0].attributes or {}
    assert "visible" in str(attributes["gen_ai.input.messages"])
    assert "echo: visible" in str(attributes["gen_ai.output.messages"])


def test_abandoned_stream_still_delivers_its_record(
    named: None, instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    import gc

    instrumented(openai)
    stream = oai.chat.completions.create(model="m", messages=_messages("drop me"),
                                         stream=True)
    next(stream)
    next(stream)
    trace_id = stream.ct_trace_id
    del stream
    gc.collect()
    stored = _stored(ct_client, trace_id)
    assert stored.prompt_text == "drop me"
    assert stored.response_text == "echo:"


def test_disabled_tracing_still_returns_usable_responses(
    monkeypatch: pytest.MonkeyPatch, local_server: LocalServer, oai: Any,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    monkeypatch.setenv("KAIZEN_ENABLED", "false")
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        ct.instrument(openai, client=client, tracer_provider=provider[0])
        try:
            response = oai.chat.completions.create(model="m", messages=_messages("off"))
        finally:
            ct.uninstrument(openai)
        assert client.stats().queued == 0
    assert response.choices[0].message.content == "echo: off"
    uuid.UUID(response.ct_trace_id)
    assert response.ct_score(0.5) is None
    assert provider[1].get_finished_spans() == ()


# --- tasks -----------------------------------------------------------------------------------


def _task_of(exporter: InMemorySpanExporter) -> str:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    return str((spans[0].attributes or {})[Attr.TASK_NAME])


def test_module_constant_names_the_task(instrumented: Instrument, oai: Any,
                                        ct_client: CTClient) -> None:
    exporter = instrumented(openai)
    response = oai.chat.completions.create(model="m", messages=_messages(SUMMARIZE_TICKET))
    assert _task_of(exporter) == "summarize_ticket"
    stored = _stored(ct_client, response.ct_trace_id)
    assert stored.task_id == ct_client.get_task("summarize_ticket").id


def test_module_constant_as_system_prompt_names_the_task(
    instrumented: Instrument, oai: Any
) -> None:
    exporter = instrumented(openai)
    oai.chat.completions.create(model="m", messages=[
        {"role": "system", "content": TRIAGE_BUG},
        {"role": "user", "content": "the app crashes on start"},
    ])
    assert _task_of(exporter) == "triage_bug"


def test_task_map_by_constant_name(instrumented: Instrument, oai: Any) -> None:
    exporter = instrumented(openai, task_map={"SUMMARIZE_TICKET": "tickets"})
    oai.chat.completions.create(model="m", messages=_messages(SUMMARIZE_TICKET))
    assert _task_of(exporter) == "tickets"


def test_task_map_by_prompt_text(instrumented: Instrument, oai: Any) -> None:
    exporter = instrumented(openai, task_map={"what is the weather": "weather"})
    oai.chat.completions.create(model="m", messages=_messages("what is the weather"))
    assert _task_of(exporter) == "weather"


def test_an_unknown_prompt_names_no_task_and_sends_no_record(
    instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    exporter = instrumented(openai, task_map={"SOMETHING_ELSE": "x"})
    response = oai.chat.completions.create(model="m", messages=_messages("nothing known"))
    [span] = exporter.get_finished_spans()
    assert Attr.TASK_NAME not in (span.attributes or {})
    assert ct_client.flush() is True
    with pytest.raises(ct.CTNotFoundError):
        ct_client.get_trace(response.ct_trace_id)


def test_task_map_wins_over_a_context_task_and_a_context_over_a_constant(
    instrumented: Instrument, oai: Any
) -> None:
    exporter = instrumented(openai, task_map={"mapped text": "mapped"})
    with ct.context(task="from_context"):
        oai.chat.completions.create(model="m", messages=_messages("mapped text"))
        oai.chat.completions.create(model="m", messages=_messages(SUMMARIZE_TICKET))
    assert [(s.attributes or {})[Attr.TASK_NAME] for s in exporter.get_finished_spans()] == [
        "mapped", "from_context"
    ]


def test_enclosing_task_names_the_call_and_parents_the_span(
    instrumented: Instrument, oai: Any, ct_client: CTClient
) -> None:
    exporter = instrumented(openai, task_map={"SUMMARIZE_TICKET": "not this one"})
    seen: dict[str, Any] = {}

    @ct.task("answer_question", client=ct_client, default_prompt="Answer: {{ q }}")
    def answer(q: str) -> str:
        seen["span"] = trace.get_current_span().get_span_context()
        seen["trace_id"] = ct.current_trace_id()
        response = oai.chat.completions.create(model="m", messages=_messages(SUMMARIZE_TICKET))
        seen["llm_trace_id"] = response.ct_trace_id
        return str(response.choices[0].message.content)

    assert answer("why?") == f"echo: {SUMMARIZE_TICKET}"
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes or {}
    assert attributes[Attr.TASK_NAME] == "answer_question"
    assert attributes[Attr.PARENT_TRACE_ID] == seen["trace_id"]
    assert span.parent is not None and span.parent.span_id == seen["span"].span_id
    stored = _stored(ct_client, seen["llm_trace_id"])
    assert str(stored.parent_trace_id) == seen["trace_id"]
    assert stored.task_id == ct_client.get_task("answer_question").id


async def test_enclosing_async_task_names_a_litellm_call(
    instrumented: Instrument, standin: StandIn, ct_client: CTClient
) -> None:
    exporter = instrumented(litellm)

    @ct.task("async_answer", client=ct_client, default_prompt="Answer")
    async def answer() -> str:
        response = await litellm.acompletion(
            model="openai/m", messages=_messages("async inside"),
            api_base=standin.base_url, api_key="sk-test",
        )
        return str(response.choices[0].message.content)

    assert await answer() == "echo: async inside"
    assert _task_of(exporter) == "async_answer"


# --- the default client ----------------------------------------------------------------------


@pytest.fixture
def no_default_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from kaizen_sdk import _default

    monkeypatch.setattr(_default, "_client", None)
    yield
    client = _default._client
    if client is not None:
        client.close()


def test_default_client_is_used_when_none_is_given(
    named: None, no_default_client: None, local_server: LocalServer, oai: Any,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    client = ct.configure(base_url=local_server.base_url, api_key=local_server.api_key)
    ct.instrument(openai, tracer_provider=provider[0])
    try:
        response = oai.chat.completions.create(model="m", messages=_messages("by default"))
    finally:
        ct.uninstrument(openai)
    assert _stored(client, response.ct_trace_id).prompt_text == "by default"


@pytest.mark.parametrize(
    ("env", "named"),
    [({}, "KAIZEN_API_KEY"), ({"KAIZEN_API_KEY": "k", "KAIZEN_MAX_RETRIES": "abc"},
                             "KAIZEN_MAX_RETRIES")],
)
def test_a_configuration_problem_runs_calls_untraced_and_logs_it_once(
    no_default_client: None, monkeypatch: pytest.MonkeyPatch, oai: Any,
    caplog: pytest.LogCaptureFixture, env: dict[str, str], named: str,
) -> None:
    from kaizen_sdk import _default

    monkeypatch.setattr(_default, "_untraced_logged", set())  # "once" starts afresh
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ct.instrument(openai)  # never raises into the application
    try:
        responses = [
            oai.chat.completions.create(model="m", messages=_messages("untraced"))
            for _ in range(3)
        ]
    finally:
        ct.uninstrument(openai)
    assert [r.choices[0].message.content for r in responses] == ["echo: untraced"] * 3
    assert [r.ct_score(1.0) for r in responses] == [None, None, None]
    lines = [r.getMessage() for r in caplog.records if named in r.getMessage()]
    assert len(lines) == 1 and "untraced" in lines[0]


def test_disabled_without_api_key_runs_calls_untraced(
    no_default_client: None, monkeypatch: pytest.MonkeyPatch, oai: Any
) -> None:
    monkeypatch.setenv("KAIZEN_ENABLED", "false")
    ct.instrument(openai)
    try:
        response = oai.chat.completions.create(model="m", messages=_messages("quiet"))
    finally:
        ct.uninstrument(openai)
    assert response.choices[0].message.content == "echo: quiet"
    assert response.ct_score(1.0) is None


# --- imports ---------------------------------------------------------------------------------


def test_instrument_imports_neither_library_until_given_one() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kaizen_sdk as ct; "
        "from kaizen_sdk.instrument import instrument, uninstrument; "
        "import kaizen_sdk.integrations._common; "
        "print(','.join(m for m in ('openai', 'litellm') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "imports",
    ["import kaizen_sdk.instrument; import kaizen_sdk as ct",
     "import kaizen_sdk as ct; import kaizen_sdk.instrument",
     "from kaizen_sdk import instrument as _m; import kaizen_sdk as ct"],
)
def test_ct_instrument_stays_the_function_after_importing_the_module(imports: str) -> None:
    # a submodule import binds the package attribute of the same name; it must stay the function
    code = f"{imports}; import types; print(isinstance(ct.instrument, types.FunctionType))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "True"


# --- spans nobody can see --------------------------------------------------------------------


def test_without_an_application_provider_no_span_is_built_but_records_are_whole(
    ct_client: CTClient, oai: Any
) -> None:
    from kaizen_sdk import tracing

    pipeline = tracing.pipeline_for(ct_client)
    assert pipeline.provider is None  # no SDK provider at all: nothing to put content on
    probe = pipeline.tracer.start_span("probe")
    assert not probe.is_recording() and probe.get_span_context().is_valid
    ct.instrument(openai, client=ct_client)
    try:
        response = oai.chat.completions.create(
            model="m", messages=_messages(SUMMARIZE_TICKET), temperature=0.1
        )
    finally:
        ct.uninstrument(openai)
    stored = _stored(ct_client, response.ct_trace_id)
    assert (stored.prompt_text, stored.response_text, stored.model, stored.tokens) == (
        SUMMARIZE_TICKET, f"echo: {SUMMARIZE_TICKET}", "m-resp", 7 + 8
    )
    assert stored.task_id == ct_client.get_task("summarize_ticket").id


def test_spans_are_observable_with_a_global_or_given_provider(
    ct_client: CTClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kaizen_sdk import tracing

    pipeline = tracing.pipeline_for(ct_client)
    observable = instrument_module._spans_observable
    assert observable(ct_client, pipeline, None) is False
    assert observable(ct_client, pipeline, TracerProvider()) is True
    monkeypatch.setattr(tracing, "_late_warned", True)  # this test's late provider: no warning
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", TracerProvider())  # the app sets one
    assert observable(ct_client, pipeline, None) is True
