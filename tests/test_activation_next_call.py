"""``activate_prompt`` is seen by the very next call of every decorated function on that client.

Background revalidation is set far off (``prompt_refresh=300``), so only the activation
itself can make the next call switch versions.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import kaizen_sdk as ct
from kaizen_sdk import _default
from kaizen_sdk._prompts import prompt_fetcher
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

V1, V2, V3 = "v1: {{ x }}", "v2: {{ x }}", "v3: {{ x }}"


@pytest.fixture
def task(local_server: LocalServer) -> Iterator[tuple[str, str, str, str]]:
    """A task with an active v1 and a candidate v2: (name, task id, v2 id, v3 id)."""
    name = f"activation-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        created = admin.create_task(name, prompt_text=V1)
        v2 = admin.create_prompt_version(name, V2)
        v3 = admin.create_prompt_version(name, V3)
    yield name, str(created.id), str(v2.id), str(v3.id)


def _client(server: LocalServer) -> CTClient:
    return CTClient(base_url=server.base_url, api_key=server.api_key, prompt_refresh=300)


def test_the_next_call_of_every_decorated_function_serves_the_activated_version(
    local_server: LocalServer, task: tuple[str, str, str, str]
) -> None:
    name, task_id, v2, v3 = task
    with _client(local_server) as client:

        @client.task(name)
        def first(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        @client.task(name)
        def second(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        assert (first("a"), second("b")) == ("v1: a", "v1: b")
        client.activate_prompt(name, v2)
        assert (first("a"), second("b")) == ("v2: a", "v2: b")
        client.activate_prompt(task_id, v3)  # by the task's id: the names follow
        assert (first("a"), second("b")) == ("v3: a", "v3: b")
        created = client.create_prompt_version(name, "v4: {{ x }}", activate=True)
        assert created.version_number == 4
        assert (first("a"), second("b")) == ("v4: a", "v4: b")


async def test_the_async_client_activation_is_seen_by_the_next_call(
    local_server: LocalServer, task: tuple[str, str, str, str]
) -> None:
    name, _task_id, v2, _v3 = task
    async with AsyncCTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                             prompt_refresh=300) as client:

        @client.task(name)
        async def reply(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        assert await reply("a") == "v1: a"
        await client.activate_prompt(name, v2)
        assert await reply("a") == "v2: a"


@pytest.fixture
def default_client(
    monkeypatch: pytest.MonkeyPatch, local_server: LocalServer
) -> Iterator[CTClient]:
    monkeypatch.setattr(_default, "_client", None)
    client = ct.configure(base_url=local_server.base_url, api_key=local_server.api_key,
                          prompt_refresh=300)
    yield client
    client.close()


def test_the_default_client_activation_is_seen_by_the_next_call(
    default_client: CTClient, task: tuple[str, str, str, str]
) -> None:
    name, _task_id, v2, _v3 = task

    @ct.task(name)
    def reply(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return prompt.render(x=x)

    assert reply("a") == "v1: a"
    ct.get_client().activate_prompt(name, v2)
    assert reply("a") == "v2: a"
    assert default_client.get_prompt(name).prompt_text == V2


class _HeldServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Held)
        self.active = {"id": str(uuid.UUID(int=1)), "version_number": 1, "prompt_text": V1}
        self.hold = False
        self.arrived = threading.Event()
        self.release = threading.Event()


class _Held(BaseHTTPRequestHandler):
    """A CT server whose prompt answer can be held: it is what was active when asked."""

    server: _HeldServer

    def do_GET(self) -> None:
        body = json.dumps(self.server.active).encode()  # decided now, sent maybe later
        if self.server.hold:
            self.server.arrived.set()
            assert self.server.release.wait(10)
        self._send(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.active = {"id": str(uuid.UUID(int=2)), "version_number": 2,
                              "prompt_text": V2}
        self._send(json.dumps(self.server.active).encode())

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_revalidation_in_flight_during_an_activation_does_not_bring_the_old_version_back(
) -> None:
    server = _HeldServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with CTClient(api_key="k", base_url=f"http://127.0.0.1:{server.server_address[1]}",
                      prompt_refresh=300) as client:

            @client.task("t")
            def reply(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
                return prompt.render(x=x)

            assert reply("a") == "v1: a"
            server.hold = True
            fetcher = prompt_fetcher(client)
            assert fetcher.wait(["t"], 0) is False  # a revalidation starts, and is held
            assert server.arrived.wait(10)  # the server has decided its answer: v1
            client.activate_prompt("t", str(uuid.UUID(int=2)))
            assert reply("a") == "v2: a"
            server.release.set()
            fetcher.wait(["t"], 10)  # the held answer (v1) arrives and is not used
            assert reply("a") == "v2: a"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
