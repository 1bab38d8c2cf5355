"""``ct.prompt`` in an asyncio application: with an `AsyncCTClient`, a chat version served to
``AsyncOpenAI`` calls (plain and streamed) makes each call the task's trace on that version,
with its feedback entry (issue 24: instrumented code takes part, async too)."""

from __future__ import annotations

import uuid

import openai
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
