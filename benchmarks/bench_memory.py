"""Metric 7: resident memory after 1,000,000 decorated calls with the CT server down.

Each contender runs in a fresh interpreter: ``kaizen`` calls a ``@ct.task``-decorated no-op
whose client points at a closed loopback port (nothing listens, so every delivery fails and
the bounded queue drops what it cannot hold); ``bare`` imports the same modules, builds the
same client and calls the undecorated no-op. The figure is VmRSS at the end, in MB; the
process also reports RSS after the warm-up and after a tenth of the calls, so growth shows.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

from benchmarks._harness import Metric

__all__ = ["run"]

_PROBE = r"""
import json, os, sys, time

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")

import kaizen_sdk as ct
from kaizen_sdk import CTClient

calls, decorated, url = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
client = CTClient(api_key="kaizen-bench-key", base_url=url)

def noop(x=1):
    return x

fn = client.task("bench_memory", default_prompt="Echo {{ x }}")(noop) if decorated else noop
for _ in range(1000):
    fn()
warm = rss_mb()
marks = {calls // 10: "10%", calls // 4: "25%", calls // 2: "50%", 3 * calls // 4: "75%"}
samples = {}
started = time.perf_counter()
for i in range(calls):
    fn()
    if i in marks:
        samples[marks[i]] = rss_mb()
elapsed = time.perf_counter() - started
end = rss_mb()
samples["100%"] = end
stats = client.stats()
print(json.dumps({"warm": warm, "tenth": samples["10%"], "samples": samples, "end": end,
                  "seconds": elapsed,
                  "dropped": stats.dropped, "queued": stats.queued, "sent": stats.sent}),
      flush=True)
os._exit(0)  # exit without the shutdown flush: with the server down it only waits
"""


def _closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _probe(calls: int, decorated: bool, url: str, timeout: float) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(calls), "1" if decorated else "0", url],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
        raise RuntimeError(tail)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool) -> list[Metric]:
    """RSS after 1,000,000 calls (100,000 in a quick run), server down: kaizen vs bare."""
    calls = 100_000 if quick else 1_000_000
    url = _closed_port_url()
    ours = _probe(calls, True, url, timeout=50 if quick else 85)
    bare = _probe(calls, False, url, timeout=30)
    growth = ours["end"] - ours["tenth"]
    trend = ", ".join(f"{k} {v:.1f} MB" for k, v in ours["samples"].items())
    return [
        Metric(
            name="rss_1m_calls_down_mb",
            unit="MB",
            better="lower",
            kaizen=ours["end"],
            peers={"bare": bare["end"]},
            references=["bare"],
            goal="bounded with the server down (issue 4)",
            goal_met=growth < 0.1 * ours["end"] + 5.0,
            verdict=f"{growth:+.1f} MB over the last 90 % of the calls",
            notes=[
                f"{calls:,} calls with the server down ({ours['seconds']:.1f} s). RSS after "
                f"warm-up {ours['warm']:.1f} MB; after a share of the calls: {trend}. "
                f"Delivery stats: {ours['dropped']:,} dropped, {ours['queued']:,} queued, "
                f"{ours['sent']} sent.",
                "`bare` is the same process (same imports, same client) calling the "
                "undecorated no-op; \"bounded\" means the last 90 % of calls grew RSS by less "
                "than 5 MB + 10 %.",
            ],
        )
    ]
