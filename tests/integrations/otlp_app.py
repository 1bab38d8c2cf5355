"""An application traced only by a third-party GenAI instrumentation of openai, exporting with
the standard OTLP/HTTP exporter to the local CT server; run in a process of its own by
``test_otlp_instrumentations.py`` (instrumentations cannot be undone cleanly in one process).

``python otlp_app.py PEER STANDIN_URL SERVER_URL KEY`` instruments *PEER* (``openai-v2``,
``openllmetry`` or ``openinference``), makes one chat call inside a ``ct.task.name`` span, one
streamed chat call outside any (its task comes from the server's task map, by service name),
one call that fails (inside a ``ct.task.name`` span too), and one embeddings call; flushes the
exporter and prints one JSON line: the ids of every span exported, and the export results.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

MODEL = "gpt-4o-mini"
"""The model asked for (the stand-in answers as ``gpt-4o-mini-resp``, a name no table has)."""


class _Recording(SpanExporter):
    """The OTLP exporter, noting each span's ids and each export's result."""

    def __init__(self, inner: OTLPSpanExporter) -> None:
        self.inner = inner
        self.spans: list[dict[str, Any]] = []
        self.results: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            assert ctx is not None
            self.spans.append({"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
                               "name": span.name})
        result = self.inner.export(spans)
        self.results.append(result.name)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def _instrument(peer: str, provider: TracerProvider) -> None:
    instrumentor: Any
    if peer == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as instrumentor
    elif peer == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as instrumentor
    elif peer == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor as instrumentor
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    instrumentor().instrument(tracer_provider=provider)


def main(peer: str, standin_url: str, server_url: str, key: str) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{peer}"}))
    exporter = _Recording(OTLPSpanExporter(endpoint=f"{server_url}/v1/traces",
                                           headers={"Authorization": f"Bearer {key}"},
                                           timeout=30))
    # One export at shutdown: the enclosing span travels with its LLM span (see docs).
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    trace.set_tracer_provider(provider)
    _instrument(peer, provider)
    client = openai.OpenAI(base_url=standin_url, api_key="sk-test", max_retries=0)
    tracer = provider.get_tracer("otlp_app")
    messages = [{"role": "system", "content": "You echo what you are told."},
                {"role": "user", "content": "say tuned"}]
    with tracer.start_as_current_span("handle request") as outer:
        outer.set_attribute("ct.task.name", f"otlp-{peer}-task")
        client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model=MODEL, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream mapped"}],
    )
    for _chunk in stream:
        pass
    try:
        with tracer.start_as_current_span("failing request") as outer:
            outer.set_attribute("ct.task.name", f"otlp-{peer}-task")
            client.chat.completions.create(model="error-500", messages=messages)  # type: ignore[arg-type]
    except openai.APIError:
        pass
    with contextlib.suppress(openai.APIError):  # the stand-in answers 404: a span all the same
        client.embeddings.create(model="text-embedding-3-small", input="not an LLM call")
    provider.shutdown()
    print(json.dumps({"spans": exporter.spans, "results": exporter.results}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
