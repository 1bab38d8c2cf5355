"""The local server's background job worker: runs optimization jobs one at a time.

A job moves ``PENDING`` -> ``RUNNING`` -> ``SUCCESS`` with a new ``candidate`` prompt version, or
``FAILURE`` with ``error_message`` (and no version). Two optimizers exist:

- ``local`` (the default): the deterministic few-shot builder of `kaizen_server.optimize.fewshot`,
  no LLM calls. Steps: ``loading_feedback``, ``splitting``, ``building_prompt``,
  ``evaluating``, ``saving``.
- ``dspy``: `kaizen_server.optimize.dspy_optimizer` compiles a candidate with the task's
  ``teacher_model``, then `kaizen_server.evaluate.judge` re-runs candidate and active prompt on
  the validation split and the ``judge_model`` scores both. Steps carry counts
  (``bootstrapping 3/30``, ``evaluating candidate 12/15``). Endpoint trouble, a judge without a
  number, too few examples, a missing extra or a spent ``cost_budget`` end the job ``FAILURE``
  naming the cause and the setting to change.

Spend (`kaizen_server.domain.budget`): a worker runs a job only while it holds the job's lease, so
two servers on one database never run it twice; each LLM call is reserved and charged in the
job row as it happens, so a restart resumes with the spend so far. A dspy job starts only when
its estimate fits in the task's day; judged on a bounded held-out sample
(`kaizen_server.evaluate.heldout`), it ends with a verdict (`kaizen_server.domain.verdict`) in
``job_metadata["verdict"]``; a budget reached while judging keeps the pairs judged so far.

When the task has ``github_repo`` and ``prompt_path``, a successful job opens a pull request
with the candidate (`kaizen_server.jobs.github`) and records ``pr_url``, or ends ``PR_FAILED``.

Every job has a wall-clock limit (``OptimizerSettings.job_timeout``, ``--job-timeout`` /
``KAIZEN_JOB_TIMEOUT``): its upstream calls may not pass it and the job ends ``FAILURE``
naming it. `JobWorker.stop` cancels the upstream calls in flight. Every message stored or
logged passes the job's `Scrubber`. A candidate over `MAX_PROMPT_CHARS` is not stored; a
candidate the injection rules flag (`kaizen_server.domain.injection`) carries
``job_metadata["flags"]`` and is never rolled out without a human's approval
(`kaizen_server.jobs.approval`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from kaizen_sdk.models import MAX_PROMPT_CHARS, CostEstimate, Task
from kaizen_server.domain import budget, injection, verdict
from kaizen_server.domain.task_settings import fill_task, update_command
from kaizen_server.evaluate import heldout
from kaizen_server.evaluate import judge as evaluate
from kaizen_server.evaluate.judge import Sample
from kaizen_server.jobs import approval, github
from kaizen_server.jobs.heartbeat import Heartbeat
from kaizen_server.llm.client import BudgetExceeded, LLMClient, LLMError
from kaizen_server.llm.pricing import Price, PriceTable
from kaizen_server.optimize import dspy_optimizer
from kaizen_server.optimize import fewshot as optimizer
from kaizen_server.outbound import Canceller
from kaizen_server.scrub import Scrubber, url_secrets
from kaizen_server.settings import (
    KAIZEN_GITHUB_API_URL,
    KAIZEN_GITHUB_TOKEN,
    KAIZEN_JOB_TIMEOUT,
    KAIZEN_LLM_API_KEY,
    KAIZEN_LLM_BASE_URL,
    KAIZEN_OPTIMIZER,
)
from kaizen_server.storage import spend as spend_store
from kaizen_server.storage.interface import StorageInterface

__all__ = [
    "DEFAULT_JOB_TIMEOUT",
    "DEFAULT_POLL_SECONDS",
    "MIN_DSPY_EXAMPLES",
    "OPTIMIZERS",
    "JobWorker",
    "OptimizerSettings",
    "seconds_setting",
]

logger = logging.getLogger("kaizen_server.jobs.worker")

OPTIMIZERS = ("local", "dspy")
"""Values of ``LocalServer(optimizer=...)`` / ``KAIZEN_OPTIMIZER``."""

MIN_DSPY_EXAMPLES = 10
"""Fewest scored feedback entries a ``dspy`` job needs (``evaluator_config["min_examples"]``)."""

DEFAULT_JOB_TIMEOUT = 1800.0
"""Seconds one job may run (wall clock) unless ``--job-timeout`` / ``KAIZEN_JOB_TIMEOUT``."""

_OPTIMIZER_JSON = "'{\"optimizer\": \"auto\"}'"

DEFAULT_POLL_SECONDS = 5.0
"""How often an idle worker asks the database for a job nobody runs (queued by another server
process, or left by one that stopped) unless ``KAIZEN_JOB_POLL_SECONDS`` says otherwise."""


def seconds_setting(given: float | None, variable: str, default: float, *,
                    environ: Mapping[str, str] | None = None) -> float:
    """*given*, else the environment variable *variable*, else *default*: a positive number
    of seconds; raise `ValueError` naming the variable otherwise."""
    env = os.environ if environ is None else environ
    value: float | None = given
    if value is None:
        raw = env.get(variable) or ""
        if not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{variable} must be a number of seconds, got {raw[:40]!r}"
                             ) from None
    if not 0 < value < float("inf"):
        raise ValueError(f"{variable} must be a positive number of seconds, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """Which optimizer jobs use and how to reach the LLM; the key is never shown in ``repr``."""

    optimizer: str = "local"
    llm_base_url: str | None = None
    llm_api_key: str | None = dataclasses.field(default=None, repr=False)
    prices: PriceTable = dataclasses.field(default_factory=PriceTable, repr=False)
    job_timeout: float = DEFAULT_JOB_TIMEOUT

    @classmethod
    def resolve(
        cls,
        optimizer: str | None = None,
        *,
        llm_base_url: str | None = None,
        llm_api_key: str | None = None,
        llm_prices: Mapping[str, Price] | None = None,
        environ: Mapping[str, str] | None = None,
        job_timeout: float | None = None,
    ) -> OptimizerSettings:
        """Explicit arguments first, then ``KAIZEN_*`` variables; raise `ValueError` if bad."""
        env = os.environ if environ is None else environ
        name = (optimizer or env.get(KAIZEN_OPTIMIZER) or "local").strip().lower()
        if name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {name!r} (optimizer= / {KAIZEN_OPTIMIZER}): use one of"
                f" {', '.join(OPTIMIZERS)}"
            )
        if job_timeout is None:
            raw = env.get(KAIZEN_JOB_TIMEOUT) or str(DEFAULT_JOB_TIMEOUT)
            try:
                job_timeout = float(raw)
            except ValueError:
                raise ValueError(f"{KAIZEN_JOB_TIMEOUT} must be a number of seconds, got"
                                 f" {raw[:40]!r}") from None
        if not job_timeout > 0 or job_timeout == float("inf"):
            raise ValueError(f"job_timeout (--job-timeout / {KAIZEN_JOB_TIMEOUT}) must be a"
                             f" positive number of seconds, got {job_timeout!r}")
        return cls(
            optimizer=name,
            llm_base_url=llm_base_url or env.get(KAIZEN_LLM_BASE_URL) or None,
            llm_api_key=llm_api_key or env.get(KAIZEN_LLM_API_KEY) or None,
            prices=PriceTable(llm_prices, environ=env),
            job_timeout=job_timeout,
        )

    def scrubber(self, environ: Mapping[str, str] | None = None) -> Scrubber:
        """The scrubber of a job: the LLM key, the GitHub token, URL user-info."""
        env = os.environ if environ is None else environ
        return Scrubber([self.llm_api_key, *url_secrets(self.llm_base_url),
                         env.get(KAIZEN_GITHUB_TOKEN), *url_secrets(
                             env.get(KAIZEN_GITHUB_API_URL))])


class _JobFault(Exception):
    """A job cannot run as configured; ``str()`` is the job's ``error_message``."""


@dataclasses.dataclass(frozen=True)
class _Plan:
    strategy: str
    task_model: str
    teacher_model: str
    judge_model: str
    rubric: str
    config: Mapping[str, Any]
    base_prompt: str
    train: list[Sample]
    val: list[Sample]


def _dspy_plan(task: Task, examples: list[optimizer.Example], active: str | None,
               strategy: str | None = None, seed: str = "") -> _Plan:
    config = dict(task.evaluator_config or {})
    if strategy is not None:  # the job option wins over the task's evaluator_config
        config["optimizer"] = strategy
    if not task.teacher_model:
        raise _JobFault(f"task {task.name!r} has no teacher_model: set one with"
                        f" {update_command(task.name, 'teacher_model')} to use the dspy"
                        " optimizer")
    if not task.judge_model:
        raise _JobFault(f"task {task.name!r} has no judge_model: set one with"
                        f" {update_command(task.name, 'judge_model')} to use the dspy"
                        " optimizer")
    fix_config = update_command(task.name, "evaluator_config", "'{\"min_examples\": N}'")
    need = config.get("min_examples", MIN_DSPY_EXAMPLES)
    if not isinstance(need, int) or isinstance(need, bool) or need < 2:
        raise _JobFault(f"evaluator_config['min_examples'] must be an integer >= 2, got {need!r};"
                        f" change it with {fix_config}")
    if len(examples) < need:
        raise _JobFault(
            f"task {task.name!r} has {len(examples)} scored feedback entries; the dspy optimizer"
            f" needs at least {need} (evaluator_config['min_examples']): send more scored"
            f" feedback, or lower the minimum with {fix_config}"
        )
    rubric = config.get("rubric", evaluate.DEFAULT_RUBRIC)
    task_model = config.get("task_model", task.teacher_model)
    if not isinstance(rubric, str) or not isinstance(task_model, str):
        raise _JobFault(
            "evaluator_config['rubric'] and ['task_model'] must be strings; set them with"
            f" {update_command(task.name, 'rubric', 'TEXT')} and"
            f" {update_command(task.name, 'task_model')}"
        )
    train, val = optimizer.split_train_val(examples)
    try:
        val = heldout.held_out_sample(val, heldout.sample_size(len(val), config), seed)
        strategy = dspy_optimizer.choose_strategy(config, examples)
    except dspy_optimizer.OptimizerError as exc:
        raise _JobFault(
            f"{exc}; change it with"
            f" {update_command(task.name, 'evaluator_config', _OPTIMIZER_JSON)}"
        ) from None
    except ValueError as exc:  # evaluator_config["eval_sample_size"]
        raise _JobFault(
            f"{exc}; change it with {update_command(task.name, 'evaluator_config', 'JSON')}"
        ) from None
    return _Plan(
        strategy=strategy, task_model=task_model, teacher_model=task.teacher_model,
        judge_model=task.judge_model, rubric=rubric, config=config,
        base_prompt=active if active is not None else optimizer.default_base_prompt(task.name),
        train=train, val=val,
    )


def _cost_plan(p: _Plan, prices: PriceTable) -> dspy_optimizer.CostPlan:
    labeled = sum(1 for s in p.train if evaluate.reference_answer(s) is not None)
    return dspy_optimizer.estimate(
        strategy=p.strategy, samples=p.train + p.val, train_size=labeled, val_size=len(p.val),
        base_prompt=p.base_prompt, task_model=p.task_model, teacher_model=p.teacher_model,
        judge_model=p.judge_model, rubric=p.rubric, config=p.config, prices=prices,
    )


def _branch(task_name: str, job_id: str) -> str:
    return f"kaizen/{re.sub(r'[^A-Za-z0-9._-]+', '-', task_name).strip('-.')}-{job_id[:8]}"


def _report(task: Task, metadata: Mapping[str, Any]) -> str:
    rows = [("verdict", metadata.get("verdict")),
            ("optimizer", metadata.get("optimizer")), ("strategy", metadata.get("strategy")),
            ("validation samples", metadata.get("sample_size", metadata.get("val_size"))),
            ("active judged mean", metadata.get("active_judged_mean")),
            ("candidate judged mean", metadata.get("candidate_judged_mean")),
            ("paired difference", metadata.get("paired_diff")),
            ("95 % interval", metadata.get("paired_diff_ci95")),
            ("LLM calls", metadata.get("llm_calls")), ("spent (USD)", metadata.get("spent_usd"))]
    lines = [f"Candidate prompt for task `{task.name}` from the Kaizen local server.", "",
             "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows if v is not None]
    return "\n".join(lines)


class JobWorker:
    """A daemon thread that runs queued optimization jobs against a store (`StorageInterface`).

    Jobs come from the database, not from this process: the worker takes the oldest job that
    nobody runs (`StorageInterface.claim_next_job`), when `submit` wakes it and every
    *poll_seconds* when idle, so several server processes on one database share the jobs, and
    a job left by a process that died is taken over once its lease runs out. While a job runs,
    a `Heartbeat` renews its lease every third of *lease_seconds*.

    Parameters:
        store: where jobs, feedback and prompt versions live.
        step_delay: seconds to pause after each main progress step (0 by default; a demo can
            slow jobs down to show progress). `stop` interrupts the pause.
        settings: the optimizer and LLM endpoint (default: `OptimizerSettings.resolve()`).
        lease_seconds: how long the store's leases last (the heartbeat's period is a third).
        poll_seconds: how often an idle worker looks for a job in the database.
    """

    def __init__(
        self, store: StorageInterface, *, step_delay: float = 0.0,
        settings: OptimizerSettings | None = None,
        lease_seconds: float = spend_store.LEASE_SECONDS,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._step_delay = max(0.0, step_delay)
        self.settings = settings if settings is not None else OptimizerSettings.resolve()
        self._lease_seconds = lease_seconds
        self._poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._current: LLMClient | None = None
        self._canceller = Canceller()
        self._deadline = float("inf")
        self._scrub = self.settings.scrubber()
        self.owner = spend_store.new_owner()
        """This worker's lease name: it runs a job only while the job's lease is its own."""
        self._thread = threading.Thread(target=self._run, name="kaizen-local-jobs", daemon=True)

    def start(self) -> None:
        """Start the worker; it resumes jobs left unfinished by an earlier run at once."""
        self._thread.start()

    def submit(self, job_id: str) -> None:
        """Wake the worker for a job that is already stored as ``PENDING`` (any worker on the
        database may take it: the oldest unclaimed job runs first)."""
        if not self._stopping.is_set():
            self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step (or LLM call) and wait for the thread to end."""
        self._stopping.set()
        self._canceller.cancel()
        current = self._current
        if current is not None:
            current.cancel()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("local job worker did not stop within %.1f s", timeout)

    def estimate(
        self, task_ref: str, *, strategy: str | None = None
    ) -> tuple[CostEstimate, str | None]:
        """Return the cost estimate of optimizing the task now and a budget warning, if any.

        *strategy* overrides ``evaluator_config["optimizer"]`` (the job option).
        """
        task = self._store.get_task(task_ref)
        examples = self._store.scored_examples(str(task.id))
        train, val = optimizer.split_sizes(len(examples))
        if self.settings.optimizer != "dspy":
            return CostEstimate(train_size=train, val_size=val), None
        with contextlib.suppress(ValueError):  # else the job fails and says why
            val = heldout.sample_size(val, task.evaluator_config)
        try:
            active = self._store.active_prompt(str(task.id)).prompt_text
        except Exception:
            active = None
        try:
            cost = _cost_plan(_dspy_plan(task, examples, active, strategy),
                              self.settings.prices)
        except (_JobFault, dspy_optimizer.OptimizerError):
            # The job itself will fail and say why; the estimate stays empty.
            return CostEstimate(train_size=train, val_size=val,
                                teacher_model=task.teacher_model,
                                judge_model=task.judge_model), None
        estimate = CostEstimate(
            estimated_cost_usd=round(cost.cost_usd, 6), estimated_llm_calls=cost.total_calls,
            train_size=train, val_size=val, max_trials=cost.max_trials,
            teacher_model=task.teacher_model, judge_model=task.judge_model,
        )
        warning = None
        limits = self._store.limits(task)
        left = limits.daily_budget_usd - self._store.day_used(str(task.id))
        if cost.cost_usd > limits.job_budget_usd:
            warning = (
                f"The estimated cost ${cost.cost_usd:.4f} exceeds the job's cost_budget"
                f" ${limits.job_budget_usd:.4f}; the job stops when it reaches the budget."
            )
        elif min(cost.cost_usd, limits.job_budget_usd) > left:
            warning = (
                f"The estimated cost ${cost.cost_usd:.4f} exceeds what is left of the task's"
                f" daily_budget_usd today (${max(left, 0.0):.4f}); the job will be refused."
            )
        return estimate, warning

    def refusal(self, task_ref: str, *, strategy: str | None = None) -> str | None:
        """Why a job of the task cannot start now (its day's budget), or ``None``."""
        if self.settings.optimizer != "dspy":
            return None  # the local optimizer makes no LLM call
        estimate, _ = self.estimate(task_ref, strategy=strategy)
        task = self._store.get_task(task_ref)
        limits = self._store.limits(task)
        used = self._store.day_used(str(task.id))
        need = min(estimate.estimated_cost_usd, limits.job_budget_usd)
        if used + need > limits.daily_budget_usd or limits.daily_budget_usd == 0:
            return (
                f"Task {task.name!r} has spent ${used:.4f} of its daily budget"
                f" ${limits.daily_budget_usd:.4f} today (UTC); this job's estimate is"
                f" ${need:.4f}. Raise daily_budget_usd"
                f" ({update_command(task.name, 'daily_budget_usd')}) or wait for the next day."
            )
        return None

    def _next_job(self) -> str | None:
        try:
            return self._store.claim_next_job(self.owner)
        except Exception:  # a busy or unreachable database: try again at the next poll
            logger.warning("looking for a job to run failed; retrying", exc_info=True)
            return None

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                item = self._next_job()
                if item is None:
                    self._wake.wait(self._poll_seconds)
                    continue
                try:
                    self._run_job(item)
                except budget.LeaseLost:
                    logger.warning("job %s: another worker took it over; this one stops", item)
                except Exception:
                    logger.exception("local optimization job %s crashed", item)
                    try:
                        self._store.finish_job_failure(item, "internal error in the local job"
                                                       " worker; see the server log",
                                                       owner=self.owner)
                    except Exception:
                        logger.exception("could not record the failure of job %s", item)
        finally:
            self._store.release_thread()

    def _timeout_message(self) -> str:
        return (f"the job ran past its wall-clock limit of {self.settings.job_timeout:g} s"
                f" (--job-timeout / {KAIZEN_JOB_TIMEOUT}); it was stopped")

    def _fail(self, job_id: str, message: object,
              metadata: dict[str, Any] | None = None) -> None:
        """End the job FAILURE with a scrubbed *message*."""
        self._store.finish_job_failure(job_id, self._scrub(message), metadata=metadata,
                                       owner=self.owner)

    def _step(self, job_id: str, step: str) -> bool:
        """Record *step* and renew the lease; False when stopping or the lease is lost.

        Raises `_JobFault` once the job is past its wall-clock limit.
        """
        if time.monotonic() >= self._deadline:
            raise _JobFault(self._timeout_message())
        if self._lost.is_set() or not self._store.claim_job(job_id, self.owner):
            logger.warning("job %s: another worker took it over; this one stops", job_id)
            return False
        self._store.set_job_step(job_id, step)
        if self._step_delay:
            self._stopping.wait(self._step_delay)
        return not self._stopping.is_set()

    def _run_job(self, job_id: str) -> None:
        if self._store.get_job(job_id).status not in ("PENDING", "RUNNING"):
            return
        if not self._store.claim_job(job_id, self.owner):
            logger.info("job %s is run by another worker", job_id)
            return
        self._scrub = self.settings.scrubber()
        self._deadline = time.monotonic() + self.settings.job_timeout
        self._canceller = canceller = Canceller()  # this job's upstream calls
        self._lost.clear()
        if self._stopping.is_set():
            canceller.cancel()

        def lost() -> None:
            logger.warning("job %s: its lease is held by another worker now; stopping it",
                           job_id)
            self._lost.set()
            canceller.cancel()

        heartbeat = Heartbeat(lambda: self._store.claim_job(job_id, self.owner),
                              self._lease_seconds / 3, on_lost=lost,
                              done=self._store.release_thread)
        try:
            with heartbeat:
                self._run_claimed(job_id)
        except _JobFault as exc:
            self._fail(job_id, exc)
            logger.warning("local optimization job %s failed: %s", job_id, self._scrub(exc))
        finally:
            if self._stopping.is_set():  # left unfinished: free it for the next start
                self._store.release_job(job_id, self.owner)

    def _run_claimed(self, job_id: str) -> None:
        if not self._step(job_id, "loading_feedback"):
            return
        task_id, task_name, active_text = self._store.job_context(job_id)
        examples = self._store.scored_examples(task_id)
        if not examples:
            self._store.finish_job_failure(
                job_id,
                f"task {task_name!r} has no scored feedback: send feedback with a score in "
                "[0, 1] before optimizing", owner=self.owner,
            )
            return
        task = self._store.get_task(task_id)
        if self.settings.optimizer == "dspy":
            self._run_dspy(job_id, task, examples, active_text)
        else:
            self._run_local(job_id, task, examples, active_text)

    def _run_local(self, job_id: str, task: Task, examples: list[optimizer.Example],
                   active_text: str | None) -> None:
        if not self._step(job_id, "splitting"):
            return
        base = active_text if active_text is not None else optimizer.default_base_prompt(
            task.name)
        if not self._step(job_id, "building_prompt"):
            return
        result = optimizer.optimize(base, examples)
        if not self._step(job_id, "evaluating"):
            return
        metadata: dict[str, Any] = {
            "optimizer": optimizer.OPTIMIZER_NAME,
            "train_size": result.train_size,
            "val_size": result.val_size,
            "demo_feedback_ids": list(result.demo_ids),
            "eval_metric": "mean validation feedback score",
        }
        if not self._candidate_ok(job_id, result.prompt_text, metadata):
            return
        metadata["flags"] = injection.flags(result.prompt_text, base)
        rollout = approval.decide(task, metadata["flags"])
        if rollout is not None:
            metadata["rollout"] = rollout
        pr = self._pull_request(job_id, task, result.prompt_text, metadata)
        if not self._step(job_id, "saving"):
            return
        job = self._store.finish_job_success(
            job_id, result.prompt_text, eval_score=result.eval_score,
            optimizer=optimizer.OPTIMIZER_NAME, metadata=metadata,
            pr_url=None if pr is None else pr[0], pr_error=None if pr is None else pr[1],
            owner=self.owner,
        )
        if job.prompt_version_id is None:
            logger.info("local optimization job %s made no new version: %s", job_id,
                        (job.job_metadata or {}).get("no_new_version"))
        else:
            logger.info("local optimization job %s finished: eval_score=%.4f", job_id,
                        result.eval_score)
        # Only when the task asks for it, and only with approval unless the task opts out.
        approval.after_job(self._store, job)

    def _candidate_ok(self, job_id: str, prompt_text: str, metadata: dict[str, Any]) -> bool:
        """False (and the job FAILURE) when the candidate is too long to be a prompt version."""
        if len(prompt_text) <= MAX_PROMPT_CHARS:
            return True
        metadata["candidates_rejected_too_long"] = 1
        self._fail(job_id, f"the candidate prompt has {len(prompt_text)} characters, over the"
                   f" limit of {MAX_PROMPT_CHARS}; it was rejected and not stored", metadata)
        logger.warning("local optimization job %s: candidate of %d characters rejected", job_id,
                       len(prompt_text))
        return False

    def _run_dspy(self, job_id: str, task: Task, examples: list[optimizer.Example],
                  active_text: str | None) -> None:
        started = time.monotonic()
        limits = self._store.limits(task)
        try:
            options = (self._store.get_job(job_id).job_metadata or {}).get("options") or {}
            plan = _dspy_plan(task, examples, active_text, options.get("strategy"), job_id)
            cost = _cost_plan(plan, self.settings.prices)
            llm = LLMClient(self.settings.llm_base_url or "", self.settings.llm_api_key,
                            prices=self.settings.prices, budget_usd=limits.job_budget_usd,
                            ledger=budget.Ledger(self._store, job_id, self.owner, limits),
                            job_deadline=self._deadline, canceller=self._canceller,
                            job_limit_hint=f"its wall-clock limit of"
                            f" {self.settings.job_timeout:g} s (--job-timeout /"
                            f" {KAIZEN_JOB_TIMEOUT})", scrubber=self._scrub)
        except (_JobFault, dspy_optimizer.OptimizerError, LLMError) as exc:
            self._fail(job_id, fill_task(str(exc), task.name))
            return
        refused = self._store.reserve_job(
            job_id, self.owner, min(cost.cost_usd, limits.job_budget_usd),
            limits.daily_budget_usd)
        if refused is not None:
            llm.close()
            if refused == spend_store.LEASE_LOST:
                return  # another worker runs it
            refused = fill_task(refused, task.name)
            self._store.finish_job_failure(job_id, refused, owner=self.owner, metadata={
                "refused": refused, "estimated_cost_usd": round(cost.cost_usd, 6),
                "cost_budget": limits.job_budget_usd,
                "daily_budget_usd": limits.daily_budget_usd})
            return
        metadata: dict[str, Any] = {
            "optimizer": dspy_optimizer.OPTIMIZER_NAME, "strategy": plan.strategy,
            "module_type": task.module_type or "predict",
            "dspy_version": dspy_optimizer.dspy_version(), "task_model": plan.task_model,
            "teacher_model": plan.teacher_model, "judge_model": plan.judge_model,
            "train_size": len(plan.train), "val_size": len(plan.val),
            "estimated_llm_calls": cost.total_calls,
            "estimated_cost_usd": round(cost.cost_usd, 6), "cost_budget": limits.job_budget_usd,
            "daily_budget_usd": limits.daily_budget_usd,
        }
        if options:
            metadata["options"] = options
        self._current = llm
        try:
            if not self._step(job_id, f"optimizing ({plan.strategy})"):
                return
            result = dspy_optimizer.optimize(
                llm, base_prompt=plan.base_prompt, train=plan.train, strategy=plan.strategy,
                module_type=task.module_type, task_model=plan.task_model,
                teacher_model=plan.teacher_model, judge_model=plan.judge_model,
                rubric=plan.rubric, config=plan.config,
                progress=lambda text: self._store.set_job_step(job_id, text),
            )
            comparison = evaluate.compare(
                llm, task_model=plan.task_model, judge_model=plan.judge_model,
                rubric=plan.rubric, candidate=result.prompt_text, active=plan.base_prompt,
                samples=plan.val,
                progress=lambda done, total: self._store.set_job_step(
                    job_id, f"evaluating candidate {done}/{total}"),
            )
        except (LLMError, dspy_optimizer.OptimizerError) as exc:
            if self._stopping.is_set() or not self._store.claim_job(job_id, self.owner):
                return  # left RUNNING: resumed when the server starts again
            metadata.update(self._books(job_id, llm),
                            wall_time_s=round(time.monotonic() - started, 3))
            if isinstance(exc, BudgetExceeded):
                metadata["budget_reached"] = self._scrub(fill_task(str(exc), task.name))
            self._fail(job_id, fill_task(str(exc), task.name), metadata)
            logger.warning("local optimization job %s failed: %s", job_id, self._scrub(exc))
            return
        finally:
            self._current = None
            llm.close()
        judged = verdict.verdict(comparison.ci_low, comparison.ci_high)
        metadata.update(
            demos=result.demos, instructions_changed=result.instructions_changed,
            instructions_rejected=result.instructions_rejected,
            eval_metric="judged mean on a held-out sample (the same for candidate and active)",
            **comparison.as_dict(), beats_active=judged == verdict.BETTER, verdict=judged,
            baseline_version=self._active_version(str(task.id)),
        )
        if comparison.stopped is not None:
            metadata["budget_reached"] = fill_task(comparison.stopped, task.name)
        metadata.update(self._books(job_id, llm),
                        wall_time_s=round(time.monotonic() - started, 3))
        metadata["candidates_rejected_too_long"] = result.rejected_too_long
        if not self._candidate_ok(job_id, result.prompt_text, metadata):
            return
        metadata["flags"] = injection.flags(result.prompt_text, plan.base_prompt)
        # Only a candidate judged better is proposed: in a pull request or a rollout.
        if judged == verdict.BETTER:
            rollout = approval.decide(task, metadata["flags"])
            if rollout is not None:
                metadata["rollout"] = rollout
        pr = (self._pull_request(job_id, task, result.prompt_text, metadata)
              if judged == verdict.BETTER else None)
        if not self._step(job_id, "saving"):
            return
        job = self._store.finish_job_success(
            job_id, result.prompt_text, eval_score=round(comparison.candidate_mean, 4),
            optimizer=f"{dspy_optimizer.OPTIMIZER_NAME}-{plan.strategy}", metadata=metadata,
            dspy_version=metadata["dspy_version"], pr_url=None if pr is None else pr[0],
            pr_error=None if pr is None else pr[1], version_status=verdict.version_status(judged),
            comparison={"verdict": judged, "baseline_version": metadata["baseline_version"],
                        "baseline_score": round(comparison.active_mean, 4),
                        "eval_sample_size": comparison.n},
            owner=self.owner,
        )
        if job.prompt_version_id is None:
            logger.info("local optimization job %s made no new version: %s", job_id,
                        (job.job_metadata or {}).get("no_new_version"))
        logger.info(
            "local optimization job %s finished: candidate %.4f vs active %.4f (%d LLM calls)",
            job_id, comparison.candidate_mean, comparison.active_mean, metadata["llm_calls"],
        )
        # the same gate as the local optimizer's; `decide` ran only for a better candidate
        approval.after_job(self._store, job)

    def _books(self, job_id: str, llm: LLMClient) -> dict[str, Any]:
        """The job's books from its row (across restarts), and this run's retries."""
        return {**self._store.job_books(job_id), "llm_retries": llm.retries}

    def _active_version(self, task_id: str) -> int | None:
        try:
            return self._store.active_prompt(task_id).version_number
        except Exception:
            return None

    def _pull_request(self, job_id: str, task: Task, prompt_text: str,
                      metadata: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
        """Open the task's pull request; ``None`` without one, else ``(url, error)``."""
        if not (task.github_repo and task.prompt_path):
            return None
        if self._store.version_with_text(str(task.id), prompt_text) is not None:
            return None  # no new version, so nothing to propose
        self._store.set_job_step(job_id, "opening pull request")
        try:
            url = github.open_pull_request(
                repo=task.github_repo, path=task.prompt_path,
                base_branch=task.github_base_branch, branch=_branch(task.name, job_id),
                content=github.file_content(prompt_text, task.prompt_format),
                title=f"Kaizen: new prompt for {task.name}", body=_report(task, metadata),
                deadline_at=self._deadline, canceller=self._canceller, scrubber=self._scrub,
            )
        except github.PullRequestError as exc:
            message = self._scrub(fill_task(f"pull request failed: {exc}", task.name))
            logger.warning("local optimization job %s: %s", job_id, message)
            return None, message
        return url, None

