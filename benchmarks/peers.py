"""The peers, set up the way their documentation says, but pointed at the loopback sink.

Each builder imports its peer lazily and raises whatever the import raises; callers turn
that into a ``None`` figure with a note (`attempt`). Nothing here sets a global tracer
provider: every peer gets its own, so no peer's processors see another's spans (or ours).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = [
    "NullSpanExporter",
    "attempt",
    "kaizen_client",
    "langfuse_client",
    "langsmith_client",
    "otel_provider",
    "otlp_exporter",
    "point_peers_at",
]

T = TypeVar("T")

API_KEY = "kaizen-bench-key"


def point_peers_at(sink_url: str) -> None:
    """Send every peer's uploads to *sink_url*, and keep optional network features off."""
    os.environ.update(
        {
            "LANGFUSE_HOST": sink_url,
            "LANGFUSE_BASE_URL": sink_url,
            "LANGFUSE_PUBLIC_KEY": "pk-lf-bench",
            "LANGFUSE_SECRET_KEY": "sk-lf-bench",
            "LANGSMITH_TRACING": "true",
            "LANGSMITH_ENDPOINT": sink_url,
            "LANGSMITH_API_KEY": "lsv2-bench",
            "LANGSMITH_PROJECT": "kaizen-bench",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink_url,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
    )
    for name in ("OTEL_SDK_DISABLED", "LANGFUSE_TRACING_ENABLED", "KAIZEN_ENABLED"):
        os.environ.pop(name, None)


def attempt(label: str, build: Callable[[], T], notes: list[str]) -> T | None:
    """Call *build*; on any error record "<label> not measured: <why>" in *notes*."""
    try:
        return build()
    except Exception as exc:  # peers are optional at run time
        notes.append(f"{label} not measured: {type(exc).__name__}: {exc}")
        return None


class NullSpanExporter:
    """An OpenTelemetry span exporter that accepts every batch and does nothing."""

    def export(self, spans: Sequence[Any]) -> Any:
        """Accept *spans*."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered."""
        return True


def otel_provider(exporter: Any = None) -> Any:
    """A private SDK `TracerProvider` with a `BatchSpanProcessor` into *exporter*.

    ``None`` means `NullSpanExporter`: the bare cost of the SDK span machinery.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter or NullSpanExporter()))
    return provider


def otlp_exporter(sink_url: str) -> Any:
    """An OTLP/HTTP protobuf span exporter that posts to the sink."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{sink_url}/v1/traces")


def kaizen_client(base_url: str, **kwargs: Any) -> Any:
    """A `kaizen_sdk.CTClient` for *base_url* with the benchmark key."""
    from kaizen_sdk import CTClient

    return CTClient(api_key=API_KEY, base_url=base_url, **kwargs)


def langfuse_client(sink_url: str) -> Any:
    """A Langfuse client posting OTLP to the sink, on its own tracer provider."""
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    return Langfuse(
        public_key="pk-lf-bench",
        secret_key="sk-lf-bench",
        host=sink_url,
        tracer_provider=TracerProvider(),
    )


def langsmith_client(sink_url: str) -> Any:
    """A LangSmith client posting runs to the sink."""
    from langsmith import Client

    return Client(api_url=sink_url, api_key="lsv2-bench")
