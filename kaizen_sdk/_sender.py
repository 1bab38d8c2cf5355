"""The HTTP half of background delivery: one batch to ``POST /api/v1/ingest``, with retries.

`Sender.deliver` posts an encoded batch and reads the answer: how many records and feedback
entries the server did not acknowledge. A batch the server finds too large (``413``) is sent
again in halves. Transport errors, ``408``, ``429`` and ``5xx`` are
retried with the shared backoff and ``Retry-After`` of `kaizen_sdk._http` within a deadline
(the ids are made on the client, so a retry never stores a record twice); what still fails
raises `GiveUp` with the reason, and the delivery engine decides what becomes of the batch.
A server that answers ``404`` for ingest gets the single-record endpoints instead (remembered
for the process). Every read and write of its connections ends by the request's total
deadline, so a server trickling bytes cannot stretch a flush. It keeps no record and no count.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore
import httpx
import msgspec

from kaizen_sdk import models
from kaizen_sdk._config import Settings
from kaizen_sdk._http import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    DELIVERY_RETRY_STATUSES,
    RETRY_AFTER_MAX,
    USER_AGENT,
    parse_retry_after,
)
from kaizen_sdk._requests import batch_size, encode_batch, encode_one, split_batch
from kaizen_sdk._tls import httpx_options
from kaizen_sdk.models import IngestError, IngestRequest, ScoreItem, ScoreRequest

__all__ = ["GiveUp", "LogLimiter", "Sender", "deadline_transport", "forget_no_ingest"]

_log = logging.getLogger("kaizen_sdk.delivery")

_REQUEST_TIMEOUT = 10.0
_DOWN_SECONDS = 10.0
_LOG_INTERVAL = 60.0

# base URLs whose server answered 404 for /ingest: use the single-record endpoints
_NO_INGEST: set[str] = set()


def forget_no_ingest(base_url: str) -> None:
    """Try ``/api/v1/ingest`` again at *base_url* (after its server was upgraded, or in tests)."""
    _NO_INGEST.discard(base_url)


class LogLimiter:
    """Log one line per *key* at most once a minute."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        """True when a line for *key* may be logged now (and note that it was)."""
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
# every operation at the request's total deadline (set per thread by `Sender.post`).
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


# A send buffer that takes a whole batch body in one send(): each blocking call gives up the
# GIL, and getting it back from a busy application thread is what a send costs most.
_SOCKET_OPTIONS = [(socket.SOL_SOCKET, socket.SO_SNDBUF, 2 << 20)]


def deadline_transport(verify: ssl.SSLContext | bool) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=verify, socket_options=_SOCKET_OPTIONS)
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:  # httpcore keeps its backend here (1.x); else per-read bounds only
        pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]
    return transport


# --- posting through the transport ----------------------------------------------------------

_HTTPX_LOG = logging.getLogger("httpx")
_PREPARED_PATHS = 8
"""Request heads `_Poster` keeps (ingest and the single-record endpoints; a score's path
names its trace): when more are needed, it forgets them all and starts again."""


class _Poster:
    """POSTs request bodies straight through the client's transport.

    ``httpx.Client.post`` spends most of a small request's CPU before and after the
    transport: URL merging, header merging and normalizing, the auth and redirect flow,
    cookie handling and response wrapping, on the sender thread for every batch. Here the
    request the client would send, header for header (``Host`` first, ``Content-Length``
    where the client puts it), is built by the client once per path; each post copies it
    with its body's length and hands it to the same transport, with the same timeouts, so
    the wire bytes do not change. The client still does the rare cases itself: a response
    that sets a cookie goes into its jar, and while the jar holds any, every request is
    built by the client (it adds the ``Cookie`` header). ``httpx`` logs its INFO line for
    each request as before. Closing closes the client (and the transport); a post after
    that raises ``RuntimeError``, as the client's would.
    """

    def __init__(self, client: httpx.Client, transport: httpx.BaseTransport) -> None:
        self.client = client
        self.read_timeout: float = client.timeout.read or 10.0
        """The read timeout of the client, the longest any one request waits."""
        self._transport = transport  # the client's (tests inject theirs)
        self._prepared: dict[str, tuple[httpx.URL, list[Any], list[Any]]] = {}
        self._closed = False

    def post(self, path: str, body: bytes, timeout: float) -> httpx.Response:
        """POST *body* to *path* within *timeout* seconds per operation; read the answer."""
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        client = self.client
        prepared = self._prepared.get(path)
        if prepared is None:
            if client.cookies:
                return client.post(path, content=body, timeout=timeout)
            if len(self._prepared) >= _PREPARED_PATHS:
                self._prepared.clear()
            # (a body, as an empty one would put Content-Length elsewhere)
            template = client.build_request("POST", path, content=b"{}")
            raw = template.headers.raw
            at = next(i for i, (key, _) in enumerate(raw) if key.lower() == b"content-length")
            prepared = self._prepared[path] = (template.url, raw[:at], raw[at + 1 :])
        url, head, tail = prepared
        request = httpx.Request(
            "POST", url,
            headers=[*head, (b"Content-Length", b"%d" % len(body)), *tail],
            stream=httpx.ByteStream(body),
            extensions={"timeout": {
                "connect": timeout, "read": timeout, "write": timeout, "pool": timeout,
            }},
        )
        request.read()  # as a client's request is: a transport may read .content
        response = self._transport.handle_request(request)
        response.request = request
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        if "set-cookie" in response.headers:  # into the client's jar: it builds from now on
            client.cookies.extract_cookies(response)
            self._prepared.clear()
        if _HTTPX_LOG.isEnabledFor(logging.INFO):
            _HTTPX_LOG.info('HTTP Request: %s %s "%s %d %s"', request.method, request.url,
                            response.http_version, response.status_code,
                            response.reason_phrase)
        return response

    def close(self) -> None:
        """Close the client and its transport; later posts raise ``RuntimeError``."""
        self._closed = True
        self.client.close()


class GiveUp(Exception):
    """A batch could not be delivered within its deadline and retries; ``reason`` says why.

    Sent record by record (a server without ingest, or without scores in it), part of the
    batch may have been answered first: ``done`` records (``rejected`` of them refused, and
    ``refused_feedback`` feedback entries), and ``rest`` is what is left to send.
    """

    def __init__(
        self,
        reason: str,
        *,
        done: int = 0,
        rejected: int = 0,
        refused_feedback: int = 0,
        rest: IngestRequest | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.done = done
        self.rejected = rejected
        self.refused_feedback = refused_feedback
        self.rest = rest


class Sender:
    """Posts ingest batches to the CT server; keeps only connection and backoff state.

    Parameters:
        settings: the client's resolved settings (base URL, key, timeouts, retries).
        limiter: the engine's log limiter (one line per kind of trouble a minute).
        on_retry: called with the number of records each time a request is sent again.
        on_answer: called each time the server answered a request (no retry needed).
        transport: an ``httpx`` transport to send through (tests).
    """

    def __init__(
        self,
        settings: Settings,
        limiter: LogLimiter,
        on_retry: Callable[[int], None],
        *,
        on_answer: Callable[[], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self._on_retry = on_retry
        self._on_answer = on_answer
        self._transport = transport
        self._http = self._new_http()
        self._wake = threading.Event()
        self._hard_deadline: float | None = None
        self._down_until = 0.0
        self._not_before = 0.0
        self._random = random.Random()
        self.last_body_bytes = 0
        """Bytes of the last ingest body sent (the engine sizes its batches from it)."""
        self.body_limit: int | None = None
        """Half the smallest body the server refused as too large (413), once one was."""
        self.failing = False
        """True from a delivery that failed after its retries until one succeeds: the engine
        then writes new batches straight to its spool (when it has one)."""

    def _new_http(self) -> _Poster:
        settings = self.settings
        # the shared SSL context of `_tls` (none loaded for http://): no second bundle load
        options = httpx_options(settings, timeout=min(settings.timeout, _REQUEST_TIMEOUT))
        transport = self._transport or deadline_transport(options["verify"])
        return _Poster(httpx.Client(
            base_url=settings.base_url,
            headers={
                "X-API-Key": settings.api_key,
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            transport=transport,
            **options,
        ), transport)

    def after_fork(self) -> None:
        """In a forked child: new connections (the parent's pooled ones are not ours)."""
        self._http = self._new_http()
        self._wake = threading.Event()
        self._random = random.Random()

    def hurry(self, deadline: float) -> None:
        """Make every delivery finish by the monotonic *deadline* (used at shutdown)."""
        self._hard_deadline = deadline
        self._wake.set()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._wake.set()
        with contextlib.suppress(Exception):  # closing is best effort
            self._http.close()

    def deliver(self, batch: IngestRequest, deadline: float) -> tuple[int, int]:
        """Send *batch* by the monotonic *deadline* (or the shutdown one, if sooner).

        Return ``(records, feedback entries)`` the server did not acknowledge; raise
        `GiveUp` when it could not be delivered at all.
        """
        now = time.monotonic()
        if self._hard_deadline is not None:
            deadline = min(deadline, self._hard_deadline)
        # a server found down a moment ago gets one attempt, not the whole retry budget
        retries = 0 if now < self._down_until else max(0, self.settings.max_retries)
        wait = self._not_before - now  # the server's Retry-After, or our last backoff
        if wait > 0:
            if now + wait >= deadline:
                raise GiveUp("the server asked to wait")
            self._wake.wait(wait)
        try:
            if self.settings.base_url in _NO_INGEST:
                result = self._send_single(batch, deadline, retries)
            else:
                result = self._send_ingest(batch, deadline, retries)
        except GiveUp:
            self.failing = True
            raise
        self._down_until = self._not_before = 0.0
        self.failing = False
        return result

    def _send_ingest(
        self, batch: IngestRequest, deadline: float, retries: int
    ) -> tuple[int, int]:
        """Post *batch* to /ingest; return (records, feedback entries) not acknowledged.

        Only an answer that reads as an ingest result acknowledges anything: an empty or
        HTML 200, or a 207 that does not decode, counts the whole batch as rejected.
        """
        body = encode_batch(batch)
        n = batch_size(batch)
        resp = self.post("/api/v1/ingest", body, deadline, retries, n)
        status = resp.status_code
        if status == 413 and n > 1:  # too large for this server: each half on its own
            if self.limiter.ready("too-large"):
                _log.info("The CT server refused a batch of %d bytes as too large; sending it "
                          "in smaller parts.", len(body))
            limit = len(body) // 2
            self.body_limit = limit if self.body_limit is None else min(self.body_limit, limit)
            parts = split_batch(batch)
            left = self._send_ingest(parts[0], deadline, retries)
            try:
                right = self._send_ingest(parts[1], deadline, retries)
            except GiveUp as stop:  # the first half is in
                raise GiveUp(
                    stop.reason, done=batch_size(parts[0]) + stop.done,
                    rejected=left[0] + stop.rejected,
                    refused_feedback=left[1] + stop.refused_feedback,
                    rest=parts[1] if stop.rest is None else stop.rest,
                ) from None
            self.last_body_bytes = len(body)
            return left[0] + right[0], left[1] + right[1]
        self.last_body_bytes = len(body)
        if status == 404:
            _NO_INGEST.add(self.settings.base_url)
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
            if self.limiter.ready("undecodable"):
                _log.warning(
                    "The CT server answered %d to a batch with something that is not an "
                    "ingest result (%r); its %d records are counted as rejected.",
                    status, resp.content[:80], n,
                )
            return n, 0
        errors = result.errors
        if errors and self.limiter.ready("rejected"):
            first = errors[0]
            _log.warning(
                "The CT server rejected %d of the items in a batch (first: %s %s: %s).",
                len(errors), first.kind, first.id, first.detail,
            )
        rejected = _refused(errors, "trace", len(batch.traces))
        rejected += _refused(errors, "score", len(batch.scores))
        refused_feedback = _refused(errors, "feedback", len(batch.feedback))
        if batch.scores and result.scores is None:
            # an older server ignored the scores: send them one by one (the traces are in)
            try:
                rejected += self._send_scores(batch.scores, deadline, retries)
            except GiveUp as stop:
                raise GiveUp(
                    stop.reason, done=len(batch.traces) + stop.done,
                    rejected=rejected + stop.rejected, refused_feedback=refused_feedback,
                    rest=stop.rest,
                ) from None
        return rejected, refused_feedback

    def _send_single(
        self, batch: IngestRequest, deadline: float, retries: int
    ) -> tuple[int, int]:
        """Post each trace and then its feedback entries, then the scores, one request each.

        A record counts as done once its trace was answered; on `GiveUp` the exception
        carries what was done and the rest (the feedback of that last trace included).
        """
        rejected = refused_feedback = done = 0
        steps = _single_steps(batch)
        for index, (kind, item) in enumerate(steps):
            try:
                if kind == "trace":
                    resp = self.post("/api/v1/traces", encode_one(item), deadline, retries, 1)
                elif kind == "feedback":
                    resp = self.post("/api/v1/feedback", encode_one(item), deadline, retries, 0)
                else:
                    rejected += self._send_scores([item], deadline, retries)
                    done += 1
                    continue
            except GiveUp as stop:
                raise GiveUp(
                    stop.reason, done=done, rejected=rejected,
                    refused_feedback=refused_feedback, rest=_rest(steps[index:]),
                ) from None
            if resp.status_code >= 300 and resp.status_code != 409:
                if kind == "trace":
                    rejected += 1
                else:
                    refused_feedback += 1
                self._rejected(resp.status_code, resp)
            done += kind == "trace"
        return rejected, refused_feedback

    def _send_scores(self, scores: list[ScoreItem], deadline: float, retries: int) -> int:
        """Post each score to ``/traces/{id}/score``; return how many were refused (on
        `GiveUp`, the exception carries those done and the rest)."""
        refused = 0
        for index, item in enumerate(scores):
            body = models.encode(ScoreRequest(score=item.score, scored_by=item.scored_by))
            try:
                resp = self.post(
                    f"/api/v1/traces/{item.trace_id}/score", body, deadline, retries, 1
                )
            except GiveUp as stop:
                raise GiveUp(stop.reason, done=index, rejected=refused,
                             rest=IngestRequest(scores=scores[index:])) from None
            if resp.status_code >= 300:
                refused += 1
                self._rejected(resp.status_code, resp)
        return refused

    def _rejected(self, status: int, resp: httpx.Response) -> None:
        if not self.limiter.ready(f"status-{status}"):
            return
        if status in (401, 403):
            _log.warning("The CT server refused the API key (%d); records are dropped.", status)
        else:
            _log.warning(
                "The CT server rejected records with %d: %s", status, resp.text[:200]
            )

    def post(
        self, path: str, body: bytes, deadline: float, retries: int, records: int
    ) -> httpx.Response:
        """POST with retries on transport errors, 408/429/5xx; raise `GiveUp` at the end."""
        attempt = 0
        while True:
            hard = self._hard_deadline  # set by `hurry` meanwhile (shutdown)
            remaining = (deadline if hard is None else min(deadline, hard)) - time.monotonic()
            if remaining <= 0.05:
                raise GiveUp("out of time")
            retry_after: float | None = None
            _DEADLINE.at = deadline if hard is None else min(deadline, hard)
            try:
                http = self._http
                resp = http.post(path, body, min(http.read_timeout, remaining))
            except (httpx.TransportError, RuntimeError) as exc:  # RuntimeError: pool closed
                why = type(exc).__name__
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    self._down_until = time.monotonic() + _DOWN_SECONDS
            else:
                if resp.status_code not in DELIVERY_RETRY_STATUSES:
                    if self._on_answer is not None:
                        self._on_answer()
                    return resp
                why = str(resp.status_code)
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            finally:
                _DEADLINE.at = None
            delay = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**attempt)
            delay *= 0.5 + 0.5 * self._random.random()
            if retry_after is not None:
                delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
            if attempt >= retries or time.monotonic() + delay >= deadline:
                self._not_before = time.monotonic() + delay  # honoured by the next send
                raise GiveUp(why)
            attempt += 1
            self._on_retry(records)
            _log.debug("CT delivery: retry %d in %.2f s after %s.", attempt, delay, why)
            self._wake.wait(delay)


class _IngestAnswer(msgspec.Struct, kw_only=True):
    """An ingest answer as read here: without ``accepted`` it acknowledges nothing."""

    accepted: int | msgspec.UnsetType = msgspec.UNSET
    errors: list[IngestError] = []
    scores: int | None = None


def _single_steps(batch: IngestRequest) -> list[tuple[str, Any]]:
    """The requests of *batch* on the single-record endpoints, in order: each trace followed
    by its feedback entries, then feedback naming no trace of the batch, then the scores."""
    ids = {str(t.id) for t in batch.traces}
    mine: dict[str, list[Any]] = {}
    loose: list[Any] = []
    for entry in batch.feedback:
        meta: Any = entry.metadata
        trace_id = meta.get("trace_id") if type(meta) is dict else getattr(meta, "trace_id", None)
        key = str(trace_id)
        if trace_id is not None and key in ids:
            mine.setdefault(key, []).append(entry)
        else:
            loose.append(entry)
    steps: list[tuple[str, Any]] = []
    for trace in batch.traces:
        steps.append(("trace", trace))
        steps += [("feedback", entry) for entry in mine.pop(str(trace.id), ())]
    steps += [("feedback", entry) for entry in loose]
    steps += [("score", item) for item in batch.scores]
    return steps


def _rest(steps: list[tuple[str, Any]]) -> IngestRequest:
    """The batch of the requests *steps* still to send."""
    return IngestRequest(
        traces=[item for kind, item in steps if kind == "trace"],
        feedback=[item for kind, item in steps if kind == "feedback"],
        scores=[item for kind, item in steps if kind == "score"],
    )


def _refused(errors: list[IngestError], kind: str, total: int) -> int:
    """How many items of *kind* the errors name (distinct ids; an item without id counts
    once each), at most *total*."""
    ids = {e.id for e in errors if e.kind == kind and e.id is not None}
    anonymous = sum(1 for e in errors if e.kind == kind and e.id is None)
    return min(total, len(ids) + anonymous)
