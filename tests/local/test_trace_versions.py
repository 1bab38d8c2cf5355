"""A trace records the prompt it used and never makes a prompt version.

The one exception is the developer's ``default_prompt``, which the SDK flags on the trace
(``prompt_is_default``): a task with no version at all takes it as version 1.
"""

from __future__ import annotations

import httpx
import pytest


def _versions(client: httpx.Client, task: str) -> list[tuple[int, str, str, str]]:
    resp = client.get(f"/api/v1/prompts/{task}/versions")
    assert resp.status_code == 200, resp.text
    return [(v["version_number"], v["status"], v["optimizer"], v["prompt_text"])
            for v in resp.json()]


@pytest.mark.parametrize("path", ["single", "batch"])
def test_a_call_text_never_becomes_a_version(
    client: httpx.Client, task_name: str, path: str
) -> None:
    texts = [f"Customer ticket #{n}: my card was charged twice" for n in range(3)]
    traces = [{"task_id": task_name, "prompt_text": t, "response_text": "ok"} for t in texts]
    if path == "single":
        for body in traces:
            assert client.post("/api/v1/traces", json=body).status_code == 201
    else:
        assert client.post("/api/v1/ingest", json={"traces": traces}).json()["accepted"] == 3
    assert _versions(client, task_name) == []
    assert client.get(f"/api/v1/prompts/{task_name}").status_code == 404
    stored = client.get("/api/v1/traces", params={"task_id": task_name}).json()
    assert sorted(t["prompt_text"] for t in stored) == sorted(texts)  # the calls' data
    assert {t["prompt_version_id"] for t in stored} == {None}


@pytest.mark.parametrize("path", ["single", "batch"])
def test_the_flagged_default_is_version_1_once(
    client: httpx.Client, task_name: str, path: str
) -> None:
    call = {"task_id": task_name, "prompt_text": "Answer briefly: What is CT?"}
    default = {"task_id": task_name, "prompt_text": "Answer briefly: {{ q }}",
               "prompt_is_default": True}
    later = {**default, "prompt_text": "Another default: {{ q }}"}
    if path == "single":
        for body in (call, default, later):
            assert client.post("/api/v1/traces", json=body).status_code == 201
    else:
        resp = client.post("/api/v1/ingest", json={"traces": [call, default, later]})
        assert resp.json()["accepted"] == 3
    assert _versions(client, task_name) == [
        (1, "active", "baseline", "Answer briefly: {{ q }}")
    ]
    [v1] = client.get(f"/api/v1/prompts/{task_name}/versions").json()
    stored = client.get("/api/v1/traces", params={"task_id": task_name}).json()
    linked = {t["prompt_text"]: t["prompt_version_id"] for t in stored}
    assert linked == {"Answer briefly: What is CT?": None, "Answer briefly: {{ q }}": v1["id"],
                      "Another default: {{ q }}": None}


def test_a_flagged_default_never_replaces_a_version_people_made(
    client: httpx.Client, task_name: str
) -> None:
    created = client.post("/api/v1/tasks", json={"name": task_name, "prompt_text": "Mine"})
    assert created.status_code == 201, created.text
    body = {"task_id": task_name, "prompt_text": "Code default", "prompt_is_default": True}
    assert client.post("/api/v1/traces", json=body).status_code == 201
    assert client.post("/api/v1/ingest", json={"traces": [body]}).json()["accepted"] == 1
    assert _versions(client, task_name) == [(1, "active", "manual", "Mine")]
