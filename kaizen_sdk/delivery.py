"""Background delivery of CT records: batching, retries, spool and fallback.

CONTRACT (to be implemented by the decorator/delivery work):

- ``DeliveryStats``: counts returned by ``client.stats()``.
- ``flush_trace(trace_id, timeout)``: if a trace with this id is still queued in this
  process (on any client's pipeline), flush that pipeline first; else do nothing.
  ``CTClient.score`` calls it so scoring right after a call never fails on ordering.
- ``is_pending(trace_id)``: cheap check, so ``AsyncCTClient.score`` only goes to a thread
  (``asyncio.to_thread(flush_trace, ...)``) when there is something to flush.
"""

from __future__ import annotations

import msgspec

__all__ = ["DeliveryStats", "flush_trace", "is_pending"]


class DeliveryStats(msgspec.Struct, kw_only=True, frozen=True):
    """Counts of background delivery since the client was created."""

    queued: int = 0
    sent: int = 0
    retried: int = 0
    dropped: int = 0
    spooled: int = 0
    replayed: int = 0


def flush_trace(trace_id: str, timeout: float | None = None) -> None:
    """Deliver the queued trace *trace_id* now, if this process still holds it."""


def is_pending(trace_id: str) -> bool:
    """Return True when this process still holds the trace *trace_id* undelivered (cheap)."""
    return False
