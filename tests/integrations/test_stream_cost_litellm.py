"""What a litellm stream costs per chunk (issue 28): as openai's, a constant number of calls.

Same method as ``test_stream_cost.py`` (which see): two streams that differ only in their
chunk count, Python calls into ``kaizen_sdk`` counted while each is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from openai_standin import StandIn
from test_stream_cost import LONG, PER_CHUNK, SHORT, SLACK, _message, counting

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

__all__: list[str] = []


def _kwargs(standin: StandIn, words: int) -> dict[str, Any]:
    return {"model": "openai/m", "api_base": standin.base_url, "api_key": "sk-test",
            "messages": _message(words), "stream": True,
            "stream_options": {"include_usage": True}}


def test_sync_stream_costs_a_constant_per_chunk(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)

    def cost(words: int) -> tuple[int, int]:
        stream = litellm.completion(**_kwargs(standin, words))
        with counting() as counter:
            chunks = sum(1 for _ in stream)
        return counter.calls, chunks

    cost(SHORT)  # warm-up
    short_calls, short_chunks = cost(SHORT)
    long_calls, long_chunks = cost(LONG)
    assert long_chunks - short_chunks == LONG - SHORT
    assert long_calls - short_calls <= PER_CHUNK * (long_chunks - short_chunks) + SLACK
    records = cap.records[-2:]
    assert [len((r.response_text or "").split(" ")) for r in records] == [SHORT + 1, LONG + 1]
    assert all(r.tokens is not None for r in records)


async def test_async_stream_costs_a_constant_per_chunk(patch: Any, standin: StandIn) -> None:
    cap = patch(litellm)

    async def cost(words: int) -> tuple[int, int]:
        stream = await litellm.acompletion(**_kwargs(standin, words))
        chunks = 0
        with counting() as counter:
            async for _ in stream:
                chunks += 1
        return counter.calls, chunks

    await cost(SHORT)
    # the fewest calls of two streams of each length: now and then a block counted more
    # calls than its own stream makes (2 runs in 7 of one file order), work the event loop
    # ran late inside it; a per-chunk cost shows in both streams of a length alike
    short_calls, short_chunks = min([await cost(SHORT), await cost(SHORT)])
    long_calls, long_chunks = min([await cost(LONG), await cost(LONG)])
    assert long_chunks - short_chunks == LONG - SHORT
    assert long_calls - short_calls <= PER_CHUNK * (long_chunks - short_chunks) + SLACK
    records = cap.records[-4:]
    assert [len((r.response_text or "").split(" ")) for r in records] == [
        SHORT + 1, SHORT + 1, LONG + 1, LONG + 1,
    ]
    assert all(r.tokens is not None for r in records)
