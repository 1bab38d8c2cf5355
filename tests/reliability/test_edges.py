"""Loss at the edges: a kill -9 while the server does not answer, a spool directory removed
while running, scores that arrive before their traces, and the old-server fallback's counts.

Counts are exact: read from the spool files, the server's database and ``stats()``.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from benchmarks.kill9_loss import hung_server, kill_child, spooled_inputs, unavailable_server
from kaizen_sdk import CTClient, _sender
from kaizen_sdk._spool import Spool
from kaizen_sdk.models import IngestRequest, ScoreItem, TraceRequest, encode

from ._proxy import FaultProxy
from .conftest import API_KEY, CTServer, dead_url, forwarded_trace_ids, wait_for

pytestmark = [pytest.mark.e2e]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["never-answers", "answers-503"])
def test_kill_9_while_the_server_fails_loses_only_the_last_seconds(
    task_name: str, tmp_path: Path, server: str
) -> None:
    # A server that never answers: the first send waits on it (up to the export budget,
    # 30 s); one that answers 503: each batch waits through its retries. Before, the records
    # made meanwhile waited in memory (up to 10,000) and a kill -9 lost them all; now what
    # waits behind a send goes to disk within a second, the send's own batch after
    # `_STUCK_SECONDS`, and once a send failed each new batch goes straight to disk.
    folder = tmp_path / "spool"
    with (hung_server() if server == "never-answers" else unavailable_server()) as url:
        out = kill_child(
            {"KAIZEN_API_KEY": API_KEY, "KAIZEN_BASE_URL": url, "KAIZEN_SPOOL_DIR": str(folder)},
            burst=0, rate=500, seconds=8, workdir=tmp_path, task=task_name,
        )
    on_disk = spooled_inputs(folder)
    print(f"kill -9, server {server}:", out.summary(on_disk))
    # the first batch waits for its wake-up (1 s) and `_STUCK_SECONDS` (1 s), checked every
    # 0.5 s; later records only the checks: 3 s leaves room for a loaded machine
    old = {i for i, at in out.made.items() if out.killed_at - at > 3.0}
    assert len(old) >= 2000
    assert sorted(old - on_disk) == []
    assert on_disk <= set(out.made)


def _echo(client: CTClient, task: str) -> Any:
    @client.task(task, default_prompt="Echo {{ x }}")
    def echo(x: int) -> int:
        return x

    return echo


@pytest.mark.timeout(120)
def test_a_spool_directory_removed_while_running_is_made_again(
    task_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "spool"
    client = CTClient(api_key=API_KEY, base_url=dead_url(), spool_dir=str(folder),
                      max_retries=0, shutdown_timeout=10)
    echo = _echo(client, task_name)
    assert [echo(i) for i in range(3000)] == list(range(3000))
    assert client.flush() is True
    assert spooled_inputs(folder) == set(range(3000))
    shutil.rmtree(folder)  # a cleanup job, a tmp reaper
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        assert [echo(i) for i in range(3000, 6000)] == list(range(3000, 6000))
        assert client.flush() is True
        client.close()
    stats = client.stats()
    assert (stats.queued, stats.spooled, stats.dropped, stats.sent) == (6000, 6000, 0, 0)
    assert spooled_inputs(folder) == set(range(3000, 6000))  # every record made after it
    made_again = [r for r in caplog.records if "was removed; created it again" in r.getMessage()]
    assert len(made_again) == 1


@pytest.mark.timeout(120)
def test_scores_that_arrive_before_their_traces_are_applied_when_the_traces_do(
    ct_server: CTServer, task_name: str, tmp_path: Path
) -> None:
    # A process spooled 300 calls during an outage; their scores (made after it) reach the
    # server first. The server holds them and applies each when its trace is stored.
    folder = tmp_path / "spool"
    spool = Spool(folder)
    traces = [TraceRequest(task_id=task_name, id=uuid.uuid4(), response_text=f"r{i}")
              for i in range(301)]
    spooled, single = traces[:300], traces[300]
    for start in range(0, 300, 100):
        assert spool.append(encode(IngestRequest(traces=spooled[start:start + 100])),
                            records=100)
    scores = [ScoreItem(id=uuid.uuid4(), trace_id=t.id, score=0.25 + (i % 3) / 4)
              for i, t in enumerate(traces) if t.id is not None]
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    with httpx.Client(base_url=ct_server.url, headers=headers) as http:
        answer = http.post("/api/v1/ingest", content=encode(IngestRequest(scores=scores)))
        assert answer.status_code == 207
        assert msgspec.json.decode(answer.content) == {"accepted": 0, "errors": [],
                                                        "scores": 301}
        again = http.post("/api/v1/ingest", content=encode(IngestRequest(scores=scores[:5])))
        assert msgspec.json.decode(again.content)["scores"] == 5  # a re-sent score: once
        assert ct_server.trace_ids(task_name) == []
        # the next process with that spool replays the traces
        with CTClient(api_key=API_KEY, base_url=ct_server.url, spool_dir=str(folder)):
            assert wait_for(lambda: len(ct_server.trace_ids(task_name)) == 300, timeout=60)
        # and one trace comes by the single-record endpoint
        assert http.post("/api/v1/traces", content=encode(single)).status_code == 201
    want = {str(s.trace_id): s.score for s in scores}
    got = dict(ct_server._query(
        "SELECT t.id, t.score FROM traces t JOIN tasks k ON t.task_id = k.id WHERE k.name = ?",
        task_name,
    ))
    assert got == want
    assert ct_server.feedback_count(task_name) == 301  # each score made its feedback entry
    assert ct_server._query("SELECT COUNT(*) FROM held_scores") == [(0,)]


@pytest.mark.timeout(120)
def test_the_old_server_fallback_counts_what_was_stored_as_sent(
    proxy: FaultProxy, ct_server: CTServer, task_name: str
) -> None:
    # A server without /ingest gets one request per trace and feedback entry; this one
    # stops answering (503) after storing 100 traces of the batch.
    def after_100(method: str, path: str) -> bool:
        if path != "/api/v1/traces":
            return False
        stored = sum(1 for s in proxy.seen if s.path == path and not s.injected)
        return stored >= 100

    proxy.fail_next(1, 404, match=lambda method, path: path == "/api/v1/ingest")
    proxy.fail_next(50, 503, match=after_100)
    try:
        client = CTClient(api_key=API_KEY, base_url=proxy.url, max_retries=0,
                          shutdown_timeout=2)
        echo = _echo(client, task_name)
        assert [echo(i) for i in range(300)] == list(range(300))
        assert client.flush() is False
        stats = client.stats()
        assert (stats.queued, stats.sent, stats.dropped) == (300, 100, 0)  # 200 kept
        client.close()
    finally:
        _sender.forget_no_ingest(proxy.url)
    stats = client.stats()
    assert len(ct_server.trace_ids(task_name)) == stats.sent == 100
    assert ct_server.feedback_count(task_name) == 100
    assert (stats.queued, stats.sent, stats.rejected, stats.dropped) == (300, 100, 0, 200)


@pytest.mark.timeout(120)
def test_a_slow_fallback_batch_that_makes_progress_is_not_spooled_and_sent_twice(
    proxy: FaultProxy, ct_server: CTServer, task_name: str, tmp_path: Path
) -> None:
    # One request per trace and feedback entry, 5 ms each: the batch takes seconds, but the
    # server answers every request, so the spool keeper leaves it alone.
    proxy.fail_next(1, 404, match=lambda method, path: path == "/api/v1/ingest")
    proxy.set_delay(0.005)
    folder = tmp_path / "spool"
    try:
        with CTClient(api_key=API_KEY, base_url=proxy.url, spool_dir=str(folder)) as client:
            echo = _echo(client, task_name)
            assert [echo(i) for i in range(300)] == list(range(300))
            assert client.flush() is True
            stats = client.stats()
    finally:
        _sender.forget_no_ingest(proxy.url)
    assert (stats.queued, stats.sent, stats.spooled, stats.dropped) == (300, 300, 0, 0)
    assert list(folder.glob("*.batch")) == []
    sent = forwarded_trace_ids(proxy)
    assert len(sent) == 300 and set(sent.values()) == {1}  # each trace posted once
    assert len(ct_server.trace_ids(task_name)) == 300
