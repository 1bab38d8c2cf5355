"""The sender posts through its transport directly: the same bytes, deadline and hooks.

`kaizen_sdk._sender.Sender` builds each ingest request once per path with the httpx client
and then hands copies straight to the transport (the client's per-request layers cost the
sender thread more CPU than the records). These tests hold that to the client's behaviour:
the request on the wire is byte for byte the one ``httpx.Client.post`` sends, cookies a
server sets are sent back, the total deadline still cuts a trickling server, an injected
transport still sees every request, a closed sender sends nothing, and httpx's log line
stays (without the key). They talk to real loopback sockets.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaizen_sdk import _sender
from kaizen_sdk._config import resolve_settings
from kaizen_sdk._http import USER_AGENT
from kaizen_sdk._requests import encode_batch
from kaizen_sdk._sender import GiveUp, LogLimiter, Sender, forget_no_ingest
from kaizen_sdk._tls import httpx_options
from kaizen_sdk.models import IngestRequest, ScoreItem, TraceRequest

KEY = "sk-transport-test-0123456789"
ANSWER = b'{"accepted":1,"errors":[],"scores":null}'


class _RawServer:
    """A loopback HTTP/1.1 server that keeps every request's raw bytes and answers 207.

    ``cookie`` is set on its first answer; ``trickle`` makes it answer one byte every
    0.1 s (for at most 30 s) instead.
    """

    def __init__(self, *, cookie: str | None = None, trickle: bool = False) -> None:
        self.requests: list[bytes] = []
        self.cookie = cookie
        self.trickle = trickle
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5.0)
        buf = b""
        with conn:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(1 << 16)
                    if not data:
                        return
                    buf += data
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(rest) < length:
                    rest += conn.recv(1 << 16)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buf = rest[length:]
                extra = b""
                if self.cookie is not None and len(self.requests) == 1:
                    extra = b"Set-Cookie: " + self.cookie.encode() + b"; Path=/\r\n"
                answer = (b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/json\r\n"
                          + extra + b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER)
                if self.trickle:
                    for byte in answer[:300]:
                        if self._stop.wait(0.1):
                            return
                        conn.sendall(bytes([byte]))
                    return
                conn.sendall(answer)

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def server() -> Iterator[_RawServer]:
    srv = _RawServer()
    yield srv
    srv.close()


def _make(url: str, transport: httpx.BaseTransport | None = None, **kw: Any) -> Sender:
    settings = resolve_settings(api_key=KEY, base_url=url, environ={}, **kw)
    return Sender(settings, LogLimiter(), lambda n: None, transport=transport)


def _batch(n: int = 3) -> IngestRequest:
    return IngestRequest(traces=[
        TraceRequest(task_id="transport-test", prompt_text=f"p{i}", response_text="r")
        for i in range(n)
    ])


def test_the_ingest_request_on_the_wire_is_the_clients_byte_for_byte(
    server: _RawServer,
) -> None:
    sender = _make(server.url)
    batch = _batch()
    try:
        assert sender.deliver(batch, time.monotonic() + 10) == (0, 0)
        assert sender.deliver(_batch(5), time.monotonic() + 10) == (0, 0)
    finally:
        sender.close()
    settings = sender.settings
    options = httpx_options(settings, timeout=10.0)
    headers = {"X-API-Key": KEY, "User-Agent": USER_AGENT,
               "Content-Type": "application/json", "Accept": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers, **options) as reference:
        reference.post("/api/v1/ingest", content=encode_batch(batch))
        reference.post("/api/v1/ingest", content=encode_batch(_batch(5)))
    assert len(server.requests) == 4
    ours, theirs = server.requests[:2], server.requests[2:]
    assert ours == theirs
    assert ours[0].startswith(b"POST /api/v1/ingest HTTP/1.1\r\nHost: 127.0.0.1:")


def test_posts_go_through_the_transport_not_the_clients_send(
    server: _RawServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[httpx.Request] = []
    real_send = httpx.Client.send

    def counting(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        sent.append(request)
        return real_send(self, request, **kw)

    monkeypatch.setattr(httpx.Client, "send", counting)
    sender = _make(server.url)
    try:
        for _ in range(3):
            assert sender.deliver(_batch(), time.monotonic() + 10) == (0, 0)
    finally:
        sender.close()
    assert len(server.requests) == 3
    assert sent == []


def test_a_cookie_the_server_sets_is_sent_back_as_the_client_would() -> None:
    srv = _RawServer(cookie="lb=node-7")
    sender = _make(srv.url)
    try:
        for _ in range(3):
            assert sender.deliver(_batch(), time.monotonic() + 10) == (0, 0)
    finally:
        sender.close()
        srv.close()
    heads = [raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") for raw in srv.requests]
    assert len(heads) == 3
    assert not any(line.lower().startswith(b"cookie:") for line in heads[0])
    for head in heads[1:]:
        assert b"Cookie: lb=node-7" in head


def test_a_trickling_server_is_cut_at_the_total_deadline() -> None:
    srv = _RawServer(trickle=True)  # a byte every 0.1 s: no single read times out
    sender = _make(srv.url, max_retries=0, timeout=30.0)
    started = time.monotonic()
    try:
        with pytest.raises(GiveUp) as stop:
            sender.deliver(_batch(), started + 1.0)
    finally:
        sender.close()
        srv.close()
    elapsed = time.monotonic() - started
    assert stop.value.reason == "ReadTimeout"
    assert elapsed < 5.0, f"the request ran {elapsed:.1f} s past a 1 s deadline"


def test_an_injected_transport_sees_each_request_whole() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=ANSWER)

    sender = _make("http://ct.invalid", transport=httpx.MockTransport(answer), timeout=4.0)
    batch = _batch()
    try:
        assert sender.deliver(batch, time.monotonic() + 10) == (0, 0)
    finally:
        sender.close()
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == "http://ct.invalid/api/v1/ingest"
    assert request.content == encode_batch(batch)
    assert request.headers["X-API-Key"] == KEY
    assert request.headers["Content-Length"] == str(len(request.content))
    timeout = request.extensions["timeout"]
    assert set(timeout) == {"connect", "read", "write", "pool"}
    assert all(0 < value <= 4.0 for value in timeout.values())


def test_a_closed_sender_sends_nothing() -> None:
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=ANSWER)

    transport = httpx.MockTransport(answer)
    sender = _make("http://ct.invalid", transport=transport, max_retries=0)
    sender.close()
    with pytest.raises(GiveUp) as stop:
        sender.deliver(_batch(), time.monotonic() + 10)
    assert stop.value.reason == "RuntimeError"
    assert calls == []


def test_httpx_still_logs_each_request_without_the_key(
    server: _RawServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    sender = _make(server.url)
    try:
        sender.deliver(_batch(), time.monotonic() + 10)
    finally:
        sender.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines == [
        f'HTTP Request: POST {server.url}/api/v1/ingest "HTTP/1.1 207 Multi-Status"'
    ]
    assert KEY not in caplog.text


def test_the_deadline_transport_is_the_default(server: _RawServer) -> None:
    sender = _make(server.url)
    try:
        transport = sender._http._transport  # what the sender posts through
        assert isinstance(transport, httpx.HTTPTransport)
        pool = getattr(transport, "_pool", None)
        assert type(getattr(pool, "_network_backend", None)).__name__ == "_DeadlineBackend"
    finally:
        sender.close()


def test_each_score_goes_to_its_own_path_past_the_kept_request_heads() -> None:
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/ingest"):
            return httpx.Response(404)
        return httpx.Response(200, content=b"{}")

    url = "http://scores.invalid"
    sender = _make(url, transport=httpx.MockTransport(answer))
    ids = [uuid.uuid4() for _ in range(_sender._PREPARED_PATHS + 3)]
    batch = IngestRequest(scores=[ScoreItem(id=uuid.uuid4(), trace_id=i, score=0.5)
                                  for i in ids])
    try:
        assert sender.deliver(batch, time.monotonic() + 10) == (0, 0)
    finally:
        forget_no_ingest(url)
        sender.close()
    assert paths == ["/api/v1/ingest"] + [f"/api/v1/traces/{i}/score" for i in ids]
