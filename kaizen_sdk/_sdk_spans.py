"""When the decorator may write its span attributes into an OpenTelemetry SDK span directly.

The SDK validates every attribute given to ``start_span`` (about 8,000 instructions each on
CPython 3.11: five of them cost a quarter of a bare span). The decorator's own attributes
are ours, made of strings, ints and a tuple of strings, so validating them again is work
nothing needs. Skipping it must not be observable, so `fast_key` allows it only for a tracer
where nothing reads attributes before the span ends:

- its sampler is one of the SDK's own (always on/off, trace-id ratio, parent based on
  those), which pass the attributes through untouched and decide without them;
- every span processor is the SDK's ``BatchSpanProcessor`` or ``SimpleSpanProcessor``,
  which do nothing when a span starts (any other processor may read them in ``on_start``);
- its span limits cannot cut ours: no value length limit, room for all of them.

Then the span is started without attributes and ours go into its attribute map at once,
in the order ``start_span`` would have stored them: the exported span is the same.
Otherwise the decorator passes them to ``start_span`` as before.

Borrowed OpenTelemetry SDK internals (pinned in tests/test_borrowed_internals.py, so an
upgrade that moves one fails there, and here falls back to the public path):
``Tracer._span_limits``, ``SynchronousMultiSpanProcessor._span_processors`` (also on the
concurrent one), ``ParentBased``'s five delegate samplers, ``Span._attributes._dict``.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ATTRIBUTE_ROOM", "UNSEEN", "entry", "fast_key", "processors_of"]

ATTRIBUTE_ROOM = 16
"""More than the decorator ever sets at a span's start (it sets at most ten)."""

UNSEEN: tuple[Any, Any, Any] = (None, None, None)
"""The `entry` of no tracer yet: what a decorated function starts with."""

_DELEGATES = (
    "_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
    "_local_parent_sampled", "_local_parent_not_sampled",
)


def entry(tracer: Any) -> tuple[Any, Any, Any]:
    """``(tracer, its processor tuple or None, the SDK span class or None)`` to keep.

    The third item is the class of the spans the decorator may write its attributes into
    directly (``None``: pass them to ``start_span``). The decorator reuses the entry while
    the tracer and its processor tuple are the same objects (the tuple is ``None`` for a
    tracer that is not the SDK's, and stays so).
    """
    return (tracer, processors_of(tracer), fast_key(tracer))


def processors_of(tracer: Any) -> Any:
    """The tuple of span processors behind an SDK *tracer* (replaced, never changed in
    place, when the application adds one), or ``None``."""
    return getattr(getattr(tracer, "span_processor", None), "_span_processors", None)


def _blind(sampler: Any, sampling: Any, depth: int = 0) -> bool:
    """True when *sampler* is the SDK's own and decides without reading attributes."""
    kind = type(sampler)
    if kind is sampling.StaticSampler or kind is sampling.TraceIdRatioBased:
        return True
    if (kind is sampling.ParentBased or kind is sampling.ParentBasedTraceIdRatio) and depth < 2:
        delegates = [getattr(sampler, name, None) for name in _DELEGATES]
        return all(d is not None and _blind(d, sampling, depth + 1) for d in delegates)
    return False


def fast_key(tracer: Any) -> type | None:
    """The SDK's span class when the decorator may write its attributes into the spans of
    *tracer* directly (see the module docstring), else ``None``.

    Only modules the application already imported are looked at: with an SDK tracer, the
    SDK is loaded; without one, this costs no import.
    """
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    if sdk is None or type(tracer) is not getattr(sdk, "Tracer", None):
        return None
    try:
        sampling = sys.modules["opentelemetry.sdk.trace.sampling"]
        export = sys.modules.get("opentelemetry.sdk.trace.export")
        quiet = () if export is None else (export.BatchSpanProcessor, export.SimpleSpanProcessor)
        processors = processors_of(tracer)
        if type(processors) is not tuple or not all(type(p) in quiet for p in processors):
            return None
        if not _blind(tracer.sampler, sampling):
            return None
        limits = tracer._span_limits
        if limits.max_span_attribute_length is not None:
            return None
        room = limits.max_span_attributes
        if room is not None and room < ATTRIBUTE_ROOM:
            return None
        span: type = sdk._Span
        return span
    except Exception:  # an SDK that moved a name: the public path
        return None
