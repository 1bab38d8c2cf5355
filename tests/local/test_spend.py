"""Spend is money (issue 22) and budgets by default (issue 29), against real servers.

Each LLM call is reserved and charged in the job row as it happens (restarts keep the books),
a job is run by the worker holding its lease, usage reported below the estimate is charged at
the estimate, threshold jobs wait for new evidence, a cool-down and the day's count, and the
day's budget refuses a job that would not fit.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from llm_standin import LLMStandIn
from optimize_helpers import TERMINAL, feedback, make_task, wait

from kaizen_server import LocalServer
from kaizen_server.domain.budget import BudgetDefaults
from kaizen_server.llm.client import BudgetExceeded, LLMClient
from kaizen_server.llm.pricing import PriceTable

PRICES = {"student-standin": (1.0, 2.0), "teacher-standin": (3.0, 6.0),
          "judge-standin": (0.5, 1.0)}
FREE = BudgetDefaults(job_budget_usd=100.0, daily_budget_usd=1000.0, max_jobs_per_day=100,
                      cooldown_minutes=0.0)
"""Limits that never bind, for tests about something else."""


def _client(srv: LocalServer) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}, timeout=30)


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    with LLMStandIn() as s:
        yield s


# --- charging ------------------------------------------------------------------------------


def test_usage_reported_as_zero_is_charged_at_the_estimate() -> None:
    def zero_usage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "choices": [{"message": {"role": "assistant", "content": "y" * 40}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0}})

    llm = LLMClient("http://llm.test/v1", prices=PriceTable({"m": (1.0, 10.0)}, environ={}),
                    budget_usd=0.001, transport=httpx.MockTransport(zero_usage))
    message = [{"role": "user", "content": "x" * 400}]  # 100 tokens in, 10 out: $0.0002
    for _ in range(5):
        llm.chat("m", message, purpose="task")
    with pytest.raises(BudgetExceeded, match="cost budget"):
        llm.chat("m", message, purpose="task")
    assert len(llm.calls) == 5
    assert [c.cost_usd for c in llm.calls] == [0.0] * 5  # what the endpoint reported
    assert [c.charged_usd for c in llm.calls] == [0.0002] * 5  # what the budget counts
    assert llm.spent_usd == pytest.approx(0.001)


# --- one worker per job --------------------------------------------------------------------


def test_two_servers_on_one_database_run_a_job_once(tmp_path: Path, standin: LLMStandIn) -> None:
    db = tmp_path / "shared.db"
    standin.delay = 0.01
    settings: dict[str, Any] = {"optimizer": "dspy", "llm_base_url": standin.base_url,
                                "llm_prices": PRICES, "budgets": FREE}
    with LocalServer(db_path=db, job_step_delay=0.5, **settings) as a, _client(a) as ca:
        make_task(ca, "once", 16)
        job_id = ca.post("/api/v1/optimize/once").json()["job"]["id"]
        # The job is in A's first step; B starts on the same file and resumes unfinished jobs.
        deadline = time.monotonic() + 30
        while ca.get(f"/api/v1/jobs/{job_id}").json()["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with LocalServer(db_path=db, **settings) as b, _client(b) as cb:
            job = wait(cb, job_id, timeout=120)
    assert job["status"] == "SUCCESS", job["error_message"]
    calls = job["job_metadata"]["llm_calls"]
    assert len(standin.requests) == calls  # no second run made calls of its own
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT COUNT(*) FROM job_calls WHERE job_id = ?",
                           (job_id,)).fetchone()[0]
    raw.close()
    assert rows == calls


# --- kill -9 and restart -------------------------------------------------------------------

_SERVE = """
import json, sys, threading
from kaizen_server import LocalServer
from kaizen_server.domain.budget import BudgetDefaults
srv = LocalServer(db_path=sys.argv[1], optimizer="dspy", llm_base_url=sys.argv[2],
                  llm_prices={k: tuple(v) for k, v in json.loads(sys.argv[3]).items()},
                  budgets=BudgetDefaults(daily_budget_usd=1000, cooldown_minutes=0))
srv.start()
print(srv.base_url, srv.api_key, flush=True)
threading.Event().wait()
"""


def _serve(db: Path, standin: LLMStandIn) -> tuple[subprocess.Popen[str], str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE, str(db), standin.base_url, json.dumps(PRICES)],
        stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert len(line) == 2, "the server subprocess did not start"
    return proc, line[0], line[1]


def _rows(db: Path, job_id: str) -> tuple[int, float, float]:
    with sqlite3.connect(db) as raw:
        n, charged = raw.execute("SELECT COUNT(*), COALESCE(SUM(charged_usd), 0) FROM job_calls"
                                 " WHERE job_id = ?", (job_id,)).fetchone()
        spent = raw.execute("SELECT spent_usd FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    raw.close()
    return int(n), float(charged), float(spent)


def test_kill_9_restarts_cannot_spend_past_the_budget(tmp_path: Path,
                                                      standin: LLMStandIn) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    db = tmp_path / "killed.db"
    # What the budget allows: the calls of one uninterrupted run under it (48 without it).
    budget = 0.003
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_prices=PRICES,
                     budgets=FREE) as srv, _client(srv) as c:
        make_task(c, "reference", 40, cost_budget=budget)
        reference = wait(c, c.post("/api/v1/optimize/reference").json()["job"]["id"])
    allowed = len(standin.requests)
    assert reference["job_metadata"]["llm_calls"] == allowed
    standin.requests.clear()
    standin.delay = 0.02  # 50 calls a second: a kill lands between calls, not after the job
    proc, url, key = _serve(db, standin)
    kills = 0
    try:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as c:
            make_task(c, "killed", 40, cost_budget=budget)
            job_id = c.post("/api/v1/optimize/killed").json()["job"]["id"]
        while kills < 6 and _status(db, job_id) not in TERMINAL:
            seen = len(standin.requests)
            deadline = time.monotonic() + 60
            while len(standin.requests) < seen + 2 and _status(db, job_id) not in TERMINAL:
                assert time.monotonic() < deadline, "the restarted server made no calls"
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert proc.stdout is not None
            proc.stdout.close()
            kills += 1
            rows, _, _ = _rows(db, job_id)
            # A request sent but not settled when the process died: its reservation stays.
            assert 0 <= len(standin.requests) - rows <= kills
            proc, url, key = _serve(db, standin)
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as c:
            job = wait(c, job_id, timeout=120)
    finally:
        proc.kill()
        proc.wait(30)
        assert proc.stdout is not None
        proc.stdout.close()
    rows, charged, spent = _rows(db, job_id)
    meta = job["job_metadata"]
    assert kills >= 2, kills
    assert "budget_reached" in meta, job
    # Every request the stand-in saw is a settled call or a reservation cut off by a kill,
    # and together they stay within what the budget allows one uninterrupted run.
    assert meta["llm_calls"] == rows
    assert rows <= len(standin.requests) <= rows + kills
    assert len(standin.requests) <= allowed
    # The check before each call counts its input; only the answer of the last call can
    # take the spend past the budget.
    assert charged <= spent <= budget + _largest_charge(db, job_id)
    print(f"kill -9 x{kills}: {len(standin.requests)} LLM calls (one run: {allowed}),"
          f" ${spent:.6f} of ${budget}")


def _largest_charge(db: Path, job_id: str) -> float:
    with sqlite3.connect(db) as raw:
        top = raw.execute("SELECT MAX(charged_usd) FROM job_calls WHERE job_id = ?",
                          (job_id,)).fetchone()[0]
    raw.close()
    return float(top or 0.0)


def _status(db: Path, job_id: str) -> str:
    with sqlite3.connect(db) as raw:
        status = raw.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    raw.close()
    return str(status)


# --- budgets by default --------------------------------------------------------------------


def _threshold_jobs(c: httpx.Client, task: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = c.get("/api/v1/jobs", params={"task_id": task}).json()
    for j in jobs:
        if j["status"] not in TERMINAL:
            wait(c, j["id"])
    return jobs


def _send(c: httpx.Client, task: str, start: int, n: int) -> None:
    items = feedback(task, start + n)[start:]
    assert c.post("/api/v1/ingest", json={"feedback": items}).json()["accepted"] == n


def test_threshold_jobs_wait_for_the_cool_down_and_the_days_count() -> None:
    limits = BudgetDefaults(max_jobs_per_day=2, cooldown_minutes=0.0)
    with LocalServer(budgets=limits) as srv, _client(srv) as c:
        c.post("/api/v1/tasks", json={"name": "daily", "feedback_threshold": 5})
        c.post("/api/v1/tasks", json={"name": "cool", "feedback_threshold": 5,
                                      "cooldown_minutes": 60})
        c.post("/api/v1/tasks", json={"name": "none", "feedback_threshold": 5,
                                      "max_jobs_per_day": 0})
        for round_ in range(3):
            for task in ("daily", "cool", "none"):
                _send(c, task, round_ * 5, 5)
                _threshold_jobs(c, task)
        counts = {t: len(_threshold_jobs(c, t)) for t in ("daily", "cool", "none")}
        tasks = {t: c.get(f"/api/v1/tasks/{t}").json() for t in ("daily", "cool", "none")}
    # The server's 2 a day; the task's own 60-minute cool-down; 0 means none.
    assert counts == {"daily": 2, "cool": 1, "none": 0}
    assert tasks["daily"]["threshold_progress"] == "5/5"  # the evidence waits for tomorrow
    assert tasks["daily"]["threshold_waiting"] == (
        "2 of 2 threshold jobs today (max_jobs_per_day)")
    assert tasks["cool"]["threshold_waiting"].startswith("cool-down until ")
    assert tasks["none"]["threshold_waiting"] == "0 of 0 threshold jobs today (max_jobs_per_day)"


def test_a_job_that_does_not_fit_in_the_days_budget_is_refused(standin: LLMStandIn) -> None:
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_prices=PRICES,
                     budgets=BudgetDefaults(daily_budget_usd=0.0)) as srv, _client(srv) as c:
        make_task(c, "broke", 12)
        resp = c.post("/api/v1/optimize/broke")
        assert resp.status_code == 409
        assert "daily_budget_usd" in resp.json()["detail"]
        assert c.get("/api/v1/jobs", params={"task_id": "broke"}).json() == []
        # The task's own daily budget wins over the server's.
        make_task(c, "funded", 12, daily_budget_usd=1.0)
        resp = c.post("/api/v1/optimize/funded")
        assert resp.status_code == 202, resp.text
        job = wait(c, resp.json()["job"]["id"])
    assert job["status"] == "SUCCESS", job["error_message"]
    assert len(standin.requests) == job["job_metadata"]["llm_calls"] > 0


def test_budget_settings_reject_negative_values() -> None:
    with pytest.raises(ValueError, match="KAIZEN_DAILY_BUDGET_USD"):
        BudgetDefaults.resolve(environ={"KAIZEN_DAILY_BUDGET_USD": "-1"})
    assert BudgetDefaults.resolve(environ={"KAIZEN_MAX_JOBS_PER_DAY": "3"}).max_jobs_per_day == 3
    with LocalServer() as srv, _client(srv) as c:
        resp = c.post("/api/v1/tasks", json={"name": "neg", "daily_budget_usd": -1})
        assert resp.status_code == 422 and "daily_budget_usd" in resp.text
        assert c.get("/api/v1/tasks/neg").status_code == 404


def test_a_budget_reached_while_judging_keeps_the_pairs_judged_so_far(
    standin: LLMStandIn,
) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    # Uninterrupted, this job makes 48 calls for $0.00378 (8 to build, 40 to judge 10 inputs).
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_prices=PRICES,
                     budgets=FREE) as srv, _client(srv) as c:
        make_task(c, "partial", 40, cost_budget=0.003)
        job = wait(c, c.post("/api/v1/optimize/partial").json()["job"]["id"])
        version = c.get("/api/v1/prompts/partial/versions").json()
    meta = job["job_metadata"]
    assert job["status"] == "SUCCESS", job["error_message"]
    assert "the job reached its cost budget" in meta["budget_reached"]
    assert 2 <= meta["sample_size"] < 10
    assert meta["spent_usd"] <= 0.003
    assert meta["llm_calls"] == len(standin.requests)
    # 8 calls to build, 4 per judged pair, then at most 3 of the pair the budget cut short.
    assert 0 <= len(standin.requests) - 8 - 4 * meta["sample_size"] < 4
    assert [v["eval_sample_size"] for v in version] == [meta["sample_size"]]
