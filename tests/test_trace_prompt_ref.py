"""A trace of a call that ran on a served version names it by id instead of repeating its
template, when the server says it fills the text in (``PROMPT_REF_HEADER``)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import msgspec
import pytest

import kaizen_sdk as ct
from kaizen_sdk._prompts import prompt_fetcher
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

TEMPLATE = "Answer the question: {{ q }}\n" + "Rules: be brief. " * 6_000  # ~100 kB
CALLS = 10


class _Recording(httpx.BaseTransport):
    """Real HTTP; keeps the bodies of the ingest requests it sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ingest"):
            self.bodies.append(request.read())
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def recorded(local_server: LocalServer) -> Iterator[tuple[CTClient, _Recording]]:
    transport = _Recording()
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  prompt_refresh=300) as client:
        client._delivery_transport = transport  # type: ignore[attr-defined]  # see tracing
        yield client, transport


def test_traces_of_a_served_version_name_it_and_the_server_fills_the_text(
    recorded: tuple[CTClient, _Recording]
) -> None:
    client, transport = recorded
    name = f"by-id-{uuid.uuid4().hex[:10]}"
    client.create_task(name, prompt_text=TEMPLATE)
    [v1] = client.list_prompt_versions(name)

    @client.task(name)
    def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return q.upper()

    runs = [answer.call(f"question {n}")[1] for n in range(CALLS)]
    assert client.flush() is True
    assert prompt_fetcher(client).referable == {str(v1.id): TEMPLATE}
    sent = [t for body in transport.bodies for t in json.loads(body)["traces"]]
    assert len(sent) == CALLS
    assert all("prompt_text" not in t and t["prompt_version_id"] == str(v1.id) for t in sent)
    assert sum(map(len, transport.bodies)) < len(TEMPLATE)  # all ten, less than one template
    for run in runs:
        stored = client.get_trace(run.trace_id)
        assert stored.prompt_version_id == v1.id
        assert stored.prompt_text == TEMPLATE  # whole: a text sent is cut at 64 KiB


def test_a_prompt_the_caller_changed_is_sent_as_it_ran(
    recorded: tuple[CTClient, _Recording]
) -> None:
    client, transport = recorded
    name = f"by-id-{uuid.uuid4().hex[:10]}"
    client.create_task(name, prompt_text="v1 {{ q }}")

    @client.task(name)
    def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return q

    _, served = answer.call("a")
    edited = msgspec.structs.replace(served.prompt, prompt_text="edited {{ q }}")
    _, run = answer.call("b", prompt=edited)  # the same version id, another text
    assert client.flush() is True
    sent = {t["id"]: t for body in transport.bodies for t in json.loads(body)["traces"]}
    assert "prompt_text" not in sent[served.trace_id]
    assert sent[run.trace_id]["prompt_text"] == "edited {{ q }}"
    assert client.get_trace(run.trace_id).prompt_text == "edited {{ q }}"


class _OldServer(BaseHTTPRequestHandler):
    """A CT server that does not fill trace texts: no PROMPT_REF_HEADER on its answers."""

    def do_GET(self) -> None:
        data = json.dumps({"id": str(uuid.UUID(int=7)), "version_number": 1,
                           "prompt_text": "v1 {{ q }}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_server_that_does_not_say_so_gets_the_text() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with CTClient(api_key="k", base_url=f"http://127.0.0.1:{server.server_address[1]}",
                      prompt_refresh=300) as client:
            fetcher = prompt_fetcher(client)
            assert fetcher.get("t", None).prompt_text == "v1 {{ q }}"
            assert fetcher.referable == {}  # so its traces keep their prompt text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
