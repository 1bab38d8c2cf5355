"""`kaizen db copy`: SQLite into a real PostgreSQL and back, exact, resumable, no duplicates."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pg_cluster import Cluster

from kaizen_sdk.cli import main
from kaizen_sdk.models import (
    FeedbackRequest,
    RolloutRequest,
    TaskCreateRequest,
    TraceRequest,
)
from kaizen_server.storage import open_store
from kaizen_server.storage.copy import TABLES, CopyError, TableCopy, copy_database

TRACES = 6_000
SECRET = "pw-copy-7731"


def _fill(path: str) -> None:
    """A SQLite database with every kind of row: tasks, versions, a label, a rollout with its
    events, a job, keys, the audit log, and many traces and feedback entries."""
    store = open_store(path)
    try:
        store.create_task(TaskCreateRequest(name="copied", prompt_text="v1 {{ x }}"))
        v2 = store.create_version("copied", "v2 {{ x }}", activate=False)
        store.set_label("copied", "staging", v2.id)
        store.start_rollout("copied", RolloutRequest(candidate_version_id=v2.id))
        store.start_job("copied")
        store.create_key("ci", "ingest")
        for start in range(0, TRACES, 1000):
            traces = [TraceRequest(id=uuid.uuid4(), task_id=f"bulk-{i % 3}",
                                   response_text=f"r{i}", tokens=i, latency_ms=i / 7)
                      for i in range(start, start + 1000)]
            feedback = [FeedbackRequest(task_id=f"bulk-{i % 3}", output={"n": i},
                                        score=(i % 10) / 10, metadata={"trace_id": str(t.id)})
                        for i, t in zip(range(start, start + 500), traces, strict=False)]
            store.ingest(traces, feedback)
        store.score_trace(store.list_traces("bulk-0", 1).items[0].id.hex, 0.9, "person")
    finally:
        store.close()


def _rows(target: str) -> dict[str, list[tuple[Any, ...]]]:
    store = open_store(target, migrate=False)
    try:
        conn = store._conn()
        out = {}
        for table, key in TABLES:
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            out[table] = [tuple(r[k] for k in sorted(r.keys())) for r in rows]
        return out
    finally:
        store.close()


class _Stop(Exception):
    pass


def test_copy_sqlite_into_postgres_and_back_is_exact_and_resumes(
    tmp_path: Path, pg_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    source = str(tmp_path / "laptop.db")
    _fill(source)
    original = _rows(source)
    assert len(original["traces"]) == TRACES and len(original["rollout_events"]) >= 1

    team = pg_cluster.empty_database().replace("postgres@", f"postgres:{SECRET}@")
    seen: list[int] = []

    def stop_midway(table: TableCopy) -> None:
        if table.table == "traces":
            seen.append(table.copied)
            if len(seen) == 3:
                raise _Stop  # interrupted after 3 batches of traces were committed

    with pytest.raises(_Stop):
        copy_database(source, team, batch=1000, progress=stop_midway)
    assert seen == [1000, 2000, 3000]
    assert main(["db", "copy", source, team, "--batch", "1000", "--json"]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    report = json.loads(out.out)["tables"]
    assert report["traces"] == {"source": TRACES, "copied": TRACES - 3000, "target": TRACES}
    assert report["feedback"]["target"] == report["feedback"]["source"] == TRACES // 2 + 1
    assert {t: n["target"] for t, n in report.items()} == {
        t: len(rows) for t, rows in original.items()}
    assert _rows(team) == original  # exact: every row, every value, seq numbers too

    again = copy_database(source, team)  # a finished copy: nothing more, nothing twice
    assert sum(t.copied for t in again) == 0

    store = open_store(team)  # the copy is a working database: new rows number on
    try:
        added = store.add_trace(TraceRequest(task_id="copied", response_text="after"))
        assert store.list_traces(None, 1).items[0].id == added.id
    finally:
        store.close()

    back = str(tmp_path / "back.db")
    copy_database(team, back, batch=5000)
    copied_back = _rows(back)
    assert len(copied_back["traces"]) == TRACES + 1
    copied_back["traces"].pop()
    copied_back["audit_log"] = copied_back["audit_log"][:len(original["audit_log"])]
    assert copied_back == original
    pg_cluster.drop(team)


def test_copy_refuses_a_target_with_other_data(tmp_path: Path, pg_url: str) -> None:
    source = str(tmp_path / "one.db")
    store = open_store(source)
    store.create_task(TaskCreateRequest(name="mine"))
    store.close()
    other = open_store(pg_url)
    other.create_task(TaskCreateRequest(name="theirs"))
    other.close()
    with pytest.raises(CopyError, match="holds 1 task"):
        copy_database(source, pg_url)


def test_copy_of_a_hundred_thousand_traces_is_exact_per_table_and_resumes(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    """The issue's size: 100,000 traces (and 50,000 feedback entries) into PostgreSQL,
    interrupted after 40,000 traces, then finished by a second run: exact counts per table,
    nothing copied twice, and a third run copies nothing."""
    source = str(tmp_path / "big.db")
    store = open_store(source)
    try:
        for start in range(0, 100_000, 5000):
            traces = [TraceRequest(id=uuid.uuid4(), task_id=f"big-{i % 4}", response_text="r",
                                   tokens=i) for i in range(start, start + 5000)]
            feedback = [FeedbackRequest(task_id=f"big-{i % 4}", output="o", score=0.5)
                        for i in range(start, start + 2500)]
            store.ingest(traces, feedback)
    finally:
        store.close()
    team = pg_cluster.empty_database()
    try:
        def stop_at_40k(table: TableCopy) -> None:
            if table.table == "traces" and table.copied >= 40_000:
                raise _Stop

        with pytest.raises(_Stop):
            copy_database(source, team, batch=5000, progress=stop_at_40k)
        finished = {t.table: t for t in copy_database(source, team, batch=5000)}
        assert finished["traces"].copied == 60_000  # resumed where the first run stopped
        assert {t: (f.source, f.target) for t, f in finished.items()} == {
            t: (f.source, f.source) for t, f in finished.items()}
        assert (finished["traces"].target, finished["feedback"].target) == (100_000, 50_000)
        assert sum(t.copied for t in copy_database(source, team)) == 0
    finally:
        pg_cluster.drop(team)
