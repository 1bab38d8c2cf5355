"""``activate_prompt`` is seen by the very next call of every decorated function on that client.

Background revalidation is set far off (``prompt_refresh=300``), so only the activation
itself can make the next call switch versions.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import kaizen_sdk as ct
from kaizen_sdk import _default
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_sdk.local import LocalServer

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
