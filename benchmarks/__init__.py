"""The kaizen_sdk benchmark suite: ``python -m benchmarks`` (or ``make bench``).

Each ``bench_*.py`` module measures one or more metrics side by side with the peers and returns
`benchmarks._harness.Metric` rows; ``__main__`` runs them, writes ``results.json`` and renders
``RESULTS.md``. See docs/benchmarks.md.
"""

from __future__ import annotations

__all__: list[str] = []
