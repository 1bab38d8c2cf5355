"""The human step between an optimizer candidate and the served prompt.

A task whose ``evaluator_config["auto_rollout"]`` asks for a rollout after each successful job
does not get one unattended any more: `after_job` records in the job's metadata that the
rollout waits for approval (``job_metadata["rollout"] = {"state": "awaiting_approval", ...}``)
and `approve` (``POST /api/v1/rollouts/{task_id}/approve``, ``kaizen rollout approve TASK``)
starts it. A task may opt into unattended rollouts with
``evaluator_config["unattended_rollouts"] = true``; even then a candidate that the injection
rules flagged (``job_metadata["flags"]``, see `kaizen_sdk.local.injection`) waits for a human.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from kaizen_sdk.local.store import Conflict, Store, StoreError, utcnow
from kaizen_sdk.models import Job, Rollout, RolloutRequest

__all__ = ["AWAITING", "UNATTENDED_SETTING", "after_job", "approve", "pending_job"]

logger = logging.getLogger("kaizen_sdk.local.approval")

UNATTENDED_SETTING = "unattended_rollouts"
"""The ``evaluator_config`` key by which a task lets unflagged candidates roll out unattended."""

AWAITING = "awaiting_approval"
"""``job_metadata["rollout"]["state"]`` of a candidate whose rollout waits for approval."""

_SCAN_JOBS = 50


def _auto_config(store: Store, task_id: str) -> tuple[Any, bool]:
    config = store.get_task(task_id).evaluator_config or {}
    return config.get("auto_rollout"), config.get(UNATTENDED_SETTING) is True


def after_job(store: Store, job: Job) -> Rollout | None:
    """Start the task's automatic rollout of *job*'s candidate, or record that it waits.

    Trouble is logged, never raised (the job stays a success).
    """
    if job.task_id is None or job.prompt_version_id is None:
        return None
    try:
        config, unattended = _auto_config(store, str(job.task_id))
        if not config:
            return None
        flags = list((job.job_metadata or {}).get("flags") or [])
        if unattended and not flags:
            return store.auto_rollout(job)
        reason = (f"the candidate is flagged ({', '.join(flags)}): a human must approve it"
                  if flags else f"the task does not set evaluator_config"
                  f"[{UNATTENDED_SETTING!r}]: a human must approve the rollout")
        store.merge_job_metadata(str(job.id), {"rollout": {"state": AWAITING,
                                                           "reason": reason}})
        logger.info("automatic rollout after job %s waits for approval: %s", job.id, reason)
    except StoreError as exc:
        logger.warning("automatic rollout after job %s not started: %s", job.id, exc)
    return None


def pending_job(store: Store, task_ref: str) -> Job | None:
    """The task's newest job whose rollout waits for approval, if any."""
    for job in store.list_jobs(task_ref, _SCAN_JOBS).items:
        rollout = (job.job_metadata or {}).get("rollout")
        if isinstance(rollout, dict) and rollout.get("state") == AWAITING:
            return job
    return None


def approve(store: Store, task_ref: str) -> Rollout:
    """Start the rollout that waits for approval; `Conflict` when none waits.

    The rollout uses the task's ``auto_rollout`` options and the job's candidate.
    """
    task_id = store.task_id(task_ref)
    job = pending_job(store, task_id)
    if job is None or job.prompt_version_id is None:
        raise Conflict(f"no optimizer candidate of task {task_ref!r} waits for approval")
    config, _ = _auto_config(store, task_id)
    options = config if isinstance(config, dict) else {}
    try:
        req = msgspec.convert({**options, "candidate_version_id": str(job.prompt_version_id)},
                              RolloutRequest)
    except msgspec.ValidationError as exc:
        raise Conflict(f"the task's evaluator_config['auto_rollout'] is not a valid rollout:"
                       f" {exc}") from None
    rollout = store.start_rollout(task_id, req)
    flags = (job.job_metadata or {}).get("flags") or []
    store.merge_job_metadata(str(job.id), {"rollout": {
        "state": "approved", "approved_at": utcnow().isoformat(), "rollout_id": str(rollout.id),
        "flags_acknowledged": list(flags)}})
    logger.info("rollout %s of job %s approved", rollout.id, job.id)
    return rollout
