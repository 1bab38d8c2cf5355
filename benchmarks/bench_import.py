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

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
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
                   "loaded": [m for m in ("click", "rich", "pygments") if m in sys.modules],
                   "kaizen_from": getattr(sys.modules.get("kaizen_sdk"), "__file__", None),
                   "modules": len(sys.modules)}}))
"""

_FIRST_CALL = """
import kaizen_sdk as ct
@ct.task("bench_cold", default_prompt="Echo {{ x }}")
def noop(x=1):
    return x
noop()
"""

_CONTENDERS: dict[str, str] = {
    "kaizen": "import kaizen_sdk",
    "kaizen_task": "import kaizen_sdk as ct\nct.task",
    "kaizen_first_call": _FIRST_CALL,
    "langfuse": "import langfuse",
    "langfuse_observe": "from langfuse import observe",
    "langsmith": "from langsmith import traceable",
}


def _probe(stmt: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    # ``python -c`` puts the working directory first on sys.path: a baseline tree given as
    # PYTHONPATH is also the working directory, so its kaizen_sdk wins over the checkout's.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "LANGSMITH_",
                                                                     "LANGFUSE_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(stmt=stmt)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
        cwd=(env_extra or {}).get("PYTHONPATH"),
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


BASELINE_REF = os.environ.get("KAIZEN_BENCH_BASELINE", "e75ad1c")
"""The commit the first-call goal compares with: main before issue 12's work (override with
``KAIZEN_BENCH_BASELINE=<git ref>``; empty to skip)."""


@contextlib.contextmanager
def _baseline_tree(ref: str) -> Iterator[str | None]:
    """A temporary directory holding ``kaizen_sdk`` as of *ref* (None when git cannot)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="kaizen-baseline-") as tmp:
        if not ref:
            yield None
            return
        archive = subprocess.run(["git", "-C", str(root), "archive", ref, "kaizen_sdk"],
                                 capture_output=True, timeout=60, check=False)
        if archive.returncode != 0:
            yield None
            return
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+ / 3.11.4+
                tar.extractall(tmp, filter="data")
            else:
                tar.extractall(tmp)
        yield tmp


def run(quick: bool) -> list[Metric]:
    """Median cold-import time of kaizen_sdk, langfuse and langsmith, and of a first call."""
    from benchmarks.bench_task_overhead import NULL_SERVER, start_server

    proc, url = start_server(NULL_SERVER)
    try:
        with _baseline_tree(BASELINE_REF) as baseline:
            return _run(quick, url, baseline)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)


def _run(quick: bool, url: str, baseline: str | None) -> list[Metric]:
    runs = 3 if quick else 9
    contenders = dict(_CONTENDERS)
    envs: dict[str, dict[str, str]] = {
        "kaizen_first_call": {"KAIZEN_API_KEY": "bench-key", "KAIZEN_BASE_URL": url},
    }
    if baseline is not None:
        contenders["kaizen_first_call_baseline"] = _FIRST_CALL
        envs["kaizen_first_call_baseline"] = {**envs["kaizen_first_call"],
                                              "PYTHONPATH": baseline}
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    facts: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    # One untimed run each warms the OS file cache and writes byte-code caches.
    for name, stmt in contenders.items():
        try:
            _probe(stmt, envs.get(name))
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    for _ in range(runs):
        for name, stmt in contenders.items():
            if name in failed:
                continue
            result = _probe(stmt, envs.get(name))
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
    first, before = med["kaizen_first_call"], med.get("kaizen_first_call_baseline")
    origin = str(facts.get("kaizen_first_call_baseline", {}).get("kaizen_from"))
    if baseline is not None and before is not None and not origin.startswith(baseline):
        raise RuntimeError(f"the baseline probe imported kaizen_sdk from {origin}")
    ratio = None if first is None or not before else first / before
    loaded = facts.get("kaizen_first_call", {}).get("loaded", [])
    first_call = Metric(
        name="first_call_ms",
        unit="ms",
        better="lower",
        kaizen=first,
        peers={"kaizen_before_issue_12": before},
        goal=f"`import kaizen_sdk as ct` + `@ct.task` + the first decorated call: at most 0.6x "
             f"the code before issue 12 ({BASELINE_REF}), same run (issue 12)",
        goal_met=None if ratio is None else ratio <= 0.6,
        verdict=None if ratio is None else f"{first:.0f} ms, {ratio:.2f}x the {before:.0f} ms "
                                           "before",
        notes=[
            "A fresh interpreter imports kaizen_sdk, decorates a no-op and calls it once "
            "(the default client built from KAIZEN_* env, its pipeline, the prompt fetched "
            "from a loopback null server in another process); CPU time of every thread of "
            f"the process, median of {runs}, alternating with the baseline, which is "
            f"`git archive {BASELINE_REF} kaizen_sdk` on PYTHONPATH with the same "
            "dependencies.",
            "Modules the first call loaded that it does not need: "
            + (", ".join(loaded) if loaded else "none of click, rich, pygments") + ".",
            *(f"{n} not measured: {why}" for n, why in failed.items()
              if n.startswith("kaizen_first_call")),
            *([] if baseline is not None else
              [f"baseline not measured: `git archive {BASELINE_REF}` failed (no git "
               "checkout, or the ref is unknown)"]),
        ],
        spread={("kaizen" if n == "kaizen_first_call" else "kaizen_before_issue_12"):
                Timing(s).spread for n, s in samples.items()
                if s and n.startswith("kaizen_first_call")},
    )
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
        first_call,
    ]
