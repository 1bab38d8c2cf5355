"""Concurrent writers, restart persistence and shutdown of the local CT server."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from kaizen_sdk import models as m
from kaizen_server import LocalServer
from kaizen_server.storage.sqlite import SCHEMA_VERSION, Store

THREADS = 8
POSTS = 200


def _run_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return errors


def test_8_threads_x_200_feedback_posts_exact_count() -> None:
    with LocalServer() as server:
        headers = {"X-API-Key": server.api_key}
        with httpx.Client(base_url=server.base_url, headers=headers) as c:
            assert c.post("/api/v1/tasks", json={"name": "busy", "feedback_threshold": 100000}
                          ).status_code == 201
            # A second task with a low threshold makes jobs run while the posts go on.
            assert c.post("/api/v1/tasks", json={"name": "jobs", "feedback_threshold": 20}
                          ).status_code == 201
        ids = [[str(uuid.uuid4()) for _ in range(POSTS)] for _ in range(THREADS)]
        statuses: list[int] = []
        lock = threading.Lock()

        def post(n: int) -> None:
            with httpx.Client(base_url=server.base_url, headers=headers, timeout=30) as c:
                for i, fid in enumerate(ids[n]):
                    task = "jobs" if i % 10 == 0 else "busy"
                    body = {"id": fid, "task_id": task, "score": (i % 5) / 4, "output": i}
                    r = c.post("/api/v1/feedback", json=body)
                    # every 50th is retried: same id, must not count twice
                    r2 = c.post("/api/v1/feedback", json=body) if i % 50 == 0 else r
                    with lock:
                        statuses.extend({r.status_code, r2.status_code})

        errors = _run_threads(post, THREADS)
        assert errors == []
        assert set(statuses) == {201}
        with httpx.Client(base_url=server.base_url, headers=headers) as c:
            busy = m.decode(c.get("/api/v1/tasks/busy").content, m.Task)
            jobs_task = m.decode(c.get("/api/v1/tasks/jobs").content, m.Task)
            assert busy.feedback_count == THREADS * POSTS * 9 // 10 == 1440
            assert busy.threshold_progress == "1440/100000"
            assert jobs_task.feedback_count == THREADS * POSTS // 10 == 160
            listed = m.decode(
                c.get("/api/v1/feedback", params={"task_id": "busy", "limit": 1000}).content,
                list[m.FeedbackResult],
            )
            assert len(listed) == 1000 and len({f.id for f in listed}) == 1000
            jobs = m.decode(c.get("/api/v1/jobs", params={"task_id": "jobs"}).content,
                            list[m.Job])
            assert 1 <= len(jobs) <= 160 // 20
            assert all(j.triggered_by == "threshold" for j in jobs)


def test_store_8_writer_threads_and_a_second_connection_owner(tmp_path: Path) -> None:
    """Two Store objects on one file (as two processes would) never hit 'database is locked'."""
    path = str(tmp_path / "shared.db")
    stores = [Store(path), Store(path)]
    try:
        stores[0].create_task(m.TaskCreateRequest(name="t", feedback_threshold=10**6))

        def write(n: int) -> None:
            store = stores[n % 2]
            try:
                for i in range(100):
                    store.add_feedback(m.FeedbackRequest(task_id="t", score=0.5, output=[n, i]))
                    store.add_trace(m.TraceRequest(task_id="t", response_text=f"{n}-{i}"))
            finally:
                store.release_thread()

        errors = _run_threads(write, THREADS)
        assert errors == []
        assert stores[1].get_task("t").feedback_count == 800
        assert len(stores[0].list_traces("t", 1000).items) == 800
    finally:
        for store in stores:
            store.close()


def test_restart_keeps_data_and_resumes_jobs(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "local.db"
    fid = str(uuid.uuid4())
    with LocalServer(db_path=db, job_step_delay=60) as server:
        with httpx.Client(base_url=server.base_url,
                          headers={"X-API-Key": server.api_key}) as c:
            c.post("/api/v1/tasks", json={"name": "keep", "feedback_threshold": 3,
                                          "cooldown_minutes": 0})
            trace = c.post("/api/v1/traces", json={"task_id": "keep", "prompt_text": "Base.",
                                                   "prompt_is_default": True}).json()
            c.post("/api/v1/feedback", json={"id": fid, "task_id": "keep", "score": 1.0})
            c.post("/api/v1/feedback", json={"task_id": "keep", "score": 0.0})
            c.post("/api/v1/feedback", json={"task_id": "keep", "score": 0.5})
            # The threshold job is now stuck in its first slow step; more feedback while it
            # runs must not start a second one, and a manual trigger returns the same job.
            for _ in range(4):
                c.post("/api/v1/feedback", json={"task_id": "keep", "score": 0.5})
            jobs = c.get("/api/v1/jobs", params={"task_id": "keep"}).json()
            assert len(jobs) == 1 and jobs[0]["triggered_by"] == "threshold"
            assert jobs[0]["status"] in ("PENDING", "RUNNING")
            manual = c.post("/api/v1/optimize/keep")
            assert manual.status_code == 202 and manual.json()["job"]["id"] == jobs[0]["id"]
            before = c.get("/api/v1/tasks/keep").json()
        started = time.monotonic()
    stop_seconds = time.monotonic() - started
    assert stop_seconds < 30  # stop() interrupts the 60 s step instead of waiting it out
    assert db.exists()
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        version = raw.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        assert version == SCHEMA_VERSION
    raw.close()

    with LocalServer(db_path=db) as server, httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": server.api_key}
    ) as c:
        after = c.get("/api/v1/tasks/keep").json()
        assert after == before
        assert after["feedback_count"] == 7 and after["threshold_progress"] == "4/3"
        got = c.get(f"/api/v1/traces/{trace['id']}").json()
        assert got["prompt_text"] == "Base."
        again = c.post("/api/v1/feedback", json={"id": fid, "task_id": "keep", "score": 0.2})
        assert again.status_code == 201 and again.json()["score"] == 1.0
        job = _wait(c, jobs[0]["id"])
        assert job["status"] == "SUCCESS"
        versions = c.get("/api/v1/prompts/keep/versions").json()
        assert [(v["version_number"], v["status"]) for v in versions] == [
            (2, "candidate"), (1, "active")
        ]
        # 4 feedback arrived while the first job ran: the next one starts the next job.
        c.post("/api/v1/feedback", json={"task_id": "keep", "score": 0.5})
        jobs_now = c.get("/api/v1/jobs", params={"task_id": "keep"}).json()
        assert [j["triggered_by"] for j in jobs_now] == ["threshold", "threshold"]
        assert jobs_now[1]["id"] == jobs[0]["id"]
        assert _wait(c, jobs_now[0]["id"])["status"] == "SUCCESS"
        assert c.get("/api/v1/tasks/keep").json()["threshold_progress"] == "0/3"


def _wait(c: httpx.Client, job_id: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = c.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
            return job
        time.sleep(0.01)


def test_temp_database_is_deleted_and_stop_is_idempotent() -> None:
    server = LocalServer().start()
    url = server.base_url
    assert server.running
    assert httpx.get(f"{url}/api/v1/health").status_code == 200
    server.stop()
    server.stop()
    assert not server.running
    try:
        server.base_url  # noqa: B018
    except RuntimeError as exc:
        assert "start()" in str(exc)
    else:
        raise AssertionError("base_url after stop should raise")


def test_stop_closes_idle_keep_alive_connections_promptly() -> None:
    existing = set(threading.enumerate())
    server = LocalServer().start()
    clients = [httpx.Client(base_url=server.base_url) for _ in range(4)]
    try:
        for c in clients:
            assert c.get("/api/v1/health").status_code == 200
        ours = [t for t in threading.enumerate() if t not in existing]
        # One event loop serves every connection: no thread per connection.
        assert "kaizen-local-server" in {t.name for t in ours}
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 30  # idle connections would hold it 60 s
        assert [t.name for t in ours if t.is_alive()] == []
    finally:
        for c in clients:
            c.close()


def test_api_key_resolution(monkeypatch: Any) -> None:
    from kaizen_server import DEV_API_KEY

    assert LocalServer().api_key == DEV_API_KEY
    assert LocalServer().uses_dev_key
    monkeypatch.setenv("KAIZEN_API_KEY", "from-env")
    assert LocalServer().api_key == "from-env"
    assert LocalServer(api_key="given").api_key == "given"
    assert not LocalServer(api_key="given").uses_dev_key
    assert "given" not in repr(LocalServer(api_key="given"))
    with LocalServer() as server:
        ok = httpx.get(f"{server.base_url}/api/v1/tasks", headers={"X-API-Key": "from-env"})
        assert ok.status_code == 200
        dev = httpx.get(f"{server.base_url}/api/v1/tasks", headers={"X-API-Key": DEV_API_KEY})
        assert dev.status_code == 401
