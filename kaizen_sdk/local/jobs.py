"""The local server's background job worker: runs optimization jobs one at a time.

A job moves ``PENDING`` -> ``RUNNING`` (``progress_step`` = ``loading_feedback``,
``splitting``, ``building_prompt``, ``evaluating``, ``saving``) -> ``SUCCESS`` with a new
``candidate`` prompt version, or ``FAILURE`` with ``error_message``. The work itself is the
pure functions of `kaizen_sdk.local.optimizer`; this module only sequences them and records
progress in the `Store`.
"""

from __future__ import annotations

import logging
import queue
import threading

from kaizen_sdk.local import optimizer
from kaizen_sdk.local.store import Store

__all__ = ["JobWorker"]

logger = logging.getLogger("kaizen_sdk.local.jobs")

_STOP = object()


class JobWorker:
    """A daemon thread that runs queued optimization jobs against a `Store`.

    Parameters:
        store: where jobs, feedback and prompt versions live.
        step_delay: seconds to pause after each progress step (0 by default; a demo can slow
            jobs down to show progress). `stop` interrupts the pause.
    """

    def __init__(self, store: Store, *, step_delay: float = 0.0) -> None:
        self._store = store
        self._step_delay = max(0.0, step_delay)
        self._queue: queue.Queue[object] = queue.Queue()
        self._stopping = threading.Event()
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
        """Stop after the current step and wait for the thread to end."""
        self._stopping.set()
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("local job worker did not stop within %.1f s", timeout)

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
        if not self._step(job_id, "splitting"):
            return
        base = active_text if active_text is not None else optimizer.default_base_prompt(task_name)
        if not self._step(job_id, "building_prompt"):
            return
        result = optimizer.optimize(base, examples)
        if not self._step(job_id, "evaluating"):
            return
        if not self._step(job_id, "saving"):
            return
        job = self._store.finish_job_success(
            job_id,
            result.prompt_text,
            eval_score=result.eval_score,
            optimizer=optimizer.OPTIMIZER_NAME,
            metadata={
                "optimizer": optimizer.OPTIMIZER_NAME,
                "train_size": result.train_size,
                "val_size": result.val_size,
                "demo_feedback_ids": list(result.demo_ids),
                "eval_metric": "mean validation feedback score",
            },
        )
        logger.info("local optimization job %s finished: eval_score=%.4f", job_id,
                    result.eval_score)
        self._store.auto_rollout(job)  # only when the task asks for it
