"""The local server's client for an OpenAI-compatible chat-completions endpoint.

`LLMClient.chat` sends one ``POST {base_url}/chat/completions`` and returns the answer text. It
retries 429 and 5xx answers and transport errors a bounded number of times (honouring a short
``Retry-After``), counts every retry, records each call's model, purpose and token usage as a
`CallRecord`, prices it with a `PriceTable`, and refuses a call whose estimated cost would take
the spend past the budget (`BudgetExceeded`). Usage reported below the estimate for the request
(input) and its answer (output) is charged at the estimate, so an endpoint that reports no
tokens cannot spend for free. With a `kaizen_server.domain.budget.Ledger` the check and the charge
are made in the job's database row, before and after each call. Every failure is an `LLMError`
whose message names the cause and the setting to change; the API key never appears in a
message, a record or a ``repr``.

Calls go through `kaizen_server.outbound.Outbound`: each `chat` (retries included) ends by
its total deadline (and by the job's, `JobTimeout`), an answer over `MAX_ANSWER_CHARS` is
stopped while it streams in, and every message passes the job's `Scrubber` (no upstream body
is kept: a failure says the status and its reason).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from kaizen_server.llm.pricing import PriceTable, estimate_tokens
from kaizen_server.outbound import (
    AnswerTooLarge,
    Canceller,
    DeadlineExceeded,
    Outbound,
    OutboundCancelled,
    OutboundError,
    Reply,
    status_summary,
)
from kaizen_server.scrub import Scrubber, url_secrets, without_userinfo
from kaizen_server.settings import KAIZEN_LLM_API_KEY, KAIZEN_LLM_BASE_URL

if TYPE_CHECKING:
    from kaizen_server.domain.budget import Ledger

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_ANSWER_CHARS",
    "BudgetExceeded",
    "CallRecord",
    "JobTimeout",
    "LLMClient",
    "LLMError",
]

DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt on 429, 5xx and transport errors."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one `LLMClient.chat` may take in all: connect, send, every read, retries."""

MAX_ANSWER_CHARS = 2 * 1024 * 1024
"""Largest answer read from the endpoint, in bytes (2 MiB); past it the call fails."""

_MAX_RETRY_AFTER = 5.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class LLMError(Exception):
    """The LLM endpoint could not give a usable answer; ``str()`` names cause and setting."""


class BudgetExceeded(LLMError):
    """The next call would pass the job's or the day's budget; no further calls are made."""


class JobTimeout(LLMError):
    """The job ran past its wall-clock limit; no further calls are made."""


@dataclasses.dataclass(frozen=True)
class CallRecord:
    """One completed chat call: what it was for and what it cost."""

    model: str
    purpose: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    retries: int
    usage_reported: bool
    charged_usd: float = 0.0
    """What the call counts against the budget: ``cost_usd``, or the estimate when higher."""

    def as_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict (for ``job_metadata``)."""
        return dataclasses.asdict(self)


class LLMClient:
    """Calls one OpenAI-compatible endpoint and keeps the books of every call.

    Example::

        llm = LLMClient("http://127.0.0.1:11434/v1", prices=PriceTable(), budget_usd=0.5)
        text = llm.chat("llama3", [{"role": "user", "content": "Hi"}], purpose="task")

    Parameters:
        base_url: endpoint base including the version path, e.g. ``http://host:8000/v1``.
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        prices: prices used to turn reported usage into spend.
        budget_usd: stop (raise `BudgetExceeded`) once the spend reaches it; ``None``: no limit.
        max_retries: retries of a 429/5xx/transport failure after the first attempt.
        backoff: first retry pause in seconds (doubles each retry, capped by ``Retry-After``).
        on_call: called with each `CallRecord` after the call (e.g. to report progress).
        endpoint_hint: where the user sets the endpoint, named in error messages (the
            server's settings by default; ``kaizen eval`` names its own flag).
        key_hint: where the user sets the key, named in error messages.
        timeout: total seconds one `chat` may take (all its attempts).
        job_deadline: a `time.monotonic` instant no call may pass (the job's wall-clock
            limit); past it `chat` raises `JobTimeout` naming *job_limit_hint*.
        canceller: shared with the job's other upstream clients; the server cancels it when
            stopping.
        scrubber: removes secrets from every message (default: the key and URL user-info).
        max_answer_bytes: cap on one answer's size.
        ledger: keeps the books in the job's database row (the budget check then happens
            there, against the job's and the day's budget, and *budget_usd* is not used).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        prices: PriceTable,
        budget_usd: float | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
        backoff: float = 0.5,
        on_call: Callable[[CallRecord], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        endpoint_hint: str = f"{KAIZEN_LLM_BASE_URL} (or `kaizen serve --llm-base-url URL`)",
        key_hint: str = KAIZEN_LLM_API_KEY,
        job_deadline: float | None = None,
        job_limit_hint: str = "the job's wall-clock limit",
        canceller: Canceller | None = None,
        scrubber: Scrubber | None = None,
        max_answer_bytes: int = MAX_ANSWER_CHARS,
        ledger: Ledger | None = None,
    ) -> None:
        self._endpoint_hint = endpoint_hint
        self._key_hint = key_hint
        if not base_url:
            raise LLMError(f"no LLM endpoint is configured: set {endpoint_hint}")
        self.base_url = base_url.rstrip("/")
        self._shown_url = without_userinfo(self.base_url)
        self._api_key = api_key
        self._scrubber = scrubber if scrubber is not None else Scrubber(
            [api_key, *url_secrets(base_url)])
        self._timeout = timeout
        self._job_deadline = job_deadline
        self._job_limit_hint = job_limit_hint
        self.prices = prices
        self.budget_usd = budget_usd
        self.max_retries = max(0, max_retries)
        self._backoff = max(0.0, backoff)
        self._on_call = on_call
        self._ledger = ledger
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        headers["Accept-Encoding"] = "identity"
        self._http = Outbound(headers=headers, deadline=timeout, max_bytes=max_answer_bytes,
                              canceller=canceller, transport=transport)
        self._lock = threading.Lock()
        self.calls: list[CallRecord] = []
        self.retries = 0
        self.spent_usd = 0.0

    def cancel(self) -> None:
        """Stop the call in flight and make every later `chat` fail (the server is stopping)."""
        self._http.canceller.cancel()

    def __repr__(self) -> str:
        return f"LLMClient({self._shown_url!r}, calls={len(self.calls)})"

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def summary(self) -> dict[str, Any]:
        """Return totals and every call's record, JSON-ready (no key, no content)."""
        with self._lock:
            calls = list(self.calls)
            retries = self.retries
            spent = self.spent_usd
        by_model: dict[str, dict[str, int]] = {}
        for c in calls:
            m = by_model.setdefault(c.model, {"calls": 0, "input_tokens": 0, "output_tokens": 0})
            m["calls"] += 1
            m["input_tokens"] += c.input_tokens
            m["output_tokens"] += c.output_tokens
        return {
            "llm_calls": len(calls),
            "llm_retries": retries,
            "input_tokens": sum(c.input_tokens for c in calls),
            "output_tokens": sum(c.output_tokens for c in calls),
            "spent_usd": round(spent, 6),
            "by_model": by_model,
            "calls": [c.as_dict() for c in calls],
        }

    def _error(self, message: str, kind: type[LLMError] = LLMError) -> LLMError:
        return kind(self._scrubber(message))

    def chat(
        self,
        model: str,
        messages: Sequence[dict[str, str]],
        *,
        purpose: str,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str:
        """Send *messages* to *model* and return the answer text.

        Raises `BudgetExceeded` before the call when the budget is spent, and `LLMError`
        when the endpoint fails, keeps failing after the retries, or answers malformed JSON.
        """
        if self._http.canceller.cancelled:
            raise LLMError("the job was interrupted because the local server is stopping")
        self._check_job_deadline()
        input_estimate = sum(estimate_tokens(m.get("content", "")) for m in messages)
        reserve = self.prices.cost(model, input_tokens=input_estimate,
                                   output_tokens=max_tokens or 0)
        if self._ledger is not None:
            self._ledger.reserve(reserve)  # raises when a budget refuses the call
        else:
            with self._lock:
                if self.budget_usd is not None and self.spent_usd + reserve > self.budget_usd:
                    raise BudgetExceeded(
                        f"the job reached its cost budget: spent ${self.spent_usd:.4f} of"
                        f" ${self.budget_usd:.4f} after {len(self.calls)} LLM calls; raise"
                        " the task's cost_budget to allow more"
                        " (`kaizen tasks update TASK --cost-budget USD`)"
                    )
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        # A call that fails keeps its reservation in the ledger: the request may have run.
        data, retries = self._post(model, body)
        text, usage = self._parse(model, data)
        reported = usage is not None
        estimate = (input_estimate, estimate_tokens(text))
        if usage is None:
            usage = estimate
        cost = self.prices.cost(model, input_tokens=usage[0], output_tokens=usage[1])
        charged = self.prices.cost(model, input_tokens=max(usage[0], estimate[0]),
                                   output_tokens=max(usage[1], estimate[1]))
        record = CallRecord(model, purpose, usage[0], usage[1], round(cost, 8), retries, reported,
                            round(charged, 8))
        if self._ledger is not None:
            self._ledger.settle(record, reserve)
        with self._lock:
            self.calls.append(record)
            self.spent_usd += charged
        if self._on_call is not None:
            self._on_call(record)
        return text

    def _check_job_deadline(self) -> None:
        if self._job_deadline is not None and time.monotonic() >= self._job_deadline:
            raise JobTimeout(f"the job ran past {self._job_limit_hint}; it was stopped")

    def _post(self, model: str, body: dict[str, Any]) -> tuple[Any, int]:
        url = f"{self.base_url}/chat/completions"
        end = time.monotonic() + self._timeout
        if self._job_deadline is not None:
            end = min(end, self._job_deadline)
        attempt = 0
        while True:
            failure: str
            pause = self._backoff * (2**attempt)
            try:
                resp = self._http.request("POST", url, json=body, deadline_at=end)
            except OutboundCancelled:
                raise LLMError("the job was interrupted because the local server is"
                               " stopping") from None
            except DeadlineExceeded:
                self._check_job_deadline()
                raise self._error(
                    f"the LLM endpoint {self._shown_url} did not answer model {model!r} within"
                    f" {self._timeout:g} s (after {attempt} retries); check"
                    f" {self._endpoint_hint} and that the server is up"
                ) from None
            except AnswerTooLarge as exc:
                raise self._error(
                    f"the LLM endpoint answered model {model!r} with too much data: {exc};"
                    " the answer was dropped"
                ) from None
            except OutboundError as exc:
                failure = f"is {exc}"
            else:
                if resp.status_code < 400:
                    try:
                        return resp.json(), attempt
                    except ValueError:
                        raise LLMError(
                            f"malformed answer from the LLM endpoint for model {model!r}: the"
                            " body is not JSON; check that "
                            f"{self._endpoint_hint} points at an OpenAI-compatible /v1 base"
                        ) from None
                if resp.status_code not in _RETRY_STATUSES:
                    raise self._status_error(model, resp)
                failure = f"answered {status_summary(resp.status_code)}"
                after = resp.headers.get("Retry-After", "")
                with contextlib.suppress(ValueError):
                    pause = min(_MAX_RETRY_AFTER, max(0.0, float(after)))
            if attempt >= self.max_retries or time.monotonic() + pause >= end:
                self._check_job_deadline()
                raise self._error(
                    f"the LLM endpoint {self._shown_url} {failure} for model {model!r}"
                    f" (after {attempt} retries); check {self._endpoint_hint} and that the"
                    " server is up"
                )
            attempt += 1
            with self._lock:
                self.retries += 1
            if self._http.canceller.wait(pause):
                raise LLMError("the job was interrupted because the local server is stopping")

    def _status_error(self, model: str, resp: Reply) -> LLMError:
        code = resp.status_code
        if code in (401, 403):
            return LLMError(
                f"the LLM endpoint rejected the request with HTTP {code}: check"
                f" {self._key_hint}"
            )
        if code == 404:
            return LLMError(
                f"the LLM endpoint answered HTTP 404 for model {model!r}: check the task's"
                " models (`kaizen tasks update TASK --teacher-model MODEL --judge-model MODEL"
                f" --task-model MODEL`) and {self._endpoint_hint}"
            )
        # The body is not kept: an upstream may echo the key in it (in any encoding).
        return self._error(
            f"the LLM endpoint answered {status_summary(code)} for model {model!r}")

    @staticmethod
    def _parse(model: str, data: Any) -> tuple[str, tuple[int, int] | None]:
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise LLMError(
                f"malformed answer from the LLM endpoint for model {model!r}: no"
                " choices[0].message.content text"
            )
        usage = data.get("usage") if isinstance(data, dict) else None
        if isinstance(usage, dict):
            p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0:
                return content, (p, c)
        return content, None
