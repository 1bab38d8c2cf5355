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

When the task has ``github_repo`` and ``prompt_path``, a successful job opens a pull request
with the candidate (`kaizen_server.jobs.github`) and records ``pr_url``, or ends ``PR_FAILED``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from kaizen_sdk.models import CostEstimate, Task
from kaizen_server.domain.task_settings import fill_task, update_command
from kaizen_server.evaluate import judge as evaluate
from kaizen_server.evaluate.judge import Sample
from kaizen_server.jobs import github
from kaizen_server.llm.client import LLMClient, LLMError
from kaizen_server.llm.pricing import Price, PriceTable
from kaizen_server.optimize import dspy_optimizer
from kaizen_server.optimize import fewshot as optimizer
from kaizen_server.settings import KAIZEN_LLM_API_KEY, KAIZEN_LLM_BASE_URL, KAIZEN_OPTIMIZER
from kaizen_server.storage.sqlite import Store

__all__ = ["MIN_DSPY_EXAMPLES", "OPTIMIZERS", "JobWorker", "OptimizerSettings"]

logger = logging.getLogger("kaizen_server.jobs.worker")

OPTIMIZERS = ("local", "dspy")
"""Values of ``LocalServer(optimizer=...)`` / ``KAIZEN_OPTIMIZER``."""

MIN_DSPY_EXAMPLES = 10
"""Fewest scored feedback entries a ``dspy`` job needs (``evaluator_config["min_examples"]``)."""

_STOP = object()

_OPTIMIZER_JSON = "'{\"optimizer\": \"auto\"}'"


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """Which optimizer jobs use and how to reach the LLM; the key is never shown in ``repr``."""

    optimizer: str = "local"
    llm_base_url: str | None = None
    llm_api_key: str | None = dataclasses.field(default=None, repr=False)
    prices: PriceTable = dataclasses.field(default_factory=PriceTable, repr=False)

    @classmethod
    def resolve(
        cls,
        optimizer: str | None = None,
        *,
        llm_base_url: str | None = None,
        llm_api_key: str | None = None,
        llm_prices: Mapping[str, Price] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> OptimizerSettings:
        """Explicit arguments first, then ``KAIZEN_*`` variables; raise `ValueError` if bad."""
        env = os.environ if environ is None else environ
        name = (optimizer or env.get(KAIZEN_OPTIMIZER) or "local").strip().lower()
        if name not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {name!r} (optimizer= / {KAIZEN_OPTIMIZER}): use one of"
                f" {', '.join(OPTIMIZERS)}"
            )
        return cls(
            optimizer=name,
            llm_base_url=llm_base_url or env.get(KAIZEN_LLM_BASE_URL) or None,
            llm_api_key=llm_api_key or env.get(KAIZEN_LLM_API_KEY) or None,
            prices=PriceTable(llm_prices, environ=env),
        )


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
               strategy: str | None = None) -> _Plan:
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
        strategy = dspy_optimizer.choose_strategy(config, examples)
    except dspy_optimizer.OptimizerError as exc:
        raise _JobFault(
            f"{exc}; change it with"
            f" {update_command(task.name, 'evaluator_config', _OPTIMIZER_JSON)}"
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
    rows = [("optimizer", metadata.get("optimizer")), ("strategy", metadata.get("strategy")),
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
    """A daemon thread that runs queued optimization jobs against a `Store`.

    Parameters:
        store: where jobs, feedback and prompt versions live.
        step_delay: seconds to pause after each main progress step (0 by default; a demo can
            slow jobs down to show progress). `stop` interrupts the pause.
        settings: the optimizer and LLM endpoint (default: `OptimizerSettings.resolve()`).
    """

    def __init__(
        self, store: Store, *, step_delay: float = 0.0, settings: OptimizerSettings | None = None
    ) -> None:
        self._store = store
        self._step_delay = max(0.0, step_delay)
        self.settings = settings if settings is not None else OptimizerSettings.resolve()
        self._queue: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
        self._current: LLMClient | None = None
        self._thread = threading.Thread(target=self._run, name="kaizen-local-jobs", daemon=True)

    def start(self) -> None:
        """Start the worker and resume jobs left unfinished by an earlier run."""
        self._thread.start()
        for job_id in self._store.unfinished_jobs():
            self.submit(job_id)

    def submit(self, job_id: str) -> None:
        """Queue a job that is already stored as ``PENDING``."""
        if not self._stopping.is_set():
            self._queue.put(job_id)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current step (or LLM call) and wait for the thread to end."""
        self._stopping.set()
        current = self._current
        if current is not None:
            current.cancel()
        self._queue.put(_STOP)
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
        if task.cost_budget is not None and cost.cost_usd > task.cost_budget:
            warning = (
                f"The estimated cost ${cost.cost_usd:.4f} exceeds the task's cost_budget"
                f" ${task.cost_budget:.4f}; the job stops when it reaches the budget."
            )
        return estimate, warning

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP or self._stopping.is_set():
                    return
                assert isinstance(item, str)
                try:
                    self._run_job(item)
                except Exception:
                    logger.exception("local optimization job %s crashed", item)
                    try:
                        self._store.finish_job_failure(item, "internal error in the local job"
                                                       " worker; see the server log")
                    except Exception:
                        logger.exception("could not record the failure of job %s", item)
        finally:
            self._store.release_thread()

    def _step(self, job_id: str, step: str) -> bool:
        """Record *step*; return False when the worker is stopping."""
        self._store.set_job_step(job_id, step)
        if self._step_delay:
            self._stopping.wait(self._step_delay)
        return not self._stopping.is_set()

    def _run_job(self, job_id: str) -> None:
        if self._store.get_job(job_id).status not in ("PENDING", "RUNNING"):
            return
        if not self._step(job_id, "loading_feedback"):
            return
        task_id, task_name, active_text = self._store.job_context(job_id)
        examples = self._store.scored_examples(task_id)
        if not examples:
            self._store.finish_job_failure(
                job_id,
                f"task {task_name!r} has no scored feedback: send feedback with a score in "
                "[0, 1] before optimizing",
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
        pr = self._pull_request(job_id, task, result.prompt_text, metadata)
        if not self._step(job_id, "saving"):
            return
        job = self._store.finish_job_success(
            job_id, result.prompt_text, eval_score=result.eval_score,
            optimizer=optimizer.OPTIMIZER_NAME, metadata=metadata, **_pr_fields(pr),
        )
        if job.prompt_version_id is None:
            logger.info("local optimization job %s made no new version: %s", job_id,
                        (job.job_metadata or {}).get("no_new_version"))
        else:
            logger.info("local optimization job %s finished: eval_score=%.4f", job_id,
                        result.eval_score)
        self._store.auto_rollout(job)  # only when the task asks for it

    def _run_dspy(self, job_id: str, task: Task, examples: list[optimizer.Example],
                  active_text: str | None) -> None:
        started = time.monotonic()
        try:
            options = (self._store.get_job(job_id).job_metadata or {}).get("options") or {}
            plan = _dspy_plan(task, examples, active_text, options.get("strategy"))
            cost = _cost_plan(plan, self.settings.prices)
            llm = LLMClient(self.settings.llm_base_url or "", self.settings.llm_api_key,
                            prices=self.settings.prices, budget_usd=task.cost_budget)
        except (_JobFault, dspy_optimizer.OptimizerError, LLMError) as exc:
            self._store.finish_job_failure(job_id, fill_task(str(exc), task.name))
            return
        metadata: dict[str, Any] = {
            "optimizer": dspy_optimizer.OPTIMIZER_NAME, "strategy": plan.strategy,
            "module_type": task.module_type or "predict",
            "dspy_version": dspy_optimizer.dspy_version(), "task_model": plan.task_model,
            "teacher_model": plan.teacher_model, "judge_model": plan.judge_model,
            "train_size": len(plan.train), "val_size": len(plan.val),
            "estimated_llm_calls": cost.total_calls,
            "estimated_cost_usd": round(cost.cost_usd, 6), "cost_budget": task.cost_budget,
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
            if self._stopping.is_set():
                return  # left RUNNING: resumed when the server starts again
            metadata.update(llm.summary(), wall_time_s=round(time.monotonic() - started, 3))
            self._store.finish_job_failure(job_id, fill_task(str(exc), task.name),
                                           metadata=metadata)
            logger.warning("local optimization job %s failed: %s", job_id, exc)
            return
        finally:
            self._current = None
            llm.close()
        metadata.update(
            demos=result.demos, instructions_changed=result.instructions_changed,
            instructions_rejected=result.instructions_rejected,
            eval_metric="judged mean on the validation split",
            **comparison.as_dict(), beats_active=comparison.diff > 0,
        )
        metadata.update(llm.summary(), wall_time_s=round(time.monotonic() - started, 3))
        pr = self._pull_request(job_id, task, result.prompt_text, metadata)
        if not self._step(job_id, "saving"):
            return
        job = self._store.finish_job_success(
            job_id, result.prompt_text, eval_score=round(comparison.candidate_mean, 4),
            optimizer=f"{dspy_optimizer.OPTIMIZER_NAME}-{plan.strategy}", metadata=metadata,
            dspy_version=metadata["dspy_version"], **_pr_fields(pr),
        )
        if job.prompt_version_id is None:
            logger.info("local optimization job %s made no new version: %s", job_id,
                        (job.job_metadata or {}).get("no_new_version"))
        logger.info(
            "local optimization job %s finished: candidate %.4f vs active %.4f (%d LLM calls)",
            job_id, comparison.candidate_mean, comparison.active_mean, metadata["llm_calls"],
        )

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
            )
        except github.PullRequestError as exc:
            logger.warning("local optimization job %s: pull request failed: %s", job_id, exc)
            return None, fill_task(f"pull request failed: {exc}", task.name)
        return url, None


def _pr_fields(pr: tuple[str | None, str | None] | None) -> dict[str, str | None]:
    """`Store.finish_job_success`'s pull-request arguments for `_pull_request`'s answer."""
    return {} if pr is None else {"pr_url": pr[0], "pr_error": pr[1]}
