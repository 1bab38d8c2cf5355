"""Stream proxies: a streamed call ends (span, metrics, CT record) exactly once, when the
stream is exhausted, closed, left by ``with`` or dropped.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType
from typing import Any

import wrapt

from kaizen_sdk.integrations._call import TracedCall
from kaizen_sdk.integrations._utils import Extracted

__all__ = [
    "Accumulate",
    "Collect",
    "TracedAsyncStream",
    "TracedStream",
    "wrap_stream",
]

logger = logging.getLogger("kaizen_sdk.instrument")

# --- streams -------------------------------------------------------------------------------

Accumulate = Callable[[Any], None]
Collect = Callable[[], Extracted]


class _StreamState:
    """What a stream proxy shares with its garbage-collection finalizer (never the proxy)."""

    __slots__ = ("accumulate", "call", "collect")

    def __init__(self, call: TracedCall, accumulate: Accumulate, collect: Collect) -> None:
        self.call = call
        self.accumulate = accumulate
        self.collect = collect

    def done(self) -> None:
        if self.call.ended:
            return
        try:
            data = self.collect()
        except Exception:
            logger.debug("Summarising a stream for tracing failed.", exc_info=True)
            data = Extracted()
        self.call.finish(data)

    def failed(self, exc: BaseException) -> None:
        self.call.fail(exc)


class _StreamBase(wrapt.ObjectProxy):  # type: ignore[type-arg]
    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    @property
    def ct_trace_id(self) -> str:
        """The CT trace id of this call (a UUID string), for scoring later."""
        return self._self_state.call.trace_id

    def ct_score(self, score: float, scored_by: str = "sdk") -> Any:
        """Score this call in [0, 1] in the background (see ``TracedResponse.ct_score``)."""
        return self._self_state.call.score(score, scored_by)

    def __del__(self) -> None:
        # An abandoned stream still ends its span, with what was read so far.
        try:
            state = self._self_state
        except Exception:
            return
        if not state.call.ended:
            with contextlib.suppress(Exception):
                self._abandoned()
        with contextlib.suppress(Exception):
            state.done()

    def _abandoned(self) -> None:
        """Release what the stream holds when it is dropped before its end (sync only)."""

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("A stream cannot be pickled.")

    def __copy__(self) -> Any:
        raise TypeError("A stream cannot be copied.")

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise TypeError("A stream cannot be copied.")


class TracedStream(_StreamBase):
    """A synchronous stream that ends its call's span when it is exhausted or closed.

    Iteration, ``close()`` and ``with`` go through the proxy; the rest goes to the stream.
    """

    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_it: Any = None

    def _abandoned(self) -> None:
        # Close the stream beneath: its connection goes back to the pool, and another
        # instrumentation's stream wrapper ends its span and detaches its context.
        close = getattr(self.__wrapped__, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[Any]:
        # ``for chunk in stream``: a generator steps cheaper than a Python ``__next__`` per
        # chunk. It keeps this proxy alive while it runs (``for c in create(...)`` holds only
        # the generator); the proxy never holds it, so when a loop left early drops it, the
        # proxy's ``__del__`` still ends the call.
        return _chunks(self._self_source(), self._self_state, self)

    def _self_source(self) -> Any:
        it = self._self_it
        if it is None:
            wrapped = self.__wrapped__
            it = wrapped if hasattr(type(wrapped), "__next__") else iter(wrapped)
            self._self_it = it
        return it

    def __next__(self) -> Any:
        it = self._self_it
        if it is None:
            it = self._self_source()
        state = self._self_state
        try:
            item = next(it)
        except StopIteration:
            state.done()
            raise
        except BaseException as exc:
            state.failed(exc)
            raise
        try:  # once per chunk: no method call here (issue 28)
            state.accumulate(item)
        except Exception:
            logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
        return item

    def close(self) -> Any:
        """Close the stream and end its span; returns what the library's ``close`` returns."""
        try:
            close = getattr(self.__wrapped__, "close", None)
            return close() if close is not None else None
        finally:
            self._self_state.done()

    def __enter__(self) -> TracedStream:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            leave = getattr(self.__wrapped__, "__exit__", None)
            return leave(exc_type, exc, tb) if leave is not None else None
        finally:
            if exc is not None and not isinstance(exc, GeneratorExit):
                self._self_state.failed(exc)
            self._self_state.done()


def _chunks(it: Any, state: _StreamState, owner: TracedStream) -> Iterator[Any]:
    """`TracedStream`'s iteration: each chunk to the accumulator, the call ended at the end.

    *owner* (the proxy) is only held, so that it outlives the loop.
    """
    accumulate = state.accumulate
    try:
        for item in it:
            try:
                accumulate(item)
            except Exception:
                logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
            yield item
    except GeneratorExit:  # the loop was left early: the proxy ends the call when dropped
        raise
    except BaseException as exc:
        state.failed(exc)
        raise
    state.done()


class TracedAsyncStream(_StreamBase):
    """An asynchronous stream that ends its call's span when it is exhausted or closed."""

    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_it: Any = None

    def __aiter__(self) -> AsyncIterator[Any]:
        # ``async for chunk in stream``: an async generator steps on without a coroutine per
        # chunk, where an ``async def __anext__`` makes one (issue 28). As `_chunks`, it keeps
        # this proxy alive while it runs and is never held by it: a loop left early drops it,
        # the event loop closes it (asyncio: on its next step), then the proxy's ``__del__``
        # ends the call.
        return _achunks(self._self_source(), self._self_state, self)

    def _self_source(self) -> Any:
        it = self._self_it
        if it is None:
            # the stream's own iterator, as ``async for`` over the stream would take: an
            # async generator steps on without a new coroutine per chunk, where the stream's
            # ``__anext__`` (openai's) makes one to await its generator (issue 28)
            it = self.__wrapped__.__aiter__()
            self._self_it = it
        return it

    async def __anext__(self) -> Any:
        it = self._self_it
        if it is None:
            it = self._self_source()
        state = self._self_state
        try:
            item = await it.__anext__()
        except StopAsyncIteration:
            state.done()
            raise
        except BaseException as exc:
            state.failed(exc)
            raise
        try:  # once per chunk: no method call here (issue 28)
            state.accumulate(item)
        except Exception:
            logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
        return item

    def close(self) -> Any:
        """Close the stream and end its span.

        Returns what the library's ``close`` returns: an awaitable when it is ``async`` (the
        span ends once that is awaited), else its result.
        """
        try:
            closer = getattr(self.__wrapped__, "close", None)
            result = closer() if closer is not None else None
        except BaseException:
            self._self_state.done()
            raise
        if inspect.isawaitable(result):
            return self._done_after(result)
        self._self_state.done()
        return result

    async def _done_after(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        finally:
            self._self_state.done()

    async def aclose(self) -> None:
        """Close the stream (awaiting the library's own close) and end its span."""
        try:
            wrapped = self.__wrapped__
            closer = getattr(wrapped, "aclose", None) or getattr(wrapped, "close", None)
            await _maybe_await(closer)
        finally:
            self._self_state.done()

    async def __aenter__(self) -> TracedAsyncStream:
        await _maybe_await(getattr(self.__wrapped__, "__aenter__", None))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            leave = getattr(self.__wrapped__, "__aexit__", None)
            if leave is not None:
                return await leave(exc_type, exc, tb)
            return None
        finally:
            if exc is not None:
                self._self_state.failed(exc)
            self._self_state.done()


async def _achunks(it: Any, state: _StreamState, owner: TracedAsyncStream) -> AsyncIterator[Any]:
    """`TracedAsyncStream`'s iteration, as `_chunks` is `TracedStream`'s.

    *owner* (the proxy) is only held, so that it outlives the loop.
    """
    accumulate = state.accumulate
    try:
        async for item in it:
            try:
                accumulate(item)
            except Exception:
                logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
            yield item
    except GeneratorExit:  # the loop was left early: the proxy ends the call when dropped
        raise
    except BaseException as exc:
        state.failed(exc)
        raise
    state.done()


async def _maybe_await(method: Callable[[], Any] | None) -> Any:
    if method is None:
        return None
    result = method()
    if inspect.isawaitable(result):
        return await result
    return result


def wrap_stream(
    stream: Any, call: TracedCall, accumulate: Accumulate, collect: Collect, *, is_async: bool
) -> Any:
    """Return *stream* behind a proxy that ends *call* when the stream ends."""
    try:
        state = _StreamState(call, accumulate, collect)
        return (TracedAsyncStream if is_async else TracedStream)(stream, state)
    except Exception:
        logger.exception("Could not wrap the LLM stream; its span ends now.")
        call.finish(Extracted())
        return stream
