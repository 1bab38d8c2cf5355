"""``ct.prompt`` in an asyncio application: with an `AsyncCTClient`, a chat version served to
``AsyncOpenAI`` calls (plain and streamed) makes each call the task's trace on that version,
with its feedback entry (issue 24: instrumented code takes part, async too); ``ct.aprompt``
waits for a first fetch without blocking the event loop."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import uuid
from collections.abc import Iterator

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_server import LocalServer

MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Ticket: {{ ticket }}"}]
CONFIG = {"model": "m", "temperature": 0.1, "max_tokens": 30}


async def test_served_prompt_with_the_async_client(
    local_server: LocalServer, standin: StandIn,
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    task = f"served-async-{uuid.uuid4().hex[:10]}"
    async with AsyncCTClient(base_url=local_server.base_url,
                             api_key=local_server.api_key) as client:
        await client.create_task(task, messages=MESSAGES, config=CONFIG)
        version = await client.get_prompt(task)
        ct.instrument(openai, client=client, tracer_provider=provider[0])
        try:
            async with openai.AsyncOpenAI(base_url=standin.base_url, api_key="sk-test",
                                          max_retries=0) as llm:
                served = ct.prompt(task, key="customer-1", client=client)
                assert (served.id, served.config) == (version.id, CONFIG)
                before = len(standin.requests)
                reply = await llm.chat.completions.create(**served.call_args(ticket="one"))
                stream = await llm.chat.completions.create(
                    **served.call_args(ticket="two"), stream=True)
                text = "".join([c.choices[0].delta.content or "" async for c in stream
                                if c.choices])
                assert (reply.choices[0].message.content, text) == (
                    "echo: Ticket: one", "echo: Ticket: two")
                sent = [body for _, body in standin.requests[before:]]
                assert [(b["model"], b["temperature"], b["max_tokens"]) for b in sent] == [
                    ("m", 0.1, 30)] * 2
            assert await client.flush(15)
        finally:
            ct.uninstrument(openai)
        traces = await client.list_traces(task, limit=10)
        assert sorted(t.response_text or "" for t in traces) == [
            "echo: Ticket: one", "echo: Ticket: two"]
        assert {t.prompt_version_id for t in traces} == {version.id}
        entries = await client.list_feedback(task, limit=10)
        assert sorted(str((e.inputs or {}).get("ticket")) for e in entries) == ["one", "two"]


@pytest.fixture
def gated() -> Iterator[tuple[str, threading.Event]]:
    """A CT server whose prompt answer waits until the gate opens (at most 30 s)."""
    gate = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            gate.wait(30)
            body = json.dumps({"id": str(uuid.uuid4()), "version_number": 4,
                               "status": "active", "prompt_text": "gated {{ x }}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", gate
    finally:
        gate.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_aprompt_waits_for_the_first_fetch_off_the_event_loop(
    gated: tuple[str, threading.Event],
) -> None:
    """The gate is opened by a coroutine, so the prompt arrives only if the loop stays free
    while ``aprompt`` waits; ``ct.prompt``, which waits on the loop, gets nothing."""
    url, gate = gated

    async def open_gate() -> None:
        gate.set()

    async with AsyncCTClient(base_url=url, api_key="k", prompt_wait=0.5) as client:
        opener = asyncio.create_task(open_gate())
        with pytest.raises(ct.CTError, match=r"default=\.\.\. to ct\.prompt\('gated-sync'\)"):
            ct.prompt("gated-sync", client=client)  # the loop is blocked: the gate stays shut
        assert not gate.is_set()
        await opener
    gate.clear()
    async with AsyncCTClient(base_url=url, api_key="k", prompt_wait=30) as client:
        opener = asyncio.create_task(open_gate())
        served = await ct.aprompt("gated", client=client)
        await opener
        assert (served.version_number, served.render(x="a")) == (4, "gated a")
        again = await ct.aprompt("gated", client=client)  # from the cache, no new request
        assert again.id == served.id
