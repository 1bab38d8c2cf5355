"""The task page lists the task's online evaluators: status and why, today's books, agreement."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from kaizen_server import LocalServer
from kaizen_server.domain import evaluators as rules


@pytest.mark.e2e
def test_the_task_page_shows_evaluators_with_status_books_and_agreement(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    assert api.post("/api/v1/tasks", json={"name": "eval-task", "feedback_threshold": 100_000,
                                           "prompt_text": "A {{ q }}."}).status_code == 201
    made = []
    for body in ({"name": "caps", "kind": "regex", "pattern": "^[A-Z]", "sample_rate": 0.5},
                 {"name": "<judge>", "kind": "llm_judge", "judge_model": "gpt-4o-mini",
                  "scale": [1, 5], "rubric": "Right?"}):
        resp = api.post("/api/v1/tasks/eval-task/evaluators", json=body)
        assert resp.status_code == 201, resp.text
        made.append(resp.json()["id"])
    ids = [str(uuid.uuid4()) for _ in range(60)]
    api.post("/api/v1/ingest", json={"traces": [
        {"id": t, "task_id": "eval-task", "response_text": "ABC"} for t in ids]})
    for t in ids:
        api.post(f"/api/v1/traces/{t}/score", json={"score": 1.0})
    sampled = sum(rules.sampled(made[0], t, 0.5) for t in ids)
    deadline = time.monotonic() + 30
    while api.get("/api/v1/tasks/eval-task/evaluators/caps").json()["today"]["judged"] < sampled:
        assert time.monotonic() < deadline, "the regex check did not run"
        time.sleep(0.05)
    caps = api.get("/api/v1/tasks/eval-task/evaluators/caps").json()
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        page = ui.get("/ui/tasks/eval-task").text
    table = re.search(r'<table class="evaluators">.*?</table>', page, re.S)
    assert table is not None, "no evaluators table on the task page"
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>(.*?)</tr>", table.group(0), re.S)
    assert [name for name, _ in rows] == ["caps", "&lt;judge&gt;"]  # escaped
    caps_row, judge_row = rows[0][1], rows[1][1]
    assert "50.0 %" in caps_row and f"{sampled} judged" in caps_row
    pairs = caps["agreement"]["pairs"]
    if pairs >= 50:
        assert f"{pairs} pairs" in caps_row and "accuracy" in caps_row
    else:
        assert f"{pairs} of 50 pairs" in caps_row
    assert "no_endpoint" in judge_row and "--llm-base-url" in judge_row
