"""Living beside other GenAI instrumentations (openai-v2, OpenLLMetry, OpenInference) and
beside ourselves: the in-call mark that keeps a library called underneath from being traced
twice, recognising another instrumentation's span or patch, and adopting the span one of
them starts beneath our call.
"""

from __future__ import annotations

import contextvars
import logging
import weakref
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import Span, SpanKind

from kaizen_sdk.integrations._patch import OUR_WRAPPERS
from kaizen_sdk.integrations._semconv import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_SYSTEM,
    OPENINFERENCE_SPAN_KIND,
)
from kaizen_sdk.tracing import SCOPE

__all__ = [
    "Adoption",
    "IN_CALL",
    "foreign_beneath",
    "foreign_call_span",
    "genai_patch",
    "in_instrumented_call",
    "is_genai_span",
    "join_global_provider",
]

logger = logging.getLogger("kaizen_sdk.instrument")

# Set while an instrumented call runs (a contextvar, so copied into executor threads): an
# instrumented library called underneath it is not traced again. It holds the call's
# `Adoption` when another instrumentation beneath us makes the span, else True. It is our own
# variable, not a key in the OpenTelemetry context: another instrumentation that attaches its
# span during the call and detaches it when a stream ends restores the context it found, and
# that must never bring our mark back (it would silence every later call in the thread).
IN_CALL: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "kaizen_sdk_in_instrumented_call", default=None
)


def in_instrumented_call() -> bool:
    """Return True inside an instrumented LLM call (a library calling another one underneath)."""
    return IN_CALL.get() is not None


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


def is_genai_span(span: Any) -> bool:
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


def foreign_call_span(context: otel_context.Context | None = None) -> Span | None:
    """The current span (of *context*, by default the current one) when another GenAI
    instrumentation traces this very call (outside us)."""
    span = trace.get_current_span(context)
    if span.is_recording() and is_genai_span(span):
        return span
    return None


def foreign_beneath(wrapped: Any) -> bool:
    """True when *wrapped* (what our patch calls) is another library's wrapt patch."""
    # wrapt's FunctionWrapper/BoundFunctionWrapper keep the patch's function here
    wrapper = getattr(wrapped, "_self_wrapper", None)
    return wrapper is not None and wrapper not in OUR_WRAPPERS


# Packages whose patches make GenAI spans (openai-v2, OpenLLMetry, OpenInference, ...).
_GENAI_PATCHERS = ("opentelemetry.instrumentation.", "openinference.instrumentation.",
                   "opentelemetry.util.genai")


def genai_patch(attribute: Any) -> bool:
    """True when *attribute* (a method as stored on its class) is a GenAI instrumentation's
    wrapt patch, not ours."""
    try:
        wrapper = getattr(attribute, "_self_wrapper", None)
        if wrapper is None or wrapper in OUR_WRAPPERS:
            return False
        module = getattr(wrapper, "__module__", None) or type(wrapper).__module__
        return isinstance(module, str) and module.startswith(_GENAI_PATCHERS)
    except Exception:
        return False


class Adoption:
    """An LLM call of ours whose span another instrumentation, called beneath us, makes."""

    __slots__ = ("attributes", "span")

    def __init__(self, attributes: dict[str, Any]) -> None:
        self.attributes = attributes
        self.span: Any = None


class _Adopter(SpanProcessor):
    """Puts our ``ct.*`` attributes on the GenAI span an instrumentation beneath us starts."""

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        try:
            adoption = IN_CALL.get()  # the span starts inside our call, on its thread
            if isinstance(adoption, Adoption) and adoption.span is None and is_genai_span(span):
                adoption.span = span
                span.set_attributes(adoption.attributes)
        except Exception:
            logger.debug("Adopting a GenAI span failed.", exc_info=True)


_ADOPTERS: weakref.WeakSet[Any] = weakref.WeakSet()
_ADOPTER = _Adopter()


def join_global_provider() -> None:
    """Add the adopter to the application's global SDK provider (once)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, SDKTracerProvider) and provider not in _ADOPTERS:
        provider.add_span_processor(_ADOPTER)
        _ADOPTERS.add(provider)


# --- metrics -------------------------------------------------------------------------------
