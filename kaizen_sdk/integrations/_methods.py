"""Patching the methods of a provider SDK's resource classes (anthropic, google-genai).

A `Target` names one method (``Messages.create``, ``Models.generate_content``...); `patch`
wraps each one that the installed library has with a sync or async wrapper that starts a
`TracedCall` through the integration's *start* function, runs the method inside it, and
hands the result to the integration's *finish* function (which ends the call, or hands it to
a stream proxy). `peers` tells `start_call` whether another GenAI instrumentation's patch is
beneath or around ours, so one call stays one span.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Tracer

from kaizen_sdk.integrations import _common
from kaizen_sdk.integrations._common import InstrumentSettings, TracedCall

__all__ = ["Finish", "Start", "Target", "patch", "peers", "unpatch"]

logger = logging.getLogger("kaizen_sdk.instrument")

Start = Callable[
    [Tracer, InstrumentSettings, Any, Mapping[str, Any], Any, tuple[bool, bool]],
    "TracedCall | None",
]
"""``start(tracer, settings, instance, kwargs, wrapped, peers)``: the call, or None (untraced)."""

Finish = Callable[[TracedCall, Mapping[str, Any], Any, bool], Any]
"""``finish(call, kwargs, result, is_async)``: what the application gets back."""

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Target:
    """One method to wrap: ``module.cls.method``; *kind* is the integration's own label."""

    module: str
    cls: str
    method: str
    is_async: bool
    kind: str = ""

    def owner(self) -> Any:
        """The class that holds the method, or None when this library version has none."""
        try:
            owner = getattr(importlib.import_module(self.module), self.cls)
        except (ImportError, AttributeError):
            return None
        return owner if self.method in vars(owner) else None


def peers(owner: Any, method: str) -> tuple[bool, bool]:
    """(beneath, above): another GenAI instrumentation's patch runs beneath / around ours.

    Beneath is found by `start_call` from the method it calls (``wrapped``); around ours, our
    patched method has been patched again on its class.
    """
    try:
        return False, _common.genai_patch(vars(owner).get(method))
    except Exception:
        logger.debug("Looking for other instrumentations failed.", exc_info=True)
        return False, False


def patch(
    library: str,
    targets: tuple[Target, ...],
    tracer: Tracer,
    settings: InstrumentSettings,
    switch: _common.Switch,
    start: Callable[[Target], Start],
    finish: Callable[[Target], Finish],
) -> None:
    """Wrap every method of *targets* that the installed *library* has."""
    for target in targets:
        owner = target.owner()
        if owner is None:
            logger.debug("%s has no %s.%s; not instrumented.", library, target.cls, target.method)
            continue
        factory = _async_wrapper if target.is_async else _sync_wrapper
        wrapper = factory(tracer, settings, switch, owner, target.method,
                          start(target), finish(target))
        _common.wrap(target.module, f"{target.cls}.{target.method}", wrapper)


def unpatch(targets: tuple[Target, ...]) -> None:
    """Restore the original methods of *targets* (safe to call twice)."""
    for target in targets:
        owner = target.owner()
        if owner is not None:
            _common.unwrap(owner, target.method)


def _sync_wrapper(
    tracer: Tracer, settings: InstrumentSettings, switch: _common.Switch, owner: Any,
    method: str, start: Start, finish: Finish,
) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return wrapped(*args, **kwargs)
        call = start(tracer, settings, instance, kwargs, wrapped, peers(owner, method))
        if call is None:
            return wrapped(*args, **kwargs)
        out = call.run(wrapped, args, kwargs)
        return finish(call, kwargs, out, False)

    return wrapper


def _async_wrapper(
    tracer: Tracer, settings: InstrumentSettings, switch: _common.Switch, owner: Any,
    method: str, start: Start, finish: Finish,
) -> Wrapper:
    async def wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return await wrapped(*args, **kwargs)
        call = start(tracer, settings, instance, kwargs, wrapped, peers(owner, method))
        if call is None:
            return await wrapped(*args, **kwargs)
        out = await call.arun(wrapped, args, kwargs)
        return finish(call, kwargs, out, True)

    return wrapper
