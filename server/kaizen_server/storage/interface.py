"""The storage seam: every operation the API, the job worker and the domain call on a store.

`StorageInterface` is what `kaizen_server.api`, `kaizen_server.jobs` and
`kaizen_server.http` are typed against; `kaizen_server.storage.sqlite.Store` implements it
(mypy checks that where the class is defined), and a second backend implements the same
methods with its own SQL. `tests/storage/test_contract.py` runs one contract suite against
every backend.

The contract every backend keeps:

- Each method is one transaction: it happens whole or not at all. A full database raises
  `StoreFull` and keeps nothing of the write; reads still work.
- A task is named by its id (a UUID string) or its name (``ref``); an unknown one raises
  `NotFound`, as does an unknown trace, job, version or key.
- `Conflict` is a clash with stored state (a taken name, a second running rollout);
  `Invalid` a value or reference the store will not use, its ``str()`` naming the field.
- Lists are keyset pages (`Page`): ``limit`` items at most, ``next_key`` for ``after``,
  ``None`` on the last page. Tasks, keys and job calls come oldest first; versions,
  traces, feedback, jobs and the audit log newest first. A row written while a client pages
  never moves the pages.
- Client ids make writes idempotent: a trace, a feedback entry or a score sent again with
  the same id is accepted and stored (or applied) once.
- A trace or feedback entry naming an unknown task creates it (feedback threshold
  `AUTO_TASK_THRESHOLD`); at most one job per task is pending or running
  (`ACTIVE_JOB_STATUSES`), and at most one rollout per task runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

from kaizen_sdk.models import (
    ApiKey,
    ApiKeyCreated,
    AuditEntry,
    Evaluator,
    EvaluatorRequest,
    EvaluatorUpdateRequest,
    FeedbackRequest,
    FeedbackResult,
    Job,
    Prompt,
    Rollout,
    RolloutRequest,
    RolloutServing,
    ScoreItem,
    Task,
    TaskCosts,
    TaskCreateRequest,
    TaskUpdateRequest,
    TraceRequest,
    TraceResult,
)
from kaizen_server.domain import budget
from kaizen_server.optimize.fewshot import Example
from kaizen_server.storage.errors import Page
from kaizen_server.storage.evaluators import Claim
from kaizen_server.storage.ui_sessions import SessionRecord

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "AUTO_TASK_THRESHOLD",
    "HELD_SCORES_MAX",
    "IngestError",
    "MAX_EXAMPLES",
    "StorageInterface",
]

AUTO_TASK_THRESHOLD = 50
"""``feedback_threshold`` of a task created implicitly by a trace or feedback naming it."""

ACTIVE_JOB_STATUSES = ("PENDING", "RUNNING")
"""Job statuses that count as "in progress": at most one such job per task."""

HELD_SCORES_MAX = 100_000
"""Scores waiting for their trace at most; past it a score for an unknown trace is an error."""

MAX_EXAMPLES = 5_000
"""Scored examples one optimization or evaluation reads at most: the task's newest."""

IngestError: TypeAlias = "tuple[str, str | None, str]"
"""One refused item of an ingest batch: ``(kind, client id or None, detail)``."""


class StorageInterface(Protocol):
    """The operations of a CT server's store; see the module docstring for the contract."""

    lease_seconds: float
    """How long a job's lease lasts from its last claim or renewal (the server sets it)."""

    # --- lifecycle ---------------------------------------------------------------------

    def release_thread(self) -> None:
        """Give back what the calling thread holds (its connection); the store stays open."""
        ...

    def close(self) -> None:
        """Close the store; any later call raises `RuntimeError`."""
        ...

    def schema_version(self) -> int:
        """The schema version the database is at (after the migrations run at open)."""
        ...

    # --- tasks -------------------------------------------------------------------------

    def create_task(self, req: TaskCreateRequest) -> Task:
        """Create a task. `Conflict` when the name is taken, `Invalid` for a bad setting."""
        ...

    def update_task(self, ref: str, req: TaskUpdateRequest) -> Task:
        """Change the settings *req* gives, all or none; return the task as it is now.

        `NotFound` for an unknown task; `Invalid` naming the first bad field (then nothing
        changes).
        """
        ...

    def get_task(self, ref: str) -> Task:
        """The task with this id or name; `NotFound` otherwise."""
        ...

    def list_tasks(self, limit: int = 1000, *, after: int | None = None) -> Page[Task]:
        """A page of tasks, oldest first."""
        ...

    def task_id(self, ref: str) -> str:
        """The UUID string of the task with this id or name; `NotFound` otherwise."""
        ...

    def limits(self, task: Task) -> budget.Limits:
        """The task's spend limits: its own fields, else the server's defaults."""
        ...

    # --- prompt versions ---------------------------------------------------------------

    def create_version(
        self, ref: str, prompt_text: str | None, *, activate: bool,
        messages: list[Any] | None = None, config: dict[str, Any] | None = None,
    ) -> Prompt:
        """Store a hand-written version (``optimizer="manual"``), numbered one past the last.

        Active if *activate*, else a ``candidate``. A chat version carries *messages* (its
        ``prompt_text`` is then their text) and/or *config* (model settings). `Invalid` for an
        empty, too long or too many-placeholder text or a bad recipe (naming the field);
        `NotFound` for an unknown task.
        """
        ...

    def active_prompt(self, ref: str) -> Prompt:
        """The task's active version; `NotFound` when the task or an active version lacks."""
        ...

    def labelled_prompt(self, ref: str, label: str) -> Prompt:
        """The version *label* names (``production``: the active one); `NotFound` when the
        label is not set on the task, `Invalid` when it is not a label."""
        ...

    def set_label(self, ref: str, label: str, version_id: uuid.UUID) -> Prompt:
        """Put *label* on *version_id*, moving it from the version that had it (in one
        transaction, audited as ``label.set``); ``production`` is not settable (`Invalid`)."""
        ...

    def remove_label(self, ref: str, label: str) -> Prompt:
        """Take *label* off the task's version that has it and return that version (audited as
        ``label.removed``); `NotFound` when the label is not set."""
        ...

    def list_versions(
        self, ref: str, limit: int = 1000, *, after: int | None = None
    ) -> Page[Prompt]:
        """A page of the task's versions, newest first."""
        ...

    def activate(self, ref: str, version_id: uuid.UUID) -> Prompt:
        """Make *version_id* active, the previous active one inactive; ends a running
        rollout as ``overridden``. `NotFound` for a version not of this task."""
        ...

    def version_with_text(self, task_id: str, prompt_text: str) -> int | None:
        """The number of the task's first version with exactly *prompt_text*, else ``None``."""
        ...

    # --- feedback and traces -----------------------------------------------------------

    def add_feedback(self, req: FeedbackRequest) -> tuple[FeedbackResult, list[str]]:
        """Store feedback, idempotent by its id; return it and the ids of jobs it started."""
        ...

    def list_feedback(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[FeedbackResult]:
        """A page of feedback, newest first, of one task or (*ref* ``None``) all."""
        ...

    def scored_examples(self, task_id: str, limit: int = MAX_EXAMPLES) -> list[Example]:
        """The task's newest *limit* feedback entries that have a score, oldest first, as
        optimizer examples. A bounded read (through the task's index, never the whole task),
        outside any write: it never holds up writers. Scores of online evaluators (source
        ``evaluator:NAME``) only when the task lets judged scores drive its loop, for traces no
        person scored, from evaluators whose agreement allows."""
        ...

    def add_trace(self, req: TraceRequest) -> TraceResult:
        """Store a trace, idempotent by its id, and apply the scores held for it."""
        ...

    def get_trace(self, trace_id: str) -> TraceResult:
        """One trace; `NotFound` otherwise."""
        ...

    def list_traces(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[TraceResult]:
        """A page of traces, newest first, of one task or (*ref* ``None``) all."""
        ...

    def traced_models(self, recent: int = 10_000) -> list[tuple[str, int]]:
        """``(model, traces)`` of the models named by the *recent* newest traces with tokens,
        by model name (for the list of models no price table knows)."""
        ...

    def task_costs(self, ref: str, *, days: float, recent: int = 10_000) -> TaskCosts:
        """What the task's calls of the last *days* days cost, in total and per version, read
        from at most its *recent* newest traces (``complete`` false when that cut the window).

        A trace counts as one call with its ``cost_usd``, except a trace whose parent trace is
        of the same task and has a cost (an LLM call inside a priced ``@ct.task`` call): that
        cost is already the parent's. `NotFound` for an unknown task.
        """
        ...

    def score_trace(
        self,
        trace_id: str,
        score: float,
        scored_by: str,
        *,
        comment: str | None = None,
        correction: Any = None,
        new_jobs: list[str] | None = None,
    ) -> TraceResult:
        """Score a trace and its feedback entry (made from the trace when it has none);
        scoring again updates the same entry. Ids of jobs started go to *new_jobs*.
        `NotFound` for an unknown trace."""
        ...

    def apply_scores(
        self, scores: Sequence[ScoreItem], new_jobs: list[str] | None = None
    ) -> tuple[int, list[tuple[str, str]]]:
        """Apply in-process scores, idempotent by score id; ``(applied, errors)``.

        A score for a trace not stored yet is held and counted as applied, then applied
        when the trace arrives; past `HELD_SCORES_MAX` held it is an error
        ``(score_id, detail)``.
        """
        ...

    def apply_held_scores(
        self, trace_ids: Sequence[str], new_jobs: list[str] | None = None
    ) -> int:
        """Apply the scores held for *trace_ids* (just stored), oldest first; how many."""
        ...

    def ingest(
        self, traces: Sequence[TraceRequest], feedback: Sequence[FeedbackRequest]
    ) -> tuple[int, list[IngestError], list[str]]:
        """Store a batch in one transaction: ``(accepted, errors, new_job_ids)``.

        An item naming a task that does not exist (by id) is an error, the others are
        kept (the API answers 207). A client id stored before or twice in the batch is
        accepted and stored once. The batch means what the items sent one by one mean.
        """
        ...

    def prune_feedback(self, batch: int) -> int:
        """Delete the oldest feedback entries of tasks past their ``feedback_retention_limit``
        (keeping each task's newest that many), at most *batch* in one short transaction;
        return how many. Entries a running rollout counts are kept, and ``feedback_count``
        stays the number received. Call again while it returns more than 0."""
        ...

    def prune(self, batch: int) -> int:
        """Delete the oldest traces or feedback entries of one task past its retention
        limits (`kaizen_server.domain.retention`: count and age, traces and feedback apart;
        a task's own field, else the store's ``retention_defaults``), at most *batch* rows
        in one short transaction; return how many. What a limit lets go is found by a
        bounded read outside the write; rows a running rollout counts are kept; the task's
        counters stay the numbers received. Call again while it returns more than 0."""
        ...

    # --- jobs --------------------------------------------------------------------------

    def start_job(self, ref: str, triggered_by: str = "manual") -> tuple[Job, bool]:
        """Queue a job; ``(job, created)``, the already active job with ``False``."""
        ...

    def get_job(self, job_id: str) -> Job:
        """One job; `NotFound` otherwise."""
        ...

    def list_jobs(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[Job]:
        """A page of jobs, newest first, of one task or (*ref* ``None``) all."""
        ...

    def unfinished_jobs(self) -> list[str]:
        """Ids of pending or running jobs, oldest first (to resume after a restart)."""
        ...

    def job_context(self, job_id: str) -> tuple[str, str, str | None]:
        """``(task_id, task_name, active_prompt_text)`` for a job; `NotFound` otherwise."""
        ...

    def set_job_step(self, job_id: str, step: str) -> None:
        """Mark the job RUNNING at *step* (``started_at`` set once)."""
        ...

    def finish_job_success(
        self,
        job_id: str,
        prompt_text: str,
        *,
        eval_score: float,
        optimizer: str,
        metadata: dict[str, Any],
        dspy_version: str | None = None,
        pr_url: str | None = None,
        pr_error: str | None = None,
        version_status: str = "candidate",
        comparison: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Job:
        """Store the job's candidate version and mark the job SUCCESS, in one write.

        A text equal to an existing version makes no new version (metadata
        ``no_new_version``, ``same_as_version``). With *owner*, the job ends only while
        *owner* holds its lease, which it gives up; otherwise nothing is written and
        `kaizen_server.domain.budget.LeaseLost` is raised.
        """
        ...

    def finish_job_failure(
        self, job_id: str, message: str, *, metadata: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> Job:
        """Mark the job FAILURE with *message* (and *metadata*); with *owner*, as
        `finish_job_success` (only under *owner*'s lease, else `LeaseLost`)."""
        ...

    def set_job_options(self, job_id: str, options: dict[str, Any]) -> None:
        """Keep a pending job's options (e.g. ``{"strategy": "gepa"}``) in its metadata."""
        ...

    def merge_job_metadata(self, job_id: str, values: dict[str, Any]) -> Job:
        """Set *values* (top-level keys) in a job's metadata, keeping the other keys."""
        ...

    def claim_job(self, job_id: str, owner: str) -> bool:
        """Take or renew the job's lease for *owner*; ``False`` when another live owner
        holds an unexpired lease or the job is finished.

        Safe across processes and machines: of several owners claiming at once, exactly one
        gets ``True`` (a compare-and-set, `kaizen_server.storage.leases`). The lease lasts
        ``lease_seconds`` of the store; a change of hands is audited as ``job.claimed``."""
        ...

    def claim_next_job(self, owner: str) -> str | None:
        """Take the lease of the oldest pending or running job that nobody runs (no holder,
        a lease that ran out, or a holder process of this machine that is gone), skipping
        *owner*'s own; its id, else ``None``. Of several owners asking at once, each job goes
        to one of them."""
        ...

    def release_job(self, job_id: str, owner: str) -> None:
        """Give up *owner*'s lease of the job (another worker may resume it)."""
        ...

    def day_used(self, task_id: str, *, except_job: str | None = None) -> float:
        """The task's LLM spend today (UTC), running jobs' reservations included."""
        ...

    def reserve_job(
        self, job_id: str, owner: str, estimate_usd: float, daily_budget: float
    ) -> str | None:
        """Count a starting job's estimate against its task's day; why it cannot start."""
        ...

    def reserve_call(
        self, job_id: str, owner: str, estimate_usd: float, *,
        job_budget: float, daily_budget: float,
    ) -> str | None:
        """Reserve an LLM call's estimate, or say which budget refuses it."""
        ...

    def settle_call(self, job_id: str, owner: str, record: Any, reserved_usd: float) -> None:
        """Replace a call's reservation by its charge and keep its record."""
        ...

    def job_books(self, job_id: str) -> dict[str, Any]:
        """The job's LLM books, call by call: calls, tokens, spend, by model."""
        ...

    def list_job_calls(
        self, job_id: str, limit: int, *, after: int | None = None
    ) -> Page[dict[str, Any]]:
        """A page of the job's LLM calls, oldest first."""
        ...

    # --- rollouts ----------------------------------------------------------------------

    def start_rollout(self, ref: str, req: RolloutRequest) -> Rollout:
        """Start a rollout of the candidate against the active version.

        `NotFound` (task, version), `Invalid` (another task's version, the active one, no
        active version), `Conflict` (one already runs).
        """
        ...

    def get_rollout(self, ref: str) -> Rollout:
        """The task's latest rollout, evaluated first while it runs; `NotFound` if none."""
        ...

    def stop_rollout(self, ref: str, action: str) -> Rollout:
        """End the running rollout by ``promote`` or ``rollback``; `Conflict` if none runs
        (or it was overridden by a hand activation)."""
        ...

    def rollout_serving(self, ref: str) -> RolloutServing | None:
        """What a prompt answer carries while a rollout runs, else ``None``."""
        ...

    def auto_rollout(self, job: Job) -> Rollout | None:
        """Start a rollout of a successful job's candidate when the task asks for one;
        trouble is logged, never raised."""
        ...

    # --- keys and audit ----------------------------------------------------------------

    def acting_as(
        self, name: str, key_id: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Attribute the state changes this thread makes meanwhile to key *name*."""
        ...

    def audit(
        self, action: str, *, task_id: str | None = None, target: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record *action* in the audit log, in a transaction of its own."""
        ...

    def create_key(self, name: str, scope: str) -> ApiKeyCreated:
        """Create a key; its secret is in the answer and stored only hashed.
        `Conflict` when a live key has *name*."""
        ...

    def list_keys(self, limit: int = 1000, *, after: int | None = None) -> Page[ApiKey]:
        """A page of keys (revoked ones too), oldest first; never a secret."""
        ...

    def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key; again changes nothing. `NotFound` for an unknown key."""
        ...

    def key_for_hash(self, secret_hash: str) -> tuple[str, str, str, str] | None:
        """``(id, name, scope, secret_hash)`` of the live key with this hash, else ``None``."""
        ...

    def list_audit(
        self, ref: str | None, limit: int, *, after: int | None = None
    ) -> Page[AuditEntry]:
        """A page of the audit log, newest first, of one task or (*ref* ``None``) all."""
        ...

    # --- web UI sessions (every server process on the database knows them) ---------------

    def open_session(self, id_hash: str, record: SessionRecord, *, keep: int,
                     expired_before: float) -> None:
        """Store a UI session named *id_hash* (a hash of its cookie's id); drop sessions last
        seen before *expired_before*, and the least recently seen ones past *keep*."""
        ...

    def get_session(self, id_hash: str) -> SessionRecord | None:
        """The UI session named *id_hash*, or ``None``."""
        ...

    def touch_session(self, id_hash: str, seen: float) -> None:
        """Note that the UI session was used at *seen* (epoch seconds)."""
        ...

    def close_session(self, id_hash: str) -> None:
        """End the UI session named *id_hash*; nothing happens for an unknown one."""
        ...

    # --- online evaluators -------------------------------------------------------------

    def create_evaluator(self, ref: str, req: EvaluatorRequest) -> Evaluator:
        """Add an evaluator to the task; it takes traces stored from now on.

        `Invalid` naming the field of a configuration that cannot work (nothing stored),
        `Conflict` when the task has an evaluator of that name, `NotFound` for the task.
        """
        ...

    def list_evaluators(self, ref: str) -> list[Evaluator]:
        """The task's evaluators, oldest first, each with status, books and agreement."""
        ...

    def get_evaluator(self, ref: str, evaluator: str) -> Evaluator:
        """The task's evaluator with this id or name; `NotFound` otherwise."""
        ...

    def update_evaluator(
        self, ref: str, evaluator: str, req: EvaluatorUpdateRequest
    ) -> Evaluator:
        """Change the fields *req* gives, all or none (`Invalid` naming the field)."""
        ...

    def remove_evaluator(self, ref: str, evaluator: str) -> Evaluator:
        """Delete the evaluator with its claims and books (its feedback stays)."""
        ...

    def evaluators_to_run(self) -> list[dict[str, Any]]:
        """Every enabled evaluator: ``{id, task_id, name, kind}`` and its settings."""
        ...

    def claim_evaluations(
        self, evaluator_id: str, owner: str, *, limit: int, estimate_usd: float,
        usd_per_char: float = 0.0,
    ) -> list[Claim]:
        """Take up to *limit* traces for the evaluator, for *owner* to evaluate.

        First the claims whose lease ran out, then the sampled traces stored after the last
        one looked at (the sample decision depends on the two ids only). Any number of
        workers and processes may call this at once: a trace is taken by one of them at most
        (a unique ``(evaluator, trace)`` row). An LLM judge's trace is taken only with a call
        reserved in the day's books (at *estimate_usd* plus *usd_per_char* per character of
        the trace the judge reads), exactly up to ``daily_calls`` / ``daily_budget_usd``;
        one refused is kept as skipped, and the evaluator's status says why.
        """
        ...

    def record_evaluation(
        self, item: Claim, owner: str, *, score: float | None, reason: str, called: bool,
        charged_usd: float = 0.0, new_jobs: list[str] | None = None,
    ) -> bool:
        """Keep the outcome of a claim *owner* still holds (``False``: it does not).

        A score becomes a feedback entry (``source`` ``evaluator:NAME``, comment *reason*),
        ``None`` keeps the trace unjudged with *reason*. The charge replaces the call's
        reservation in the day's books (``called`` false gives the call back). When the task
        lets judged scores drive its loop (``evaluator_config["judged_scores"]``) and the
        evaluator's agreement allows, a score for a trace no person scored becomes an optimizer
        example (`scored_examples`) and a rollout score of the trace's arm, and counts toward
        the feedback threshold: ``feedback_threshold`` judged scores since the last job count
        as one scored entry (ids of jobs started go to *new_jobs*).
        """
        ...
