"""DSPy optimization jobs end to end: LocalServer(optimizer="dspy") against loopback stand-ins.

The LLM stand-in (`llm_standin.LLMStandIn`) answers the toy *shout* task; its student model is
right on every input only when the prompt shows demonstrations, so a bootstrapped candidate
scores measurably better than the active prompt on the held-out split.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

# DSPy opens its disk cache at import: keep it out of the home directory.
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# found, not imported: importing it costs every worker that collects this file 0.7 s
if importlib.util.find_spec("dspy") is None:
    pytest.skip("the optimize extra (DSPy) is not installed", allow_module_level=True)

from llm_standin import GitHubStandIn, LLMStandIn
from optimize_helpers import make_task, run, wait

from kaizen_sdk import cli
from kaizen_server import LocalServer
from kaizen_server.storage.sqlite import Store

KEY = "sk-standin-secret-4242"
PRICES = {"student-standin": (1.0, 2.0), "teacher-standin": (3.0, 6.0),
          "judge-standin": (0.5, 1.0)}


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    with LLMStandIn() as s:
        yield s


@pytest.fixture
def server(standin: LLMStandIn) -> Iterator[LocalServer]:
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_api_key=KEY,
                     llm_prices=PRICES) as srv:
        yield srv


@pytest.fixture
def client(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                      timeout=10) as c:
        yield c


def test_dspy_job_on_60_examples_beats_active_and_opens_a_pull_request(
    client: httpx.Client, standin: LLMStandIn, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    steps: list[str] = []
    record = Store.set_job_step

    def recording(self: Store, job_id: str, step: str) -> None:
        steps.append(step)
        record(self, job_id, step)

    monkeypatch.setattr(Store, "set_job_step", recording)
    with GitHubStandIn(path="prompts/shout.txt") as gh:
        monkeypatch.setenv("KAIZEN_GITHUB_TOKEN", "ghp-standin-token")
        monkeypatch.setenv("KAIZEN_GITHUB_API_URL", gh.api_url)
        make_task(client, "shout", 60, github_repo=gh.repo, prompt_path="prompts/shout.txt",
                  github_base_branch="main")
        started, job = run(client, "shout")

    assert job["status"] == "SUCCESS", job["error_message"]
    estimate = started["cost_estimate"]
    assert (estimate["train_size"], estimate["val_size"]) == (45, 15)
    assert estimate["teacher_model"] == "teacher-standin"
    assert estimate["judge_model"] == "judge-standin"
    assert estimate["estimated_cost_usd"] > 0
    assert started["budget_warning"] is None
    meta = job["job_metadata"]
    # Judged on the held-out split: the candidate beats the active prompt, interval above 0.
    assert meta["sample_size"] == 15
    assert meta["candidate_judged_mean"] > meta["active_judged_mean"]
    low, high = meta["paired_diff_ci95"]
    assert 0 < low <= meta["paired_diff"] <= high
    assert meta["beats_active"] is True
    # The stand-in saw the task's teacher and judge (and the task model); calls add up.
    models = standin.models()
    assert {"teacher-standin", "judge-standin", "student-standin"} == set(models)
    # Per-call records are a paged endpoint, not part of the job object.
    assert "calls" not in meta
    calls = client.get(f"/api/v1/jobs/{job['id']}/calls", params={"limit": 1000}).json()
    assert meta["llm_calls"] == len(models) == len(calls)
    assert abs(meta["llm_calls"] - estimate["estimated_llm_calls"]) <= (
        0.25 * estimate["estimated_llm_calls"])
    assert meta["input_tokens"] == sum(c["input_tokens"] for c in calls) > 0
    assert meta["llm_retries"] == 0
    assert all(auth == f"Bearer {KEY}" for _, _, auth in standin.requests)
    # Progress followed the stages with counts.
    assert "optimizing (bootstrap)" in steps
    boots = [s for s in steps if s.startswith("bootstrapping ")]
    labeled = sum(1 for c in calls if c["purpose"] == "teacher")
    assert labeled == 4  # the teacher is always right: four tries give four demonstrations
    assert [b.split()[1].split("/")[0] for b in boots] == ["1", "2", "3", "4"]
    assert [s for s in steps if s.startswith("evaluating candidate")][-1] == (
        "evaluating candidate 15/15")
    # The candidate version carries the demonstrations and the judged mean.
    versions = client.get("/api/v1/prompts/shout/versions").json()
    assert len(versions) == 1
    cand = versions[0]
    assert cand["id"] == job["prompt_version_id"] and cand["status"] == "candidate"
    assert cand["optimizer"] == "dspy-bootstrap" and cand["dspy_version"]
    assert cand["eval_score"] == meta["candidate_judged_mean"]
    assert "### Examples" in cand["prompt_text"]
    # One pull request with the new file content and the report in its body.
    assert len(gh.pulls) == 1
    pull = gh.pulls[0]
    assert job["pr_url"] == pull["html_url"]
    assert pull["base"] == "main" and pull["head"].startswith("kaizen/shout-")
    assert gh.files[(pull["head"], "prompts/shout.txt")] == cand["prompt_text"] + "\n"
    assert "candidate judged mean" in pull["body"]
    # The LLM key is in no record, step or log line.
    assert KEY not in repr(job) and KEY not in caplog.text


def test_budget_smaller_than_estimate_stops_the_job(
    client: httpx.Client, standin: LLMStandIn
) -> None:
    # The estimate of the same feedback without a budget, then a budget of a third of it.
    make_task(client, "free", 20)
    free = client.post("/api/v1/optimize/free").json()
    wait(client, free["job"]["id"])
    budget = free["cost_estimate"]["estimated_cost_usd"] / 3
    calls_before = len(standin.requests)

    make_task(client, "tight", 20, cost_budget=budget)
    started, job = run(client, "tight")

    assert started["budget_warning"] is not None and "cost_budget" in started["budget_warning"]
    assert job["status"] == "FAILURE"
    assert "cost budget" in job["error_message"] and "cost_budget" in job["error_message"]
    assert job["prompt_version_id"] is None
    assert client.get("/api/v1/prompts/tight/versions").json() == []
    meta = job["job_metadata"]
    # The call that would have passed the budget was never made.
    assert meta["spent_usd"] <= budget
    assert meta["budget_reached"] == job["error_message"]
    assert meta["llm_calls"] == len(standin.requests) - calls_before
    assert meta["llm_calls"] < started["cost_estimate"]["estimated_llm_calls"]


def test_429_is_retried_and_counted(client: httpx.Client, standin: LLMStandIn) -> None:
    make_task(client, "retry", 12)
    standin.fail_next(429, 1)
    _, job = run(client, "retry")
    assert job["status"] == "SUCCESS", job["error_message"]
    assert job["job_metadata"]["llm_retries"] == 1
    assert job["job_metadata"]["llm_calls"] == len(standin.requests) - 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("503", "answered HTTP 503 Service Unavailable for model"),
        ("malformed", "malformed answer from the LLM endpoint"),
        ("judge", "returned no score"),
        ("few", "needs at least 10"),
        ("no-teacher", "has no teacher_model"),
    ],
)
def test_faults_fail_the_job_naming_the_cause(
    client: httpx.Client, standin: LLMStandIn, fault: str, expected: str
) -> None:
    name = f"fault-{fault}"
    extra: dict[str, Any] = {}
    if fault == "no-teacher":
        extra["teacher_model"] = None
    make_task(client, name, 5 if fault == "few" else 12, **extra)
    if fault == "503":
        standin.fail_next(503, 3)
    standin.malformed = fault == "malformed"
    standin.judge_no_number = fault == "judge"

    _, job = run(client, name)

    assert job["status"] == "FAILURE"
    assert expected in job["error_message"], job["error_message"]
    assert client.get(f"/api/v1/prompts/{name}/versions").json() == []
    if fault == "503":
        assert "KAIZEN_LLM_BASE_URL" in job["error_message"]
        assert job["job_metadata"]["llm_retries"] == 2
    assert client.get("/api/v1/health").status_code == 200


def test_unreachable_endpoint_and_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalServer(optimizer="dspy", llm_base_url="http://127.0.0.1:9/v1") as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
        make_task(c, "down", 12)
        _, job = run(c, "down")
        assert job["status"] == "FAILURE"
        assert "is unreachable" in job["error_message"]
        assert "KAIZEN_LLM_BASE_URL" in job["error_message"]

        monkeypatch.setitem(sys.modules, "dspy", None)  # import dspy now fails
        make_task(c, "no-extra", 12)
        _, job = run(c, "no-extra")
        assert job["status"] == "FAILURE"
        assert "kaizen-sdk[optimize]" in job["error_message"]
        assert c.get("/api/v1/health").status_code == 200


def test_cli_eval_compares_versions_and_fails_under_the_bar(
    client: httpx.Client, server: LocalServer, standin: LLMStandIn,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_task(client, "cli-eval", 16)
    _, first = run(client, "cli-eval")
    assert first["status"] == "SUCCESS", first["error_message"]
    resp = client.post("/api/v1/prompts/cli-eval/activate",
                       json={"version_id": first["prompt_version_id"]})
    assert resp.status_code == 200
    base = ["--base-url", server.base_url, "--api-key", server.api_key,
            "--llm-base-url", standin.base_url]
    calls = len(standin.requests)

    status = cli.main(["eval", "cli-eval", "v1", "--against", "active", "--fail-under", "0.9",
                       "--json", *base])

    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])  # DSPy prints a line of its own from the job
    assert status == 0
    assert report["version"] == report["against"] == 1
    assert report["sample_size"] == 4 and report["candidate_judged_mean"] == 1.0
    assert report["paired_diff"] == 0.0
    assert report["llm_calls"] == len(standin.requests) - calls == 16

    standin.broken_student = True
    status = cli.main(["eval", "cli-eval", "1", "--fail-under", "0.5", *base])
    captured = capsys.readouterr()
    assert status == 1
    assert "v1 judged mean 0.0000 is under --fail-under 0.5" in captured.err
    assert cli.main(["eval", "cli-eval", "v9", *base]) == 4
    assert cli.main(["eval", "cli-eval", "v1", "--fail-under", "2", *base]) == 2


def test_strategy_job_option_overrides_the_task(client: httpx.Client) -> None:
    make_task(client, "option", 15)
    bad = client.post("/api/v1/optimize/option?strategy=sgd")
    assert bad.status_code == 422 and "`strategy`" in bad.json()["detail"]
    assert client.get("/api/v1/jobs?task_id=option").json() == []

    resp = client.post("/api/v1/optimize/option?strategy=gepa")
    assert resp.status_code == 202
    job = wait(client, resp.json()["job"]["id"])

    assert job["status"] == "SUCCESS", job["error_message"]
    assert job["job_metadata"]["strategy"] == "gepa"
    assert job["job_metadata"]["options"] == {"strategy": "gepa"}
    versions = client.get("/api/v1/prompts/option/versions").json()
    assert versions[0]["optimizer"] == "dspy-gepa"
