"""Metric 7: OTLP trace ingest (``POST /v1/traces``) beside our own ingest and beside Phoenix's
OTLP ingest of the same spans, in one run.

One `LocalServer` runs in its own process (real HTTP on loopback, SQLite in a temporary
folder), and so does a Phoenix server (``python -m phoenix.server.main serve``, its default
SQLite database in a temporary working folder). Round after round, in an order that rotates,
each contender takes the same number of records in batches of `BATCH` on one keep-alive
connection:

- **otlp**: ``ExportTraceServiceRequest`` protobuf bodies, each span a chat call as an
  OpenTelemetry GenAI instrumentation makes it (model, usage, ``gen_ai.input.messages`` and
  ``gen_ai.output.messages``, ``ct.task.name``, a service resource): decoded, mapped, priced
  and stored as CT traces.
- **otlp_json**: the same spans as OTLP/JSON (``application/json``, ids in hex): in the notes
  and the spread, beside the row's protobuf figure.
- **own_ingest**: ``POST /api/v1/ingest`` JSON bodies with the same traces as our SDK sends them.
- **phoenix_otlp**: the same protobuf bodies to Phoenix's ``/v1/traces``. Phoenix answers before
  it stores (a background bulk inserter), so its round ends when its database holds every span
  sent so far (polled from this process); the CPU it spends meanwhile counts.

The figure is records (spans or traces) per CPU second **of the server process** (user +
system, every thread, from ``/proc``), median over the rounds. Phoenix comes from the bench
extra (``arize-phoenix``); ``KAIZEN_BENCH_PHOENIX_PATH`` names a folder to put first on its
``PYTHONPATH`` instead (a Phoenix installed with ``pip install --target``, when its pins do not
fit the test extra's). Without Phoenix its figure is ``None``, with the reason in the notes.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks._harness import Metric

__all__ = ["BATCH", "run"]

BATCH = 256
"""Records per request."""

API_KEY = "kaizen-bench-key"
REPO = Path(__file__).resolve().parent.parent
TASK = "bench-otlp"
PHOENIX_PATH_ENV = "KAIZEN_BENCH_PHOENIX_PATH"
"""A folder put first on Phoenix's ``PYTHONPATH`` (optional; see the module docstring)."""
PHOENIX_START_S = 120.0
"""Seconds Phoenix may take to answer ``/healthz`` (it migrates its database first)."""
PHOENIX_STORE_S = 300.0
"""Seconds Phoenix may take to store one round's spans."""
PHOENIX_BATCHES = 2
"""Requests per round sent to Phoenix: it stores about 150 spans per CPU second, so a round of
our size would take minutes; the figure is a rate either way."""

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


def _otlp_json_body(n: int) -> bytes:
    from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(_otlp_body(n))
    message = MessageToDict(request)
    for resource_spans in message["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:  # OTLP/JSON spells ids in hex, not base64
                for field in ("traceId", "spanId"):
                    span[field] = base64.b64decode(span[field]).hex()
    return json.dumps(message).encode()


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Phoenix:
    """A Phoenix server in a process of its own, its OTLP endpoint and its span count."""

    def __init__(self, tmp: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
        extra = os.environ.get(PHOENIX_PATH_ENV)
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
        self.port = _free_port()
        work = tmp / "phoenix"
        work.mkdir()
        self.db = work / "phoenix.db"
        env.update(PHOENIX_WORKING_DIR=str(work), PHOENIX_HOST="127.0.0.1",
                   PHOENIX_PORT=str(self.port), PHOENIX_GRPC_PORT=str(_free_port()),
                   PHOENIX_TELEMETRY_ENABLED="false")
        self.log = tmp / "phoenix.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "phoenix.server.main", "serve"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=str(tmp),
            )
        self.version = ""

    def wait_ready(self) -> str | None:
        """Wait until it answers ``/healthz``: ``None``, or why it did not."""
        deadline = time.monotonic() + PHOENIX_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                return f"Phoenix exited with {self.proc.returncode}: {' '.join(tail)[:200]}"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    self.version = subprocess.run(
                        [sys.executable, "-c", "import importlib.metadata as m;"
                         "print(m.version('arize-phoenix'))"],
                        env={**os.environ, "PYTHONPATH": os.pathsep.join(
                            p for p in (os.environ.get(PHOENIX_PATH_ENV),
                                        os.environ.get("PYTHONPATH")) if p)},
                        capture_output=True, text=True, timeout=60, check=False,
                    ).stdout.strip()
                    return None
                conn.close()
            except OSError:
                pass
            time.sleep(0.2)
        return f"Phoenix did not answer /healthz within {PHOENIX_START_S:.0f} s"

    def stored(self) -> int:
        """Spans in Phoenix's database now."""
        if not self.db.exists():
            return 0
        with contextlib.closing(sqlite3.connect(str(self.db), timeout=30)) as db:
            try:
                return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])
            except sqlite3.OperationalError:  # not migrated yet
                return 0

    def wait_stored(self, expected: int) -> None:
        """Poll until the database holds *expected* spans (bounded)."""
        deadline = time.monotonic() + PHOENIX_STORE_S
        while self.stored() < expected:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"Phoenix stored {self.stored()} of {expected} spans")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _start_server(tmp: str) -> tuple[subprocess.Popen[str], str, int]:
    # this checkout's server, not the one the virtualenv was installed from
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, API_KEY, str(Path(tmp) / "otlp.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(REPO),
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    conn.request("POST", "/api/v1/tasks", body=json.dumps(
        {"name": TASK, "feedback_threshold": 1_000_000_000}).encode(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()
    return proc, host, int(port)


def _stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run(quick: bool) -> list[Metric]:
    rounds, batches = (3, 2) if quick else (9, 24)
    notes = [f"{BATCH} records per request, {batches} requests per round ({PHOENIX_BATCHES}"
             f" to Phoenix), {rounds} rounds, alternating; server CPU from /proc"]
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-otlp-") as tmp:
        phoenix: _Phoenix | None = _Phoenix(Path(tmp))
        assert phoenix is not None
        why = phoenix.wait_ready()
        if why is not None:
            notes.append(f"phoenix_otlp: not measured ({why}); install the bench extra"
                         f" or set {PHOENIX_PATH_ENV}")
            phoenix.stop()
            phoenix = None
        proc, host, port = _start_server(tmp)
        try:
            sent_to_phoenix = 0

            def send_phoenix(bodies: list[bytes]) -> None:
                # a connection per round: uvicorn closes one idle for 5 s
                nonlocal sent_to_phoenix
                assert phoenix is not None
                pconn = http.client.HTTPConnection("127.0.0.1", phoenix.port, timeout=120)
                for body in bodies:
                    pconn.request("POST", "/v1/traces", body=body,
                                  headers={"Content-Type": "application/x-protobuf"})
                    resp = pconn.getresponse()
                    data = resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"Phoenix answered {resp.status}: {data[:200]!r}")
                pconn.close()
                sent_to_phoenix += len(bodies) * BATCH
                phoenix.wait_stored(sent_to_phoenix)

            def send_ours(path: str, media: str) -> Callable[[list[bytes]], None]:
                def send(bodies: list[bytes]) -> None:
                    conn = http.client.HTTPConnection(host, port, timeout=120)
                    for body in bodies:
                        _send(conn, path, body, media)
                    conn.close()
                return send

            contenders: dict[str, tuple[Callable[[int], bytes], Callable[[list[bytes]], None],
                                        int]] = {
                "otlp": (_otlp_body, send_ours("/v1/traces", "application/x-protobuf"),
                         proc.pid),
                "otlp_json": (_otlp_json_body, send_ours("/v1/traces", "application/json"),
                              proc.pid),
                "own_ingest": (_ingest_body, send_ours("/api/v1/ingest", "application/json"),
                               proc.pid),
            }
            if phoenix is not None:
                contenders["phoenix_otlp"] = (_otlp_body, send_phoenix, phoenix.proc.pid)
            for make, send, _pid in contenders.values():  # warm-up: imports, price table
                send([make(BATCH)])
            if phoenix is not None:  # what Phoenix spends idle, for the reader
                idle = _cpu_s(phoenix.proc.pid)
                time.sleep(2.0)
                notes.append(f"phoenix_otlp: Phoenix {phoenix.version or '?'} idles at"
                             f" {(_cpu_s(phoenix.proc.pid) - idle) / 2.0 * 1000:.0f} ms CPU/s;"
                             " its rounds end when its database holds every span sent")
            per_s: dict[str, list[float]] = {name: [] for name in contenders}
            names = list(contenders)
            for r in range(rounds):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    make, send, pid = contenders[name]
                    count = min(batches, PHOENIX_BATCHES) if name == "phoenix_otlp" else batches
                    bodies = [make(BATCH) for _ in range(count)]
                    cpu = _cpu_s(pid)
                    send(bodies)
                    used = _cpu_s(pid) - cpu
                    per_s[name].append(count * BATCH / max(used, 1e-3))
        finally:
            _stop_server(proc)
            if phoenix is not None:
                phoenix.stop()
    ours, own = statistics.median(per_s["otlp"]), statistics.median(per_s["own_ingest"])
    theirs = statistics.median(per_s["phoenix_otlp"]) if "phoenix_otlp" in per_s else None
    as_json = statistics.median(per_s["otlp_json"])
    notes.append(f"otlp_json: the same spans as OTLP/JSON, {as_json:,.0f} spans/CPU s"
                 f" ({as_json / own:.2f}x our own ingest)")
    spread = {("kaizen" if k == "otlp" else k): f"{min(v):,.0f}-{max(v):,.0f}"
              for k, v in per_s.items()}
    return [Metric(
        name="server_otlp_spans_per_cpu_s", unit="spans/CPU s", better="higher", kaizen=ours,
        peers={"own_ingest": own, "phoenix_otlp": theirs},
        goal="at least as many spans per server CPU second as our own ingest takes records"
             " (issue 27)",
        goal_met=ours >= own,
        verdict=f"{ours / own:.2f}x our own ingest"
                + (f", {ours / theirs:.1f}x Phoenix's OTLP ingest" if theirs else ""),
        notes=notes, spread=spread,
    )]


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    started = time.perf_counter()
    for metric in run(quick="--quick" in sys.argv):
        print(metric.to_json(), metric.verdict, f"({time.perf_counter() - started:.1f} s)")
