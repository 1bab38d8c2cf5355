"""What the integrations read requests and responses with: their settings, what a response
told us (`Extracted`), tolerant field readers, a request's ``gen_ai.request.*`` attributes,
a base URL's host and port.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span, Tracer

from kaizen_sdk._config import genai_latest_mode
from kaizen_sdk.integrations._semconv import (
    GEN_AI_OUTPUT_TYPE,
    GEN_AI_REQUEST_CHOICE_COUNT,
    GEN_AI_REQUEST_FREQUENCY_PENALTY,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_PRESENCE_PENALTY,
    GEN_AI_REQUEST_SEED,
    GEN_AI_REQUEST_STOP_SEQUENCES,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    LEGACY_REQUEST_SERVICE_TIER,
    OPENAI_REQUEST_SERVICE_TIER,
)
from kaizen_sdk.tracing import CallRecord

__all__ = [
    "DEFAULT_TASK",
    "Extracted",
    "InstrumentSettings",
    "as_int",
    "as_number",
    "get_field",
    "nonempty_str",
    "request_attributes",
    "rich",
    "server_of",
    "text_of",
]

DEFAULT_TASK = "default"
"""Formerly the task of an LLM call that nothing else names. No call is filed under it any
more: an instrumented call outside any ``@ct.task`` that nothing names (``ct.context(task=)``,
``task_map``, a prompt constant) is traced as a span and sends no CT record."""


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
        value = as_int(kwargs.get(key))
        if value is not None:
            out[GEN_AI_REQUEST_MAX_TOKENS] = value
            break
    for attr, key in (
        (GEN_AI_REQUEST_TEMPERATURE, "temperature"),
        (GEN_AI_REQUEST_TOP_P, "top_p"),
        (GEN_AI_REQUEST_FREQUENCY_PENALTY, "frequency_penalty"),
        (GEN_AI_REQUEST_PRESENCE_PENALTY, "presence_penalty"),
    ):
        number = as_number(kwargs.get(key))
        if number is not None:
            out[attr] = number
    seed = as_int(kwargs.get("seed"))
    if seed is not None:
        out[GEN_AI_REQUEST_SEED] = seed
    choices = as_int(kwargs.get("n"))
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
        given = get_field(kwargs.get("text"), "format")  # the Responses API: text={"format": ...}
    if given is None:
        return None
    kind = given if isinstance(given, str) else get_field(given, "type")
    if isinstance(kind, str):
        return "json" if kind in _JSON_FORMATS else ("text" if kind == "text" else None)
    if isinstance(given, type):  # parse(response_format=SomeModel): structured JSON output
        return "json"
    return None


# --- other GenAI instrumentations ----------------------------------------------------------


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
            text = get_field(part, "text")
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts) if parts else None
    return None


def get_field(obj: Any, key: str, default: Any = None) -> Any:
    """Read *key* from a dict (a TypedDict included) or an attribute from an object."""
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def as_number(value: Any) -> int | float | None:
    """*value* when it is a number given as a parameter, else None."""
    # openai's NotGiven/Omit sentinels and None are not numbers; bool is not a parameter value.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def as_int(value: Any) -> int | None:
    """*value* when it is an int (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def nonempty_str(value: Any) -> str | None:
    """*value* when it is a non-empty string, else None."""
    return value if isinstance(value, str) and value else None


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
