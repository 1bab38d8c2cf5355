"""Ids the server makes for the rows it stores: UUID version 7 (RFC 9562).

A UUID7 begins with the Unix time in milliseconds, so ids made one after the other sort
together and the primary-key index of ``traces`` and ``feedback`` grows at its end instead of
taking random pages (a random UUID4 scatters every insert over the whole index). On the wire
they are UUIDs like any other; ids a client sends are kept as they are. The standard library
has ``uuid.uuid7`` only from Python 3.14.
"""

from __future__ import annotations

import os
import time

__all__ = ["uuid7"]

_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_SET = (0x7000 << 64) | (0x8000 << 48)  # version 7, RFC 9562 variant


def uuid7() -> str:
    """A fresh UUID7 as its canonical string: 48 bits of milliseconds, 74 random bits."""
    bits = (time.time_ns() // 1_000_000 << 80) | (
        int.from_bytes(os.urandom(10), "big") & _CLEAR) | _SET
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
