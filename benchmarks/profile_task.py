"""Where one ``@ct.task`` call spends its CPU: the caller's thread against the background.

Run: ``python -m benchmarks.profile_task [--calls N] [--rounds R]``. It is a diagnosis tool,
not part of ``make bench``. For each path (the bare function, a bare OpenTelemetry SDK span,
``@ct.task`` with no application provider, ``@ct.task`` on an application SDK provider with a
``BatchSpanProcessor``) it times *N* calls plus the flush, alternating over *R* rounds, and
splits the CPU time into:

- **caller**: ``time.thread_time()`` of the calling thread over the calls;
- **background**: the rest of the process's CPU (``time.process_time()``) over the calls and
  the flush: the SDK's delivery thread (and the application provider's span processor), per
  record; the delivery thread's own time is split into building the requests, encoding the
  batch and the HTTP post (CPU time of that thread, per record).

Then it profiles the caller's thread with cProfile and shows, per component, its share of the
decorated call (cumulative time of the listed functions; cProfile inflates every call
alike, so read shares, not microseconds). Records go to a null server in another process.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable, Sequence

from benchmarks._harness import cpu_split
from benchmarks.bench_task_overhead import NULL_SERVER, start_server
from benchmarks.peers import otel_provider

__all__ = ["COMPONENTS", "main"]

COMPONENTS: dict[str, tuple[str, ...]] = {
    "SDK span start (Span init, sampler, ids)": ("sdk/trace/__init__.py:start_span",),
    "  of which attribute validation": ("attributes/__init__.py:_set_items",),
    "SDK span end + span processors": ("sdk/trace/__init__.py:end",),
    "CT record hand-over (Delivery.submit)": ("kaizen_sdk/delivery.py:submit",),
    "prompt cache lookup": ("kaizen_sdk/cache.py:lookup",),
    "context attach/detach": ("context/__init__.py:attach", "context/__init__.py:detach"),
}
"""Component -> ``path-suffix:function`` of the functions whose cumulative time it is."""


_STAGES: dict[str, float] = {}
"""CPU seconds of the delivery thread per stage, while `_count_stages` is installed."""


def _count_stages() -> None:
    """Time the delivery thread's stages: build (``build_batch``), encode, post."""
    from kaizen_sdk import _sender, delivery

    def timed(stage: str, fn: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                _STAGES[stage] = _STAGES.get(stage, 0.0) + time.thread_time() - start
        return run

    delivery.build_batch = timed("build", delivery.build_batch)  # type: ignore[assignment]
    _sender.encode_batch = timed("encode", _sender.encode_batch)  # type: ignore[assignment]
    _sender.Sender.post = timed("post", _sender.Sender.post)  # type: ignore[method-assign]


def _shares(fn: Callable[[], object], calls: int) -> dict[str, float]:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        fn()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
    out: dict[str, float] = {}
    for label, keys in COMPONENTS.items():
        cum = 0.0
        for key in keys:
            suffix, func = key.rsplit(":", 1)
            cum += sum(ct for (file, _, name), (_, _, _, ct, _) in stats.items()
                       if file.endswith(suffix) and name == func)
        out[label] = cum / total if total else 0.0
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print the caller/background split per path and the caller's component shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import kaizen_sdk as ct

    _count_stages()
    proc, url = start_server(NULL_SERVER)
    # queues large enough that no span of a round is dropped (a dropped span costs less)
    provider = otel_provider(max_queue_size=1_000_000)
    tracer = provider.get_tracer("bench")

    def noop(x: int = 1) -> int:
        return x

    def span() -> int:
        with tracer.start_as_current_span("x"):
            return noop()

    plain = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000)
    app_provider = otel_provider(max_queue_size=1_000_000)  # like the bare span's, its own
    on_app = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000,
                         tracer_provider=app_provider)
    try:
        paths: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "bare": (noop, lambda: None),
            "otel_span": (span, provider.force_flush),
        }
        for name, client, own in (("kaizen_no_provider", plain, provider),
                                  ("kaizen_app_provider", on_app, app_provider)):
            fn = client.task("profile_noop", default_prompt="Echo {{ x }}")(noop)
            fn()
            client.flush()
            client.get_prompt("profile_noop")  # warm cache: no prompt I/O in the timing

            def flush(client: ct.CTClient = client, own: object = own) -> None:
                client.flush()
                own.force_flush()  # type: ignore[attr-defined]

            paths[name] = (fn, flush)
        split: dict[str, list[tuple[float, float]]] = {n: [] for n in paths}
        stages: dict[str, list[dict[str, float]]] = {n: [] for n in paths}
        for _ in range(args.rounds):
            for name, (fn, flush) in paths.items():
                _STAGES.clear()
                split[name].append(cpu_split(fn, flush, args.calls))
                stages[name].append({k: v / args.calls * 1e6 for k, v in _STAGES.items()})
        print(f"{args.calls} calls x {args.rounds} rounds, CPU µs per call (median)")
        print(f"{'path':<22}{'caller':>9}{'background':>12}{'total':>9}{'/ span':>8}")
        span_total = sum(statistics.median(x[i] for x in split["otel_span"]) for i in (0, 1))
        for name, values in split.items():
            caller = statistics.median(v[0] for v in values)
            background = statistics.median(v[1] for v in values)
            print(f"{name:<22}{caller:9.2f}{background:12.2f}{caller + background:9.2f}"
                  f"{(caller + background) / span_total:8.2f}")
        print("\ndelivery thread, CPU µs per record (median): build / encode / post")
        for name in ("kaizen_no_provider", "kaizen_app_provider"):
            parts = [statistics.median(r.get(k, 0.0) for r in stages[name])
                     for k in ("build", "encode", "post")]
            print(f"  {name:<22}" + " / ".join(f"{p:.2f}" for p in parts))
        for name in ("kaizen_no_provider", "kaizen_app_provider", "otel_span"):
            fn, flush = paths[name]
            shares = _shares(fn, args.calls)
            flush()
            print(f"\n{name}: share of the caller's time (cProfile)")
            for label, share in shares.items():
                print(f"  {label:<52}{share * 100:5.1f} %")
        print(f"\nno provider: {plain.stats()}\napp provider: {on_app.stats()}")
    finally:
        plain.close()
        on_app.close()
        provider.shutdown()
        app_provider.shutdown()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
