"""Background delivery of CT records: batching, retries, spool hook and fallback.

Each `~kaizen_sdk._record.CallRecord` waits in the record table under an id that
`CTSpanProcessor.queue_record` puts on the queue of an OpenTelemetry ``BatchSpanProcessor``
owned by the delivery engine and added to no provider (its worker is our sender thread; no
span is queued), into `CTSpanExporter`, which turns each record into `TraceRequest` (and
`FeedbackRequest`) bodies and posts them, msgspec-encoded, to ``POST /api/v1/ingest``. A
server that answers ``404`` for ingest gets the single-record endpoints instead (remembered
for the process).
Transport errors, ``429`` and ``5xx`` are retried with exponential backoff and jitter within
a deadline; the ids are made on the client, so a retry never stores a record twice. What
finally fails goes to `Delivery.give_up` (where a durable spool plugs in) and is counted.

Also here, for ``CTClient.score``: `flush_trace` and `is_pending` look at every live
delivery of the process.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
import msgspec
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanContext, TraceFlags

from kaizen_sdk import models
from kaizen_sdk._config import Settings
from kaizen_sdk._http import USER_AGENT
from kaizen_sdk._safe_json import MAX_TEXT_CHARS, SAFE_ENCODER, clean_text, safe_json, truncate
from kaizen_sdk._spool import Spool
from kaizen_sdk._tls import httpx_options
from kaizen_sdk.models import (
    FeedbackRequest,
    IngestError,
    IngestRequest,
    ScoreItem,
    ScoreRequest,
    TraceRequest,
)

if TYPE_CHECKING:
    from kaizen_sdk._record import CallRecord

__all__ = [
    "MAX_TEXT_CHARS",
    "batch_size",
    "CTSpanExporter",
    "CTSpanProcessor",
    "Delivery",
    "DeliveryStats",
    "flush_trace",
    "is_pending",
    "live",
    "safe_json",
]

_log = logging.getLogger("kaizen_sdk.delivery")

_EXPORT_BUDGET = 30.0
_REQUEST_TIMEOUT = 10.0
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
_RETRY_AFTER_MAX = 30.0
_DOWN_SECONDS = 10.0
_LOG_INTERVAL = 60.0
_SCHEDULE_DELAY_MS = 1000.0
_BATCH_SIZE = 512
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_FLIP = dict(zip("0123456789abcdefABCDEF", "89abcdef01234567234567", strict=True))

# base URLs whose server answered 404 for /ingest: use the single-record endpoints
_NO_INGEST: set[str] = set()


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


def _json_dict(value: Any) -> Any:
    """Inputs must be a JSON object on the wire: wrap anything else as ``{"value": ...}``.

    A ``msgspec.Raw`` is trusted to hold a JSON object (the decorator makes sure of it).
    """
    if value is None or type(value) is msgspec.Raw or type(value) is dict:
        return value
    return {"value": value}


def _as_text(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT_CHARS else truncate(value)
    if value is None:
        return None
    if kind is int or kind is float:
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is msgspec.Raw:
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = bytes(safe_json(value)).decode("utf-8", "replace")
    return text if len(text) <= MAX_TEXT_CHARS else truncate(text)


# --- building requests ---------------------------------------------------------------------


class _FeedbackMeta(msgspec.Struct, array_like=False, gc=False):
    """The metadata of an SDK feedback entry (encodes as the same JSON object as a dict)."""

    trace_id: str
    prompt_version: int | None
    prompt_version_id: str | None
    latency_ms: float | None


class _Trace(TraceRequest, gc=False):
    """A `TraceRequest` the garbage collector does not track (built per record).

    A batch waits for its HTTP round trip; tracked, its hundreds of requests would trigger
    collections (and full ones, which walk the whole heap) on the caller's thread. Its
    values are records' own (no cycle can run through it).
    """


class _Feedback(FeedbackRequest, gc=False):
    """A `FeedbackRequest` the garbage collector does not track (see `_Trace`)."""


def build_requests(
    span: ReadableSpan | None, record: CallRecord, settings: Settings
) -> tuple[TraceRequest, FeedbackRequest | None]:
    """Turn one finished span and its record into the trace (and feedback) request bodies.

    Values are not converted here: the batch is encoded with a hook that turns unknown
    objects into their ``repr`` (see `encode_batch`), which falls back to converting value
    by value. Only long strings are cut.
    """
    latency = record.latency_ms
    if latency is None and span is not None:
        end, start = span.end_time, span.start_time
        latency = None if end is None or start is None else (end - start) / 1e6
    trace_id: Any = record.trace_id
    metadata = record.metadata
    if record.error is not None:
        metadata = dict(metadata) if metadata else {}
        metadata["error"] = record.error
    output = record.output
    inputs = record.inputs
    if settings.capture_content:
        prompt_text = record.prompt_text
        response = record.response_text
        mask = settings.mask
        if mask is not None:  # nothing the application wants hidden leaves the process
            inputs, output = _masked(mask, inputs), _masked(mask, output)
            prompt_text, response = _masked(mask, prompt_text), _masked(mask, response)
        if prompt_text is not None and (
            type(prompt_text) is not str or len(prompt_text) > MAX_TEXT_CHARS
        ):
            prompt_text = _as_text(prompt_text)
        if response is None:
            response = output
        if response is not None:
            kind = type(response)
            if kind is int:  # the common non-text result: no call (same text as _as_text)
                response = repr(response)
            elif kind is not str or len(response) > MAX_TEXT_CHARS:
                response = _as_text(response)
    else:
        prompt_text = response = output = inputs = None
    version_id: Any = record.prompt_version_id
    parent: Any = record.parent_trace_id
    trace = _Trace(
        task_id=record.task,
        id=trace_id,
        prompt_text=prompt_text,
        response_text=response,
        model=record.model,
        tokens=record.tokens,
        latency_ms=latency,
        prompt_version_id=version_id,
        parent_trace_id=parent,
        metadata=metadata or None,
        arm=record.arm,
        # the rollout guard's flag, only beside an arm: servers without rollouts never see it
        error=None if record.error is None or record.arm is None else True,
        user_id=record.user_id,
        session_id=record.session_id,
        tags=None if record.tags is None else list(record.tags),
    )
    if not record.log_feedback:
        return trace, None
    if type(output) is str and len(output) > MAX_TEXT_CHARS:
        output = truncate(output)
    if type(trace_id) is not str:
        trace_id = str(trace_id)
    if version_id is not None and type(version_id) is not str:
        version_id = str(version_id)
    fb_meta: Any
    if metadata:
        fb_meta = {
            "trace_id": trace_id,
            "prompt_version": record.prompt_version_number,
            "prompt_version_id": version_id,
            "latency_ms": latency,
            **metadata,
        }
    else:
        fb_meta = _FeedbackMeta(trace_id, record.prompt_version_number, version_id, latency)
    # The feedback entry's id: the trace id with its last hex digit's top bit flipped.
    # Stable across retries, still a UUID4, and a different id for every trace.
    fb_id: Any = None
    if len(trace_id) == 36:
        last = _FLIP.get(trace_id[35])
        if last is not None:
            fb_id = trace_id[:35] + last
    if inputs is not None and type(inputs) is not msgspec.Raw and type(inputs) is not dict:
        inputs = _json_dict(inputs)
    feedback = _Feedback(
        task_id=record.task,
        id=fb_id,
        inputs=inputs,
        output=output,
        source="sdk",
        metadata=fb_meta,
    )
    if record.arm is not None:  # served by a rollout, so the server knows these fields
        feedback.prompt_version_id = version_id
        feedback.arm = record.arm
    return trace, feedback


def _safe_request(item: Any) -> Any:
    """The slow path: make every free-form value of a request safe JSON on its own."""
    if isinstance(item, FeedbackRequest):
        inputs = item.inputs
        return msgspec.structs.replace(
            item,
            inputs=None if inputs is None else _json_dict(safe_json(inputs)),
            output=None if item.output is None else safe_json(item.output),
            metadata=None if item.metadata is None else safe_json(item.metadata),
        )
    metadata = item.metadata
    return msgspec.structs.replace(
        item,
        prompt_text=None if item.prompt_text is None else clean_text(item.prompt_text),
        response_text=None if item.response_text is None else clean_text(item.response_text),
        model=None if item.model is None else clean_text(item.model),
        metadata=None if metadata is None else safe_json(metadata),
    )


def encode_batch(batch: IngestRequest) -> bytes:
    """Encode a batch; objects JSON does not know become their ``repr``. Never raises."""
    try:
        return SAFE_ENCODER.encode(batch)
    except Exception:  # a cycle, keys JSON cannot hold, lone surrogates: item by item
        traces = b",".join(filter(None, map(_encode_one, batch.traces)))
        feedback = b",".join(filter(None, map(_encode_one, batch.feedback)))
        scores = b",".join(filter(None, map(_encode_one, batch.scores)))
        return (
            b'{"traces":[' + traces + b'],"feedback":[' + feedback + b'],"scores":['
            + scores + b"]}"
        )


def batch_size(batch: IngestRequest) -> int:
    """The records of *batch*: its traces and its scores (feedback rides with its trace)."""
    return len(batch.traces) + len(batch.scores)


def _encode_one(item: Any) -> bytes:
    """Encode one request, converting its values if needed; ``b""`` if even that fails."""
    try:
        return SAFE_ENCODER.encode(item)
    except Exception:
        pass
    try:
        return SAFE_ENCODER.encode(_safe_request(item))
    except Exception:
        _log.warning("A CT record could not be encoded at all; it is dropped.", exc_info=True)
        return b""


def _masked(mask: Callable[[Any], Any], value: Any) -> Any:
    if value is None:
        return None
    if type(value) is msgspec.Raw:
        value = msgspec.json.decode(value)
    try:
        return mask(value)
    except Exception:
        _log.warning("The mask function failed; the value is sent as '<masking failed>'.")
        return "<masking failed>"


# --- rate-limited logging ------------------------------------------------------------------


class _LogLimiter:
    """Log one line per *key* at most once a minute."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < _LOG_INTERVAL:
                return False
            self._last[key] = now
            return True


# --- a total deadline per request ------------------------------------------------------------

# httpx timeouts bound each read, so a server trickling one byte a second could hold a request
# for ever; the exporter's connections read and write through `_DeadlineStream`, which cuts
# every operation at the request's total deadline (set per thread by `CTSpanExporter._post`).
_DEADLINE = threading.local()


def _bounded(timeout: float | None) -> float | None:
    deadline: float | None = getattr(_DEADLINE, "at", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the request ran out of its total deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose reads, writes and TLS handshake end by the thread's deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout))
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every stream it opens deadline-bound."""

    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_tcp(host, port, _bounded(timeout), local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.connect_unix_socket(path, _bounded(timeout), socket_options)
        )

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _deadline_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=verify)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:  # httpcore keeps its backend here (1.x); else per-read bounds only
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return transport


class _GiveUp(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- exporter ------------------------------------------------------------------------------


class CTSpanExporter(SpanExporter):
    """Posts finished CT spans (with their records) to the CT server; never raises.

    Parameters:
        delivery: the `Delivery` whose record table, counters and spool hook it uses.
        transport: an ``httpx`` transport to send through (tests).
    """

    def __init__(
        self, delivery: Delivery, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._delivery = delivery
        self._settings = delivery.settings
        self._transport = transport
        self._http = self._new_http()
        self._wake = threading.Event()
        self._hard_deadline: float | None = None
        self._sending: IngestRequest | None = None  # the new batch being sent right now
        self._abandoned: IngestRequest | None = None
        self._settle_lock = threading.Lock()
        self._down_until = 0.0
        self._not_before = 0.0
        self._random = random.Random()

    def _new_http(self) -> httpx.Client:
        settings = self._settings
        # the shared SSL context of `_tls` (none loaded for http://): no second bundle load
        options = httpx_options(settings, timeout=min(settings.timeout, _REQUEST_TIMEOUT))
        return httpx.Client(
            base_url=settings.base_url,
            headers={
                "X-API-Key": settings.api_key,
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            transport=self._transport or _deadline_transport(options["verify"]),
            **options,
        )

    def _after_fork(self) -> None:
        self._http = self._new_http()  # the parent's pooled connections are not ours
        self._settle_lock = threading.Lock()
        self._sending = self._abandoned = None
        self._wake = threading.Event()
        self._random = random.Random()

    def _settle(self, batch: IngestRequest) -> bool:
        """The sender is done with *batch*: True unless shutdown took it over meanwhile."""
        with self._settle_lock:
            if batch is self._abandoned:
                return False
            if self._sending is batch:
                self._sending = None
            return True

    def take_in_flight(self) -> IngestRequest | None:
        """At shutdown: take over the batch a stuck sender still holds (or None)."""
        with self._settle_lock:
            batch, self._sending = self._sending, None
            if batch is not None:
                self._abandoned = batch
            return batch

    def hurry(self, deadline: float) -> None:
        """Make every export finish by the monotonic *deadline* (used at shutdown)."""
        self._hard_deadline = deadline
        self._wake.set()

    # SpanExporter API ---------------------------------------------------------------------

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        """Deliver *spans* (or the processor's span ids); return FAILURE
        (never raise) when they could not be delivered."""
        delivery = self._delivery
        # two parallel lists, not (span, record) tuples: nothing here for the garbage collector
        found: list[ReadableSpan | None] = []
        taken: list[CallRecord] = []
        records = delivery.records
        with delivery._lock:  # so that stats() never sees a record in no place
            delivery._trim_kept(len(spans))
            # counted in flight before they leave the table: `full()` reads without the lock
            delivery._inflight += len(spans)
            for item in spans:
                if type(item) is int:  # a span id (see CTSpanProcessor.on_end)
                    record = records.pop(item, None)  # None: shutdown already took it
                    if record is not None:
                        found.append(None)
                        taken.append(record)
                    continue
                ctx = item.context
                record = records.pop(ctx.span_id, None) if ctx is not None else None
                if record is not None:
                    found.append(item)
                    taken.append(record)
            scores = delivery._take_scores(taken)
            delivery._inflight += len(scores) - (len(spans) - len(taken))
        if not taken and not scores:
            if delivery.kept:  # nothing new (a wake-up): still re-send what failed earlier
                with contextlib.suppress(Exception):
                    delivery.resend_kept(0.0)
            return SpanExportResult.SUCCESS
        try:
            ok = self._export(found, taken, scores)
        except Exception:
            lost = len(taken) + len(scores)
            delivery.count(dropped=lost, done=lost, inflight=-lost)
            if delivery.limiter.ready("export-bug"):
                _log.exception("CT export failed unexpectedly; %d records lost.", lost)
            ok = False
        finally:
            discard = delivery.pending.discard
            for record in taken:
                trace_id = record.trace_id
                discard(trace_id if type(trace_id) is str else str(trace_id))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Called by the processor when it stops; `close` (by `Delivery`) ends the pool."""
        self._wake.set()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._wake.set()
        with contextlib.suppress(Exception):
            self._http.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here."""
        return True

    # delivery ------------------------------------------------------------------------------

    def _export(
        self,
        spans: list[ReadableSpan | None],
        records: list[CallRecord],
        scores: list[ScoreItem] | None = None,
    ) -> bool:
        settings = self._settings
        traces: list[TraceRequest] = []
        feedback: list[FeedbackRequest] = []
        bad = 0
        for span, record in zip(spans, records, strict=True):
            try:
                trace, fb = build_requests(span, record, settings)
            except Exception:
                bad += 1
                if self._delivery.limiter.ready("build"):
                    _log.warning("Could not build a CT record; it is dropped.", exc_info=True)
                continue
            traces.append(trace)
            if fb is not None:
                feedback.append(fb)
        if bad:
            self._delivery.count(dropped=bad, done=bad, inflight=-bad)
        if not traces and not scores:
            return bad == 0
        batch = IngestRequest(traces=traces, feedback=feedback, scores=scores or [])
        try:
            earlier_ok = self._delivery.resend_kept()
        except Exception:
            earlier_ok = False
        if not earlier_ok:  # the server is still failing: keep the order
            n = batch_size(batch)
            self._delivery.give_up(batch, n, "earlier batches are still failing", inflight=n)
            return False
        return self.send(batch) and bad == 0

    def send(self, batch: IngestRequest, *, replay: bool = False, kept: bool = False) -> bool:
        """Deliver one batch (retrying within the deadline); count and hand failures on.

        With ``replay=True`` (a spool re-sending) nothing is counted as queued or dropped
        and a failure is only reported (the batch stays in the spool); with ``kept=True``
        (a batch kept in memory after failing) a failure leaves it where it is.
        """
        n = batch_size(batch)
        delivery = self._delivery
        now = time.monotonic()
        deadline = now + _EXPORT_BUDGET
        if self._hard_deadline is not None:
            deadline = min(deadline, self._hard_deadline)
        retries = 0 if now < self._down_until else max(0, self._settings.max_retries)
        fresh = not replay and not kept
        if fresh:
            self._sending = batch
        try:
            wait = self._not_before - now  # the server's Retry-After, or our last backoff
            if wait > 0:
                if now + wait >= deadline:
                    raise _GiveUp("the server asked to wait")
                self._wake.wait(wait)
            if self._settings.base_url in _NO_INGEST:
                rejected, refused_feedback = self._send_single(batch, deadline, retries)
            else:
                rejected, refused_feedback = self._send_ingest(batch, deadline, retries)
        except _GiveUp as stop:
            if fresh and self._settle(batch):
                delivery.give_up(batch, n, stop.reason, inflight=n)
            return False
        if fresh and not self._settle(batch):
            return True  # shutdown already handed this batch on (spooled or counted)
        self._down_until = self._not_before = 0.0
        if not replay and delivery._spool_waiting:
            delivery.replay_spool()  # the server is back: re-send what waits on disk
        hook = delivery.on_delivered
        if hook is not None:
            try:
                hook(batch)
            except Exception:
                _log.warning("A delivery hook failed.", exc_info=True)
        if replay:
            delivery.count(
                replayed=n - rejected, rejected=rejected, rejected_feedback=refused_feedback
            )
        elif kept:
            delivery.kept_delivered(batch, n, rejected, refused_feedback)
        else:
            delivery.count(
                sent=n - rejected, rejected=rejected, rejected_feedback=refused_feedback,
                done=n, inflight=-n,
            )
        return True

    def _send_ingest(
        self, batch: IngestRequest, deadline: float, retries: int
    ) -> tuple[int, int]:
        """Post *batch* to /ingest; return (records, feedback entries) not acknowledged.

        Only an answer that reads as an ingest result acknowledges anything: an empty or
        HTML 200, or a 207 that does not decode, counts the whole batch as rejected.
        """
        body = encode_batch(batch)
        n = batch_size(batch)
        resp = self._post("/api/v1/ingest", body, deadline, retries, n)
        status = resp.status_code
        if status == 404:
            _NO_INGEST.add(self._settings.base_url)
            _log.info("The CT server has no /api/v1/ingest; using the single-record endpoints.")
            return self._send_single(batch, deadline, retries)
        if not 200 <= status < 300:
            self._rejected(status, resp)
            return n, 0  # the whole batch: its feedback goes with its records
        try:
            result = models.decode(resp.content, _IngestAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError):
            result = None
        if result is None or isinstance(result.accepted, msgspec.UnsetType):
            if self._delivery.limiter.ready("undecodable"):
                _log.warning(
                    "The CT server answered %d to a batch with something that is not an "
                    "ingest result (%r); its %d records are counted as rejected.",
                    status, resp.content[:80], n,
                )
            return n, 0
        errors = result.errors
        if errors and self._delivery.limiter.ready("rejected"):
            first = errors[0]
            _log.warning(
                "The CT server rejected %d of the items in a batch (first: %s %s: %s).",
                len(errors), first.kind, first.id, first.detail,
            )
        rejected = _refused(errors, "trace", len(batch.traces))
        rejected += _refused(errors, "score", len(batch.scores))
        refused_feedback = _refused(errors, "feedback", len(batch.feedback))
        if batch.scores and result.scores is None:
            # an older server ignored the scores: send them one by one
            rejected += self._send_scores(batch.scores, deadline, retries)
        return rejected, refused_feedback

    def _send_single(
        self, batch: IngestRequest, deadline: float, retries: int
    ) -> tuple[int, int]:
        rejected = refused_feedback = 0
        for trace in batch.traces:
            resp = self._post("/api/v1/traces", _encode_one(trace), deadline, retries, 1)
            if resp.status_code >= 300 and resp.status_code != 409:
                rejected += 1
                self._rejected(resp.status_code, resp)
        for fb in batch.feedback:
            resp = self._post("/api/v1/feedback", _encode_one(fb), deadline, retries, 0)
            if resp.status_code >= 300 and resp.status_code != 409:
                refused_feedback += 1
                self._rejected(resp.status_code, resp)
        rejected += self._send_scores(batch.scores, deadline, retries)
        return rejected, refused_feedback

    def _send_scores(self, scores: list[ScoreItem], deadline: float, retries: int) -> int:
        """Post each score to ``/traces/{id}/score``; return how many were refused."""
        refused = 0
        for item in scores:
            body = models.encode(ScoreRequest(score=item.score, scored_by=item.scored_by))
            resp = self._post(f"/api/v1/traces/{item.trace_id}/score", body, deadline, retries, 1)
            if resp.status_code >= 300:
                refused += 1
                self._rejected(resp.status_code, resp)
        return refused

    def _rejected(self, status: int, resp: httpx.Response) -> None:
        if not self._delivery.limiter.ready(f"status-{status}"):
            return
        if status in (401, 403):
            _log.warning("The CT server refused the API key (%d); records are dropped.", status)
        else:
            _log.warning(
                "The CT server rejected records with %d: %s", status, resp.text[:200]
            )

    def _post(
        self, path: str, body: bytes, deadline: float, retries: int, records: int
    ) -> httpx.Response:
        """POST with retries on transport errors, 408/429/5xx; raise `_GiveUp` at the end."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                raise _GiveUp("out of time")
            retry_after: float | None = None
            hard = self._hard_deadline
            _DEADLINE.at = deadline if hard is None else min(deadline, hard)
            try:
                resp = self._http.post(
                    path, content=body, timeout=min(self._http.timeout.read or 10.0, remaining)
                )
            except (httpx.TransportError, RuntimeError) as exc:  # RuntimeError: pool closed
                why = type(exc).__name__
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    self._down_until = time.monotonic() + _DOWN_SECONDS
            else:
                if resp.status_code not in _RETRY_STATUSES:
                    return resp
                why = str(resp.status_code)
                retry_after = _retry_after(resp.headers.get("Retry-After"))
            finally:
                _DEADLINE.at = None
            delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0**attempt)
            delay *= 0.5 + 0.5 * self._random.random()
            if retry_after is not None:
                delay = max(delay, min(retry_after, _RETRY_AFTER_MAX))
            if attempt >= retries or time.monotonic() + delay >= deadline:
                self._not_before = time.monotonic() + delay  # honoured by the next send
                raise _GiveUp(why)
            attempt += 1
            self._delivery.count(retried=records)
            _log.debug("CT delivery: retry %d in %.2f s after %s.", attempt, delay, why)
            self._wake.wait(delay)


class _IngestAnswer(msgspec.Struct, kw_only=True):
    """An ingest answer as read here: without ``accepted`` it acknowledges nothing."""

    accepted: int | msgspec.UnsetType = msgspec.UNSET
    errors: list[IngestError] = []
    scores: int | None = None


def _refused(errors: list[IngestError], kind: str, total: int) -> int:
    """How many items of *kind* the errors name (distinct ids; an item without id counts
    once each), at most *total*."""
    ids = {e.id for e in errors if e.kind == kind and e.id is not None}
    anonymous = sum(1 for e in errors if e.kind == kind and e.id is None)
    return min(total, len(ids) + anonymous)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


# --- processor -----------------------------------------------------------------------------


class CTSpanProcessor(BatchSpanProcessor):
    """The delivery engine's queue and sender thread: a ``BatchSpanProcessor`` of its own.

    It is added to no tracer provider: records are queued by id (`queue_record`); ``on_end``
    takes only a span carrying an attached CT record (an OpenTelemetry without the id queue).
    """

    def __init__(self, exporter: CTSpanExporter, delivery: Delivery) -> None:
        queue = max(1, delivery.settings.max_queue_size)
        super().__init__(
            exporter,
            max_queue_size=queue,
            schedule_delay_millis=_SCHEDULE_DELAY_MS,
            max_export_batch_size=min(_BATCH_SIZE, queue),
        )
        self._records = delivery.records
        self._delivery = delivery
        self.closed = False
        # OTel >= 1.33: queue the span id alone (the record waits in the record table) and let
        # the span go at once: an int is not tracked by the garbage collector, so waiting
        # records cost it nothing; older OTel: queue the span itself.
        inner = getattr(self, "_batch_processor", None)
        self._direct: Callable[[Any], None] | None = (
            inner.emit if inner is not None and hasattr(inner, "emit") else None
        )

    def shutdown(self) -> None:
        """Stop, delivering what is queued within the client's ``shutdown_timeout``."""
        self._delivery.shutdown()

    def queue_record(self, span_id: int) -> bool:
        """Queue the record waiting under *span_id* in the record table, without any span.

        Returns False when this OpenTelemetry's batch queue takes only spans (the caller
        then hands over a span carrying *span_id*).
        """
        direct = self._direct
        if direct is None:
            return False
        if self.closed:
            record = self._records.pop(span_id, None)
            if record is not None:
                self._delivery.discard(record)
            return True
        direct(span_id)
        return True

    def poke(self) -> None:
        """Queue a wake-up without a record, so that the worker exports (queued scores,
        batches kept after a failure) within its schedule delay."""
        if self.closed:
            return
        direct = self._direct
        if direct is not None:
            direct(0)  # no record has span id 0: the export finds only what waits beside
            return
        now = time.time_ns()
        BatchSpanProcessor.on_end(self, ReadableSpan(
            name="ct.wake",
            context=SpanContext(trace_id=1, span_id=0, is_remote=False,
                                trace_flags=TraceFlags(TraceFlags.SAMPLED)),
            start_time=now, end_time=now, resource=Resource.get_empty(),
        ))

    def _stop(self, timeout: float) -> None:
        """Stop the worker after its last export, waiting at most *timeout* seconds."""
        inner = getattr(self, "_batch_processor", None)
        if inner is not None and hasattr(inner, "shutdown"):
            inner.shutdown(timeout_millis=int(max(0.0, timeout) * 1000))
        else:  # older OTel: no bound on the wait (the exporter's deadline still bounds it)
            super().shutdown()  # type: ignore[no-untyped-call]

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        record = self._records.get(ctx.span_id)
        if record is None:
            return
        if self.closed:
            if self._records.pop(ctx.span_id, None) is not None:
                self._delivery.discard(record)
            return
        # Spans with a record are always delivered, even when the sampler only recorded
        # them: the CT server needs every call (sampling is for the app's own backends).
        direct = self._direct
        if direct is None:
            super().on_end(span)
            return
        if record.latency_ms is None:
            end, start = span.end_time, span.start_time
            if end is not None and start is not None:
                record.latency_ms = (end - start) / 1e6
        direct(ctx.span_id)


# --- delivery ------------------------------------------------------------------------------

_LIVE: set[Delivery] = set()
_LIVE_LOCK = threading.Lock()


class Delivery:
    """One client's background delivery: record table, processor, exporter and counters.

    Parameters:
        settings: the client's resolved settings.
        transport: an ``httpx`` transport for the exporter (tests).
    """

    def __init__(
        self, settings: Settings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.settings = settings
        # span id -> record, from attach until export (bounded by settings.max_queue_size)
        self.records: dict[int, CallRecord] = {}
        # trace ids (str) attached and not yet exported, for flush_trace/is_pending
        self.pending: set[str] = set()
        self.limiter = _LogLimiter()
        self.on_give_up: Callable[[IngestRequest, int, str], bool] | None = None
        # told about each delivered batch (the task decorator: a trace made on a default
        # prompt has just created the task's version 1, so fetch it now)
        self.on_delivered: Callable[[IngestRequest], None] | None = None
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
        # records past the memory bound, on their way to the spool (`_overflow_writer`)
        self.overflow: list[CallRecord] = []
        self._overflow_lock = threading.Lock()
        self._overflow_wake = threading.Event()
        self._overflow_thread: threading.Thread | None = None
        self._poked = 0.0
        self.exporter = CTSpanExporter(self, transport=transport)
        self.processor = CTSpanProcessor(self.exporter, self)
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
                queued=self._done + len(self.records) + self._kept_records + self._inflight
                + len(self.scores) + len(self.overflow),
                sent=self._sent,
                retried=self._retried,
                dropped=self._dropped,
                rejected=self._rejected,
                rejected_feedback=self._rejected_feedback,
                spooled=self._spooled,
                replayed=self._replayed,
            )

    def full(self) -> bool:
        """True when the records held in memory (queued, in flight and kept after a
        failure) reach ``max_queue_size``."""
        return (
            len(self.records) + self._inflight + self._kept_records
            >= self.settings.max_queue_size
        )

    def drop_full(self, record: CallRecord) -> None:
        """Take a record past the memory bound: to the spool when there is one (written in
        the background at call rate), else dropped and counted (logged once a minute)."""
        now = time.monotonic()
        if now - self._poked >= 1.0:  # batches kept after a failure still need re-sending
            self._poked = now
            with contextlib.suppress(Exception):
                self.processor.poke()
        if self.spool is not None and not self._closed:
            behind: list[CallRecord] = []
            with self._overflow_lock:
                if len(self.overflow) >= max(1, self.settings.max_queue_size):
                    # The writer is behind the callers: this caller writes one batch itself,
                    # so a spool slower than the calls slows them a little, never loses.
                    behind = self.overflow[:_BATCH_SIZE]
                    del self.overflow[:_BATCH_SIZE]
                self.overflow.append(record)
                self.pending.add(str(record.trace_id))
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
        while not self._closed:
            self._overflow_wake.wait(1.0)
            self._overflow_wake.clear()
            try:
                self.spool_overflow()
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
                id=uuid.uuid4(), trace_id=uuid.UUID(str(trace_id)), score=float(value),
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
                len(self.records) + self._inflight + self._kept_records + len(self.scores)
                >= max(1, self.settings.max_queue_size)
                and self.spool is None
            ):
                self._dropped += 1
                self._done += 1
                _log.warning("A score for trace %s is dropped: the queue is full.", trace_id)
                return None
            self.scores.append(item)
        self.processor.poke()
        return str(item.id)

    def _take_scores(self, taken: list[CallRecord]) -> list[ScoreItem]:
        """Scores ready to go with this export: those whose trace is not still waiting in
        the queue (it goes first). Call with the lock held."""
        if not self.scores:
            return []
        going = {str(r.trace_id) for r in taken}
        pending = self.pending
        ready: list[ScoreItem] = []
        wait: list[ScoreItem] = []
        for item in self.scores:
            tid = str(item.trace_id)
            (ready if tid in going or tid not in pending else wait).append(item)
        self.scores = wait
        return ready

    def discard(self, record: CallRecord) -> None:
        """Forget a record that can no longer be delivered (after shutdown)."""
        self.pending.discard(str(record.trace_id))
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
        hook = self.on_give_up
        if hook is not None:
            try:
                spooled = hook(batch, records, reason)
            except Exception:
                _log.warning("Spooling a failed batch failed.", exc_info=True)
        if spooled:
            self.count(spooled=records, done=records, inflight=-inflight)
            how = "they are kept in the spool"
        elif not final:
            dropped = 0
            with self._lock:
                self.kept.append((batch, records))
                self._kept_records += records  # kept before it leaves the flight: see full()
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
        self.on_give_up = self._to_spool
        if not self.spool.is_empty():  # left behind by an earlier process: replay it
            self._spool_waiting = True
            self.replay_spool()

    def _to_spool(self, batch: IngestRequest, records: int, reason: str) -> bool:
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
        spool.replay(lambda batch: self.exporter.send(batch, replay=True))
        return self.stats().replayed, len(spool.pending())

    def _replay(self) -> None:
        spool = self.spool
        if spool is None:
            return
        try:
            result = spool.replay(
                lambda batch: self.exporter.send(batch, replay=True),
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
                if not self.exporter.send(batch, kept=True):
                    return False
        finally:
            self._resend_lock.release()

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
        if timeout is None:
            ok = self._flush_all()
        else:
            done = threading.Event()
            result: list[bool] = []

            def run() -> None:
                try:
                    result.append(self._flush_all())
                finally:
                    done.set()

            threading.Thread(target=run, name="kaizen-flush", daemon=True).start()
            ok = done.wait(max(0.0, timeout)) and bool(result) and result[0]
        with self._lock:
            lost = self._dropped + self._rejected + self._rejected_feedback - lost_before
        # (records queued by other threads meanwhile may still be on their way: not ours)
        return ok and lost == 0 and not self.kept

    def _flush_all(self) -> bool:
        try:
            if self.overflow:
                self.spool_overflow()
            flushed = bool(self.processor.force_flush())
            return self.resend_kept() and flushed and not self.scores
        except Exception:  # never into the caller
            _log.warning("Flushing CT records failed.", exc_info=True)
            return False

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush within *timeout* (default ``settings.shutdown_timeout``), then stop."""
        if self._closed:
            return
        self._closed = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        limit = self.settings.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + max(0.0, limit)
        self.exporter.hurry(deadline)
        try:
            self._shutdown(limit, deadline)
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

    def _shutdown(self, limit: float, deadline: float) -> None:
        try:
            self.processor._stop(limit)
            self.resend_kept(max(0.0, deadline - time.monotonic()))
        finally:
            stuck = self.exporter.take_in_flight()  # the worker is still waiting on the server
            if stuck is not None:
                n = batch_size(stuck)
                self.give_up(stuck, n, "still being sent at exit", final=True, inflight=n)
            self.processor.closed = True
            leftover = list(self.records.values())
            self.records.clear()
            with self._overflow_lock:
                leftover += self.overflow
                self.overflow = []
            with self._lock:
                scores, self.scores = self.scores, []
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
            self.exporter.close()

    def _spool_records(
        self, records: list[CallRecord], reason: str, scores: list[ScoreItem] | None = None
    ) -> None:
        traces: list[TraceRequest] = []
        feedback: list[FeedbackRequest] = []
        for record in records:
            self.pending.discard(str(record.trace_id))
            try:
                trace, fb = build_requests(None, record, self.settings)
            except Exception:
                self.count(dropped=1, done=1)
                continue
            traces.append(trace)
            if fb is not None:
                feedback.append(fb)
        if traces or scores:
            batch = IngestRequest(traces=traces, feedback=feedback, scores=scores or [])
            self.give_up(batch, batch_size(batch), reason, final=True)
        if self.scores:  # a score waiting for one of these traces may go now
            with contextlib.suppress(Exception):
                self.processor.poke()

    @property
    def closed(self) -> bool:
        """True after `shutdown`."""
        return self._closed

    def _after_fork(self) -> None:
        # The child starts empty: the parent delivers what it queued.
        self.records.clear()
        self.pending.clear()
        self._lock = threading.Lock()
        self.limiter = _LogLimiter()
        self._done = self._sent = self._retried = self._dropped = self._inflight = 0
        self._rejected = self._rejected_feedback = 0
        self.scores = []
        self.overflow = []
        self._overflow_lock = threading.Lock()
        self._overflow_wake = threading.Event()
        self._overflow_thread = None
        self.kept.clear()
        self._kept_records = 0
        self._resend_lock = threading.Lock()
        self._spooled = self._replayed = 0
        self.exporter._after_fork()


def live() -> list[Delivery]:
    """Every delivery engine of this process that is still open (``ct.flush()`` walks them)."""
    with _LIVE_LOCK:
        return list(_LIVE)


def flush_trace(trace_id: str, timeout: float | None = None) -> None:
    """Deliver the queued trace *trace_id* now, if this process still holds it."""
    key = str(trace_id).lower()
    for delivery in live():
        if key in delivery.pending:
            delivery.flush(timeout)


def is_pending(trace_id: str) -> bool:
    """Return True when this process still holds the trace *trace_id* undelivered (cheap)."""
    key = str(trace_id).lower()
    return any(key in delivery.pending for delivery in live())
