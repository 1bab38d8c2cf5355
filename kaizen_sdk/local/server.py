"""The local CT server's HTTP layer: framing, the key check, and `LocalServer`'s lifecycle.

`LocalServer` runs the whole CT API (see ``docs/local-server.md``) on a
`http.server.ThreadingHTTPServer` in background threads, backed by a SQLite `Store` and a
`JobWorker`. What each request means lives in `kaizen_sdk.local.api`; this module only reads
requests off the wire, checks ``X-API-Key`` for routes that need it, and writes the answers.
"""

from __future__ import annotations

import contextlib
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from kaizen_sdk._config import KAIZEN_API_KEY
from kaizen_sdk._version import __version__
from kaizen_sdk.local.api import (
    MAX_BODY_BYTES,
    Api,
    ApiError,
    ApiRequest,
    ApiResponse,
    check_key,
    error_response,
    parse_query,
    resolve,
)
from kaizen_sdk.local.jobs import JobWorker, OptimizerSettings
from kaizen_sdk.local.store import Store
from kaizen_sdk.models import ErrorBody, encode

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer"]

logger = logging.getLogger("kaizen_sdk.local")

DEV_API_KEY = "kaizen-local-dev-key"
"""The API key used when none is given and ``KAIZEN_API_KEY`` is unset (development only)."""

_DRAIN_LIMIT = 4 * MAX_BODY_BYTES
_IDLE_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0


class _Handler(BaseHTTPRequestHandler):
    """Parses one HTTP/1.1 request at a time on a keep-alive connection."""

    protocol_version = "HTTP/1.1"
    server_version = f"kaizen-local/{__version__}"
    timeout = _IDLE_TIMEOUT
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def __getattr__(self, name: str) -> Any:
        """Route every other method (HEAD, OPTIONS, TRACE, ...) too, so it gets 404 or 405."""
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol-level errors (bad request line, oversized headers) as JSON."""
        self.close_connection = True
        status = HTTPStatus(code)
        self._send(code, ErrorBody(title=status.phrase, detail=message or status.description))

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else encode(payload)
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {raw!r}.",
                             close=True) from None
        if length > MAX_BODY_BYTES:
            close = length > _DRAIN_LIMIT
            if not close:
                self._drain(length)
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The request body has {length} bytes; the limit is {MAX_BODY_BYTES}.",
                close=close,
            )
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        size_total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ApiError(HTTPStatus.BAD_REQUEST, "Malformed chunked body.",
                                 close=True) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            size_total += size
            if size_total > MAX_BODY_BYTES:
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"The request body is over the limit of {MAX_BODY_BYTES} bytes.", close=True,
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        body: bytes | None = None
        try:
            route, params = resolve(self.command, url.path)
            if not route.public:
                check_key(self.headers.get("X-API-Key"), self.server.api_key)
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = ApiRequest(params, parse_query(url.query), body, headers)
        except ApiError as exc:
            # An answer given before the body was read leaves it on the wire: close.
            if exc.close or (body is None and self._has_body()):
                self.close_connection = True
            self._answer(error_response(exc))
            return
        self._answer(self.server.api.call(route, request))

    def _has_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return length != "0" or "Transfer-Encoding" in self.headers

    def _answer(self, response: ApiResponse) -> None:
        if response.status >= 500:
            self.close_connection = True
        self._send(response.status, response.payload, dict(response.headers))


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on shutdown."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: Api, api_key: str) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.api = api
        self.api_key = api_key
        self._open: dict[threading.Thread, socket.socket] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address),
            name="kaizen-local-http", daemon=True,
        )
        with self._open_lock:
            self._open[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.api.store.release_thread()
            with self._open_lock:
                self._open.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log instead of printing to stderr; a client that went away is not an error."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            logger.debug("local CT server: connection from %s ended: %r", client_address, exc)
        else:
            logger.exception("local CT server: error on a connection from %s", client_address)

    def close_connections(self, timeout: float) -> None:
        """Shut down every open connection and wait (bounded) for their threads."""
        with self._open_lock:
            open_now = list(self._open.items())
        for _thread, sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread, _sock in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))


class LocalServer:
    """The whole CT API on SQLite, served over HTTP from background threads.

    Example::

        from kaizen_sdk.local import LocalServer

        with LocalServer() as server:          # free port, temporary database
            client = CTClient(base_url=server.base_url, api_key=server.api_key)

    Parameters:
        db_path: SQLite file (created with its folder when missing). ``None`` uses a fresh
            temporary database that `stop` deletes.
        host: interface to bind; loopback by default.
        port: TCP port; ``0`` picks a free one (see `base_url` after `start`).
        api_key: the key clients must send as ``X-API-Key``. ``None`` reads
            ``KAIZEN_API_KEY``, else uses `DEV_API_KEY`.
        job_step_delay: seconds each optimization job pauses after a progress step (default 0;
            useful only to watch progress in a demo).
        optimizer: ``"local"`` (deterministic, no LLM) or ``"dspy"``; ``None`` reads
            ``KAIZEN_OPTIMIZER``, else ``"local"``. See ``docs/optimization.md``.
        llm_base_url, llm_api_key: the OpenAI-compatible endpoint of the ``dspy`` optimizer
            (``None`` reads ``KAIZEN_LLM_BASE_URL`` / ``KAIZEN_LLM_API_KEY``).
        llm_prices: ``{model: (usd_per_1m_input, usd_per_1m_output)}`` price overrides.
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
    ) -> None:
        if api_key is not None and not api_key:
            raise ValueError("api_key must not be empty; pass None to use the default.")
        env_key = os.environ.get(KAIZEN_API_KEY) or None
        self._api_key = api_key or env_key or DEV_API_KEY
        self.uses_dev_key = api_key is None and env_key is None
        """True when no key was given and ``KAIZEN_API_KEY`` is unset (`DEV_API_KEY` is used)."""
        self.db_path = None if db_path is None else os.fspath(db_path)
        self.host = host
        self.port = port
        self._job_step_delay = job_step_delay
        self._optimizer = OptimizerSettings.resolve(
            optimizer, llm_base_url=llm_base_url, llm_api_key=llm_api_key, llm_prices=llm_prices
        )
        self._temp_dir: str | None = None
        self._store: Store | None = None
        self._worker: JobWorker | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        state = self._base_url or "not started"
        return f"LocalServer({state}, db_path={self.db_path!r})"

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
        """``http://HOST:PORT`` (no path) of the running server."""
        if self._base_url is None:
            raise RuntimeError("The LocalServer is not running: call start() first.")
        return self._base_url

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._httpd is not None

    def start(self) -> LocalServer:
        """Open the database, bind the port and start serving in background threads."""
        if self._httpd is not None:
            raise RuntimeError("The LocalServer is already running.")
        if self.db_path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="kaizen-local-")
            path = os.path.join(self._temp_dir, "local.db")
        else:
            path = self.db_path
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
        try:
            self._store = Store(path)
            self._worker = JobWorker(
                self._store, step_delay=self._job_step_delay, settings=self._optimizer
            )
            self._httpd = _HTTPServer(
                (self.host, self.port), Api(self._store, self._worker), self._api_key
            )
        except BaseException:
            self._cleanup()
            raise
        port = int(self._httpd.server_address[1])
        shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in shown:
            shown = f"[{shown}]"
        self._base_url = f"http://{shown}:{port}"
        self._worker.start()
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name="kaizen-local-server", daemon=True,
        )
        self._thread.start()
        logger.info("local CT server listening on %s (database %s)", self._base_url, path)
        return self

    def stop(self) -> None:
        """Stop serving, finish the worker, close the database; safe to call twice."""
        httpd = self._httpd
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections(_STOP_TIMEOUT)
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._worker is not None:
            self._worker.stop(_STOP_TIMEOUT)
        if self._store is not None:
            self._store.close()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._httpd = self._thread = self._worker = self._store = None
        self._temp_dir = self._base_url = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
