"""What a PostgreSQL database holds (``kaizen db stats --db postgresql://…``): rows and bytes
per table of the server's schema, and the database's size, in the shape of SQLite's
`kaizen_server.storage.sqlite_stats` (the write-ahead log is PostgreSQL's own: 0 here).

Read-only; rows are counted exactly (``COUNT(*)``), which reads each table once.
"""

from __future__ import annotations

from kaizen_server.storage.postgres import connect, redact_url
from kaizen_server.storage.sqlite_stats import DatabaseStats, TableStats

__all__ = ["database_stats"]


def database_stats(url: str) -> DatabaseStats:
    """Sizes of the database at *url* (the password is never shown); raises
    `DatabaseUnreachable` when it cannot be reached."""
    conn = connect(url)
    try:
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchall()[0]
        names = [str(r[0]) for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            " ORDER BY tablename")]
        tables = []
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            (rows,) = conn.execute(f"SELECT COUNT(*) FROM {quoted}").fetchall()[0]
            table_bytes, index_bytes = conn.execute(
                "SELECT pg_table_size(CAST(? AS regclass)), pg_indexes_size(CAST(? AS regclass))",
                (quoted, quoted)).fetchall()[0]
            tables.append(TableStats(name, int(rows), int(table_bytes), int(index_bytes)))
    finally:
        conn.close()
    tables.sort(key=lambda t: (-(t.table_bytes or 0) - (t.index_bytes or 0), -t.rows, t.name))
    return DatabaseStats(redact_url(url), int(size), 0, tables)
