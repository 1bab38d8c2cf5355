"""The web UI in a real browser (Debian's chromium, driven by Playwright), against a real
local server: sign-in and sign-out, every page with data, versions created and activated, a
rollout started, decided and rolled back from its page, the review queue labelled by keyboard.

Every request the browser makes is checked: one to another host fails the test. Each page's
screenshot is documentation: with ``KAIZEN_UPDATE_SCREENSHOTS=1`` (``make screenshots``) it is
written to ``docs/img/ui/<page>.png`` (committed); otherwise to ``build/ui-screenshots/`` and
the test checks that docs/img/ui/ holds a PNG of that page and docs/ui.md embeds it, so a new
page without a screenshot in the docs fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ui_support import (
    DOC_SCREENSHOTS,
    SCREENSHOTS,
    UI_DOC,
    UPDATE_SCREENSHOTS,
    make_judged,
    new_key,
    seed,
    wait_job,
)

from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(browser: Any, ui_server: LocalServer) -> Iterator[Any]:
    """A fresh browser context (no cookies) whose requests may only reach *ui_server*."""
    context = browser.new_context(viewport={"width": VIEW_W, "height": VIEW_H})
    outside: list[str] = []

    def guard(route: Any) -> None:
        if route.request.url.startswith(ui_server.base_url + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()
    assert outside == [], f"the UI asked other hosts: {outside}"


def sign_in(page: Any, server: LocalServer, key: str, path: str = "/ui/tasks") -> None:
    page.goto(server.base_url + path)
    page.fill("#key", key)
    page.click("#signin")
    page.wait_for_load_state()


VIEW_W, VIEW_H = 1100, 700
MAX_SHOT_H = 1400
"""Screenshots are the viewport's width and at most this tall (the top of a long page)."""
PNG = b"\x89PNG\r\n\x1a\n"


def shot(page: Any, name: str) -> None:
    """Screenshot the page as *name*: into docs/img/ui/ when updating the docs' screenshots,
    else into the build dir, checking the docs have this page's picture and embed it."""
    folder = DOC_SCREENSHOTS if UPDATE_SCREENSHOTS else SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    height = min(MAX_SHOT_H, int(page.evaluate("document.documentElement.scrollHeight")))
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True,
                    clip={"x": 0, "y": 0, "width": VIEW_W, "height": max(height, VIEW_H)})
    doc = DOC_SCREENSHOTS / f"{name}.png"
    assert doc.is_file() and doc.read_bytes()[:8] == PNG, (
        f"docs/img/ui/{name}.png is missing: run `make screenshots` and commit it")
    assert f"](img/ui/{name}.png)" in UI_DOC.read_text(encoding="utf-8"), (
        f"docs/ui.md does not embed img/ui/{name}.png")


def test_sign_in_and_sign_out(page: Any, ui_server: LocalServer, api: httpx.Client) -> None:
    page.goto(ui_server.base_url + "/ui/traces")
    assert page.url.startswith(ui_server.base_url + "/ui/signin")
    shot(page, "signin")
    sign_in(page, ui_server, "kz_wrong", "/ui/traces")
    assert page.inner_text("#problem") == "That is not a valid key."
    page.fill("#key", new_key(api, "ingest"))
    page.click("#signin")
    assert "cannot sign in" in page.inner_text("#problem")
    page.fill("#key", ui_server.api_key)
    page.click("#signin")
    page.wait_for_url(ui_server.base_url + "/ui/traces")  # back where the visitor was going
    assert page.inner_text("header .who") == "bootstrap (admin)"
    cookie = next(c for c in page.context.cookies() if c["name"] == "kaizen_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by scripts
    page.click("#signout")
    page.wait_for_url(re.compile(r".*/ui/signin.*"))
    page.goto(ui_server.base_url + "/ui/tasks")
    assert "/ui/signin" in page.url


def test_every_page_renders_with_data(
    page: Any, ui_server: LocalServer, api: httpx.Client
) -> None:
    ids = seed(api, "browse-task")
    assert ids["job"]["status"] == "SUCCESS"
    resp = api.post("/api/v1/rollouts/browse-task", json={
        "candidate_version_id": ids["v2"], "ramp": [0.2, 0.5], "min_samples": 2,
        "auto_promote": False, "auto_rollback": False})
    assert resp.status_code == 201, resp.text
    feedback = [{"task_id": "browse-task", "score": s, "output": "o", "arm": arm,
                 "prompt_version_id": ids["v1"] if arm == "active" else ids["v2"]}
                for arm, s in [("active", 0.5), ("candidate", 0.7), ("active", 0.7),
                               ("candidate", 0.9)]]
    for _ in range(3):  # three batches: the rollout is evaluated (and logs) after each
        assert api.post("/api/v1/ingest", json={"feedback": feedback}).status_code == 207
    sign_in(page, ui_server, ui_server.api_key)
    base = ui_server.base_url + "/ui"
    row = page.locator("#tasks tr", has_text="browse-task")
    assert "33 % of 3" in row.inner_text() and "rollout at 50 %" in row.inner_text()
    shot(page, "tasks")
    page.click("text=browse-task")
    assert page.locator("h1").inner_text() == "Task browse-task"
    assert page.locator("#audit tr", has_text="rollout").count() >= 1
    shot(page, "task")
    page.click(".links >> text=Traces")
    assert page.locator("table.traces tbody tr").count() == 3
    shot(page, "traces")
    page.goto(f"{base}/traces/{ids['traces'][0]}")
    assert page.inner_text("#output").startswith('<script>alert("x")</script>')
    assert page.locator("#feedback tbody tr").count() == 1
    assert "too <script>" in page.inner_text("#feedback")
    assert page.inner_text("#trace-id") == ids["traces"][0].replace("-", "")
    assert page.evaluate("window.__injected === undefined && !document.querySelector('main img')")
    shot(page, "trace")
    page.goto(f"{base}/tasks/browse-task/versions")
    assert page.locator("#versions tbody tr").count() == 3  # v1, v2 and the job's v3
    shot(page, "versions")
    page.click("#compare")
    assert page.locator("#diff tr.changed").count() >= 1
    shot(page, "diff")
    page.goto(f"{base}/jobs")
    shot(page, "jobs")
    make_judged(ui_server, ids["job"]["id"])
    page.goto(f"{base}/jobs/{ids['job']['id']}")
    assert page.inner_text("#job-status") == "SUCCESS"
    assert page.inner_text("#verdict") == "better"
    assert "difference +0.125, 95 % interval [+0.050, +0.200]" in page.inner_text("#report")
    assert "candidate minus active: +0.125 [0.050, 0.200]" in page.inner_text("#job-live")
    assert page.locator("#flags").inner_text() == ("injection check: <b>instructions</b> in a"
                                                   " demonstration")
    shot(page, "job")
    page.goto(f"{base}/tasks/browse-task/rollout")
    assert page.inner_text("#rollout-state") == "running"
    arms = page.inner_text("#arms")
    assert "\t6\t0.60\t" in arms and "\t6\t0.80\t" in arms
    assert page.locator("svg.chart").count() == 5  # arms, difference, and three over time
    assert [e["event"] for e in api.get("/api/v1/rollouts/browse-task").json()["audit"]] == [
        "started", "ramp"]
    assert page.locator("#evidence-over-time circle.point").count() == 2  # the ramp step, now
    assert page.locator("#means-over-time circle.point").count() == 4
    shot(page, "rollout")
    page.goto(f"{base}/tasks/browse-task/review")
    assert page.locator(".review-item").count() == 2  # the unscored traces
    shot(page, "review")


def test_create_and_activate_a_version(
    page: Any, ui_server: LocalServer, api: httpx.Client
) -> None:
    assert api.post("/api/v1/tasks", json={"name": "version-task", "prompt_text": "Old {x}"}
                    ).status_code == 201
    sign_in(page, ui_server, ui_server.api_key, "/ui/tasks/version-task/versions")
    page.fill("#new-version textarea", "New and better {x}\n<b>not bold</b>")
    page.click("#new-version button")
    page.wait_for_url(re.compile(r".*/versions$"))
    assert page.locator("#versions tbody tr").count() == 2
    assert "v1" in page.inner_text("#versions strong >> xpath=../..")
    page.click("#versions a.activate")
    consequences = page.inner_text("#consequences")
    assert "serves v2 on its next call" in consequences and "instead of v1" in consequences
    shot(page, "activate")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/versions$"))
    prompt = api.get("/api/v1/prompts/version-task").json()
    assert (prompt["version_number"], prompt["prompt_text"]) == (2, "New and better {x}\n"
                                                                    "<b>not bold</b>")
    audit = api.get("/api/v1/audit", params={"task_id": "version-task"}).json()
    assert [a["actor"] for a in audit if "activ" in a["action"]][:1] == ["bootstrap"]


def test_start_a_rollout_that_promotes_on_scored_traffic_and_roll_back_another(
    page: Any, ui_server: LocalServer, api: httpx.Client
) -> None:
    ids = seed(api, "rollout-task", traces=1)
    sign_in(page, ui_server, ui_server.api_key, "/ui/tasks/rollout-task/versions")
    page.click(f"a.start-rollout[href$='{ids['v2']}']")
    page.fill("input[name=min_samples]", "10")
    page.fill("input[name=share]", "0.5")
    shot(page, "rollout-start")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/rollout$"))
    assert page.inner_text("#rollout-state") == "running"
    shot(page, "rollout-running")
    feedback = [{"task_id": "rollout-task", "score": s, "output": "o", "arm": arm,
                 "prompt_version_id": ids["v1"] if arm == "active" else ids["v2"]}
                for arm, s in [("active", 0.25), ("candidate", 0.9)] * 10]
    assert api.post("/api/v1/ingest", json={"feedback": feedback}).status_code == 207
    # the page updates itself (htmx polls the live part while the rollout runs)
    from playwright.sync_api import expect

    expect(page.locator("#rollout-state")).to_have_text("promoted", timeout=10_000)
    assert page.locator("#events tr", has_text="promoted").count() == 1
    assert page.locator("#audit tr", has_text="promoted").count() >= 1
    assert api.get("/api/v1/prompts/rollout-task").json()["id"] == ids["v2"]
    # a second rollout (v1 again as the candidate), stopped by hand from its page
    page.goto(ui_server.base_url + "/ui/tasks/rollout-task/versions")
    page.click(f"a.start-rollout[href$='{ids['v1']}']")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/rollout$"))
    page.click("#rollback")
    assert "Roll back (stop) now" in page.inner_text("#consequences")
    page.click("#confirm")
    page.wait_for_url(re.compile(r".*/rollout$"))
    assert page.inner_text("#rollout-state") == "rolled_back"
    assert page.locator("#audit tr", has_text="bootstrap").count() >= 2
    assert api.get("/api/v1/rollouts/rollout-task").json()["state"] == "rolled_back"


def test_label_twenty_traces_by_keyboard_and_the_next_job_learns_from_them(
    page: Any, ui_server: LocalServer, api: httpx.Client
) -> None:
    assert api.post("/api/v1/tasks", json={"name": "review-task", "feedback_threshold": 1000,
                                           "prompt_text": "Say {word}"}).status_code == 201
    traces = [{"task_id": "review-task", "prompt_text": f"Say w{i}", "response_text": f"w{i}",
               "metadata": {"inputs": {"word": f"w{i}"}}} for i in range(20)]
    assert api.post("/api/v1/ingest", json={"traces": traces}).json()["accepted"] == 20
    sign_in(page, ui_server, ui_server.api_key, "/ui/tasks/review-task/review")
    shot(page, "review-queue")
    for i in range(20):
        first = page.locator(".review-item input[name=trace_id]").first.get_attribute("value")
        page.keyboard.press(str(9 if i % 2 else 3))
        page.wait_for_url(re.compile(rf".*done={first}$"))
    assert page.locator(".review-item").count() == 0
    rows = api.get("/api/v1/feedback", params={"task_id": "review-task", "limit": 100}).json()
    assert sorted(r["source"] for r in rows) == ["human"] * 20
    assert sorted(round(r["score"], 3) for r in rows) == [0.333] * 10 + [1.0] * 10
    listed = api.get("/api/v1/traces", params={"task_id": "review-task"}).json()
    assert all(t["scored_by"] == "human" for t in listed)
    job = wait_job(api, api.post("/api/v1/optimize/review-task").json()["job"]["id"])
    assert job["status"] == "SUCCESS", job
    assert job["feedback_count"] == 20
