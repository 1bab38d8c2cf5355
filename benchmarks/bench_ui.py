"""Metric 7: the web UI's pages on a big database: time per page at 10k and 1M traces.

A local server (in this process, real HTTP on loopback, SQLite in a temporary folder) is
filled through ``POST /api/v1/ingest`` (batches of 1,000 traces, spread over 20 tasks, one
feedback entry per 25 traces, 500 traces scored), with a finished job and a running rollout on
the first task. Then a signed-in client asks each page in turn, round after round; the figure
per page is the p50 and p95 of the round trip (loopback; the client's own share is well under
a millisecond). The row is the slowest page's p95 at the largest size; the notes give every
page at every size. ``KAIZEN_BENCH_UI_SIZES=10000,100000`` sets the sizes of a shorter run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from typing import Any

import httpx

from benchmarks._harness import Metric

__all__ = ["PAGES", "run"]

TASKS = 20
PAGES = ("tasks", "task", "traces", "traces_of_task", "trace", "versions", "diff", "jobs", "job",
         "rollout", "review")


def _fill(api: httpx.Client, n: int) -> dict[str, Any]:
    names = [f"bench-{i:02d}" for i in range(TASKS)]
    for name in names:
        resp = api.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 10**9,
                                               "prompt_text": f"Answer {{q}} for {name}."})
        assert resp.status_code == 201, resp.text
    first = names[0]
    v1 = api.get(f"/api/v1/prompts/{first}").json()["id"]
    v2 = api.post(f"/api/v1/prompts/{first}/versions",
                  json={"prompt_text": "Answer {q} in one sentence."}).json()["id"]
    done, batch = 0, 1000
    trace_id = ""
    while done < n:
        traces, feedback, scores = [], [], []
        for i in range(done, min(n, done + batch)):
            tid = str(uuid.uuid4())
            task = names[i % TASKS]
            traces.append({"id": tid, "task_id": task, "prompt_text": f"Answer q{i}.",
                           "response_text": f"answer {i} " * 8, "model": "bench", "tokens": 80,
                           "latency_ms": 100.0 + i % 50, "metadata": {"inputs": {"q": f"q{i}"}}})
            if i % 10 == 0 and i < 5_000:  # a score is an update of its own: 500 of them
                scores.append({"id": str(uuid.uuid4()), "trace_id": tid, "score": 0.7})
            if i % 25 == 0:
                feedback.append({"task_id": task, "inputs": {"q": f"q{i}"}, "output": "o",
                                 "score": 0.6})
            trace_id = tid
        resp = api.post("/api/v1/ingest", json={"traces": traces, "feedback": feedback,
                                                "scores": scores}, timeout=120)
        assert resp.status_code == 207 and not resp.json()["errors"], resp.text[:500]
        done += len(traces)
    job = api.post(f"/api/v1/optimize/{first}").json()["job"]["id"]
    deadline = time.monotonic() + 120
    while api.get(f"/api/v1/jobs/{job}").json()["status"] not in ("SUCCESS", "FAILURE"):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
    api.post(f"/api/v1/rollouts/{first}", json={"candidate_version_id": v2, "share": 0.5})
    return {"task": first, "v1": v1, "v2": v2, "job": job, "trace": trace_id}


def _time_pages(base: str, key: str, ids: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    t = ids["task"]
    paths = {
        "tasks": "/ui/tasks", "task": f"/ui/tasks/{t}", "traces": "/ui/traces",
        "traces_of_task": f"/ui/traces?task={t}", "trace": f"/ui/traces/{ids['trace']}",
        "versions": f"/ui/tasks/{t}/versions",
        "diff": f"/ui/tasks/{t}/diff?a={ids['v1']}&b={ids['v2']}", "jobs": "/ui/jobs",
        "job": f"/ui/jobs/{ids['job']}", "rollout": f"/ui/tasks/{t}/rollout",
        "review": f"/ui/tasks/{t}/review",
    }
    samples: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client(base_url=base, timeout=60) as ui:
        assert ui.post("/ui/signin", data={"key": key}).status_code == 303
        for name, path in paths.items():  # warm-up, and every page answers
            assert ui.get(path).status_code == 200, name
        for _ in range(rounds):
            for name, path in paths.items():
                start = time.perf_counter()
                resp = ui.get(path)
                samples[name].append((time.perf_counter() - start) * 1000)
                assert resp.status_code == 200, name
    return samples


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(quick: bool) -> list[Metric]:
    """Time every UI page at each database size; the row is the slowest p95 at the largest."""
    from kaizen_server import LocalServer

    sizes = (1_000, 10_000) if quick else (10_000, 1_000_000)
    if os.environ.get("KAIZEN_BENCH_UI_SIZES"):  # e.g. "10000,100000" for a shorter run
        sizes = tuple(int(x) for x in os.environ["KAIZEN_BENCH_UI_SIZES"].split(","))
    rounds = 10 if quick else 40
    notes = [f"{TASKS} tasks; traces spread evenly; {rounds} rounds of every page per size; "
             "round trip over loopback from a signed-in client, p50 / p95 in ms."]
    worst = 0.0
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="kaizen-bench-ui-") as folder, \
                LocalServer(os.path.join(folder, "ui.db")) as server:
            api = httpx.Client(base_url=server.base_url, timeout=60,
                               headers={"X-API-Key": server.api_key})
            with api:
                started = time.monotonic()
                ids = _fill(api, size)
                filled = time.monotonic() - started
                samples = _time_pages(server.base_url, server.api_key, ids, rounds)
        row = ", ".join(f"{name} {statistics.median(v):.1f} / {_p(v, 0.95):.1f}"
                        for name, v in samples.items())
        notes.append(f"{size:,} traces (filled in {filled:.0f} s): {row}")
        if size == sizes[-1]:
            worst = max(_p(v, 0.95) for v in samples.values())
    return [
        Metric(
            name="ui_page_p95_ms",
            unit="ms",
            better="lower",
            kaizen=worst,
            goal="every page's p95 at most 200 ms at 1M traces on SQLite (issue 25)",
            goal_met=worst <= 200.0 if not quick else None,
            verdict=f"slowest page p95 {worst:.1f} ms at {sizes[-1]:,} traces",
            notes=notes,
        )
    ]


if __name__ == "__main__":  # a direct run prints the figures
    import sys

    for metric in run("--quick" in sys.argv):
        print(metric.verdict)
        print("\n".join(metric.notes))
