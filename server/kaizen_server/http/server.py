"""The local CT server's HTTP layer: an ASGI app on uvicorn, the key check, `LocalServer`.

`LocalServer` runs the whole CT API (see ``docs/local-server.md``) on uvicorn in a background
thread, backed by a SQLite `Store` and a `JobWorker`. uvicorn does the HTTP framing (chunked
bodies, keep-alive, pipelining); what each request means lives in `kaizen_server.api.routes`.
This module resolves the route and checks ``X-API-Key`` before a single body byte is read,
reads bodies under a size limit and a deadline as they arrive, and runs the (blocking) store
operations in a bounded thread pool so the event loop keeps serving other connections.

Keys: the server's own key is admin; scoped keys (`kaizen_server.domain.keys`) are looked up by
hash, and a key whose scope does not cover the route is answered 403 before the body is read.

Hostile clients are bounded here: a connection that has not sent a complete request head
within `HEADER_TIMEOUT` seconds (or sends more than `MAX_HEAD_BYTES` of it) is closed; an
idle keep-alive connection is closed after `IDLE_TIMEOUT`. Connections that have said nothing
cost nothing (`kaizen_server.http.connections`): past `MAX_CONNECTIONS` open connections (or
`MAX_CONNECTIONS_PER_CLIENT` from one address) the oldest *waiting* connection (no request
head yet, or idle) is closed; only requests being served count toward `MAX_REQUESTS` (more get
503), so a flood of head-less sockets does not refuse keyed requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from types import TracebackType
from typing import Any

try:
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # pragma: no cover - Windows
    _FIONREAD = None

try:
    import uvicorn
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
except ImportError as _exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "The local CT server needs its HTTP stack: pip install 'kaizen-sdk[server]'"
    ) from _exc

from kaizen_sdk import __version__
from kaizen_sdk.models import ErrorBody, encode
from kaizen_server.api.otlp import TaskMap
from kaizen_server.api.routes import (
    MAX_BODY_BYTES,
    Api,
    ApiError,
    ApiRequest,
    ApiResponse,
    authorize,
    error_response,
    key_of,
    parse_query,
    resolve,
)
from kaizen_server.domain.budget import BudgetDefaults
from kaizen_server.domain.keys import Authenticator
from kaizen_server.domain.retention import RetentionDefaults, RetentionLimits
from kaizen_server.http.addresses import is_loopback
from kaizen_server.http.connections import (
    MAX_CONNECTIONS_PER_CLIENT,
    MAX_OPEN_CONNECTIONS,
    MAX_REQUESTS,
    ConnectionBook,
)
from kaizen_server.jobs.online import OnlineEvaluator
from kaizen_server.jobs.retention import Pruner
from kaizen_server.jobs.worker import (
    DEFAULT_POLL_SECONDS,
    JobWorker,
    OptimizerSettings,
    seconds_setting,
)
from kaizen_server.llm.pricing import trace_pricer
from kaizen_server.settings import (
    KAIZEN_API_KEY,
    KAIZEN_JOB_LEASE_SECONDS,
    KAIZEN_JOB_POLL_SECONDS,
    KAIZEN_OTLP_TASK_MAP,
    KAIZEN_PRICES_FILE,
)
from kaizen_server.storage import describe_database, is_postgres_url, open_store
from kaizen_server.storage.spend import LEASE_SECONDS
from kaizen_server.storage.sqlite import Store
from kaizen_server.ui.app import MAX_FORM_BYTES, UiApp, UiRequest, is_ui_path

__all__ = [
    "BODY_TIMEOUT",
    "DEV_API_KEY",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CLIENT",
    "MAX_HEAD_BYTES",
    "MAX_REQUESTS",
    "WORKER_THREADS",
    "LocalServer",
    "is_loopback",
]

logger = logging.getLogger("kaizen_server")
access_logger = logging.getLogger("kaizen_server.access")

DEV_API_KEY = "kaizen-local-dev-key"
"""The API key used when none is given and ``KAIZEN_API_KEY`` is unset (development only)."""

HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a complete request head before it is closed."""

IDLE_TIMEOUT = 60
"""Seconds an idle keep-alive connection stays open."""

BODY_TIMEOUT = 30.0
"""Seconds a client may take to send a request body (else 408 and the connection closes)."""

MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers) accepted before the connection closes."""

MAX_CONNECTIONS = MAX_OPEN_CONNECTIONS
"""Connections kept open; past it the oldest waiting (head-less or idle) one is closed."""

WORKER_THREADS = 16
"""Threads that run reads (lists); writes run on one more thread. Each keeps a connection."""

# Reads of one row by key (tens of µs, never waiting on a writer in WAL mode) run on the event
# loop: the hop to a worker thread and back would cost more than the read. Lists and writes
# go to the pool.
_INLINE_OPERATIONS = frozenset({"health", "openapi", "get_prompt", "get_task", "get_job",
                                "get_trace"})
_STOP_TIMEOUT = 5.0
_START_TIMEOUT = 10.0
_JSON = (b"content-type", b"application/json")
_SERVER = (b"server", f"kaizen-local/{__version__}".encode())
_CLOSE = (b"connection", b"close")


class _CoalescingTransport:
    """Sends the writes of one event-loop step as one: an answer's head and body in one packet.

    uvicorn writes the head and the body separately; with ``TCP_NODELAY`` each write is a
    packet (and a wake-up of the client), without it Nagle holds the body ~40 ms.
    """

    __slots__ = ("_buffer", "_loop", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._buffer:
            self._loop.call_soon(self._flush)
        self._buffer.append(data)

    def _flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._buffer.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Protocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol with a request-head deadline and size cap, and JSON 400s.

    ``waiting_since`` is when the connection started waiting for a request head (``None``
    while a request is being served); `_sweep` closes connections that wait too long:
    `IDLE_TIMEOUT` after a response (``idle``), `HEADER_TIMEOUT` for a head not finished.
    """

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets this only when the listening socket was made with proto=TCP.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(_CoalescingTransport(transport, self.loop))
        self._head_bytes = 0
        self.waiting_since: float | None = self.loop.time()
        self.idle = False  # between keep-alive requests: `IDLE_TIMEOUT`, not `HEADER_TIMEOUT`
        self._fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        self._book().opened(self, str(peer[0]) if isinstance(peer, tuple) and peer else "-")

    def _book(self) -> ConnectionBook:
        book: ConnectionBook = self.server_state.kaizen_book
        return book

    def has_unread_data(self) -> bool:
        """True when the socket holds bytes not read yet (FIONREAD; False where unknown)."""
        fd = self._fd
        if fd < 0 or _FIONREAD is None:
            return False
        buf = bytearray(4)
        try:
            fcntl.ioctl(fd, _FIONREAD, buf)
        except OSError:
            return False
        return int.from_bytes(buf, sys.byteorder) > 0

    def close_waiting(self) -> None:
        """Close this connection, which is waiting for a request head (the book's choice)."""
        self.waiting_since = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._book().closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        super().data_received(data)
        if self.cycle is before and (before is None or before.response_complete):
            if self.idle:  # the next head began: it has `HEADER_TIMEOUT` from now
                self.idle = False
                self.waiting_since = self.loop.time()
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                self.send_400_response("The request head is too large.")
        else:
            self._head_bytes = 0
            self.waiting_since = None
            self.idle = False
            self._book().busy(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_bytes = 0
        self.waiting_since = self.loop.time()
        self.idle = True
        self._book().idle(self)

    def send_400_response(self, msg: str) -> None:
        """Answer a request uvicorn cannot parse with a JSON 400, then close."""
        body = encode(ErrorBody(title="Bad Request", detail=msg))
        head = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


class _App:
    """The ASGI application: route, key check, bounded body read, operation in a thread."""

    def __init__(
        self, api: Api, api_key: str, readers: concurrent.futures.Executor,
        writer: concurrent.futures.Executor, access_log: bool,
        book: ConnectionBook | None = None,
    ) -> None:
        self.book = book if book is not None else ConnectionBook()
        self.api = api
        self.auth = Authenticator(api_key, api.store.key_for_hash)
        self.readers = readers
        self.writer = writer
        self.access_log = access_log
        self.ui = UiApp(api, self.auth)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if not self.book.start_request():
            busy = ApiError(HTTPStatus.SERVICE_UNAVAILABLE,
                            f"The server is serving {MAX_REQUESTS} requests; retry shortly.",
                            close=True)
            await self._answer(scope, send, error_response(busy), close=True)
            return
        try:
            await self._serve(scope, receive, send)
        finally:
            self.book.end_request()

    async def _serve(self, scope: Any, receive: Any, send: Any) -> None:
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        has_body = "transfer-encoding" in headers or headers.get("content-length", "0") != "0"
        body_read = not has_body
        if is_ui_path(scope["path"]):  # the web UI (kaizen_server.ui): pages, not the API
            await self._serve_ui(scope, receive, send, headers, has_body)
            return
        try:
            # The raw path: a task name may hold an escaped "/" (resolve unquotes the params).
            raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
            route, params = resolve(method, raw_path.decode("latin-1"))
            principal = None
            if not route.public:
                principal = authorize(route, key_of(route, headers), self.auth)
            body = await self._read_body(receive, headers) if has_body else b""
            body_read = True
            query = parse_query(scope["query_string"].decode("latin-1"))
            request = ApiRequest(params, query, body, headers, principal)
        except ApiError as exc:
            # An answer given before the body was read leaves it on the wire: close.
            await self._answer(scope, send, error_response(exc), close=exc.close or not body_read)
            return
        except Exception as exc:  # the key lookup failed (the database): 500, logged
            await self._answer(scope, send, error_response(exc, method, scope["path"]),
                               close=True)
            return
        if route.operation in _INLINE_OPERATIONS:
            response = self.api.call(route, request)
        else:
            loop = asyncio.get_running_loop()
            pool = self.readers if route.method == "GET" else self.writer
            response = await loop.run_in_executor(pool, self.api.call, route, request)
        await self._answer(scope, send, response, close=response.status >= 500)

    async def _serve_ui(self, scope: Any, receive: Any, send: Any, headers: dict[str, str],
                        has_body: bool) -> None:
        declared = headers.get("content-length", "0")
        try:
            if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
                raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"A form of the web UI has at most {MAX_FORM_BYTES} bytes.",
                               close=True)
            body = await self._read_body(receive, headers) if has_body else b""
        except ApiError as exc:
            await self._answer(scope, send, error_response(exc), close=True)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
        request = UiRequest(scope["method"], raw_path.decode("latin-1"),
                            scope["query_string"].decode("latin-1"), headers, body)
        pool = self.readers if request.method == "GET" else self.writer
        answer = await asyncio.get_running_loop().run_in_executor(pool, self.ui.handle, request)
        raw_headers = [_SERVER, (b"content-length", str(len(answer.body)).encode())]
        raw_headers += [(k.encode(), v.encode("latin-1")) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": raw_headers})
        await send({"type": "http.response.body", "body": answer.body})
        if self.access_log:
            self._log(scope, answer.status, len(answer.body))

    async def _read_body(self, receive: Any, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The request body has {int(declared)} bytes; the limit is {MAX_BODY_BYTES}.",
                close=True,
            )
        parts: list[bytes] = []
        size = 0
        deadline = time.monotonic() + BODY_TIMEOUT
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise ApiError(
                    HTTPStatus.REQUEST_TIMEOUT,
                    f"The request body did not arrive within {BODY_TIMEOUT:g} s.",
                    close=True,
                ) from None
            if message["type"] == "http.disconnect":
                raise ApiError(HTTPStatus.BAD_REQUEST, "The client went away.", close=True)
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"The request body is over the limit of {MAX_BODY_BYTES} bytes.",
                    close=True,
                )
            parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _answer(self, scope: Any, send: Any, response: ApiResponse, *, close: bool) -> None:
        data = b"" if response.payload is None else encode(response.payload)
        raw_headers = [_SERVER, (b"content-length", str(len(data)).encode())]
        if response.payload is not None and "Content-Type" not in response.headers:
            raw_headers.append(_JSON)
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
        if close:
            raw_headers.append(_CLOSE)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": raw_headers})
        await send({"type": "http.response.body", "body": data})
        if self.access_log:
            self._log(scope, response.status, len(data))

    @staticmethod
    def _log(scope: Any, status: int, size: int) -> None:
        client = scope.get("client") or ("-", 0)
        path = (scope.get("raw_path") or b"").decode("latin-1") or scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        when = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        # Common Log Format, the usual one-line access log.
        access_logger.info(
            '%s - - [%s] "%s %s HTTP/%s" %d %d',
            client[0], when, scope["method"], path, scope.get("http_version", "1.1"), status, size,
        )


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    """Serve on *sock* until ``server.should_exit``, closing connections slow to send a head."""
    sweeper = asyncio.create_task(_sweep(server))
    try:
        await server.serve(sockets=[sock])
    finally:
        sweeper.cancel()


async def _sweep(server: uvicorn.Server) -> None:
    # One timer for every connection instead of one per request: the hot path only notes
    # the time it started waiting.
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(min(1.0, HEADER_TIMEOUT / 4))
        now = loop.time()
        for conn in list(server.server_state.connections):
            if not isinstance(conn, _Protocol):
                continue
            since = getattr(conn, "waiting_since", None)
            limit = IDLE_TIMEOUT if getattr(conn, "idle", False) else HEADER_TIMEOUT
            if since is not None and now - since > limit:
                conn.waiting_since = None
                conn.transport.close()


class LocalServer:
    """The whole CT API on SQLite, served over HTTP (uvicorn) from a background thread.

    Example::

        from kaizen_server import LocalServer

        with LocalServer() as server:          # free port, temporary database
            client = CTClient(base_url=server.base_url, api_key=server.api_key)

    Parameters:
        db_path: SQLite file (created with its folder when missing), or a
            ``postgresql://`` URL (needs ``kaizen-server[postgres]``; never shown with its
            password). ``None`` uses a fresh temporary SQLite database that `stop` deletes.
        host: interface to bind; loopback by default. A non-loopback address needs a key
            other than `DEV_API_KEY` (`start` raises `PermissionError` otherwise).
        port: TCP port; ``0`` picks a free one (see `base_url` after `start`).
        api_key: the server's own (bootstrap) key, admin: it may do everything, including
            creating scoped keys (``POST /api/v1/keys``). ``None`` reads ``KAIZEN_API_KEY``,
            else uses `DEV_API_KEY`.
        job_step_delay: seconds each optimization job pauses after a progress step (default 0;
            useful only to watch progress in a demo).
        optimizer: ``"local"`` (deterministic, no LLM) or ``"dspy"``; ``None`` reads
            ``KAIZEN_OPTIMIZER``, else ``"local"``. See ``docs/optimization.md``.
        llm_base_url, llm_api_key: the OpenAI-compatible endpoint of the ``dspy`` optimizer
            (``None`` reads ``KAIZEN_LLM_BASE_URL`` / ``KAIZEN_LLM_API_KEY``).
        llm_prices: ``{model: (usd_per_1m_input, usd_per_1m_output)}`` price overrides.
        access_log: log one Common Log Format line per request to the
            ``kaizen_server.access`` logger (default off).
        job_timeout: seconds one optimization job may run before it ends FAILURE; ``None``
            reads ``KAIZEN_JOB_TIMEOUT``, else 1800.
        budgets: the server-wide spend limits of optimization jobs (``None`` reads the
            ``KAIZEN_*_BUDGET_USD`` / ``KAIZEN_MAX_JOBS_PER_DAY`` / ``KAIZEN_COOLDOWN_MINUTES``
            variables, else the defaults); see `kaizen_server.domain.budget`.
        otlp_task_map: the task of OTLP LLM spans without ``ct.task.name``, by span, agent or
            service name (`kaizen_server.api.otlp.TaskMap`; a spec string is parsed).
            ``None`` reads ``KAIZEN_OTLP_TASK_MAP``.
        prices_file: JSON file of custom prices (``kaizen serve --prices``), used for trace
            costs and the optimizer's estimate and budget; ``None`` reads
            ``KAIZEN_PRICES_FILE``. See `kaizen_server.llm.pricing`.
        migrate: run the database's pending schema steps at start (default); ``False``
            refuses to start on an outdated database (`SchemaOutdated` from `start`).
        job_lease_seconds: how long a job's lease lasts without renewal (another server
            process on the database takes a job over after it); ``None`` reads
            ``KAIZEN_JOB_LEASE_SECONDS``, else 60.
        job_poll_seconds: how often an idle job worker looks for a job in the database;
            ``None`` reads ``KAIZEN_JOB_POLL_SECONDS``, else 5.
        listen_socket: an already bound, listening socket to serve on instead of binding
            *host* and *port* (``kaizen serve --workers N`` hands one to each process).
        retention: the server-wide retention limits of traces and feedback, for tasks that
            set none (``None`` reads the ``KAIZEN_*_RETENTION_*`` variables, else keeps
            everything); see `kaizen_server.domain.retention`.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        job_step_delay: float = 0.0,
        optimizer: str | None = None,
        llm_base_url: str | None = None,
        llm_api_key: str | None = None,
        llm_prices: Mapping[str, tuple[float, float]] | None = None,
        access_log: bool = False,
        job_timeout: float | None = None,
        budgets: BudgetDefaults | None = None,
        otlp_task_map: TaskMap | str | None = None,
        prices_file: str | None = None,
        migrate: bool = True,
        job_lease_seconds: float | None = None,
        job_poll_seconds: float | None = None,
        listen_socket: socket.socket | None = None,
        retention: RetentionLimits | None = None,
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError("api_key must not be empty; pass None to use the default.")
        env_key = os.environ.get(KAIZEN_API_KEY) or None
        self._api_key = api_key or env_key or DEV_API_KEY
        self.uses_dev_key = self._api_key == DEV_API_KEY
        """True when the key is `DEV_API_KEY` (none given and ``KAIZEN_API_KEY`` unset)."""
        self.db_path = None if db_path is None else os.fspath(db_path)
        self.host = host
        self.port = port
        self.access_log = access_log
        self._job_step_delay = job_step_delay
        environ = {**os.environ, KAIZEN_PRICES_FILE: prices_file} if prices_file else None
        self._optimizer = OptimizerSettings.resolve(
            optimizer, llm_base_url=llm_base_url, llm_api_key=llm_api_key, llm_prices=llm_prices,
            job_timeout=job_timeout, environ=environ,
        )
        self._budgets = budgets if budgets is not None else BudgetDefaults.resolve()
        self._retention = retention if retention is not None else RetentionDefaults.resolve()
        if not isinstance(otlp_task_map, TaskMap):
            otlp_task_map = TaskMap.parse(otlp_task_map or os.environ.get(KAIZEN_OTLP_TASK_MAP))
        self._task_map = otlp_task_map
        self._migrate = migrate
        self._lease_seconds = seconds_setting(job_lease_seconds, KAIZEN_JOB_LEASE_SECONDS,
                                              LEASE_SECONDS)
        self._poll_seconds = seconds_setting(job_poll_seconds, KAIZEN_JOB_POLL_SECONDS,
                                             DEFAULT_POLL_SECONDS)
        self._listen_socket = listen_socket
        self._temp_dir: str | None = None
        self._store: Store | None = None
        self._worker: JobWorker | None = None
        self._pruner: Pruner | None = None
        self._evaluator: OnlineEvaluator | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._pools: list[concurrent.futures.ThreadPoolExecutor] = []
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._bound: tuple[str, int] | None = None

    def __repr__(self) -> str:
        state = self._base_url or "not started"
        return f"LocalServer({state}, db_path={self._shown_db!r})"

    @property
    def _shown_db(self) -> str | None:
        return None if self.db_path is None else describe_database(self.db_path)

    @property
    def optimizer(self) -> str:
        """The optimizer jobs use: ``local`` or ``dspy``."""
        return self._optimizer.optimizer

    @property
    def api_key(self) -> str:
        """The key clients must send as ``X-API-Key``."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (no path) to reach the running server from this machine."""
        if self._base_url is None:
            raise RuntimeError("The LocalServer is not running: call start() first.")
        return self._base_url

    @property
    def bound_address(self) -> tuple[str, int]:
        """The ``(address, port)`` the listening socket is bound to (e.g. ``0.0.0.0``)."""
        if self._bound is None:
            raise RuntimeError("The LocalServer is not running: call start() first.")
        return self._bound

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._uvicorn is not None

    def start(self) -> LocalServer:
        """Bind the port, open the database and start serving in a background thread.

        Raises `PermissionError` for a non-loopback address with the development key,
        `OSError` when the address cannot be bound, and `SchemaError` (`SchemaOutdated` when
        told not to migrate) when the database's schema is not this server's.
        """
        if self._uvicorn is not None:
            raise RuntimeError("The LocalServer is already running.")
        sock = self._bind()
        try:
            self._open(sock)
        except BaseException:
            sock.close()
            self._cleanup()
            raise
        return self

    def _bind(self) -> socket.socket:
        if self._listen_socket is not None:
            sock = self._listen_socket
        else:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family, backlog=2048)
        address = sock.getsockname()
        if not is_loopback(address[0]) and self.uses_dev_key:
            sock.close()
            raise PermissionError(
                f"Refusing to listen on {address[0]}, which other machines can reach, with the "
                f"public development key: set {KAIZEN_API_KEY} or pass --api-key."
            )
        self._bound = (str(address[0]), int(address[1]))
        return sock

    def _open(self, sock: socket.socket) -> None:
        if self.db_path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="kaizen-local-")
            path = os.path.join(self._temp_dir, "local.db")
        elif is_postgres_url(self.db_path):
            path = self.db_path
        else:
            path = self.db_path
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._store = store = open_store(path, migrate=self._migrate)
        store.budget_defaults = self._budgets
        store.retention_defaults = self._retention
        store.pricer = trace_pricer(self._optimizer.prices)
        store.lease_seconds = self._lease_seconds
        self._worker = JobWorker(store, step_delay=self._job_step_delay, settings=self._optimizer,
                                 lease_seconds=self._lease_seconds,
                                 poll_seconds=self._poll_seconds)
        store.prices = self._worker.settings.prices
        readers = concurrent.futures.ThreadPoolExecutor(
            WORKER_THREADS, thread_name_prefix="kaizen-local-api"
        )
        # Every write on one thread: writes take turns anyway, and SQLite drops a connection's
        # page cache whenever another connection wrote, so rotating writers start cold.
        writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kaizen-local-write")
        self._pools = [readers, writer]
        book = ConnectionBook(max_connections=MAX_CONNECTIONS,
                              max_per_client=MAX_CONNECTIONS_PER_CLIENT, max_requests=MAX_REQUESTS)
        api = Api(store, self._worker, task_map=self._task_map)
        app = _App(api, self._api_key, readers, writer, self.access_log, book)
        config = uvicorn.Config(
            app, http=_Protocol, lifespan="off", log_config=None, access_log=False,
            server_header=False, date_header=False, proxy_headers=False,
            timeout_keep_alive=IDLE_TIMEOUT,
            # The ConnectionBook caps connections and requests: uvicorn's cap counts the
            # connections that have sent nothing.
            limit_concurrency=None, timeout_graceful_shutdown=int(_STOP_TIMEOUT),
            backlog=2048,
        )
        self._uvicorn = server = uvicorn.Server(config)
        server.server_state.kaizen_book = book  # type: ignore[attr-defined]
        host, port = self._bound or ("127.0.0.1", 0)
        shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self._base_url = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
        self._worker.start()
        self._pruner = Pruner(store)
        self._pruner.start()
        store.judge_endpoint = self._optimizer.llm_base_url is not None
        self._evaluator = OnlineEvaluator(
            store, llm_base_url=self._optimizer.llm_base_url,
            llm_api_key=self._optimizer.llm_api_key, prices=self._optimizer.prices,
            scrubber=self._optimizer.scrubber(), on_jobs=self._worker.submit)
        self._evaluator.start()
        self._thread = threading.Thread(
            target=asyncio.run, args=(_serve(server, sock),), name="kaizen-local-server",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The local CT server did not start; see the log.")
            time.sleep(0.005)
        logger.info("local CT server listening on %s:%d (database %s)", host, port,
                    describe_database(path))

    def stop(self) -> None:
        """Stop serving, finish the worker, close the database; safe to call twice."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT * 2)
        self._cleanup()

    def _cleanup(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []
        if self._worker is not None:
            self._worker.stop(_STOP_TIMEOUT)
        if self._pruner is not None:
            self._pruner.stop(_STOP_TIMEOUT)
            self._pruner = None
        if self._evaluator is not None:
            self._evaluator.stop(_STOP_TIMEOUT)
            self._evaluator = None
        if self._store is not None:
            self._store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._uvicorn = self._thread = self._worker = self._store = None
        self._temp_dir = self._base_url = None
        self._bound = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
