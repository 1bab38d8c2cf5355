"""Retention in the background: the `Pruner` thread brings every task to its
``feedback_retention_limit`` in bounded batches, through the index, and stops promptly."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from kaizen_sdk.models import FeedbackRequest, TaskCreateRequest
from kaizen_server.jobs.retention import Pruner
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


def _store(tmp_path: Path, limit: int, entries: int) -> Store:
    store = Store(str(tmp_path / "retention.db"))
    store.create_task(TaskCreateRequest(name="r", feedback_retention_limit=limit))
    store.ingest([], [FeedbackRequest(task_id="r", output=str(i)) for i in range(entries)])
    return store


def _count(store: Store) -> int:
    return len(store.list_feedback("r", 1000).items)


def test_a_pass_deletes_in_bounded_batches(tmp_path: Path) -> None:
    store = _store(tmp_path, limit=10, entries=100)
    try:
        pruner = Pruner(store, batch=20, max_batches=3)
        assert pruner.run_once() == 60  # three batches of 20, then the pass ends
        assert _count(store) == 40
        assert pruner.run_once() == 30
        assert pruner.run_once() == 0
        assert (_count(store), pruner.pruned) == (10, 90)
        newest = [f.output for f in store.list_feedback("r", 1000).items]
        assert newest == [str(i) for i in range(99, 89, -1)]
    finally:
        store.close()


def test_the_thread_prunes_and_stops(tmp_path: Path) -> None:
    store = _store(tmp_path, limit=5, entries=50)
    pruner = Pruner(store, interval=0.05, batch=10)
    pruner.start()
    try:
        deadline = time.monotonic() + 30
        while pruner.pruned < 45 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pruner.pruned == 45
    finally:
        pruner.stop(10)
    assert pruner._thread is not None and not pruner._thread.is_alive()
    try:
        assert _count(store) == 5
    finally:
        store.close()


def test_the_prune_reads_and_deletes_through_the_task_index(tmp_path: Path) -> None:
    store = _store(tmp_path, limit=5, entries=20)
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        assert store.prune_feedback(100) == 15
    finally:
        conn.set_trace_callback(None)
        store.close()
    (find,) = [s for s in statements if s.startswith("SELECT seq FROM feedback")]
    (delete,) = [s for s in statements if s.startswith("DELETE FROM feedback")]
    check = sqlite3.connect(tmp_path / "retention.db")
    try:
        for sql in (find, delete):
            plan = " / ".join(row[3] for row in check.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING COVERING INDEX feedback_task (task_id=?" in plan, plan
            assert "SCAN feedback" not in plan.replace("SCAN feedback USING", ""), plan
    finally:
        check.close()
