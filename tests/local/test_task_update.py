"""Editable tasks: ``PATCH /api/v1/tasks/{task_id}``, ``update_task`` and ``kaizen tasks update``.

Every setting round-trips through each of the four ways to change it (the HTTP API, `CTClient`,
`AsyncCTClient`, the CLI), on a task created implicitly by a trace (as the decorator creates
one), and can be cleared again. Bad values and unknown fields are a 422 naming the field, and
nothing of the request is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
import msgspec
import pytest

from kaizen_sdk import cli
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import CTValidationError
from kaizen_sdk.models import Task, TaskUpdateRequest
from kaizen_server import LocalServer
from kaizen_server.domain.task_settings import SETTINGS, update_command

SETTING_VALUES: dict[str, Any] = {
    "description": "Shouts the text back",
    "schema_json": {"type": "object", "properties": {"text": {"type": "string"}}},
    "feedback_threshold": 7,
    "feedback_retention_limit": 500,
    "feedback_retention_days": 90,
    "trace_retention_limit": 100_000,
    "trace_retention_days": 30,
    "evaluator_config": {"optimizer": "bootstrap", "min_examples": 4, "max_demos": 2,
                         "auto_rollout": {"ramp": [0.1, 1.0], "min_samples": 50}},
    "rubric": "An answer in capitals with an exclamation mark is right.",
    "task_model": "student-model",
    "teacher_model": "teacher-model",
    "judge_model": "judge-model",
    "module_type": "chain_of_thought",
    "cost_budget": 0.25,
    "github_repo": "acme/prompts",
    "github_base_branch": "release/2026",
    "prompt_path": "prompts/shout.txt",
    "prompt_format": "json",
    "daily_budget_usd": 2.5,
    "max_jobs_per_day": 3,
    "cooldown_minutes": 90.0,
}
"""A valid value for every setting."""

_IN_CONFIG = ("rubric", "task_model")


def _read(task: Task, name: str) -> Any:
    """The setting *name* as the task shows it."""
    if name in _IN_CONFIG:
        return (task.evaluator_config or {}).get(name)
    return getattr(task, name)


def _cli_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict) else str(value)


Way = Callable[[LocalServer, str, dict[str, Any]], Task]


# The module's own requests are plain HTTP to the loopback server: verify=False spares httpx
# loading the CA bundle for each client it makes (httpx.get makes one per call), ~23 ms of CPU
# each, some 500 times in this module.


def _via_http(server: LocalServer, task: str, settings: dict[str, Any]) -> Task:
    resp = httpx.patch(f"{server.base_url}/api/v1/tasks/{task}", json=settings,
                       headers={"X-API-Key": server.api_key}, timeout=10, verify=False)
    assert resp.status_code == 200, resp.text
    return msgspec.json.decode(resp.content, type=Task)


def _via_client(server: LocalServer, task: str, settings: dict[str, Any]) -> Task:
    with CTClient(api_key=server.api_key, base_url=server.base_url) as client:
        return client.update_task(task, **settings)


def _via_async_client(server: LocalServer, task: str, settings: dict[str, Any]) -> Task:
    async def go() -> Task:
        async with AsyncCTClient(api_key=server.api_key, base_url=server.base_url) as client:
            return await client.update_task(task, **settings)

    return asyncio.run(go())


def _via_cli(server: LocalServer, task: str, settings: dict[str, Any]) -> Task:
    argv = ["tasks", "update", task, "--json", "--base-url", server.base_url,
            "--api-key", server.api_key]
    for name, value in settings.items():
        if value is None:
            argv += ["--unset", name]
        else:
            argv += [f"--{name.replace('_', '-')}", _cli_value(value)]
    assert cli.main(argv) == 0
    with CTClient(api_key=server.api_key, base_url=server.base_url) as client:
        return client.get_task(task)


WAYS: dict[str, Way] = {
    "http": _via_http, "client": _via_client, "async_client": _via_async_client, "cli": _via_cli,
}


@pytest.fixture
def auto_task(local_server: LocalServer, task_name: str) -> Iterator[str]:
    """A task created implicitly by a trace naming it (as the decorator's first call does)."""
    resp = httpx.post(
        f"{local_server.base_url}/api/v1/traces", headers={"X-API-Key": local_server.api_key},
        json={"task_id": task_name, "prompt_text": "Shout: {{ text }}", "response_text": "HI!",
              "model": "m"}, timeout=10, verify=False,
    )
    assert resp.status_code == 201, resp.text
    yield task_name


def _get(server: LocalServer, task: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.base_url}/api/v1/tasks/{task}",
                     headers={"X-API-Key": server.api_key}, timeout=10, verify=False)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_every_setting_of_the_update_body_is_covered() -> None:
    fields = {f.name for f in msgspec.structs.fields(TaskUpdateRequest)}
    assert fields == set(SETTINGS) == set(SETTING_VALUES)


@pytest.mark.parametrize("way", list(WAYS))
@pytest.mark.parametrize("name", list(SETTING_VALUES))
def test_every_setting_round_trips_and_clears(
    local_server: LocalServer, auto_task: str, name: str, way: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _get(local_server, auto_task)
    value = SETTING_VALUES[name]

    changed = WAYS[way](local_server, auto_task, {name: value})

    assert _read(changed, name) == value
    after = _get(local_server, auto_task)
    moved = {SETTINGS[name].column, "threshold_progress"}  # "0/7": made from the threshold
    assert {k: v for k, v in after.items() if k not in moved} == {
        k: v for k, v in before.items() if k not in moved}  # nothing else changed
    if not SETTINGS[name].nullable:
        return
    cleared = WAYS[way](local_server, auto_task, {name: None})
    assert _read(cleared, name) is None
    assert _get(local_server, auto_task) == before
    capsys.readouterr()


def test_several_settings_at_once_and_the_threshold_alias(
    local_server: LocalServer, auto_task: str, capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["tasks", "update", auto_task, "--teacher-model", "t1", "--judge-model", "j1",
            "--threshold", "12", "--rubric", "Capitals.", "--evaluator-config",
            '{"optimizer": "gepa"}', "--base-url", local_server.base_url,
            "--api-key", local_server.api_key]

    assert cli.main(argv) == 0

    out = capsys.readouterr().out
    assert "t1" in out and "j1" in out
    task = _get(local_server, auto_task)
    assert (task["teacher_model"], task["judge_model"], task["feedback_threshold"]) == (
        "t1", "j1", 12)
    assert task["threshold_progress"] == "0/12"
    assert task["evaluator_config"] == {"optimizer": "gepa", "rubric": "Capitals."}


def test_evaluator_config_merges_key_by_key(local_server: LocalServer, auto_task: str) -> None:
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as client:
        client.update_task(auto_task, evaluator_config={"optimizer": "mipro", "min_examples": 5,
                                                        "custom": {"a": 1}})
        task = client.update_task(auto_task, evaluator_config={"min_examples": None,
                                                               "max_demos": 3})
        assert task.evaluator_config == {"optimizer": "mipro", "custom": {"a": 1},
                                         "max_demos": 3}
        task = client.update_task(auto_task, rubric="R", evaluator_config={"rubric": "lost"})
        assert task.evaluator_config is not None and task.evaluator_config["rubric"] == "R"
        assert client.update_task(auto_task, evaluator_config=None).evaluator_config is None


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"feedback_threshold": 0}, "feedback_threshold"),
    ({"feedback_threshold": None}, "feedback_threshold"),
    ({"feedback_threshold": "many"}, "feedback_threshold"),
    ({"feedback_retention_limit": -3}, "feedback_retention_limit"),
    ({"cost_budget": -0.5}, "cost_budget"),
    ({"cost_budget": "free"}, "cost_budget"),
    ({"teacher_model": ""}, "teacher_model"),
    ({"judge_model": "  judge "}, "judge_model"),
    ({"judge_model": 3}, "judge_model"),
    ({"task_model": ""}, "task_model"),
    ({"rubric": ""}, "rubric"),
    ({"module_type": "react"}, "module_type"),
    ({"evaluator_config": {"optimizer": "magic"}}, "evaluator_config"),
    ({"evaluator_config": {"min_examples": 1}}, "evaluator_config"),
    ({"evaluator_config": ["not", "an", "object"]}, "evaluator_config"),
    ({"evaluator_config": {"auto_rollout": {"ramp": [0.5, 1.5]}}}, "evaluator_config"),
    ({"evaluator_config": {"auto_rollout": {"min_samples": 1}}}, "evaluator_config"),
    ({"evaluator_config": {"auto_rollout": "yes"}}, "evaluator_config"),
    ({"schema_json": "text"}, "schema_json"),
    ({"github_repo": "no-owner"}, "github_repo"),
    ({"github_base_branch": "bad..branch"}, "github_base_branch"),
    ({"prompt_path": "../outside.txt"}, "prompt_path"),
    ({"prompt_path": "/etc/passwd"}, "prompt_path"),
    ({"prompt_format": "yaml"}, "prompt_format"),
    ({"description": 5}, "description"),
    ({"daily_budget_usd": -1}, "daily_budget_usd"),
    ({"max_jobs_per_day": -1}, "max_jobs_per_day"),
    ({"max_jobs_per_day": 1.5}, "max_jobs_per_day"),
    ({"cooldown_minutes": "soon"}, "cooldown_minutes"),
    ({"evaluator_config": {"eval_sample_size": 1}}, "evaluator_config"),
    ({"teacher_model": "fine", "feedback_threshold": 0}, "feedback_threshold"),
    ({"judge_model": "fine", "colour": "blue"}, "colour"),
    ({"name": "renamed"}, "name"),
]


@pytest.mark.parametrize(("body", "field"), BAD_VALUES)
def test_bad_values_are_a_422_naming_the_field_and_change_nothing(
    local_server: LocalServer, auto_task: str, body: dict[str, Any], field: str,
) -> None:
    before = _get(local_server, auto_task)

    resp = httpx.patch(f"{local_server.base_url}/api/v1/tasks/{auto_task}", json=body,
                       headers={"X-API-Key": local_server.api_key}, timeout=10, verify=False)

    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]  # a type error is msgspec's "... - at `$.field`"
    assert f"`{field}`" in detail or f"`$.{field}`" in detail, detail
    assert _get(local_server, auto_task) == before


def test_clients_and_cli_report_bad_values_naming_the_field(
    local_server: LocalServer, auto_task: str, capsys: pytest.CaptureFixture[str],
) -> None:
    before = _get(local_server, auto_task)
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as client:
        with pytest.raises(CTValidationError, match="`module_type`"):
            client.update_task(auto_task, teacher_model="t", module_type="react")
        with pytest.raises(CTValidationError, match="`colour`") as unknown:
            client.update_task(auto_task, colour="blue")
        assert unknown.value.status_code == 422
        with pytest.raises(CTValidationError, match="`cost_budget` must be a finite number"):
            client.update_task(auto_task, cost_budget=float("nan"))  # JSON has no NaN
        with pytest.raises(CTValidationError, match="at least one setting"):
            client.update_task(auto_task)
    base = ["--base-url", local_server.base_url, "--api-key", local_server.api_key]
    assert cli.main(["tasks", "update", auto_task, "--cost-budget", "-1", *base]) == 1
    assert "`cost_budget`" in capsys.readouterr().err
    assert cli.main(["tasks", "update", auto_task, *base]) == 2
    assert "nothing to change" in capsys.readouterr().err
    assert cli.main(["tasks", "update", "no-such-task-anywhere", "--rubric", "R", *base]) == 4
    capsys.readouterr()
    assert _get(local_server, auto_task) == before


def test_create_checks_the_same_settings_and_takes_them_all(
    local_server: LocalServer, task_name: str, capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--base-url", local_server.base_url, "--api-key", local_server.api_key]
    argv = ["tasks", "create", task_name, "--evaluator-config", '{"min_examples": 4}',
            "--rubric", "Capitals.", "--task-model", "student", "--github-repo", "acme/p",
            "--prompt-path", "p.txt", "--prompt-format", "text",
            "--feedback-retention-limit", "100", *base]
    assert cli.main(argv) == 0
    capsys.readouterr()
    task = _get(local_server, task_name)
    assert task["evaluator_config"] == {"min_examples": 4, "rubric": "Capitals.",
                                        "task_model": "student"}
    assert (task["github_repo"], task["prompt_path"], task["prompt_format"]) == (
        "acme/p", "p.txt", "text")
    assert task["feedback_retention_limit"] == 100

    bad = httpx.post(f"{local_server.base_url}/api/v1/tasks",
                     headers={"X-API-Key": local_server.api_key}, timeout=10, verify=False,
                     json={"name": task_name + "-bad", "module_type": "react"})
    assert bad.status_code == 422 and "`module_type`" in bad.json()["detail"]
    missing = httpx.get(f"{local_server.base_url}/api/v1/tasks/{task_name}-bad",
                        headers={"X-API-Key": local_server.api_key}, timeout=10, verify=False)
    assert missing.status_code == 404


def test_patch_is_documented_and_allowed(local_server: LocalServer) -> None:
    doc = httpx.get(f"{local_server.base_url}/api/v1/openapi.json", timeout=10,
                    verify=False).json()
    op = doc["paths"]["/api/v1/tasks/{task_id}"]["patch"]
    assert op["operationId"] == "update_task"
    schema = doc["components"]["schemas"]["TaskUpdateRequest"]
    assert set(schema["properties"]) == set(SETTING_VALUES)
    resp = httpx.delete(f"{local_server.base_url}/api/v1/tasks/x",
                        headers={"X-API-Key": local_server.api_key}, timeout=10, verify=False)
    assert resp.status_code == 405 and "PATCH" in resp.headers["Allow"]


def test_update_command_quotes_the_task_name() -> None:
    assert update_command("shout", "judge_model") == (
        "`kaizen tasks update shout --judge-model MODEL`")
    assert update_command("my task", "rubric", "TEXT") == (
        "`kaizen tasks update 'my task' --rubric TEXT`")


def test_a_field_added_to_the_update_body_gets_its_cli_option_and_reaches_the_server(
    local_server: LocalServer, auto_task: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # How a helper adding a setting wires it: the CLI and the clients follow the body's fields.
    from kaizen_sdk import models

    class Wider(TaskUpdateRequest, kw_only=True, omit_defaults=True,
                forbid_unknown_fields=True):
        unattended_rollouts: bool | msgspec.UnsetType = msgspec.UNSET
        daily_budget_usd: (
            Annotated[float, msgspec.Meta(ge=0)] | msgspec.UnsetType | None) = msgspec.UNSET

    monkeypatch.setattr(models, "TaskUpdateRequest", Wider)
    base = ["--base-url", local_server.base_url, "--api-key", local_server.api_key]
    for option, bad, complaint in (("--unattended-rollouts", "maybe", "expected true or false"),
                                   ("--daily-budget-usd", "lots", "not a number")):
        with pytest.raises(SystemExit) as usage:
            cli.main(["tasks", "update", auto_task, option, bad, *base])
        assert usage.value.code == 2
        assert complaint in capsys.readouterr().err

    status = cli.main(["tasks", "update", auto_task, "--unattended-rollouts", "yes",
                       "--daily-budget-usd", "2.5", *base])

    # This server's body does not have them yet: it names the first unknown field it meets.
    assert status == 1
    assert "unknown field `unattended_rollouts`" in capsys.readouterr().err
