"""Against a CT server without rollouts, the SDK serves the active prompt exactly as before.

The stand-in is a real HTTP server on loopback that knows ``GET /api/v1/prompts/{task}`` only
(no ``rollout`` field, no ``/rollouts`` routes), as a CT server from before rollouts does.
"""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import kaizen_sdk as ct
from kaizen_sdk import CTClient, CTNotFoundError
from kaizen_sdk._rollout import choose_arm

pytestmark = pytest.mark.e2e

PROMPT = {"id": "00000000-0000-0000-0000-00000000000a", "version_number": 3,
          "prompt_text": "Summarize: {{ ticket }}", "status": "active"}


# what a trace / feedback entry had before rollouts: this server refuses anything else
OLD_TRACE_KEYS = {"task_id", "id", "prompt_text", "response_text", "model", "tokens",
                  "latency_ms", "prompt_version_id", "parent_trace_id", "metadata"}
OLD_FEEDBACK_KEYS = {"task_id", "id", "inputs", "output", "score", "source", "metadata"}


class _OldServer(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]]
    batches: ClassVar[list[dict[str, Any]]]

    def do_POST(self) -> None:
        self.paths.append(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        batch = json.loads(raw)
        self.batches.append(batch)
        known = all(set(t) <= OLD_TRACE_KEYS for t in batch.get("traces", [])) and all(
            set(f) <= OLD_FEEDBACK_KEYS for f in batch.get("feedback", []))
        if self.path != "/api/v1/ingest":
            body, status = b'{"title": "Not Found", "detail": "no route"}', 404
        elif not known:
            body, status = b'{"title": "Unprocessable", "detail": "unknown field"}', 422
        else:
            n = len(batch.get("traces", [])) + len(batch.get("feedback", []))
            body, status = json.dumps({"accepted": n, "errors": []}).encode(), 207
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.paths.append(self.path)
        if self.path.startswith("/api/v1/prompts/"):
            body, status = json.dumps(PROMPT).encode(), 200
        else:
            body, status = json.dumps({"title": "Not Found", "detail": "no route"}).encode(), 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def old_server() -> Iterator[tuple[str, list[str]]]:
    paths: list[str] = []
    handler = type("Handler", (_OldServer,), {"paths": paths, "batches": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # shutdown() waits for the serving loop's next poll: 0.5 s by default, per test
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_old_server_serves_the_active_prompt_with_no_extra_requests(
    old_server: tuple[str, list[str]],
) -> None:
    url, paths = old_server
    with CTClient(api_key="k", base_url=url) as client:
        for key in ("u1", "u2", None):
            prompt, arm = choose_arm(client.get_prompt("summarize"), key)
            assert (prompt.version_number, prompt.rollout, arm) == (3, None, None)
        assert paths == ["/api/v1/prompts/summarize"]
        with pytest.raises(CTNotFoundError):
            client.get_rollout("summarize")
        assert paths[1:] == ["/api/v1/rollouts/summarize"]


def test_old_server_a_decorated_task_sends_what_it_sent_before_rollouts(
    old_server: tuple[str, list[str]],
) -> None:
    url, paths = old_server
    with CTClient(api_key="k", base_url=url) as client:

        @client.task("summarize", assign_by="user_id")
        def summarize(ticket: str, user_id: str, prompt: ct.Prompt = ct.PROMPT) -> int:
            if ticket == "boom":
                raise ValueError(ticket)
            return prompt.version_number

        assert [summarize("t", f"u{i}") for i in range(50)] == [3] * 50
        with pytest.raises(ValueError):
            summarize("boom", "u0")
        assert client.flush(timeout=10)
        stats = client.stats()
    # every record accepted by a server that refuses the fields rollouts added
    assert (stats.sent, stats.rejected, stats.dropped) == (51, 0, 0)
    assert paths[0] == "/api/v1/prompts/summarize"
    assert set(paths[1:]) == {"/api/v1/ingest"}
