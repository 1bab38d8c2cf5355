"""Bounded inputs: rollout ramps, list cursors, template rendering, and a full database.

The full disk is a SQLite ``max_page_count`` set low on every connection of a server's own
store (not a real full disk): writes past it must answer 507 and keep nothing, reads go on.
"""

from __future__ import annotations

import base64
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaizen_sdk import Prompt
from kaizen_sdk.errors import CTValidationError
from kaizen_sdk.models import MAX_RAMP_STEPS
from kaizen_sdk.templates import MAX_PLACEHOLDERS, MAX_RENDERED_CHARS, TemplateTooLarge, render
from kaizen_server import LocalServer
from kaizen_server.evaluate.judge import render_template
from kaizen_server.storage import sqlite as sqlite_storage
from kaizen_server.storage.sqlite import Store

# --- ramps -----------------------------------------------------------------------------------


def _task_with_candidate(client: httpx.Client, name: str) -> str:
    resp = client.post("/api/v1/tasks", json={"name": name, "prompt_text": "v1 {{ x }}"})
    assert resp.status_code == 201, resp.text
    resp = client.post(f"/api/v1/prompts/{name}/versions", json={"prompt_text": "v2 {{ x }}"})
    assert resp.status_code == 201, resp.text
    candidate: str = resp.json()["id"]
    return candidate


@pytest.mark.parametrize("steps", [MAX_RAMP_STEPS + 1, 1000, 1_000_000])
def test_a_ramp_of_more_than_twenty_steps_is_refused(
    client: httpx.Client, task_name: str, steps: int
) -> None:
    candidate = _task_with_candidate(client, task_name)
    ramp = [round((i + 1) / steps, 9) for i in range(steps)]
    resp = client.post(f"/api/v1/rollouts/{task_name}",
                       json={"candidate_version_id": candidate, "ramp": ramp})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == (
        f"Expected `array` of length <= {MAX_RAMP_STEPS} - at `$.ramp`")
    assert client.get(f"/api/v1/rollouts/{task_name}").status_code == 404  # nothing stored


def test_a_ramp_of_twenty_steps_is_accepted(client: httpx.Client, task_name: str) -> None:
    candidate = _task_with_candidate(client, task_name)
    ramp = [(i + 1) / MAX_RAMP_STEPS for i in range(MAX_RAMP_STEPS)]
    resp = client.post(f"/api/v1/rollouts/{task_name}",
                       json={"candidate_version_id": candidate, "ramp": ramp})
    assert resp.status_code == 201, resp.text
    assert resp.json()["ramp"] == ramp


# --- cursors ---------------------------------------------------------------------------------


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/api/v1/traces", "/api/v1/tasks", "/api/v1/audit",
                                  "/api/v1/keys", "/api/v1/jobs", "/api/v1/feedback"])
@pytest.mark.parametrize("key", [str(2**63), str(2**64), "9" * 40, "١٢٣", "-1", "+5", " 5"])
def test_a_cursor_that_is_not_ours_is_400(client: httpx.Client, path: str, key: str) -> None:
    resp = client.get(path, params={"cursor": _cursor(f"k1.{key}")})
    assert resp.status_code == 400, resp.text
    assert resp.json()["title"] == "Bad Request"
    assert resp.json()["detail"].startswith(
        "Query parameter `cursor` is not a cursor this server gave out")


def test_the_largest_cursor_is_served(client: httpx.Client, task_name: str) -> None:
    trace = client.post("/api/v1/traces", json={"task_id": task_name, "response_text": "r"})
    assert trace.status_code == 201, trace.text
    resp = client.get("/api/v1/traces", params={"cursor": _cursor(f"k1.{2**63 - 1}"),
                                                "task_id": task_name})
    assert resp.status_code == 200, resp.text
    assert [t["id"] for t in resp.json()] == [trace.json()["id"]]  # every key is below it


# --- templates -------------------------------------------------------------------------------


def test_a_template_of_19000_placeholders_is_not_rendered() -> None:
    prompt = Prompt(prompt_text="{{ x }}" * 19_000)
    started = time.perf_counter()
    with pytest.raises(CTValidationError) as caught:
        prompt.render(x="y" * 10_000)  # would be 190 MB
    assert str(caught.value) == (
        f"Prompt.render: the prompt template has more than {MAX_PLACEHOLDERS} placeholders"
        f" (19000); at most {MAX_PLACEHOLDERS} are rendered.")
    with pytest.raises(TemplateTooLarge, match="more than 1000 placeholders"):
        render_template("{{ x }}" * 19_000, {"x": "y" * 10_000})
    assert time.perf_counter() - started < 5  # refused, not built and thrown away


def test_rendering_stops_past_the_output_bound() -> None:
    template = "a {{ doc }}b {{ doc }}"
    half = MAX_RENDERED_CHARS // 2
    with pytest.raises(CTValidationError, match="longer than 4,000,000 characters"):
        Prompt(prompt_text=template).render(doc="z" * half)
    with pytest.raises(TemplateTooLarge, match="longer than 4,000,000 characters"):
        render_template(template, {"doc": "z" * half})
    # just under both bounds: rendered whole
    fits = Prompt(prompt_text=template).render(doc="z" * (half - 2))
    assert len(fits) == MAX_RENDERED_CHARS
    many = "".join(f"{{{{ v{i} }}}}" for i in range(MAX_PLACEHOLDERS))
    assert render(many, lambda name: name[1:]) == "".join(str(i) for i in range(1000))
    with pytest.raises(TemplateTooLarge):
        render(many + "{{ one_more }}", lambda name: "")
    assert Prompt(prompt_text="Hi {{ name }}!").render(name="Ada") == "Hi Ada!"


def test_the_server_refuses_a_template_with_too_many_placeholders(
    client: httpx.Client, task_name: str
) -> None:
    ok = client.post("/api/v1/tasks", json={"name": task_name, "prompt_text": "{{ x }}" * 1000})
    assert ok.status_code == 201, ok.text
    for path, body in (
        (f"/api/v1/prompts/{task_name}/versions", {"prompt_text": "{{ x }}" * 19_000}),
        ("/api/v1/tasks", {"name": f"{task_name}-2", "prompt_text": "{{ x }}" * 1001}),
    ):
        resp = client.post(path, json=body)
        assert resp.status_code == 422, resp.text
        placeholders = body["prompt_text"].count("{{")
        assert resp.json()["detail"] == (
            f"`prompt_text` has {placeholders} placeholders; at most 1000 are allowed")
    assert len(client.get(f"/api/v1/prompts/{task_name}/versions").json()) == 1
    assert client.get(f"/api/v1/tasks/{task_name}-2").status_code == 404


# --- a full disk -----------------------------------------------------------------------------

_MAX_PAGES = 400  # of 4 KiB: about 1.6 MB for the whole database


class _SmallStore(Store):
    """A store whose every connection may not grow the file past `_MAX_PAGES` pages."""

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        if not getattr(self._local, "capped", False):
            conn.execute(f"PRAGMA max_page_count = {_MAX_PAGES}")
            self._local.capped = True
        return conn


@pytest.fixture
def small_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    monkeypatch.setattr(sqlite_storage, "Store", _SmallStore)  # what open_store opens
    with LocalServer(db_path=tmp_path / "small.db", api_key="small-disk-key") as s:
        yield s


def test_a_full_database_answers_507_and_keeps_serving_reads(small_server: LocalServer) -> None:
    with httpx.Client(base_url=small_server.base_url, timeout=10,
                      headers={"X-API-Key": small_server.api_key}) as c:
        resp = c.post("/api/v1/tasks", json={"name": "disk", "prompt_text": "v1 {{ x }}"})
        assert resp.status_code == 201, resp.text
        v2 = c.post("/api/v1/prompts/disk/versions", json={"prompt_text": "v2 {{ x }}"})
        assert v2.status_code == 201, v2.text
        # out of time at once: the next read that evaluates it would end it, a write
        resp = c.post("/api/v1/rollouts/disk", json={
            "candidate_version_id": v2.json()["id"], "share": 0.5, "max_duration": 0.001})
        assert resp.status_code == 201, resp.text
        stored = 0
        answer: httpx.Response | None = None
        for _ in range(100):  # 100 x 64 KB is far past 1.6 MB: the loop ends on the 507
            answer = c.post("/api/v1/traces", json={
                "id": str(uuid.uuid4()), "task_id": "disk", "response_text": "r" * 65_536})
            if answer.status_code != 201:
                break
            stored += 1
        assert answer is not None and answer.status_code == 507, answer and answer.text
        assert answer.json() == {
            "title": "Insufficient Storage",
            "detail": "the server's database is full (SQLite: database or disk is full);"
                      " this write was not stored. Free disk space on the server; reads still"
                      " work.",
        }
        assert stored > 0
        # nothing of the refused write was kept; every read still answers
        traces: list[dict[str, Any]] = c.get(
            "/api/v1/traces", params={"task_id": "disk", "limit": 1000}).json()
        assert len(traces) == stored
        # reads that may also write (ending the expired rollout) answer, full or not
        assert c.get("/api/v1/prompts/disk").status_code == 200
        assert c.get("/api/v1/rollouts/disk").status_code == 200
        assert c.get("/api/v1/tasks/disk").json()["name"] == "disk"
        assert c.get("/api/v1/audit").status_code == 200
        # the writer is not left inside a failed transaction: the next write is a clean 507
        again = c.post("/api/v1/ingest", json={"traces": [
            {"task_id": "disk", "response_text": "r" * 65_536}]})
        assert again.status_code == 507, again.text
        small = c.post("/api/v1/prompts/disk/versions", json={"prompt_text": "v3 {{ x }}"})
        assert small.status_code in (201, 507), small.text
        assert c.get("/api/v1/health").json()["status"] == "ok"
