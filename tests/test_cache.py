"""TTLCache: freshness, staleness, LRU bound, invalidation and single-flight loads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kaizen_sdk.cache import TTLCache

pytestmark = pytest.mark.unit


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_value_is_fresh_until_ttl_then_stale(clock: FakeClock) -> None:
    cache: TTLCache[str, str] = TTLCache(10.0, clock=clock)
    cache.set("a", "v1")
    clock.advance(9.999)
    assert cache.get("a") == "v1"
    assert cache.lookup("a") == ("v1", True)
    clock.advance(0.001)
    assert cache.get("a") is None
    assert cache.get_stale("a") == "v1"
    assert cache.lookup("a") == ("v1", False)
    assert len(cache) == 1


def test_miss_returns_none_everywhere(clock: FakeClock) -> None:
    cache: TTLCache[str, str] = TTLCache(10.0, clock=clock)
    assert cache.get("x") is None
    assert cache.get_stale("x") is None
    assert cache.lookup("x") is None
    assert cache.loading("x") is False


def test_get_or_load_loads_once_within_ttl_and_again_after(clock: FakeClock) -> None:
    cache: TTLCache[str, int] = TTLCache(5.0, clock=clock)
    calls: list[str] = []

    def load() -> int:
        calls.append("load")
        return len(calls)

    assert cache.get_or_load("k", load) == 1
    assert cache.get_or_load("k", load) == 1
    clock.advance(5.0)
    assert cache.get_or_load("k", load) == 2
    assert calls == ["load", "load"]


def test_zero_ttl_never_serves_fresh(clock: FakeClock) -> None:
    cache: TTLCache[str, int] = TTLCache(0.0, clock=clock)
    counter = iter(range(1, 100))
    assert cache.get_or_load("k", lambda: next(counter)) == 1
    assert cache.get_or_load("k", lambda: next(counter)) == 2
    assert cache.get_stale("k") == 2


def test_lru_eviction_keeps_recently_used(clock: FakeClock) -> None:
    cache: TTLCache[str, int] = TTLCache(60.0, maxsize=3, clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.set("c", 3)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.set("d", 4)  # evicts "b", the least recently used
    assert len(cache) == 3
    assert cache.get_stale("b") is None
    assert [cache.get(k) for k in ("a", "c", "d")] == [1, 3, 4]


def test_a_lookup_moves_its_key_last_whatever_was_read_before(clock: FakeClock) -> None:
    # `lookup` skips the lock for the key it moved last: every other key still moves
    cache: TTLCache[str, int] = TTLCache(60.0, maxsize=3, clock=clock)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.set(key, value)
    assert cache.lookup("c") == (3, True)  # already last
    assert cache.lookup("a") == (1, True)
    assert cache.lookup("".join(["a"])) == (1, True)  # an equal key, another object
    assert cache.lookup("b") == (2, True)
    cache.set("d", 4)  # evicts "c", now the least recently used
    assert cache.get_stale("c") is None
    assert [cache.lookup(k) for k in ("a", "b", "d")] == [(1, True), (2, True), (4, True)]
    cache.invalidate("d")
    cache.set("d", 5)
    assert cache.lookup("d") == (5, True)


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError, match="maxsize must be at least 1"):
        TTLCache(1.0, maxsize=0)


def test_invalidate_and_clear(clock: FakeClock) -> None:
    cache: TTLCache[str, int] = TTLCache(60.0, clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.invalidate("a") is True
    assert cache.invalidate("a") is False
    assert cache.get_stale("a") is None
    assert cache.get("b") == 2
    cache.clear()
    assert len(cache) == 0


def test_loader_error_is_not_cached_and_propagates(clock: FakeClock) -> None:
    cache: TTLCache[str, int] = TTLCache(60.0, clock=clock)

    def boom() -> int:
        raise KeyError("nope")

    with pytest.raises(KeyError, match="nope"):
        cache.get_or_load("k", boom)
    assert cache.lookup("k") is None
    assert cache.loading("k") is False
    assert cache.get_or_load("k", lambda: 7) == 7


def test_sixteen_threads_on_a_cold_cache_cause_exactly_one_load() -> None:
    cache: TTLCache[str, str] = TTLCache(300.0)
    n = 16
    barrier = threading.Barrier(n)
    arrived = 0
    cond = threading.Condition()
    loads: list[int] = []
    results: list[str] = []
    errors: list[BaseException] = []

    def loader() -> str:
        loads.append(1)
        # Hold the load until every thread has gone for the key, so a cache without
        # single flight would run this loader in all 16 threads.
        with cond:
            assert cond.wait_for(lambda: arrived == n, timeout=10)
        return "value"

    def worker() -> None:
        nonlocal arrived
        try:
            barrier.wait(timeout=10)
            with cond:
                arrived += 1
                cond.notify_all()
            results.append(cache.get_or_load("task", loader))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(loads) == 1
    assert results == ["value"] * n


def test_waiting_threads_share_the_loaders_exception() -> None:
    cache: TTLCache[str, str] = TTLCache(300.0)
    n = 4
    started = threading.Event()
    waiting = 0
    cond = threading.Condition()
    outcomes: list[str] = []
    calls: list[int] = []

    def loader() -> str:
        calls.append(1)
        started.set()
        with cond:
            assert cond.wait_for(lambda: waiting == n - 1, timeout=10)
        raise RuntimeError("server down")

    def leader() -> None:
        try:
            cache.get_or_load("k", loader)
        except RuntimeError as exc:
            outcomes.append(str(exc))

    def follower() -> None:
        nonlocal waiting
        assert started.wait(timeout=10)
        with cond:
            waiting += 1
            cond.notify_all()
        try:
            cache.get_or_load("k", loader)
        except RuntimeError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=leader)]
    threads += [threading.Thread(target=follower) for _ in range(n - 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    # Followers that arrived after the failure start their own load; either way every
    # caller sees the error and nothing is cached.
    assert outcomes == ["server down"] * n
    assert 1 <= len(calls) <= n
    assert cache.lookup("k") is None


def test_invalidate_during_load_drops_the_loaded_value(clock: FakeClock) -> None:
    cache: TTLCache[str, str] = TTLCache(60.0, clock=clock)

    def loader() -> str:
        assert cache.loading("k") is True
        cache.invalidate("k")  # e.g. activate_prompt while a get_prompt is in flight
        assert cache.loading("k") is False
        return "old"

    assert cache.get_or_load("k", loader) == "old"
    assert cache.lookup("k") is None
    assert cache.get_or_load("k", lambda: "new") == "new"
    assert cache.get("k") == "new"


async def test_sixteen_tasks_on_a_cold_cache_cause_exactly_one_load() -> None:
    cache: TTLCache[str, str] = TTLCache(300.0)
    cond = asyncio.Condition()
    arrived = 0
    loads: list[int] = []

    async def loader() -> str:
        loads.append(1)
        async with cond:  # hold the load until all 16 tasks went for the key
            await asyncio.wait_for(cond.wait_for(lambda: arrived == 16), timeout=10)
        return "value"

    async def call() -> str:
        nonlocal arrived
        async with cond:
            arrived += 1
            cond.notify_all()
        return await cache.aget_or_load("task", loader)

    assert await asyncio.gather(*(call() for _ in range(16))) == ["value"] * 16
    assert len(loads) == 1
    assert cache.get("task") == "value"
    assert cache.loading("task") is False


async def test_cancelling_one_async_waiter_does_not_cancel_the_load() -> None:
    cache: TTLCache[str, str] = TTLCache(300.0)
    started = asyncio.Event()
    release = asyncio.Event()
    loads: list[int] = []

    async def loader() -> str:
        loads.append(1)
        started.set()
        await release.wait()
        return "value"

    first = asyncio.create_task(cache.aget_or_load("k", loader))
    await asyncio.wait_for(started.wait(), timeout=10)
    second = asyncio.create_task(cache.aget_or_load("k", loader))
    first.cancel()
    release.set()
    assert await second == "value"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert loads == [1]
    assert cache.get("k") == "value"


async def test_async_loader_error_propagates_and_is_not_cached() -> None:
    cache: TTLCache[str, str] = TTLCache(300.0)

    async def loader() -> str:
        raise LookupError("missing")

    with pytest.raises(LookupError, match="missing"):
        await cache.aget_or_load("k", loader)
    assert cache.lookup("k") is None
    assert cache.loading("k") is False
