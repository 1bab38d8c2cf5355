"""Long reads are bounded: the optimizer's examples read the task's newest rows through its
index and stop at the cap, whatever the task holds (SQLite VM steps at two sizes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kaizen_sdk.models import FeedbackRequest, TaskCreateRequest
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


def _statements(store: Store, task_id: str) -> list[str]:
    conn = store._conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        store.scored_examples(task_id, 50)
    finally:
        conn.set_trace_callback(None)
    return seen


def _steps(conn: sqlite3.Connection, sql: str) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        conn.execute(sql).fetchall()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def test_scored_examples_read_the_newest_rows_only(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "ex.db"))
    try:
        store.create_task(TaskCreateRequest(name="big", feedback_threshold=10**6))
        task = store.task_id("big")

        def grow(n: int) -> None:
            store.ingest([], [FeedbackRequest(task_id="big", output="o", score=0.5)
                              for _ in range(n)])

        grow(300)
        # the examples' read (the others ask whether the task lets judges' scores in)
        (sql,) = [s for s in _statements(store, task) if "FROM feedback" in s]
        conn = sqlite3.connect(store.path)
        try:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            assert plan == ["SEARCH feedback USING INDEX feedback_task (task_id=?)"]
            small = _steps(conn, sql)
            grow(3000)
            assert _steps(conn, sql) == small
        finally:
            conn.close()
        assert len(store.scored_examples(task, 50)) == 50
    finally:
        store.close()
