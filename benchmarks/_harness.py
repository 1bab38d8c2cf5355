"""Shared benchmark machinery: the `Metric` record, alternating side-by-side timing, and facts.

Timing rules (why the figures can be compared):

- Contenders are timed **alternately in one process**: round after round, each contender runs
  one batch of calls, in an order that rotates every round, so a busy neighbour on a shared
  machine slows every contender alike instead of one of them. The figure is the **median**
  per-call time over the rounds; the spread (25th-75th percentile) is kept beside it.
- A batch includes the contender's own flush (``flush`` hook), so background work that competes
  for the GIL (span export, encoding, uploads) is paid inside the measured time.
- The clock is the **CPU time of this process** (``time.process_time``: every thread, the
  caller's and the background exporters'), not wall time: on a shared 2-core machine wall time
  mostly measures the neighbours. Servers and sinks run in other processes, so their CPU is not
  counted, and waiting on a socket costs no CPU.
- The garbage collector runs ``gc.collect()`` before every batch so each starts from the same
  heap, and stays **enabled** during the batch: allocation-heavy code pays for its collections,
  as it would in an application.
- A guard (`loopback_only`) refuses any socket connection that is not to 127.0.0.1/::1, so no
  peer can reach the network; refused attempts are counted and reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import gc
import importlib.metadata
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Literal

__all__ = [
    "VERSION_PACKAGES",
    "Contender",
    "Metric",
    "Timing",
    "alternate",
    "async_batch",
    "blocked_connections",
    "call_latencies",
    "cpu_split",
    "loopback_only",
    "machine_info",
    "sync_batch",
    "versions",
]

Better = Literal["lower", "higher"]


def cpu_split(
    fn: Callable[[], object], flush: Callable[[], object], calls: int
) -> tuple[float, float]:
    """Call *fn* *calls* times, then *flush*: (caller µs, background µs) per call.

    The caller's share is this thread's CPU over the calls; the background's is the rest of
    the process's CPU over the calls and the flush (every other thread: a delivery thread, a
    span processor's worker).
    """
    gc.collect()
    p0, t0 = time.process_time(), time.thread_time()
    for _ in range(calls):
        fn()
    t1 = time.thread_time()
    flush()
    p1 = time.process_time()
    return (t1 - t0) / calls * 1e6, ((p1 - p0) - (t1 - t0)) / calls * 1e6


@dataclasses.dataclass
class Metric:
    """One row of results.json: our figure and each peer's (``None`` when not measured).

    ``goal`` is a one-line statement of the target (or ``None``); ``goal_met`` says whether this
    run met it; ``notes`` explain anything a reader must know (a peer that failed to import,
    what exactly was timed). ``spread`` holds "p25-p75" text per contender (key ``kaizen`` for
    ours) for RESULTS.md.
    """

    name: str
    unit: str
    better: Better
    kaizen: float | None
    peers: dict[str, float | None] = dataclasses.field(default_factory=dict)
    goal: str | None = None
    goal_met: bool | None = None
    verdict: str | None = None
    """What this run measured against the goal, in words (e.g. "2.06x the bare span")."""
    notes: list[str] = dataclasses.field(default_factory=list)
    spread: dict[str, str] = dataclasses.field(default_factory=dict)
    references: list[str] = dataclasses.field(default_factory=list)
    """Peers shown as an absolute reference, without a ratio (e.g. the bare call's own cost)."""

    def to_json(self) -> dict[str, Any]:
        """The shape the issue fixes: name, unit, better, kaizen, peers."""
        return {
            "name": self.name,
            "unit": self.unit,
            "better": self.better,
            "kaizen": _round(self.kaizen),
            "peers": {k: _round(v) for k, v in self.peers.items()},
        }

    def extras(self) -> dict[str, Any]:
        """What results.json keeps beside the fixed shape (goal, notes, spread)."""
        return {
            "goal": self.goal,
            "goal_met": self.goal_met,
            "verdict": self.verdict,
            "notes": list(self.notes),
            "spread": dict(self.spread),
            "references": list(self.references),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any], extras: dict[str, Any] | None = None) -> Metric:
        """Rebuild a metric from its results.json row (and extras)."""
        extra = extras or {}
        return cls(
            name=row["name"],
            unit=row["unit"],
            better=row["better"],
            kaizen=row["kaizen"],
            peers=dict(row.get("peers", {})),
            goal=extra.get("goal"),
            goal_met=extra.get("goal_met"),
            verdict=extra.get("verdict"),
            notes=list(extra.get("notes", [])),
            spread=dict(extra.get("spread", {})),
            references=list(extra.get("references", [])),
        )


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return float(f"{value:.4g}")


# --- alternating timing ----------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """Something to time: ``batch(n)`` makes *n* calls; ``flush()`` ends its background work."""

    name: str
    batch: Callable[[int], None]
    flush: Callable[[], None] | None = None


@dataclasses.dataclass
class Timing:
    """Per-call times (µs) of one contender over all rounds."""

    samples: list[float]

    @property
    def median(self) -> float:
        """The median per-call time in µs."""
        return statistics.median(self.samples)

    @property
    def spread(self) -> str:
        """The 25th-75th percentile range, as text."""
        if len(self.samples) < 4:
            return f"{min(self.samples):.3g}-{max(self.samples):.3g}"
        q = statistics.quantiles(self.samples, n=4)
        return f"{q[0]:.3g}-{q[2]:.3g}"


def sync_batch(fn: Callable[[], object]) -> Callable[[int], None]:
    """Turn a zero-argument function into a batch runner."""

    def run(n: int) -> None:
        for _ in range(n):
            fn()

    return run


def async_batch(
    fn: Callable[[], Coroutine[Any, Any, object]], loop: asyncio.AbstractEventLoop
) -> Callable[[int], None]:
    """Turn a zero-argument coroutine function into a batch runner on *loop*."""

    async def many(n: int) -> None:
        for _ in range(n):
            await fn()

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return run


def alternate(
    contenders: list[Contender],
    *,
    calls: int,
    rounds: int,
    warmup_rounds: int = 1,
    max_seconds: float | None = None,
    clock: Callable[[], float] = time.process_time,
) -> dict[str, Timing]:
    """Time *contenders* side by side: *rounds* batches of *calls* each, order rotating.

    Returns per-call µs samples for each contender (batch time on *clock*, flush included,
    divided by *calls*). Stops early (after at least three rounds, counted in wall time)
    when *max_seconds* is exceeded.
    """
    for _ in range(warmup_rounds):
        for c in contenders:
            c.batch(max(1, calls // 4))
            if c.flush is not None:
                c.flush()
    samples: dict[str, list[float]] = {c.name: [] for c in contenders}
    started = time.perf_counter()
    for r in range(rounds):
        shift = r % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        if r % 2:
            order.reverse()
        for c in order:
            gc.collect()
            t0 = clock()
            c.batch(calls)
            if c.flush is not None:
                c.flush()
            t1 = clock()
            samples[c.name].append((t1 - t0) * 1e6 / calls)
        if max_seconds is not None and r >= 2 and time.perf_counter() - started > max_seconds:
            break
    return {name: Timing(s) for name, s in samples.items()}


def call_latencies(
    contenders: list[Contender], *, calls: int, chunks: int = 10
) -> dict[str, dict[str, float]]:
    """Wall-time latency of single calls as the caller sees it: p50, p99 and max, in µs.

    Each contender makes *calls* calls one at a time, in *chunks* that alternate between the
    contenders; its flush runs between chunks, outside the timing. Stalls show up here (a
    call that waits for the GIL while a background exporter encodes), not in the medians.
    """
    lat: dict[str, list[float]] = {c.name: [] for c in contenders}
    per_chunk = max(1, calls // chunks)
    clock = time.perf_counter_ns
    for _ in range(chunks):
        for c in contenders:
            one = c.batch
            out = lat[c.name]
            for _ in range(per_chunk):
                t0 = clock()
                one(1)
                out.append((clock() - t0) / 1000.0)
            if c.flush is not None:
                c.flush()
    result: dict[str, dict[str, float]] = {}
    for name, values in lat.items():
        values.sort()
        result[name] = {
            "p50": values[len(values) // 2],
            "p99": values[min(len(values) - 1, int(len(values) * 0.99))],
            "max": values[-1],
        }
    return result


# --- nothing leaves the machine ----------------------------------------------------------

_BLOCKED: list[str] = []
_LOOPBACK = ("127.", "::1", "localhost")


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host.startswith(_LOOPBACK) or host == "::ffff:127.0.0.1"
    return isinstance(address, (str, bytes))  # AF_UNIX paths stay on the machine


@contextmanager
def loopback_only() -> Iterator[None]:
    """Refuse every socket connection that is not to loopback (counted in `blocked_connections`)."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            _BLOCKED.append(repr(address))
            raise ConnectionRefusedError(f"benchmark guard: {address!r} is not loopback")
        original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            _BLOCKED.append(repr(address))
            return 111  # ECONNREFUSED
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        socket.socket.connect = original_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = original_connect_ex  # type: ignore[method-assign]


def blocked_connections() -> list[str]:
    """Addresses the guard refused so far in this process."""
    return list(_BLOCKED)


# --- machine and versions ----------------------------------------------------------------

VERSION_PACKAGES = (
    "kaizen-sdk",
    "msgspec",
    "httpx",
    "wrapt",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-http",
    "langfuse",
    "langsmith",
    "openai",
    "opentelemetry-instrumentation-openai-v2",
    "openinference-instrumentation-openai",
    "pydantic",
    "litellm",
    "traceloop-sdk",
    "mlflow-tracing",
    "opik",
)


def versions() -> dict[str, str | None]:
    """Installed versions of Python and every package the benchmarks touch (None: missing)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Facts about this machine and this run (the load average shows how busy it was)."""
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gb": _mem_total_gb(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "load_average": load,
    }
