"""Metric 6: cold import time, each in a fresh interpreter.

Every run starts a new ``python`` process that times one import statement (interpreter
start-up itself is excluded, as it is the same for all) and reports which heavy modules that
import pulled in. The figure is CPU time, like every other figure of the suite (on a shared
machine wall time measures the neighbours); the wall-time medians are noted beside it. Runs
of the contenders alternate; the figure is the median.

- ``import_ms``: ``import kaizen_sdk`` (ours) vs ``import langfuse`` and
  ``from langsmith import traceable`` (the issue's comparison).
- ``import_with_decorator_ms``: what a first use pays, the import plus the decorator (ours:
  ``import kaizen_sdk as ct; ct.task``, which loads the tracing machinery lazily) vs
  ``from langfuse import observe`` and ``from langsmith import traceable``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from benchmarks._harness import Metric, Timing

__all__ = ["run"]

_PROBE = """
import sys, time, json
t0, c0 = time.perf_counter(), time.process_time()
{stmt}
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({{"ms": (c1 - c0) * 1000.0, "wall_ms": (t1 - t0) * 1000.0,
                   "openai": "openai" in sys.modules,
                   "litellm": "litellm" in sys.modules,
                   "modules": len(sys.modules)}}))
"""

_CONTENDERS: dict[str, str] = {
    "kaizen": "import kaizen_sdk",
    "kaizen_task": "import kaizen_sdk as ct\nct.task",
    "langfuse": "import langfuse",
    "langfuse_observe": "from langfuse import observe",
    "langsmith": "from langsmith import traceable",
}


def _probe(stmt: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "LANGSMITH_",
                                                                     "LANGFUSE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(stmt=stmt)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool) -> list[Metric]:
    """Median cold-import time of kaizen_sdk, langfuse and langsmith."""
    runs = 3 if quick else 9
    samples: dict[str, list[float]] = {name: [] for name in _CONTENDERS}
    walls: dict[str, list[float]] = {name: [] for name in _CONTENDERS}
    facts: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    # One untimed run each warms the OS file cache and writes byte-code caches.
    for name, stmt in _CONTENDERS.items():
        try:
            _probe(stmt)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    for _ in range(runs):
        for name, stmt in _CONTENDERS.items():
            if name in failed:
                continue
            result = _probe(stmt)
            samples[name].append(result["ms"])
            walls[name].append(result["wall_ms"])
            facts[name] = result
    med = {n: statistics.median(s) if s else None for n, s in samples.items()}
    ours = facts.get("kaizen", {})
    heavy = [m for m in ("openai", "litellm") if ours.get(m)]
    kaizen_ms = med["kaizen"]
    notes = [
        f"CPU time, median of {runs} fresh interpreters each, alternating; interpreter "
        "start-up excluded. Wall-time medians: "
        + ", ".join(f"{n} {statistics.median(w):.1f} ms" for n, w in walls.items() if w) + ".",
        "openai imported by `import kaizen_sdk`: "
        f"{'YES' if ours.get('openai') else 'no'}; litellm: "
        f"{'YES' if ours.get('litellm') else 'no'}.",
    ]
    for name, why in failed.items():
        notes.append(f"{name} not measured: {why}")
    task_ms = med["kaizen_task"]
    first_use = "" if task_ms is None else f" ({task_ms:.0f} ms with the decorator loaded)"
    return [
        Metric(
            name="import_ms",
            unit="ms",
            better="lower",
            kaizen=kaizen_ms,
            peers={"langfuse": med["langfuse"], "langsmith": med["langsmith"]},
            goal="under 120 ms, with openai and litellm not imported (issue 7)",
            goal_met=None if kaizen_ms is None else (kaizen_ms < 120.0 and not heavy),
            verdict=None if kaizen_ms is None else (
                f"{kaizen_ms:.1f} ms{first_use}; "
                + (f"imported {', '.join(heavy)}" if heavy else "openai and litellm not imported")
            ),
            notes=notes,
            spread={n: Timing(s).spread for n, s in samples.items()
                    if s and n in ("kaizen", "langfuse", "langsmith")},
        ),
        Metric(
            name="import_with_decorator_ms",
            unit="ms",
            better="lower",
            kaizen=task_ms,
            peers={"langfuse": med["langfuse_observe"], "langsmith": med["langsmith"]},
            notes=[
                "The import plus the decorator, as a first use pays it: "
                "`import kaizen_sdk as ct; ct.task` vs `from langfuse import observe` and "
                "`from langsmith import traceable`; fresh interpreters, alternating, median.",
                *(f"{n} not measured: {why}" for n, why in failed.items()),
            ],
            spread={("kaizen" if n == "kaizen_task" else n.removesuffix("_observe")):
                    Timing(s).spread for n, s in samples.items()
                    if s and n in ("kaizen_task", "langfuse_observe", "langsmith")},
        ),
    ]
