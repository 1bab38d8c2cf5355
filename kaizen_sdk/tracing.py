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
  application's global SDK ``TracerProvider`` when it has set one (our processor is added
  to it, it is never replaced), else from a private provider. Finished CT spans (those with
  an attached record) go through an OpenTelemetry ``BatchSpanProcessor`` into the CT
  exporter (``delivery.py``), which turns span + record into trace/feedback requests; the
  application's own spans never reach the CT server. A span the application's sampler
  dropped (not recording) still delivers its record; set ``record.latency_ms`` yourself in
  that case if you know it (the decorator does).
- ``current_call()`` returns the `CurrentCall` of the innermost running ``@ct.task`` call
  in this thread / asyncio task (``task``, ``trace_id``, ``prompt``), or ``None``. Use it
  to name the task of an instrumented LLM call and to set ``parent_trace_id``.
- ``inputs``/``output`` of a record may be any value: the exporter converts them to JSON in
  its own thread, never failing (``repr`` fallback, large values truncated with a marker).
- ``new_trace_id()`` returns a fresh random UUID4 cheaply.
- ``pipeline.flush(timeout=None) -> bool``, ``pipeline.stats() -> DeliveryStats``,
  ``pipeline.shutdown()``: used by ``CTClient.flush/stats/close``.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

__all__ = ["SCOPE", "Attr", "CallRecord"]

SCOPE = "kaizen_sdk"
"""Instrumentation scope name of every CT span."""


class Attr:
    """``ct.*`` span attribute keys (CT concepts that the GenAI conventions do not cover)."""

    TASK_NAME = "ct.task.name"
    TRACE_ID = "ct.trace_id"
    PARENT_TRACE_ID = "ct.parent_trace_id"
    PROMPT_VERSION_ID = "ct.prompt.version_id"
    PROMPT_VERSION_NUMBER = "ct.prompt.version_number"
    INPUTS = "ct.inputs"
    OUTPUT = "ct.output"


@dataclasses.dataclass(slots=True)
class CallRecord:
    """What the CT exporter turns into a trace record, and a feedback entry when asked.

    It travels beside the span (never on it), so content reaches the CT server without
    reaching the application's own exporters. Latency comes from the span's own times
    unless ``latency_ms`` is set.
    """

    trace_id: UUID
    task: str
    prompt_text: str | None = None
    response_text: str | None = None
    model: str | None = None
    tokens: int | None = None
    inputs: Any = None
    output: Any = None
    prompt_version_id: UUID | None = None
    prompt_version_number: int | None = None
    parent_trace_id: UUID | None = None
    log_feedback: bool = False
    metadata: dict[str, Any] | None = None
    error: str | None = None
    latency_ms: float | None = None
