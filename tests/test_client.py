"""CTClient against the real local CT server: real HTTP, real SQLite, every method.

Each test makes its own task (the server is shared by the session). Traces are created
with a raw POST, as the background pipeline would send them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaizen_sdk import (
    CTAuthError,
    CTClient,
    CTError,
    CTNotFoundError,
    CTValidationError,
    FeedbackResult,
    Job,
    Prompt,
    Task,
    TraceResult,
)
from kaizen_sdk.cache import TTLCache
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


class CountingTransport(httpx.BaseTransport):
    """Real HTTP, counting requests per path; can hold prompt GETs until N callers arrived."""

    def __init__(self, hold_until: int = 0) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []
        self.hold_until = hold_until
        self.arrived = 0
        self.cond = threading.Condition()

    def arrive(self) -> None:
        with self.cond:
            self.arrived += 1
            self.cond.notify_all()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.hold_until and request.url.path.startswith("/api/v1/prompts/"):
            with self.cond:
                assert self.cond.wait_for(lambda: self.arrived >= self.hold_until, timeout=10)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()

    def count(self, path: str) -> int:
        return self.paths.count(path)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def client(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as c:
        yield c


def post_trace(server: LocalServer, task: str, prompt_text: str, **fields: Any) -> str:
    """Store a trace the way the background pipeline does; returns its id."""
    trace_id = str(uuid.uuid4())
    body = {"id": trace_id, "task_id": task, "prompt_text": prompt_text, **fields}
    resp = httpx.post(
        f"{server.base_url}/api/v1/traces",
        json=body,
        headers={"X-API-Key": server.api_key},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    return trace_id


def optimized_task(client: CTClient, name: str) -> tuple[Task, Job]:
    """Scored feedback and one finished optimization job for a task made before."""
    task = client.get_task(name)
    for i in range(4):
        client.log_feedback(name, inputs={"ticket": f"t{i}"}, output=f"o{i}", score=0.5 + i / 10)
    job = client.trigger_optimization(name).job
    done = client.wait_for_job(str(job.id), timeout=30, poll_interval=0.01)
    return task, done


# --- construction -------------------------------------------------------------------------


def test_settings_from_environment(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url + "/")
    with CTClient() as client:
        assert client.settings.base_url == local_server.base_url
        assert client.settings.cache_ttl == 300.0
        assert client.settings.timeout == 30.0
        assert client.settings.max_retries == 2
        assert client.health().status == "ok"
        assert local_server.api_key not in repr(client)
        assert local_server.api_key not in repr(client.settings)


def test_positional_arguments_keep_their_documented_order(local_server: LocalServer) -> None:
    client = CTClient(local_server.api_key, local_server.base_url, 600.0, 60.0)
    try:
        s = client.settings
        assert (s.api_key, s.base_url, s.cache_ttl, s.timeout) == (
            local_server.api_key, local_server.base_url, 600.0, 60.0,
        )
    finally:
        client.close()


def test_missing_key_names_the_variable() -> None:
    with pytest.raises(CTError, match="KAIZEN_API_KEY"):
        CTClient()


def test_default_base_url() -> None:
    client = CTClient(api_key="k")
    assert client.settings.base_url == "http://localhost:8000"
    client.close()


def test_wrong_key_is_an_auth_error(local_server: LocalServer) -> None:
    client = CTClient(api_key="wrong", base_url=local_server.base_url)
    with client, pytest.raises(CTAuthError) as info:
        client.list_tasks()
    assert info.value.status_code == 401
    assert info.value.detail == "The X-API-Key header is not valid."


# --- tasks --------------------------------------------------------------------------------


def test_create_get_and_list_tasks(client: CTClient, name: str) -> None:
    task = client.create_task(
        name,
        description="Summarizes tickets.",
        schema_json={"type": "object"},
        feedback_threshold=100,
        teacher_model="gpt-4o",
        judge_model="gpt-4o-mini",
    )
    assert isinstance(task, Task)
    assert (task.name, task.description, task.feedback_threshold) == (
        name, "Summarizes tickets.", 100,
    )
    assert (task.teacher_model, task.judge_model) == ("gpt-4o", "gpt-4o-mini")
    assert task.schema_json == {"type": "object"}
    assert client.get_task(name) == task
    assert client.get_task(str(task.id)) == task
    assert task in client.list_tasks()


def test_duplicate_task_name_is_a_validation_error(client: CTClient, name: str) -> None:
    client.create_task(name)
    with pytest.raises(CTValidationError) as info:
        client.create_task(name)
    assert info.value.status_code == 409


def test_unknown_task_field_is_rejected_by_the_server(client: CTClient, name: str) -> None:
    with pytest.raises(CTValidationError) as info:
        client.create_task(name, no_such_field=1)
    assert info.value.status_code in (400, 422)


def test_missing_task_is_not_found(client: CTClient) -> None:
    with pytest.raises(CTNotFoundError) as info:
        client.get_task("no-such-task-" + uuid.uuid4().hex)
    assert info.value.status_code == 404


def test_task_names_with_slashes_and_spaces_round_trip(client: CTClient) -> None:
    odd = f"team/summarize ticket? {uuid.uuid4().hex[:6]}"
    task = client.create_task(odd)
    assert client.get_task(odd).id == task.id


# --- feedback -----------------------------------------------------------------------------


def test_log_and_list_feedback(client: CTClient, name: str) -> None:
    task = client.create_task(name)
    first = client.log_feedback(
        name,
        inputs={"user_message": "Summarize this ticket"},
        output="The ticket is about a login issue.",
        score=0.9,
        metadata={"session_id": "abc123"},
    )
    assert isinstance(first, FeedbackResult)
    assert first.id.version == 7
    assert first.task_id == task.id
    assert first.inputs == {"user_message": "Summarize this ticket"}
    assert first.output == "The ticket is about a login issue."
    assert (first.score, first.source, first.metadata) == (0.9, "sdk", {"session_id": "abc123"})
    second = client.log_feedback(str(task.id), output="x", source="human")
    assert second.score is None
    listed = client.list_feedback(task_id=name)
    assert [f.id for f in listed] == [second.id, first.id]  # newest first
    assert [f.id for f in client.list_feedback(task_id=name, limit=1)] == [second.id]
    assert client.get_task(name).feedback_count == 2


def test_feedback_for_an_unknown_task_id_is_not_found(client: CTClient) -> None:
    with pytest.raises(CTNotFoundError):
        client.log_feedback(str(uuid.uuid4()), score=0.5)


def test_feedback_for_a_new_task_name_creates_the_task(client: CTClient, name: str) -> None:
    result = client.log_feedback(name, score=0.5)
    assert client.get_task(name).id == result.task_id


# --- optimization jobs --------------------------------------------------------------------


def test_trigger_optimization_and_wait_for_job(client: CTClient, name: str) -> None:
    client.create_task(name, feedback_threshold=1000)
    for i in range(4):
        client.log_feedback(name, inputs={"i": i}, output=f"o{i}", score=0.25 * i)
    result = client.trigger_optimization(name)
    assert result.job.status in ("PENDING", "RUNNING", "SUCCESS")
    assert result.cost_estimate.train_size + result.cost_estimate.val_size == 4
    assert result.budget_warning is None
    steps: list[tuple[str, str | None]] = []
    job = client.wait_for_job(
        str(result.job.id),
        timeout=30,
        poll_interval=0.01,
        on_progress=lambda j: steps.append((j.status, j.progress_step)),
    )
    assert job.status == "SUCCESS"
    assert job.is_terminal and job.is_success
    assert job.prompt_version_id is not None
    assert steps[-1] == ("SUCCESS", job.progress_step)
    assert len(steps) == len(set(steps))  # called only on changes
    assert client.get_job(str(job.id)) == job
    assert [j.id for j in client.list_jobs(task_id=name)] == [job.id]
    assert job.id in [j.id for j in client.list_jobs()]


def test_optimization_without_scored_feedback_fails(client: CTClient, name: str) -> None:
    client.create_task(name)
    job = client.trigger_optimization(name).job
    done = client.wait_for_job(str(job.id), timeout=30, poll_interval=0.01)
    assert done.status == "FAILURE"
    assert "no scored feedback" in (done.error_message or "")


def test_missing_job_is_not_found(client: CTClient) -> None:
    with pytest.raises(CTNotFoundError):
        client.get_job(str(uuid.uuid4()))


# --- prompts ------------------------------------------------------------------------------


def test_prompt_versions_activate_and_get_prompt(client: CTClient, name: str) -> None:
    with pytest.raises(CTNotFoundError):
        client.get_prompt(name)  # no version yet
    client.create_task(name, feedback_threshold=1000)
    with pytest.raises(CTNotFoundError, match="has no active prompt version yet"):
        client.get_prompt(name)
    task, job = optimized_task(client, name)
    versions = client.list_prompt_versions(name)
    assert [v.id for v in versions] == [job.prompt_version_id]
    candidate = versions[0]
    assert candidate.status == "candidate"
    active = client.activate_prompt(name, str(candidate.id))
    assert isinstance(active, Prompt)
    assert (active.id, active.status, active.task_id) == (candidate.id, "active", task.id)
    prompt = client.get_prompt(name)
    assert prompt.id == candidate.id
    assert prompt.prompt_text == candidate.prompt_text
    assert "Example 1:" in prompt.prompt_text


def test_get_prompt_is_cached_for_cache_ttl(local_server: LocalServer, name: str) -> None:
    transport = CountingTransport()
    with CTClient(
        local_server.api_key, local_server.base_url, cache_ttl=60.0, transport=transport
    ) as client:
        clock = FakeClock()
        client._prompt_cache = TTLCache(60.0, clock=clock)
        post_trace(  # the code's default prompt: the task's v1
            local_server, name, "Summarize: {{ ticket }}", prompt_is_default=True)
        path = f"/api/v1/prompts/{name}"
        first = client.get_prompt(name)
        assert client.get_prompt(name) is first
        assert client.get_prompt_cached(name) is first
        assert transport.count(path) == 1
        clock.now = 59.9
        client.get_prompt(name)
        assert transport.count(path) == 1
        clock.now = 60.0
        assert client.get_prompt_cached(name) is None
        assert client.get_prompt_cached(name, allow_stale=True) is first
        again = client.get_prompt(name)
        assert again == first
        assert transport.count(path) == 2


def test_activate_prompt_serves_the_activated_version_under_every_key(
    local_server: LocalServer, name: str
) -> None:
    transport = CountingTransport()
    with CTClient(local_server.api_key, local_server.base_url, transport=transport) as client:
        client.create_task(name, feedback_threshold=1000)
        post_trace(  # active v1
            local_server, name, "Summarize: {{ ticket }}", prompt_is_default=True)
        task, job = optimized_task(client, name)  # candidate v2
        by_name = client.get_prompt(name)
        by_id = client.get_prompt(str(task.id))
        assert by_name.version_number == by_id.version_number == 1
        assert by_name.render(ticket="T-1") == "Summarize: T-1"
        assert job.prompt_version_id is not None
        client.activate_prompt(str(task.id), str(job.prompt_version_id))
        # every key of the task now serves the activated version, with no request
        for key in (name, str(task.id)):
            cached = client.get_prompt_cached(key)
            assert cached is not None and cached.id == job.prompt_version_id
        assert client.get_prompt(name).id == job.prompt_version_id
        assert client.get_prompt(str(task.id)).version_number == 2
        assert transport.count(f"/api/v1/prompts/{name}") == 1


def test_activate_unknown_version_is_not_found(client: CTClient, name: str) -> None:
    client.create_task(name)
    with pytest.raises(CTNotFoundError):
        client.activate_prompt(name, str(uuid.uuid4()))


def test_sixteen_threads_on_a_cold_cache_make_one_request(
    local_server: LocalServer, name: str
) -> None:
    n = 16
    transport = CountingTransport(hold_until=n)
    post_trace(local_server, name, "Hello {{ name }}", prompt_is_default=True)
    barrier = threading.Barrier(n)
    results: list[Prompt] = []
    errors: list[BaseException] = []

    with CTClient(local_server.api_key, local_server.base_url, transport=transport) as client:

        def worker() -> None:
            try:
                barrier.wait(timeout=10)
                transport.arrive()
                results.append(client.get_prompt(name))
            except BaseException as exc:  # collected and asserted on below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert transport.count(f"/api/v1/prompts/{name}") == 1
    assert len(results) == n
    assert all(r is results[0] for r in results)


# --- traces and scores --------------------------------------------------------------------


def test_score_get_and_list_traces(client: CTClient, local_server: LocalServer, name: str) -> None:
    client.create_task(name)
    first = post_trace(local_server, name, "p", response_text="r1", model="gpt-4o-mini")
    second = post_trace(local_server, name, "p", response_text="r2", tokens=12)
    trace = client.score(first, 0.85, scored_by="human-review")
    assert isinstance(trace, TraceResult)
    assert (str(trace.id), trace.score, trace.scored_by) == (first, 0.85, "human-review")
    got = client.get_trace(first)
    assert (got.response_text, got.model, got.score) == ("r1", "gpt-4o-mini", 0.85)
    assert client.score(second, 0).score == 0.0
    assert client.get_trace(second).scored_by == "sdk"
    assert [str(t.id) for t in client.list_traces(task_id=name)] == [second, first]
    assert [str(t.id) for t in client.list_traces(task_id=name, limit=1)] == [second]
    assert len(client.list_traces(limit=2)) == 2


def test_score_unknown_trace_is_not_found(client: CTClient) -> None:
    with pytest.raises(CTNotFoundError):
        client.score(str(uuid.uuid4()), 0.5)


def test_score_out_of_range_never_reaches_the_server(local_server: LocalServer) -> None:
    transport = CountingTransport()
    client = CTClient(local_server.api_key, local_server.base_url, transport=transport)
    with client, pytest.raises(CTValidationError, match=r"between 0\.0 and 1\.0"):
        client.score(str(uuid.uuid4()), 1.2)
    assert transport.paths == []


def test_health(client: CTClient) -> None:
    health = client.health()
    assert health.status == "ok"
    assert health.version


def test_close_then_use_raises(local_server: LocalServer) -> None:
    client = CTClient(local_server.api_key, local_server.base_url)
    assert client.list_tasks() is not None
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.list_tasks()
