"""The audit log: every state change with the name of the key that made it, and when.

A server of the module's own (a fresh database), so the log holds exactly what the test did.
Also here: a manual activation ends a running rollout in the same transaction.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaizen_sdk import CTClient
from kaizen_sdk.cli import main
from kaizen_server import LocalServer

BOOT = "audit-bootstrap-key"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(db_path=tmp_path / "audit.db", api_key=BOOT) as s:
        yield s


def _client(server: LocalServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"X-API-Key": key}, timeout=10)


def _ok(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def _wait_job(c: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job: dict[str, Any] = _ok(c.get(f"/api/v1/jobs/{job_id}"), 200)
        if job["status"] not in ("PENDING", "RUNNING"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.01)


def _all_pages(c: httpx.Client, limit: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    resp = c.get("/api/v1/audit", params={"limit": limit})
    for _ in range(100):
        items += _ok(resp, 200)
        if "next" not in resp.links:
            return items
        resp = c.get(resp.links["next"]["url"])
    raise AssertionError("more than 100 pages")


def test_every_state_change_is_logged_with_its_key(
    server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started = datetime.now(timezone.utc)
    with _client(server, BOOT) as boot:
        ops_key = _ok(boot.post("/api/v1/keys", json={"name": "ops", "scope": "admin"}), 201)
        app_key = _ok(boot.post("/api/v1/keys", json={"name": "app", "scope": "ingest"}), 201)
        ops, app = _client(server, ops_key["secret"]), _client(server, app_key["secret"])
        with ops, app:
            task = _ok(ops.post("/api/v1/tasks", json={
                "name": "t", "prompt_text": "v1 {{ x }}", "feedback_threshold": 1}), 201)
            v1 = _ok(ops.get("/api/v1/prompts/t"), 200)["id"]
            v2 = _ok(ops.post("/api/v1/prompts/t/versions",
                              json={"prompt_text": "v2 {{ x }}"}), 201)["id"]
            rollout = _ok(ops.post("/api/v1/rollouts/t",
                                   json={"candidate_version_id": v2, "share": 0.5}), 201)
            _ok(ops.post("/api/v1/prompts/t/activate", json={"version_id": v2}), 200)
            assert ops.post("/api/v1/rollouts/t/stop",
                            json={"action": "rollback"}).status_code == 409
            # the application's key: a task made by its first trace, a job by the threshold
            _ok(app.post("/api/v1/traces", json={"task_id": "auto", "response_text": "r"}), 201)
            fb = _ok(app.post("/api/v1/feedback", json={
                "task_id": "t", "inputs": {"x": "a"}, "output": "b", "score": 1.0}), 201)
            jobs = _ok(ops.get("/api/v1/jobs", params={"task_id": "t"}), 200)
            assert len(jobs) == 1 and fb["task_id"] == task["id"]
            job = _wait_job(ops, jobs[0]["id"])
            # a rollout the server decides by itself: out of time at once
            second = _ok(boot.post("/api/v1/rollouts/t", json={
                "candidate_version_id": v1, "share": 0.5, "max_duration": 0.001}), 201)
            deadline = time.monotonic() + 30
            while _ok(app.get("/api/v1/prompts/t"), 200).get("rollout") is not None:
                assert time.monotonic() < deadline
            _ok(boot.delete(f"/api/v1/keys/{app_key['id']}"), 200)
            auto = _ok(ops.get("/api/v1/tasks/auto"), 200)["id"]
            entries = _ok(ops.get("/api/v1/audit", params={"limit": 1000}), 200)
    rid, second_id = rollout["id"], second["id"]
    assert job["status"] == "SUCCESS" and job["prompt_version_id"] is not None, job
    expected = [
        ("bootstrap", "key.revoked", None, app_key["id"], "app (ingest)"),
        ("system", "rollout.decided", task["id"], second_id,
         "rolled_back: maximum duration reached without a decision"),
        ("bootstrap", "rollout.started", task["id"], second_id, "candidate v1, ramp [0.5]"),
        # the job's candidate: made by the server's worker
        ("system", "version.created", task["id"], job["prompt_version_id"],
         "v3 candidate (local-fewshot)"),
        # the worker that took the job (host:pid:random, checked below)
        ("system", "job.claimed", task["id"], jobs[0]["id"], "by WORKER"),
        ("app", "job.started", task["id"], jobs[0]["id"], "triggered by threshold"),
        ("app", "task.created", auto, "auto", None),
        ("ops", "rollout.overridden", task["id"], rid,
         "v2 was activated by hand (by ops) while the rollout ran"),
        ("ops", "version.activated", task["id"], v2, "v2"),
        ("ops", "rollout.started", task["id"], rid, "candidate v2, ramp [0.5]"),
        ("ops", "version.created", task["id"], v2, "v2 candidate (manual)"),
        ("ops", "version.created", task["id"], v1, "v1 active (manual)"),
        ("ops", "task.created", task["id"], "t", None),
        ("bootstrap", "key.created", None, app_key["id"], "app (ingest)"),
        ("bootstrap", "key.created", None, ops_key["id"], "ops (admin)"),
    ]
    got = [(e["actor"], e["action"], e["task_id"], e["target"], e["detail"]) for e in entries]
    worker = re.compile(r"by [^:]+:\d+:[0-9a-f]{8}")
    assert [worker.fullmatch(g[4] or "") is not None for g in got].count(True) == 1
    got = [(*g[:4], "by WORKER") if worker.fullmatch(g[4] or "") else g for g in got]
    assert got == expected
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times, reverse=True)
    assert started - timedelta(seconds=1) <= times[-1] and times[0] <= datetime.now(timezone.utc)

    with _client(server, BOOT) as boot:
        assert _all_pages(boot, 4) == entries  # paged like the other lists
        only_t = _ok(boot.get("/api/v1/audit", params={"task_id": "t", "limit": 1000}), 200)
        assert only_t == [e for e in entries if e["task_id"] == task["id"]]
        reader = _ok(boot.post("/api/v1/keys", json={"name": "auditor", "scope": "read"}), 201)
    with CTClient(base_url=server.base_url, api_key=reader["secret"]) as c:
        page = c.list_audit(limit=2)
        assert [(e.actor, e.action) for e in page] == [
            ("bootstrap", "key.created"), ("bootstrap", "key.revoked")]
    assert main(["audit", "--task", "t", "--limit", "3", "--api-key", reader["secret"],
                 "--base-url", server.base_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["AT", "KEY", "ACTION", "DETAIL", "TARGET", "TASK"]
    assert [line.split()[2:4] for line in out[1:]] == [
        ["system", "rollout.decided"], ["bootstrap", "rollout.started"],
        ["system", "version.created"]]


def test_activation_ends_a_running_rollout_in_the_same_transaction(server: LocalServer) -> None:
    with _client(server, BOOT) as boot:
        _ok(boot.post("/api/v1/tasks", json={"name": "r", "prompt_text": "v1 {{ x }}"}), 201)
        v1 = _ok(boot.get("/api/v1/prompts/r"), 200)["id"]
        v2 = _ok(boot.post("/api/v1/prompts/r/versions", json={"prompt_text": "v2"}), 201)["id"]
        v3 = _ok(boot.post("/api/v1/prompts/r/versions", json={"prompt_text": "v3"}), 201)["id"]
        rollout = _ok(boot.post("/api/v1/rollouts/r",
                                json={"candidate_version_id": v2, "share": 0.5}), 201)
        _ok(boot.post("/api/v1/prompts/r/activate", json={"version_id": v3}), 200)
        # read the file itself, before any request could evaluate the rollout
        conn = sqlite3.connect(str(server.db_path))
        try:
            state, reason = conn.execute("SELECT state, reason FROM rollouts WHERE id = ?",
                                         (rollout["id"],)).fetchone()
            statuses = dict(conn.execute("SELECT id, status FROM prompts").fetchall())
        finally:
            conn.close()
        assert (state, reason) == (
            "overridden", "v3 was activated by hand (by bootstrap) while the rollout ran")
        assert statuses == {v1: "inactive", v2: "candidate", v3: "active"}
        for action in ("promote", "rollback"):
            resp = boot.post("/api/v1/rollouts/r/stop", json={"action": action})
            assert resp.status_code == 409
            assert resp.json()["detail"] == (
                "no rollout is running for task 'r': the last one ended overridden (v3 was"
                " activated by hand (by bootstrap) while the rollout ran)")
        assert _ok(boot.get("/api/v1/prompts/r"), 200)["id"] == v3
        body = _ok(boot.get("/api/v1/rollouts/r"), 200)
        assert body["state"] == "overridden"
        assert [e["event"] for e in body["audit"]] == ["started", "overridden"]
        # a new version created active ends the next rollout the same way
        _ok(boot.post("/api/v1/rollouts/r", json={"candidate_version_id": v2, "share": 0.5}), 201)
        v4 = _ok(boot.post("/api/v1/prompts/r/versions",
                           json={"prompt_text": "v4", "activate": True}), 201)["id"]
        body = _ok(boot.get("/api/v1/rollouts/r"), 200)
        assert (body["state"], body["reason"]) == (
            "overridden", "v4 was activated by hand (by bootstrap) while the rollout ran")
        assert _ok(boot.get("/api/v1/prompts/r"), 200)["id"] == v4


def test_a_stop_after_an_activation_that_did_not_end_the_rollout_keeps_the_activation(
    server: LocalServer,
) -> None:
    """A rollout left running by a hand activation (a server without the check, or a file
    edited by hand): `stop(rollback)` must not say rolled back while the candidate is served."""
    with _client(server, BOOT) as boot:
        _ok(boot.post("/api/v1/tasks", json={"name": "old", "prompt_text": "v1 {{ x }}"}), 201)
        v1 = _ok(boot.get("/api/v1/prompts/old"), 200)["id"]
        v2 = _ok(boot.post("/api/v1/prompts/old/versions", json={"prompt_text": "v2"}), 201)["id"]
        _ok(boot.post("/api/v1/rollouts/old", json={"candidate_version_id": v2, "share": 0.5}),
            201)
        conn = sqlite3.connect(str(server.db_path), isolation_level=None)
        try:
            conn.execute("UPDATE prompts SET status = 'inactive' WHERE id = ?", (v1,))
            conn.execute("UPDATE prompts SET status = 'active' WHERE id = ?", (v2,))
        finally:
            conn.close()
        resp = boot.post("/api/v1/rollouts/old/stop", json={"action": "rollback"})
        assert resp.status_code == 409, resp.text
        assert "v2 was activated by hand" in resp.json()["detail"]
        body = _ok(boot.get("/api/v1/rollouts/old"), 200)
        assert body["state"] == "overridden"
        assert _ok(boot.get("/api/v1/prompts/old"), 200)["id"] == v2


def test_a_task_update_is_logged_and_needs_an_admin_key(server: LocalServer) -> None:
    with _client(server, BOOT) as boot:
        app_key = _ok(boot.post("/api/v1/keys", json={"name": "app", "scope": "ingest"}), 201)
        _ok(boot.post("/api/v1/tasks", json={"name": "t", "feedback_threshold": 5}), 201)
        with _client(server, app_key["secret"]) as app:
            refused = app.patch("/api/v1/tasks/t", json={"feedback_threshold": 7})
        assert refused.status_code == 403 and "admin" in refused.json()["detail"]
        _ok(boot.patch("/api/v1/tasks/t", json={"feedback_threshold": 9, "judge_model": "j"}),
            200)
        assert _ok(boot.get("/api/v1/tasks/t"), 200)["feedback_threshold"] == 9
        entries = _ok(boot.get("/api/v1/audit", params={"task_id": "t"}), 200)
    assert [(e["actor"], e["action"], e["target"], e["detail"]) for e in entries[:1]] == [
        ("bootstrap", "task.updated", "t", "feedback_threshold, judge_model")]
    assert [e["action"] for e in entries].count("task.updated") == 1
