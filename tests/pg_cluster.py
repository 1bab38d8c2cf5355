"""A private PostgreSQL cluster for the tests: started by the tests themselves, never a mock.

`Cluster.start` runs Debian's ``initdb`` into a temporary directory (as the ``postgres`` user
when the tests run as root, which PostgreSQL requires) and ``pg_ctl start`` on a free loopback
port, tuned for throw-away data (no fsync). `Cluster.template` is a database migrated once to
the current schema; `Cluster.fresh_database` copies it (``CREATE DATABASE ... TEMPLATE``, a
file copy of a few MB) so each test gets its own empty database in milliseconds, and
`Cluster.drop` removes it. `Cluster.stop` stops the server and deletes the directory.

The fixture ``pg_cluster`` (in ``tests/conftest.py``) is session-scoped: each pytest-xdist
worker starts its own cluster on first use. When ``initdb`` is missing the tests FAIL with the
command that installs it (``make test`` installs it first: the ``postgres`` prerequisite).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path

__all__ = ["INSTALL_HINT", "Cluster", "find_bindir"]

INSTALL_HINT = (
    "PostgreSQL's server programs (initdb, pg_ctl) are not installed, and the PostgreSQL "
    "tests need them: run `sudo apt-get install -y postgresql` (Debian/Ubuntu; `make test` "
    "does it when run as root), or put a PostgreSQL bin directory on PATH."
)

_SETTINGS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB "
    "-c checkpoint_timeout=1h -c max_wal_size=1GB"
)


def find_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl`` (PATH first, then Debian's newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One private PostgreSQL server in a temporary directory (see the module docstring)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="kaizen-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.port = 0
        self.started_in = 0.0
        """Seconds `start` took (initdb, server start, template)."""
        self._as_postgres = os.geteuid() == 0
        self._names = itertools.count(1)
        self.template = "kaizen_template"
        self._strategy = ""

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=120, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        """The URL of *database* on this cluster, through its Unix socket (a third faster a
        query than loopback TCP; trust authentication)."""
        return f"postgresql://postgres@/{database}?host={self.sockets}&port={self.port}"

    def tcp_url(self, database: str = "postgres") -> str:
        """The URL of *database* over loopback TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> Cluster:
        """initdb, start the server, and make the migrated template database."""
        began = time.monotonic()
        self.sockets.mkdir()
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        done = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                         "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        for _attempt in range(5):  # another process may take the free port first
            self.port = _free_port()
            done = self._run(
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                str(self.root / "server.log"), "-w", "-t", "60", "start", "-o",
                f"-p {self.port} -k {self.sockets} {_SETTINGS}",
            )
            if done.returncode == 0:
                break
        else:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed:\n{done.stderr}\n{log}")
        import psycopg

        with psycopg.connect(self.url()) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()
        # FILE_COPY (15+) copies the template's files: faster than WAL-logging each block
        self._strategy = " STRATEGY FILE_COPY" if version and int(version[0]) >= 150000 else ""
        self._make_template()
        self.started_in = time.monotonic() - began
        return self

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def _make_template(self) -> None:
        from kaizen_server.storage.postgres import PostgresStore

        self._admin(f"CREATE DATABASE {self.template}")
        PostgresStore(self.url(self.template)).close()

    def fresh_database(self) -> str:
        """A new database copied from the migrated template; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}_{uuid.uuid4().hex[:6]}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}{self._strategy}")
        return self.url(name)

    def empty_database(self) -> str:
        """A new database without any schema; returns its URL."""
        name = f"e{os.getpid()}_{next(self._names)}_{uuid.uuid4().hex[:6]}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop the database of *url* (closing whatever is still connected to it)."""
        name = urllib.parse.urlsplit(url).path.lstrip("/")
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Stop the server (immediately: the data is thrown away) and delete the directory."""
        if self.data.exists():
            with contextlib.suppress(Exception):
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                          "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
