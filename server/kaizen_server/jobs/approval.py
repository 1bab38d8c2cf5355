"""The human step between an optimizer candidate and the served prompt.

A task whose ``evaluator_config["auto_rollout"]`` asks for a rollout after each successful job
does not get one unattended any more: `decide` records in the job's metadata, written with the
job's result, that the rollout waits for approval
(``job_metadata["rollout"] = {"state": "awaiting_approval", "reason": ...}``), and `approve`
(``POST /api/v1/rollouts/{task_id}/approve``, ``kaizen rollout approve TASK``) starts it. A
task may opt into unattended rollouts with ``evaluator_config["unattended_rollouts"] = true``;
even then a candidate that the injection rules flagged (``job_metadata["flags"]``, see
`kaizen_server.domain.injection`) waits for a human.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from kaizen_sdk.models import Job, Rollout, RolloutRequest, Task
from kaizen_server.storage.errors import Conflict, utcnow
from kaizen_server.storage.interface import StorageInterface

__all__ = [
    "AWAITING",
    "UNATTENDED",
    "UNATTENDED_SETTING",
    "after_job",
    "approve",
    "decide",
    "pending_job",
]

logger = logging.getLogger("kaizen_server.jobs.approval")

UNATTENDED_SETTING = "unattended_rollouts"
"""The ``evaluator_config`` key by which a task lets unflagged candidates roll out unattended."""

AWAITING = "awaiting_approval"
"""``job_metadata["rollout"]["state"]`` of a candidate whose rollout waits for approval."""

UNATTENDED = "unattended"
"""``job_metadata["rollout"]["state"]`` of a candidate rolled out without approval."""

_SCAN_JOBS = 50


def _auto_config(store: StorageInterface, task_id: str) -> tuple[Any, bool]:
    config = store.get_task(task_id).evaluator_config or {}
    return config.get("auto_rollout"), config.get(UNATTENDED_SETTING) is True


def decide(task: Task, flags: list[str]) -> dict[str, Any] | None:
    """The job's ``job_metadata["rollout"]`` entry, stored with its result.

    ``None`` when the task asks for no automatic rollout; ``{"state": "unattended"}`` when
    `after_job` may start it; else ``{"state": "awaiting_approval", "reason": ...}``.
    """
    config = task.evaluator_config or {}
    if not config.get("auto_rollout"):
        return None
    if config.get(UNATTENDED_SETTING) is True and not flags:
        return {"state": UNATTENDED}
    reason = (f"the candidate is flagged ({', '.join(flags)}): a human must approve it"
              if flags else f"the task does not set evaluator_config[{UNATTENDED_SETTING!r}]:"
              " a human must approve the rollout")
    return {"state": AWAITING, "reason": reason}


def after_job(store: StorageInterface, job: Job) -> Rollout | None:
    """Start the automatic rollout of a finished job when `decide` allowed it unattended.

    Trouble is logged by the store's `auto_rollout`, never raised (the job stays a success).
    """
    entry = (job.job_metadata or {}).get("rollout")
    if job.prompt_version_id is None or not isinstance(entry, dict):
        return None
    if entry.get("state") == UNATTENDED:
        return store.auto_rollout(job)
    logger.info("automatic rollout after job %s waits for approval: %s", job.id,
                entry.get("reason"))
    return None


def pending_job(store: StorageInterface, task_ref: str) -> Job | None:
    """The task's newest job whose rollout waits for approval, if any."""
    for job in store.list_jobs(task_ref, _SCAN_JOBS).items:
        rollout = (job.job_metadata or {}).get("rollout")
        if (isinstance(rollout, dict) and rollout.get("state") == AWAITING
                and job.prompt_version_id is not None):
            return job
    return None


def approve(store: StorageInterface, task_ref: str) -> Rollout:
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
    store.audit("rollout.approved", task_id=task_id, target=str(rollout.id),
                detail=f"job {job.id}" + (f", flags {', '.join(flags)}" if flags else ""))
    logger.info("rollout %s of job %s approved", rollout.id, job.id)
    return rollout
