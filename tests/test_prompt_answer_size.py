"""Prompt answers are read as a stream and cut at a bound: a huge answer costs a bounded
amount of memory, is counted and logged, and calls keep the prompt they had or the default.

A loopback stand-in for the CT server answers ``GET /api/v1/prompts/...`` as each test asks.
"""

from __future__ import annotations

import json
import logging
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kaizen_sdk._prompts import MAX_ANSWER_BYTES, prompt_fetcher
from kaizen_sdk.client import CTClient
from kaizen_sdk.models import MAX_PROMPT_CHARS, Prompt

MiB = 1024 * 1024
STREAMED = 64 * MiB
CHUNK = b"a" * (64 * 1024)
DEFAULT = Prompt(prompt_text="the default {{ x }}", status="default")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mode = "good"
    sent = 0


class _Answers(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        mode = self.server.mode
        if mode == "good":
            self._whole({"id": "6f1d6c3e-6c39-4a8e-9d8f-0d3c2c1b7a10", "version_number": 1,
                         "prompt_text": "v1 {{ x }}", "status": "active"})
        elif mode == "long text":
            self._whole({"version_number": 2, "prompt_text": "b" * (MAX_PROMPT_CHARS + 1)})
        elif mode == "declared":  # says 1 GiB up front
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(1024 * MiB))
            self.end_headers()
            self._write(b'{"prompt_text": "' + CHUNK)
        else:  # streamed without a length, until the client hangs up
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.end_headers()
            self._write(b'{"prompt_text": "')
            for _ in range(STREAMED // len(CHUNK)):
                if not self._write(CHUNK):
                    break
        self.close_connection = True

    def _whole(self, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._write(data)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client hung up: what it asked for
            return False
        self.server.sent += len(data)
        return True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


@pytest.fixture
def client(server: _Server) -> Iterator[CTClient]:
    url = f"http://127.0.0.1:{server.server_address[1]}"
    with CTClient(api_key="k", base_url=url, prompt_wait=10, prompt_refresh=300,
                  max_retries=0) as c:
        yield c


def test_a_huge_streamed_answer_is_cut_at_the_bound_and_the_default_served(
    server: _Server, client: CTClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.mode = "streamed"
    fetcher = prompt_fetcher(client)
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="kaizen_sdk.prompts"):
            assert fetcher.get("t", DEFAULT) is DEFAULT
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (fetcher.stats.requests, fetcher.stats.failed, fetcher.stats.oversize) == (1, 1, 1)
    assert peak < 4 * MAX_ANSWER_BYTES  # the whole answer would be 64 MiB
    assert server.sent < STREAMED // 2  # it hung up long before the end
    [warning] = [r.getMessage() for r in caplog.records if "at most" in r.getMessage()]
    assert f"at most {MAX_ANSWER_BYTES} are read" in warning
    assert fetcher.get("t", DEFAULT) is DEFAULT  # later calls do not wait or fetch again
    assert fetcher.stats.requests == 1


def test_a_declared_length_over_the_bound_is_refused_unread(
    server: _Server, client: CTClient
) -> None:
    server.mode = "declared"
    fetcher = prompt_fetcher(client)
    assert fetcher.get("t", DEFAULT) is DEFAULT
    assert (fetcher.stats.failed, fetcher.stats.oversize) == (1, 1)


def test_a_prompt_text_over_the_servers_limit_is_refused(
    server: _Server, client: CTClient
) -> None:
    server.mode = "long text"
    fetcher = prompt_fetcher(client)
    assert fetcher.get("t", DEFAULT) is DEFAULT
    assert (fetcher.stats.failed, fetcher.stats.oversize) == (1, 1)


def test_an_oversize_revalidation_keeps_serving_the_prompt_it_had(
    server: _Server, client: CTClient
) -> None:
    fetcher = prompt_fetcher(client)
    assert fetcher.get("t", DEFAULT).prompt_text == "v1 {{ x }}"
    server.mode = "streamed"
    assert fetcher.wait(["t"], 10.0) is False  # a revalidation now: it fails, cut
    assert (fetcher.stats.requests, fetcher.stats.oversize) == (2, 1)
    assert fetcher.get("t", DEFAULT).prompt_text == "v1 {{ x }}"
