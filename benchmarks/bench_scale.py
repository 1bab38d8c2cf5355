"""Metric 8: the server as its data grows: reads at 10k, 100k (and 1M) traces, scores at 1k
and 100k rows per task (issue 23).

One SQLite file per size in a temporary folder, filled with the store's own batched ingest (in
this process, not HTTP one by one): 20 tasks, one feedback entry per two traces. A local
server per file (in this process, real HTTP on loopback, one keep-alive connection each)
answers ``GET /api/v1/prompts/{task}``, the first page (50) of ``GET /api/v1/traces?task_id=``
and ``GET /api/v1/feedback?task_id=``, and ``GET /api/v1/tasks``; every size is asked in turn,
round by round, so a busy neighbour weighs on all sizes alike. The figure is the median of the
round trips in ms (p25-p75 in the notes).

Scores: two more tasks, one plain and one with a running rollout (no decision can end it:
``min_samples`` out of reach), filled to 1k and then 100k rows (traces with a feedback entry
each, half of them scored; the rollout task's calls split over both arms). At each size, 200
fresh traces of the task are scored through ``POST /api/v1/traces/{id}/score``; the figure is
the median ms of a score.

The 1M-trace size takes minutes to fill on a small machine, so it is opt-in: set
``KAIZEN_BENCH_SCALE_SIZES=10000,100000,1000000`` (``make bench`` runs 10k and 100k), or run
``python -m benchmarks.bench_scale --sizes 10000,100000,1000000``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks._harness import Metric

__all__ = ["READS", "run"]

TASKS = 20
READS = ("get_prompt", "traces_first_page", "feedback_first_page", "tasks_list")
_API_KEY = "kaizen-bench-scale-key"
_BATCH = 1000
_SIZES_VAR = "KAIZEN_BENCH_SCALE_SIZES"


def _fill(store: Any, start: int, stop: int) -> None:
    """Traces *start*..*stop* over the 20 tasks, a feedback entry for every second one."""
    from kaizen_sdk.models import FeedbackRequest, TraceRequest

    for first in range(start, stop, _BATCH):
        n = min(_BATCH, stop - first)
        traces, feedback = [], []
        for i in range(first, first + n):
            task = f"scale-{i % TASKS:02d}"
            tid = str(uuid.uuid4())
            meta = {"trace_id": tid}
            traces.append(TraceRequest(task_id=task, id=uuid.UUID(tid), prompt_text="p",
                                       response_text=f"answer {i}", model="gpt-4o-mini",
                                       tokens=42, latency_ms=12.5, metadata=meta))
            if i % 2 == 0:
                feedback.append(FeedbackRequest(task_id=task, inputs={"q": i},
                                                output=f"answer {i}", metadata=meta))
        store.ingest(traces, feedback)


def _score_fill(store: Any, task: str, versions: tuple[str, ...], start: int, stop: int
                ) -> None:
    """Calls *start*..*stop* of *task* (each with its feedback entry), half of them scored."""
    from kaizen_sdk.models import FeedbackRequest, ScoreItem, TraceRequest

    for first in range(start, stop, _BATCH):
        n = min(_BATCH, stop - first)
        ids = [uuid.uuid4() for _ in range(n)]
        traces, feedback = [], []
        for k, tid in enumerate(ids):
            version = versions[(first + k) % len(versions)] if versions else None
            meta = {"trace_id": str(tid)}
            traces.append(TraceRequest(
                task_id=task, id=tid, response_text="a", latency_ms=10.0 + k % 7, tokens=30,
                model="gpt-4o-mini", metadata=meta,
                prompt_version_id=None if version is None else uuid.UUID(version)))
            feedback.append(FeedbackRequest(task_id=task, inputs={"q": k}, output="a",
                                            metadata=meta))
        store.ingest(traces, feedback)
        store.apply_scores([ScoreItem(id=uuid.uuid4(), trace_id=tid, score=(k % 5) / 4)
                            for k, tid in enumerate(ids) if k % 2 == 0])


def _timed(call: Callable[[], httpx.Response], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = call()
        out.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.request.url} answered {resp.status_code}: {resp.text}")
    return out


def _read_calls(api: httpx.Client) -> dict[str, Callable[[], httpx.Response]]:
    tasks = [f"scale-{i:02d}" for i in range(TASKS)]
    k = 0

    def task() -> str:
        nonlocal k
        k += 1
        return tasks[k % TASKS]

    return {
        "get_prompt": lambda: api.get(f"/api/v1/prompts/{task()}"),
        "traces_first_page": lambda: api.get("/api/v1/traces",
                                             params={"task_id": task(), "limit": 50}),
        "feedback_first_page": lambda: api.get("/api/v1/feedback",
                                               params={"task_id": task(), "limit": 50}),
        "tasks_list": lambda: api.get("/api/v1/tasks"),
    }


def _scores(api: httpx.Client, store: Any, task: str, versions: tuple[str, ...], n: int
            ) -> list[float]:
    """Ms of each of *n* scores of fresh traces of *task* (stored first, not timed)."""
    from kaizen_sdk.models import TraceRequest

    ids = [uuid.uuid4() for _ in range(n)]
    store.ingest([TraceRequest(
        task_id=task, id=tid, response_text="a", latency_ms=11.0,
        prompt_version_id=uuid.UUID(versions[k % len(versions)]) if versions else None)
        for k, tid in enumerate(ids)], [])
    out = []
    for k, tid in enumerate(ids):
        started = time.perf_counter()
        resp = api.post(f"/api/v1/traces/{tid}/score", json={"score": (k % 5) / 4})
        out.append((time.perf_counter() - started) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"score answered {resp.status_code}: {resp.text}")
    return out


def _ingest_with_scores(batches: int, rounds: int) -> tuple[float, float, list[str]]:
    """CPU seconds of this process (client and server) per round of *batches* ingest
    requests of 128 trace + feedback pairs, with and without one score per two traces (the
    same request carrying them), two fresh servers asked alternately; medians."""
    from kaizen_sdk.tracing import new_trace_id
    from kaizen_server import LocalServer

    def bodies(task: str, scores: bool) -> list[dict[str, Any]]:
        out = []
        for _ in range(batches):
            ids = [new_trace_id() for _ in range(128)]
            body: dict[str, Any] = {
                "traces": [{"id": t, "task_id": task, "prompt_text": "Summarize: {{ t }}",
                            "response_text": "summary", "model": "gpt-4o-mini", "tokens": 42,
                            "latency_ms": 12.5, "metadata": {"trace_id": t}} for t in ids],
                "feedback": [{"id": new_trace_id(), "task_id": task, "inputs": {"t": "x"},
                              "output": "summary", "source": "sdk",
                              "metadata": {"trace_id": t}} for t in ids]}
            if scores:
                body["scores"] = [{"id": new_trace_id(), "trace_id": t, "score": 0.5}
                                  for t in ids[::2]]
            out.append(body)
        return out

    cpu: dict[bool, list[float]] = {False: [], True: []}
    tmp = tempfile.mkdtemp(prefix="kaizen-bench-scale-ingest-")
    try:
        with contextlib.ExitStack() as stack:
            apis = {}
            for scores in (False, True):
                server = stack.enter_context(LocalServer(
                    db_path=os.path.join(tmp, f"ingest-{scores}.db"), api_key=_API_KEY))
                api = stack.enter_context(httpx.Client(
                    base_url=server.base_url, headers={"X-API-Key": _API_KEY}, timeout=60))
                api.post("/api/v1/tasks", json={"name": "ingest", "feedback_threshold": 10**9})
                apis[scores] = api
            for r in range(rounds):
                for scores in ((False, True) if r % 2 == 0 else (True, False)):
                    todo = bodies("ingest", scores)
                    started = time.process_time()
                    for body in todo:
                        resp = apis[scores].post("/api/v1/ingest", json=body)
                        if resp.status_code != 207 or resp.json()["errors"]:
                            raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text}")
                    cpu[scores].append(time.process_time() - started)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    notes = [f"{'with' if k else 'without'} scores: " + ", ".join(f"{x:.2f}" for x in v) + " s"
             for k, v in cpu.items()]
    return statistics.median(cpu[False]), statistics.median(cpu[True]), notes


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return f"{q[0]:.2f}-{q[2]:.2f}"


def measure(sizes: list[int], score_sizes: list[int], reads: int, scores: int,
            rounds: int = 5) -> dict[str, Any]:
    """Fill a file per size, then time every size side by side, round by round (see the
    module docstring); the figures by size."""
    from kaizen_sdk.models import RolloutRequest, TaskCreateRequest
    from kaizen_server import LocalServer
    from kaizen_server.storage.sqlite import Store

    tmp = tempfile.mkdtemp(prefix="kaizen-bench-scale-")
    path = os.path.join(tmp, "fill.db")
    out: dict[str, Any] = {"reads": {s: {n: [] for n in READS} for s in sizes},
                           "scores": {s: {"plain": [], "rollout": []} for s in score_sizes},
                           "fill_s": {}}
    try:
        store = Store(path)
        for i in range(TASKS):
            store.create_task(TaskCreateRequest(name=f"scale-{i:02d}", prompt_text="Answer {{q}}",
                                                feedback_threshold=10**9))
        store.create_task(TaskCreateRequest(name="score-plain", feedback_threshold=10**9))
        store.create_task(TaskCreateRequest(name="score-rollout", prompt_text="v1 {{q}}",
                                            feedback_threshold=10**9))
        active = str(store.active_prompt("score-rollout").id)
        candidate = str(store.create_version("score-rollout", "v2 {{q}}", activate=False).id)
        store.start_rollout("score-rollout", RolloutRequest(
            candidate_version_id=uuid.UUID(candidate), share=0.5, min_samples=1_000_000,
            auto_promote=False, auto_rollback=False, max_duration=10**9))
        arms = (active, candidate)
        # one file per size: the first holds the score tasks at the small row count, the
        # last at the large one
        files: list[str] = []
        filled = rows = 0
        for i, size in enumerate(sizes):
            started = time.perf_counter()
            _fill(store, filled, size)
            out["fill_s"][size] = time.perf_counter() - started
            filled = size
            want = score_sizes[0] if i == 0 else score_sizes[-1] if i == len(sizes) - 1 else rows
            _score_fill(store, "score-plain", (), rows, want)
            _score_fill(store, "score-rollout", arms, rows, want)
            rows = want
            store.close()  # the last connection folds the WAL into the file
            files.append(os.path.join(tmp, f"at-{size}.db"))
            shutil.copyfile(path, files[-1])
            store = Store(path)
        store.close()
        os.remove(path)
        with contextlib.ExitStack() as stack:
            apis, stores = [], []
            for file in files:
                server = stack.enter_context(LocalServer(db_path=file, api_key=_API_KEY))
                apis.append(stack.enter_context(httpx.Client(
                    base_url=server.base_url, headers={"X-API-Key": _API_KEY}, timeout=60)))
                stores.append(Store(file))
                stack.callback(stores[-1].close)
            calls = [_read_calls(api) for api in apis]
            for c in calls:  # warm the connections and page caches
                for call in c.values():
                    _timed(call, 5)
            scored = {score_sizes[0]: 0, score_sizes[-1]: len(files) - 1}
            for r in range(rounds):  # alternately: the neighbours' load falls on every size
                order = list(range(len(files)))
                if r % 2:
                    order.reverse()
                for k in order:
                    for name, call in calls[k].items():
                        out["reads"][sizes[k]][name] += _timed(call, reads // rounds)
                    for size, at in scored.items():
                        if at != k:
                            continue
                        out["scores"][size]["plain"] += _scores(
                            apis[k], stores[k], "score-plain", (), scores // rounds)
                        out["scores"][size]["rollout"] += _scores(
                            apis[k], stores[k], "score-rollout", arms, scores // rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sizes(quick: bool) -> tuple[list[int], list[int]]:
    if quick:
        return [1_000, 10_000], [100, 1_000]
    text = os.environ.get(_SIZES_VAR, "").strip()
    sizes = [int(x) for x in text.split(",")] if text else [10_000, 100_000]
    return sizes, [1_000, 100_000]


def run(quick: bool) -> list[Metric]:
    """The scale table: reads by database size, scores by rows per task."""
    sizes, score_sizes = _sizes(quick)
    reads, scores = (30, 30) if quick else (200, 200)
    got = measure(sizes, score_sizes, reads, scores)
    small, large = sizes[0], sizes[-1]
    metrics = []
    for name in READS:
        by_size = {s: statistics.median(got["reads"][s][name]) for s in sizes}
        ratio = by_size[large] / by_size[small]
        metrics.append(Metric(
            name=f"scale_{name}_ms", unit="ms", better="lower", kaizen=by_size[large],
            peers={f"at_{small:,}_traces".replace(",", "_"): by_size[small]},
            goal=f"at {large:,} traces at most 1.5x its {small:,}-trace figure (issue 23)",
            goal_met=ratio <= 1.5,
            verdict=f"{ratio:.2f}x the {small:,}-trace figure",
            notes=[f"Median round trip over loopback, {reads} requests per size, round robin over"
                   f" {TASKS} tasks: " + "; ".join(
                       f"{s:,} traces {by_size[s]:.2f} ms (p25-p75 "
                       f"{_spread(got['reads'][s][name])})" for s in sizes)
                   + ". Filled with the store's own ingest: " + ", ".join(
                       f"{s:,} in {got['fill_s'][s]:.1f} s" for s in sizes) + "."],
        ))
    lo, hi = score_sizes[0], score_sizes[-1]
    for kind in ("plain", "rollout"):
        at = {s: statistics.median(got["scores"][s][kind]) for s in score_sizes}
        ratio = at[hi] / at[lo]
        what = "with a running rollout" if kind == "rollout" else "without a rollout"
        metrics.append(Metric(
            name=f"scale_score_{kind}_ms", unit="ms", better="lower", kaizen=at[hi],
            peers={f"at_{lo}_rows": at[lo]},
            goal=f"a score {what} at {hi:,} rows per task at most 1.5x its {lo:,}-row figure"
                 " (issue 23)",
            goal_met=ratio <= 1.5,
            verdict=f"{ratio:.2f}x the {lo:,}-row figure",
            notes=[f"POST /api/v1/traces/{{id}}/score of {scores} fresh traces, median ms: "
                   + "; ".join(f"{s:,} rows {at[s]:.2f} ms (p25-p75 "
                               f"{_spread(got['scores'][s][kind])})" for s in score_sizes)
                   + ("; the rollout's arms hold half the task's rows each, half of them scored"
                      if kind == "rollout" else "") + "."],
        ))
    plain, scored, cpu_notes = _ingest_with_scores(10 if quick else 40, 2 if quick else 5)
    metrics.append(Metric(
        name="scale_ingest_with_scores_ratio", unit="x", better="lower", kaizen=scored / plain,
        goal="ingest with one score per two traces within 1.5x the time of the same ingest"
             " without scores (issue 23)",
        goal_met=scored / plain <= 1.5,
        verdict=f"{scored / plain:.2f}x the ingest without scores",
        notes=["POST /api/v1/ingest of 128 trace + 128 feedback records per request (UUID7 ids,"
               " as the SDK sends), the same with 64 scores of the request's traces in it; CPU"
               " seconds of the process (the server and its client) per round, median of"
               " alternating rounds on two fresh servers: " + "; ".join(cpu_notes) + "."],
    ))
    return metrics


def main() -> None:
    """``python -m benchmarks.bench_scale [--sizes 10000,100000,1000000]``: print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="trace counts, comma-separated (default 10k,100k)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.sizes:
        os.environ[_SIZES_VAR] = args.sizes
    for m in run(args.quick):
        print(f"{m.name}: {m.kaizen:.3f} {m.unit}; {m.verdict}")
        for note in m.notes:
            print(f"  {note}")


if __name__ == "__main__":
    main()
