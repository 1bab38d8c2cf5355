"""Retention in the background: a daemon thread that prunes traces and feedback past their
task's limits (`kaizen_server.domain.retention`: count and age, a task's own or the server's).

Every *interval* seconds the `Pruner` asks the store (`StorageInterface.prune`) to
delete at most *batch* rows per transaction, for at most *max_batches* transactions a pass, so
ingest waits at most one short delete at a time and a large backlog goes over several passes.
"""

from __future__ import annotations

import logging
import threading

from kaizen_server.storage.interface import StorageInterface

__all__ = ["PRUNE_BATCH", "PRUNE_INTERVAL", "Pruner"]

logger = logging.getLogger("kaizen_server.jobs.retention")

PRUNE_INTERVAL = 60.0
"""Seconds between two pruning passes."""

PRUNE_BATCH = 500
"""Rows deleted in one transaction at most."""

_MAX_BATCHES = 20


class Pruner:
    """Prunes the store's traces and feedback in the background; `start`, then `stop`.

    Parameters:
        store: the database.
        interval: seconds between passes.
        batch: rows per transaction at most.
        max_batches: transactions per pass at most.
    """

    def __init__(self, store: StorageInterface, *, interval: float = PRUNE_INTERVAL,
                 batch: int = PRUNE_BATCH, max_batches: int = _MAX_BATCHES) -> None:
        self._store = store
        self.interval = interval
        self.batch = batch
        self.max_batches = max_batches
        self.pruned = 0
        """Rows deleted since the start."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One pass: delete in batches until nothing is past a limit or *max_batches* ran."""
        total = 0
        for _ in range(self.max_batches):
            if self._stop.is_set():
                break
            deleted = self._store.prune(self.batch)
            total += deleted
            if deleted == 0:
                break
        self.pruned += total
        return total

    def start(self) -> None:
        """Start the thread (a daemon: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="kaizen-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the current transaction; wait up to *timeout* seconds."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    deleted = self.run_once()
                except Exception:  # a full disk, a locked file: try again next pass
                    logger.exception("pruning failed; trying again in %g s",
                                     self.interval)
                    continue
                if deleted:
                    logger.info("pruned %d traces and feedback entries past their task's limits",
                                deleted)
        finally:
            self._store.release_thread()
