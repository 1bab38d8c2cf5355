"""Metric 7: OTLP trace ingest (``POST /v1/traces``) beside our own ingest, on one local server.

One `LocalServer` runs in its own process (real HTTP on loopback, SQLite in a temporary
folder). Round after round, in an order that rotates, each contender sends the same number of
records in batches of `BATCH` on one keep-alive connection:

- **otlp**: ``ExportTraceServiceRequest`` protobuf bodies, each span a chat call as an
  OpenTelemetry GenAI instrumentation makes it (model, usage, ``gen_ai.input.messages`` and
  ``gen_ai.output.messages``, ``ct.task.name``, a service resource): decoded, mapped, priced
  and stored as CT traces.
- **own_ingest**: ``POST /api/v1/ingest`` JSON bodies with the same traces as our SDK sends them.

The figure is records (spans or traces) per CPU second **of the server process** (user +
system, every thread, from ``/proc``), median over the rounds. Phoenix's OTLP ingest is not
measured (it would need a Phoenix server and its database in this run): left out on purpose.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks._harness import Metric

__all__ = ["BATCH", "run"]

BATCH = 256
"""Records per request."""

API_KEY = "kaizen-bench-key"
REPO = Path(__file__).resolve().parent.parent
TASK = "bench-otlp"

_SERVER = """
import sys
from kaizen_server import LocalServer
server = LocalServer(db_path=sys.argv[2], api_key=sys.argv[1]).start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _otlp_body(n: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    def kv(key: str, value: str | int) -> KeyValue:
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(
            string_value=value)
        return KeyValue(key=key, value=any_value)

    spans = []
    for i in range(n):
        attrs = [
            kv("ct.task.name", TASK), kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.provider.name", "openai"), kv("gen_ai.request.model", "gpt-4o-mini"),
            kv("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            kv("gen_ai.response.id", f"chatcmpl-{i}"), kv("gen_ai.usage.input_tokens", 30),
            kv("gen_ai.usage.output_tokens", 12),
            kv("gen_ai.response.finish_reasons", "stop"), kv("server.address", "api.openai.com"),
            kv("gen_ai.input.messages", json.dumps([
                {"role": "system", "parts": [{"type": "text", "content": "Summarize."}]},
                {"role": "user", "parts": [{"type": "text", "content": f"ticket {i}"}]}])),
            kv("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": f"summary {i}"}],
                 "finish_reason": "stop"}])),
        ]
        spans.append(Span(trace_id=os.urandom(16), span_id=os.urandom(8),
                          name="chat gpt-4o-mini", kind=3,
                          start_time_unix_nano=1_700_000_000_000_000_000,
                          end_time_unix_nano=1_700_000_000_012_500_000, attributes=attrs))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [kv("service.name", "support-bot")]},
        scope_spans=[ScopeSpans(spans=spans)],
    )])
    return request.SerializeToString()


def _ingest_body(n: int) -> bytes:
    traces = [{"id": str(uuid.uuid4()), "task_id": TASK, "prompt_text": f"ticket {i}",
               "response_text": f"summary {i}", "model": "gpt-4o-mini-2024-07-18",
               "tokens": 42, "latency_ms": 12.5, "metadata": {"session": "s-1"}}
              for i in range(n)]
    return json.dumps({"traces": traces}).encode()


def _send(conn: http.client.HTTPConnection, path: str, body: bytes, media: str) -> None:
    conn.request("POST", path, body=body,
                 headers={"X-API-Key": API_KEY, "Content-Type": media})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status not in (200, 207):
        raise RuntimeError(f"{path} answered {resp.status}: {data[:200]!r}")


def run(quick: bool) -> list[Metric]:
    rounds, batches = (3, 2) if quick else (9, 24)
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-otlp-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, API_KEY, str(Path(tmp) / "otlp.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO),
        )
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            host, port = url.removeprefix("http://").rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            conn.request("POST", "/api/v1/tasks", body=json.dumps(
                {"name": TASK, "feedback_threshold": 1_000_000_000}).encode(),
                headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
            conn.getresponse().read()
            contenders = {
                "otlp": ("/v1/traces", "application/x-protobuf", _otlp_body),
                "own_ingest": ("/api/v1/ingest", "application/json", _ingest_body),
            }
            for path, media, make in contenders.values():  # warm-up: imports, price table
                _send(conn, path, make(BATCH), media)
            per_s: dict[str, list[float]] = {name: [] for name in contenders}
            names = list(contenders)
            for r in range(rounds):
                for name in names[r % 2:] + names[:r % 2]:
                    path, media, make = contenders[name]
                    bodies = [make(BATCH) for _ in range(batches)]
                    cpu = _cpu_s(proc.pid)
                    for body in bodies:
                        _send(conn, path, body, media)
                    used = _cpu_s(proc.pid) - cpu
                    per_s[name].append(batches * BATCH / max(used, 1e-3))
            conn.close()
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    ours, own = statistics.median(per_s["otlp"]), statistics.median(per_s["own_ingest"])
    spread = {("kaizen" if k == "otlp" else k): f"{min(v):,.0f}-{max(v):,.0f}"
              for k, v in per_s.items()}
    return [Metric(
        name="server_otlp_spans_per_cpu_s", unit="spans/CPU s", better="higher", kaizen=ours,
        peers={"own_ingest": own, "phoenix_otlp": None},
        goal="at least as many spans per server CPU second as our own ingest takes records"
             " (issue 27)",
        goal_met=ours >= own, verdict=f"{ours / own:.2f}x our own ingest",
        notes=[f"{BATCH} records per request, {batches} requests per round, {rounds} rounds,"
               " alternating; server CPU from /proc",
               "phoenix_otlp: not measured (needs a Phoenix server in the run); left out"],
        spread=spread,
    )]


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    started = time.perf_counter()
    for metric in run(quick="--quick" in sys.argv):
        print(metric.to_json(), metric.verdict, f"({time.perf_counter() - started:.1f} s)")
