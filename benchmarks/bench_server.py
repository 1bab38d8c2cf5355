"""Metric 6: the local CT server: ingest, GET prompt, SDK delivery, hostile clients.

Every server runs in its own process (real HTTP on loopback, real SQLite in a temporary
folder), so the figures are what a client process gets from it. Side by side in one run:

- **Ingest**: record pairs (a trace and a feedback entry) per second through
  ``POST /api/v1/ingest`` in batches of 128 pairs (256 records), against raw SQLite: the rows
  the server stored, read back from its database and ``executemany``-inserted into the same
  schema and indexes (WAL, one transaction per batch).
- **GET prompt**: requests/s of ``GET /api/v1/prompts/{task}`` over 4 keep-alive
  connections, against the server of commit ``e75ad1c`` (``http.server``, before this
  rebuild), extracted with ``git archive`` and run the same way, alternately, round by round.
- **SDK delivery**: records/s from 8 threads calling a ``@task`` function, until ``flush()``
  returned and the server counted every feedback entry.
- **Hostile clients**: the server's RSS growth while unauthenticated clients stream 400 MB of
  chunked body with a chunk size of ``-1``, and p99 latency of ``GET /health`` from a fresh
  client while 1,000 connections hold half-sent request heads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks._harness import Metric

__all__ = ["OLD_COMMIT", "run"]

OLD_COMMIT = "e75ad1c"
"""The last commit with the ``http.server`` layer, measured beside the current server."""

API_KEY = "kaizen-bench-key"
BATCH_PAIRS = 128
REPO = Path(__file__).resolve().parent.parent

_SERVER = """
import importlib, sys
package = importlib.import_module(sys.argv[4])
if not package.__file__.startswith(sys.argv[3]):
    sys.exit(f"the server was imported from {package.__file__}, not from {sys.argv[3]}")
server = package.LocalServer(db_path=sys.argv[2], api_key=sys.argv[1]).start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def _server(pythonpath: str, db: str) -> Iterator[tuple[str, int]]:
    """A LocalServer from *pythonpath* in its own process; yields (base URL, pid)."""
    # the tree's own server package (server/), not one installed elsewhere; the subprocess
    # refuses to run a server imported from outside *pythonpath*
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [pythonpath, os.path.join(pythonpath, "server")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, API_KEY, db, os.path.realpath(pythonpath),
         # before the server moved to server/ (e.g. OLD_COMMIT), it was kaizen_sdk.local
         "kaizen_server" if os.path.isdir(os.path.join(pythonpath, "server", "kaizen_server"))
         else "kaizen_sdk.local"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=pythonpath,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"the local CT server did not start: {url!r}")
        yield url, proc.pid
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _old_tree(tmp: str, notes: list[str]) -> str | None:
    """Extract ``kaizen_sdk`` of `OLD_COMMIT` into *tmp*; ``None`` (and a note) if impossible."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", OLD_COMMIT, "kaizen_sdk"],
            capture_output=True, check=True, timeout=60,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        notes.append(f"The old server ({OLD_COMMIT}) could not be extracted: {exc}.")
        return None
    return tmp


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process *pid* has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host.strip("[]"), int(port)


# --- raw keep-alive HTTP client (the load generator must not be the bottleneck) ------------


class _Conn:
    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, raw: bytes) -> int:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lower = head.lower()
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        while len(rest) < length:
            self.buf = rest
            self._more()
            rest = self.buf
        self.buf = rest[length:]
        return int(head.split(b" ", 2)[1])

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n\r\n".encode()


def _post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _req_per_s(url: str, raw: bytes, seconds: float, conns: int = 4) -> tuple[float, int]:
    """(requests/s, requests) of *raw* over *conns* keep-alive connections for *seconds*."""
    address = _address(url)
    counts = [0] * conns
    stop = time.perf_counter() + seconds
    errors: list[str] = []

    def worker(i: int) -> None:
        conn = _Conn(address)
        try:
            while time.perf_counter() < stop:
                status = conn.request(raw)
                if status != 200:
                    errors.append(f"status {status}")
                    return
                counts[i] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"GET prompt failed: {errors[0]}")
    return sum(counts) / elapsed, sum(counts)


# --- ingest ----------------------------------------------------------------------------------


def _batches(task: str, n_batches: int) -> list[tuple[bytes, list[tuple[Any, ...]], list[Any]]]:
    """Ingest bodies and, for the same records, the rows raw SQLite inserts."""
    import msgspec

    from kaizen_sdk.tracing import new_trace_id

    now = "2026-12-01T00:00:00+00:00"
    out = []
    for _ in range(n_batches):
        traces, feedback, trace_rows, feedback_rows = [], [], [], []
        for i in range(BATCH_PAIRS):
            tid, fid = new_trace_id(), new_trace_id()  # UUID7s, as the SDK makes them
            meta = {"trace_id": tid, "session": "s-1"}
            traces.append({"id": tid, "task_id": task, "prompt_text": "Summarize: {{ t }}",
                           "response_text": f"summary {i}", "model": "gpt-4o-mini",
                           "tokens": 42, "latency_ms": 12.5, "metadata": meta})
            feedback.append({"id": fid, "task_id": task, "inputs": {"t": f"ticket {i}"},
                             "output": f"summary {i}", "score": 0.5, "source": "sdk",
                             "metadata": meta})
            meta_text = msgspec.json.encode(meta).decode()
            trace_rows.append((tid, task, "Summarize: {{ t }}", f"summary {i}", "gpt-4o-mini",
                               42, 12.5, None, None, meta_text, now))
            feedback_rows.append((fid, task, msgspec.json.encode({"t": f"ticket {i}"}).decode(),
                                  msgspec.json.encode(f"summary {i}").decode(), 0.5, "sdk",
                                  meta_text, now))
        body = msgspec.json.encode({"traces": traces, "feedback": feedback})
        out.append((body, trace_rows, feedback_rows))
    return out


def _raw_sqlite_pairs_per_s(db: str, batches: list[Any]) -> tuple[float, float]:
    """(pairs/s of wall time, pairs per CPU second) of raw executemany inserts."""
    from kaizen_server.storage.sqlite import Store

    Store(db).close()  # the same schema, created by the store itself
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = OFF")  # the rows name a task by text, not by row
    started, cpu = time.perf_counter(), time.process_time()
    for _, trace_rows, feedback_rows in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO traces (id, task_id, prompt_text, response_text, model, tokens,"
            " latency_ms, prompt_version_id, parent_trace_id, metadata, created_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)", trace_rows)
        conn.executemany(
            "INSERT INTO feedback (id, task_id, inputs, output, score, source, metadata,"
            " created_at) VALUES (?,?,?,?,?,?,?,?)", feedback_rows)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    pairs = len(batches) * BATCH_PAIRS
    return pairs / elapsed, pairs / cpu


def _stored_rows(db: str, skip: int) -> list[tuple[Any, Any, str, str]]:
    """The rows the server stored in *db*, batch by batch, after the first *skip* of each
    table, as ``(trace rows, feedback rows, trace INSERT, feedback INSERT)`` per batch; the
    first item is ``([], tasks rows, "", tasks INSERT)``: the rows' tasks, made untimed."""
    conn = sqlite3.connect(db)
    try:
        tables = {}
        for table in ("tasks", "traces", "feedback"):
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")
                       if row[1] != "seq"]
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY seq"
                                ).fetchall()[0 if table == "tasks" else skip:]
            insert = (f"INSERT INTO {table} ({', '.join(columns)})"
                      f" VALUES ({', '.join('?' * len(columns))})")
            tables[table] = (rows, insert)
    finally:
        conn.close()
    (traces, trace_insert), (feedback, feedback_insert) = tables["traces"], tables["feedback"]
    return [([], tables["tasks"][0], "", tables["tasks"][1])] + [
        (traces[i:i + BATCH_PAIRS], feedback[i:i + BATCH_PAIRS], trace_insert, feedback_insert)
        for i in range(0, len(traces), BATCH_PAIRS)]


def _raw_stored_pairs_per_s(db: str, batches: list[tuple[Any, Any, str, str]]
                            ) -> tuple[float, float]:
    """(pairs/s of wall time, pairs per CPU second) of raw executemany inserts of the very
    rows the server stored (every column but ``seq``), into the same schema and indexes, with
    foreign keys checked as the store does (its tasks are inserted first, untimed)."""
    from kaizen_server.storage.sqlite import Store

    Store(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    _, tasks, _, tasks_insert = batches[0]
    conn.executemany(tasks_insert, tasks)
    batches = batches[1:]
    started, cpu = time.perf_counter(), time.process_time()
    for trace_rows, feedback_rows, trace_insert, feedback_insert in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(trace_insert, trace_rows)
        conn.executemany(feedback_insert, feedback_rows)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    conn.close()
    pairs = sum(len(b[0]) for b in batches)
    return pairs / elapsed, pairs / cpu


def _no_jobs(conn: _Conn, task: str) -> None:
    """Create *task* with a threshold no run reaches: ingest is timed, not the optimizer."""
    body = b'{"name": "%s", "feedback_threshold": 1000000000}' % task.encode()
    status = conn.request(_post("/api/v1/tasks", body))
    if status != 201:
        raise RuntimeError(f"creating task {task} answered {status}")


def _http_ingest_pairs_per_s(url: str, pid: int, batches: list[Any]) -> tuple[float, float]:
    """(pairs/s of wall time, pairs per CPU second of the server) through HTTP ingest."""
    conn = _Conn(_address(url))
    try:
        _no_jobs(conn, batches[0][1][0][1])
        conn.request(_post("/api/v1/ingest", batches[0][0]))  # warm-up
        started, cpu = time.perf_counter(), _cpu_s(pid)
        for body, _, _ in batches[1:]:
            status = conn.request(_post("/api/v1/ingest", body))
            if status != 207:
                raise RuntimeError(f"ingest answered {status}")
        elapsed, cpu = time.perf_counter() - started, _cpu_s(pid) - cpu
    finally:
        conn.close()
    pairs = (len(batches) - 1) * BATCH_PAIRS
    return pairs / elapsed, pairs / cpu


# --- SDK delivery from 8 threads ---------------------------------------------------------------


def _delivery(url: str, n: int) -> tuple[float, str]:
    from kaizen_sdk import CTClient

    task = "bench_server_delivery"
    conn = _Conn(_address(url))
    _no_jobs(conn, task)
    conn.close()
    client = CTClient(api_key=API_KEY, base_url=url, max_queue_size=1_000_000)
    fn = client.task(task, default_prompt="Summarize: {{ ticket }}")(
        lambda ticket: f"summary of {ticket}"
    )
    fn("warm-up")
    client.flush()
    per_thread = n // 8

    def calls(k: int) -> None:
        for i in range(per_thread):
            fn(f"ticket {k}-{i}: the printer on floor 3 is jammed again")

    threads = [threading.Thread(target=calls, args=(k,)) for k in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    client.flush()
    elapsed = time.perf_counter() - started
    stored = client.get_task(task).feedback_count - 1
    stats = client.stats()
    client.close()
    if stored != per_thread * 8:
        raise RuntimeError(f"the server stored {stored} feedback entries, expected {n}")
    note = (f"{per_thread * 8:,} decorated calls from 8 threads, first call to flush returned: "
            f"{elapsed:.2f} s wall; the server counted {stored:,} feedback entries "
            f"(stats: {stats.sent:,} sent, {stats.dropped} dropped, {stats.retried} retried).")
    return per_thread * 8 / elapsed, note


# --- hostile clients ---------------------------------------------------------------------------


def _unauth_rss_growth(url: str, pid: int, total_mb: int) -> tuple[float, int]:
    """RSS growth (MB) of the server while 4 unauthenticated clients stream chunked junk."""
    address = _address(url)
    before = _rss_mb(pid)
    peak = [before]
    sent = [0]
    junk = b"x" * (1 << 20)

    def one() -> None:
        while sent[0] < total_mb:
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"POST /api/v1/ingest HTTP/1.1\r\nHost: b\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n-1\r\n")
            with contextlib.suppress(OSError):
                for _ in range(16):
                    sock.sendall(junk)
                    sent[0] += 1
            sock.close()
            peak[0] = max(peak[0], _rss_mb(pid))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return max(peak[0], _rss_mb(pid)) - before, sent[0]


def _p99_with_slow_connections(url: str, slow: int, samples: int) -> tuple[float, int]:
    """p99 ms of GET /health on fresh connections while *slow* connections send half a head."""
    address = _address(url)
    held = []
    try:
        for _ in range(slow):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: b\r\n")
            held.append(sock)
        latencies = []
        for _ in range(samples):
            started = time.perf_counter()
            conn = _Conn(address)
            status = conn.request(b"GET /api/v1/health HTTP/1.1\r\nHost: b\r\n\r\n")
            conn.close()
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 200:
                raise RuntimeError(f"health answered {status} beside the slow connections")
        still_open = sum(1 for s in held if s.fileno() >= 0)
    finally:
        for s in held:
            s.close()
    latencies.sort()
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], still_open


# --- the metrics -------------------------------------------------------------------------------


def run(quick: bool) -> list[Metric]:
    """Measure the local server's figures side by side (see the module docstring)."""
    tmp = tempfile.mkdtemp(prefix="kaizen-bench-server-")
    try:
        return _run(quick, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(quick: bool, tmp: str) -> list[Metric]:
    notes_old: list[str] = []
    old = _old_tree(os.path.join(tmp, "old"), notes_old) if _mkdir(tmp, "old") else None
    new = str(REPO)
    n_batches = 20 if quick else 120
    seconds = 1.0 if quick else 3.0
    rounds = 2 if quick else 3

    # Ingest: HTTP vs raw SQLite of the rows the server stored, alternately (and, for the
    # notes, raw SQLite of the narrower rows the client sent)
    http_rates, raw_rates, http_cpu, raw_cpu, narrow_cpu = [], [], [], [], []
    for r in range(rounds):
        batches = _batches(f"bench-ingest-{r}", n_batches)
        db = os.path.join(tmp, f"ingest-{r}.db")
        with _server(new, db) as (url, pid):
            wall, per_cpu = _http_ingest_pairs_per_s(url, pid, batches)
            http_rates.append(wall)
            http_cpu.append(per_cpu)
        stored = _stored_rows(db, BATCH_PAIRS)  # without the warm-up batch
        if sum(len(b[0]) + len(b[1]) for b in stored[1:]) != 2 * (n_batches - 1) * BATCH_PAIRS:
            raise RuntimeError("the server did not store every record of the ingest batches")
        wall, per_cpu = _raw_stored_pairs_per_s(os.path.join(tmp, f"raw-{r}.db"), stored)
        raw_rates.append(wall)
        raw_cpu.append(per_cpu)
        narrow_cpu.append(_raw_sqlite_pairs_per_s(
            os.path.join(tmp, f"narrow-{r}.db"), batches[1:])[1])
    ingest, raw = statistics.median(http_cpu), statistics.median(raw_cpu)

    # GET prompt: new vs old server, alternately, each on its own database with one task.
    get_new: list[float] = []
    get_old: list[float] = []
    cpu_new: list[float] = []
    cpu_old: list[float] = []
    task = "bench_prompt"
    # the first trace makes version 1: on this server only a default_prompt trace does
    seeds = {name: _post("/api/v1/traces", (
        b'{"task_id": "bench_prompt", "prompt_text": "Summarize: {{ t }}", '
        b'"response_text": "x"' + flag + b'}')) for name, flag in (
            ("new", b', "prompt_is_default": true'), ("old", b""))}
    for r in range(rounds):
        order = [("new", new), ("old", old)] if r % 2 == 0 else [("old", old), ("new", new)]
        for name, path in order:
            if path is None:
                continue
            with _server(path, os.path.join(tmp, f"get-{name}-{r}.db")) as (url, pid):
                conn = _Conn(_address(url))
                assert conn.request(seeds[name]) == 201
                conn.close()
                cpu = _cpu_s(pid)
                rate, count = _req_per_s(url, _get(f"/api/v1/prompts/{task}"), seconds)
                per_cpu = count / (_cpu_s(pid) - cpu)
                (get_new if name == "new" else get_old).append(rate)
                (cpu_new if name == "new" else cpu_old).append(per_cpu)
    get_prompt = statistics.median(cpu_new)
    old_get = statistics.median(cpu_old) if cpu_old else None

    # SDK delivery from 8 threads, hostile clients.
    with _server(new, os.path.join(tmp, "delivery.db")) as (url, _):
        delivery, delivery_note = _delivery(url, 4000 if quick else 40000)
    with _server(new, os.path.join(tmp, "hostile.db")) as (url, pid):
        rss_growth, streamed = _unauth_rss_growth(url, pid, 40 if quick else 400)
        p99, open_slow = _p99_with_slow_connections(url, 200 if quick else 1000,
                                                    100 if quick else 500)

    ratio_get = get_prompt / old_get if old_get else None
    return [
        Metric(
            name="server_ingest_pairs_per_s", unit="pairs/CPU s", better="higher", kaizen=ingest,
            peers={"raw_sqlite": raw},
            goal="at least 0.5x raw SQLite executemany of the same rows (issue 13)",
            goal_met=ingest >= 0.5 * raw,
            verdict=f"{ingest / raw:.2f}x raw SQLite",
            notes=[f"Pairs per CPU second: POST /api/v1/ingest of {BATCH_PAIRS} trace + "
                   f"{BATCH_PAIRS} feedback records per request over one keep-alive connection, "
                   "divided by the server process's CPU time (user + system, all threads); raw "
                   "SQLite: executemany of the very rows the server stored (read back from its "
                   "database: every column but seq, e.g. cost_usd and feedback.trace_id filled) "
                   "into the same schema and indexes (WAL, synchronous=NORMAL, foreign keys "
                   "checked as the store does, its tasks rows made first), one transaction per "
                   "batch of 128 pairs, divided by this process's CPU "
                   "time. CPU, not wall, "
                   "because on a shared machine wall time mostly measures the neighbours. "
                   f"Median of {rounds} alternating rounds of {n_batches - 1} batches. "
                   f"Per CPU second: HTTP {', '.join(f'{x:,.0f}' for x in http_cpu)}; raw "
                   f"{', '.join(f'{x:,.0f}' for x in raw_cpu)}. Wall pairs/s: HTTP "
                   f"{', '.join(f'{x:,.0f}' for x in http_rates)}; raw "
                   f"{', '.join(f'{x:,.0f}' for x in raw_rates)}. Raw SQLite of the narrower "
                   "rows the client sent (11 trace and 8 feedback columns, the task's name where "
                   "the store keeps its 36-character id, feedback.trace_id left NULL, foreign "
                   "keys off), pairs per CPU second: "
                   f"{', '.join(f'{x:,.0f}' for x in narrow_cpu)} (HTTP is "
                   f"{ingest / statistics.median(narrow_cpu):.2f}x of it). The task's "
                   "feedback_threshold is set out of reach, so no optimization job runs during "
                   "the timing."],
        ),
        Metric(
            name="server_get_prompt_req_per_s", unit="req/CPU s", better="higher",
            kaizen=get_prompt,
            peers={f"old_server_{OLD_COMMIT}": old_get},
            goal=f"at least 3x the http.server layer of {OLD_COMMIT} (issue 13)",
            goal_met=None if ratio_get is None else ratio_get >= 3,
            verdict="old server not measured" if ratio_get is None
            else f"{ratio_get:.2f}x the old server",
            notes=[f"Requests per CPU second of the server process (1 / its CPU time per "
                   "request, all threads, user + system): GET /api/v1/prompts/{task} over 4 "
                   f"keep-alive connections from a raw-socket client, {seconds:g} s per round, "
                   f"{rounds} rounds alternating old and new. Per CPU second: new "
                   f"{', '.join(f'{x:,.0f}' for x in cpu_new)}; old "
                   f"{', '.join(f'{x:,.0f}' for x in cpu_old) or 'not measured'}. Wall req/s "
                   "(depends on how many threads each server has competing for the shared "
                   f"cores): new {', '.join(f'{x:,.0f}' for x in get_new)}; old "
                   f"{', '.join(f'{x:,.0f}' for x in get_old) or 'not measured'}.", *notes_old],
        ),
        Metric(
            name="server_sdk_delivery_records_per_s", unit="records/s", better="higher",
            kaizen=delivery,
            goal="at least 15,000 records/s from 8 threads into the local server (issue 13)",
            goal_met=delivery >= 15000, verdict=f"{delivery:,.0f} records/s",
            notes=[delivery_note, "The task's feedback_threshold is set out of reach, so no "
                   "optimization job competes for the CPU during the timing."],
        ),
        Metric(
            name="server_rss_growth_unauth_mb", unit="MB", better="lower", kaizen=rss_growth,
            goal="under 50 MB under unauthenticated load (issue 13)",
            goal_met=rss_growth < 50, verdict=f"+{rss_growth:.1f} MB",
            notes=[f"4 clients without a key sent chunked bodies with chunk size -1; "
                   f"{streamed} MB were accepted by the sockets before the server cut them off; "
                   "server RSS from /proc, peak minus start."],
        ),
        Metric(
            name="server_p99_ms_beside_slow_connections", unit="ms", better="lower", kaizen=p99,
            goal="p99 under 100 ms with 1,000 slow connections open (issue 13)",
            goal_met=p99 < 100, verdict=f"{p99:.1f} ms",
            notes=[f"{1000 if not quick else 200} connections each sent half a request head "
                   f"and stalled ({open_slow} still held at the end); GET /api/v1/health on a "
                   "fresh connection each time, connect included."],
        ),
    ]


def _mkdir(tmp: str, name: str) -> bool:
    os.makedirs(os.path.join(tmp, name), exist_ok=True)
    return True
