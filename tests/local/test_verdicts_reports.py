"""Honest verdicts and readable reports (issue 29), against real servers and the LLM stand-in.

A job ends with a verdict from the paired interval; only a ``better`` candidate is offered
(the CLI's next step, a pull request, an automatic rollout); a ``worse`` one is stored
``rejected`` with what it was compared against. ``kaizen jobs get`` prints a short report
whatever the job's size; per-call records are a paged endpoint behind ``--calls``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# found, not imported: importing it costs every worker that collects this file 0.7 s
if importlib.util.find_spec("dspy") is None:
    pytest.skip("the optimize extra (DSPy) is not installed", allow_module_level=True)

from llm_standin import LLMStandIn
from optimize_helpers import run
from replay_stream import ACTIVE, PRICES, replay

from kaizen_sdk.cli import main
from kaizen_sdk.models import TaskCreateRequest
from kaizen_server import LocalServer
from kaizen_server.domain.budget import BudgetDefaults
from kaizen_server.evaluate import judge
from kaizen_server.evaluate.heldout import held_out_sample, sample_size
from kaizen_server.llm.client import CallRecord
from kaizen_server.optimize.fewshot import Example
from kaizen_server.storage.sqlite import Store


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    with LLMStandIn() as s:
        yield s


def _client(srv: LocalServer) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}, timeout=30)


def _use(srv: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", srv.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", srv.base_url)
    monkeypatch.setenv("COLUMNS", "80")


def test_the_15_minute_stream_stays_within_the_days_budget_and_job_limit(
    standin: LLMStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # Every candidate is worse than the active prompt (demonstrations hurt the stand-in's
    # student); the task asks for automatic rollouts. 18,000 scored calls in 20 s.
    standin.demos_hurt = True
    daily = 0.006
    fields = {"daily_budget_usd": daily, "max_jobs_per_day": 3, "cooldown_minutes": 0.01}
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_prices=PRICES,
                     budgets=BudgetDefaults()) as srv, _client(srv) as c:
        out = replay(c, seconds=20.0, task_fields=fields)
        _use(srv, monkeypatch)
        capsys.readouterr()
        for job in out["job_list"]:
            assert main(["jobs", "get", job["id"]]) == 0
        printed = capsys.readouterr().out
    jobs = out["job_list"]
    assert 1 <= len(jobs) <= 3
    assert all(j["triggered_by"] == "threshold" for j in jobs)
    # Every call was charged to a job; all of them fit in the day's budget.
    assert len(standin.requests) == out["llm_calls"]
    assert out["spent_usd"] <= daily
    # No worse candidate is offered, rolled out, or ranked above the active version.
    judged = [j for j in jobs if j["status"] == "SUCCESS"]
    assert judged and all(j["job_metadata"]["verdict"] == "worse" for j in judged)
    assert out["rollout"] is False
    versions = out["version_list"]
    active = next(v for v in versions if v["status"] == "active")
    assert active["prompt_text"] == ACTIVE
    others = [v for v in versions if v["status"] != "active"]
    assert others and all(v["status"] == "rejected" for v in others)
    for v in others:
        assert v["verdict"] == "worse" and v["baseline_version"] == active["version_number"]
        assert v["eval_score"] < v["baseline_score"]
        assert v["eval_sample_size"] <= sample_size(10**6)
    assert "prompts activate" not in printed and "rollout start" not in printed
    assert "stored as rejected" in " ".join(printed.split())


def test_a_better_candidate_is_offered_with_its_comparison(
    standin: LLMStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from optimize_helpers import make_task

    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_prices=PRICES,
                     budgets=BudgetDefaults()) as srv, _client(srv) as c:
        make_task(c, "shout", 40, prompt_text="Repeat the text.\nText: {{ text }}")
        _, job = run(c, "shout")
        _use(srv, monkeypatch)
        capsys.readouterr()
        assert main(["jobs", "get", job["id"]]) == 0
        out = capsys.readouterr().out
        version = c.get("/api/v1/prompts/shout/versions").json()[0]
        monkeypatch.setenv("COLUMNS", "200")
        assert main(["prompts", "versions", "shout"]) == 0
        table = capsys.readouterr().out
    meta = job["job_metadata"]
    assert meta["verdict"] == "better" and meta["baseline_version"] == 1
    assert (version["status"], version["verdict"], version["baseline_version"]) == (
        "candidate", "better", 1)
    assert version["baseline_score"] == meta["active_judged_mean"]
    assert version["eval_sample_size"] == meta["sample_size"] == 10
    assert "verdict   better" in out
    # The score is shown with its baseline and sample, not as a rank across versions.
    assert f"{meta['candidate_judged_mean']:.3f} vs v1 {meta['active_judged_mean']:.3f}" \
        f" (n=10, better)" in table
    assert " ".join(out.splitlines()).endswith("`kaizen rollout start shout 2`")


def _per_example(figures: dict[str, Any]) -> dict[str, Any]:
    """The per-example part of a judged comparison's figures, its largest (the job stores it)."""
    return {k: figures[k] for k in ("wins", "losses", "ties", "examples")}


def test_jobs_get_on_a_job_of_3000_calls_is_a_short_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "big.db"
    store = Store(str(db))
    try:
        task = store.create_task(TaskCreateRequest(name="big"))
        job, _ = store.start_job("big")
        job_id = str(job.id)
        assert store.claim_job(job_id, "test-owner")
        for i in range(3000):
            model = ("student-standin", "judge-standin", "teacher-standin")[i % 3]
            store.settle_call(job_id, "test-owner", CallRecord(
                model, "evaluate", 420 + i % 7, 12, 0.0001, 0, True, 0.0001), 0.0)
        meta = {"optimizer": "dspy", "strategy": "bootstrap", "verdict": "not_better",
                "sample_size": 189, "candidate_judged_mean": 0.71, "active_judged_mean": 0.7,
                "paired_diff": 0.01, "paired_diff_ci95": [-0.02, 0.04],
                "estimated_cost_usd": 0.35, "cost_budget": 1.0, "baseline_version": 1,
                "flags": ["instructions in a demonstration: 'ignore all previous instructions'"],
                **store.job_books(job_id), "llm_retries": 3,
                **_per_example(judge.Comparison(
                    n=20, candidate_mean=0.71, active_mean=0.7, diff=0.01, ci_low=-0.02,
                    ci_high=0.04, candidate_scores=(0.9, 0.1) * 10, active_scores=(0.1, 0.9) * 10,
                    inputs=tuple(json.dumps({"text": f"long input {i} " * 40})
                                 for i in range(20))).as_dict())}
        store.finish_job_success(job_id, "Base prompt\n### Examples\n...", eval_score=0.71,
                                 optimizer="dspy-bootstrap", metadata=meta)
        assert task.id is not None
    finally:
        store.close()
    with LocalServer(db_path=db) as srv, _client(srv) as c:
        _use(srv, monkeypatch)
        capsys.readouterr()
        assert main(["jobs", "get", job_id]) == 0
        out = capsys.readouterr().out
        body = c.get(f"/api/v1/jobs/{job_id}").text
        assert main(["--json", "jobs", "get", job_id, "--calls"]) == 0
        calls = capsys.readouterr().out
        first = c.get(f"/api/v1/jobs/{job_id}/calls", params={"limit": 1000})
    lines = out.splitlines()
    assert len(lines) <= 30 and max(len(line) for line in lines) <= 80, out
    assert "verdict   not_better" in out
    assert "3,000 LLM calls" in out and "spent $0.3000 of estimated $0.3500" in out
    assert "[-0.020, +0.040]" in out and "on the same 189 held-out examples" in out
    assert " ".join(lines).endswith("Nothing to do: the next job runs on new feedback.")
    assert len(body) < 4000  # the job object carries totals, not 3,000 records
    assert body.count('"candidate_score"') == 2 * judge.EXAMPLES_PER_SIDE
    assert calls.count('"purpose"') == 3000
    assert len(first.json()) == 1000 and 'rel="next"' in first.headers["link"]


def test_the_held_out_sample_is_bounded_stratified_and_reproducible() -> None:
    examples = [Example(id=f"e{i}", inputs={"text": str(i)}, output="o",
                        score=(0.1 if i % 4 == 0 else 0.9)) for i in range(4000)]
    n = sample_size(len(examples))
    first = held_out_sample(examples, n, "job-1")
    assert n == 189 and len(first) == 189
    assert held_out_sample(examples, n, "job-1") == first
    assert held_out_sample(examples, n, "job-2") != first
    low = sum(1 for e in first if e.score < 0.5)
    assert low == round(189 / 4)  # the score bands keep their shares
    assert sample_size(4000, {"eval_sample_size": 50}) == 50
    with pytest.raises(ValueError, match="eval_sample_size"):
        sample_size(10, {"eval_sample_size": 1})
