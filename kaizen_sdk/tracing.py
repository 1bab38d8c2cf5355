"""Tracer-provider handling, CT span attribute names, and the record that travels beside a span.

CONTRACT (shared by ``decorators.py`` and ``integrations/*``; implemented here and in
``delivery.py``):

- `Attr` holds every ``ct.*`` span attribute key. ``gen_ai.*`` keys come from
  ``opentelemetry.semconv._incubating.attributes.gen_ai_attributes``.
- Content (inputs, outputs, prompt and response text) never goes on span attributes unless
  the application opted in with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``;
  what the CT server needs travels beside the span as a `CallRecord`, handed over with
  ``pipeline.attach(span, record)`` before ``span.end()``.
- ``pipeline_for(client)`` returns the client's `Pipeline` (built lazily, once): its
  ``tracer`` makes CT spans; finished CT spans go through an OpenTelemetry
  ``BatchSpanProcessor`` into the CT exporter (``delivery.py``), which turns span + record into
  trace/feedback requests.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from uuid import UUID

__all__ = ["Attr", "CallRecord"]


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
    reaching the application's own exporters. Latency comes from the span's own times.
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
    parent_trace_id: UUID | None = None
    log_feedback: bool = False
    metadata: dict[str, Any] | None = None
    error: str | None = None
