"""Mean score over time: the task page's chart and the tasks list's line, from the task's
newest scored feedback (plain HTTP), and the grouping behind them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kaizen_server import LocalServer
from kaizen_server.ui.charts import mean_over_time


@pytest.mark.e2e
def test_the_task_page_and_list_draw_the_mean_score_of_the_newest_feedback(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    resp = api.post("/api/v1/tasks", json={"name": "trend-task", "feedback_threshold": 100_000,
                                           "prompt_text": "Answer {q}."})
    assert resp.status_code == 201, resp.text
    feedback = [{"task_id": "trend-task", "inputs": {"q": str(i)}, "output": "o",
                 **({"score": i / 29} if i < 30 else {})} for i in range(35)]
    assert api.post("/api/v1/ingest", json={"feedback": feedback}).status_code == 207
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        resp = ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        assert resp.status_code == 303
        page = ui.get("/ui/tasks/trend-task").text
        listing = ui.get("/ui/tasks").text
    chart = re.search(r'<svg[^>]*id="score-over-time".*?</svg>', page, re.S)
    assert chart is not None, "no mean score chart on the task page"
    # 30 scored of 35 entries, in groups of ceil(30 / 20) = 2: 15 points
    assert chart.group(0).count('class="point"') == 15
    assert f" {(0 + 1 / 29) / 2:.3f}</title>" in chart.group(0)  # the oldest group's mean
    row = re.search(r"<tr>(?:(?!</tr>).)*trend-task.*?</tr>", listing, re.S)
    assert row is not None
    line = re.search(r'<polyline points="([^"]+)"', row.group(0))
    assert line is not None and len(line.group(1).split()) == 10  # groups of 3: 10 points


@pytest.mark.e2e
def test_a_task_without_scored_feedback_says_so(ui_server: LocalServer,
                                                api: httpx.Client) -> None:
    resp = api.post("/api/v1/tasks", json={"name": "unscored-task", "prompt_text": "A {q}."})
    assert resp.status_code == 201, resp.text
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        page = ui.get("/ui/tasks/unscored-task").text
    assert 'id="no-trend"' in page and 'id="score-over-time"' not in page


@pytest.mark.unit
def test_mean_over_time_groups_oldest_first_the_last_group_smaller() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    scores = [(t0 + timedelta(minutes=i), float(i)) for i in range(7)]
    assert mean_over_time(scores, groups=3) == [
        (t0 + timedelta(minutes=2), 1.0), (t0 + timedelta(minutes=5), 4.0),
        (t0 + timedelta(minutes=6), 6.0)]
    assert mean_over_time(scores, groups=20) == scores
    assert mean_over_time([], groups=5) == []
