"""Where the instructions of one decorated call go, on an application's SDK provider.

Run: ``python -m benchmarks.icount_breakdown [--calls N] [--flush-every F]`` (needs
valgrind). A diagnosis tool beside `benchmarks.icount`, not part of ``make bench``: each
variant below runs in a child process under cachegrind, counted as `benchmarks.icount`
counts (every thread of the process; two runs of *N* and *N*/5 calls, the difference divided
by the extra calls), flushed every *F* calls: 2,000 by default, as ``make bench``'s rounds
are, so a record pays the share of an HTTP post it pays there (`benchmarks.icount` flushes
every 100 calls: ten times the post's share). Each row is a difference of two variants:

- ``span``: ``start_span`` without attributes, made current, ended (the decorator's span);
- ``attributes``: the same span with the decorator's five attributes given to
  ``start_span``, less ``span`` (what the SDK's validation costs; the decorator skips it
  where nothing could tell, see `kaizen_sdk._sdk_spans`);
- ``task``: the decorated no-op; ``task, record not queued``: the same with
  ``Delivery.submit`` doing nothing; ``task, record not sent``: with the sender's
  ``deliver`` answering at once (no encoding, no HTTP);
- ``task, no inputs/output``: ``capture_inputs`` and ``capture_output`` off.

It prints each variant and the split of ``task``: the span, the decorator's own work in the
caller (its attributes included, however it sets them), queueing and building the record,
its encoding and HTTP post. The bare span (``start_as_current_span``, the bench's
reference) is printed beside it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.icount import per_call

__all__ = ["VARIANTS", "main"]

VARIANTS = (
    "bare_span", "span", "span_attributes", "task", "task_not_queued", "task_not_sent",
    "task_no_capture",
)
"""Every variant, in the order `main` counts them."""

_ATTRIBUTES = {
    "openinference.span.kind": "CHAIN", "ct.task.name": "profile_noop",
    "ct.trace_id": "9a1f6c2e-0b7d-7f43-8d8e-6a1c7b0e9d21", "ct.prompt.version_number": 1,
    "ct.prompt.version_id": "0b7d7a8e-1f3e-4f43-8d8e-6a1c7b0e9d21",
}


def _setup(variant: str) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[], None]]:
    """(one call, flush, close) of *variant*, set up in this process."""
    from benchmarks.bench_task_overhead import NULL_SERVER, start_server
    from benchmarks.peers import otel_provider

    provider = otel_provider(max_queue_size=1_000_000)
    tracer = provider.get_tracer("bench")

    def noop(x: int = 1) -> int:
        return x

    if variant == "bare_span":

        def bare() -> int:
            with tracer.start_as_current_span("x"):
                return noop()

        return bare, provider.force_flush, provider.shutdown
    if variant.startswith("span"):
        from opentelemetry import context, trace

        given = _ATTRIBUTES if variant == "span_attributes" else None

        def manual() -> int:
            octx = context.get_current()
            span = tracer.start_span("ct.task profile_noop", octx,
                                     attributes=None if given is None else dict(given))
            token = context.attach(trace.set_span_in_context(span, octx))
            try:
                return noop()
            finally:
                context.detach(token)
                span.end()

        return manual, provider.force_flush, provider.shutdown

    import kaizen_sdk as ct
    from kaizen_sdk import _sender, delivery

    if variant == "task_not_queued":
        delivery.Delivery.submit = lambda self, record: None  # type: ignore[method-assign]
    elif variant == "task_not_sent":
        _sender.Sender.deliver = lambda self, batch, deadline: (0, 0)  # type: ignore[method-assign]
    proc, url = start_server(NULL_SERVER)
    client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000,
                         tracer_provider=provider)
    capture = variant != "task_no_capture"
    fn = client.task("profile_noop", default_prompt="Echo {{ x }}", capture_inputs=capture,
                     capture_output=capture)(noop)
    fn()
    client.flush()
    client.get_prompt("profile_noop")  # a warm cache: no prompt I/O in the count

    def flush() -> None:
        client.flush()
        provider.force_flush()

    def close() -> None:
        client.close()
        provider.shutdown()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)

    return fn, flush, close


def _child(variant: str, calls: int, flush_every: int) -> None:
    # as in benchmarks.icount: batches go out on flushes (or when full), not on timers that
    # valgrind's slowdown would fire after a few calls each
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = str(3_600_000)
    from kaizen_sdk import delivery

    delivery._SCHEDULE_DELAY = 3600.0
    one, flush, close = _setup(variant)
    try:
        for _ in range(50):
            one()
        flush()
        for i in range(1, calls + 1):
            one()
            if i % flush_every == 0:
                flush()
        flush()
    finally:
        close()


def _count(variant: str, calls: int, flush_every: int) -> float:
    # the call count goes last: `per_call` appends it
    return per_call(["benchmarks.icount_breakdown", "--child", variant, str(flush_every)], calls)


def main(argv: Sequence[str] | None = None) -> int:
    """Count every variant and print the split of one decorated call."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--flush-every", type=int, default=2000)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "F", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[2]), int(args.child[1]))
        return 0
    got: dict[str, float] = {}
    for variant in VARIANTS:
        got[variant] = _count(variant, args.calls, args.flush_every)
        print(f"{variant:<18}{got[variant]:>12,.0f} instructions per call", flush=True)
    task, bare = got["task"], got["bare_span"]
    rows = [
        ("span (start, current, end; no attributes)", got["span"]),
        ("decorator in the caller (its attributes too)", got["task_not_queued"] - got["span"]),
        ("record: queue and build", got["task_not_sent"] - got["task_not_queued"]),
        ("record: encode and HTTP post", task - got["task_not_sent"]),
    ]
    print(f"\ntask: {task:,.0f} instructions, {task / bare:.2f}x the bare span ({bare:,.0f})")
    for name, value in rows:
        print(f"  {name:<46}{value:>10,.0f}  {value / task:6.1%}")
    print(f"  (inputs and output capture, in the rows above: "
          f"{task - got['task_no_capture']:,.0f}; five attributes given to start_span: "
          f"{got['span_attributes'] - got['span']:,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
