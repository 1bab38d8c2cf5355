"""Every kind of setting a version carries reaches the provider unchanged, through the real
``openai`` and ``litellm`` clients in every mode (sync, streaming, async, async streaming),
from ``get_prompt`` and from ``ct.prompt`` with the libraries instrumented (issue 24).

The loopback OpenAI stand-in records each request body; the version's model, messages and
each setting must be in it as stored (response format, tools, tool choice, stop, seed and a
provider keyword the SDK knows nothing about).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

MESSAGES = [
    {"role": "system", "content": "You triage tickets for {{ team }}."},
    {"role": "user", "content": "Ticket: {{ ticket }}"},
]
TOOLS = [{"type": "function", "function": {
    "name": "route", "description": "Route a ticket to a team.",
    "parameters": {"type": "object", "properties": {"team": {"type": "string"}},
                   "required": ["team"]},
}}]
SETTINGS: dict[str, Any] = {
    "temperature": 0.3, "max_tokens": 40, "stop": ["\n\n"], "seed": 7, "top_p": 0.9,
    "response_format": {"type": "json_object"}, "tools": TOOLS, "tool_choice": "auto",
    "parallel_tool_calls": False, "user": "triage-bot",
}
MODEL = "gpt-4o-mini"
"""A model litellm knows (it sends ``user`` only for the models in its OpenAI catalogue)."""
VARS = {"team": "billing", "ticket": "printer on fire"}
RENDERED = [
    {"role": "system", "content": "You triage tickets for billing."},
    {"role": "user", "content": "Ticket: printer on fire"},
]
ANSWER = "echo: Ticket: printer on fire"


@pytest.fixture
def admin(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        yield client


def _task(admin: CTClient, model: str) -> str:
    name = f"settings-{uuid.uuid4().hex[:10]}"
    admin.create_task(name, messages=MESSAGES, config={"model": model, **SETTINGS})
    return name


def _check(standin: StandIn, before: int, model: str, stream: bool) -> None:
    """The one request since *before* carries the version's model, messages and settings."""
    new = standin.requests[before:]
    assert len(new) == 1, new
    body = new[0][1]
    assert (body["model"], body["messages"]) == (model, RENDERED)
    assert {k: body.get(k) for k in SETTINGS} == SETTINGS
    assert bool(body.get("stream")) is stream


def _openai_all(args: dict[str, Any], standin: StandIn, model: str) -> None:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as llm:
        before = len(standin.requests)
        assert llm.chat.completions.create(**args).choices[0].message.content == ANSWER
        _check(standin, before, model, stream=False)
        before = len(standin.requests)
        chunks = llm.chat.completions.create(**args, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        _check(standin, before, model, stream=True)


async def _openai_async_all(args: dict[str, Any], standin: StandIn, model: str) -> None:
    async with openai.AsyncOpenAI(base_url=standin.base_url, api_key="sk-test",
                                  max_retries=0) as llm:
        before = len(standin.requests)
        reply = await llm.chat.completions.create(**args)
        assert reply.choices[0].message.content == ANSWER
        _check(standin, before, model, stream=False)
        before = len(standin.requests)
        chunks = await llm.chat.completions.create(**args, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
        assert "".join(parts) == ANSWER
        _check(standin, before, model, stream=True)


def _litellm_all(args: dict[str, Any], standin: StandIn) -> None:
    wire = {"api_base": standin.base_url, "api_key": "sk-test"}
    before = len(standin.requests)
    assert litellm.completion(**args, **wire).choices[0].message.content == ANSWER
    _check(standin, before, MODEL, stream=False)
    before = len(standin.requests)
    chunks = litellm.completion(**args, stream=True, **wire)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    _check(standin, before, MODEL, stream=True)


async def _litellm_async_all(args: dict[str, Any], standin: StandIn) -> None:
    wire = {"api_base": standin.base_url, "api_key": "sk-test"}
    before = len(standin.requests)
    reply = await litellm.acompletion(**args, **wire)
    assert reply.choices[0].message.content == ANSWER
    _check(standin, before, MODEL, stream=False)
    before = len(standin.requests)
    chunks = await litellm.acompletion(**args, stream=True, **wire)
    parts = [c.choices[0].delta.content or "" async for c in chunks if c.choices]
    assert "".join(parts) == ANSWER
    _check(standin, before, MODEL, stream=True)


async def test_get_prompt_call_args_reach_openai_unchanged(
    admin: CTClient, standin: StandIn
) -> None:
    args = admin.get_prompt(_task(admin, MODEL)).call_args(**VARS)
    _openai_all(args, standin, MODEL)
    await _openai_async_all(args, standin, MODEL)


async def test_get_prompt_call_args_reach_litellm_unchanged(
    admin: CTClient, standin: StandIn
) -> None:
    # litellm's provider prefix chooses its OpenAI route and is stripped on the wire
    args = admin.get_prompt(_task(admin, f"openai/{MODEL}")).call_args(**VARS)
    _litellm_all(args, standin)
    await _litellm_async_all(args, standin)


async def test_served_call_args_reach_instrumented_clients_unchanged(
    admin: CTClient, standin: StandIn, provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """With both libraries instrumented, ``ct.prompt``'s arguments are sent as they are, and
    each of the eight calls is the task's trace on the served version."""
    openai_task, litellm_task = _task(admin, MODEL), _task(admin, f"openai/{MODEL}")
    ct.instrument(openai, client=admin, tracer_provider=provider[0])
    ct.instrument(litellm, client=admin, tracer_provider=provider[0])
    try:
        served = ct.prompt(openai_task, client=admin)
        _openai_all(served.call_args(**VARS), standin, MODEL)
        await _openai_async_all(served.call_args(**VARS), standin, MODEL)
        served_litellm = ct.prompt(litellm_task, client=admin)
        _litellm_all(served_litellm.call_args(**VARS), standin)
        await _litellm_async_all(served_litellm.call_args(**VARS), standin)
        assert admin.flush(15)
    finally:
        ct.uninstrument(litellm)
        ct.uninstrument(openai)
    for task, version in ((openai_task, served.id), (litellm_task, served_litellm.id)):
        traces = admin.list_traces(task, limit=100)
        assert len(traces) == 4
        assert {t.prompt_version_id for t in traces} == {version}
        assert {t.response_text for t in traces} == {ANSWER}
