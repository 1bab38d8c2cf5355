"""Every route of the local CT server over real HTTP, decoded with the SDK's wire models."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk import models as m
from kaizen_server import LocalServer
from kaizen_server.optimize import fewshot as opt

T = TypeVar("T")
JobWaiter = Callable[[httpx.Client, str], dict[str, Any]]


def _ok(resp: httpx.Response, status: int, into: type[T]) -> T:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    return m.decode(resp.content, into)


def _feedback(client: httpx.Client, task: str, **fields: Any) -> m.FeedbackResult:
    body = {"task_id": task, **fields}
    return _ok(client.post("/api/v1/feedback", json=body), 201, m.FeedbackResult)


# --- health, openapi ---------------------------------------------------------------------


def test_health_needs_no_key(local_server: LocalServer) -> None:
    resp = httpx.get(f"{local_server.base_url}/api/v1/health")
    health = _ok(resp, 200, m.Health)
    assert health.status == "ok"
    assert health.version == "0.1.0"


EXPECTED_ROUTES = {
    ("post", "/api/v1/feedback"),
    ("get", "/api/v1/feedback"),
    ("get", "/api/v1/prompts/{task_id}"),
    ("get", "/api/v1/prompts/{task_id}/versions"),
    ("post", "/api/v1/prompts/{task_id}/versions"),
    ("post", "/api/v1/prompts/{task_id}/activate"),
    ("put", "/api/v1/prompts/{task_id}/labels/{label}"),
    ("delete", "/api/v1/prompts/{task_id}/labels/{label}"),
    ("post", "/api/v1/optimize/{task_id}"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/jobs/{job_id}/calls"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{task_id}"),
    ("patch", "/api/v1/tasks/{task_id}"),
    ("post", "/api/v1/tasks"),
    ("post", "/api/v1/traces"),
    ("get", "/api/v1/traces/{trace_id}"),
    ("get", "/api/v1/traces"),
    ("post", "/api/v1/traces/{trace_id}/score"),
    ("post", "/api/v1/ingest"),
    ("get", "/api/v1/health"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/rollouts/{task_id}"),
    ("get", "/api/v1/rollouts/{task_id}"),
    ("post", "/api/v1/rollouts/{task_id}/stop"),
    ("post", "/api/v1/keys"),
    ("get", "/api/v1/keys"),
    ("delete", "/api/v1/keys/{key_id}"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/rollouts/{task_id}/approve"),
    ("post", "/api/v1/tasks/{task_id}/evaluators"),
    ("get", "/api/v1/tasks/{task_id}/evaluators"),
    ("get", "/api/v1/tasks/{task_id}/evaluators/{evaluator}"),
    ("patch", "/api/v1/tasks/{task_id}/evaluators/{evaluator}"),
    ("delete", "/api/v1/tasks/{task_id}/evaluators/{evaluator}"),
    ("post", "/v1/traces"),
    ("get", "/api/v1/models/unpriced"),
    ("get", "/api/v1/tasks/{task_id}/costs"),
}


def test_openapi_lists_every_route(local_server: LocalServer) -> None:
    resp = httpx.get(f"{local_server.base_url}/api/v1/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"] == "3.1.0"
    found = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert found == EXPECTED_ROUTES
    schemas = doc["components"]["schemas"]
    for name in ("Task", "Prompt", "FeedbackResult", "Job", "OptimizeResult", "CostEstimate",
                 "TraceResult", "IngestResult", "Health", "ErrorBody", "FeedbackRequest",
                 "TraceRequest", "TaskCreateRequest", "ActivateRequest", "ScoreRequest"):
        assert name in schemas, name
    feedback_post = doc["paths"]["/api/v1/feedback"]["post"]
    assert feedback_post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackRequest"
    }
    assert "201" in feedback_post["responses"] and "422" in feedback_post["responses"]
    assert doc["paths"]["/api/v1/health"]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["ApiKey"]["name"] == "X-API-Key"


# --- tasks -------------------------------------------------------------------------------


def test_create_get_list_task_by_id_and_name(client: httpx.Client, task_name: str) -> None:
    created = _ok(
        client.post("/api/v1/tasks", json={"name": task_name, "description": "d",
                                           "feedback_threshold": 7, "schema_json": {"a": 1}}),
        201, m.Task,
    )
    assert (created.name, created.description, created.feedback_threshold) == (task_name, "d", 7)
    assert created.schema_json == {"a": 1}
    assert created.feedback_count == 0
    assert created.threshold_progress == "0/7"
    assert created.created_at is not None and created.created_at.utcoffset() is not None
    by_id = _ok(client.get(f"/api/v1/tasks/{created.id}"), 200, m.Task)
    by_name = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert by_id == by_name == created
    listed = _ok(client.get("/api/v1/tasks"), 200, list[m.Task])
    assert [t for t in listed if t.id == created.id] == [created]


def test_duplicate_task_name_is_409(client: httpx.Client, task_name: str) -> None:
    _ok(client.post("/api/v1/tasks", json={"name": task_name}), 201, m.Task)
    resp = client.post("/api/v1/tasks", json={"name": task_name})
    err = _ok(resp, 409, m.ErrorBody)
    assert task_name in (err.detail or "")
    tasks = _ok(client.get("/api/v1/tasks"), 200, list[m.Task])
    assert sum(t.name == task_name for t in tasks) == 1


def test_task_name_with_space_is_addressable(client: httpx.Client, task_name: str) -> None:
    name = f"{task_name} with space"
    _ok(client.post("/api/v1/tasks", json={"name": name}), 201, m.Task)
    got = _ok(client.get(f"/api/v1/tasks/{name}"), 200, m.Task)
    assert got.name == name


def test_unknown_task_is_404(client: httpx.Client) -> None:
    for path in (f"/api/v1/tasks/{uuid.uuid4()}", "/api/v1/tasks/no-such-task",
                 "/api/v1/prompts/no-such-task", "/api/v1/prompts/no-such-task/versions"):
        _ok(client.get(path), 404, m.ErrorBody)
    _ok(client.post("/api/v1/optimize/no-such-task"), 404, m.ErrorBody)


# --- feedback ----------------------------------------------------------------------------


def test_feedback_creates_task_by_name_and_counts(client: httpx.Client, task_name: str) -> None:
    fb = _feedback(client, task_name, inputs={"q": "hi"}, output={"a": 1}, score=0.5,
                   source="user", metadata={"k": "v"})
    assert (fb.inputs, fb.output, fb.score, fb.source, fb.metadata) == (
        {"q": "hi"}, {"a": 1}, 0.5, "user", {"k": "v"}
    )
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert fb.task_id == task.id
    assert task.feedback_threshold == 50
    assert (task.feedback_count, task.threshold_progress) == (1, "1/50")
    _feedback(client, str(task.id), output="by uuid")
    task = _ok(client.get(f"/api/v1/tasks/{task.id}"), 200, m.Task)
    assert (task.feedback_count, task.threshold_progress) == (2, "2/50")


def test_feedback_for_unknown_task_uuid_is_404(client: httpx.Client) -> None:
    unknown = str(uuid.uuid4())
    resp = client.post("/api/v1/feedback", json={"task_id": unknown, "score": 1.0})
    err = _ok(resp, 404, m.ErrorBody)
    assert unknown in (err.detail or "")
    _ok(client.get(f"/api/v1/tasks/{unknown}"), 404, m.ErrorBody)


def test_feedback_id_is_idempotent(client: httpx.Client, task_name: str) -> None:
    fid = str(uuid.uuid4())
    first = _feedback(client, task_name, id=fid, score=0.9, output="one")
    again = _feedback(client, task_name, id=fid, score=0.1, output="two")
    assert str(first.id) == str(again.id) == fid
    assert again.output == "one" and again.score == 0.9
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert task.feedback_count == 1
    listed = _ok(client.get("/api/v1/feedback", params={"task_id": task_name}), 200,
                 list[m.FeedbackResult])
    assert [str(f.id) for f in listed] == [fid]


def test_list_feedback_newest_first_with_limit(client: httpx.Client, task_name: str) -> None:
    ids = [str(_feedback(client, task_name, output=i).id) for i in range(5)]
    listed = _ok(client.get("/api/v1/feedback", params={"task_id": task_name, "limit": 3}),
                 200, list[m.FeedbackResult])
    assert [str(f.id) for f in listed] == ids[::-1][:3]
    everything = _ok(client.get("/api/v1/feedback", params={"limit": 1000, "task_id": ""}),
                     200, list[m.FeedbackResult])
    assert {str(f.id) for f in everything} >= set(ids)


# --- traces ------------------------------------------------------------------------------


def test_trace_creates_baseline_prompt(client: httpx.Client, task_name: str) -> None:
    body = {"task_id": task_name, "prompt_text": "Summarize {{ text }}", "response_text": "ok",
            "model": "gpt-x", "tokens": 12, "latency_ms": 3.5, "metadata": {"env": "test"},
            "prompt_is_default": True}  # the decorator's default_prompt: it may be version 1
    trace = _ok(client.post("/api/v1/traces", json=body), 201, m.TraceResult)
    assert (trace.prompt_text, trace.response_text, trace.model, trace.tokens,
            trace.latency_ms, trace.metadata) == ("Summarize {{ text }}", "ok", "gpt-x", 12, 3.5,
                                                  {"env": "test"})
    assert trace.score is None
    prompt = _ok(client.get(f"/api/v1/prompts/{task_name}"), 200, m.Prompt)
    assert (prompt.version_number, prompt.status, prompt.optimizer, prompt.prompt_text) == (
        1, "active", "baseline", "Summarize {{ text }}"
    )
    assert trace.prompt_version_id == prompt.id
    # A later, different prompt text does not make another version.
    _ok(client.post("/api/v1/traces", json={**body, "prompt_text": "other"}), 201, m.TraceResult)
    versions = _ok(client.get(f"/api/v1/prompts/{task_name}/versions"), 200, list[m.Prompt])
    assert [v.version_number for v in versions] == [1]


def test_trace_get_list_score(client: httpx.Client, task_name: str) -> None:
    ids = [
        str(_ok(client.post("/api/v1/traces", json={"task_id": task_name, "response_text": str(i)}),
                201, m.TraceResult).id)
        for i in range(4)
    ]
    got = _ok(client.get(f"/api/v1/traces/{ids[0]}"), 200, m.TraceResult)
    assert got.response_text == "0"
    listed = _ok(client.get("/api/v1/traces", params={"task_id": task_name, "limit": 3}), 200,
                 list[m.TraceResult])
    assert [str(t.id) for t in listed] == ids[::-1][:3]
    scored = _ok(client.post(f"/api/v1/traces/{ids[1]}/score",
                             json={"score": 0.25, "scored_by": "judge"}), 200, m.TraceResult)
    assert (str(scored.id), scored.score, scored.scored_by) == (ids[1], 0.25, "judge")
    again = _ok(client.get(f"/api/v1/traces/{ids[1]}"), 200, m.TraceResult)
    assert (again.score, again.scored_by) == (0.25, "judge")
    everything = _ok(client.get("/api/v1/traces"), 200, list[m.TraceResult])
    assert str(everything[0].id) == ids[-1] or len(everything) == 100


def test_trace_id_is_idempotent(client: httpx.Client, task_name: str) -> None:
    tid = str(uuid.uuid4())
    body = {"id": tid, "task_id": task_name, "response_text": "first"}
    first = _ok(client.post("/api/v1/traces", json=body), 201, m.TraceResult)
    again = _ok(client.post("/api/v1/traces", json={**body, "response_text": "second"}), 201,
                m.TraceResult)
    assert str(first.id) == str(again.id) == tid and again.response_text == "first"
    listed = _ok(client.get("/api/v1/traces", params={"task_id": task_name}), 200,
                 list[m.TraceResult])
    assert [str(t.id) for t in listed] == [tid]


def test_unknown_trace_is_404(client: httpx.Client) -> None:
    missing = uuid.uuid4()
    _ok(client.get(f"/api/v1/traces/{missing}"), 404, m.ErrorBody)
    _ok(client.post(f"/api/v1/traces/{missing}/score", json={"score": 0.5}), 404, m.ErrorBody)


# --- ingest ------------------------------------------------------------------------------


def test_ingest_keeps_good_items_and_reports_bad(client: httpx.Client, task_name: str) -> None:
    good_trace, good_fb, bad_fb = (str(uuid.uuid4()) for _ in range(3))
    unknown_task = str(uuid.uuid4())
    body = {
        "traces": [
            {"id": good_trace, "task_id": task_name, "prompt_text": "P"},
            {"task_id": 42},
        ],
        "feedback": [
            {"id": good_fb, "task_id": task_name, "score": 1.0},
            {"id": bad_fb, "task_id": task_name, "score": 7},
            {"task_id": unknown_task, "score": 0.5},
            "not an object",
        ],
    }
    result = _ok(client.post("/api/v1/ingest", json=body), 207, m.IngestResult)
    assert result.accepted == 2
    by_detail = [(e.kind, e.id, e.detail) for e in result.errors]
    assert len(by_detail) == 4
    assert ("feedback", bad_fb, "feedback[1]: Expected `float` <= 1.0 - at `$.score`") in by_detail
    assert ("trace", None, "traces[1]: Expected `str`, got `int` - at `$.task_id`") in by_detail
    assert any(kind == "feedback" and unknown_task in detail for kind, _, detail in by_detail)
    assert ("feedback", None, "feedback[3]: Expected `object`, got `str`") in by_detail
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert task.feedback_count == 1
    _ok(client.get(f"/api/v1/traces/{good_trace}"), 200, m.TraceResult)
    # Sending the same batch again changes nothing (ids are idempotent).
    again = _ok(client.post("/api/v1/ingest", json=body), 207, m.IngestResult)
    assert again.accepted == 2
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert task.feedback_count == 1


def test_ingest_rejects_wrong_shape(client: httpx.Client) -> None:
    err = _ok(client.post("/api/v1/ingest", json={"traces": {}}), 422, m.ErrorBody)
    assert "$.traces" in (err.detail or "")
    err = _ok(client.post("/api/v1/ingest", json=[]), 422, m.ErrorBody)
    assert "object" in (err.detail or "")
    # Unknown top-level keys are ignored, as the published IngestRequest schema allows.
    result = _ok(client.post("/api/v1/ingest", json={"trace": [{}]}), 207, m.IngestResult)
    assert (result.accepted, result.errors) == (0, [])


# --- prompts and jobs --------------------------------------------------------------------


def test_optimize_success_then_activate(
    client: httpx.Client, task_name: str, wait_job: JobWaiter
) -> None:
    _ok(client.post("/api/v1/traces", json={"task_id": task_name, "prompt_text": "Answer.",
                                              "prompt_is_default": True}),  # v1
        201, m.TraceResult)
    for i in range(8):
        _feedback(client, task_name, inputs={"q": f"question {i}"}, output=f"answer {i}",
                  score=(i + 3) / 10)
    _feedback(client, task_name, output="unscored")
    result = _ok(client.post(f"/api/v1/optimize/{task_name}"), 202, m.OptimizeResult)
    assert result.job.triggered_by == "manual"
    assert result.job.status in ("PENDING", "RUNNING", "SUCCESS")
    assert (result.cost_estimate.train_size, result.cost_estimate.val_size) == (6, 2)
    assert result.cost_estimate.estimated_cost_usd == 0.0
    assert result.cost_estimate.estimated_llm_calls == 0
    job = msgspec.convert(wait_job(client, str(result.job.id)), m.Job, strict=False)
    assert job.status == "SUCCESS", job.error_message
    assert job.progress_step == "done" and job.completed_at is not None
    assert job.job_metadata is not None and job.job_metadata["train_size"] == 6
    versions = _ok(client.get(f"/api/v1/prompts/{task_name}/versions"), 200, list[m.Prompt])
    assert [(v.version_number, v.status) for v in versions] == [(2, "candidate"), (1, "active")]
    candidate = versions[0]
    assert job.prompt_version_id == candidate.id
    assert candidate.optimizer == "local-fewshot"
    # The version is exactly what the pure optimizer makes from the stored scored feedback.
    stored = _ok(client.get("/api/v1/feedback", params={"task_id": task_name}), 200,
                 list[m.FeedbackResult])
    examples = [opt.Example(id=str(f.id), inputs=f.inputs, output=f.output, score=f.score)
                for f in stored if f.score is not None]
    expected = opt.optimize("Answer.", examples)
    assert candidate.prompt_text == expected.prompt_text
    assert candidate.prompt_text.startswith("Answer.\n\n### Examples\n\nExample 1:")
    assert candidate.eval_score == expected.eval_score
    assert job.job_metadata["demo_feedback_ids"] == list(expected.demo_ids)

    active = _ok(client.post(f"/api/v1/prompts/{task_name}/activate",
                             json={"version_id": str(candidate.id)}), 200, m.Prompt)
    assert (active.id, active.status) == (candidate.id, "active")
    assert _ok(client.get(f"/api/v1/prompts/{task_name}"), 200, m.Prompt).id == candidate.id
    versions = _ok(client.get(f"/api/v1/prompts/{task_name}/versions"), 200, list[m.Prompt])
    assert [(v.version_number, v.status) for v in versions] == [(2, "active"), (1, "inactive")]
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert task.active_prompt_score == candidate.eval_score
    assert task.last_optimization is not None
    jobs = _ok(client.get("/api/v1/jobs", params={"task_id": task_name}), 200, list[m.Job])
    assert [j.id for j in jobs] == [job.id]


def test_optimize_without_scored_feedback_fails(
    client: httpx.Client, task_name: str, wait_job: JobWaiter
) -> None:
    _feedback(client, task_name, output="no score")
    result = _ok(client.post(f"/api/v1/optimize/{task_name}"), 202, m.OptimizeResult)
    assert (result.cost_estimate.train_size, result.cost_estimate.val_size) == (0, 0)
    job = msgspec.convert(wait_job(client, str(result.job.id)), m.Job, strict=False)
    assert job.status == "FAILURE"
    assert job.error_message is not None and "no scored feedback" in job.error_message
    assert job.prompt_version_id is None
    versions = _ok(client.get(f"/api/v1/prompts/{task_name}/versions"), 200, list[m.Prompt])
    assert versions == []


def test_threshold_triggers_one_job(
    client: httpx.Client, task_name: str, wait_job: JobWaiter
) -> None:
    _ok(client.post("/api/v1/tasks", json={"name": task_name, "feedback_threshold": 3}), 201,
        m.Task)
    for i in range(2):
        _feedback(client, task_name, output=i, score=0.5)
    assert _ok(client.get("/api/v1/jobs", params={"task_id": task_name}), 200, list[m.Job]) == []
    assert _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task).threshold_progress == "2/3"
    _feedback(client, task_name, output=2, score=1.0)
    jobs = _ok(client.get("/api/v1/jobs", params={"task_id": task_name}), 200, list[m.Job])
    assert len(jobs) == 1 and jobs[0].triggered_by == "threshold"
    assert jobs[0].feedback_count == 3
    done = wait_job(client, str(jobs[0].id))
    assert done["status"] == "SUCCESS"
    task = _ok(client.get(f"/api/v1/tasks/{task_name}"), 200, m.Task)
    assert (task.feedback_count, task.threshold_progress) == (3, "0/3")


def test_activate_errors(client: httpx.Client, task_name: str) -> None:
    _ok(client.post("/api/v1/traces", json={"task_id": task_name, "prompt_text": "P"}), 201,
        m.TraceResult)
    path = f"/api/v1/prompts/{task_name}/activate"
    _ok(client.post(path, json={"version_id": str(uuid.uuid4())}), 404, m.ErrorBody)
    err = _ok(client.post(path, json={"version_id": "nope"}), 422, m.ErrorBody)
    assert "$.version_id" in (err.detail or "")
    err = _ok(client.post(path, json={}), 422, m.ErrorBody)
    assert "version_id" in (err.detail or "")


def test_unknown_job_is_404(client: httpx.Client) -> None:
    _ok(client.get(f"/api/v1/jobs/{uuid.uuid4()}"), 404, m.ErrorBody)
    _ok(client.get("/api/v1/jobs", params={"task_id": "no-such-task"}), 404, m.ErrorBody)


# --- auth --------------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/v1/tasks"),
    ("POST", "/api/v1/tasks"),
    ("POST", "/api/v1/feedback"),
    ("GET", "/api/v1/feedback"),
    ("GET", "/api/v1/prompts/x"),
    ("POST", "/api/v1/optimize/x"),
    ("GET", "/api/v1/jobs"),
    ("POST", "/api/v1/traces"),
    ("POST", "/api/v1/ingest"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_missing_or_wrong_key_is_401(
    local_server: LocalServer, method: str, path: str, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    resp = httpx.request(method, f"{local_server.base_url}{path}", headers=headers,
                         json={"task_id": "x", "name": "x"},
                         verify=False)  # plain HTTP: no CA bundle to load (~23 ms of CPU)
    err = _ok(resp, 401, m.ErrorBody)
    assert "X-API-Key" in (err.detail or "")
    assert local_server.api_key not in resp.text


def test_rejected_request_changes_nothing(
    local_server: LocalServer, client: httpx.Client, task_name: str
) -> None:
    resp = httpx.post(f"{local_server.base_url}/api/v1/feedback", json={"task_id": task_name})
    assert resp.status_code == 401
    _ok(client.get(f"/api/v1/tasks/{task_name}"), 404, m.ErrorBody)
