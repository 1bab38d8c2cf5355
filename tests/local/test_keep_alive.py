"""An idle keep-alive connection stays open for `IDLE_TIMEOUT` (60 s, as docs/local-server.md
says), not the request-head deadline `HEADER_TIMEOUT` (10 s), which closed it before."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from kaizen_server import LocalServer
from kaizen_server.http import server as server_module

pytestmark = pytest.mark.unit

_HEALTH = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[LocalServer]:
    """A server with a 0.4 s head deadline and the idle timeout the test names (default 3 s)."""
    idle = getattr(request, "param", 3)
    monkeypatch.setattr(server_module, "HEADER_TIMEOUT", 0.4)
    monkeypatch.setattr(server_module, "IDLE_TIMEOUT", idle)
    with LocalServer() as s:
        yield s


def _connect(server: LocalServer) -> socket.socket:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_idle_keep_alive_connection_outlives_the_head_deadline(server: LocalServer) -> None:
    sock = _connect(server)
    try:
        sock.sendall(_HEALTH)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        idle_from = time.monotonic()
        # idle for 3 head deadlines: nothing arrives, the server does not close it
        sock.settimeout(1.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        sock.settimeout(10)
        sock.sendall(_HEALTH)  # the same connection serves the next request
        assert _response(sock).startswith(b"HTTP/1.1 200")
        idle_from = time.monotonic()
        closed = None
        deadline = idle_from + 20
        while closed is None and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                if sock.recv(1) == b"":
                    closed = time.monotonic() - idle_from
        assert closed is not None and closed >= 3 - 0.2  # closed at IDLE_TIMEOUT, not before
    finally:
        sock.close()


@pytest.mark.parametrize("server", [60], indirect=True)
def test_a_head_begun_after_idling_still_has_the_head_deadline(server: LocalServer) -> None:
    sock = _connect(server)
    try:
        sock.sendall(_HEALTH)
        assert _response(sock).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\n")  # never finished
        started = time.monotonic()
        sock.settimeout(40)
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 30  # the head deadline closed it, not the idle one
    finally:
        sock.close()
