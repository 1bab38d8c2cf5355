"""A running job's heartbeat: a daemon thread that renews the job's lease while it runs.

The lease (`kaizen_server.storage.leases`) runs out ``lease_seconds`` after its last renewal;
the heartbeat renews it every third of that, so it runs out only when the worker's process
stopped (a crash, ``kill -9``, a machine gone) or hangs, and another server's worker takes the
job over. When a renewal finds the job in other hands, the heartbeat calls *on_lost* once and
ends: the worker stops the job without writing its end (`JobWorker` checks at every step and
LLM call, and the store refuses to finish a job under a lease that is not the caller's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["Heartbeat"]

logger = logging.getLogger("kaizen_server.jobs.heartbeat")


class Heartbeat:
    """Renews a lease every *interval* seconds in a thread, between ``with`` and its end.

    Parameters:
        renew: renews the lease; ``False`` when another worker holds the job now.
        interval: seconds between two renewals.
        on_lost: called once (from the heartbeat's thread) when `renew` says ``False``.
        done: called in the heartbeat's thread as it ends (e.g. to close its connection).
        name: the thread's name.
    """

    def __init__(self, renew: Callable[[], bool], interval: float, *,
                 on_lost: Callable[[], None], done: Callable[[], None] | None = None,
                 name: str = "kaizen-lease") -> None:
        self._renew = renew
        self._interval = max(0.01, interval)
        self._on_lost = on_lost
        self._done = done
        self._stop = threading.Event()
        self.lost = threading.Event()
        """Set once a renewal found the job in other hands."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                try:
                    held = self._renew()
                except Exception:  # a busy or unreachable database: try again next beat
                    logger.warning("renewing a job's lease failed; retrying", exc_info=True)
                    continue
                if not held:
                    self.lost.set()
                    self._on_lost()
                    return
        finally:
            if self._done is not None:
                self._done()
