"""One traced LLM call from start to finish.

`start_call` opens a GenAI span (kind CLIENT, ``chat <model>``) for one LLM call, resolves its
CT task, and returns a `TracedCall`; the call then ends through ``finish`` (a response),
``fail`` (an exception) or a stream proxy (`kaizen_sdk.integrations._stream`), which end the
span exactly once, record the GenAI metrics and hand the CT record to the pipeline.

Nothing here raises into the application's call: every step that is the SDK's own work is
guarded and logs its failures instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.metrics import _internal as _metrics_api
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)

from kaizen_sdk._record import ServedBy, add_usage, current_call, served_by
from kaizen_sdk._version import __version__
from kaizen_sdk.integrations._coexist import (
    IN_CALL,
    Adoption,
    foreign_beneath,
    foreign_call_span,
    join_global_provider,
)
from kaizen_sdk.integrations._semconv import (
    ERROR_TYPE,
    GEN_AI_CLIENT_OPERATION_DURATION,
    GEN_AI_CLIENT_TOKEN_USAGE,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_TOKEN_TYPE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    LEGACY_RESPONSE_SERVICE_TIER,
    LEGACY_RESPONSE_SYSTEM_FINGERPRINT,
    OPENAI_RESPONSE_SERVICE_TIER,
    OPENAI_RESPONSE_SYSTEM_FINGERPRINT,
    SERVER_ADDRESS,
    SERVER_PORT,
)
from kaizen_sdk.integrations._task import note_unattributed, resolve_task
from kaizen_sdk.integrations._utils import Extracted, InstrumentSettings, rich
from kaizen_sdk.tracing import SCHEMA_URL, SCOPE, Attr, CallRecord, new_trace_id

__all__ = [
    "TracedCall",
    "metrics_observable",
    "start_call",
]

logger = logging.getLogger("kaizen_sdk.instrument")

# the GenAI conventions' advisory bucket boundaries
_DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                     40.96, 81.92]
_TOKEN_BUCKETS = [float(4**i) for i in range(14)]
_METRICS: list[Any] = []


def _histograms() -> tuple[Any, Any]:
    """Duration and token-usage histograms on the global MeterProvider (made once)."""
    if not _METRICS:
        meter = metrics.get_meter(SCOPE, __version__, schema_url=SCHEMA_URL)
        _METRICS[:] = [
            meter.create_histogram(
                GEN_AI_CLIENT_OPERATION_DURATION, unit="s",
                description="GenAI operation duration",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            ),
            meter.create_histogram(
                GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}",
                description="Measures number of input and output tokens used",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            ),
        ]
    return _METRICS[0], _METRICS[1]


_METRICS_GLOBALS = vars(_metrics_api)
_ENV_METER_PROVIDER = bool(os.environ.get("OTEL_PYTHON_METER_PROVIDER"))
_UNREADABLE = object()


def metrics_observable() -> bool:
    """False while nothing can see the GenAI metrics: no global MeterProvider is set (the
    API's proxy instruments drop every value until one is; they forward from then on) or
    the one set is the API's no-op provider. Then a call builds no metric attributes.

    Reads the API's module attribute ``_METER_PROVIDER`` (pinned in
    tests/integrations/test_call_metrics.py); unreadable, the metrics are recorded.
    """
    provider = _METRICS_GLOBALS.get("_METER_PROVIDER", _UNREADABLE)
    if provider is None:
        return _ENV_METER_PROVIDER  # get_meter_provider() loads the named one
    return type(provider) is not NoOpMeterProvider


_NO_SPAN = NonRecordingSpan(INVALID_SPAN.get_span_context())
# our span; another's span around us; another's beneath; another's made after we return
_OWN, _ADOPTED, _BENEATH, _ABOVE = 0, 1, 2, 3


def start_call(
    tracer: Tracer,
    settings: InstrumentSettings,
    *,
    operation: str,
    provider: str,
    model: str | None,
    stream: bool,
    params: Mapping[str, Any],
    prompt_text: str | None,
    task_texts: Sequence[str],
    input_messages: Callable[[], list[dict[str, Any]]] | None = None,
    server: tuple[str | None, int | None] = (None, None),
    wrapped: Any = None,
    beneath: bool = False,
    above: bool = False,
    system: str | None = None,
    own_metrics: bool = False,
    messages: Any = None,
    spans_read: bool | None = None,
) -> TracedCall | None:
    """Open the span of one LLM call; None when tracing is off or the SDK itself failed.

    When another GenAI instrumentation traces the same call, no span of ours is made: its
    span gets the ``ct.*`` attributes (it is current around us, or it is started beneath us,
    in *wrapped* or, *beneath* True, further down the library's call), and the CT record
    travels on its own, so one call is one span. *above* True says another instrumentation's
    patch runs around ours and makes its span where we cannot reach it (after the call
    returns): we then make none and only send the record. *system* is the deprecated
    ``gen_ai.system`` value when it differs from *provider* (``gen_ai.provider.name``).
    *own_metrics* True: the span made beneath us comes from tracing that records no GenAI
    metrics (anthropic's own), so we record them. *messages* rendered by a prompt that
    ``ct.prompt`` served name the call's task, version and arm (outside any ``@ct.task``).
    *spans_read* is ``rich(tracer, settings)`` when the caller has just asked it (else it is
    asked here).
    """
    try:
        trace_id = new_trace_id()
        enclosing = settings.current_call() if settings.current_call is not None else None
        task: str | None
        served = None
        if enclosing is not None:
            task, parent = enclosing[0], enclosing[1]
        else:
            parent = None
            served = served_by(messages)
            if served is not None:
                task = served.task if settings.enabled else None
            else:
                task = (
                    resolve_task(task_texts, settings.task_map)
                    if settings.enabled else None
                )
        name = f"{operation} {model}" if model else operation
        identity: dict[str, Any] = {Attr.TRACE_ID: trace_id}
        if task is not None:
            identity[Attr.TASK_NAME] = task
        if parent is not None:
            identity[Attr.PARENT_TRACE_ID] = parent
        text = prompt_text if settings.capture_content else None
        span: Span = INVALID_SPAN
        mode = _OWN
        measure: dict[str, Any] | None = None
        adoption: Adoption | None = None
        on_spans = is_rich = False
        # the current context read once: the span around us, and our span's parent
        current = otel_context.get_current()
        foreign = foreign_call_span(current) if settings.enabled else None
        if foreign is not None:
            foreign.set_attributes(identity)
            span, mode = foreign, _ADOPTED
        elif settings.enabled and (
            beneath or (wrapped is not None and foreign_beneath(wrapped))
        ):
            join_global_provider()
            mode = _BENEATH
            adoption = Adoption(identity)
            if own_metrics:
                measure = _measure_of(operation, provider, system, model, server,
                                      settings.latest)
        elif settings.enabled and above:
            mode = _ABOVE
        else:
            # the same for every call of one shape: made once, shared (never changed)
            key = (operation, provider, system, model, server, settings.latest)
            try:
                measure = _MEASURES.get(key)
                shared = True
            except TypeError:  # an unhashable value (not ours): made for this call only
                measure, shared = None, False
            if measure is None:
                measure = _measure_of(operation, provider, system, model, server,
                                      settings.latest)
                if shared:
                    if len(_MEASURES) >= _MEASURES_MAX:
                        _MEASURES.clear()
                    _MEASURES[key] = measure
            if not (rich(tracer, settings) if spans_read is None else spans_read):
                span = tracer.start_span(name, current, kind=SpanKind.CLIENT)
            else:
                attributes: dict[str, Any] = {**measure, GEN_AI_REQUEST_STREAM: stream,
                                              **identity}
                for key_, value in params.items():
                    if value is not None:
                        attributes[key_] = value
                span = tracer.start_span(name, current, kind=SpanKind.CLIENT,
                                         attributes=attributes)
                on_spans = settings.capture_on_spans and settings.capture_content
                if on_spans and input_messages is not None and span.is_recording():
                    span.set_attribute(GEN_AI_INPUT_MESSAGES, json.dumps(input_messages()))
                is_rich = True
        call = TracedCall(
            span=span, settings=settings, trace_id=trace_id, task=task,
            parent_trace_id=parent, request_model=model, prompt_text=text,
            on_spans=on_spans, provider=provider, mode=mode,
        )
        call.served = served
        call.adoption = adoption
        call.measure = measure
        call.rich = is_rich
        return call
    except Exception:
        logger.exception("Starting the span of an instrumented LLM call failed; not traced.")
        return None


_MEASURES: dict[tuple[Any, ...], dict[str, Any]] = {}
_MEASURES_MAX = 1024


def _measure_of(
    operation: str, provider: str, system: str | None, model: str | None,
    server: tuple[str | None, int | None], latest: bool,
) -> dict[str, Any]:
    """The attributes of a call's GenAI metrics (and the first ones of its span)."""
    measure: dict[str, Any] = {GEN_AI_OPERATION_NAME: operation, GEN_AI_PROVIDER_NAME: provider}
    if not latest:
        measure[GEN_AI_SYSTEM] = system or provider
    if model:
        measure[GEN_AI_REQUEST_MODEL] = model
    host, port = server
    if host:
        measure[SERVER_ADDRESS] = host
        if port is not None:
            measure[SERVER_PORT] = port
    return measure


class TracedCall:
    """One LLM call in flight: its span, its CT identity, and how it ends (exactly once)."""

    __slots__ = (
        "_context_token",
        "_mark_token",
        "adoption",
        "ended",
        "measure",
        "mode",
        "on_spans",
        "parent_trace_id",
        "prompt_text",
        "provider",
        "request_model",
        "rich",
        "served",
        "settings",
        "span",
        "start",
        "task",
        "trace_id",
    )

    def __init__(
        self,
        *,
        span: Span,
        settings: InstrumentSettings,
        trace_id: str,
        task: str | None,
        parent_trace_id: str | None,
        request_model: str | None,
        prompt_text: str | None,
        on_spans: bool,
        provider: str = "",
        mode: int = _OWN,
    ) -> None:
        self.span = span
        self.settings = settings
        self.trace_id = trace_id
        self.task = task
        self.parent_trace_id = parent_trace_id
        self.request_model = request_model
        self.prompt_text = prompt_text
        self.on_spans = on_spans
        self.provider = provider
        self.mode = mode
        self.adoption: Adoption | None = None
        self.measure: dict[str, Any] | None = None
        self.rich = False  # our span, and someone but the CT exporter reads it
        self.start = time.perf_counter()
        self.ended = False  # True once `finish` or `fail` ran (the stream proxies read it)
        self._context_token: Any = None
        self._mark_token: Any = None
        self.served: ServedBy | None = None  # the ct.prompt version the messages came from

    # -- scope of the library call ----------------------------------------------------------

    def enter(self) -> None:
        """Mark the context as inside an instrumented call, and make our span current.

        Another instrumentation's span (around us or beneath us) is never attached by us:
        it attaches and detaches its own.
        """
        try:
            self._mark_token = IN_CALL.set(self.adoption or True)
            if self.mode == _OWN:
                self._context_token = otel_context.attach(trace.set_span_in_context(self.span))
        except Exception:
            logger.exception("Entering the span of an instrumented LLM call failed.")

    def exit(self) -> None:
        """Undo `enter` (called in a ``finally`` in the same context as `enter`)."""
        token, mark = self._context_token, self._mark_token
        self._context_token = self._mark_token = None
        try:
            if token is not None:
                otel_context.detach(token)
        except Exception:
            logger.debug("Leaving the span of an instrumented LLM call failed.", exc_info=True)
        try:
            if mark is not None:
                IN_CALL.reset(mark)
        except Exception:
            logger.debug("Leaving an instrumented LLM call failed.", exc_info=True)

    def run(self, wrapped: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> Any:
        """Call *wrapped* inside the span; a failure ends the call and is re-raised unchanged."""
        self.enter()
        try:
            return wrapped(*args, **kwargs)
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            self.exit()

    async def arun(self, wrapped: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
        """`run` for a coroutine function: the span stays current until it has been awaited."""
        self.enter()
        try:
            return await wrapped(*args, **kwargs)
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            self.exit()

    # -- endings ----------------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """End the call as failed by *exc* (which the caller then re-raises unchanged)."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        try:
            if self.mode == _OWN and span.is_recording():
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
                span.record_exception(exc)
        except Exception:
            logger.exception("Recording a failed LLM call on its span failed.")
        self._end(Extracted(), error=type(exc).__qualname__)

    def finish(self, data: Extracted) -> None:
        """End the call with what the response (or the whole stream) told us."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        try:
            if self.rich and span.is_recording():
                attributes: dict[str, Any] = {}
                if data.model:
                    attributes[GEN_AI_RESPONSE_MODEL] = data.model
                if data.response_id:
                    attributes[GEN_AI_RESPONSE_ID] = data.response_id
                if data.finish_reasons:
                    attributes[GEN_AI_RESPONSE_FINISH_REASONS] = data.finish_reasons
                if data.input_tokens is not None:
                    attributes[GEN_AI_USAGE_INPUT_TOKENS] = data.input_tokens
                if data.output_tokens is not None:
                    attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = data.output_tokens
                if self.provider == "openai":
                    latest = self.settings.latest
                    if data.service_tier:
                        key = (OPENAI_RESPONSE_SERVICE_TIER if latest
                               else LEGACY_RESPONSE_SERVICE_TIER)
                        attributes[key] = data.service_tier
                    if data.system_fingerprint:
                        key = (OPENAI_RESPONSE_SYSTEM_FINGERPRINT if latest
                               else LEGACY_RESPONSE_SYSTEM_FINGERPRINT)
                        attributes[key] = data.system_fingerprint
                if self.on_spans and data.text is not None:
                    message: dict[str, Any] = {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": data.text}],
                    }
                    if data.finish_reasons:
                        message["finish_reason"] = data.finish_reasons[0]
                    attributes[GEN_AI_OUTPUT_MESSAGES] = json.dumps([message])
                if attributes:
                    span.set_attributes(attributes)
        except Exception:
            logger.exception("Recording an LLM response on its span failed.")
        self._end(data, error=None)

    def _end(self, data: Extracted, *, error: str | None) -> None:
        """Hand the CT record over, then end the span (whatever happened before)."""
        try:
            self._attach(data, error=error)
        except Exception:
            logger.exception("Handing the CT record of an LLM call over failed.")
        # another instrumentation's span (mode not _OWN) is its to end, with its metrics
        # (unless it records none: then `measure` is set, see start_call's own_metrics)
        span = self.span
        if self.mode == _OWN and type(span) is not NonRecordingSpan:  # whose end() is a no-op
            try:
                span.end()
            except Exception:
                logger.exception("Ending the span of an LLM call failed.")
        if self.measure is not None and metrics_observable():
            try:
                self._measure(data, error)
            except Exception:
                logger.exception("Recording the GenAI metrics of an LLM call failed.")

    def _measure(self, data: Extracted, error: str | None) -> None:
        measure = self.measure
        if measure is None or not self.settings.enabled:
            return
        attributes = dict(measure)
        if data.model:
            attributes[GEN_AI_RESPONSE_MODEL] = data.model
        if error is not None:
            attributes[ERROR_TYPE] = error
        duration, usage = _histograms()
        duration.record(time.perf_counter() - self.start, attributes)
        for kind, count in (("input", data.input_tokens), ("output", data.output_tokens)):
            if count is not None:
                usage.record(count, {**attributes, GEN_AI_TOKEN_TYPE: kind})

    def _attach(self, data: Extracted, *, error: str | None) -> None:
        if self.parent_trace_id is not None and data.output_tokens is not None:
            _add_to_enclosing(self.parent_trace_id, data.model or self.request_model, data)
        attach = self.settings.attach
        if attach is None:
            return
        if self.task is None:  # no task names it: a span only, no CT record
            note_unattributed()
            return
        tokens = data.total_tokens
        if tokens is None and data.input_tokens is not None and data.output_tokens is not None:
            tokens = data.input_tokens + data.output_tokens
        capture = self.settings.capture_content
        record = CallRecord(
            trace_id=self.trace_id,
            task=self.task,
            prompt_text=self.prompt_text if capture else None,
            response_text=data.text if capture else None,
            model=data.model or self.request_model,
            tokens=tokens,
            parent_trace_id=self.parent_trace_id,
            error=error,
            latency_ms=(time.perf_counter() - self.start) * 1000.0,
            input_tokens=data.input_tokens,
            output_tokens=data.output_tokens,
            cached_input_tokens=data.cached_input_tokens,
        )
        served = self.served
        if served is not None:  # a served version's call: the task's own trace and example
            record.prompt_version_id = served.version_id
            record.prompt_version_number = served.version_number
            record.arm = served.arm
            if capture:
                record.prompt_text = served.template
                record.inputs = served.variables
                record.output = data.text
                default = served.default
                if default is not None:  # no version yet: a new task takes it as version 1
                    record.prompt_is_default = True
                    record.prompt_messages = default.messages
                    record.prompt_config = default.config
            record.log_feedback = error is None
        # another instrumentation's span may reach no CT processor: the record goes alone
        attach(self.span if self.mode == _OWN else _NO_SPAN, record)

    # -- what the application gets ----------------------------------------------------------

    def score(self, value: float, scored_by: str = "sdk") -> Any:
        """Queue a score of this call's trace on the client's background path."""
        scorer = self.settings.score
        if not self.settings.enabled:
            logger.debug("Tracing is off (KAIZEN_ENABLED=false); score not sent.")
            return None
        if self.task is None:
            logger.warning(
                "This call belongs to no CT task, so it was not sent and its score is not "
                "either; run it inside a @ct.task function or a ct.context(task=...) block."
            )
            return None
        if scorer is None:
            logger.warning(
                "This call was traced without a CT client, so its score is not sent; "
                "pass client= to kaizen_sdk.instrument()."
            )
            return None
        return scorer(self.trace_id, value, scored_by)


def _add_to_enclosing(parent_trace_id: str, model: str | None, data: Extracted) -> None:
    """Count an LLM call's usage on the ``@ct.task`` call that made it (its trace's cost),
    while that call still runs (a stream read after it returned is counted on its own only).
    """
    call = current_call()
    if call is None or call.trace_id != parent_trace_id or data.input_tokens is None:
        return
    try:
        add_usage(call, model, data.input_tokens, data.output_tokens or 0,
                  data.cached_input_tokens)
    except Exception:
        logger.exception("Counting an LLM call's usage on its task's call failed.")
