"""Fixtures and helpers of the web UI tests: a local server with data in it, one real browser.

The browser is Debian's ``chromium`` driven by Playwright (never a downloaded browser): `make
test` installs both when missing, and the `browser` fixture fails (never skips) when they are
not there. Test modules import the helpers from here (a module name no other test folder
uses: several folders have a ``conftest``); tests/ui/conftest.py hands the fixtures to pytest.
Screenshots of every page go to ``build/ui-screenshots/``, or with
``KAIZEN_UPDATE_SCREENSHOTS=1`` (``make screenshots``) to ``docs/img/ui/`` (docs/ui.md).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaizen_server import LocalServer

CHROMIUM = os.environ.get("KAIZEN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "build" / "ui-screenshots"
DOC_SCREENSHOTS = ROOT / "docs" / "img" / "ui"
UI_DOC = ROOT / "docs" / "ui.md"
UPDATE_SCREENSHOTS = os.environ.get("KAIZEN_UPDATE_SCREENSHOTS") == "1"
"""Read at import: every test starts with the KAIZEN_* variables cleared (tests/conftest.py)."""
HOSTILE = ('<script>alert("x")</script> "><img src=x onerror=alert(1)> {{ 7*7 }} {% raw %}')


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A local server of this test file's own (the sessions and data of one file)."""
    with LocalServer(tmp_path_factory.mktemp("ui") / "ui.db") as server:
        yield server


JUDGED = {
    "verdict": "better", "sample_size": 40, "candidate_judged_mean": 0.8125,
    "active_judged_mean": 0.6875, "paired_diff": 0.125, "paired_diff_ci95": [0.05, 0.2],
    "estimated_cost_usd": 0.0123, "spent_usd": 0.0101,
    "flags": ["injection check: <b>instructions</b> in a demonstration"],
}
"""What a judged job's metadata holds (the DSPy optimizer's, `kaizen_server.evaluate.judge`)."""


def make_judged(server: LocalServer, job_id: str) -> None:
    """Give a finished job the metadata of a judged one (as the DSPy optimizer writes it),
    without running DSPy: the UI shows what the metadata says."""
    from kaizen_server.storage.sqlite import Store

    assert server.db_path is not None
    store = Store(server.db_path)
    try:
        store.merge_job_metadata(job_id, JUDGED)
    finally:
        store.close()


@pytest.fixture(scope="module")
def api(ui_server: LocalServer) -> Iterator[httpx.Client]:
    """An httpx client of *ui_server*'s API with its (admin) key."""
    with httpx.Client(base_url=ui_server.base_url, timeout=10,
                      headers={"X-API-Key": ui_server.api_key}) as client:
        yield client


def new_key(api: httpx.Client, scope: str) -> str:
    """A fresh key of *scope*; its secret."""
    resp = api.post("/api/v1/keys", json={"name": f"ui-{scope}-{uuid.uuid4().hex[:8]}",
                                           "scope": scope})
    assert resp.status_code == 201, resp.text
    secret: str = resp.json()["secret"]
    return secret


def seed(api: httpx.Client, name: str, *, traces: int = 3) -> dict[str, Any]:
    """A task with v1 active and a v2, *traces* traces (the first hostile, scored, with
    feedback), and a finished optimization job. Returns the ids."""
    resp = api.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 100_000,
                                           "prompt_text": "Answer {question} briefly."})
    assert resp.status_code == 201, resp.text
    ids: dict[str, Any] = {"task": resp.json()["id"]}
    versions = api.get(f"/api/v1/prompts/{name}/versions").json()
    ids["v1"] = versions[0]["id"]
    resp = api.post(f"/api/v1/prompts/{name}/versions",
                    json={"prompt_text": "Answer {question} in one short sentence.\nBe kind."})
    assert resp.status_code == 201, resp.text
    ids["v2"] = resp.json()["id"]
    ids["traces"] = []
    for i in range(traces):
        body = {"task_id": name, "prompt_text": HOSTILE if i == 0 else f"Answer q{i} briefly.",
                "response_text": HOSTILE if i == 0 else f"answer {i}", "model": "standin-1",
                "tokens": 40 + i, "latency_ms": 120.5 + i, "prompt_version_id": ids["v1"],
                "metadata": {"inputs": {"question": HOSTILE if i == 0 else f"q{i}"}}}
        resp = api.post("/api/v1/traces", json=body)
        assert resp.status_code == 201, resp.text
        ids["traces"].append(resp.json()["id"])
    resp = api.post(f"/api/v1/traces/{ids['traces'][0]}/score",
                    json={"score": 0.25, "scored_by": "judge", "comment": "too " + HOSTILE,
                          "correction": "a better answer"})
    assert resp.status_code == 200, resp.text
    for i, score in enumerate((0.9, 0.8, 0.3)):
        resp = api.post("/api/v1/feedback", json={"task_id": name, "inputs": {"question": str(i)},
                                                  "output": f"out {i}", "score": score})
        assert resp.status_code == 201, resp.text
    job = api.post(f"/api/v1/optimize/{name}").json()["job"]
    ids["job"] = wait_job(api, job["id"])
    return ids


def wait_job(api: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a job until it ends (with a deadline); return it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = api.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("SUCCESS", "FAILURE", "PR_FAILED"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.02)


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Debian chromium for the whole session; fails loudly when it is missing."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: `make browser` (apt-get install chromium)"
                           " installs it; the UI tests do not skip without it.")
    from playwright.sync_api import sync_playwright  # an ImportError fails the tests too

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
