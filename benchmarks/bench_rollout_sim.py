"""Rollout simulation: our always-valid test vs a naive t-test peeked at after every batch.

1,000 simulated rollouts per scenario (candidate equal to the active, better by δ, worse by
δ). Scores are normal (mean 0.6, sd 0.2, δ = 0.05) and arrive in batches of 50 per arm; both
tests need 100 scores per arm before deciding and give up (no promotion) at 5,000 per arm.
Each batch's sum and sum of squares is drawn exactly (batch mean ~ normal, within-batch sum
of squares ~ σ²·χ²(49)), so the tests see what they would see from single scores. Ours is
`kaizen_server.domain.rollouts.msprt` (alpha 0.05, τ 0.1), the function the local server uses;
the naive test promotes as soon as Welch's t > 1.96 (rolls back at t < -1.96), checked after
every batch. The equal-arms figure is the false promotion rate; the ±δ figures are the median
scores per arm when the decision was taken.

A second metric is the cost of `kaizen_sdk._rollout.choose_arm` per call: with a new key each
call, a repeated key, no key, and on a prompt without a rollout (the cost when none runs).
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import uuid

from benchmarks._harness import Contender, Metric, alternate, sync_batch
from kaizen_sdk._rollout import choose_arm
from kaizen_sdk.models import Prompt, RolloutServing
from kaizen_server.domain.rollouts import arm_stats, msprt

__all__ = ["run", "simulate"]

MEAN, SD, DELTA = 0.6, 0.2, 0.05
BATCH, MIN_SAMPLES, MAX_SAMPLES = 50, 100, 5000
ALPHA, TAU = 0.05, 0.1
_Z = 1.959963984540054  # two-sided 5 %


def _naive(a: tuple[int, float, float], c: tuple[int, float, float]) -> int:
    """Welch's t on the running sums: +1 promote, -1 roll back, 0 continue."""
    sa, sc = arm_stats(*a), arm_stats(*c)
    se = math.sqrt(max(sa.variance, 1e-12) / sa.n + max(sc.variance, 1e-12) / sc.n)
    t = (sc.mean - sa.mean) / se
    return 1 if t > _Z else -1 if t < -_Z else 0


def _ours(a: tuple[int, float, float], c: tuple[int, float, float]) -> int:
    return msprt(arm_stats(*a), arm_stats(*c), alpha=ALPHA, tau=TAU).direction


def _batch(rng: random.Random, mean: float) -> tuple[float, float]:
    """Sum and sum of squares of BATCH normal scores, drawn exactly."""
    m = rng.gauss(mean, SD / math.sqrt(BATCH))
    within = SD * SD * rng.gammavariate((BATCH - 1) / 2, 2.0)
    return BATCH * m, within + BATCH * m * m


def simulate(delta: float, rollouts: int, seed: int) -> dict[str, dict[str, float]]:
    """Run *rollouts* simulated rollouts for a candidate better by *delta*; both tests.

    Returns, per test, the share promoted, rolled back and undecided, and the median scores
    per arm at a decision.
    """
    rng = random.Random(seed)
    results: dict[str, list[tuple[int, int]]] = {"ours": [], "naive": []}
    for _ in range(rollouts):
        a = [0, 0.0, 0.0]
        c = [0, 0.0, 0.0]
        pending = {"ours": _ours, "naive": _naive}
        while pending and a[0] < MAX_SAMPLES:
            for arm, mean in ((a, MEAN), (c, MEAN + delta)):
                s, ss = _batch(rng, mean)
                arm[0] += BATCH
                arm[1] += s
                arm[2] += ss
            if a[0] < MIN_SAMPLES:
                continue
            sa, sc = (int(a[0]), a[1], a[2]), (int(c[0]), c[1], c[2])
            for name, test in list(pending.items()):
                verdict = test(sa, sc)
                if verdict:
                    results[name].append((verdict, int(a[0])))
                    del pending[name]
        for name in pending:
            results[name].append((0, int(a[0])))
    out: dict[str, dict[str, float]] = {}
    for name, rows in results.items():
        decided = [n for v, n in rows if v]
        out[name] = {
            "promoted": sum(v > 0 for v, _ in rows) / rollouts,
            "rolled_back": sum(v < 0 for v, _ in rows) / rollouts,
            "undecided": sum(v == 0 for v, _ in rows) / rollouts,
            "median_samples": statistics.median(decided) if decided else float("nan"),
        }
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _sim_metrics(quick: bool) -> list[Metric]:
    n = 100 if quick else 1000
    equal = simulate(0.0, n, seed=1601)
    better = simulate(DELTA, n, seed=1602)
    worse = simulate(-DELTA, n, seed=1603)
    setup = (f"{n} simulated rollouts per scenario, scores normal(0.6, 0.2), δ = {DELTA}, "
             f"batches of {BATCH} per arm, decisions from {MIN_SAMPLES} scores per arm, "
             f"cap {MAX_SAMPLES} per arm.")
    false_rate = Metric(
        name="rollout_false_promotion_pct", unit="%", better="lower",
        kaizen=100 * equal["ours"]["promoted"],
        peers={"naive_ttest": 100 * equal["naive"]["promoted"]},
        goal="at most 5 % for equal arms, checked after every batch (issue 16)",
        goal_met=equal["ours"]["promoted"] <= 0.05,
        verdict=f"{_pct(equal['ours']['promoted'])} (naive t-test "
                f"{_pct(equal['naive']['promoted'])})",
        notes=[setup,
               f"Equal arms, any wrong decision: ours {_pct(1 - equal['ours']['undecided'])}, "
               f"naive {_pct(1 - equal['naive']['undecided'])} (promotions plus rollbacks)."],
    )
    rows = [false_rate]
    for label, result, right, wrong in (("better", better, "promoted", "rolled_back"),
                                        ("worse", worse, "rolled_back", "promoted")):
        rows.append(Metric(
            name=f"rollout_samples_to_decision_{label}", unit="scores/arm", better="lower",
            kaizen=result["ours"]["median_samples"],
            peers={"naive_ttest": result["naive"]["median_samples"]},
            notes=[f"Candidate {label} by δ: ours {right} {_pct(result['ours'][right])}, "
                   f"wrongly {wrong} {_pct(result['ours'][wrong])}, undecided at the cap "
                   f"{_pct(result['ours']['undecided'])}; naive {right} "
                   f"{_pct(result['naive'][right])}, wrongly {wrong} "
                   f"{_pct(result['naive'][wrong])}. Median over decided rollouts."],
        ))
    return rows


def _ns_spread(samples_us: list[float]) -> str:
    q = statistics.quantiles([s * 1000 for s in samples_us], n=4)
    return f"{q[0]:.0f}-{q[2]:.0f}"


def _choose_arm_metric(quick: bool) -> Metric:
    active = Prompt(id=uuid.uuid4(), version_number=1, prompt_text="a")
    candidate = Prompt(id=uuid.uuid4(), version_number=2, prompt_text="c")
    serving = RolloutServing(id=uuid.uuid4(), candidate=candidate, share=0.3,
                             salt=uuid.uuid4().hex)
    split = Prompt(id=active.id, version_number=1, prompt_text="a", rollout=serving)
    keys = [f"user-{i}" for i in range(100_000)]  # far more than the bucket cache holds

    def distinct(n: int) -> None:
        start = random.randrange(len(keys) - n) if n < len(keys) else 0
        for key in keys[start:start + n]:
            choose_arm(split, key)

    contenders = [
        Contender("kaizen", distinct),
        Contender("repeat_key", sync_batch(functools.partial(choose_arm, split, "user-12345"))),
        Contender("no_key", sync_batch(functools.partial(choose_arm, split))),
        Contender("no_rollout", sync_batch(functools.partial(choose_arm, active, "user-12345"))),
    ]
    timings = alternate(contenders, calls=20_000 if quick else 50_000, rounds=3 if quick else 9)
    return Metric(
        name="choose_arm_ns", unit="ns/call", better="lower",
        kaizen=timings["kaizen"].median * 1000,
        peers={name: timings[name].median * 1000
               for name in ("repeat_key", "no_key", "no_rollout")},
        references=["repeat_key", "no_key", "no_rollout"],
        notes=["choose_arm(prompt, key) on a rollout at 30 %: kaizen = a new key every call "
               "(keyed blake2b of the key; the worst case), repeat_key = a key seen before "
               "(served from an 8,192-entry cache), no_key = random assignment, no_rollout = "
               "a prompt without a rollout (what every call pays when none runs)."],
        spread={k: _ns_spread(v.samples) for k, v in timings.items()},
    )


def run(quick: bool) -> list[Metric]:
    """The simulation figures and the per-call cost of assignment."""
    return [*_sim_metrics(quick), _choose_arm_metric(quick)]
