"""The tracing pipeline: provider choice, CT-only export, content rules, the instrument contract."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NoOpTracer, SpanKind

import kaizen_sdk as ct
from kaizen_sdk import tracing
from kaizen_sdk.client import CTClient
from kaizen_sdk.tracing import Attr, CallRecord
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def task_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def provider_and_spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _client(server: LocalServer, provider: Any = None, **kwargs: Any) -> CTClient:
    return CTClient(
        base_url=server.base_url, api_key=server.api_key, tracer_provider=provider, **kwargs
    )


def test_client_tracer_provider_receives_ct_spans_and_records_still_arrive(
    local_server: LocalServer,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
    task_name: str,
) -> None:
    provider, spans = provider_and_spans
    with _client(local_server, provider) as client:

        @client.task(task_name, default_prompt="p")
        def run() -> str:
            return "out"

        assert run() == "out"
        assert tracing.pipeline_for(client).provider is provider
        client.flush()
        traces = client.list_traces(task_id=task_name)
    assert [s.name for s in spans.get_finished_spans()] == [f"ct.task {task_name}"]
    assert len(traces) == 1 and traces[0].response_text == "out"


def test_records_only_mode_makes_no_spans_and_keeps_the_apps_nesting(
    local_server: LocalServer,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
    task_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAIZEN_SPANS", "false")
    provider, spans = provider_and_spans
    app = provider.get_tracer("my-app")
    with _client(local_server, provider) as client:

        @client.task(task_name, default_prompt="p")
        def run() -> str:
            with app.start_as_current_span("inside"):
                return "out"

        with app.start_as_current_span("request") as request:
            _, task_run = run.call()
        assert client.stats().queued == 1
        client.flush()
        [stored] = client.list_traces(task_id=task_name)
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert sorted(finished) == ["inside", "request"]  # no ct.task span anywhere
    parent = finished["inside"].parent
    assert parent is not None and parent.span_id == request.get_span_context().span_id
    assert str(stored.id) == task_run.trace_id and stored.response_text == "out"


def test_the_apps_provider_gets_no_ct_processor_so_its_shutdown_stops_no_delivery(
    local_server: LocalServer,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
    task_name: str,
) -> None:
    provider, spans = provider_and_spans
    with _client(local_server, provider) as client:

        @client.task(task_name, default_prompt="p")
        def run(x: int) -> int:
            return x

        run(1)
        provider.shutdown()  # the application's; the CT records never depended on it
        run(2)
        assert client.flush(10)
        assert (client.stats().queued, client.stats().sent) == (2, 2)
        stored = sorted(t.response_text or "" for t in client.list_traces(task_id=task_name))
    assert stored == ["1", "2"]
    assert [s.name for s in spans.get_finished_spans()] == [f"ct.task {task_name}"]


def test_without_a_provider_no_sdk_span_is_built_yet_nesting_and_propagation_work(
    local_server: LocalServer, task_name: str
) -> None:
    from opentelemetry import propagate, trace

    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    seen: dict[str, Any] = {}
    with _client(local_server) as client:
        assert tracing.pipeline_for(client).provider is None  # the test process sets none

        @client.task(f"{task_name}-inner", default_prompt="p")
        def inner() -> str:
            seen["inner"] = trace.get_current_span()
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            seen["traceparent"] = carrier.get("traceparent")
            return "in"

        @client.task(task_name, default_prompt="p")
        def outer() -> str:
            seen["outer"] = trace.get_current_span()
            return inner()

        with trace.use_span(trace.NonRecordingSpan(trace.get_current_span(
            propagate.extract({"traceparent": incoming})).get_span_context())):
            _, run = outer.call()
        assert client.flush(10)
        stats = client.stats()
        [stored_outer] = client.list_traces(task_id=task_name)
        [stored_inner] = client.list_traces(task_id=f"{task_name}-inner")
    out_ctx, in_ctx = seen["outer"].get_span_context(), seen["inner"].get_span_context()
    assert not seen["outer"].is_recording() and not seen["inner"].is_recording()
    assert out_ctx.trace_id == in_ctx.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert len({out_ctx.span_id, in_ctx.span_id, 0x00F067AA0BA902B7}) == 3
    assert seen["traceparent"] == f"00-{in_ctx.trace_id:032x}-{in_ctx.span_id:016x}-01"
    assert (stats.queued, stats.sent, stats.dropped) == (2, 2, 0)
    assert str(stored_outer.id) == run.trace_id and stored_outer.response_text == "in"
    assert stored_inner.parent_trace_id == uuid.UUID(run.trace_id)
    assert stored_outer.latency_ms is not None and stored_outer.latency_ms >= 0


@pytest.fixture
def client(
    local_server: LocalServer, provider_and_spans: tuple[TracerProvider, InMemorySpanExporter]
) -> Iterator[CTClient]:
    c = _client(local_server, provider_and_spans[0])
    yield c
    c.close()


# --- ids and the current call ----------------------------------------------------------------


def test_new_trace_ids_are_distinct_uuid7s_even_when_the_app_seeds_random() -> None:
    random.seed(0)
    first = [tracing.new_trace_id() for _ in range(5000)]
    random.seed(0)
    second = [tracing.new_trace_id() for _ in range(5000)]
    ids = first + second
    assert len(set(ids)) == 10_000
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 7 for i in ids)
    assert {uuid.UUID(i).variant for i in ids} == {uuid.RFC_4122}


def test_trace_ids_sort_by_the_millisecond_they_were_made_in() -> None:
    """UUID7: the first 48 bits are the Unix time in ms, so the server's indexes grow at their
    end; the decorator's inlined copy makes the same kind."""
    before = time.time_ns() // 1_000_000
    made = [tracing.new_trace_id() for _ in range(100)]
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(i).int >> 80 for i in made]
    assert stamps == sorted(stamps) and before <= stamps[0] <= stamps[-1] <= after
    seen: list[str] = []

    @ct.task("uuid7_ids")
    def call() -> None:
        seen.append(str(tracing.current_call().trace_id))  # type: ignore[union-attr]

    call()
    (decorated,) = seen
    assert uuid.UUID(decorated).version == 7
    assert before <= uuid.UUID(decorated).int >> 80 <= time.time_ns() // 1_000_000


def test_current_call_names_the_enclosing_task(client: CTClient, task_name: str) -> None:
    assert tracing.current_call() is None

    @client.task(task_name, default_prompt="Hello {{ who }}")
    def f() -> Any:
        return tracing.current_call()

    call, run = f.call()
    assert call is not None
    assert (call.task, call.trace_id) == (task_name, run.trace_id)
    assert call.prompt is not None and call.prompt.prompt_text == "Hello {{ who }}"


# --- the pipeline ----------------------------------------------------------------------------


def test_pipeline_for_builds_one_pipeline_per_client(local_server: LocalServer) -> None:
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as client:
        pipeline = tracing.pipeline_for(client)
        assert tracing.pipeline_for(client) is pipeline and client._pipeline is pipeline
        assert pipeline.enabled and pipeline.delivery is not None
        assert "sk-" not in repr(pipeline) and local_server.api_key not in repr(pipeline)
    assert pipeline.delivery.closed


def test_a_disabled_pipeline_has_a_no_op_tracer_and_ignores_records(
    local_server: LocalServer,
) -> None:
    with CTClient(
        base_url=local_server.base_url, api_key=local_server.api_key, enabled=False
    ) as client:
        pipeline = tracing.pipeline_for(client)
        assert isinstance(pipeline.tracer, NoOpTracer) and not pipeline.enabled
        span = pipeline.tracer.start_span("x")
        pipeline.attach(span, CallRecord(trace_id=tracing.new_trace_id(), task="t"))
        span.end()
        assert pipeline.flush() is True
        assert pipeline.stats() == ct.DeliveryStats()


def test_the_integration_contract_delivers_a_manual_span_with_its_record(
    client: CTClient,
    task_name: str,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    pipeline = tracing.pipeline_for(client)
    trace_id = tracing.new_trace_id()
    span = pipeline.tracer.start_span("chat gpt-test", kind=SpanKind.CLIENT)
    pipeline.attach(
        span,
        CallRecord(
            trace_id=trace_id,
            task=task_name,
            prompt_text="Hi",
            response_text="Hello!",
            model="gpt-test",
            tokens=12,
            inputs=[{"role": "user", "content": "Hi"}],
            output={"role": "assistant", "content": "Hello!"},
            log_feedback=True,
        ),
    )
    span.end()
    client.flush()
    trace = client.get_trace(trace_id)
    assert (trace.model, trace.tokens, trace.prompt_text, trace.response_text) == (
        "gpt-test", 12, "Hi", "Hello!",
    )
    [feedback] = client.list_feedback(task_name)
    assert feedback.inputs == {"value": [{"role": "user", "content": "Hi"}]}
    assert feedback.output == {"role": "assistant", "content": "Hello!"}
    [exported] = provider_and_spans[1].get_finished_spans()
    assert exported.instrumentation_scope is not None
    assert exported.instrumentation_scope.name == tracing.SCOPE


def test_only_ct_spans_reach_the_ct_server(
    client: CTClient,
    task_name: str,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = provider_and_spans
    app = provider.get_tracer("my-app")

    @client.task(task_name, default_prompt="p")
    def f() -> None:
        with app.start_as_current_span("db query"):  # a child span of the application
            pass

    with app.start_as_current_span("http request"):
        f()
    client.flush()
    assert {s.name for s in exporter.get_finished_spans()} == {
        "http request", "db query", f"ct.task {task_name}",
    }
    stats = client.stats()
    assert (stats.queued, stats.sent) == (1, 1)
    assert len(client.list_traces(task_name)) == 1


def test_content_goes_on_spans_only_with_the_opt_in(
    local_server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    provider_and_spans: tuple[TracerProvider, InMemorySpanExporter],
    task_name: str,
) -> None:
    provider, exporter = provider_and_spans
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    with _client(local_server, provider) as client:

        @client.task(task_name, default_prompt="p")
        def f(question: str) -> dict[str, str]:
            return {"answer": question.upper()}

        f("why?")
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert json.loads(str(span.attributes[Attr.INPUTS])) == {"question": "why?"}
    assert json.loads(str(span.attributes[Attr.OUTPUT])) == {"answer": "WHY?"}


def test_a_span_the_sampler_dropped_still_delivers_its_record(
    local_server: LocalServer, task_name: str
) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with _client(local_server, provider) as client:

        @client.task(task_name, default_prompt="p")
        def f() -> str:
            return "kept"

        _, run = f.call()
        client.flush()
        trace = client.get_trace(run.trace_id)
        assert trace.response_text == "kept"
        assert trace.latency_ms is not None and trace.latency_ms > 0


def test_records_attached_after_close_are_counted_not_raised(
    local_server: LocalServer, task_name: str
) -> None:
    client = _client(local_server)
    pipeline = tracing.pipeline_for(client)
    client.close()
    span = pipeline.tracer.start_span("late")
    pipeline.attach(span, CallRecord(trace_id=tracing.new_trace_id(), task=task_name))
    span.end()
    stats = pipeline.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (1, 0, 1)


# --- the application's own global provider (a process each: it can be set only once) -------

_APP_SCRIPT = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import kaizen_sdk as ct

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)            # the application's own SDK provider
app = trace.get_tracer("my-app")

@ct.task(sys.argv[1], default_prompt="Echo {{ x }}")
def echo(x, prompt):
    with app.start_as_current_span("inside the task"):
        return prompt.render(x=x)

with app.start_as_current_span("request") as request:
    result, run = echo.call("hi")
with app.start_as_current_span("unrelated"):
    pass
ct.flush()
client = ct.get_client()
spans = {s.name: s for s in exporter.get_finished_spans()}
task_span = spans["ct.task " + sys.argv[1]]
print(json.dumps({
    "result": result,
    "trace_id": run.trace_id,
    "provider_kept": trace.get_tracer_provider() is provider,
    "names": sorted(spans),
    "parent_is_request": task_span.parent.span_id == request.get_span_context().span_id,
    "inner_parent_is_task": spans["inside the task"].parent.span_id
        == task_span.context.span_id,
    "attributes": {k: v for k, v in task_span.attributes.items()},
    "stats": {"queued": client.stats().queued, "sent": client.stats().sent},
}))
"""


def _run_app(
    server: LocalServer, task: str, opt_in: bool, **extra: str
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env.update(KAIZEN_BASE_URL=server.base_url, KAIZEN_API_KEY=server.api_key, **extra)
    if opt_in:
        env.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_APP_SCRIPT), task],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def test_ct_spans_join_the_apps_global_provider_which_is_never_replaced(
    local_server: LocalServer, task_name: str
) -> None:
    out = _run_app(local_server, task_name, opt_in=False)
    assert out["result"] == "Echo hi" and out["provider_kept"] is True
    assert out["names"] == sorted(
        ["request", "inside the task", "unrelated", f"ct.task {task_name}"]
    )
    assert out["parent_is_request"] and out["inner_parent_is_task"]
    attrs = out["attributes"]
    assert attrs[Attr.TASK_NAME] == task_name and attrs[Attr.TRACE_ID] == out["trace_id"]
    assert Attr.INPUTS not in attrs and Attr.OUTPUT not in attrs
    assert attrs["openinference.span.kind"] == "CHAIN"  # Phoenix shows a task as a chain
    assert "input.value" not in attrs and "output.value" not in attrs
    # the application's three spans never reached the CT server: one record only
    assert out["stats"] == {"queued": 1, "sent": 1}
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as reader:
        [stored] = reader.list_traces(task_name)
        assert str(stored.id) == out["trace_id"] and stored.response_text == "Echo hi"
        [feedback] = reader.list_feedback(task_name)
        assert feedback.inputs == {"x": "hi"}  # the CT server gets content regardless


def test_with_the_opt_in_the_apps_exporters_get_the_content(
    local_server: LocalServer, task_name: str
) -> None:
    out = _run_app(local_server, task_name, opt_in=True)
    attrs = out["attributes"]
    assert json.loads(attrs[Attr.INPUTS]) == {"x": "hi"}
    assert attrs[Attr.OUTPUT] == "Echo hi"
    # the same, as OpenInference input/output (Phoenix shows them)
    assert json.loads(attrs["input.value"]) == {"x": "hi"}
    assert attrs["input.mime_type"] == "application/json"
    assert attrs["output.value"] == "Echo hi"


@pytest.mark.parametrize(
    "extra",
    [
        {"KAIZEN_CAPTURE_CONTENT": "false"},
        {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"},  # "true" is rejected
    ],
)
def test_content_stays_off_task_spans_despite_the_opt_in(
    local_server: LocalServer, task_name: str, extra: dict[str, str]
) -> None:
    out = _run_app(local_server, task_name, opt_in=True, **extra)
    attrs = out["attributes"]
    for key in (Attr.INPUTS, Attr.OUTPUT, "input.value", "output.value"):
        assert key not in attrs
    assert attrs["openinference.span.kind"] == "CHAIN"


def test_latest_mode_span_only_puts_content_on_task_spans(
    local_server: LocalServer, task_name: str
) -> None:
    out = _run_app(
        local_server, task_name, opt_in=True,
        OTEL_SEMCONV_STABILITY_OPT_IN="gen_ai_latest_experimental",
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="SPAN_ONLY",
    )
    assert out["attributes"]["output.value"] == "Echo hi"


_NO_SDK_SCRIPT = """
import sys
import kaizen_sdk as ct

@ct.task("no_sdk_task", default_prompt="Echo {{ x }}")
def echo(x: int) -> int:
    return x

assert [echo(i) for i in range(3)] == [0, 1, 2]
assert ct.flush(30), ct.get_client().stats()
print(ct.get_client().stats().sent, "opentelemetry.sdk.trace" in sys.modules)
"""


def test_the_no_provider_path_never_imports_the_opentelemetry_sdk(
    local_server: LocalServer,
) -> None:
    # An application without an SDK provider pays no SDK import: it cannot have an SDK
    # provider before it imported the SDK itself (tracing.is_sdk_provider).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env.update(KAIZEN_BASE_URL=local_server.base_url, KAIZEN_API_KEY=local_server.api_key,
               PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", _NO_SDK_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "False"]


def test_is_sdk_provider_tells_an_sdk_provider_from_anything_else() -> None:
    assert tracing.is_sdk_provider(TracerProvider())
    assert not tracing.is_sdk_provider(object())
    assert not tracing.is_sdk_provider(None)
