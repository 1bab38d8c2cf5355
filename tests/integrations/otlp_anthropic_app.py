"""An application calling Anthropic's Messages API through the real ``anthropic`` client, traced
only by a third-party instrumentation and exported with the standard OTLP/HTTP exporter to the
local CT server; run in a process of its own by ``test_otlp_instrumentations.py``.

``python otlp_anthropic_app.py PEER SERVER_URL KEY`` instruments *PEER* (``openllmetry`` or
``openinference``), serves a minimal Messages API stand-in on loopback in this process, makes
one call inside a span carrying ``ct.task.name``, flushes the exporter and prints one JSON
line: the ids of every span exported, and the export results.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otlp_app import _Recording

MODEL = "claude-3-5-haiku-20241022"
"""A dated model name the price table knows."""

USAGE = {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": 0,
         "cache_creation_input_tokens": 0}


class _Messages(BaseHTTPRequestHandler):
    """``POST /v1/messages``: an assistant message echoing the last user text."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else last[0]["text"]
        payload = json.dumps({
            "id": "msg_standin", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": f"echo: {text}"}],
            "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def main(peer: str, server_url: str, key: str) -> None:
    standin = ThreadingHTTPServer(("127.0.0.1", 0), _Messages)
    threading.Thread(target=standin.serve_forever, daemon=True).start()
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{peer}-claude"}))
    exporter = _Recording(OTLPSpanExporter(endpoint=f"{server_url}/v1/traces",
                                           headers={"Authorization": f"Bearer {key}"},
                                           timeout=30))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=600_000))
    instrumentor: Any
    if peer == "openllmetry":
        from opentelemetry.instrumentation.anthropic import AnthropicInstrumentor as instrumentor
    elif peer == "openinference":
        from openinference.instrumentation.anthropic import AnthropicInstrumentor as instrumentor
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    instrumentor().instrument(tracer_provider=provider)
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{standin.server_address[1]}",
                                 api_key="sk-ant-test", max_retries=0)
    tracer = provider.get_tracer("otlp_anthropic_app")
    with tracer.start_as_current_span("handle request") as outer:
        outer.set_attribute("ct.task.name", f"otlp-{peer}-claude")
        client.messages.create(model=MODEL, max_tokens=64,
                               messages=[{"role": "user", "content": "say claude"}])
    provider.shutdown()
    standin.shutdown()
    print(json.dumps({"spans": exporter.spans, "results": exporter.results}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
