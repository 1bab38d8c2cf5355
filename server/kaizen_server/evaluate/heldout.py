"""The held-out sample a judged comparison uses: bounded, stratified by score, reproducible.

Judging costs four LLM calls per example, so the sample's size follows the question (how
precisely the paired difference must be known), not the history: `sample_size` is the size
whose 95 % interval has half-width `DEFAULT_HALF_WIDTH` for a paired standard deviation of
`ASSUMED_SD` (189 examples), at most ``evaluator_config["eval_sample_size"]`` and never more
than the held-out split. `held_out_sample` draws it stratified by feedback score (the share of
each score band kept), seeded by the job id: the same job draws the same sample, and candidate
and active are judged on exactly that sample.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from kaizen_server.optimize.fewshot import Example

__all__ = ["ASSUMED_SD", "DEFAULT_HALF_WIDTH", "MAX_SAMPLE", "held_out_sample", "sample_size"]

DEFAULT_HALF_WIDTH = 0.05
"""Target half-width of the paired difference's 95 % interval (scores are in [0, 1])."""

ASSUMED_SD = 0.35
"""Assumed standard deviation of the paired score differences (a judge scoring 0..1)."""

MAX_SAMPLE = 500
"""Largest ``evaluator_config["eval_sample_size"]`` accepted."""

_BANDS = 4


def sample_size(available: int, config: Mapping[str, Any] | None = None) -> int:
    """How many held-out examples to judge: the interval's need, capped by the config."""
    need = math.ceil((1.96 * ASSUMED_SD / DEFAULT_HALF_WIDTH) ** 2)
    cap = (config or {}).get("eval_sample_size", need)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 2 <= cap <= MAX_SAMPLE:
        raise ValueError(
            f"evaluator_config['eval_sample_size'] must be an integer from 2 to {MAX_SAMPLE},"
            f" got {cap!r}"
        )
    return max(0, min(available, cap))


def held_out_sample(examples: Sequence[Example], size: int, seed: str) -> list[Example]:
    """Draw *size* of *examples*, stratified by score band, reproducibly for *seed*."""
    if size >= len(examples):
        return list(examples)
    rng = random.Random(hashlib.sha256(seed.encode()).digest())
    bands: list[list[Example]] = [[] for _ in range(_BANDS)]
    for ex in sorted(examples, key=lambda e: e.id):
        bands[min(_BANDS - 1, int(ex.score * _BANDS))].append(ex)
    # Largest remainders: each band keeps its share of the sample.
    quotas = [size * len(b) / len(examples) for b in bands]
    counts = [math.floor(q) for q in quotas]
    for i in sorted(range(_BANDS), key=lambda i: quotas[i] - counts[i],
                    reverse=True)[: size - sum(counts)]:
        counts[i] += 1
    picked: list[Example] = []
    for band, count in zip(bands, counts, strict=True):
        picked.extend(rng.sample(band, count))
    return sorted(picked, key=lambda e: e.id)
