"""One scrubber: no secret from an upstream reaches a job error, the database, the log or the CLI.

Hostile stand-ins echo the LLM key and the GitHub token in their 4xx bodies (raw, base64,
URL-encoded), and the LLM base URL carries ``user:key@``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hostile_upstream import HostileUpstream
from optimize_helpers import make_task, wait

from kaizen_sdk import cli
from kaizen_server import LocalServer
from kaizen_server.scrub import Scrubber, url_secrets, without_userinfo

os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

LLM_KEY = "sk-hostile-llm-key-7731"
URL_PASSWORD = "url-pass-word-9904"
GH_TOKEN = "ghp-hostile-token-5150"


def _forms(secret: str) -> list[str]:
    """The secret and encodings of it a careless upstream might echo."""
    raw = secret.encode()
    forms = [secret, quote(secret, safe=""), binascii.hexlify(raw).decode()]
    for prefix in (b"", b"a", b"ab", b"Bearer ", b"user:"):
        forms.append(base64.b64encode(prefix + raw).decode()[len(prefix) * 4 // 3 + 2:-4])
    return [f for f in forms if len(f) >= 8]


def _leaks(text: str, secrets: tuple[str, ...] = (LLM_KEY, URL_PASSWORD, GH_TOKEN)) -> list[str]:
    return [f for s in secrets for f in _forms(s) if f in text]


def test_scrubber_removes_secrets_their_encodings_and_url_userinfo() -> None:
    scrub = Scrubber([LLM_KEY, None, "", "short"])
    for prefix in ("", "x", "xy", "Bearer ", "alice:"):
        b64 = base64.b64encode((prefix + LLM_KEY).encode()).decode()
        assert _leaks(scrub(f"echo {b64} end"), (LLM_KEY,)) == [], prefix
        urlsafe = base64.urlsafe_b64encode((prefix + LLM_KEY).encode()).decode()
        assert _leaks(scrub(urlsafe), (LLM_KEY,)) == []
    text = (f"raw {LLM_KEY} url {quote(LLM_KEY, safe='')} hex "
            f"{binascii.hexlify(LLM_KEY.encode()).decode()} at https://bob:pw1@host/v1")
    out = scrub(text)
    assert _leaks(out, (LLM_KEY,)) == [] and "pw1" not in out
    assert out.startswith("raw *** url *** hex *** at https://***@host/v1")
    assert scrub("short words stay") == "short words stay"
    assert len(scrub("z" * 10_000)) == 2000
    assert url_secrets(f"http://alice:{URL_PASSWORD}@h/v1") == ["alice", "alice", URL_PASSWORD,
                                                                 URL_PASSWORD]
    assert without_userinfo("http://a:b@h:1/v1") == "http://***@h:1/v1"


def _everything(srv: LocalServer, c: httpx.Client, job_id: str, db: Path,
                capsys: pytest.CaptureFixture[str]) -> str:
    """Every place a job error shows: GET /jobs/{id}, GET /jobs, the CLI."""
    parts = [c.get(f"/api/v1/jobs/{job_id}").text, c.get("/api/v1/jobs").text]
    capsys.readouterr()
    base = ["--base-url", srv.base_url, "--api-key", srv.api_key]
    assert cli.main(["jobs", "get", job_id, *base]) in (0, 1)
    assert cli.main(["jobs", "get", job_id, "--json", *base]) in (0, 1)
    parts.append(capsys.readouterr().out)
    return "\n".join(parts)


def _db_text(db: Path) -> str:
    data = b""
    for path in db.parent.glob(db.name + "*"):  # the database, its WAL and journal
        data += path.read_bytes()
    return data.decode("latin-1")


def test_llm_secrets_echoed_by_the_endpoint_reach_no_job_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "k.db"
    with HostileUpstream("echo", status=400) as up:
        base_url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{up.port}/v1"
        with LocalServer(db, optimizer="dspy", llm_base_url=base_url,
                         llm_api_key=LLM_KEY) as srv, \
                httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
            make_task(c, "echo", 12)
            job_id = c.post("/api/v1/optimize/echo").json()["job"]["id"]
            job = wait(c, job_id, timeout=30)
            shown = _everything(srv, c, job_id, db, capsys)
        assert up.requests == 1
    assert job["status"] == "FAILURE"
    assert job["error_message"].startswith("the LLM endpoint answered HTTP 400 Bad Request")
    assert _leaks(shown) == [] and _leaks(caplog.text) == [] and _leaks(_db_text(db)) == []
    assert "bad credentials" not in shown  # a summary, never the upstream's body


def test_an_unreachable_llm_url_with_userinfo_is_shown_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    caplog.set_level(logging.DEBUG)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "k.db"
    base_url = f"http://alice:{URL_PASSWORD}@127.0.0.1:{port}/v1"
    with LocalServer(db, optimizer="dspy", llm_base_url=base_url, llm_api_key=LLM_KEY) as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
        make_task(c, "gone", 12)
        job_id = c.post("/api/v1/optimize/gone").json()["job"]["id"]
        job = wait(c, job_id, timeout=30)
        shown = _everything(srv, c, job_id, db, capsys)
    assert job["status"] == "FAILURE"
    assert f"the LLM endpoint http://***@127.0.0.1:{port}/v1 is unreachable" in \
        job["error_message"]
    assert _leaks(shown) == [] and _leaks(caplog.text) == [] and _leaks(_db_text(db)) == []


def test_a_github_token_echoed_in_a_422_reaches_no_job_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    db = tmp_path / "k.db"
    with HostileUpstream("echo", status=422) as gh:
        monkeypatch.setenv("KAIZEN_GITHUB_TOKEN", GH_TOKEN)
        monkeypatch.setenv("KAIZEN_GITHUB_API_URL", gh.url)
        with LocalServer(db) as srv, \
                httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key}) as c:
            _local_task(c, "ghecho", github_repo="o/r", prompt_path="p.txt")
            job_id = c.post("/api/v1/optimize/ghecho").json()["job"]["id"]
            job = wait(c, job_id)
            shown = _everything(srv, c, job_id, db, capsys)
    assert job["status"] == "PR_FAILED"
    assert job["error_message"] == ("pull request failed: GitHub answered HTTP 422 Unprocessable"
                                    " Entity while reading branch 'main'")
    assert job["prompt_version_id"] is not None  # the candidate is kept
    assert _leaks(shown) == [] and _leaks(caplog.text) == [] and _leaks(_db_text(db)) == []


def _local_task(c: httpx.Client, name: str, **fields: Any) -> None:
    assert c.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 1000, **fields}
                  ).status_code == 201
    items = [{"task_id": name, "inputs": {"q": str(i)}, "output": f"answer {i}", "score": 0.9}
             for i in range(6)]
    resp = c.post("/api/v1/ingest", json={"feedback": items})
    assert resp.status_code == 207 and resp.json()["accepted"] == 6
