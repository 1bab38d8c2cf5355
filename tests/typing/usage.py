"""User code that mypy --strict must accept; ``test_typing.py`` checks what it reveals."""

from __future__ import annotations

import kaizen_sdk as ct


@ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
def summarize(ticket: str, prompt: ct.Prompt | None = None) -> str:
    return ticket


@ct.task("stream_ticket", default_prompt="p")
async def summarize_async(ticket: str) -> int:
    return len(ticket)


def scripted(client: ct.CTClient) -> None:
    reveal_type(summarize("x"))  # noqa: F821
    pending = summarize_async("x")
    reveal_type(pending)  # type: ignore[unused-coroutine]  # noqa: F821
    pending.close()
    reveal_type(client.get_prompt("summarize_ticket"))  # noqa: F821
    reveal_type(client.list_tasks())  # noqa: F821
    reveal_type(ct.current_trace_id())  # noqa: F821
