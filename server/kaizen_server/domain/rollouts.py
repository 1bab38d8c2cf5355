"""Guarded rollouts of the local server: the statistics and the state machine, as pure functions.

A rollout serves a task's *candidate* prompt version to a share of traffic beside the *active*
one and decides, from live scores, whether the candidate is promoted (it becomes active) or
rolled back (it is marked ``rejected``).

The test is the mixture sequential probability ratio test (mSPRT) with a normal mixing
distribution on the difference of mean scores, as in Johari, Koomen, Pekelis and Walsh,
"Peeking at A/B Tests: Why it matters, and what to do about it" (KDD 2017), and Johari,
Pekelis and Walsh, "Always Valid Inference" (Operations Research 2022). Its likelihood ratio

    Λ = sqrt(V / (V + τ²)) · exp(τ² · d² / (2 · V · (V + τ²)))

(``d`` the observed difference candidate - active, ``V`` its estimated variance, ``τ²`` the
mixing variance) may be checked after every sample: the chance that it *ever* reaches
``1 / alpha`` when the arms are equal is at most ``alpha``. Inverting it gives an always-valid
confidence sequence for the difference, ``d ± sqrt(V (V + τ²) / τ² · (ln((V + τ²) / V) -
2 ln alpha))``. The variance is estimated from the data (the usual large-sample approximation),
which is why no decision is taken before each arm has ``min_samples`` scores.

Guards stop a candidate that is worse in ways the score does not show: its error rate may
exceed the active's by at most ``error_margin`` (absolute), its p95 latency the active's by
at most ``latency_margin`` (relative) and, when the rollout has a cost guard, its cost per call
the active's by at most the factor ``max_cost_ratio`` (1.0: not dearer). A breached guard rolls
the candidate back (or recommends it), even when it scores higher: what was asked for is not
what it does. With a cost guard and no cost per call known for an arm (an unpriced model), a
candidate that scores higher is only recommended for promotion, never promoted. A rollout that
reaches ``max_duration`` without a
decision is rolled back (the active stays; nothing was shown to be better).

Everything here is pure (no I/O, no clock): `kaizen_server.storage.sqlite` feeds it aggregates and
stores what `evaluate` decides; ``benchmarks/bench_rollout_sim.py`` reuses `msprt`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_ERROR_MARGIN",
    "DEFAULT_LATENCY_MARGIN",
    "DEFAULT_MAX_DURATION",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_TAU",
    "ArmStats",
    "COST_GUARD",
    "Decision",
    "GuardResult",
    "RolloutConfig",
    "SequentialResult",
    "arm_interval",
    "arm_stats",
    "check_guards",
    "cost_ratio",
    "evaluate",
    "msprt",
    "p95",
]

DEFAULT_ALPHA = 0.05
"""Chance of a wrong decision between equal arms, however often the test is checked."""

DEFAULT_TAU = 0.1
"""Standard deviation of the mixing distribution: the size of score difference to look for."""

DEFAULT_MIN_SAMPLES = 100
"""Scores each arm needs before the test, the guards or a ramp step may decide anything."""

DEFAULT_ERROR_MARGIN = 0.02
"""How much higher (absolute) the candidate's error rate may be than the active's."""

DEFAULT_LATENCY_MARGIN = 0.25
"""How much higher (relative, 0.25 = 25 %) the candidate's p95 latency may be."""

DEFAULT_MAX_DURATION = 7 * 24 * 3600.0
"""Seconds after which an undecided rollout is rolled back."""

_VARIANCE_FLOOR = 1e-6

Action = Literal["advance", "promote", "rollback", "recommend_promote", "recommend_rollback"]


@dataclasses.dataclass(frozen=True)
class ArmStats:
    """What one arm has gathered: scores (n, mean, variance) and calls (errors, latency)."""

    n: int = 0
    mean: float = 0.0
    variance: float = 0.0
    calls: int = 0
    errors: int = 0
    p95_latency_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        """Errors per recorded call, ``None`` before any call."""
        return None if self.calls == 0 else self.errors / self.calls


def arm_stats(
    n: int, total: float, total_sq: float, *, calls: int = 0, errors: int = 0,
    p95_latency_ms: float | None = None,
) -> ArmStats:
    """Build `ArmStats` from a count, a sum and a sum of squares (the sample variance)."""
    if n <= 0:
        return ArmStats(calls=calls, errors=errors, p95_latency_ms=p95_latency_ms)
    mean = total / n
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return ArmStats(n=n, mean=mean, variance=variance, calls=calls, errors=errors,
                    p95_latency_ms=p95_latency_ms)


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile (nearest rank) of *values*, ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return float(ordered[rank - 1])


@dataclasses.dataclass(frozen=True)
class SequentialResult:
    """The mSPRT on candidate - active: estimate, always-valid interval and p-value."""

    difference: float
    lower: float
    upper: float
    log_lr: float
    p_value: float
    significant: bool

    @property
    def direction(self) -> int:
        """+1 when the candidate is significantly better, -1 when worse, 0 otherwise."""
        if not self.significant:
            return 0
        return 1 if self.difference > 0 else -1


def msprt(
    active: ArmStats, candidate: ArmStats, *, alpha: float = DEFAULT_ALPHA,
    tau: float = DEFAULT_TAU,
) -> SequentialResult:
    """Run the normal-mixture SPRT on the difference of mean scores (candidate - active).

    Example::

        result = msprt(arm_stats(200, 120.0, 80.0), arm_stats(200, 150.0, 120.0))
        result.direction   # +1: promote, -1: roll back, 0: keep collecting
    """
    if active.n < 2 or candidate.n < 2:
        return SequentialResult(0.0, -math.inf, math.inf, 0.0, 1.0, False)
    d = candidate.mean - active.mean
    v = (max(candidate.variance, _VARIANCE_FLOOR) / candidate.n
         + max(active.variance, _VARIANCE_FLOOR) / active.n)
    t2 = tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * d * d / (2.0 * v * (v + t2))
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2.0 * math.log(alpha)))
    p_value = min(1.0, math.exp(-log_lr)) if log_lr < 700 else 0.0
    return SequentialResult(d, d - half, d + half, log_lr, p_value, log_lr >= -math.log(alpha))


@dataclasses.dataclass(frozen=True)
class GuardResult:
    """The guard metrics of the candidate against the active and which ones are breached."""

    error_rate_delta: float | None
    latency_p95_ratio: float | None
    breached: tuple[str, ...]
    cost_ratio: float | None = None
    """The candidate's cost per call over the active's (``None``: a cost is unknown)."""


COST_GUARD = "cost_per_call"
"""The name of the cost guard in `GuardResult.breached`."""


def cost_ratio(costs: tuple[float | None, float | None]) -> float | None:
    """The candidate's cost per call over the active's, from ``(active, candidate)`` US
    dollars per call; ``None`` when either is unknown. A free active arm gives 1.0 against a
    free candidate and infinity against a paid one."""
    active, candidate = costs
    if active is None or candidate is None:
        return None
    if active <= 0:
        return 1.0 if candidate <= 0 else math.inf
    return candidate / active


def check_guards(
    active: ArmStats, candidate: ArmStats, *, error_margin: float, latency_margin: float,
    max_cost_ratio: float | None = None,
    costs: tuple[float | None, float | None] = (None, None),
) -> GuardResult:
    """Compare error rate (absolute margin), p95 latency (relative margin) and, with a
    *max_cost_ratio*, the cost per call (*costs*: active's and candidate's) of the arms."""
    breached: list[str] = []
    delta = None
    if active.error_rate is not None and candidate.error_rate is not None:
        delta = candidate.error_rate - active.error_rate
        if delta > error_margin:
            breached.append("error_rate")
    ratio = None
    if (active.p95_latency_ms is not None and candidate.p95_latency_ms is not None
            and active.p95_latency_ms > 0):
        ratio = candidate.p95_latency_ms / active.p95_latency_ms
        if ratio > 1.0 + latency_margin:
            breached.append("latency_p95")
    dearer = cost_ratio(costs)
    if max_cost_ratio is not None and dearer is not None and dearer > max_cost_ratio:
        breached.append(COST_GUARD)
    return GuardResult(delta, ratio, tuple(breached), dearer)


@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How a rollout ramps and decides (see the module docstring for each rule)."""

    ramp: tuple[float, ...]
    min_samples: int = DEFAULT_MIN_SAMPLES
    alpha: float = DEFAULT_ALPHA
    tau: float = DEFAULT_TAU
    error_margin: float = DEFAULT_ERROR_MARGIN
    latency_margin: float = DEFAULT_LATENCY_MARGIN
    max_duration: float = DEFAULT_MAX_DURATION
    auto_promote: bool = True
    auto_rollback: bool = True
    max_cost_ratio: float | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """What `evaluate` wants done now (``action`` ``None``: nothing) and the statistics."""

    action: Action | None
    reason: str
    test: SequentialResult
    guards: GuardResult

    def stats(self, active: ArmStats, candidate: ArmStats, share: float) -> dict[str, Any]:
        """The statistics at this moment, as the audit log stores them."""
        def arm(a: ArmStats) -> dict[str, Any]:
            return {"n": a.n, "mean": _finite(a.mean), "calls": a.calls,
                    "error_rate": a.error_rate, "p95_latency_ms": a.p95_latency_ms}

        return {
            "share": share,
            "active": arm(active),
            "candidate": arm(candidate),
            "difference": _finite(self.test.difference),
            "lower": _finite(self.test.lower),
            "upper": _finite(self.test.upper),
            "p_value": self.test.p_value,
            "error_rate_delta": self.guards.error_rate_delta,
            "latency_p95_ratio": self.guards.latency_p95_ratio,
            "cost_ratio": _finite(self.guards.cost_ratio)
            if self.guards.cost_ratio is not None else None,
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def evaluate(
    config: RolloutConfig,
    active: ArmStats,
    candidate: ArmStats,
    *,
    step: int,
    step_start_n: int,
    elapsed: float,
    recommended: str | None = None,
    costs: tuple[float | None, float | None] = (None, None),
) -> Decision:
    """Decide the next move of a running rollout.

    *step* is the index into ``config.ramp``, *step_start_n* the candidate's score count when
    that step began, *elapsed* seconds since the start, *recommended* the recommendation
    already recorded (so one is not repeated), *costs* the arms' US dollars per call
    (active, candidate) for the cost guard. Order: guards, then the test, then the maximum
    duration, then the next ramp step.
    """
    test = msprt(active, candidate, alpha=config.alpha, tau=config.tau)
    guards = check_guards(active, candidate, error_margin=config.error_margin,
                          latency_margin=config.latency_margin,
                          max_cost_ratio=config.max_cost_ratio, costs=costs)
    ready = active.n >= config.min_samples and candidate.n >= config.min_samples
    against = "rollback" if config.auto_rollback else "recommend_rollback"
    if ready and guards.breached:
        return _decide(against, "guard breached: " + ", ".join(guards.breached), test, guards,
                       recommended)
    if ready and test.direction < 0:
        return _decide(against, "candidate scores lower (always-valid test)", test, guards,
                       recommended)
    if ready and test.direction > 0:
        if config.max_cost_ratio is not None and guards.cost_ratio is None:
            return _decide("recommend_promote", "candidate scores higher (always-valid test),"
                           " but the cost guard cannot be checked: an arm has no cost per"
                           " call", test, guards, recommended)
        action = "promote" if config.auto_promote else "recommend_promote"
        return _decide(action, "candidate scores higher (always-valid test)", test, guards,
                       recommended)
    if elapsed >= config.max_duration:
        return Decision("rollback", "maximum duration reached without a decision", test, guards)
    if (step + 1 < len(config.ramp) and ready
            and candidate.n - step_start_n >= config.min_samples):
        return Decision("advance", f"{config.min_samples} candidate scores at this step, "
                        "no guard breached", test, guards)
    return Decision(None, "collecting scores", test, guards)


def _decide(action: str, reason: str, test: SequentialResult, guards: GuardResult,
            recommended: str | None) -> Decision:
    if action.startswith("recommend_") and recommended == action.removeprefix("recommend_"):
        return Decision(None, reason, test, guards)
    return Decision(action, reason, test, guards)  # type: ignore[arg-type]


def arm_interval(
    arm: ArmStats, *, alpha: float = DEFAULT_ALPHA, tau: float = DEFAULT_TAU
) -> tuple[float, float] | None:
    """The always-valid interval for one arm's mean score (same mixture bound as `msprt`)."""
    if arm.n < 2:
        return None
    v = max(arm.variance, _VARIANCE_FLOOR) / arm.n
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2.0 * math.log(alpha)))
    return arm.mean - half, arm.mean + half
