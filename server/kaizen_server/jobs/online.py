"""Online evaluation in the background: a daemon thread that judges sampled traces.

Every *interval* seconds (sooner when `wake` is called) the `OnlineEvaluator` asks the store
for each enabled evaluator's next traces (`StorageInterface.claim_evaluations`: at most
*batch* per evaluator and pass, each trace taken by one worker of any process at most, a judge
call reserved in the day's books first) and evaluates them: a code check in the thread, an LLM
judge through `kaizen_server.llm.client.LLMClient` (the optimizer's deadlines, size cap and
secret scrubbing), up to *judge_threads* calls at once. Each outcome is kept with
`StorageInterface.record_evaluation`: a score becomes feedback with ``source``
``evaluator:NAME``; a judge without a usable score leaves the trace "unjudged" with the reason.
Nothing is queued in memory beyond one pass's claims, so the work in hand stays bounded; what
a stopped server held is taken over by another worker once its claims run out.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kaizen_server.domain import evaluators as rules
from kaizen_server.evaluate import checks
from kaizen_server.llm.client import LLMClient, LLMError
from kaizen_server.llm.pricing import PriceTable, estimate_tokens
from kaizen_server.outbound import Canceller
from kaizen_server.scrub import Scrubber
from kaizen_server.storage import spend as spend_store
from kaizen_server.storage.evaluators import Claim
from kaizen_server.storage.interface import StorageInterface

__all__ = ["EVAL_BATCH", "EVAL_INTERVAL", "JUDGE_MAX_TOKENS", "JUDGE_TIMEOUT",
           "OnlineEvaluator"]

logger = logging.getLogger("kaizen_server.jobs.online")

EVAL_INTERVAL = 0.5
"""Seconds between two passes when nothing wakes the evaluator."""

EVAL_BATCH = 64
"""Traces one evaluator takes in one pass at most."""

JUDGE_MAX_TOKENS = 200
"""Most tokens a judge's answer may have (the score line and a short reason)."""

JUDGE_TIMEOUT = 60.0
"""Seconds one judge call may take in all (retries included)."""

_JUDGE_INPUT_ESTIMATE = 150  # the judge's instructions, in tokens


class OnlineEvaluator:
    """Judges the store's sampled traces in the background; `start`, then `stop`.

    Parameters:
        store: the database.
        llm_base_url / llm_api_key: the judge's OpenAI-compatible endpoint (``None``: LLM
            judges leave their traces unjudged and show ``no_endpoint``).
        prices: the price table (reservations and charges).
        interval: seconds between passes; batch: traces per evaluator and pass.
        judge_threads: LLM judge calls in flight at most.
        owner: this worker's claim name (default: ``host:pid:random``).
        on_jobs: given the id of each job a judged score started (the job worker's submit).
    """

    def __init__(self, store: StorageInterface, *, llm_base_url: str | None = None,
                 llm_api_key: str | None = None, prices: PriceTable | None = None,
                 scrubber: Scrubber | None = None, interval: float = EVAL_INTERVAL,
                 batch: int = EVAL_BATCH, judge_threads: int = 4,
                 owner: str | None = None,
                 on_jobs: Callable[[str], None] | None = None) -> None:
        self._store = store
        self._base_url = llm_base_url
        self._api_key = llm_api_key
        self.prices = prices if prices is not None else PriceTable()
        self._scrubber = scrubber
        self.interval = interval
        self.batch = batch
        self.owner = owner or spend_store.new_owner()
        self._on_jobs = on_jobs
        self.evaluated = 0
        """Outcomes kept since the start (scores and unjudged)."""
        self._canceller = Canceller()
        self._local = threading.local()
        self._clients: list[LLMClient] = []
        self._clients_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max(1, judge_threads), thread_name_prefix="kaizen-judge")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _client(self) -> LLMClient | None:
        """This judge thread's client (each keeps its own books, emptied after each call)."""
        if self._base_url is None:
            return None
        llm: LLMClient | None = getattr(self._local, "llm", None)
        if llm is None:
            llm = LLMClient(
                self._base_url, self._api_key, prices=self.prices, timeout=JUDGE_TIMEOUT,
                canceller=self._canceller, scrubber=self._scrubber, max_retries=1,
            )
            self._local.llm = llm
            with self._clients_lock:
                self._clients.append(llm)
        return llm

    def estimate(self, model: str, rubric: str = "") -> tuple[float, float]:
        """What one judge call of *model* is reserved at: ``(dollars, dollars per character of
        the trace)``, the instructions, the rubric and a full answer, plus the trace's text at
        four characters a token (the price the client charges at least)."""
        fixed = self.prices.cost(model, input_tokens=_JUDGE_INPUT_ESTIMATE
                                 + estimate_tokens(rubric), output_tokens=JUDGE_MAX_TOKENS)
        per_char = self.prices.cost(model, input_tokens=1_000_000, output_tokens=0) / 4e6
        return fixed, per_char

    def wake(self) -> None:
        """Start the next pass now (new traces arrived)."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread (a daemon: it never keeps the process alive)."""
        self._thread = threading.Thread(target=self._run, name="kaizen-online-eval",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the current outcome; calls in flight are cancelled."""
        self._stop.set()
        self._wake.set()
        self._canceller.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            for llm in self._clients:
                llm.close()

    def run_once(self) -> int:
        """One pass over every enabled evaluator; return how many outcomes were kept."""
        kept = 0
        for config in self._store.evaluators_to_run():
            if self._stop.is_set():
                break
            judge = config["kind"] == rules.LLM_JUDGE
            fixed, per_char = (self.estimate(config["judge_model"], config.get("rubric") or "")
                               if judge else (0.0, 0.0))
            claims = self._store.claim_evaluations(config["id"], self.owner, limit=self.batch,
                                                   estimate_usd=fixed, usd_per_char=per_char)
            if not claims:
                continue
            if judge:
                futures = [self._pool.submit(self._judge, config, item) for item in claims]
                kept += sum(f.result() for f in futures)
            else:
                kept += sum(self._check(config, item) for item in claims)
        self.evaluated += kept
        return kept

    def _check(self, config: Mapping[str, Any], item: Claim) -> bool:
        try:
            outcome = checks.run_check(config, item.output, item.correction)
        except Exception as exc:  # a check never stops the others
            outcome = checks.Outcome(None, f"the check failed: {type(exc).__name__}")
        return self._record(item, self.owner, score=outcome.score,
                                             reason=outcome.reason, called=False)

    def _judge(self, config: Mapping[str, Any], item: Claim) -> bool:
        try:
            return self._judge_one(config, item)
        finally:
            self._store.release_thread()

    def _judge_one(self, config: Mapping[str, Any], item: Claim) -> bool:
        llm = self._client()
        if llm is None:
            return self._record(
                item, self.owner, score=None, called=False,
                reason="no LLM endpoint is configured for the judge (--llm-base-url)")
        if item.output is None:
            return self._record(item, self.owner, score=None, called=False,
                                                 reason="the trace has no output to judge")
        model = str(config["judge_model"])
        messages = checks.judge_messages(str(config["rubric"]), config["scale"], item.inputs,
                                         item.output, item.correction)
        try:
            reply = llm.chat(model, messages, purpose="online_judge",
                             max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
        except LLMError as exc:
            return self._record(item, self.owner, score=None,
                                                 reason=f"the judge call failed: {exc}",
                                                 called=True, charged_usd=item.reserved_usd)
        finally:
            records = list(llm.calls)
            llm.calls.clear()
        if records:
            charged = float(records[-1].charged_usd)
        else:
            charged = self.prices.cost(
                model, input_tokens=sum(estimate_tokens(m["content"]) for m in messages),
                output_tokens=estimate_tokens(reply))
        outcome = checks.parse_judgement(reply, config["scale"])
        if self._scrubber is not None:
            outcome = checks.Outcome(outcome.score, self._scrubber(outcome.reason))
        return self._record(item, self.owner, score=outcome.score,
                                             reason=outcome.reason, called=True,
                                             charged_usd=charged)

    def _record(self, item: Claim, owner: str, **outcome: Any) -> bool:
        jobs: list[str] = []
        kept = self._store.record_evaluation(item, owner, new_jobs=jobs, **outcome)
        for job_id in jobs:
            if self._on_jobs is not None:
                self._on_jobs(job_id)
        return kept

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    kept = self.run_once()
                except Exception:  # a locked or full database: try again next pass
                    logger.exception("online evaluation pass failed; trying again in %g s",
                                     self.interval)
                    kept = 0
                if kept >= self.batch:
                    continue  # more waiting: no pause
                pause = max(0.0, self.interval - (time.monotonic() - started))
                self._wake.wait(pause)
                self._wake.clear()
        finally:
            self._store.release_thread()

