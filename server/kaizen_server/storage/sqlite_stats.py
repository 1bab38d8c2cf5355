"""What a SQLite database holds (``kaizen db stats``): rows and bytes per table, the file size.

Opened read-only; nothing is created or changed. Bytes come from SQLite's ``dbstat`` table
(pages of the table and of its indexes, as stored); where this SQLite lacks it, they are
``None``. Counting rows reads each table's smallest index once, which takes a moment at
millions of rows but never holds up a running server (WAL readers do not block writers).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
from pathlib import Path

__all__ = ["DatabaseStats", "TableStats", "database_stats"]


@dataclasses.dataclass(frozen=True)
class TableStats:
    """One table: its rows, and the bytes of its pages and of its indexes' pages."""

    name: str
    rows: int
    table_bytes: int | None
    index_bytes: int | None


@dataclasses.dataclass(frozen=True)
class DatabaseStats:
    """The database file's size (with its write-ahead log) and its tables, largest first."""

    path: str
    file_bytes: int
    wal_bytes: int
    tables: list[TableStats]


def database_stats(path: str) -> DatabaseStats:
    """Read *path*'s tables; raises `FileNotFoundError` when it does not exist and
    `sqlite3.Error` when it is not a database."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no database file at {path}")
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name")]
        owner = dict(conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        pages: dict[str, int] | None = None
        with contextlib.suppress(sqlite3.Error):  # SQLite built without dbstat
            pages = {str(r[0]): int(r[1]) for r in conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")}
        tables = []
        for name in names:
            rows = int(conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])
            table_bytes = index_bytes = None
            if pages is not None:
                table_bytes = pages.get(name, 0)
                index_bytes = sum(size for obj, size in pages.items()
                                  if obj != name and owner.get(obj) == name)
            tables.append(TableStats(name, rows, table_bytes, index_bytes))
    finally:
        conn.close()
    tables.sort(key=lambda t: (-(t.table_bytes or 0) - (t.index_bytes or 0), -t.rows, t.name))
    wal = f"{path}-wal"
    return DatabaseStats(path=os.path.abspath(path), file_bytes=os.path.getsize(path),
                         wal_bytes=os.path.getsize(wal) if os.path.isfile(wal) else 0,
                         tables=tables)
