"""The rollout statistics (`kaizen_server.domain.rollouts`): pure functions, fixed seeds."""

from __future__ import annotations

import math
import random

import pytest

from kaizen_server.domain.rollouts import (
    ArmStats,
    RolloutConfig,
    arm_interval,
    arm_stats,
    check_guards,
    evaluate,
    msprt,
    p95,
)

pytestmark = pytest.mark.unit


def stats_of(values: list[float], **kw: object) -> ArmStats:
    return arm_stats(len(values), sum(values), sum(v * v for v in values), **kw)  # type: ignore[arg-type]


def test_arm_stats_mean_and_sample_variance() -> None:
    a = stats_of([0.2, 0.4, 0.6])
    assert (a.n, a.mean) == (3, pytest.approx(0.4))
    assert a.variance == pytest.approx(0.04)
    assert arm_stats(0, 0.0, 0.0) == ArmStats()


def test_msprt_matches_the_formula() -> None:
    a, c = ArmStats(n=100, mean=0.5, variance=0.04), ArmStats(n=100, mean=0.56, variance=0.04)
    v, t2 = 0.04 / 100 * 2, 0.01
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * 0.06**2 / (2 * v * (v + t2))
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(0.05)))
    result = msprt(a, c)
    assert result.difference == pytest.approx(0.06)
    assert result.log_lr == pytest.approx(log_lr)
    assert (result.lower, result.upper) == (pytest.approx(0.06 - half), pytest.approx(0.06 + half))
    assert result.significant is (log_lr >= math.log(20))
    # the interval excludes 0 exactly when the test is significant
    assert (result.lower > 0) is result.significant


def test_msprt_is_antisymmetric_and_needs_two_samples() -> None:
    a, c = ArmStats(n=400, mean=0.5, variance=0.04), ArmStats(n=400, mean=0.58, variance=0.04)
    ab, ba = msprt(a, c), msprt(c, a)
    assert (ab.direction, ba.direction) == (1, -1)
    assert ab.log_lr == pytest.approx(ba.log_lr)
    assert msprt(ArmStats(n=1, mean=1.0), c).significant is False


def test_equal_arms_rarely_decide_under_continuous_checking() -> None:
    rng = random.Random(20261201)
    decided = 0
    for _ in range(200):
        sums = [[0, 0.0, 0.0], [0, 0.0, 0.0]]
        for _ in range(40):  # 40 looks, 25 samples per arm each
            for arm in sums:
                for _ in range(25):
                    x = rng.gauss(0.6, 0.2)
                    arm[0] += 1
                    arm[1] += x
                    arm[2] += x * x
            a, c = (arm_stats(int(s[0]), s[1], s[2]) for s in sums)
            if a.n >= 100 and msprt(a, c).significant:
                decided += 1
                break
    assert decided <= 10  # alpha = 0.05 of 200, both directions together


def test_arm_interval_covers_the_mean() -> None:
    lo, hi = arm_interval(ArmStats(n=50, mean=0.7, variance=0.01)) or (0.0, 0.0)
    assert lo < 0.7 < hi
    assert arm_interval(ArmStats(n=1, mean=0.7)) is None


def test_p95_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


def test_guards() -> None:
    a = ArmStats(calls=100, errors=1, p95_latency_ms=100.0)
    ok = ArmStats(calls=100, errors=2, p95_latency_ms=120.0)
    bad = ArmStats(calls=100, errors=10, p95_latency_ms=200.0)
    assert check_guards(a, ok, error_margin=0.02, latency_margin=0.25).breached == ()
    result = check_guards(a, bad, error_margin=0.02, latency_margin=0.25)
    assert result.breached == ("error_rate", "latency_p95")
    assert result.error_rate_delta == pytest.approx(0.09)
    assert result.latency_p95_ratio == pytest.approx(2.0)
    assert check_guards(ArmStats(), ArmStats(), error_margin=0, latency_margin=0).breached == ()


CONFIG = RolloutConfig(ramp=(0.1, 0.5), min_samples=50)
EQUAL = ArmStats(n=60, mean=0.5, variance=0.04)


def test_evaluate_waits_for_the_minimum_sample() -> None:
    strong = ArmStats(n=49, mean=0.9, variance=0.01)
    decision = evaluate(CONFIG, ArmStats(n=60, mean=0.3, variance=0.01), strong, step=0,
                        step_start_n=0, elapsed=0)
    assert decision.action is None


def test_evaluate_decides_in_order() -> None:
    better = ArmStats(n=60, mean=0.8, variance=0.01, calls=60, errors=0)
    worse = ArmStats(n=60, mean=0.2, variance=0.01, calls=60, errors=0)
    base = ArmStats(n=60, mean=0.5, variance=0.01, calls=60, errors=0)
    kw = {"step": 0, "step_start_n": 0, "elapsed": 0.0}
    assert evaluate(CONFIG, base, better, **kw).action == "promote"  # type: ignore[arg-type]
    assert evaluate(CONFIG, base, worse, **kw).action == "rollback"  # type: ignore[arg-type]
    erring = ArmStats(n=60, mean=0.8, variance=0.01, calls=60, errors=30)
    assert evaluate(CONFIG, base, erring, **kw).reason == "guard breached: error_rate"  # type: ignore[arg-type]
    assert evaluate(CONFIG, EQUAL, EQUAL, **kw).action == "advance"  # type: ignore[arg-type]
    last = evaluate(CONFIG, EQUAL, EQUAL, step=1, step_start_n=0, elapsed=0.0)
    assert last.action is None
    expired = evaluate(CONFIG, EQUAL, EQUAL, step=1, step_start_n=0, elapsed=1e9)
    assert expired.action == "rollback"


def test_evaluate_recommends_once_without_automation() -> None:
    manual = RolloutConfig(ramp=(0.5,), min_samples=50, auto_promote=False)
    better = ArmStats(n=60, mean=0.8, variance=0.01)
    base = ArmStats(n=60, mean=0.5, variance=0.01)
    first = evaluate(manual, base, better, step=0, step_start_n=0, elapsed=0)
    assert first.action == "recommend_promote"
    again = evaluate(manual, base, better, step=0, step_start_n=0, elapsed=0,
                     recommended="promote")
    assert again.action is None
