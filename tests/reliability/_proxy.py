"""A fault-injecting HTTP proxy on loopback, in front of the local CT server.

It forwards every request to the upstream server unchanged, except that it can:

- answer a given status (503, 429 with ``Retry-After``, ...) to the next N delivery requests;
- hold each request for a delay before forwarding it (a slow server), or hold them until
  `FaultProxy.thaw` (a server that does not answer at all);
- stop listening (`refuse`: connection refused) and start again on the same port (`accept`).

It records every request it saw, what it answered and the bodies it forwarded, so tests can
count exactly what reached the server.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import http.client
import http.server
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

__all__ = ["FaultProxy", "Seen", "is_delivery"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
     "upgrade", "host", "content-length"}
)


def is_delivery(method: str, path: str) -> bool:
    """True for the requests background delivery makes (ingest and single-record posts)."""
    route = path.split("?", 1)[0]
    return method == "POST" and route in ("/api/v1/ingest", "/api/v1/traces", "/api/v1/feedback")


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request the proxy handled: what came in and what it answered."""

    method: str
    path: str
    status: int
    body: bytes
    injected: bool
    at: float = 0.0
    """``time.monotonic()`` when the answer was decided."""


@dataclasses.dataclass
class _Fault:
    status: int
    headers: dict[str, str]
    match: Callable[[str, str], bool]
    body: bytes


class FaultProxy:
    """Forward loopback HTTP to *upstream*, injecting faults on demand.

    Example::

        with FaultProxy(server.url) as proxy:
            proxy.fail_next(3, 503)
            client = CTClient(base_url=proxy.url, ...)
    """

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        parts = urllib.parse.urlsplit(upstream)
        assert parts.hostname in ("127.0.0.1", "localhost", "::1"), "loopback only"
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._delay = 0.0
        self._gate = threading.Event()
        self._gate.set()
        self._freeze_match: Callable[[str, str], bool] = is_delivery
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.seen: list[Seen] = []
        self.held = 0
        """Requests being held right now (delay or freeze)."""
        self.held_delivery = 0
        """Delivery requests (see `is_delivery`) being held right now."""
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.accept()

    # --- control -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL clients should use."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        retry_after: float | None = None,
        match: Callable[[str, str], bool] = is_delivery,
        body: bytes = b'{"title": "Injected fault", "detail": "by the test proxy"}',
        content_type: str = "application/json",
    ) -> None:
        """Answer *status* (with *body*) to the next *n* requests for which
        ``match(method, path)`` holds."""
        headers = {"Content-Type": content_type}
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        with self._lock:
            for _ in range(n):
                self._faults.append(_Fault(status, headers, match, body))

    def faults_left(self) -> int:
        """Injected answers still waiting to be given."""
        with self._lock:
            return len(self._faults)

    def set_delay(self, seconds: float) -> None:
        """Hold every request *seconds* before forwarding it (0 turns the delay off)."""
        self._delay = seconds

    def freeze(self, match: Callable[[str, str], bool] = is_delivery) -> None:
        """Hold every new request for which ``match(method, path)`` holds until `thaw` (a
        server that never answers); by default only delivery requests."""
        self._freeze_match = match
        self._gate.clear()

    def thaw(self) -> None:
        """Let held requests go on."""
        self._gate.set()

    def refuse(self) -> None:
        """Stop listening and cut open connections: clients get 'connection refused'."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def accept(self) -> None:
        """Listen again on the same port (after `refuse`, or at start)."""
        if self._server is not None:
            return
        handler = _make_handler(self)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop for good; held requests are released."""
        self._closing.set()
        self._gate.set()
        self.refuse()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what happened -----------------------------------------------------------------

    def requests(self, *, delivery_only: bool = True) -> list[Seen]:
        """A snapshot of the requests handled so far."""
        with self._lock:
            return [s for s in self.seen if not delivery_only or is_delivery(s.method, s.path)]

    def statuses(self) -> list[int]:
        """Statuses answered to delivery requests, in order."""
        return [s.status for s in self.requests()]

    # --- inside the handler ------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.match(method, path):
                    self._faults.remove(fault)
                    return fault
        return None

    def _hold(self, method: str, path: str) -> None:
        delivery = is_delivery(method, path)
        frozen = not self._gate.is_set() and self._freeze_match(method, path)
        if not frozen and self._delay <= 0:
            return
        with self._lock:
            self.held += 1
            self.held_delivery += delivery
        try:
            deadline = time.monotonic() + 300  # never hold a request forever
            while frozen and not self._gate.wait(0.05):
                if self._closing.is_set() or time.monotonic() > deadline:
                    break
            if self._delay > 0:
                self._closing.wait(self._delay)
        finally:
            with self._lock:
                self.held -= 1
                self.held_delivery -= delivery

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self._upstream
        conn = http.client.HTTPConnection(host, port, timeout=30)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()


def _make_handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

        def setup(self) -> None:
            super().setup()
            with proxy._lock:
                proxy._sockets.add(self.connection)

        def finish(self) -> None:
            with proxy._lock:
                proxy._sockets.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            method, path = self.command, self.path
            proxy._hold(method, path)
            if proxy._closing.is_set():  # closed while holding: hang up, forward nothing
                self.close_connection = True
                return
            fault = proxy._take_fault(method, path)
            if fault is not None:
                payload = fault.body
                proxy._record(Seen(method, path, fault.status, body, True, time.monotonic()))
                self.send_response(fault.status)
                for name, value in fault.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            try:
                status, resp_headers, data = proxy._forward(method, path, headers, body)
            except OSError:
                status, resp_headers = 502, [("Content-Type", "application/json")]
                data = b'{"title": "Bad gateway", "detail": "upstream unreachable"}'
            proxy._record(Seen(method, path, status, body, False, time.monotonic()))
            self.send_response(status)
            for name, value in resp_headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler
