"""Guarded rollouts against the real local server: sticky split, decisions, guards, bad input.

Every test makes its own task with an active version (v1, from the first trace) and a
candidate (v2, from a real optimization job), then drives the rollout over real HTTP: traces
carry the version served and the arm (as the decorator will send them), scores arrive as
scored feedback naming the version, or through ``POST /traces/{id}/score``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk import CTClient, CTNotFoundError, CTValidationError
from kaizen_sdk._rollout import choose_arm
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

JobWaiter = Callable[[httpx.Client, str], dict[str, Any]]


def make_task(
    client: httpx.Client, wait_job: JobWaiter, name: str, **task_fields: Any
) -> tuple[str, str]:
    """Create *name* with an active v1 and a candidate v2; return their version ids."""
    # a high threshold: the scores the tests send must not start more optimization jobs
    fields = {"feedback_threshold": 100_000, **task_fields}
    resp = client.post("/api/v1/tasks", json={"name": name, **fields})
    assert resp.status_code == 201, resp.text
    resp = client.post("/api/v1/traces", json={"task_id": name, "prompt_text": "v1 {{ x }}",
                                               "prompt_is_default": True})  # v1
    assert resp.status_code == 201, resp.text
    active = resp.json()["prompt_version_id"]
    for i, score in enumerate((0.9, 0.8, 0.3)):
        resp = client.post("/api/v1/feedback", json={
            "task_id": name, "inputs": {"x": str(i)}, "output": f"out {i}", "score": score})
        assert resp.status_code == 201, resp.text
    job = client.post(f"/api/v1/optimize/{name}").json()["job"]
    done = wait_job(client, job["id"])
    assert done["status"] == "SUCCESS", done
    return active, done["prompt_version_id"]


def start(client: httpx.Client, name: str, candidate: str, **options: Any) -> dict[str, Any]:
    resp = client.post(f"/api/v1/rollouts/{name}",
                       json={"candidate_version_id": candidate, **options})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


def send_scores(
    client: httpx.Client, name: str, version: str, arm: str, scores: list[float]
) -> None:
    """Scored feedback naming the version served, in one ingest batch."""
    feedback = [{"task_id": name, "score": s, "prompt_version_id": version, "arm": arm,
                 "output": "o"} for s in scores]
    resp = client.post("/api/v1/ingest", json={"feedback": feedback})
    assert resp.status_code == 207 and resp.json()["errors"] == [], resp.text


def send_calls(
    client: httpx.Client, name: str, version: str, arm: str, *, n: int, latency_ms: float,
    errors: int = 0,
) -> None:
    """Traces of calls served by *version* (no score): the guard metrics' input."""
    traces = [{"task_id": name, "prompt_version_id": version, "arm": arm,
               "latency_ms": latency_ms, "error": i < errors} for i in range(n)]
    resp = client.post("/api/v1/ingest", json={"traces": traces})
    assert resp.status_code == 207 and resp.json()["errors"] == [], resp.text


def rollout(client: httpx.Client, name: str) -> dict[str, Any]:
    resp = client.get(f"/api/v1/rollouts/{name}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def statuses(client: httpx.Client, name: str) -> dict[str, str]:
    versions = client.get(f"/api/v1/prompts/{name}/versions").json()
    return {v["id"]: v["status"] for v in versions}


def high(n: int) -> list[float]:
    return [0.85 + 0.05 * (i % 3) for i in range(n)]


def low(n: int) -> list[float]:
    return [0.25 + 0.05 * (i % 3) for i in range(n)]


def mid(n: int) -> list[float]:
    return [0.4 + 0.2 * (i % 2) for i in range(n)]


# --- sticky assignment ---------------------------------------------------------------------


def test_share_splits_keys_stickily_in_this_and_another_process(
    local_server: LocalServer, client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    started = start(client, task_name, candidate, share=0.3)
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as ct:
        prompt = ct.get_prompt(task_name)
    assert prompt.rollout is not None
    assert str(prompt.rollout.id) == started["id"]
    assert prompt.rollout.share == 0.3
    assert str(prompt.rollout.candidate.id) == candidate
    keys = [f"user-{i}" for i in range(2000)]
    arms = [choose_arm(prompt, key) for key in keys]
    served = [str(p.id) for p, _ in arms]
    share = sum(arm == "candidate" for _, arm in arms) / len(keys)
    assert 0.27 <= share <= 0.33, share
    pairs = zip(arms, served, strict=True)
    assert all((arm == "candidate") == (v == candidate) for (_, arm), v in pairs)
    assert {v for v in served} == {active, candidate}
    assert [choose_arm(prompt, key)[1] for key in keys] == [arm for _, arm in arms]

    code = (
        "import json, sys\n"
        "from kaizen_sdk import CTClient\n"
        "from kaizen_sdk._rollout import choose_arm\n"
        "url, key, task = sys.argv[1:4]\n"
        "with CTClient(api_key=key, base_url=url) as ct:\n"
        "    prompt = ct.get_prompt(task)\n"
        "keys = [f'user-{i}' for i in range(2000)]\n"
        "print(json.dumps([choose_arm(prompt, k)[1] for k in keys]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KAIZEN_API_KEY", None)
    out = subprocess.run(
        [sys.executable, "-c", code, local_server.base_url, local_server.api_key, task_name],
        capture_output=True, text=True, timeout=60, check=True, env=env,
    )
    assert json.loads(out.stdout) == [arm for _, arm in arms]


def test_prompt_without_rollout_serves_the_active_version(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, _ = make_task(client, wait_job, task_name)
    body = client.get(f"/api/v1/prompts/{task_name}").json()
    assert body["id"] == active and body.get("rollout") is None


# --- decisions -----------------------------------------------------------------------------


def test_scores_favouring_the_candidate_promote_it_once_the_minimum_is_reached(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=30)
    send_scores(client, task_name, active, "active", low(29))
    send_scores(client, task_name, candidate, "candidate", high(30))
    state = rollout(client, task_name)
    assert state["state"] == "running"
    assert (state["active"]["n"], state["candidate"]["n"]) == (29, 30)
    send_scores(client, task_name, active, "active", low(1))
    # decided as the score arrived: the prompt (whose GET does not evaluate) already changed
    prompt = client.get(f"/api/v1/prompts/{task_name}").json()
    assert prompt["id"] == candidate and prompt.get("rollout") is None
    state = rollout(client, task_name)
    assert state["state"] == "promoted", state
    assert (state["active"]["n"], state["candidate"]["n"]) == (30, 30)
    assert [e["event"] for e in state["audit"]] == ["started", "promoted"]
    decided = state["audit"][-1]["stats"]
    assert decided["active"]["n"] == 30 and decided["candidate"]["n"] == 30
    assert decided["lower"] > 0
    assert statuses(client, task_name) == {active: "inactive", candidate: "active"}
    prompt = client.get(f"/api/v1/prompts/{task_name}").json()
    assert prompt["id"] == candidate and prompt.get("rollout") is None


def test_scores_against_the_candidate_roll_it_back(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=20)
    send_scores(client, task_name, active, "active", high(20))
    send_scores(client, task_name, candidate, "candidate", low(20))
    state = rollout(client, task_name)
    assert state["state"] == "rolled_back"
    assert state["reason"] == "candidate scores lower (always-valid test)"
    assert [e["event"] for e in state["audit"]] == ["started", "rolled_back"]
    assert state["audit"][-1]["stats"]["upper"] < 0
    assert statuses(client, task_name) == {active: "active", candidate: "rejected"}


def test_trace_scores_count_per_arm(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=10)
    for version, arm, scores in ((active, "active", high(10)), (candidate, "candidate", low(9))):
        for score in scores:
            trace = client.post("/api/v1/traces", json={
                "task_id": task_name, "prompt_version_id": version, "arm": arm}).json()
            assert trace["arm"] == arm
            resp = client.post(f"/api/v1/traces/{trace['id']}/score", json={"score": score})
            assert resp.status_code == 200, resp.text
    state = rollout(client, task_name)
    assert state["state"] == "running"
    assert (state["active"]["n"], state["candidate"]["n"]) == (10, 9)
    assert state["active"]["mean"] == pytest.approx(sum(high(10)) / 10)
    assert state["active"]["lower"] < state["active"]["mean"] < state["active"]["upper"]


@pytest.mark.parametrize("guard", ["latency_p95", "error_rate"])
def test_a_guard_breach_rolls_back(
    client: httpx.Client, wait_job: JobWaiter, task_name: str, guard: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=10, error_margin=0.05,
          latency_margin=0.5)
    send_calls(client, task_name, active, "active", n=20, latency_ms=100.0)
    if guard == "latency_p95":
        send_calls(client, task_name, candidate, "candidate", n=20, latency_ms=151.0)
    else:
        send_calls(client, task_name, candidate, "candidate", n=20, latency_ms=100.0, errors=2)
    send_scores(client, task_name, active, "active", mid(10))
    send_scores(client, task_name, candidate, "candidate", mid(10))
    state = rollout(client, task_name)
    assert state["state"] == "rolled_back", state
    assert state["reason"] == f"guard breached: {guard}"
    assert state["guards"]["breached"] == [guard]
    if guard == "latency_p95":
        assert state["guards"]["latency_p95_ratio"] == pytest.approx(1.51)
    else:
        assert state["candidate"]["error_rate"] == pytest.approx(0.1)
        assert state["guards"]["error_rate_delta"] == pytest.approx(0.1)
    assert statuses(client, task_name)[candidate] == "rejected"


def test_guards_within_margin_keep_the_rollout_running(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=10, error_margin=0.05,
          latency_margin=0.5)
    send_calls(client, task_name, active, "active", n=20, latency_ms=100.0)
    send_calls(client, task_name, candidate, "candidate", n=20, latency_ms=149.0, errors=1)
    send_scores(client, task_name, active, "active", mid(10))
    send_scores(client, task_name, candidate, "candidate", mid(10))
    state = rollout(client, task_name)
    assert state["state"] == "running"
    assert state["guards"]["breached"] == []


def test_the_audit_log_lists_each_ramp_step_and_the_decision(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, ramp=[0.1, 0.5, 1.0], min_samples=10)
    assert rollout(client, task_name)["share"] == 0.1
    send_scores(client, task_name, active, "active", mid(10))
    send_scores(client, task_name, candidate, "candidate", mid(10))
    state = rollout(client, task_name)
    assert (state["state"], state["step"], state["share"]) == ("running", 1, 0.5)
    assert client.get(f"/api/v1/prompts/{task_name}").json()["rollout"]["share"] == 0.5
    send_scores(client, task_name, candidate, "candidate", mid(10))
    assert rollout(client, task_name)["share"] == 1.0
    resp = client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "rollback"})
    assert resp.status_code == 200, resp.text
    state = resp.json()
    assert state["state"] == "rolled_back" and state["reason"] == "stopped by request (rollback)"
    events = [(e["event"], e["share"]) for e in state["audit"]]
    assert events == [("started", 0.1), ("ramp", 0.5), ("ramp", 1.0), ("rolled_back", 1.0)]
    assert state["audit"][1]["stats"]["candidate"]["n"] == 10
    assert state["audit"][2]["stats"]["candidate"]["n"] == 20
    assert statuses(client, task_name) == {active: "active", candidate: "rejected"}


def test_without_auto_promote_the_decision_is_a_recommendation(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, min_samples=10, auto_promote=False)
    send_scores(client, task_name, active, "active", low(10))
    send_scores(client, task_name, candidate, "candidate", high(10))
    send_scores(client, task_name, candidate, "candidate", high(5))
    state = rollout(client, task_name)
    assert (state["state"], state["recommendation"]) == ("running", "promote")
    assert [e["event"] for e in state["audit"]] == ["started", "recommend_promote"]
    resp = client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "promote"})
    assert resp.json()["state"] == "promoted"
    assert statuses(client, task_name) == {active: "inactive", candidate: "active"}


def test_an_expired_rollout_is_rolled_back(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5, max_duration=1e-6)
    prompt = client.get(f"/api/v1/prompts/{task_name}").json()
    assert prompt["id"] == active and prompt.get("rollout") is None
    state = rollout(client, task_name)
    assert state["state"] == "rolled_back"
    assert state["reason"] == "maximum duration reached without a decision"


def test_a_successful_job_starts_a_rollout_when_the_task_asks(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(
        client, wait_job, task_name,
        evaluator_config={"auto_rollout": {"share": 0.25, "min_samples": 40},
                          "unattended_rollouts": True},
    )
    # the worker starts the rollout in its own write just after the job's SUCCESS
    deadline = time.monotonic() + 15
    while client.get(f"/api/v1/rollouts/{task_name}").status_code == 404:
        assert time.monotonic() < deadline, "no rollout 15 s after the job's SUCCESS"
        time.sleep(0.01)
    state = rollout(client, task_name)
    assert state["state"] == "running"
    assert (state["active_version_id"], state["candidate_version_id"]) == (active, candidate)
    assert (state["share"], state["min_samples"]) == (0.25, 40)


def test_a_job_starts_no_rollout_by_default(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    make_task(client, wait_job, task_name)
    assert client.get(f"/api/v1/rollouts/{task_name}").status_code == 404


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"share": 1.5}, 422, "share"),
        ({"share": -0.1}, 422, "share"),
        ({"ramp": [0.2, 1.2]}, 422, "ramp"),
        ({"ramp": [0.5, 0.2]}, 422, "ramp"),
        ({"ramp": []}, 422, "ramp"),
        ({"share": 0.2, "ramp": [0.2]}, 422, "ramp"),
        ({"min_samples": 1}, 422, "min_samples"),
        ({"shares": 0.2}, 422, "shares"),
    ],
)
def test_bad_rollout_options_are_rejected_and_nothing_changes(
    client: httpx.Client, wait_job: JobWaiter, task_name: str, body: dict[str, Any],
    status: int, named: str,
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    resp = client.post(f"/api/v1/rollouts/{task_name}",
                       json={"candidate_version_id": candidate, **body})
    assert resp.status_code == status, resp.text
    assert named in resp.json()["detail"]
    assert set(resp.json()) == {"title", "detail"}
    assert client.get(f"/api/v1/rollouts/{task_name}").status_code == 404
    assert statuses(client, task_name) == {active: "active", candidate: "candidate"}


def test_bad_candidates_are_rejected_and_nothing_changes(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    other = f"{task_name}-other"
    _, foreign = make_task(client, wait_job, other)
    cases = [
        (foreign, 422, "another task"),
        (active, 422, "already the active version"),
        (str(uuid.uuid4()), 404, "not found"),
    ]
    for version, status, detail in cases:
        resp = client.post(f"/api/v1/rollouts/{task_name}",
                           json={"candidate_version_id": version, "share": 0.2})
        assert resp.status_code == status, resp.text
        assert detail in resp.json()["detail"]
    assert client.get(f"/api/v1/rollouts/{task_name}").status_code == 404
    assert statuses(client, task_name) == {active: "active", candidate: "candidate"}
    resp = client.post("/api/v1/rollouts/no-such-task",
                       json={"candidate_version_id": candidate, "share": 0.2})
    assert resp.status_code == 404


def test_a_second_rollout_and_stopping_none_are_conflicts(
    client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    resp = client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "promote"})
    assert resp.status_code == 409 and "no rollout is running" in resp.json()["detail"]
    first = start(client, task_name, candidate, share=0.2)
    resp = client.post(f"/api/v1/rollouts/{task_name}",
                       json={"candidate_version_id": candidate, "share": 0.5})
    assert resp.status_code == 409 and "already running" in resp.json()["detail"]
    state = rollout(client, task_name)
    assert (state["id"], state["share"], len(state["audit"])) == (first["id"], 0.2, 1)
    resp = client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "drop"})
    assert resp.status_code == 422 and "action" in resp.json()["detail"]
    assert rollout(client, task_name)["state"] == "running"
    client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "rollback"})
    resp = client.post(f"/api/v1/rollouts/{task_name}/stop", json={"action": "rollback"})
    assert resp.status_code == 409
    assert statuses(client, task_name) == {active: "active", candidate: "rejected"}


def test_rollout_routes_are_in_openapi(client: httpx.Client) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert set(doc["paths"]["/api/v1/rollouts/{task_id}"]) == {"get", "post"}
    assert set(doc["paths"]["/api/v1/rollouts/{task_id}/stop"]) == {"post"}
    prompt = doc["components"]["schemas"]["Prompt"]["properties"]
    assert "rollout" in prompt


# --- clients -------------------------------------------------------------------------------


def test_client_start_get_stop(
    local_server: LocalServer, client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    _, candidate = make_task(client, wait_job, task_name)
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as ct:
        assert ct.get_prompt(task_name).rollout is None
        started = ct.start_rollout(task_name, candidate, ramp=[0.1, 0.3], min_samples=50)
        assert (started.state, started.share, started.ramp) == ("running", 0.1, [0.1, 0.3])
        # starting invalidated the cached prompt: the split is served at once
        served = ct.get_prompt(task_name).rollout
        assert served is not None and str(served.candidate.id) == candidate
        assert ct.get_rollout(task_name).id == started.id
        stopped = ct.stop_rollout(task_name, "promote")
        assert stopped.state == "promoted"
        assert str(ct.get_prompt(task_name).id) == candidate
        with pytest.raises(CTValidationError) as info:
            ct.stop_rollout(task_name, "promote")
        assert info.value.status_code == 409
        with pytest.raises(CTNotFoundError):
            ct.get_rollout(f"{task_name}-missing")


def test_client_checks_arguments_before_sending(local_server: LocalServer) -> None:
    with CTClient(api_key=local_server.api_key, base_url="http://127.0.0.1:9") as ct:
        vid = str(uuid.uuid4())
        for kwargs in ({"share": 1.2}, {"ramp": [0.1, -1]}, {"share": 0.1, "ramp": [0.2]},
                       {"min_samples": 0}):
            with pytest.raises(CTValidationError):
                ct.start_rollout("t", vid, **kwargs)
        with pytest.raises(CTValidationError):
            ct.start_rollout("t", "not-a-uuid", share=0.1)
        with pytest.raises(CTValidationError):
            ct.stop_rollout("t", "drop")


async def test_async_client_start_get_stop(
    local_server: LocalServer, client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    from kaizen_sdk import AsyncCTClient

    _, candidate = make_task(client, wait_job, task_name)
    async with AsyncCTClient(api_key=local_server.api_key,
                             base_url=local_server.base_url) as ct:
        started = await ct.start_rollout(task_name, candidate, share=0.4)
        assert started.share == 0.4
        assert (await ct.get_rollout(task_name)).id == started.id
        assert (await ct.stop_rollout(task_name, "rollback")).state == "rolled_back"


def test_client_feedback_counts_and_get_rollout_refreshes_the_cached_prompt(
    local_server: LocalServer, client: httpx.Client, wait_job: JobWaiter, task_name: str
) -> None:
    active, candidate = make_task(client, wait_job, task_name)
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url,
                  cache_ttl=3600) as ct:
        ct.start_rollout(task_name, candidate, share=0.5, min_samples=10)
        assert ct.get_prompt(task_name).rollout is not None  # cached for an hour
        for score in low(10):
            ct.log_feedback(task_name, output="o", score=score, prompt_version_id=active,
                            arm="active")
        for score in high(10):
            ct.log_feedback(task_name, output="o", score=score, prompt_version_id=candidate,
                            arm="candidate")
        assert ct.get_prompt(task_name).rollout is not None  # still the cached split
        decided = ct.get_rollout(task_name)
        assert decided.state == "promoted"
        assert (decided.active.n, decided.candidate.n) == (10, 10)
        served = ct.get_prompt(task_name)
        assert (str(served.id), served.rollout) == (candidate, None)
        with pytest.raises(CTValidationError):
            ct.log_feedback(task_name, score=0.5, prompt_version_id="v2")
        with pytest.raises(CTValidationError):
            ct.log_feedback(task_name, score=0.5, prompt_version_id=candidate, arm="blue")


@pytest.mark.parametrize("which", ["candidate", "other"])
def test_activating_by_hand_ends_the_rollout(
    client: httpx.Client, wait_job: JobWaiter, task_name: str, which: str
) -> None:
    _, candidate = make_task(client, wait_job, task_name)
    start(client, task_name, candidate, share=0.5)
    if which == "candidate":
        target = candidate
    else:
        made = client.post(f"/api/v1/prompts/{task_name}/versions",
                           json={"prompt_text": "A third prompt: {{ text }}"})
        assert made.status_code == 201, made.text
        target = made.json()["id"]
    resp = client.post(f"/api/v1/prompts/{task_name}/activate", json={"version_id": target})
    assert resp.status_code == 200, resp.text
    prompt = client.get(f"/api/v1/prompts/{task_name}").json()
    assert (prompt["id"], prompt.get("rollout")) == (target, None)
    state = rollout(client, task_name)
    number = 2 if which == "candidate" else 3
    reason = f"v{number} was activated by hand (by bootstrap) while the rollout ran"
    assert (state["state"], state["reason"]) == ("overridden", reason)
    assert [e["event"] for e in state["audit"]][-1] == "overridden"
