"""Background delivery: batching to /ingest, fallback, retries, bounds, flush, close and exit.

Faults come from a small loopback proxy in front of the real local server: it can answer the
next requests of a path with a chosen status, or slow every request down.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

import kaizen_sdk as ct
from kaizen_sdk import _requests, _sender, delivery, tracing
from kaizen_sdk.client import CTClient
from kaizen_sdk.models import IngestRequest, TraceRequest
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]


class Proxy:
    """Forwards to *upstream*; ``fail(path, status, n)`` answers the next *n* requests itself."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[list[Any]] = []  # [path, status, count, headers]
        self.delay = 0.0
        self.seen: list[tuple[str, int, float]] = []  # (path, status, monotonic time)
        self.lock = threading.Lock()
        self._http = httpx.Client(base_url=upstream)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.delay:
                    time.sleep(proxy.delay)
                status, headers, content = proxy.answer(self.command, self.path, body, self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _handle

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up on a slow answer is expected here

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def fail(self, path: str, status: int, count: int, **headers: str) -> None:
        with self.lock:
            self.rules.append([path, status, count, headers])

    def answer(
        self, method: str, path: str, body: bytes, handler: Any
    ) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            for rule in self.rules:
                if path.startswith(rule[0]) and rule[2] > 0:
                    rule[2] -= 1
                    self.seen.append((path, rule[1], time.monotonic()))
                    return rule[1], {"Content-Type": "application/json", **rule[3]}, b"{}"
        headers = {k: v for k, v in handler.headers.items() if k.lower() != "host"}
        resp = self._http.request(method, path, content=body or None, headers=headers)
        with self.lock:
            self.seen.append((path, resp.status_code, time.monotonic()))
        return resp.status_code, {"Content-Type": "application/json"}, resp.content

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@pytest.fixture
def proxy(local_server: LocalServer) -> Iterator[Proxy]:
    p = Proxy(local_server.base_url)
    yield p
    p.close()


@pytest.fixture
def task_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _echo(client: CTClient, task: str) -> Any:
    @client.task(task, default_prompt="Echo {{ x }}")
    def echo(x: int, prompt: Any = None) -> int:
        return x

    return echo


# --- batching and fallback -------------------------------------------------------------------


def test_records_go_to_ingest_in_batches(proxy: Proxy, local_server: LocalServer,
                                         task_name: str) -> None:
    with CTClient(base_url=proxy.url, api_key=local_server.api_key) as client:
        echo = _echo(client, task_name)
        ids = [echo.call(i)[1].trace_id for i in range(30)]
        client.flush()
        assert client.stats() == ct.DeliveryStats(queued=30, sent=30)
        posts = [p for p, _, _ in proxy.seen if p.startswith("/api/v1/ingest")]
        assert 1 <= len(posts) <= 3  # batched, not one request per call
        assert sorted(str(t.id) for t in client.list_traces(task_name)) == sorted(ids)
        assert len(client.list_feedback(task_name)) == 30


def test_a_server_without_ingest_gets_the_single_record_endpoints(
    proxy: Proxy, local_server: LocalServer, task_name: str
) -> None:
    proxy.fail("/api/v1/ingest", 404, 1000)
    try:
        with CTClient(base_url=proxy.url, api_key=local_server.api_key) as client:
            echo = _echo(client, task_name)
            ids = [echo.call(i)[1].trace_id for i in range(3)]
            client.flush()
            assert client.stats() == ct.DeliveryStats(queued=3, sent=3)
            assert sorted(str(t.id) for t in client.list_traces(task_name)) == sorted(ids)
            assert len(client.list_feedback(task_name)) == 3
        paths = [p for p, _, _ in proxy.seen if p.startswith("/api/v1/")]
        assert paths.count("/api/v1/ingest") == 1  # asked once, remembered for the process
        assert paths.count("/api/v1/traces") == 3 and paths.count("/api/v1/feedback") == 3
    finally:
        _sender.forget_no_ingest(proxy.url)


def test_503s_are_retried_and_nothing_is_stored_twice(
    proxy: Proxy, local_server: LocalServer, task_name: str
) -> None:
    proxy.fail("/api/v1/ingest", 503, 2)
    with CTClient(base_url=proxy.url, api_key=local_server.api_key, max_retries=3) as client:
        echo = _echo(client, task_name)
        for i in range(10):
            echo(i)
        client.flush()
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.dropped, stats.retried) == (10, 10, 0, 20)
        assert len(client.list_traces(task_name)) == 10
    statuses = [s for p, s, _ in proxy.seen if p == "/api/v1/ingest"]
    assert statuses == [503, 503, 207]


def test_a_batch_too_large_for_the_server_goes_in_halves(
    proxy: Proxy, local_server: LocalServer, task_name: str
) -> None:
    proxy.fail("/api/v1/ingest", 413, 1)  # the first body is refused as too large
    with CTClient(base_url=proxy.url, api_key=local_server.api_key) as client:
        echo = _echo(client, task_name)
        runs = [echo.call(i)[1] for i in range(6)]
        assert [run.score(0.5) is not None for run in runs[:2]] == [True, True]
        assert client.flush()
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (8, 8, 0, 0)
        assert sorted(str(t.id) for t in client.list_traces(task_name)) == sorted(
            run.trace_id for run in runs)
        assert len(client.list_feedback(task_name)) == 6
        scored = {str(t.id): t.score for t in client.list_traces(task_name)}
        assert [scored[run.trace_id] for run in runs[:2]] == [0.5, 0.5]
        assert tracing.pipeline_for(client).delivery.sender.body_limit is not None
    statuses = [s for p, s, _ in proxy.seen if p == "/api/v1/ingest"]
    assert statuses == [413, 207, 207]


def test_retry_after_is_honoured(proxy: Proxy, local_server: LocalServer,
                                 task_name: str) -> None:
    proxy.fail("/api/v1/ingest", 429, 1, **{"Retry-After": "1"})
    with CTClient(base_url=proxy.url, api_key=local_server.api_key) as client:
        _echo(client, task_name)(1)
        client.flush()
        assert client.stats().sent == 1
    times = [t for p, _, t in proxy.seen if p == "/api/v1/ingest"]
    assert len(times) == 2 and times[1] - times[0] >= 0.9


def test_a_refused_key_drops_the_records_and_never_logs_the_key(
    proxy: Proxy, task_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-wrong-" + uuid.uuid4().hex
    caplog.set_level(logging.DEBUG)
    with CTClient(base_url=proxy.url, api_key=secret) as client:
        echo = _echo(client, task_name)
        assert [echo(i) for i in range(4)] == [0, 1, 2, 3]
        assert client.flush() is False  # nothing was acknowledged
        assert client.stats() == ct.DeliveryStats(queued=4, sent=0, rejected=4)
    assert any("refused the API key" in r.getMessage() for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)


# --- bounds, flush and close -----------------------------------------------------------------


def test_a_full_queue_drops_new_records_counts_them_and_logs_once(
    dead_url: str, task_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = CTClient(base_url=dead_url, api_key="k", max_queue_size=5, max_retries=0)
    echo = _echo(client, task_name)
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        assert [echo(i) for i in range(25)] == list(range(25))
    stats = client.stats()
    assert stats.queued == 25 and stats.sent == 0
    # At most five records are ever held (queued, in flight or kept after failing), whatever
    # the worker managed meanwhile: at least 20 of 25 were refused at the door.
    assert stats.dropped >= 20
    full = [r for r in caplog.records if "queue is full" in r.getMessage()]
    assert len(full) == 1
    client.close()
    assert client.stats().dropped == 25


def test_without_a_delivery_thread_the_exit_still_delivers(
    local_server: LocalServer, task_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At interpreter shutdown no new thread may start: the calls still return, and close()
    # sends what they queued from its own thread.
    real_start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name == "kaizen-delivery":
            raise RuntimeError("can't create new thread at interpreter shutdown")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    client = CTClient(base_url=local_server.base_url, api_key=local_server.api_key)
    echo = _echo(client, task_name)
    assert [echo(i) for i in range(5)] == [0, 1, 2, 3, 4]
    assert client.flush(timeout=5) is False  # nothing could send it yet, and it says so
    client.close()
    monkeypatch.setattr(threading.Thread, "start", real_start)
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (5, 5, 0)
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as reader:
        assert len(reader.list_traces(task_name)) == 5


def test_flush_does_not_wait_for_a_delivery_thread_that_is_gone(
    local_server: LocalServer, task_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery.Delivery, "_run", lambda self: None)  # the thread ends at once
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        echo = _echo(client, task_name)
        echo(1)
        engine = tracing.pipeline_for(client).delivery
        assert engine is not None
        worker = engine._worker
        assert worker is not None
        worker.join(10)
        assert client.flush() is False  # no timeout given: still returns, False
        monkeypatch.undo()
    assert client.stats().sent == 1  # close() sent it from its own thread


def test_is_pending_and_flush_trace(local_server: LocalServer, task_name: str) -> None:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        _, run = _echo(client, task_name).call(1)
        assert delivery.is_pending(run.trace_id)
        assert delivery.is_pending(run.trace_id.upper())
        delivery.flush_trace(run.trace_id)
        assert not delivery.is_pending(run.trace_id)
        assert client.get_trace(run.trace_id).response_text == "1"
        delivery.flush_trace(str(uuid.uuid4()))  # unknown: nothing to do


def test_close_delivers_what_is_queued(local_server: LocalServer, task_name: str) -> None:
    client = CTClient(base_url=local_server.base_url, api_key=local_server.api_key)
    echo = _echo(client, task_name)
    for i in range(40):
        echo(i)
    client.close()
    assert client.stats() == ct.DeliveryStats(queued=40, sent=40)
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as reader:
        assert len(reader.list_traces(task_name)) == 40


def test_module_flush_delivers_for_every_client(local_server: LocalServer,
                                                task_name: str) -> None:
    a = CTClient(base_url=local_server.base_url, api_key=local_server.api_key)
    b = CTClient(base_url=local_server.base_url, api_key=local_server.api_key)
    try:
        _echo(a, task_name)(1)
        _echo(b, task_name)(2)
        assert ct.flush(30) is True
        assert (a.stats().sent, b.stats().sent) == (1, 1)
    finally:
        a.close()
        b.close()


def test_the_exporter_survives_a_record_it_cannot_build(
    local_server: LocalServer, task_name: str
) -> None:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        pipeline = tracing.pipeline_for(client)
        span = pipeline.tracer.start_span("bad")
        record = tracing.CallRecord(trace_id=tracing.new_trace_id(), task=task_name)
        record.metadata = {"x": object(), ("tuple", "key"): 1}  # type: ignore[dict-item]
        pipeline.attach(span, record)
        span.end()
        client.flush()
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.dropped) == (1, 1, 0)


def test_the_wire_forms_have_the_fields_of_the_request_models() -> None:
    # build_batch makes positional wire structs: same names, same order, same defaults
    for model, wire in _requests.WIRE_TYPES.items():
        assert msgspec.structs.fields(wire) and [
            (f.name, f.default) for f in msgspec.structs.fields(wire)
        ] == [(f.name, f.default) for f in msgspec.structs.fields(model)], model.__name__
        assert wire.__struct_config__.omit_defaults == model.__struct_config__.omit_defaults


def test_encode_batch_never_raises() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    batch = IngestRequest(
        traces=[TraceRequest(task_id="t", prompt_text="\ud800", metadata={"c": cyclic})]
    )
    body = json.loads(_requests.encode_batch(batch))
    assert body["traces"][0]["prompt_text"] == "?"
    assert isinstance(body["traces"][0]["metadata"]["c"], list | str)


# --- exit ------------------------------------------------------------------------------------

_EXIT_SCRIPT = """
import sys
from kaizen_sdk import CTClient
client = CTClient()

@client.task(sys.argv[1], default_prompt="p")
def echo(x, prompt=None):
    return x

for i in range(int(sys.argv[2])):
    echo(i)
# no flush(), no close(): a normal exit delivers
"""


def _run(server_url: str, api_key: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    environ.update(KAIZEN_BASE_URL=server_url, KAIZEN_API_KEY=api_key, **env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_EXIT_SCRIPT), *args],
        env=environ, capture_output=True, text=True, timeout=60, check=False,
    )


def test_a_normal_exit_delivers_everything_queued(
    local_server: LocalServer, task_name: str
) -> None:
    proc = _run(local_server.base_url, local_server.api_key, task_name, "120")
    assert proc.returncode == 0, proc.stderr
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as reader:
        assert len(reader.list_traces(task_name, limit=500)) == 120
        assert len(reader.list_feedback(task_name, limit=500)) == 120


def test_exit_is_bounded_by_the_shutdown_timeout_when_the_server_is_slow(
    proxy: Proxy, local_server: LocalServer, task_name: str
) -> None:
    proxy.delay = 2.0  # every request takes two seconds
    started = time.monotonic()
    proc = _run(proxy.url, local_server.api_key, task_name, "50", KAIZEN_SHUTDOWN_TIMEOUT="1")
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    # the cold prompt fetch (1.5 s at most) + the exit budget (1 s) + interpreter start-up;
    # without the bound, retries against this server would hold the exit for 30 s
    assert elapsed < 15, elapsed


# --- prompt fetches ---------------------------------------------------------------------------


def test_a_failing_prompt_fetch_is_tried_once_then_retried_in_the_background(
    proxy: Proxy, local_server: LocalServer, task_name: str
) -> None:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as direct:
        _echo(direct, task_name)(0)  # its trace makes the default prompt version 1
        direct.flush()
        [v1] = direct.list_prompt_versions(task_name)
    proxy.fail("/api/v1/prompts/", 503, 1)
    with CTClient(base_url=proxy.url, api_key=local_server.api_key) as client:

        @client.task(task_name, default_prompt="fallback {{ x }}")
        def f(x: int, prompt: Any) -> int:
            return int(prompt.version_number)

        assert [f(i) for i in range(50)] == [0] * 50  # the default, at once
        fetches = [s for p, s, _ in proxy.seen if p.startswith("/api/v1/prompts/")]
        assert fetches == [503]  # one short attempt on the first call, none after it

        def on_v1() -> bool:
            return f(0) == 1

        deadline = time.monotonic() + 10
        while not on_v1() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert on_v1()  # the background retry (after about a second) fetched version 1
        _, run = f.call(1)
        assert run.prompt is not None and run.prompt.id == v1.id


# --- scores in ingest batches ----------------------------------------------------------------


def test_ingest_applies_scores_after_the_batch_traces_once_per_score_id(
    local_server: LocalServer, task_name: str
) -> None:
    trace_id, score_id, orphan = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    later = str(uuid.uuid4())  # a trace the server has not got yet
    body = {
        "traces": [{"task_id": task_name, "id": trace_id, "prompt_text": "p"}],
        "scores": [
            {"id": score_id, "trace_id": trace_id, "score": 0.25, "scored_by": "judge"},
            {"id": orphan, "trace_id": later, "score": 0.5},
        ],
    }
    headers = {"X-API-Key": local_server.api_key}
    url = f"{local_server.base_url}/api/v1/ingest"
    answers = [httpx.post(url, json=body, headers=headers) for _ in range(2)]
    for resp in answers:  # the same answer twice: the score is applied once, by its id
        assert resp.status_code == 207
        result = resp.json()
        assert (result["accepted"], result["scores"], result["errors"]) == (1, 2, [])
    stored = httpx.get(f"{local_server.base_url}/api/v1/traces/{trace_id}", headers=headers)
    assert (stored.json()["score"], stored.json()["scored_by"]) == (0.25, "judge")
    # the score for the trace not stored yet was held, and applies when it arrives
    httpx.post(url, json={"traces": [{"task_id": task_name, "id": later}]}, headers=headers)
    stored = httpx.get(f"{local_server.base_url}/api/v1/traces/{later}", headers=headers)
    assert (stored.json()["score"], stored.json()["scored_by"]) == (0.5, "sdk")


def test_a_server_that_ignores_scores_in_ingest_gets_them_one_by_one(
    local_server: LocalServer, task_name: str
) -> None:
    from reliability._proxy import FaultProxy

    with FaultProxy(local_server.base_url) as proxy, CTClient(
        base_url=proxy.url, api_key=local_server.api_key
    ) as client:
        echo = _echo(client, task_name)
        _, run = echo.call(1)
        assert client.flush() is True  # the trace is stored
        # an older server: it acknowledges the batch, says nothing about "scores"
        proxy.fail_next(1, 207, body=b'{"accepted": 0, "errors": []}')
        assert run.score(0.5) is not None
        assert client.flush() is True
        assert client.get_trace(run.trace_id).score == 0.5
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.rejected) == (2, 2, 0)
        paths = [r.path for r in proxy.requests(delivery_only=False)]
    assert paths.count(f"/api/v1/traces/{run.trace_id}/score") == 1
