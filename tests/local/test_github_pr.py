"""Prompt pull requests from the local optimizer against a loopback stand-in of the GitHub API.

The DSPy flow (a pull request from a ``dspy`` job) is in ``test_dspy_jobs.py``.
"""

from __future__ import annotations

import json

import httpx
import pytest
from llm_standin import GitHubStandIn
from optimize_helpers import make_task, run

from kaizen_server import LocalServer


def test_local_job_opens_one_pull_request_with_the_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with GitHubStandIn() as gh, LocalServer() as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
        monkeypatch.setenv("KAIZEN_GITHUB_TOKEN", "ghp-standin-token")
        monkeypatch.setenv("KAIZEN_GITHUB_API_URL", gh.api_url)
        make_task(c, "pr-ok", 4, github_repo=gh.repo, prompt_path="prompts/shout.txt",
                  prompt_format="json")
        _, job = run(c, "pr-ok")
        assert job["status"] == "SUCCESS" and job["pr_url"] == gh.pulls[0]["html_url"]
        assert len(gh.pulls) == 1
        version = c.get("/api/v1/prompts/pr-ok/versions").json()[0]
        written = gh.files[(gh.pulls[0]["head"], "prompts/shout.txt")]
        assert json.loads(written) == {"prompt_text": version["prompt_text"]}
        assert set(gh.tokens) == {"Bearer ghp-standin-token"}


def test_pull_request_422_ends_pr_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    with GitHubStandIn() as gh, LocalServer() as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
        gh.pull_status = 422
        monkeypatch.setenv("KAIZEN_GITHUB_TOKEN", "ghp-standin-token")
        monkeypatch.setenv("KAIZEN_GITHUB_API_URL", gh.api_url)
        make_task(c, "pr", 4, github_repo=gh.repo, prompt_path="prompts/shout.txt")
        _, job = run(c, "pr")
        assert job["status"] == "PR_FAILED"
        assert job["error_message"].startswith("pull request failed: GitHub answered HTTP 422")
        # A summary (status, reason), never GitHub's body: it may echo the token.
        assert job["error_message"].endswith(
            "422 Unprocessable Entity while opening the pull request")
        assert job["pr_url"] is None and job["prompt_version_id"] is not None
        assert gh.pulls == [] and "ghp-standin-token" not in job["error_message"]


def test_missing_token_ends_pr_failed_naming_the_variable() -> None:
    with LocalServer() as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
        make_task(c, "pr-no-token", 4, github_repo="acme/prompts", prompt_path="p.txt")
        _, job = run(c, "pr-no-token")
        assert job["status"] == "PR_FAILED"
        assert "KAIZEN_GITHUB_TOKEN is not set" in job["error_message"]
