"""Status mapping, retries, bad bodies and transport failures, with canned responses.

``httpx.MockTransport`` stands in for the server here only; every method's happy path is
tested over real HTTP in test_client.py / test_async_client.py. Sleeps and jitter are
injected so retry delays are asserted exactly and nothing really waits.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import msgspec
import pytest

from kaizen_sdk import _http
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import (
    CTAuthError,
    CTConnectionError,
    CTError,
    CTNotFoundError,
    CTRateLimitError,
    CTServerError,
    CTTimeoutError,
    CTValidationError,
)
from kaizen_sdk.models import Job

pytestmark = pytest.mark.unit

KEY = "sk-test-secret-do-not-leak"
BASE = "http://127.0.0.1:9"
ID = "6f1c3c9e-6c0a-4f57-9a53-0f6f7f6d8e5c"
TASK_ID = "3b4e1f2a-1111-4222-8333-944445555666"
PROMPT = {"id": ID, "task_id": TASK_ID, "version_number": 3, "prompt_text": "Hi {{ name }}"}

Reply = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Server:
    """Canned replies in order (the last one repeats); records every request it got."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    @property
    def count(self) -> int:
        return len(self.requests)


def json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=msgspec.json.encode(body), headers=headers)


def error(status: int, detail: str = "went wrong", **headers: str) -> httpx.Response:
    return json(status, {"title": f"T{status}", "detail": detail}, headers=headers)


def sync_client(server: Server, **kwargs: Any) -> tuple[CTClient, list[float]]:
    client = CTClient(KEY, BASE, transport=httpx.MockTransport(server), **kwargs)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    client._random = lambda: 1.0  # jitter factor 0.5 + 0.5 * 1.0 = 1.0
    return client, sleeps


def async_client(server: Server, **kwargs: Any) -> tuple[AsyncCTClient, list[float]]:
    client = AsyncCTClient(KEY, BASE, transport=httpx.MockTransport(server), **kwargs)
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client._sleep = fake_sleep
    client._random = lambda: 1.0
    return client, sleeps


@pytest.fixture(autouse=True)
def fresh_plain_http_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "_warned_hosts", set())


# --- status mapping -----------------------------------------------------------------------

STATUS_CASES = [
    (400, CTValidationError),
    (401, CTAuthError),
    (403, CTAuthError),
    (404, CTNotFoundError),
    (409, CTValidationError),
    (418, CTError),
    (422, CTValidationError),
    (429, CTRateLimitError),
    (500, CTServerError),
    (502, CTServerError),
    (503, CTServerError),
    (504, CTServerError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_CASES)
def test_status_maps_to_error_class(status: int, cls: type[CTError]) -> None:
    server = Server(error(status, "task 'x' is missing"))
    client, _ = sync_client(server, max_retries=0)
    with pytest.raises(CTError) as info:
        client.get_task("x")
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert info.value.detail == "task 'x' is missing"
    assert str(info.value) == (
        f"GET /api/v1/tasks/x failed with {status} T{status}: task 'x' is missing"
    )
    assert server.count == 1


@pytest.mark.parametrize(("status", "cls"), STATUS_CASES)
async def test_async_status_maps_to_error_class(status: int, cls: type[CTError]) -> None:
    server = Server(error(status, "nope"))
    client, _ = async_client(server, max_retries=0)
    with pytest.raises(CTError) as info:
        await client.get_task("x")
    assert type(info.value) is cls
    assert info.value.status_code == status
    assert info.value.detail == "nope"
    assert server.count == 1
    await client.close()


def test_error_body_that_is_not_json_keeps_an_excerpt() -> None:
    server = Server(httpx.Response(502, text="<html>Bad gateway</html>"))
    client, _ = sync_client(server, max_retries=0)
    with pytest.raises(CTServerError) as info:
        client.list_tasks()
    assert info.value.detail == "<html>Bad gateway</html>"
    assert "502 Bad Gateway" in str(info.value)


def test_fastapi_style_error_detail_list_is_kept_as_json() -> None:
    detail = [{"loc": ["body", "score"], "msg": "too big"}]
    server = Server(json(422, {"detail": detail}))
    client, _ = sync_client(server)
    with pytest.raises(CTValidationError) as info:
        client.list_tasks()
    assert msgspec.json.decode(info.value.detail or "") == detail


def test_empty_error_body() -> None:
    server = Server(httpx.Response(404))
    client, _ = sync_client(server)
    with pytest.raises(CTNotFoundError) as info:
        client.get_job(ID)
    assert info.value.detail is None
    assert str(info.value) == f"GET /api/v1/jobs/{ID} failed with 404 Not Found."


def test_rate_limit_error_carries_retry_after() -> None:
    server = Server(error(429, "slow down", **{"Retry-After": "7"}))
    client, sleeps = sync_client(server, max_retries=0)
    with pytest.raises(CTRateLimitError) as info:
        client.list_tasks()
    assert info.value.retry_after == 7.0
    assert "Retry after 7 s." in str(info.value)
    assert sleeps == []


# --- retries ------------------------------------------------------------------------------


def test_get_is_retried_on_503_with_exponential_backoff() -> None:
    server = Server(error(503), error(503), json(200, PROMPT))
    client, sleeps = sync_client(server)
    prompt = client.get_prompt("summarize_ticket")
    assert prompt.version_number == 3
    assert server.count == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_gives_up_after_max_retries(status: int) -> None:
    server = Server(error(status))
    client, sleeps = sync_client(server)
    with pytest.raises(CTServerError) as info:
        client.list_tasks()
    assert info.value.status_code == status
    assert server.count == 3  # first attempt + max_retries=2
    assert sleeps == [0.5, 1.0]


def test_backoff_doubles_up_to_its_cap_and_is_jittered() -> None:
    server = Server(error(503))
    client, sleeps = sync_client(server, max_retries=6)
    with pytest.raises(CTServerError):
        client.list_tasks()
    assert server.count == 7
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]

    server = Server(error(503))
    client, sleeps = sync_client(server, max_retries=2)
    client._random = lambda: 0.0  # lowest jitter: half the delay
    with pytest.raises(CTServerError):
        client.list_tasks()
    assert sleeps == [0.25, 0.5]


def test_max_retries_zero_sends_once() -> None:
    server = Server(error(503))
    client, sleeps = sync_client(server, max_retries=0)
    with pytest.raises(CTServerError):
        client.list_tasks()
    assert (server.count, sleeps) == (1, [])


def test_max_retries_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_MAX_RETRIES", "1")
    server = Server(error(503))
    client, sleeps = sync_client(server)
    with pytest.raises(CTServerError):
        client.list_tasks()
    assert (server.count, sleeps) == (2, [0.5])


@pytest.mark.parametrize("status", [500, 400, 401, 404, 422])
def test_other_errors_are_not_retried(status: int) -> None:
    server = Server(error(status))
    client, sleeps = sync_client(server)
    with pytest.raises(CTError):
        client.list_tasks()
    assert (server.count, sleeps) == (1, [])


def test_retry_after_seconds_is_honoured() -> None:
    server = Server(error(429, **{"Retry-After": "7"}), json(200, []))
    client, sleeps = sync_client(server)
    assert client.list_tasks() == []
    assert server.count == 2
    assert sleeps == [7.0]


def test_retry_after_is_capped() -> None:
    server = Server(error(429, **{"Retry-After": "3600"}), json(200, []))
    client, sleeps = sync_client(server)
    assert client.list_tasks() == []
    assert sleeps == [_http.RETRY_AFTER_MAX]


def test_retry_after_http_date_is_honoured() -> None:
    server = Server(error(429, **{"Retry-After": "Sun, 29 Nov 2026 08:00:05 GMT"}), json(200, []))
    client, sleeps = sync_client(server)
    client._now = lambda: datetime(2026, 11, 29, 8, 0, 0, tzinfo=timezone.utc)
    assert client.list_tasks() == []
    assert sleeps == [5.0]


def test_429_without_retry_after_uses_backoff() -> None:
    server = Server(error(429), error(429), error(429))
    client, sleeps = sync_client(server)
    with pytest.raises(CTRateLimitError) as info:
        client.list_tasks()
    assert info.value.retry_after is None
    assert (server.count, sleeps) == (3, [0.5, 1.0])


def test_log_feedback_is_retried_with_the_same_client_made_id() -> None:
    created = {"id": ID, "task_id": TASK_ID, "score": 0.9, "source": "sdk"}
    server = Server(error(503), httpx.ConnectError("reset"), json(201, created))
    client, sleeps = sync_client(server)
    result = client.log_feedback(TASK_ID, inputs={"q": "x"}, output="y", score=0.9)
    assert result.id == uuid.UUID(ID)
    assert server.count == 3
    bodies = [msgspec.json.decode(r.content) for r in server.requests]
    ids = {b["id"] for b in bodies}
    assert len(ids) == 1
    assert uuid.UUID(ids.pop()).version == 7
    assert bodies[0] == {
        "id": bodies[0]["id"],
        "task_id": TASK_ID,
        "inputs": {"q": "x"},
        "output": "y",
        "score": 0.9,
        "source": "sdk",  # the documented default is sent, not left to the server
        "metadata": None,
    }
    assert sleeps == [0.5, 1.0]


def test_each_log_feedback_call_makes_a_new_id() -> None:
    server = Server(json(201, {"id": ID}))
    client, _ = sync_client(server)
    client.log_feedback(TASK_ID, score=0.1)
    client.log_feedback(TASK_ID, score=0.1)
    ids = [msgspec.json.decode(r.content)["id"] for r in server.requests]
    assert len(set(ids)) == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.create_task("summarize_ticket"),
        lambda c: c.trigger_optimization("summarize_ticket"),
    ],
    ids=["create_task", "trigger_optimization"],
)
def test_posts_without_a_client_id_are_never_retried(call: Callable[[CTClient], Any]) -> None:
    server = Server(error(503), httpx.ConnectError("refused"))
    client, sleeps = sync_client(server)
    with pytest.raises(CTServerError):
        call(client)
    assert (server.count, sleeps) == (1, [])

    server = Server(httpx.ConnectError("refused"))
    client, sleeps = sync_client(server)
    with pytest.raises(CTConnectionError):
        call(client)
    assert (server.count, sleeps) == (1, [])


async def test_async_retries_are_counted_and_slept_the_same() -> None:
    server = Server(error(503), error(429, **{"Retry-After": "2"}), json(200, PROMPT))
    client, sleeps = async_client(server)
    prompt = await client.get_prompt("summarize_ticket")
    assert prompt.version_number == 3
    assert server.count == 3
    assert sleeps == [0.5, 2.0]
    await client.close()


async def test_async_post_without_client_id_is_not_retried() -> None:
    server = Server(error(503))
    client, sleeps = async_client(server)
    with pytest.raises(CTServerError):
        await client.trigger_optimization("t")
    assert (server.count, sleeps) == (1, [])
    await client.close()


# --- bodies that do not decode ------------------------------------------------------------


def test_malformed_json_is_a_ct_error() -> None:
    server = Server(httpx.Response(200, content=b'{"id": "6f1c'))
    client, _ = sync_client(server)
    with pytest.raises(CTError) as info:
        client.get_prompt("summarize_ticket")
    assert type(info.value) is CTError
    assert str(info.value).startswith(
        "The CT server's answer to GET /api/v1/prompts/summarize_ticket is not valid JSON"
    )
    assert isinstance(info.value.__cause__, msgspec.DecodeError)
    assert server.count == 1  # a bad body is not retried
    assert client.get_prompt_cached("summarize_ticket") is None


def test_wrong_field_type_names_the_field() -> None:
    server = Server(json(200, {**PROMPT, "version_number": "three"}))
    client, _ = sync_client(server)
    with pytest.raises(CTError) as info:
        client.get_prompt("summarize_ticket")
    assert type(info.value) is CTError
    assert str(info.value) == (
        "The CT server's answer to GET /api/v1/prompts/summarize_ticket does not match "
        "Prompt: field `version_number`: Expected `int`, got `str`."
    )


def test_wrong_field_type_in_a_list_names_the_item_and_field() -> None:
    server = Server(json(200, [{"id": ID, "name": "ok"}, {"id": ID, "name": 5}]))
    client, _ = sync_client(server)
    with pytest.raises(CTError, match=r"does not match list\[Task\]: field `\[1\]\.name`"):
        client.list_tasks()


def test_missing_required_field_names_it() -> None:
    server = Server(json(200, {"status": "RUNNING"}))
    client, _ = sync_client(server)
    with pytest.raises(CTError, match="missing required field `id`"):
        client.get_job(ID)


async def test_async_wrong_field_type_names_the_field() -> None:
    server = Server(json(200, {"id": ID, "status": 3}))
    client, _ = async_client(server)
    with pytest.raises(CTError, match="field `status`: Expected `str`, got `int`"):
        await client.get_job(ID)
    await client.close()


# --- transport failures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectTimeout("connect timed out"), CTTimeoutError),
        (httpx.ReadTimeout("read timed out"), CTTimeoutError),
        (httpx.ConnectError("connection refused"), CTConnectionError),
        (httpx.RemoteProtocolError("server hung up"), CTConnectionError),
        (httpx.ReadError("reset by peer"), CTConnectionError),
    ],
)
def test_transport_errors_are_translated_and_retried_for_gets(
    exc: Exception, cls: type[CTError]
) -> None:
    server = Server(exc)
    client, sleeps = sync_client(server)
    with pytest.raises(cls) as info:
        client.health()
    assert not isinstance(info.value, httpx.HTTPError)
    assert info.value.__cause__ is exc
    assert info.value.status_code is None
    assert server.count == 3
    assert sleeps == [0.5, 1.0]


def test_transport_error_then_success() -> None:
    server = Server(httpx.ReadTimeout("slow"), json(200, {"status": "ok", "version": "1"}))
    client, sleeps = sync_client(server)
    assert client.health().status == "ok"
    assert (server.count, sleeps) == (2, [0.5])


async def test_async_transport_errors_are_translated() -> None:
    server = Server(httpx.ReadTimeout("slow"))
    client, sleeps = async_client(server, max_retries=1)
    with pytest.raises(CTTimeoutError):
        await client.health()
    assert (server.count, sleeps) == (2, [0.5])
    await client.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_refused_connection_is_a_connection_error(closed_port: int) -> None:
    client = CTClient(KEY, f"http://127.0.0.1:{closed_port}", max_retries=1)
    sleeps: list[float] = []
    client._sleep = sleeps.append
    with client, pytest.raises(CTConnectionError) as info:
        client.list_tasks()
    assert "could not reach the CT server" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert len(sleeps) == 1
    assert KEY not in str(info.value)


async def test_async_refused_connection_is_a_connection_error(closed_port: int) -> None:
    async with AsyncCTClient(KEY, f"http://127.0.0.1:{closed_port}", max_retries=0) as client:
        with pytest.raises(CTConnectionError):
            await client.list_tasks()


def test_server_that_never_answers_times_out(silent_port: int) -> None:
    client = CTClient(KEY, f"http://127.0.0.1:{silent_port}", timeout=0.2, max_retries=0)
    with client, pytest.raises(CTTimeoutError) as info:
        client.health()
    assert str(info.value) == "GET /api/v1/health timed out (ReadTimeout)."


async def test_async_server_that_never_answers_times_out(silent_port: int) -> None:
    client = AsyncCTClient(KEY, f"http://127.0.0.1:{silent_port}", timeout=0.2, max_retries=0)
    async with client:
        with pytest.raises(CTTimeoutError):
            await client.health()


# --- local checks: nothing is sent --------------------------------------------------------

BAD_CALLS: list[tuple[str, Callable[[CTClient], Any], str]] = [
    ("score>1", lambda c: c.score(ID, 1.5), "score must be between 0.0 and 1.0, got 1.5"),
    ("score<0", lambda c: c.score(ID, -0.1), "got -0.1"),
    ("score nan", lambda c: c.score(ID, float("nan")), "got nan"),
    ("score bool", lambda c: c.score(ID, True), "got bool"),
    ("score str", lambda c: c.score(ID, "0.5"), "got str"),
    ("feedback score", lambda c: c.log_feedback(TASK_ID, score=2), "got 2"),
    ("empty task", lambda c: c.get_prompt(""), "task_id must not be empty"),
    ("blank task", lambda c: c.get_task("   "), "task_id must not be empty"),
    ("none task", lambda c: c.get_prompt(None), "task_id must be a string or UUID"),
    ("empty job", lambda c: c.get_job(""), "job_id must not be empty"),
    ("empty trace", lambda c: c.score("", 0.5), "trace_id must not be empty"),
    ("empty feedback task", lambda c: c.log_feedback(""), "task_id must not be empty"),
    ("empty version", lambda c: c.activate_prompt("t", ""), "version_id must not be empty"),
    ("bad version", lambda c: c.activate_prompt("t", "v7"), "version_id must be a UUID"),
    ("empty name", lambda c: c.create_task(""), "name must not be empty"),
    ("limit", lambda c: c.list_traces(limit=0), "limit must be a positive whole number"),
    ("wait empty", lambda c: c.wait_for_job(""), "job_id must not be empty"),
]


@pytest.mark.parametrize(("name", "call", "message"), BAD_CALLS, ids=[b[0] for b in BAD_CALLS])
def test_local_argument_checks_send_nothing(
    name: str, call: Callable[[CTClient], Any], message: str
) -> None:
    server = Server(json(200, {}))
    client, _ = sync_client(server)
    with pytest.raises(CTValidationError, match=re.escape(message)) as info:
        call(client)
    assert info.value.status_code is None
    assert server.count == 0


async def test_async_local_checks_send_nothing() -> None:
    server = Server(json(200, {}))
    client, _ = async_client(server)
    with pytest.raises(CTValidationError, match=r"got 1\.01"):
        await client.score(ID, 1.01)
    with pytest.raises(CTValidationError, match="task_id must not be empty"):
        await client.get_prompt("")
    assert server.count == 0
    await client.close()


# --- requests as sent ---------------------------------------------------------------------


def test_headers_user_agent_and_key() -> None:
    server = Server(json(200, {"status": "ok"}))
    client, _ = sync_client(server)
    client.health()
    headers = server.requests[0].headers
    assert headers["X-API-Key"] == KEY
    assert re.fullmatch(r"kaizen-sdk/\d+\.\d+\.\d+\S* python/3\.\d+", headers["User-Agent"])
    assert headers["Accept"] == "application/json"
    assert str(server.requests[0].url) == f"{BASE}/api/v1/health"


def test_task_names_are_quoted_as_one_path_segment() -> None:
    server = Server(json(200, PROMPT))
    client, _ = sync_client(server)
    client.get_prompt("team/summarize ticket?")
    assert server.requests[0].url.raw_path == b"/api/v1/prompts/team%2Fsummarize%20ticket%3F"


def test_base_url_path_prefix_is_kept() -> None:
    server = Server(json(200, []))
    client = CTClient(KEY, "http://127.0.0.1:9/ct/", transport=httpx.MockTransport(server))
    client.list_traces(task_id="a b", limit=5)
    assert str(server.requests[0].url) == "http://127.0.0.1:9/ct/api/v1/traces?limit=5&task_id=a+b"


def test_create_task_sends_known_and_extra_fields() -> None:
    server = Server(json(201, {"id": ID, "name": "summarize_ticket"}))
    client, _ = sync_client(server)
    client.create_task(
        "summarize_ticket",
        description="d",
        feedback_threshold=100,
        teacher_model="gpt-4o",
        future_option=True,
    )
    assert msgspec.json.decode(server.requests[0].content) == {
        "name": "summarize_ticket",
        "description": "d",
        "feedback_threshold": 100,
        "teacher_model": "gpt-4o",
        "future_option": True,
    }
    assert server.requests[0].headers["Content-Type"] == "application/json"


def test_score_sends_score_and_scored_by() -> None:
    server = Server(json(200, {"id": ID, "score": 0.85, "scored_by": "human-review"}))
    client, _ = sync_client(server)
    trace = client.score(uuid.UUID(ID), 0.85, scored_by="human-review")  # type: ignore[arg-type]
    assert trace.score == 0.85
    assert server.requests[0].url.path == f"/api/v1/traces/{ID}/score"
    assert msgspec.json.decode(server.requests[0].content) == {
        "score": 0.85,
        "scored_by": "human-review",
    }


# --- the key stays secret; plain-http warning ---------------------------------------------


def test_key_appears_in_no_repr_message_or_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = Server(error(503, "down"), error(401, "bad key"))
    client = CTClient(KEY, "http://ct.example.test", transport=httpx.MockTransport(server))
    client._sleep = lambda s: None
    with pytest.raises(CTAuthError) as info:
        client.list_tasks()
    texts = [repr(client), str(client.settings), repr(client.settings), str(info.value)]
    texts += [repr(info.value), caplog.text]
    assert caplog.text  # the retry and the plain-http warning were logged
    for text in texts:
        assert KEY not in text


def test_plain_http_to_a_remote_host_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    server = Server(json(200, {"status": "ok"}))
    for _ in range(2):
        client = CTClient(KEY, "http://ct.example.test", transport=httpx.MockTransport(server))
        client.health()
        client.health()
    warnings = [r for r in caplog.records if "plain http://" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].name.startswith("kaizen_sdk")
    assert "http://ct.example.test:80" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "url", ["https://ct.example.test", "http://localhost:8000", "http://127.0.0.2", "http://[::1]"]
)
def test_https_and_loopback_do_not_warn(url: str, caplog: pytest.LogCaptureFixture) -> None:
    server = Server(json(200, {"status": "ok"}))
    CTClient(KEY, url, transport=httpx.MockTransport(server)).health()
    assert [r for r in caplog.records if "plain http://" in r.getMessage()] == []


# --- lifecycle ----------------------------------------------------------------------------


def test_use_after_close_raises_runtime_error() -> None:
    server = Server(json(200, []))
    client, _ = sync_client(server)
    with client as same:
        assert same is client
        assert same.list_tasks() == []
    assert client.closed
    with pytest.raises(RuntimeError, match=r"^This CTClient is closed; create a new client"):
        client.list_tasks()
    with pytest.raises(RuntimeError):
        client.__enter__()
    client.close()  # a second close is a no-op
    assert server.count == 1
    assert "closed" in repr(client)


async def test_async_use_after_close_raises_runtime_error() -> None:
    server = Server(json(200, []))
    client, _ = async_client(server)
    async with client:
        assert await client.list_tasks() == []
    with pytest.raises(RuntimeError, match=r"^This AsyncCTClient is closed"):
        await client.list_tasks()
    await client.close()


class FakePipeline:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def flush(self, timeout: float | None) -> None:
        self.calls.append(("flush", timeout))

    def shutdown(self) -> None:
        self.calls.append("shutdown")

    def stats(self) -> str:
        return "stats"


def test_pipeline_hooks() -> None:
    server = Server(json(200, []))
    client, _ = sync_client(server)
    assert client.stats().sent == 0
    client.flush()  # no pipeline: nothing to do
    pipeline = FakePipeline()
    client._pipeline = pipeline
    client.flush(1.5)
    assert client.stats() == "stats"
    client.close()
    assert pipeline.calls == [("flush", 1.5), "shutdown"]


async def test_async_pipeline_hooks() -> None:
    server = Server(json(200, []))
    client, _ = async_client(server)
    pipeline = FakePipeline()
    client._pipeline = pipeline
    await client.flush(2.0)
    await client.close()
    assert pipeline.calls == [("flush", 2.0), "shutdown"]


def test_close_survives_a_failing_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakePipeline):
        def shutdown(self) -> None:
            raise OSError("disk full")

    client, _ = sync_client(Server(json(200, [])))
    client._pipeline = Broken()
    client.close()
    assert client.closed
    assert "Shutting down background delivery failed." in caplog.text


# --- wait_for_job (fake clock and sleep) --------------------------------------------------


def job(status: str, step: str | None = None) -> httpx.Response:
    return json(200, {"id": ID, "status": status, "progress_step": step})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_wait_for_job_polls_until_terminal_and_reports_changes() -> None:
    server = Server(
        job("PENDING"),
        job("RUNNING", "bootstrapping"),
        job("RUNNING", "bootstrapping"),
        job("RUNNING", "evaluating"),
        job("SUCCESS", "done"),
    )
    client, sleeps = sync_client(server)
    clock = Clock()
    client._clock = clock
    client._sleep = lambda s: (sleeps.append(s), setattr(clock, "now", clock.now + s))
    seen: list[tuple[str, str | None]] = []
    done = client.wait_for_job(ID, poll_interval=3.0, on_progress=lambda j: seen.append(
        (j.status, j.progress_step)
    ))
    assert done.status == "SUCCESS"
    assert seen == [
        ("PENDING", None),
        ("RUNNING", "bootstrapping"),
        ("RUNNING", "evaluating"),
        ("SUCCESS", "done"),
    ]
    assert server.count == 5
    assert sleeps == [3.0, 3.0, 3.0, 3.0]


def test_wait_for_job_times_out() -> None:
    server = Server(job("RUNNING", "evaluating"))
    client, sleeps = sync_client(server)
    clock = Clock()
    client._clock = clock
    client._sleep = lambda s: (sleeps.append(s), setattr(clock, "now", clock.now + s))
    with pytest.raises(CTTimeoutError) as info:
        client.wait_for_job(ID, timeout=5, poll_interval=2.0)
    assert str(info.value) == f"Job {ID} did not finish within 5 s (last status RUNNING)."
    assert sleeps == [2.0, 2.0, 1.0]
    assert server.count == 4


async def test_async_wait_for_job() -> None:
    server = Server(job("PENDING"), job("completed"))
    client, sleeps = async_client(server)
    clock = Clock()
    client._clock = clock

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.now += seconds

    client._sleep = fake_sleep
    seen: list[Job] = []
    done = await client.wait_for_job(ID, poll_interval=1.0, on_progress=seen.append)
    assert done.is_terminal and done.status == "completed"
    assert [j.status for j in seen] == ["PENDING", "completed"]
    assert sleeps == [1.0]

    server.replies = [job("RUNNING")]
    with pytest.raises(CTTimeoutError):
        await client.wait_for_job(ID, timeout=2.5, poll_interval=1.0)
    await client.close()

