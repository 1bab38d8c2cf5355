"""The rollout page's charts over time (server SVG) over plain HTTP: one point per logged
ramp step, recommendation and decision, plus one for now while the rollout runs; the
sequential test's evidence against its boundary. And the geometry of `rollout_history`."""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from ui_support import seed

from kaizen_sdk.models import Rollout, RolloutArm, RolloutDifference, RolloutEvent
from kaizen_server import LocalServer
from kaizen_server.ui.charts import rollout_history


def svg(html: str, chart_id: str) -> str:
    match = re.search(rf'<svg[^>]*id="{chart_id}".*?</svg>', html, re.S)
    assert match is not None, f"no #{chart_id} chart on the page"
    return match.group(0)


def counts(html: str, chart_id: str) -> tuple[int, int, int]:
    """Points, interval whiskers and rules (boundary or zero line) of one chart."""
    drawn = svg(html, chart_id)
    return (drawn.count('class="point"'), drawn.count('class="whisker"'),
            drawn.count('class="rule"'))


@pytest.mark.e2e
def test_the_rollout_page_draws_its_logged_statistics_over_time(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    ids = seed(api, "history-task", traces=1)
    resp = api.post("/api/v1/rollouts/history-task", json={
        "candidate_version_id": ids["v2"], "ramp": [0.2, 0.5], "min_samples": 4,
        "auto_promote": False})
    assert resp.status_code == 201, resp.text
    feedback = [{"task_id": "history-task", "score": s, "output": "o", "arm": arm,
                 "prompt_version_id": ids["v1"] if arm == "active" else ids["v2"]}
                for arm, s in [("active", 0.4), ("candidate", 0.6), ("active", 0.5),
                               ("candidate", 0.9)] * 2]
    for _ in range(2):
        assert api.post("/api/v1/ingest", json={"feedback": feedback}).status_code == 207
    events = api.get("/api/v1/rollouts/history-task").json()["audit"]
    assert [e["event"] for e in events] == ["started", "ramp", "recommend_promote"]
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        resp = ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        assert resp.status_code == 303
        html = ui.get("/ui/tasks/history-task/rollout").text
        # "started" carries no statistics: 2 logged points and now, per series
        assert counts(html, "means-over-time") == (6, 2, 0)  # only now has arm intervals
        assert counts(html, "difference-over-time") == (3, 3, 1)
        assert counts(html, "evidence-over-time") == (3, 0, 1)
        assert "decision boundary ln(1/alpha) = 3.00 (alpha = 0.05)" in html
        resp = api.post("/api/v1/rollouts/history-task/stop", json={"action": "promote"})
        assert resp.status_code == 200, resp.text
        html = ui.get("/ui/tasks/history-task/rollout").text
        # ended: the three logged points (ramp, recommendation, decision), no "now"; a stop
        # by request logs the arm means but not the difference's interval
        assert counts(html, "means-over-time") == (6, 0, 0)
        assert counts(html, "difference-over-time") == (3, 2, 1)
        assert counts(html, "evidence-over-time") == (3, 0, 1)


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def logged(minutes: int, active: float, candidate: float, p_value: float) -> RolloutEvent:
    return RolloutEvent(at=T0 + timedelta(minutes=minutes), event="ramp", share=0.5, stats={
        "active": {"n": 10, "mean": active}, "candidate": {"n": 10, "mean": candidate},
        "difference": candidate - active, "lower": candidate - active - 0.1,
        "upper": candidate - active + 0.1, "p_value": p_value})


@pytest.mark.unit
def test_rollout_history_places_points_by_time_and_clamps_the_evidence() -> None:
    rollout = Rollout(
        id=uuid.uuid4(), state="running", alpha=0.05,
        active=RolloutArm(n=20, mean=0.5, lower=0.4, upper=0.6),
        candidate=RolloutArm(n=20, mean=0.9, lower=0.8, upper=1.0),
        difference=RolloutDifference(estimate=0.4, lower=0.2, upper=0.6, p_value=0.0),
        audit=[RolloutEvent(at=T0, event="started", stats={"ramp": [0.5]}),
               logged(0, 0.5, 0.5, 1.0), logged(5, 0.5, 0.7, 0.1)],
    )
    history = rollout_history(rollout, now=T0 + timedelta(minutes=10))
    assert history.points == 3 + 3 + 3 + 3
    active, candidate = history.means.series
    left, right = history.means.left, history.means.right
    assert [p.x for p in candidate.points] == [left, (left + right) / 2, right]
    assert [p.y for p in active.points] == [95.0, 95.0, 95.0]  # 0.5 on [0, 1], y 10..180
    assert active.points[-1].y_lower is not None and active.points[0].y_lower is None
    evidence = history.evidence
    boundary = -math.log(0.05)
    assert evidence.high == pytest.approx(3 * boundary * 1.08)
    first, middle, now = evidence.series[0].points
    assert first.y == evidence.bottom  # p = 1: no evidence
    assert middle.text.endswith(f" {-math.log(0.1):.2f}")
    assert now.y == evidence.top  # p = 0 drawn at the top, not off the chart
    assert evidence.rule_y is not None and evidence.bottom > evidence.rule_y > evidence.top
    ended = rollout_history(msgspec_replace(rollout, state="promoted"))
    assert ended.points == 2 + 2 + 2 + 2


def msgspec_replace(rollout: Rollout, **changes: object) -> Rollout:
    import msgspec

    return msgspec.structs.replace(rollout, **changes)
