"""The fault proxy itself: it forwards, injects exactly N faults, holds, and refuses."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ._proxy import FaultProxy

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST


@pytest.fixture
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_forwards_and_injects_exactly_n_faults(upstream: str) -> None:
    with FaultProxy(upstream) as proxy, httpx.Client(base_url=proxy.url) as http:
        proxy.fail_next(2, 503)
        proxy.fail_next(1, 429, retry_after=1)
        answers = [http.post("/api/v1/ingest", content=b"x%d" % i) for i in range(5)]
        assert [r.status_code for r in answers] == [503, 503, 429, 201, 201]
        assert answers[2].headers["Retry-After"] == "1"
        assert answers[4].content == b"x4"
        assert http.get("/api/v1/health").status_code == 201  # not a delivery request: no fault
        assert proxy.statuses() == [503, 503, 429, 201, 201]
        assert [s.injected for s in proxy.requests()] == [True, True, True, False, False]
        assert proxy.faults_left() == 0
        assert len(proxy.requests(delivery_only=False)) == 6


def test_freeze_holds_requests_until_thaw(upstream: str) -> None:
    with FaultProxy(upstream) as proxy, httpx.Client(base_url=proxy.url, timeout=30) as http:
        proxy.freeze()
        answers: list[int] = []
        worker = threading.Thread(
            target=lambda: answers.append(http.post("/api/v1/ingest", content=b"x").status_code)
        )
        worker.start()
        assert _wait_for(lambda: proxy.held == 1)
        assert answers == []
        proxy.thaw()
        worker.join(timeout=10)
        assert answers == [201]
        assert proxy.held == 0


def test_refuse_then_accept_on_the_same_port(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        port = proxy.port
        proxy.refuse()
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"{proxy.url}/api/v1/ingest", content=b"x")
        proxy.accept()
        assert proxy.port == port
        assert httpx.post(f"{proxy.url}/api/v1/ingest", content=b"y").status_code == 201
        assert proxy.statuses() == [201]
