"""What the LLM-library integrations share: one traced call from start to finish.

`start_call` opens a GenAI span (kind CLIENT, ``chat <model>``) for one LLM call, resolves its
CT task, and returns a `TracedCall`; the call then ends through ``finish`` (a response),
``fail`` (an exception) or a stream proxy (`TracedStream`, `TracedAsyncStream`), which end
the span exactly once and hand the CT record to the pipeline. The response the application
receives is wrapped in `TracedResponse`, which adds ``ct_trace_id`` and ``ct_score`` without
changing what the response serializes to, compares equal to, or pickles as.

Nothing here raises into the application's call: every step that is the SDK's own work is
guarded and logs its failures instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import dataclasses
import inspect
import json
import logging
import sys
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.semconv._incubating.attributes import error_attributes as _err
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _gen
from opentelemetry.semconv._incubating.attributes import openai_attributes as _oai
from opentelemetry.semconv._incubating.attributes import server_attributes as _srv
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _gen_metrics
from opentelemetry.trace import (
    INVALID_SPAN,
    NonRecordingSpan,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)

from kaizen_sdk._config import genai_latest_mode
from kaizen_sdk._context import current_context
from kaizen_sdk._record import ServedBy, add_usage, current_call, served_by
from kaizen_sdk._version import __version__
from kaizen_sdk.tracing import SCHEMA_URL, SCOPE, Attr, CallRecord, new_trace_id

__all__ = [
    "ChatStreamAccumulator",
    "DEFAULT_TASK",
    "Extracted",
    "InstrumentSettings",
    "Switch",
    "TracedAsyncStream",
    "TracedCall",
    "TracedResponse",
    "TracedStream",
    "chat_extract",
    "chat_input_messages",
    "chat_prompt",
    "genai_patch",
    "in_instrumented_call",
    "request_attributes",
    "resolve_task",
    "rich",
    "server_of",
    "start_call",
    "text_of",
    "unwrap",
    "wrap",
    "wrap_response",
    "wrap_stream",
]

logger = logging.getLogger("kaizen_sdk.instrument")

DEFAULT_TASK = "default"
"""Formerly the task of an LLM call that nothing else names. No call is filed under it any
more: an instrumented call outside any ``@ct.task`` that nothing names (``ct.context(task=)``,
``task_map``, a prompt constant) is traced as a span and sends no CT record."""

# gen_ai.* keys. Each exists in the semantic-conventions package this SDK is tested with;
# the getattr fallbacks keep older packages (which lack the newest keys) working.
# TODO: drop the fallbacks once the floor is opentelemetry-semantic-conventions 0.66b0.
GEN_AI_OPERATION_NAME: str = _gen.GEN_AI_OPERATION_NAME
GEN_AI_SYSTEM: str = _gen.GEN_AI_SYSTEM
GEN_AI_PROVIDER_NAME: str = getattr(_gen, "GEN_AI_PROVIDER_NAME", "gen_ai.provider.name")
GEN_AI_REQUEST_MODEL: str = _gen.GEN_AI_REQUEST_MODEL
GEN_AI_REQUEST_TEMPERATURE: str = _gen.GEN_AI_REQUEST_TEMPERATURE
GEN_AI_REQUEST_MAX_TOKENS: str = _gen.GEN_AI_REQUEST_MAX_TOKENS
GEN_AI_REQUEST_TOP_P: str = _gen.GEN_AI_REQUEST_TOP_P
GEN_AI_REQUEST_TOP_K: str = _gen.GEN_AI_REQUEST_TOP_K
GEN_AI_REQUEST_STREAM: str = getattr(_gen, "GEN_AI_REQUEST_STREAM", "gen_ai.request.stream")
GEN_AI_RESPONSE_MODEL: str = _gen.GEN_AI_RESPONSE_MODEL
GEN_AI_RESPONSE_ID: str = _gen.GEN_AI_RESPONSE_ID
GEN_AI_RESPONSE_FINISH_REASONS: str = _gen.GEN_AI_RESPONSE_FINISH_REASONS
GEN_AI_USAGE_INPUT_TOKENS: str = _gen.GEN_AI_USAGE_INPUT_TOKENS
GEN_AI_USAGE_OUTPUT_TOKENS: str = _gen.GEN_AI_USAGE_OUTPUT_TOKENS
GEN_AI_INPUT_MESSAGES: str = getattr(_gen, "GEN_AI_INPUT_MESSAGES", "gen_ai.input.messages")
GEN_AI_OUTPUT_MESSAGES: str = getattr(_gen, "GEN_AI_OUTPUT_MESSAGES", "gen_ai.output.messages")
GEN_AI_REQUEST_SEED: str = _gen.GEN_AI_REQUEST_SEED
GEN_AI_REQUEST_FREQUENCY_PENALTY: str = _gen.GEN_AI_REQUEST_FREQUENCY_PENALTY
GEN_AI_REQUEST_PRESENCE_PENALTY: str = _gen.GEN_AI_REQUEST_PRESENCE_PENALTY
GEN_AI_REQUEST_STOP_SEQUENCES: str = _gen.GEN_AI_REQUEST_STOP_SEQUENCES
GEN_AI_REQUEST_CHOICE_COUNT: str = _gen.GEN_AI_REQUEST_CHOICE_COUNT
GEN_AI_OUTPUT_TYPE: str = _gen.GEN_AI_OUTPUT_TYPE
GEN_AI_TOKEN_TYPE: str = _gen.GEN_AI_TOKEN_TYPE
# the default (pre-1.37) mode keeps openai-v2's deprecated gen_ai.openai.* names
OPENAI_REQUEST_SERVICE_TIER: str = _oai.OPENAI_REQUEST_SERVICE_TIER
OPENAI_RESPONSE_SERVICE_TIER: str = _oai.OPENAI_RESPONSE_SERVICE_TIER
OPENAI_RESPONSE_SYSTEM_FINGERPRINT: str = _oai.OPENAI_RESPONSE_SYSTEM_FINGERPRINT
# which OpenAI API a call used (``chat_completions`` / ``responses``): the operation is ``chat``
# for both, as GenAiOperationNameValues has no other name for a Responses call.
# TODO: drop the fallback once the floor's semantic-conventions package has it (0.66b0 does).
OPENAI_API_TYPE: str = getattr(_oai, "OPENAI_API_TYPE", "openai.api.type")
LEGACY_REQUEST_SERVICE_TIER: str = _gen.GEN_AI_OPENAI_REQUEST_SERVICE_TIER
LEGACY_RESPONSE_SERVICE_TIER: str = _gen.GEN_AI_OPENAI_RESPONSE_SERVICE_TIER
LEGACY_RESPONSE_SYSTEM_FINGERPRINT: str = _gen.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT
GEN_AI_CLIENT_OPERATION_DURATION: str = _gen_metrics.GEN_AI_CLIENT_OPERATION_DURATION
GEN_AI_CLIENT_TOKEN_USAGE: str = _gen_metrics.GEN_AI_CLIENT_TOKEN_USAGE
# OpenInference (Arize Phoenix) keys; it has no semconv package we depend on.
# TODO: move to semconv constants if OTel adopts them (none as of semconv 1.37 / 0.66b0).
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
SERVER_ADDRESS: str = _srv.SERVER_ADDRESS
SERVER_PORT: str = _srv.SERVER_PORT
ERROR_TYPE: str = _err.ERROR_TYPE

# Set while an instrumented call runs (a contextvar, so copied into executor threads): an
# instrumented library called underneath it is not traced again. It holds the call's
# `_Adoption` when another instrumentation beneath us makes the span, else True. It is our own
# variable, not a key in the OpenTelemetry context: another instrumentation that attaches its
# span during the call and detaches it when a stream ends restores the context it found, and
# that must never bring our mark back (it would silence every later call in the thread).
_IN_CALL: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "kaizen_sdk_in_instrumented_call", default=None
)


def in_instrumented_call() -> bool:
    """Return True inside an instrumented LLM call (a library calling another one underneath)."""
    return _IN_CALL.get() is not None


@dataclasses.dataclass(frozen=True)
class InstrumentSettings:
    """Configuration of one instrumented library, resolved once at ``instrument()`` time.

    Parameters:
        capture_content: put prompt and response text in the CT record.
        capture_on_spans: also put message text on span attributes (the application's
            OpenTelemetry opt-in; only honoured when *capture_content* is on too).
        task_map: prompt-constant names or prompt texts -> task names.
        attach: hands the CT record to the pipeline beside its span (before ``span.end()``);
            ``None`` when no CT pipeline is in use (spans only).
        score: scores a trace id through the CT client: ``score(trace_id, value, scored_by)``.
        current_call: returns ``(task, trace_id)`` of the enclosing ``@ct.task`` call, or None.
        enabled: False when tracing is off (``KAIZEN_ENABLED=false``): the tracer makes no
            spans, no task is resolved, and ``ct_score`` sends nothing.
        span_attributes: False when nobody can see the spans (no application provider:
            they do not record): spans are then made without attributes, which
            nobody would read, and the CT record carries what the server needs. (A tracer
            that follows the global provider turns them back on once the application
            sets one; see `rich`.)
        latest: OpenTelemetry's latest GenAI conventions are selected
            (``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``): no deprecated
            ``gen_ai.system``, ``openai.*`` instead of ``gen_ai.openai.*`` names.
    """

    capture_content: bool = True
    capture_on_spans: bool = False
    task_map: Mapping[str, str] = dataclasses.field(default_factory=dict)
    attach: Callable[[Span, CallRecord], None] | None = None
    score: Callable[[str, float, str], Any] | None = None
    current_call: Callable[[], tuple[str, str] | None] | None = None
    enabled: bool = True
    span_attributes: bool = True
    latest: bool = dataclasses.field(default_factory=genai_latest_mode)


def rich(tracer: Tracer, settings: InstrumentSettings) -> bool:
    """Whether anyone but the CT exporter can read this tracer's spans (attributes worth it)."""
    return settings.span_attributes or bool(getattr(tracer, "observable", False))


@dataclasses.dataclass
class Extracted:
    """What one response (or a whole stream) told us."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: list[str] = dataclasses.field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    cached_input_tokens: int | None = None
    text: str | None = None
    service_tier: str | None = None
    system_fingerprint: str | None = None


# --- request attributes --------------------------------------------------------------------

_JSON_FORMATS = frozenset({"json_object", "json_schema", "json"})


def request_attributes(
    kwargs: Mapping[str, Any], max_keys: Sequence[str], *, openai: bool, latest: bool
) -> dict[str, Any]:
    """The ``gen_ai.request.*`` (and OpenAI service tier) attributes of a chat request."""
    out: dict[str, Any] = {}
    for key in max_keys:
        value = _int(kwargs.get(key))
        if value is not None:
            out[GEN_AI_REQUEST_MAX_TOKENS] = value
            break
    for attr, key in (
        (GEN_AI_REQUEST_TEMPERATURE, "temperature"),
        (GEN_AI_REQUEST_TOP_P, "top_p"),
        (GEN_AI_REQUEST_FREQUENCY_PENALTY, "frequency_penalty"),
        (GEN_AI_REQUEST_PRESENCE_PENALTY, "presence_penalty"),
    ):
        number = _number(kwargs.get(key))
        if number is not None:
            out[attr] = number
    seed = _int(kwargs.get("seed"))
    if seed is not None:
        out[GEN_AI_REQUEST_SEED] = seed
    choices = _int(kwargs.get("n"))
    if choices is not None and choices != 1:
        out[GEN_AI_REQUEST_CHOICE_COUNT] = choices
    stop = kwargs.get("stop")
    if isinstance(stop, str):
        out[GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, (list, tuple)) and stop and all(isinstance(x, str) for x in stop):
        out[GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    output_type = _output_type(kwargs)
    if output_type is not None:
        out[GEN_AI_OUTPUT_TYPE] = output_type
    if openai:
        tier = kwargs.get("service_tier")
        if tier is None and isinstance(kwargs.get("extra_body"), Mapping):
            tier = kwargs["extra_body"].get("service_tier")
        if isinstance(tier, str) and tier != "auto":
            out[OPENAI_REQUEST_SERVICE_TIER if latest else LEGACY_REQUEST_SERVICE_TIER] = tier
    return out


def _output_type(kwargs: Mapping[str, Any]) -> str | None:
    """``gen_ai.output.type`` of a request: ``json`` for a JSON format or schema, else ``text``."""
    given = kwargs.get("response_format")
    if given is None:
        given = _get(kwargs.get("text"), "format")  # the Responses API: text={"format": ...}
    if given is None:
        return None
    kind = given if isinstance(given, str) else _get(given, "type")
    if isinstance(kind, str):
        return "json" if kind in _JSON_FORMATS else ("text" if kind == "text" else None)
    if isinstance(given, type):  # parse(response_format=SomeModel): structured JSON output
        return "json"
    return None


# --- other GenAI instrumentations ----------------------------------------------------------

# Scopes of instrumentations that trace the same LLM calls (openai-v2 and OpenTelemetry's
# GenAI utilities, OpenLLMetry, OpenInference).
_GENAI_SCOPES = (
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.litellm",
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.instrumentation.google_genai",
    "opentelemetry.util.genai",
    "openinference.instrumentation",
)
_GENAI_MARKS = (GEN_AI_OPERATION_NAME, GEN_AI_SYSTEM, GEN_AI_PROVIDER_NAME, "llm.request.type")


def _is_genai_span(span: Any) -> bool:
    """True for a recording span that another GenAI instrumentation made for an LLM call."""
    try:
        scope = getattr(span, "instrumentation_scope", None)
        name = getattr(scope, "name", None) or ""
        if name == SCOPE:
            return False
        attributes = getattr(span, "attributes", None) or {}
        if attributes.get(OPENINFERENCE_SPAN_KIND) == "LLM":
            return True
        if getattr(span, "kind", None) is not SpanKind.CLIENT:
            return False
        return name.startswith(_GENAI_SCOPES) or any(k in attributes for k in _GENAI_MARKS)
    except Exception:
        return False


def _foreign_call_span() -> Span | None:
    """The current span when another GenAI instrumentation traces this very call (outside us)."""
    span = trace.get_current_span()
    if span.is_recording() and _is_genai_span(span):
        return span
    return None


def _foreign_beneath(wrapped: Any) -> bool:
    """True when *wrapped* (what our patch calls) is another library's wrapt patch."""
    # wrapt's FunctionWrapper/BoundFunctionWrapper keep the patch's function here
    wrapper = getattr(wrapped, "_self_wrapper", None)
    return wrapper is not None and wrapper not in _OUR_WRAPPERS


# Packages whose patches make GenAI spans (openai-v2, OpenLLMetry, OpenInference, ...).
_GENAI_PATCHERS = ("opentelemetry.instrumentation.", "openinference.instrumentation.",
                   "opentelemetry.util.genai")


def genai_patch(attribute: Any) -> bool:
    """True when *attribute* (a method as stored on its class) is a GenAI instrumentation's
    wrapt patch, not ours."""
    try:
        wrapper = getattr(attribute, "_self_wrapper", None)
        if wrapper is None or wrapper in _OUR_WRAPPERS:
            return False
        module = getattr(wrapper, "__module__", None) or type(wrapper).__module__
        return isinstance(module, str) and module.startswith(_GENAI_PATCHERS)
    except Exception:
        return False


class _Adoption:
    """An LLM call of ours whose span another instrumentation, called beneath us, makes."""

    __slots__ = ("attributes", "span")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.span: Any = None


class _Adopter(SpanProcessor):
    """Puts our ``ct.*`` attributes on the GenAI span an instrumentation beneath us starts."""

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        try:
            adoption = _IN_CALL.get()  # the span starts inside our call, on its thread
            if isinstance(adoption, _Adoption) and adoption.span is None and _is_genai_span(span):
                adoption.span = span
                span.set_attributes(adoption.attributes)
        except Exception:
            logger.debug("Adopting a GenAI span failed.", exc_info=True)


_ADOPTERS: weakref.WeakSet[Any] = weakref.WeakSet()
_ADOPTER = _Adopter()


def _join_global_provider() -> None:
    """Add the adopter to the application's global SDK provider (once)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, SDKTracerProvider) and provider not in _ADOPTERS:
        provider.add_span_processor(_ADOPTER)
        _ADOPTERS.add(provider)


# --- metrics -------------------------------------------------------------------------------

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


# --- content helpers -----------------------------------------------------------------------


def text_of(content: Any) -> str | None:
    """Return the text of a message's content: a string, or the text parts of a list."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            text = _get(part, "text")
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts) if parts else None
    return None


def _get(obj: Any, key: str, default: Any = None) -> Any:
    """Read *key* from a dict (a TypedDict included) or an attribute from an object."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _number(value: Any) -> int | float | None:
    # openai's NotGiven/Omit sentinels and None are not numbers; bool is not a parameter value.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- task resolution -----------------------------------------------------------------------

_SKIP_MODULES = ("kaizen_sdk", "openai", "litellm", "wrapt", "asyncio", "concurrent", "anyio",
                 "threading", "contextvars", "functools", "httpx", "httpx2", "anthropic",
                 "google.genai")
_CONSTANT_CACHE: dict[tuple[str, str], str | None] = {}
_CONSTANT_CACHE_MAX = 4096
_FRAME_LIMIT = 64


_SKIPPED: dict[str, bool] = {}


def _skipped(module: str) -> bool:
    try:
        return _SKIPPED[module]
    except KeyError:
        pass
    skip = any(module == p or module.startswith(p + ".") for p in _SKIP_MODULES)
    if len(_SKIPPED) < _CONSTANT_CACHE_MAX:
        _SKIPPED[module] = skip
    return skip


def _caller_frame() -> FrameType | None:
    """The innermost frame that belongs to the application (not to us or the LLM library)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAME_LIMIT):
        if frame is None:
            return None
        name = frame.f_globals.get("__name__")
        if not isinstance(name, str) or not _skipped(name):
            return frame
        frame = frame.f_back
    return None


def _constant_name(frame: FrameType, text: str) -> str | None:
    """Name of an upper-case module-level string constant equal to *text* in *frame*'s module."""
    globals_ = frame.f_globals
    module = globals_.get("__name__")
    key = (module if isinstance(module, str) else "?", text)
    try:
        return _CONSTANT_CACHE[key]
    except KeyError:
        pass
    found: str | None = None
    for name, value in list(globals_.items()):
        if type(value) is str and value == text and name.isupper():
            found = name
            break
    if len(_CONSTANT_CACHE) >= _CONSTANT_CACHE_MAX:
        _CONSTANT_CACHE.clear()
    _CONSTANT_CACHE[key] = found
    return found


def resolve_task(
    texts: Sequence[str], task_map: Mapping[str, str], frame: FrameType | None
) -> str | None:
    """Name the task of a call that no ``@ct.task`` encloses, or None: it has none.

    *texts* are the prompt texts of the call, the prompt text first. In order: a ``task_map``
    entry for one of the texts; the ``task`` of the ``ct.context`` block the call runs in; a
    module-level string constant in the calling module whose value is one of the texts
    (``task_map`` may rename it by the constant's name, else its lower-cased name is the
    task); else None (there is no catch-all task).
    """
    if task_map:
        for text in texts:
            mapped = task_map.get(text)
            if mapped is not None:
                return mapped
    cctx = current_context()
    if cctx is not None and cctx.task is not None:
        return cctx.task
    if frame is not None:
        for text in texts:
            name = _constant_name(frame, text)
            if name is not None:
                mapped = task_map.get(name) if task_map else None
                return mapped if mapped is not None else name.lower().lstrip("_")
    return None


_unattributed_logged = False


def _note_unattributed() -> None:
    """Log once per process that calls without a task send no CT record."""
    global _unattributed_logged
    if _unattributed_logged:
        return
    _unattributed_logged = True
    logger.warning(
        "An instrumented LLM call ran outside any @ct.task function and no task names it, so "
        "it was traced as a span only and sent no CT record. Name its task with a @ct.task "
        "function, a ct.context(task=...) block, or instrument(..., task_map=...)."
    )


# --- the traced call -----------------------------------------------------------------------


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
                    resolve_task(task_texts, settings.task_map, _caller_frame())
                    if settings.enabled else None
                )
        name = f"{operation} {model}" if model else operation
        identity: dict[str, Any] = {Attr.TRACE_ID: trace_id}
        if task is not None:
            identity[Attr.TASK_NAME] = task
        if parent is not None:
            identity[Attr.PARENT_TRACE_ID] = parent
        text = prompt_text if settings.capture_content else None

        def make(span: Span, on_spans: bool = False, mode: int = _OWN) -> TracedCall:
            call = TracedCall(
                span=span, settings=settings, trace_id=trace_id, task=task,
                parent_trace_id=parent, request_model=model, prompt_text=text,
                on_spans=on_spans, provider=provider, mode=mode,
            )
            call.served = served
            return call

        if settings.enabled:
            foreign = _foreign_call_span()
            if foreign is not None:
                foreign.set_attributes(identity)
                return make(foreign, mode=_ADOPTED)
            if beneath or (wrapped is not None and _foreign_beneath(wrapped)):
                _join_global_provider()
                call = make(INVALID_SPAN, mode=_BENEATH)
                call.adoption = _Adoption(identity)
                if own_metrics:
                    call.measure = _measure_of(operation, provider, system, model, server,
                                               settings.latest)
                return call
            if above:
                return make(INVALID_SPAN, mode=_ABOVE)
        measure = _measure_of(operation, provider, system, model, server, settings.latest)
        if not rich(tracer, settings):
            call = make(tracer.start_span(name, kind=SpanKind.CLIENT))
            call.measure = measure
            return call
        attributes: dict[str, Any] = {**measure, GEN_AI_REQUEST_STREAM: stream, **identity}
        for key, value in params.items():
            if value is not None:
                attributes[key] = value
        span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        on_spans = settings.capture_on_spans and settings.capture_content
        if on_spans and input_messages is not None and span.is_recording():
            span.set_attribute(GEN_AI_INPUT_MESSAGES, json.dumps(input_messages()))
        call = make(span, on_spans)
        call.measure = measure
        call.rich = True
        return call
    except Exception:
        logger.exception("Starting the span of an instrumented LLM call failed; not traced.")
        return None


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
        "_done",
        "_mark_token",
        "adoption",
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
        self.adoption: _Adoption | None = None
        self.measure: dict[str, Any] | None = None
        self.rich = False  # our span, and someone but the CT exporter reads it
        self.start = time.perf_counter()
        self._done = False
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
            self._mark_token = _IN_CALL.set(self.adoption or True)
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
                _IN_CALL.reset(mark)
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
        if self._done:
            return
        self._done = True
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
        if self._done:
            return
        self._done = True
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
        if self.mode != _OWN:
            # the other instrumentation ends its span and records its metrics (unless it
            # records none: then `measure` is set, see start_call's own_metrics)
            if self.measure is not None:
                try:
                    self._measure(data, error)
                except Exception:
                    logger.exception("Recording the GenAI metrics of an LLM call failed.")
            return
        try:
            self.span.end()
        except Exception:
            logger.exception("Ending the span of an LLM call failed.")
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
            _note_unattributed()
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


# --- patching ------------------------------------------------------------------------------


class Switch:
    """Whether one ``_instrument()``'s wrappers trace: `_uninstrument` turns it off, so a
    wrapper that outlived the patch (a bound method or a name imported while instrumented)
    passes calls straight through."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = True


_OUR_WRAPPERS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def ours(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Remember *wrapper* as one of ours, so `unwrap` removes it and nothing else."""
    _OUR_WRAPPERS.add(wrapper)
    return wrapper


def wrap(module: str, name: str, wrapper: Callable[..., Any]) -> None:
    """Patch ``module.name`` (``"Class.method"`` or a function) with *wrapper*, via wrapt."""
    wrapt.wrap_function_wrapper(module, name, ours(wrapper))


def unwrap(owner: Any, name: str) -> None:
    """Restore ``owner.name`` if our wrapper is on it (safe to call twice)."""
    current = vars(owner).get(name)
    if (
        isinstance(current, wrapt.FunctionWrapper)
        and hasattr(current, "__wrapped__")
        and getattr(current, "_self_wrapper", None) in _OUR_WRAPPERS
    ):
        setattr(owner, name, current.__wrapped__)
    elif current is not None and hasattr(current, "__wrapped__"):
        logger.debug("%r.%s is wrapped by someone else; left as it is.", owner, name)


# --- responses -----------------------------------------------------------------------------


class TracedResponse(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """The library's response, plus ``ct_trace_id`` and ``ct_score``.

    Everything else goes to the response itself: attributes, methods (``model_dump()``,
    ``model_dump_json()``, ``json()``), ``isinstance``, ``str``/``repr``, equality and
    hashing. Pickling and copying produce the plain response.
    """

    def __init__(self, wrapped: Any, call: TracedCall) -> None:
        super().__init__(wrapped)
        self._self_call = call

    @property
    def ct_trace_id(self) -> str:
        """The CT trace id of this call (a UUID string), for scoring later."""
        return self._self_call.trace_id

    def ct_score(self, score: float, scored_by: str = "sdk") -> Any:
        """Score this call in [0, 1]: queued after its trace, delivered in the background.

        Return the score's id, or ``None`` when tracing is off or the score cannot be sent
        (logged). Never raises, never blocks; ``CTClient.score`` is the synchronous call.
        """
        return self._self_call.score(score, scored_by)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__wrapped__.__reduce__()

    def __copy__(self) -> Any:
        return copy.copy(self.__wrapped__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self.__wrapped__, memo)


def wrap_response(response: Any, call: TracedCall) -> Any:
    """Return *response* wrapped in `TracedResponse`, or unchanged if it cannot be proxied."""
    if response is None or isinstance(response, (str, bytes, int, float, bool)):
        return response
    try:
        return TracedResponse(response, call)
    except Exception:
        logger.debug("Could not wrap the LLM response.", exc_info=True)
        return response


# --- streams -------------------------------------------------------------------------------

Accumulate = Callable[[Any], None]
Collect = Callable[[], Extracted]


class _StreamState:
    """What a stream proxy shares with its garbage-collection finalizer (never the proxy)."""

    __slots__ = ("accumulate", "call", "collect")

    def __init__(self, call: TracedCall, accumulate: Accumulate, collect: Collect) -> None:
        self.call = call
        self.accumulate = accumulate
        self.collect = collect

    def done(self) -> None:
        if self.call._done:
            return
        try:
            data = self.collect()
        except Exception:
            logger.debug("Summarising a stream for tracing failed.", exc_info=True)
            data = Extracted()
        self.call.finish(data)

    def failed(self, exc: BaseException) -> None:
        self.call.fail(exc)


class _StreamBase(wrapt.ObjectProxy):  # type: ignore[type-arg]
    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped)
        self._self_state = state

    @property
    def ct_trace_id(self) -> str:
        """The CT trace id of this call (a UUID string), for scoring later."""
        return self._self_state.call.trace_id

    def ct_score(self, score: float, scored_by: str = "sdk") -> Any:
        """Score this call in [0, 1] in the background (see ``TracedResponse.ct_score``)."""
        return self._self_state.call.score(score, scored_by)

    def __del__(self) -> None:
        # An abandoned stream still ends its span, with what was read so far.
        try:
            state = self._self_state
        except Exception:
            return
        if not state.call._done:
            with contextlib.suppress(Exception):
                self._abandoned()
        with contextlib.suppress(Exception):
            state.done()

    def _abandoned(self) -> None:
        """Release what the stream holds when it is dropped before its end (sync only)."""

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("A stream cannot be pickled.")

    def __copy__(self) -> Any:
        raise TypeError("A stream cannot be copied.")

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        raise TypeError("A stream cannot be copied.")


class TracedStream(_StreamBase):
    """A synchronous stream that ends its call's span when it is exhausted or closed.

    Iteration, ``close()`` and ``with`` go through the proxy; the rest goes to the stream.
    """

    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_it: Any = None

    def _abandoned(self) -> None:
        # Close the stream beneath: its connection goes back to the pool, and another
        # instrumentation's stream wrapper ends its span and detaches its context.
        close = getattr(self.__wrapped__, "close", None)
        if close is not None:
            close()

    def __iter__(self) -> Iterator[Any]:
        # ``for chunk in stream``: a generator steps cheaper than a Python ``__next__`` per
        # chunk. It keeps this proxy alive while it runs (``for c in create(...)`` holds only
        # the generator); the proxy never holds it, so when a loop left early drops it, the
        # proxy's ``__del__`` still ends the call.
        return _chunks(self._self_source(), self._self_state, self)

    def _self_source(self) -> Any:
        it = self._self_it
        if it is None:
            wrapped = self.__wrapped__
            it = wrapped if hasattr(type(wrapped), "__next__") else iter(wrapped)
            self._self_it = it
        return it

    def __next__(self) -> Any:
        it = self._self_it
        if it is None:
            it = self._self_source()
        state = self._self_state
        try:
            item = next(it)
        except StopIteration:
            state.done()
            raise
        except BaseException as exc:
            state.failed(exc)
            raise
        try:  # once per chunk: no method call here (issue 28)
            state.accumulate(item)
        except Exception:
            logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
        return item

    def close(self) -> Any:
        """Close the stream and end its span; returns what the library's ``close`` returns."""
        try:
            close = getattr(self.__wrapped__, "close", None)
            return close() if close is not None else None
        finally:
            self._self_state.done()

    def __enter__(self) -> TracedStream:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            leave = getattr(self.__wrapped__, "__exit__", None)
            return leave(exc_type, exc, tb) if leave is not None else None
        finally:
            if exc is not None and not isinstance(exc, GeneratorExit):
                self._self_state.failed(exc)
            self._self_state.done()


def _chunks(it: Any, state: _StreamState, owner: TracedStream) -> Iterator[Any]:
    """`TracedStream`'s iteration: each chunk to the accumulator, the call ended at the end.

    *owner* (the proxy) is only held, so that it outlives the loop.
    """
    accumulate = state.accumulate
    try:
        for item in it:
            try:
                accumulate(item)
            except Exception:
                logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
            yield item
    except GeneratorExit:  # the loop was left early: the proxy ends the call when dropped
        raise
    except BaseException as exc:
        state.failed(exc)
        raise
    state.done()


class TracedAsyncStream(_StreamBase):
    """An asynchronous stream that ends its call's span when it is exhausted or closed."""

    def __init__(self, wrapped: Any, state: _StreamState) -> None:
        super().__init__(wrapped, state)
        self._self_it: Any = None

    def __aiter__(self) -> TracedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        it = self._self_it
        if it is None:
            wrapped = self.__wrapped__
            it = wrapped if hasattr(type(wrapped), "__anext__") else wrapped.__aiter__()
            self._self_it = it
        state = self._self_state
        try:
            item = await it.__anext__()
        except StopAsyncIteration:
            state.done()
            raise
        except BaseException as exc:
            state.failed(exc)
            raise
        try:  # once per chunk: no method call here (issue 28)
            state.accumulate(item)
        except Exception:
            logger.debug("Reading a stream chunk for tracing failed.", exc_info=True)
        return item

    def close(self) -> Any:
        """Close the stream and end its span.

        Returns what the library's ``close`` returns: an awaitable when it is ``async`` (the
        span ends once that is awaited), else its result.
        """
        try:
            closer = getattr(self.__wrapped__, "close", None)
            result = closer() if closer is not None else None
        except BaseException:
            self._self_state.done()
            raise
        if inspect.isawaitable(result):
            return self._done_after(result)
        self._self_state.done()
        return result

    async def _done_after(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        finally:
            self._self_state.done()

    async def aclose(self) -> None:
        """Close the stream (awaiting the library's own close) and end its span."""
        try:
            wrapped = self.__wrapped__
            closer = getattr(wrapped, "aclose", None) or getattr(wrapped, "close", None)
            await _maybe_await(closer)
        finally:
            self._self_state.done()

    async def __aenter__(self) -> TracedAsyncStream:
        await _maybe_await(getattr(self.__wrapped__, "__aenter__", None))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            leave = getattr(self.__wrapped__, "__aexit__", None)
            if leave is not None:
                return await leave(exc_type, exc, tb)
            return None
        finally:
            if exc is not None:
                self._self_state.failed(exc)
            self._self_state.done()


async def _maybe_await(method: Callable[[], Any] | None) -> Any:
    if method is None:
        return None
    result = method()
    if inspect.isawaitable(result):
        return await result
    return result


def wrap_stream(
    stream: Any, call: TracedCall, accumulate: Accumulate, collect: Collect, *, is_async: bool
) -> Any:
    """Return *stream* behind a proxy that ends *call* when the stream ends."""
    try:
        state = _StreamState(call, accumulate, collect)
        return (TracedAsyncStream if is_async else TracedStream)(stream, state)
    except Exception:
        logger.exception("Could not wrap the LLM stream; its span ends now.")
        call.finish(Extracted())
        return stream


# --- chat-completion shaped responses (openai chat, litellm) -----------------------------


def chat_prompt(messages: Any) -> tuple[str | None, list[str]]:
    """The prompt text (last user message) and every message text, prompt text first."""
    prompt: str | None = None
    texts: list[str] = []
    if isinstance(messages, (list, tuple)):
        for message in messages:
            text = text_of(_get(message, "content"))
            if text is None:
                continue
            texts.append(text)
            if _get(message, "role") == "user":
                prompt = text
    if prompt is not None:
        texts.remove(prompt)
        texts.insert(0, prompt)
    return prompt, texts


def chat_input_messages(messages: Any) -> Callable[[], list[dict[str, Any]]]:
    """A thunk that renders *messages* as GenAI ``gen_ai.input.messages``."""

    def render() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for message in messages if isinstance(messages, (list, tuple)) else ():
            text = text_of(_get(message, "content"))
            parts = [{"type": "text", "content": text}] if text is not None else []
            out.append({"role": str(_get(message, "role", "user")), "parts": parts})
        return out

    return render


def chat_extract(response: Any) -> Extracted:
    """Read a chat-completion response (openai ``ChatCompletion`` or litellm ``ModelResponse``)."""
    data = Extracted(response_id=_str(_get(response, "id")), model=_str(_get(response, "model")))
    choices = _get(response, "choices") or []
    texts: list[str] = []
    for choice in choices:
        reason = _get(choice, "finish_reason")
        if isinstance(reason, str):
            data.finish_reasons.append(reason)
        if _get(choice, "index", 0) == 0:
            text = text_of(_get(_get(choice, "message"), "content"))
            if text is not None:
                texts.append(text)
    data.text = "".join(texts) if texts else None
    data.service_tier = _str(_get(response, "service_tier"))
    data.system_fingerprint = _str(_get(response, "system_fingerprint"))
    _chat_usage(data, _get(response, "usage"))
    return data


def _chat_usage(data: Extracted, usage: Any) -> None:
    if usage is None:
        return
    data.input_tokens = _int(_get(usage, "prompt_tokens"))
    data.output_tokens = _int(_get(usage, "completion_tokens"))
    data.total_tokens = _int(_get(usage, "total_tokens"))
    details = _get(usage, "prompt_tokens_details")
    if details is not None:
        data.cached_input_tokens = _int(_get(details, "cached_tokens"))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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


class ChatStreamAccumulator:
    """Collects chat-completion chunks: text of choice 0, finish reasons, usage.

    Per chunk it only reads attributes and appends choice 0's text (joined once, in
    `collect`); the response id, model, fingerprint and tier are read while still unknown,
    usage when a chunk carries it (the final one, with ``include_usage``).
    """

    __slots__ = ("data", "parts", "reasons")

    def __init__(self) -> None:
        self.data = Extracted()
        self.parts: list[str] = []
        self.reasons: dict[int, str] = {}

    def add(self, chunk: Any) -> None:
        if isinstance(chunk, dict):
            self._add_mapping(chunk)
            return
        # the hot path: attribute objects (openai's and litellm's chunks), no helper calls
        data = self.data
        if data.response_id is None:
            value = getattr(chunk, "id", None)
            if isinstance(value, str) and value:
                data.response_id = value
        if data.model is None:
            value = getattr(chunk, "model", None)
            if isinstance(value, str) and value:
                data.model = value
        if data.system_fingerprint is None:
            value = getattr(chunk, "system_fingerprint", None)
            if isinstance(value, str) and value:
                data.system_fingerprint = value
        if data.service_tier is None:
            value = getattr(chunk, "service_tier", None)
            if isinstance(value, str) and value:
                data.service_tier = value
        choices = getattr(chunk, "choices", None)
        if choices:
            for choice in choices:
                if isinstance(choice, dict):
                    self._add_choice(choice)
                    continue
                index = getattr(choice, "index", 0)
                if index == 0:
                    content = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(content, str):
                        self.parts.append(content)
                reason = getattr(choice, "finish_reason", None)
                if reason is not None and isinstance(reason, str) and isinstance(index, int):
                    self.reasons[index] = reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            _chat_usage(data, usage)

    def _add_mapping(self, chunk: Any) -> None:
        data = self.data
        if data.response_id is None:
            data.response_id = _str(_get(chunk, "id"))
        if data.model is None:
            data.model = _str(_get(chunk, "model"))
        if data.system_fingerprint is None:
            data.system_fingerprint = _str(_get(chunk, "system_fingerprint"))
        if data.service_tier is None:
            data.service_tier = _str(_get(chunk, "service_tier"))
        for choice in _get(chunk, "choices") or ():
            self._add_choice(choice)
        usage = _get(chunk, "usage")
        if usage is not None:
            _chat_usage(data, usage)

    def _add_choice(self, choice: Any) -> None:
        index = _get(choice, "index", 0)
        if index == 0:
            content = _get(_get(choice, "delta"), "content")
            if isinstance(content, str):
                self.parts.append(content)
        reason = _get(choice, "finish_reason")
        if isinstance(reason, str) and isinstance(index, int):
            self.reasons[index] = reason

    def collect(self) -> Extracted:
        data = self.data
        data.text = "".join(self.parts) if self.parts else None
        data.finish_reasons = [self.reasons[i] for i in sorted(self.reasons)]
        return data


def server_of(url: Any) -> tuple[str | None, int | None]:
    """Host and port of a base URL (an ``httpx.URL`` or a string)."""
    if url is None:
        return None, None
    host = getattr(url, "host", None)
    if host is not None:
        port = getattr(url, "port", None)
        return (str(host) or None), (port if isinstance(port, int) else None)
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(str(url))
        return parts.hostname, parts.port
    except ValueError:
        return None, None
