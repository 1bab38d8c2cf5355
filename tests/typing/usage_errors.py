"""Wrong calls of decorated functions: each line ending in ``# error`` must be an error."""

from __future__ import annotations

import kaizen_sdk as ct


@ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
    return ticket


@ct.task("count", default_prompt="p")
async def count(text: str) -> int:
    return len(text)


def wrong() -> None:
    summarize(1)  # error
    summarize("x", prompt=3)  # error
    summarize("x", colour="red")  # error
    n: int = summarize("x")  # noqa: F841  # error
    count.call(1).close()  # error


class Bot:
    @ct.task("answer", default_prompt="Answer: {{ q }}")
    def answer(self, q: str) -> str:
        return q

    @ct.task("ask", default_prompt="p")
    async def ask(self, q: str) -> int:
        return len(q)


def wrong_methods(bot: Bot) -> None:
    bot.answer(123)  # error
    bot.ask(123).close()  # error
