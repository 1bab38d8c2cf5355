"""Check, offline, that kaizen's spans reach an OTLP backend the way Arize Phoenix reads them.

The application here does what yours does: it sets its own OpenTelemetry ``TracerProvider``
with the standard OTLP/HTTP exporter, instruments openai, and calls a ``@ct.task`` function
that calls the model. Everything runs on loopback:

- a tiny OTLP/HTTP receiver (``POST /v1/traces``, protobuf) stands in for Phoenix and keeps
  what arrives; pass ``--endpoint http://localhost:6006/v1/traces`` to send to a real Phoenix
  (or Jaeger, or a Collector) instead, and look at the spans there;
- an echo model stands in for OpenAI, and a local CT server takes the CT records.

It then checks what Phoenix needs: the task span is an OpenInference ``CHAIN`` with
``input.value`` / ``output.value``, the model call is a ``chat`` span (GenAI conventions,
kind CLIENT) under it, and both carry the CT trace ids. Exit status 0 means all arrived.

Run: ``python examples/phoenix_check.py`` (needs ``pip install
opentelemetry-exporter-otlp-proto-http openai`` and the SDK's ``server`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import kaizen_sdk as ct
from kaizen_server import LocalServer

RECEIVED: list[dict[str, Any]] = []
_SPAN_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class _Receiver(BaseHTTPRequestHandler):
    """OTLP/HTTP traces in protobuf, as a Collector or Phoenix receives them."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    RECEIVED.append({
                        "name": span.name,
                        "kind": _SPAN_KINDS.get(span.kind, str(span.kind)),
                        "scope": scope_spans.scope.name,
                        "schema": scope_spans.schema_url,
                        "span_id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    })
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _EchoModel(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: answers ``echo: <last message>``."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = "echo: " + str(body["messages"][-1]["content"])
        data = json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _check(task: str) -> list[str]:
    """What Phoenix needs and did not get (empty: everything arrived)."""
    problems: list[str] = []
    by_name = {s["name"]: s for s in RECEIVED}
    task_span, chat = by_name.get(f"ct.task {task}"), by_name.get("chat gpt-4o-mini")
    if task_span is None or chat is None:
        return [f"missing spans; received {sorted(by_name)}"]
    attrs = task_span["attributes"]
    expected = {
        "openinference.span.kind": "CHAIN",
        "input.value": json.dumps({"ticket": "Printer on fire"}, separators=(",", ":")),
        "input.mime_type": "application/json",
        "output.value": "echo: Summarize: Printer on fire",
        "ct.task.name": task,
    }
    for key, value in expected.items():
        if attrs.get(key) != value:
            problems.append(f"task span {key} = {attrs.get(key)!r}, expected {value!r}")
    chat_attrs = chat["attributes"]
    wanted: dict[str, object] = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 4, "gen_ai.usage.output_tokens": 5, "ct.task.name": task,
    }
    for key, want in wanted.items():
        if chat_attrs.get(key) != want:
            problems.append(f"chat span {key} = {chat_attrs.get(key)!r}, expected {want!r}")
    if "gen_ai.input.messages" not in chat_attrs:
        problems.append("chat span has no gen_ai.input.messages (content opt-in)")
    if chat["kind"] != "CLIENT" or chat["parent"] != task_span["span_id"]:
        problems.append("the chat span is not a CLIENT span under the task span")
    if chat_attrs.get("ct.parent_trace_id") != attrs.get("ct.trace_id"):
        problems.append("the chat span does not name the task's CT trace as its parent")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="send to this OTLP/HTTP traces URL instead")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    # content on spans is the application's opt-in (the latest GenAI conventions' word for it)
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    receiver = None if args.endpoint else _serve(_Receiver)
    endpoint = args.endpoint or f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"  # type: ignore[union-attr]
    model = _serve(_EchoModel)

    # --- the application's own OpenTelemetry set-up, as in docs/otlp.md ---------------------
    provider = TracerProvider(resource=Resource.create({"service.name": "phoenix-check"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)

    task = "summarize_ticket"
    with LocalServer() as ct_server:
        os.environ.update(KAIZEN_BASE_URL=ct_server.base_url, KAIZEN_API_KEY=ct_server.api_key)
        ct.instrument(openai)
        llm = openai.OpenAI(
            base_url=f"http://127.0.0.1:{model.server_address[1]}/v1", api_key="sk-local",
        )

        @ct.task(task, default_prompt="Summarize: {{ ticket }}")
        def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            out = llm.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": prompt.render(ticket=ticket)}],
            )
            return out.choices[0].message.content or ""

        print("task returned:", summarize("Printer on fire"))
        llm.close()
        ct.flush()
        ct.uninstrument(openai)
    provider.force_flush()
    model.shutdown()
    if receiver is None:
        print(f"sent to {endpoint}; look for 'ct.task {task}' there")
        return 0
    receiver.shutdown()
    for span in RECEIVED:
        kind = span["attributes"].get("openinference.span.kind", span["kind"])
        print(f"received {span['name']!r:34} kind={kind:7} scope={span['scope']}")
    problems = _check(task)
    for problem in problems:
        print("MISSING:", problem)
    print(f"{'FAILED' if problems else 'OK'}: {len(RECEIVED)} spans over OTLP/HTTP in "
          f"{time.perf_counter() - started:.2f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
