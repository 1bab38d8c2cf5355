"""Naming the CT task of an LLM call that no ``@ct.task`` encloses: ``task_map``, the
``ct.context`` block, or a prompt constant in the calling module.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from types import FrameType

from kaizen_sdk._context import current_context

__all__ = [
    "caller_frame",
    "note_unattributed",
    "resolve_task",
]

logger = logging.getLogger("kaizen_sdk.instrument")

_SKIP_MODULES = ("kaizen_sdk", "openai", "litellm", "wrapt", "asyncio", "concurrent", "anyio",
                 "threading", "contextvars", "functools", "httpx", "httpx2", "anthropic",
                 "google.genai")
_CONSTANT_CACHE: dict[tuple[str, str], str | None] = {}
_CONSTANT_CACHE_MAX = 4096
_FRAME_LIMIT = 64


_SKIPPED: dict[str, bool] = {}


def _skipped(module: str) -> bool:
    try:
        return _SKIPPED[module]
    except KeyError:
        pass
    skip = any(module == p or module.startswith(p + ".") for p in _SKIP_MODULES)
    if len(_SKIPPED) < _CONSTANT_CACHE_MAX:
        _SKIPPED[module] = skip
    return skip


def caller_frame() -> FrameType | None:
    """The innermost frame that belongs to the application (not to us or the LLM library)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAME_LIMIT):
        if frame is None:
            return None
        name = frame.f_globals.get("__name__")
        if not isinstance(name, str) or not _skipped(name):
            return frame
        frame = frame.f_back
    return None


def _constant_name(frame: FrameType, text: str) -> str | None:
    """Name of an upper-case module-level string constant equal to *text* in *frame*'s module."""
    globals_ = frame.f_globals
    module = globals_.get("__name__")
    key = (module if isinstance(module, str) else "?", text)
    try:
        return _CONSTANT_CACHE[key]
    except KeyError:
        pass
    found: str | None = None
    for name, value in list(globals_.items()):
        if type(value) is str and value == text and name.isupper():
            found = name
            break
    if len(_CONSTANT_CACHE) >= _CONSTANT_CACHE_MAX:
        _CONSTANT_CACHE.clear()
    _CONSTANT_CACHE[key] = found
    return found


def resolve_task(
    texts: Sequence[str], task_map: Mapping[str, str],
    find_frame: Callable[[], FrameType | None] = caller_frame,
) -> str | None:
    """Name the task of a call that no ``@ct.task`` encloses, or None: it has none.

    *texts* are the prompt texts of the call, the prompt text first. In order: a ``task_map``
    entry for one of the texts; the ``task`` of the ``ct.context`` block the call runs in; a
    module-level string constant in the calling module whose value is one of the texts
    (``task_map`` may rename it by the constant's name, else its lower-cased name is the
    task); else None (there is no catch-all task). The calling module's frame comes from
    *find_frame* (`caller_frame`), asked only when the first two have not answered.
    """
    if task_map:
        for text in texts:
            mapped = task_map.get(text)
            if mapped is not None:
                return mapped
    cctx = current_context()
    if cctx is not None and cctx.task is not None:
        return cctx.task
    frame = find_frame() if texts else None
    if frame is not None:
        for text in texts:
            name = _constant_name(frame, text)
            if name is not None:
                mapped = task_map.get(name) if task_map else None
                return mapped if mapped is not None else name.lower().lstrip("_")
    return None


_unattributed_logged = False


def note_unattributed() -> None:
    """Log once per process that calls without a task send no CT record."""
    global _unattributed_logged
    if _unattributed_logged:
        return
    _unattributed_logged = True
    logger.warning(
        "An instrumented LLM call ran outside any @ct.task function and no task names it, so "
        "it was traced as a span only and sent no CT record. Name its task with a @ct.task "
        "function, a ct.context(task=...) block, or instrument(..., task_map=...)."
    )
