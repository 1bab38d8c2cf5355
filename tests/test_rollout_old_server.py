"""Against a CT server without rollouts, the SDK serves the active prompt exactly as before.

The stand-in is a real HTTP server on loopback that knows ``GET /api/v1/prompts/{task}`` only
(no ``rollout`` field, no ``/rollouts`` routes), as a CT server from before rollouts does.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from kaizen_sdk import CTClient, CTNotFoundError
from kaizen_sdk._rollout import choose_arm

pytestmark = pytest.mark.e2e

PROMPT = {"id": "00000000-0000-0000-0000-00000000000a", "version_number": 3,
          "prompt_text": "Summarize: {{ ticket }}", "status": "active"}


class _OldServer(http.server.BaseHTTPRequestHandler):
    paths: ClassVar[list[str]]

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
    handler = type("Handler", (_OldServer,), {"paths": paths})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
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
