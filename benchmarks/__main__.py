"""Run the benchmark suite: ``python -m benchmarks [--quick] [--only NAME]``.

Writes ``benchmarks/results.json`` and renders ``benchmarks/RESULTS.md`` (and prints the table).

The interface of a metric module
--------------------------------
Every metric module is ``benchmarks/bench_<topic>.py`` and exposes::

    def run(quick: bool) -> list[Metric]

where `benchmarks._harness.Metric` is one results row (name, unit, better, kaizen, peers,
plus goal, goal_met, notes, spread and references for RESULTS.md). ``quick=True`` is a smoke
run: the same code paths with far fewer calls, for checking that everything works, not for
quoting figures. A module measures its own peers side by side with ours (see
`benchmarks._harness.alternate`); a peer that cannot be imported is recorded as ``None`` with a
note saying why. A module whose API differs gets a thin adapter in `_ADAPTERS` below.

The runner starts a fresh child process per module (``--child``), so one module's patches,
tracer providers and imports never leak into another's figures, and a module that crashes or
overruns its time limit costs only its own rows (recorded as ``None`` with the reason). Every
child runs under `benchmarks._harness.loopback_only`: no socket may connect beyond loopback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    Metric,
    blocked_connections,
    loopback_only,
    machine_info,
    versions,
)
from benchmarks.peers import INSTRUMENT_GOAL, INSTRUMENT_LITELLM_GOAL, INSTRUMENT_STREAM_GOAL

__all__ = ["MODULES", "main"]

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
CLOSING_NOTE = HERE / "closing-note.md"
"""Hand-written notes on the latest full run, appended to RESULTS.md under its own heading."""

# (module, metric name, unit, better, peers, goal): the rows each module must produce, in the
# order RESULTS.md shows them. A module that fails yields these rows with ``None`` figures.
_TASK_PEERS = ("bare", "otel_span", "langfuse", "langsmith", "traceloop", "mlflow", "opik")

_SPECS: list[tuple[str, str, str, str, tuple[str, ...], str | None]] = [
    ("bench_task_overhead", "task_overhead_sync_us", "µs/call", "lower", _TASK_PEERS,
     "no application provider: at most 0.5x a bare OpenTelemetry SDK span, CPU of all "
     "threads (issue 12)"),
    ("bench_task_overhead", "task_overhead_app_provider_sync_us", "µs/call", "lower",
     (*_TASK_PEERS, "kaizen_no_provider"),
     "an application SDK provider with a BatchSpanProcessor: at most 1.3x the bare span on "
     "that provider, CPU of all threads (issue 12)"),
    ("bench_task_overhead", "task_overhead_async_us", "µs/call", "lower", _TASK_PEERS,
     "async: at most 0.5x the bare span with no application provider; within 20 % of sync"),
    ("bench_task_overhead", "task_overhead_app_provider_async_us", "µs/call", "lower",
     (*_TASK_PEERS, "kaizen_no_provider"),
     "async: at most 1.3x the bare span on an application provider; within 20 % of sync"),
    ("bench_instrument_openai", "instrument_openai_overhead_us", "µs/call", "lower",
     ("bare", "otel_contrib_openai", "openinference_openai"), INSTRUMENT_GOAL),
    ("bench_instrument_openai", "instrument_openai_stream_overhead_us", "µs/call", "lower",
     ("bare", "otel_contrib_openai"), INSTRUMENT_STREAM_GOAL),
    ("bench_instrument_openai", "instrument_openai_stream_async_overhead_us", "µs/call",
     "lower", ("bare", "otel_contrib_openai"), INSTRUMENT_STREAM_GOAL),
    ("bench_instrument_openai", "instrument_litellm_stream_overhead_us", "µs/call", "lower",
     ("bare", "otel_contrib_openai"), INSTRUMENT_LITELLM_GOAL),
    ("bench_instrument_openai", "instrument_litellm_stream_async_overhead_us", "µs/call",
     "lower", ("bare", "otel_contrib_openai"), INSTRUMENT_LITELLM_GOAL),
    ("bench_get_prompt", "get_prompt_cached_us", "µs/call", "lower", ("langfuse",),
     "under 1 µs on a warm cache (issue 7)"),
    ("bench_codec", "decode_tasks_1_us", "µs/op", "lower", ("pydantic", "json_dataclass"), None),
    ("bench_codec", "decode_tasks_1000_us", "µs/op", "lower", ("pydantic", "json_dataclass"),
     None),
    ("bench_codec", "encode_feedback_us", "µs/op", "lower", ("pydantic", "json_dataclass"), None),
    ("bench_delivery", "delivery_records_per_s", "records/s", "higher", (), None),
    ("bench_delivery", "delivery_background_us_per_record", "µs/record", "lower", (),
     "at most 3 µs of background CPU per record (issue 12)"),
    ("bench_delivery", "delivery_encode_us_per_record", "µs/record", "lower", (), None),
    ("bench_import", "import_ms", "ms", "lower", ("langfuse", "langsmith"),
     "under 120 ms, with openai and litellm not imported (issue 7)"),
    ("bench_import", "import_with_decorator_ms", "ms", "lower", ("langfuse", "langsmith"), None),
    ("bench_import", "first_call_ms", "ms", "lower", ("kaizen_before_issue_12",),
     "`import kaizen_sdk as ct` + `@ct.task` + the first decorated call: at most 0.6x the code "
     "before issue 12, same run (issue 12)"),
    ("bench_memory", "rss_1m_calls_down_mb", "MB", "lower", ("bare",),
     "bounded with the server down (issue 4)"),
    ("bench_rollout_sim", "rollout_false_promotion_pct", "%", "lower", ("naive_ttest",),
     "at most 5 % for equal arms, checked after every batch (issue 16)"),
    ("bench_rollout_sim", "rollout_samples_to_decision_better", "scores/arm", "lower",
     ("naive_ttest",), None),
    ("bench_rollout_sim", "rollout_samples_to_decision_worse", "scores/arm", "lower",
     ("naive_ttest",), None),
    ("bench_rollout_sim", "choose_arm_ns", "ns/call", "lower",
     ("repeat_key", "no_key", "no_rollout"), None),
    ("bench_server", "server_ingest_pairs_per_s", "pairs/CPU s", "higher", ("raw_sqlite",),
     "at least 0.5x raw SQLite executemany of the same rows (issue 13)"),
    ("bench_server", "server_get_prompt_req_per_s", "req/CPU s", "higher", ("old_server_e75ad1c",),
     "at least 3x the http.server layer of e75ad1c (issue 13)"),
    ("bench_server", "server_sdk_delivery_records_per_s", "records/s", "higher", (),
     "at least 15,000 records/s from 8 threads into the local server (issue 13)"),
    ("bench_server", "server_rss_growth_unauth_mb", "MB", "lower", (),
     "under 50 MB under unauthenticated load (issue 13)"),
    ("bench_server", "server_p99_ms_beside_slow_connections", "ms", "lower", (),
     "p99 under 100 ms with 1,000 slow connections open (issue 13)"),
    ("bench_pg", "server_pg_ingest_pairs_per_s", "pairs/CPU s", "higher", ("raw_psycopg",),
     "at least 0.5x raw PostgreSQL executemany of the same rows (issue 23)"),
    ("bench_otlp", "server_otlp_spans_per_cpu_s", "spans/CPU s", "higher",
     ("own_ingest", "phoenix_otlp"),
     "at least as many spans per server CPU second as our own ingest takes records"
     " (issue 27)"),
    ("bench_ui", "ui_page_p95_ms", "ms", "lower", (),
     "every page's p95 at most 200 ms at 1M traces on SQLite (issue 25)"),
    ("bench_evals", "evals_judged_traces_per_s", "traces/s", "higher", (), None),
    ("bench_evals", "evals_server_cpu_ms_per_judged", "ms/trace", "lower", (), None),
    ("bench_evals", "evals_p95_trace_to_score_s", "s", "lower", (),
     "p95 from a trace stored to its judged score at most 60 s at a steady 20 traces/s,"
     " sampling 1.0 (issue 26)"),
    *[("bench_scale", f"scale_{name}_ms", "ms", "lower", (),
       "at the largest size at most 1.5x its 10,000-trace figure (issue 23)")
      for name in ("get_prompt", "traces_first_page", "feedback_first_page", "tasks_list")],
    *[("bench_scale", f"scale_score_{kind}_ms", "ms", "lower", (),
       "at 100,000 rows per task at most 1.5x its 1,000-row figure (issue 23)")
      for kind in ("plain", "rollout")],
    ("bench_scale", "scale_ingest_with_scores_ratio", "x", "lower", (),
     "ingest with one score per two traces within 1.5x the time of the same ingest without"
     " scores (issue 23)"),
]

MODULES: list[str] = list(dict.fromkeys(spec[0] for spec in _SPECS))
"""Metric modules in run order."""

# Seconds a module may take (full run, quick run) before its child process is stopped.
_TIME_LIMITS: dict[str, tuple[float, float]] = {
    "bench_task_overhead": (260, 90),
    "bench_instrument_openai": (720, 180),
    "bench_get_prompt": (40, 40),
    "bench_codec": (50, 40),
    "bench_delivery": (120, 60),
    "bench_import": (150, 60),
    "bench_memory": (100, 60),
    "bench_rollout_sim": (90, 40),
    "bench_server": (180, 90),
    "bench_pg": (120, 60),
    "bench_otlp": (300, 150),  # Phoenix starts in ~20 s and stores in the background
    "bench_ui": (900, 90),
    "bench_evals": (300, 90),
    "bench_scale": (1800, 90),
}


def _adapt_none(module: Any, quick: bool) -> list[Metric]:
    result: list[Metric] = module.run(quick)
    return result


def _adapt_task_overhead(module: Any, quick: bool) -> list[Metric]:
    # bench_task_overhead.py is a standalone script (main() prints); the side-by-side run with
    # the peers lives in benchmarks/peers.py and measures the same variants plus the peers.
    from benchmarks.peers import task_overhead_metrics

    return task_overhead_metrics(quick)


def _adapt_instrument_openai(module: Any, quick: bool) -> list[Metric]:
    # bench_instrument_openai.py offers measure()/Variant/servers(); benchmarks/peers.py adds
    # the two peer instrumentors as Variants and turns the result into a Metric.
    from benchmarks.peers import instrument_openai_metrics

    return instrument_openai_metrics(quick)


# module -> function(module, quick) -> metrics, for modules that do not expose run(quick).
_ADAPTERS: dict[str, Callable[[Any, bool], list[Metric]]] = {
    "bench_task_overhead": _adapt_task_overhead,
    "bench_instrument_openai": _adapt_instrument_openai,
}


# --- child: run one module -----------------------------------------------------------------


def _child(module_name: str, quick: bool, out: Path) -> int:
    payload: dict[str, Any] = {"rows": [], "error": None}
    try:
        with loopback_only():
            module = importlib.import_module(f"benchmarks.{module_name}")
            adapter = _ADAPTERS.get(module_name, _adapt_none)
            metrics = adapter(module, quick)
        payload["rows"] = [{"row": m.to_json(), "extras": m.extras()} for m in metrics]
    except Exception:  # a failing module must still report why
        payload["error"] = traceback.format_exc(limit=8)
    payload["blocked"] = blocked_connections()
    out.write_text(json.dumps(payload), encoding="utf-8")
    return 0


# --- parent: run modules in children ------------------------------------------------------


def _placeholders(module_name: str, reason: str) -> list[Metric]:
    return [
        Metric(name=name, unit=unit, better=better, kaizen=None,  # type: ignore[arg-type]
               peers=dict.fromkeys(peers), goal=goal, notes=[reason])
        for mod, name, unit, better, peers, goal in _SPECS
        if mod == module_name
    ]


def _run_module(module_name: str, quick: bool) -> tuple[list[Metric], list[str]]:
    limit = _TIME_LIMITS.get(module_name, (120, 60))[1 if quick else 0]
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", "benchmarks", "--child", module_name, "--out", str(out)]
        if quick:
            cmd.append("--quick")
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=HERE.parent, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return _placeholders(module_name, f"{module_name} overran its {limit:.0f} s limit."), []
        elapsed = time.perf_counter() - started
        print(f"  {module_name}: {elapsed:.1f} s", flush=True)
        if not out.exists():
            reason = f"{module_name} exited with status {proc.returncode} and no results."
            return _placeholders(module_name, reason), []
        payload = json.loads(out.read_text(encoding="utf-8"))
    blocked = list(payload.get("blocked", []))
    if payload.get("error"):
        print(payload["error"], file=sys.stderr)
        last = payload["error"].strip().splitlines()[-1]
        return _placeholders(module_name, f"{module_name} failed: {last}"), blocked
    metrics = [Metric.from_json(r["row"], r["extras"]) for r in payload["rows"]]
    return metrics, blocked


def _cross_goals(metrics: list[Metric]) -> None:
    """Goals that compare two rows: async costs the same as sync, on each path."""
    from benchmarks.peers import APP_PROVIDER_GOAL, NO_PROVIDER_GOAL

    by_name = {m.name: m for m in metrics}
    for sync_name, async_name, limit in (
        ("task_overhead_sync_us", "task_overhead_async_us", NO_PROVIDER_GOAL),
        ("task_overhead_app_provider_sync_us", "task_overhead_app_provider_async_us",
         APP_PROVIDER_GOAL),
    ):
        sync, asyn = by_name.get(sync_name), by_name.get(async_name)
        if sync is None or asyn is None or sync.kaizen is None or asyn.kaizen is None:
            continue
        same = asyn.kaizen <= sync.kaizen * 1.2
        span = asyn.peers.get("otel_span")
        within = span is not None and asyn.kaizen <= limit * span
        asyn.goal_met = same and within
        ratio = f"{asyn.kaizen / span:.2f}x the bare span" if span else "no bare span figure"
        asyn.verdict = f"async/sync {asyn.kaizen / sync.kaizen:.2f}; {ratio}"


def _order(metrics: list[Metric]) -> list[Metric]:
    rank = {spec[1]: i for i, spec in enumerate(_SPECS)}
    return sorted(metrics, key=lambda m: rank.get(m.name, len(rank)))


# --- rendering -----------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _advantage(metric: Metric, peer_value: float | None) -> str:
    """How many times better kaizen is than a peer (above 1: kaizen is better)."""
    ours = metric.kaizen
    if ours is None or peer_value is None or ours <= 0 or peer_value <= 0:
        return "—"
    ratio = peer_value / ours if metric.better == "lower" else ours / peer_value
    return f"{ratio:.2f}x"


def _table(metrics: list[Metric]) -> list[str]:
    lines = [
        "| Metric | Unit | kaizen | Peer | Peer's figure | kaizen advantage |",
        "|---|---|---:|---|---:|---:|",
    ]
    for m in metrics:
        first = True
        peers = list(m.peers.items()) or [("(no peer)", None)]
        for peer, value in peers:
            name = f"`{m.name}`" if first else ""
            unit = m.unit if first else ""
            ours = _fmt(m.kaizen) if first else ""
            if peer in m.references:
                adv = "reference"
            elif peer == "(no peer)":
                adv = ""
            else:
                adv = _advantage(m, value)
            shown = _fmt(value) if peer != "(no peer)" else ""
            if value is None and peer != "(no peer)":
                shown = "not measured"
            lines.append(f"| {name} | {unit} | {ours} | {peer} | {shown} | {adv} |")
            first = False
    return lines


def _goal_lines(metrics: list[Metric]) -> tuple[list[str], list[str]]:
    rows = ["| Metric | Goal | This run | Met? |", "|---|---|---|---|"]
    missed: list[str] = []
    for m in metrics:
        if m.goal is None:
            continue
        measured = m.verdict or f"{_fmt(m.kaizen)} {m.unit}"
        if m.goal_met is None:
            verdict = "not measured"
            missed.append(f"`{m.name}`: {m.goal}: not measured in this run.")
        elif m.goal_met:
            verdict = "yes"
        else:
            verdict = "**MISSED**"
            missed.append(f"`{m.name}`: {m.goal}: missed ({measured}).")
        rows.append(f"| `{m.name}` | {m.goal} | {measured} | {verdict} |")
    return rows, missed


def _rollout_section(metrics: list[Metric]) -> list[str]:
    """The rollout simulation (issue 16): our sequential test beside a naive peeking t-test."""
    by_name = {m.name: m for m in metrics if m.name.startswith("rollout_")}
    if not by_name:
        return []
    rows = [
        ("candidate equal: false promotions", "rollout_false_promotion_pct", "%"),
        ("candidate better by δ: median scores/arm to decide",
         "rollout_samples_to_decision_better", ""),
        ("candidate worse by δ: median scores/arm to decide",
         "rollout_samples_to_decision_worse", ""),
    ]
    out = ["", "## Rollout simulation", "",
           "How `kaizen_server.domain.rollouts.msprt` (the always-valid test the local server "
           "decides with) compares with a naive t-test checked after every batch; the setup "
           "and the decision rates are in the notes below "
           "(`benchmarks/bench_rollout_sim.py`).", "",
           "| Scenario | always-valid test (ours) | naive t-test |", "|---|---:|---:|"]
    for label, name, unit in rows:
        m = by_name.get(name)
        if m is None:
            continue
        naive = m.peers.get("naive_ttest")
        out.append(f"| {label} | {_fmt(m.kaizen)}{' ' + unit if unit else ''} | "
                   f"{_fmt(naive)}{' ' + unit if unit and naive is not None else ''} |")
    return out


def render(doc: dict[str, Any], metrics: list[Metric]) -> str:
    """RESULTS.md: goals, the side-by-side table with ratios, notes, machine and versions."""
    machine = doc["machine"]
    kind = "quick smoke run (figures not for quoting)" if doc.get("quick") else "full run"
    if doc.get("partial"):  # --only: some rows re-run, the others kept from an earlier run
        kind = (f"partial run of {', '.join(doc['partial'])} (the other rows are kept from "
                "an earlier run)")
    out = [
        "# Benchmark results",
        "",
        f"Generated by `make bench` (`python -m benchmarks`), {kind}, on {machine.get('date')}.",
        "Every peer was measured in the same run, on the same machine, and for per-call",
        "figures alternately with kaizen in one process, so **compare the ratios**: absolute",
        "times on a shared machine mean little. How each figure is made: "
        "[docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        "## Goals",
        "",
    ]
    goal_rows, missed = _goal_lines(metrics)
    out += [*goal_rows, ""]
    if missed:
        out.append("Goals missed in this run, plainly:")
        out.append("")
        out += [f"- {line}" for line in missed]
    else:
        out.append("Every goal was met in this run.")
    out += [
        "",
        "## Side by side",
        "",
        "\"kaizen advantage\" is the peer's figure / ours for lower-is-better metrics (ours /",
        "the peer's for higher-is-better): above 1x kaizen is better, below 1x the peer is.",
        "\"reference\" rows are absolute costs of the undecorated call, not overheads.",
        "",
    ]
    out += _table(metrics)
    out += _rollout_section(metrics)
    out += ["", "## Notes", ""]
    for m in metrics:
        notes = list(m.notes)
        if m.spread:
            spread = ", ".join(f"{k} {v}" for k, v in m.spread.items())
            notes.append(f"Spread over rounds (25th-75th percentile, {m.unit}): {spread}.")
        for note in notes:
            out.append(f"- `{m.name}`: {note}")
    blocked = doc.get("blocked_connections") or []
    out.append(
        f"- Network: {len(blocked)} connection attempts beyond loopback were refused"
        + (f" ({', '.join(sorted(set(blocked))[:5])})." if blocked else ".")
    )
    if CLOSING_NOTE.exists():  # hand-written analysis of a run, kept across re-renders
        out += ["", CLOSING_NOTE.read_text(encoding="utf-8").strip()]
    out += ["", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in machine.items()]
    out += ["", "## Versions", "", "| package | version |", "|---|---|"]
    out += [f"| {k} | {v if v is not None else 'not installed'} |"
            for k, v in doc["versions"].items()]
    return "\n".join(out) + "\n"


# --- main ----------------------------------------------------------------------------------


def _select(only: str | None) -> list[str]:
    if only is None:
        return MODULES
    selected: list[str] = []
    for name in only.split(","):  # several, comma-separated: one run, in the suite's order
        key = name.strip().removeprefix("benchmarks.").removesuffix(".py")
        found = [c for c in (key, f"bench_{key}") if c in MODULES]
        found = found or [spec[0] for spec in _SPECS if spec[1] == key][:1]
        if not found:
            raise SystemExit(
                f"--only {name!r}: no such module or metric; modules: {', '.join(MODULES)}"
            )
        selected += [m for m in found[:1] if m not in selected]
    return [m for m in MODULES if m in selected]


def _load_previous() -> tuple[list[Metric], list[str]]:
    if not RESULTS_JSON.exists():
        return [], []
    doc = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
    details = doc.get("details", {})
    metrics = [Metric.from_json(r, details.get(r["name"])) for r in doc.get("metrics", [])]
    return metrics, list(doc.get("blocked_connections", []))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Run the kaizen_sdk benchmark suite.")
    parser.add_argument("--quick", action="store_true", help="smoke run: few calls, same paths")
    parser.add_argument("--only", metavar="NAME", help="modules (codec, bench_import, ...) "
                        "or metrics, comma-separated; merges into the existing results.json")
    parser.add_argument("--child", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--out", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.quick, Path(args.out))

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    selected = _select(args.only)
    started = time.perf_counter()
    machine = machine_info()
    print(f"kaizen_sdk benchmarks ({'quick' if args.quick else 'full'}): {', '.join(selected)}",
          flush=True)
    metrics: list[Metric] = []
    blocked: list[str] = []
    if args.only:
        previous, blocked = _load_previous()
        metrics = [m for m in previous if not any(m.name == s[1] and s[0] in selected
                                                  for s in _SPECS)]
    for module_name in selected:
        rows, module_blocked = _run_module(module_name, args.quick)
        metrics += rows
        blocked += module_blocked
    metrics = _order(metrics)
    _cross_goals(metrics)
    machine["load_average_end"] = machine_info()["load_average"]
    machine["bench_seconds"] = round(time.perf_counter() - started, 1)
    doc: dict[str, Any] = {
        "machine": machine,
        "versions": versions(),
        "metrics": [m.to_json() for m in metrics],
        "details": {m.name: m.extras() for m in metrics},
        "quick": bool(args.quick),
        "partial": selected if args.only else None,
        "blocked_connections": blocked,
    }
    RESULTS_JSON.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    RESULTS_MD.write_text(render(doc, metrics), encoding="utf-8")
    print()
    print("\n".join(_table(metrics)))
    goal_rows, missed = _goal_lines(metrics)
    print()
    print("\n".join(goal_rows))
    for line in missed:
        print(f"MISSED: {line}")
    print(f"\nWrote benchmarks/results.json and benchmarks/RESULTS.md "
          f"in {machine['bench_seconds']} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
