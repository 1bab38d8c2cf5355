"""Sticky arm assignment for a task's running rollout, decided in the process.

The prompt a task serves may carry a rollout (``Prompt.rollout``: the candidate version, its
share of traffic and a salt). `choose_arm` picks the arm for one call without any request:
the key (a user or session id, say) is hashed with the rollout's salt into a number uniform
in [0, 1) and compared with the share, so the same key gets the same arm on every call and
in every process, and a new rollout (new salt) reshuffles keys independently of the last.
Without a key each call is assigned at random.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Mapping
from typing import Any, Literal

from kaizen_sdk._context import current_context
from kaizen_sdk.models import Prompt

__all__ = ["ACTIVE", "CANDIDATE", "Arm", "assignment_key", "bucket", "choose_arm"]

Arm = Literal["active", "candidate"]
"""The arm a call was served by; ``None`` where no rollout runs."""

ACTIVE: Arm = "active"
CANDIDATE: Arm = "candidate"

_SCALE = float(1 << 64)


@functools.lru_cache(maxsize=64)
def _keyed(salt: str) -> Any:
    """A blake2b keyed with the salt (a salt over 64 bytes is hashed first), to copy per call."""
    raw = salt.encode()
    if len(raw) > 64:
        raw = hashlib.blake2b(raw).digest()
    return hashlib.blake2b(digest_size=8, key=raw)


@functools.lru_cache(maxsize=8192)  # repeat keys (a user's next calls) skip the hash
def bucket(salt: str, key: str) -> float:
    """Map *key* to a number uniform in [0, 1), fixed for a given *salt* (keyed blake2b)."""
    h = _keyed(salt).copy()  # copying the keyed state is cheaper than keying anew
    h.update(key.encode())
    return int.from_bytes(h.digest(), "big") / _SCALE


def choose_arm(prompt: Prompt, key: Any = None) -> tuple[Prompt, Arm | None]:
    """Return the prompt to serve for *key* and its arm (``None`` when no rollout runs).

    Example::

        prompt = client.get_prompt("summarize_ticket")
        served, arm = choose_arm(prompt, key=user_id)
        # record served.id and arm on the trace
    """
    rollout = prompt.rollout
    if rollout is None:
        return prompt, None
    point = random.random() if key is None else bucket(rollout.salt, str(key))
    if point < rollout.share:
        return rollout.candidate, CANDIDATE
    return prompt, ACTIVE


def assignment_key(assign_by: str | None, arguments: Mapping[str, Any]) -> str | None:
    """The key a call is assigned by: the argument *assign_by* names, else the context's.

    With *assign_by* the argument of that name is used, else the `kaizen_sdk.context` field
    of that name (``user_id``, ``session_id``); without it, the context's ``user_id``, then
    ``session_id``. ``None`` (assign at random) when none is there.
    """
    if assign_by is not None and arguments.get(assign_by) is not None:
        return str(arguments[assign_by])
    ctx = current_context()
    if ctx is None:
        return None
    names = (assign_by,) if assign_by is not None else ("user_id", "session_id")
    for name in names:
        value = getattr(ctx, name, None)
        if isinstance(value, str) and value:
            return value
    return None
