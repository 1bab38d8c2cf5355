"""``instrument(openai)`` beside openai-v2 with the network taken out: streamed and not.

Run: ``python -m benchmarks.profile_stream [--calls N] [--rounds R]``. A diagnosis tool, not
part of ``make bench``: the ``instrument_openai_*`` rows there call the OpenAI stand-in over
loopback HTTP, where one streamed call costs about 3 ms of CPU and the overheads to compare
are tens to hundreds of µs, so on a loaded machine their rounds scatter widely.

Here the real ``openai`` client parses answers captured once from the stand-in
(``tests/integrations/openai_standin.py``), served by an ``httpx.MockTransport`` in this
process: every byte the library reads is the same, and no socket or server process adds
noise. For each mode (non-streaming; streamed sync; streamed async, each with
``include_usage`` and read to the end) it times *N* calls of the plain library, kaizen
(``ct.instrument(openai)``, its CT records posted to a null server in another process, the
flush inside the timing) and opentelemetry-instrumentation-openai-v2 (an SDK provider with a
``BatchSpanProcessor`` exporting OTLP/HTTP to the same null server, as in the bench's rows),
alternating over *R* rounds in a rotating order. The overhead of a variant is its CPU µs per
call (all threads of this process) minus the plain call's of the same round; the ratio is
kaizen's overhead / openai-v2's, per round.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main"]



def main(argv: Sequence[str] | None = None) -> int:
    """Print each mode's overheads (median, p25-p75) and the per-round kaizen / openai-v2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    import openai
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    import kaizen_sdk as ct
    from benchmarks.bench_instrument_openai import capture, memory_call
    from benchmarks.bench_task_overhead import NULL_SERVER, start_server
    from benchmarks.peers import otel_provider, otlp_exporter

    plain_answer, stream_answer = capture()
    proc, url = start_server(NULL_SERVER)
    client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000)
    provider = otel_provider(otlp_exporter(url))  # as in the bench's rows: OTLP/HTTP out
    v2 = OpenAIInstrumentor()  # type: ignore[no-untyped-call]
    variants: dict[str, tuple[Callable[[], Any], Callable[[], Any], Callable[[], Any]]] = {
        "plain": (lambda: None, lambda: None, lambda: None),
        "kaizen": (
            lambda: ct.instrument(openai, client=client,
                                  task_map={"You are terse.": "bench_instrument"}),
            lambda: ct.uninstrument(openai),
            client.flush,
        ),
        "openai_v2": (lambda: v2.instrument(tracer_provider=provider), v2.uninstrument,
                      provider.force_flush),
    }
    try:
        for mode, answer, stream, is_async in (
            ("non-streaming, sync", plain_answer, False, False),
            ("streamed, sync", stream_answer, True, False),
            ("streamed, async", stream_answer, True, True),
        ):
            run = memory_call(answer, stream=stream, is_async=is_async)
            per: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for name in names:  # warm-up
                on, off, flush = variants[name]
                on()
                run(max(1, args.calls // 4))
                flush()
                off()
            for r in range(args.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                if r % 2:
                    order.reverse()
                for name in order:
                    on, off, flush = variants[name]
                    on()
                    gc.collect()
                    start = time.process_time()
                    run(args.calls)
                    flush()
                    per[name].append((time.process_time() - start) * 1e6 / args.calls)
                    off()
            base = per["plain"]
            over = {n: [v - b for v, b in zip(per[n], base, strict=True)]
                    for n in ("kaizen", "openai_v2")}
            ratios = [k / o for k, o in zip(over["kaizen"], over["openai_v2"], strict=True)
                      if o > 0]
            print(f"{mode}: plain call {statistics.median(base):.0f} µs CPU "
                  f"({args.calls} calls x {args.rounds} rounds)")
            for name, values in over.items():
                q = statistics.quantiles(values, n=4)
                print(f"  {name:<10} overhead {statistics.median(values):7.1f} µs "
                      f"(p25-p75 {q[0]:.1f} to {q[2]:.1f})")
            if ratios:
                of_medians = statistics.median(over["kaizen"]) / statistics.median(
                    over["openai_v2"])
                print(f"  kaizen / openai_v2 per round: median {statistics.median(ratios):.2f}, "
                      f"range {min(ratios):.2f}-{max(ratios):.2f}; ratio of medians "
                      f"{of_medians:.2f}")
        print(f"\nkaizen delivery: {client.stats()}")
    finally:
        client.close()
        provider.shutdown()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
