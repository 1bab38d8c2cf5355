"""`kaizen serve` / `kaizen db` on a real PostgreSQL (the session's private cluster), and a
database URL's password never shown: not in output, errors, reprs or logs."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from pg_cluster import Cluster

from kaizen_sdk.cli import main
from kaizen_server import LocalServer
from kaizen_server.storage import open_store, postgres_schema
from kaizen_server.storage.errors import DatabaseUnreachable
from kaizen_server.storage.postgres import PostgresStore, redact_url

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pw-Zq81-secret"
"""The password in every URL here (the test cluster trusts loopback, so any is accepted)."""


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


def _chain(exc: BaseException) -> str:
    """Every message and repr of *exc* and of its cause and context chain."""
    seen: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 20:
        seen += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "\n".join(seen)


def test_redact_url_hides_the_password_wherever_it_is() -> None:
    assert redact_url(f"postgresql://k:{SECRET}@db:5432/kaizen") == (
        "postgresql://k:***@db:5432/kaizen")
    assert redact_url(f"postgres://db/kaizen?sslmode=require&password={SECRET}") == (
        "postgres://db/kaizen?sslmode=require&password=***")
    assert redact_url("postgresql://k@db/kaizen") == "postgresql://k@db/kaizen"


def test_db_status_and_upgrade_from_kaizen_database_url(
    pg_cluster: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _with_password(pg_cluster.empty_database())
    monkeypatch.setenv("KAIZEN_DATABASE_URL", url)
    try:
        assert main(["db", "status", "--json"]) == 0
        before = json.loads(capsys.readouterr().out)
        steps = [s.filename for s in postgres_schema.STEPS]
        assert before == {"database": redact_url(url), "current_version": None,
                          "target_version": len(steps), "pending": steps}
        assert main(["db", "upgrade", "--json"]) == 0
        ran = json.loads(capsys.readouterr().out)
        assert ran["ran"] == steps and ran["current_version"] == len(steps)
        assert main(["db", "upgrade"]) == 0
        again = capsys.readouterr().out
        assert "Steps run: none (already up to date)" in again and SECRET not in again
        assert main(["db", "status"]) == 0
        out = capsys.readouterr().out
        assert "Up to date." in out and "postgresql://postgres:***@" in out
        assert SECRET not in out
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version FROM schema_version ORDER BY version"
                                ).fetchall() == [(s.version,) for s in postgres_schema.STEPS]
    finally:
        pg_cluster.drop(url)


def test_an_unreachable_database_is_named_without_its_password(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/kaizen"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DatabaseUnreachable) as caught:
        open_store(url)
    assert "postgresql://postgres:***@127.0.0.1" in str(caught.value)
    assert SECRET not in _chain(caught.value)
    assert main(["db", "status", "--db", url]) != 0
    captured = capsys.readouterr()
    assert "cannot read the database postgresql://postgres:***@" in captured.err
    assert SECRET not in captured.out + captured.err + caplog.text
    with pytest.raises(DatabaseUnreachable) as started:
        LocalServer(db_path=url).start()
    assert SECRET not in _chain(started.value) + caplog.text


def test_local_server_on_postgres_keeps_the_password_out_of_reprs_and_logs(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = _with_password(pg_url)
    caplog.set_level(logging.DEBUG)
    with LocalServer(db_path=url) as server:
        assert SECRET not in repr(server)
        assert "postgresql://postgres:***@" in repr(server)
        store = server._store
        assert isinstance(store, PostgresStore)
        assert SECRET not in repr(store) + store.url + store.path
        resp = httpx.post(f"{server.base_url}/api/v1/tasks", json={"name": "on-pg"},
                          headers={"X-API-Key": server.api_key}, timeout=10)
        assert resp.status_code == 201, resp.text
    assert SECRET not in caplog.text
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM tasks").fetchall() == [("on-pg",)]


def test_kaizen_serve_runs_the_api_on_postgres(pg_url: str, tmp_path: Path) -> None:
    url = _with_password(pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "server"),
                                         env.get("PYTHONPATH", "")])
    env["KAIZEN_DATABASE_URL"] = url
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kaizen_sdk.cli", "serve", "--port", "0"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        text = log.read_text()
        base = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
        assert base is not None, text
        assert f"Database: {redact_url(url)}" in text
        key = re.search(r"API key \(development\): (\S+)", text)
        assert key is not None
        created = httpx.post(f"{base[1]}/api/v1/traces", headers={"X-API-Key": key[1]},
                             json={"task_id": "served", "response_text": "r"}, timeout=10)
        assert created.status_code == 201, created.text
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    assert SECRET not in log.read_text()
    assert not (tmp_path / ".kaizen").exists()  # no SQLite file was made
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM traces").fetchone() == (1,)
