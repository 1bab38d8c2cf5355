"""The local server's one way out: every LLM, judge and GitHub call goes through `Outbound`.

Each call has a **total deadline**: a wall clock over connecting, sending and every read of the
answer, head included (not a per-read timeout, which a trickling upstream sending one byte
every second never trips). Each socket read and write is given only the time left, so a call
ends at its deadline whatever the upstream does. The answer is read as a stream and the call
is stopped once it passes `MAX_ANSWER_BYTES` (or a smaller cap), so a huge answer never sits
in memory. `Canceller.cancel` (the server is stopping) shuts down every socket of the calls
in flight at once, so stopping never waits on an upstream.

Failures are `OutboundError` with a short summary (what failed, never the upstream's body);
the caller turns them into its own error messages.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import typing
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any

import httpcore
import httpx

__all__ = [
    "DEFAULT_DEADLINE",
    "MAX_ANSWER_BYTES",
    "AnswerTooLarge",
    "Canceller",
    "DeadlineExceeded",
    "Outbound",
    "OutboundCancelled",
    "OutboundError",
    "Reply",
    "deadline_transport",
    "status_summary",
]

MAX_ANSWER_BYTES = 4 * 1024 * 1024
"""Largest upstream answer read (4 MiB); a longer one is stopped and the call fails."""

DEFAULT_DEADLINE = 120.0
"""Seconds one outbound call may take in all (connect, send, every read)."""


class OutboundError(Exception):
    """An outbound call gave no usable answer; ``str()`` is a summary without any body."""


class DeadlineExceeded(OutboundError):
    """The call (or the job it belongs to) ran out of time."""


class AnswerTooLarge(OutboundError):
    """The answer was longer than the cap; reading stopped there."""


class OutboundCancelled(OutboundError):
    """The call was cancelled because the local server is stopping."""


def status_summary(code: int) -> str:
    """``"HTTP 422 Unprocessable Entity"``: the status and its standard reason, no body."""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP {code} {phrase}".rstrip()


class Canceller:
    """Cancels every call of the `Outbound` clients that share it (a job's calls).

    `cancel` marks it cancelled and shuts down the sockets those calls are using, so a read
    blocked on a silent upstream returns at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._event = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once `cancel` was called."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to *seconds*; return True early when cancelled."""
        return self._event.wait(max(0.0, seconds))

    def cancel(self) -> None:
        """Cancel the calls in flight and every later one."""
        self._event.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _add(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.add(sock)
        if self._event.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _discard(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sockets.discard(sock)


# The deadline of the call running on this thread; the network streams read it on every I/O.
_current = threading.local()


def _time_left(timeout: float | None) -> float:
    deadline: float | None = getattr(_current, "deadline", None)
    if deadline is None:
        return timeout if timeout is not None else DEFAULT_DEADLINE
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.TimeoutException("the call's total deadline passed")
    return left if timeout is None else min(left, timeout)


class _Stream(httpcore.NetworkStream):
    """A socket stream whose every read and write gets only the time left to the call."""

    def __init__(self, inner: httpcore.NetworkStream, canceller: Canceller) -> None:
        self._inner = inner
        self._canceller = canceller
        self._sock: socket.socket | None = inner.get_extra_info("socket")
        canceller._add(self._sock)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _time_left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _time_left(timeout))

    def close(self) -> None:
        self._canceller._discard(self._sock)
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _time_left(timeout))
        return _Stream(inner, self._canceller)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, canceller: Canceller) -> None:
        self._inner = inner
        self._canceller = canceller

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[Any] | None = None,
                    ) -> httpcore.NetworkStream:
        if self._canceller.cancelled:
            raise httpcore.ConnectError("cancelled")
        inner = self._inner.connect_tcp(host, port, _time_left(timeout), local_address,
                                        socket_options)
        return _Stream(inner, self._canceller)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[Any] | None = None,
                            ) -> httpcore.NetworkStream:  # pragma: no cover - not used
        inner = self._inner.connect_unix_socket(path, _time_left(timeout), socket_options)
        return _Stream(inner, self._canceller)

    def sleep(self, seconds: float) -> None:  # pragma: no cover - not used by HTTP/1.1
        self._canceller.wait(seconds)


def deadline_transport(canceller: Canceller) -> httpx.HTTPTransport:
    """httpx's transport whose sockets obey the call's deadline and *canceller*.

    httpx offers no way to pass a network backend, so the pool's is wrapped, as
    `kaizen_sdk._sender` does for the exporter (httpcore 1.x keeps it in
    ``_pool._network_backend``; ``tests/local/test_outbound_limits.py`` pins it). Without it
    a call is bounded only between the chunks of its answer.
    """
    transport = httpx.HTTPTransport()
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is not None:
        pool._network_backend = _Backend(backend, canceller)  # type: ignore[union-attr]
    return transport



class Reply:
    """An upstream answer read in full (at most the cap): status, headers and body bytes."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: httpx.Headers, content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content

    def __repr__(self) -> str:
        return f"Reply({self.status_code}, {len(self.content)} bytes)"

    def json(self) -> Any:
        """The body parsed as JSON; raises `ValueError` when it is not JSON."""
        import json

        return json.loads(self.content)


class Outbound:
    """An HTTP client for one upstream whose calls have a total deadline and a size cap.

    Example::

        out = Outbound(deadline=30.0, max_bytes=1 << 20)
        reply = out.request("POST", "http://127.0.0.1:8000/v1/chat/completions", json={})

    Parameters:
        headers: sent with every call (e.g. the ``Authorization`` header).
        deadline: default seconds one call may take in all.
        max_bytes: default cap on the answer's size.
        canceller: shared with the other clients of a job so one `Canceller.cancel` stops all.
        transport: a custom httpx transport (tests); its calls are bounded only between
            chunks of the answer, not inside a blocked read.
    """

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        deadline: float = DEFAULT_DEADLINE,
        max_bytes: int = MAX_ANSWER_BYTES,
        canceller: Canceller | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.canceller = canceller if canceller is not None else Canceller()
        self._http = httpx.Client(
            headers=dict(headers or {}), timeout=httpx.Timeout(None),
            transport=transport if transport is not None else deadline_transport(self.canceller),
        )

    def __repr__(self) -> str:
        return f"Outbound(deadline={self.deadline}, max_bytes={self.max_bytes})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline_at: float | None = None,
        max_bytes: int | None = None,
        **kwargs: Any,
    ) -> Reply:
        """Send one request and read its answer, within the deadline and the size cap.

        *deadline_at* is a `time.monotonic` instant (the default: now + `deadline`).
        Raises `DeadlineExceeded`, `AnswerTooLarge`, `OutboundCancelled`, or `OutboundError`
        for a transport failure; an HTTP error status is a `Reply` like any other.
        """
        cap = self.max_bytes if max_bytes is None else max_bytes
        end = time.monotonic() + self.deadline if deadline_at is None else deadline_at
        if self.canceller.cancelled:
            raise OutboundCancelled("cancelled: the local server is stopping")
        if end - time.monotonic() <= 0:
            raise DeadlineExceeded("no time left for the call")
        parsed = httpx.URL(url)
        if parsed.userinfo:
            # As httpx would (Basic auth from the user-info), but the URL it logs has none.
            kwargs.setdefault("auth", httpx.BasicAuth(parsed.username, parsed.password))
            url = str(parsed.copy_with(username=None, password=None))
        _current.deadline = end
        try:
            with self._stream(method, url, **kwargs) as resp:
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise AnswerTooLarge(f"the answer declares {int(declared)} bytes; the cap"
                                         f" is {cap}")
                parts: list[bytes] = []
                size = 0
                # Decoded as it arrives (the clients ask for no encoding): the cap counts
                # the decoded bytes.
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise AnswerTooLarge(f"the answer is over the cap of {cap} bytes")
                    if time.monotonic() > end:
                        raise httpx.ReadTimeout("the call's total deadline passed")
                    parts.append(chunk)
                body = b"".join(parts)
                return Reply(resp.status_code, resp.headers, body)
        except httpx.TimeoutException:
            if self.canceller.cancelled:
                raise OutboundCancelled("cancelled: the local server is stopping") from None
            raise DeadlineExceeded("the call did not finish within its deadline") from None
        except httpx.HTTPError as exc:
            if self.canceller.cancelled:
                raise OutboundCancelled("cancelled: the local server is stopping") from None
            raise OutboundError(f"unreachable ({type(exc).__name__})") from None
        finally:
            _current.deadline = None

    @contextlib.contextmanager
    def _stream(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        with self._http.stream(method, url, **kwargs) as resp:
            yield resp
