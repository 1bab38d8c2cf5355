"""The anthropic and google-genai integrations with the real client libraries against the
loopback stand-in of their APIs: spans, records, streams, errors, scoring, and a CT record per
call on a real local CT server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from provider_standin import ProviderStandIn

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.instrument import instrumented as instrumented_now
from kaizen_sdk.integrations import _common
from kaizen_sdk.tracing import Attr
from kaizen_server import LocalServer

if TYPE_CHECKING:  # imported by `providers` when this file's tests run
    import anthropic
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

SYSTEM = "You echo what you are told."
TASK = "echo_things"
TASKS = {SYSTEM: TASK}
# the stand-in's token counts are word counts: SYSTEM has 6 words, the reply "echo: " + text
SYSTEM_WORDS = 6


@pytest.fixture(scope="module", autouse=True)
def providers() -> None:
    """anthropic and google-genai, imported when this file's tests run, not when it is
    collected: every xdist worker collects every file, and they cost each 1.5 s of CPU."""
    global anthropic, genai, genai_errors, types, CONFIG
    import anthropic
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types

    CONFIG = types.GenerateContentConfig(system_instruction=SYSTEM)


@pytest.fixture(scope="module")
def standin() -> Iterator[ProviderStandIn]:
    with ProviderStandIn() as server:
        yield server


def _no_sdk_tracing() -> dict[str, Any]:
    # anthropic versions that trace themselves would make the call's span in the global
    # provider (kaizen adopts it; test_provider_coexist.py covers that): here kaizen's own
    return {"open_telemetry": False} if "open_telemetry" in _anthropic_options() else {}


def _anthropic_options() -> set[str]:
    import inspect

    return set(inspect.signature(anthropic.Anthropic.__init__).parameters)


@pytest.fixture
def claude(standin: ProviderStandIn) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=standin.anthropic_url, api_key="test", max_retries=0,
                             **_no_sdk_tracing()) as client:
        yield client


@pytest.fixture
async def aclaude(standin: ProviderStandIn) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=standin.anthropic_url, api_key="test",
                                        max_retries=0, **_no_sdk_tracing()) as client:
        yield client


@pytest.fixture
def gemini(standin: ProviderStandIn) -> Iterator[genai.Client]:
    client = genai.Client(api_key="test",
                          http_options=types.HttpOptions(base_url=standin.gemini_url))
    yield client
    client.close()


def _ask(text: str, model: str = "claude", **more: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 64, "system": SYSTEM,
            "messages": [{"role": "user", "content": text}], **more}


CONFIG: types.GenerateContentConfig  # made by `providers`


class Clean:
    """Checks that a call left no OpenTelemetry context and no in-call mark behind."""

    def __init__(self) -> None:
        self.before = otel_context.get_current()

    def check(self) -> None:
        assert otel_context.get_current() == self.before, "a context was left attached"
        assert not _common.in_instrumented_call(), "kaizen's in-call mark was left set"


# --- anthropic -------------------------------------------------------------------------------


def test_anthropic_span_follows_the_genai_conventions(
    patch: Any, claude: Any, standin: ProviderStandIn
) -> None:
    cap = patch(anthropic, task_map=TASKS)
    clean = Clean()
    message = claude.messages.create(**_ask("hello there"), stop_sequences=["END"])
    clean.check()
    assert message.content[0].text == "echo: hello there"
    span = cap.only_span()
    assert (span.name, span.kind, span.status.status_code) == (
        "chat claude", SpanKind.CLIENT, StatusCode.UNSET)
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "claude-resp",
        "gen_ai.response.id": "msg_standin",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": SYSTEM_WORDS + 2,
        "gen_ai.usage.output_tokens": 3,
        "server.address": "127.0.0.1",
        "server.port": standin.port,
        Attr.TRACE_ID: message.ct_trace_id,
        Attr.TASK_NAME: TASK,
    }


def test_anthropic_record_and_score(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS)
    message = claude.messages.create(**_ask("hello there"))
    record = cap.only_record()
    assert (str(record.trace_id), record.task, record.prompt_text, record.response_text,
            record.model, record.tokens, record.error) == (
        message.ct_trace_id, TASK, "hello there", "echo: hello there", "claude-resp",
        SYSTEM_WORDS + 2 + 3, None)
    assert message.ct_score(0.75) == (message.ct_trace_id, 0.75, "sdk")
    assert message.model_dump()["content"][0]["text"] == "echo: hello there"


def test_anthropic_content_on_spans_only_when_asked(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS, capture_on_spans=True)
    claude.messages.create(**_ask("hello there"))
    attributes = cap.only_span().attributes or {}
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]},
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "echo: hello there"}],
         "finish_reason": "end_turn"},
    ]


def test_anthropic_content_off_keeps_text_out(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS, capture_on_spans=True, capture_content=False)
    claude.messages.create(**_ask("hello there"))
    attributes = cap.only_span().attributes or {}
    assert not any("hello there" in str(v) for v in attributes.values())
    record = cap.only_record()
    assert (record.prompt_text, record.response_text, record.task) == (None, None, TASK)


def test_anthropic_stream(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS)
    clean = Clean()
    stream = claude.messages.create(**_ask("stream me please"), stream=True)
    text = "".join(e.delta.text for e in stream if e.type == "content_block_delta")
    clean.check()
    assert text == "echo: stream me please"
    attributes = cap.only_span().attributes or {}
    assert (attributes["gen_ai.request.stream"], attributes["gen_ai.response.finish_reasons"],
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"],
            attributes[Attr.TRACE_ID]) == (
        True, ("end_turn",), SYSTEM_WORDS + 3, 4, stream.ct_trace_id)
    record = cap.only_record()
    assert (record.response_text, record.tokens) == (text, SYSTEM_WORDS + 3 + 4)
    assert stream.ct_score(1.0) == (stream.ct_trace_id, 1.0, "sdk")


def test_anthropic_stream_failing_midway(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS)
    clean = Clean()
    stream = claude.messages.create(**_ask("break", "midstream-error"), stream=True)
    with pytest.raises(anthropic.APIStatusError):
        for _ in stream:
            pass
    clean.check()
    span = cap.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "APIStatusError"
    record = cap.only_record()
    assert (str(record.trace_id), record.error) == (stream.ct_trace_id, "APIStatusError")


def test_anthropic_http_error(patch: Any, claude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS)
    clean = Clean()
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(**_ask("bad", "error-400"))
    clean.check()
    assert (cap.only_span().attributes or {})["error.type"] == "BadRequestError"
    assert cap.only_record().error == "BadRequestError"


async def test_anthropic_async_call_and_streams(patch: Any, aclaude: Any) -> None:
    cap = patch(anthropic, task_map=TASKS)
    clean = Clean()
    message = await aclaude.messages.create(**_ask("async call"))
    stream = await aclaude.messages.create(**_ask("async stream"), stream=True)
    parts = [e.delta.text async for e in stream if e.type == "content_block_delta"]
    failing = await aclaude.messages.create(**_ask("break", "midstream-error"), stream=True)
    with pytest.raises(anthropic.APIStatusError):
        async for _ in failing:
            pass
    clean.check()
    assert "".join(parts) == "echo: async stream"
    assert [(str(r.trace_id), r.response_text, r.error) for r in cap.records] == [
        (message.ct_trace_id, "echo: async call", None),
        (stream.ct_trace_id, "echo: async stream", None),
        (failing.ct_trace_id, None, "APIStatusError"),
    ]
    assert [(s.name, s.status.status_code) for s in cap.spans()] == [
        ("chat claude", StatusCode.UNSET), ("chat claude", StatusCode.UNSET),
        ("chat midstream-error", StatusCode.ERROR),
    ]


# --- google-genai ----------------------------------------------------------------------------


def test_gemini_span_follows_the_genai_conventions(
    patch: Any, gemini: Any, standin: ProviderStandIn
) -> None:
    cap = patch(genai, task_map=TASKS)
    clean = Clean()
    config = types.GenerateContentConfig(
        system_instruction=SYSTEM, temperature=0.5, top_p=0.9, top_k=4, max_output_tokens=64,
        stop_sequences=["END"], seed=7, response_mime_type="application/json",
    )
    response = gemini.models.generate_content(model="gemini-x", contents="hello there",
                                              config=config)
    clean.check()
    assert response.text == "echo: hello there"
    span = cap.only_span()
    assert (span.name, span.kind, span.status.status_code) == (
        "generate_content gemini-x", SpanKind.CLIENT, StatusCode.UNSET)
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "generate_content",
        "gen_ai.provider.name": "gcp.gemini",
        "gen_ai.system": "gemini",
        "gen_ai.request.model": "gemini-x",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.top_k": 4,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.output.type": "json",
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "gemini-x-resp",
        "gen_ai.response.id": "gemini-standin",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": SYSTEM_WORDS + 2,
        "gen_ai.usage.output_tokens": 3,
        "server.address": "127.0.0.1",
        "server.port": standin.port,
        Attr.TRACE_ID: response.ct_trace_id,
        Attr.TASK_NAME: TASK,
    }


def test_gemini_latest_mode_has_no_gen_ai_system(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS, latest=True)
    gemini.models.generate_content(model="gemini-x", contents="hi", config=CONFIG)
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.provider.name"] == "gcp.gemini"
    assert "gen_ai.system" not in attributes


def test_gemini_record_score_and_content(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS, capture_on_spans=True)
    history = [
        types.Content(role="user", parts=[types.Part(text="first question")]),
        types.Content(role="model", parts=[types.Part(text="first answer")]),
        types.Content(role="user", parts=[types.Part(text="hello there")]),
    ]
    response = gemini.models.generate_content(model="gemini-x", contents=history,
                                              config=CONFIG)
    record = cap.only_record()
    assert (str(record.trace_id), record.task, record.prompt_text, record.response_text,
            record.model, record.tokens) == (
        response.ct_trace_id, TASK, "hello there", "echo: hello there", "gemini-x-resp",
        SYSTEM_WORDS + 6 + 3)
    assert response.ct_score(0.5, scored_by="human") == (response.ct_trace_id, 0.5, "human")
    attributes = cap.only_span().attributes or {}
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
        {"role": "user", "parts": [{"type": "text", "content": "first question"}]},
        {"role": "assistant", "parts": [{"type": "text", "content": "first answer"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]},
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "echo: hello there"}],
         "finish_reason": "stop"},
    ]


def test_gemini_no_content_on_spans_by_default(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS)
    gemini.models.generate_content(model="gemini-x", contents="hello there", config=CONFIG)
    attributes = cap.only_span().attributes or {}
    assert not any("hello there" in str(v) for v in attributes.values())
    assert cap.only_record().prompt_text == "hello there"


def test_gemini_stream(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS)
    clean = Clean()
    stream = gemini.models.generate_content_stream(model="gemini-x",
                                                   contents="stream me please", config=CONFIG)
    text = "".join(chunk.text for chunk in stream)
    clean.check()
    assert text == "echo: stream me please"
    attributes = cap.only_span().attributes or {}
    assert (attributes["gen_ai.request.stream"], attributes["gen_ai.response.finish_reasons"],
            attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"],
            attributes[Attr.TRACE_ID]) == (
        True, ("stop",), SYSTEM_WORDS + 3, 4, stream.ct_trace_id)
    record = cap.only_record()
    assert (record.response_text, record.tokens, record.task) == (
        text, SYSTEM_WORDS + 3 + 4, TASK)


def test_gemini_stream_failing_midway_and_http_error(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS)
    clean = Clean()
    stream = gemini.models.generate_content_stream(model="midstream-error", contents="break",
                                                   config=CONFIG)
    with pytest.raises(genai_errors.ServerError):
        for _ in stream:
            pass
    with pytest.raises(genai_errors.ClientError):
        gemini.models.generate_content(model="error-400", contents="bad", config=CONFIG)
    clean.check()
    assert [(s.name, s.status.status_code, (s.attributes or {})["error.type"])
            for s in cap.spans()] == [
        ("generate_content midstream-error", StatusCode.ERROR, "ServerError"),
        ("generate_content error-400", StatusCode.ERROR, "ClientError"),
    ]
    assert [(r.error, r.response_text) for r in cap.records] == [
        ("ServerError", None), ("ClientError", None)]
    assert str(cap.records[0].trace_id) == stream.ct_trace_id


@pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning")  # google-genai's, not ours
async def test_gemini_async_call_and_streams(patch: Any, gemini: Any) -> None:
    cap = patch(genai, task_map=TASKS)
    clean = Clean()
    response = await gemini.aio.models.generate_content(model="gemini-x", contents="async call",
                                                        config=CONFIG)
    stream = await gemini.aio.models.generate_content_stream(
        model="gemini-x", contents="async stream", config=CONFIG)
    parts = [chunk.text async for chunk in stream]
    failing = await gemini.aio.models.generate_content_stream(
        model="midstream-error", contents="break", config=CONFIG)
    with pytest.raises(genai_errors.ServerError):
        async for _ in failing:
            pass
    clean.check()
    assert "".join(parts) == "echo: async stream"
    assert [(str(r.trace_id), r.response_text, r.error) for r in cap.records] == [
        (response.ct_trace_id, "echo: async call", None),
        (stream.ct_trace_id, "echo: async stream", None),
        (failing.ct_trace_id, None, "ServerError"),
    ]
    await gemini.aio.aclose()


# --- through ct.instrument, to a real CT server ----------------------------------------------


@pytest.fixture
def ct_client(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        yield client


@pytest.fixture
def instrumented(ct_client: CTClient) -> Iterator[Callable[[Any], InMemorySpanExporter]]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    done: list[Any] = []

    def do(module: Any) -> InMemorySpanExporter:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        ct.instrument(module, client=ct_client, task_map=TASKS, tracer_provider=provider)
        done.append(module)
        return exporter

    yield do
    for module in done:
        ct.uninstrument(module)


def test_anthropic_calls_reach_the_ct_server_and_scores_become_feedback(
    instrumented: Any, claude: Any, ct_client: CTClient
) -> None:
    exporter = instrumented(anthropic)
    message = claude.messages.create(**_ask("to the server"))
    stream = claude.messages.create(**_ask("streamed to the server"), stream=True)
    for _ in stream:
        pass
    assert message.ct_score(0.9) is not None
    assert ct_client.flush() is True
    stored = ct_client.get_trace(message.ct_trace_id)
    assert (stored.prompt_text, stored.response_text, stored.model, stored.tokens) == (
        "to the server", "echo: to the server", "claude-resp", SYSTEM_WORDS + 3 + 4)
    assert (stored.score, stored.scored_by) == (0.9, "sdk")
    assert stored.task_id == ct_client.get_task(TASK).id
    streamed = ct_client.get_trace(stream.ct_trace_id)
    assert streamed.response_text == "echo: streamed to the server"
    assert len(exporter.get_finished_spans()) == 2


def test_gemini_calls_reach_the_ct_server_and_scores_become_feedback(
    instrumented: Any, gemini: Any, ct_client: CTClient
) -> None:
    instrumented(genai)
    response = gemini.models.generate_content(model="gemini-x", contents="to the server",
                                              config=CONFIG)
    assert response.ct_score(0.2) is not None
    assert ct_client.flush() is True
    stored = ct_client.get_trace(response.ct_trace_id)
    assert (stored.prompt_text, stored.response_text, stored.model, stored.tokens) == (
        "to the server", "echo: to the server", "gemini-x-resp", SYSTEM_WORDS + 3 + 4)
    assert (stored.score, stored.scored_by) == (0.2, "sdk")
    assert stored.task_id == ct_client.get_task(TASK).id


def test_uninstrument_restores_both_libraries(instrumented: Any, claude: Any) -> None:
    from google.genai import models

    originals = (vars(anthropic.resources.messages.Messages)["create"],
                 vars(models.Models)["generate_content"])
    instrumented(anthropic)
    instrumented(genai)
    assert instrumented_now(anthropic) and instrumented_now(genai)
    ct.uninstrument(anthropic)
    ct.uninstrument(genai)
    assert (vars(anthropic.resources.messages.Messages)["create"],
            vars(models.Models)["generate_content"]) == originals
    message = claude.messages.create(**_ask("untraced"))
    assert not hasattr(message, "ct_trace_id")


def test_kaizen_imports_neither_provider_library_until_given_one() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kaizen_sdk as ct; "
        "from kaizen_sdk.instrument import instrument, uninstrument; "
        "import kaizen_sdk.integrations._common, kaizen_sdk.integrations._methods; "
        "print(','.join(m for m in ('anthropic', 'google.genai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
