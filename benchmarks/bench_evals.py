"""Metric: online evaluation in the local CT server (issue 26).

One server process (real HTTP on loopback, SQLite in a temporary folder) with an LLM-judge
evaluator whose judge is a zero-latency stand-in in this process (an OpenAI-compatible
``/chat/completions`` that answers ``SCORE: 1`` at once), so the figures are the server's own
work: claiming traces, the judge call's client, storing the outcome.

- **Throughput**: traces are stored with the evaluator switched off; it is switched on and
  the clock runs until the server reports every trace judged. Judged traces per second of
  wall clock, and the server's CPU (user + system, every thread, from ``/proc``) per judged
  trace.
- **Latency**: traces arrive at a steady 20 per second (sampling 1.0); for each, the time
  from the trace stored to its judged score stored (both server timestamps); the p95.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from benchmarks._harness import Metric

__all__ = ["run"]

API_KEY = "kaizen-bench-key"
JUDGE = "bench-judge"
REPO = Path(__file__).resolve().parent.parent

_SERVER = """
import sys
from kaizen_server import LocalServer
server = LocalServer(db_path=sys.argv[2], api_key=sys.argv[1], llm_base_url=sys.argv[3],
                     llm_prices={"bench-judge": (0.1, 0.1)}).start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""


class _Judge(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    _ANSWER = json.dumps({
        "id": "bench", "object": "chat.completion", "model": JUDGE,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "SCORE: 1\nREASON: fine"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105},
    }).encode()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self._ANSWER)))
        self.end_headers()
        self.wfile.write(self._ANSWER)


@contextlib.contextmanager
def _judge() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def _server(db: str, judge_url: str) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "server")])}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, API_KEY, db, judge_url],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
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
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _traces(task: str, n: int) -> list[dict[str, Any]]:
    return [{"id": str(uuid.uuid4()), "task_id": task, "response_text": f"ANSWER {i}!",
             "metadata": {"inputs": {"text": f"answer {i}"}}} for i in range(n)]


def _judged(c: httpx.Client, task: str) -> int:
    today = c.get(f"/api/v1/tasks/{task}/evaluators/judge").json()["today"]
    return int(today["judged"])


def _setup(c: httpx.Client, task: str, *, enabled: bool) -> None:
    c.post("/api/v1/tasks", json={"name": task, "feedback_threshold": 1_000_000})
    resp = c.post(f"/api/v1/tasks/{task}/evaluators", json={
        "name": "judge", "kind": "llm_judge", "judge_model": JUDGE, "scale": [0, 1],
        "rubric": "Is the answer right?", "enabled": enabled})
    resp.raise_for_status()


def _wait(c: httpx.Client, task: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _judged(c, task) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {n} traces judged after {timeout} s")
        time.sleep(0.1)


def _throughput(c: httpx.Client, pid: int, n: int, rounds: int) -> tuple[list[float],
                                                                          list[float]]:
    per_s: list[float] = []
    cpu_ms: list[float] = []
    for r in range(rounds):
        task = f"throughput-{r}"
        _setup(c, task, enabled=False)
        for start in range(0, n, 500):
            c.post("/api/v1/ingest", json={"traces": _traces(task, min(500, n - start))})
        cpu = _cpu_s(pid)
        began = time.perf_counter()
        c.patch(f"/api/v1/tasks/{task}/evaluators/judge", json={"enabled": True})
        _wait(c, task, n, timeout=600)
        wall = time.perf_counter() - began
        used = _cpu_s(pid) - cpu
        per_s.append(n / wall)
        cpu_ms.append(used / n * 1000)
        c.patch(f"/api/v1/tasks/{task}/evaluators/judge", json={"enabled": False})
    return per_s, cpu_ms


def _latency(c: httpx.Client, seconds: int, rate: int = 20) -> list[float]:
    task = "latency"
    _setup(c, task, enabled=True)
    began = time.monotonic()
    ticks = seconds * 4
    for tick in range(ticks):  # rate/4 traces every 0.25 s
        c.post("/api/v1/ingest", json={"traces": _traces(task, rate // 4)})
        pause = began + (tick + 1) * 0.25 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    total = ticks * (rate // 4)
    _wait(c, task, total, timeout=300)
    traces = {t["id"]: t["created_at"] for t in
              c.get("/api/v1/traces", params={"task_id": task, "limit": 1000}).json()}
    lags: list[float] = []
    cursor: str | None = None
    while True:
        params = {"task_id": task, "limit": "1000", **({"cursor": cursor} if cursor else {})}
        resp = c.get("/api/v1/feedback", params=params)
        for e in resp.json():
            if e["source"] == "evaluator:judge" and e["metadata"]["trace_id"] in traces:
                lags.append((datetime.fromisoformat(e["created_at"]) - datetime.fromisoformat(
                    traces[e["metadata"]["trace_id"]])).total_seconds())
        nxt = resp.links.get("next", {}).get("url")
        if not nxt:
            break
        cursor = httpx.URL(nxt).params.get("cursor")
    return lags


def run(quick: bool) -> list[Metric]:
    """Judged traces per second and server CPU per judged trace; p95 latency at 20/s."""
    n, rounds, seconds = (300, 1, 5) if quick else (3000, 3, 30)
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-evals-") as tmp, _judge() as url, \
            _server(str(Path(tmp) / "evals.db"), url) as (base, pid), \
            httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=30) as c:
        per_s, cpu_ms = _throughput(c, pid, n, rounds)
        lags = sorted(_latency(c, seconds))
    p95 = statistics.quantiles(lags, n=20)[-1] if len(lags) >= 2 else lags[0]
    rate = statistics.median(per_s)
    cpu = statistics.median(cpu_ms)
    common = [f"{n} traces stored with the evaluator off, then switched on; {rounds} rounds,"
              " median; one server process, 4 judge threads, batches of 64",
              "judge: a zero-latency OpenAI-compatible stand-in in the benchmark process"]
    return [
        Metric(name="evals_judged_traces_per_s", unit="traces/s", better="higher",
               kaizen=rate, notes=common,
               spread={"kaizen": f"{min(per_s):,.0f}-{max(per_s):,.0f}"}),
        Metric(name="evals_server_cpu_ms_per_judged", unit="ms/trace", better="lower",
               kaizen=cpu, notes=[*common, "server CPU (user + system, all threads) from"
                                  " /proc over the judging window"],
               spread={"kaizen": f"{min(cpu_ms):.2f}-{max(cpu_ms):.2f}"}),
        Metric(name="evals_p95_trace_to_score_s", unit="s", better="lower", kaizen=p95,
               goal="p95 from a trace stored to its judged score at most 60 s at a steady"
                    " 20 traces/s, sampling 1.0 (issue 26)",
               goal_met=p95 <= 60.0, verdict=f"p95 {p95:.2f} s over {len(lags)} traces",
               notes=[f"{seconds} s of 20 traces/s (5 every 0.25 s); server timestamps of"
                      " the trace and of its judged feedback entry"]),
    ]


if __name__ == "__main__":  # pragma: no cover - a quick look by hand
    for metric in run(quick="--quick" in sys.argv):
        print(metric.name, metric.kaizen, metric.spread, metric.verdict)
