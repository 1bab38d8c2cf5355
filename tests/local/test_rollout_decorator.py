"""``@ct.task`` in a rollout, against the real local server over loopback HTTP.

The decorated functions here run in this process exactly as an application's do: the prompt
(and the rollout riding on it) comes from the client's fetcher, the arm is picked locally, and
traces, feedback and scores go through the background pipeline to the server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import kaizen_sdk as ct
from kaizen_sdk import CTClient
from kaizen_sdk._rollout import choose_arm
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e

REFRESH = 0.2  # prompt revalidation interval of the app's client


@pytest.fixture
def admin(local_server: LocalServer) -> Iterator[CTClient]:
    """The operator's client: sets up tasks and starts / stops rollouts."""
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as c:
        yield c


@pytest.fixture
def app(local_server: LocalServer) -> Iterator[CTClient]:
    """The application's client (its own prompt cache), revalidating every REFRESH s."""
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url,
                  prompt_refresh=REFRESH) as c:
        yield c


def make_task(admin: CTClient, name: str) -> tuple[str, str]:
    """*name* with an active v1 and a hand-written candidate v2; their version ids."""
    admin.create_task(name, feedback_threshold=100_000, prompt_text="v1 {{ q }}")
    active = str(admin.get_prompt(name).id)
    candidate = str(admin.create_prompt_version(name, "v2 {{ q }}").id)
    return active, candidate


def version_of(prompt: ct.Prompt) -> str:
    return str(prompt.id)


def test_assign_by_splits_keys_stickily_and_records_version_and_arm(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    active, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=0.3, min_samples=10_000)

    @app.task(task_name, assign_by="user_id")
    def answer(q: str, user_id: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return version_of(prompt)

    keys = [f"user-{i}" for i in range(2000)]
    first = [answer("hi", key) for key in keys]
    share = first.count(candidate) / len(keys)
    assert 0.27 <= share <= 0.33, share
    assert set(first) == {active, candidate}
    assert [answer("hi", user_id=key) for key in keys] == first  # keyword or positional
    # no request per call: the split came with the one cached prompt
    assert app._prompts is not None and app._prompts.stats.requests < 50

    runs = [answer.call("hi", key) for key in keys[:40]]
    assert app.flush(timeout=30)
    for served, run in runs:
        trace = admin.get_trace(run.trace_id)
        arm = "candidate" if served == candidate else "active"
        assert (str(trace.prompt_version_id), trace.arm) == (served, arm)
        assert version_of(run.prompt) == served
        assert trace.error is None and trace.latency_ms is not None
        assert trace.user_id is None  # assign_by reads the argument; no ct.context here
    by_trace = {str(f.metadata["trace_id"]): f for f in admin.list_feedback(task_name, 100)
                if f.metadata and "trace_id" in f.metadata}
    for served, run in runs:
        entry = by_trace[run.trace_id]
        assert str(entry.prompt_version_id) == served
        assert entry.arm == ("candidate" if served == candidate else "active")


def test_context_fields_key_and_failed_calls_on_stored_traces(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    active, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=0.5, min_samples=10_000)
    seen: list[str] = []

    @app.task(task_name)
    def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        trace_id = ct.current_trace_id()
        assert trace_id is not None
        seen.append(trace_id)
        if q == "boom":
            raise ValueError("no answer")
        return version_of(prompt)

    split = admin.get_prompt(task_name)
    users = [f"u-{i}" for i in range(20)]
    served: dict[str, str] = {}
    for user in users:
        with ct.context(user_id=user, session_id=f"s-{user}", tags=["beta", "eu"]):
            served[user] = answer("hi")
            with pytest.raises(ValueError):
                answer("boom")
    assert app.flush(timeout=30)
    expected = {user: version_of(choose_arm(split, user)[0]) for user in users}
    assert served == expected  # the context's user_id is the key without assign_by
    assert set(served.values()) == {active, candidate}
    assert len(seen) == 40
    for i, user in enumerate(users):
        ok, failed = admin.get_trace(seen[2 * i]), admin.get_trace(seen[2 * i + 1])
        arm = "candidate" if served[user] == candidate else "active"
        for trace in (ok, failed):
            assert (trace.user_id, trace.session_id, trace.tags) == (user, f"s-{user}",
                                                                     ["beta", "eu"])
            assert (str(trace.prompt_version_id), trace.arm) == (served[user], arm)
            assert trace.latency_ms is not None
        assert ok.error is None
        assert failed.error is True
        assert failed.metadata == {"error": "ValueError"}
    rollout = admin.get_rollout(task_name)
    assert rollout.active.calls + rollout.candidate.calls == 40
    assert rollout.active.errors + rollout.candidate.errors == 20
    assert rollout.candidate.errors == sum(v == candidate for v in served.values())


def test_run_scores_count_toward_the_arms(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    active, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=0.5, min_samples=10_000)

    @app.task(task_name, assign_by="user")
    def answer(q: str, user: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return version_of(prompt)

    served: list[str] = []
    for i in range(60):
        version, run = answer.call("hi", user=f"k{i}")
        served.append(version)
        assert run.score(0.9 if version == candidate else 0.5) is not None
    assert app.flush(timeout=30)
    rollout = admin.get_rollout(task_name)
    assert rollout.state == "running"
    assert rollout.candidate.n == served.count(candidate) > 0
    assert rollout.active.n == served.count(active) > 0
    assert rollout.candidate.mean == pytest.approx(0.9)
    assert rollout.active.mean == pytest.approx(0.5)


def _serve_until(fn: Any, want: tuple[str, str], deadline: float) -> tuple[int, float]:
    """Call *fn* about every 50 ms until it serves *want* (version id, status of the served
    prompt: ``candidate`` from a rollout's candidate arm); (calls made, seconds taken)."""
    started = time.monotonic()
    calls = 0
    while time.monotonic() < started + deadline:
        version, run = fn.call("hi", user_id=f"k{calls}")
        calls += 1
        if (version, run.prompt.status) == want:
            return calls, time.monotonic() - started
        time.sleep(0.05)  # pacing like a live app, not synchronisation
    raise AssertionError(f"still not serving {want} after {deadline} s ({calls} calls)")


def test_a_running_decorator_follows_a_promotion_and_a_rollback(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    active, candidate = make_task(admin, task_name)

    @app.task(task_name)
    def answer(q: str, user_id: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return version_of(prompt)

    assert answer("hi", "k") == active
    fetcher = app._prompts
    assert fetcher is not None
    # the operator (another client, so the app's cache is not invalidated for it) starts a
    # rollout at 100 %: the app follows at its next revalidation
    admin.start_rollout(task_name, candidate, share=1.0, min_samples=10_000)
    _serve_until(answer, (candidate, "candidate"), deadline=10.0)
    requests = fetcher.stats.requests
    admin.stop_rollout(task_name, "promote")
    _calls, took = _serve_until(answer, (candidate, "active"), deadline=10.0)
    # followed by revalidation (a few requests), not by a request per call
    assert fetcher.stats.requests - requests <= took / REFRESH + 2

    third = str(admin.create_prompt_version(task_name, "v3 {{ q }}").id)
    admin.start_rollout(task_name, third, share=1.0, min_samples=10_000)
    _serve_until(answer, (third, "candidate"), deadline=10.0)
    admin.stop_rollout(task_name, "rollback")
    _serve_until(answer, (candidate, "active"), deadline=10.0)
    statuses = {str(v.id): v.status for v in admin.list_prompt_versions(task_name)}
    assert statuses[third] == "rejected" and statuses[candidate] == "active"


def test_without_a_rollout_traces_carry_no_arm(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    active, _ = make_task(admin, task_name)

    @app.task(task_name, assign_by="user_id")
    def answer(q: str, user_id: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return version_of(prompt)

    result, run = answer.call("hi", "u-1")
    assert result == active
    assert app.flush(timeout=30)
    trace = admin.get_trace(run.trace_id)
    assert (str(trace.prompt_version_id), trace.arm, trace.error) == (active, None, None)
    assert (trace.user_id, trace.session_id, trace.tags) == (None, None, None)


def test_assign_by_must_name_a_parameter_or_a_context_field() -> None:
    def fn(q: str) -> str:
        return q

    with pytest.raises(TypeError, match="has no parameter 'usr'"):
        ct.task("t", assign_by="usr")(fn)
    with pytest.raises(TypeError, match="assign_by must name"):
        ct.task("t", assign_by="")
    ct.task("t", assign_by="session_id")(fn)  # a ct.context field: accepted
    ct.task("t", assign_by="q")(fn)


def test_a_caller_given_prompt_is_served_as_given(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    _, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=1.0, min_samples=10_000)

    @app.task(task_name)
    def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return prompt.prompt_text

    given = ct.Prompt(id=uuid.uuid4(), prompt_text="mine", version_number=9)
    assert answer("hi", prompt=given) == "mine"
    assert answer("hi") == "v2 {{ q }}"


def test_spans_carry_version_arm_user_session_and_tags(
    local_server: LocalServer, admin: CTClient, task_name: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from kaizen_sdk import tracing

    active, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=0.5, min_samples=10_000)
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as app:
        app._pipeline = tracing.Pipeline(app.settings, tracer_provider=provider)

        @app.task(task_name)
        def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return version_of(prompt)

        served = {}
        for user in ("a", "b", "c", "d", "e", "f"):
            with ct.context(user_id=user, session_id="s", tags=["beta"]):
                served[user] = answer("hi")
        plain = answer("hi")  # outside any context: assigned at random, no user attributes
        assert app.flush(timeout=30)
    spans = [s for s in exporter.get_finished_spans() if s.name == f"ct.task {task_name}"]
    assert len(spans) == 7
    for span, (user, version) in zip(spans, served.items(), strict=False):
        attrs = dict(span.attributes or {})
        arm = "candidate" if version == candidate else "active"
        assert attrs[tracing.Attr.PROMPT_VERSION_ID] == version
        assert attrs[tracing.Attr.ROLLOUT_ARM] == arm
        assert (attrs["user.id"], attrs["session.id"]) == (user, "s")
        assert tuple(attrs[tracing.Attr.TAGS]) == ("beta",)
    last = dict(spans[-1].attributes or {})
    assert last[tracing.Attr.PROMPT_VERSION_ID] == plain
    assert last[tracing.Attr.ROLLOUT_ARM] in ("active", "candidate")
    assert "user.id" not in last and tracing.Attr.TAGS not in last
    assert set(served.values()) <= {active, candidate}


async def test_async_tasks_are_assigned_by_their_own_context(
    admin: CTClient, app: CTClient, task_name: str
) -> None:
    import asyncio

    active, candidate = make_task(admin, task_name)
    admin.start_rollout(task_name, candidate, share=0.5, min_samples=10_000)
    split = admin.get_prompt(task_name)

    @app.task(task_name)
    async def answer(q: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        await asyncio.sleep(0)  # let the other tasks run in between
        return version_of(prompt)

    async def as_user(user: str) -> str:
        async with ct.context(user_id=user):
            return await answer("hi")

    users = [f"a-{i}" for i in range(30)]
    served = await asyncio.gather(*(as_user(u) for u in users))
    assert served == [version_of(choose_arm(split, u)[0]) for u in users]
    assert set(served) == {active, candidate}
