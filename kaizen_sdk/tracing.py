"""Tracer-provider handling, CT span attribute names, and the record that travels beside a span.

CONTRACT (shared by ``decorators.py`` and ``integrations/*``; implemented here and in
``delivery.py``). Instrumentation code uses exactly this::

    from kaizen_sdk import tracing

    pipeline = tracing.pipeline_for(client)      # built lazily, once per client
    if pipeline.enabled:                         # False when KAIZEN_ENABLED=false
        call = tracing.current_call()            # enclosing @ct.task call, or None
        span = pipeline.tracer.start_span(name, kind=SpanKind.CLIENT)  # nests under current
        # (or start_as_current_span(..., end_on_exit=False) when children should nest)
        if span.is_recording():
            span.set_attributes({...})           # gen_ai.* and Attr.* ; content only if
                                                 # pipeline.capture_on_spans
        ...
        pipeline.attach(span, tracing.CallRecord(
            trace_id=tracing.new_trace_id(),
            task=call.task if call is not None else "<your default task name>",
            parent_trace_id=call.trace_id if call is not None else None,
            prompt_text=..., response_text=..., model=..., tokens=...,
        ))
        span.end()                               # attach BEFORE end

- `Attr` holds every ``ct.*`` span attribute key. ``gen_ai.*`` keys come from
  ``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``.
- Content (inputs, outputs, prompt and response text) never goes on span attributes unless
  the application opted in with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``
  (``pipeline.capture_on_spans``); what the CT server needs travels beside the span as a
  `CallRecord`, handed over with ``pipeline.attach(span, record)`` before ``span.end()``.
  The CT exporter honours ``settings.capture_content`` itself (drops text when it is off),
  so instrumentation may always fill the record.
- ``pipeline_for(client)`` returns the client's `Pipeline` (built lazily, once, stored on
  ``client._pipeline``). ``pipeline.tracer`` makes CT spans (instrumentation scope
  `SCOPE`): from ``tracer_provider=`` when the client was given one, else from the
  application's global SDK ``TracerProvider`` when it has set one (no processor is added
  to it, it is never replaced), else no SDK span is built: a ``NonRecordingSpan`` with a
  fresh valid span context (nesting and propagation keep working). On both paths
  ``pipeline.attach`` queues the record at once on the delivery engine's own queue (never
  through a span processor; latency from the span's start unless set) and its sender
  thread (``delivery.py``, ``_requests.py``, ``_sender.py``) turns it into trace/feedback
  requests; no span ever reaches the CT server. A span the application's sampler dropped
  (not recording) still delivers its record; set ``record.latency_ms`` yourself then if you
  know it (the decorator does).
- ``current_call()`` returns the `CurrentCall` of the innermost running ``@ct.task`` call
  in this thread / asyncio task (``task``, ``trace_id``, ``prompt``), or ``None``. Use it
  to name the task of an instrumented LLM call and to set ``parent_trace_id``.
- `CallRecord` is built with keywords. ``inputs``/``output`` may be any value: the exporter
  converts them to JSON in its own thread, never failing (``repr`` fallback, large values
  truncated with a marker); ``settings.mask`` is applied there too. Do not change a record
  after ``attach``.
- ``pipeline.submit(record)`` queues a record without any span (set ``latency_ms``).
- ``new_trace_id()`` returns a fresh time-ordered UUID7 string cheaply (never repeats after the
  application seeds ``random``, nor in a forked child).
- ``pipeline.flush(timeout=None) -> bool``, ``pipeline.stats() -> DeliveryStats``,
  ``pipeline.shutdown()``: used by ``CTClient.flush/stats/close``. ``ct.flush()`` flushes
  every pipeline of the process; ``delivery.flush_trace``/``is_pending`` serve ``score()``.
- ``CTClient(tracer_provider=...)`` makes the pipeline use that SDK provider (kept on
  ``client._tracer_provider``) instead of the global one (or none).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import SpanContext, TraceFlags

from kaizen_sdk._config import Settings
from kaizen_sdk._record import CallRecord, CurrentCall, current_call, new_trace_id, random_bits
from kaizen_sdk._version import __version__
from kaizen_sdk.delivery import Delivery, DeliveryStats

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider


__all__ = [
    "CONTEXT_TRACER",
    "NON_RECORDING",
    "SCHEMA_URL",
    "SCOPE",
    "Attr",
    "CallRecord",
    "CurrentCall",
    "FollowingTracer",
    "Pipeline",
    "current_call",
    "is_sdk_provider",
    "new_trace_id",
    "pipeline_for",
]

_log = logging.getLogger("kaizen_sdk.tracing")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_SPAN_ID_BITS = (1 << 64) - 1

SCOPE = "kaizen_sdk"
"""Instrumentation scope name of every CT span."""

SCHEMA_URL: str = Schemas.V1_37_0.value
"""Semantic-conventions schema of CT spans and metrics (the GenAI attributes we emit)."""


class Attr:
    """``ct.*`` span attribute keys (CT concepts that the GenAI conventions do not cover)."""

    TASK_NAME = "ct.task.name"
    TRACE_ID = "ct.trace_id"
    PARENT_TRACE_ID = "ct.parent_trace_id"
    PROMPT_VERSION_ID = "ct.prompt.version_id"
    PROMPT_VERSION_NUMBER = "ct.prompt.version_number"
    INPUTS = "ct.inputs"
    OUTPUT = "ct.output"
    ROLLOUT_ARM = "ct.rollout.arm"
    """``"active"`` or ``"candidate"``: the arm of the running rollout that served the call."""
    TAGS = "ct.tags"
    """The ``tags`` of the enclosing ``ct.context`` block (no semantic convention has them)."""


# --- the pipeline --------------------------------------------------------------------------

_exit_started: float | None = None


class Pipeline:
    """One client's tracer and background delivery (see the module docstring).

    Parameters:
        settings: the client's resolved settings.
        tracer_provider: an SDK ``TracerProvider`` to make CT spans with; by default the
            application's global SDK provider when it has set one, else no SDK span.
        transport: an ``httpx`` transport for the exporter (tests).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tracer_provider: Any = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self.capture_on_spans = settings.capture_message_content_on_spans
        self.delivery: Delivery | None = None
        self.provider: Any = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self._closed = False
        self.mp_armed = False  # multiprocessing children deliver at their exit (see below)
        if not self.enabled:
            return
        delivery = Delivery(settings, transport=transport)
        self.delivery = delivery
        self.tracer = _tracer_for(self, tracer_provider)
        atexit.register(self._at_exit)
        _arm_multiprocessing_exit(self)
        _LIVE_PIPELINES.add(self)
        if settings.handle_sigterm:
            _arm_sigterm()

    def __repr__(self) -> str:
        return f"Pipeline(enabled={self.enabled}, base_url={self.settings.base_url!r})"

    def attach(self, span: trace.Span, record: CallRecord) -> None:
        """Hand *record* over with *span*; call before ``span.end()``. Never raises.

        The record is queued at once, its latency taken from the span's start when not set:
        it never travels through a span processor.
        """
        delivery = self.delivery
        if delivery is None:
            return
        try:
            if record.latency_ms is None:
                start = getattr(span, "start_time", None)
                record.latency_ms = 0.0 if start is None else (time.time_ns() - start) / 1e6
            delivery.submit(record)  # `submit`, inlined
        except Exception:
            _log.warning("Could not queue a CT record.", exc_info=True)

    def submit(self, record: CallRecord) -> None:
        """Queue *record* on the delivery engine's queue (set ``latency_ms`` first)."""
        delivery = self.delivery
        if delivery is None:
            return
        if record.latency_ms is None:
            record.latency_ms = 0.0
        delivery.submit(record)

    def score(self, trace_id: str, value: float, scored_by: str = "sdk") -> str | None:
        """Queue a score of trace *trace_id* for background delivery (after the trace).

        Return the score's id, or None when tracing is off or the score cannot be sent (an
        invalid value, a closed client: logged). Never raises, never blocks.
        """
        delivery = self.delivery
        if delivery is None:
            return None
        return delivery.add_score(trace_id, value, scored_by)

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything queued so far; False unless all of it was stored or spooled."""
        if self.delivery is None:
            return True
        return self.delivery.flush(timeout)

    def stats(self) -> DeliveryStats:
        """Return the counts of background delivery."""
        if self.delivery is None:
            return DeliveryStats()
        return self.delivery.stats()

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what is queued (within ``shutdown_timeout``), then stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self.delivery is not None:
            self.delivery.shutdown(timeout)

    def _at_exit(self) -> None:
        # Several pipelines share one exit budget: the longest shutdown_timeout among them.
        global _exit_started
        now = time.monotonic()
        if _exit_started is None:
            _exit_started = now
        left = self.settings.shutdown_timeout - (now - _exit_started)
        try:
            self.shutdown(max(0.1, left))
        except Exception:
            _log.warning("Delivering CT records at exit failed.", exc_info=True)


# --- SIGTERM -------------------------------------------------------------------------------

_LIVE_PIPELINES: weakref.WeakSet[Pipeline] = weakref.WeakSet()
_sigterm_armed = False


def _arm_sigterm() -> None:
    """Deliver on SIGTERM too, but only where SIGTERM would otherwise kill the process at once
    (default disposition) and only from the main thread; an application's handler stays."""
    global _sigterm_armed
    if _sigterm_armed or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (AttributeError, OSError, ValueError):  # no SIGTERM here, or not allowed
        return
    _sigterm_armed = True


def _on_sigterm(signum: int, frame: Any) -> None:
    global _sigterm_armed
    # A second SIGTERM during the flush ends the process at once.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_armed = False
    pipelines = list(_LIVE_PIPELINES)
    budget = max((p.settings.shutdown_timeout for p in pipelines), default=0.0)
    # The flush runs in its own thread: the interrupted main thread may hold a lock it needs.
    worker = threading.Thread(
        target=_shutdown_all, args=(pipelines,), name="kaizen-sigterm", daemon=True
    )
    worker.start()
    worker.join(budget + 1.0)
    os.kill(os.getpid(), signal.SIGTERM)  # now with the default disposition: the process ends


def _shutdown_all(pipelines: list[Pipeline]) -> None:
    for pipeline in pipelines:
        pipeline._at_exit()


def _exit_ref(ref: weakref.ReferenceType[Pipeline]) -> None:
    pipeline = ref()
    if pipeline is not None:
        pipeline._at_exit()


def _arm_multiprocessing_exit(pipeline: Pipeline) -> None:
    """Deliver at the exit of multiprocessing children too (they end with ``os._exit``).

    A multiprocessing child skips ``atexit`` but runs its ``multiprocessing.util`` finalizers;
    it also clears the finalizers it inherited, so they are armed again in each child. While
    the application has not imported multiprocessing, nothing can start such a child, so the
    import (pickle, queues: milliseconds of a cold start) waits: a fork arms the pipeline
    first if multiprocessing is loaded by then, and a spawned child loads it before any
    pipeline of its own exists.
    """
    if "multiprocessing" in sys.modules:
        _arm_now(pipeline)
        return
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - no fork, no forked children
        return
    ref = weakref.ref(pipeline)

    def before_fork() -> None:
        target = ref()
        if target is not None and not target.mp_armed and "multiprocessing" in sys.modules:
            _arm_now(target)

    os.register_at_fork(before=before_fork)


def _arm_now(pipeline: Pipeline) -> None:
    try:
        from multiprocessing import util as mp_util
    except ImportError:  # pragma: no cover - platforms without multiprocessing
        return

    def arm(target: Pipeline) -> None:
        # A weak reference: the finalizer must not keep a closed pipeline alive.
        mp_util.Finalize(target, _exit_ref, args=(weakref.ref(target),), exitpriority=100)

    pipeline.mp_armed = True
    arm(pipeline)
    mp_util.register_after_fork(pipeline, arm)


def _choose_provider(given: Any) -> Any:
    """The SDK provider for CT spans: *given*, else the global one if it is an SDK one."""
    if given is not None:
        if hasattr(given, "add_span_processor"):
            return given
        _log.warning(
            "tracer_provider=%r is not an OpenTelemetry SDK TracerProvider; CT spans use the "
            "global SDK provider, else no SDK span.", type(given).__name__,
        )
        return None
    global_provider = trace.get_tracer_provider()
    if is_sdk_provider(global_provider):
        return global_provider
    return None


def is_sdk_provider(provider: object) -> bool:
    """True for an OpenTelemetry SDK ``TracerProvider`` (or a subclass).

    The SDK is not imported to answer: an SDK provider exists only once the application has
    imported the SDK, and a process without one (the no-provider path) never pays its import.
    """
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    return sdk is not None and isinstance(provider, sdk.TracerProvider)


def _global_provider() -> object:
    """The global provider object as set (``None``: not yet), for an identity comparison.

    Reads the API's module attribute: ``get_tracer_provider()`` also reads the environment
    each time it is called before a provider is set, which is too slow for every span.
    """
    found = _API_GLOBALS.get("_TRACER_PROVIDER", _UNREADABLE)
    if found is None and not _ENV_PROVIDER:
        return None
    if found is None or found is _UNREADABLE:  # named by OTEL_PYTHON_TRACER_PROVIDER
        return trace.get_tracer_provider()
    return found


_API_GLOBALS = vars(trace)
_UNREADABLE = object()
_ENV_PROVIDER = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))


_UNRESOLVED = object()
_late_warned = False


def _tracer_for(pipeline: Pipeline, given: Any) -> trace.Tracer:
    """The pipeline's tracer: fixed for ``tracer_provider=``, else one that follows the global."""
    if not pipeline.settings.spans:
        return _RecordsOnlyTracer()
    if given is not None:
        provider = _choose_provider(given)
        if provider is not None:  # its spans, our records beside them (no processor added)
            pipeline.provider = provider
            tracer: trace.Tracer = provider.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
            return tracer
    return FollowingTracer(pipeline)


class FollowingTracer(trace.Tracer):
    """Makes each CT span with the provider the application has set globally when it starts.

    An application may set its ``TracerProvider`` after ``instrument()`` or the first task
    call; spans from then on go to it (no processor of ours is added). Until then they
    are non-recording spans with a valid context, no SDK span (``observable`` is False). The
    check per span is one identity comparison of the global provider object.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = weakref.ref(pipeline)  # the pipeline owns us; no cycle
        self._provider: SDKTracerProvider | None = None
        self._seen: object = _UNRESOLVED
        self._tracer: trace.Tracer = trace.NoOpTracer()
        self._spans_went_private = False
        self._observable = True
        self._lock = threading.Lock()
        self._follow(_global_provider(), span=False)  # sets pipeline.provider now
        self._seen = _UNRESOLVED  # the first span resolves once more, noting where it went

    def _follow(self, seen: object, span: bool = True) -> trace.Tracer:
        global _late_warned
        with self._lock:
            if seen is self._seen:
                return self._tracer
            provider = _choose_provider(None)
            if (provider is not None and provider is not self._provider
                    and self._spans_went_private and not _late_warned):
                _late_warned = True
                _log.warning(
                    "The application set its OpenTelemetry TracerProvider after kaizen_sdk "
                    "started tracing; CT spans go to it from now on (earlier ones did not "
                    "reach its exporters). Set the provider before ct.instrument() or the "
                    "first task call."
                )
            if span and provider is None:
                self._spans_went_private = True
            self._provider = provider
            self._observable = provider is not None
            self._tracer = (
                CONTEXT_TRACER if provider is None
                else provider.get_tracer(SCOPE, __version__, schema_url=SCHEMA_URL)
            )
            self._seen = seen
            pipeline = self._pipeline()
            if pipeline is not None:
                pipeline.provider = provider
            return self._tracer

    @property
    def observable(self) -> bool:
        """False while there is no application SDK provider (CT spans do not record)."""
        if _API_GLOBALS.get("_TRACER_PROVIDER", _UNREADABLE) is not self._seen:  # `resolve`'s
            self.resolve()
        return self._observable

    def resolve(self) -> trace.Tracer:
        """The tracer a span started now goes to: the global SDK provider's, or
        `CONTEXT_TRACER` while there is none (one identity comparison when unchanged)."""
        # `_global_provider` returns the API's attribute itself whenever it is what we saw
        # (None only while no provider is set and none is named in the environment)
        if _API_GLOBALS.get("_TRACER_PROVIDER", _UNREADABLE) is self._seen:
            return self._tracer
        seen = _global_provider()
        if seen is self._seen:
            return self._tracer
        return self._follow(seen)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        """Start a span with the current global provider (see `trace.Tracer.start_span`)."""
        if _API_GLOBALS.get("_TRACER_PROVIDER", _UNREADABLE) is self._seen:  # `resolve`'s test
            return self._tracer.start_span(*args, **kwargs)
        return self.resolve().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        """Start a current span with the global provider (see `trace.Tracer`)."""
        return self.resolve().start_as_current_span(*args, **kwargs)


class _RecordsOnlyTracer(trace.NoOpTracer):
    """``KAIZEN_SPANS=false``: no spans at all, records only, the application's nesting kept.

    Each "span" is non-recording and carries the current span's context, so application
    spans made inside a task still nest under the application's own parent.
    """

    observable = False

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> trace.Span:
        """Return a non-recording span that continues the current span's context."""
        return trace.NonRecordingSpan(trace.get_current_span(context).get_span_context())


class _ContextTracer(trace.NoOpTracer):
    """No application SDK provider: a `NonRecordingSpan` with a fresh, valid span context.

    No SDK span is built (it was three quarters of a call's cost), yet spans still nest and
    propagate: the span continues the current span's trace (else starts one) under a new span
    id. The record goes straight to the delivery queue (`Pipeline.attach` sees a span that
    does not record).
    """

    observable = False

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> trace.Span:
        """Return a non-recording span with a new span id in the current (or a new) trace."""
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags = parent.trace_id, parent.trace_flags
            span_id = random_bits(64)
        else:  # both ids from one draw
            bits = random_bits(192)
            trace_id, span_id, flags = (bits >> 64) or 1, bits & _SPAN_ID_BITS, _SAMPLED
        return trace.NonRecordingSpan(SpanContext(trace_id, span_id or 1, False, flags))

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Any = None, *args: Any, end_on_exit: bool = True,
        **kwargs: Any,
    ) -> Iterator[trace.Span]:
        """`start_span`, made current for the block (see `trace.Tracer`)."""
        with trace.use_span(self.start_span(name, context), end_on_exit=end_on_exit) as span:
            yield span


CONTEXT_TRACER = _ContextTracer()
"""The tracer of the no-provider path: non-recording spans with a fresh valid context."""

NON_RECORDING: frozenset[type] = frozenset({_ContextTracer, _RecordsOnlyTracer})
"""Tracer types whose spans never record: a caller need not build span attributes for them."""

_BUILD_LOCK = threading.Lock()


def pipeline_for(client: Any) -> Pipeline:
    """Return *client*'s `Pipeline`, building it on first use (stored on ``client._pipeline``)."""
    pipeline: Pipeline | None = client._pipeline
    if pipeline is not None:
        return pipeline
    with _BUILD_LOCK:
        pipeline = client._pipeline
        if pipeline is None:
            pipeline = Pipeline(
                client._settings,
                tracer_provider=getattr(client, "_tracer_provider", None),
                transport=getattr(client, "_delivery_transport", None),
            )
            client._pipeline = pipeline
        return pipeline
