"""An application that runs kaizen beside another GenAI instrumentation of anthropic or
google-genai, run in a process of its own by ``test_provider_coexist.py`` (a global provider
can be set only once per process, and these instrumentors do not all undo themselves).

``python provider_coexist_app.py LIBRARY STANDIN_PORT OUT_DIR PEER,ORDER,TASK ...`` runs each
scenario (`main`) in a process of its own, forked from this one (`run_forked`), and writes its
result to ``OUT_DIR/N.json`` (N counts the scenarios from 0). A scenario instruments *PEER*
(``openllmetry`` or ``openinference`` for LIBRARY ``anthropic``, ``otel`` for ``gemini``)
before (ORDER ``theirs-first``; the calls are then made once before ``ct.instrument``
too, the peer's baseline) or after (``ours-first``) ``ct.instrument(...)``, or only kaizen
(``ours-only``; anthropic's own tracing still runs), makes one
call of each kind in `KINDS` in turn, and returns: for each call, its
``ct_trace_id``, the spans that ended while it ran, whether the OpenTelemetry context was the
same after it as before, and whether kaizen's in-call mark was left set; then kaizen's
delivery counts.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pathlib
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.integrations import _common

SYSTEM = "You echo what you are told."
"""Every call's system prompt, mapped to the task by task_map."""

KINDS = ("call", "call-async", "stream", "stream-async", "stream-error", "stream-error-async")


def _instrument_peer(library: str, peer: str) -> None:
    instrumentor: Any
    if (library, peer) == ("anthropic", "openllmetry"):
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as instrumentor
    elif (library, peer) == ("anthropic", "openinference"):
        from openinference.instrumentation.anthropic import (
            AnthropicInstrumentor as instrumentor,
        )
    elif (library, peer) == ("gemini", "otel"):
        from opentelemetry.instrumentation.google_genai import (
            GoogleGenAiSdkInstrumentor as instrumentor,
        )
    else:
        raise SystemExit(f"unknown peer {peer!r} of {library!r}")
    # google-genai's instrumentor declares google-genai<3; the installed one may be newer
    instrumentor().instrument(skip_dep_check=True)


def _tid(out: Any) -> str | None:
    """The response's ``ct_trace_id``; None when kaizen is not instrumenting."""
    trace_id = getattr(out, "ct_trace_id", None)
    return None if trace_id is None else str(trace_id)


def _anthropic(port: int) -> tuple[Any, dict[str, Callable[[], Any]]]:
    import anthropic

    url = f"http://127.0.0.1:{port}"
    sync = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
    aio = anthropic.AsyncAnthropic(base_url=url, api_key="test", max_retries=0)

    def ask(text: str, model: str = "claude", **more: Any) -> dict[str, Any]:
        return {"model": model, "max_tokens": 64, "system": SYSTEM,
                "messages": [{"role": "user", "content": text}], **more}

    def call() -> str | None:
        return _tid(sync.messages.create(**ask("call")))

    async def call_async() -> str | None:
        return _tid(await aio.messages.create(**ask("call async")))

    def stream() -> str | None:
        out = sync.messages.create(**ask("stream"), stream=True)
        for _ in out:
            pass
        return _tid(out)

    async def stream_async() -> str | None:
        out = await aio.messages.create(**ask("stream async"), stream=True)
        async for _ in out:
            pass
        return _tid(out)

    def stream_error() -> str | None:
        out = sync.messages.create(**ask("stream error", "midstream-error"), stream=True)
        try:
            for _ in out:
                pass
        except anthropic.APIError:
            return _tid(out)
        raise AssertionError("the stream did not fail")

    async def stream_error_async() -> str | None:
        out = await aio.messages.create(**ask("stream error async", "midstream-error"),
                                        stream=True)
        try:
            async for _ in out:
                pass
        except anthropic.APIError:
            return _tid(out)
        raise AssertionError("the stream did not fail")

    calls = {"call": call, "call-async": call_async, "stream": stream,
             "stream-async": stream_async, "stream-error": stream_error,
             "stream-error-async": stream_error_async}
    return anthropic, calls


def _gemini(port: int) -> tuple[Any, dict[str, Callable[[], Any]]]:
    import google.genai
    from google.genai import errors, types

    client = google.genai.Client(
        api_key="test", http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{port}/"),
    )
    config = types.GenerateContentConfig(system_instruction=SYSTEM)

    def call() -> str | None:
        out = client.models.generate_content(model="gemini", contents="call", config=config)
        return _tid(out)

    async def call_async() -> str | None:
        out = await client.aio.models.generate_content(
            model="gemini", contents="call async", config=config)
        return _tid(out)

    def stream() -> str | None:
        out = client.models.generate_content_stream(
            model="gemini", contents="stream", config=config)
        for _ in out:
            pass
        return _tid(out)

    async def stream_async() -> str | None:
        out = await client.aio.models.generate_content_stream(
            model="gemini", contents="stream async", config=config)
        async for _ in out:
            pass
        return _tid(out)

    def stream_error() -> str | None:
        out = client.models.generate_content_stream(
            model="midstream-error", contents="stream error", config=config)
        try:
            for _ in out:
                pass
        except errors.APIError:
            return _tid(out)
        raise AssertionError("the stream did not fail")

    async def stream_error_async() -> str | None:
        out = await client.aio.models.generate_content_stream(
            model="midstream-error", contents="stream error async", config=config)
        try:
            async for _ in out:
                pass
        except errors.APIError:
            return _tid(out)
        raise AssertionError("the stream did not fail")

    calls = {"call": call, "call-async": call_async, "stream": stream,
             "stream-async": stream_async, "stream-error": stream_error,
             "stream-error-async": stream_error_async}
    return google.genai, calls


def _span(span: Any) -> dict[str, Any]:
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "scope": scope.name if scope else None,
        "attributes": {k: v for k, v in (span.attributes or {}).items()
                       if k.startswith(("ct.", "gen_ai.operation"))},
    }


def _measured(call: Callable[[], str | None]) -> tuple[str | None, bool, bool]:
    before = otel_context.get_current()
    trace_id = call()
    return trace_id, otel_context.get_current() == before, _common.in_instrumented_call()


async def _measured_async(
    call: Callable[[], Awaitable[str | None]],
) -> tuple[str | None, bool, bool]:
    before = otel_context.get_current()
    trace_id = await call()
    return trace_id, otel_context.get_current() == before, _common.in_instrumented_call()


def _run_all(calls: dict[str, Callable[[], Any]], exporter: InMemorySpanExporter,
             loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    out = []
    for kind in KINDS:
        call = calls[kind]
        seen = len(exporter.get_finished_spans())
        if asyncio.iscoroutinefunction(call):
            # a task runs in a copy of the context: compare inside it
            trace_id, same, inside = loop.run_until_complete(_measured_async(call))
        else:
            trace_id, same, inside = _measured(call)
        out.append({
            "kind": kind,
            "trace_id": trace_id,
            "spans": [_span(s) for s in exporter.get_finished_spans()[seen:]],
            "context_same": same,
            "inside_call": inside,
        })
    return out


def main(library: str, peer: str, order: str, port: str, task: str) -> dict[str, Any]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    module, calls = (_anthropic if library == "anthropic" else _gemini)(int(port))
    loop = asyncio.new_event_loop()
    baseline: list[dict[str, Any]] = []
    if order == "theirs-first":
        _instrument_peer(library, peer)
        baseline = _run_all(calls, exporter, loop)  # the peer alone, before kaizen
        ct.instrument(module, task_map={SYSTEM: task})
    elif order == "ours-first":
        ct.instrument(module, task_map={SYSTEM: task})
        _instrument_peer(library, peer)
    elif order == "ours-only":
        ct.instrument(module, task_map={SYSTEM: task})
    else:
        raise SystemExit(f"unknown order {order!r}")
    out = _run_all(calls, exporter, loop)
    loop.close()
    assert ct.flush(10.0)
    stats = ct.get_client().stats()
    return {
        "baseline": baseline,
        "calls": out,
        "stats": {"queued": stats.queued, "sent": stats.sent, "dropped": stats.dropped},
        "metrics": _metrics(reader),
    }


def _metrics(reader: InMemoryMetricReader) -> list[dict[str, Any]]:
    """kaizen's GenAI histogram points: name, attributes, count, sum."""
    out = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            if scope.scope.name != "kaizen_sdk":
                continue
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out.append({"name": metric.name, "attributes": dict(point.attributes or {}),
                                "count": point.count, "sum": point.sum})
    return out


def run_forked(library: str, port: str, out_dir: pathlib.Path,
               scenarios: list[tuple[str, str, str]]) -> int:
    """Import LIBRARY once, then run each (peer, order, task) scenario in a child forked from
    this process, side by side; 0 when every child wrote its result.

    Each child starts as a fresh process of that application would: the library imported and
    nothing else done (no provider set, nothing instrumented, no thread started), without
    importing the library again (anthropic's import alone costs ~1.8 s of CPU).
    """
    importlib.import_module("anthropic" if library == "anthropic" else "google.genai")
    assert threading.active_count() == 1, threading.enumerate()
    children = []
    for n, (peer, order, task) in enumerate(scenarios):
        pid = os.fork()
        if pid == 0:  # the child: never returns into the parent's code
            code = 1
            try:
                result = main(library, peer, order, port, task)
                (out_dir / f"{n}.json").write_text(json.dumps(result))
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    return 0 if codes == [0] * len(children) else 1


if __name__ == "__main__":
    sys.exit(run_forked(sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]),
                        [(p, o, t) for p, o, t in (a.split(",") for a in sys.argv[4:])]))
