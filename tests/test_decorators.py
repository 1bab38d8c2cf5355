"""@ct.task on sync functions, methods and generators, against the local CT server (real HTTP).

CT spans go to an in-memory exporter through a provider passed to the client's pipeline, so
both sides are checked: the span the application would see and the records the server stored.
"""

from __future__ import annotations

import inspect
import math
import threading
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import kaizen_sdk as ct
from kaizen_sdk import tracing
from kaizen_sdk.client import CTClient
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


# --- the basic loop --------------------------------------------------------------------------


def test_a_call_gets_the_default_prompt_and_delivers_a_trace_and_feedback(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    seen: list[tuple[Prompt, Prompt | None, str | None]] = []

    @client.task(task_name, default_prompt="Summarize: {{ ticket }}")
    def summarize(ticket: str, prompt: Prompt) -> str:
        seen.append((prompt, ct.current_prompt(), ct.current_trace_id()))
        return prompt.render(ticket=ticket).upper()

    result, run = summarize.call("printer on fire")
    assert result == "SUMMARIZE: PRINTER ON FIRE"
    [(prompt, current, trace_id)] = seen
    assert (prompt.prompt_text, prompt.version_number, prompt.status) == (
        "Summarize: {{ ticket }}", 0, "default",
    )
    assert current is prompt and run.prompt is prompt
    assert trace_id == run.trace_id and uuid.UUID(run.trace_id).version == 7
    assert ct.current_trace_id() is None and ct.current_prompt() is None

    client.flush()
    trace = client.get_trace(run.trace_id)
    assert trace.prompt_text == "Summarize: {{ ticket }}"
    assert trace.response_text == result
    assert trace.latency_ms is not None and trace.latency_ms > 0
    [feedback] = client.list_feedback(task_name)
    assert feedback.inputs == {"ticket": "printer on fire"}
    assert feedback.output == result
    assert feedback.source == "sdk"
    assert feedback.metadata is not None
    assert feedback.metadata["trace_id"] == run.trace_id
    assert feedback.metadata["prompt_version"] == 0
    assert feedback.metadata["latency_ms"] == pytest.approx(trace.latency_ms)
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped, stats.retried) == (1, 1, 0, 0)

    [span] = ct_spans(exporter)
    assert span.name == f"ct.task {task_name}"
    attrs = dict(span.attributes or {})
    assert attrs[Attr.TASK_NAME] == task_name
    assert attrs[Attr.TRACE_ID] == run.trace_id
    assert attrs[Attr.PROMPT_VERSION_NUMBER] == 0
    assert Attr.PROMPT_VERSION_ID not in attrs  # the default prompt has no id
    assert Attr.INPUTS not in attrs and Attr.OUTPUT not in attrs  # no content without opt-in


def test_the_default_prompt_becomes_version_1_and_later_calls_run_on_it(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name, default_prompt="Translate: {{ text }}")
    def translate(text: str, prompt: Prompt) -> int:
        return prompt.version_number

    assert translate("hello") == 0
    client.flush()
    [v1] = client.list_prompt_versions(task_name)
    assert (v1.version_number, v1.prompt_text, v1.status) == (1, "Translate: {{ text }}", "active")

    client.get_prompt(task_name)  # the decorator reads the client's cache
    result, run = translate.call("hello")
    assert result == 1
    assert run.prompt is not None and run.prompt.id == v1.id
    client.flush()
    assert client.get_trace(run.trace_id).prompt_version_id == v1.id
    last = ct_spans(exporter)[-1]
    assert last.attributes is not None
    assert last.attributes[Attr.PROMPT_VERSION_ID] == str(v1.id)
    assert last.attributes[Attr.PROMPT_VERSION_NUMBER] == 1


def test_activating_a_new_version_switches_the_next_call(
    client: CTClient, task_name: str
) -> None:
    client.create_task(task_name, feedback_threshold=1000)

    @client.task(task_name, default_prompt="Answer: {{ q }}")
    def answer(q: str, prompt: Prompt) -> str:
        return f"v{prompt.version_number}:{q}"

    runs = [answer.call(f"q{i}")[1] for i in range(4)]
    for i, run in enumerate(runs):
        run.score(0.6 + 0.1 * i)  # queued after its trace, on the background path
    assert client.flush() is True
    job = client.trigger_optimization(task_name).job
    done = client.wait_for_job(str(job.id), timeout=30, poll_interval=0.05)
    assert done.is_success, done.error_message
    candidate = next(
        p for p in client.list_prompt_versions(task_name) if p.status == "candidate"
    )
    client.get_prompt(task_name)
    assert answer("x") == "v1:x"  # the active version 1, from the cache
    client.activate_prompt(task_name, str(candidate.id))  # invalidates the cached entry
    result, run = answer.call("x")
    assert result == f"v{candidate.version_number}:x"
    assert run.prompt is not None and run.prompt.id == candidate.id


def test_an_expired_entry_is_served_while_one_background_refresh_runs(
    client: CTClient, task_name: str
) -> None:
    now = [0.0]
    client._prompt_cache._clock = lambda: now[0]

    @client.task(task_name, default_prompt="Hi {{ name }}")
    def greet(name: str, prompt: Prompt) -> Prompt:
        return prompt

    greet("a")
    client.flush()
    fresh = client.get_prompt(task_name)
    assert greet("a") is fresh
    now[0] += client.settings.cache_ttl + 1  # expired: stale-while-revalidate
    assert greet("b") is fresh  # served at once, not fetched on the caller's thread
    assert greet("c") == fresh  # the stale copy, or the refreshed one if it already landed

    def refreshed() -> bool:
        found = client._prompt_cache.lookup(task_name)
        return found is not None and found[1]

    assert _poll(refreshed)
    assert greet("d") == fresh and greet("d") is not fresh  # the refreshed copy


def test_a_prompt_passed_by_the_caller_is_kept(client: CTClient, task_name: str) -> None:
    @client.task(task_name, default_prompt="default")
    def echo(x: int, prompt: Any = None) -> Any:
        return prompt

    mine = Prompt(prompt_text="mine", version_number=7)
    assert echo(1, mine) is mine
    assert echo(1, prompt=mine) is mine
    assert echo(1, prompt="plain text") == "plain text"
    _, run = echo.call(1, prompt="plain text")
    assert run.prompt is not None and run.prompt.prompt_text == "plain text"


def test_a_function_without_a_prompt_parameter_still_sees_current_prompt(
    client: CTClient, task_name: str
) -> None:
    @client.task(task_name, default_prompt="Count: {{ n }}")
    def count(n: int) -> str:
        prompt = ct.current_prompt()
        assert prompt is not None
        return prompt.render(n=n)

    assert count(3) == "Count: 3"


# --- prompts when the server cannot help ---------------------------------------------------


def test_no_default_and_no_prompt_on_the_server_raises_a_ct_error_naming_default_prompt(
    client: CTClient, task_name: str
) -> None:
    calls = []

    @client.task(task_name)
    def f(prompt: Prompt) -> None:
        calls.append(prompt)

    with pytest.raises(ct.CTError, match="default_prompt="):
        f()
    assert calls == []


def test_server_down_calls_return_normally_on_the_default_and_are_counted(
    dead_url: str, task_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    with CTClient(base_url=dead_url, api_key="k", max_retries=0) as client:

        @client.task(task_name, default_prompt="Offline {{ x }}")
        def f(x: int, prompt: Prompt) -> str:
            return prompt.render(x=x)

        assert [f(i) for i in range(5)] == [f"Offline {i}" for i in range(5)]
        assert client.flush(10) is False  # nothing reached the server
        stats = client.stats()
        assert (stats.queued, stats.sent) == (5, 0)
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (5, 0, 5)
    assert "k" not in {r.getMessage() for r in caplog.records}


def test_no_default_and_server_down_raises_a_ct_error(dead_url: str, task_name: str) -> None:
    with CTClient(base_url=dead_url, api_key="k", max_retries=0) as client:

        @client.task(task_name)
        def f(prompt: Prompt) -> None:
            raise AssertionError("must not run")

        with pytest.raises(ct.CTError, match=r"could not be reached.*default_prompt="):
            f()


def test_disabled_tracing_runs_the_function_on_its_prompt_and_sends_nothing(
    local_server: LocalServer, task_name: str
) -> None:
    with CTClient(
        base_url=local_server.base_url, api_key=local_server.api_key, enabled=False
    ) as client:

        @client.task(task_name, default_prompt="Off {{ x }}")
        def f(x: int, prompt: Prompt) -> str:
            assert ct.current_trace_id() is not None
            return prompt.render(x=x)

        assert f(1) == "Off 1"
        client.flush()
        assert client.stats() == ct.DeliveryStats()
        assert tracing.pipeline_for(client).enabled is False
    with (
        CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as reader,
        pytest.raises(ct.CTNotFoundError),
    ):
        reader.get_task(task_name)  # no trace ever named it


def test_kaizen_enabled_false_without_a_key_runs_on_the_default(
    monkeypatch: pytest.MonkeyPatch, task_name: str
) -> None:
    monkeypatch.setenv("KAIZEN_ENABLED", "false")
    monkeypatch.setattr("kaizen_sdk._default._client", None)

    @ct.task(task_name, default_prompt="Plain {{ x }}")
    def f(x: int, prompt: Prompt) -> str:
        return prompt.render(x=x)

    assert f(2) == "Plain 2"


# --- the function stays itself ---------------------------------------------------------------


def test_the_decorated_function_keeps_its_signature_name_doc_and_wrapped(
    client: CTClient, task_name: str
) -> None:
    def original(ticket: str, *, lang: str = "en", prompt: Prompt | None = None) -> str:
        """Summarize a ticket."""
        return ticket

    decorated = client.task(task_name, default_prompt="p")(original)
    assert inspect.signature(decorated) == inspect.signature(original)
    assert decorated.__name__ == "original"
    assert decorated.__doc__ == "Summarize a ticket."
    assert decorated.__wrapped__ is original
    assert inspect.isfunction(decorated)
    assert not inspect.iscoroutinefunction(decorated)
    assert decorated("t", lang="fr") == "t"


def test_decorating_something_that_is_not_callable_is_a_type_error(client: CTClient) -> None:
    with pytest.raises(TypeError, match="needs a function"):
        client.task("x")(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="task's name"):
        ct.task("")


def test_methods_classmethods_and_staticmethods_record_inputs_without_self(
    client: CTClient, task_name: str
) -> None:
    class Bot:
        suffix = "!"

        @client.task(task_name, default_prompt="p")
        def reply(self, text: str, prompt: Prompt | None = None) -> str:
            return text + self.suffix

        @client.task(task_name, default_prompt="p")
        @classmethod
        def shout(cls, text: str) -> str:
            return text.upper() + cls.suffix

        @staticmethod
        @client.task(task_name, default_prompt="p")
        def plain(text: str) -> str:
            return text

    bot = Bot()
    assert bot.reply("a") == "a!"
    assert Bot.reply(bot, "b") == "b!"
    assert Bot.shout("c") == "C!"
    assert bot.plain("d") == "d"
    result, run = bot.reply.call("e")
    assert result == "e!" and run.task == task_name
    result, run = Bot.reply.call(bot, "f")
    assert result == "f!"
    client.flush()
    inputs = sorted(str(f.inputs) for f in client.list_feedback(task_name))
    assert inputs == sorted(
        str({"text": t}) for t in ("a", "b", "c", "d", "e", "f")
    )


# --- failures --------------------------------------------------------------------------------


class _Boom(Exception):
    pass


def test_an_exception_is_reraised_unchanged_and_recorded_on_the_span(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    error = _Boom("model timed out")

    @client.task(task_name, default_prompt="p")
    def fails(x: int) -> None:
        raise error

    with pytest.raises(_Boom) as caught:
        fails(1)
    assert caught.value is error
    frames = [f.name for f in traceback.extract_tb(caught.value.__traceback__)]
    assert frames[-1] == "fails"  # the original frame is still on the traceback

    [span] = ct_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "_Boom"
    assert [e.name for e in span.events] == ["exception"]
    trace_id = span.attributes[Attr.TRACE_ID]
    client.flush()
    trace = client.get_trace(str(trace_id))
    assert trace.metadata == {"error": "_Boom"}
    assert client.list_feedback(task_name) == []  # no training example from a failed call


# --- scoring ---------------------------------------------------------------------------------


def test_run_score_is_queued_after_its_trace_and_applied_once(
    client: CTClient, task_name: str
) -> None:
    @client.task(task_name, default_prompt="p")
    def f(x: int) -> int:
        return x * 2

    result, run = f.call(21)
    assert result == 42
    assert ct.delivery.is_pending(run.trace_id)
    score_id = run.score(0.75)  # no request on the caller's thread
    assert score_id is not None and uuid.UUID(score_id).version == 7
    assert ct.delivery.is_pending(run.trace_id)  # the trace is still queued: nothing blocked
    assert client.flush() is True
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.rejected) == (2, 2, 0)  # the trace and the score
    stored = client.get_trace(run.trace_id)
    assert (stored.score, stored.scored_by) == (0.75, "sdk")
    [feedback] = client.list_feedback(task_name)
    assert feedback.score == 0.75


def test_run_score_never_raises_and_an_invalid_one_is_not_sent(
    client: CTClient, task_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    @client.task(task_name, default_prompt="p")
    def f() -> str:
        return "ok"

    _, run = f.call()
    assert run.score(1.5) is None  # logged, not raised
    assert any("between 0.0 and 1.0" in r.getMessage() for r in caplog.records)
    assert client.flush() is True
    assert client.get_trace(run.trace_id).score is None
    assert client.stats().queued == 1


def test_scores_made_while_the_server_is_down_arrive_once_it_is_back(
    local_server: LocalServer, task_name: str
) -> None:
    from reliability._proxy import FaultProxy

    with FaultProxy(local_server.base_url) as proxy:
        proxy.refuse()
        with CTClient(base_url=proxy.url, api_key=local_server.api_key, max_retries=0) as c:

            @c.task(task_name, default_prompt="p")
            def f(i: int) -> int:
                return i

            runs = [f.call(i)[1] for i in range(3)]
            assert all(run.score(0.5) is not None for run in runs)
            assert c.flush(5) is False  # nothing reached the server
            proxy.accept()
            assert c.flush(30) is True
            stats = c.stats()
            assert (stats.queued, stats.sent, stats.dropped) == (6, 6, 0)
            assert [c.get_trace(r.trace_id).score for r in runs] == [0.5, 0.5, 0.5]


def test_another_client_scoring_a_queued_trace_also_delivers_it_first(
    client: CTClient, local_server: LocalServer, task_name: str
) -> None:
    @client.task(task_name, default_prompt="p")
    def f() -> str:
        return "ok"

    _, run = f.call()
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as other:
        assert other.score(run.trace_id, 1.0, scored_by="human").scored_by == "human"


# --- context: threads and nesting ------------------------------------------------------------


def test_each_thread_sees_only_its_own_trace_and_prompt(client: CTClient, task_name: str) -> None:
    barrier = threading.Barrier(8)

    @client.task(task_name, default_prompt="p")
    def f(i: int) -> tuple[str | None, str | None]:
        barrier.wait(10)  # all eight calls are inside their spans at once
        prompt = ct.current_prompt()
        return ct.current_trace_id(), None if prompt is None else prompt.prompt_text

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: f.call(i), range(8)))
    assert [seen for (seen, _), _run in results] == [run.trace_id for _, run in results]
    assert len({run.trace_id for _, run in results}) == 8
    assert {text for (_, text), _run in results} == {"p"}


def test_nested_tasks_nest_spans_and_name_the_outer_trace(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name + "-inner", default_prompt="inner")
    def inner(x: int) -> tuple[str | None, int]:
        return ct.current_trace_id(), x + 1

    @client.task(task_name, default_prompt="outer")
    def outer(x: int) -> tuple[str | None, str | None, int]:
        seen, y = inner(x)
        return ct.current_trace_id(), seen, y

    (outer_seen, inner_seen, y), run = outer.call(1)
    assert y == 2 and outer_seen == run.trace_id and inner_seen != run.trace_id
    spans = {s.name: s for s in ct_spans(exporter)}
    inner_span = spans[f"ct.task {task_name}-inner"]
    outer_span = spans[f"ct.task {task_name}"]
    assert inner_span.parent is not None
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert inner_span.attributes is not None
    assert inner_span.attributes[Attr.PARENT_TRACE_ID] == run.trace_id
    client.flush()
    assert client.get_trace(str(inner_seen)).parent_trace_id == uuid.UUID(run.trace_id)
    assert client.get_trace(run.trace_id).parent_trace_id is None


def test_a_task_span_nests_under_the_applications_current_span(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    tracer = tracing.pipeline_for(client).provider.get_tracer("app")

    @client.task(task_name, default_prompt="p")
    def f() -> None:
        pass

    with tracer.start_as_current_span("request") as parent:
        f()
    [span] = ct_spans(exporter)
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    client.flush()
    assert client.stats().sent == 1  # the app's own span never reaches the CT server


# --- generators ------------------------------------------------------------------------------


def test_a_generator_call_ends_when_iteration_ends_with_the_joined_text(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name, default_prompt="p")
    def stream(n: int) -> Iterator[str]:
        for i in range(n):
            assert ct.current_trace_id() is not None
            yield f"w{i} "

    gen, run = stream.call(3)
    assert ct_spans(exporter) == []
    assert next(gen) == "w0 "
    assert ct.current_trace_id() is None  # the consumer's code is outside the task
    assert list(gen) == ["w1 ", "w2 "]
    [span] = ct_spans(exporter)
    assert span.attributes is not None and span.attributes[Attr.TRACE_ID] == run.trace_id
    client.flush()
    assert client.get_trace(run.trace_id).response_text == "w0 w1 w2 "
    assert inspect.isgeneratorfunction(stream)


def test_a_generator_closed_early_records_what_it_yielded(
    client: CTClient, task_name: str
) -> None:
    @client.task(task_name, default_prompt="p")
    def numbers() -> Iterator[int]:
        yield from range(100)

    gen, _run = numbers.call()
    assert [next(gen), next(gen)] == [0, 1]
    gen.close()
    client.flush()
    [feedback] = client.list_feedback(task_name)
    assert feedback.output == [0, 1]


def test_a_failing_generator_reraises_and_records_the_error(
    client: CTClient, task_name: str, exporter: InMemorySpanExporter
) -> None:
    @client.task(task_name, default_prompt="p")
    def broken() -> Iterator[str]:
        yield "a"
        raise _Boom("mid-stream")

    with pytest.raises(_Boom, match="mid-stream"):
        list(broken())
    [span] = ct_spans(exporter)
    assert span.status.status_code is StatusCode.ERROR


# --- inputs that JSON does not know ----------------------------------------------------------


class _Unrepresentable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_hostile_inputs_never_fail_the_call_and_are_converted(
    client: CTClient, task_name: str
) -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    huge = "x" * (50 * 1024 * 1024)

    @client.task(task_name, default_prompt="p")
    def f(a: Any, b: Any = None, *rest: Any, **extra: Any) -> Any:
        return a

    values: list[tuple[str, Any]] = [
        ("object", object()),
        ("bytes", b"\x00\xffraw"),
        ("set", {3}),
        ("nan", math.nan),
        ("repr-raises", _Unrepresentable()),
        ("cyclic", cyclic),
        ("huge", huge),
        ("surrogate", "\ud800"),
    ]
    for label, value in values:
        assert f(value, label) is value, label
    assert f(1, 2, 3, 4, k=5) == 1
    client.flush()
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (9, 9, 0)
    by_label = {
        fb.inputs["b"]: fb.inputs["a"]
        for fb in client.list_feedback(task_name)
        if fb.inputs is not None and "b" in fb.inputs and isinstance(fb.inputs["b"], str)
    }
    assert by_label["object"].startswith("<object object at")
    assert by_label["set"] == [3]
    assert by_label["nan"] is None
    assert by_label["repr-raises"] == "<unrepresentable _Unrepresentable>"
    assert "truncated" in by_label["huge"] and len(by_label["huge"]) < 70_000
    assert by_label["surrogate"] == "?"
    extra = [fb.inputs for fb in client.list_feedback(task_name) if fb.inputs and "k" in fb.inputs]
    assert extra == [{"a": 1, "b": 2, "rest": [3, 4], "k": 5}]


def test_inputs_are_snapshotted_when_the_call_starts(client: CTClient, task_name: str) -> None:
    @client.task(task_name, default_prompt="p")
    def append(items: list[int]) -> list[int]:
        items.append(len(items))
        return items

    items = [7]
    append(items)
    items.append(99)  # later mutation does not change the record
    client.flush()
    [feedback] = client.list_feedback(task_name)
    assert feedback.inputs == {"items": [7]}
    assert feedback.output == [7, 1]


def test_capture_off_sends_no_inputs_or_outputs(client: CTClient, task_name: str) -> None:
    @client.task(
        task_name, default_prompt="p", capture_inputs=False, capture_output=False,
        metadata={"team": "support"},
    )
    def f(secret: str) -> str:
        return secret

    _, run = f.call("s3cret")
    client.flush()
    [feedback] = client.list_feedback(task_name)
    assert feedback.inputs is None and feedback.output is None
    assert feedback.metadata is not None and feedback.metadata["team"] == "support"
    trace = client.get_trace(run.trace_id)
    assert trace.response_text is None and trace.metadata == {"team": "support"}


def test_log_feedback_false_sends_the_trace_only(client: CTClient, task_name: str) -> None:
    @client.task(task_name, default_prompt="p", log_feedback=False)
    def f() -> str:
        return "out"

    _, run = f.call()
    client.flush()
    assert client.get_trace(run.trace_id).response_text == "out"
    assert client.list_feedback(task_name) == []


# --- the default client ----------------------------------------------------------------------


def test_the_default_client_is_built_from_the_environment(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, task_name: str
) -> None:
    monkeypatch.setattr("kaizen_sdk._default._client", None)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)

    @ct.task(task_name, default_prompt="env {{ x }}")
    def f(x: int, prompt: Prompt) -> str:
        return prompt.render(x=x)

    try:
        _, run = f.call(1)
        default = ct.get_client()
        assert default is ct.get_client()
        assert default.settings.base_url == local_server.base_url
        assert ct.flush(10) is True
        assert default.get_trace(run.trace_id).response_text == "env 1"
    finally:
        ct.get_client().close()


def test_configure_replaces_the_default_client(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, task_name: str
) -> None:
    monkeypatch.setattr("kaizen_sdk._default._client", None)
    first = ct.configure(base_url=local_server.base_url, api_key=local_server.api_key)

    @ct.task(task_name, default_prompt="p")
    def f() -> str:
        return "x"

    f()
    second = ct.configure(base_url=local_server.base_url, api_key=local_server.api_key)
    assert first.closed and ct.get_client() is second
    assert first.stats().sent == 1  # closing the old default delivered its record
    _, run = f.call()
    second.flush()
    assert tracing.pipeline_for(second).stats().sent == 1
    assert second.get_trace(run.trace_id).task_id is not None
    second.close()


def _poll(predicate: Any, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (the port was just closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_huge_arguments_are_captured_bounded_with_a_marker(
    client: CTClient, task_name: str
) -> None:
    big = {f"k{i}": i for i in range(100_000)}

    @client.task(task_name, default_prompt="p")
    def f(d: dict[str, int], items: list[int]) -> int:
        return len(d) + len(items)

    assert f(big, list(range(5000))) == 105_000
    assert client.flush() is True
    [feedback] = client.list_feedback(task_name)
    assert feedback.inputs is not None
    captured = feedback.inputs["d"]
    assert len(captured) == 1001 and captured["ct.truncated"] == "99000 more items"
    assert captured["k999"] == 999 and "k1000" not in captured
    assert feedback.inputs["items"][-1] == "…[4000 more items]"
    assert len(feedback.inputs["items"]) == 1001
