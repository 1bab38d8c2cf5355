"""Delivery through outages: down then up, 503 and 429 storms, down for good with a spool."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kaizen_sdk import CTClient
from kaizen_sdk.models import IngestRequest

from ._proxy import FaultProxy
from .conftest import API_KEY, CTServer, _env, dead_url, forwarded_trace_ids, run_python

pytestmark = [pytest.mark.e2e]


def _decorated(client: CTClient, task: str) -> Any:
    @client.task(task, default_prompt="Echo {{ x }}")
    def echo(x: int, prompt: Any = None) -> int:
        return x

    return echo


def _flush_until(client: CTClient, done: Any, *, rounds: int = 20) -> bool:
    """Flush (each flush also re-sends kept batches) until *done()* holds, a bounded number
    of times; between rounds the server's Retry-After or our backoff is honoured by flush."""
    for _ in range(rounds):
        client.flush(30)
        if done():
            return True
    return bool(done())


@pytest.mark.timeout(90)
def test_server_down_at_start_then_up_delivers_every_call_once(
    ct_server: CTServer, proxy: FaultProxy, task_name: str
) -> None:
    proxy.refuse()  # nothing listens: connection refused
    client = CTClient(api_key=API_KEY, base_url=proxy.url)
    echo = _decorated(client, task_name)
    ids = []
    for i in range(300):
        result, run = echo.call(i)
        assert result == i
        ids.append(run.trace_id)
    client.flush(30)  # every batch fails now: kept in memory, none dropped
    down = client.stats()
    assert (down.queued, down.sent, down.dropped) == (300, 0, 0)

    proxy.accept()
    assert _flush_until(client, lambda: client.stats().sent == 300)
    client.close()
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped, stats.spooled) == (300, 300, 0, 0)
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert ct_server.feedback_count(task_name) == 300
    wire = forwarded_trace_ids(proxy)
    assert set(wire) == set(ids)
    assert set(wire.values()) == {1}  # each record reached the server exactly once


@pytest.mark.timeout(120)
def test_503_then_429_with_retry_after_delivers_everything_once(
    ct_server: CTServer, proxy: FaultProxy, task_name: str
) -> None:
    proxy.fail_next(4, 503)
    proxy.fail_next(3, 429, retry_after=1)
    client = CTClient(api_key=API_KEY, base_url=proxy.url, max_retries=2)
    echo = _decorated(client, task_name)
    ids = [echo.call(i)[1].trace_id for i in range(400)]
    assert _flush_until(client, lambda: client.stats().sent == 400)
    client.close()

    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (400, 400, 0)
    assert stats.retried > 0
    seen = proxy.requests()
    injected = [r.status for r in seen if r.injected]
    assert injected == [503] * 4 + [429] * 3
    assert proxy.faults_left() == 0
    for before, after in itertools.pairwise(seen):  # Retry-After is honoured, never undercut
        if before.status == 429:
            assert after.at - before.at >= 1.0
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert ct_server.feedback_count(task_name) == 400
    wire = forwarded_trace_ids(proxy)
    assert set(wire) == set(ids) and set(wire.values()) == {1}


_WRITER = """
    import atexit, json
    import msgspec
    from kaizen_sdk import CTClient

    # registered before the SDK's own exit hook (a client with a spool directory starts its
    # delivery at once), so it runs after it (atexit is LIFO)
    atexit.register(lambda: print(json.dumps(msgspec.to_builtins(client.stats()))))
    client = CTClient()

    @client.task({task!r}, default_prompt="p")
    def echo(x, prompt=None):
        return x

    ids = [echo.call(i)[1].trace_id for i in range({n})]
    with open({ids_file!r}, "w") as fh:
        json.dump(ids, fh)
    # no flush, no close: a normal exit must keep everything (the server is down for good)
"""

_READER = """
    import json, os, time
    import msgspec
    from kaizen_sdk import CTClient
    from kaizen_sdk import tracing

    client = CTClient()
    tracing.pipeline_for(client)  # the SDK starts: the spool left behind is replayed
    spool = os.environ["KAIZEN_SPOOL_DIR"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until no batch file is left (ours or a peer's)
        if not [f for f in os.listdir(spool) if f.endswith(".batch")]:
            break
        time.sleep(0.05)
    client.close()
    print(json.dumps(msgspec.to_builtins(client.stats())))
"""


@pytest.mark.timeout(120)
def test_server_down_for_good_the_next_process_replays_the_spool(
    ct_server: CTServer, task_name: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    ids_file = tmp_path / "ids.json"
    n = 1000
    env = {"KAIZEN_SPOOL_DIR": str(spool), "KAIZEN_SHUTDOWN_TIMEOUT": "10"}

    first = run_python(
        _WRITER.format(task=task_name, n=n, ids_file=str(ids_file)),
        env={**env, "KAIZEN_BASE_URL": dead_url()},
    )
    written = json.loads(first.stdout.strip().splitlines()[-1])
    assert (written["queued"], written["spooled"], written["sent"], written["dropped"]) == (
        n, n, 0, 0,
    )
    assert sorted(p.name for p in spool.iterdir() if p.suffix == ".batch")
    assert ct_server.trace_ids(task_name) == []

    # A damaged file must not stop the replay: it is set aside.
    (spool / "00000000000000000001-1-00000000-deadbeef.batch").write_bytes(b'{"traces": [')

    # Two processes start at once with the same spool directory: together they replay
    # every batch exactly once.
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_READER)],
            env=_env({**env, "KAIZEN_BASE_URL": ct_server.url}),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    outs = [r.communicate(timeout=90) for r in readers]
    assert [r.returncode for r in readers] == [0, 0], outs
    stats = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sum(s["replayed"] for s in stats) == n
    assert [s["dropped"] for s in stats] == [0, 0]
    ids = json.loads(ids_file.read_text())
    assert len(ids) == n
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    assert ct_server.feedback_count(task_name) == n
    assert [p for p in spool.iterdir() if p.suffix == ".batch"] == []
    assert [p.name for p in (spool / "corrupt").iterdir()] == [
        "00000000000000000001-1-00000000-deadbeef.batch"
    ]


@pytest.mark.timeout(120)
def test_exit_is_bounded_when_the_server_never_answers_and_the_rest_is_spooled(
    proxy: FaultProxy, task_name: str, tmp_path: Path
) -> None:
    proxy.freeze()  # delivery requests are accepted and never answered
    spool = tmp_path / "spool"
    ids_file = tmp_path / "ids.json"
    n = 3000
    started = time.monotonic()
    proc = run_python(
        _WRITER.format(task=task_name, n=n, ids_file=str(ids_file)),
        env={
            "KAIZEN_BASE_URL": proxy.url,
            "KAIZEN_SPOOL_DIR": str(spool),
            "KAIZEN_SHUTDOWN_TIMEOUT": "2",
        },
        timeout=30,  # an exit that waits on the hung requests would take far longer
    )
    elapsed = time.monotonic() - started
    print(f"exit with a server that never answers, shutdown_timeout=2: {elapsed:.1f} s")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (stats["queued"], stats["sent"], stats["dropped"]) == (n, 0, 0)
    assert stats["spooled"] == n
    kept: list[str] = []
    for path in sorted(spool.glob("*.batch")):
        batch = msgspec.json.decode(path.read_bytes(), type=IngestRequest)
        kept += [str(t.id) for t in batch.traces]
    assert sorted(kept) == sorted(json.loads(ids_file.read_text()))


def _prompt_fetch(method: str, path: str) -> bool:
    return method == "GET" and path.startswith("/api/v1/prompts/")


@pytest.mark.timeout(120)
def test_garbage_answers_change_nothing_for_the_caller(
    ct_server: CTServer, proxy: FaultProxy, task_name: str
) -> None:
    # The prompt endpoint answers nonsense; ingest answers HTML error pages, then works.
    proxy.fail_next(
        20, 200, match=_prompt_fetch, body=b"\x00\xffnot json{", content_type="text/html"
    )
    proxy.fail_next(2, 502, body=b"<html><h1>Bad Gateway</h1></html>", content_type="text/html")
    proxy.fail_next(1, 500, body=b"", content_type="text/plain")
    client = CTClient(api_key=API_KEY, base_url=proxy.url)

    @client.task(task_name, default_prompt="Default {{ x }}")
    def echo(x: int, prompt: Any = None) -> str:
        return prompt.render(x=x)

    runs = [echo.call(i) for i in range(200)]
    assert [result for result, _ in runs] == [f"Default {i}" for i in range(200)]
    assert _flush_until(client, lambda: client.stats().sent == 200)
    client.close()
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (200, 200, 0)
    ids = [run.trace_id for _, run in runs]
    assert sorted(ct_server.trace_ids(task_name)) == sorted(ids)
    wire = forwarded_trace_ids(proxy)
    assert set(wire) == set(ids) and set(wire.values()) == {1}
    assert [r.status for r in proxy.requests() if r.injected] == [502, 502, 500]
    garbled = [r for r in proxy.requests(delivery_only=False) if r.injected and r.status == 200]
    assert len(garbled) >= 1  # the prompt fetch really got nonsense, and the default served
