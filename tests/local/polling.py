"""Waiting for the server's background work in tests: poll with a deadline, never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["poll"]

T = TypeVar("T")


def poll(what: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0,
         step: float = 0.02) -> T:
    """Call *what* until *done* accepts its value; raise `AssertionError` (with the last
    value) once *timeout* seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout} s: {value!r}")
        time.sleep(step)


