"""The web UI's security rules over plain HTTP: sessions, CSRF, scopes, escaping."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ui_support import csrf_of, make_judged, new_key, seed

from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data(api: httpx.Client) -> dict[str, Any]:
    return seed(api, "secure-task")


@contextlib.contextmanager
def signed_in(server: LocalServer, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        resp = client.post("/ui/signin", data={"key": key, "next": "/ui/tasks"})
        assert resp.status_code == 303 and resp.headers["location"] == "/ui/tasks", resp.text
        yield client


@pytest.fixture
def admin(ui_server: LocalServer) -> Iterator[httpx.Client]:
    with signed_in(ui_server, ui_server.api_key) as client:
        yield client


def every_url(data: dict[str, Any]) -> list[tuple[str, str]]:
    """One (method, path) of every UI route but sign-in, with real ids."""
    t, job, trace = "secure-task", data["job"]["id"], data["traces"][0]
    gets = ["/ui/", "/ui", "/ui/tasks", f"/ui/tasks/{t}", "/ui/traces", f"/ui/traces/{trace}",
            f"/ui/tasks/{t}/versions", f"/ui/tasks/{t}/diff?a={data['v1']}&b={data['v2']}",
            f"/ui/tasks/{t}/activate?version={data['v2']}", "/ui/jobs", f"/ui/jobs/{job}",
            f"/ui/tasks/{t}/rollout", f"/ui/tasks/{t}/rollout/start?version={data['v2']}",
            f"/ui/tasks/{t}/rollout/promote", f"/ui/tasks/{t}/review",
            "/ui/static/htmx.min.js", "/ui/static/ui.css", "/ui/static/ui.js",
            "/ui/static/htmx-LICENSE.txt", "/ui/no-such-page"]
    posts = ["/ui/signout", f"/ui/tasks/{t}/versions", f"/ui/tasks/{t}/activate",
             f"/ui/tasks/{t}/rollout/start", f"/ui/tasks/{t}/rollout/approve",
             f"/ui/tasks/{t}/rollout/promote", f"/ui/tasks/{t}/rollout/rollback",
             f"/ui/tasks/{t}/review"]
    return [("GET", p) for p in gets] + [("POST", p) for p in posts]


def test_every_page_and_asset_but_sign_in_needs_a_session(
    ui_server: LocalServer, data: dict[str, Any], admin: httpx.Client
) -> None:
    urls = every_url(data)
    assert len(urls) == 28
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as anonymous:
        for method, path in urls:
            resp = anonymous.request(method, path, data={"csrf": "x"} if method == "POST" else None)
            assert resp.status_code == 303, (method, path, resp.status_code)
            expected = "/ui/" if path == "/ui" else "/ui/signin"  # /ui is only a way to /ui/
            assert resp.headers["location"].startswith(expected), (method, path)
            assert b"secure-task" not in resp.content and b"htmx" not in resp.content
        # a made-up session id is no session
        anonymous.cookies.set("kaizen_ui", "made-up", domain=httpx.URL(ui_server.base_url).host)
        assert anonymous.get("/ui/tasks").status_code == 303
        assert anonymous.get("/ui/signin").status_code == 200
    # and signed in, every GET above answers (the made-up page 404)
    for method, path in urls:
        if method == "GET" and path not in ("/ui/", "/ui"):
            resp = admin.get(path)
            assert resp.status_code == (404 if path.endswith("no-such-page") else 200), path


def test_the_session_cookie_holds_a_random_id_not_the_key(ui_server: LocalServer) -> None:
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as client:
        resp = client.post("/ui/signin", data={"key": ui_server.api_key})
        cookie = resp.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui/" in cookie
        assert ui_server.api_key not in cookie
        sid = re.match(r"kaizen_ui=([^;]+);", cookie)
        assert sid is not None and len(sid.group(1)) >= 43
        page = client.get("/ui/tasks")
        assert page.status_code == 200 and ui_server.api_key not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        # signing out ends the session on the server, not only in this browser
        stolen = sid.group(1)
        client.post("/ui/signout", data={"csrf": csrf_of(page.text)})
    with httpx.Client(base_url=ui_server.base_url, timeout=10,
                      headers={"cookie": f"kaizen_ui={stolen}"}) as replay:
        assert replay.get("/ui/tasks").status_code == 303


def test_wrong_and_ingest_keys_cannot_sign_in(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    ingest = new_key(api, "ingest")
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as client:
        resp = client.post("/ui/signin", data={"key": "kz_not-a-key"})
        assert resp.status_code == 401 and "set-cookie" not in resp.headers
        resp = client.post("/ui/signin", data={"key": ingest})
        assert resp.status_code == 403 and "set-cookie" not in resp.headers
        assert "cannot sign in" in resp.text
        assert client.get("/ui/tasks").status_code == 303


def test_a_revoked_key_ends_its_sessions(ui_server: LocalServer, api: httpx.Client) -> None:
    secret = new_key(api, "read")
    key_id = next(k["id"] for k in api.get("/api/v1/keys?limit=1000").json()
                  if k["revoked_at"] is None and k["scope"] == "read")
    with signed_in(ui_server, secret) as client:
        assert client.get("/ui/tasks").status_code == 200
        assert api.delete(f"/api/v1/keys/{key_id}").status_code == 200
        assert client.get("/ui/tasks").status_code == 303


def versions_of(api: httpx.Client, task: str) -> list[str]:
    return [v["id"] for v in api.get(f"/api/v1/prompts/{task}/versions").json()]


def active_of(api: httpx.Client, task: str) -> str:
    return str(api.get(f"/api/v1/prompts/{task}").json()["id"])


def test_a_change_without_the_sessions_csrf_token_is_refused(
    ui_server: LocalServer, api: httpx.Client, data: dict[str, Any], admin: httpx.Client
) -> None:
    before, active = versions_of(api, "secure-task"), active_of(api, "secure-task")
    for token in (None, "", "wrong-token"):
        form = {"prompt_text": "sneaky"} if token is None else {"prompt_text": "sneaky",
                                                                 "csrf": token}
        resp = admin.post("/ui/tasks/secure-task/versions", data=form)
        assert resp.status_code == 403 and "CSRF" in resp.text
        form = {"version_id": data["v2"], **({} if token is None else {"csrf": token})}
        assert admin.post("/ui/tasks/secure-task/activate", data=form).status_code == 403
    # another session's token is not this session's
    with signed_in(ui_server, ui_server.api_key) as other:
        theirs = csrf_of(other.get("/ui/tasks/secure-task/versions").text)
    resp = admin.post("/ui/tasks/secure-task/activate", data={"version_id": data["v2"],
                                                              "csrf": theirs})
    assert resp.status_code == 403
    # a POST from another origin is refused even with the token
    token = csrf_of(admin.get("/ui/tasks/secure-task/versions").text)
    resp = admin.post("/ui/tasks/secure-task/activate", data={"version_id": data["v2"],
                                                              "csrf": token},
                      headers={"origin": "http://evil.example"})
    assert resp.status_code == 403
    assert versions_of(api, "secure-task") == before and active_of(api, "secure-task") == active
    # with the token, the same change goes through (so the refusals above were the token's)
    resp = admin.post("/ui/tasks/secure-task/activate", data={"version_id": data["v2"],
                                                              "csrf": token})
    assert resp.status_code == 303 and active_of(api, "secure-task") == data["v2"]
    token = csrf_of(admin.get("/ui/tasks/secure-task/versions").text)
    resp = admin.post("/ui/tasks/secure-task/activate", data={"version_id": data["v1"],
                                                              "csrf": token})
    assert resp.status_code == 303 and active_of(api, "secure-task") == data["v1"]


def test_a_read_key_sees_everything_and_changes_nothing(
    ui_server: LocalServer, api: httpx.Client, data: dict[str, Any]
) -> None:
    before, active = versions_of(api, "secure-task"), active_of(api, "secure-task")
    audit_before = len(api.get("/api/v1/audit?limit=1000").json())
    with signed_in(ui_server, new_key(api, "read")) as reader:
        page = reader.get("/ui/tasks/secure-task/versions")
        assert page.status_code == 200 and "Activate" not in page.text
        assert "new-version" not in page.text
        token = csrf_of(page.text)
        changes = {
            "/ui/tasks/secure-task/versions": {"prompt_text": "by a reader"},
            "/ui/tasks/secure-task/activate": {"version_id": data["v2"]},
            "/ui/tasks/secure-task/rollout/start": {"version_id": data["v2"]},
            "/ui/tasks/secure-task/rollout/approve": {},
            "/ui/tasks/secure-task/rollout/promote": {},
            "/ui/tasks/secure-task/rollout/rollback": {},
            "/ui/tasks/secure-task/review": {"trace_id": data["traces"][1], "score": "1"},
        }
        for path, form in changes.items():
            resp = reader.post(path, data={**form, "csrf": token})
            assert resp.status_code == 403, (path, resp.status_code, resp.text[:300])
            assert "admin key" in resp.text
    assert versions_of(api, "secure-task") == before and active_of(api, "secure-task") == active
    assert api.get(f"/api/v1/traces/{data['traces'][1]}").json()["score"] is None
    assert api.get("/api/v1/rollouts/secure-task").status_code == 404
    # the sign-ins of the reader's key are the only audit entries added (key creation)
    assert len(api.get("/api/v1/audit?limit=1000").json()) == audit_before + 1


def test_trace_contents_render_as_text(data: dict[str, Any], admin: httpx.Client) -> None:
    pages = [f"/ui/traces/{data['traces'][0]}", "/ui/traces?task=secure-task",
             "/ui/tasks/secure-task"]
    for path in pages:
        html = admin.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html, path
    html = admin.get(f"/ui/traces/{data['traces'][0]}").text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert re.search(r'<pre id="output">[^<]*\{\{ 7\*7 \}\} \{% raw %\}</pre>', html)
    assert "too &lt;script&gt;" in html  # the feedback's comment
    # the only scripts on the page are this server's files
    assert re.findall(r"<script[^>]*>", html) == [
        '<script src="/ui/static/htmx.min.js" defer>', '<script src="/ui/static/ui.js" defer>']


def test_the_job_page_draws_the_paired_interval(
    ui_server: LocalServer, data: dict[str, Any], admin: httpx.Client
) -> None:
    make_judged(ui_server, data["job"]["id"])
    html = admin.get(f"/ui/jobs/{data['job']['id']}").text
    # the axis spans [-0.016, 0.216] (zero, the interval, 8 % padding): x = 150 + share * 318
    assert '<line x1="240.5" x2="446.1"' in html  # the interval 0.05 .. 0.2
    assert '<circle cx="343.3"' in html  # the estimate 0.125
    assert 'x1="171.9" x2="171.9"' in html  # zero
    assert "candidate 0.812 vs active 0.688 on 40 held-out examples" in html
    assert "spent $0.0101 of estimated $0.0123" in html
    assert "injection check: &lt;b&gt;instructions&lt;/b&gt;" in html


def test_an_oversized_form_is_refused_before_it_is_read(ui_server: LocalServer) -> None:
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as client:
        resp = client.post("/ui/signin", content=b"key=" + b"x" * (4 * 1024 * 1024),
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 413
        # the sign-in page's one inline style is allowed by its hash, nothing else inline is
        page = client.get("/ui/signin")
        csp = page.headers["content-security-policy"]
        assert re.search(r"style-src 'self' 'sha256-[A-Za-z0-9+/=]{44}';", csp)
        assert "unsafe-inline" not in csp and "script-src 'self';" in csp


def test_trace_filters_read_bounded_pages_and_page_on(
    api: httpx.Client, data: dict[str, Any], admin: httpx.Client
) -> None:
    html = admin.get("/ui/traces", params={"task": "secure-task", "min_score": "0.2",
                                           "max_score": "0.3"}).text
    assert html.count('href="/ui/traces/') == 1 and data["traces"][0][:8] in html
    html = admin.get("/ui/traces", params={"task": "secure-task", "version": data["v2"]}).text
    assert html.count('href="/ui/traces/') == 0 and "0 matching among the 3 traces" in html
    assert admin.get("/ui/traces", params={"min_score": "high"}).status_code == 422
    assert api.post("/api/v1/tasks", json={"name": "filter-task"}).status_code == 201
    traces = [{"task_id": "filter-task", "response_text": f"r{i}",
               **({"tags": ["x"], "user_id": "u"} if i % 5 == 0 else {})} for i in range(600)]
    assert api.post("/api/v1/ingest", json={"traces": traces}).json()["accepted"] == 600
    first = admin.get("/ui/traces", params={"task": "filter-task", "tag": "x"}).text
    # 200 rows a read: 40 matches after the first, 80 after the second, which is enough
    assert "80 matching among the 400 traces read" in first
    assert first.count('href="/ui/traces/') == 80
    link = re.search(r'class="next" href="\?([^"]+)"', first)
    assert link is not None and "tag=x" in link.group(1) and "task=filter-task" in link.group(1)
    second = admin.get("/ui/traces?" + link.group(1).replace("&amp;", "&")).text
    assert "40 matching among the 200 traces read" in second and 'class="next"' not in second
    assert admin.get("/ui/traces", params={"task": "filter-task", "user": "u", "tag": "y"}
                     ).text.count('href="/ui/traces/') == 0


def test_a_failing_page_is_a_plain_500_and_a_log_line(
    admin: httpx.Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from kaizen_server.ui.app import UiApp

    def broken(self: UiApp, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail kz_abc")

    monkeypatch.setattr(UiApp, "_get", broken)  # what every list page calls first
    with caplog.at_level("ERROR", logger="kaizen_server.ui"):
        resp = admin.get("/ui/jobs")
    assert resp.status_code == 500 and "kz_abc" not in resp.text
    assert "see its log" in resp.text
    assert "web UI: GET /ui/jobs failed" in caplog.text
