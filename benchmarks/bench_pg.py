"""Metric: ingest into PostgreSQL through the CT server, against raw psycopg of the same rows.

A private PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl in a temporary folder on a
loopback port, fsync off for both contenders) serves both, side by side, round after round:

- **HTTP ingest**: ``POST /api/v1/ingest`` of 128 trace + 128 feedback records per request
  over one keep-alive connection to a `LocalServer` (its own process) on a fresh database
  (``--db postgresql://...``); the store writes each batch in one transaction with one
  pipelined ``executemany`` per table.
- **Raw psycopg**: the same rows ``executemany``-inserted into the same schema (made by the
  store), one transaction per batch, foreign-key triggers off (as the SQLite twin in
  bench_server turns foreign keys off).

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
    http_wall, http_cpu, raw_wall, raw_cpu = [], [], [], []
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
        cluster.drop(url)
        url = cluster.fresh_database()
        wall, per_cpu, _ = _raw(url, batches[1:])
        raw_wall.append(wall)
        raw_cpu.append(per_cpu)
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
                   "executemany of the same rows, one transaction per batch, this process plus "
                   f"its backend. Median of {rounds} alternating rounds of {n_batches - 1} "
                   f"batches. Per CPU second: HTTP {', '.join(f'{x:,.0f}' for x in http_cpu)}; "
                   f"raw {', '.join(f'{x:,.0f}' for x in raw_cpu)}. Wall pairs/s: HTTP "
                   f"{', '.join(f'{x:,.0f}' for x in http_wall)}; raw "
                   f"{', '.join(f'{x:,.0f}' for x in raw_wall)}."],
        ),
    ]
