"""Fixtures for the LLM-library integrations: the OpenAI-compatible stand-in and span capture."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import importlib
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from openai_standin import StandIn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import kaizen_sdk as ct
from kaizen_sdk.integrations._common import InstrumentSettings
from kaizen_sdk.tracing import CallRecord


@pytest.fixture(autouse=True, scope="module")
def _litellm(request: pytest.FixtureRequest) -> None:
    """Import litellm for a test file that declares ``litellm = None``, before its first test.

    The import takes ~5 s of CPU; at the top of a test file every xdist worker paid it while
    collecting, before running any test, and now only a worker that runs such a file does.
    """
    if "litellm" in vars(request.module) and request.module.litellm is None:
        request.module.litellm = importlib.import_module("litellm")


@pytest.fixture(autouse=True, scope="module")
def _litellm_leftovers() -> Iterator[None]:
    """Collect what litellm leaves behind, so no later test's garbage collection trips on it.

    litellm's sync path makes an event loop for its own logging and never closes it, and its
    client cache drops HTTP clients without closing them (both found with tracemalloc).
    """
    yield
    if "litellm" not in sys.modules:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = getattr(asyncio.get_event_loop_policy(), "_local", None)
        loop = getattr(local, "_loop", None)
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_running():
            loop.close()
            asyncio.set_event_loop(None)
        gc.collect()


@pytest.fixture(scope="session")
def standin() -> Iterator[StandIn]:
    """An OpenAI-compatible stand-in server on loopback for the whole session."""
    with StandIn() as server:
        yield server


@pytest.fixture
def provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An explicit tracer provider whose spans land in memory."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider, exporter
    exporter.clear()


@dataclasses.dataclass
class Capture:
    """What a patched library produced: finished spans, records, and scores asked for."""

    exporter: InMemorySpanExporter
    records: list[CallRecord] = dataclasses.field(default_factory=list)
    scores: list[tuple[str, float, str]] = dataclasses.field(default_factory=list)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def only_span(self) -> ReadableSpan:
        spans = self.spans()
        assert len(spans) == 1, [s.name for s in spans]
        return spans[0]

    def only_record(self) -> CallRecord:
        assert len(self.records) == 1, self.records
        return self.records[0]


Patch = Callable[..., Capture]


@pytest.fixture
def patch(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> Iterator[Patch]:
    """Patch libraries through their integration module directly, with an explicit tracer.

    ``patch(openai, capture_on_spans=True, ...)`` returns a `Capture`; every library patched
    is unpatched at teardown. The test runs in ``ct.context(task="llm_calls")``.
    """
    instrument_module = importlib.import_module("kaizen_sdk.instrument")
    tracer_provider, exporter = provider
    tracer = tracer_provider.get_tracer("test")
    capture = Capture(exporter)
    patched: list[ModuleType] = []

    def score(trace_id: str, value: float, scored_by: str) -> tuple[str, float, str]:
        capture.scores.append((trace_id, value, scored_by))
        return trace_id, value, scored_by

    def attach(span: Any, record: CallRecord) -> None:
        assert span.is_recording(), "records are attached before span.end()"
        capture.records.append(record)

    def do_patch(module: ModuleType, **overrides: Any) -> Capture:
        integration = instrument_module._integration(module)
        options: dict[str, Any] = {
            "attach": attach,
            "score": score,
            "current_call": instrument_module._current_call,
        }
        options.update(overrides)
        integration._instrument(tracer, InstrumentSettings(**options))
        patched.append(integration)
        return capture

    # calls outside a @ct.task send a record only when a task names them: these tests are
    # about the calls, so a context names their task
    with ct.context(task="llm_calls"):
        yield do_patch
    for integration in patched:
        integration._uninstrument()
