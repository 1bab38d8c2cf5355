"""@ct.task on ``async def`` functions and async generators, against the local CT server."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import kaizen_sdk as ct
from kaizen_sdk import tracing
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_sdk.decorators import AsyncTaskRun
from kaizen_sdk.models import Prompt
from kaizen_sdk.tracing import Attr
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def client(local_server: LocalServer, exporter: InMemorySpanExporter) -> Iterator[CTClient]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    c = CTClient(base_url=local_server.base_url, api_key=local_server.api_key)
    c._pipeline = tracing.Pipeline(c.settings, tracer_provider=provider)
    yield c
    c.close()


@pytest.fixture
def task_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


def ct_spans(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("ct.task ")]


async def test_an_async_call_gets_its_prompt_and_is_delivered(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name, default_prompt="Classify: {{ text }}")
    async def classify(text: str, prompt: Prompt) -> str:
        await asyncio.sleep(0)
        assert ct.current_prompt() is prompt
        return prompt.render(text=text)

    assert inspect.iscoroutinefunction(classify)
    assert await classify("spam") == "Classify: spam"
    result, run = await classify.call("ham")
    assert result == "Classify: ham"
    assert isinstance(run, AsyncTaskRun) and run.prompt is not None
    score_id = await run.score(0.5)  # awaitable for async tasks; queued, never waits
    assert score_id is not None
    assert client.flush() is True
    assert client.get_trace(run.trace_id).score == 0.5
    assert client.get_trace(run.trace_id).response_text == "Classify: ham"
    assert sorted(str(f.inputs) for f in client.list_feedback(task_name)) == sorted(
        [str({"text": "spam"}), str({"text": "ham"})]
    )
    assert [s.attributes[Attr.TRACE_ID] for s in ct_spans(exporter)][-1] == run.trace_id


async def test_asyncio_tasks_never_see_each_others_trace(client: CTClient, task_name: str) -> None:
    @client.task(task_name, default_prompt="p")
    async def f(i: int) -> str | None:
        before = ct.current_trace_id()
        await asyncio.sleep(0)  # every task interleaves here
        await asyncio.sleep(0)
        assert ct.current_trace_id() == before
        return before

    results = await asyncio.gather(*(f.call(i) for i in range(50)))
    assert [seen for seen, _ in results] == [run.trace_id for _, run in results]
    assert len({run.trace_id for _, run in results}) == 50
    assert ct.current_trace_id() is None


async def test_nested_async_tasks_name_the_outer_trace(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name + "-inner", default_prompt="i")
    async def inner() -> str | None:
        return ct.current_trace_id()

    @client.task(task_name, default_prompt="o")
    async def outer() -> list[str | None]:
        return list(await asyncio.gather(inner(), inner()))

    inner_ids, run = await outer.call()
    spans = ct_spans(exporter)
    outer_span = next(s for s in spans if s.name == f"ct.task {task_name}")
    inner_spans = [s for s in spans if s.name == f"ct.task {task_name}-inner"]
    assert len(inner_spans) == 2
    assert {s.parent.span_id for s in inner_spans} == {outer_span.context.span_id}
    client.flush()
    for trace_id in inner_ids:
        assert client.get_trace(str(trace_id)).parent_trace_id == uuid.UUID(run.trace_id)


async def test_a_cancelled_call_counts_as_an_error(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    started = asyncio.Event()

    @client.task(task_name, default_prompt="p")
    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(waits())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [span] = ct_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "CancelledError"
    client.flush()
    trace = client.get_trace(str(span.attributes[Attr.TRACE_ID]))
    assert trace.metadata == {"error": "CancelledError"}


async def test_an_async_exception_is_reraised_unchanged(client: CTClient, task_name: str) -> None:
    error = ValueError("bad")

    @client.task(task_name, default_prompt="p")
    async def fails() -> None:
        raise error

    with pytest.raises(ValueError) as caught:
        await fails()
    assert caught.value is error


async def test_an_async_generator_ends_with_its_iteration(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name, default_prompt="p")
    async def stream(n: int) -> AsyncIterator[str]:
        for i in range(n):
            await asyncio.sleep(0)
            yield f"t{i}"

    assert inspect.isasyncgenfunction(stream)
    gen, run = stream.call(3)
    chunks = [chunk async for chunk in gen]
    assert chunks == ["t0", "t1", "t2"]
    [span] = ct_spans(exporter)
    assert span.attributes is not None and span.attributes[Attr.TRACE_ID] == run.trace_id
    client.flush()
    assert client.get_trace(run.trace_id).response_text == "t0t1t2"


async def test_an_async_method_records_inputs_without_self(
    client: CTClient, task_name: str
) -> None:
    class Agent:
        @client.task(task_name, default_prompt="p")
        async def act(self, goal: str) -> str:
            return goal[::-1]

    agent = Agent()
    assert await agent.act("abc") == "cba"
    result, _ = await agent.act.call("xy")
    assert result == "yx"
    client.flush()
    assert sorted(str(f.inputs) for f in client.list_feedback(task_name)) == sorted(
        [str({"goal": "abc"}), str({"goal": "xy"})]
    )


async def test_a_cold_async_start_fetches_off_the_event_loop(
    client: CTClient, task_name: str
) -> None:
    @client.task(task_name, default_prompt="Cold {{ x }}")
    async def f(x: int, prompt: Prompt) -> str:
        return prompt.render(x=x)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(ticker())
    try:
        assert await f(1) == "Cold 1"  # the cold fetch ran in a thread: the loop kept going
    finally:
        running.cancel()
    assert ticks > 0


async def test_an_async_client_works_as_the_tasks_client(
    local_server: LocalServer, task_name: str
) -> None:
    async with AsyncCTClient(
        base_url=local_server.base_url, api_key=local_server.api_key
    ) as client:

        @client.task(task_name, default_prompt="Async {{ x }}")
        async def f(x: int, prompt: Prompt) -> str:
            return prompt.render(x=x)

        result, run = await f.call(3)
        assert result == "Async 3"
        assert await run.score(0.9) is not None
        assert await client.flush() is True
        assert (await client.get_trace(run.trace_id)).score == 0.9
        assert (await client.get_trace(run.trace_id)).response_text == "Async 3"
