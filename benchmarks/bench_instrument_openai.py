"""Per-call overhead of ``ct.instrument(openai)``: instrumented minus uninstrumented time.

Calls go to the OpenAI stand-in server (``tests/integrations/openai_standin.py``) running in a
separate process on loopback, so the network and the server's work are the same for every
variant and cancel out in the difference. CT records are delivered to a local CT server in
another process; our exporter's CPU is ours (it competes for the GIL), so every batch of an
instrumented variant ends with a flush inside the timing.

Variants are timed **alternately**, round after round, in an order that rotates, each batch
switched on (``on()``) before and off (``off()``) after, outside the timing. A round's figure
is CPU µs per call of this process (all its threads); the overhead is the median over rounds
of (variant - uninstrumented) from the same round.

Reuse: `measure` takes any list of `Variant` objects, so peers (OpenTelemetry's and
OpenInference's openai instrumentors) can be timed in the same run by passing a `Variant`
whose ``on``/``off`` call their ``instrument()``/``uninstrument()``.

Run: ``python benchmarks/bench_instrument_openai.py [--calls N] [--rounds R] [--stream]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = [
    "Result",
    "Variant",
    "kaizen_litellm_variant",
    "kaizen_variant",
    "litellm_stream_call",
    "measure",
    "openai_call",
    "servers",
]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STANDIN_DIR = os.path.join(_ROOT, "tests", "integrations")

_STANDIN = f"""
import sys
sys.path.insert(0, {_STANDIN_DIR!r})
from openai_standin import StandIn
server = StandIn().start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""

_CT_SERVER = """
from kaizen_server import LocalServer
import sys
server = LocalServer(api_key="bench-key").start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarize: the printer on floor 3 is jammed again"},
]


@dataclasses.dataclass
class Variant:
    """One way of running the call: ``on()`` before a batch, ``off()`` after (not timed)."""

    name: str
    on: Callable[[], None]
    off: Callable[[], None]
    flush: Callable[[], None] | None = None


@dataclasses.dataclass
class Result:
    """Per-call CPU µs of a variant per round, and its overhead over the plain call."""

    per_call_us: list[float]
    overhead_us: list[float]

    @property
    def median_overhead_us(self) -> float:
        """The median over rounds of (this variant - uninstrumented), in µs per call."""
        return statistics.median(self.overhead_us)

    @property
    def spread(self) -> str:
        """The 25th-75th percentile of the overhead, as text."""
        if len(self.overhead_us) < 4:
            return f"{min(self.overhead_us):.3g}-{max(self.overhead_us):.3g}"
        q = statistics.quantiles(self.overhead_us, n=4)
        return f"{q[0]:.3g}-{q[2]:.3g}"


def _spawn(script: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("a benchmark server did not start")
    return proc, url


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """Start the OpenAI stand-in and a local CT server in their own processes.

    Yields ``(openai_base_url, ct_base_url)``; the CT server's API key is ``bench-key``.
    """
    procs: list[subprocess.Popen[str]] = []
    try:
        standin, openai_url = _spawn(_STANDIN)
        procs.append(standin)
        ct_server, ct_url = _spawn(_CT_SERVER)
        procs.append(ct_server)
        yield openai_url, ct_url
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def kaizen_variant(ct_base_url: str, api_key: str = "bench-key") -> Variant:
    """``ct.instrument(openai)`` with a client that delivers to *ct_base_url*."""
    import openai

    import kaizen_sdk as ct
    from kaizen_sdk.client import CTClient

    client = CTClient(base_url=ct_base_url, api_key=api_key)
    return Variant(
        name="kaizen",
        # a named task: a call no task names is a span only, and sends no CT record
        on=lambda: ct.instrument(openai, client=client,
                                 task_map={"You are terse.": "bench_instrument"}),
        off=lambda: ct.uninstrument(openai),
        flush=client.flush,
    )


def kaizen_litellm_variant(ct_base_url: str, api_key: str = "bench-key") -> Variant:
    """``ct.instrument(litellm)`` with a client that delivers to *ct_base_url*."""
    import litellm

    import kaizen_sdk as ct
    from kaizen_sdk.client import CTClient

    client = CTClient(base_url=ct_base_url, api_key=api_key)

    def flush() -> None:
        client.flush()

    return Variant(
        name="kaizen",
        on=lambda: ct.instrument(litellm, client=client,
                                 task_map={"You are terse.": "bench_instrument"}),
        off=lambda: ct.uninstrument(litellm),
        flush=flush,
    )


def litellm_stream_call(openai_base_url: str, *, is_async: bool = False) -> Callable[[int], None]:
    """``run(n)``: *n* streamed ``litellm`` completions (an ``openai/`` model, usage included,
    read to the end) against the OpenAI stand-in."""
    import litellm

    kwargs: dict[str, Any] = {
        "model": "openai/m", "messages": MESSAGES, "api_base": openai_base_url,
        "api_key": "sk-bench", "stream": True, "stream_options": {"include_usage": True},
    }
    if not is_async:

        def run(n: int) -> None:
            for _ in range(n):
                for _chunk in litellm.completion(**kwargs):
                    pass

        return run
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            async for _chunk in await litellm.acompletion(**kwargs):
                pass

    return lambda n: loop.run_until_complete(many(n))


def openai_call(
    openai_base_url: str, *, stream: bool = False, is_async: bool = False
) -> Callable[[int], None]:
    """A batch runner: ``run(n)`` makes *n* chat completions against the stand-in."""
    import openai

    kwargs: dict[str, Any] = {"model": "m", "messages": MESSAGES}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    if not is_async:
        client = openai.OpenAI(base_url=openai_base_url, api_key="sk-bench", max_retries=0)

        def run(n: int) -> None:
            for _ in range(n):
                out = client.chat.completions.create(**kwargs)
                if stream:
                    for _chunk in out:
                        pass

        return run

    aclient = openai.AsyncOpenAI(base_url=openai_base_url, api_key="sk-bench", max_retries=0)
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            out = await aclient.chat.completions.create(**kwargs)
            if stream:
                async for _chunk in out:
                    pass

    def run_async(n: int) -> None:
        loop.run_until_complete(many(n))

    return run_async


def _timed(batch: Callable[[int], None], calls: int, variant: Variant | None) -> float:
    if variant is not None:
        variant.on()
    try:
        gc.collect()
        start = time.process_time()
        batch(calls)
        if variant is not None and variant.flush is not None:
            variant.flush()
        return (time.process_time() - start) * 1e6 / calls
    finally:
        if variant is not None:
            variant.off()


def measure(
    variants: Sequence[Variant],
    batch: Callable[[int], None],
    *,
    calls: int = 200,
    rounds: int = 15,
    max_seconds: float | None = None,
) -> dict[str, Result]:
    """Time *variants* and the uninstrumented call alternately; return each one's overhead."""
    everyone: list[Variant | None] = [None, *variants]
    for variant in everyone:  # warm-up: imports, connections, caches
        _timed(batch, max(1, calls // 4), variant)
    plain: list[float] = []
    per_call: dict[str, list[float]] = {v.name: [] for v in variants}
    started = time.perf_counter()
    for r in range(rounds):
        shift = r % len(everyone)
        order = everyone[shift:] + everyone[:shift]
        if r % 2:
            order.reverse()
        for variant in order:
            figure = _timed(batch, calls, variant)
            if variant is None:
                plain.append(figure)
            else:
                per_call[variant.name].append(figure)
        if max_seconds is not None and r >= 2 and time.perf_counter() - started > max_seconds:
            break
    return {
        name: Result(samples, [s - p for s, p in zip(samples, plain, strict=True)])
        for name, samples in per_call.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the overhead of ``ct.instrument(openai)`` per call (sync and async, one mode)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds")
    parser.add_argument("--stream", action="store_true", help="stream=True with usage")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    with servers() as (openai_url, ct_url):
        variant = kaizen_variant(ct_url)
        for is_async in (False, True):
            batch = openai_call(openai_url, stream=args.stream, is_async=is_async)
            result = measure([variant], batch, calls=args.calls, rounds=args.rounds)["kaizen"]
            key = f"instrument_openai_overhead{'_async' if is_async else ''}_us"
            out[key] = {
                "median": round(result.median_overhead_us, 1),
                "p25-p75": result.spread,
                "instrumented_per_call_us": round(statistics.median(result.per_call_us), 1),
            }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        mode = "stream" if args.stream else "json"
        for key, row in out.items():
            print(f"{key} ({mode}): {row['median']} µs per call (p25-p75 {row['p25-p75']}; "
                  f"instrumented call {row['instrumented_per_call_us']} µs CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
