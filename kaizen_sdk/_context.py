"""``ct.context(...)``: who a call is for (user, session, tags) and, for instrumented LLM
calls outside any ``@ct.task`` function, which task they belong to, on a context variable.

The values hold for the code inside the ``with`` block, in its thread or asyncio task only
(a `contextvars.ContextVar`), so concurrent requests never see each other's. Blocks nest: an
inner block overrides ``user_id``/``session_id`` it sets and adds its ``tags``. The task
decorator reads `current_context` to record the fields on traces and spans and to assign a
rollout arm (see `kaizen_sdk._rollout.assignment_key`).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterable
from types import TracebackType

__all__ = ["CONTEXT", "CallContext", "context", "current_context"]


@dataclasses.dataclass(frozen=True)
class CallContext:
    """The context fields in force: ``user_id``, ``session_id``, ``tags`` and ``task``."""

    user_id: str | None = None
    session_id: str | None = None
    tags: tuple[str, ...] = ()
    task: str | None = None


_CURRENT: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "kaizen_sdk_context", default=None
)


CONTEXT = _CURRENT
"""The contextvar behind `current_context` (read only; the decorator binds its ``get``)."""


def current_context() -> CallContext | None:
    """Return the context fields in force here, ``None`` outside any ``ct.context`` block."""
    return _CURRENT.get()


class context:
    """Set ``user_id``, ``session_id`` and ``tags`` for the calls inside the block.

    Works with ``with`` and ``async with``, in threads and asyncio tasks alike. ``task``
    names the CT task of the instrumented LLM calls (``ct.instrument``) inside the block that
    no ``@ct.task`` function encloses; without a task such calls send no CT record.

    Example:
        ```python
        with ct.context(user_id="u-42", session_id="s-7", tags=["beta"]):
            summarize(ticket)      # its trace records the user, session and tags
        ```
    """

    def __init__(
        self,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        task: str | None = None,
    ) -> None:
        for name, value in (("user_id", user_id), ("session_id", session_id), ("task", task)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__}.")
        if task is not None and not task.strip():
            raise TypeError("task must name a task, e.g. task='summarize_ticket'.")
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of strings, not one string.")
        self._user_id = user_id
        self._session_id = session_id
        self._tags = tuple(str(t) for t in tags or ())
        self._task = task
        self._tokens: list[contextvars.Token[CallContext | None]] = []

    def __repr__(self) -> str:
        task = "" if self._task is None else f", task={self._task!r}"
        return (f"context(user_id={self._user_id!r}, session_id={self._session_id!r}, "
                f"tags={list(self._tags)!r}{task})")

    def __enter__(self) -> CallContext:
        outer = _CURRENT.get() or CallContext()
        merged = CallContext(
            user_id=self._user_id if self._user_id is not None else outer.user_id,
            session_id=self._session_id if self._session_id is not None else outer.session_id,
            tags=tuple(dict.fromkeys(outer.tags + self._tags)),
            task=self._task if self._task is not None else outer.task,
        )
        self._tokens.append(_CURRENT.set(merged))
        return merged

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _CURRENT.reset(self._tokens.pop())

    async def __aenter__(self) -> CallContext:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
