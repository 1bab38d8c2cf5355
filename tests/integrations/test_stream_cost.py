"""What a streamed call costs per chunk (issue 28): a constant, small number of Python calls.

The OpenAI stand-in streams one chunk per word of its reply ("echo: " + the last user
message), so two calls that differ only in the message's length differ only in their chunk
count. Python function calls into ``kaizen_sdk`` are counted (``sys.setprofile``) while the
stream is read: per extra chunk there are at most two (the proxy's step and the accumulator),
whatever the chunk count; counts, not times, so the machine's speed does not matter.
(Before issue 28 a chunk took about fourteen: a ``__next__``, two ``add`` and a helper per
attribute read.)
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import openai
import pytest
from openai_standin import StandIn

import kaizen_sdk

__all__: list[str] = []

_SDK_DIR = os.path.dirname(os.path.abspath(kaizen_sdk.__file__))
SHORT, LONG = 5, 65  # words in the user message
PER_CHUNK = 2  # the proxy's step (``__anext__``; sync: one generator for the whole loop) and
# the accumulator
SLACK = 10  # per stream, not per chunk: e.g. the previous stream's proxy collected meanwhile


def _message(words: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": " ".join(["word"] * words)}]


class _Counter:
    """Counts Python-level calls of code in kaizen_sdk: frames, so that a coroutine resumed
    after waiting for the network (how often depends on the network) counts once."""

    def __init__(self) -> None:
        self.frames: list[FrameType] = []  # kept alive, so no frame id is reused
        self.seen: set[int] = set()

    @property
    def calls(self) -> int:
        return len(self.frames)

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if (event == "call" and id(frame) not in self.seen
                and frame.f_code.co_filename.startswith(_SDK_DIR)):
            self.seen.add(id(frame))
            self.frames.append(frame)


@contextlib.contextmanager
def counting() -> Iterator[_Counter]:
    """Count calls into kaizen_sdk while the block runs, with the cyclic collector paused:
    a finalizer of an earlier stream run by a collection mid-block would otherwise be counted
    as this stream's (the async test failed so, now and then, with 132 calls against 130)."""
    counter = _Counter()
    gc.disable()
    sys.setprofile(counter)
    try:
        yield counter
    finally:
        sys.setprofile(None)
        gc.enable()


def _counted(read: Callable[[], int]) -> tuple[int, int]:
    with counting() as counter:
        chunks = read()
    return counter.calls, chunks


@pytest.fixture
def client(standin: StandIn) -> Iterator[Any]:
    with openai.OpenAI(base_url=standin.base_url, api_key="sk-test", max_retries=0) as c:
        yield c


@pytest.mark.parametrize("usage", [True, False])
def test_sync_stream_costs_two_calls_per_chunk(patch: Any, client: Any, usage: bool) -> None:
    cap = patch(openai)
    kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if usage else {}

    def cost(words: int) -> tuple[int, int]:
        stream = client.chat.completions.create(
            model="m", messages=_message(words), stream=True, **kwargs
        )

        def read() -> int:
            return sum(1 for _ in stream)

        return _counted(read)

    cost(SHORT)  # warm-up: first-use paths (imports, caches) stay out of the counts
    short_calls, short_chunks = cost(SHORT)
    long_calls, long_chunks = cost(LONG)
    assert long_chunks - short_chunks == LONG - SHORT
    assert long_calls - short_calls <= PER_CHUNK * (long_chunks - short_chunks) + SLACK
    # and the streams were traced in full all the same
    records = cap.records[-2:]
    assert [len((r.response_text or "").split(" ")) for r in records] == [SHORT + 1, LONG + 1]
    assert all((r.tokens is not None) is usage for r in records)


async def test_async_stream_costs_two_calls_per_chunk(patch: Any, standin: StandIn) -> None:
    cap = patch(openai)
    async with openai.AsyncOpenAI(
        base_url=standin.base_url, api_key="sk-test", max_retries=0
    ) as aclient:

        async def cost(words: int) -> tuple[int, int]:
            stream = await aclient.chat.completions.create(
                model="m", messages=_message(words), stream=True,
                stream_options={"include_usage": True},
            )
            chunks = 0
            with counting() as counter:
                async for _ in stream:
                    chunks += 1
            return counter.calls, chunks

        await cost(SHORT)
        short_calls, short_chunks = await cost(SHORT)
        long_calls, long_chunks = await cost(LONG)
    assert long_chunks - short_chunks == LONG - SHORT
    assert long_calls - short_calls <= PER_CHUNK * (long_chunks - short_chunks) + SLACK
    records = cap.records[-2:]
    assert [len((r.response_text or "").split(" ")) for r in records] == [SHORT + 1, LONG + 1]
    assert all(r.tokens is not None for r in records)


def test_loop_over_a_temporary_stream_reads_it_to_the_end(patch: Any, client: Any) -> None:
    # ``for chunk in create(...)``: nothing holds the proxy but the loop's iterator, which
    # must keep it (and the stream beneath) alive until the end
    cap = patch(openai)
    chunks = [
        chunk for chunk in client.chat.completions.create(
            model="m", messages=_message(SHORT), stream=True
        )
    ]
    assert len(chunks) == SHORT + 3  # role chunk, one per word of "echo: ...", finish chunk
    assert cap.only_record().response_text == "echo: " + " ".join(["word"] * SHORT)
    assert len(cap.spans()) == 1


def test_loop_left_early_still_ends_the_call(patch: Any, client: Any) -> None:
    cap = patch(openai)
    for _ in client.chat.completions.create(model="m", messages=_message(SHORT), stream=True):
        break
    # the loop's generator and the proxy are gone: the proxy ended the call when dropped
    assert len(cap.spans()) == 1
    assert cap.only_record().response_text == ""
