"""An application that runs kaizen beside another GenAI instrumentation of openai, run in a
process of its own by ``test_coexist.py`` (a global provider can be set only once per process).

``python coexist_app.py PEER ORDER STANDIN_URL TASK`` instruments *PEER* (``openai-v2``,
``openllmetry`` or ``openinference``) before (ORDER ``theirs-first``) or after (``ours-first``)
``ct.instrument(openai)``, makes one call of each kind in `KINDS` in turn, and prints one
JSON line: for each call, its ``ct_trace_id``, the spans that ended while it ran, and whether
the OpenTelemetry context was the same after it as before; then kaizen's delivery counts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import openai
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.integrations import _common

SYSTEM = "You echo what you are told."
"""Every call's system message (Responses: ``instructions``), mapped to the task by task_map."""

KINDS = (
    "chat", "chat-async", "chat-stream", "chat-stream-async", "responses", "responses-async",
    "responses-stream", "stream-error", "stream-error-async", "stream-abandoned",
)


def _instrument_peer(peer: str) -> None:
    instrumentor: Any
    if peer == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as instrumentor
    elif peer == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as instrumentor
    elif peer == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as instrumentor
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    instrumentor().instrument()


def _messages(text: str) -> Any:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def _calls(sync: openai.OpenAI, aio: openai.AsyncOpenAI) -> dict[str, Callable[[], Any]]:
    """One function per kind; each returns the ``ct_trace_id`` of its call."""

    def chat() -> str:
        out = sync.chat.completions.create(model="m", messages=_messages("chat"))
        return str(out.ct_trace_id)  # type: ignore[attr-defined]

    async def chat_async() -> str:
        out = await aio.chat.completions.create(model="m", messages=_messages("chat async"))
        return str(out.ct_trace_id)  # type: ignore[attr-defined]

    def chat_stream() -> str:
        stream = sync.chat.completions.create(
            model="m", messages=_messages("chat stream"), stream=True,
            stream_options={"include_usage": True},
        )
        for _ in stream:
            pass
        return str(stream.ct_trace_id)  # type: ignore[attr-defined]

    async def chat_stream_async() -> str:
        stream = await aio.chat.completions.create(
            model="m", messages=_messages("chat stream async"), stream=True,
        )
        async for _ in stream:
            pass
        return str(stream.ct_trace_id)  # type: ignore[attr-defined]

    def responses() -> str:
        out = sync.responses.create(model="m", instructions=SYSTEM, input="responses",
                                   metadata={"response_id": "resp_1"})
        return str(out.ct_trace_id)  # type: ignore[attr-defined]

    async def responses_async() -> str:
        out = await aio.responses.create(model="m", instructions=SYSTEM, input="responses async",
                                         metadata={"response_id": "resp_2"})
        return str(out.ct_trace_id)  # type: ignore[attr-defined]

    def responses_stream() -> str:
        stream = sync.responses.create(
            model="m", instructions=SYSTEM, input="responses stream", stream=True,
            metadata={"response_id": "resp_3"},
        )
        for _ in stream:
            pass
        return str(stream.ct_trace_id)  # type: ignore[attr-defined]

    def stream_error() -> str:
        stream = sync.chat.completions.create(
            model="midstream-error", messages=_messages("stream error"), stream=True,
        )
        try:
            for _ in stream:
                pass
        except openai.APIError:
            return str(stream.ct_trace_id)  # type: ignore[attr-defined]
        raise AssertionError("the stream did not fail")

    async def stream_error_async() -> str:
        stream = await aio.chat.completions.create(
            model="midstream-error", messages=_messages("stream error async"), stream=True,
        )
        try:
            async for _ in stream:
                pass
        except openai.APIError:
            return str(stream.ct_trace_id)  # type: ignore[attr-defined]
        raise AssertionError("the stream did not fail")

    def stream_abandoned() -> str:
        stream = sync.chat.completions.create(
            model="m", messages=_messages("stream abandoned"), stream=True,
        )
        next(iter(stream))
        trace_id = str(stream.ct_trace_id)  # type: ignore[attr-defined]
        del stream
        gc.collect()
        return trace_id

    return {
        "chat": chat, "chat-async": chat_async, "chat-stream": chat_stream,
        "chat-stream-async": chat_stream_async, "responses": responses,
        "responses-async": responses_async, "responses-stream": responses_stream,
        "stream-error": stream_error, "stream-error-async": stream_error_async,
        "stream-abandoned": stream_abandoned,
    }


def _span(span: Any) -> dict[str, Any]:
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "scope": scope.name if scope else None,
        "attributes": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in (span.attributes or {}).items()
                       if k.startswith(("ct.", "gen_ai.operation", "openai.api"))},
    }


def _measured(call: Callable[[], str]) -> tuple[str, bool, bool]:
    before = otel_context.get_current()
    trace_id = call()
    return trace_id, otel_context.get_current() == before, _common.in_instrumented_call()


async def _measured_async(call: Callable[[], Awaitable[str]]) -> tuple[str, bool, bool]:
    before = otel_context.get_current()
    trace_id = await call()
    return trace_id, otel_context.get_current() == before, _common.in_instrumented_call()


def main(peer: str, order: str, standin_url: str, task: str) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if order == "theirs-first":
        _instrument_peer(peer)
        ct.instrument(openai, task_map={SYSTEM: task})
    elif order == "ours-first":
        ct.instrument(openai, task_map={SYSTEM: task})
        _instrument_peer(peer)
    else:
        raise SystemExit(f"unknown order {order!r}")
    sync = openai.OpenAI(base_url=standin_url, api_key="sk-test", max_retries=0)
    aio = openai.AsyncOpenAI(base_url=standin_url, api_key="sk-test", max_retries=0)
    loop = asyncio.new_event_loop()
    calls = []
    for kind, call in _calls(sync, aio).items():
        seen = len(exporter.get_finished_spans())
        if asyncio.iscoroutinefunction(call):
            # a task runs in a copy of the context: compare inside it
            trace_id, same, inside = loop.run_until_complete(_measured_async(call))
        else:
            trace_id, same, inside = _measured(call)
        calls.append({
            "kind": kind,
            "trace_id": trace_id,
            "spans": [_span(s) for s in exporter.get_finished_spans()[seen:]],
            "context_same": same,
            "inside_call": inside,
        })
    loop.run_until_complete(aio.close())
    loop.close()
    sync.close()
    assert ct.flush(10.0)
    stats = ct.get_client().stats()
    return {
        "calls": calls,
        "stats": {"queued": stats.queued, "sent": stats.sent, "dropped": stats.dropped},
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
