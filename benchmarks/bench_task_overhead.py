"""Per-call overhead of ``@ct.task`` against a bare function and a bare OpenTelemetry span.

Four variants run alternately in one process, so they share the machine's state:

- ``bare``: the undecorated no-op function;
- ``otel``: ``with tracer.start_as_current_span("x"): fn()`` on an SDK ``TracerProvider`` with a
  ``BatchSpanProcessor`` (no attributes) and an exporter that drops spans;
- ``task``: the same no-op decorated with ``@ct.task`` (warm prompt cache, delivery on), posting
  to a local CT server that runs in a separate process (its CPU is not ours; our exporter's
  CPU is, since it competes for the GIL: every round ends with a flush inside the timing);
- ``task+rollout``: the same, for a task whose prompt is in a rollout (share 0.5): each call
  also picks its arm (``assign_by`` an argument; the same key every call, so its hash is
  cached) and records it. ``task`` is the cost with no rollout running.

Times are CPU seconds of this process (all its threads: the callers' and the background
exporters'), not wall time: on a shared 2-core machine wall time mostly measures the other
processes. The local server's CPU is excluded (another process); waiting on it is not CPU.

Run: ``python benchmarks/bench_task_overhead.py [--calls N] [--rounds R]``. Prints CPU µs per
call (best and median round) and the task/otel ratio, for sync and async functions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

_SERVER = """
import sys, time
from kaizen_server import LocalServer
server = LocalServer(api_key="bench-key").start()
print(server.base_url, flush=True)
sys.stdin.read()
server.stop()
"""


NULL_SERVER = r"""
import socket, sys, threading
PROMPT = (b'{"id":"0b7d7a8e-1f3e-4f43-8d8e-6a1c7b0e9d21","task_id":"6f1c0c43-5a53-4c1f-9a53-'
          b'3c7f1f6c2a10","version_number":1,"prompt_text":"Echo {{ x }}","status":"active"}')
ROLLOUT = PROMPT[:-1] + (b',"rollout":{"id":"3c1d2f4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f","share":0.5,'
                        b'"salt":"bench","candidate":{"id":"7d2e1f3a-4b5c-4d6e-9f80-1a2b3c4d5e6f",'
                        b'"version_number":2,"prompt_text":"Echo! {{ x }}","status":"candidate"}}}')
INGEST = b'{"accepted":0,"errors":[]}'

def reply(conn, status, body):
    conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d"
                 b"\r\n\r\n" % (status, len(body)) + body)

def serve(conn):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            data = conn.recv(1 << 20)
            if not data:
                return
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(buf) < length:
            buf += conn.recv(1 << 20)
        buf = buf[length:]
        if head.startswith(b"GET /api/v1/prompts/bench_rollout"):
            reply(conn, 200, ROLLOUT)
        elif head.startswith(b"GET /api/v1/prompts/"):
            reply(conn, 200, PROMPT)
        else:
            reply(conn, 207, INGEST)

srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print("http://127.0.0.1:%d" % srv.getsockname()[1], flush=True)

def accept():
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()

threading.Thread(target=accept, daemon=True).start()
sys.stdin.read()  # the benchmark closes stdin when it is done
"""


def start_server(code: str = _SERVER) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit("the local CT server did not start")
    return proc, url


def _time_sync(fn: Callable[[], object], calls: int, after: Callable[[], object]) -> float:
    start = time.process_time()
    for _ in range(calls):
        fn()
    after()
    return (time.process_time() - start) / calls * 1e6


def _time_async(
    fn: Callable[[], object],
    calls: int,
    after: Callable[[], object],
    loop: asyncio.AbstractEventLoop,
) -> float:
    async def run() -> None:
        for _ in range(calls):
            await fn()  # type: ignore[misc]

    start = time.process_time()
    loop.run_until_complete(run())
    after()
    return (time.process_time() - start) / calls * 1e6


def _assignment_ns(fn: object, plain: object, split: object) -> dict[str, float]:
    """The decorator's rollout step alone, without the span around it (ns per call)."""
    import timeit

    spec = fn._self_spec  # type: ignore[attr-defined]
    n = 100_000

    def best(stmt: Callable[[], object]) -> float:
        return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e9

    keys = [str(i) for i in range(n)]
    fresh = iter(keys * 6)
    return {
        "no rollout (the one check)": best(lambda: plain.rollout is not None),  # type: ignore[attr-defined]
        "rollout, repeat key (cached hash)": best(lambda: spec.assign(split, None, (1,), {})),
        "rollout, new key every call": best(
            lambda: spec.assign(split, None, (next(fresh),), {})),
        "rollout, no key (random)": best(
            lambda: spec.assign(split, None, (), {"x": None})),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per variant")
    parser.add_argument(
        "--server",
        choices=("local", "null"),
        default="local",
        help="receive the records in a LocalServer (SQLite, default) or in a null server "
        "that answers 207 without parsing or storing (the SDK's own cost only: on a small "
        "machine the LocalServer's SQLite work slows the measured process down)",
    )
    args = parser.parse_args(argv)

    import kaizen_sdk as ct
    from benchmarks.peers import otel_provider

    # queues large enough that no span of a round is dropped (a dropped span costs less)
    provider = otel_provider(max_queue_size=1_000_000)
    tracer = provider.get_tracer("bench")

    proc, url = start_server(NULL_SERVER if args.server == "null" else _SERVER)
    try:
        client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000)
        # path (b): the application's own SDK provider, built like the bare span's
        app_provider = otel_provider(max_queue_size=1_000_000)
        app_client = ct.CTClient(base_url=url, api_key="bench-key", max_queue_size=1_000_000,
                                 tracer_provider=app_provider)

        def noop(x: int = 1) -> int:
            return x

        async def anoop(x: int = 1) -> int:
            return x

        task_fn = client.task("bench_noop", default_prompt="Echo {{ x }}")(noop)
        atask_fn = client.task("bench_noop", default_prompt="Echo {{ x }}")(anoop)
        app_fn = app_client.task("bench_noop", default_prompt="Echo {{ x }}")(noop)
        rollout = {"default_prompt": "Echo {{ x }}", "assign_by": "x"}
        rtask_fn = client.task("bench_rollout", **rollout)(noop)
        artask_fn = client.task("bench_rollout", **rollout)(anoop)
        if args.server == "local":  # a real rollout; the null server serves one as it is
            client.create_task("bench_rollout", prompt_text="Echo {{ x }}")
            candidate = client.create_prompt_version("bench_rollout", "Echo! {{ x }}")
            client.start_rollout("bench_rollout", str(candidate.id), share=0.5,
                                 min_samples=1_000_000)

        def otel_fn() -> int:
            with tracer.start_as_current_span("x"):
                return noop()

        async def aotel_fn() -> int:
            with tracer.start_as_current_span("x"):
                return await anoop()

        # warm up: fill the prompt cache (version 1 is made from the default by the first trace)
        task_fn()
        client.flush()
        client.get_prompt("bench_noop")
        task_fn()
        app_fn()
        app_client.flush()
        assert client.get_prompt("bench_rollout").rollout is not None, "no rollout served"
        rtask_fn()
        client.flush()

        flush_otel = provider.force_flush
        flush_ct = client.flush

        def flush_app() -> None:
            app_client.flush()
            app_provider.force_flush()
        loop = asyncio.new_event_loop()
        results: dict[str, list[float]] = {}
        variants: list[tuple[str, Callable[[], float]]] = [
            ("sync  bare", lambda: _time_sync(noop, args.calls, lambda: None)),
            ("sync  otel", lambda: _time_sync(otel_fn, args.calls, flush_otel)),
            ("sync  task", lambda: _time_sync(task_fn, args.calls, flush_ct)),
            ("sync  task+rollout", lambda: _time_sync(rtask_fn, args.calls, flush_ct)),
            ("sync  task app", lambda: _time_sync(app_fn, args.calls, flush_app)),
            ("async bare", lambda: _time_async(anoop, args.calls, lambda: None, loop)),
            ("async otel", lambda: _time_async(aotel_fn, args.calls, flush_otel, loop)),
            ("async task", lambda: _time_async(atask_fn, args.calls, flush_ct, loop)),
            ("async task+rollout",
             lambda: _time_async(artask_fn, args.calls, flush_ct, loop)),
        ]
        for _ in range(args.rounds):
            for name, run in variants:
                results.setdefault(name, []).append(run())
        loop.close()
        assignment = _assignment_ns(rtask_fn, client.get_prompt("bench_noop"),
                                    client.get_prompt("bench_rollout"))
        stats = client.stats()
        client.close()
        app_client.close()
        app_provider.shutdown()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"{args.calls} calls x {args.rounds} rounds per variant, records into "
          f"{'a null server' if args.server == 'null' else 'a LocalServer'} (own process)")
    print(f"{'variant':<18} {'best µs':>9} {'median µs':>10}   (CPU time per call)")
    for name, values in results.items():
        print(f"{name:<18} {min(values):9.2f} {statistics.median(values):10.2f}")
    for kind in ("sync ", "async"):
        task_best = min(results[f"{kind} task"])
        otel_best = min(results[f"{kind} otel"])
        task_med = statistics.median(results[f"{kind} task"])
        otel_med = statistics.median(results[f"{kind} otel"])
        print(f"{kind.strip()}: task/otel = {task_best / otel_best:.2f}x (best), "
              f"{task_med / otel_med:.2f}x (median)")
        if f"{kind} task app" in results:
            app_med = statistics.median(results[f"{kind} task app"])
            print(f"{kind.strip()}: on an application provider, task/otel = "
                  f"{app_med / otel_med:.2f}x (median)")
        with_rollout = statistics.median(results[f"{kind} task+rollout"])
        print(f"{kind.strip()}: a rollout adds {with_rollout - task_med:+.2f} µs per call "
              f"(median task+rollout - task)")
    print("arm assignment alone, ns per call (best of 5; `_TaskSpec.assign`):")
    for name, ns in assignment.items():
        print(f"  {name:<34} {ns:8.0f}")
    print(f"delivery: {stats}")
    expected = 3 + 4 * args.rounds * args.calls
    return 0 if stats.sent == expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
