"""The CT API core of the local server, independent of the HTTP framework underneath.

`Api` holds one method per operation: each takes an `ApiRequest` (path parameters, query,
body bytes, request headers) and returns an `ApiResponse` (status, a msgspec-encodable payload,
extra response headers). `ROUTES` lists every operation with its method, path template and
models; `resolve` matches a request line to a route, `call` runs it and turns store and
decoding failures into JSON error answers, and `openapi_document` describes `ROUTES`. The HTTP
layer (`kaizen_sdk.local.server`) only frames requests, checks the key and sends answers.

Errors are JSON ``{"title", "detail"}``: non-JSON body 400, missing or wrong ``X-API-Key`` 401,
unknown object or route 404, wrong method 405, duplicate task name 409, body over
`MAX_BODY_BYTES` 413, a missing or wrongly typed field 422 (``detail`` names the field),
anything unexpected 500 (and a log line). Health and the OpenAPI document need no key.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

import msgspec

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
    ScoreItem,
    ScoreRequest,
    Task,
    TaskCreateRequest,
    TraceRequest,
    TraceResult,
    decoder,
)

__all__ = [
    "MAX_BODY_BYTES",
    "ROUTES",
    "Api",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "Route",
    "check_key",
    "decode",
    "error_response",
    "openapi_document",
    "parse_query",
    "resolve",
]

logger = logging.getLogger("kaizen_sdk.local")

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted; a larger one is answered with 413."""

_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    """One request as the operations see it; *headers* has lower-case names."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ApiResponse:
    """One answer: status, a msgspec-encodable payload (``None`` for no body), extra headers."""

    status: int
    payload: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


class ApiError(Exception):
    """An answer other than success: *status*, a *detail* sentence, extra *headers*.

    *close* asks the HTTP layer to close the connection after answering.
    """

    def __init__(
        self,
        status: HTTPStatus,
        detail: str,
        *,
        close: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.close = close
        self.headers: Mapping[str, str] = headers or {}


class _RawIngest(msgspec.Struct, kw_only=True):
    """The ingest body before each item is validated on its own (other keys are ignored)."""

    traces: list[Any] = []
    feedback: list[Any] = []
    scores: list[Any] = []


_INT64 = range(-(2**63), 2**63)


def _check_int64(obj: msgspec.Struct, prefix: str = "$") -> None:
    """Reject integer fields that SQLite cannot store, naming the field like msgspec does."""
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            raise msgspec.ValidationError(f"Expected `int` within 64 bits - at `{prefix}.{name}`")


def decode(body: bytes, into: Any) -> Any:
    if not body.strip():
        raise ApiError(HTTPStatus.BAD_REQUEST, "The request body is empty: send a JSON object.")
    try:
        result = decoder(into).decode(body)
        if isinstance(result, msgspec.Struct):
            _check_int64(result)
        return result
    except msgspec.ValidationError as exc:
        raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except msgspec.DecodeError as exc:
        detail = f"The request body is not valid JSON: {exc}"
        raise ApiError(HTTPStatus.BAD_REQUEST, detail) from None


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
            errors.append(
                IngestError(
                    kind=kind,
                    id=item_id if isinstance(item_id, str) else None,
                    detail=f"{field}[{index}]: {exc}",
                )
            )
    return good


def _limit(query: Mapping[str, str]) -> int:
    raw = query.get("limit")
    if raw is None:
        return _DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= _MAX_LIMIT:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"Query parameter `limit` must be an integer from 1 to {_MAX_LIMIT}, got {raw!r}.",
        )
    return value


class Api:
    """The CT API operations: each takes an `ApiRequest` and returns an `ApiResponse`."""

    def __init__(self, store: Store, worker: JobWorker) -> None:
        self.store = store
        self.worker = worker

    def _submit(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.worker.submit(job_id)

    def health(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, Health(status="ok", version=__version__))

    def openapi(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, openapi_document())

    def create_task(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(201, self.store.create_task(decode(r.body, TaskCreateRequest)))

    def list_tasks(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_tasks())

    def get_task(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_task(r.params["task_id"]))

    def add_feedback(self, r: ApiRequest) -> ApiResponse:
        result, jobs = self.store.add_feedback(decode(r.body, FeedbackRequest))
        self._submit(jobs)
        return ApiResponse(201, result)

    def list_feedback(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_feedback(r.query.get("task_id"), _limit(r.query)))

    def get_prompt(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.active_prompt(r.params["task_id"]))

    def list_versions(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_versions(r.params["task_id"]))

    def activate(self, r: ApiRequest) -> ApiResponse:
        req: ActivateRequest = decode(r.body, ActivateRequest)
        return ApiResponse(200, self.store.activate(r.params["task_id"], req.version_id))

    def optimize(self, r: ApiRequest) -> ApiResponse:
        job, created = self.store.start_job(r.params["task_id"], "manual")
        if created:
            self._submit([str(job.id)])
        train, val = split_sizes(len(self.store.scored_examples(str(job.task_id))))
        estimate = CostEstimate(
            estimated_cost_usd=0.0, estimated_llm_calls=0, train_size=train, val_size=val
        )
        return ApiResponse(202, OptimizeResult(job=job, cost_estimate=estimate))

    def get_job(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_job(r.params["job_id"]))

    def list_jobs(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_jobs(r.query.get("task_id"), _limit(r.query)))

    def add_trace(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(201, self.store.add_trace(decode(r.body, TraceRequest)))

    def get_trace(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_trace(r.params["trace_id"]))

    def list_traces(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_traces(r.query.get("task_id"), _limit(r.query)))

    def score_trace(self, r: ApiRequest) -> ApiResponse:
        req: ScoreRequest = decode(r.body, ScoreRequest)
        result = self.store.score_trace(r.params["trace_id"], req.score, req.scored_by)
        return ApiResponse(200, result)

    def ingest(self, r: ApiRequest) -> ApiResponse:
        raw: _RawIngest = decode(r.body, _RawIngest)
        errors: list[IngestError] = []
        traces: list[TraceRequest] = _convert_items(raw.traces, TraceRequest, "trace", errors)
        feedback: list[FeedbackRequest] = _convert_items(
            raw.feedback, FeedbackRequest, "feedback", errors
        )
        scores: list[ScoreItem] = _convert_items(raw.scores, ScoreItem, "score", errors)
        accepted, store_errors, jobs = self.store.ingest(traces, feedback)
        self._submit(jobs)
        # after the traces: a score may name a trace of this very batch
        applied, score_errors = self.store.apply_scores(scores)
        errors += [IngestError(kind=k, id=i, detail=d) for k, i, d in store_errors]
        errors += [IngestError(kind="score", id=i, detail=d) for i, d in score_errors]
        return ApiResponse(
            207, IngestResult(accepted=accepted, errors=errors, scores=applied)
        )

    def call(self, route: Route, request: ApiRequest) -> ApiResponse:
        """Run *route*'s operation; every failure becomes its JSON error answer."""
        try:
            response: ApiResponse = getattr(self, route.operation)(request)
            return response
        except Exception as exc:
            return error_response(exc, route.method, route.template)


@dataclasses.dataclass(frozen=True)
class Route:
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


ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/v1/health", "health", "Server health", 200, Health, public=True),
    Route(
        "GET",
        "/api/v1/openapi.json",
        "openapi",
        "This OpenAPI document",
        200,
        dict[str, Any],
        public=True,
    ),
    Route("POST", "/api/v1/tasks", "create_task", "Create a task", 201, Task, TaskCreateRequest),
    Route("GET", "/api/v1/tasks", "list_tasks", "List tasks", 200, list[Task]),
    Route("GET", "/api/v1/tasks/{task_id}", "get_task", "Get a task by UUID or name", 200, Task),
    Route(
        "POST",
        "/api/v1/feedback",
        "add_feedback",
        "Send feedback (idempotent by id)",
        201,
        FeedbackResult,
        FeedbackRequest,
    ),
    Route(
        "GET",
        "/api/v1/feedback",
        "list_feedback",
        "List feedback, newest first",
        200,
        list[FeedbackResult],
        query=("task_id", "limit"),
    ),
    Route(
        "GET",
        "/api/v1/prompts/{task_id}",
        "get_prompt",
        "Get the active prompt version",
        200,
        Prompt,
    ),
    Route(
        "GET",
        "/api/v1/prompts/{task_id}/versions",
        "list_versions",
        "List prompt versions, newest first",
        200,
        list[Prompt],
    ),
    Route(
        "POST",
        "/api/v1/prompts/{task_id}/activate",
        "activate",
        "Activate a prompt version",
        200,
        Prompt,
        ActivateRequest,
    ),
    Route(
        "POST",
        "/api/v1/optimize/{task_id}",
        "optimize",
        "Start an optimization job",
        202,
        OptimizeResult,
    ),
    Route("GET", "/api/v1/jobs/{job_id}", "get_job", "Get a job", 200, Job),
    Route(
        "GET",
        "/api/v1/jobs",
        "list_jobs",
        "List jobs, newest first",
        200,
        list[Job],
        query=("task_id", "limit"),
    ),
    Route(
        "POST",
        "/api/v1/traces",
        "add_trace",
        "Send a trace (idempotent by id)",
        201,
        TraceResult,
        TraceRequest,
    ),
    Route("GET", "/api/v1/traces/{trace_id}", "get_trace", "Get a trace", 200, TraceResult),
    Route(
        "GET",
        "/api/v1/traces",
        "list_traces",
        "List traces, newest first",
        200,
        list[TraceResult],
        query=("task_id", "limit"),
    ),
    Route(
        "POST",
        "/api/v1/traces/{trace_id}/score",
        "score_trace",
        "Score a trace",
        200,
        TraceResult,
        ScoreRequest,
    ),
    Route(
        "POST",
        "/api/v1/ingest",
        "ingest",
        "Send traces and feedback in one batch",
        207,
        IngestResult,
        IngestRequest,
    ),
)

_COMPILED = tuple((route, route.pattern) for route in ROUTES)

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
    for route in ROUTES:
        types.append(route.response)
        if route.request is not None:
            types.append(route.request)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip((id(t) for t in types), schemas, strict=True))
    error_schema = schema_of[id(ErrorBody)]
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        parameters: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                "description": "UUID or unique name" if name == "task_id" else "UUID",
            }
            for name in re.findall(r"\{(\w+)\}", route.template)
        ]
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_LIMIT}
                if name == "limit"
                else {"type": "string"},
            }
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
                "description": text,
                "content": {"application/json": {"schema": error_schema}},
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


def resolve(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """Match *method* and *path* to a route; raise `ApiError` 404 or 405 (with ``Allow``)."""
    path = path.rstrip("/") or "/"
    allowed: list[str] = []
    for route, pattern in _COMPILED:
        match = pattern.match(path)
        if match is None:
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in match.groupdict().items()}
        allowed.append(route.method)
    if allowed:
        methods = ", ".join(sorted(allowed))
        raise ApiError(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{method} is not allowed on {path}; use {methods}.",
            headers={"Allow": methods},
        )
    raise ApiError(HTTPStatus.NOT_FOUND, f"No route for {method} {path}.")


def check_key(given: str | None, expected: str) -> None:
    """Raise `ApiError` 401 unless *given* equals *expected* (compared in constant time)."""
    if given is None:
        raise ApiError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is missing.")
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise ApiError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is not valid.")


def parse_query(query_string: str) -> dict[str, str]:
    """The last value of each query parameter; an empty ``task_id`` counts as absent."""
    query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
    if not query.get("task_id", True):
        del query["task_id"]
    return query


def error_response(exc: BaseException, method: str = "", path: str = "") -> ApiResponse:
    """The JSON error answer for *exc* raised by an operation (500 and a log line if unknown)."""
    if isinstance(exc, ApiError):
        return ApiResponse(
            exc.status, ErrorBody(title=exc.status.phrase, detail=exc.detail), exc.headers
        )
    if isinstance(exc, NotFound):
        return ApiResponse(404, ErrorBody(title="Not Found", detail=str(exc)))
    if isinstance(exc, Conflict):
        return ApiResponse(409, ErrorBody(title="Conflict", detail=str(exc)))
    logger.error("local CT server: %s %s failed", method, path, exc_info=exc)
    detail = "The server failed to handle the request; see its log."
    return ApiResponse(500, ErrorBody(title="Internal Server Error", detail=detail))
