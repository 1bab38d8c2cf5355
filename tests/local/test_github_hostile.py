"""GitHub answers are data, not trust: any malformed answer ends PR_FAILED, the candidate kept."""

from __future__ import annotations

import logging

import httpx
import pytest
from hostile_upstream import HostileUpstream
from optimize_helpers import wait

from kaizen_server import LocalServer

TOKEN = "ghp-hostile-json-0042"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>rate limited</html>",
         "GitHub answered a body that is not JSON while reading branch 'main'"),
        (b'[{"sha": "abc"}]',
         "GitHub answered list where an object with 'object.sha' was expected while reading"
         " branch 'main'"),
        (b'{"object": "abc"}',
         "GitHub answered str where an object with 'object.sha' was expected while reading"
         " branch 'main'"),
        (b'{"ref": "refs/heads/main"}',
         "GitHub's answer has no 'object.sha' while reading branch 'main'"),
        (b'{"object": {"sha": 42}}',
         "GitHub's answer has no text 'object.sha' while reading branch 'main'"),
        (b'{"object": {"sha": "abc"}, "sha": "def"}',
         "GitHub opened the pull request but sent no html_url"),
        (b'{"object": {"sha": "abc"}, "sha": "def", "html_url": "javascript:alert(1)"}',
         "GitHub opened the pull request but sent no html_url"),
        (b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}',
         "gave no usable answer (the answer declares 2097163 bytes; the cap is 1048576)"
         " while reading branch 'main'"),
    ],
    ids=["not-json", "list", "object-not-dict", "no-sha", "sha-not-text", "no-html-url",
         "bad-html-url", "huge"],
)
def test_a_malformed_github_answer_ends_pr_failed_keeping_the_candidate(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, body: bytes, reason: str,
) -> None:
    caplog.set_level(logging.WARNING)
    with HostileUpstream("json", status=200, body=body) as gh:
        monkeypatch.setenv("KAIZEN_GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("KAIZEN_GITHUB_API_URL", gh.url)
        with LocalServer() as srv, httpx.Client(
                base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
            assert c.post("/api/v1/tasks", json={
                "name": "gh", "feedback_threshold": 1000, "github_repo": "o/r",
                "prompt_path": "prompts/p.txt"}).status_code == 201
            items = [{"task_id": "gh", "inputs": {"q": str(i)}, "output": f"a{i}", "score": 0.9}
                     for i in range(6)]
            assert c.post("/api/v1/ingest", json={"feedback": items}).status_code == 207
            job = wait(c, c.post("/api/v1/optimize/gh").json()["job"]["id"])
            versions = c.get("/api/v1/prompts/gh/versions").json()
    assert job["status"] == "PR_FAILED"
    assert job["error_message"].startswith("pull request failed: ")
    assert reason in job["error_message"]
    assert job["pr_url"] is None
    # The paid-for candidate is kept.
    assert [v["id"] for v in versions] == [job["prompt_version_id"]]
    assert versions[0]["status"] == "candidate"
    assert "crashed" not in caplog.text and TOKEN not in caplog.text
