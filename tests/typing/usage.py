"""User code that mypy --strict and pyright must accept (``test_typing.py`` checks the types)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import openai
from openai.types.chat import ChatCompletion

import kaizen_sdk as ct


@ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
    """Summarize one support ticket."""
    return prompt.render(ticket=ticket)


@ct.task("stream_ticket", default_prompt="p")
async def summarize_async(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> int:
    return len(ticket)


@ct.task("words", default_prompt="p")
def words(text: str) -> Iterator[str]:
    yield from text.split()


def scripted(client: ct.CTClient) -> None:
    reveal_type(summarize("x"))  # noqa: F821
    reveal_type(summarize("x", prompt=ct.Prompt(prompt_text="Say {{ ticket }}")))  # noqa: F821
    reveal_type(summarize(ticket="x"))  # noqa: F821
    reveal_type(summarize.call("x"))  # noqa: F821
    pending = summarize_async("x")
    _ = reveal_type(pending)  # noqa: F821
    pending.close()
    reveal_type(words.call("a b"))  # noqa: F821
    reveal_type(client.get_prompt("summarize_ticket"))  # noqa: F821
    reveal_type(client.list_tasks())  # noqa: F821
    reveal_type(ct.current_trace_id())  # noqa: F821

    @client.task("bound", default_prompt="p")
    def bound(n: int, prompt: ct.Prompt = ct.PROMPT) -> float:
        return n / 2

    reveal_type(bound(3))  # noqa: F821


async def awaited() -> None:
    result, run = await summarize_async.call("x")
    reveal_type(result)  # noqa: F821
    reveal_type(run)  # noqa: F821


class Bot:
    @ct.task("answer", default_prompt="Answer: {{ q }}")
    def answer(self, q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return prompt.render(q=q)


def methods(bot: Bot) -> None:
    reveal_type(bot.answer("x"))  # noqa: F821
    reveal_type(bot.answer.call(q="x"))  # noqa: F821


TRIAGE = ct.chat_prompt(
    [{"role": "system", "content": "Triage for {{ team }}."},
     {"role": "user", "content": "{{ ticket }}"}],
    config={"model": "gpt-4o-mini", "temperature": 0},
)


@ct.task("triage", default_prompt=TRIAGE, label="staging")
def triage(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
    return str(prompt.call_args(team="billing", ticket=ticket)["model"])


async def recipe(client: ct.CTClient, llm: openai.OpenAI, allm: openai.AsyncOpenAI) -> None:
    """The documented recipe usage: call_args into openai, sync, async and streaming."""
    prompt = client.get_prompt("triage", label="staging")
    reveal_type(prompt.call_args(team="billing", ticket="x"))  # noqa: F821
    reveal_type(prompt.messages_for(team="billing", ticket="x"))  # noqa: F821
    served = ct.prompt("triage", key="customer-42", default=TRIAGE)
    reveal_type(served)  # noqa: F821
    reveal_type(client.set_label("triage", "staging", str(prompt.id)))  # noqa: F821
    # `**dict[str, Any]` matches every overload of create(): the reply is Any unless cast
    reply = cast(ChatCompletion, llm.chat.completions.create(
        **served.call_args(team="billing", ticket="x")))
    reveal_type(reply.choices[0].message.content)  # noqa: F821
    for chunk in llm.chat.completions.create(**prompt.call_args(team="b", ticket="x"),
                                             stream=True):
        print(chunk.choices[0].delta.content if chunk.choices else "")
    areply = await allm.chat.completions.create(**prompt.call_args(team="b", ticket="x"))
    print(areply.choices[0].message.content)
    async for part in await allm.chat.completions.create(
        **served.call_args(team="b", ticket="x"), stream=True
    ):
        print(part.choices[0].delta.content if part.choices else "")
    reveal_type(triage("x"))  # noqa: F821
    reveal_type(await ct.aprompt("triage", key="customer-42", label="staging"))  # noqa: F821
