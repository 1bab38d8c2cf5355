"""Loss at the edges: a kill -9 while the server does not answer, a spool directory removed
while running, scores that arrive before their traces, and the old-server fallback's counts.

Counts are exact: read from the spool files, the server's database and ``stats()``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks.kill9_loss import hung_server, kill_child, spooled_inputs
from kaizen_sdk import CTClient

from .conftest import API_KEY, dead_url

pytestmark = [pytest.mark.e2e]


@pytest.mark.timeout(120)
def test_kill_9_while_the_server_does_not_answer_loses_only_the_last_seconds(
    task_name: str, tmp_path: Path
) -> None:
    # A server that accepts connections and never answers: the first send waits on it (up
    # to the export budget, 30 s). Before, every record made meanwhile waited in memory (up
    # to 10,000) and a kill -9 lost them all; now what waits behind that send goes to disk
    # within a second, and the send's own batch after `_STUCK_SECONDS`.
    folder = tmp_path / "spool"
    with hung_server() as url:
        out = kill_child(
            {"KAIZEN_API_KEY": API_KEY, "KAIZEN_BASE_URL": url, "KAIZEN_SPOOL_DIR": str(folder)},
            burst=0, rate=500, seconds=8, workdir=tmp_path, task=task_name,
        )
    on_disk = spooled_inputs(folder)
    print("kill -9, server not answering:", out.summary(on_disk))
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
