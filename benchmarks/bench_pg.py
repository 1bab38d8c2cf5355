"""Metric: ingest into PostgreSQL through the CT server, against raw psycopg of the same rows.

A private PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl in a temporary folder on a
loopback port, fsync off for both contenders) serves both, side by side, round after round:

- **HTTP ingest**: ``POST /api/v1/ingest`` of 128 trace + 128 feedback records per request
  over one keep-alive connection to a `LocalServer` (its own process) on a fresh database
  (``--db postgresql://...``); the store writes each batch in one transaction, its rows
  through ``COPY`` (`kaizen_server.storage.postgres.PgConnection.executemany`).
- **Raw psycopg**: the rows the server stored, read back from its database and
  ``executemany``-inserted into the same schema (made by the store), one transaction per
  batch, foreign keys checked (the rows' tasks are made first, untimed), as in bench_server.
  The narrower rows the client sent (foreign-key triggers off) are measured for the notes.

The figure is pairs per CPU second of everything that worked on them: the server process plus
the PostgreSQL backends for HTTP ingest, this process plus the backends for raw psycopg
(CPU, not wall, because on a shared machine wall time mostly measures the neighbours; the wall
rates are in the notes).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import Metric
from benchmarks.bench_server import BATCH_PAIRS, _batches, _cpu_s, _http_ingest_pairs_per_s, _server

__all__ = ["run"]

REPO = Path(__file__).resolve().parent.parent


def _cluster_cpu_s(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL postmaster and every backend it started (live ones)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _raw(url: str, batches: list[Any]) -> tuple[float, float, float]:
    """(wall pairs/s, pairs per CPU s of this process, CPU s of the backend) of raw inserts."""
    import psycopg

    from kaizen_server.storage.postgres import PostgresStore

    PostgresStore(url).close()  # the same schema, made by the store itself
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no foreign-key triggers
        backend = conn.info.backend_pid
        started, cpu, server = time.perf_counter(), time.process_time(), _cpu_s(backend)
        for _, trace_rows, feedback_rows in batches:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO traces (id, task_id, prompt_text, response_text, model, tokens,"
                    " latency_ms, prompt_version_id, parent_trace_id, metadata, created_at)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)", trace_rows)
                cur.executemany(
                    "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
                    " created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)", feedback_rows)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server = _cpu_s(backend) - server
    pairs = len(batches) * BATCH_PAIRS
    return pairs / elapsed, pairs / (cpu + server), server


def _stored(url: str, skip: int) -> list[tuple[Any, Any, str, str]]:
    """The rows the server stored at *url*, in `bench_server._stored_rows`'s shape: first
    ``([], tasks rows, "", tasks INSERT)``, then each batch after the first *skip* rows."""
    import psycopg

    tables = {}
    with psycopg.connect(url) as conn:
        for table in ("tasks", "traces", "feedback"):
            columns = [str(row[0]) for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " AND column_name <> 'seq' ORDER BY ordinal_position", (table,))]
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY seq"
                                ).fetchall()[0 if table == "tasks" else skip:]
            tables[table] = (rows, f"INSERT INTO {table} ({', '.join(columns)})"
                                   f" VALUES ({', '.join(['%s'] * len(columns))})")
    (traces, trace_insert), (feedback, feedback_insert) = tables["traces"], tables["feedback"]
    return [([], tables["tasks"][0], "", tables["tasks"][1])] + [
        (traces[i:i + BATCH_PAIRS], feedback[i:i + BATCH_PAIRS], trace_insert, feedback_insert)
        for i in range(0, len(traces), BATCH_PAIRS)]


def _raw_stored(url: str, batches: list[tuple[Any, Any, str, str]]
                ) -> tuple[float, float, float]:
    """`_raw` of the very rows the server stored (every column but ``seq``), with foreign
    keys checked as the store has them (its tasks rows are made first, untimed)."""
    import psycopg

    from kaizen_server.storage.postgres import PostgresStore

    PostgresStore(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        _, tasks, _, tasks_insert = batches[0]
        with conn.cursor() as cur:
            cur.executemany(tasks_insert, tasks)
        backend = conn.info.backend_pid
        started, cpu, server = time.perf_counter(), time.process_time(), _cpu_s(backend)
        for trace_rows, feedback_rows, trace_insert, feedback_insert in batches[1:]:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(trace_insert, trace_rows)
                cur.executemany(feedback_insert, feedback_rows)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        server = _cpu_s(backend) - server
    pairs = sum(len(b[0]) for b in batches[1:])
    return pairs / elapsed, pairs / (cpu + server), server


def _server_version(cluster: Any) -> str:
    import psycopg

    with psycopg.connect(cluster.url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "" if row is None else str(row[0]).split()[0]


def run(quick: bool) -> list[Metric]:
    """Measure HTTP ingest into PostgreSQL and raw psycopg side by side (module docstring)."""
    sys.path.insert(0, str(REPO / "tests"))
    from pg_cluster import INSTALL_HINT, Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    cluster = Cluster(bindir).start()
    try:
        return _run(quick, cluster)
    finally:
        cluster.stop()


def _run(quick: bool, cluster: Any) -> list[Metric]:
    n_batches = 20 if quick else 120
    rounds = 2 if quick else 3
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    http_wall, http_cpu, raw_wall, raw_cpu, narrow_cpu = [], [], [], [], []
    for r in range(rounds):
        batches = _batches(f"bench-pg-{r}", n_batches)
        url = cluster.fresh_database()
        with _server(str(REPO), url) as (base, pid):
            pg_before = _cluster_cpu_s(postmaster)
            server_before = _cpu_s(pid)
            wall, _per_server_cpu = _http_ingest_pairs_per_s(base, pid, batches)
            server_cpu = _cpu_s(pid) - server_before
            pg_cpu = _cluster_cpu_s(postmaster) - pg_before
        # the warm-up batch and the task are inside the CPU window: count them as pairs too
        http_wall.append(wall)
        http_cpu.append((len(batches) - 1) * BATCH_PAIRS / (server_cpu + pg_cpu))
        stored = _stored(url, BATCH_PAIRS)  # without the warm-up batch
        if sum(len(b[0]) + len(b[1]) for b in stored[1:]) != 2 * (n_batches - 1) * BATCH_PAIRS:
            raise RuntimeError("the server did not store every record of the ingest batches")
        cluster.drop(url)
        url = cluster.fresh_database()
        wall, per_cpu, _ = _raw_stored(url, stored)
        raw_wall.append(wall)
        raw_cpu.append(per_cpu)
        cluster.drop(url)
        url = cluster.fresh_database()
        narrow_cpu.append(_raw(url, batches[1:])[1])
        cluster.drop(url)
    ingest, raw = statistics.median(http_cpu), statistics.median(raw_cpu)
    return [
        Metric(
            name="server_pg_ingest_pairs_per_s", unit="pairs/CPU s", better="higher",
            kaizen=ingest, peers={"raw_psycopg": raw},
            goal="at least 0.5x raw PostgreSQL executemany of the same rows (issue 23)",
            goal_met=ingest >= 0.5 * raw,
            verdict=f"{ingest / raw:.2f}x raw psycopg",
            notes=[f"Pairs per CPU second of the server process plus the PostgreSQL backends: "
                   f"POST /api/v1/ingest of {BATCH_PAIRS} trace + {BATCH_PAIRS} feedback records "
                   "per request into a LocalServer on a private PostgreSQL "
                   f"{_server_version(cluster)} cluster (fsync off); raw: psycopg "
                   "executemany of the very rows the server stored (read back from its "
                   "database: every column but seq) into the same schema, foreign keys checked "
                   "(its tasks rows made first), one transaction per batch, this process plus "
                   f"its backend. Median of {rounds} alternating rounds of {n_batches - 1} "
                   f"batches. Per CPU second: HTTP {', '.join(f'{x:,.0f}' for x in http_cpu)}; "
                   f"raw {', '.join(f'{x:,.0f}' for x in raw_cpu)}. Wall pairs/s: HTTP "
                   f"{', '.join(f'{x:,.0f}' for x in http_wall)}; raw "
                   f"{', '.join(f'{x:,.0f}' for x in raw_wall)}. Raw psycopg of the narrower "
                   "rows the client sent (11 trace and 8 feedback columns, the task's name where "
                   "the store keeps its id, foreign-key triggers off), pairs per CPU second: "
                   f"{', '.join(f'{x:,.0f}' for x in narrow_cpu)} (HTTP is "
                   f"{ingest / statistics.median(narrow_cpu):.2f}x of it)."],
        ),
    ]
