"""The local server's half of the tuning loop: ETags, manual versions, critique, trace scores.

Everything runs against the session's real local server over HTTP (see conftest.py), except
the migration test, which opens a version-1 database file with `Store` directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kaizen_sdk.models import MAX_PROMPT_CHARS
from kaizen_server.optimize import fewshot as optimizer
from kaizen_server.storage.sqlite import Store

JobWaiter = Callable[[httpx.Client, str], dict[str, Any]]


def _versions(client: httpx.Client, task: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/prompts/{task}/versions")
    assert resp.status_code == 200, resp.text
    versions: list[dict[str, Any]] = resp.json()
    return versions


def _task(client: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/tasks", json={"name": name, **body})
    assert resp.status_code == 201, resp.text
    task: dict[str, Any] = resp.json()
    return task


# --- ETag / 304 ----------------------------------------------------------------------------


def test_get_prompt_has_an_etag_and_answers_if_none_match_with_304(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name, prompt_text="Summarize: {{ ticket }}")
    first = client.get(f"/api/v1/prompts/{task_name}")
    assert first.status_code == 200
    tag = first.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34

    again = client.get(f"/api/v1/prompts/{task_name}", headers={"If-None-Match": tag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["ETag"] == tag
    weak = client.get(f"/api/v1/prompts/{task_name}", headers={"If-None-Match": f"W/{tag}"})
    assert weak.status_code == 304

    made = client.post(
        f"/api/v1/prompts/{task_name}/versions",
        json={"prompt_text": "Summarize briefly: {{ ticket }}", "activate": True},
    )
    assert made.status_code == 201
    changed = client.get(f"/api/v1/prompts/{task_name}", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert changed.json()["version_number"] == 2
    assert changed.headers["ETag"] != tag


# --- manual versions -----------------------------------------------------------------------


def test_a_task_created_with_prompt_text_serves_it_as_active_version_1(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name, prompt_text="Summarize: {{ ticket }}")
    prompt = client.get(f"/api/v1/prompts/{task_name}").json()
    assert (prompt["version_number"], prompt["status"], prompt["optimizer"]) == (
        1, "active", "manual"
    )
    assert prompt["prompt_text"] == "Summarize: {{ ticket }}"


def test_manual_versions_are_candidates_until_activated(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name, prompt_text="v1 text")
    resp = client.post(f"/api/v1/prompts/{task_name}/versions", json={"prompt_text": "v2 text"})
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert (made["version_number"], made["status"], made["optimizer"]) == (2, "candidate", "manual")
    assert client.get(f"/api/v1/prompts/{task_name}").json()["version_number"] == 1

    resp = client.post(
        f"/api/v1/prompts/{task_name}/versions", json={"prompt_text": "v3 text", "activate": True}
    )
    assert resp.json()["status"] == "active"
    statuses = {v["version_number"]: v["status"] for v in _versions(client, task_name)}
    assert statuses == {1: "inactive", 2: "candidate", 3: "active"}


def test_bad_prompt_versions_are_4xx_naming_the_field_and_store_nothing(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name, prompt_text="only version")
    path = f"/api/v1/prompts/{task_name}/versions"
    cases = [
        ({"prompt_text": ""}, 422, "prompt_text"),
        ({"prompt_text": "   \n"}, 422, "prompt_text"),
        ({"prompt_text": "x" * (MAX_PROMPT_CHARS + 1)}, 422, "prompt_text"),
        ({"prompt_text": 3}, 422, "prompt_text"),
        ({"text": "typo"}, 422, "text"),
        ({"prompt_text": "ok", "activate": "yes"}, 422, "activate"),
    ]
    for body, status, field in cases:
        resp = client.post(path, json=body)
        assert resp.status_code == status, (body, resp.text)
        assert field in resp.json()["detail"], resp.text
    assert client.post("/api/v1/prompts/no-such-task-xyz/versions",
                       json={"prompt_text": "x"}).status_code == 404
    assert len(_versions(client, task_name)) == 1


def test_an_empty_task_prompt_text_is_422_and_creates_no_task(
    client: httpx.Client, task_name: str
) -> None:
    resp = client.post("/api/v1/tasks", json={"name": task_name, "prompt_text": "  "})
    assert resp.status_code == 422
    assert "prompt_text" in resp.json()["detail"]
    assert client.get(f"/api/v1/tasks/{task_name}").status_code == 404


def test_activating_a_version_of_another_task_is_404_naming_version_id(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name, prompt_text="mine")
    other = _task(client, f"{task_name}-other", prompt_text="theirs")
    theirs = _versions(client, other["name"])[0]
    resp = client.post(f"/api/v1/prompts/{task_name}/activate",
                       json={"version_id": theirs["id"]})
    assert resp.status_code == 404
    assert "version_id" in resp.json()["detail"]
    assert _versions(client, other["name"])[0]["status"] == "active"
    assert client.get(f"/api/v1/prompts/{task_name}").json()["prompt_text"] == "mine"


# --- comment and correction ----------------------------------------------------------------


def test_feedback_comment_and_correction_round_trip(
    client: httpx.Client, task_name: str
) -> None:
    body = {
        "task_id": task_name, "inputs": {"ticket": "t"}, "output": "long answer",
        "score": 0.2, "comment": "too long", "correction": "short answer",
    }
    resp = client.post("/api/v1/feedback", json=body)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["comment"], resp.json()["correction"]) == ("too long", "short answer")
    listed = client.get("/api/v1/feedback", params={"task_id": task_name}).json()
    assert [(f["comment"], f["correction"]) for f in listed] == [("too long", "short answer")]


def test_a_correction_without_output_is_422_and_stores_nothing(
    client: httpx.Client, task_name: str
) -> None:
    _task(client, task_name)
    resp = client.post("/api/v1/feedback", json={"task_id": task_name, "correction": "x"})
    assert resp.status_code == 422
    assert "correction" in resp.json()["detail"] and "output" in resp.json()["detail"]
    ingest = client.post("/api/v1/ingest", json={"feedback": [
        {"task_id": task_name, "correction": "x"},
        {"task_id": task_name, "output": "o", "correction": "x"},
    ]})
    assert ingest.status_code == 207
    assert ingest.json()["accepted"] == 1
    assert "correction" in ingest.json()["errors"][0]["detail"]
    assert len(client.get("/api/v1/feedback", params={"task_id": task_name}).json()) == 1


# --- scoring a trace -----------------------------------------------------------------------


def test_scoring_a_trace_without_feedback_makes_one_entry_and_rescoring_updates_it(
    client: httpx.Client, task_name: str
) -> None:
    trace_id = str(uuid.uuid4())
    resp = client.post("/api/v1/traces", json={
        "id": trace_id, "task_id": task_name, "prompt_text": "What is 2+2?",
        "response_text": "4", "model": "m",
    })
    assert resp.status_code == 201
    for score, comment in ((0.4, None), (0.9, "right")):
        body: dict[str, Any] = {"score": score, "scored_by": "user"}
        if comment:
            body |= {"comment": comment, "correction": "Four."}
        assert client.post(f"/api/v1/traces/{trace_id}/score", json=body).status_code == 200
    entries = client.get("/api/v1/feedback", params={"task_id": task_name}).json()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["trace_id"] == trace_id
    assert (entry["inputs"], entry["output"], entry["score"]) == (
        {"prompt": "What is 2+2?"}, "4", 0.9
    )
    assert (entry["comment"], entry["correction"]) == ("right", "Four.")
    assert client.get(f"/api/v1/tasks/{task_name}").json()["feedback_count"] == 1


def test_a_calls_own_entry_arriving_in_a_batch_after_its_score_fills_in_that_entry(
    client: httpx.Client, task_name: str
) -> None:
    trace_id = str(uuid.uuid4())
    trace = {"id": trace_id, "task_id": task_name, "prompt_text": "Summarize: the lift",
             "response_text": "Lift broken.", "model": "m"}
    assert client.post("/api/v1/ingest", json={"traces": [trace]}).status_code == 207
    assert client.post(f"/api/v1/traces/{trace_id}/score", json={"score": 0.8}).status_code == 200
    own = {"id": str(uuid.uuid4()), "task_id": task_name, "inputs": {"ticket": "the lift"},
           "output": "Lift broken.", "metadata": {"trace_id": trace_id}}
    other = {"id": str(uuid.uuid4()), "task_id": task_name, "inputs": {"ticket": "x"},
             "output": "y", "score": 0.5}
    resp = client.post("/api/v1/ingest", json={"feedback": [own, other]})
    assert resp.status_code == 207 and resp.json()["errors"] == []
    entries = client.get("/api/v1/feedback", params={"task_id": task_name}).json()
    linked = [e for e in entries if e.get("trace_id") == trace_id]
    assert len(entries) == 2 and len(linked) == 1  # filled in, not a second entry
    assert (linked[0]["inputs"], linked[0]["score"]) == ({"ticket": "the lift"}, 0.8)
    assert client.get(f"/api/v1/tasks/{task_name}").json()["feedback_count"] == 2


def test_a_correction_on_a_trace_without_response_is_422_and_changes_nothing(
    client: httpx.Client, task_name: str
) -> None:
    trace_id = str(uuid.uuid4())
    client.post("/api/v1/traces", json={"id": trace_id, "task_id": task_name})
    resp = client.post(f"/api/v1/traces/{trace_id}/score",
                       json={"score": 0.5, "correction": "x"})
    assert resp.status_code == 422 and "correction" in resp.json()["detail"]
    assert client.get(f"/api/v1/traces/{trace_id}").json()["score"] is None
    assert client.get("/api/v1/feedback", params={"task_id": task_name}).json() == []


# --- no junk versions ----------------------------------------------------------------------


def test_three_optimizations_on_unchanged_feedback_leave_exactly_one_version(
    client: httpx.Client, task_name: str, wait_job: JobWaiter
) -> None:
    _task(client, task_name)
    for i in range(4):
        client.post("/api/v1/feedback", json={
            "task_id": task_name, "inputs": {"q": str(i)}, "output": f"a{i}", "score": 0.9,
        })
    jobs = []
    for _ in range(3):
        started = client.post(f"/api/v1/optimize/{task_name}").json()["job"]
        jobs.append(wait_job(client, started["id"]))
    assert [j["status"] for j in jobs] == ["SUCCESS"] * 3
    assert jobs[0]["prompt_version_id"] is not None
    for job in jobs[1:]:
        assert job["prompt_version_id"] is None
        assert "identical to version 1" in job["job_metadata"]["no_new_version"]
        assert job["job_metadata"]["same_as_version"] == 1
    assert len(_versions(client, task_name)) == 1


def test_threshold_jobs_need_new_scored_feedback(client: httpx.Client, task_name: str) -> None:
    _task(client, task_name, feedback_threshold=2)
    for i in range(6):  # unscored: nothing to learn from
        client.post("/api/v1/feedback", json={"task_id": task_name, "output": f"o{i}"})
    assert client.get("/api/v1/jobs", params={"task_id": task_name}).json() == []
    client.post("/api/v1/feedback", json={"task_id": task_name, "output": "o", "score": 0.8})
    jobs = client.get("/api/v1/jobs", params={"task_id": task_name}).json()
    assert [j["triggered_by"] for j in jobs] == ["threshold"]


# --- the optimizer prefers corrections -----------------------------------------------------


def test_a_correction_is_preferred_as_a_demonstration() -> None:
    examples = [
        optimizer.Example(id="a", inputs={"q": "1"}, output="great", score=1.0),
        optimizer.Example(id="b", inputs={"q": "2"}, output="bad", score=0.1,
                          correction="fixed"),
        optimizer.Example(id="c", inputs={"q": "3"}, output="poor", score=0.2),
    ]
    demos = optimizer.select_demos(examples, k=2)
    assert [d.id for d in demos] == ["b", "a"]
    text = optimizer.build_prompt("Base.", demos)
    assert 'Output: "fixed"' in text and 'Output: "bad"' not in text
    assert 'Output: "poor"' not in text


def test_stored_comments_reach_the_optimizer_and_make_auto_choose_gepa(tmp_path: Path) -> None:
    from kaizen_sdk.models import FeedbackRequest
    from kaizen_server.optimize import dspy_optimizer

    store = Store(str(tmp_path / "c.db"))
    try:
        for i, comment in enumerate((None, "too long, say it in one line")):
            store.add_feedback(FeedbackRequest(task_id="critiqued", inputs={"i": i}, output="o",
                                               score=0.5, comment=comment))
        task_id = str(store.get_task("critiqued").id)
        examples = store.scored_examples(task_id)
        assert [e.comment for e in examples] == [None, "too long, say it in one line"]
        assert dspy_optimizer.choose_strategy({}, examples) == "gepa"
        assert dspy_optimizer.choose_strategy({}, examples[:1]) == "bootstrap"
    finally:
        store.close()
