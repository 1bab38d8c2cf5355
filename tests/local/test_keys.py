"""Scoped API keys on the local server: what each scope may do, revocation, secrets shown once.

Real HTTP against the session's local server (its own key is the bootstrap key, admin);
every key a test makes has a name of its own.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk import ApiKey, ApiKeyCreated, AsyncCTClient, CTClient
from kaizen_sdk.errors import CTAuthError, CTValidationError
from kaizen_server import LocalServer
from kaizen_server.api.routes import ROUTES, Route
from kaizen_server.domain.keys import hash_secret

INGEST_ROUTES = {
    ("POST", "/api/v1/feedback"),
    ("POST", "/api/v1/traces"),
    ("POST", "/api/v1/ingest"),
    ("POST", "/api/v1/traces/{trace_id}/score"),
    ("GET", "/api/v1/prompts/{task_id}"),
    ("POST", "/v1/traces"),
}
"""Everything an ingest key may call: what an application process needs."""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_key(admin: httpx.Client, scope: str, name: str | None = None) -> dict[str, Any]:
    resp = admin.post("/api/v1/keys", json={"name": name or _name(scope), "scope": scope})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


@pytest.fixture
def as_key(local_server: LocalServer) -> Iterator[Any]:
    """``as_key(secret)``: an httpx client of the shared server sending that key."""
    made: list[httpx.Client] = []

    def factory(secret: str) -> httpx.Client:
        c = httpx.Client(base_url=local_server.base_url, headers={"X-API-Key": secret},
                         timeout=10)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


@pytest.fixture
def world(client: httpx.Client, task_name: str) -> dict[str, str]:
    """A task with an active v1, a candidate v2 and one trace, made with the bootstrap key."""
    resp = client.post("/api/v1/tasks", json={"name": task_name, "prompt_text": "v1 {{ x }}",
                                              "feedback_threshold": 100_000})
    assert resp.status_code == 201, resp.text
    versions = client.get(f"/api/v1/prompts/{task_name}/versions").json()
    v2 = client.post(f"/api/v1/prompts/{task_name}/versions", json={"prompt_text": "v2 {{ x }}"})
    assert v2.status_code == 201, v2.text
    trace = client.post("/api/v1/traces", json={"task_id": task_name, "response_text": "r"})
    assert trace.status_code == 201, trace.text
    evaluator = client.post(f"/api/v1/tasks/{task_name}/evaluators",
                            json={"name": "caps", "kind": "regex", "pattern": "^[A-Z]"})
    assert evaluator.status_code == 201, evaluator.text
    victim = make_key(client, "read")
    job = client.post(f"/api/v1/optimize/{task_name}")
    assert job.status_code == 202, job.text
    return {
        "task_id": task_name, "v1": versions[0]["id"], "v2": v2.json()["id"],
        "trace_id": trace.json()["id"], "key_id": victim["id"], "job_id": job.json()["job"]["id"],
        "label": "staging", "evaluator": "caps",
    }


def _path(route: Route, world: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: world[m.group(1)], route.template)


def _body(route: Route, world: dict[str, str]) -> dict[str, Any] | None:
    """A valid body for each write, so only the scope can stand in the way."""
    bodies: dict[str, dict[str, Any]] = {
        "create_task": {"name": _name("t")},
        "add_feedback": {"task_id": world["task_id"], "score": 0.5},
        "activate": {"version_id": world["v2"]},
        "create_version": {"prompt_text": "v3 {{ x }}"},
        "add_trace": {"task_id": world["task_id"], "response_text": "r"},
        "score_trace": {"score": 0.5},
        "ingest": {"traces": [{"task_id": world["task_id"], "response_text": "r"}]},
        "start_rollout": {"candidate_version_id": world["v2"], "share": 0.5},
        "stop_rollout": {"action": "rollback"},
        "create_key": {"name": _name("k"), "scope": "admin"},
        "create_evaluator": {"name": _name("e"), "kind": "length", "max_length": 9},
        "update_evaluator": {"sample_rate": 0.5},
    }
    return bodies.get(route.operation, {} if route.method != "GET" else None)


def _send(c: httpx.Client, route: Route, world: dict[str, str]) -> httpx.Response:
    body = _body(route, world)
    return c.request(route.method, _path(route, world), json=body)


def test_an_ingest_key_sends_data_and_reads_prompts_but_changes_nothing_served(
    client: httpx.Client, as_key: Any, world: dict[str, str]
) -> None:
    app = as_key(make_key(client, "ingest")["secret"])
    answers = {(r.method, r.template): _send(app, r, world) for r in ROUTES if not r.public}
    allowed = {k: v.status_code for k, v in answers.items() if k in INGEST_ROUTES}
    assert allowed == {
        ("POST", "/api/v1/feedback"): 201,
        ("POST", "/api/v1/traces"): 201,
        ("POST", "/api/v1/ingest"): 207,
        ("POST", "/api/v1/traces/{trace_id}/score"): 200,
        ("GET", "/api/v1/prompts/{task_id}"): 200,
        ("POST", "/v1/traces"): 200,
    }
    refused = {k: v.status_code for k, v in answers.items() if k not in INGEST_ROUTES}
    assert set(refused.values()) == {403}, refused
    for must in (("POST", "/api/v1/prompts/{task_id}/activate"),
                 ("POST", "/api/v1/prompts/{task_id}/versions"),
                 ("POST", "/api/v1/rollouts/{task_id}"),
                 ("POST", "/api/v1/rollouts/{task_id}/stop"),
                 ("POST", "/api/v1/optimize/{task_id}"),
                 ("POST", "/api/v1/keys"), ("GET", "/api/v1/keys"),
                 ("DELETE", "/api/v1/keys/{key_id}"), ("POST", "/api/v1/tasks")):
        resp = answers[must]
        needs = "a read or admin" if must[0] == "GET" else "an admin"
        assert resp.json()["title"] == "Forbidden"
        assert resp.json()["detail"].startswith(f"this needs {needs} key; the key 'ingest-")
        assert resp.json()["detail"].endswith(f"has the ingest scope ({must[0]} {must[1]}).")
    # nothing it was refused happened: v1 still served, no rollout, the victim key alive
    assert client.get(f"/api/v1/prompts/{world['task_id']}").json()["id"] == world["v1"]
    assert client.get(f"/api/v1/rollouts/{world['task_id']}").status_code == 404
    keys = {k["id"]: k for k in client.get("/api/v1/keys", params={"limit": 1000}).json()}
    assert keys[world["key_id"]]["revoked_at"] is None


def test_a_read_key_reads_everything_and_changes_nothing(
    client: httpx.Client, as_key: Any, world: dict[str, str]
) -> None:
    reader = as_key(make_key(client, "read")["secret"])
    before = client.get("/api/v1/audit", params={"limit": 1}).json()[0]["id"]
    answers = {(r.method, r.template): _send(reader, r, world) for r in ROUTES if not r.public}
    writes = {k: v.status_code for k, v in answers.items() if k[0] != "GET"}
    assert writes and set(writes.values()) == {403}, writes
    assert answers[("POST", "/api/v1/traces")].json()["detail"].startswith(
        "this needs an ingest or admin key; the key 'read-")
    reads = {k: v.status_code for k, v in answers.items() if k[0] == "GET"}
    assert reads.pop(("GET", "/api/v1/rollouts/{task_id}")) == 404  # none started
    assert set(reads.values()) == {200}, reads
    # the audit log did not move: the read key changed nothing
    assert client.get("/api/v1/audit", params={"limit": 1}).json()[0]["id"] == before


def test_a_revoked_key_gets_401_and_revoking_again_changes_nothing(
    client: httpx.Client, as_key: Any, task_name: str
) -> None:
    key = make_key(client, "ingest")
    app = as_key(key["secret"])
    assert app.post("/api/v1/traces", json={"task_id": task_name}).status_code == 201
    resp = client.delete(f"/api/v1/keys/{key['id']}")
    assert resp.status_code == 200, resp.text
    revoked = resp.json()
    assert revoked["revoked_at"] is not None and "secret" not in revoked
    for _ in range(2):
        resp = app.post("/api/v1/traces", json={"task_id": task_name})
        assert (resp.status_code, resp.json()["detail"]) == (
            401, "The X-API-Key header is not valid.")
    assert app.get(f"/api/v1/prompts/{task_name}").status_code == 401
    again = client.delete(f"/api/v1/keys/{key['id']}")
    assert again.status_code == 200 and again.json() == revoked
    entries = client.get("/api/v1/audit", params={"limit": 1000}).json()
    assert [e["action"] for e in entries if e["target"] == key["id"]] == [
        "key.revoked", "key.created"]
    # the name is free again
    assert make_key(client, "ingest", key["name"])["id"] != key["id"]
    assert client.delete(f"/api/v1/keys/{uuid.uuid4()}").status_code == 404


def test_key_requests_are_checked(client: httpx.Client) -> None:
    name = _name("dup")
    make_key(client, "read", name)
    cases = [
        ({"name": name, "scope": "read"}, 409, f"a key named {name!r} already exists"),
        ({"name": _name("x"), "scope": "owner"}, 422, "$.scope"),
        ({"name": "has space", "scope": "read"}, 422, "`name` must be letters, digits or"),
        ({"name": "-dash", "scope": "read"}, 422, "`name` must be letters, digits or"),
        ({"name": "", "scope": "read"}, 422, "$.name"),
        ({"name": "x" * 65, "scope": "read"}, 422, "$.name"),
        ({"name": "system", "scope": "admin"}, 422, "'system' is reserved"),
        ({"name": "bootstrap", "scope": "admin"}, 422, "'bootstrap' is reserved"),
        ({"name": _name("x"), "scope": "read", "secret": "mine"}, 422, "secret"),
    ]
    for body, status, words in cases:
        resp = client.post("/api/v1/keys", json=body)
        assert resp.status_code == status, (body, resp.text)
        assert words in resp.json()["detail"], (body, resp.text)


def test_the_secret_is_shown_once_and_stored_only_hashed(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    with LocalServer(db_path=db, api_key="bootstrap-secret-1") as server, CTClient(
        base_url=server.base_url, api_key=server.api_key
    ) as admin:
        created = admin.create_key("web-app", "ingest")
        assert isinstance(created, ApiKeyCreated)
        assert re.fullmatch(r"kz_[A-Za-z0-9_-]{43}", created.secret)
        assert created.secret not in repr(created) and "secret='***'" in repr(created)
        listed = admin.list_keys()
        assert listed == [ApiKey(id=created.id, name="web-app", scope="ingest",
                                 created_at=created.created_at, created_by="bootstrap")]
        raw = httpx.get(f"{server.base_url}/api/v1/keys",
                        headers={"X-API-Key": server.api_key}).text
        assert created.secret not in raw and hash_secret(created.secret) not in raw
        assert httpx.get(f"{server.base_url}/api/v1/keys/{created.id}",
                         headers={"X-API-Key": server.api_key}).status_code == 405
        with CTClient(base_url=server.base_url, api_key=created.secret) as app:
            assert app.log_feedback("t", score=1.0).task_id is not None
            with pytest.raises(CTAuthError) as caught:
                app.create_key("escalate", "admin")
            assert caught.value.status_code == 403
            assert "this needs an admin key" in str(caught.value)
        audit = admin.list_audit()
        assert [(e.actor, e.action) for e in audit] == [
            ("web-app", "task.created"), ("bootstrap", "key.created")]
        revoked = admin.revoke_key(str(created.id))
        assert revoked.revoked and revoked.id == created.id
        with CTClient(base_url=server.base_url, api_key=created.secret) as app:
            with pytest.raises(CTAuthError) as caught:
                app.get_prompt("t")
            assert caught.value.status_code == 401
        with pytest.raises(CTValidationError, match="scope must be one of ingest, read, admin"):
            admin.create_key("x", "root")
        with pytest.raises(CTValidationError, match="name must be 1 to 64"):
            admin.create_key("a b", "read")
    # the file holds the hash, never the secret
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT name, secret_hash FROM api_keys").fetchall()
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert rows == [("web-app", hash_secret(created.secret))]
    assert created.secret not in dump


def test_the_async_client_manages_keys_too(local_server: LocalServer) -> None:
    async def run() -> tuple[ApiKeyCreated, list[ApiKey], ApiKey, list[str]]:
        async with AsyncCTClient(base_url=local_server.base_url,
                                 api_key=local_server.api_key) as admin:
            created = await admin.create_key(_name("async"), "read")
            listed = await admin.list_keys(limit=1000)
            revoked = await admin.revoke_key(str(created.id))
            audit = await admin.list_audit(limit=2)
            return created, listed, revoked, [e.action for e in audit]

    created, listed, revoked, actions = asyncio.run(run())
    assert created.scope == "read" and created.secret.startswith("kz_")
    assert created.id in {k.id for k in listed}
    assert revoked.revoked_at is not None
    assert actions == ["key.revoked", "key.created"]


def test_the_openapi_document_names_each_route_scope(local_server: LocalServer) -> None:
    doc = httpx.get(f"{local_server.base_url}/api/v1/openapi.json").json()
    scopes = {
        (method.upper(), path): op.get("x-kaizen-scope")
        for path, ops in doc["paths"].items() for method, op in ops.items()
    }
    assert {k for k, v in scopes.items() if v == "ingest"} == INGEST_ROUTES
    assert scopes[("GET", "/api/v1/health")] is None
    assert scopes[("POST", "/api/v1/keys")] == "admin"
    assert scopes[("DELETE", "/api/v1/keys/{key_id}")] == "admin"
    assert scopes[("GET", "/api/v1/keys")] == "read"
    assert scopes[("GET", "/api/v1/audit")] == "read"
    assert "403" in doc["paths"]["/api/v1/keys"]["post"]["responses"]


def test_an_application_runs_whole_on_an_ingest_key(
    client: httpx.Client, local_server: LocalServer, task_name: str
) -> None:
    """The decorated call, its background delivery, prompt refreshes and scoring: all of it
    within the ingest scope (nothing sent is rejected, nothing dropped)."""
    secret = make_key(client, "ingest")["secret"]
    with CTClient(base_url=local_server.base_url, api_key=secret) as app:
        @app.task(task_name, default_prompt="Summarize: {{ ticket }}")
        def summarize(ticket: str, prompt: Any) -> str:
            return str(prompt.render(ticket=ticket)).upper()

        results = [summarize.call(f"ticket {n}") for n in range(3)]
        assert app.flush(10)
        assert app.get_prompt(task_name).version_number == 1  # the baseline the trace made
        scored = app.score(results[0][1].trace_id, 0.75)
        assert scored.score == 0.75
        stats = app.stats()
        assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (3, 3, 0, 0)
    traces = client.get("/api/v1/traces", params={"task_id": task_name}).json()
    assert sorted(t["response_text"] for t in traces) == [
        "SUMMARIZE: TICKET 0", "SUMMARIZE: TICKET 1", "SUMMARIZE: TICKET 2"]


def test_the_cli_prints_the_secret_once(
    local_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaizen_sdk.cli import main

    conn = ["--api-key", local_server.api_key, "--base-url", local_server.base_url]
    name = _name("cli")
    assert main(["keys", "create", name, "--scope", "read", *conn]) == 0
    out = capsys.readouterr().out
    [secret] = re.findall(r"^secret: (kz_\S+)$", out, re.M)
    assert "Keep the secret now" in out
    [key_id] = re.findall(r"^id\s+(\S+)$", out, re.M)
    assert main(["keys", "list", *conn]) == 0
    listed = capsys.readouterr().out
    assert name in listed and key_id in listed and secret not in listed
    assert main(["keys", "revoke", key_id, *conn]) == 0
    assert "revoked_at" in capsys.readouterr().out
    # the revoked key is refused; the CLI says so on one line and exits with the auth status
    assert main(["audit", "--api-key", secret, "--base-url", local_server.base_url]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "401" in err and secret not in err
    with pytest.raises(SystemExit) as usage:
        main(["keys", "create", "x", "--scope", "owner", *conn])
    assert usage.value.code == 2
    assert "invalid choice: 'owner'" in capsys.readouterr().err
