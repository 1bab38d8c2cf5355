"""The litellm integration against the stand-in server: spans, records, streams, one trace."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.trace import SpanKind, StatusCode

from kaizen_sdk.tracing import Attr

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

MESSAGES = [{"role": "user", "content": "hello there"}]
REPLY = "echo: hello there"



def _kwargs(standin: StandIn, **extra: Any) -> dict[str, Any]:
    return {"api_base": standin.base_url, "api_key": "sk-test", "messages": MESSAGES, **extra}


def test_completion_span_and_record(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    response = litellm.completion(
        model="openai/m", temperature=0.2, max_tokens=9, top_p=0.8, **_kwargs(standin)
    )
    assert response.choices[0].message.content == REPLY
    span = cap.only_span()
    assert span.name == "chat openai/m"
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "openai/m",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 9,
        "gen_ai.request.top_p": 0.8,
        "gen_ai.request.stream": False,
        "gen_ai.response.model": "m-resp",
        "gen_ai.response.id": "chatcmpl-standin",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 2,
        "gen_ai.usage.output_tokens": 3,
        "server.address": "127.0.0.1",
        "server.port": standin.port,
        Attr.TASK_NAME: "llm_calls",
        Attr.TRACE_ID: response.ct_trace_id,
    }
    record = cap.only_record()
    assert (record.prompt_text, record.response_text, record.model, record.tokens) == (
        "hello there", REPLY, "m-resp", 5
    )
    assert str(record.trace_id) == response.ct_trace_id


def test_positional_model_and_messages(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    litellm.completion("openai/m", MESSAGES, api_base=standin.base_url, api_key="sk-test")
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.request.model"] == "openai/m"
    assert cap.only_record().prompt_text == "hello there"


def test_response_serializes_and_compares_as_before(patch: Any, standin: StandIn) -> None:
    plain = litellm.completion(model="openai/m", **_kwargs(standin))
    patch(litellm)
    traced = litellm.completion(model="openai/m", **_kwargs(standin))
    assert isinstance(traced, litellm.ModelResponse)
    assert traced.choices[0].message.content == plain.choices[0].message.content
    ignore = {"id", "created", "system_fingerprint"}
    dumped = {k: v for k, v in traced.model_dump().items() if k not in ignore}
    assert "ct_trace_id" not in traced.model_dump()
    assert dumped == {k: v for k, v in plain.model_dump().items() if k not in ignore}
    assert traced == traced.__wrapped__
    assert traced.__wrapped__ == traced
    assert traced.model_dump_json() == traced.__wrapped__.model_dump_json()


def test_stream_span_ends_on_exhaustion(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    stream = litellm.completion(
        model="openai/m", stream=True, stream_options={"include_usage": True},
        **_kwargs(standin),
    )
    assert cap.spans() == []
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == REPLY
    attributes = cap.only_span().attributes or {}
    assert attributes["gen_ai.request.stream"] is True
    assert attributes["gen_ai.usage.input_tokens"] == 2
    assert attributes["gen_ai.usage.output_tokens"] == 3
    assert attributes[Attr.TRACE_ID] == stream.ct_trace_id
    record = cap.only_record()
    assert (record.response_text, record.tokens) == (REPLY, 5)


def test_stream_early_break_and_abandon(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    stream = litellm.completion(model="openai/m", stream=True, **_kwargs(standin))
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    assert len(cap.spans()) == 1
    abandoned = litellm.completion(model="openai/m", stream=True, **_kwargs(standin))
    next(abandoned)
    del abandoned
    gc.collect()
    assert len(cap.spans()) == 2
    assert len(cap.records) == 2


async def test_acompletion_and_async_stream(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    response = await litellm.acompletion(model="openai/m", **_kwargs(standin))
    assert response.choices[0].message.content == REPLY
    stream = await litellm.acompletion(
        model="openai/m", stream=True, stream_options={"include_usage": True},
        **_kwargs(standin),
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == REPLY
    assert [r.response_text for r in cap.records] == [REPLY, REPLY]
    assert [r.tokens for r in cap.records] == [5, 5]
    spans = cap.spans()
    assert [s.attributes[Attr.TRACE_ID] for s in spans if s.attributes] == [
        response.ct_trace_id, stream.ct_trace_id
    ]


async def test_async_stream_context_exit(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    async with await litellm.acompletion(
        model="openai/m", stream=True, **_kwargs(standin)
    ) as stream:
        await stream.__anext__()
    assert len(cap.spans()) == 1


def test_error_propagates_and_is_recorded(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(model="openai/error-400", **_kwargs(standin))
    span = cap.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "BadRequestError"
    assert cap.only_record().error == "BadRequestError"


def test_from_import_before_patching_is_not_traced(patch: Any, standin: StandIn) -> None:
    from litellm import completion  # bound before the patch: the documented limitation

    cap = patch(litellm)
    completion(model="openai/m", **_kwargs(standin))
    assert cap.spans() == []
    litellm.completion(model="openai/m", **_kwargs(standin))
    assert len(cap.spans()) == 1


# --- litellm over openai: one call, one trace ------------------------------------------------


def _openai_relay(base_url: str) -> Any:
    """A litellm provider that answers through the openai client library underneath."""

    class OpenAIRelay(litellm.CustomLLM):  # type: ignore[misc]
        def completion(self, *args: Any, **kwargs: Any) -> Any:
            with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as client:
                answer = client.chat.completions.create(
                    model="m", messages=kwargs["messages"]
                )
            return litellm.ModelResponse(**answer.model_dump())

    return OpenAIRelay()


@pytest.fixture
def relay(monkeypatch: pytest.MonkeyPatch, standin: StandIn) -> str:
    monkeypatch.setattr(litellm, "custom_provider_map", [
        {"provider": "kaizen-relay", "custom_handler": _openai_relay(standin.base_url)}
    ])
    monkeypatch.setattr(litellm, "provider_list", list(litellm.provider_list))
    monkeypatch.setattr(litellm, "_custom_providers", list(litellm._custom_providers))
    return "kaizen-relay/m"


def test_openai_underneath_litellm_is_traced_once(
    patch: Any, standin: StandIn, relay: str
) -> None:
    cap = patch(openai)
    # openai alone: the inner call is the traced one
    litellm.completion(model=relay, messages=MESSAGES)
    assert [s.attributes["gen_ai.provider.name"] for s in cap.spans() if s.attributes] == [
        "openai"
    ]
    cap.exporter.clear()
    cap.records.clear()
    patch(litellm)
    response = litellm.completion(model=relay, messages=MESSAGES)
    span = cap.only_span()
    assert span.name == f"chat {relay}"
    assert (span.attributes or {})[Attr.TRACE_ID] == response.ct_trace_id
    assert cap.only_record().response_text == REPLY
    assert len([p for p, _ in standin.requests if p.endswith("/chat/completions")]) >= 2


async def test_async_stream_keeps_litellms_sync_close(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)
    stream = await litellm.acompletion(model="openai/m", stream=True, **_kwargs(standin))
    await stream.__anext__()
    assert stream.close() is None  # litellm's close() is not a coroutine; neither is ours
    assert len(cap.spans()) == 1
    second = await litellm.acompletion(model="openai/m", stream=True, **_kwargs(standin))
    await second.__anext__()
    await second.aclose()
    assert len(cap.spans()) == 2


def test_a_name_imported_while_patched_stops_tracing_after_unpatch(
    patch: Any, standin: StandIn
) -> None:
    from kaizen_sdk.integrations import litellm as integration

    cap = patch(litellm)
    from litellm import completion  # the wrapper itself

    completion(model="openai/m", **_kwargs(standin))
    assert len(cap.spans()) == 1
    integration._uninstrument()
    response = completion(model="openai/m", **_kwargs(standin))
    assert not hasattr(response, "ct_trace_id")
    assert len(cap.spans()) == 1
