"""Configuration problems never reach application code; explicit clients still raise.

A missing ``KAIZEN_API_KEY``, a malformed ``KAIZEN_*`` number or ``KAIZEN_ENABLED=false``
makes ``@ct.task`` run the function untraced on its default prompt, logging the problem once
(naming the variable); ``run.score()`` is then a no-op that returns ``None``. Only an
explicit ``CTClient(...)`` raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import kaizen_sdk as ct
from kaizen_sdk import _default
from kaizen_sdk._config import resolve_settings
from kaizen_server import LocalServer

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_default_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_default, "_client", None)
    monkeypatch.setattr(_default, "_untraced_logged", set())
    yield
    client = _default._client
    if client is not None:
        client.close()


BAD_ENV = [
    pytest.param({}, "KAIZEN_API_KEY", id="missing-key"),
    pytest.param({"KAIZEN_API_KEY": "k", "KAIZEN_MAX_RETRIES": "abc"}, "KAIZEN_MAX_RETRIES",
                 id="malformed-retries"),
    pytest.param({"KAIZEN_API_KEY": "k", "KAIZEN_SHUTDOWN_TIMEOUT": "soon"},
                 "KAIZEN_SHUTDOWN_TIMEOUT", id="malformed-timeout"),
    pytest.param({"KAIZEN_ENABLED": "false", "KAIZEN_MAX_QUEUE_SIZE": "x"},
                 "KAIZEN_MAX_QUEUE_SIZE", id="disabled-and-malformed"),
]


@pytest.mark.parametrize(("env", "named"), BAD_ENV)
def test_a_configuration_problem_runs_the_task_untraced_and_logs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    env: dict[str, str], named: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    @ct.task("config-problem", default_prompt="Hi {{ name }}")
    def greet(name: str, prompt: ct.Prompt) -> str:
        return prompt.render(name=name)

    with caplog.at_level(logging.INFO, logger="kaizen_sdk"):
        assert [greet(n) for n in ("a", "b", "c")] == ["Hi a", "Hi b", "Hi c"]
        result, run = greet.call("d")
    assert result == "Hi d"
    assert run.score(0.9) is None  # a no-op, never a CTError
    mentions = [r for r in caplog.records if named in r.getMessage()]
    if env.get("KAIZEN_ENABLED") == "false":
        assert [r.getMessage() for r in caplog.records] == [
            "CT tracing is off (KAIZEN_ENABLED=false)."
        ]
    else:
        assert len(mentions) == 1 and mentions[0].levelno == logging.WARNING
        assert "untraced" in mentions[0].getMessage()
    assert _default._client is None


@pytest.mark.parametrize(("env", "named"), BAD_ENV[:3])
def test_an_explicit_client_still_raises_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ct.CTError, match=named):
        ct.CTClient()


def test_disabled_with_a_key_runs_untraced_and_scores_are_none(
    monkeypatch: pytest.MonkeyPatch, local_server: LocalServer
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    monkeypatch.setenv("KAIZEN_ENABLED", "false")

    @ct.task("disabled-task", default_prompt="p")
    def f(x: int) -> int:
        return x + 1

    result, run = f.call(1)
    assert result == 2
    assert run.score(0.5) is None  # the trace was never sent: scoring it must not raise
    client = ct.get_client()
    assert client.stats() == ct.DeliveryStats()
    assert client.flush() is True


async def test_async_run_score_is_none_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_ENABLED", "false")

    @ct.task("disabled-async", default_prompt="p")
    async def f() -> str:
        return "ok"

    result, run = await f.call()
    assert result == "ok"
    assert await run.score(1.0) is None


def test_malformed_numbers_name_the_variable_and_the_value() -> None:
    with pytest.raises(ct.CTError, match=r"KAIZEN_MAX_QUEUE_SIZE must be a whole number, got 'x'"):
        resolve_settings(api_key="k", environ={"KAIZEN_MAX_QUEUE_SIZE": "x"})
