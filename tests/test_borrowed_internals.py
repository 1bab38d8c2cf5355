"""The foreign internals the delivery engine leans on, pinned so an upgrade that removes one
fails here instead of silently taking a slower or unbounded path; and the one TLS context.

- None of OpenTelemetry's: the delivery engine owns its queue and thread and imports no
  OpenTelemetry module at all (checked below).
- OpenTelemetry: ``trace._TRACER_PROVIDER``, read for the per-span "did the global provider
  change" check (`tracing._global_provider`); and the SDK's ``Tracer._span_limits``,
  ``span_processor._span_processors``, ``ParentBased``'s delegates and ``_Span._attributes
  ._dict``, read by the decorator's attribute fast path (`kaizen_sdk._sdk_spans`).
- httpcore 1.x: ``HTTPTransport._pool._network_backend``, wrapped so every read and write of
  the exporter is bound by its deadline.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest

from kaizen_sdk import _sender, delivery, tracing
from kaizen_sdk.client import CTClient

pytestmark = [pytest.mark.unit]


def _client(base_url: str, **kwargs: Any) -> CTClient:
    return CTClient(api_key="borrowed-internals-key", base_url=base_url, max_retries=0,
                    **kwargs)


def test_the_delivery_engine_leans_on_no_opentelemetry_internals() -> None:
    # The engine's queue, thread and batching are its own: no span processor, no OTel import.
    for module in ("delivery", "_sender", "_requests"):
        source = (Path(delivery.__file__).parent / f"{module}.py").read_text()
        assert "opentelemetry" not in source, module
    with _client("http://127.0.0.1:1") as client:
        engine = tracing.pipeline_for(client).delivery
        assert engine is not None
        assert not hasattr(engine, "processor")


def test_the_span_attribute_fast_path_finds_what_it_borrows_from_the_sdk() -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider, _Span
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    from kaizen_sdk import _sdk_spans

    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("borrowed")
    assert type(tracer._span_limits) is SpanLimits, "the SDK moved Tracer._span_limits"
    before = _sdk_spans.processors_of(tracer)
    assert before == (), "the SDK moved span_processor._span_processors"
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    after = _sdk_spans.processors_of(tracer)
    assert type(after) is tuple and len(after) == 1 and after is not before, (
        "adding a processor no longer replaces the tuple: the decorator would not notice"
    )
    sampler = ParentBased(ALWAYS_ON)
    for name in ("_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
                 "_local_parent_sampled", "_local_parent_not_sampled"):
        assert getattr(sampler, name, None) is not None, f"ParentBased moved {name}"
    span = tracer.start_span("x")
    assert type(span) is _Span and type(span._attributes._dict) is dict, (
        "the SDK moved _Span._attributes._dict"
    )
    span.end()
    assert _sdk_spans.fast_key(tracer) is _Span  # every borrowed name found: the fast path


def test_the_exporter_streams_are_deadline_bound() -> None:
    transport = _sender.deadline_transport(True)
    pool = getattr(transport, "_pool", None)
    assert pool is not None, "httpx moved HTTPTransport._pool"
    backend = getattr(pool, "_network_backend", None)
    assert type(backend).__name__ == "_DeadlineBackend", (
        "httpcore moved ConnectionPool._network_backend"
    )


def test_client_and_exporter_load_the_certificate_bundle_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle.pem"  # a trust setting no earlier test made a context for
    shutil.copy(certifi.where(), bundle)
    made: list[str] = []
    real = ssl.create_default_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append(str(kwargs.get("cafile") or kwargs.get("capath") or ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counting)
    with _client("https://ct.invalid", verify=str(bundle)) as client:
        tracing.pipeline_for(client)  # builds the exporter's own HTTP client
        assert made == [str(bundle)]


def test_an_http_base_url_loads_no_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    real = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context",
                        lambda *a, **k: made.append(k) or real(*a, **k))
    with _client("http://127.0.0.1:1") as client:
        tracing.pipeline_for(client)
        assert made == []


def test_the_global_provider_is_still_readable_without_the_environment() -> None:
    # tracing._global_provider reads the API's module global for a per-span identity check;
    # without it every span falls back to get_tracer_provider() (correct, but slow).
    from opentelemetry import trace

    assert "_TRACER_PROVIDER" in vars(trace), "OTel renamed trace._TRACER_PROVIDER"
    assert tracing._global_provider() is vars(trace)["_TRACER_PROVIDER"] or (
        vars(trace)["_TRACER_PROVIDER"] is None
    )
