"""A slow server never slows the caller; hostile arguments never break a call or its trace."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from kaizen_sdk import CTClient

from ._proxy import FaultProxy
from .conftest import API_KEY, CTServer, forwarded_trace_ids, wait_for

pytestmark = [pytest.mark.e2e]


@pytest.mark.timeout(120)
def test_a_slow_server_does_not_slow_the_decorated_function(
    ct_server: CTServer, proxy: FaultProxy, task_name: str
) -> None:
    client = CTClient(api_key=API_KEY, base_url=proxy.url)

    @client.task(task_name, default_prompt="p")
    def echo(x: int, prompt: Any = None) -> int:
        return x

    ids = [echo.call(-1)[1].trace_id]  # warm: the prompt is fetched, the pipeline built
    client.flush()
    assert ct_server.trace_ids(task_name) == ids

    # The server stops answering: the next delivery request hangs in the proxy.
    proxy.freeze()
    ids.append(echo.call(0)[1].trace_id)
    assert wait_for(lambda: proxy.held_delivery == 1)
    answered = len(proxy.requests())
    for i in range(1, 2001):  # all of these return while the server still has not answered
        result, run = echo.call(i)
        assert result == i
        ids.append(run.trace_id)
    assert proxy.held_delivery >= 1
    assert len(proxy.requests()) == answered  # not one delivery request was answered meanwhile

    # Then it answers, slowly: 2 s per request. Everything arrives, once.
    proxy.set_delay(2.0)
    proxy.thaw()
    client.flush()
    client.close()
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (2002, 2002, 0)
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    wire = forwarded_trace_ids(proxy)
    assert set(wire) == set(ids) and set(wire.values()) == {1}


class _ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("repr exploded")

    def __str__(self) -> str:
        raise RuntimeError("str exploded")


class _EverythingRaises(_ReprRaises):
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("eq exploded")

    def __hash__(self) -> int:
        raise RuntimeError("hash exploded")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"getattr {name} exploded")


def _hostile_arguments() -> list[tuple[str, Any]]:
    cyclic_list: list[Any] = [1, 2]
    cyclic_list.append(cyclic_list)
    cyclic_dict: dict[str, Any] = {"a": 1}
    cyclic_dict["self"] = cyclic_dict
    return [
        ("repr raises", _ReprRaises()),
        ("everything raises", _EverythingRaises()),
        ("cyclic list", cyclic_list),
        ("cyclic dict", cyclic_dict),
        ("50 MB string", "x" * (50 * 1024 * 1024)),
        ("bytes", b"\x00\xff" * 1000),
        ("50 MB bytes", b"\x01" * (50 * 1024 * 1024)),
        ("NaN", math.nan),
        ("infinities", [math.inf, -math.inf]),
        ("set", {1, 2, 3}),
        ("non-str keys", {(1, 2): "tuple key", None: 1, _ReprRaises(): 2}),
        ("lone surrogate", "\ud800"),
        ("deep nesting", _deep(2000)),
        ("a class", type),
        ("a generator", (i for i in range(3))),
    ]


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.timeout(120)
def test_hostile_arguments_return_normally_and_are_traced(
    ct_server: CTServer, task_name: str
) -> None:
    client = CTClient(api_key=API_KEY, base_url=ct_server.url)

    @client.task(task_name, default_prompt="p")
    def identity(value: Any, prompt: Any = None) -> Any:
        return value

    cases = _hostile_arguments()
    ids = []
    for label, value in cases:
        result, run = identity.call(value)
        assert result is value, label  # the very object comes back, untouched
        ids.append(run.trace_id)
        result, run = identity.call(value=value)  # as a keyword too
        assert result is value, label
        ids.append(run.trace_id)
    client.flush()
    client.close()

    stats = client.stats()
    n = 2 * len(cases)
    assert (stats.queued, stats.sent, stats.dropped) == (n, n, 0)
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert ct_server.feedback_count(task_name) == n
    with CTClient(api_key=API_KEY, base_url=ct_server.url) as reader:
        stored = reader.list_feedback(task_name, limit=1000)
    assert len(stored) == n
    for entry in stored:  # large values were cut, not shipped whole
        assert len(msgspec.json.encode(entry)) < 1024 * 1024
