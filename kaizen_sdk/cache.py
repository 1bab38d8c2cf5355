"""TTLCache: the in-memory prompt cache shared by the clients and the task decorator.

It is thread-safe, bounded (least recently used entries are evicted first), reads time from
an injectable monotonic clock, and loads each missing key once however many threads (or
asyncio tasks) miss it at the same moment ("single flight"). Expired entries are kept until
evicted, so a caller can serve a stale value while it refreshes (`lookup`, `get_stale`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAXSIZE", "TTLCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(Generic[V]):
    __slots__ = ("expires", "value")

    def __init__(self, value: V, expires: float) -> None:
        self.value = value
        self.expires = expires


class _Flight(Generic[V]):
    """One load in progress. ``invalidated`` stops its result from being stored."""

    __slots__ = ("done", "error", "invalidated", "task", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: V | None = None
        self.error: BaseException | None = None
        self.invalidated = False
        self.task: asyncio.Task[V] | None = None


class TTLCache(Generic[K, V]):
    """A thread-safe, size-bounded cache whose entries are fresh for ``ttl`` seconds.

    Example::

        cache: TTLCache[str, Prompt] = TTLCache(ttl=300.0)
        prompt = cache.get_or_load("summarize_ticket", lambda: fetch("summarize_ticket"))

    Parameters:
        ttl: seconds an entry stays fresh; ``0`` makes every entry stale at once (each
            lookup loads, but concurrent misses still share one load).
        maxsize: entries kept at most; the least recently used one is evicted first.
        clock: a monotonic clock in seconds (tests pass a fake one).

    Values must not be ``None`` (``None`` means "not cached" in `get`).
    """

    def __init__(
        self,
        ttl: float,
        *,
        maxsize: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}.")
        self.ttl = float(ttl)
        self.maxsize = maxsize
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._last: object = None  # the key moved to the end last (see `lookup`)
        self._flights: dict[K, _Flight[V]] = {}
        self._async_flights: dict[K, _Flight[V]] = {}

    def __repr__(self) -> str:
        return f"TTLCache(ttl={self.ttl!r}, maxsize={self.maxsize!r}, size={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    # --- reads without loading -----------------------------------------------------------

    def lookup(self, key: K) -> tuple[V, bool] | None:
        """Return ``(value, is_fresh)`` for a cached key, stale or not; ``None`` on a miss.

        The decorator's hot path: a read of the most recently used key (one task called
        over and over) takes no lock, since it is already last in the eviction order.
        """
        entry = self._data.get(key)  # one dict read, atomic without the lock
        if entry is None:
            return None
        last = self._last
        if last is not key and last != key:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    self._last = key
        return entry.value, self._clock() < entry.expires

    def get(self, key: K) -> V | None:
        """Return the fresh value for *key*, or ``None`` when it is missing or expired."""
        found = self.lookup(key)
        if found is None or not found[1]:
            return None
        return found[0]

    def get_stale(self, key: K) -> V | None:
        """Return the cached value for *key* even if it expired; ``None`` on a miss."""
        found = self.lookup(key)
        return None if found is None else found[0]

    def loading(self, key: K) -> bool:
        """Return True while a load of *key* is in progress (thread or asyncio)."""
        with self._lock:
            return key in self._flights or key in self._async_flights

    # --- writes -------------------------------------------------------------------------

    def set(self, key: K, value: V) -> None:
        """Store *value* under *key*, fresh for ``ttl`` seconds from now."""
        with self._lock:
            self._store(key, value)

    def invalidate(self, key: K) -> bool:
        """Forget *key*, including a load of it that is still in progress.

        Callers already waiting on that load still get its result, but it is not stored,
        and the next miss starts a new load. Returns True when an entry was removed.
        """
        with self._lock:
            for flights in (self._flights, self._async_flights):
                flight = flights.pop(key, None)
                if flight is not None:
                    flight.invalidated = True
            return self._data.pop(key, None) is not None

    def clear(self) -> None:
        """Forget every entry and every load in progress."""
        with self._lock:
            for flights in (self._flights, self._async_flights):
                for flight in flights.values():
                    flight.invalidated = True
                flights.clear()
            self._data.clear()

    # --- single-flight loads ------------------------------------------------------------

    def get_or_load(self, key: K, loader: Callable[[], V]) -> V:
        """Return the fresh value for *key*, calling *loader* once on a miss.

        Threads that miss the same key while a load runs wait for it and share its result
        or its exception. The loader runs on the first missing thread, outside the lock.
        """
        with self._lock:
            entry = self._fresh(key)
            if entry is not None:
                return entry.value
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            return self._outcome(flight)
        try:
            value = loader()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            return value
        finally:
            with self._lock:
                if flight.error is None and not flight.invalidated:
                    self._store(key, flight.value)  # type: ignore[arg-type]
                self._forget_flight(self._flights, key, flight)
            flight.done.set()

    async def aget_or_load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        """Async `get_or_load`: tasks that miss the same key share one load.

        The load runs in its own task, so cancelling one waiter does not cancel it for
        the others.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._fresh(key)
            if entry is not None:
                return entry.value
            flight = self._async_flights.get(key)
            if flight is None or flight.task is None or flight.task.get_loop() is not loop:
                flight = self._async_flights[key] = _Flight()
                flight.task = loop.create_task(self._aload(key, loader, flight))
            task = flight.task
        return await asyncio.shield(task)

    async def _aload(self, key: K, loader: Callable[[], Awaitable[V]], flight: _Flight[V]) -> V:
        try:
            value = await loader()
        except BaseException:
            with self._lock:
                self._forget_flight(self._async_flights, key, flight)
            raise
        with self._lock:
            if not flight.invalidated:
                self._store(key, value)
            self._forget_flight(self._async_flights, key, flight)
        return value

    # --- helpers (call with the lock held) ----------------------------------------------

    def _fresh(self, key: K) -> _Entry[V] | None:
        entry = self._data.get(key)
        if entry is None or self._clock() >= entry.expires:
            return None
        self._data.move_to_end(key)
        self._last = key
        return entry

    def _store(self, key: K, value: V) -> None:
        self._data[key] = _Entry(value, self._clock() + self.ttl)
        self._data.move_to_end(key)
        self._last = key
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    @staticmethod
    def _forget_flight(flights: dict[K, _Flight[V]], key: K, flight: _Flight[V]) -> None:
        if flights.get(key) is flight:
            del flights[key]

    @staticmethod
    def _outcome(flight: _Flight[V]) -> V:
        if flight.error is not None:
            raise flight.error
        return flight.value  # type: ignore[return-value]


DEFAULT_MAXSIZE = 1024
"""Entries a prompt cache keeps before evicting the least recently used one."""
