"""What only the PostgreSQL seam does: the SQL translation, rows, numbers, NUL characters,
writers taking turns across connections, and the pool's connections per thread.

The behaviour both backends share is the contract suite (test_contract.py, on both).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from kaizen_sdk.models import FeedbackRequest, TaskCreateRequest, TraceRequest
from kaizen_server.storage.errors import Conflict, Invalid
from kaizen_server.storage.postgres import WRITE_LOCK_KEY, PostgresStore, translate

pytestmark = pytest.mark.unit


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_url)
    yield store
    store.close()


def test_translate_rewrites_the_stores_sqlite_spellings() -> None:
    assert translate("SELECT * FROM t WHERE a = ? AND b LIKE 'x%?'") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%?'")
    assert translate("INSERT OR IGNORE INTO s (id) VALUES (?)") == (
        "INSERT INTO s (id) VALUES (%s) ON CONFLICT DO NOTHING")
    assert translate("SELECT id FROM feedback INDEXED BY feedback_trace WHERE x = ?") == (
        "SELECT id FROM feedback WHERE x = %s")
    assert translate("SELECT 1 WHERE json_extract(metadata, '$.trace_id') IS NULL") == (
        "SELECT 1 WHERE ((metadata)::jsonb ->> 'trace_id') IS NULL")
    assert translate("SELECT SUM(MAX(spent_usd, reserved_usd)), MAX(seq) FROM jobs") == (
        "SELECT SUM(GREATEST(spent_usd, reserved_usd)), MAX(seq) FROM jobs")
    sql = "SELECT ? AS cached"
    assert translate(sql) is translate(sql)  # once per distinct statement


def test_rows_have_names_and_indexes_and_sums_are_python_numbers(pg: PostgresStore) -> None:
    pg.ingest([TraceRequest(task_id="n", response_text="r", tokens=2 ** 40, latency_ms=1.5)
               for _ in range(3)], [])
    row = pg._conn().execute(
        "SELECT SUM(tokens) AS t, AVG(latency_ms) AS l, COUNT(*) AS n FROM traces").fetchone()
    assert (row["t"], row["l"], row["n"]) == (3 * 2 ** 40, 1.5, 3) == tuple(row)
    assert type(row["t"]) is int and row[2] == 3 and row.keys() == ["t", "l", "n"]


def test_a_nul_character_is_invalid_and_nothing_is_kept(pg: PostgresStore) -> None:
    pg.create_task(TaskCreateRequest(name="nul"))
    with pytest.raises(Invalid, match="NUL"):
        pg.add_trace(TraceRequest(task_id="nul", response_text="a\x00b"))
    with pytest.raises(Invalid, match="NUL"):
        pg.ingest([TraceRequest(task_id="nul", response_text="ok"),
                   TraceRequest(task_id="nul", response_text="a\x00b")], [])
    assert pg.list_traces("nul", 10).items == []
    # JSON fields are stored escaped: a NUL inside them is kept as it is
    entry, _ = pg.add_feedback(FeedbackRequest(task_id="nul", output="a\x00b"))
    assert pg.list_feedback("nul", 10).items[0].output == "a\x00b" == entry.output


def test_a_unique_violation_is_a_conflict(pg: PostgresStore) -> None:
    pg.create_task(TaskCreateRequest(name="dup"))
    with pytest.raises(Conflict), pg._write() as conn:
        conn.execute("INSERT INTO tasks (id, name, feedback_threshold, created_at)"
                     " VALUES ('x', 'dup', 1, 'now')")


def test_writers_take_turns_across_connections(pg: PostgresStore, pg_url: str) -> None:
    """Another process holding the writers' lock makes a write wait until it lets go."""
    other = psycopg.connect(pg_url, autocommit=True)
    other.execute("BEGIN")
    other.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
    done = threading.Event()

    def write() -> None:
        pg.create_task(TaskCreateRequest(name="waited"))
        pg.release_thread()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert not done.wait(0.5)  # blocked by the other connection's lock
        other.execute("COMMIT")
        assert done.wait(30)
    finally:
        writer.join(30)
        other.close()
    assert pg.get_task("waited").name == "waited"


def test_each_thread_keeps_one_connection_until_it_releases_it(pg: PostgresStore) -> None:
    first = pg._conn()
    assert pg._conn() is first
    seen: list[object] = []

    def other() -> None:
        seen.append(pg._conn())
        pg.release_thread()

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(30)
    assert seen and seen[0] is not first
    pg.release_thread()
    assert pg._conn() is not first


def test_a_large_batch_goes_through_copy_with_the_same_meaning(pg: PostgresStore) -> None:
    """Batches of COPY_MIN_ROWS or more are copied: duplicates (stored before, or twice in
    the batch) are stored once, the order of the batch is the order of seq, and a bad value
    keeps nothing of the batch."""
    import uuid

    from kaizen_server.storage.postgres import COPY_MIN_ROWS

    ids = [uuid.uuid4() for _ in range(COPY_MIN_ROWS * 2)]
    pg.ingest([TraceRequest(id=ids[0], task_id="big", response_text="first")], [])
    batch = [TraceRequest(id=i, task_id="big", response_text=str(n)) for n, i in enumerate(ids)]
    batch.append(TraceRequest(id=ids[5], task_id="big", response_text="again"))
    feedback = [FeedbackRequest(task_id="big", output=n, score=0.5) for n in range(COPY_MIN_ROWS)]
    accepted, errors, _jobs = pg.ingest(batch, feedback)
    assert (accepted, errors) == (len(batch) + len(feedback), [])
    staging = pg._conn().execute("SELECT to_regclass('pg_temp.kaizen_copy_traces') AS t")
    assert staging.fetchone()["t"] is not None  # the traces went through COPY
    stored = pg.list_traces("big", 1000).items
    assert [t.response_text for t in stored] == [str(n) for n in range(len(ids) - 1, 0, -1)] + [
        "first"]  # newest first: seq follows the batch; ids[0] and ids[5] stored once
    assert [e.output for e in pg.list_feedback("big", 1000).items] == list(
        range(COPY_MIN_ROWS - 1, -1, -1))
    assert pg.get_task("big").feedback_count == COPY_MIN_ROWS
    bad = [TraceRequest(task_id="big", response_text="x\x00" if n == 7 else "ok")
           for n in range(COPY_MIN_ROWS)]
    with pytest.raises(Invalid, match="NUL"):
        pg.ingest(bad, [])
    assert len(pg.list_traces("big", 1000).items) == len(ids)  # nothing of the bad batch
    pg.ingest(batch, feedback[:0])  # the same batch again in a new transaction: all known
    assert len(pg.list_traces("big", 1000).items) == len(ids)


def test_a_failed_first_copy_leaves_the_next_batch_working(pg: PostgresStore) -> None:
    """The staging table made by a batch that rolled back is gone: the next batch makes it."""
    from kaizen_server.storage.postgres import COPY_MIN_ROWS

    pg.create_task(TaskCreateRequest(name="first"))
    with pytest.raises(Invalid):
        pg.ingest([TraceRequest(task_id="first", response_text="\x00" if n == 3 else "ok")
                   for n in range(COPY_MIN_ROWS)], [])
    accepted, errors, _jobs = pg.ingest(
        [TraceRequest(task_id="first", response_text="ok") for _ in range(COPY_MIN_ROWS)], [])
    assert (accepted, errors) == (COPY_MIN_ROWS, [])
    assert len(pg.list_traces("first", 1000).items) == COPY_MIN_ROWS

