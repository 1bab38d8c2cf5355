"""Instructions per call, counted by valgrind: a figure the machine's load cannot move.

Run: ``python -m benchmarks.icount [--calls N] [path ...]``. A diagnosis tool beside
``profile_task`` and ``profile_stream``, not part of ``make bench``: on a shared machine the
timed rows scatter by tens of percent, while the number of instructions a call executes is
the same on every run (it is not time: a cache miss or a lock wait counts as one instruction,
so read it beside the timed rows, never instead of them).

Each path runs in a child process under ``valgrind --tool=cachegrind --cache-sim=no`` (every
thread of the process, so the SDK's delivery thread and the span processor's are counted;
the null CT server it posts to runs in another, uncounted process) twice: with *N* calls and
with *N*/5 calls, each after the same warm-up, flushed every `FLUSH_EVERY` calls (the sender's
and the span processors' timers are held off, see `_child`). The difference divided
by the extra calls is the instructions of one call; start-up and imports cancel out.

Paths: ``bare`` (the undecorated no-op), ``otel_span`` (``start_as_current_span`` on an SDK
provider with a ``BatchSpanProcessor`` into a null exporter), ``task_no_provider`` and
``task_app_provider`` (``@ct.task`` on a no-op, without and with such a provider),
``manual_span`` (the span the decorator makes, with its five attributes, started, made
current and ended by hand), and with the real ``openai`` client answering from memory
(see `benchmarks.profile_stream`): ``openai_plain``/``openai_stream_plain``/
``openai_astream_plain`` (non-streaming, streamed sync, streamed async on an asyncio loop),
``kaizen`` and ``openai_v2`` variants of each (openai-v2's spans exported over OTLP/HTTP to
the null server, as in the bench's rows); and ``litellm_stream_plain``/
``litellm_astream_plain`` (``litellm.completion``/``acompletion`` with ``stream=True`` on an
``openai/`` model, through the same openai client answering from memory) with their
``kaizen`` variants (``ct.instrument(litellm)``). Streamed calls read 13 chunks, usage last.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["FLUSH_EVERY", "PATHS", "count", "main", "per_call"]

PATHS = (
    "bare", "otel_span", "manual_span", "task_no_provider", "task_app_provider",
    "openai_plain", "openai_kaizen", "openai_v2",
    "openai_stream_plain", "openai_stream_kaizen", "openai_stream_v2",
    "openai_astream_plain", "openai_astream_kaizen", "openai_astream_v2",
    "litellm_stream_plain", "litellm_stream_kaizen",
    "litellm_astream_plain", "litellm_astream_kaizen",
)
"""Every path `main` can count, in the order it prints them."""


def _setup(path: str) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    """(one call, flush, close) of *path*, set up and warmed, in this process."""
    from benchmarks.bench_task_overhead import NULL_SERVER, start_server
    from benchmarks.peers import otel_provider, otlp_exporter

    proc, url = start_server(NULL_SERVER)
    closers: list[Callable[[], Any]] = []

    def close() -> None:
        for closer in reversed(closers):
            closer()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)

    def noop(x: int = 1) -> int:
        return x

    if path == "bare":
        return noop, lambda: None, close
    provider = otel_provider(max_queue_size=1_000_000)
    closers.append(provider.shutdown)
    if path == "otel_span":
        tracer = provider.get_tracer("bench")

        def span() -> int:
            with tracer.start_as_current_span("x"):
                return noop()

        return span, provider.force_flush, close
    if path == "manual_span":
        from opentelemetry import context, trace

        tracer = provider.get_tracer("bench")
        attributes = {"openinference.span.kind": "CHAIN", "ct.task.name": "profile_noop",
                      "ct.trace_id": "9a1f6c2e-0b7d-4f43-8d8e-6a1c7b0e9d21",
                      "ct.prompt.version_number": 1,
                      "ct.prompt.version_id": "0b7d7a8e-1f3e-4f43-8d8e-6a1c7b0e9d21"}

        def manual() -> int:
            octx = context.get_current()
            s = tracer.start_span("ct.task profile_noop", octx, attributes=dict(attributes))
            token = context.attach(trace.set_span_in_context(s, octx))
            try:
                return noop()
            finally:
                context.detach(token)
                s.end()

        return manual, provider.force_flush, close

    import kaizen_sdk as ct

    if path.startswith("task_"):
        kwargs: dict[str, Any] = {}
        if path == "task_app_provider":
            kwargs["tracer_provider"] = provider
        client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000,
                             **kwargs)
        closers.append(client.close)
        fn = client.task("profile_noop", default_prompt="Echo {{ x }}")(noop)
        fn()
        client.flush()
        client.get_prompt("profile_noop")  # warm cache: no prompt I/O in the count

        def flush_both() -> None:
            client.flush()
            provider.force_flush()

        return fn, flush_both, close

    import openai

    from benchmarks.bench_instrument_openai import capture, memory_call, memory_litellm_call

    plain, streamed = capture()
    stream = "stream_" in path
    is_async = "_astream_" in path
    library: Any = openai
    if path.startswith("litellm_"):
        import litellm

        library = litellm
        run = memory_litellm_call(streamed, is_async=is_async)
    else:
        run = memory_call(streamed if stream else plain, stream=stream, is_async=is_async)
    flush: Callable[[], Any] = lambda: None  # noqa: E731
    if path.endswith("_kaizen"):
        client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000)
        closers.append(client.close)
        ct.instrument(library, client=client, task_map={"You are terse.": "bench_instrument"})
        flush = client.flush
    elif path.endswith("_v2"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        # as in the bench's rows: spans exported over OTLP/HTTP, as to a collector
        exporting = otel_provider(otlp_exporter(url), max_queue_size=1_000_000)
        closers.append(exporting.shutdown)
        OpenAIInstrumentor().instrument(tracer_provider=exporting)  # type: ignore[no-untyped-call]
        flush = exporting.force_flush
    return (lambda: run(1)), flush, close


FLUSH_EVERY = 100
"""Calls between flushes, as the bench's rounds flush after each batch of calls."""


def _child(path: str, calls: int) -> None:
    # Under valgrind a call runs some 50 times slower: background work that wakes on a timer
    # (the SDK's sender each second, a BatchSpanProcessor every 5 s) would send many small
    # batches, each paying a whole HTTP request. Here batches go out on `FLUSH_EVERY` flushes
    # (or when full), as they do at full speed.
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = str(3_600_000)
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # litellm: no fetch at import
    from kaizen_sdk import delivery

    delivery._SCHEDULE_DELAY = 3600.0
    one, flush, close = _setup(path)
    try:
        for _ in range(50):  # warm-up: caches, connections, first-call work
            one()
        flush()
        for i in range(1, calls + 1):
            one()
            if i % FLUSH_EVERY == 0:
                flush()
        flush()
    finally:
        close()


def count(path: str, calls: int) -> float:
    """Instructions of one call of *path* (see the module docstring)."""
    return per_call(["benchmarks.icount", "--child", path], calls)


def per_call(child: list[str], calls: int) -> float:
    """Instructions of one call: ``python -m <child...> N`` run under cachegrind with *calls*
    and with *calls*/5 calls, the difference divided by the extra calls (start-up and
    imports cancel out). *child* is the module and its arguments before the call count."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed")
    low = max(1, calls // 5)
    totals: list[int] = []
    for n in (low, calls):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [valgrind, "--tool=cachegrind", "--cache-sim=no",
                 f"--cachegrind-out-file={os.path.join(tmp, 'out')}",
                 sys.executable, "-m", *child, str(n)],
                capture_output=True, text=True, check=True,
            )
        found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if found is None:
            raise SystemExit(f"no instruction count for {child}: {out.stderr[-500:]}")
        totals.append(int(found.group(1).replace(",", "")))
    return (totals[1] - totals[0]) / (calls - low)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the instructions per call of each path asked for (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "N"), help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=f"any of {', '.join(PATHS)} (default: all)")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]))
        return 0
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths: {', '.join(unknown)}")
    for path in args.paths or PATHS:
        print(f"{path:<22}{count(path, args.calls):>14,.0f} instructions per call", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
