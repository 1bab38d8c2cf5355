"""The local server's client for an OpenAI-compatible chat-completions endpoint.

`LLMClient.chat` sends one ``POST {base_url}/chat/completions`` and returns the answer text. It
retries 429 and 5xx answers and transport errors a bounded number of times (honouring a short
``Retry-After``), counts every retry, records each call's model, purpose and token usage as a
`CallRecord`, prices it with a `PriceTable`, and refuses new calls once the spend reaches the
budget (`BudgetExceeded`). Every failure is an `LLMError` whose message names the cause and the
setting to change; the API key never appears in a message, a record or a ``repr``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from kaizen_server.llm.pricing import PriceTable, estimate_tokens
from kaizen_server.settings import KAIZEN_LLM_API_KEY, KAIZEN_LLM_BASE_URL

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "BudgetExceeded",
    "CallRecord",
    "LLMClient",
    "LLMError",
]

DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt on 429, 5xx and transport errors."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one chat-completions request may take."""

_MAX_RETRY_AFTER = 5.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class LLMError(Exception):
    """The LLM endpoint could not give a usable answer; ``str()`` names cause and setting."""


class BudgetExceeded(LLMError):
    """The job's spend reached its ``cost_budget``; no further calls are made."""


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
    ) -> None:
        self._endpoint_hint = endpoint_hint
        self._key_hint = key_hint
        if not base_url:
            raise LLMError(f"no LLM endpoint is configured: set {endpoint_hint}")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.prices = prices
        self.budget_usd = budget_usd
        self.max_retries = max(0, max_retries)
        self._backoff = max(0.0, backoff)
        self._on_call = on_call
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers, transport=transport)
        self._lock = threading.Lock()
        self.calls: list[CallRecord] = []
        self.retries = 0
        self.spent_usd = 0.0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Make every later `chat` fail at once (the server is stopping)."""
        self._cancelled.set()

    def __repr__(self) -> str:
        return f"LLMClient({self.base_url!r}, calls={len(self.calls)})"

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

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:300]

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
        if self._cancelled.is_set():
            raise LLMError("the job was interrupted because the local server is stopping")
        with self._lock:
            if self.budget_usd is not None and self.spent_usd >= self.budget_usd:
                raise BudgetExceeded(
                    f"the job reached its cost budget: spent ${self.spent_usd:.4f} of"
                    f" ${self.budget_usd:.4f} after {len(self.calls)} LLM calls; raise the"
                    " task's cost_budget to allow more"
                    " (`kaizen tasks update TASK --cost-budget USD`)"
                )
        body: dict[str, Any] = {"model": model, "messages": list(messages)}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        data, retries = self._post(model, body)
        text, usage = self._parse(model, data)
        reported = usage is not None
        if usage is None:
            usage = (
                sum(estimate_tokens(m.get("content", "")) for m in messages),
                estimate_tokens(text),
            )
        cost = self.prices.cost(model, input_tokens=usage[0], output_tokens=usage[1])
        record = CallRecord(model, purpose, usage[0], usage[1], round(cost, 8), retries, reported)
        with self._lock:
            self.calls.append(record)
            self.spent_usd += cost
        if self._on_call is not None:
            self._on_call(record)
        return text

    def _post(self, model: str, body: dict[str, Any]) -> tuple[Any, int]:
        url = f"{self.base_url}/chat/completions"
        attempt = 0
        while True:
            failure: str
            pause = self._backoff * (2**attempt)
            try:
                resp = self._http.post(url, json=body)
            except httpx.TimeoutException:
                failure = "timed out"
            except httpx.HTTPError as exc:
                failure = f"is unreachable ({type(exc).__name__})"
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
                failure = f"answered HTTP {resp.status_code}"
                after = resp.headers.get("Retry-After", "")
                with contextlib.suppress(ValueError):
                    pause = min(_MAX_RETRY_AFTER, max(0.0, float(after)))
            if attempt >= self.max_retries:
                raise LLMError(
                    f"the LLM endpoint {self.base_url} {failure} for model {model!r}"
                    f" (after {attempt} retries); check {self._endpoint_hint} and that the"
                    " server is up"
                )
            attempt += 1
            with self._lock:
                self.retries += 1
            time.sleep(pause)

    def _status_error(self, model: str, resp: httpx.Response) -> LLMError:
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
        detail = self._scrub(resp.text)
        return LLMError(f"the LLM endpoint answered HTTP {code} for model {model!r}: {detail}")

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
