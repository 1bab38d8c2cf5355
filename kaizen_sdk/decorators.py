"""The ``@task`` decorator: the active prompt in, one CT span and record per call out.

``@ct.task("summarize_ticket")`` on a function (plain, method, ``async def``, generator or
async generator) makes every call

1. get the task's active `Prompt` from the client's cache, which `kaizen_sdk._prompts` keeps
   current in the background (the first call waits at most ``prompt_wait`` seconds, else
   ``default_prompt`` is used) and pass it as the ``prompt`` argument when the function has
   one and the caller did not pass it; while the prompt carries a rollout, the call's arm is
   picked in the process (`kaizen_sdk._rollout.choose_arm`) and its version served;
2. run inside an OpenTelemetry span ``ct.task <name>`` that nests under the current span,
   with a fresh UUID7 trace id (`current_trace_id`);
3. hand a record (inputs without ``prompt``, output, prompt version, latency) to the
   client's background pipeline, which posts it to the CT server off the caller's thread.

Everything that can be decided once (the ``prompt`` parameter, the span name, argument
names) is decided when the function is decorated; the client is resolved on first call.
Inputs are captured when the call starts (immutable scalars as they are, anything else as
JSON at once), so later mutation of an argument does not change what is recorded; objects
JSON does not know become their (truncated) ``repr``. Nothing here raises into the caller
except the function's own exceptions and a `CTError` for a task with no prompt at all.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

import msgspec
import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from kaizen_sdk import _default, tracing
from kaizen_sdk._config import prompt_label
from kaizen_sdk._context import CONTEXT
from kaizen_sdk._http import prompt_key
from kaizen_sdk._prompts import PromptFetcher, missing_prompt, prompt_fetcher
from kaizen_sdk._record import (
    CURRENT,
    UUID7_HEAD,
    UUID7_VARIANT,
    CallRecord,
    CurrentCall,
    fill_usage,
    random_bits,
    uuid7_head,
)
from kaizen_sdk._rollout import assignment_key, choose_arm
from kaizen_sdk._safe_json import MAX_TEXT_CHARS, enc_hook, safe_json
from kaizen_sdk._sdk_spans import UNSEEN
from kaizen_sdk._sdk_spans import entry as span_entry
from kaizen_sdk.models import Prompt
from kaizen_sdk.tracing import Attr

if TYPE_CHECKING:
    from kaizen_sdk.async_client import AsyncCTClient
    from kaizen_sdk.client import CTClient

__all__ = [
    "PROMPT",
    "AsyncTaskFunction",
    "AsyncTaskRun",
    "TaskDecorator",
    "TaskFunction",
    "TaskRun",
    "current_prompt",
    "current_trace_id",
    "task",
]

P = ParamSpec("P")
_P = ParamSpec("_P")  # a bound method's parameters (its function's without the first)
_S = TypeVar("_S")  # the instance a method is bound to
_R = TypeVar("_R")
_S_contra = TypeVar("_S_contra", contravariant=True)
_R_co = TypeVar("_R_co", covariant=True)

_log = logging.getLogger("kaizen_sdk.decorators")

R = TypeVar("R")

_SIMPLE = (str, int, float, bool, type(None))


# --- public helpers ------------------------------------------------------------------------


def current_trace_id() -> str | None:
    """Return the trace id of the running ``@task`` call (this thread / asyncio task), or None.

    Example:
        ```python
        @ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
        def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            log.info("trace %s", ct.current_trace_id())
            ...
        ```
    """
    call = CURRENT.get()
    return None if call is None else call.trace_id


def current_prompt() -> Prompt | None:
    """Return the prompt the running ``@task`` call uses, or None outside a task call."""
    call = CURRENT.get()
    return None if call is None else call.prompt


class TaskRun:
    """What ``fn.call(...)`` returns beside the result: the call's trace id and prompt.

    Example:
        ```python
        summary, run = summarize.call(ticket="Printer on fire")
        run.score(0.9)             # queued with the trace; delivered in the background
        ```

    Attributes:
        task (str): the task's name.
        trace_id (str): the call's trace id (as `current_trace_id` returned inside the call).
        prompt: the prompt the call ran with.
    """

    __slots__ = ("_client", "prompt", "task", "trace_id")

    def __init__(
        self,
        task: str,
        trace_id: str,
        prompt: Prompt | None,
        client: CTClient | AsyncCTClient | None,
    ) -> None:
        self.task = task
        self.trace_id = trace_id
        # the prompt the call ran with; `PROMPT` in the rare call that ran without one
        self.prompt: Prompt = prompt if prompt is not None else PROMPT
        self._client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, trace_id={self.trace_id!r})"

    def score(self, value: float, scored_by: str = "sdk") -> str | None:
        """Score this call's trace in [0, 1] on the background path; never raises or blocks.

        The score travels like the trace (after it, retried, spooled, applied once): return
        its id, or ``None`` when tracing is off (``KAIZEN_ENABLED=false``, no client) or the
        score cannot be sent (a value outside [0, 1], a closed client: logged). For a
        synchronous score that returns the stored trace, use ``CTClient.score``.
        """
        return _queue_score(self._client, self.trace_id, value, scored_by)


def _queue_score(
    client: CTClient | AsyncCTClient | None, trace_id: str, value: float, scored_by: str
) -> str | None:
    if client is None:
        return None
    try:
        if not client.settings.enabled:
            return None
        return tracing.pipeline_for(client).score(trace_id, value, scored_by)
    except Exception:  # the caller comes first
        _log.warning("Could not queue a score for trace %s.", trace_id, exc_info=True)
        return None


class AsyncTaskRun(TaskRun):
    """`TaskRun` of an ``async def`` task: ``await run.score(value)`` (it never waits)."""

    __slots__ = ()

    async def score(self, value: float, scored_by: str = "sdk") -> str | None:  # type: ignore[override]
        """Score this call's trace in [0, 1] on the background path (see `TaskRun.score`)."""
        return _queue_score(self._client, self.trace_id, value, scored_by)


PROMPT: Prompt = Prompt(status="injected")
"""The default of a task function's ``prompt`` parameter, for type checkers.

Write ``prompt: ct.Prompt = ct.PROMPT``: callers then leave ``prompt`` out (the decorator
passes the active prompt) or pass one (``prompt=ct.Prompt(prompt_text="...")``; a plain
string works at run time too) and both type-check. The function never sees this value
while a prompt is available: the decorator always passes one.
"""


class _Method(Protocol[_S_contra, _P, _R_co]):
    """A callable whose first positional parameter takes *_S_contra*: a method to bind.

    (A callable protocol rather than ``Concatenate``: both mypy and pyright then check that
    the first parameter takes the instance, so a staticmethod is never bound.)
    """

    def __call__(self, instance: _S_contra, /, *args: _P.args, **kwargs: _P.kwargs) -> _R_co: ...


class TaskFunction(Protocol[P, R]):
    """A function decorated with ``@task``: call it as before, or ``.call()`` for the run.

    ``summarize("…")`` returns what the function returns; ``summarize.call("…")`` returns
    ``(result, run)`` with the call's `TaskRun`. Name, docstring and signature are the
    function's own (``functools.wraps``-style).
    """

    __wrapped__: Callable[P, R]
    __name__: str
    __qualname__: str
    __doc__: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def call(self, *args: P.args, **kwargs: P.kwargs) -> tuple[R, TaskRun]:
        """Call the function with its own arguments; return ``(result, run)``.

        *run* is the call's `TaskRun`: its ``trace_id``, the ``prompt`` it ran with and
        ``run.score(value)``, which queues a score for this very call.

        Example:
            ```python
            summary, run = summarize.call("Printer on fire")
            run.score(0.9)
            ```
        """
        ...

    # A method keeps its parameters once bound: ``bot.answer`` drops ``self`` (a first
    # parameter that takes the instance) and checks the rest. Anything else (on the class,
    # a classmethod or staticmethod) is typed loosely, as before.
    @overload
    def __get__(
        self: _Method[_S, _P, _R], instance: _S, owner: type | None = None
    ) -> TaskFunction[_P, _R]: ...

    @overload
    def __get__(self, instance: Any, owner: type | None = None) -> TaskFunction[..., R]: ...


class AsyncTaskFunction(Protocol[P, R]):
    """An ``async def`` function decorated with ``@task``; ``await fn.call(...)`` for the run."""

    __wrapped__: Callable[P, Coroutine[Any, Any, R]]
    __name__: str
    __qualname__: str
    __doc__: str | None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]: ...

    def call(
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, tuple[R, AsyncTaskRun]]:
        """Call the function with its own arguments; ``await`` it for ``(result, run)``.

        *run* is the call's `AsyncTaskRun`; ``await run.score(value)`` queues a score.
        """
        ...

    @overload
    def __get__(
        self: _Method[_S, _P, Coroutine[Any, Any, _R]], instance: _S,
        owner: type | None = None,
    ) -> AsyncTaskFunction[_P, _R]: ...

    @overload
    def __get__(
        self, instance: Any, owner: type | None = None
    ) -> AsyncTaskFunction[..., R]: ...


class TaskDecorator(Protocol):
    """What ``ct.task(name)`` returns: apply it to a function (sync, async or generator)."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTaskFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> TaskFunction[P, R]: ...


# --- per-call state ------------------------------------------------------------------------


class _Call(CurrentCall):
    """`CurrentCall` plus what the decorator needs to finish the call."""

    __slots__ = (
        "arm", "cctx", "ct_token", "ctx", "inputs", "otel_token", "parent", "pipeline",
        "recording", "span", "started", "version_id",
    )

    arm: str | None
    cctx: Any  # the ct.context fields in force (a CallContext), or None
    ct_token: Any
    ctx: Any
    inputs: Any
    otel_token: Any
    parent: CurrentCall | None
    pipeline: tracing.Pipeline
    recording: bool
    span: Any
    started: float
    version_id: str | None


_UNSET: Any = object()
_ENCODER = msgspec.json.Encoder(enc_hook=enc_hook)
_bits = random_bits  # hot path: new_trace_id inlined, its names bound here
_HEAD = UUID7_HEAD
_VARIANT = UUID7_VARIANT
_new_head = uuid7_head
_now_ns = time.time_ns
_get_current = CURRENT.get
_get_context = CONTEXT.get  # current_context() without its frame
_set_current = CURRENT.set
_reset_current = CURRENT.reset
_attach = otel_context.attach
_detach = otel_context.detach
_in_context = trace.set_span_in_context
_otel_current = otel_context.get_current
_Following = tracing.FollowingTracer
_NON_RECORDING = tracing.NON_RECORDING
_new_call = object.__new__
_A_TASK = Attr.TASK_NAME
_A_TRACE = Attr.TRACE_ID
_A_VERSION_NUMBER = Attr.PROMPT_VERSION_NUMBER
_A_VERSION_ID = Attr.PROMPT_VERSION_ID
_A_ARM = Attr.ROLLOUT_ARM
_A_TAGS = Attr.TAGS
# TODO: the semconv constants once user.id and session.id leave incubating (experimental
# as of semconv 1.37).
_A_USER = "user.id"
_A_SESSION = "session.id"
_CONTEXT_KEYS = ("user_id", "session_id")  # ct.context fields assign_by may name
# OpenInference keys, so Phoenix shows a task as a chain with its input and output.
# TODO: semconv constants if OTel adopts them (none as of semconv 1.37).
_A_KIND = "openinference.span.kind"
_A_IN = "input.value"
_A_IN_MIME = "input.mime_type"
_A_OUT = "output.value"
_JSON = "application/json"


_MAX_ITEMS = 1000
"""Items kept of a dict, list, tuple or set captured as an input or output; the rest are
summarised, so a huge argument costs the caller a bounded conversion."""


def _capped(value: Any, depth: int = 0) -> Any:
    """*value* with containers longer than `_MAX_ITEMS` cut (two levels deep), or itself."""
    kind = type(value)
    if kind is dict:
        if len(value) > _MAX_ITEMS:
            head = dict(itertools.islice(value.items(), _MAX_ITEMS))
            head["ct.truncated"] = f"{len(value) - _MAX_ITEMS} more items"
            value = head
        if depth < 1:
            return {k: _capped(v, depth + 1) for k, v in value.items()}
        return value
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        if len(value) > _MAX_ITEMS:
            head_items = list(itertools.islice(value, _MAX_ITEMS))
            head_items.append(f"…[{len(value) - _MAX_ITEMS} more items]")
            value = head_items
        if depth < 1 and kind is not set and kind is not frozenset:
            return [_capped(v, depth + 1) for v in value]
    return value


def _snapshot(value: Any) -> Any:
    """Freeze a value as JSON now (immutable scalars are kept as they are). Never raises."""
    if type(value) in _SIMPLE:
        return value
    try:
        value = _capped(value)
    except Exception:
        return safe_json(value)
    try:
        data = _ENCODER.encode(value)
    except Exception:
        return safe_json(value)
    if len(data) > MAX_TEXT_CHARS:
        return safe_json(value)
    return msgspec.Raw(data)


def _snapshot_inputs(values: dict[str, Any]) -> Any:
    """Freeze the inputs now. Never raises.

    A dict of short immutable scalars is kept as it is (it is ours, and nothing can change
    it): it is encoded with its batch, in the exporter's thread. Anything else (lists,
    objects, long strings) becomes JSON at once.
    """
    for value in values.values():
        kind = type(value)
        if kind is str:
            if len(value) > MAX_TEXT_CHARS:
                break
        elif kind not in _SIMPLE:
            break
    else:
        return values
    try:
        values = _capped(values)
    except Exception:
        return safe_json({"repr": "<inputs could not be captured>"})
    for value in values.values():
        kind = type(value)
        if (kind is str or kind is bytes) and len(value) > MAX_TEXT_CHARS:
            break
    else:
        try:
            data = _ENCODER.encode(values)
        except Exception:
            pass
        else:
            if len(data) <= 4 * MAX_TEXT_CHARS:
                return msgspec.Raw(data)
    raw = safe_json(values)
    if memoryview(raw)[:1].tobytes() != b"{":
        raw = safe_json({"repr": bytes(raw).decode("utf-8", "replace")})
    return raw


def _as_prompt(given: Any) -> Prompt | None:
    if isinstance(given, Prompt):
        return given
    if isinstance(given, str):
        return Prompt(prompt_text=given, version_number=0, status="given")
    return None


class _TaskSpec:
    """Everything resolved once per decorated function, and the per-call helpers."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        client: CTClient | AsyncCTClient | None,
        default_prompt: Prompt | None,
        capture_inputs: bool,
        capture_output: bool,
        log_feedback: bool,
        metadata: dict[str, Any] | None,
        assign_by: str | None = None,
        label: str | None = None,
    ) -> None:
        self.name = name
        self.label = label
        self.key = prompt_key(name, label)  # the prompt-cache key: task and label
        self.span_name = f"ct.task {name}"
        self.default = default_prompt
        self.capture_inputs = capture_inputs
        self.capture_output = capture_output
        self.log_feedback = log_feedback
        self.metadata = dict(metadata) if metadata else None
        self._given_client = client
        self._client: CTClient | AsyncCTClient | None = None
        self._pipeline: tracing.Pipeline | None = None
        self._prompts: PromptFetcher | None = None
        self._cache: Any = None
        self._pv: tuple[Prompt | None, str | None] = (None, None)
        self._fast: tuple[Any, Any, Any] = UNSEEN  # see _sdk_spans
        params = list(inspect.signature(fn).parameters.values())
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = [p.name for p in params if p.kind in kinds]
        self.names = tuple(positional)
        self.names_bound = tuple(positional[1:])
        self.var_pos = next(
            (p.name for p in params if p.kind is inspect.Parameter.VAR_POSITIONAL), None
        )
        self.defaults = {
            p.name: p.default
            for p in params
            if p.default is not inspect.Parameter.empty and p.name != "prompt"
        }
        prompt_param = next((p for p in params if p.name == "prompt"), None)
        self.takes_prompt = prompt_param is not None and prompt_param.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        self.prompt_index = positional.index("prompt") if "prompt" in positional else None
        self.assign_by = assign_by
        self.assign_index: int | None = None
        if assign_by is not None:
            known = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
            if assign_by not in known and assign_by not in _CONTEXT_KEYS and not takes_any:
                raise TypeError(
                    f"@task({name!r}, assign_by={assign_by!r}): {fn.__qualname__} has no "
                    f"parameter {assign_by!r}, and it is not a ct.context field (user_id, "
                    "session_id)."
                )
            if assign_by in positional:
                self.assign_index = positional.index(assign_by)

    # client and pipeline -------------------------------------------------------------------

    def client_or_none(self) -> CTClient | AsyncCTClient | None:
        if self._given_client is not None:
            return self._given_client
        return _default.current()

    def _resolve(self) -> PromptFetcher | None:
        """Find the client (lazily, the default one), its pipeline and prompt fetcher."""
        client = self._given_client
        if client is None:
            client = _default.client_for_tasks()
        if client is not self._client or (client is not None and self._prompts is None):
            if client is None:
                self._pipeline = self._prompts = self._cache = None
            else:
                # KAIZEN_PROMPT_LABEL when the decorator names no label (read once per client)
                self.key = prompt_key(self.name, self.label or prompt_label())
                pipeline = tracing.pipeline_for(client)
                prompts = prompt_fetcher(client)
                # the hot path reads _prompts first: publish it last
                self._pipeline = pipeline
                self._cache = prompts.cache
                self._prompts = prompts
            self._client = client
        return self._prompts

    # prompt --------------------------------------------------------------------------------

    def _given(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Return the prompt argument the caller passed, or `_UNSET`."""
        if "prompt" in kwargs:
            return kwargs["prompt"]
        index = self.prompt_index
        if index is not None:
            if instance is not None:
                index -= 1
            if 0 <= index < len(args):
                return args[index]
        return _UNSET

    def prompt_nowait(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Return this call's prompt without I/O, or `_UNSET` when a cold fetch is needed."""
        if self.takes_prompt:
            given = self._given(instance, args, kwargs)
            if given is not _UNSET:
                return _as_prompt(given)
        prompts = self._prompts
        if prompts is None or (
            self._given_client is None and _default.current() is not self._client
        ):
            prompts = self._resolve()
            if prompts is None:
                return self.default
        found = self._cache.lookup(self.key)
        if found is not None:
            if not found[1] or prompts.failing:
                prompts.hit(self.key, found[1])
            return found[0]
        prompt = prompts.peek(self.key, self.default)
        return _UNSET if prompt is None else prompt

    def prompt_io(self) -> Prompt:
        """The cold path: wait up to prompt_wait for the fetch, else the default (or `CTError`)."""
        prompts = self._resolve()
        if prompts is None:
            if self.default is None:
                raise missing_prompt(self.name, "no CT client is configured")
            return self.default
        return prompts.get(self.key, self.default)

    # rollout -------------------------------------------------------------------------------

    def assign(
        self, prompt: Prompt, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Prompt, str | None]:
        """Pick the rollout arm of this call: the served prompt and its arm. Never raises."""
        try:
            if self.takes_prompt and self._given(instance, args, kwargs) is not _UNSET:
                return prompt, None  # the caller chose the prompt: served as given
            name = self.assign_by
            arguments: dict[str, Any] = {}
            if name is not None:
                if name in kwargs:
                    arguments[name] = kwargs[name]
                elif self.assign_index is not None:
                    index = self.assign_index - (instance is not None)
                    if 0 <= index < len(args):
                        arguments[name] = args[index]
                    elif name in self.defaults:
                        arguments[name] = self.defaults[name]
            return choose_arm(prompt, assignment_key(name, arguments))
        except Exception:  # the caller comes first: serve the active version
            _log.warning("Could not assign a rollout arm for task %r.", self.name,
                         exc_info=True)
            return prompt, None

    # span start / finish -------------------------------------------------------------------

    def begin(
        self,
        instance: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        prompt: Any,
        enter: bool,
    ) -> _Call:
        """Start a call: resolve and inject the prompt, make the trace id, start the span.

        *prompt* is `_UNSET` to resolve it here (a cold start waits up to prompt_wait).
        """
        name = self.name
        if prompt is _UNSET:
            prompts = self._prompts
            found = None
            if (
                prompts is not None
                and (self._given_client is not None or _default.current() is self._client)
                and (not self.takes_prompt or self._given(instance, args, kwargs) is _UNSET)
            ):
                found = self._cache.lookup(self.key)
            if found is not None and found[1] and not prompts.failing:  # type: ignore[union-attr]
                prompt = found[0]  # the hot path: a fresh cached version
            else:
                prompt = self.prompt_nowait(instance, args, kwargs)
                if prompt is _UNSET:
                    prompt = self.prompt_io()
        arm = None
        if prompt is not None and prompt.rollout is not None:  # the one check without one
            prompt, arm = self.assign(prompt, instance, args, kwargs)
        if self.takes_prompt and prompt is not None and "prompt" not in kwargs:
            index = self.prompt_index
            if index is None or len(args) <= index - (instance is not None):
                kwargs["prompt"] = prompt
        ms = _now_ns() // 1_000_000
        head = _HEAD[0]
        h = "%016x" % (_bits(62) | _VARIANT)
        trace_id = f"{head[1] if head[0] == ms else _new_head(ms)}{h[:4]}-{h[4:]}"
        call: _Call = _new_call(_Call)  # CurrentCall.__init__ without its frame
        call.task = name
        call.trace_id = trace_id
        call.prompt = prompt
        call.usage = None
        call.arm = arm
        cctx = call.cctx = _get_context()
        parent = call.parent = _get_current()
        pipeline = call.pipeline = self._pipeline  # type: ignore[assignment]
        if pipeline is None or pipeline.delivery is None:
            call.span = call.otel_token = call.ctx = None
            call.ct_token = _set_current(call) if enter else None
            return call
        try:
            version_id = None
            if prompt is not None and prompt.id is not None:
                cached = self._pv
                if cached[0] is not prompt:
                    cached = self._pv = (prompt, str(prompt.id))
                version_id = cached[1]
            call.version_id = version_id
            tracer = pipeline.tracer
            if type(tracer) is _Following:
                tracer = tracer.resolve()
            octx = _otel_current()  # read once: the parent of the span and the base of its own
            if type(tracer) in _NON_RECORDING:  # nothing reads attributes: build none
                span = call.span = tracer.start_span(self.span_name, octx)
                recording = False
            else:
                attributes: dict[str, Any] = {_A_KIND: "CHAIN", _A_TASK: name, _A_TRACE: trace_id}
                if prompt is not None:
                    attributes[_A_VERSION_NUMBER] = prompt.version_number
                    if version_id is not None:
                        attributes[_A_VERSION_ID] = version_id
                if parent is not None:
                    attributes[Attr.PARENT_TRACE_ID] = parent.trace_id
                if arm is not None:
                    attributes[_A_ARM] = arm
                if cctx is not None:
                    if cctx.user_id is not None:
                        attributes[_A_USER] = cctx.user_id
                    if cctx.session_id is not None:
                        attributes[_A_SESSION] = cctx.session_id
                    if cctx.tags:
                        attributes[_A_TAGS] = cctx.tags
                fast = self._fast
                if fast[0] is not tracer or (
                    fast[1] is not None and fast[1] is not tracer.span_processor._span_processors
                ):
                    fast = self._fast = span_entry(tracer)
                if fast[2] is not None:  # nothing reads them before the end: ours, as they are
                    span = call.span = tracer.start_span(self.span_name, octx)
                    recording = type(span) is fast[2]  # else sampled out: nothing to keep
                    if recording:
                        span._attributes._dict.update(attributes)  # type: ignore[attr-defined]
                else:
                    span = call.span = tracer.start_span(
                        self.span_name, octx, attributes=attributes
                    )
                    recording = span.is_recording()
            if self.capture_inputs:
                names = self.names if instance is None else self.names_bound
                if self.defaults:
                    values = dict(self.defaults)
                    if args:
                        values.update(zip(names, args, strict=False))
                else:
                    values = dict(zip(names, args, strict=False))
                if len(args) > len(names) and self.var_pos is not None:
                    values[self.var_pos] = args[len(names) :]
                if kwargs:
                    values.update(kwargs)
                    values.pop("prompt", None)
                inputs = call.inputs = _snapshot_inputs(values)
                if pipeline.capture_on_spans:
                    text = _attr_text(inputs)
                    span.set_attributes({Attr.INPUTS: text, _A_IN: text, _A_IN_MIME: _JSON})
            else:
                call.inputs = None
            call.recording = recording
            if not recording:
                call.started = time.perf_counter()
        except Exception:  # SDK trouble never reaches the caller: run untraced
            _log.warning("Could not start the span of task %r.", name, exc_info=True)
            call.span = call.otel_token = call.ctx = None
            call.ct_token = _set_current(call) if enter else None
            return call
        if enter:
            call.ct_token = _set_current(call)
            call.otel_token = _attach(_in_context(span, octx))
        else:  # a generator: enter() and leave() around each step
            call.ctx = _in_context(span, octx)
            call.ct_token = call.otel_token = None
        return call

    def finish(self, call: _Call, result: Any, error: BaseException | None) -> None:
        """End a call: leave its context, end the span, queue the record. Never raises."""
        if call.ct_token is not None:
            _reset_current(call.ct_token)
        span = call.span
        if span is None:
            return
        if call.otel_token is not None:
            _detach(call.otel_token)
        try:
            prompt = call.prompt
            parent = call.parent
            pipeline = call.pipeline
            output = None
            if error is None:
                if self.capture_output:
                    output = result if type(result) in _SIMPLE else _snapshot(result)
                    if output is not None and pipeline.capture_on_spans:
                        text = _attr_text(output)
                        span.set_attributes({Attr.OUTPUT: text, _A_OUT: text})
            elif call.recording:
                span.set_status(Status(StatusCode.ERROR, _short(error)))
                span.record_exception(error)
                span.set_attribute("error.type", type(error).__qualname__)
            template = None if prompt is None else prompt.prompt_text
            version_id = call.version_id
            if version_id is not None:  # a served version the server fills in: name it only
                prompts = self._prompts
                if prompts is not None and prompts.referable.get(version_id) == template:
                    template = None
            record = CallRecord(
                call.trace_id,
                self.name,
                template,
                None,
                None,
                None,
                call.inputs,
                output,
                version_id,
                None if prompt is None else prompt.version_number,
                None if parent is None else parent.trace_id,
                self.log_feedback and error is None,
                self.metadata,
                None if error is None else type(error).__qualname__,
                None,
                call.arm,
            )
            if call.usage is not None:  # its LLM calls' model and tokens: the server prices it
                fill_usage(record, call.usage)
            if prompt is not None and prompt is self.default and prompt.id is None:
                record.prompt_is_default = True  # may become version 1; nothing else may
                record.prompt_messages = prompt.messages
                record.prompt_config = prompt.config
            cctx = call.cctx
            if cctx is not None:
                record.user_id = cctx.user_id
                record.session_id = cctx.session_id
                record.tags = cctx.tags or None
            # the record goes to the delivery queue itself, never through a span processor
            if call.recording:
                start = getattr(span, "start_time", None)
                record.latency_ms = 0.0 if start is None else (time.time_ns() - start) / 1e6
            else:
                record.latency_ms = (time.perf_counter() - call.started) * 1000.0
            delivery = pipeline.delivery  # begin() made no span without one
            if delivery is not None:
                delivery.submit(record)
        except Exception:
            _log.warning("Could not record a call of task %r.", self.name, exc_info=True)
        span.end()

    # per-step context for generators -------------------------------------------------------

    @staticmethod
    def enter(call: _Call) -> tuple[Any, Any]:
        ct_token = _set_current(call)
        return ct_token, (_attach(call.ctx) if call.ctx is not None else None)

    @staticmethod
    def leave(tokens: tuple[Any, Any]) -> None:
        if tokens[1] is not None:
            _detach(tokens[1])
        _reset_current(tokens[0])


def _short(exc: BaseException) -> str:
    try:
        return f"{type(exc).__qualname__}: {exc}"[:200]
    except Exception:
        return type(exc).__qualname__


def _attr_text(value: Any) -> str:
    if type(value) is str:
        text: str = value
    elif type(value) is msgspec.Raw:
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = bytes(safe_json(value)).decode("utf-8", "replace")
    if len(text) > MAX_TEXT_CHARS:
        return f"{text[:MAX_TEXT_CHARS]}…[truncated {len(text) - MAX_TEXT_CHARS} chars]"
    return text


def _run_of(spec: _TaskSpec, call: _Call, cls: type[TaskRun]) -> Any:
    return cls(spec.name, call.trace_id, call.prompt, spec.client_or_none())


# --- the wrappers --------------------------------------------------------------------------


def _sync_wrapper(spec: _TaskSpec, with_run: bool) -> Callable[..., Any]:
    begin, finish = spec.begin, spec.finish

    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = begin(instance, args, kwargs, _UNSET, True)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            finish(call, None, exc)
            raise
        finish(call, result, None)
        return result

    def call_wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = begin(instance, args, kwargs, _UNSET, True)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            finish(call, None, exc)
            raise
        finish(call, result, None)
        return result, _run_of(spec, call, TaskRun)

    return call_wrapper if with_run else wrapper


def _async_wrapper(spec: _TaskSpec, with_run: bool) -> Callable[..., Any]:
    begin, finish, nowait = spec.begin, spec.finish, spec.prompt_nowait

    async def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        prompt = nowait(instance, args, kwargs)
        if prompt is _UNSET:  # cold start: the bounded wait runs off the event loop
            prompt = await asyncio.get_running_loop().run_in_executor(None, spec.prompt_io)
        call = begin(instance, args, kwargs, prompt, True)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:  # asyncio.CancelledError counts as a failed call
            finish(call, None, exc)
            raise
        finish(call, result, None)
        if with_run:
            return result, _run_of(spec, call, AsyncTaskRun)
        return result

    return wrapper


def _gen_wrapper(spec: _TaskSpec, with_run: bool) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        call = spec.begin(instance, args, kwargs, _UNSET, False)
        gen = _traced_gen(spec, call, wrapped(*args, **kwargs))
        if with_run:
            return gen, _run_of(spec, call, TaskRun)
        return gen

    return wrapper


def _traced_gen(spec: _TaskSpec, call: _Call, inner: Iterator[Any]) -> Iterator[Any]:
    chunks: list[Any] = []
    send: Any = None
    throw: BaseException | None = None
    try:
        while True:
            tokens = spec.enter(call)
            try:
                if throw is not None:
                    item, throw = inner.throw(throw), None  # type: ignore[attr-defined]
                else:
                    item = inner.send(send)  # type: ignore[attr-defined]
            except StopIteration:
                break
            finally:
                spec.leave(tokens)
            chunks.append(item)
            try:
                send = yield item
            except GeneratorExit:
                tokens = spec.enter(call)
                try:
                    inner.close()  # type: ignore[attr-defined]
                finally:
                    spec.leave(tokens)
                raise
            except BaseException as exc:
                throw = exc
    except GeneratorExit:
        spec.finish(call, _joined(chunks), None)
        raise
    except BaseException as exc:
        spec.finish(call, None, exc)
        raise
    spec.finish(call, _joined(chunks), None)


def _agen_wrapper(spec: _TaskSpec, with_run: bool) -> Callable[..., Any]:
    def wrapper(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        prompt = spec.prompt_nowait(instance, args, kwargs)
        if prompt is _UNSET:  # cold start without a loop to wait on: use the default
            prompt = spec.default if spec.default is not None else spec.prompt_io()
        call = spec.begin(instance, args, kwargs, prompt, False)
        gen = _traced_agen(spec, call, wrapped(*args, **kwargs))
        if with_run:
            return gen, _run_of(spec, call, TaskRun)
        return gen

    return wrapper


async def _traced_agen(spec: _TaskSpec, call: _Call, inner: Any) -> AsyncIterator[Any]:
    chunks: list[Any] = []
    send: Any = None
    throw: BaseException | None = None
    try:
        while True:
            tokens = spec.enter(call)
            try:
                if throw is not None:
                    item, throw = await inner.athrow(throw), None
                else:
                    item = await inner.asend(send)
            except StopAsyncIteration:
                break
            finally:
                spec.leave(tokens)
            chunks.append(item)
            try:
                send = yield item
            except GeneratorExit:
                tokens = spec.enter(call)
                try:
                    await inner.aclose()
                finally:
                    spec.leave(tokens)
                raise
            except BaseException as exc:
                throw = exc
    except GeneratorExit:
        spec.finish(call, _joined(chunks), None)
        raise
    except BaseException as exc:
        spec.finish(call, None, exc)
        raise
    spec.finish(call, _joined(chunks), None)


def _joined(chunks: list[Any]) -> Any:
    if chunks and all(type(c) is str for c in chunks):
        return "".join(chunks)
    return chunks


if TYPE_CHECKING:
    _FunctionWrapper = wrapt.FunctionWrapper[..., Any]
    _BoundFunctionWrapper = wrapt.BoundFunctionWrapper[..., Any]
else:  # before wrapt 2.2 the classes are not subscriptable at run time
    _FunctionWrapper = wrapt.FunctionWrapper
    _BoundFunctionWrapper = wrapt.BoundFunctionWrapper


class _TaskWrapper(_FunctionWrapper):
    """The decorated function: behaves like the original, plus ``.call()``."""

    _self_call_wrapper: Callable[..., Any]
    _self_spec: _TaskSpec

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function; return ``(result, run)`` (awaitable for ``async def``)."""
        return self._self_call_wrapper(self.__wrapped__, None, args, kwargs)


class _BoundTaskWrapper(_BoundFunctionWrapper):
    """`_TaskWrapper` bound to an instance or class."""

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Call the method; return ``(result, run)`` (awaitable for ``async def``)."""
        parent = self._self_parent
        instance = self._self_instance
        wrapped = self.__wrapped__
        call_wrapper = parent._self_call_wrapper
        if instance is None and self._self_binding == "function" and args:
            instance, args = args[0], args[1:]
            wrapped = wrapped.__get__(instance, type(instance))
        return call_wrapper(wrapped, instance, args, kwargs)


_TaskWrapper.__bound_function_wrapper__ = _BoundTaskWrapper  # type: ignore[misc]


# --- the decorator -------------------------------------------------------------------------


class _Decorator:
    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self._name = name
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> AsyncTaskFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> TaskFunction[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> Any:
        if not callable(fn) and not isinstance(fn, classmethod | staticmethod):
            raise TypeError(f"@task({self._name!r}) needs a function, got {type(fn).__name__}.")
        target = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
        spec = _TaskSpec(target, self._name, **self._options)
        if inspect.isasyncgenfunction(target):
            make = _agen_wrapper
        elif inspect.iscoroutinefunction(target):
            make = _async_wrapper
        elif inspect.isgeneratorfunction(target):
            make = _gen_wrapper
        else:
            make = _sync_wrapper
        wrapper, call_wrapper = make(spec, False), make(spec, True)
        wrapped = _TaskWrapper(fn, wrapper)
        wrapped._self_call_wrapper = call_wrapper
        wrapped._self_spec = spec
        return wrapped


def task(
    name: str,
    *,
    client: CTClient | AsyncCTClient | None = None,
    default_prompt: str | Prompt | None = None,
    capture_inputs: bool = True,
    capture_output: bool = True,
    log_feedback: bool = True,
    metadata: dict[str, Any] | None = None,
    assign_by: str | None = None,
    label: str | None = None,
) -> TaskDecorator:
    """Decorate an LLM function as the CT task *name*.

    Example:
        ```python
        import kaizen_sdk as ct

        @ct.task("summarize_ticket", default_prompt="Summarize: {{ ticket }}")
        def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return llm(prompt.render(ticket=ticket))

        summary = summarize("Printer on fire")          # runs on the active prompt
        summary, run = summarize.call("Printer on fire")
        run.score(0.9)
        ```

    The ``prompt`` parameter gets the active prompt when the caller leaves it out (while a
    rollout runs, the version the call's key is assigned, see ``assign_by``); its
    default `PROMPT` lets type checkers accept calls without it. The decorated function
    keeps its parameters, result type, name and docstring for type checkers and IDEs;
    ``fn.call(...)`` is typed ``tuple[R, TaskRun]`` (awaitable for ``async def``).

    Parameters:
        name: the task's unique name on the CT server.
        client: a ``CTClient``/``AsyncCTClient``; default: the process-wide client
            (``ct.configure(...)``, else built from ``KAIZEN_*`` variables on first call).
        default_prompt: used when nothing is cached and the server has no prompt or cannot
            be reached; sent with the trace, so a new task gets it as version 1.
        capture_inputs, capture_output: send the arguments (without ``prompt``) and the
            result to the CT server.
        log_feedback: also send a feedback entry per call (the optimizer's training data).
        metadata: added to every trace and feedback entry.
        assign_by: while the task's prompt is in a rollout, the key that picks each call's
            arm (the same key, the same version): the argument of this name, else the
            ``ct.context`` field of this name (``user_id``, ``session_id``). Without it the
            context's ``user_id``, then ``session_id``; without any key, each call is
            assigned at random. The served version and arm are recorded on the trace.
        label: serve the version this label names (``staging``, ``eu``, ...) instead of
            the active one, revalidated in the background the same way; default
            ``KAIZEN_PROMPT_LABEL``, else the active (``production``) version. Rollouts act on
            the active version only.
    """
    if assign_by is not None and (not isinstance(assign_by, str) or not assign_by):
        raise TypeError("assign_by must name an argument, e.g. assign_by='user_id'.")
    if not isinstance(name, str) or not name.strip():
        raise TypeError("@task needs the task's name, e.g. @task('summarize_ticket').")
    if label is not None:
        prompt_key(name, label)  # a bad label is refused here, naming it
    if isinstance(default_prompt, str):
        default: Prompt | None = Prompt(
            prompt_text=default_prompt, version_number=0, status="default"
        )
    else:
        default = default_prompt
    return _Decorator(
        name,
        {
            "client": client,
            "default_prompt": default,
            "capture_inputs": capture_inputs,
            "capture_output": capture_output,
            "log_feedback": log_feedback,
            "metadata": metadata,
            "assign_by": assign_by,
            "label": label,
        },
    )

