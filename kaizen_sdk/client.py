"""CTClient: the synchronous client of the CT HTTP API.

Everything except sending lives in `kaizen_sdk._http`; `async_client.py` mirrors this file
line for line with ``async``/``await``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from kaizen_sdk._config import Masker
from kaizen_sdk._http import (
    PAGE_SIZE,
    BaseClient,
    PreparedCall,
    check_labelled,
    check_prompt_text,
    check_recipe,
    evaluator_body,
    list_params,
    next_cursor,
    prompt_key,
    require_id,
    segment,
    translate_errors,
)
from kaizen_sdk.errors import CTError, CTTimeoutError
from kaizen_sdk.models import (
    ApiKey,
    ApiKeyCreated,
    AuditEntry,
    ChatMessage,
    Evaluator,
    EvaluatorRequest,
    EvaluatorUpdateRequest,
    FeedbackResult,
    Health,
    Job,
    JobCall,
    LabelRequest,
    OptimizeResult,
    Prompt,
    Rollout,
    Task,
    TaskCosts,
    TraceResult,
    UnpricedModel,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from kaizen_sdk.decorators import TaskDecorator
    from kaizen_sdk.delivery import DeliveryStats

_T = TypeVar("_T")

__all__ = ["CTClient"]

logger = logging.getLogger("kaizen_sdk.client")


class CTClient(BaseClient):
    """Synchronous Python client for Kaizen.

    CTClient wraps all CT API endpoints with typed returns, in-memory TTL caching,
    environment variable configuration, and proper error handling. Use it as a context
    manager so the HTTP connection pool is closed on exit:

    ```python
    from kaizen_sdk import CTClient

    with CTClient(api_key="sk-...") as client:
        prompt = client.get_prompt("summarize_ticket")
        print(prompt.prompt_text)
    ```

    Parameters:
        api_key: CT API key; falls back to ``KAIZEN_API_KEY``. Raises `CTError` if neither
            is set.
        base_url: base URL of the CT server; falls back to ``KAIZEN_BASE_URL``, then
            ``http://localhost:8000``.
        cache_ttl: seconds the in-memory prompt cache keeps a prompt fresh (default
            ``KAIZEN_CACHE_TTL`` or 300).
        timeout: HTTP request timeout in seconds.
        max_retries: retries of retry-safe requests (default ``KAIZEN_MAX_RETRIES`` or 2).
        enabled, capture_content, spool_dir, shutdown_timeout, max_queue_size, mask:
            background tracing options (see `kaizen_sdk._config`).
        verify: ``False``, or a CA bundle path, for TLS verification (default system CAs).
        prompt_wait: longest total wait of a ``@task``'s first call for its prompt (default
            ``KAIZEN_PROMPT_WAIT`` or 1.5 s; ``0`` never waits when there is a default prompt).
        prompt_refresh: seconds between background revalidations of each ``@task``'s prompt
            (default ``KAIZEN_PROMPT_REFRESH`` or 2 s).
        tracer_provider: an OpenTelemetry SDK ``TracerProvider`` for CT spans; default: the
            application's global SDK provider if it set one, else no SDK span is built.
        transport: an ``httpx`` transport to send through (tests).
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        cache_ttl: float | None = None,
        timeout: float = 30.0,
        *,
        max_retries: int | None = None,
        enabled: bool | None = None,
        capture_content: bool | None = None,
        spool_dir: str | None = None,
        shutdown_timeout: float | None = None,
        max_queue_size: int | None = None,
        verify: bool | str | None = None,
        mask: Masker | None = None,
        prompt_wait: float | None = None,
        prompt_refresh: float | None = None,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url,
            cache_ttl,
            timeout,
            max_retries=max_retries,
            enabled=enabled,
            capture_content=capture_content,
            spool_dir=spool_dir,
            shutdown_timeout=shutdown_timeout,
            max_queue_size=max_queue_size,
            verify=verify,
            mask=mask,
            prompt_wait=prompt_wait,
            prompt_refresh=prompt_refresh,
            tracer_provider=tracer_provider,
        )
        self._sleep: Callable[[float], Any] = time.sleep
        self._http = httpx.Client(transport=transport, **self._httpx_options())
        if self._settings.spool_dir and self._settings.enabled:
            self._start_delivery()

    # --- lifecycle ----------------------------------------------------------------------

    def _start_delivery(self) -> None:
        """With a spool directory, start background delivery now: what an earlier process
        left in the spool is replayed even if this one makes no traced call."""
        from kaizen_sdk import tracing  # the OTel SDK loads only when delivery starts

        try:
            tracing.pipeline_for(self)
        except Exception:
            logger.warning("Could not start background delivery for the spool.", exc_info=True)

    def __enter__(self) -> CTClient:
        self._ensure_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Deliver queued background records, then close the HTTP connection pool.

        Calling it again does nothing. Any later call on this client raises `RuntimeError`.
        """
        if self._closed:
            return
        self._closed = True
        if self._pipeline is not None:
            try:
                self._pipeline.shutdown()
            except Exception:
                logger.exception("Shutting down background delivery failed.")
        self._close_prompts()
        self._http.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver every queued background record now (waits up to *timeout* seconds).

        Return True only when every record queued before the call was acknowledged by the
        server or spooled (False: time ran out, or records were dropped or rejected).
        """
        if self._pipeline is None:
            return True
        ok: bool = self._pipeline.flush(timeout)
        return ok

    def stats(self) -> DeliveryStats:
        """Return counts of background delivery (queued, sent, retried, dropped, ...)."""
        if self._pipeline is not None:
            stats: DeliveryStats = self._pipeline.stats()
            return stats
        from kaizen_sdk.delivery import DeliveryStats

        return DeliveryStats()

    def task(self, name: str, **kwargs: Any) -> TaskDecorator:
        """Return the ``@task`` decorator bound to this client (see `kaizen_sdk.task`)."""
        from kaizen_sdk import decorators

        return decorators.task(name, client=self, **kwargs)

    # --- sending ------------------------------------------------------------------------

    def _send(self, call: PreparedCall) -> httpx.Response:
        """Send *call*, retrying retry-safe calls as `BaseClient._retry_delay` decides."""
        attempt = 0
        while True:
            self._ensure_open()
            try:
                with translate_errors(call.label):
                    resp = self._http.send(call.request)
            except CTError as exc:
                delay = self._retry_delay(call, attempt, None, exc)
                if delay is None:
                    raise
            else:
                delay = self._retry_delay(call, attempt, resp, None)
                if delay is None:
                    return resp
                resp.close()
            attempt += 1
            self._sleep(delay)

    # --- the CT API ---------------------------------------------------------------------

    def log_feedback(
        self,
        task_id: str,
        inputs: dict[str, Any] | None = None,
        output: str | None = None,
        score: float | None = None,
        source: str = "sdk",
        metadata: dict[str, Any] | None = None,
        *,
        comment: str | None = None,
        correction: Any = None,
        prompt_version_id: str | None = None,
        arm: str | None = None,
    ) -> FeedbackResult:
        """Log a feedback entry for a task: the training signal of prompt optimization.

        The entry gets a client-made id, so a retried request never stores it twice.
        ``prompt_version_id`` (and ``arm``) name the version that produced *output*: a
        scored entry then counts toward the task's running rollout.

        Example:
            ```python
            result = client.log_feedback("summarize_ticket", inputs={"ticket": "..."},
                                         output="A login issue.", score=0.9,
                                         comment="too vague", correction="Login fails.")
            ```

        ``comment`` is a free-text critique; ``correction`` the output that should have been
        produced (the local optimizer prefers it as a demonstration).
        """
        body = self._feedback_body(
            task_id, inputs, output, score, source, metadata, comment, correction
        )
        if prompt_version_id is not None or arm is not None:
            body = self._served_by(body, prompt_version_id, arm)
        resp = self._send(self._call("POST", "/feedback", body, retry_safe=True))
        return self._result(resp, FeedbackResult)

    def get_prompt(self, task_id: str, *, label: str | None = None) -> Prompt:
        """Return the active prompt of a task, served from the cache within ``cache_ttl``.

        With ``label`` (``staging``, ``eu``, ...), the version that label names
        (``production`` is the active one); a label not set on the task is `CTNotFoundError`.
        Many threads missing the same task at once cause one request.
        """
        name = require_id("task_id", task_id)
        key = prompt_key(name, label)
        params = None if key == name else {"label": label or ""}

        def load() -> Prompt:
            path = f"/prompts/{segment('task_id', name)}"
            resp = self._send(self._call("GET", path, params=params))
            prompt = check_labelled(self._result(resp, Prompt), label)
            self._remember_prompt(key, prompt)
            return prompt

        return self._prompt_cache.get_or_load(key, load)

    def list_prompt_versions(self, task_id: str) -> list[Prompt]:
        """Return every prompt version of a task, newest first (following every page)."""
        path = f"/prompts/{segment('task_id', task_id)}/versions"
        return [p for p in self._iter_pages(path, {"limit": PAGE_SIZE}, list[Prompt])]

    def activate_prompt(self, task_id: str, version_id: str) -> Prompt:
        """Activate a prompt version; this client serves it from the very next call.

        The task's cached prompt (under its name and id) becomes the activated version, so
        the next call of every decorated function on this client runs on it.
        """
        key = require_id("task_id", task_id)
        body = self._activate_body(version_id)
        path = f"/prompts/{segment('task_id', key)}/activate"
        try:
            resp = self._send(self._call("POST", path, body, retry_safe=True))
            prompt = self._result(resp, Prompt)
        except BaseException:
            self._forget_prompt(key)  # the server may have switched versions all the same
            raise
        self._serve_activated(key, prompt)  # the next decorated call runs on it
        return prompt

    def create_prompt_version(
        self,
        task_id: str,
        prompt_text: str | None = None,
        *,
        activate: bool = False,
        messages: Sequence[ChatMessage | dict[str, str]] | None = None,
        config: dict[str, Any] | None = None,
    ) -> Prompt:
        """Add a hand-written prompt version (``optimizer="manual"``); activate it if asked.

        Give ``prompt_text``, or ``messages`` (``[{"role": ..., "content": ...}]``) for a chat
        version; ``config`` holds its model settings (``model``, ``temperature``, ...). A bad
        message or setting is `CTValidationError` naming it, before anything is sent.

        Example:
            ```python
            version = client.create_prompt_version(
                "summarize_ticket", "Summarize in one line: {{ ticket }}", activate=True
            )
            ```
        """
        key = require_id("task_id", task_id)
        body = self._version_body(prompt_text, activate, messages, config)
        path = f"/prompts/{segment('task_id', key)}/versions"
        try:
            resp = self._send(self._call("POST", path, body))
            prompt = self._result(resp, Prompt)
        finally:
            if activate:
                self._forget_prompt(key)
        if activate:
            self._serve_activated(key, prompt)  # the next decorated call runs on it
        return prompt

    def set_label(self, task_id: str, label: str, version_id: str) -> Prompt:
        """Put *label* (not ``production``) on a version, moving it from the one that had it.

        This client serves the version under the label from its next call; processes that
        read the label (``@ct.task(..., label=...)``) see it within ``prompt_refresh``.

        Example:
            ```python
            client.set_label("summarize_ticket", "staging", str(version.id))
            ```
        """
        key = require_id("task_id", task_id)
        path = self._label_call_path(key, label)
        body = self._activate_body(version_id)
        resp = self._send(self._call("PUT", path, LabelRequest(version_id=body.version_id),
                                       retry_safe=True))
        prompt = self._result(resp, Prompt)
        self._serve_labelled(key, label, prompt)
        return prompt

    def remove_label(self, task_id: str, label: str) -> Prompt:
        """Take *label* off the task's version that has it; return that version."""
        key = require_id("task_id", task_id)
        path = self._label_call_path(key, label)
        try:
            resp = self._send(self._call("DELETE", path, retry_safe=True))
            prompt = self._result(resp, Prompt)
        except BaseException:
            self._serve_labelled(key, label, None, removed=True)
            raise
        self._serve_labelled(key, label, prompt, removed=True)
        return prompt

    def trigger_optimization(self, task_id: str) -> OptimizeResult:
        """Queue a prompt-optimization run; returns the job and a cost estimate."""
        path = f"/optimize/{segment('task_id', task_id)}"
        return self._result(self._send(self._call("POST", path)), OptimizeResult)

    def get_job(self, job_id: str) -> Job:
        """Return the current status of an optimization job."""
        path = f"/jobs/{segment('job_id', job_id)}"
        return self._result(self._send(self._call("GET", path)), Job)

    def list_jobs(
        self, task_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> list[Job]:
        """Return up to *limit* optimization jobs, newest first, of one task or of all.

        *cursor* asks for a later page (see `iter_jobs`, which follows every page).
        """
        params = list_params(task_id, limit, cursor)
        resp = self._send(self._call("GET", "/jobs", params=params))
        return self._result(resp, list[Job])

    def wait_for_job(
        self,
        job_id: str,
        *,
        timeout: float = 600,
        poll_interval: float = 2.0,
        on_progress: Callable[[Job], Any] | None = None,
    ) -> Job:
        """Poll a job until its status is terminal and return it.

        ``on_progress(job)`` is called for the first answer and whenever the status or
        ``progress_step`` changes. Raises `CTTimeoutError` after *timeout* seconds.
        """
        require_id("job_id", job_id)
        deadline = self._clock() + timeout
        seen: tuple[str, str | None] | None = None
        while True:
            job = self.get_job(job_id)
            if on_progress is not None and (job.status, job.progress_step) != seen:
                on_progress(job)
            seen = (job.status, job.progress_step)
            if job.is_terminal:
                return job
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise CTTimeoutError(
                    f"Job {job_id} did not finish within {timeout:g} s "
                    f"(last status {job.status})."
                )
            self._sleep(min(poll_interval, remaining))

    def list_tasks(self) -> list[Task]:
        """Return every task configured on the CT server, oldest first (following every page)."""
        return [t for t in self._iter_pages("/tasks", {"limit": PAGE_SIZE}, list[Task])]

    def get_task(self, task_id: str) -> Task:
        """Return one task by UUID or name."""
        path = f"/tasks/{segment('task_id', task_id)}"
        return self._result(self._send(self._call("GET", path)), Task)

    def get_task_costs(self, task_id: str, *, days: float = 7) -> TaskCosts:
        """Return what the task's calls cost over the last *days* days: totals and per version.

        Example:
            ```python
            costs = client.get_task_costs("summarize_ticket", days=1)
            print(costs.cost_usd, costs.cost_per_call_usd)
            ```
        """
        path = f"/tasks/{segment('task_id', task_id)}/costs"
        resp = self._send(self._call("GET", path, params={"days": str(days)}))
        return self._result(resp, TaskCosts)

    def create_task(
        self,
        name: str,
        description: str | None = None,
        schema_json: dict[str, Any] | None = None,
        feedback_threshold: int = 50,
        *,
        prompt_text: str | None = None,
        messages: Sequence[ChatMessage | dict[str, str]] | None = None,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Task:
        """Create a task; extra keyword arguments (``teacher_model``, ...) go into the body.

        With ``prompt_text`` (or ``messages``, and ``config``) the task starts with that
        prompt as version 1, active.
        """
        if prompt_text is not None:
            kwargs["prompt_text"] = check_prompt_text(prompt_text)
        if messages is not None or config is not None:
            parsed, text = check_recipe(messages, config, prompt_text)
            kwargs.update(messages=parsed, config=config)
            if parsed is None:
                kwargs["prompt_text"] = text
            else:
                kwargs.pop("prompt_text", None)  # a chat version's text is made by the server
        body = self._task_body(name, description, schema_json, feedback_threshold, kwargs)
        return self._result(self._send(self._call("POST", "/tasks", body)), Task)

    def update_task(self, task_id: str, **settings: Any) -> Task:
        """Change a task's settings (UUID or name); return the task as it is now.

        Only the settings given change; ``None`` clears one (``feedback_threshold`` cannot be
        cleared). ``evaluator_config`` is merged into the stored one key by key (a key set to
        ``None`` is removed); ``rubric`` and ``task_model`` set one key of it. A bad value or
        an unknown setting raises `CTValidationError` naming it, and nothing changes::

            client.update_task("summarize", teacher_model="gpt-4o", judge_model="gpt-4o-mini")
        """
        path = f"/tasks/{segment('task_id', task_id)}"
        body = self._task_update_body(settings)
        resp = self._send(self._call("PATCH", path, body, retry_safe=True))
        return self._result(resp, Task)

    def score(
        self,
        trace_id: str,
        score: float,
        scored_by: str = "sdk",
        *,
        comment: str | None = None,
        correction: Any = None,
    ) -> TraceResult:
        """Score a captured trace (e.g. ``response.ct_trace_id``) in [0, 1].

        The score also lands on the call's feedback entry (made from the trace if the call
        sent none), so the optimizer learns from it; ``comment`` and ``correction`` go there.
        """
        tid = require_id("trace_id", trace_id)
        body = self._score_body(score, scored_by, comment, correction)
        self._flush_trace(tid)
        path = f"/traces/{segment('trace_id', tid)}/score"
        resp = self._send(self._call("POST", path, body, retry_safe=True))
        return self._result(resp, TraceResult)

    def get_trace(self, trace_id: str) -> TraceResult:
        """Return one stored trace."""
        path = f"/traces/{segment('trace_id', trace_id)}"
        return self._result(self._send(self._call("GET", path)), TraceResult)

    def list_traces(
        self, task_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> list[TraceResult]:
        """Return up to *limit* stored traces, newest first, of one task or of all.

        *cursor* asks for a later page (see `iter_traces`, which follows every page).
        """
        params = list_params(task_id, limit, cursor)
        resp = self._send(self._call("GET", "/traces", params=params))
        return self._result(resp, list[TraceResult])

    def list_feedback(
        self, task_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> list[FeedbackResult]:
        """Return up to *limit* stored feedback entries, newest first, of one task or of all.

        *cursor* asks for a later page (see `iter_feedback`, which follows every page).
        """
        params = list_params(task_id, limit, cursor)
        resp = self._send(self._call("GET", "/feedback", params=params))
        return self._result(resp, list[FeedbackResult])

    def iter_traces(
        self, task_id: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> Iterator[TraceResult]:
        """Yield every stored trace, newest first, of one task or of all, page by page.

        Each page is one request of *page_size* items (at most 1000) that follows the
        server's ``Link: <...>; rel="next"`` header; items stored meanwhile are not repeated:

        ```python
        for item in client.iter_traces("summarize_ticket"):
            ...
        ```
        """
        params = list_params(task_id, page_size)
        yield from self._iter_pages("/traces", params, list[TraceResult])

    def iter_feedback(
        self, task_id: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> Iterator[FeedbackResult]:
        """Yield every feedback entry, newest first, of one task or of all, page by page.

        Each page is one request of *page_size* items (at most 1000) that follows the
        server's ``Link: <...>; rel="next"`` header; items stored meanwhile are not repeated:

        ```python
        for item in client.iter_feedback("summarize_ticket"):
            ...
        ```
        """
        params = list_params(task_id, page_size)
        yield from self._iter_pages("/feedback", params, list[FeedbackResult])

    def iter_jobs(
        self, task_id: str | None = None, *, page_size: int = PAGE_SIZE
    ) -> Iterator[Job]:
        """Yield every optimization job, newest first, of one task or of all, page by page.

        Each page is one request of *page_size* items (at most 1000) that follows the
        server's ``Link: <...>; rel="next"`` header; items stored meanwhile are not repeated:

        ```python
        for item in client.iter_jobs("summarize_ticket"):
            ...
        ```
        """
        params = list_params(task_id, page_size)
        yield from self._iter_pages("/jobs", params, list[Job])

    def iter_job_calls(
        self, job_id: str, *, page_size: int = PAGE_SIZE
    ) -> Iterator[JobCall]:
        """Yield every LLM call of an optimization job, oldest first, page by page."""
        path = f"/jobs/{segment('job_id', job_id)}/calls"
        yield from self._iter_pages(path, {"limit": page_size}, list[JobCall])

    def _iter_pages(
        self, path: str, params: dict[str, str | int], into: type[list[_T]]
    ) -> Iterator[_T]:
        """Yield the items of every page of a list endpoint, following ``rel="next"``."""
        cursor: str | None = None
        while True:
            query = params if cursor is None else {**params, "cursor": cursor}
            resp = self._send(self._call("GET", path, params=query))
            items = self._result(resp, into)
            cursor = next_cursor(resp, cursor)
            yield from items
            if cursor is None:
                return

    def health(self) -> Health:
        """Return the server's health and version."""
        return self._result(self._send(self._call("GET", "/health")), Health)

    # --- rollouts -----------------------------------------------------------------------

    def start_rollout(
        self,
        task_id: str,
        candidate_version_id: str,
        *,
        share: float | None = None,
        ramp: Sequence[float] | None = None,
        min_samples: int = 100,
        alpha: float = 0.05,
        error_margin: float = 0.02,
        latency_margin: float = 0.25,
        max_duration: float = 7 * 24 * 3600.0,
        auto_promote: bool = True,
        auto_rollback: bool = True,
        max_cost_ratio: float | None = None,
    ) -> Rollout:
        """Serve a candidate version to a share of traffic and let live scores decide.

        Give ``share`` (one step) or ``ramp`` (e.g. ``[0.05, 0.2, 0.5, 1.0]``). The candidate
        is promoted or rolled back by an always-valid sequential test once each arm has
        ``min_samples`` scores, or rolled back when a guard (error rate, p95 latency, and
        the cost per call when ``max_cost_ratio`` is given) is breached; see
        docs/rollouts.md.

        Example:
            ```python
            rollout = client.start_rollout("summarize_ticket", job.prompt_version_id,
                                           share=0.2, min_samples=200)
            ```
        """
        key = require_id("task_id", task_id)
        body = self._rollout_body(candidate_version_id, {
            "share": share, "ramp": ramp, "min_samples": min_samples, "alpha": alpha,
            "error_margin": error_margin, "latency_margin": latency_margin,
            "max_duration": max_duration, "auto_promote": auto_promote,
            "auto_rollback": auto_rollback, "max_cost_ratio": max_cost_ratio,
        })
        path = f"/rollouts/{segment('task_id', key)}"
        try:
            return self._result(self._send(self._call("POST", path, body)), Rollout)
        finally:
            self._forget_prompt(key)  # the task now serves (or may serve) a split

    def get_rollout(self, task_id: str) -> Rollout:
        """Return the task's latest rollout: state, per-arm figures, guards and audit log.

        A cached prompt of the task that no longer matches it (a decision, a ramp step) is
        dropped, so the next ``get_prompt`` serves what the server serves now.
        """
        key = require_id("task_id", task_id)
        path = f"/rollouts/{segment('task_id', key)}"
        rollout = self._result(self._send(self._call("GET", path)), Rollout)
        self._sync_prompt_cache(key, rollout)
        return rollout

    def stop_rollout(self, task_id: str, action: str) -> Rollout:
        """End the running rollout: ``"promote"`` the candidate or ``"rollback"`` it."""
        key = require_id("task_id", task_id)
        body = self._stop_body(action)
        path = f"/rollouts/{segment('task_id', key)}/stop"
        try:
            return self._result(self._send(self._call("POST", path, body)), Rollout)
        finally:
            self._forget_prompt(key)

    # --- keys and the audit log (admin) -------------------------------------------------

    def create_key(self, name: str, scope: str) -> ApiKeyCreated:
        """Create a scoped API key (needs an admin key); only this answer carries its secret.

        *scope* is ``"ingest"`` (send traces, feedback and scores, read prompts: what an
        application holds), ``"read"`` (read everything) or ``"admin"`` (everything). The
        server stores only a hash of the secret: keep ``.secret`` now, it is never shown again.
        """
        body = self._key_body(name, scope)
        resp = self._send(self._call("POST", "/keys", body))
        return self._result(resp, ApiKeyCreated)

    def list_keys(self, limit: int = 100, *, cursor: str | None = None) -> list[ApiKey]:
        """Return up to *limit* API keys, oldest first, revoked ones too; never a secret."""
        params = list_params(None, limit, cursor)
        resp = self._send(self._call("GET", "/keys", params=params))
        return self._result(resp, list[ApiKey])

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke an API key: its requests are answered 401 from now on."""
        path = f"/keys/{segment('key_id', key_id)}"
        return self._result(self._send(self._call("DELETE", path)), ApiKey)

    def list_audit(
        self, task_id: str | None = None, limit: int = 100, *, cursor: str | None = None
    ) -> list[AuditEntry]:
        """Return up to *limit* audit-log entries, newest first, of one task or of all.

        Each is one state change (a version created or activated, a job or rollout started,
        a rollout decided, a key created...) with the name of the key that made it.
        """
        params = list_params(task_id, limit, cursor)
        resp = self._send(self._call("GET", "/audit", params=params))
        return self._result(resp, list[AuditEntry])

    def list_unpriced_models(self) -> list[UnpricedModel]:
        """Return the models of the server's recent traces with tokens that its price table
        does not know: their traces show no cost. Raises `CTNotFoundError` on a server
        without prices."""
        resp = self._send(self._call("GET", "/models/unpriced"))
        return self._result(resp, list[UnpricedModel])

    def approve_rollout(self, task_id: str) -> Rollout:
        """Approve and start the automatic rollout of an optimizer candidate.

        A task with ``evaluator_config["auto_rollout"]`` gets no rollout unattended: the
        job's metadata says ``rollout.state == "awaiting_approval"`` (and lists any
        ``flags``) until a human calls this. Raises `CTError` 409 when nothing waits.
        """
        key = require_id("task_id", task_id)
        path = f"/rollouts/{segment('task_id', key)}/approve"
        try:
            return self._result(self._send(self._call("POST", path)), Rollout)
        finally:
            self._forget_prompt(key)

    # --- online evaluators --------------------------------------------------------------

    def create_evaluator(
        self, task_id: str, name: str, kind: str, **settings: Any
    ) -> Evaluator:
        """Add an online evaluator to a task: an LLM judge or a code check (docs/evaluation.md).

        *kind* is ``llm_judge`` (needs ``rubric``, ``judge_model``, ``scale``),
        ``exact_match``, ``normalized_match``, ``regex`` (``pattern``), ``json_schema``
        (``json_schema``) or ``length`` (``min_length`` / ``max_length``); *settings* are
        the other fields of `EvaluatorRequest` (``sample_rate``, ``daily_budget_usd``,
        ``daily_calls``, ``watch``, ``pass_threshold``, ``min_kappa``, ``enabled``)::

            client.create_evaluator("summarize", "judge", "llm_judge", rubric="Is it right?",
                                    judge_model="gpt-4o-mini", scale=[1, 5], sample_rate=0.1)
        """
        path = f"/tasks/{segment('task_id', task_id)}/evaluators"
        body = evaluator_body(EvaluatorRequest, {**settings, "name": name, "kind": kind})
        return self._result(self._send(self._call("POST", path, body)), Evaluator)

    def list_evaluators(self, task_id: str) -> list[Evaluator]:
        """Return a task's evaluators with their status, today's books and agreement."""
        path = f"/tasks/{segment('task_id', task_id)}/evaluators"
        return self._result(self._send(self._call("GET", path)), list[Evaluator])

    def get_evaluator(self, task_id: str, evaluator: str) -> Evaluator:
        """Return one evaluator of a task (by id or name)."""
        path = (f"/tasks/{segment('task_id', task_id)}/evaluators/"
                f"{segment('evaluator', evaluator)}")
        return self._result(self._send(self._call("GET", path)), Evaluator)

    def update_evaluator(self, task_id: str, evaluator: str, **settings: Any) -> Evaluator:
        """Change an evaluator's settings (``None`` clears one); a bad value changes nothing."""
        path = (f"/tasks/{segment('task_id', task_id)}/evaluators/"
                f"{segment('evaluator', evaluator)}")
        body = evaluator_body(EvaluatorUpdateRequest, settings)
        resp = self._send(self._call("PATCH", path, body, retry_safe=True))
        return self._result(resp, Evaluator)

    def remove_evaluator(self, task_id: str, evaluator: str) -> Evaluator:
        """Remove an evaluator (the feedback it stored stays); return it as it was."""
        path = (f"/tasks/{segment('task_id', task_id)}/evaluators/"
                f"{segment('evaluator', evaluator)}")
        return self._result(self._send(self._call("DELETE", path)), Evaluator)

    # --- helpers ------------------------------------------------------------------------

    def _flush_trace(self, trace_id: str) -> None:
        from kaizen_sdk import delivery

        try:
            delivery.flush_trace(trace_id)
        except Exception:
            logger.exception("Delivering trace %s before scoring it failed.", trace_id)
