"""A chat version's ``call_args`` go unchanged into the real ``openai`` and ``litellm`` clients.

The version (messages + model settings) is stored on a real local CT server and read back
with ``get_prompt``; the loopback OpenAI stand-in records what each library sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import openai
import pytest
from openai_standin import StandIn

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
SETTINGS = {"temperature": 0.3, "max_tokens": 40, "stop": ["\n\n"], "seed": 7, "top_p": 0.9}
RENDERED = [
    {"role": "system", "content": "You triage tickets for billing."},
    {"role": "user", "content": "Ticket: printer on fire"},
]
VARS = {"team": "billing", "ticket": "printer on fire"}


def _served(server: LocalServer, model: str) -> ct.Prompt:
    """Store a chat version with *model* and `SETTINGS` and read it back as served."""
    name = f"call-args-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=server.base_url, api_key=server.api_key) as admin:
        admin.create_task(name, messages=MESSAGES, config={"model": model, **SETTINGS})
        return admin.get_prompt(name)


@pytest.fixture
def prompt(local_server: LocalServer) -> ct.Prompt:
    return _served(local_server, "m")


@pytest.fixture
def client(standin: StandIn) -> Iterator[Any]:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


def _sent(standin: StandIn, before: int) -> dict[str, Any]:
    """The one chat request the stand-in received since *before*."""
    new = standin.requests[before:]
    assert len(new) == 1, new
    path, body = new[0]
    assert path.rstrip("/").endswith("/chat/completions")
    return body


def _assert_recipe(body: dict[str, Any], model: str) -> None:
    assert body["model"] == model
    assert body["messages"] == RENDERED
    assert {k: body[k] for k in SETTINGS} == SETTINGS


def test_openai_sync(prompt: ct.Prompt, client: Any, standin: StandIn) -> None:
    before = len(standin.requests)
    reply = client.chat.completions.create(**prompt.call_args(**VARS))
    assert reply.choices[0].message.content == "echo: Ticket: printer on fire"
    _assert_recipe(_sent(standin, before), "m")


def test_openai_stream(prompt: ct.Prompt, client: Any, standin: StandIn) -> None:
    before = len(standin.requests)
    stream = client.chat.completions.create(**prompt.call_args(**VARS), stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "echo: Ticket: printer on fire"
    body = _sent(standin, before)
    _assert_recipe(body, "m")
    assert body["stream"] is True


async def test_openai_async_and_async_stream(prompt: ct.Prompt, standin: StandIn) -> None:
    async with openai.AsyncOpenAI(base_url=standin.base_url, api_key="sk-test",
                                  max_retries=0) as aclient:
        before = len(standin.requests)
        reply = await aclient.chat.completions.create(**prompt.call_args(**VARS))
        assert reply.choices[0].message.content == "echo: Ticket: printer on fire"
        _assert_recipe(_sent(standin, before), "m")
        before = len(standin.requests)
        stream = await aclient.chat.completions.create(**prompt.call_args(**VARS), stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == "echo: Ticket: printer on fire"
        _assert_recipe(_sent(standin, before), "m")


def _litellm_kwargs(standin: StandIn) -> dict[str, Any]:
    return {"api_base": standin.base_url, "api_key": "sk-test"}


def test_litellm_sync_async_and_stream(local_server: LocalServer, standin: StandIn) -> None:
    prompt = _served(local_server, "openai/m")  # litellm's provider prefix, stripped on the wire
    before = len(standin.requests)
    reply = litellm.completion(**prompt.call_args(**VARS), **_litellm_kwargs(standin))
    assert reply.choices[0].message.content == "echo: Ticket: printer on fire"
    _assert_recipe(_sent(standin, before), "m")

    before = len(standin.requests)
    stream = litellm.completion(**prompt.call_args(**VARS), stream=True,
                                **_litellm_kwargs(standin))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: Ticket: printer on fire"
    _assert_recipe(_sent(standin, before), "m")


async def test_litellm_async(local_server: LocalServer, standin: StandIn) -> None:
    prompt = _served(local_server, "openai/m")
    before = len(standin.requests)
    reply = await litellm.acompletion(**prompt.call_args(**VARS), **_litellm_kwargs(standin))
    assert reply.choices[0].message.content == "echo: Ticket: printer on fire"
    _assert_recipe(_sent(standin, before), "m")


def test_missing_variable_names_it_and_sends_nothing(
    prompt: ct.Prompt, client: Any, standin: StandIn
) -> None:
    before = len(standin.requests)
    with pytest.raises(ct.CTValidationError, match=r"'team' \(used in messages\[0\]\)"):
        client.chat.completions.create(**prompt.call_args(ticket="x"))
    assert len(standin.requests) == before


def test_default_chat_prompt_renders_the_same(client: Any, standin: StandIn) -> None:
    """A chat prompt made in code (e.g. a default_prompt) gives the same call arguments."""
    local = ct.chat_prompt(MESSAGES, config={"model": "m", **SETTINGS})
    assert (local.version_number, local.status, local.id) == (0, "default", None)
    before = len(standin.requests)
    client.chat.completions.create(**local.call_args(**VARS))
    _assert_recipe(_sent(standin, before), "m")
