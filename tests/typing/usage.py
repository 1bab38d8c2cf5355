"""User code that mypy --strict and pyright must accept (``test_typing.py`` checks the types)."""

from __future__ import annotations

from collections.abc import Iterator

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
