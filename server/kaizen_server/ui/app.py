"""The web UI of the local CT server: server-rendered pages under `UI_PREFIX`.

`UiApp.handle` takes one `UiRequest` and returns one `UiResponse`; the HTTP layer
(`kaizen_server.http.server`) sends every request under `UI_PREFIX` here, reads the body under
the API's size limit, and runs `handle` in its thread pool. Pages are Jinja2 templates
(autoescaped: what a trace holds is shown as text, never run) with a small vendored script,
htmx, that refreshes the live parts of the job and rollout pages; charts are SVG made here.

Every page does what the API does, through the same `Api` operations and with the signed-in
key's `Principal` (so the key's scope decides, and the audit log names the key): nothing here
reads the database another way. Lists are pages of at most `PAGE` rows, with the API's cursors.

Sign-in takes a key (``read`` sees, ``admin`` also changes; an ``ingest`` key cannot sign in)
and opens a session (`kaizen_server.ui.sessions`): the cookie holds a random id, HttpOnly,
SameSite=Strict, path `UI_PREFIX`. Every page and asset but the sign-in page needs a session
(else a redirect to sign-in); every change is a POST carrying the session's CSRF token in the
form, and a POST from another origin is refused. Answers carry a strict Content-Security-Policy
(scripts and styles from this server only).
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import hashlib
import importlib.resources
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlencode

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from kaizen_sdk.models import (
    ActivateRequest,
    FeedbackRequest,
    Job,
    Prompt,
    PromptVersionRequest,
    Rollout,
    RolloutRequest,
    RolloutStopRequest,
    ScoreRequest,
    Task,
    TaskCosts,
    TraceResult,
    decoder,
    encode,
)
from kaizen_sdk.reports import job_report
from kaizen_server.api.routes import ROUTES, Api, ApiRequest, ApiResponse, Route
from kaizen_server.domain.keys import SECRET_PREFIX, Authenticator, Principal, allowed, hash_secret
from kaizen_server.ui.charts import (
    interval_chart,
    mean_over_time,
    rollout_history,
    sparkline,
    time_chart,
)
from kaizen_server.ui.demos import demonstrations
from kaizen_server.ui.sessions import Session, SessionBook

__all__ = [
    "COOKIE", "MAX_FORM_BYTES", "PAGE", "UI_PREFIX", "UiApp", "UiRequest", "UiResponse",
    "is_ui_path",
]

logger = logging.getLogger("kaizen_server.ui")

UI_PREFIX = "/ui/"
"""Every page and asset of the UI is under this path."""

COOKIE = "kaizen_ui"
"""The session cookie's name."""

PAGE = 50
"""Rows per page of every list (the API's cursors give the next page)."""

_SCAN_PAGES = 4  # pages of versions read to find two versions for a diff, at most
_SHARE_SAMPLE = 20  # newest traces read for a task's scored share
_TREND_LIST = 50  # newest feedback entries read for the tasks list's mean score line
_TREND_TASK = 200  # newest feedback entries read for the task page's mean score chart
_COST_DAYS = 7  # the window of the cost figures on the task and versions pages
_FEEDBACK_SCAN = 200  # newest feedback rows of the task read for a trace's feedback
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
MAX_FORM_BYTES = 4 * 1024 * 1024
"""Largest form body the UI reads (a prompt of 200,000 characters, percent-encoded, fits)."""

# The sign-in page's own style: the page is the one a visitor without a session sees, so it
# cannot load ui.css; this inline style is allowed by its hash, nothing else inline is.
_SIGNIN_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;background:#1a365d;color:#1a202c;margin:0}"
    "main{max-width:28em;margin:12vh auto;background:#fff;padding:1.5em 2em;border-radius:6px}"
    "h1{font-size:1.4em}input{width:100%;padding:.4em;margin:.3em 0 1em;box-sizing:border-box}"
    "button{padding:.4em 1.2em}.problem{color:#9b2c2c;font-weight:600}"
)
_SIGNIN_CSP = _CSP.replace(
    "style-src 'self'",
    "style-src 'self' 'sha256-"
    + base64.b64encode(hashlib.sha256(_SIGNIN_CSS.encode()).digest()).decode() + "'",
)
_STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".txt": "text/plain; charset=utf-8"}
_ROUTE_BY_OPERATION: dict[str, Route] = {route.operation: route for route in ROUTES}


def is_ui_path(path: str) -> bool:
    """Whether *path* belongs to the UI (`UI_PREFIX`, or the prefix without its slash)."""
    return path.startswith(UI_PREFIX) or path == UI_PREFIX.rstrip("/")


@dataclasses.dataclass(frozen=True)
class UiRequest:
    """One request to the UI: *path* is the raw path, *headers* have lower-case names."""

    method: str
    path: str
    query_string: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""


@dataclasses.dataclass(frozen=True)
class UiResponse:
    """One answer: status, headers, body bytes."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""


class _Stop(Exception):
    """Answer at once with *response* (a redirect, an error page)."""

    def __init__(self, response: UiResponse) -> None:
        super().__init__(response.status)
        self.response = response


class _OpError(Exception):
    """An API operation answered an error: *status* and the API's *detail* sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclasses.dataclass
class _Ctx:
    """What a view gets: the request, its query and form, the session (``None`` on sign-in)."""

    request: UiRequest
    query: dict[str, str]
    form: dict[str, str]
    session: Session | None
    params: dict[str, str]

    @property
    def who(self) -> Principal:
        assert self.session is not None
        return self.session.principal


def _last_values(text: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _cookie(headers: Mapping[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _pretty(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _q(value: Any) -> str:
    """A path segment: *value* with every reserved character escaped."""
    return quote(str(value), safe="")


def _next_cursor(response: ApiResponse) -> str | None:
    link = response.headers.get("Link")
    if not link:
        return None
    match = re.search(r"[?&]cursor=([^&>]+)", link)
    return unquote(match.group(1)) if match else None


class UiApp:
    """The UI's pages over one `Api`; *auth* turns a key typed at sign-in into a principal."""

    def __init__(self, api: Api, auth: Authenticator, sessions: SessionBook | None = None) -> None:
        self.api = api
        self.auth = auth
        store = api.store
        self.sessions = sessions if sessions is not None else SessionBook(
            lambda digest: store.key_for_hash(digest) is not None, store=store
        )
        self.env = Environment(
            loader=PackageLoader("kaizen_server.ui", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(prefix=UI_PREFIX, q=_q, pretty=_pretty)
        self.static = self._load_static()
        P = r"(?P<task>[^/]+)"
        self.routes: list[tuple[str, re.Pattern[str], Callable[[_Ctx], UiResponse]]] = [
            (m, re.compile("^" + UI_PREFIX + pattern + "$"), view) for m, pattern, view in (
                ("GET", "", self.home),
                ("GET", "signin", self.signin_page),
                ("POST", "signin", self.signin),
                ("POST", "signout", self.signout),
                ("GET", r"static/(?P<name>[A-Za-z0-9_.-]+)", self.asset),
                ("GET", "tasks", self.tasks),
                ("GET", f"tasks/{P}", self.task),
                ("GET", "traces", self.traces),
                ("GET", r"traces/(?P<trace>[^/]+)", self.trace),
                ("GET", f"tasks/{P}/versions", self.versions),
                ("POST", f"tasks/{P}/versions", self.create_version),
                ("GET", f"tasks/{P}/diff", self.diff),
                ("GET", f"tasks/{P}/activate", self.confirm_activate),
                ("POST", f"tasks/{P}/activate", self.activate),
                ("GET", "jobs", self.jobs),
                ("GET", r"jobs/(?P<job>[^/]+)", self.job),
                ("GET", f"tasks/{P}/rollout", self.rollout),
                ("GET", f"tasks/{P}/rollout/(?P<action>start|approve|promote|rollback)",
                 self.confirm_rollout),
                ("POST", f"tasks/{P}/rollout/(?P<action>start|approve|promote|rollback)",
                 self.rollout_action),
                ("GET", f"tasks/{P}/review", self.review),
                ("POST", f"tasks/{P}/review", self.review_label),
            )
        ]

    # --- plumbing -----------------------------------------------------------------------

    @staticmethod
    def _load_static() -> dict[str, tuple[bytes, str]]:
        files: dict[str, tuple[bytes, str]] = {}
        folder = importlib.resources.files("kaizen_server.ui").joinpath("static")
        for item in folder.iterdir():
            suffix = "." + item.name.rpartition(".")[2]
            if item.is_file() and suffix in _STATIC_TYPES:
                files[item.name] = (item.read_bytes(), _STATIC_TYPES[suffix])
        return files

    def handle(self, request: UiRequest) -> UiResponse:
        """Answer *request* (never raises: a failure is an error page, and a log line)."""
        path = request.path
        if path == UI_PREFIX.rstrip("/"):
            return self._redirect(UI_PREFIX)
        try:
            return self._dispatch(request)
        except _Stop as stop:
            return stop.response
        except Exception:  # a bug or the database: a plain 500 page, and the log has why
            logger.exception("web UI: %s %s failed", request.method, path)
            return self._error(None, 500, "The server failed to show this page; see its log.")

    def _dispatch(self, request: UiRequest) -> UiResponse:
        allowed_methods: list[str] = []
        for method, pattern, view in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed_methods.append(method)
                continue
            params = {k: unquote(v) for k, v in match.groupdict().items()}
            ctx = _Ctx(request, _last_values(request.query_string), {}, None, params)
            public = view in (self.signin_page, self.signin)
            if request.method == "POST":
                self._check_origin(request)
                ctype = request.headers.get("content-type", "")
                if not ctype.startswith("application/x-www-form-urlencoded"):
                    raise _Stop(self._error(None, 415, "Send the form as "
                                            "application/x-www-form-urlencoded."))
                # browsers send a textarea's line breaks as CRLF: keep the text as typed
                form = _last_values(request.body.decode("utf-8", "replace"))
                ctx.form = {k: v.replace("\r\n", "\n") for k, v in form.items()}
            if not public:
                ctx.session = self.sessions.get(_cookie(request.headers, COOKIE))
                if ctx.session is None:
                    if request.method == "GET" and view != self.asset:
                        target = request.path + ("?" + request.query_string
                                                 if request.query_string else "")
                        raise _Stop(self._redirect(f"{UI_PREFIX}signin?"
                                                   + urlencode({"next": target})))
                    raise _Stop(self._redirect(f"{UI_PREFIX}signin"))
                if request.method == "POST" and not ctx.session.csrf_ok(ctx.form.get("csrf")):
                    raise _Stop(self._error(ctx.session, 403, "The form's CSRF token is missing "
                                            "or not this session's: reload the page and retry."))
            return view(ctx)
        if allowed_methods:
            return self._error(None, 405, f"{request.method} is not allowed here.")
        session = self.sessions.get(_cookie(request.headers, COOKIE))
        if session is None:
            return self._redirect(f"{UI_PREFIX}signin")
        return self._error(session, 404, "No such page.")

    def _check_origin(self, request: UiRequest) -> None:
        origin = request.headers.get("origin")
        host = request.headers.get("host")
        if origin is not None and (host is None or origin not in (f"http://{host}",
                                                                  f"https://{host}")):
            raise _Stop(self._error(None, 403, "A change must come from this server's pages."))

    def _headers(self, content_type: str = "text/html; charset=utf-8",
                 csp: str = _CSP) -> list[tuple[str, str]]:
        return [("content-type", content_type), ("content-security-policy", csp),
                ("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"),
                ("referrer-policy", "same-origin"), ("cache-control", "no-store")]

    def _render(self, ctx_session: Session | None, template: str, status: int = 200,
                **values: Any) -> UiResponse:
        page = self.env.get_template(template).render(
            session=ctx_session, who=ctx_session.principal if ctx_session else None,
            can_change=bool(ctx_session and ctx_session.principal.scope == "admin"), **values)
        return UiResponse(status, self._headers(), page.encode("utf-8"))

    def _redirect(self, to: str, extra: list[tuple[str, str]] | None = None) -> UiResponse:
        headers = [("location", to), ("cache-control", "no-store"), *(extra or [])]
        return UiResponse(303, headers)

    def _error(self, session: Session | None, status: int, detail: str) -> UiResponse:
        title = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        return self._render(session, "error.html", status, title=title, detail=detail)

    def _op(self, who: Principal, operation: str, params: Mapping[str, str] | None = None,
            query: Mapping[str, str] | None = None, body: Any = None) -> ApiResponse:
        """Run API *operation* as *who*: the route's scope check, then `Api.call`."""
        route = _ROUTE_BY_OPERATION[operation]
        if not allowed(who.scope, route.needs, route.method):
            raise _OpError(403, f"This needs an admin key; you signed in with a {who.scope} key.")
        data = b"" if body is None else encode(body)
        response = self.api.call(route, ApiRequest(params or {}, query or {}, data, {}, who))
        if response.status >= 400:
            detail = getattr(response.payload, "detail", None) or "The operation failed."
            raise _OpError(response.status, str(detail))
        return response

    def _get(self, ctx: _Ctx, operation: str, params: Mapping[str, str] | None = None,
             query: Mapping[str, str] | None = None) -> ApiResponse:
        """`_op` for a page: an API error becomes the error page."""
        try:
            return self._op(ctx.who, operation, params, query)
        except _OpError as exc:
            raise _Stop(self._error(ctx.session, exc.status, exc.detail)) from None

    def _maybe(self, ctx: _Ctx, operation: str, params: Mapping[str, str]) -> Any:
        """The payload of a read, or ``None`` when the API answers 404."""
        try:
            return self._op(ctx.who, operation, params).payload
        except _OpError as exc:
            if exc.status == 404:
                return None
            raise _Stop(self._error(ctx.session, exc.status, exc.detail)) from None

    def _active(self, ctx: _Ctx, task: str) -> Prompt | None:
        raw = self._maybe(ctx, "get_prompt", {"task_id": task})
        if raw is None:
            return None
        prompt: Prompt = decoder(Prompt).decode(bytes(raw))
        return prompt

    def _task(self, ctx: _Ctx) -> Task:
        task: Task = self._get(ctx, "get_task", {"task_id": ctx.params["task"]}).payload
        return task

    def _cursor_query(self, ctx: _Ctx, **extra: str) -> dict[str, str]:
        query = {"limit": str(PAGE), **extra}
        if ctx.query.get("cursor"):
            query["cursor"] = ctx.query["cursor"]
        return query

    def _change(self, ctx: _Ctx, operation: str, params: Mapping[str, str], body: Any,
                back: str) -> UiResponse:
        try:
            self._op(ctx.who, operation, params, body=body)
        except _OpError as exc:
            return self._error(ctx.session, exc.status, exc.detail)
        return self._redirect(back)

    # --- sign-in --------------------------------------------------------------------------

    def home(self, ctx: _Ctx) -> UiResponse:
        return self._redirect(f"{UI_PREFIX}tasks")

    @staticmethod
    def _safe_next(target: str | None) -> str:
        if target and target.startswith(UI_PREFIX) and "//" not in target and "\\" not in target:
            return target
        return f"{UI_PREFIX}tasks"

    def signin_page(self, ctx: _Ctx, status: int = 200, problem: str | None = None) -> UiResponse:
        page = self.env.get_template("signin.html").render(
            problem=problem, css=Markup(_SIGNIN_CSS),  # a constant of this module, not data
            next=self._safe_next(ctx.query.get("next") or ctx.form.get("next")))
        return UiResponse(status, self._headers(csp=_SIGNIN_CSP), page.encode("utf-8"))

    def signin(self, ctx: _Ctx) -> UiResponse:
        key = ctx.form.get("key", "").strip()
        principal = self.auth.principal(key) if key else None
        if principal is None:
            return self.signin_page(ctx, 401, "That is not a valid key.")
        if principal.scope not in ("read", "admin"):
            return self.signin_page(ctx, 403, f"A key of the {principal.scope} scope cannot "
                                    "sign in: use a read or admin key.")
        key_hash = hash_secret(key) if key.startswith(SECRET_PREFIX) else None
        old = _cookie(ctx.request.headers, COOKIE)
        self.sessions.close(old)
        sid, _ = self.sessions.open(principal, key_hash)
        cookie = f"{COOKIE}={sid}; Path={UI_PREFIX}; HttpOnly; SameSite=Strict"
        return self._redirect(self._safe_next(ctx.form.get("next")), [("set-cookie", cookie)])

    def signout(self, ctx: _Ctx) -> UiResponse:
        self.sessions.close(_cookie(ctx.request.headers, COOKIE))
        cookie = f"{COOKIE}=; Path={UI_PREFIX}; HttpOnly; SameSite=Strict; Max-Age=0"
        return self._redirect(f"{UI_PREFIX}signin", [("set-cookie", cookie)])

    def asset(self, ctx: _Ctx) -> UiResponse:
        found = self.static.get(ctx.params["name"])
        if found is None:
            return self._error(ctx.session, 404, "No such file.")
        data, ctype = found
        headers = self._headers(ctype)
        headers[-1] = ("cache-control", "private, max-age=3600")
        return UiResponse(200, headers, data)

    # --- tasks and traces -------------------------------------------------------------------

    def tasks(self, ctx: _Ctx) -> UiResponse:
        response = self._get(ctx, "list_tasks", query=self._cursor_query(ctx))
        rows = []
        for task in response.payload:
            ref = str(task.id)
            traces = self._get(ctx, "list_traces", query={"task_id": ref,
                                                          "limit": str(_SHARE_SAMPLE)}).payload
            scored = sum(1 for t in traces if t.score is not None)
            jobs = self._get(ctx, "list_jobs", query={"task_id": ref, "limit": "1"}).payload
            rollout: Rollout | None = self._maybe(ctx, "get_rollout", {"task_id": ref})
            means = mean_over_time(self._scored_feedback(ctx, ref, _TREND_LIST), groups=10)
            rows.append({
                "task": task, "active": self._active(ctx, ref),
                "share": (scored, len(traces)),
                "trend": sparkline([mean for _, mean in means]),
                "job": jobs[0] if jobs and not jobs[0].is_terminal else None,
                "rollout": rollout if rollout is not None and rollout.state == "running"
                else None,
            })
        return self._render(ctx.session, "tasks.html", rows=rows,
                            next_cursor=_next_cursor(response))

    def _scored_feedback(self, ctx: _Ctx, ref: str, limit: int) -> list[tuple[Any, float]]:
        """``(created_at, score)`` of the scored entries among the task's *limit* newest
        feedback entries, oldest first."""
        rows = self._get(ctx, "list_feedback", query={"task_id": ref,
                                                      "limit": str(limit)}).payload
        return [(f.created_at, f.score) for f in reversed(rows)
                if f.score is not None and f.created_at is not None]

    def task(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        ref = str(task.id)
        traces = self._get(ctx, "list_traces", query={"task_id": ref, "limit": "10"}).payload
        jobs = self._get(ctx, "list_jobs", query={"task_id": ref, "limit": "5"}).payload
        audit = self._get(ctx, "list_audit", query={"task_id": ref, "limit": "10"}).payload
        evaluators = self._get(ctx, "list_evaluators", {"task_id": ref}).payload
        scores = self._scored_feedback(ctx, ref, _TREND_TASK)
        trend = time_chart([("mean score", [(at, mean, None, None) for at, mean in
                                            mean_over_time(scores, groups=20)])],
                           low=0.0, high=1.0) if scores else None
        return self._render(ctx.session, "task.html", task=task, active=self._active(ctx, ref),
                            traces=traces, jobs=jobs, audit=audit, trend=trend,
                            evaluators=evaluators,
                            trend_n=len(scores), trend_n_read=_TREND_TASK,
                            rollout=self._maybe(ctx, "get_rollout", {"task_id": ref}),
                            costs=self._costs(ctx, ref))

    def _costs(self, ctx: _Ctx, ref: str) -> TaskCosts:
        """What the task's calls cost over the last `_COST_DAYS` days (a bounded read)."""
        costs: TaskCosts = self._get(ctx, "task_costs", {"task_id": ref},
                                     {"days": str(_COST_DAYS)}).payload
        return costs

    def traces(self, ctx: _Ctx) -> UiResponse:
        task_ref = ctx.query.get("task", "")
        filters = {k: ctx.query[k].strip() for k in _TRACE_FILTERS if ctx.query.get(k, "").strip()}
        try:
            keep = _trace_filter(filters)
        except ValueError as exc:
            return self._error(ctx.session, 422, str(exc))
        base = {"task_id": task_ref} if task_ref else {}
        if keep is None:
            response = self._get(ctx, "list_traces", query=self._cursor_query(ctx, **base))
            shown, scanned, cursor = response.payload, None, _next_cursor(response)
        else:
            # The API filters by task only: read up to _FILTER_PAGES pages of _FILTER_ROWS
            # and keep the matches; the next page goes on from the last row read.
            shown, scanned, cursor = [], 0, ctx.query.get("cursor")
            for _ in range(_FILTER_PAGES):
                query = {**base, "limit": str(_FILTER_ROWS), **({"cursor": cursor} if cursor
                                                                 else {})}
                response = self._get(ctx, "list_traces", query=query)
                scanned += len(response.payload)
                shown += [t for t in response.payload if keep(t)]
                cursor = _next_cursor(response)
                if cursor is None or len(shown) >= PAGE:
                    break
        task = self._maybe(ctx, "get_task", {"task_id": task_ref}) if task_ref else None
        params = {**({"task": task_ref} if task_ref else {}), **filters}
        return self._render(ctx.session, "traces.html", traces=shown, task=task,
                            task_ref=task_ref, next_cursor=cursor, filters=filters,
                            scanned=scanned, params=params)

    def trace(self, ctx: _Ctx) -> UiResponse:
        trace: TraceResult = self._get(ctx, "get_trace", {"trace_id": ctx.params["trace"]}).payload
        task = self._maybe(ctx, "get_task", {"task_id": str(trace.task_id)})
        feedback = []
        if trace.task_id is not None:
            rows = self._get(ctx, "list_feedback", query={"task_id": str(trace.task_id),
                                                          "limit": str(_FEEDBACK_SCAN)}).payload
            feedback = [f for f in rows if f.trace_id == trace.id
                        or (f.metadata or {}).get("trace_id") == str(trace.id)]
        return self._render(ctx.session, "trace.html", trace=trace, task=task,
                            feedback=feedback, scan=_FEEDBACK_SCAN)

    # --- prompt versions -------------------------------------------------------------------

    def versions(self, ctx: _Ctx, problem: str | None = None, text: str = "",
                 status: int = 200) -> UiResponse:
        task = self._task(ctx)
        response = self._get(ctx, "list_versions", {"task_id": str(task.id)},
                             self._cursor_query(ctx))
        costs = self._costs(ctx, str(task.id))
        return self._render(ctx.session, "versions.html", status, task=task,
                            versions=response.payload, active=self._active(ctx, str(task.id)),
                            version_costs={str(v.version_id): v for v in costs.versions},
                            cost_days=_COST_DAYS,
                            next_cursor=_next_cursor(response), problem=problem, text=text)

    def create_version(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        text = ctx.form.get("prompt_text", "")
        try:
            body = msgspec.convert({"prompt_text": text, "activate": False},
                                   PromptVersionRequest)
            self._op(ctx.who, "create_version", {"task_id": str(task.id)}, body=body)
        except msgspec.ValidationError as exc:
            return self.versions(ctx, f"The prompt text is not valid: {exc}", text, 422)
        except _OpError as exc:
            return self.versions(ctx, exc.detail, text, exc.status)
        return self._redirect(f"{UI_PREFIX}tasks/{_q(task.name)}/versions")

    def _find_versions(self, ctx: _Ctx, task: Task, wanted: set[str]) -> dict[str, Prompt]:
        found: dict[str, Prompt] = {}
        query = {"limit": "200"}
        for _ in range(_SCAN_PAGES):
            response = self._get(ctx, "list_versions", {"task_id": str(task.id)}, query)
            for prompt in response.payload:
                if str(prompt.id) in wanted or str(prompt.version_number) in wanted:
                    found[str(prompt.id)] = found[str(prompt.version_number)] = prompt
            cursor = _next_cursor(response)
            if wanted <= found.keys() or cursor is None:
                break
            query = {"limit": "200", "cursor": cursor}
        return found

    def diff(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        a, b = ctx.query.get("a", ""), ctx.query.get("b", "")
        found = self._find_versions(ctx, task, {a, b})
        if a not in found or b not in found:
            return self._error(ctx.session, 404, "Pick two versions of this task to compare "
                               f"(the newest {200 * _SCAN_PAGES} are searched).")
        left, right = found[a], found[b]
        return self._render(ctx.session, "diff.html", task=task, left=left, right=right,
                            rows=_diff_rows(left.prompt_text, right.prompt_text))

    def confirm_activate(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        wanted = ctx.query.get("version", "")
        found = self._find_versions(ctx, task, {wanted})
        if wanted not in found:
            return self._error(ctx.session, 404, "No such version of this task.")
        rollout = self._maybe(ctx, "get_rollout", {"task_id": str(task.id)})
        return self._render(ctx.session, "confirm_activate.html", task=task,
                            version=found[wanted], active=self._active(ctx, str(task.id)),
                            rollout=rollout if rollout and rollout.state == "running" else None)

    def activate(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        try:
            body = msgspec.convert({"version_id": ctx.form.get("version_id", "")},
                                   ActivateRequest)
        except msgspec.ValidationError:
            return self._error(ctx.session, 422, "`version_id` must be a version's UUID.")
        return self._change(ctx, "activate", {"task_id": str(task.id)}, body,
                            f"{UI_PREFIX}tasks/{_q(task.name)}/versions")

    # --- jobs -------------------------------------------------------------------------------

    def jobs(self, ctx: _Ctx) -> UiResponse:
        task_ref = ctx.query.get("task", "")
        query = self._cursor_query(ctx, **({"task_id": task_ref} if task_ref else {}))
        response = self._get(ctx, "list_jobs", query=query)
        return self._render(ctx.session, "jobs.html", jobs=response.payload, task_ref=task_ref,
                            next_cursor=_next_cursor(response))

    def job(self, ctx: _Ctx) -> UiResponse:
        job: Job = self._get(ctx, "get_job", {"job_id": ctx.params["job"]}).payload
        task = self._maybe(ctx, "get_task", {"task_id": str(job.task_id)})
        meta: Mapping[str, Any] = job.job_metadata or {}
        chart = None
        ci = meta.get("paired_diff_ci95")
        if meta.get("paired_diff") is not None:
            lower, upper = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 else (None, None)
            chart = interval_chart([("candidate minus active", meta.get("paired_diff"),
                                     lower, upper)])
        means = None
        if meta.get("candidate_judged_mean") is not None:
            means = interval_chart([
                ("candidate", meta.get("candidate_judged_mean"), None, None),
                ("active", meta.get("active_judged_mean"), None, None),
            ], low=0.0, high=max(1.0, meta.get("candidate_judged_mean") or 0,
                                 meta.get("active_judged_mean") or 0))
        flags = meta.get("flags") if isinstance(meta.get("flags"), list) else []
        demos: list[Any] = []
        demo_count = 0
        baseline = None
        if job.is_terminal and job.prompt_version_id is not None and task is not None:
            # the candidate's text holds the demonstrations it uses (a few-shot section)
            candidate = str(job.prompt_version_id)
            wanted = {candidate} | ({str(meta["baseline_version"])}
                                    if isinstance(meta.get("baseline_version"), int) else set())
            found = self._find_versions(ctx, task, wanted)
            if candidate in found:
                demos, demo_count = demonstrations(found[candidate].prompt_text)
            if str(meta.get("baseline_version")) in found:
                baseline = found[str(meta["baseline_version"])]
        template = "_job.html" if ctx.request.headers.get("hx-request") else "job.html"
        return self._render(ctx.session, template, job=job, task=task, meta=meta, chart=chart,
                            means=means, flags=flags, report=job_report(job, width=100),
                            demos=demos, demo_count=demo_count, baseline=baseline,
                            examples=_judged_examples(meta))

    # --- rollouts ---------------------------------------------------------------------------

    def rollout(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        ref = str(task.id)
        rollout: Rollout | None = self._maybe(ctx, "get_rollout", {"task_id": ref})
        jobs = self._get(ctx, "list_jobs", query={"task_id": ref, "limit": "1"}).payload
        pending = None
        waiting = (jobs[0].job_metadata or {}).get("rollout") if jobs else None
        if isinstance(waiting, dict) and waiting.get("state") == "awaiting_approval":
            pending = jobs[0]
        arms = chart = history = None
        if rollout is not None:
            history = rollout_history(rollout)
            arms = interval_chart([
                ("active", rollout.active.mean, rollout.active.lower, rollout.active.upper),
                ("candidate", rollout.candidate.mean, rollout.candidate.lower,
                 rollout.candidate.upper),
            ], low=0.0, high=1.0)
            d = rollout.difference
            chart = interval_chart([("candidate minus active", d.estimate, d.lower, d.upper)])
        audit = self._get(ctx, "list_audit", query={"task_id": ref, "limit": "20"}).payload
        template = "_rollout.html" if ctx.request.headers.get("hx-request") else "rollout.html"
        return self._render(ctx.session, template, task=task, rollout=rollout, arms=arms,
                            chart=chart, history=history, pending=pending, audit=audit)

    _ACTIONS: ClassVar[dict[str, str]] = {
        "start": "Start a rollout: the candidate serves a share of calls, growing on the ramp, "
                 "while the sequential test compares it with the active version.",
        "approve": "Approve the optimizer's candidate: its rollout starts now.",
        "promote": "Promote the candidate now: it becomes the active version, and every process "
                   "serves it on its next prompt fetch; the rollout ends.",
        "rollback": "Roll back (stop) now: the rollout ends, every process serves the active "
                    "version again on its next prompt fetch; the candidate stays a version.",
    }

    def confirm_rollout(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        action = ctx.params["action"]
        version = None
        if action == "start":
            wanted = ctx.query.get("version", "")
            version = self._find_versions(ctx, task, {wanted}).get(wanted)
            if version is None:
                return self._error(ctx.session, 404, "No such version of this task.")
        return self._render(ctx.session, "confirm_rollout.html", task=task, action=action,
                            explain=self._ACTIONS[action], version=version,
                            active=self._active(ctx, str(task.id)))

    def rollout_action(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        ref = {"task_id": str(task.id)}
        back = f"{UI_PREFIX}tasks/{_q(task.name)}/rollout"
        action = ctx.params["action"]
        if action == "approve":
            return self._change(ctx, "approve_rollout", ref, None, back)
        if action in ("promote", "rollback"):
            return self._change(ctx, "stop_rollout", ref,
                                msgspec.convert({"action": action}, RolloutStopRequest), back)
        fields: dict[str, Any] = {"candidate_version_id": ctx.form.get("version_id", "")}
        try:
            if ctx.form.get("min_samples"):
                fields["min_samples"] = int(ctx.form["min_samples"])
            if ctx.form.get("share"):
                fields["share"] = float(ctx.form["share"])
            body = msgspec.convert(fields, RolloutRequest)
        except (ValueError, msgspec.ValidationError) as exc:
            return self._error(ctx.session, 422, f"The rollout settings are not valid: {exc}")
        return self._change(ctx, "start_rollout", ref, body, back)

    # --- review queue -----------------------------------------------------------------------

    def review(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        response = self._get(ctx, "list_traces", query=self._cursor_query(
            ctx, task_id=str(task.id)))
        todo = [t for t in response.payload if t.score is None]
        return self._render(ctx.session, "review.html", task=task, traces=todo,
                            next_cursor=_next_cursor(response), done=ctx.query.get("done"))

    def review_label(self, ctx: _Ctx) -> UiResponse:
        task = self._task(ctx)
        trace: TraceResult = self._get(ctx, "get_trace", {"trace_id": ctx.form.get("trace_id",
                                                                                   "")}).payload
        if trace.task_id != task.id:
            return self._error(ctx.session, 422, "That trace is not one of this task's.")
        try:
            score = float(ctx.form.get("score", ""))
            fields: dict[str, Any] = {
                "task_id": str(task.id), "output": trace.response_text, "score": score,
                "source": "human", "metadata": {"trace_id": str(trace.id), "via": "ui"},
                "inputs": (trace.metadata or {}).get("inputs"),
            }
            if trace.prompt_version_id is not None:
                fields["prompt_version_id"] = str(trace.prompt_version_id)
            if ctx.form.get("comment"):
                fields["comment"] = ctx.form["comment"]
            if ctx.form.get("correction"):
                fields["correction"] = ctx.form["correction"]
            body = msgspec.convert(fields, FeedbackRequest)
        except (ValueError, msgspec.ValidationError) as exc:
            return self._error(ctx.session, 422, f"The label is not valid: {exc}")
        back = f"{UI_PREFIX}tasks/{_q(task.name)}/review?done={_q(trace.id)}"
        try:
            # The human's entry first, then the trace's score: scoring finds that entry (by
            # the trace id in its metadata) and marks the trace scored, so no second entry.
            self._op(ctx.who, "add_feedback", {}, body=body)
            self._op(ctx.who, "score_trace", {"trace_id": str(trace.id)},
                     body=ScoreRequest(score=score, scored_by="human"))
        except _OpError as exc:
            return self._error(ctx.session, exc.status, exc.detail)
        return self._redirect(back)


_TRACE_FILTERS = ("version", "arm", "min_score", "max_score", "user", "session", "tag", "since",
                  "until")
_FILTER_PAGES = 5
_FILTER_ROWS = 200


def _trace_filter(filters: Mapping[str, str]) -> Callable[[TraceResult], bool] | None:
    """The predicate of the trace list's filters (``None`` without any); `ValueError` names a
    score bound that is not a number."""
    if not filters:
        return None
    bounds: dict[str, float] = {}
    for name in ("min_score", "max_score"):
        if name in filters:
            try:
                bounds[name] = float(filters[name])
            except ValueError:
                raise ValueError(f"`{name}` must be a number, got {filters[name]!r}.") from None

    since = _moment(filters, "since")
    until = _moment(filters, "until")

    def keep(t: TraceResult) -> bool:
        if since is not None or until is not None:
            when = t.created_at
            if when is None:
                return False
            when = when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)
            if (since is not None and when < since) or (until is not None and when > until):
                return False
        if "version" in filters and str(t.prompt_version_id) != filters["version"]:
            return False
        if "arm" in filters and t.arm != filters["arm"]:
            return False
        if bounds and (t.score is None or not bounds.get("min_score", -1.0) <= t.score
                       <= bounds.get("max_score", 2.0)):
            return False
        if "user" in filters and t.user_id != filters["user"]:
            return False
        if "session" in filters and t.session_id != filters["session"]:
            return False
        return "tag" not in filters or filters["tag"] in (t.tags or [])

    return keep


def _moment(filters: Mapping[str, str], name: str) -> datetime | None:
    """The time bound *name* of the trace filters, in UTC (``None`` when not given).

    ISO dates and datetimes; a datetime without an offset is UTC. Both bounds are inclusive;
    a bare date as ``until`` means the end of that day. `ValueError` names the field."""
    text = filters.get(name)
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            return moment + timedelta(days=1, microseconds=-1) if name == "until" else moment
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        raise ValueError(f"`{name}` must be an ISO date or datetime (like 2026-01-31 or "
                         f"2026-01-31T14:30), got {text!r}.") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _judged_examples(meta: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The judged examples a job stored (largest wins, then largest losses), at most
    `_MAX_EXAMPLES`; ``None`` when the job stored no per-example counts."""
    if not isinstance(meta.get("wins"), int):
        return None
    rows = meta.get("examples")
    kept: list[Mapping[str, Any]] = [e for e in rows if isinstance(e, dict)] \
        if isinstance(rows, list) else []
    return kept[:_MAX_EXAMPLES]


_MAX_EXAMPLES = 50


def _diff_rows(left: str, right: str) -> list[tuple[str, str, str, str, str]]:
    """Side-by-side rows ``(kind, left_no, left_line, right_no, right_line)``, kind one of
    ``same``, ``changed``, ``removed``, ``added`` (plain text: the template escapes it)."""
    a, b = left.splitlines(), right.splitlines()
    rows: list[tuple[str, str, str, str, str]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [("same", str(i + 1), a[i], str(j + 1), b[j])
                     for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
            continue
        span = max(i2 - i1, j2 - j1)
        for k in range(span):
            i, j = i1 + k, j1 + k
            has_a, has_b = i < i2, j < j2
            kind = "changed" if has_a and has_b else "removed" if has_a else "added"
            rows.append((kind, str(i + 1) if has_a else "", a[i] if has_a else "",
                         str(j + 1) if has_b else "", b[j] if has_b else ""))
    return rows
