"""Pull requests for prompts kept as code, through the GitHub REST API.

`open_pull_request` makes a branch from the task's base branch, commits the candidate prompt to
the task's ``prompt_path`` on it, and opens a pull request whose body is the evaluation report.
It authenticates with ``KAIZEN_GITHUB_TOKEN``; ``KAIZEN_GITHUB_API_URL`` points it at GitHub
Enterprise (``https://HOST/api/v3``). Any failure is a `PullRequestError` whose message says which
call failed and why; the token never appears in it.

GitHub's answers are data, not trust: every call goes through
`kaizen_server.outbound.Outbound` (a total deadline, answers capped at `MAX_ANSWER_BYTES`),
and an answer that is not JSON, not an object, or lacks a field the next step needs is a
`PullRequestError` naming the call and the field. A failure keeps only the status and its
reason, never GitHub's body (which may echo the token).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from kaizen_server.outbound import (
    Canceller,
    DeadlineExceeded,
    Outbound,
    OutboundCancelled,
    OutboundError,
    Reply,
    status_summary,
)
from kaizen_server.scrub import Scrubber, url_secrets, without_userinfo
from kaizen_server.settings import KAIZEN_GITHUB_API_URL, KAIZEN_GITHUB_TOKEN

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_DEADLINE",
    "MAX_ANSWER_BYTES",
    "PullRequestError",
    "file_content",
    "open_pull_request",
]

DEFAULT_API_URL = "https://api.github.com"
"""The GitHub REST API base used when ``KAIZEN_GITHUB_API_URL`` is unset."""

DEFAULT_DEADLINE = 60.0
"""Seconds the whole pull request (its five calls) may take."""

MAX_ANSWER_BYTES = 1024 * 1024
"""Largest GitHub answer read (1 MiB); a longer one fails the pull request."""


class PullRequestError(Exception):
    """Opening the pull request failed; ``str()`` names the failing call and the reason."""


def file_content(prompt_text: str, prompt_format: str | None) -> str:
    """Return the file text for *prompt_text*: the template itself, or JSON for ``json``."""
    if prompt_format == "json":
        return json.dumps({"prompt_text": prompt_text}, indent=2, ensure_ascii=False) + "\n"
    return prompt_text if prompt_text.endswith("\n") else prompt_text + "\n"


def _field(reply: Reply, what: str, *path: str) -> Any:
    """The value at *path* of the JSON object *reply*; `PullRequestError` when it is absent."""
    try:
        data: Any = reply.json()
    except ValueError:
        raise PullRequestError(f"GitHub answered a body that is not JSON while {what}") from None
    for key in path:
        if not isinstance(data, dict):
            raise PullRequestError(
                f"GitHub answered {type(data).__name__} where an object with"
                f" {'.'.join(path)!r} was expected while {what}")
        if key not in data:
            raise PullRequestError(
                f"GitHub's answer has no {'.'.join(path)!r} while {what}")
        data = data[key]
    return data


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
    deadline: float = DEFAULT_DEADLINE,
    deadline_at: float | None = None,
    canceller: Canceller | None = None,
    scrubber: Scrubber | None = None,
) -> str:
    """Commit *content* to *path* on a new *branch* of *repo* and open a pull request.

    Returns the pull request's ``html_url``. *token* and *api_url* default to
    ``KAIZEN_GITHUB_TOKEN`` and ``KAIZEN_GITHUB_API_URL``. The five calls together end by
    *deadline* seconds from now (or the earlier `time.monotonic` instant *deadline_at*);
    *canceller* stops them when the server stops; *scrubber* cleans every message.
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
    scrub = Scrubber([token, *url_secrets(base_url)]) if scrubber is None else scrubber
    shown = without_userinfo(base_url)
    end = time.monotonic() + deadline
    if deadline_at is not None:
        end = min(end, deadline_at)
    try:
        return _open(repo=repo, path=path, base_branch=base_branch, branch=branch,
                     content=content, title=title, body=body, token=token, base_url=base_url,
                     shown=shown, end=end, transport=transport, canceller=canceller)
    except PullRequestError as exc:
        raise PullRequestError(scrub(exc)) from None


def _open(*, repo: str, path: str, base_branch: str | None, branch: str, content: str,
          title: str, body: str, token: str, base_url: str, shown: str, end: float,
          transport: httpx.BaseTransport | None, canceller: Canceller | None) -> str:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    base = base_branch or "main"
    repo_path = f"/repos/{repo}"
    file_path = quote(path.lstrip("/"))
    headers["Accept-Encoding"] = "identity"
    http = Outbound(headers=headers, max_bytes=MAX_ANSWER_BYTES, canceller=canceller,
                    transport=transport)
    try:

        def call(method: str, url: str, what: str, ok: tuple[int, ...] = (200, 201),
                 **kwargs: Any) -> Reply:
            try:
                resp = http.request(method, base_url + repo_path + url, deadline_at=end,
                                    **kwargs)
            except OutboundCancelled:
                raise PullRequestError(f"stopped while {what}: the local server is"
                                       " stopping") from None
            except DeadlineExceeded:
                raise PullRequestError(
                    f"GitHub API {shown} did not answer in time while {what}; check"
                    f" {KAIZEN_GITHUB_API_URL}") from None
            except OutboundError as exc:
                raise PullRequestError(
                    f"GitHub API {shown} gave no usable answer ({exc}) while {what}; check"
                    f" {KAIZEN_GITHUB_API_URL}"
                ) from None
            if resp.status_code not in ok:
                raise PullRequestError(
                    f"GitHub answered {status_summary(resp.status_code)} while {what}"
                )
            return resp

        what = f"reading branch {base!r}"
        ref = call("GET", f"/git/ref/heads/{quote(base)}", what)
        sha = _field(ref, what, "object", "sha")
        if not isinstance(sha, str):
            raise PullRequestError(f"GitHub's answer has no text 'object.sha' while {what}")
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
            file_sha = _field(existing, f"reading {path!r}", "sha")
            if not isinstance(file_sha, str):
                raise PullRequestError(f"GitHub's answer has no text 'sha' while reading"
                                       f" {path!r}")
            put["sha"] = file_sha
        call("PUT", f"/contents/{file_path}", f"committing {path!r}", json=put)
        what = "opening the pull request"
        pull = call("POST", "/pulls", what,
                    json={"title": title, "head": branch, "base": base, "body": body})
        try:
            url = _field(pull, what, "html_url")
        except PullRequestError:
            url = None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise PullRequestError("GitHub opened the pull request but sent no html_url")
        return url[:2000]
    finally:
        http.close()
