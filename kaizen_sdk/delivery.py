"""The delivery engine: one queue, one sender thread, batching, retries, spool and counts.

A finished call's `~kaizen_sdk._record.CallRecord` goes onto `Delivery.queue` (a deque the
engine owns: no span, no span processor, no record table) with `Delivery.submit`, which is
all the caller's thread does. The engine's one thread, ``kaizen-delivery``, wakes when a
batch is full, on `flush`, or once a second; takes up to 512 records (and the in-process
scores whose traces have gone), turns them into request bodies (`kaizen_sdk._requests`) and
hands the batch to its `~kaizen_sdk._sender.Sender`, which posts it to ``POST
/api/v1/ingest`` with retries. What finally fails is spooled when there is a spool, else
kept in memory (within ``max_queue_size``) and re-sent before newer batches; every outcome
is counted here, and nowhere else, so that ``queued == sent + rejected + dropped + spooled``
once nothing is in memory.

Also here, for ``CTClient.score``: `flush_trace` and `is_pending` look at every live
delivery of the process.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import uuid
import weakref
from typing import TYPE_CHECKING

import msgspec

from kaizen_sdk._config import Settings
from kaizen_sdk._record import new_trace_id
from kaizen_sdk._requests import batch_size, build_batch, encode_batch
from kaizen_sdk._sender import GiveUp, LogLimiter, Sender
from kaizen_sdk._spool import Spool
from kaizen_sdk.models import IngestRequest, ScoreItem

if TYPE_CHECKING:
    import httpx

    from kaizen_sdk._record import CallRecord

__all__ = [
    "Delivery",
    "DeliveryStats",
    "flush_trace",
    "is_pending",
    "live",
]

_log = logging.getLogger("kaizen_sdk.delivery")

_EXPORT_BUDGET = 30.0
_SCHEDULE_DELAY = 1.0
_BATCH_SIZE = 512
"""Records in the first batch; later ones are sized from the bytes a record took."""
_BATCH_BYTES = 1 << 20
"""The body a batch aims at: few requests per record (each costs the sender thread far more
CPU than a record does), yet within the 1 MiB body limit common in front of HTTP servers."""
_BATCH_MAX = 4096
_SEND_PATIENCE = 0.5
"""With a spool: seconds a send may wait on the server before the records queued behind it
go to disk (checked as often)."""
_SHUTDOWN_GRACE = 0.1
_STUCK_SECONDS = 1.0
"""With a spool: seconds after which the new batch a send holds goes to disk as well (a
healthy server answers sooner, so it is rarely sent twice)."""


class DeliveryStats(msgspec.Struct, kw_only=True, frozen=True):
    """Counts of background delivery since the client was created.

    A record is a trace (with its feedback entry, when the task logs one) or a score made
    in-process (``run.score()``, ``response.ct_score()``).

    ``queued``: records accepted for delivery; ``sent``: records the server acknowledged as
    stored; ``retried``: records sent again after a failed attempt; ``dropped``: records
    lost without reaching the server (memory bound reached without a spool, spool full,
    undeliverable at exit without a spool); ``rejected``: records the server refused, or
    sent in a batch whose answer could not be read (never counted as sent);
    ``rejected_feedback``: feedback entries the server refused while it stored their
    traces; ``spooled``/``replayed``: records written to / re-sent from the durable spool.
    Once nothing is in memory (after ``close()``):
    ``queued == sent + rejected + dropped + spooled``.
    """

    queued: int = 0
    sent: int = 0
    retried: int = 0
    dropped: int = 0
    rejected: int = 0
    rejected_feedback: int = 0
    spooled: int = 0
    replayed: int = 0


# --- the engine ----------------------------------------------------------------------------

_LIVE: set[Delivery] = set()
_LIVE_LOCK = threading.Lock()


class _Flush:
    """One `Delivery.flush` waiting for the sender thread: set when done, with the outcome."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class Delivery:
    """One client's background delivery: its queue, sender thread, sender and counters.

    Parameters:
        settings: the client's resolved settings.
        transport: an ``httpx`` transport for the sender (tests).
    """

    def __init__(
        self, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.max_queue = max(1, settings.max_queue_size)
        self._batch = min(_BATCH_SIZE, self.max_queue)  # records per batch: see _resize
        # records waiting for the sender thread, oldest first (appended without a lock)
        self.queue: collections.deque[CallRecord] = collections.deque()
        # the records the sender thread has taken and is exporting (for `holds`)
        self._exporting: list[CallRecord] = []
        self.limiter = LogLimiter()
        # batches that failed after their retries, oldest first, re-sent before new ones
        self.kept: collections.deque[tuple[IngestRequest, int]] = collections.deque()
        self._kept_records = 0
        self._resend_lock = threading.Lock()
        self._lock = threading.Lock()
        self._done = 0
        self._inflight = 0
        self._sent = 0
        self._retried = 0
        self._dropped = 0
        self._rejected = 0
        self._rejected_feedback = 0
        self._spooled = 0
        self._replayed = 0
        self._closed = False
        # scores made in-process, waiting for the next export (after their trace's)
        self.scores: list[ScoreItem] = []
        # records past the memory bound, on their way to the spool (written by their own
        # thread: `_start_overflow_writer`)
        self.overflow: list[CallRecord] = []
        self._overflow_lock = threading.Lock()
        self._overflow_wake = threading.Event()
        self._overflow_thread: threading.Thread | None = None
        self._poked = 0.0
        self._busy_since: float | None = None  # when the send now waiting on the server began
        self._busy_thread = 0  # (or last heard from it), and the thread sending
        # the sender thread: started by the first record, woken by a full batch or a flush
        self._wake = threading.Event()
        self._flushes: list[_Flush] = []
        self._worker: threading.Thread | None = None
        self._stopping = False
        # the new batch being sent right now, for shutdown to take over if it is stuck
        self._sending: IngestRequest | None = None
        self._abandoned: IngestRequest | None = None
        self._settle_lock = threading.Lock()
        self.sender = Sender(settings, self.limiter, self._count_retry,
                             on_answer=self._answered, transport=transport)
        self.spool: Spool | None = None
        self._replayer: threading.Thread | None = None
        self._spool_waiting = False  # the spool may hold batches: replay after a success
        if settings.spool_dir:
            self._open_spool(settings.spool_dir)
        with _LIVE_LOCK:
            _LIVE.add(self)
        if hasattr(os, "register_at_fork"):
            ref = weakref.WeakMethod(self._after_fork)

            def after_in_child() -> None:
                method = ref()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=after_in_child)

    # the caller's side ---------------------------------------------------------------------

    def submit(self, record: CallRecord) -> None:
        """Queue *record* for delivery (set ``latency_ms`` first). Never blocks, never raises
        for a full queue: past ``max_queue_size`` it is spooled or dropped and counted."""
        queue = self.queue
        if len(queue) + self._inflight + self._kept_records >= self.max_queue or self._closed:
            if self._closed:
                self.discard(record)
            else:
                self.drop_full(record)
            return
        queue.append(record)
        if self._worker is None:
            self._start_worker()
            if self.spool is not None:  # see `_overflow_loop`
                self._start_overflow_writer()
        elif len(queue) >= self._batch and not self._wake.is_set():
            self._wake.set()

    def poke(self) -> None:
        """Make sure the sender thread runs: queued scores and batches kept after a failure
        go within its schedule delay (a second)."""
        if self._worker is None and not self._closed:
            self._start_worker()

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is not None or self._closed:
                return
            worker = threading.Thread(target=self._run, name="kaizen-delivery", daemon=True)
            self._worker = worker
        try:
            worker.start()
        except RuntimeError:  # at interpreter shutdown: no new thread; the exit flush runs inline
            self._worker = None
            if self.limiter.ready("no-thread"):
                _log.warning("CT delivery could not start its thread; records wait for exit.")

    def _count_retry(self, records: int) -> None:
        self.count(retried=records)

    def _answered(self) -> None:
        # The server answers (a batch sent record by record takes many requests): a send
        # that makes progress is not waiting on it.
        if self._busy_since is not None and threading.get_ident() == self._busy_thread:
            self._busy_since = time.monotonic()

    def _spool_stuck(self, batch_too: bool) -> None:
        """A send has waited on the server for a while: write the records queued behind it
        to the spool, and with *batch_too* the new batch it holds (the sender thread goes on
        trying, and the spool's replay sends it again: the server stores it once)."""
        stuck = self._take_in_flight() if batch_too else None
        if stuck is not None:
            n = batch_size(stuck)
            self.give_up(stuck, n, "the server has not answered", inflight=n)
        if self.queue:
            self._spool_queued()

    def _spool_queued(self) -> None:
        """Write the records queued now to the spool (the server is not answering), in
        batches; a batch the spool cannot take is kept in memory as a failed one."""
        queue = self.queue
        left = len(queue)  # not those queued meanwhile: calls may outpace the disk
        while left > 0:
            with self._lock:  # counted in flight while they are in no other place
                n = min(len(queue), self._batch, left)
                taken = [queue.popleft() for _ in range(n)]
                self._inflight += n
            if not taken:
                return
            left -= n
            traces, feedback, bad = build_batch(taken, self.settings)
            if bad:
                self.count(dropped=len(bad), done=len(bad), inflight=-len(bad))
            n = len(traces)
            if n:
                batch = IngestRequest(traces=traces, feedback=feedback)
                self.give_up(batch, n, "the server has not answered", inflight=n)

    # counters -------------------------------------------------------------------------------

    def count(
        self,
        *,
        sent: int = 0,
        retried: int = 0,
        dropped: int = 0,
        rejected: int = 0,
        rejected_feedback: int = 0,
        spooled: int = 0,
        replayed: int = 0,
        done: int = 0,
        inflight: int = 0,
    ) -> None:
        """Add to the counters (``done``: records that left the queue, for ``queued``)."""
        with self._lock:
            self._inflight += inflight
            self._sent += sent
            self._retried += retried
            self._dropped += dropped
            self._rejected += rejected
            self._rejected_feedback += rejected_feedback
            self._spooled += spooled
            self._replayed += replayed
            self._done += done

    def stats(self) -> DeliveryStats:
        """Return the counters."""
        with self._lock:
            return DeliveryStats(
                queued=self._done + len(self.queue) + self._kept_records + self._inflight
                + len(self.scores) + len(self.overflow),
                sent=self._sent,
                retried=self._retried,
                dropped=self._dropped,
                rejected=self._rejected,
                rejected_feedback=self._rejected_feedback,
                spooled=self._spooled,
                replayed=self._replayed,
            )

    def drop_full(self, record: CallRecord) -> None:
        """Take a record past the memory bound: to the spool when there is one (written in
        the background at call rate), else dropped and counted (logged once a minute)."""
        now = time.monotonic()
        if now - self._poked >= 1.0:  # batches kept after a failure still need re-sending
            self._poked = now
            self.poke()
        if self.spool is not None and not self._closed:
            behind: list[CallRecord] = []
            with self._overflow_lock:
                if len(self.overflow) >= max(1, self.settings.max_queue_size):
                    # The writer is behind the callers: this caller writes one batch itself,
                    # so a spool slower than the calls slows them a little, never loses.
                    behind = self.overflow[:_BATCH_SIZE]
                    del self.overflow[:_BATCH_SIZE]
                self.overflow.append(record)
            if behind:
                try:
                    self._spool_records(behind, "the memory bound is reached")
                except Exception:
                    _log.warning("Spooling records past the memory bound failed.",
                                 exc_info=True)
            self._overflow_wake.set()
            self._start_overflow_writer()
            return
        with self._lock:
            self._dropped += 1
            self._done += 1
            total = self._dropped
        if self.limiter.ready("queue-full"):
            _log.warning(
                "CT delivery queue is full (%d records): dropping new records "
                "(%d dropped so far). Is the CT server reachable?",
                self.settings.max_queue_size, total,
            )

    def _start_overflow_writer(self) -> None:
        thread = self._overflow_thread
        if thread is not None and thread.is_alive():
            return
        with self._overflow_lock:
            thread = self._overflow_thread
            if thread is not None and thread.is_alive():
                return
            self._overflow_thread = threading.Thread(
                target=self._overflow_loop, name="kaizen-spool-overflow", daemon=True
            )
            self._overflow_thread.start()

    def _overflow_loop(self) -> None:
        # With a spool, this thread also keeps records off the memory while the sender
        # thread waits on the server: what is queued behind a send that has taken longer
        # than `_SEND_PATIENCE` goes to disk, so a kill -9 loses about a second of calls.
        while not self._closed:
            self._overflow_wake.wait(_SEND_PATIENCE)
            self._overflow_wake.clear()
            try:
                self.spool_overflow()
                busy = self._busy_since
                if busy is not None and time.monotonic() - busy >= _SEND_PATIENCE:
                    self._spool_stuck(time.monotonic() - busy >= _STUCK_SECONDS)
            except Exception:
                _log.warning("Spooling records past the memory bound failed.", exc_info=True)

    def spool_overflow(self) -> None:
        """Write the records waiting past the memory bound to the spool now."""
        with self._overflow_lock:
            taken, self.overflow = self.overflow, []
        for start in range(0, len(taken), _BATCH_SIZE):
            self._spool_records(taken[start : start + _BATCH_SIZE], "the memory bound is reached")

    def add_score(self, trace_id: str, value: float, scored_by: str = "sdk") -> str | None:
        """Queue an in-process score for background delivery; return its id, or None when
        it cannot be sent (logged; never raises)."""
        try:
            if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"score must be between 0.0 and 1.0, got {value!r}")
            item = ScoreItem(
                id=uuid.UUID(new_trace_id()), trace_id=uuid.UUID(str(trace_id)),
                score=float(value),
                scored_by=str(scored_by),
            )
        except (TypeError, ValueError) as exc:
            _log.warning("A score for trace %s is not sent: %s.", trace_id, exc)
            return None
        if self._closed:
            _log.warning("A score for trace %s is not sent: the client is closed.", trace_id)
            return None
        with self._lock:
            if (
                len(self.queue) + self._inflight + self._kept_records + len(self.scores)
                >= max(1, self.settings.max_queue_size)
                and self.spool is None
            ):
                self._dropped += 1
                self._done += 1
                _log.warning("A score for trace %s is dropped: the queue is full.", trace_id)
                return None
            self.scores.append(item)
        self.poke()
        return str(item.id)

    def _take_scores(self, taken: list[CallRecord]) -> list[ScoreItem]:
        """Scores ready to go with this export: those whose trace is not still waiting in
        the queue (it goes first). Call with the lock held."""
        if not self.scores:
            return []
        going = {str(r.trace_id) for r in taken}
        waiting = self._held_ids()
        ready: list[ScoreItem] = []
        wait: list[ScoreItem] = []
        for item in self.scores:
            tid = str(item.trace_id)
            (ready if tid in going or tid not in waiting else wait).append(item)
        self.scores = wait
        return ready

    def _held(self) -> list[CallRecord]:
        """The records queued, past the memory bound or being exported. Call with the lock.

        Rare callers only (a score waiting for its trace, ``CTClient.score``): a scan costs
        the queue's length, where a set kept up to date would cost every call. ``list()`` of
        a deque copies it in one step, so appends by other threads cannot break the scan.
        """
        held = list(self.queue)
        held += list(self.overflow)
        held += self._exporting
        return held

    def _held_ids(self) -> set[str]:
        """Trace ids (lower-case) of `_held`. Call with the lock held."""
        return {str(r.trace_id).lower() for r in self._held()}

    def holds(self, trace_id: str) -> bool:
        """True while the trace *trace_id* (lower-case) is queued or being exported here."""
        with self._lock:  # the sender thread moves records from the queue under it
            held = self._held()
        for record in held:  # ids are the SDK's own lower-case strings, or UUIDs
            found = record.trace_id
            if found == trace_id or (type(found) is not str and str(found) == trace_id):
                return True
        return False

    def discard(self, record: CallRecord) -> None:
        """Forget a record that can no longer be delivered (after shutdown)."""
        self.count(dropped=1, done=1)

    def give_up(
        self,
        batch: IngestRequest,
        records: int,
        reason: str,
        *,
        final: bool = False,
        inflight: int = 0,
    ) -> None:
        """A batch failed after its retries: spool it when there is a spool, else keep it in
        memory to re-send before newer ones (kept plus in-flight records stay within
        ``max_queue_size``: the oldest kept batches are dropped first). With
        ``final=True`` (shutdown) it is spooled or dropped."""
        spooled = False
        final = final or self._closed  # at exit nothing is kept for later in memory
        if self.spool is not None:
            try:
                spooled = self._to_spool(batch, records)
            except Exception:
                _log.warning("Spooling a failed batch failed.", exc_info=True)
        if spooled:
            self.count(spooled=records, done=records, inflight=-inflight)
            how = "they are kept in the spool"
        elif not final:
            dropped = 0
            with self._lock:
                self.kept.append((batch, records))
                self._kept_records += records  # kept before it leaves the flight: see submit()
                self._inflight -= inflight
                dropped = self._trim_kept(0)
            how = "they are kept in memory and sent again later"
            if dropped:
                how += f" ({dropped} older ones dropped: the memory bound is reached)"
        else:
            self.count(dropped=records, done=records, inflight=-inflight)
            how = "they are dropped"
        if self.limiter.ready("give-up"):
            _log.warning(
                "Could not deliver %d CT records to %s (%s); %s. Dropped so far: %d.",
                records, self.settings.base_url, reason, how, self.stats().dropped,
            )

    def _trim_kept(self, extra: int) -> int:
        """Drop the oldest kept batches until kept, in-flight and *extra* records fit in
        ``max_queue_size``; return how many records were dropped. Call with the lock held."""
        bound = max(1, self.settings.max_queue_size)
        dropped = 0
        while self.kept and self._kept_records + self._inflight + extra > bound:
            _, n = self.kept.popleft()
            self._kept_records -= n
            self._dropped += n
            self._done += n
            dropped += n
        return dropped

    # the durable spool ---------------------------------------------------------------------

    def _open_spool(self, directory: str) -> None:
        try:
            self.spool = Spool(directory)
        except OSError as exc:
            _log.warning("Cannot use the spool directory %s (%s); running without it.",
                         directory, exc)
            return
        if not self.spool.is_empty():  # left behind by an earlier process: replay it
            self._spool_waiting = True
            self.replay_spool()

    def _to_spool(self, batch: IngestRequest, records: int) -> bool:
        spool = self.spool
        if spool is None:
            return False
        self._spool_waiting = True
        return spool.append(encode_batch(batch), records=records)

    def replay_spool(self) -> None:
        """Re-send spooled batches, oldest first, in a background thread (one at a time)."""
        if self.spool is None or self._closed or not self._spool_waiting:
            return
        with self._lock:
            if self._replayer is not None and self._replayer.is_alive():
                return
            self._replayer = threading.Thread(
                target=self._replay, name="kaizen-spool-replay", daemon=True
            )
            self._replayer.start()

    def drain_spool(self) -> tuple[int, int]:
        """Replay the spool now, in this thread (``kaizen spool replay``).

        Waits for a background replay already running, then re-sends until a batch fails or
        none is left. Return ``(records this client replayed, batches still waiting)``.
        """
        spool = self.spool
        if spool is None:
            return 0, 0
        replayer = self._replayer
        if replayer is not None:
            replayer.join()
        spool.replay(lambda batch: self.send(batch, replay=True))
        return self.stats().replayed, len(spool.pending())

    def _replay(self) -> None:
        spool = self.spool
        if spool is None:
            return
        try:
            result = spool.replay(
                lambda batch: self.send(batch, replay=True),
                should_stop=lambda: self._closed,
            )
        except Exception:
            _log.warning("Replaying the spool failed.", exc_info=True)
            return
        if not result.failed and spool.is_empty():
            self._spool_waiting = False

    def kept_delivered(
        self, batch: IngestRequest, records: int, rejected: int, refused_feedback: int = 0
    ) -> None:
        """A kept batch was delivered: forget it and count it."""
        with self._lock:
            if self.kept and self.kept[0][0] is batch:
                self.kept.popleft()
                self._kept_records -= records
                self._sent += records - rejected
                self._rejected += rejected
                self._rejected_feedback += refused_feedback
                self._done += records

    def resend_kept(self, wait: float | None = None) -> bool:
        """Re-send kept batches, oldest first; return True when none is left.

        *wait* bounds the wait for a re-send already running in another thread.
        """
        if not self.kept:
            return True
        if not self._resend_lock.acquire(timeout=-1 if wait is None else wait):
            return False
        try:
            while True:
                with self._lock:
                    if not self.kept:
                        return True
                    batch, n = self.kept[0]
                self.count(retried=n)
                if not self.send(batch, kept=True):
                    return False
        finally:
            self._resend_lock.release()

    # the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait(_SCHEDULE_DELAY)
            wake.clear()
            with self._lock:
                flushes, self._flushes = self._flushes, []
            stopping = self._stopping
            try:
                if flushes and self.overflow:
                    self.spool_overflow()
                # what was queued before these flushes (FIFO); everything when stopping
                self._export_queued(None if stopping else len(self.queue))
                ok = True
                if flushes:
                    ok = self.resend_kept() and not self.scores
            except BaseException:  # never let the thread die: the next wake-up tries again
                ok = False
                if self.limiter.ready("engine"):
                    _log.exception("CT delivery failed unexpectedly.")
            for flush in flushes:
                flush.ok = ok
                flush.done.set()
            if stopping:
                return

    def _export_queued(self, limit: int | None) -> None:
        """Export up to *limit* queued records (None: until the queue is empty), in batches."""
        queue = self.queue
        popleft = queue.popleft
        while True:
            with self._lock:  # so that stats() never sees a record in no place
                n = len(queue) if limit is None else min(limit, len(queue))
                n = min(n, self._batch)
                taken = [popleft() for _ in range(n)]
                self._exporting = taken  # never in no place for `holds` either
                # counted in flight before they leave the queue: `submit` reads without the lock
                self._trim_kept(n)
                self._inflight += n
                scores = self._take_scores(taken)
                self._inflight += len(scores)
            if limit is not None:
                limit -= n
            if not taken and not scores:
                if self.kept:  # nothing new: still re-send what failed earlier
                    self.resend_kept(0.0)
                return
            try:
                self._export(taken, scores)
            except BaseException:  # the records are lost, but counted: stats() stays true
                lost = len(taken) + len(scores)
                self.count(dropped=lost, done=lost, inflight=-lost)
                if self.limiter.ready("export-bug"):
                    _log.exception("CT export failed unexpectedly; %d records lost.", lost)
            finally:
                self._exporting = []
            if not taken or (limit is not None and limit <= 0):
                return

    def _export(self, records: list[CallRecord], scores: list[ScoreItem]) -> None:
        traces, feedback, bad = build_batch(records, self.settings)
        if bad:
            self.count(dropped=len(bad), done=len(bad), inflight=-len(bad))
            if self.limiter.ready("build"):
                _log.warning("Could not build %d CT records; they are dropped.", len(bad),
                             exc_info=bad[0])
        if not traces and not scores:
            return
        batch = IngestRequest(traces=traces, feedback=feedback, scores=scores)
        if self.spool is not None and self.sender.failing and not self.kept:
            # The server is failing: to disk now (within a wake-up, a second, of the calls),
            # not held in memory through retries where a kill -9 would lose it. Replaying
            # the spool finds out when the server is back.
            n = batch_size(batch)
            self.give_up(batch, n, "the server is failing", inflight=n)
            self.replay_spool()
            return
        try:
            earlier_ok = self.resend_kept()
        except Exception:
            earlier_ok = False
        if not earlier_ok:  # the server is still failing: keep the order
            n = batch_size(batch)
            self.give_up(batch, n, "earlier batches are still failing", inflight=n)
            return
        self.send(batch)

    def send(self, batch: IngestRequest, *, replay: bool = False, kept: bool = False) -> bool:
        """Deliver one batch (retrying within the deadline); count and hand failures on.

        With ``replay=True`` (a spool re-sending) nothing is counted as queued or dropped
        and a failure is only reported (the batch stays in the spool); with ``kept=True``
        (a batch kept in memory after failing) a failure leaves it where it is.
        """
        n = batch_size(batch)
        fresh = not replay and not kept
        if fresh:
            self._sending = batch
        if not replay:
            self._busy_since = time.monotonic()
            self._busy_thread = threading.get_ident()
        try:
            rejected, refused = self.sender.deliver(batch, time.monotonic() + _EXPORT_BUDGET)
        except GiveUp as stop:
            if stop.rest is not None and not replay:  # part of it was answered first
                self._partly_sent(batch, n, stop, fresh=fresh)
            elif fresh and self._settle(batch):
                self.give_up(batch, n, stop.reason, inflight=n)
            return False
        finally:
            if not replay:
                self._busy_since = None
        if fresh and not self._settle(batch):
            return True  # shutdown already handed this batch on (spooled or counted)
        if fresh:
            self._resize(n, self.sender.last_body_bytes)
        if not replay and self._spool_waiting:
            self.replay_spool()  # the server is back: re-send what waits on disk
        if replay:
            self.count(replayed=n - rejected, rejected=rejected, rejected_feedback=refused)
        elif kept:
            self.kept_delivered(batch, n, rejected, refused)
        else:
            self.count(sent=n - rejected, rejected=rejected, rejected_feedback=refused,
                       done=n, inflight=-n)
        return True

    def _partly_sent(self, batch: IngestRequest, n: int, stop: GiveUp, *, fresh: bool) -> None:
        """A batch sent record by record failed part way: count what the server answered
        and hand on the rest (a kept batch keeps its place, as its rest)."""
        done, rest, left = stop.done, stop.rest or IngestRequest(), n - stop.done
        answered = {
            "sent": done - stop.rejected, "rejected": stop.rejected,
            "rejected_feedback": stop.refused_feedback,
        }
        if fresh:
            if self._settle(batch):
                self.count(**answered, done=done, inflight=-done)
                self.give_up(rest, left, stop.reason, inflight=left)
            return
        with self._lock:
            if self.kept and self.kept[0][0] is batch:
                self.kept[0] = (rest, left)
                self._kept_records -= done
                self._sent += answered["sent"]
                self._rejected += stop.rejected
                self._rejected_feedback += stop.refused_feedback
                self._done += done

    def _resize(self, records: int, body_bytes: int) -> None:
        """Size the next batches so that their body is about `_BATCH_BYTES` (less when the
        server refused one as too large)."""
        if records <= 0 or body_bytes <= 0:
            return
        target = _BATCH_BYTES
        limit = self.sender.body_limit  # the server refused a larger body (413)
        if limit is not None:
            target = min(target, limit)
        fits = int(target * records / body_bytes)
        self._batch = max(1, min(fits, _BATCH_MAX, self.max_queue))

    def _settle(self, batch: IngestRequest) -> bool:
        """The thread is done with *batch*: True unless shutdown took it over meanwhile."""
        with self._settle_lock:
            if batch is self._abandoned:
                return False
            if self._sending is batch:
                self._sending = None
            return True

    def _take_in_flight(self) -> IngestRequest | None:
        """At shutdown: take over the batch a stuck sender thread still holds (or None)."""
        with self._settle_lock:
            batch, self._sending = self._sending, None
            if batch is not None:
                self._abandoned = batch
            return batch

    # lifecycle ------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued so far.

        Return True only when every record queued before the call was acknowledged by the
        server or spooled: False when *timeout* ran out first, or when records were dropped,
        rejected or are still kept in memory for a later attempt.
        """
        if self._closed:
            return False
        with self._lock:
            lost_before = self._dropped + self._rejected + self._rejected_feedback
            flush = _Flush()
            self._flushes.append(flush)
        if self._worker is None:
            self._start_worker()
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        finished = False
        while not finished:  # in slices: a thread that is gone must not make this wait forever
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            finished = flush.done.wait(max(0.0, left))
            worker = self._worker
            if finished or worker is None or not worker.is_alive():
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
        with self._lock:
            lost = self._dropped + self._rejected + self._rejected_feedback - lost_before
        # (records queued by other threads meanwhile may still be on their way: not ours)
        return finished and flush.ok and lost == 0 and not self.kept

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``settings.shutdown_timeout``), then stop."""
        if self._closed:
            return
        self._closed = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        self.sender.hurry(deadline)
        try:
            self._shutdown(deadline)
        finally:
            self._log_exit()

    def _log_exit(self) -> None:
        """One line that says exactly what became of the records of this client."""
        s = self.stats()
        if s.queued == 0:
            return
        _log.log(
            logging.WARNING if s.dropped or s.rejected else logging.INFO,
            "CT delivery closed: of %d records, %d were delivered, %d spooled to disk "
            "(sent by the next process with the same spool directory), %d dropped and %d "
            "rejected by the server.",
            s.queued, s.sent, s.spooled, s.dropped, s.rejected,
        )

    def _shutdown(self, deadline: float) -> None:
        try:
            worker = self._worker
            if worker is not None and worker.is_alive():
                if worker is not threading.current_thread():
                    self._stopping = True
                    self._wake.set()
                    worker.join(max(0.0, deadline - time.monotonic()))
                    # its request ends at the deadline too: a moment to count what it sent
                    worker.join(_SHUTDOWN_GRACE)
            elif self.queue or self.scores:  # no thread (it could not start): send from here
                self._export_queued(None)
            self.resend_kept(max(0.0, deadline - time.monotonic()))
        finally:
            stuck = self._take_in_flight()  # the thread is still waiting on the server
            if stuck is not None:
                n = batch_size(stuck)
                self.give_up(stuck, n, "still being sent at exit", final=True, inflight=n)
            with self._lock:  # the thread may still take from the queue: one owner each
                leftover = list(self.queue)
                self.queue.clear()
                scores, self.scores = self.scores, []
                flushes, self._flushes = self._flushes, []
            for flush in flushes:
                flush.done.set()
            with self._overflow_lock:
                leftover += self.overflow
                self.overflow = []
            if (leftover or scores) and self.spool is not None:  # keep them for later
                self._spool_records(leftover, "not sent before exit", scores)
            else:
                for record in leftover:
                    self.discard(record)
                if scores:
                    self.count(dropped=len(scores), done=len(scores))
            with self._lock:
                kept = list(self.kept)
                self.kept.clear()
                self._kept_records = 0
            for batch, n in kept:
                self.give_up(batch, n, "shutting down", final=True)
            self.sender.close()

    def _spool_records(
        self, records: list[CallRecord], reason: str, scores: list[ScoreItem] | None = None
    ) -> None:
        traces, feedback, bad = build_batch(records, self.settings)
        if bad:
            self.count(dropped=len(bad), done=len(bad))
        if traces or scores:
            batch = IngestRequest(traces=traces, feedback=feedback, scores=scores or [])
            self.give_up(batch, batch_size(batch), reason, final=True)
        if self.scores:  # a score waiting for one of these traces may go now
            self.poke()

    @property
    def closed(self) -> bool:
        """True after `shutdown`."""
        return self._closed

    def _after_fork(self) -> None:
        # The child starts empty, without the parent's thread: the parent delivers what it
        # queued; the child's first record starts a thread of its own.
        self.queue.clear()
        self._exporting = []
        self._lock = threading.Lock()
        self.limiter = LogLimiter()
        self._done = self._sent = self._retried = self._dropped = self._inflight = 0
        self._rejected = self._rejected_feedback = 0
        self.scores = []
        self.overflow = []
        self._overflow_lock = threading.Lock()
        self._overflow_wake = threading.Event()
        self._overflow_thread = None
        self._busy_since = None
        self.kept.clear()
        self._kept_records = 0
        self._resend_lock = threading.Lock()
        self._spooled = self._replayed = 0
        self._wake = threading.Event()
        self._flushes = []
        self._worker = None
        self._sending = self._abandoned = None
        self._settle_lock = threading.Lock()
        self._replayer = None
        self.sender.limiter = self.limiter
        self.sender.after_fork()


def live() -> list[Delivery]:
    """Every delivery engine of this process that is still open (``ct.flush()`` walks them)."""
    with _LIVE_LOCK:
        return list(_LIVE)


def flush_trace(trace_id: str, timeout: float | None = None) -> None:
    """Deliver the queued trace *trace_id* now, if this process still holds it."""
    key = str(trace_id).lower()
    for delivery in live():
        if delivery.holds(key):
            delivery.flush(timeout)


def is_pending(trace_id: str) -> bool:
    """Return True when this process still holds the trace *trace_id* undelivered.

    It scans the queues (a rare call: ``CTClient.score`` before it scores a trace)."""
    key = str(trace_id).lower()
    return any(delivery.holds(key) for delivery in live())
