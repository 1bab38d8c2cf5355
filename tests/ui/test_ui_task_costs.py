"""Costs in the web UI: the task page's totals and per-version table and the versions page's
cost per call column, from ``GET /api/v1/tasks/{task_id}/costs`` (plain HTTP, no browser)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ui_server() -> Iterator[LocalServer]:
    """This file's own server (overrides ui_support's): it prices the model ``priced``."""
    with LocalServer(llm_prices={"priced": (1.0, 2.0)}) as server:
        yield server


def _seed(api: httpx.Client, task: str) -> None:
    """v1: 2 calls at $0.002 and one unpriced; v2: 1 call at $0.0005."""
    assert api.post("/api/v1/tasks", json={"name": task, "prompt_text": "v1 {q}"}).status_code \
        == 201
    v1 = api.get(f"/api/v1/prompts/{task}").json()["id"]
    v2 = api.post(f"/api/v1/prompts/{task}/versions", json={"prompt_text": "v2 {q}"}).json()["id"]

    def trace(model: str, version: str, tokens: tuple[int, int]) -> dict[str, Any]:
        return {"task_id": task, "model": model, "prompt_version_id": version,
                "tokens": sum(tokens), "input_tokens": tokens[0], "output_tokens": tokens[1]}

    traces = [trace("priced", v1, (1000, 500)), trace("priced", v1, (1000, 500)),
              trace("mystery", v1, (5, 5)), trace("priced", v2, (100, 200))]
    resp = api.post("/api/v1/ingest", json={"traces": traces})
    assert resp.status_code == 207 and resp.json()["accepted"] == 4, resp.text


def test_the_task_and_versions_pages_show_costs(ui_server: LocalServer,
                                                api: httpx.Client) -> None:
    task = f"ui-costs-{uuid.uuid4().hex[:8]}"
    _seed(api, task)
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        resp = ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        assert resp.status_code == 303
        page = ui.get(f"/ui/tasks/{task}").text
        versions = ui.get(f"/ui/tasks/{task}/versions").text
    total = re.search(r'<p id="cost-total">(.*?)</p>', page, re.S)
    assert total is not None
    assert total.group(1) == "$0.004500 over 4 calls (3 priced) · $0.001500 per call"
    table = re.search(r'<table id="costs">.*?</table>', page, re.S)
    assert table is not None
    rows = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>"
                      r"<td>(.*?)</td></tr>", table.group(0))
    assert rows == [("v2", "1", "1", "$0.000500", "$0.000500"),
                    ("v1", "3", "2", "$0.004000", "$0.002000")]
    cells = re.findall(r'<td>v(\d+)</td>.*?<td class="cost">(.*?)</td>', versions, re.S)
    assert cells == [("2", "$0.000500"), ("1", "$0.002000")]


def test_a_task_without_calls_shows_no_cost_table(ui_server: LocalServer,
                                                  api: httpx.Client) -> None:
    task = f"ui-no-costs-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/tasks", json={"name": task, "prompt_text": "A {q}"}).status_code \
        == 201
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        page = ui.get(f"/ui/tasks/{task}").text
        versions = ui.get(f"/ui/tasks/{task}/versions").text
    assert 'id="cost-total">$0.000000 over 0 calls (0 priced)' in page
    assert 'id="costs"' not in page
    assert re.findall(r'<td class="cost">(.*?)</td>', versions) == [""]


def test_the_rollout_page_shows_each_arms_cost_and_the_cost_guard(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    task = f"ui-rollout-costs-{uuid.uuid4().hex[:8]}"
    _seed(api, task)
    v1, v2 = (v["id"] for v in sorted(api.get(f"/api/v1/prompts/{task}/versions").json(),
                                      key=lambda v: v["version_number"]))
    resp = api.post(f"/api/v1/rollouts/{task}",
                    json={"candidate_version_id": v2, "share": 0.5, "max_cost_ratio": 0.5})
    assert resp.status_code == 201, resp.text
    traces = [{"task_id": task, "model": "priced", "prompt_version_id": version,
               "tokens": 3000, "input_tokens": 1000, "output_tokens": 2000}
              for version in (v1, v1, v2)]
    traces[2].update(input_tokens=100, output_tokens=100, tokens=200)
    assert api.post("/api/v1/ingest", json={"traces": traces}).status_code == 207
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        page = ui.get(f"/ui/tasks/{task}/rollout").text
    # active: $0.005 per call; candidate: $0.0003, a ratio of 0.06 under a guard of 0.5
    assert re.findall(r'<td class="cost">(.*?)</td>', page) == ["$0.005000", "$0.000300"]
    ratio = re.search(r'<dd id="rollout-cost">(.*?)</dd>', page)
    assert ratio is not None
    assert ratio.group(1) == "candidate / active per call: 0.06 (guard: at most 0.5)"
