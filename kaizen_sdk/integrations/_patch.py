"""Patching library methods with wrapt, and telling our patches from other libraries'.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

import wrapt

__all__ = [
    "OUR_WRAPPERS",
    "Switch",
    "ours",
    "unwrap",
    "wrap",
]

logger = logging.getLogger("kaizen_sdk.instrument")

class Switch:
    """Whether one ``_instrument()``'s wrappers trace: `_uninstrument` turns it off, so a
    wrapper that outlived the patch (a bound method or a name imported while instrumented)
    passes calls straight through."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


OUR_WRAPPERS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
"""The wrapper functions our patches use (`ours`): `unwrap` removes only these."""


def ours(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Remember *wrapper* as one of ours, so `unwrap` removes it and nothing else."""
    OUR_WRAPPERS.add(wrapper)
    return wrapper


def wrap(module: str, name: str, wrapper: Callable[..., Any]) -> None:
    """Patch ``module.name`` (``"Class.method"`` or a function) with *wrapper*, via wrapt."""
    wrapt.wrap_function_wrapper(module, name, ours(wrapper))


def unwrap(owner: Any, name: str) -> None:
    """Restore ``owner.name`` if our wrapper is on it (safe to call twice)."""
    current = vars(owner).get(name)
    if (
        isinstance(current, wrapt.FunctionWrapper)
        and hasattr(current, "__wrapped__")
        and getattr(current, "_self_wrapper", None) in OUR_WRAPPERS
    ):
        setattr(owner, name, current.__wrapped__)
    elif current is not None and hasattr(current, "__wrapped__"):
        logger.debug("%r.%s is wrapped by someone else; left as it is.", owner, name)
