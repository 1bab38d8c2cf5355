"""A loopback HTTP sink that answers every exporter quickly, so benchmarks never leave the machine.

Peers (Langfuse's OTLP exporter, LangSmith's run uploads, OTLP span exporters) and the CT
exporter all post here. It answers:

- ``GET /api/v1/prompts/{task}``: a CT ``Prompt`` (so the decorator's cache can be warmed);
- ``POST /api/v1/ingest``: ``207`` with ``{"accepted": n, "errors": []}``;
- ``POST /api/v1/traces`` and ``/api/v1/feedback``: ``201`` with the record's id;
- ``GET /api/public/v2/prompts/{name}``: a Langfuse text prompt;
- ``GET /info``: LangSmith's server info, as the hosted service answers it (multipart, zstd);
- under ``/mlflow`` (an MLflow tracking server's base URL): ``GET /version``,
  ``GET /api/2.0/mlflow/experiments/get``, ``POST /api/3.0/mlflow/traces`` and
  ``POST /v1/traces`` answered as a tracking server (3.4 or later, SQL backend) answers them,
  so mlflow-tracing logs spans over OTLP and then each trace's info as it would for real; the
  prefix keeps its OTLP posts apart from the OTLP peers' in the counters;
- anything else: ``200`` with ``{}``.

It runs in its own process (``python -m benchmarks.sink``) so its CPU time never competes
with the measured process for the GIL, and it counts what it received:
``GET /__sink/stats`` returns ``{"requests": n, "bytes": n, "paths": {path: n}}``;
``POST /__sink/reset`` zeroes the counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Sink", "main"]

_PROMPT_TEXT = "Summarize this ticket in one sentence: {{ ticket }}"
_TASK_ID = "6f1c0c43-5a53-4c1f-9a53-3c7f1f6c2a10"
_PROMPT_ID = "0b7d7a8e-1f3e-4f43-8d8e-6a1c7b0e9d21"


_LANGSMITH_INFO = {
    "version": "bench-sink",
    "instance_flags": {"zstd_compression_enabled": True},
}


_MLFLOW_PREFIX = "/mlflow"
_MLFLOW_VERSION = "3.17.2"
_MLFLOW_SPANS_LOCATION = "mlflow.trace.spansLocation"


def _mlflow_experiment(experiment_id: str) -> dict[str, Any]:
    return {
        "experiment": {
            "experiment_id": experiment_id,
            "name": "Default",
            "artifact_location": f"mlflow-artifacts:/{experiment_id}",
            "lifecycle_stage": "active",
            "creation_time": 1767225600000,
            "last_update_time": 1767225600000,
        }
    }


def _mlflow_started_trace(body: bytes) -> dict[str, Any]:
    # StartTraceV3 answers the stored TraceInfo. A SQL-backed server has already received the
    # spans over OTLP and tags the trace so; without the tag the client would also upload the
    # spans as an artifact, which a server that took them never asks for.
    try:
        info = json.loads(body or b"{}").get("trace", {}).get("trace_info", {})
    except ValueError:
        info = {}
    info.setdefault("tags", {})[_MLFLOW_SPANS_LOCATION] = "TRACKING_STORE"
    return {"trace": {"trace_info": info}}


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.paths: dict[str, int] = {}

    def add(self, path: str, size: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += size
            self.paths[path] = self.paths.get(path, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "bytes": self.bytes, "paths": dict(self.paths)}

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.bytes = 0
            self.paths = {}


_COUNTERS = _Counters()


def _ct_prompt(task: str) -> dict[str, Any]:
    return {
        "id": _PROMPT_ID,
        "task_id": _TASK_ID,
        "version_number": 1,
        "prompt_text": _PROMPT_TEXT,
        "eval_score": 0.8,
        "status": "active",
        "optimizer": "baseline",
        "created_at": "2026-01-01T00:00:00Z",
    }


def _langfuse_prompt(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": 1,
        "type": "text",
        "prompt": _PROMPT_TEXT,
        "config": {},
        "labels": ["production"],
        "tags": [],
        "commitMessage": None,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench-sink/1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        body = self._body() if method in ("POST", "PUT", "PATCH") else b""
        path = self.path.split("?", 1)[0]
        if path == "/__sink/stats":
            self._send(200, _COUNTERS.snapshot())
            return
        if path == "/__sink/reset":
            _COUNTERS.reset()
            self._send(200, {})
            return
        _COUNTERS.add(_path_key(path), len(body))
        if method == "GET" and path.startswith("/api/v1/prompts/"):
            self._send(200, _ct_prompt(path.rsplit("/", 1)[-1]))
        elif method == "GET" and path == "/api/v1/health":
            self._send(200, {"status": "ok", "version": "sink"})
        elif method == "POST" and path == "/api/v1/ingest":
            accepted = 0
            try:
                doc = json.loads(body or b"{}")
                accepted = len(doc.get("traces", [])) + len(doc.get("feedback", []))
            except ValueError:
                pass
            self._send(207, {"accepted": accepted, "errors": []})
        elif method == "POST" and path in ("/api/v1/traces", "/api/v1/feedback"):
            try:
                record_id = json.loads(body or b"{}").get("id") or str(uuid.uuid4())
            except ValueError:
                record_id = str(uuid.uuid4())
            self._send(201, {"id": record_id, "task_id": _TASK_ID})
        elif method == "GET" and path == "/info":
            # What a hosted LangSmith answers: multipart uploads with zstd compression.
            self._send(200, _LANGSMITH_INFO)
        elif path.startswith(_MLFLOW_PREFIX + "/"):
            self._mlflow(method, path.removeprefix(_MLFLOW_PREFIX), body)
        elif method == "GET" and path.startswith("/api/public/v2/prompts/"):
            self._send(200, _langfuse_prompt(path.rsplit("/", 1)[-1]))
        elif path.endswith("/v1/traces") or path.endswith("/v1/metrics"):
            # OTLP/HTTP: an empty protobuf ExportTraceServiceResponse is an empty body.
            self._send(200, b"", "application/x-protobuf")
        else:
            self._send(200, {})

    def _mlflow(self, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path == "/version":
            # 3.4 or later: the client logs spans over OTLP instead of as an artifact
            self._send(200, _MLFLOW_VERSION.encode(), "text/plain")
        elif method == "GET" and path == "/api/2.0/mlflow/experiments/get":
            query = self.path.partition("?")[2]
            experiment_id = query.partition("experiment_id=")[2].partition("&")[0] or "0"
            self._send(200, _mlflow_experiment(experiment_id))
        elif method == "POST" and path == "/api/3.0/mlflow/traces":
            self._send(200, _mlflow_started_trace(body))
        elif path == "/v1/traces":
            self._send(200, b"", "application/x-protobuf")
        else:
            self._send(200, {})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_PATCH(self) -> None:
        self._route("PATCH")


def _path_key(path: str) -> str:
    for prefix in ("/api/v1/prompts/", "/api/public/v2/prompts/", "/runs/"):
        if path.startswith(prefix) and path != prefix:
            return prefix + "*"
    return path


class Sink:
    """The sink, run in a child process; use as a context manager.

    Example::

        with Sink() as sink:
            os.environ["LANGSMITH_ENDPOINT"] = sink.url
            ...
            assert sink.stats()["requests"] > 0
    """

    def __init__(self) -> None:
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> Sink:
        """Start the child process and wait until it listens."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.sink"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"benchmark sink did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def _call(self, method: str, path: str) -> dict[str, Any]:
        data = b"" if method == "POST" else None
        req = urllib.request.Request(self.url + path, method=method, data=data)
        with urllib.request.urlopen(req, timeout=10) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def stats(self) -> dict[str, Any]:
        """Return the request counters."""
        return self._call("GET", "/__sink/stats")

    def reset(self) -> None:
        """Zero the request counters."""
        self._call("POST", "/__sink/reset")

    def stop(self) -> None:
        """Stop the child process."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    """Serve on a free loopback port; print ``PORT n`` once listening."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    parent = os.getppid()

    def watch_parent() -> None:
        # An orphaned sink must not outlive a benchmark that died: exit with the parent.
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
