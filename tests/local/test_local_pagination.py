"""Pagination: ``cursor`` + ``Link: <...>; rel="next"`` on every list endpoint, newest first,
stable while inserts continue; the clients' ``iter_*`` and the CLI's ``--all`` agree."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from kaizen_sdk import AsyncCTClient, CTClient
from kaizen_sdk.cli import main
from kaizen_sdk.errors import CTError
from kaizen_server import LocalServer

TOTAL = 2500


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer(api_key="pagination-key") as s:
        yield s


@pytest.fixture
def http(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=30
    ) as c:
        yield c


def _ingest(http: httpx.Client, task: str, n: int, *, feedback: bool = False) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for start in range(0, n, 500):
        items = [{"id": i, "task_id": task, "response_text": "r"} for i in ids[start:start + 500]]
        body = {"feedback": items} if feedback else {"traces": items}
        if feedback:
            for item in items:
                item.pop("response_text")
                item["score"] = 0.5
        resp = http.post("/api/v1/ingest", json=body)
        assert resp.status_code == 207 and resp.json()["errors"] == [], resp.text
    return ids


def _pages(http: httpx.Client, url: str, params: dict[str, str | int]) -> Iterator[list[dict]]:
    resp = http.get(url, params=params)
    for _ in range(10_000):  # bounded: far more pages than any test makes
        assert resp.status_code == 200, resp.text
        yield resp.json()
        nxt = resp.links.get("next")
        if nxt is None:
            return
        resp = http.get(nxt["url"])
    raise AssertionError("pagination did not end")


@pytest.fixture(scope="module")
def big_task(server: LocalServer) -> tuple[str, list[str]]:
    task = f"paged-{uuid.uuid4().hex[:8]}"
    with httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=30
    ) as c:
        ids = _ingest(c, task, TOTAL)
    return task, ids


def test_every_trace_exactly_once_while_inserts_continue(
    http: httpx.Client, server: LocalServer, big_task: tuple[str, list[str]]
) -> None:
    task, ids = big_task
    added: list[str] = []
    seen: list[str] = []
    pages = 0
    with httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}, timeout=30
    ) as writer:
        for page in _pages(http, "/api/v1/traces", {"task_id": task, "limit": 100}):
            seen += [t["id"] for t in page]
            pages += 1
            added += _ingest(writer, task, 20)  # new traces land between every two pages
    assert pages == TOTAL // 100
    assert len(added) == 20 * pages
    assert len(seen) == len(set(seen)) == TOTAL
    assert set(seen) == set(ids)
    assert seen == ids[::-1]  # newest first; the traces added meanwhile are newer


def test_link_header_only_while_more_remain(
    http: httpx.Client, big_task: tuple[str, list[str]]
) -> None:
    task, _ = big_task
    first = http.get("/api/v1/traces", params={"task_id": task, "limit": 1000})
    assert first.links["next"]["url"].startswith("/api/v1/traces?")
    assert 'rel="next"' in first.headers["link"]
    last = http.get("/api/v1/traces", params={"task_id": task, "limit": 1})
    cursor = httpx.URL(last.links["next"]["url"]).params["cursor"]
    assert "task_id" in last.links["next"]["url"]
    # A cursor is opaque but stable: the same one gives the same page.
    again = http.get("/api/v1/traces", params={"task_id": task, "limit": 1, "cursor": cursor})
    assert again.json() == http.get(last.links["next"]["url"]).json()
    small = http.get("/api/v1/tasks/" + task)
    assert "link" not in small.headers


@pytest.mark.parametrize("cursor", ["nope", "", "a2Ux", "k1.5", "%%%"])
def test_bad_cursor_is_400(http: httpx.Client, cursor: str) -> None:
    resp = http.get("/api/v1/traces", params={"cursor": cursor})
    assert resp.status_code == 400, resp.text
    assert "cursor" in resp.json()["detail"]


@pytest.mark.parametrize("path", ["/api/v1/traces", "/api/v1/tasks", "/api/v1/jobs"])
@pytest.mark.parametrize("limit", ["0", "1001", "x"])
def test_bad_limit_is_422(http: httpx.Client, path: str, limit: str) -> None:
    resp = http.get(path, params={"limit": limit})
    assert resp.status_code == 422
    assert "limit" in resp.json()["detail"]


def test_feedback_tasks_jobs_and_versions_page(
    http: httpx.Client, server: LocalServer
) -> None:
    names = [f"pg-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    job_ids = []
    for name in names:
        assert http.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 1000})
        _ingest(http, name, 3, feedback=True)
        job_ids.append(http.post(f"/api/v1/optimize/{name}").json()["job"]["id"])
    fb = [f["id"] for page in _pages(http, "/api/v1/feedback",
                                     {"task_id": names[0], "limit": 2}) for f in page]
    assert len(fb) == len(set(fb)) == 3
    tasks = [t["name"] for page in _pages(http, "/api/v1/tasks", {"limit": 2}) for t in page]
    assert [n for n in tasks if n in names] == names  # oldest first
    jobs = [j["id"] for page in _pages(http, "/api/v1/jobs", {"limit": 1}) for j in page]
    assert [j for j in jobs if j in job_ids] == job_ids[::-1]  # newest first
    with CTClient(base_url=server.base_url, api_key=server.api_key) as client:
        for n in range(3):  # hand-written versions: optimizing the same feedback adds none
            client.create_prompt_version(names[0], f"Version {n}: {{{{ text }}}}")
        versions = [
            p["version_number"]
            for page in _pages(http, f"/api/v1/prompts/{names[0]}/versions", {"limit": 1})
            for p in page
        ]
        assert versions == sorted(versions, reverse=True) and len(versions) >= 2
        listed = client.list_prompt_versions(names[0])
        assert [p.version_number for p in listed] == versions
        assert [t.name for t in client.list_tasks() if t.name in names] == names


def test_sync_iterators_agree_with_the_server(
    server: LocalServer, big_task: tuple[str, list[str]]
) -> None:
    task, ids = big_task
    with CTClient(base_url=server.base_url, api_key=server.api_key) as client:
        traces = [str(t.id) for t in client.iter_traces(task)]
        assert traces[-TOTAL:] == ids[::-1]
        assert len(traces) == len(set(traces)) >= TOTAL
        page = client.list_traces(task, limit=10)
        assert [str(t.id) for t in page] == traces[:10]
        assert len(list(client.iter_traces(task, page_size=7))) == len(traces)
        fb_task = f"fb-{uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                          timeout=30) as http:
            fb_ids = _ingest(http, fb_task, 1200, feedback=True)
        assert [str(f.id) for f in client.iter_feedback(fb_task)] == fb_ids[::-1]
        assert client.get_task(fb_task).feedback_count == 1200
        assert len(list(client.iter_jobs())) == len(
            [j for p in _pages_of(server, "/api/v1/jobs") for j in p]
        )


def _pages_of(server: LocalServer, path: str) -> Iterator[list[dict]]:
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                      timeout=30) as http:
        yield from _pages(http, path, {"limit": 1000})


async def test_async_iterators_agree_with_the_server(
    server: LocalServer, big_task: tuple[str, list[str]]
) -> None:
    task, ids = big_task
    async with AsyncCTClient(base_url=server.base_url, api_key=server.api_key) as client:
        traces = [str(t.id) async for t in client.iter_traces(task, page_size=300)]
        assert traces[-TOTAL:] == ids[::-1]
        assert len(traces) == len(set(traces))
        fb = [f async for f in client.iter_feedback(task)]
        assert fb == []
        jobs = [j async for j in client.iter_jobs()]
        assert len(jobs) == len([j for p in _pages_of(server, "/api/v1/jobs") for j in p])


def test_iterator_stops_on_a_server_repeating_its_cursor() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        link = '</api/v1/jobs?cursor=same>; rel="next"'
        return httpx.Response(200, json=[], headers={"Link": link})

    transport = httpx.MockTransport(handler)
    with CTClient(api_key="k", base_url="http://ct.test", transport=transport) as c, \
            pytest.raises(CTError, match="same next-page cursor"):
        list(c.iter_jobs())


def test_cli_all_agrees_with_the_server(
    server: LocalServer, big_task: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    task, ids = big_task
    common = ["--base-url", server.base_url, "--api-key", server.api_key, "--json"]
    assert main(["traces", "list", "--task", task, "--all", *common]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == len({t["id"] for t in listed}) >= TOTAL
    assert [t["id"] for t in listed][-TOTAL:] == ids[::-1]
    assert main(["traces", "list", "--task", task, "--limit", "5", *common]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 5
    assert main(["jobs", "list", "--all", *common]) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(
        [j for p in _pages_of(server, "/api/v1/jobs") for j in p]
    )
    assert main(["feedback", "list", "--task", task, "--all", *common]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("limit", ["0", "1001", "many"])
def test_cli_bad_limit_is_a_local_usage_error(
    limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No server at this address: the check happens before anything is sent.
    with pytest.raises(SystemExit) as exc:
        main(["traces", "list", "--limit", limit, "--base-url", "http://127.0.0.1:9",
              "--api-key", "k"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--limit" in err[0]
