"""The CT API core of the local server, independent of the HTTP framework underneath.

`Api` holds one method per operation: each takes an `ApiRequest` (path parameters, query,
body bytes, request headers) and returns an `ApiResponse` (status, a msgspec-encodable payload,
extra response headers). `ROUTES` lists every operation with its method, path template and
models; `resolve` matches a request line to a route, `call` runs it and turns store and
decoding failures into JSON error answers, and `openapi_document` describes `ROUTES`. The HTTP
layer (`kaizen_server.http.server`) only frames requests, checks the key and sends answers.

Errors are JSON ``{"title", "detail"}``: non-JSON body or a cursor this server did not give
out 400, missing, wrong or revoked ``X-API-Key`` 401, a key whose scope does not cover the
route 403 (``detail`` names the scope needed; see `Route.scope`), unknown object or route
404, wrong method 405, duplicate task name 409, body over `MAX_BODY_BYTES` 413 (also a gzip
OTLP body that decompresses past it), an OTLP body of another content type or encoding 415,
a missing or wrongly typed field 422 (``detail`` names the field), a full database or disk 507
(nothing stored; reads go on), anything unexpected 500 (and a log line). Health and the
OpenAPI document need no key.

``GET /prompts/{task_id}`` carries an ``ETag``, a hash of the encoded body (so any field added
to the answer later is covered too), and answers a matching ``If-None-Match`` with ``304``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlencode

import msgspec

from kaizen_sdk import __version__
from kaizen_sdk.models import (
    PROMPT_REF_HEADER,
    ActivateRequest,
    ApiKey,
    ApiKeyCreated,
    AuditEntry,
    ErrorBody,
    Evaluator,
    EvaluatorRequest,
    EvaluatorUpdateRequest,
    FeedbackRequest,
    FeedbackResult,
    Health,
    IngestError,
    IngestRequest,
    IngestResult,
    Job,
    JobCall,
    KeyCreateRequest,
    LabelRequest,
    OptimizeResult,
    Prompt,
    PromptVersionRequest,
    Rollout,
    RolloutRequest,
    RolloutStopRequest,
    ScoreItem,
    ScoreRequest,
    Task,
    TaskCosts,
    TaskCreateRequest,
    TaskUpdateRequest,
    TraceRequest,
    TraceResult,
    UnpricedModel,
    decoder,
    encode,
)
from kaizen_sdk.templates import PRODUCTION
from kaizen_server.api import otlp
from kaizen_server.domain.keys import Authenticator, Principal, allowed, forbidden_detail
from kaizen_server.jobs import approval
from kaizen_server.jobs.worker import JobWorker
from kaizen_server.optimize.dspy_optimizer import STRATEGIES
from kaizen_server.storage.errors import Conflict, Invalid, NotFound, Page, StoreFull
from kaizen_server.storage.interface import StorageInterface

__all__ = [
    "MAX_BODY_BYTES",
    "ROUTES",
    "Api",
    "ApiError",
    "ApiRequest",
    "ApiResponse",
    "Route",
    "authorize",
    "decode",
    "decode_cursor",
    "encode_cursor",
    "error_response",
    "etag_of",
    "key_of",
    "openapi_document",
    "parse_query",
    "resolve",
]

logger = logging.getLogger("kaizen_server")

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Largest request body accepted; a larger one is answered with 413."""

_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000
_MAX_COST_DAYS = 366


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    """One request as the operations see it; *headers* has lower-case names."""

    params: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    principal: Principal | None = None
    """Who sent it (the key's name and scope); ``None`` on the public routes."""


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


# msgspec types whose decoded value is never an ``int`` (a ``bool`` is not checked either)
_NOT_INT = (
    msgspec.inspect.StrType, msgspec.inspect.FloatType, msgspec.inspect.BoolType,
    msgspec.inspect.UUIDType, msgspec.inspect.DictType, msgspec.inspect.ListType,
    msgspec.inspect.NoneType, msgspec.inspect.StructType,
)


@functools.cache
def _int_fields(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of *cls* that can hold an ``int``, in declaration order (checked per item
    of every ingest batch, so the others are skipped)."""
    names = []
    for field in msgspec.inspect.type_info(cls).fields:  # type: ignore[attr-defined]
        kinds = getattr(field.type, "types", (field.type,))
        if not all(isinstance(kind, _NOT_INT) for kind in kinds):
            names.append(field.name)
    return tuple(names)


def _check_int64(obj: msgspec.Struct, prefix: str = "$") -> None:
    """Reject integer fields that SQLite cannot store, naming the field like msgspec does."""
    for name in _int_fields(type(obj)):
        value = getattr(obj, name)
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
            raise msgspec.ValidationError(f"Expected `int` within 64 bits - at `{prefix}.{name}`")


def decode(body: bytes, into: Any) -> Any:
    """Decode a JSON request body into *into*; raise `ApiError` 400 or 422 naming the problem."""
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
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit; deeper JSON is an attack.
        raise ApiError(
            HTTPStatus.BAD_REQUEST, "The request body is nested too deeply (JSON depth limit)."
        ) from None


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


def _typed_ingest(body: bytes) -> IngestRequest | None:
    """The ingest body when every item is valid, else ``None`` (then each item is checked)."""
    try:
        typed: IngestRequest = decoder(IngestRequest).decode(body)
        for items, names in ((typed.traces, _int_fields(TraceRequest)),
                             (typed.feedback, _int_fields(FeedbackRequest))):
            for item in items:  # `_check_int64` inlined: it runs for every item of a batch
                for name in names:
                    value = getattr(item, name)
                    if type(value) is int and value not in _INT64:  # decoded: never a subclass
                        _check_int64(item)  # raises, naming the field
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    return typed


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


_CURSOR_PREFIX = "k1."


def encode_cursor(key: int) -> str:
    """The opaque ``cursor`` query value for the page after row key *key*."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{key}".encode()).decode().rstrip("=")


def decode_cursor(query: Mapping[str, str]) -> int | None:
    """The row key in the ``cursor`` query parameter (``None`` without one); 400 if it is not
    one this server gave out (a row key fits in 63 bits)."""
    raw = query.get("cursor")
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        digits = text[len(_CURSOR_PREFIX):]
        if (text.startswith(_CURSOR_PREFIX) and digits.isascii() and digits.isdigit()
                and len(digits) <= 19 and int(digits) < 2**63):
            return int(digits)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(
        HTTPStatus.BAD_REQUEST,
        f"Query parameter `cursor` is not a cursor this server gave out, got {raw!r}; "
        "use the URL of the `Link: <...>; rel=\"next\"` header.",
    )


def _paged(page: Page[Any], path: str, query: Mapping[str, str], limit: int) -> ApiResponse:
    """A 200 list answer; while more items remain, a ``Link: <...>; rel="next"`` header."""
    if page.next_key is None:
        return ApiResponse(200, page.items)
    params = {k: v for k, v in query.items() if k not in ("cursor", "limit")}
    params["limit"] = str(limit)
    params["cursor"] = encode_cursor(page.next_key)
    return ApiResponse(200, page.items, {"Link": f'<{path}?{urlencode(params)}>; rel="next"'})


class Api:
    """The CT API operations: each takes an `ApiRequest` and returns an `ApiResponse`."""

    def __init__(
        self, store: StorageInterface, worker: JobWorker, *,
        task_map: otlp.TaskMap | None = None,
    ) -> None:
        self.store = store
        self.worker = worker
        self.task_map = task_map or otlp.TaskMap()
        """How OTLP LLM spans without ``ct.task.name`` find their task."""

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
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_tasks(limit, after=after)
        return _paged(page, "/api/v1/tasks", r.query, limit)

    def get_task(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_task(r.params["task_id"]))

    def update_task(self, r: ApiRequest) -> ApiResponse:
        req: TaskUpdateRequest = decode(r.body, TaskUpdateRequest)
        return ApiResponse(200, self.store.update_task(r.params["task_id"], req))

    def add_feedback(self, r: ApiRequest) -> ApiResponse:
        req: FeedbackRequest = decode(r.body, FeedbackRequest)
        if _correction_without_output(req):
            raise ApiError(HTTPStatus.UNPROCESSABLE_ENTITY, _NO_OUTPUT)
        result, jobs = self.store.add_feedback(req)
        self._submit(jobs)
        return ApiResponse(201, result)

    def list_feedback(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_feedback(r.query.get("task_id"), limit, after=after)
        return _paged(page, "/api/v1/feedback", r.query, limit)

    def get_prompt(self, r: ApiRequest) -> ApiResponse:
        label = r.query.get("label", PRODUCTION)
        prompt = self.store.labelled_prompt(r.params["task_id"], label)
        # rollouts act on production only: another label serves its version as it is
        serving = self.store.rollout_serving(r.params["task_id"]) if label == PRODUCTION else None
        if serving is not None:
            prompt = msgspec.structs.replace(prompt, rollout=serving)
        body = encode(prompt)
        tag = etag_of(body)
        # traces may name a served version by id instead of repeating its text
        headers = {"ETag": tag, "Cache-Control": "no-cache", PROMPT_REF_HEADER: "version-id"}
        if _etag_matches(r.headers.get("if-none-match"), tag):
            return ApiResponse(304, None, headers)
        return ApiResponse(200, msgspec.Raw(body), headers)

    def create_version(self, r: ApiRequest) -> ApiResponse:
        req: PromptVersionRequest = decode(r.body, PromptVersionRequest)
        prompt = self.store.create_version(
            r.params["task_id"], req.prompt_text, activate=req.activate,
            messages=req.messages, config=req.config,
        )
        return ApiResponse(201, prompt)

    def set_label(self, r: ApiRequest) -> ApiResponse:
        req: LabelRequest = decode(r.body, LabelRequest)
        return ApiResponse(
            200, self.store.set_label(r.params["task_id"], r.params["label"], req.version_id)
        )

    def remove_label(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.remove_label(r.params["task_id"], r.params["label"]))

    def list_versions(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_versions(r.params["task_id"], limit, after=after)
        path = f"/api/v1/prompts/{quote(r.params['task_id'], safe='')}/versions"
        return _paged(page, path, r.query, limit)

    def activate(self, r: ApiRequest) -> ApiResponse:
        req: ActivateRequest = decode(r.body, ActivateRequest)
        return ApiResponse(200, self.store.activate(r.params["task_id"], req.version_id))

    def optimize(self, r: ApiRequest) -> ApiResponse:
        strategy = r.query.get("strategy")
        if strategy is not None and strategy not in STRATEGIES:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"Query parameter `strategy` must be one of {', '.join(STRATEGIES)},"
                f" got {strategy!r}.",
            )
        refused = self.worker.refusal(r.params["task_id"], strategy=strategy)
        if refused is not None:
            raise ApiError(HTTPStatus.CONFLICT, refused)
        job, created = self.store.start_job(r.params["task_id"], "manual")
        if created:
            if strategy is not None:
                self.store.set_job_options(str(job.id), {"strategy": strategy})
            self._submit([str(job.id)])
        # Planned calls x token sizes of the task's real examples x the price table.
        estimate, warning = self.worker.estimate(str(job.task_id), strategy=strategy)
        return ApiResponse(
            202, OptimizeResult(job=job, cost_estimate=estimate, budget_warning=warning)
        )

    def get_job(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_job(r.params["job_id"]))

    def list_job_calls(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_job_calls(r.params["job_id"], limit, after=after)
        path = f"/api/v1/jobs/{quote(r.params['job_id'], safe='')}/calls"
        return _paged(page, path, r.query, limit)

    def list_jobs(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_jobs(r.query.get("task_id"), limit, after=after)
        return _paged(page, "/api/v1/jobs", r.query, limit)

    def add_trace(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(201, self.store.add_trace(decode(r.body, TraceRequest)))

    def get_trace(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_trace(r.params["trace_id"]))

    def list_traces(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_traces(r.query.get("task_id"), limit, after=after)
        return _paged(page, "/api/v1/traces", r.query, limit)

    def score_trace(self, r: ApiRequest) -> ApiResponse:
        req: ScoreRequest = decode(r.body, ScoreRequest)
        jobs: list[str] = []
        result = self.store.score_trace(
            r.params["trace_id"], req.score, req.scored_by,
            comment=None if req.comment is msgspec.UNSET else req.comment,
            correction=None if req.correction is msgspec.UNSET else req.correction,
            new_jobs=jobs,
        )
        self._submit(jobs)
        return ApiResponse(200, result)

    def ingest(self, r: ApiRequest) -> ApiResponse:
        errors: list[IngestError] = []
        typed = _typed_ingest(r.body)
        if typed is not None:  # the usual case: every item is valid, one decoding pass
            traces, feedback, scores = typed.traces, typed.feedback, typed.scores
        else:
            raw: _RawIngest = decode(r.body, _RawIngest)
            traces = _convert_items(raw.traces, TraceRequest, "trace", errors)
            feedback = _convert_items(raw.feedback, FeedbackRequest, "feedback", errors)
            scores = _convert_items(raw.scores, ScoreItem, "score", errors)
        for index, item in enumerate(feedback):
            if _correction_without_output(item):
                errors.append(IngestError(
                    kind="feedback", id=None if item.id is None else str(item.id),
                    detail=f"feedback[{index}]: {_NO_OUTPUT}",
                ))
        feedback = [item for item in feedback if not _correction_without_output(item)]
        accepted, store_errors, jobs = self.store.ingest(traces, feedback)
        # after the traces: a score may name a trace of this very batch
        applied, score_errors = self.store.apply_scores(scores, jobs)
        self._submit(jobs)
        errors += [IngestError(kind=k, id=i, detail=d) for k, i, d in store_errors]
        errors += [IngestError(kind="score", id=i, detail=d) for i, d in score_errors]
        return ApiResponse(
            207, IngestResult(accepted=accepted, errors=errors, scores=applied)
        )

    def otlp_traces(self, r: ApiRequest) -> ApiResponse:
        try:
            export = otlp.decode_export(r.body, r.headers, limit=MAX_BODY_BYTES)
        except otlp.OtlpError as exc:
            raise ApiError(exc.status, exc.detail) from None
        mapped = otlp.to_traces(export, self.task_map)
        _accepted, store_errors, jobs = self.store.ingest(mapped.traces, [])
        self._submit(jobs)
        rejected = mapped.rejected + [f"trace {i}: {d}" for _kind, i, d in store_errors]
        if rejected or mapped.not_llm:
            logger.info("local CT server: OTLP export of %d spans: %d traces, %d rejected,"
                        " %d not LLM calls", len(export.spans) + len(export.rejected),
                        len(mapped.traces) - len(store_errors), len(rejected), mapped.not_llm)
        body, media = otlp.answer(export.protobuf, rejected, mapped.not_llm)
        return ApiResponse(200, msgspec.Raw(body), {"Content-Type": media})

    def task_costs(self, r: ApiRequest) -> ApiResponse:
        raw = r.query.get("days", "7")
        try:
            days = float(raw)
        except ValueError:
            days = 0.0
        if not 0 < days <= _MAX_COST_DAYS:
            raise ApiError(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"Query parameter `days` must be a number above 0 and at most {_MAX_COST_DAYS},"
                f" got {raw!r}.",
            )
        return ApiResponse(200, self.store.task_costs(r.params["task_id"], days=days))

    def unpriced_models(self, r: ApiRequest) -> ApiResponse:
        prices = self.worker.settings.prices
        return ApiResponse(200, [
            UnpricedModel(model=model, traces=count)
            for model, count in self.store.traced_models() if not prices.known(model)
        ])

    # --- rollouts ----------------------------------------------------------------------

    def start_rollout(self, r: ApiRequest) -> ApiResponse:
        req: RolloutRequest = decode(r.body, RolloutRequest)
        return ApiResponse(201, self.store.start_rollout(r.params["task_id"], req))

    def get_rollout(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_rollout(r.params["task_id"]))

    def stop_rollout(self, r: ApiRequest) -> ApiResponse:
        req: RolloutStopRequest = decode(r.body, RolloutStopRequest)
        return ApiResponse(200, self.store.stop_rollout(r.params["task_id"], req.action))

    # --- keys and the audit log ----------------------------------------------------------

    def create_key(self, r: ApiRequest) -> ApiResponse:
        req: KeyCreateRequest = decode(r.body, KeyCreateRequest)
        return ApiResponse(201, self.store.create_key(req.name, req.scope))

    def list_keys(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        return _paged(self.store.list_keys(limit, after=after), "/api/v1/keys", r.query, limit)

    def revoke_key(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.revoke_key(r.params["key_id"]))

    def list_audit(self, r: ApiRequest) -> ApiResponse:
        limit, after = _limit(r.query), decode_cursor(r.query)
        page = self.store.list_audit(r.query.get("task_id"), limit, after=after)
        return _paged(page, "/api/v1/audit", r.query, limit)

    def approve_rollout(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(201, approval.approve(self.store, r.params["task_id"]))

    # --- online evaluators ---------------------------------------------------------------

    def create_evaluator(self, r: ApiRequest) -> ApiResponse:
        req: EvaluatorRequest = decode(r.body, EvaluatorRequest)
        return ApiResponse(201, self.store.create_evaluator(r.params["task_id"], req))

    def list_evaluators(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.list_evaluators(r.params["task_id"]))

    def get_evaluator(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.get_evaluator(r.params["task_id"],
                                                         r.params["evaluator"]))

    def update_evaluator(self, r: ApiRequest) -> ApiResponse:
        req: EvaluatorUpdateRequest = decode(r.body, EvaluatorUpdateRequest)
        return ApiResponse(200, self.store.update_evaluator(
            r.params["task_id"], r.params["evaluator"], req))

    def remove_evaluator(self, r: ApiRequest) -> ApiResponse:
        return ApiResponse(200, self.store.remove_evaluator(r.params["task_id"],
                                                            r.params["evaluator"]))

    def call(self, route: Route, request: ApiRequest) -> ApiResponse:
        """Run *route*'s operation as its key; every failure becomes its JSON error answer."""
        who = request.principal
        try:
            if who is None:
                response: ApiResponse = getattr(self, route.operation)(request)
            else:
                with self.store.acting_as(who.name, who.key_id):
                    response = getattr(self, route.operation)(request)
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
    scope: str = ""
    """The key scope the route needs: ``ingest`` (ingest or admin keys; read keys too on a
    ``GET``), ``read`` (read or admin) or ``admin``. Empty: ``read`` for a ``GET``, else
    ``admin``, so a route that changes something needs an admin key unless it says so."""

    bearer: bool = False
    """Also take the key as ``Authorization: Bearer KEY`` (OTLP exporters set headers so)."""

    @property
    def needs(self) -> str:
        """The scope this route needs (`scope`, or what its method implies)."""
        return self.scope or ("read" if self.method == "GET" else "admin")

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
    Route(
        "GET",
        "/api/v1/tasks",
        "list_tasks",
        "List tasks, oldest first",
        200,
        list[Task],
        query=("limit", "cursor"),
    ),
    Route("GET", "/api/v1/tasks/{task_id}", "get_task", "Get a task by UUID or name", 200, Task),
    Route(
        "PATCH",
        "/api/v1/tasks/{task_id}",
        "update_task",
        "Change a task's settings (fields left out are kept, null clears one)",
        200,
        Task,
        TaskUpdateRequest,
    ),
    Route(
        "POST",
        "/api/v1/feedback",
        "add_feedback",
        "Send feedback (idempotent by id)",
        201,
        FeedbackResult,
        FeedbackRequest,
        scope="ingest",
    ),
    Route(
        "GET",
        "/api/v1/feedback",
        "list_feedback",
        "List feedback, newest first",
        200,
        list[FeedbackResult],
        query=("task_id", "limit", "cursor"),
    ),
    Route(
        "GET",
        "/api/v1/prompts/{task_id}",
        "get_prompt",
        "Get the active prompt version (or the version a label names)",
        200,
        Prompt,
        query=("label",),
        scope="ingest",
    ),
    Route(
        "PUT",
        "/api/v1/prompts/{task_id}/labels/{label}",
        "set_label",
        "Put a label (not production) on a prompt version, moving it from the one that had it",
        200,
        Prompt,
        LabelRequest,
    ),
    Route(
        "DELETE",
        "/api/v1/prompts/{task_id}/labels/{label}",
        "remove_label",
        "Take a label off the task's version that has it",
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
        query=("limit", "cursor"),
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
        "/api/v1/prompts/{task_id}/versions",
        "create_version",
        "Add a hand-written prompt version (optimizer: manual)",
        201,
        Prompt,
        PromptVersionRequest,
    ),
    Route(
        "POST",
        "/api/v1/optimize/{task_id}",
        "optimize",
        "Start an optimization job",
        202,
        OptimizeResult,
        query=("strategy",),
    ),
    Route("GET", "/api/v1/jobs/{job_id}", "get_job", "Get a job", 200, Job),
    Route(
        "GET",
        "/api/v1/jobs/{job_id}/calls",
        "list_job_calls",
        "List a job's LLM calls, oldest first",
        200,
        list[JobCall],
        query=("limit", "cursor"),
    ),
    Route(
        "GET",
        "/api/v1/jobs",
        "list_jobs",
        "List jobs, newest first",
        200,
        list[Job],
        query=("task_id", "limit", "cursor"),
    ),
    Route(
        "POST",
        "/api/v1/traces",
        "add_trace",
        "Send a trace (idempotent by id)",
        201,
        TraceResult,
        TraceRequest,
        scope="ingest",
    ),
    Route("GET", "/api/v1/traces/{trace_id}", "get_trace", "Get a trace", 200, TraceResult),
    Route(
        "GET",
        "/api/v1/traces",
        "list_traces",
        "List traces, newest first",
        200,
        list[TraceResult],
        query=("task_id", "limit", "cursor"),
    ),
    Route(
        "POST",
        "/api/v1/traces/{trace_id}/score",
        "score_trace",
        "Score a trace",
        200,
        TraceResult,
        ScoreRequest,
        scope="ingest",
    ),
    Route(
        "POST",
        "/api/v1/ingest",
        "ingest",
        "Send traces and feedback in one batch",
        207,
        IngestResult,
        IngestRequest,
        scope="ingest",
    ),
    # --- rollouts ---
    Route(
        "POST",
        "/api/v1/rollouts/{task_id}",
        "start_rollout",
        "Start a guarded rollout of a candidate prompt version",
        201,
        Rollout,
        RolloutRequest,
    ),
    Route(
        "GET",
        "/api/v1/rollouts/{task_id}",
        "get_rollout",
        "Get the task's latest rollout: state, per-arm figures, guards, audit log",
        200,
        Rollout,
    ),
    Route(
        "POST",
        "/api/v1/rollouts/{task_id}/stop",
        "stop_rollout",
        "Stop the running rollout by promoting or rolling back the candidate",
        200,
        Rollout,
        RolloutStopRequest,
    ),
    # --- keys and the audit log ---
    Route(
        "POST",
        "/api/v1/keys",
        "create_key",
        "Create a scoped API key; the answer is the only one that carries its secret",
        201,
        ApiKeyCreated,
        KeyCreateRequest,
        scope="admin",
    ),
    Route(
        "GET",
        "/api/v1/keys",
        "list_keys",
        "List API keys (never their secrets), oldest first",
        200,
        list[ApiKey],
        query=("limit", "cursor"),
        scope="read",
    ),
    Route(
        "DELETE",
        "/api/v1/keys/{key_id}",
        "revoke_key",
        "Revoke an API key (its requests get 401 from now on)",
        200,
        ApiKey,
        scope="admin",
    ),
    Route(
        "GET",
        "/api/v1/audit",
        "list_audit",
        "List the audit log (every state change, with the key's name), newest first",
        200,
        list[AuditEntry],
        query=("task_id", "limit", "cursor"),
        scope="read",
    ),
    Route(
        "POST",
        "/v1/traces",
        "otlp_traces",
        "Send OTLP/HTTP traces (protobuf or JSON, gzip); GenAI LLM spans become traces",
        200,
        otlp.ExportResponse,
        dict[str, Any],
        scope="ingest",
        bearer=True,
    ),
    Route(
        "GET",
        "/api/v1/tasks/{task_id}/costs",
        "task_costs",
        "What the task's calls cost over the last `days` days: totals and per version",
        200,
        TaskCosts,
        query=("days",),
        scope="read",
    ),
    Route(
        "GET",
        "/api/v1/models/unpriced",
        "unpriced_models",
        "Models of recent traces with tokens that the server's price table does not know",
        200,
        list[UnpricedModel],
        scope="read",
    ),
    Route(
        "POST",
        "/api/v1/rollouts/{task_id}/approve",
        "approve_rollout",
        "Approve and start the automatic rollout that waits for a human (optimizer candidate)",
        201,
        Rollout,
    ),
    Route(
        "POST",
        "/api/v1/tasks/{task_id}/evaluators",
        "create_evaluator",
        "Add an online evaluator (LLM judge or code check) to a task",
        201,
        Evaluator,
        EvaluatorRequest,
    ),
    Route(
        "GET",
        "/api/v1/tasks/{task_id}/evaluators",
        "list_evaluators",
        "List a task's online evaluators with status, today's books and agreement",
        200,
        list[Evaluator],
    ),
    Route(
        "GET",
        "/api/v1/tasks/{task_id}/evaluators/{evaluator}",
        "get_evaluator",
        "Get an online evaluator by id or name",
        200,
        Evaluator,
    ),
    Route(
        "PATCH",
        "/api/v1/tasks/{task_id}/evaluators/{evaluator}",
        "update_evaluator",
        "Change an online evaluator's settings (fields left out are kept)",
        200,
        Evaluator,
        EvaluatorUpdateRequest,
    ),
    Route(
        "DELETE",
        "/api/v1/tasks/{task_id}/evaluators/{evaluator}",
        "remove_evaluator",
        "Remove an online evaluator (the feedback it stored stays)",
        200,
        Evaluator,
    ),
)

_COMPILED = tuple((route, route.pattern) for route in ROUTES)

_ERROR_STATUSES = {
    "400": "Body is not JSON, or a cursor this server did not give out",
    "401": "Missing, wrong or revoked X-API-Key",
    "403": "The key's scope does not cover this operation (the detail names the scope needed)",
    "404": "Unknown object or route",
    "409": "Conflict (duplicate task name, a rollout already running or none running)",
    "413": "Body too large",
    "422": "A field is missing, has the wrong type or is out of range",
    "507": "The server's database or disk is full: nothing was stored",
}

_LINK_HEADER = {
    "description": 'RFC 8288 `<URL>; rel="next"` while more items remain; absent on the last page',
    "schema": {"type": "string"},
}

_QUERY_DOCS = {
    "task_id": "only this task (UUID or name)",
    "limit": f"items per page, 1 to {_MAX_LIMIT} (default {_DEFAULT_LIMIT})",
    "cursor": "opaque; taken from the `Link: <...>; rel=\"next\"` header of the previous page",
    "days": f"the window in days, above 0 and at most {_MAX_COST_DAYS} (default 7)",
    "label": "the version with this label (default `production`: the active version)",
    "strategy": "optimizer strategy for this job (dspy optimizer only): one of "
    + ", ".join(STRATEGIES),
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
                "description": "UUID or unique name" if name == "task_id"
                else "1 to 64 of a-z 0-9 . _ -" if name == "label" else "UUID",
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
                else {"type": "string", "enum": list(STRATEGIES)}
                if name == "strategy"
                else {"type": "string"},
                "description": _QUERY_DOCS[name],
            }
            for name in route.query
        ]
        responses: dict[str, Any] = {
            str(route.status): {
                "description": route.summary,
                "content": {"application/json": {"schema": schema_of[id(route.response)]}},
            }
        }
        if route.operation == "get_prompt":  # conditional GET for cheap revalidation
            parameters.append(
                {"name": "If-None-Match", "in": "header", "required": False,
                 "schema": {"type": "string"}}
            )
            responses["304"] = {"description": "Not modified: the ETag still matches"}
        if route.operation == "otlp_traces":
            responses["415"] = {
                "description": "Not OTLP: a Content-Type or Content-Encoding not supported",
                "content": {"application/json": {"schema": error_schema}},
            }
        if "cursor" in route.query:
            responses[str(route.status)]["headers"] = {"Link": _LINK_HEADER}
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
        if not route.public:
            operation["x-kaizen-scope"] = route.needs
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(route.request)]}},
            }
        if route.operation == "otlp_traces":
            operation["requestBody"]["content"]["application/x-protobuf"] = {
                "schema": {"type": "string", "format": "binary"}
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


def etag_of(body: bytes) -> str:
    """Return the strong ``ETag`` of an encoded answer: a hash of its bytes."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _etag_matches(header: str | None, tag: str) -> bool:
    """Whether ``If-None-Match`` names *tag* (weak comparison, as RFC 9110 asks for GET)."""
    if not header:
        return False
    for item in header.split(","):
        item = item.strip()
        if item == "*" or item.removeprefix("W/") == tag:
            return True
    return False


_NO_OUTPUT = "`correction` needs an `output` to correct: this feedback entry has no output"


def _correction_without_output(req: FeedbackRequest) -> bool:
    return req.correction not in (None, msgspec.UNSET) and req.output is None


def key_of(route: Route, headers: Mapping[str, str]) -> str | None:
    """The key a request sends: ``X-API-Key``, or a bearer token where *route* takes one."""
    given = headers.get("x-api-key")
    if given is None and route.bearer:
        given = otlp.bearer_key(headers.get("authorization"))
    return given


def authorize(route: Route, given: str | None, auth: Authenticator) -> Principal:
    """Return who sent *given* as ``X-API-Key``; raise `ApiError` 401 for a missing, unknown
    or revoked key, 403 naming the scope needed when the key's scope does not cover *route*."""
    if given is None:
        raise ApiError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is missing.")
    principal = auth.principal(given)
    if principal is None:
        raise ApiError(HTTPStatus.UNAUTHORIZED, "The X-API-Key header is not valid.")
    if not allowed(principal.scope, route.needs, route.method):
        raise ApiError(
            HTTPStatus.FORBIDDEN,
            forbidden_detail(principal, route.needs, route.method, route.template),
        )
    return principal


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
    if isinstance(exc, Invalid):
        return ApiResponse(422, ErrorBody(title="Unprocessable Entity", detail=str(exc)))
    if isinstance(exc, StoreFull):
        logger.error("local CT server: %s %s: %s", method, path, exc)
        return ApiResponse(507, ErrorBody(title="Insufficient Storage", detail=str(exc)))
    logger.error("local CT server: %s %s failed", method, path, exc_info=exc)
    detail = "The server failed to handle the request; see its log."
    return ApiResponse(500, ErrorBody(title="Internal Server Error", detail=detail))
