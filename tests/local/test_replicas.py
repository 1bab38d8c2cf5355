"""Several server processes, one database (issue 23), with real ``kaizen serve`` processes.

Three servers on free loopback ports share one database, as N machines behind a reverse proxy
would: 30 optimization jobs queued across them each run exactly once while one server is
killed with SIGKILL in the middle of a job (another takes the job over through its lease and
finishes it); a rollout scored through all three at once is decided once. Then
``kaizen serve --workers 3``: three processes on one port, a child killed and restarted, a
clean stop on SIGTERM.

Every test takes the database from the `database_url` fixture: it is the only thing that
differs between backends (add a backend's URL to `DATABASES`).
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

KEY = "kz-replicas-test-key"
DATABASES = ["sqlite", "postgresql"]
"""The databases the tests run on; a backend adds its name and a branch in `database_url`."""

JOBS = 30
ENV = {
    "KAIZEN_API_KEY": KEY,
    "KAIZEN_JOB_LEASE_SECONDS": "3",  # a dead server's job is free again within 3 s
    "KAIZEN_JOB_POLL_SECONDS": "0.2",  # idle workers look for jobs five times a second
    "KAIZEN_OPTIMIZER": "local",
}


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """What ``kaizen serve --db`` gets: one fresh, empty database per test."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
    elif request.param == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.empty_database()  # the first server runs the schema steps
        try:
            yield url
        finally:
            cluster.drop(url)
    else:
        raise AssertionError(f"unknown database {request.param!r}")


class Server:
    """One ``kaizen serve`` process; its output lines are read by a thread."""

    def __init__(self, db: str, *args: str) -> None:
        env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kaizen_sdk.cli", "serve", "--port", "0", "--db", db, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        banner = self.expect(r"listening on (http://[\d.]+:\d+)", 60)
        self.url = banner.group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line from now on matching *pattern*, within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line matching {pattern!r} in {timeout} s: {self.seen}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            found = re.search(pattern, line)
            if found is not None:
                return found

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(60)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def three(database_url: str) -> Iterator[list[Server]]:
    """Three servers on one database, each with its own port (N machines behind a proxy)."""
    first = Server(database_url, "--job-step-delay", "0.15")  # runs the schema steps
    servers = [first]
    try:
        servers += [Server(database_url, "--job-step-delay", "0.15") for _ in range(2)]
        yield servers
    finally:
        for server in servers:
            server.close()


def _ok(resp: httpx.Response, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def _audit(client: httpx.Client, action: str) -> list[dict[str, Any]]:
    """The audit entries of *action*, oldest first."""
    entries = _ok(client.get("/api/v1/audit", params={"limit": 1000}), 200)
    assert len(entries) < 1000  # one page holds them all
    return [e for e in reversed(entries) if e["action"] == action]


def _feedback(task: str, n: int) -> list[dict[str, Any]]:
    return [{"task_id": task, "inputs": {"text": f"{task}-{i}"}, "output": f"answer {i}",
             "score": 0.9 if i % 3 else 0.2} for i in range(n)]


def test_thirty_jobs_on_three_servers_run_once_while_one_is_killed(
    three: list[Server],
) -> None:
    started = time.monotonic()
    clients = [s.client() for s in three]
    victim, witness = three[0], clients[1]
    try:
        names = [f"job-{i:02d}" for i in range(JOBS)]
        for i, name in enumerate(names):
            _ok(clients[i % 3].post("/api/v1/tasks", json={
                "name": name, "feedback_threshold": 1000, "prompt_text": f"v1 {name} {{{{ text }}}}"
            }), 201)
        batch = [f for name in names for f in _feedback(name, 6)]
        _ok(witness.post("/api/v1/ingest", json={"feedback": batch}), 207)
        jobs: dict[str, str] = {}  # job id -> task name
        for i, name in enumerate(names):  # queued across the three servers
            body = _ok(clients[i % 3].post(f"/api/v1/optimize/{name}"), 202)
            jobs[body["job"]["id"]] = name
        # Kill the victim while it runs a job: a claim of its process whose job is unfinished.
        mark = f":{victim.proc.pid}:"
        deadline = time.monotonic() + 60
        killed_job = None
        while killed_job is None:
            assert time.monotonic() < deadline, "the victim never ran a job"
            for entry in _audit(witness, "job.claimed"):
                if mark in entry["detail"]:
                    job = _ok(witness.get(f"/api/v1/jobs/{entry['target']}"), 200)
                    if job["status"] in ("PENDING", "RUNNING"):
                        killed_job = entry["target"]
            if killed_job is not None:
                os.kill(victim.proc.pid, signal.SIGKILL)
                killed_at = time.time()
                break
            time.sleep(0.02)
        assert victim.proc.wait(30) == -signal.SIGKILL
        # The other two finish everything, the killed server's job included.
        deadline = time.monotonic() + 180
        while True:
            done = [_ok(witness.get(f"/api/v1/jobs/{j}"), 200) for j in jobs]
            if all(d["status"] in ("SUCCESS", "FAILURE", "PR_FAILED") for d in done):
                break
            assert time.monotonic() < deadline, [d["status"] for d in done]
            time.sleep(0.1)
        claims = _audit(witness, "job.claimed")
        versions = {name: _ok(witness.get(f"/api/v1/prompts/{name}/versions"), 200)
                    for name in names}
    finally:
        for c in clients:
            c.close()
    assert [d["status"] for d in done] == ["SUCCESS"] * JOBS, [d["error_message"] for d in done]
    # Each job made its one candidate: no run after another, nor beside it.
    for d in done:
        assert d["prompt_version_id"] is not None
        assert "no_new_version" not in (d["job_metadata"] or {}), d
    assert sorted(len(v) for v in versions.values()) == [2] * JOBS  # v1 and one candidate
    # Who ran what: one claim per job, and one more for the job taken from the dead server.
    per_job = {j: [c["detail"] for c in claims if c["target"] == j] for j in jobs}
    assert sum(len(v) for v in per_job.values()) == JOBS + 1, per_job
    taken = {j: v for j, v in per_job.items() if len(v) == 2}
    victim_jobs = [c["target"] for c in claims if mark in c["detail"].split(",")[0]]
    assert list(taken) == [victim_jobs[-1]], (taken, victim_jobs)
    first, second = taken[victim_jobs[-1]]
    takeover = next(c for c in claims if c["detail"] == second)
    reclaimed_after = datetime.fromisoformat(takeover["at"]).timestamp() - killed_at
    assert mark in first and mark not in second.split(",")[0]
    assert second.endswith(first.replace("by ", "taken over from "))
    assert killed_job in (victim_jobs[-1], *victim_jobs[-2:])
    ran = {c["detail"].split(",")[0].split(":")[1] for c in claims}
    assert len(ran) == 3  # all three servers ran jobs
    print(f"\n{JOBS} jobs on 3 servers, one killed: {time.monotonic() - started:.1f} s;"
          f" its job taken over {reclaimed_after:.2f} s after the kill")


def test_a_rollout_scored_through_three_servers_is_decided_once(three: list[Server]) -> None:
    started = time.monotonic()
    clients = [s.client() for s in three]
    try:
        c = clients[0]
        _ok(c.post("/api/v1/tasks", json={"name": "ro", "feedback_threshold": 100_000,
                                          "prompt_text": "v1 {{ x }}"}), 201)
        active = _ok(c.get("/api/v1/prompts/ro"), 200)["id"]
        candidate = _ok(c.post("/api/v1/prompts/ro/versions",
                               json={"prompt_text": "v2 {{ x }}"}), 201)["id"]
        _ok(c.post("/api/v1/rollouts/ro", json={"candidate_version_id": candidate,
                                                "share": 0.5, "min_samples": 20}), 201)
        errors: list[BaseException] = []
        go = threading.Barrier(3 * 2)

        def score(client: httpx.Client, version: str, arm: str, value: float) -> None:
            try:
                go.wait(30)
                for _ in range(20):  # 20 batches of 3 scores from each thread
                    feedback = [{"task_id": "ro", "score": value, "prompt_version_id": version,
                                 "arm": arm, "output": "o"} for _ in range(3)]
                    resp = client.post("/api/v1/ingest", json={"feedback": feedback})
                    assert resp.status_code == 207 and resp.json()["errors"] == [], resp.text
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=score, args=(cl, *arm))
                   for cl in clients
                   for arm in ((active, "active", 0.2), (candidate, "candidate", 0.9))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        # every server answers the same, decided rollout and serves the same prompt
        states = [_ok(cl.get("/api/v1/rollouts/ro"), 200) for cl in clients]
        prompts = [cl.get("/api/v1/prompts/ro") for cl in clients]
        decided = _audit(c, "rollout.decided")
    finally:
        for cl in clients:
            cl.close()
    assert [s["state"] for s in states] == ["promoted"] * 3, states[0]["audit"]
    # the figures stop where the decision was made: before every score had arrived
    assert 20 <= states[0]["candidate"]["n"] < 180 and states[0]["active"]["n"] >= 20
    assert len({str(s) for s in states}) == 1  # the same answer from each server
    events = [e["event"] for e in states[0]["audit"]]
    assert events.count("promoted") == 1 and "rolled_back" not in events, events
    assert len(decided) == 1, decided
    assert len({p.headers["etag"] for p in prompts}) == 1
    assert {p.json()["id"] for p in prompts} == {candidate}
    print(f"\nrollout scored through 3 servers: {time.monotonic() - started:.1f} s")


def test_workers_share_one_port_and_a_dead_one_is_restarted(database_url: str) -> None:
    started = time.monotonic()
    server = Server(database_url, "--workers", "3")
    try:
        pids = {int(server.expect(rf"worker {i} started: pid (\d+)", 30).group(1)): i
                for i in (1, 2, 3)}
        for _ in range(3):
            server.expect(r"worker pid \d+ ready", 60)
        with server.client() as c:
            assert _ok(c.get("/api/v1/health"), 200)["status"] == "ok"
            _ok(c.post("/api/v1/tasks", json={"name": "w", "prompt_text": "v1 {{ x }}"}), 201)
            _ok(c.post("/api/v1/ingest", json={"feedback": _feedback("w", 6)}), 207)
            job = _ok(c.post("/api/v1/optimize/w"), 202)["job"]["id"]
        dead = sorted(pids)[1]
        os.kill(dead, signal.SIGKILL)
        server.expect(rf"worker {pids[dead]} \(pid {dead}\) ended with signal 9; restarting",
                      30)
        new = int(server.expect(rf"worker {pids[dead]} started: pid (\d+)", 30).group(1))
        server.expect(rf"worker pid {new} ready", 60)
        deadline = time.monotonic() + 60
        with server.client() as c:  # new connections: any of the three answers
            while _ok(c.get(f"/api/v1/jobs/{job}"), 200)["status"] != "SUCCESS":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for _ in range(6):
                with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}) as one:
                    assert _ok(one.get("/api/v1/tasks/w"), 200)["name"] == "w"
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        server.expect(r"^Stopped\.$", 10)
        children = [*(p for p in pids if p != dead), new]
        for pid in children:  # every child has ended (and was reaped by the parent)
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        server.close()
    print(f"\n--workers 3, one killed and restarted: {time.monotonic() - started:.1f} s")


def test_a_worker_whose_lease_was_taken_stops_without_writing(tmp_path: Path) -> None:
    """Another process took the job (its clock said the lease ran out): this one lets go."""
    from kaizen_server import LocalServer

    db = tmp_path / "lost.db"
    with LocalServer(db_path=db, api_key=KEY, job_step_delay=0.3, job_lease_seconds=1.5,
                     job_poll_seconds=0.1) as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": KEY}) as c:
        for name in ("taken", "next"):
            _ok(c.post("/api/v1/tasks", json={"name": name, "prompt_text": "v1 {{ x }}"}), 201)
            _ok(c.post("/api/v1/ingest", json={"feedback": _feedback(name, 6)}), 207)
        taken = _ok(c.post("/api/v1/optimize/taken"), 202)["job"]["id"]
        deadline = time.monotonic() + 30
        while _ok(c.get(f"/api/v1/jobs/{taken}"), 200)["status"] != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        raw = sqlite3.connect(db)
        with raw:
            raw.execute("UPDATE jobs SET lease_owner = 'elsewhere:1:0badf00d', lease_until = ?"
                        " WHERE id = ?", (time.time() + 600, taken))
        raw.close()
        # The worker notices (heartbeat or next step), lets the job go and takes the next one.
        after = _ok(c.post("/api/v1/optimize/next"), 202)["job"]["id"]
        deadline = time.monotonic() + 60
        while _ok(c.get(f"/api/v1/jobs/{after}"), 200)["status"] != "SUCCESS":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        job = _ok(c.get(f"/api/v1/jobs/{taken}"), 200)
        versions = _ok(c.get("/api/v1/prompts/taken/versions"), 200)
        claims = [e["target"] for e in _audit(c, "job.claimed")]
    assert (job["status"], job["prompt_version_id"]) == ("RUNNING", None)
    assert len(versions) == 1  # nothing of the taken job was written by this worker
    assert claims == [taken, after]


def test_a_ui_session_is_known_to_every_server_on_the_database(tmp_path: Path) -> None:
    """Signed in through one process, a browser is signed in on all; signed out, on none."""
    from kaizen_server import LocalServer

    db = tmp_path / "ui.db"
    with LocalServer(db_path=db, api_key=KEY) as a, LocalServer(db_path=db, api_key=KEY) as b:
        with httpx.Client(base_url=a.base_url, timeout=30) as browser:
            resp = browser.post("/ui/signin", data={"key": KEY, "next": "/ui/tasks"})
            assert resp.status_code == 303, resp.text
            sid = browser.cookies["kaizen_ui"]
        assert _session_rows(db) == [hashlib.sha256(sid.encode()).hexdigest()]
        cookie = {"cookie": f"kaizen_ui={sid}"}
        with httpx.Client(base_url=b.base_url, headers=cookie, timeout=30) as other:
            page = other.get("/ui/tasks")
            assert page.status_code == 200, page.headers.get("location")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            out = other.post("/ui/signout", data={"csrf": csrf.group(1)})
            assert out.status_code == 303
        with httpx.Client(base_url=a.base_url, headers=cookie, timeout=30) as first:
            resp = first.get("/ui/tasks")
            assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/signin")
        assert _session_rows(db) == []


def _session_rows(db: Path) -> list[str]:
    """The stored sessions' names; the cookie's id itself is nowhere in the database."""
    raw = sqlite3.connect(db)
    try:
        return [r[0] for r in raw.execute("SELECT id_hash FROM ui_sessions")]
    finally:
        raw.close()


def test_workers_that_keep_dying_at_start_stop_the_server() -> None:
    import socket

    from kaizen_server.http.workers import CRASH_LOOP, Supervisor

    lines: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as sock:
        supervisor = Supervisor(sock, 2, lambda fd: [sys.executable, "-c", "raise SystemExit(3)"],
                                env=os.environ, say=lines.append)
        assert supervisor.run() == 1
    starts = [line for line in lines if " started: pid " in line]
    restarts = [line for line in lines if line.endswith("ended with status 3; restarting it")]
    assert lines[-1].endswith(f"{CRASH_LOOP} times right after its start; stopping the server")
    # each death but the last was followed by a restart; the one that gave up died 5 times
    assert len(starts) == 2 + len(restarts)
    assert CRASH_LOOP - 1 <= len(restarts) <= 2 * (CRASH_LOOP - 1)
