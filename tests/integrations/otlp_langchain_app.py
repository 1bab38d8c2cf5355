"""A LangChain application traced only by OpenInference's LangChain instrumentation, exporting
with the standard OTLP/HTTP exporter to the local CT server; run in a process of its own by
``test_otlp_langchain.py`` (an instrumentation cannot be undone cleanly in one process).

``python otlp_langchain_app.py STANDIN_URL SERVER_URL KEY TICKET...`` builds the usual chain
(a chat prompt template, ``ChatOpenAI`` against the OpenAI stand-in, a string output parser),
invokes it once per *TICKET* inside a span carrying ``ct.task.name``, streams it once outside
any (its task comes from the server's task map, by service name), flushes the exporter and
prints one JSON line: every span exported (ids, name, OpenInference span kind) and the export
results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

MODEL = "gpt-4o-mini"
"""The model asked for (the stand-in answers as ``gpt-4o-mini-resp``, a name no table has)."""

SERVICE = "svc-langchain"
TASK = "otlp-langchain-task"
SYSTEM = "You echo what you are told."


class _Recording(SpanExporter):
    """The OTLP exporter, noting each span's ids, name and kind, and each export's result."""

    def __init__(self, inner: OTLPSpanExporter) -> None:
        self.inner = inner
        self.spans: list[dict[str, Any]] = []
        self.results: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            ctx = span.get_span_context()
            assert ctx is not None
            self.spans.append({
                "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}",
                "name": span.name,
                "kind": (span.attributes or {}).get("openinference.span.kind"),
            })
        result = self.inner.export(spans)
        self.results.append(result.name)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def main(standin_url: str, server_url: str, key: str, tickets: list[str]) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    exporter = _Recording(OTLPSpanExporter(endpoint=f"{server_url}/v1/traces",
                                           headers={"Authorization": f"Bearer {key}"},
                                           timeout=30))
    # One export at shutdown: the enclosing span travels with its LLM spans (see docs).
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    LangChainInstrumentor().instrument(tracer_provider=provider)
    llm = ChatOpenAI(model=MODEL, base_url=standin_url, api_key="sk-test",  # type: ignore[arg-type]
                     max_retries=0, stream_usage=True)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{ticket}")])
    chain = prompt | llm | StrOutputParser()
    answers: list[str] = []
    tracer = provider.get_tracer("otlp_langchain_app")
    with tracer.start_as_current_span("handle tickets") as outer:
        outer.set_attribute("ct.task.name", TASK)
        for ticket in tickets:
            answers.append(chain.invoke({"ticket": ticket}))
    answers.append("".join(chain.stream({"ticket": "stream mapped"})))
    provider.shutdown()
    print(json.dumps({"answers": answers, "spans": exporter.spans, "results": exporter.results}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
