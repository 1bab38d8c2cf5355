"""Hostile clients on loopback: each gets a JSON 4xx or a closed connection, memory stays
bounded, other clients are still served, and nothing is stored.

Every test runs its own `LocalServer`, so "nothing stored" is an exact row count.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest

from kaizen_sdk import models as m
from kaizen_server import MAX_BODY_BYTES, LocalServer
from kaizen_server.http import server as server_module
from kaizen_server.http.server import MAX_HEAD_BYTES, WORKER_THREADS

MB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key="hostile-test-key") as s:
        yield s


def _rss() -> int:
    """Resident memory of this process (the server runs in it), in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _connect(server: LocalServer) -> socket.socket:
    host, port = server.bound_address
    sock = socket.create_connection((host, port), timeout=10)
    return sock


def _stored(server: LocalServer) -> tuple[int, int, int]:
    """(tasks, traces, feedback) in the server's database, counted through the API."""
    headers = {"X-API-Key": server.api_key}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as c:
        tasks = c.get("/api/v1/tasks", params={"limit": 1000}).json()
        traces = c.get("/api/v1/traces", params={"limit": 1000}).json()
        feedback = c.get("/api/v1/feedback", params={"limit": 1000}).json()
    return len(tasks), len(traces), len(feedback)


def _read_response(sock: socket.socket, limit: int = 64 * 1024) -> bytes:
    """Read until the server closes or a whole small response arrived (bounded)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    return data


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0


def _json_error(raw: bytes) -> m.ErrorBody:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower(), raw[:300]
    return m.decode(body, m.ErrorBody)


def _stream(sock: socket.socket, chunk: bytes, total: int) -> int:
    """Send up to *total* bytes; return how many went before the server stopped taking them."""
    sent = 0
    sock.settimeout(2)
    with contextlib.suppress(OSError):  # reset, broken pipe or a full window: it stopped
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def test_unauthenticated_chunked_body_with_negative_size_is_cut_off(server: LocalServer) -> None:
    before = _rss()
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n"
    )
    sent = _stream(sock, b"x" * MB, 400 * MB)
    sock.settimeout(5)
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) in (400, 401), raw[:200]
    assert _json_error(raw).title
    assert sent < 400 * MB  # the server stopped reading long before the end
    assert _rss() - before < 50 * MB
    assert _stored(server) == (0, 0, 0)


def test_negative_chunk_size_with_the_key_is_a_json_400(server: LocalServer) -> None:
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nX-API-Key: hostile-test-key\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + b"x" * 1000
    )
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) == 400
    assert _json_error(raw).title == "Bad Request"
    assert _stored(server) == (0, 0, 0)


def test_key_is_checked_before_any_body_byte_is_read(server: LocalServer) -> None:
    sock = _connect(server)
    # Announce 15 MB and send none of it: the 401 must come without waiting for the body.
    sock.sendall(
        b"POST /api/v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % (15 * MB)
    )
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) == 401
    assert b"connection: close" in raw.lower()
    assert "X-API-Key" in (_json_error(raw).detail or "")
    assert _stored(server) == (0, 0, 0)


def test_declared_body_over_the_limit_is_413_before_it_is_sent(server: LocalServer) -> None:
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nX-API-Key: hostile-test-key\r\n"
        b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
    )
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) == 413
    assert str(MAX_BODY_BYTES) in (_json_error(raw).detail or "")
    assert _stored(server) == (0, 0, 0)


def test_chunked_body_over_the_limit_is_413_as_it_arrives(server: LocalServer) -> None:
    before = _rss()
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nX-API-Key: hostile-test-key\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (MB, b"[" * MB)
    sent = _stream(sock, chunk, 100 * MB)
    sock.settimeout(5)
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) == 413
    assert sent < 100 * MB
    assert _rss() - before < 50 * MB
    assert _stored(server) == (0, 0, 0)


def test_endless_request_head_is_cut_off(server: LocalServer) -> None:
    before = _rss()
    sock = _connect(server)
    sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
    sent = _stream(sock, b"X-Filler: " + b"a" * 1000 + b"\r\n", 200 * MB)
    sock.settimeout(5)
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) in (0, 400)  # a JSON 400, or the connection simply closed
    assert sent < 200 * MB
    assert _rss() - before < 50 * MB
    assert MAX_HEAD_BYTES <= 64 * 1024


def test_json_nested_too_deeply_is_400_and_stores_nothing(server: LocalServer) -> None:
    deep = b"[" * 10_000 + b"]" * 10_000
    feedback = b'{"task_id": "deep", "metadata": {"a": ' + deep + b"}}"
    ingest = b'{"feedback": [{"task_id": "deep", "metadata": {"a": ' + deep + b"}}]}"
    headers = {"X-API-Key": server.api_key, "Content-Type": "application/json"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as c:
        for path, body in (("/api/v1/feedback", feedback), ("/api/v1/ingest", ingest),
                           ("/api/v1/traces", feedback)):
            resp = c.post(path, content=body)
            assert resp.status_code == 400, (path, resp.text)
            assert "nested too deeply" in resp.json()["detail"]
    assert _stored(server) == (0, 0, 0)


def test_slow_request_heads_are_closed_and_others_still_served(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 1.0)
    threads_before = threading.active_count()
    slow = []
    for _ in range(300):
        sock = _connect(server)
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
        slow.append(sock)
    try:
        # One event loop holds them all: no thread per connection.
        assert threading.active_count() - threads_before <= WORKER_THREADS
        with httpx.Client(base_url=server.base_url, timeout=10) as other:
            assert [other.get("/api/v1/health").status_code for _ in range(20)] == [200] * 20
        deadline = time.monotonic() + 15
        closed = 0
        for sock in slow:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                if sock.recv(1) == b"":
                    closed += 1
        assert closed == len(slow)
    finally:
        for sock in slow:
            sock.close()


def test_slow_body_gets_408(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "BODY_TIMEOUT", 0.5)
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v1/feedback HTTP/1.1\r\nHost: x\r\nX-API-Key: hostile-test-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"task_id\""
    )
    raw = _read_response(sock)
    sock.close()
    assert _status(raw) == 408
    assert _json_error(raw).title == "Request Timeout"
    assert _stored(server) == (0, 0, 0)


def test_unauthenticated_flood_leaves_memory_bounded(server: LocalServer) -> None:
    before = _rss()
    body = msgspec.json.encode({"feedback": [{"task_id": "t", "output": "x" * 1000}] * 1000})
    with httpx.Client(base_url=server.base_url, timeout=10) as c:
        statuses = {c.post("/api/v1/ingest", content=body).status_code for _ in range(50)}
    assert statuses == {401}
    assert _rss() - before < 50 * MB
    assert _stored(server) == (0, 0, 0)


def test_non_loopback_bind_with_the_development_key_is_refused() -> None:
    server = LocalServer(host="0.0.0.0")
    with pytest.raises(PermissionError, match="KAIZEN_API_KEY"):
        server.start()
    assert not server.running
    with LocalServer(host="0.0.0.0", api_key="a-real-secret") as exposed:
        assert exposed.bound_address[0] == "0.0.0.0"
        assert exposed.base_url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{exposed.base_url}/api/v1/health").status_code == 200


def test_kaizen_serve_refuses_non_loopback_with_the_development_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kaizen_sdk.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--api-key" in err and "0.0.0.0" in err
