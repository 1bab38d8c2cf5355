"""The decorator's span attributes on an application's SDK provider: written into the span
directly where nothing could tell (`kaizen_sdk._sdk_spans`), passed to ``start_span``
everywhere else, and the same exported span either way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

import kaizen_sdk as ct
from kaizen_sdk import _sdk_spans
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]


class _SeesStart(SpanProcessor):
    """A processor that reads a span's attributes when it starts (as some vendors' do)."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


class _ByTask(Sampler):
    """A sampler that decides on the task name attribute: it must see it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        self.seen.append(dict(attributes or {}))
        keep = (attributes or {}).get("ct.task.name") != "dropped"
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "ByTask"


class _Quiet(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _provider(*processors: SpanProcessor, **kwargs: Any) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False, **kwargs)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _key(provider: TracerProvider) -> type | None:
    return _sdk_spans.fast_key(provider.get_tracer("t"))


def test_only_the_sdks_own_samplers_processors_and_open_limits_allow_the_fast_path() -> None:
    quiet = SimpleSpanProcessor(_Quiet())
    one = _provider(quiet)
    assert _key(one) is type(one.get_tracer("t").start_span("x"))
    allowed = [
        _provider(quiet),
        _provider(),  # no processor yet
        _provider(BatchSpanProcessor(_Quiet())),
        _provider(quiet, sampler=ALWAYS_ON),
        _provider(quiet, sampler=ALWAYS_OFF),
        _provider(quiet, sampler=TraceIdRatioBased(0.5)),
        _provider(quiet, sampler=ParentBasedTraceIdRatio(0.5)),
        _provider(quiet, sampler=ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF)),
        _provider(quiet, span_limits=SpanLimits(max_span_attributes=16)),
    ]
    refused = [
        _provider(_SeesStart()),
        _provider(quiet, _SeesStart()),
        _provider(quiet, sampler=_ByTask()),
        _provider(quiet, sampler=ParentBased(_ByTask())),
        _provider(quiet, sampler=ParentBased(ALWAYS_ON, local_parent_sampled=_ByTask())),
        _provider(quiet, span_limits=SpanLimits(max_span_attribute_length=10)),
        _provider(quiet, span_limits=SpanLimits(max_span_attributes=15)),
    ]
    assert [_key(p) is not None for p in allowed] == [True] * len(allowed)
    assert [_key(p) for p in refused] == [None] * len(refused)
    assert _sdk_spans.fast_key(trace.NoOpTracer()) is None


def _run(client: CTClient, task: str, **context: Any) -> str:
    @client.task(task, default_prompt="Echo {{ x }}")
    def echo(x: int = 1) -> int:
        return x

    with ct.context(**context):
        _, run = echo.call(3)
    return run.trace_id


def test_the_exported_span_is_the_same_on_both_paths(local_server: LocalServer) -> None:
    fast_spans, slow_spans = InMemorySpanExporter(), InMemorySpanExporter()
    fast = _provider(SimpleSpanProcessor(fast_spans))
    slow = _provider(SimpleSpanProcessor(slow_spans), _SeesStart())
    assert _key(fast) is not None and _key(slow) is None
    task = f"same-span-{uuid.uuid4().hex[:8]}"
    ids = {}
    for name, provider in (("fast", fast), ("slow", slow)):
        with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                      tracer_provider=provider) as client:
            mine = f"{task}-{name}"  # a new task each: both start from the default prompt
            outer = client.task(mine + "-outer", default_prompt="o")(
                lambda: _run(client, mine, user_id="u-1", session_id="s-1", tags=["a", "b"])  # noqa: B023
            )
            ids[name] = outer()
            assert client.flush() and client.stats().sent == 2
    # "ct.task <task>" sorts before "ct.task <task>-outer"
    (fast_inner, fast_outer) = sorted(fast_spans.get_finished_spans(), key=lambda s: s.name)
    (slow_inner, slow_outer) = sorted(slow_spans.get_finished_spans(), key=lambda s: s.name)

    def shape(span: ReadableSpan, trace_id: str) -> list[tuple[str, Any]]:
        attributes = dict(span.attributes or {})
        assert attributes.pop("ct.trace_id") == trace_id
        assert attributes.pop("ct.task.name").startswith(task)  # type: ignore[union-attr]
        attributes.pop("ct.parent_trace_id", None)
        attributes.pop("ct.prompt.version_id", None)  # each client's own task
        return list(attributes.items())

    inner = shape(fast_inner, ids["fast"])
    assert inner == shape(slow_inner, ids["slow"])
    assert [k for k, _ in inner] == [
        "openinference.span.kind", "ct.prompt.version_number",
        "user.id", "session.id", "ct.tags",
    ]
    assert dict(inner)["ct.tags"] == ("a", "b")
    assert fast_inner.attributes is not None and slow_inner.attributes is not None
    assert fast_inner.attributes["ct.parent_trace_id"] == fast_outer.attributes["ct.trace_id"]  # type: ignore[index]
    assert slow_inner.attributes["ct.parent_trace_id"] == slow_outer.attributes["ct.trace_id"]  # type: ignore[index]
    assert fast_inner.dropped_attributes == slow_inner.dropped_attributes == 0


def test_a_processor_or_sampler_that_reads_attributes_sees_them_at_the_start(
    local_server: LocalServer,
) -> None:
    spans = InMemorySpanExporter()
    provider = _provider(SimpleSpanProcessor(spans))
    task = f"seen-{uuid.uuid4().hex[:8]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  tracer_provider=provider) as client:
        trace_id = _run(client, task)  # the fast path
        late = _SeesStart()
        provider.add_span_processor(late)  # a new processor tuple: checked again
        second = _run(client, task)
        assert client.flush()
    assert [a.get("ct.trace_id") for a in late.at_start] == [second]
    assert late.at_start[0]["ct.task.name"] == task
    assert [s.attributes["ct.trace_id"] for s in spans.get_finished_spans()] == [  # type: ignore[index]
        trace_id, second,
    ]

    sampler = _ByTask()
    sampled = InMemorySpanExporter()
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  tracer_provider=_provider(SimpleSpanProcessor(sampled), sampler=sampler)
                  ) as client:
        kept = _run(client, task)
        _run(client, "dropped")
        assert client.flush() and client.stats().sent == 2  # the records go either way
    assert [s.get("ct.task.name") for s in sampler.seen] == [task, "dropped"]
    assert [s.attributes["ct.trace_id"] for s in sampled.get_finished_spans()] == [kept]  # type: ignore[index]


def test_a_span_the_sdk_sampler_drops_still_sends_its_record(local_server: LocalServer) -> None:
    spans = InMemorySpanExporter()
    provider = _provider(SimpleSpanProcessor(spans), sampler=ALWAYS_OFF)
    assert _key(provider) is not None
    task = f"off-{uuid.uuid4().hex[:8]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key,
                  tracer_provider=provider) as client:
        trace_id = _run(client, task)
        assert client.flush() and client.stats().sent == 1
        [stored] = client.list_traces(task_id=task)
    assert spans.get_finished_spans() == ()
    assert str(stored.id) == trace_id and stored.latency_ms is not None
