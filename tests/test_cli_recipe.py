"""``kaizen prompts`` with chat versions, settings and labels, against the local server."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import msgspec
import pytest

from kaizen_sdk.cli import main
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

MESSAGES = [
    {"role": "system", "content": "You triage tickets."},
    {"role": "user", "content": "{{ ticket }}"},
]


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return msgspec.json.decode(self.out)


@pytest.fixture
def kaizen(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)

    def run(*argv: str) -> Run:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture
def task(local_server: LocalServer) -> str:
    name = f"cli_recipe_{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        admin.create_task(name, messages=MESSAGES,
                          config={"model": "big-model", "temperature": 0.2})
    return name


def test_show_renders_messages_and_settings(kaizen: Any, task: str) -> None:
    run = kaizen("prompts", "get", task)
    assert run.code == 0, run.err
    assert run.out.endswith(
        "\n\n[system]\nYou triage tickets.\n\n[user]\n{{ ticket }}\n\n"
        "[settings]\nmodel: \"big-model\"\ntemperature: 0.2\n"
    )
    assert "labels" in run.out and "production" in run.out


def test_model_only_version_from_another_label_and_diff(kaizen: Any, task: str) -> None:
    run = kaizen("prompts", "create", task, "--from", "1", "--model", "small-model", "--json")
    assert run.code == 0, run.err
    made = run.json()
    assert (made["version_number"], made["messages"]) == (2, MESSAGES)
    assert made["config"] == {"model": "small-model", "temperature": 0.2}

    run = kaizen("prompts", "diff", task, "1", "2")
    assert run.code == 0, run.err
    changed = [ln for ln in run.out.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert changed == ['-model: "big-model"', '+model: "small-model"']

    run = kaizen("prompts", "label", task, "staging", "v2")
    assert run.code == 0, run.err
    run = kaizen("prompts", "get", task, "--label", "staging", "--json")
    assert (run.json()["version_number"], run.json()["labels"]) == (2, ["staging"])
    run = kaizen("prompts", "get", task, "--json")
    assert run.json()["version_number"] == 1
    run = kaizen("prompts", "unlabel", task, "staging")
    assert run.code == 0, run.err
    run = kaizen("prompts", "get", task, "--label", "staging")
    assert run.code != 0
    assert "staging" in run.err


def test_bad_label_is_a_usage_error(kaizen: Any, task: str) -> None:
    run = kaizen("prompts", "label", task, "production", "1")
    assert run.code != 0
    assert "production" in run.err
    assert "Traceback" not in run.err


def test_rollout_status_shows_cost_per_call_when_the_server_prices_calls() -> None:
    from kaizen_sdk.cli import _rollout_detail
    from kaizen_sdk.models import Rollout, RolloutArm

    priced = Rollout(id=uuid.uuid4(), ramp=[0.5], share=0.5,
                     active=RolloutArm(cost_per_call_usd=0.0000437),
                     candidate=RolloutArm(cost_per_call_usd=0.0000026))
    assert "cost/call usd   0.000044 vs 0.000003" in _rollout_detail(priced).splitlines()
    unpriced = Rollout(id=uuid.uuid4(), ramp=[0.5], share=0.5)
    assert "cost/call" not in _rollout_detail(unpriced)
