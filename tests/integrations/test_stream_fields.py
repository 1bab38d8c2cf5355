"""How a stream's chunks are read (issue 28): litellm's chunks keep most of their fields as
pydantic extras, which attribute access finds only through pydantic's ``__getattr__`` (a
Python call per read, several per chunk); the accumulator reads them from the instance and
extras dicts instead, and reads exactly what attribute access would.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import pydantic
from openai_standin import StandIn
from test_stream_cost import LONG, SHORT, _message

from kaizen_sdk.integrations._chat import ChatStreamAccumulator, plain_model

if TYPE_CHECKING:
    import litellm
else:
    litellm = None  # imported when this file's first test runs (conftest.py: _litellm)

__all__: list[str] = []

_CHAT = "kaizen_sdk/integrations/_chat.py"


class _Extras(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")


class _Delta(_Extras):
    role: str | None = None


class _Choice(_Extras):
    pass


class _Chunk(_Extras):
    id: str
    choices: list[_Choice] = []


class _Shadowed(_Extras):
    """A class attribute named as a chunk field: read through attribute access."""

    @property
    def model(self) -> str:
        return "from-property"


def _chunk(text: str, **extra: Any) -> _Chunk:
    choice = _Choice(index=0, delta=_Delta(content=text), finish_reason=extra.pop("reason", None))
    return _Chunk(id="c-1", choices=[choice], **extra)


def test_extras_are_read_as_attribute_access_reads_them() -> None:
    acc = ChatStreamAccumulator()
    acc.add_fields(_chunk("", model="m-1", system_fingerprint="fp"))  # an empty first delta
    acc.add_fields(_chunk("hello ", service_tier="default"))
    acc.add_fields(_chunk("world", reason="stop"))
    acc.add_fields(_Chunk(id="c-1", usage={"prompt_tokens": 3, "completion_tokens": 2,
                                     "total_tokens": 5}))
    data = acc.collect()
    assert (data.response_id, data.model, data.system_fingerprint, data.service_tier) == (
        "c-1", "m-1", "fp", "default")
    assert (data.text, data.finish_reasons) == ("hello world", ["stop"])
    assert (data.input_tokens, data.output_tokens, data.total_tokens) == (3, 2, 5)

    only_empty = ChatStreamAccumulator()
    only_empty.add_fields(_chunk(""))
    assert only_empty.collect().text == ""  # as attribute access gives: "" was streamed


def test_a_class_that_shadows_a_field_is_read_by_attribute() -> None:
    assert plain_model(_Chunk) and plain_model(_Choice) and plain_model(_Delta)
    assert not plain_model(_Shadowed)
    acc = ChatStreamAccumulator()
    acc.add_fields(_Shadowed(id="s-1", model="from-extras", choices=[]))
    assert acc.collect().model == "from-property"


def test_litellm_chunks_are_not_read_through_getattr(patch: Any, standin: StandIn) -> None:
    """pydantic's ``__getattr__`` is called from the accumulator a constant number of times
    per stream, whatever its chunk count (before: about five times per chunk)."""
    patch(litellm)
    hook = pydantic.BaseModel.__getattr__.__code__

    def reads(words: int) -> tuple[int, int]:
        stream = litellm.completion(
            model="openai/m", api_base=standin.base_url, api_key="sk-test",
            messages=_message(words), stream=True, stream_options={"include_usage": True})
        calls = 0

        def profile(frame: FrameType, event: str, arg: Any) -> None:
            nonlocal calls
            caller = frame.f_back
            if (event == "call" and frame.f_code is hook and caller is not None
                    and caller.f_code.co_filename.endswith(_CHAT)):
                calls += 1

        sys.setprofile(profile)
        try:
            chunks = sum(1 for _ in stream)
        finally:
            sys.setprofile(None)
        return calls, chunks

    reads(SHORT)  # warm-up
    short_calls, short_chunks = reads(SHORT)
    long_calls, long_chunks = reads(LONG)
    assert long_chunks - short_chunks == LONG - SHORT
    assert long_calls == short_calls


def _openai_chunk(**fields: Any) -> Any:
    from openai.types.chat import ChatCompletionChunk

    body = {"id": "", "model": "", "object": "chat.completion.chunk", "created": 1,
            "choices": [], **fields}
    return ChatCompletionChunk.model_validate(body)


def _delta(text: str, reason: str | None = None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": {"content": text}, "finish_reason": reason}]


def test_openai_chunks_give_the_fields_of_the_chunks_that_open_and_close_a_stream() -> None:
    """openai's chunks are read by attribute, the fingerprint and tier only from the chunks
    that open the stream (until its id and model are known) and those that close it."""
    # Azure's shape: a first chunk without id or model, the fields from the second on
    acc = ChatStreamAccumulator()
    acc.add(_openai_chunk(prompt_filter_results=[]))
    acc.add(_openai_chunk(id="c-1", model="m-1", system_fingerprint="fp-1",
                          service_tier="default", choices=_delta("hello ")))
    acc.add(_openai_chunk(id="c-1", model="m-1", system_fingerprint="fp-2",
                          choices=_delta("world", "stop")))
    data = acc.collect()
    assert (data.response_id, data.model, data.system_fingerprint, data.service_tier) == (
        "c-1", "m-1", "fp-1", "default")
    assert (data.text, data.finish_reasons) == ("hello world", ["stop"])

    # the fingerprint only on the closing chunk, usage on its own final chunk
    acc = ChatStreamAccumulator()
    acc.add(_openai_chunk(id="c-2", model="m-2", choices=_delta("a")))
    acc.add(_openai_chunk(id="c-2", model="m-2", service_tier="flex", choices=_delta("b")))
    acc.add(_openai_chunk(id="c-2", model="m-2", system_fingerprint="fp-3",
                          choices=_delta("", "length")))
    acc.add(_openai_chunk(id="c-2", model="m-2", service_tier="priority",
                          usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}))
    data = acc.collect()
    # a middle chunk's tier is not read; the closing chunks' fields are
    assert (data.system_fingerprint, data.service_tier) == ("fp-3", "priority")
    assert (data.text, data.finish_reasons, data.total_tokens) == ("ab", ["length"], 6)
