"""Metric 3: ``get_prompt`` on a warm cache, ours vs Langfuse's cached ``get_prompt``.

Both clients fetch the prompt once from the loopback sink (which answers in each one's wire
format), then every timed call is served from the in-memory cache. The figure is the whole
call as the application makes it (``client.get_prompt("summarize_ticket")``), loop included.
"""

from __future__ import annotations

import functools

from benchmarks._harness import Contender, Metric, alternate, sync_batch
from benchmarks.peers import attempt, kaizen_client, langfuse_client, point_peers_at
from benchmarks.sink import Sink

__all__ = ["run"]

TASK = "summarize_ticket"


def run(quick: bool) -> list[Metric]:
    """Time a warm ``get_prompt``: kaizen vs Langfuse."""
    notes: list[str] = []
    with Sink() as sink:
        point_peers_at(sink.url)
        client = kaizen_client(sink.url)
        first = client.get_prompt(TASK)
        assert first.version_number == 1, first
        contenders = [Contender("kaizen", sync_batch(functools.partial(client.get_prompt, TASK)))]

        def build_langfuse() -> Contender:
            lf = langfuse_client(sink.url)
            assert lf.get_prompt(TASK).prompt, "Langfuse prompt did not load"
            return Contender("langfuse", sync_batch(functools.partial(lf.get_prompt, TASK)))

        peer = attempt("langfuse", build_langfuse, notes)
        if peer is not None:
            contenders.append(peer)
        fetches = sink.stats()["paths"]
        timings = alternate(contenders, calls=5000 if quick else 20000, rounds=3 if quick else 9)
        after = sink.stats()["paths"]
        client.close()
    assert after == fetches, f"a warm call reached the server: {fetches} -> {after}"
    ours = timings["kaizen"].median
    notes.insert(0, "Warm cache, one thread; every timed call was served without a request "
                    "(checked with the sink's counter).")
    return [
        Metric(
            name="get_prompt_cached_us",
            unit="µs/call",
            better="lower",
            kaizen=ours,
            peers={"langfuse": timings["langfuse"].median if "langfuse" in timings else None},
            goal="under 1 µs on a warm cache (issue 7)",
            goal_met=ours < 1.0,
            verdict=f"{ours:.3f} µs",
            notes=notes,
            spread={k: t.spread for k, t in timings.items()},
        )
    ]
