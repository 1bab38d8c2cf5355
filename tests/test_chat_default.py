"""A chat ``default_prompt`` with settings: served as is, and a new task's version 1."""

from __future__ import annotations

import time
import uuid

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

DEFAULT = ct.chat_prompt(
    [{"role": "system", "content": "Answer in {{ lang }}."},
     {"role": "user", "content": "{{ question }}"}],
    config={"model": "small-model", "temperature": 0},
)


def test_chat_default_prompt_is_served_and_becomes_version_1(local_server: LocalServer) -> None:
    name = f"chat-default-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  prompt_wait=0) as client:

        @client.task(name, default_prompt=DEFAULT)
        def ask(question: str, lang: str, prompt: ct.Prompt = ct.PROMPT) -> dict[str, object]:
            return prompt.call_args(question=question, lang=lang)

        assert ask("Why?", "French") == {
            "model": "small-model", "temperature": 0,
            "messages": [{"role": "system", "content": "Answer in French."},
                         {"role": "user", "content": "Why?"}],
        }
        assert client.flush(10)
        deadline = time.monotonic() + 15
        versions = client.list_prompt_versions(name)
        while not versions and time.monotonic() < deadline:
            time.sleep(0.02)
            versions = client.list_prompt_versions(name)
        assert [(v.version_number, v.messages, v.config, v.prompt_text) for v in versions] == [
            (1, DEFAULT.messages, DEFAULT.config, DEFAULT.prompt_text)
        ]
