"""Chat versions (messages + model settings) and labels on the local server, over real HTTP."""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

import httpx
import pytest
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk.models import MAX_PROMPT_CHARS
from kaizen_sdk.templates import MAX_PLACEHOLDERS
from kaizen_server.storage.sqlite import Store

MESSAGES = [
    {"role": "system", "content": "You triage support tickets."},
    {"role": "user", "content": "Ticket: {{ ticket }}"},
]
CONFIG = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 64, "stop": ["\n\n"]}


def _versions(client: httpx.Client, task: str) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/prompts/{task}/versions")
    assert resp.status_code == 200, resp.text
    versions: list[dict[str, Any]] = resp.json()
    return versions


def _new_task(client: httpx.Client, task: str) -> None:
    resp = client.post("/api/v1/tasks", json={"name": task, "prompt_text": "Plain {{ x }}"})
    assert resp.status_code == 201, resp.text


def test_chat_version_round_trips(client: httpx.Client, task_name: str) -> None:
    _new_task(client, task_name)
    resp = client.post(
        f"/api/v1/prompts/{task_name}/versions",
        json={"messages": MESSAGES, "config": CONFIG, "activate": True},
    )
    assert resp.status_code == 201, resp.text
    made = resp.json()
    assert made["messages"] == MESSAGES
    assert made["config"] == CONFIG
    # old clients read prompt_text: the messages under role headers
    assert made["prompt_text"] == (
        "[system]\nYou triage support tickets.\n\n[user]\nTicket: {{ ticket }}"
    )
    served = client.get(f"/api/v1/prompts/{task_name}").json()
    assert (served["id"], served["messages"], served["config"]) == (
        made["id"], MESSAGES, CONFIG
    )
    assert served["labels"] == ["production"]
    # a text version carries neither
    first = _versions(client, task_name)[-1]
    assert (first["messages"], first["config"], first["labels"]) == (None, None, [])


def test_task_created_with_a_chat_prompt(client: httpx.Client, task_name: str) -> None:
    resp = client.post(
        "/api/v1/tasks", json={"name": task_name, "messages": MESSAGES, "config": CONFIG}
    )
    assert resp.status_code == 201, resp.text
    served = client.get(f"/api/v1/prompts/{task_name}").json()
    assert (served["version_number"], served["messages"], served["config"]) == (
        1, MESSAGES, CONFIG
    )


def test_settings_only_version(client: httpx.Client, task_name: str) -> None:
    """A text prompt may carry settings too: the model-only change of a text prompt."""
    _new_task(client, task_name)
    resp = client.post(
        f"/api/v1/prompts/{task_name}/versions",
        json={"prompt_text": "Plain {{ x }}", "config": {"model": "small-model"}},
    )
    assert resp.status_code == 201, resp.text
    assert (resp.json()["messages"], resp.json()["config"]) == (None, {"model": "small-model"})


BAD: list[tuple[dict[str, Any], str]] = [
    ({"messages": [{"content": "x"}]}, "role"),
    ({"messages": [{"role": "user"}]}, "content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": []}, "messages"),
    ({"messages": MESSAGES, "config": ["model", "x"]}, "config"),
    ({"messages": MESSAGES, "config": "gpt-4o"}, "config"),
    ({"messages": MESSAGES, "config": {"model": 3}}, "config.model"),
    ({"messages": MESSAGES, "config": {"messages": []}}, "config.messages"),
    ({"messages": MESSAGES, "prompt_text": "something else"}, "prompt_text"),
    ({"activate": True}, "prompt_text"),
    (
        {"messages": [{"role": "user", "content": "{{ a }}" * (MAX_PLACEHOLDERS // 2 + 1)}] * 2},
        "placeholders",
    ),
    (
        {"messages": [{"role": "user", "content": "x" * 1000}],
         "config": {"tools": ["y" * MAX_PROMPT_CHARS]}},
        "config",
    ),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_chat_version_is_422_naming_the_field(
    client: httpx.Client, task_name: str, body: dict[str, Any], field: str
) -> None:
    _new_task(client, task_name)
    resp = client.post(f"/api/v1/prompts/{task_name}/versions", json=body)
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["detail"]
    assert len(_versions(client, task_name)) == 1  # nothing stored


def test_bad_chat_prompt_on_task_creation_stores_nothing(
    client: httpx.Client, task_name: str
) -> None:
    resp = client.post(
        "/api/v1/tasks",
        json={"name": task_name, "messages": [{"role": "bot", "content": "x"}]},
    )
    assert resp.status_code == 422, resp.text
    assert "messages[0].role" in resp.json()["detail"]
    assert client.get(f"/api/v1/tasks/{task_name}").status_code == 404


def test_labels_set_move_serve_and_remove(client: httpx.Client, task_name: str) -> None:
    _new_task(client, task_name)
    v2 = client.post(
        f"/api/v1/prompts/{task_name}/versions", json={"messages": MESSAGES, "config": CONFIG}
    ).json()
    v3 = client.post(
        f"/api/v1/prompts/{task_name}/versions", json={"prompt_text": "Third {{ x }}"}
    ).json()
    assert client.get(f"/api/v1/prompts/{task_name}?label=staging").status_code == 404

    resp = client.put(f"/api/v1/prompts/{task_name}/labels/staging",
                      json={"version_id": v2["id"]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["labels"] == ["staging"]
    staged = client.get(f"/api/v1/prompts/{task_name}", params={"label": "staging"})
    assert staged.status_code == 200
    assert (staged.json()["id"], staged.json()["config"]) == (v2["id"], CONFIG)
    # the active version is unchanged, and production is what "active" means
    active = client.get(f"/api/v1/prompts/{task_name}").json()
    assert active["version_number"] == 1
    assert active["labels"] == ["production"]
    assert client.get(f"/api/v1/prompts/{task_name}?label=production").json()["id"] == active["id"]

    # ETag/304 per label; moving the label changes the answer
    tag = staged.headers["ETag"]
    same = client.get(f"/api/v1/prompts/{task_name}?label=staging",
                      headers={"If-None-Match": tag})
    assert same.status_code == 304
    client.put(f"/api/v1/prompts/{task_name}/labels/staging", json={"version_id": v3["id"]})
    moved = client.get(f"/api/v1/prompts/{task_name}?label=staging",
                       headers={"If-None-Match": tag})
    assert (moved.status_code, moved.json()["id"]) == (200, v3["id"])
    labels = {v["version_number"]: v["labels"] for v in _versions(client, task_name)}
    assert labels == {3: ["staging"], 2: [], 1: ["production"]}

    # activation moves production, never another label
    client.post(f"/api/v1/prompts/{task_name}/activate", json={"version_id": v3["id"]})
    labels = {v["version_number"]: v["labels"] for v in _versions(client, task_name)}
    assert labels == {3: ["production", "staging"], 2: [], 1: []}

    removed = client.delete(f"/api/v1/prompts/{task_name}/labels/staging")
    assert (removed.status_code, removed.json()["id"]) == (200, v3["id"])
    gone = client.get(f"/api/v1/prompts/{task_name}?label=staging")
    assert gone.status_code == 404
    assert "staging" in gone.json()["detail"]
    assert client.delete(f"/api/v1/prompts/{task_name}/labels/staging").status_code == 404

    actions = [
        (e["action"], e["detail"])
        for e in client.get("/api/v1/audit", params={"task_id": task_name}).json()
        if e["action"].startswith("label.")
    ]
    assert actions == [
        ("label.removed", "staging (was on v3)"),
        ("label.set", "staging -> v3"),
        ("label.set", "staging -> v2"),
    ]


@pytest.mark.parametrize(
    ("label", "body", "status", "field"),
    [
        ("production", None, 422, "production"),
        ("Staging", None, 422, "label"),
        ("x" * 65, None, 422, "label"),
        ("staging", {"version_id": str(uuid.uuid4())}, 404, "version_id"),
        ("staging", {"version": "x"}, 422, "version"),
    ],
)
def test_bad_label_requests(
    client: httpx.Client, task_name: str, label: str, body: dict[str, Any] | None,
    status: int, field: str,
) -> None:
    _new_task(client, task_name)
    version = _versions(client, task_name)[0]["id"]
    resp = client.put(f"/api/v1/prompts/{task_name}/labels/{label}",
                      json=body or {"version_id": version})
    assert resp.status_code == status, resp.text
    assert field in resp.json()["detail"]
    assert _versions(client, task_name)[0]["labels"] == ["production"]


def test_label_routes_need_admin(local_server: Any, client: httpx.Client, task_name: str) -> None:
    _new_task(client, task_name)
    version = _versions(client, task_name)[0]["id"]
    key = client.post("/api/v1/keys", json={"name": f"app-{task_name[-8:]}", "scope": "ingest"})
    assert key.status_code == 201, key.text
    with httpx.Client(base_url=local_server.base_url,
                      headers={"X-API-Key": key.json()["secret"]}) as app:
        put = app.put(f"/api/v1/prompts/{task_name}/labels/staging",
                      json={"version_id": version})
        assert put.status_code == 403
        assert client.put(f"/api/v1/prompts/{task_name}/labels/staging",
                          json={"version_id": version}).status_code == 200
        # an application key reads a labelled prompt
        assert app.get(f"/api/v1/prompts/{task_name}?label=staging").status_code == 200
        assert app.delete(f"/api/v1/prompts/{task_name}/labels/staging").status_code == 403


def test_schema_step_10_migrates_a_version_9_file(tmp_path: Any) -> None:
    """A database of schema 9 gains the columns and the label table; its versions read back."""
    path = str(tmp_path / "old.db")
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE prompt_labels")
    conn.execute("ALTER TABLE prompts DROP COLUMN messages")
    conn.execute("ALTER TABLE prompts DROP COLUMN config")
    conn.execute("DELETE FROM schema_version WHERE version >= 10")
    for table in ("rollout_arms", "rollout_latency", "rollout_models"):  # step 13's
        conn.execute(f"DROP TABLE {table}")
    for column in ("trace_retention_limit", "trace_retention_days", "feedback_retention_days"):
        conn.execute(f"ALTER TABLE tasks DROP COLUMN {column}")
    for table in ("evaluator_days", "evaluation_results", "evaluators"):  # step 12's
        conn.execute(f"DROP TABLE {table}")
    conn.execute("ALTER TABLE tasks DROP COLUMN judged_since_job")
    conn.commit()
    conn.close()
    store = Store(path)
    try:
        assert store.schema_version() == 13
        from kaizen_sdk.models import TaskCreateRequest

        store.create_task(TaskCreateRequest(name="t", prompt_text="Hi {{ x }}"))
        assert store.labelled_prompt("t", "production").labels == ["production"]
    finally:
        store.close()


def test_optimized_version_keeps_messages_and_settings(
    client: httpx.Client, task_name: str, wait_job: Any
) -> None:
    """The optimizer changes what is inside the messages; roles, variables and settings stay."""
    resp = client.post(
        "/api/v1/tasks", json={"name": task_name, "messages": MESSAGES, "config": CONFIG}
    )
    assert resp.status_code == 201, resp.text
    for i in range(4):
        client.post("/api/v1/feedback", json={
            "task_id": task_name, "inputs": {"ticket": f"t{i}"}, "output": f"a{i}", "score": 0.9,
        })
    started = client.post(f"/api/v1/optimize/{task_name}").json()["job"]
    job = wait_job(client, started["id"])
    assert job["status"] == "SUCCESS", job
    made = next(v for v in _versions(client, task_name) if v["id"] == job["prompt_version_id"])
    assert made["config"] == CONFIG
    assert [m["role"] for m in made["messages"]] == ["system", "user"]
    assert made["messages"][0] == MESSAGES[0]
    assert made["messages"][1]["content"].startswith("Ticket: {{ ticket }}")
    assert made["messages"][1]["content"] != MESSAGES[1]["content"]  # demonstrations added
    assert made["prompt_text"].startswith("[system]\n")
