"""`kaizen rollout start|status|stop` in-process against the session's local server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaizen_sdk.cli import main
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def http(local_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    with httpx.Client(base_url=local_server.base_url,
                      headers={"X-API-Key": local_server.api_key}, timeout=10) as client:
        yield client


def kaizen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def task_with_candidate(http: httpx.Client) -> tuple[str, str, str]:
    name = f"cli_rollout_{uuid.uuid4().hex[:10]}"
    assert http.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 100_000}
                     ).status_code == 201
    active = http.post("/api/v1/traces", json={"task_id": name, "prompt_text": "v1",
                                               "prompt_is_default": True}  # v1
                       ).json()["prompt_version_id"]
    http.post("/api/v1/feedback", json={"task_id": name, "output": "o", "score": 0.7})
    job = http.post(f"/api/v1/optimize/{name}").json()["job"]
    deadline = time.monotonic() + 15
    while (body := http.get(f"/api/v1/jobs/{job['id']}").json())["status"] != "SUCCESS":
        assert body["status"] != "FAILURE" and time.monotonic() < deadline, body
        time.sleep(0.01)
    return name, active, str(body["prompt_version_id"])


def scores(http: httpx.Client, name: str, version: str, values: list[float]) -> None:
    feedback = [{"task_id": name, "score": v, "prompt_version_id": version, "output": "o"}
                for v in values]
    assert http.post("/api/v1/ingest", json={"feedback": feedback}).json()["errors"] == []


def test_start_status_stop(http: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    name, _, candidate = task_with_candidate(http)
    code, out, err = kaizen(capsys, "rollout", "start", name, "v2", "--ramp", "0.1,0.5",
                            "--min-samples", "20")
    assert code == 0, err
    assert "running" in out and "10% (ramp 10%, 50%)" in out and "started 10%" in out
    code, out, _ = kaizen(capsys, "rollout", "status", name, "--json")
    body: dict[str, Any] = json.loads(out)
    assert (code, body["state"], body["candidate_version_id"]) == (0, "running", candidate)
    code, out, _ = kaizen(capsys, "rollout", "stop", name, "rollback")
    assert code == 0 and "rolled_back" in out and "stopped by request (rollback)" in out
    code, _, err = kaizen(capsys, "rollout", "stop", name, "rollback")
    assert code == 1 and "no rollout is running" in err and len(err.splitlines()) == 1


def test_watch_follows_until_decided(
    http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    name, active, candidate = task_with_candidate(http)
    assert kaizen(capsys, "rollout", "start", name, candidate, "--share", "0.5",
                  "--min-samples", "10")[0] == 0
    code, _, err = kaizen(capsys, "rollout", "status", name, "--watch", "--interval", "0.05",
                          "--timeout", "0.2")
    assert code == 1 and "still running after 0.2 s" in err
    assert err.splitlines()[0].startswith("rollout running  share 50%")
    scores(http, name, active, [0.2 + 0.05 * (i % 3) for i in range(10)])
    scores(http, name, candidate, [0.85 + 0.05 * (i % 3) for i in range(10)])
    code, out, err = kaizen(capsys, "rollout", "status", name, "--watch", "--interval", "0.05")
    assert code == 0, err
    assert err.splitlines()[-1].startswith("rollout promoted")
    assert "promoted" in out and "candidate scores higher" in out


def test_bad_arguments(http: httpx.Client, capsys: pytest.CaptureFixture[str]) -> None:
    name, _, candidate = task_with_candidate(http)
    assert kaizen(capsys, "rollout", "start", name, candidate, "--share", "1.5")[0] == 2
    assert kaizen(capsys, "rollout", "start", name, candidate, "--share", "0.1",
                  "--ramp", "0.2")[0] == 2
    assert kaizen(capsys, "rollout", "stop", name, "drop")[0] == 2
    code, _, err = kaizen(capsys, "rollout", "status", name)
    assert code == 4 and "has no rollout" in err
