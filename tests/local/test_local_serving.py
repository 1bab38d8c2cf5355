"""The HTTP layer's own behaviour: the server extra, the access log, batched ingest semantics."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from kaizen_server import LocalServer


def test_without_the_server_extra_import_and_serve_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "import kaizen_sdk\n"
        "try:\n"
        "    from kaizen_server import LocalServer\n"
        "except ImportError as exc:\n"
        "    print('import:', exc)\n"
        "from kaizen_sdk.cli import main\n"
        "print('exit', main(['serve', '--port', '0']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "import: The local CT server needs its HTTP stack: " \
                       "pip install 'kaizen-sdk[server]'"
    assert lines[-1] == "exit 1"
    assert done.stderr.strip().splitlines() == [
        "kaizen serve: The local CT server needs its HTTP stack: pip install 'kaizen-sdk[server]'"
    ]


def test_access_log_is_off_by_default_and_one_line_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="kaizen_server.access"):
        with LocalServer(api_key="access-key") as quiet:
            httpx.get(f"{quiet.base_url}/api/v1/health")
        assert [r for r in caplog.records if r.name == "kaizen_server.access"] == []
        with LocalServer(api_key="access-key", access_log=True) as loud:
            httpx.get(f"{loud.base_url}/api/v1/health")
            httpx.get(f"{loud.base_url}/api/v1/tasks?limit=5", headers={"X-API-Key": "access-key"})
            httpx.get(f"{loud.base_url}/api/v1/tasks")
    lines = [r.getMessage() for r in caplog.records if r.name == "kaizen_server.access"]
    assert len(lines) == 3
    clf = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET (\S+) HTTP/1\.1" (\d{3}) (\d+)$')
    parsed = [clf.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(1), m.group(2)) for m in parsed if m] == [
        ("/api/v1/health", "200"), ("/api/v1/tasks?limit=5", "200"), ("/api/v1/tasks", "401")]
    assert not any("access-key" in line for line in lines)


def test_batched_ingest_counts_and_starts_jobs_as_one_at_a_time_did(
    client: httpx.Client, task_name: str
) -> None:
    assert client.post("/api/v1/tasks", json={"name": task_name, "feedback_threshold": 5})
    ids = [str(uuid.uuid4()) for _ in range(12)]
    items = [{"id": i, "task_id": task_name, "score": 0.5} for i in ids]
    resp = client.post("/api/v1/ingest", json={"feedback": [*items, items[0]]})  # one repeat
    assert resp.status_code == 207
    assert resp.json() == {"accepted": 13, "errors": [], "scores": 0}
    task = client.get(f"/api/v1/tasks/{task_name}").json()
    assert task["feedback_count"] == 12
    assert task["threshold_progress"] == "7/5"  # the job started at the 5th entry
    jobs = client.get("/api/v1/jobs", params={"task_id": task_name}).json()
    assert [(j["triggered_by"], j["feedback_count"]) for j in jobs] == [("threshold", 5)]
    again = client.post("/api/v1/ingest", json={"feedback": items})  # a retried batch
    assert again.json() == {"accepted": 12, "errors": [], "scores": 0}
    assert client.get(f"/api/v1/tasks/{task_name}").json()["feedback_count"] == 12


def test_batched_ingest_links_traces_to_the_baseline_it_creates(
    client: httpx.Client, task_name: str
) -> None:
    traces = [{"task_id": task_name, "prompt_text": "P1", "response_text": str(n),
               "prompt_is_default": True}  # a decorator's default_prompt: may be version 1
              for n in range(3)] + [{"task_id": task_name, "prompt_text": "other"}]
    unknown = {"task_id": str(uuid.uuid4()), "response_text": "x", "id": str(uuid.uuid4())}
    resp = client.post("/api/v1/ingest", json={"traces": [*traces, unknown]})
    body = resp.json()
    assert body["accepted"] == 4
    assert [(e["kind"], e["id"]) for e in body["errors"]] == [("trace", unknown["id"])]
    [baseline] = client.get(f"/api/v1/prompts/{task_name}/versions").json()
    assert (baseline["prompt_text"], baseline["optimizer"]) == ("P1", "baseline")
    stored = client.get("/api/v1/traces", params={"task_id": task_name}).json()
    linked = {t["prompt_text"]: t["prompt_version_id"] for t in stored}
    assert linked == {"P1": baseline["id"], "other": None}
