"""The rules that decide what the store writes: pure functions of values the store read.

A backend reads plain values inside its write transaction, asks one of these functions, and
writes what it answers in the same transaction. Nothing here touches a database or a clock
(the time comes in as an argument), so every backend decides alike and each rule is tested
without one.

- `threshold_due` and `threshold_job`: whether a task's threshold job starts now;
- `evaluation_due`: whether a score that reached a running rollout makes it evaluate;
- `hand_activation`: whether a rollout ends because a version was activated by hand;
- `ramp_step`: what an ``advance`` decision (`rollouts.evaluate`) changes;
- `auto_rollout_request`: whether a successful job's candidate is rolled out by itself;
- `prune_cutoff`: which of a task's feedback entries its retention limit lets go;
- `retention_cutoff`: which of a task's traces or feedback entries its limits (count, age)
  let go.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Callable
from typing import Any

import msgspec

from kaizen_sdk.models import RolloutRequest
from kaizen_server.domain import budget

__all__ = [
    "AutoRollout",
    "Evaluation",
    "HandActivation",
    "ThresholdDecision",
    "ThresholdUsage",
    "auto_rollout_request",
    "evaluation_due",
    "hand_activation",
    "prune_cutoff",
    "ramp_step",
    "retention_cutoff",
    "threshold_due",
    "threshold_job",
]


# --- threshold jobs ---------------------------------------------------------------------------


def threshold_due(*, new_feedback: int, threshold: int, scored_since_job: int) -> bool:
    """Whether a task's counters call for a threshold job: *threshold* new feedback entries
    since the last job, at least one of them scored (else there is nothing new to learn from:
    no job, no junk version). Cheap: only the task's own counters."""
    return new_feedback >= threshold and scored_since_job > 0


@dataclasses.dataclass(frozen=True)
class ThresholdUsage:
    """What the task's threshold jobs used today: their count, the last one's start, the
    day's LLM spend (reservations included)."""

    jobs_today: int
    last_job_at: _dt.datetime | None
    day_used_usd: float


@dataclasses.dataclass(frozen=True)
class ThresholdDecision:
    """``start``: insert a threshold job now; else ``waiting`` says why not (``None`` when
    no job is due at all, or one is already pending or running)."""

    start: bool
    waiting: str | None = None


def threshold_job(
    limits: budget.Limits, *, new_feedback: int, threshold: int, scored_since_job: int,
    job_active: bool, usage: Callable[[], ThresholdUsage], now: _dt.datetime,
) -> ThresholdDecision:
    """Whether the task's threshold job starts now: due (`threshold_due`), no job pending
    or running, and the task's limits allow it (`budget.threshold_refusal`: jobs per day,
    cool-down, the day's budget).

    *usage* reads the day's figures; it is called only when a job is due and none runs
    (feedback arriving while a job runs costs no read).
    """
    if job_active or not threshold_due(new_feedback=new_feedback, threshold=threshold,
                                       scored_since_job=scored_since_job):
        return ThresholdDecision(False)
    used = usage()
    refused = budget.threshold_refusal(
        limits, new_feedback=new_feedback, threshold=threshold, jobs_today=used.jobs_today,
        last_job_at=used.last_job_at, day_used_usd=used.day_used_usd, now=now,
    )
    return ThresholdDecision(refused is None, refused)


# --- rollouts ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """After one more score: the rollout's new counters, and whether to evaluate now."""

    scores_seen: int
    evaluated_at: int
    due: bool


def evaluation_due(*, scores_seen: int, evaluated_at: int, min_samples: int) -> Evaluation:
    """Count a score that reached a running rollout; evaluate once both arms can have their
    minimum (``2 * min_samples`` scores), then every 10 % more.

    Evaluating reads every score of the rollout, so doing it per score would cost O(n)
    each; every 10 % keeps the total linear. The test stays valid at any stopping time,
    and every read of the rollout evaluates as well.
    """
    seen = scores_seen + 1
    due = seen >= 2 * min_samples and seen - evaluated_at >= max(1, evaluated_at // 10)
    return Evaluation(seen, seen if due else evaluated_at, due)


@dataclasses.dataclass(frozen=True)
class HandActivation:
    """A rollout ended by a hand activation: ``promote`` when the candidate was activated,
    ``rollback`` when another version was; *reason* for its audit."""

    action: str
    reason: str


def hand_activation(
    *, current_active: str | None, active_version: str, candidate_version: str
) -> HandActivation | None:
    """Whether the task's active version (*current_active*, ``None``: none) moved away from
    the rollout's *active_version* outside the rollout."""
    if current_active == active_version:
        return None
    if current_active == candidate_version:
        return HandActivation("promote", "the candidate was activated by hand")
    return HandActivation("rollback", "another version was activated by hand")


def ramp_step(*, step: int, candidate_n: int) -> tuple[int, int]:
    """An ``advance`` decision: the next ramp step, and the candidate's score count it
    starts at (``step_start_n``)."""
    return step + 1, candidate_n


@dataclasses.dataclass(frozen=True)
class AutoRollout:
    """The rollout a successful job's candidate gets by itself (*request*), or why none
    (*skipped*: ``None`` when the task asks for none, so nothing is worth logging)."""

    request: RolloutRequest | None
    skipped: str | None = None


def auto_rollout_request(
    *, candidate_version_id: str | None, job_metadata: dict[str, Any] | None,
    evaluator_config: dict[str, Any] | None,
) -> AutoRollout:
    """Whether a successful job's candidate starts a rollout by itself, and with what.

    Only a new version judged ``better`` (or not judged) is rolled out unattended, and only
    when the task's ``evaluator_config["auto_rollout"]`` is ``true`` (the defaults) or an
    object of `RolloutRequest` fields; an invalid object is *skipped* with its error.
    """
    if candidate_version_id is None:
        return AutoRollout(None)
    if (job_metadata or {}).get("verdict") not in (None, "better"):
        return AutoRollout(None)
    config = (evaluator_config or {}).get("auto_rollout")
    if not config:
        return AutoRollout(None)
    options = config if isinstance(config, dict) else {}
    try:
        req = msgspec.convert({**options, "candidate_version_id": candidate_version_id},
                              RolloutRequest)
    except msgspec.ValidationError as exc:
        return AutoRollout(None, str(exc))
    return AutoRollout(req)


# --- retention --------------------------------------------------------------------------------


def prune_cutoff(*, beyond_limit: int | None, rollout_start: int | None) -> int | None:
    """The newest feedback sequence number that may be deleted, or ``None`` for none.

    *beyond_limit* is the key of the task's newest entry past ``feedback_retention_limit``
    (``None``: the task has no more than the limit); that entry and older ones may go, but
    never one a running rollout counts (those after *rollout_start*, its first key).
    """
    if beyond_limit is None:
        return None
    return beyond_limit if rollout_start is None else min(beyond_limit, rollout_start)


def retention_cutoff(
    *, beyond_count: int | None, beyond_age: int | None, rollout_start: int | None
) -> int | None:
    """The newest key (``seq``) of a task's traces or feedback that may be deleted, or
    ``None`` for none.

    *beyond_count* is the newest row past the count limit, *beyond_age* the newest row older
    than the age limit (``None``: that limit lets nothing go, or is not set); a row past
    either limit may go, and every row older than it. Never one a running rollout counts
    (those after *rollout_start*, its first key).
    """
    keys = [key for key in (beyond_count, beyond_age) if key is not None]
    if not keys:
        return None
    cut = max(keys)
    return cut if rollout_start is None else min(cut, rollout_start)
