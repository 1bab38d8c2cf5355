"""An application with its own OpenTelemetry set-up, run in a process of its own by
``test_ecosystem.py`` (a global provider can be set only once per process).

``python ecosystem_app.py SCENARIO STANDIN_URL TASK`` prints one JSON line: the spans the
application's exporter received, its metrics, kaizen's delivery counts and warnings.

Scenarios:
- ``late``: a task call and an openai call run before the application sets its provider,
  then one of each after it;
- ``v2-first`` / ``v2-last``: opentelemetry-instrumentation-openai-v2 is instrumented before /
  after ``ct.instrument(openai)``, then two chat calls (one plain, one streamed);
- ``metrics``: kaizen alone, with a MeterProvider whose reader keeps the points in memory.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import openai
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct

warnings: list[str] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())


logging.getLogger("kaizen_sdk").addHandler(_Keep())


def _app_provider() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def _chat(llm: openai.OpenAI, text: str, *, stream: bool = False) -> str:
    messages: Any = [{"role": "user", "content": text}]
    if stream:
        parts = llm.chat.completions.create(
            model="m", messages=messages, stream=True,
            stream_options={"include_usage": True},
        )
        for _ in parts:
            pass
        return str(parts.ct_trace_id)  # type: ignore[attr-defined]
    response = llm.chat.completions.create(model="m", messages=messages, seed=7)
    return str(response.ct_trace_id)  # type: ignore[attr-defined]


def main(scenario: str, standin_url: str, task: str) -> dict[str, Any]:
    llm = openai.OpenAI(base_url=standin_url, api_key="sk-test", max_retries=0)
    ct.context(task=task).__enter__()  # outside a task, only a named call sends a record
    trace_ids: list[str] = []
    reader = None

    @ct.task(task, default_prompt="Echo {{ x }}")
    def echo(x: str, prompt: ct.Prompt) -> str:
        return prompt.render(x=x)

    if scenario == "late":
        ct.instrument(openai)
        _, run = echo.call("before")
        trace_ids += [run.trace_id, _chat(llm, "before")]
        exporter = _app_provider()
        _, run = echo.call("after")
        trace_ids += [run.trace_id, _chat(llm, "after")]
    elif scenario in ("v2-first", "v2-last"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        exporter = _app_provider()
        if scenario == "v2-first":
            OpenAIInstrumentor().instrument()
            ct.instrument(openai)
        else:
            ct.instrument(openai)
            OpenAIInstrumentor().instrument()
        trace_ids += [_chat(llm, "one"), _chat(llm, "two", stream=True)]
    elif scenario == "metrics":
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        exporter = _app_provider()
        ct.instrument(openai)
        trace_ids += [_chat(llm, "hello there"), _chat(llm, "a b c", stream=True)]
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    assert ct.flush(10.0)
    points: list[dict[str, Any]] = []
    if reader is not None:
        data = reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:  # type: ignore[attr-defined]
                        points.append({
                            "name": metric.name, "unit": metric.unit,
                            "scope": scope.scope.name, "schema": scope.schema_url,
                            "count": point.count, "sum": point.sum,
                            "attributes": dict(point.attributes),
                        })
    client = ct.get_client()
    stats = client.stats()
    return {
        "spans": [
            {
                "name": s.name,
                "scope": s.instrumentation_scope.name if s.instrumentation_scope else None,
                "schema": s.instrumentation_scope.schema_url if s.instrumentation_scope else None,
                "attributes": {k: list(v) if isinstance(v, tuple) else v
                               for k, v in (s.attributes or {}).items()},
            }
            for s in exporter.get_finished_spans()
        ],
        "trace_ids": trace_ids,
        "stats": {"queued": stats.queued, "sent": stats.sent, "dropped": stats.dropped},
        "warnings": warnings,
        "metrics": points,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
