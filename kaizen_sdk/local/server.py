"""The local CT server's HTTP layer: routing, auth, request decoding and error answers.

`LocalServer` runs the whole CT API (see ``docs/local-server.md``) on a
`http.server.ThreadingHTTPServer` in background threads, backed by a SQLite `Store` and a
`JobWorker`. Request bodies are decoded with typed msgspec decoders of the request models in
`kaizen_sdk.models`; answers are those models encoded as JSON. Errors are JSON
``{"title", "detail"}``: non-JSON body 400, missing or wrong ``X-API-Key`` 401, unknown object
or route 404, wrong method 405, duplicate task name 409, body over `MAX_BODY_BYTES` 413, a
missing or wrongly typed field 422 (``detail`` names the field), anything unexpected 500 (and
a log line). Health and the OpenAPI document need no key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from kaizen_sdk._config import KAIZEN_API_KEY
from kaizen_sdk._version import __version__
from kaizen_sdk.local.jobs import JobWorker
from kaizen_sdk.local.optimizer import split_sizes
from kaizen_sdk.local.store import Conflict, NotFound, Store
from kaizen_sdk.models import (
    ActivateRequest,
    CostEstimate,
    ErrorBody,
    FeedbackRequest,
    FeedbackResult,
    Health,
    IngestError,
    IngestRequest,
    IngestResult,
    Job,
    OptimizeResult,
    Prompt,
    ScoreRequest,
    Task,
    TaskCreateRequest,
    TraceRequest,
    TraceResult,
    decoder,
    encode,
)

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer", "openapi_document"]

logger = logging.getLogger("kaizen_sdk.local")

DEV_API_KEY = "kaizen-local-dev-key"
"""The API key used when none is given and ``KAIZEN_API_KEY`` is unset (development only)."""

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted; a larger one is answered with 413."""

_DRAIN_LIMIT = 4 * MAX_BODY_BYTES
_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000
_IDLE_TIMEOUT = 60.0
_STOP_TIMEOUT = 5.0


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, detail: str, *, close: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.close = close


class _RawIngest(msgspec.Struct, kw_only=True):
    """The ingest body before each item is validated on its own (other keys are ignored)."""

    traces: list[Any] = []
    feedback: list[Any] = []


_INT64 = range(-(2**63), 2**63)


def _check_int64(obj: msgspec.Struct, prefix: str = "$") -> None:
    """Reject integer fields that SQLite cannot store, naming the field like msgspec does."""
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            raise msgspec.ValidationError(f"Expected `int` within 64 bits - at `{prefix}.{name}`")


def _decode(body: bytes, into: Any) -> Any:
    if not body.strip():
        raise _HttpError(HTTPStatus.BAD_REQUEST, "The request body is empty: send a JSON object.")
    try:
        result = decoder(into).decode(body)
        if isinstance(result, msgspec.Struct):
            _check_int64(result)
        return result
    except msgspec.ValidationError as exc:
        raise _HttpError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except msgspec.DecodeError as exc:
        detail = f"The request body is not valid JSON: {exc}"
        raise _HttpError(HTTPStatus.BAD_REQUEST, detail) from None


_S = TypeVar("_S", bound=msgspec.Struct)


def _convert_items(
    items: list[Any], into: type[_S], kind: str, errors: list[IngestError]
) -> list[_S]:
    """Validate each raw ingest item on its own; report bad ones in *errors*."""
    field = "traces" if kind == "trace" else kind
    good: list[_S] = []
    for index, item in enumerate(items):
        try:
            converted = msgspec.convert(item, into)
            _check_int64(converted)
            good.append(converted)
        except msgspec.ValidationError as exc:
            item_id = item.get("id") if isinstance(item, dict) else None
            errors.append(IngestError(
                kind=kind, id=item_id if isinstance(item_id, str) else None,
                detail=f"{field}[{index}]: {exc}",
            ))
    return good


_Query = dict[str, str]
_Params = dict[str, str]
_Result = tuple[int, Any]


def _limit(query: _Query) -> int:
    raw = query.get("limit")
    if raw is None:
        return _DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise _HttpError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"Query parameter `limit` must be an integer from 1 to {_MAX_LIMIT}, got {raw!r}.",
        )
    return value


class _Api:
    """The CT API operations: each takes path params, query and body, returns status + body."""

    def __init__(self, store: Store, worker: JobWorker) -> None:
        self.store = store
        self.worker = worker

    def _submit(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.worker.submit(job_id)

    def health(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, Health(status="ok", version=__version__)

    def openapi(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, openapi_document()

    def create_task(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 201, self.store.create_task(_decode(body, TaskCreateRequest))

    def list_tasks(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.list_tasks()

    def get_task(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.get_task(p["task_id"])

    def add_feedback(self, p: _Params, q: _Query, body: bytes) -> _Result:
        result, jobs = self.store.add_feedback(_decode(body, FeedbackRequest))
        self._submit(jobs)
        return 201, result

    def list_feedback(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.list_feedback(q.get("task_id"), _limit(q))

    def get_prompt(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.active_prompt(p["task_id"])

    def list_versions(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.list_versions(p["task_id"])

    def activate(self, p: _Params, q: _Query, body: bytes) -> _Result:
        req: ActivateRequest = _decode(body, ActivateRequest)
        return 200, self.store.activate(p["task_id"], req.version_id)

    def optimize(self, p: _Params, q: _Query, body: bytes) -> _Result:
        job, created = self.store.start_job(p["task_id"], "manual")
        if created:
            self._submit([str(job.id)])
        train, val = split_sizes(len(self.store.scored_examples(str(job.task_id))))
        estimate = CostEstimate(
            estimated_cost_usd=0.0, estimated_llm_calls=0, train_size=train, val_size=val
        )
        return 202, OptimizeResult(job=job, cost_estimate=estimate)

    def get_job(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.get_job(p["job_id"])

    def list_jobs(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.list_jobs(q.get("task_id"), _limit(q))

    def add_trace(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 201, self.store.add_trace(_decode(body, TraceRequest))

    def get_trace(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.get_trace(p["trace_id"])

    def list_traces(self, p: _Params, q: _Query, body: bytes) -> _Result:
        return 200, self.store.list_traces(q.get("task_id"), _limit(q))

    def score_trace(self, p: _Params, q: _Query, body: bytes) -> _Result:
        req: ScoreRequest = _decode(body, ScoreRequest)
        return 200, self.store.score_trace(p["trace_id"], req.score, req.scored_by)

    def ingest(self, p: _Params, q: _Query, body: bytes) -> _Result:
        raw: _RawIngest = _decode(body, _RawIngest)
        errors: list[IngestError] = []
        traces: list[TraceRequest] = _convert_items(raw.traces, TraceRequest, "trace", errors)
        feedback: list[FeedbackRequest] = _convert_items(
            raw.feedback, FeedbackRequest, "feedback", errors
        )
        accepted, store_errors, jobs = self.store.ingest(traces, feedback)
        self._submit(jobs)
        errors += [IngestError(kind=k, id=i, detail=d) for k, i, d in store_errors]
        return 207, IngestResult(accepted=accepted, errors=errors)


@dataclasses.dataclass(frozen=True)
class _Route:
    method: str
    template: str
    operation: str
    summary: str
    status: int
    response: Any
    request: Any = None
    query: tuple[str, ...] = ()
    public: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(
            "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template)) + "$"
        )


_ROUTES: tuple[_Route, ...] = (
    _Route("GET", "/api/v1/health", "health", "Server health", 200, Health, public=True),
    _Route("GET", "/api/v1/openapi.json", "openapi", "This OpenAPI document", 200,
           dict[str, Any], public=True),
    _Route("POST", "/api/v1/tasks", "create_task", "Create a task", 201, Task,
           TaskCreateRequest),
    _Route("GET", "/api/v1/tasks", "list_tasks", "List tasks", 200, list[Task]),
    _Route("GET", "/api/v1/tasks/{task_id}", "get_task", "Get a task by UUID or name", 200,
           Task),
    _Route("POST", "/api/v1/feedback", "add_feedback", "Send feedback (idempotent by id)", 201,
           FeedbackResult, FeedbackRequest),
    _Route("GET", "/api/v1/feedback", "list_feedback", "List feedback, newest first", 200,
           list[FeedbackResult], query=("task_id", "limit")),
    _Route("GET", "/api/v1/prompts/{task_id}", "get_prompt", "Get the active prompt version",
           200, Prompt),
    _Route("GET", "/api/v1/prompts/{task_id}/versions", "list_versions",
           "List prompt versions, newest first", 200, list[Prompt]),
    _Route("POST", "/api/v1/prompts/{task_id}/activate", "activate",
           "Activate a prompt version", 200, Prompt, ActivateRequest),
    _Route("POST", "/api/v1/optimize/{task_id}", "optimize", "Start an optimization job", 202,
           OptimizeResult),
    _Route("GET", "/api/v1/jobs/{job_id}", "get_job", "Get a job", 200, Job),
    _Route("GET", "/api/v1/jobs", "list_jobs", "List jobs, newest first", 200, list[Job],
           query=("task_id", "limit")),
    _Route("POST", "/api/v1/traces", "add_trace", "Send a trace (idempotent by id)", 201,
           TraceResult, TraceRequest),
    _Route("GET", "/api/v1/traces/{trace_id}", "get_trace", "Get a trace", 200, TraceResult),
    _Route("GET", "/api/v1/traces", "list_traces", "List traces, newest first", 200,
           list[TraceResult], query=("task_id", "limit")),
    _Route("POST", "/api/v1/traces/{trace_id}/score", "score_trace", "Score a trace", 200,
           TraceResult, ScoreRequest),
    _Route("POST", "/api/v1/ingest", "ingest", "Send traces and feedback in one batch", 207,
           IngestResult, IngestRequest),
)

_COMPILED = tuple((route, route.pattern) for route in _ROUTES)

_ERROR_STATUSES = {
    "400": "Body is not JSON",
    "401": "Missing or wrong X-API-Key",
    "404": "Unknown object or route",
    "409": "Conflict (duplicate task name)",
    "413": "Body too large",
    "422": "A field is missing, has the wrong type or is out of range",
}

_openapi_cache: dict[str, Any] = {}
_openapi_lock = threading.Lock()


def openapi_document() -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every route, built from the msgspec models."""
    with _openapi_lock:
        if not _openapi_cache:
            _openapi_cache.update(_build_openapi())
        return _openapi_cache


def _build_openapi() -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for route in _ROUTES:
        types.append(route.response)
        if route.request is not None:
            types.append(route.request)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip((id(t) for t in types), schemas, strict=True))
    error_schema = schema_of[id(ErrorBody)]
    paths: dict[str, dict[str, Any]] = {}
    for route in _ROUTES:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"},
             "description": "UUID or unique name" if name == "task_id" else "UUID"}
            for name in re.findall(r"\{(\w+)\}", route.template)
        ]
        parameters += [
            {"name": name, "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_LIMIT}
             if name == "limit" else {"type": "string"}}
            for name in route.query
        ]
        responses: dict[str, Any] = {
            str(route.status): {
                "description": route.summary,
                "content": {"application/json": {"schema": schema_of[id(route.response)]}},
            }
        }
        for code, text in _ERROR_STATUSES.items():
            if route.public and code != "404":
                continue
            responses[code] = {
                "description": text, "content": {"application/json": {"schema": error_schema}}
            }
        operation: dict[str, Any] = {
            "operationId": route.operation,
            "summary": route.summary,
            "parameters": parameters,
            "responses": responses,
        }
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(route.request)]}},
            }
        if route.public:
            operation["security"] = []
        paths.setdefault(route.template, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kaizen CT API (local server)", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"ApiKey": []}],
    }


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
        data = encode(payload)
        self.send_response(status)
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
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"Invalid Content-Length {raw!r}.",
                             close=True) from None
        if length > MAX_BODY_BYTES:
            close = length > _DRAIN_LIMIT
            if not close:
                self._drain(length)
            raise _HttpError(
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
                raise _HttpError(HTTPStatus.BAD_REQUEST, "Malformed chunked body.",
                                 close=True) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            size_total += size
            if size_total > MAX_BODY_BYTES:
                raise _HttpError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"The request body is over the limit of {MAX_BODY_BYTES} bytes.", close=True,
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _route(self, path: str) -> tuple[_Route, dict[str, str]]:
        allowed: list[str] = []
        for route, pattern in _COMPILED:
            match = pattern.match(path)
            if match is None:
                continue
            if route.method == self.command:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route.method)
        if allowed:
            raise _HttpError(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} is not allowed on {path}; use {', '.join(sorted(allowed))}.",
            )
        raise _HttpError(HTTPStatus.NOT_FOUND, f"No route for {self.command} {path}.")

    def _check_key(self) -> None:
        given = self.headers.get("X-API-Key")
        if given is None:
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is missing.")
        expected = self.server.api_key.encode("utf-8")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected):
            raise _HttpError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is not valid.")

    def _handle(self) -> None:
        extra: dict[str, str] = {}
        try:
            url = urlsplit(self.path)
            path = url.path.rstrip("/") or "/"
            body = self._read_body()
            try:
                route, params = self._route(path)
            except _HttpError as exc:
                if exc.status == HTTPStatus.METHOD_NOT_ALLOWED:
                    extra["Allow"] = exc.detail.rsplit("use ", 1)[1].rstrip(".")
                raise
            if not route.public:
                self._check_key()
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if not query.get("task_id", True):
                del query["task_id"]
            operation: Callable[[_Params, _Query, bytes], _Result] = getattr(
                self.server.api, route.operation
            )
            status, payload = operation(params, query, body)
        except _HttpError as exc:
            if exc.close:
                self.close_connection = True
            self._send(exc.status, ErrorBody(title=exc.status.phrase, detail=exc.detail), extra)
            return
        except NotFound as exc:
            self._send(404, ErrorBody(title="Not Found", detail=str(exc)))
            return
        except Conflict as exc:
            self._send(409, ErrorBody(title="Conflict", detail=str(exc)))
            return
        except Exception:
            logger.exception("local CT server: %s %s failed", self.command, self.path)
            self.close_connection = True
            detail = "The server failed to handle the request; see its log."
            self._send(500, ErrorBody(title="Internal Server Error", detail=detail))
            return
        self._send(status, payload)


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its keep-alive connections on shutdown."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: _Api, api_key: str) -> None:
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
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        *,
        job_step_delay: float = 0.0,
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
            self._worker = JobWorker(self._store, step_delay=self._job_step_delay)
            self._httpd = _HTTPServer(
                (self.host, self.port), _Api(self._store, self._worker), self._api_key
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
