"""Three server processes on one database judge each trace exactly once per evaluator.

This process runs one `LocalServer`; two more run in child processes on the same database (a
SQLite file, or a PostgreSQL database of the session's private cluster), all with the same
loopback judge. Traces arrive at all three over HTTP at a steady rate; the
judge stand-in counts every call, and the database says which worker judged each trace.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llm_standin import LLMStandIn, shout

from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e

JUDGE = "judge-standin"
_CHILD = """
import sys
from kaizen_server import LocalServer
with LocalServer(db_path=sys.argv[1], llm_base_url=sys.argv[2],
                 llm_prices={"judge-standin": (1.0, 1.0)}) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()  # until the parent closes it
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One fresh database per test: the only thing that differs between backends."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    cluster = request.getfixturevalue("pg_cluster")
    url: str = cluster.fresh_database()
    try:
        yield url
    finally:
        cluster.drop(url)


def _owners(db: str) -> list[tuple[str, int]]:
    """How many traces each worker judged, straight from the database."""
    sql = "SELECT owner, COUNT(*) FROM evaluation_results GROUP BY owner"
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as pg:
            return [(str(o), int(n)) for o, n in pg.execute(sql).fetchall()]
    conn = sqlite3.connect(db)
    try:
        return [(str(o), int(n)) for o, n in conn.execute(sql).fetchall()]
    finally:
        conn.close()


@pytest.fixture
def servers(database: str) -> Iterator[tuple[list[str], str, LLMStandIn, str]]:
    db = database
    with LLMStandIn(judge=JUDGE) as llm, LocalServer(
        db_path=db, llm_base_url=llm.base_url, llm_prices={JUDGE: (1.0, 1.0)},
    ) as here:
        children = [subprocess.Popen([sys.executable, "-c", _CHILD, db, llm.base_url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    for _ in range(2)]
        try:
            urls = [here.base_url]
            for child in children:
                assert child.stdout is not None
                line = child.stdout.readline().strip()
                assert line.startswith("http://"), line
                urls.append(line)
            yield urls, here.api_key, llm, db
        finally:
            for child in children:
                assert child.stdin is not None
                child.stdin.close()
            for child in children:
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(10)
                if child.stdout is not None:
                    child.stdout.close()


def test_each_trace_is_judged_once_by_three_processes(
    servers: tuple[list[str], str, LLMStandIn, str],
) -> None:
    urls, key, llm, db = servers
    llm.delay = 0.005  # a judge that takes a moment, so the work spreads
    clients = [httpx.Client(base_url=u, headers={"X-API-Key": key}, timeout=10) for u in urls]
    try:
        clients[0].post("/api/v1/tasks", json={"name": "shout"})
        made = clients[1].post("/api/v1/tasks/shout/evaluators", json={
            "name": "judge", "kind": "llm_judge", "judge_model": JUDGE, "scale": [0, 1],
            "rubric": "Is it shouted?"})
        assert made.status_code == 201, made.text
        ids: list[str] = []
        for tick in range(30):  # 300 traces, 10 every 0.05 s, spread over the three servers
            batch: list[dict[str, Any]] = []
            for i in range(10):
                text = f"text {tick} {i}"
                ids.append(str(uuid.uuid4()))
                batch.append({"id": ids[-1], "task_id": "shout", "response_text": shout(text),
                              "metadata": {"inputs": {"text": text}}})
            assert clients[tick % 3].post("/api/v1/ingest",
                                          json={"traces": batch}).status_code == 207
            time.sleep(0.05)
        deadline = time.monotonic() + 90
        while True:
            today = clients[2].get("/api/v1/tasks/shout/evaluators/judge").json()["today"]
            if today["judged"] >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert today["judged"] == len(ids)
        assert today["calls"] == len(ids)
        assert llm.models().count(JUDGE) == len(ids)  # not one trace judged twice
        entries = clients[0].get("/api/v1/feedback",
                                 params={"task_id": "shout", "limit": 1000}).json()
        judged = [e["metadata"]["trace_id"] for e in entries if e["source"] == "evaluator:judge"]
        assert sorted(judged) == sorted(ids)
        assert all(e["score"] == 1.0 for e in entries if e["source"] == "evaluator:judge")
    finally:
        for c in clients:
            c.close()
    owners = _owners(db)
    print(f"\ntraces judged per worker: {sorted(n for _, n in owners)}")
    assert sum(n for _, n in owners) == len(ids)
    pids = {str(owner).split(":")[1] for owner, _ in owners}
    assert len(pids) >= 2  # the work was shared between processes
