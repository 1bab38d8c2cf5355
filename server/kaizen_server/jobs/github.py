"""Pull requests for prompts kept as code, through the GitHub REST API.

`open_pull_request` makes a branch from the task's base branch, commits the candidate prompt to
the task's ``prompt_path`` on it, and opens a pull request whose body is the evaluation report.
It authenticates with ``KAIZEN_GITHUB_TOKEN``; ``KAIZEN_GITHUB_API_URL`` points it at GitHub
Enterprise (``https://HOST/api/v3``). Any failure is a `PullRequestError` whose message says which
call failed and why; the token never appears in it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from kaizen_server.settings import KAIZEN_GITHUB_API_URL, KAIZEN_GITHUB_TOKEN

__all__ = ["DEFAULT_API_URL", "PullRequestError", "file_content", "open_pull_request"]

DEFAULT_API_URL = "https://api.github.com"
"""The GitHub REST API base used when ``KAIZEN_GITHUB_API_URL`` is unset."""

_TIMEOUT = 30.0


class PullRequestError(Exception):
    """Opening the pull request failed; ``str()`` names the failing call and the reason."""


def file_content(prompt_text: str, prompt_format: str | None) -> str:
    """Return the file text for *prompt_text*: the template itself, or JSON for ``json``."""
    if prompt_format == "json":
        return json.dumps({"prompt_text": prompt_text}, indent=2, ensure_ascii=False) + "\n"
    return prompt_text if prompt_text.endswith("\n") else prompt_text + "\n"


def _reason(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if not isinstance(data, dict):
        return str(data)[:200]
    message = str(data.get("message", ""))
    details = [str(e.get("message", e.get("code", ""))) for e in data.get("errors", [])
               if isinstance(e, dict)]
    return message + (f" ({'; '.join(d for d in details if d)})" if any(details) else "")


def open_pull_request(
    *,
    repo: str,
    path: str,
    base_branch: str | None,
    branch: str,
    content: str,
    title: str,
    body: str,
    token: str | None = None,
    api_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Commit *content* to *path* on a new *branch* of *repo* and open a pull request.

    Returns the pull request's ``html_url``. *token* and *api_url* default to
    ``KAIZEN_GITHUB_TOKEN`` and ``KAIZEN_GITHUB_API_URL``.
    """
    env = os.environ if environ is None else environ
    token = token or env.get(KAIZEN_GITHUB_TOKEN) or None
    if token is None:
        raise PullRequestError(
            f"{KAIZEN_GITHUB_TOKEN} is not set: the local server needs a token with"
            f" contents and pull-request write access to {repo}"
        )
    if repo.count("/") != 1:
        raise PullRequestError(f"the task's github_repo {repo!r} is not OWNER/NAME"
                               " (`kaizen tasks update TASK --github-repo OWNER/NAME`)")
    base_url = (api_url or env.get(KAIZEN_GITHUB_API_URL) or DEFAULT_API_URL).rstrip("/")
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    base = base_branch or "main"
    repo_path = f"/repos/{repo}"
    file_path = quote(path.lstrip("/"))
    with httpx.Client(base_url=base_url, headers=headers, timeout=_TIMEOUT,
                      transport=transport) as http:

        def call(method: str, url: str, what: str, ok: tuple[int, ...] = (200, 201),
                 **kwargs: Any) -> httpx.Response:
            try:
                resp = http.request(method, repo_path + url, **kwargs)
            except httpx.HTTPError as exc:
                raise PullRequestError(
                    f"GitHub API {base_url} is unreachable ({type(exc).__name__}) while"
                    f" {what}; check {KAIZEN_GITHUB_API_URL}"
                ) from None
            if resp.status_code not in ok:
                raise PullRequestError(
                    f"GitHub answered HTTP {resp.status_code} while {what}: {_reason(resp)}"
                )
            return resp

        ref = call("GET", f"/git/ref/heads/{quote(base)}", f"reading branch {base!r}")
        sha = ref.json()["object"]["sha"]
        call("POST", "/git/refs", f"creating branch {branch!r}",
             json={"ref": f"refs/heads/{branch}", "sha": sha})
        existing = call("GET", f"/contents/{file_path}", f"reading {path!r}", ok=(200, 404),
                        params={"ref": branch})
        put: dict[str, Any] = {
            "message": title,
            "content": base64.b64encode(content.encode()).decode(),
            "branch": branch,
        }
        if existing.status_code == 200:
            put["sha"] = existing.json().get("sha")
        call("PUT", f"/contents/{file_path}", f"committing {path!r}", json=put)
        pull = call("POST", "/pulls", "opening the pull request",
                    json={"title": title, "head": branch, "base": base, "body": body})
        url = pull.json().get("html_url")
        if not isinstance(url, str):
            raise PullRequestError("GitHub opened the pull request but sent no html_url")
        return url
