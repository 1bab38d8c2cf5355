"""The rollout cost guard (`kaizen_server.domain.rollouts`): pure functions, exact values."""

from __future__ import annotations

import math

import pytest

from kaizen_server.domain.rollouts import (
    COST_GUARD,
    ArmStats,
    RolloutConfig,
    check_guards,
    cost_ratio,
    evaluate,
)

pytestmark = pytest.mark.unit

BASE = ArmStats(n=60, mean=0.5, variance=0.01, calls=60, errors=0)
BETTER = ArmStats(n=60, mean=0.8, variance=0.01, calls=60, errors=0)
EQUAL = ArmStats(n=60, mean=0.5, variance=0.01, calls=60, errors=0)
GUARDED = RolloutConfig(ramp=(0.5,), min_samples=50, max_cost_ratio=1.0)
AT = {"step": 0, "step_start_n": 0, "elapsed": 0.0}


def test_cost_ratio() -> None:
    assert cost_ratio((0.002, 0.001)) == 0.5
    assert cost_ratio((None, 0.001)) is None and cost_ratio((0.001, None)) is None
    assert cost_ratio((0.0, 0.0)) == 1.0 and cost_ratio((0.0, 0.001)) == math.inf


def test_the_cost_guard_is_breached_only_above_its_ratio() -> None:
    kw = {"error_margin": 0.02, "latency_margin": 0.25}
    at_limit = check_guards(BASE, EQUAL, max_cost_ratio=1.5, costs=(0.002, 0.003), **kw)  # type: ignore[arg-type]
    assert (at_limit.cost_ratio, at_limit.breached) == (1.5, ())
    above = check_guards(BASE, EQUAL, max_cost_ratio=1.5, costs=(0.002, 0.0031), **kw)  # type: ignore[arg-type]
    assert above.breached == (COST_GUARD,)
    unguarded = check_guards(BASE, EQUAL, costs=(0.002, 0.02), **kw)  # type: ignore[arg-type]
    assert (unguarded.cost_ratio, unguarded.breached) == (10.0, ())  # reported, not a guard


def test_a_dearer_candidate_is_rolled_back_even_when_it_scores_higher() -> None:
    decision = evaluate(GUARDED, BASE, BETTER, costs=(0.001, 0.0015), **AT)  # type: ignore[arg-type]
    assert (decision.action, decision.reason) == ("rollback", "guard breached: cost_per_call")
    assert decision.stats(BASE, BETTER, 0.5)["cost_ratio"] == 1.5
    manual = RolloutConfig(ramp=(0.5,), min_samples=50, max_cost_ratio=1.0, auto_rollback=False)
    held = evaluate(manual, BASE, BETTER, costs=(0.001, 0.0015), **AT)  # type: ignore[arg-type]
    assert held.action == "recommend_rollback"


def test_a_cheaper_better_candidate_is_promoted_and_an_unpriced_one_only_recommended() -> None:
    assert evaluate(GUARDED, BASE, BETTER, costs=(0.001, 0.0001), **AT).action == "promote"  # type: ignore[arg-type]
    unpriced = evaluate(GUARDED, BASE, BETTER, costs=(0.001, None), **AT)  # type: ignore[arg-type]
    assert unpriced.action == "recommend_promote"
    assert "cost guard cannot be checked" in unpriced.reason
    # without a cost guard, costs change nothing
    free = RolloutConfig(ramp=(0.5,), min_samples=50)
    assert evaluate(free, BASE, BETTER, costs=(0.001, None), **AT).action == "promote"  # type: ignore[arg-type]


def test_the_cost_guard_waits_for_the_minimum_sample() -> None:
    few = ArmStats(n=10, mean=0.8, variance=0.01, calls=10, errors=0)
    assert evaluate(GUARDED, BASE, few, costs=(0.001, 0.01), **AT).action is None  # type: ignore[arg-type]
