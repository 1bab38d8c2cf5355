"""Spend limits of the local server's optimization jobs: defaults, per-task limits, the ledger.

Three limits bound what tuning costs, each server-wide (`BudgetDefaults`: ``kaizen serve``
flags or ``KAIZEN_*`` variables) and per task (task fields; ``None`` takes the server's value,
``0`` allows none):

- **per job** (``cost_budget``, default `DEFAULT_JOB_BUDGET_USD`): a job stops before the LLM
  call that would take its spend past it, keeps what it has (a partly judged candidate is
  judged on what was done) and says so in ``job_metadata["budget_reached"]``;
- **per task per UTC day** (``daily_budget_usd``, default `DEFAULT_DAILY_BUDGET_USD`): the spend
  of the day's jobs, plus the part of a running job's estimate not spent yet, never exceeds it.
  A job that would not fit is refused before it starts, naming the setting;
- **threshold jobs** start only on enough *new* evidence (``feedback_threshold`` entries since
  the last job, at least one of them scored), when the cool-down (``cooldown_minutes``, default
  `DEFAULT_COOLDOWN_MINUTES`) since the last threshold job has passed and fewer than
  ``max_jobs_per_day`` (default `DEFAULT_MAX_JOBS_PER_DAY`) threshold jobs ran that day.

`Ledger` is the bridge between `kaizen_server.llm.client.LLMClient` and the database: before each
call it reserves the call's estimated cost in the job row (refusing when a limit would be
passed), after it settles the charge — the reported usage, or the estimate when the endpoint
reports less. Spend therefore survives a crash of the server, and a call cut off by one still
counts.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kaizen_server.llm.client import BudgetExceeded, LLMError
from kaizen_server.settings import (
    KAIZEN_COOLDOWN_MINUTES,
    KAIZEN_DAILY_BUDGET_USD,
    KAIZEN_JOB_BUDGET_USD,
    KAIZEN_MAX_JOBS_PER_DAY,
)

if TYPE_CHECKING:
    from kaizen_server.llm.client import CallRecord
    from kaizen_server.storage.interface import StorageInterface

__all__ = [
    "LEASE_LOST",
    "DEFAULT_COOLDOWN_MINUTES",
    "DEFAULT_DAILY_BUDGET_USD",
    "DEFAULT_JOB_BUDGET_USD",
    "DEFAULT_MAX_JOBS_PER_DAY",
    "KAIZEN_COOLDOWN_MINUTES",
    "KAIZEN_DAILY_BUDGET_USD",
    "KAIZEN_JOB_BUDGET_USD",
    "KAIZEN_MAX_JOBS_PER_DAY",
    "BudgetDefaults",
    "LeaseLost",
    "Ledger",
    "Limits",
    "day_start",
    "threshold_refusal",
]

LEASE_LOST = "another worker took over this job; this one stops"
"""`Store.reserve_call`'s answer when the job's lease is no longer the caller's."""

DEFAULT_JOB_BUDGET_USD = 1.0
"""LLM spend one job may make when neither the task nor the server sets ``cost_budget``."""

DEFAULT_DAILY_BUDGET_USD = 5.0
"""LLM spend per task per UTC day when neither the task nor the server sets one."""

DEFAULT_MAX_JOBS_PER_DAY = 6
"""Threshold jobs per task per UTC day."""

DEFAULT_COOLDOWN_MINUTES = 60.0
"""Minutes between two threshold jobs of one task."""



def _number(value: float | None, env: Mapping[str, str], name: str, default: float,
            *, integer: bool = False) -> float:
    if value is None:
        raw = env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise ValueError(f"{name} must be {kind} >= 0, got {raw!r}") from None
    if value < 0 or value != value:  # negative or NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class BudgetDefaults:
    """The server-wide limits; a task's own fields override them (``None`` takes these)."""

    job_budget_usd: float = DEFAULT_JOB_BUDGET_USD
    daily_budget_usd: float = DEFAULT_DAILY_BUDGET_USD
    max_jobs_per_day: int = DEFAULT_MAX_JOBS_PER_DAY
    cooldown_minutes: float = DEFAULT_COOLDOWN_MINUTES

    @classmethod
    def resolve(
        cls,
        *,
        job_budget_usd: float | None = None,
        daily_budget_usd: float | None = None,
        max_jobs_per_day: int | None = None,
        cooldown_minutes: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> BudgetDefaults:
        """Explicit arguments, then ``KAIZEN_*`` variables, then the defaults.

        Raises `ValueError` naming the variable for a negative or malformed value.
        """
        env = os.environ if environ is None else environ
        return cls(
            job_budget_usd=_number(job_budget_usd, env, KAIZEN_JOB_BUDGET_USD,
                                   DEFAULT_JOB_BUDGET_USD),
            daily_budget_usd=_number(daily_budget_usd, env, KAIZEN_DAILY_BUDGET_USD,
                                     DEFAULT_DAILY_BUDGET_USD),
            max_jobs_per_day=int(_number(max_jobs_per_day, env, KAIZEN_MAX_JOBS_PER_DAY,
                                         DEFAULT_MAX_JOBS_PER_DAY, integer=True)),
            cooldown_minutes=_number(cooldown_minutes, env, KAIZEN_COOLDOWN_MINUTES,
                                     DEFAULT_COOLDOWN_MINUTES),
        )


@dataclasses.dataclass(frozen=True)
class Limits:
    """One task's effective limits: its own fields where set, else the server's."""

    job_budget_usd: float
    daily_budget_usd: float
    max_jobs_per_day: int
    cooldown_minutes: float

    @classmethod
    def of(cls, task: Any, defaults: BudgetDefaults) -> Limits:
        """The limits of *task* (a `Task` or a row with the same names)."""
        def pick(name: str, default: float) -> float:
            value = task[name] if not hasattr(task, name) else getattr(task, name)
            return default if value is None else float(value)

        return cls(
            job_budget_usd=pick("cost_budget", defaults.job_budget_usd),
            daily_budget_usd=pick("daily_budget_usd", defaults.daily_budget_usd),
            max_jobs_per_day=int(pick("max_jobs_per_day", defaults.max_jobs_per_day)),
            cooldown_minutes=pick("cooldown_minutes", defaults.cooldown_minutes),
        )


def day_start(now: _dt.datetime) -> _dt.datetime:
    """Midnight UTC of *now*'s day: budgets and job counts are per UTC day."""
    return now.astimezone(_dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def threshold_refusal(
    limits: Limits, *, new_feedback: int, threshold: int, jobs_today: int,
    last_job_at: _dt.datetime | None, day_used_usd: float, now: _dt.datetime,
) -> str | None:
    """Why a threshold job must not start now, or ``None`` when it may."""
    if new_feedback < threshold:
        return f"{new_feedback}/{threshold} new feedback entries since the last job"
    if jobs_today >= limits.max_jobs_per_day:
        return (f"{jobs_today} of {limits.max_jobs_per_day} threshold jobs today"
                " (max_jobs_per_day)")
    if last_job_at is not None and limits.cooldown_minutes > 0:
        ready = last_job_at + _dt.timedelta(minutes=limits.cooldown_minutes)
        if now < ready:
            return f"cool-down until {ready.strftime('%H:%M')} UTC (cooldown_minutes)"
    if day_used_usd >= limits.daily_budget_usd and limits.daily_budget_usd >= 0:
        return (f"today's spend ${day_used_usd:.4f} reached the daily budget"
                f" ${limits.daily_budget_usd:.4f} (daily_budget_usd)")
    return None


class LeaseLost(LLMError):
    """Another worker holds the job now: this one stops without finishing it."""


class Ledger:
    """Keeps one job's books in its database row, call by call (see the module docstring).

    Parameters:
        store: the database.
        job_id: the job whose row carries the spend.
        owner: the worker's lease; a call is refused once another worker holds the job.
        limits: the task's limits (the job budget and the day's).
    """

    def __init__(self, store: StorageInterface, job_id: str, owner: str, limits: Limits) -> None:
        self._store = store
        self.job_id = job_id
        self.owner = owner
        self.limits = limits

    def reserve(self, estimate_usd: float) -> None:
        """Reserve *estimate_usd* for the next call.

        Raises `BudgetExceeded` naming the budget that refuses it, and `LeaseLost` when
        another worker took the job over.
        """
        refused = self._store.reserve_call(self.job_id, self.owner, estimate_usd,
                                           job_budget=self.limits.job_budget_usd,
                                           daily_budget=self.limits.daily_budget_usd)
        if refused == LEASE_LOST:
            raise LeaseLost(refused)
        if refused is not None:
            raise BudgetExceeded(refused)

    def settle(self, record: CallRecord, reserved_usd: float) -> None:
        """Replace the reservation by the call's charge and keep its record."""
        self._store.settle_call(self.job_id, self.owner, record, reserved_usd)
