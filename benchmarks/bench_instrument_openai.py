"""Per-call overhead of ``ct.instrument(openai)``: instrumented minus uninstrumented time.

The real ``openai`` client (sync or async; ``litellm`` on an ``openai/`` model, through such a
client) is answered from memory: an ``httpx.MockTransport`` returns the bytes the OpenAI
stand-in (``tests/integrations/openai_standin.py``) sent once to the same request (see
`capture`), the JSON answer or the event stream with usage. Every byte the library parses is
the stand-in's, and the instrumentations, which wrap ``create`` above the transport, see
every call as over a socket. Over loopback HTTP (``--loopback``, `openai_call`) one streamed
call costs this process some 3.6 ms of CPU whose spread between batches is larger than the
100-300 µs overheads compared: the rows could not tell kaizen from openai-v2 (issue 28).
CT records are delivered to a local CT server in another process over loopback; our
exporter's CPU is ours (it competes for the GIL), so every batch of an instrumented variant
ends with a flush inside the timing, as the peers' batches end with their ``force_flush``.

Variants are timed **alternately**, round after round, in an order that rotates, each batch
switched on (``on()``) before and off (``off()``) after, outside the timing. A round's figure
is CPU µs per call of this process (all its threads); the overhead is the median over rounds
of (variant - uninstrumented) from the same round. Batches are short (25 calls) and rounds
many, so that a burst of load on the shared machine falls on few rounds, and the collector is
frozen after the warm-up (`measure`): a full collection of the libraries' heap fell on one
batch in ten or so and moved it by hundreds of µs per call.

Reuse: `measure` takes any list of `Variant` objects, so peers (OpenTelemetry's and
OpenInference's openai instrumentors) can be timed in the same run by passing a `Variant`
whose ``on``/``off`` call their ``instrument()``/``uninstrument()``.

Run: ``python benchmarks/bench_instrument_openai.py [--calls N] [--rounds R] [--stream]
[--loopback]``.
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
    "capture",
    "kaizen_litellm_variant",
    "kaizen_variant",
    "litellm_stream_call",
    "measure",
    "memory_call",
    "memory_client",
    "memory_litellm_call",
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
    flush: Callable[[], object] | None = None


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


# --- the OpenAI stand-in's answers, captured once and served from memory ---------------


def capture() -> tuple[bytes, bytes]:
    """The stand-in's JSON answer and its event stream (with usage) to one chat request."""
    import httpx

    sys.path.insert(0, _STANDIN_DIR)
    from openai_standin import StandIn  # type: ignore[import-not-found]

    server = StandIn().start()
    try:
        body = {"model": "m", "messages": MESSAGES}
        url = f"{server.base_url}/chat/completions"
        headers = {"Authorization": "Bearer sk-bench"}
        plain = httpx.post(url, json=body, headers=headers).content
        streamed = httpx.post(
            url, json={**body, "stream": True, "stream_options": {"include_usage": True}},
            headers=headers,
        ).content
    finally:
        server.stop()
    return plain, streamed


def memory_client(answer: bytes, *, stream: bool, is_async: bool) -> Any:
    """An ``OpenAI`` (or ``AsyncOpenAI``) client whose every request gets *answer*."""
    import openai

    try:  # the HTTP library the installed openai client is built on
        import httpx2 as httpx  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        import httpx  # type: ignore[no-redef]

    kind = "text/event-stream" if stream else "application/json"

    def handler(request: Any) -> Any:
        return httpx.Response(200, content=answer, headers={"content-type": kind})

    if not is_async:
        return openai.OpenAI(base_url="http://llm.test/v1", api_key="sk-bench", max_retries=0,
                             http_client=httpx.Client(transport=httpx.MockTransport(handler)))

    async def ahandler(request: Any) -> Any:
        return handler(request)

    return openai.AsyncOpenAI(
        base_url="http://llm.test/v1", api_key="sk-bench", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(ahandler)),
    )


def memory_litellm_call(answer: bytes, *, is_async: bool) -> Callable[[int], None]:
    """``run(n)``: *n* streamed ``litellm`` completions (``openai/`` model, usage included),
    read to the end, through an openai client answered from memory with the event stream
    *answer* (litellm's ``client=`` argument).

    litellm's own streaming logging is off (``disable_streaming_logging``): it hands every
    chunk to a thread pool, whose work lands in whichever batch is running when a thread gets
    to it (rounds of the same code scattered from 0.6 to 4.9 ms per call). It is litellm's
    work, not an instrumentation's, and the same with or without one.
    """
    import litellm

    litellm.disable_streaming_logging = True
    client = memory_client(answer, stream=True, is_async=is_async)
    kwargs: dict[str, Any] = {
        "model": "openai/m", "messages": MESSAGES, "api_key": "sk-bench",
        "api_base": "http://llm.test/v1", "client": client, "stream": True,
        "stream_options": {"include_usage": True},
    }
    return _litellm_runner(kwargs, is_async=is_async)


def memory_call(answer: bytes, *, stream: bool, is_async: bool) -> Callable[[int], None]:
    """``run(n)``: *n* chat completions (the real ``openai`` client, sync or async, streamed
    with usage and read to the end, or not) answered from memory with *answer*."""
    kwargs: dict[str, Any] = {"model": "m", "messages": MESSAGES}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    client = memory_client(answer, stream=stream, is_async=is_async)
    return _openai_runner(client, kwargs, stream=stream, is_async=is_async)


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

    kwargs: dict[str, Any] = {
        "model": "openai/m", "messages": MESSAGES, "api_base": openai_base_url,
        "api_key": "sk-bench", "stream": True, "stream_options": {"include_usage": True},
    }
    return _litellm_runner(kwargs, is_async=is_async)


def openai_call(
    openai_base_url: str, *, stream: bool = False, is_async: bool = False
) -> Callable[[int], None]:
    """A batch runner: ``run(n)`` makes *n* chat completions against the stand-in."""
    import openai

    kwargs: dict[str, Any] = {"model": "m", "messages": MESSAGES}
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    kind = openai.AsyncOpenAI if is_async else openai.OpenAI
    client = kind(base_url=openai_base_url, api_key="sk-bench", max_retries=0)
    return _openai_runner(client, kwargs, stream=stream, is_async=is_async)


def _openai_runner(client: Any, kwargs: dict[str, Any], *, stream: bool,
                   is_async: bool) -> Callable[[int], None]:
    """``run(n)``: *n* ``client.chat.completions.create(**kwargs)``, streams read to the end
    (an async *client* on an event loop of its own)."""
    if not is_async:

        def run(n: int) -> None:
            for _ in range(n):
                out = client.chat.completions.create(**kwargs)
                if stream:
                    for _chunk in out:
                        pass

        return run
    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            out = await client.chat.completions.create(**kwargs)
            if stream:
                async for _chunk in out:
                    pass

    return lambda n: loop.run_until_complete(many(n))


def _litellm_runner(kwargs: dict[str, Any], *, is_async: bool) -> Callable[[int], None]:
    """``run(n)``: *n* streamed ``litellm.completion(**kwargs)`` (``acompletion`` on an event
    loop of its own), read to the end."""
    import litellm

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
    calls: int = 25,
    rounds: int = 100,
    max_seconds: float | None = None,
) -> dict[str, Result]:
    """Time *variants* and the uninstrumented call alternately; return each one's overhead."""
    everyone: list[Variant | None] = [None, *variants]
    for variant in everyone:  # warm-up: imports, connections, caches
        _timed(batch, max(1, calls // 4), variant)
    plain: list[float] = []
    per_call: dict[str, list[float]] = {v.name: [] for v in variants}
    # What is alive now (modules, clients, caches) leaves the collector's view: a full
    # collection then walks only what a batch made, not the whole heap of openai, litellm and
    # the peers, whose cost fell on whichever batch it happened in (see the module docstring).
    gc.collect()
    gc.freeze()
    started = time.perf_counter()
    try:
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
            if (max_seconds is not None and r >= 2
                    and time.perf_counter() - started > max_seconds):
                break
    finally:
        gc.unfreeze()
    return {
        name: Result(samples, [s - p for s, p in zip(samples, plain, strict=True)])
        for name, samples in per_call.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Print the overhead of ``ct.instrument(openai)`` per call (sync and async, one mode)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=25, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=100, help="alternating rounds")
    parser.add_argument("--stream", action="store_true", help="stream=True with usage")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--loopback", action="store_true",
                        help="call the stand-in over loopback HTTP, not answered from memory")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    plain, streamed = capture()
    with servers() as (openai_url, ct_url):
        variant = kaizen_variant(ct_url)
        for is_async in (False, True):
            if args.loopback:
                batch = openai_call(openai_url, stream=args.stream, is_async=is_async)
            else:
                batch = memory_call(streamed if args.stream else plain, stream=args.stream,
                                    is_async=is_async)
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
