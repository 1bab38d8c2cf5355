"""`kaizen serve`: the parser, and a real subprocess answering /api/v1/health."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaizen_sdk.cli import DEFAULT_DB_PATH, build_parser, main
from kaizen_server import DEV_API_KEY

ROOT = Path(__file__).resolve().parents[2]


def test_serve_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    # no --db: KAIZEN_DATABASE_URL, else DEFAULT_DB_PATH (tests/local/test_postgres_server.py)
    assert (args.host, args.port, args.db, args.api_key) == ("127.0.0.1", 8000, None, None)
    assert os.path.join(".kaizen", "local.db") == DEFAULT_DB_PATH
    args = build_parser().parse_args(
        ["serve", "--host", "0.0.0.0", "--port", "0", "--db", "x.db", "--api-key", "k"]
    )
    assert (args.host, args.port, args.db, args.api_key) == ("0.0.0.0", 0, "x.db", "k")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", "eighty"])
    assert exc.value.code == 2
    assert "--port" in capsys.readouterr().err


class _Serve:
    """`python -m kaizen_sdk.cli serve ...` in a subprocess, with its stdout read by a thread."""

    def __init__(
        self, args: list[str], cwd: Path, env: dict[str, str], command: list[str] | None = None
    ) -> None:
        command = command or [sys.executable, "-m", "kaizen_sdk.cli"]
        self.proc = subprocess.Popen(
            [*command, "serve", "--port", "0", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; got {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


@pytest.fixture
def serve_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def serve(tmp_path: Path, serve_env: dict[str, str]) -> Iterator[list[_Serve]]:
    started: list[_Serve] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=10)


def test_kaizen_serve_answers_health_with_dev_key(
    tmp_path: Path, serve_env: dict[str, str], serve: list[_Serve]
) -> None:
    s = _Serve([], cwd=tmp_path, env=serve_env)
    serve.append(s)
    url = s.wait_for(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
    key = s.wait_for(r"API key \(development\): (\S+)").group(1)
    assert key == DEV_API_KEY
    ui = s.wait_for(r"Web UI: (\S+) ").group(1)
    assert ui == f"{url}/ui/" and httpx.get(f"{ui}signin", timeout=10).status_code == 200
    health = httpx.get(f"{url}/api/v1/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    created = httpx.post(f"{url}/api/v1/tasks", json={"name": "cli"},
                         headers={"X-API-Key": key}, timeout=10)
    assert created.status_code == 201
    assert s.stop() == 0
    assert "Stopped." in s.seen
    # The default database lives in ./.kaizen/local.db of the working folder.
    assert (tmp_path / ".kaizen" / "local.db").is_file()


def test_kaizen_serve_never_prints_a_given_key(
    tmp_path: Path, serve_env: dict[str, str], serve: list[_Serve]
) -> None:
    secret = "sk-given-by-user-1234"
    db = tmp_path / "data" / "ct.db"
    s = _Serve(["--db", str(db), "--api-key", secret], cwd=tmp_path, env=serve_env)
    serve.append(s)
    url = s.wait_for(r"listening on (http://\S+)").group(1)
    s.wait_for(r"API key: the one given with --api-key")
    ok = httpx.get(f"{url}/api/v1/tasks", headers={"X-API-Key": secret}, timeout=10)
    assert ok.status_code == 200
    bad = httpx.get(f"{url}/api/v1/tasks", headers={"X-API-Key": DEV_API_KEY}, timeout=10)
    assert bad.status_code == 401
    assert s.stop() == 0
    assert all(secret not in line for line in s.seen)
    assert db.is_file()


def test_kaizen_serve_reports_a_busy_port(
    tmp_path: Path, serve_env: dict[str, str], serve: list[_Serve]
) -> None:
    first = _Serve([], cwd=tmp_path, env=serve_env)
    serve.append(first)
    port = first.wait_for(r"listening on http://127\.0\.0\.1:(\d+)").group(1)
    proc = subprocess.run(
        [sys.executable, "-m", "kaizen_sdk.cli", "serve", "--port", port, "--db",
         str(tmp_path / "other.db")],
        cwd=tmp_path, env=serve_env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot listen" in proc.stderr
    assert first.stop() == 0


def test_kaizen_serve_reports_an_unusable_database(
    tmp_path: Path, serve_env: dict[str, str]
) -> None:
    (tmp_path / "not-a-db").write_bytes(b"this is not a SQLite file" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "kaizen_sdk.cli", "serve", "--port", "0", "--db",
         str(tmp_path / "not-a-db")],
        cwd=tmp_path, env=serve_env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "cannot open the database" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_installed_kaizen_script_serves(
    tmp_path: Path, serve_env: dict[str, str], serve: list[_Serve]
) -> None:
    script = Path(sys.executable).parent / "kaizen"
    if not script.exists():
        pytest.skip("the kaizen console script is not installed in this environment")
    s = _Serve([], cwd=tmp_path, env=serve_env, command=[str(script)])
    serve.append(s)
    url = s.wait_for(r"listening on (http://\S+)").group(1)
    assert httpx.get(f"{url}/api/v1/health", timeout=10).json()["status"] == "ok"
    assert s.stop() == 0
