"""The storage backends the contract suite runs against (`tests/storage/test_contract.py`).

`BACKENDS` lists them; a new backend appends its name and a branch in `_open`, which
returns a fresh empty store and a function that makes its database full (the next write
must raise `StoreFull`). PostgreSQL runs on the session's private cluster (`pg_cluster`,
tests/pg_cluster.py), one fresh database per test.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaizen_server.storage.interface import StorageInterface
from kaizen_server.storage.sqlite import Store

BACKENDS = ["sqlite", "postgres"]
"""Every storage backend; the contract suite runs once per name."""


@dataclass
class Backend:
    """A fresh store of one backend, and how to fill its database."""

    name: str
    store: StorageInterface
    make_full: Callable[[], None]
    reopen: Callable[[], StorageInterface]
    """A second store on the same database (as another server process has)."""


class _CappedStore(Store):
    """SQLite with a page cap that `make_full` lowers to the current size (a full disk)."""

    cap: int | None = None

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        if self.cap is not None:
            conn.execute(f"PRAGMA max_page_count = {self.cap}")
        return conn


_DISK_FULL = """
CREATE FUNCTION kaizen_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER full_traces BEFORE INSERT OR UPDATE ON traces
    FOR EACH STATEMENT EXECUTE FUNCTION kaizen_test_disk_full();
CREATE TRIGGER full_feedback BEFORE INSERT OR UPDATE ON feedback
    FOR EACH STATEMENT EXECUTE FUNCTION kaizen_test_disk_full();
CREATE TRIGGER full_tasks BEFORE INSERT OR UPDATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION kaizen_test_disk_full();
"""
"""A full disk on PostgreSQL: the server itself answers every write with SQLSTATE 53100
(``disk_full``), as it does when a relation cannot grow (the SQLite twin caps the pages)."""


def _open(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[StorageInterface, Callable[[], None], Callable[[], StorageInterface]]:
    if name == "sqlite":
        store = _CappedStore(str(tmp_path / "contract.db"))

        def make_full() -> None:
            conn = sqlite3.connect(store.path)
            try:
                store.cap = int(conn.execute("PRAGMA page_count").fetchone()[0])
            finally:
                conn.close()

        return store, make_full, lambda: Store(store.path)
    if name == "postgres":
        from kaizen_server.storage.postgres import PostgresStore

        url = request.getfixturevalue("pg_url")
        pg = PostgresStore(url)

        def make_pg_full() -> None:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(_DISK_FULL)

        return pg, make_pg_full, lambda: PostgresStore(url)
    raise AssertionError(f"unknown storage backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty store of each backend in `BACKENDS`."""
    store, make_full, reopen = _open(request.param, tmp_path, request)
    try:
        yield Backend(request.param, store, make_full, reopen)
    finally:
        store.close()


@pytest.fixture
def store(backend: Backend) -> StorageInterface:
    """The fresh store of `backend`."""
    return backend.store
