"""The openai integration against the stand-in server: spans, records, streams, responses."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import pickle
import uuid
import warnings
from typing import Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from kaizen_sdk.tracing import Attr

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "hello there"},
]
# stand-in token counts: prompt = words of all messages, completion = words of the reply
PROMPT_TOKENS = 5
REPLY = "echo: hello there"
COMPLETION_TOKENS = 3

SUMMARIZE_TICKET = "Summarize this ticket please"


@pytest.fixture
def client(standin: StandIn) -> Any:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(standin: StandIn) -> Any:
    async with openai.AsyncOpenAI(
        base_url=standin.base_url, api_key="sk-test", max_retries=0
    ) as c:
        yield c


def _chat_attributes(standin: StandIn, *, stream: bool, usage: bool = True) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.request.stream": stream,
        "gen_ai.response.model": "m-resp",
        "gen_ai.response.id": "chatcmpl-standin",
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "127.0.0.1",
        "server.port": standin.port,
        Attr.TASK_NAME: "llm_calls",
    }
    if usage:
        expected["gen_ai.usage.input_tokens"] = PROMPT_TOKENS
        expected["gen_ai.usage.output_tokens"] = COMPLETION_TOKENS
    return expected


def _assert_uuid(value: str) -> None:
    assert str(uuid.UUID(value)) == value
    assert uuid.UUID(value).version == 7


# --- chat completions, sync ------------------------------------------------------------------


def test_chat_span_follows_genai_conventions(patch: Any, client: Any, standin: StandIn) -> None:
    cap = patch(openai)
    response = client.chat.completions.create(
        model="m", messages=MESSAGES, temperature=0.5, max_tokens=20, top_p=0.9
    )
    span = cap.only_span()
    assert span.name == "chat m"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    expected = _chat_attributes(standin, stream=False)
    expected.update({
        "gen_ai.request.temperature": 0.5,
        "gen_ai.request.max_tokens": 20,
        "gen_ai.request.top_p": 0.9,
        Attr.TRACE_ID: response.ct_trace_id,
    })
    assert dict(span.attributes or {}) == expected
    _assert_uuid(response.ct_trace_id)


def test_chat_record_carries_prompt_response_model_tokens(
    patch: Any, client: Any
) -> None:
    cap = patch(openai)
    response = client.chat.completions.create(model="m", messages=MESSAGES)
    record = cap.only_record()
    assert str(record.trace_id) == response.ct_trace_id
    assert record.task == "llm_calls"
    assert record.prompt_text == "hello there"
    assert record.response_text == REPLY
    assert record.model == "m-resp"
    assert record.tokens == PROMPT_TOKENS + COMPLETION_TOKENS
    assert record.error is None
    assert record.parent_trace_id is None
    assert record.latency_ms is not None and record.latency_ms > 0


def test_parameters_not_given_are_not_on_the_span(patch: Any, client: Any) -> None:
    cap = patch(openai)
    client.chat.completions.create(model="m", messages=MESSAGES)
    attributes = cap.only_span().attributes or {}
    for key in ("gen_ai.request.temperature", "gen_ai.request.max_tokens",
                "gen_ai.request.top_p"):
        assert key not in attributes


def test_max_completion_tokens_counts_as_max_tokens(patch: Any, client: Any) -> None:
    cap = patch(openai)
    client.chat.completions.create(model="m", messages=MESSAGES, max_completion_tokens=7)
    assert (cap.only_span().attributes or {})["gen_ai.request.max_tokens"] == 7


def test_no_message_content_on_spans_by_default(patch: Any, client: Any) -> None:
    cap = patch(openai)
    client.chat.completions.create(model="m", messages=MESSAGES)
    attributes = cap.only_span().attributes or {}
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    assert not any("hello there" in str(v) for v in attributes.values())


def test_message_content_on_spans_when_the_application_opts_in(
    patch: Any, client: Any
) -> None:
    cap = patch(openai, capture_on_spans=True)
    client.chat.completions.create(model="m", messages=MESSAGES)
    attributes = cap.only_span().attributes or {}
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "system", "parts": [{"type": "text", "content": "You are terse."}]},
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]},
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": REPLY}],
         "finish_reason": "stop"},
    ]


def test_capture_content_off_keeps_text_out_of_spans_and_records(
    patch: Any, client: Any
) -> None:
    cap = patch(openai, capture_on_spans=True, capture_content=False)
    client.chat.completions.create(model="m", messages=MESSAGES)
    attributes = cap.only_span().attributes or {}
    assert "gen_ai.input.messages" not in attributes
    assert "gen_ai.output.messages" not in attributes
    record = cap.only_record()
    assert record.prompt_text is None
    assert record.response_text is None
    assert record.model == "m-resp"
    assert record.tokens == PROMPT_TOKENS + COMPLETION_TOKENS


def test_http_error_propagates_and_is_recorded(patch: Any, client: Any) -> None:
    cap = patch(openai)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="error-400", messages=MESSAGES)
    assert caught.value.status_code == 400
    span = cap.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "BadRequestError"
    assert [e.name for e in span.events] == ["exception"]
    record = cap.only_record()
    assert record.error == "BadRequestError"
    assert record.response_text is None


def test_the_same_exception_object_propagates(
    patch: Any, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = patch(openai)
    boom = ConnectionResetError("peer went away")

    def post(*args: Any, **kwargs: Any) -> Any:
        raise boom

    monkeypatch.setattr(client, "post", post)
    with pytest.raises(ConnectionResetError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert caught.value is boom
    assert caught.traceback[-1].name == "post"
    assert (cap.only_span().attributes or {})["error.type"] == "ConnectionResetError"


# --- what the response looks like -----------------------------------------------------------


def test_response_gains_trace_id_and_score(patch: Any, client: Any) -> None:
    cap = patch(openai)
    response = client.chat.completions.create(model="m", messages=MESSAGES)
    assert isinstance(response, openai.types.chat.ChatCompletion)
    assert response.choices[0].message.content == REPLY
    assert response.ct_score(0.75) == (response.ct_trace_id, 0.75, "sdk")
    assert response.ct_score(0.25, scored_by="human") == (response.ct_trace_id, 0.25, "human")
    assert cap.scores == [(response.ct_trace_id, 0.75, "sdk"),
                          (response.ct_trace_id, 0.25, "human")]


def test_response_serializes_compares_and_pickles_as_before(
    patch: Any, client: Any
) -> None:
    plain = client.chat.completions.create(model="m", messages=MESSAGES)
    patch(openai)
    traced = client.chat.completions.create(model="m", messages=MESSAGES)
    assert hasattr(traced, "ct_trace_id") and not hasattr(plain, "ct_trace_id")
    assert traced.model_dump() == plain.model_dump()
    assert "ct_trace_id" not in traced.model_dump()
    assert traced.model_dump_json() == plain.model_dump_json()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert traced.json() == plain.json()
    assert repr(traced) == repr(plain)
    assert str(traced) == str(plain)
    assert traced == plain
    assert plain == traced
    assert (traced != plain) is False
    assert pickle.dumps(traced) == pickle.dumps(plain)
    restored = pickle.loads(pickle.dumps(traced))
    assert type(restored) is type(plain)
    assert restored == plain
    assert copy.deepcopy(traced) == plain
    assert type(copy.copy(traced)) is type(plain)


# --- chat completions, sync streams ----------------------------------------------------------


def test_stream_span_ends_on_exhaustion_with_usage(
    patch: Any, client: Any, standin: StandIn
) -> None:
    cap = patch(openai)
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    _assert_uuid(stream.ct_trace_id)
    assert cap.spans() == []
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == REPLY
    span = cap.only_span()
    expected = _chat_attributes(standin, stream=True)
    expected[Attr.TRACE_ID] = stream.ct_trace_id
    assert dict(span.attributes or {}) == expected
    record = cap.only_record()
    assert record.response_text == REPLY
    assert record.tokens == PROMPT_TOKENS + COMPLETION_TOKENS
    assert str(record.trace_id) == stream.ct_trace_id


def test_stream_without_usage_has_no_token_counts(
    patch: Any, client: Any, standin: StandIn
) -> None:
    cap = patch(openai)
    for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
        pass
    attributes = dict(cap.only_span().attributes or {})
    assert "gen_ai.usage.input_tokens" not in attributes
    assert "gen_ai.usage.output_tokens" not in attributes
    assert cap.only_record().tokens is None
    assert cap.only_record().response_text == REPLY


def test_stream_early_break_then_close_ends_the_span(patch: Any, client: Any) -> None:
    cap = patch(openai)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    for chunk in stream:
        if chunk.choices[0].delta.content:
            break
    assert cap.spans() == []
    stream.close()
    span = cap.only_span()
    assert span.status.status_code is StatusCode.UNSET
    assert cap.only_record().response_text == "echo:"
    stream.close()  # a second close ends nothing twice
    assert len(cap.spans()) == 1 and len(cap.records) == 1


def test_stream_context_manager_exit_ends_the_span(patch: Any, client: Any) -> None:
    cap = patch(openai)
    with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as stream:
        assert hasattr(stream, "ct_trace_id")
        next(stream)
        next(stream)
    assert cap.only_record().response_text == "echo:"
    assert cap.only_span().end_time is not None


def test_abandoned_stream_ends_the_span_when_collected(patch: Any, client: Any) -> None:
    cap = patch(openai)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    next(stream)
    next(stream)
    trace_id = stream.ct_trace_id
    del stream
    gc.collect()
    assert len(cap.spans()) == 1
    assert str(cap.only_record().trace_id) == trace_id
    assert cap.only_record().response_text == "echo:"


def test_stream_error_mid_way_propagates_and_is_recorded(patch: Any, client: Any) -> None:
    cap = patch(openai)
    stream = client.chat.completions.create(
        model="midstream-error", messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError, match="broke mid-stream"):
        for _ in stream:
            pass
    span = cap.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "APIError"
    assert cap.only_record().error == "APIError"


def test_stream_can_be_scored(patch: Any, client: Any) -> None:
    cap = patch(openai)
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    list(stream)
    stream.ct_score(1.0)
    assert cap.scores == [(stream.ct_trace_id, 1.0, "sdk")]


# --- chat completions, async -----------------------------------------------------------------


async def test_async_chat_span_and_record(patch: Any, aclient: Any, standin: StandIn) -> None:
    cap = patch(openai)
    response = await aclient.chat.completions.create(model="m", messages=MESSAGES, top_p=0.5)
    expected = _chat_attributes(standin, stream=False)
    expected.update({"gen_ai.request.top_p": 0.5, Attr.TRACE_ID: response.ct_trace_id})
    assert dict(cap.only_span().attributes or {}) == expected
    assert cap.only_record().response_text == REPLY
    assert response.choices[0].message.content == REPLY


async def test_async_stream_ends_on_exhaustion(patch: Any, aclient: Any) -> None:
    cap = patch(openai)
    stream = await aclient.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == REPLY
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.usage.output_tokens"] == COMPLETION_TOKENS
    assert attributes["gen_ai.request.stream"] is True
    assert cap.only_record().response_text == REPLY


async def test_async_stream_early_close_and_context_exit(patch: Any, aclient: Any) -> None:
    cap = patch(openai)
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    async for _ in stream:
        break
    await stream.close()
    assert len(cap.spans()) == 1
    async with await aclient.chat.completions.create(
        model="m", messages=MESSAGES, stream=True
    ) as second:
        await second.__anext__()
    assert len(cap.spans()) == 2
    assert [r.response_text for r in cap.records] == ["", ""]  # the role chunk only


async def test_async_stream_left_early_and_dropped_ends_the_span(
    patch: Any, aclient: Any
) -> None:
    """``async for`` over a stream steps an async generator (issue 28): left early and
    dropped, the event loop closes it on its next steps, then the call ends with what was
    read, once; the span does not wait for the loop to close."""
    cap = patch(openai)
    stream = await aclient.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            break
    trace_id = stream.ct_trace_id
    del stream
    gc.collect()
    for _ in range(50):  # the loop's steps, not time: asyncio closes it in one or two
        if cap.spans():
            break
        await asyncio.sleep(0)
    assert len(cap.spans()) == 1
    assert str(cap.only_record().trace_id) == trace_id
    assert cap.only_record().response_text == "echo:"


async def test_async_error_propagates(patch: Any, aclient: Any) -> None:
    cap = patch(openai)
    with pytest.raises(openai.InternalServerError):
        await aclient.chat.completions.create(model="error-500", messages=MESSAGES)
    assert (cap.only_span().attributes or {})["error.type"] == "InternalServerError"


# --- responses -------------------------------------------------------------------------------


def test_responses_span_and_record(patch: Any, client: Any, standin: StandIn) -> None:
    cap = patch(openai)
    response = client.responses.create(
        model="m", input="hi you", instructions="be brief", max_output_tokens=30
    )
    assert response.output_text == "echo: hi you"
    span = cap.only_span()
    assert span.name == "chat m"
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "m",
        "gen_ai.request.max_tokens": 30,
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "m-resp",
        "gen_ai.response.id": "resp_standin",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 4,
        "gen_ai.usage.output_tokens": 3,
        "server.address": "127.0.0.1",
        "server.port": standin.port,
        Attr.TASK_NAME: "llm_calls",
        Attr.TRACE_ID: response.ct_trace_id,
    }
    record = cap.only_record()
    assert (record.prompt_text, record.response_text, record.tokens) == (
        "hi you", "echo: hi you", 7
    )


def test_responses_with_message_list_input(patch: Any, client: Any) -> None:
    cap = patch(openai)
    client.responses.create(model="m", input=[{"role": "user", "content": "list input"}])
    assert cap.only_record().prompt_text == "list input"
    assert cap.only_record().response_text == "echo: list input"


def test_responses_stream(patch: Any, client: Any) -> None:
    cap = patch(openai)
    stream = client.responses.create(model="m", input="hi you", stream=True)
    kinds = [event.type for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.response.id"] == "resp_standin"
    assert attributes["gen_ai.usage.input_tokens"] == 2
    assert attributes[Attr.TRACE_ID] == stream.ct_trace_id
    assert cap.only_record().response_text == "echo: hi you"


async def test_async_responses_and_stream(patch: Any, aclient: Any) -> None:
    cap = patch(openai)
    response = await aclient.responses.create(model="m", input="async one")
    assert response.output_text == "echo: async one"
    stream = await aclient.responses.create(model="m", input="async two", stream=True)
    deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: async two"
    assert [r.response_text for r in cap.records] == ["echo: async one", "echo: async two"]
    assert len(cap.spans()) == 2


# --- raw responses, nesting, unpatching ------------------------------------------------------


def test_raw_response_is_returned_untouched(patch: Any, client: Any) -> None:
    cap = patch(openai)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == REPLY
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.request.model"] == "m"
    assert "gen_ai.response.id" not in attributes


def test_span_nests_under_the_current_span(
    patch: Any, client: Any, provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    cap = patch(openai)
    with provider[0].get_tracer("app").start_as_current_span("request handler") as parent:
        client.chat.completions.create(model="m", messages=MESSAGES)
    chat = next(s for s in cap.spans() if s.name == "chat m")
    assert chat.parent is not None
    assert chat.parent.span_id == parent.get_span_context().span_id
    assert chat.context.trace_id == parent.get_span_context().trace_id


def test_unpatched_calls_are_not_traced(patch: Any, client: Any) -> None:
    from kaizen_sdk.integrations import openai as integration

    cap = patch(openai)
    integration._uninstrument()
    integration._uninstrument()
    response = client.chat.completions.create(model="m", messages=MESSAGES)
    assert not hasattr(response, "ct_trace_id")
    assert cap.spans() == []
    assert "__wrapped__" in vars(openai.resources.chat.completions.Completions.create)


# --- SDK trouble never reaches the call -------------------------------------------------------


def test_failing_record_hand_over_does_not_break_the_call(
    patch: Any, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def attach(span: Any, record: Any) -> None:
        raise RuntimeError("pipeline exploded")

    cap = patch(openai, attach=attach)
    response = client.chat.completions.create(model="m", messages=MESSAGES)
    assert response.choices[0].message.content == REPLY
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == REPLY
    assert [r.getMessage() for r in caplog.records] == [
        "Handing the CT record of an LLM call over failed."
    ] * 2
    assert cap.records == []
    assert len(cap.spans()) == 2  # the spans still end


def test_failing_tracer_does_not_break_the_call(
    client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.trace import NoOpTracer

    from kaizen_sdk.integrations import openai as integration
    from kaizen_sdk.integrations._common import InstrumentSettings

    class BrokenTracer(NoOpTracer):
        def start_span(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("tracer exploded")

    def current_call() -> Any:
        raise LookupError("no context")

    integration._instrument(BrokenTracer(), InstrumentSettings())
    try:
        response = client.chat.completions.create(model="m", messages=MESSAGES)
        assert response.choices[0].message.content == REPLY
        assert not hasattr(response, "ct_trace_id")  # not traced at all
    finally:
        integration._uninstrument()
    integration._instrument(BrokenTracer(), InstrumentSettings(current_call=current_call))
    try:
        stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream) == REPLY
    finally:
        integration._uninstrument()
    assert [r.levelname for r in caplog.records].count("ERROR") == 2


# --- the library's own helpers ---------------------------------------------------------------


def test_chat_stream_helper_is_traced_once(patch: Any, client: Any) -> None:
    cap = patch(openai)
    with client.chat.completions.stream(model="m", messages=MESSAGES) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY
    assert cap.only_record().response_text == REPLY
    assert (cap.only_span().attributes or {})["gen_ai.request.stream"] is True


def test_responses_stream_helper_is_traced_once(patch: Any, client: Any) -> None:
    cap = patch(openai)
    with client.responses.stream(model="m", input="hi you") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "echo: hi you"
    assert cap.only_record().response_text == "echo: hi you"


def test_chat_parse_is_traced(patch: Any, client: Any) -> None:
    cap = patch(openai)
    parsed = client.chat.completions.parse(model="m", messages=MESSAGES)
    assert parsed.choices[0].message.content == REPLY
    assert cap.only_record().response_text == REPLY
    assert (cap.only_span().attributes or {})[Attr.TRACE_ID] == parsed.ct_trace_id


def test_a_bound_method_kept_past_uninstrument_is_not_traced(patch: Any, client: Any) -> None:
    from kaizen_sdk.integrations import openai as integration

    cap = patch(openai)
    create = client.chat.completions.create  # bound while patched
    integration._uninstrument()
    response = create(model="m", messages=MESSAGES)
    assert response.choices[0].message.content == REPLY
    assert not hasattr(response, "ct_trace_id")
    assert cap.spans() == []
