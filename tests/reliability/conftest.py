"""Fixtures of the fault suite: a local CT server with a known database, and a fault proxy.

Counts are read straight from the server's SQLite file (exact, with no page limit), and
what went over the wire from the proxy's log, so "delivered once" is checked both ways.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

import kaizen_sdk
from kaizen_sdk.models import IngestRequest, TraceRequest
from kaizen_server import LocalServer

from ._proxy import FaultProxy

API_KEY = "reliability-suite-key"
ROOT = Path(kaizen_sdk.__file__).resolve().parents[1]


class CTServer:
    """The suite's local server plus exact counts read from its database."""

    def __init__(self, server: LocalServer, db: Path) -> None:
        self.server = server
        self.db = db
        self.url = server.base_url
        self.api_key = server.api_key

    def _query(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return list(conn.execute(sql, args))
        finally:
            conn.close()

    def trace_ids(self, task: str) -> list[str]:
        """Ids of the traces stored for *task* (one row per id: the server is idempotent)."""
        rows = self._query(
            "SELECT t.id FROM traces t JOIN tasks k ON t.task_id = k.id WHERE k.name = ?", task
        )
        return [str(r[0]) for r in rows]

    def feedback_count(self, task: str) -> int:
        """Feedback entries stored for *task*."""
        rows = self._query(
            "SELECT COUNT(*) FROM feedback f JOIN tasks k ON f.task_id = k.id WHERE k.name = ?",
            task,
        )
        return int(rows[0][0])  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def ct_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CTServer]:
    """One local CT server for the whole fault suite; each test uses its own task names."""
    db = tmp_path_factory.mktemp("reliability") / "ct.db"
    with LocalServer(db_path=db, api_key=API_KEY) as server:
        yield CTServer(server, db)


@pytest.fixture
def proxy(ct_server: CTServer) -> Iterator[FaultProxy]:
    """A fresh fault proxy on loopback that forwards to the suite's server."""
    with FaultProxy(ct_server.url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def task_name(request: pytest.FixtureRequest) -> str:
    """A task name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll *predicate* until it holds or *timeout* seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def forwarded_trace_ids(proxy: FaultProxy) -> Counter[str]:
    """How often each trace id reached the server in a request it accepted."""
    seen: Counter[str] = Counter()
    for req in proxy.requests():
        if req.injected or not 200 <= req.status < 300:
            continue
        if req.path.startswith("/api/v1/ingest"):
            batch = msgspec.json.decode(req.body, type=IngestRequest)
            seen.update(str(t.id) for t in batch.traces)
        elif req.path.startswith("/api/v1/traces"):
            seen[str(msgspec.json.decode(req.body, type=TraceRequest).id)] += 1
    return seen


def _env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a child interpreter: this checkout importable, our KAIZEN_* only."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    full_env.setdefault("KAIZEN_API_KEY", API_KEY)
    return full_env


def run_python(
    code: str, *, env: dict[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter with this checkout importable; fail on non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc
