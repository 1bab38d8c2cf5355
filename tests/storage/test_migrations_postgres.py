"""PostgreSQL schema steps you can trust: numbered, frozen, fresh equals migrated, and the
same tables, columns and indexes as the SQLite schema (the store runs the same SQL on both).

Runs on the session's private cluster (`pg_cluster`, tests/pg_cluster.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg_cluster import Cluster

from kaizen_server.storage import postgres_schema, sqlite_schema
from kaizen_server.storage.postgres import PostgresStore, upgrade
from kaizen_server.storage.sqlite import Store
from kaizen_server.storage.sqlite_schema import SchemaError, SchemaOutdated

pytestmark = pytest.mark.unit

SHIPPED = {
    "0001_initial.sql": "1e46eb53947926c8d4cac24238e775d72a81db1096542f7d2f698e5ec3458895",
}
"""SHA-256 of every PostgreSQL step (line endings normalized). Never change an entry: a schema
change is a new step (and its SQLite twin); add its line here."""

_TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}
"""The PostgreSQL type of each SQLite column type the schema uses."""


def _pg_schema(url: str) -> dict[str, Any]:
    """Tables with their columns in order (name, type, not null, default), indexes (name,
    definition) and constraints (name, definition), and the version."""
    with psycopg.connect(url) as conn:
        columns: dict[str, list[tuple[Any, ...]]] = {}
        for table, name, kind, nullable, default in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, ordinal_position"
        ):
            columns.setdefault(table, []).append((name, kind, nullable == "NO", default))
        indexes = sorted(conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        ).fetchall())
        constraints = sorted(conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        ).fetchall())
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return {"columns": columns, "indexes": indexes, "constraints": constraints,
            "version": None if version is None else version[0]}


@pytest.fixture
def empty_url(pg_cluster: Cluster) -> Any:
    url = pg_cluster.empty_database()
    yield url
    pg_cluster.drop(url)


def test_the_steps_are_numbered_and_frozen() -> None:
    steps = postgres_schema.STEPS
    assert [s.version for s in steps] == list(range(1, postgres_schema.SCHEMA_VERSION + 1))
    assert {s.filename: s.checksum for s in steps if s.filename in SHIPPED} == SHIPPED


@pytest.mark.parametrize("version", range(0, postgres_schema.SCHEMA_VERSION))
def test_migrated_from_every_version_equals_fresh(
    pg_cluster: Cluster, pg_url: str, empty_url: str, version: int
) -> None:
    """A database at each earlier version (0: none), brought up by the store at start, has
    exactly the schema of one created fresh (the template every test database copies)."""
    if version:
        with psycopg.connect(empty_url) as conn:
            postgres_schema.upgrade(conn, to=version)
    before = postgres_schema.SCHEMA_VERSION - version
    with psycopg.connect(empty_url) as conn:
        assert len(postgres_schema.status(conn).pending) == before
    PostgresStore(empty_url).close()
    assert _pg_schema(empty_url) == _pg_schema(pg_url)


def test_the_schema_has_the_sqlite_schemas_tables_columns_and_indexes(
    pg_url: str, tmp_path: Path
) -> None:
    """The store's SQL runs on both engines, so both schemas name the same things: every
    SQLite table and column (in PostgreSQL's type for it, same NOT NULL), every index.
    A new SQLite step fails this until its PostgreSQL twin step exists."""
    Store(str(tmp_path / "twin.db")).close()
    conn = sqlite3.connect(tmp_path / "twin.db")
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        sqlite_columns = {
            t: [(c[1], _TYPES[c[2]], bool(c[3]) or bool(c[5]))
                for c in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
        }
        sqlite_indexes = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    finally:
        conn.close()
    pg = _pg_schema(pg_url)
    pg_columns = {t: [(name, kind, notnull) for name, kind, notnull, _ in cols]
                  for t, cols in pg["columns"].items()}
    assert pg_columns == sqlite_columns
    pg_indexes = {name for _, name, definition in pg["indexes"]
                  if not name.endswith(("_pkey", "_key"))}
    assert pg_indexes == sqlite_indexes
    assert pg["version"] == postgres_schema.SCHEMA_VERSION
    # PostgreSQL step 1 is SQLite version 10; each later SQLite step has its twin
    assert postgres_schema.SCHEMA_VERSION == sqlite_schema.SCHEMA_VERSION - 9, (
        "a new SQLite schema step needs its PostgreSQL twin in migrations/postgres/")


def test_no_migrate_refuses_an_empty_database_and_upgrade_brings_it_up(empty_url: str) -> None:
    with pytest.raises(SchemaOutdated, match="kaizen db upgrade"):
        PostgresStore(empty_url, migrate=False)
    ran, status = upgrade(empty_url)
    assert [s.filename for s in ran] == [s.filename for s in postgres_schema.STEPS]
    assert status.up_to_date
    store = PostgresStore(empty_url, migrate=False)
    try:
        assert store.schema_version() == postgres_schema.SCHEMA_VERSION
    finally:
        store.close()
    assert upgrade(empty_url)[0] == []


def test_a_database_newer_than_the_server_is_refused(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, '2030-01-01T00:00:00+00:00')")
    with pytest.raises(SchemaError, match="newer than this kaizen-server"):
        PostgresStore(pg_url)
