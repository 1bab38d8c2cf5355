"""The storage backends the contract suite runs against (`tests/storage/test_contract.py`).

`BACKENDS` lists them; a new backend appends its name and a branch in `_open`, which
returns a fresh empty store and a function that makes its database full (the next write
must raise `StoreFull`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaizen_server.storage.interface import StorageInterface
from kaizen_server.storage.sqlite import Store

BACKENDS = ["sqlite"]
"""Every storage backend; the contract suite runs once per name."""


@dataclass
class Backend:
    """A fresh store of one backend, and how to fill its database."""

    name: str
    store: StorageInterface
    make_full: Callable[[], None]


class _CappedStore(Store):
    """SQLite with a page cap that `make_full` lowers to the current size (a full disk)."""

    cap: int | None = None

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        if self.cap is not None:
            conn.execute(f"PRAGMA max_page_count = {self.cap}")
        return conn


def _open(name: str, tmp_path: Path) -> tuple[StorageInterface, Callable[[], None]]:
    if name == "sqlite":
        store = _CappedStore(str(tmp_path / "contract.db"))

        def make_full() -> None:
            conn = sqlite3.connect(store.path)
            try:
                store.cap = int(conn.execute("PRAGMA page_count").fetchone()[0])
            finally:
                conn.close()

        return store, make_full
    raise AssertionError(f"unknown storage backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh, empty store of each backend in `BACKENDS`."""
    store, make_full = _open(request.param, tmp_path)
    try:
        yield Backend(request.param, store, make_full)
    finally:
        store.close()


@pytest.fixture
def store(backend: Backend) -> StorageInterface:
    """The fresh store of `backend`."""
    return backend.store
