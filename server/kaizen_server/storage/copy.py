"""``kaizen db copy``: every row of one server database into another (SQLite ⇄ PostgreSQL).

Rows keep their values, ``seq`` numbers included, so ids, order and the API's page cursors are
the same in the copy. Tables are copied parents first, each in ``seq`` order in batches of one
transaction each, with ``INSERT ... ON CONFLICT DO NOTHING``: a copy that stopped half-way
(or was interrupted) resumes where the target's rows end, and never duplicates a row. Copy
from a stopped server: rows changed in the source after they were copied are not copied again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kaizen_server.storage import describe_database, is_postgres_url, open_store

__all__ = ["TABLES", "CopyError", "TableCopy", "copy_database"]

TABLES: tuple[tuple[str, str], ...] = (
    ("tasks", "seq"),
    ("prompts", "seq"),
    ("prompt_labels", "task_id, label"),
    ("jobs", "seq"),
    ("job_calls", "seq"),
    ("feedback", "seq"),
    ("traces", "seq"),
    ("applied_scores", "id"),
    ("held_scores", "seq"),
    ("rollouts", "seq"),
    ("rollout_events", "seq"),
    ("api_keys", "seq"),
    ("audit_log", "seq"),
)
"""Every table with data, parents before the tables that refer to them, and its order key."""


class CopyError(RuntimeError):
    """The copy cannot be made (e.g. the target holds other data); ``str()`` says why."""


@dataclasses.dataclass
class TableCopy:
    """One table's figures: rows in the *source*, rows *copied* by this run, rows now in the
    *target*."""

    table: str
    source: int
    copied: int = 0
    target: int = 0


def _count(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"])


def copy_database(
    source: str, target: str, *, batch: int = 2000,
    progress: Callable[[TableCopy], None] | None = None,
) -> list[TableCopy]:
    """Copy every row of *source* into *target* (paths or ``postgresql://`` URLs); return
    each table's figures. The target is created and migrated when needed; the source must be
    at the current schema (``kaizen db upgrade`` it first). *progress* is called after each
    committed batch. Raises `CopyError` when the target holds tasks the source does not have.
    """
    src = open_store(source, migrate=False)
    try:
        dst = open_store(target)
        try:
            return _copy(src, dst, batch, progress, postgres=is_postgres_url(target),
                         shown=describe_database(target))
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Any, dst: Any, batch: int, progress: Callable[[TableCopy], None] | None,
          *, postgres: bool, shown: str) -> list[TableCopy]:
    read, out = src._conn(), dst._conn()
    theirs = {r["id"] for r in out.execute("SELECT id FROM tasks")}
    foreign = theirs - {r["id"] for r in read.execute("SELECT id FROM tasks")}
    if foreign:
        raise CopyError(f"the target {shown} holds {len(foreign)} task(s) the source does not"
                        " have: copy into an empty database (or the one a previous copy of"
                        " this source made)")
    report: list[TableCopy] = []
    for table, key in TABLES:
        figures = TableCopy(table, _count(read, table))
        if key == "seq":
            after = int(out.execute(
                f"SELECT COALESCE(MAX(seq), 0) AS s FROM {table}").fetchone()["s"])
            condition, order = "WHERE seq > ?", "seq"
        else:  # small tables without seq: all again, what is there already is skipped
            after, condition, order = 0, "", key
        offset = 0
        while True:
            if key == "seq":
                rows = read.execute(
                    f"SELECT * FROM {table} {condition} ORDER BY {order} LIMIT ?",
                    (after, batch)).fetchall()
            else:
                rows = read.execute(f"SELECT * FROM {table} ORDER BY {order} LIMIT ? OFFSET ?",
                                    (batch, offset)).fetchall()
                offset += len(rows)
            if not rows:
                break
            columns = list(rows[0].keys())
            with dst._write() as conn:
                inserted = conn.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
                    f" ({', '.join('?' * len(columns))}) ON CONFLICT DO NOTHING",
                    [tuple(r) for r in rows])
                figures.copied += max(0, inserted.rowcount)  # rows new to the target
            if key == "seq":
                after = int(rows[-1]["seq"])
            if progress is not None:
                progress(figures)
            if len(rows) < batch:
                break
        if postgres and key == "seq":  # the identity goes on after the copied numbers
            with dst._write() as conn:
                conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'),"
                    f" COALESCE((SELECT MAX(seq) FROM {table}), 0) + 1, false)")
        figures.target = _count(out, table)
        report.append(figures)
    return report
