"""Trust: counters and return values tell the truth, the spool takes what memory cannot, the
spool is replayed by any client that starts with it, odd or undeletable spool files never
cause re-sends or hangs, and every delivery request has a total deadline.

Counts are exact: read from the server's database, the proxy's log and ``stats()``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kaizen_sdk import CTClient, _spool, delivery
from kaizen_sdk._spool import Spool
from kaizen_sdk.cli import main
from kaizen_sdk.models import IngestRequest, TraceRequest, encode

from ._proxy import FaultProxy
from .conftest import API_KEY, CTServer, dead_url, forwarded_trace_ids, wait_for

pytestmark = [pytest.mark.e2e]


def _echo(client: CTClient, task: str) -> Any:
    @client.task(task, default_prompt="Echo {{ x }}")
    def echo(x: int) -> int:
        return x

    return echo


def _spool_batches(folder: Path, task: str, batches: int, per_batch: int) -> list[str]:
    """Fill *folder* as an earlier process would have; return the trace ids."""
    spool = Spool(folder)
    ids: list[str] = []
    for _ in range(batches):
        traces = [TraceRequest(task_id=task, id=uuid.uuid4()) for _ in range(per_batch)]
        ids += [str(t.id) for t in traces]
        assert spool.append(encode(IngestRequest(traces=traces)), records=per_batch)
    return ids


def _spooled_ids(folder: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(folder.glob("*.batch")):
        batch = msgspec.json.decode(path.read_bytes(), type=IngestRequest)
        ids += [str(t.id) for t in batch.traces]
    return ids


# --- counters and return values ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_flush_is_false_when_nothing_was_sent(task_name: str) -> None:
    with CTClient(api_key=API_KEY, base_url=dead_url(), max_retries=0) as client:
        echo = _echo(client, task_name)
        assert [echo(i) for i in range(5)] == list(range(5))
        assert client.flush(timeout=3) is False  # 0 of 5 stored: never True
        assert client.stats().sent == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        pytest.param(200, b"", "application/json", id="empty-200"),
        pytest.param(200, b"<html><body>OK</body></html>", "text/html", id="html-200"),
        pytest.param(207, b'{"accepted": 0, "errors": [{"kind": "trace"}, {"kind": "trace"}, '
                          b'{"kind": "trace"}, {"kind": "trace"}]}', "application/json",
                     id="207-errors-without-ids"),
    ],
)
def test_answers_that_acknowledge_nothing_count_as_rejected(
    proxy: FaultProxy, task_name: str, status: int, body: bytes, content_type: str
) -> None:
    proxy.fail_next(1, status, body=body, content_type=content_type)
    with CTClient(api_key=API_KEY, base_url=proxy.url) as client:
        echo = _echo(client, task_name)
        assert [echo(i) for i in range(4)] == [0, 1, 2, 3]
        assert client.flush() is False
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (4, 0, 4, 0)
        assert echo(4) == 4  # the next batch goes through the proxy to the server
        assert client.flush() is True
        assert client.stats().sent == 1


@pytest.mark.timeout(60)
def test_rejected_feedback_is_counted(proxy: FaultProxy, task_name: str) -> None:
    body = (b'{"accepted": 2, "errors": [{"kind": "feedback", "id": "a", "detail": "no"}, '
            b'{"kind": "feedback", "id": "b", "detail": "no"}]}')
    proxy.fail_next(1, 207, body=body)
    with CTClient(api_key=API_KEY, base_url=proxy.url) as client:
        echo = _echo(client, task_name)
        assert [echo(i) for i in range(2)] == [0, 1]
        assert client.flush() is False
        stats = client.stats()
        assert (stats.sent, stats.rejected, stats.rejected_feedback) == (2, 0, 2)


@pytest.mark.timeout(60)
def test_the_exit_line_says_what_was_delivered_spooled_and_dropped(
    task_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = CTClient(api_key=API_KEY, base_url=dead_url(), max_retries=0, shutdown_timeout=1)
    echo = _echo(client, task_name)
    assert [echo(i) for i in range(7)] == list(range(7))
    with caplog.at_level(logging.INFO, logger="kaizen_sdk"):
        client.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1] == (
        "CT delivery closed: of 7 records, 0 were delivered, 0 spooled to disk (sent by the "
        "next process with the same spool directory), 7 dropped and 0 rejected by the server."
    )
    assert not any("kept in memory and sent again later" in line for line in lines)


# --- the spool -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_a_30000_call_burst_with_the_server_down_is_spooled_not_dropped(
    task_name: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    n = 30_000
    client = CTClient(api_key=API_KEY, base_url=dead_url(), spool_dir=str(folder),
                      max_retries=0, shutdown_timeout=10)
    echo = _echo(client, task_name)
    started = time.perf_counter()
    assert [echo(i) for i in range(n)] == list(range(n))
    elapsed = time.perf_counter() - started
    client.close()
    stats = client.stats()
    print(f"{n} calls in {elapsed:.2f} s with the server down: dropped {stats.dropped}, "
          f"spooled {stats.spooled}")
    assert (stats.queued, stats.sent, stats.dropped, stats.spooled) == (n, 0, 0, n)
    spooled = _spooled_ids(folder)
    assert len(spooled) == n and len(set(spooled)) == n


@pytest.mark.timeout(60)
def test_a_client_with_a_spool_replays_it_at_start_without_any_traced_call(
    ct_server: CTServer, task_name: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    ids = _spool_batches(folder, task_name, batches=5, per_batch=10)
    with CTClient(api_key=API_KEY, base_url=ct_server.url, spool_dir=str(folder)) as client:
        assert wait_for(lambda: len(ct_server.trace_ids(task_name)) == 50, timeout=30)
        assert wait_for(lambda: client.stats().replayed == 50, timeout=30)
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert list(folder.glob("*.batch")) == []


@pytest.mark.timeout(90)
def test_an_undeletable_spool_is_sent_once_not_after_every_send(
    proxy: FaultProxy, task_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "spool"
    spooled = _spool_batches(folder, task_name, batches=3, per_batch=10)
    real_unlink = os.unlink

    def read_only(path: Any, *args: Any, **kwargs: Any) -> None:  # a read-only mount
        if str(path).startswith(str(folder)):
            raise PermissionError(30, "Read-only file system", str(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(_spool.os, "unlink", read_only)
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"), CTClient(
        api_key=API_KEY, base_url=proxy.url, spool_dir=str(folder)
    ) as client:
        assert wait_for(lambda: client.stats().replayed == 30, timeout=30)
        echo = _echo(client, task_name)
        for round_ in range(8):  # every successful send used to re-send the whole spool
            assert echo(round_) == round_
            assert client.flush() is True
        stats = client.stats()
    wire = forwarded_trace_ids(proxy)
    resent = sum(wire[i] for i in spooled)
    print(f"undeletable spool of 30 records after 8 sends: {resent} sent "
          f"({resent / 30:.1f}x), replayed counter {stats.replayed}")
    assert resent == 30 and set(wire[i] for i in spooled) == {1}
    assert (stats.replayed, stats.sent) == (30, 8)
    warnings = [r for r in caplog.records if "Could not delete" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_or_symlink_in_the_spool_never_blocks_the_replay(
    ct_server: CTServer, task_name: str, tmp_path: Path
) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    os.mkfifo(folder / "00000000000000000001-fifo.batch")
    (folder / "00000000000000000002-link.batch").symlink_to("/dev/zero")
    ids = _spool_batches(folder, task_name, batches=2, per_batch=5)
    with CTClient(api_key=API_KEY, base_url=ct_server.url, spool_dir=str(folder)):
        assert wait_for(lambda: len(ct_server.trace_ids(task_name)) == 10, timeout=30)
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)


@pytest.mark.timeout(60)
def test_kaizen_spool_status_and_replay(
    ct_server: CTServer, task_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "spool"
    ids = _spool_batches(folder, task_name, batches=2, per_batch=3)
    assert main(["spool", "status", "--dir", str(folder), "--json"]) == 0
    status = msgspec.json.decode(capsys.readouterr().out)
    assert (status["batches"], status["traces"], status["scores"]) == (2, 6, 0)
    monkeypatch.setenv("KAIZEN_API_KEY", API_KEY)
    assert main(["spool", "replay", "--dir", str(folder), "--base-url", ct_server.url]) == 0
    assert capsys.readouterr().out.strip() == f"replayed 6 records from {folder}; 0 batches left"
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert main(["spool", "status", "--dir", str(folder), "--json"]) == 0
    assert msgspec.json.decode(capsys.readouterr().out)["batches"] == 0
    assert main(["spool", "status", "--dir", str(tmp_path / "missing")]) == 4
    monkeypatch.delenv("KAIZEN_SPOOL_DIR", raising=False)
    assert main(["spool", "status"]) == 2


# --- a total deadline per request ----------------------------------------------------------


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """A loopback HTTP server that answers every request one byte every 50 ms (~10 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    answer = (b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/json\r\n"
              b"Content-Length: 30\r\n\r\n" + b'{"accepted": 1, "errors": []} ')

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)
                for byte in answer:
                    if stop.wait(0.05):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.timeout(60)
def test_a_trickling_server_cannot_stretch_an_export_past_its_deadline(
    trickling_server: str, task_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "_EXPORT_BUDGET", 1.0)  # the total budget of one batch
    with CTClient(api_key=API_KEY, base_url=trickling_server, max_retries=0,
                  shutdown_timeout=1) as client:
        echo = _echo(client, task_name)
        assert echo(1) == 1
        started = time.monotonic()
        ok = client.flush()
        elapsed = time.monotonic() - started
    print(f"flush against a 1-byte-per-50-ms server with a 1 s budget: {elapsed:.2f} s")
    assert ok is False
    assert elapsed < 4.0  # per-read timeouts alone: ~5.5 s (the answer is 110 bytes)


# --- SIGTERM -------------------------------------------------------------------------------

_SIGTERM_CHILD = """
import sys, time
import kaizen_sdk as ct

client = ct.CTClient()

@client.task({task!r}, default_prompt="Echo {{{{ x }}}}")
def echo(x: int) -> int:
    return x

for i in range({n}):
    echo(i)
print("ready", client.stats().queued, flush=True)
time.sleep(60)  # what docker stop / kubernetes / systemd interrupt
print("not killed", flush=True)
"""


def _run_and_sigterm(task: str, n: int, env: dict[str, str]) -> tuple[int, float]:
    import signal
    import subprocess
    import sys

    from .conftest import _env

    with subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_CHILD.format(task=task, n=n)],
        env=_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert line.split() == ["ready", str(n)], proc.stderr.read()
            started = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
            return proc.returncode, time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(90)
def test_sigterm_with_the_default_disposition_delivers_what_is_queued(
    ct_server: CTServer, task_name: str
) -> None:
    import signal

    code, elapsed = _run_and_sigterm(
        task_name, 200, {"KAIZEN_BASE_URL": ct_server.url, "KAIZEN_SHUTDOWN_TIMEOUT": "10"}
    )
    stored = len(ct_server.trace_ids(task_name))
    print(f"SIGTERM after 200 calls: {stored} of 200 stored, exit in {elapsed:.2f} s")
    assert code == -signal.SIGTERM  # it still ends with the same signal
    assert stored == 200


@pytest.mark.timeout(90)
def test_sigterm_with_the_server_down_spools_what_is_queued(
    task_name: str, tmp_path: Path
) -> None:
    import signal

    folder = tmp_path / "spool"
    code, elapsed = _run_and_sigterm(task_name, 200, {
        "KAIZEN_BASE_URL": dead_url(), "KAIZEN_SPOOL_DIR": str(folder),
        "KAIZEN_SHUTDOWN_TIMEOUT": "3", "KAIZEN_MAX_RETRIES": "0",
    })
    spooled = _spooled_ids(folder)
    print(f"SIGTERM after 200 calls, server down: {len(spooled)} of 200 spooled, "
          f"exit in {elapsed:.2f} s")
    assert code == -signal.SIGTERM
    assert len(spooled) == 200 and len(set(spooled)) == 200
    assert elapsed < 3 + 5  # bounded by the shutdown timeout


@pytest.mark.timeout(90)
def test_the_sigterm_opt_out_leaves_the_default_alone(
    ct_server: CTServer, task_name: str
) -> None:
    import signal

    code, _ = _run_and_sigterm(
        task_name, 200, {"KAIZEN_BASE_URL": ct_server.url, "KAIZEN_HANDLE_SIGTERM": "false"}
    )
    stored = len(ct_server.trace_ids(task_name))
    print(f"SIGTERM with KAIZEN_HANDLE_SIGTERM=false: {stored} of 200 stored")
    assert code == -signal.SIGTERM


def test_an_application_sigterm_handler_is_never_replaced(ct_server: CTServer) -> None:
    import signal

    from kaizen_sdk import tracing

    def mine(signum: int, frame: Any) -> None:
        raise AssertionError("not called in this test")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with CTClient(api_key=API_KEY, base_url=ct_server.url) as client:
            tracing.pipeline_for(client)
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
