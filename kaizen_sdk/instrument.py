"""``instrument()`` and ``uninstrument()``: trace every call of an LLM client library.

This module owns the registry of instrumented libraries (one lock, so concurrent calls are
safe) and dispatches to ``kaizen_sdk.integrations.<library>``. It imports ``openai``, ``litellm``,
``anthropic`` or ``google.genai`` only when the application passes that module in.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    # Imported for types only: `kaizen_sdk/__init__` imports this module eagerly (so the
    # package attribute ``instrument`` stays the function), and must stay cheap to import.
    from opentelemetry.trace import Tracer, TracerProvider

    from kaizen_sdk.async_client import AsyncCTClient
    from kaizen_sdk.client import CTClient

__all__ = ["instrument", "instrumented", "uninstrument"]

logger = logging.getLogger("kaizen_sdk.instrument")

_SUPPORTED: dict[str, str] = {
    "anthropic": "kaizen_sdk.integrations.anthropic",
    "google.genai": "kaizen_sdk.integrations.google_genai",
    "litellm": "kaizen_sdk.integrations.litellm",
    "openai": "kaizen_sdk.integrations.openai",
}
_LOCK = threading.Lock()
_ACTIVE: dict[str, ModuleType] = {}


def _library(module: Any) -> str:
    name = getattr(module, "__name__", None) if isinstance(module, ModuleType) else None
    if name not in _SUPPORTED:
        supported = ", ".join(sorted(_SUPPORTED))
        raise ValueError(
            f"Cannot instrument {module!r}: pass one of the supported modules ({supported}), "
            "e.g. kaizen_sdk.instrument(openai)."
        )
    return str(name)


def instrument(
    module: ModuleType,
    *,
    client: CTClient | AsyncCTClient | None = None,
    task_map: Mapping[str, str] | None = None,
    capture_content: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Trace every LLM call made through *module* (``openai``, ``litellm``, ``anthropic`` or
    ``google.genai``).

    Example:
        ```python
        import litellm
        import kaizen_sdk as ct

        ct.instrument(litellm, task_map={"SUMMARIZE_TICKET": "summarize_ticket"})
        response = litellm.completion(model="openai/gpt-4o-mini", messages=[...])
        response.ct_score(0.9)            # queued like the trace; or later, synchronously:
                                          # client.score(response.ct_trace_id, 0.9)
        ```

    Each call gets a span (OpenTelemetry GenAI conventions) and a CT trace record, delivered
    in the background; the response, and a stream, gain ``ct_trace_id`` and ``ct_score()``.
    A second call for the same module logs a warning and does nothing.

    Parameters:
        module: the ``openai``, ``litellm``, ``anthropic`` or ``google.genai`` module itself.
            Anything else is a `ValueError`.
        client: the `CTClient` whose pipeline delivers the records and that ``ct_score``
            uses; default: the process-wide client (``kaizen_sdk.get_client()``).
        task_map: prompt-constant names or prompt texts -> task names, for calls that no
            ``@ct.task`` encloses.
        capture_content: ``False`` leaves prompt and response text out of records and spans
            (so does ``KAIZEN_CAPTURE_CONTENT=false``).
        tracer_provider: make the spans with this provider instead of the client's.

    When *client* is not given and no default client can be built (no ``KAIZEN_API_KEY``,
    a malformed ``KAIZEN_*`` value) or ``KAIZEN_ENABLED=false``, calls run untraced and the
    reason is logged once; nothing is raised.
    """
    name = _library(module)
    with _LOCK:
        if name in _ACTIVE:
            logger.warning("%s is already instrumented; this call does nothing.", name)
            return
        integration = importlib.import_module(_SUPPORTED[name])
        tracer, settings = _resolve(client, task_map, capture_content, tracer_provider)
        integration._instrument(tracer, settings)
        _ACTIVE[name] = integration


def uninstrument(module: ModuleType) -> None:
    """Restore *module*'s original functions; calling it when not instrumented does nothing."""
    name = _library(module)
    with _LOCK:
        integration = _ACTIVE.pop(name, None)
        if integration is None:
            integration = importlib.import_module(_SUPPORTED[name])
        integration._uninstrument()


def instrumented(module: ModuleType) -> bool:
    """Return True when *module* is currently instrumented."""
    name = _library(module)
    with _LOCK:
        return name in _ACTIVE


def _resolve(
    client: Any,
    task_map: Mapping[str, str] | None,
    capture_content: bool,
    tracer_provider: TracerProvider | None,
) -> tuple[Tracer, Any]:
    """The tracer and `InstrumentSettings` for one instrumented library."""
    from kaizen_sdk import tracing
    from kaizen_sdk.integrations._common import InstrumentSettings

    if client is None:
        from kaizen_sdk._default import client_for_tasks

        client = client_for_tasks()  # logs a configuration problem once
        if client is None:
            # No usable configuration: calls run untraced, as the decorator's do.
            from opentelemetry.trace import NoOpTracer

            return NoOpTracer(), InstrumentSettings(enabled=False)
    pipeline = tracing.pipeline_for(client)

    def scorer(trace_id: str, value: float, scored_by: str) -> Any:
        # on the background path, like the trace: never raises, never blocks
        return pipeline.score(trace_id, value, scored_by)

    settings = InstrumentSettings(
        capture_content=bool(capture_content and pipeline.settings.capture_content),
        capture_on_spans=pipeline.capture_on_spans,
        task_map=dict(task_map or {}),
        attach=pipeline.attach,
        score=scorer,
        current_call=_current_call,
        enabled=pipeline.enabled,
        span_attributes=_spans_observable(client, pipeline, tracer_provider),
    )
    return _tracer(pipeline, tracer_provider), settings


def _spans_observable(client: Any, pipeline: Any, tracer_provider: Any) -> bool:
    """False when nobody records the spans (no application provider: non-recording spans)."""
    if tracer_provider is not None or getattr(client, "_tracer_provider", None) is not None:
        return True
    # the pipeline's tracer knows: False while CT spans are not recorded for the application
    return bool(getattr(pipeline.tracer, "observable", True))


def _tracer(pipeline: Any, tracer_provider: TracerProvider | None) -> Tracer:
    """The pipeline's tracer, or one from *tracer_provider*: its spans, our records beside
    them (``pipeline.attach`` queues each record itself, so no processor is added)."""
    if tracer_provider is None or tracer_provider is pipeline.provider or not pipeline.enabled:
        return cast("Tracer", pipeline.tracer)
    from kaizen_sdk import tracing
    from kaizen_sdk._version import __version__

    return tracer_provider.get_tracer(tracing.SCOPE, __version__)


def _current_call() -> tuple[str, str] | None:
    call = _CURRENT[0]()  # bound once: an import statement here cost every LLM call
    if call is None:
        return None
    return call.task, str(call.trace_id)


def _no_current_call() -> Any:
    from kaizen_sdk._record import CURRENT

    _CURRENT[0] = CURRENT.get  # what tracing.current_call reads, without its frame
    return CURRENT.get()


_CURRENT: list[Any] = [_no_current_call]
"""``[current_call]``: the ``get`` of the current ``@ct.task`` call's variable (what
``tracing.current_call`` returns) once the first instrumented call has run (imported then,
so ``import kaizen_sdk`` stays cheap)."""


def _integration(module: Any) -> ModuleType:
    """The integration module that patches library *module* (`ValueError` if unsupported)."""
    return importlib.import_module(_SUPPORTED[_library(module)])
