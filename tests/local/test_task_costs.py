"""What a task's calls cost, per task and per version: ``GET /api/v1/tasks/{task_id}/costs``,
``CTClient.get_task_costs`` and ``kaizen tasks costs``, over real HTTP to a `LocalServer` that
prices one model (``priced``: $1 / $2 per million input / output tokens)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaizen_sdk.cli import main
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import CTValidationError
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e

PRICES = {"priced": (1.0, 2.0)}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(llm_prices=PRICES) as running:
        yield running


@pytest.fixture
def client(server: LocalServer) -> Iterator[CTClient]:
    with CTClient(base_url=server.base_url, api_key=server.api_key) as ct_client:
        yield ct_client


def seed(base_url: str, api_key: str, task: str) -> dict[str, str]:
    """A task with v1 (active) and v2 and these traces:

    - v1: 3 calls at $0.002 (1000 in, 500 out) and 1 call of an unpriced model;
    - v2: a decorated call at $0.002 whose 2 LLM calls ($0.001 each) are part of it, and an
      unpriced decorated call whose LLM call ($0.001, no version) therefore counts alone.

    Totals: 7 calls, 5 priced, $0.009. Returns the version ids by name.
    """
    with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=10) as api:
        assert api.post("/api/v1/tasks", json={"name": task, "prompt_text": "v1 {q}",
                                               "feedback_threshold": 100_000}).status_code == 201
        v1 = api.get(f"/api/v1/prompts/{task}").json()["id"]
        v2 = api.post(f"/api/v1/prompts/{task}/versions",
                      json={"prompt_text": "v2 {q}"}).json()["id"]
        parent, unpriced_parent = str(uuid.uuid4()), str(uuid.uuid4())

        def trace(model: str, tokens: tuple[int, int], **extra: Any) -> dict[str, Any]:
            return {"id": extra.pop("id", str(uuid.uuid4())), "task_id": task, "model": model,
                    "tokens": sum(tokens), "input_tokens": tokens[0],
                    "output_tokens": tokens[1], "prompt_text": "p", "response_text": "r",
                    **extra}

        traces = [trace("priced", (1000, 500), prompt_version_id=v1) for _ in range(3)]
        traces += [trace("mystery", (1000, 500), prompt_version_id=v1),
                   trace("priced", (2000, 0), prompt_version_id=v2, id=parent),
                   trace("priced", (1000, 0), parent_trace_id=parent),
                   trace("priced", (1000, 0), parent_trace_id=parent),
                   trace("mystery", (10, 10), prompt_version_id=v2, id=unpriced_parent),
                   trace("priced", (1000, 0), parent_trace_id=unpriced_parent)]
        resp = api.post("/api/v1/ingest", json={"traces": traces})
        assert resp.status_code == 207 and resp.json()["accepted"] == len(traces), resp.text
    return {"v1": v1, "v2": v2}


def test_costs_per_task_and_version_count_each_call_once(
    server: LocalServer, client: CTClient
) -> None:
    task = f"costs-{uuid.uuid4().hex[:8]}"
    ids = seed(server.base_url, server.api_key, task)
    costs = client.get_task_costs(task, days=1)
    assert (costs.days, costs.calls, costs.priced_calls) == (1.0, 7, 5)
    assert costs.cost_usd == pytest.approx(0.009, rel=1e-12)
    assert costs.cost_per_call_usd == pytest.approx(0.0018, rel=1e-12)
    assert (costs.scanned, costs.complete) == (9, True)
    by_version = {v.version_number: v for v in costs.versions}
    assert [v.version_number for v in costs.versions] == [2, 1, None]  # newest first
    v2, v1, none = by_version[2], by_version[1], by_version[None]
    assert (str(v1.version_id), v1.calls, v1.priced_calls) == (ids["v1"], 4, 3)
    assert v1.cost_usd == pytest.approx(0.006) and v1.cost_per_call_usd == pytest.approx(0.002)
    assert (str(v2.version_id), v2.calls, v2.priced_calls) == (ids["v2"], 2, 1)
    assert v2.cost_usd == pytest.approx(0.002) and v2.cost_per_call_usd == pytest.approx(0.002)
    assert (none.version_id, none.calls, none.priced_calls) == (None, 1, 1)
    assert none.cost_usd == pytest.approx(0.001)
    empty = client.get_task_costs(client.create_task(f"{task}-empty").name)
    assert (empty.calls, empty.cost_usd, empty.cost_per_call_usd, empty.versions) == (
        0, 0.0, None, [])


def test_a_bad_window_or_task_is_a_clear_error(server: LocalServer, client: CTClient) -> None:
    task = f"costs-bad-{uuid.uuid4().hex[:8]}"
    client.create_task(task)
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key}) as api:
        for days in ("0", "-1", "x", "367", "nan"):
            resp = api.get(f"/api/v1/tasks/{task}/costs", params={"days": days})
            assert resp.status_code == 422 and "`days`" in resp.json()["detail"], (days, resp.text)
        assert api.get("/api/v1/tasks/no-such-task/costs").status_code == 404
    with pytest.raises(CTValidationError, match="days"):
        client.get_task_costs(task, days=0)


def test_kaizen_tasks_costs_prints_totals_and_a_row_per_version(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    task = f"costs-cli-{uuid.uuid4().hex[:8]}"
    seed(server.base_url, server.api_key, task)
    args = ["--base-url", server.base_url, "--api-key", server.api_key]
    assert main(["tasks", "costs", task, *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{task}: $0.009000 over the last 7 days, 7 calls (5 priced), $0.001800 per call",
        "2 calls have no cost: their model is not priced or they carry no tokens"
        " (see `kaizen status`)",
        "version  calls  priced      total   per call",
        "v2           2       1  $0.002000  $0.002000",
        "v1           4       3  $0.006000  $0.002000",
        "-            1       1  $0.001000  $0.001000",
    ]
    assert main(["tasks", "costs", task, "--days", "2", "--json", *args]) == 0
    assert '"cost_per_call_usd": 0.0018' in capsys.readouterr().out


def test_a_cost_guard_from_the_cli_and_the_status_that_shows_it(
    server: LocalServer, client: CTClient, capsys: pytest.CaptureFixture[str]
) -> None:
    task = f"costs-guard-{uuid.uuid4().hex[:8]}"
    seed(server.base_url, server.api_key, task)
    args = ["--base-url", server.base_url, "--api-key", server.api_key]
    assert main(["rollout", "start", task, "v2", "--share", "0.5", "--max-cost-ratio", "0.5",
                 *args]) == 0
    capsys.readouterr()
    rollout = client.get_rollout(task)
    assert (rollout.guards.max_cost_ratio, rollout.guards.cost_ratio) == (0.5, None)
    assert main(["rollout", "status", task, *args]) == 0
    out = capsys.readouterr().out
    # no call since the rollout started: no cost yet on either arm, so no cost line
    assert "cost/call" not in out
    client.stop_rollout(task, "rollback")
    v3 = client.create_prompt_version(task, "v3 {q}")
    with pytest.raises(CTValidationError, match="max_cost_ratio"):
        client.start_rollout(task, str(v3.id), max_cost_ratio=0)
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key}) as api:
        for bad in (0, -1, 1001, "x"):
            resp = api.post(f"/api/v1/rollouts/{task}",
                            json={"candidate_version_id": str(v3.id), "max_cost_ratio": bad})
            assert resp.status_code == 422 and "max_cost_ratio" in resp.text, (bad, resp.text)
    assert client.get_rollout(task).state == "rolled_back"  # nothing half-started


def test_rollout_status_shows_the_cost_ratio_and_the_guard() -> None:
    from kaizen_sdk.cli import _rollout_detail
    from kaizen_sdk.models import Rollout, RolloutArm, RolloutGuards

    guarded = Rollout(id=uuid.uuid4(), ramp=[0.5], share=0.5,
                      active=RolloutArm(cost_per_call_usd=0.0003),
                      candidate=RolloutArm(cost_per_call_usd=0.000018),
                      guards=RolloutGuards(cost_ratio=0.06, max_cost_ratio=0.5))
    assert ("cost/call usd   0.000300 vs 0.000018 (x0.06) (guard x0.5)"
            in _rollout_detail(guarded).splitlines())


def test_a_rollout_request_names_max_cost_ratio_only_when_given() -> None:
    from kaizen_sdk._http import BaseClient
    from kaizen_sdk.models import encode

    plain = BaseClient._rollout_body(str(uuid.uuid4()), {"share": 0.5, "max_cost_ratio": None})
    assert b"max_cost_ratio" not in encode(plain)  # servers before the guard refuse the field
    guarded = BaseClient._rollout_body(str(uuid.uuid4()), {"max_cost_ratio": 0.5})
    assert b'"max_cost_ratio":0.5' in encode(guarded)


async def test_the_async_client_reads_task_costs(server: LocalServer) -> None:
    from kaizen_sdk.async_client import AsyncCTClient

    task = f"costs-async-{uuid.uuid4().hex[:8]}"
    seed(server.base_url, server.api_key, task)
    async with AsyncCTClient(base_url=server.base_url, api_key=server.api_key) as client:
        costs = await client.get_task_costs(task)
    assert (costs.calls, costs.priced_calls) == (7, 5)
    assert costs.cost_usd == pytest.approx(0.009, rel=1e-12)
