"""LLM prices and token estimates for the local server's cost figures.

`PriceTable` maps a model name to US dollars per million input, output and cached input
tokens. Prices come, first match wins, from ``LocalServer(llm_prices=...)``, then
``KAIZEN_LLM_PRICES`` or a prices file (``kaizen serve --prices FILE``; JSON
``{"model": [input, output]}`` or ``{"model": {"input_per_mtok": .., "output_per_mtok": ..,
"cached_input_per_mtok": ..}}``), then the maintained table of the ``genai-prices`` package
(offline: its data ships in the package) when it is installed, then the built-in
`DEFAULT_PRICES`.

`PriceTable.trace_cost` prices a trace: an unknown model has no cost (``None``), never a
guessed one. `PriceTable.cost` prices spend against a budget (the optimizer's estimate and its
LLM calls): there an unknown model is charged `FALLBACK_PRICE`, a deliberately named
conservative setting, so a budget is never spent on a model that looks free; set its price to
``[0, 0]`` for a local model.

`estimate_tokens` is the usual four-characters-per-token rule, used only for estimates; spend is
always computed from the usage the endpoint reports.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kaizen_sdk.models import TraceRequest
from kaizen_server.settings import KAIZEN_LLM_PRICES, KAIZEN_PRICES_FILE

__all__ = [
    "DEFAULT_PRICES",
    "FALLBACK_PRICE",
    "Price",
    "PriceTable",
    "Rate",
    "estimate_tokens",
    "load_prices_file",
    "trace_pricer",
]

logger = logging.getLogger("kaizen_server")

Price = tuple[float, float]
"""``(usd_per_1m_input_tokens, usd_per_1m_output_tokens)``."""

DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o4-mini": (1.10, 4.40),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-sonnet-4": (3.00, 15.00),
}
"""Built-in prices (USD per 1M tokens); a ``provider/`` prefix on a model name is ignored."""

FALLBACK_PRICE: Price = (2.50, 10.00)
"""Budget price of a model missing from the table: estimates and spend only, never a trace."""

Rate = tuple[float, float, float]
"""``(usd_per_1m_input, usd_per_1m_output, usd_per_1m_cached_input)``."""

_LOOKUPS_KEPT = 4096  # distinct model names whose price lookup is remembered


def estimate_tokens(text: str) -> int:
    """Estimate the tokens in *text* (about four characters each, at least one)."""
    return max(1, math.ceil(len(text) / 4))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _parse(raw: Any, origin: str) -> dict[str, Rate]:
    if not isinstance(raw, dict):
        raise ValueError(f"{origin} must be a JSON object of model -> [input, output] prices.")
    table: dict[str, Rate] = {}
    for model, pair in raw.items():
        if isinstance(pair, dict):
            values: list[Any] = [pair.get("input_per_mtok"), pair.get("output_per_mtok")]
            values.append(pair.get("cached_input_per_mtok", values[0]))
            unknown = set(pair) - {"input_per_mtok", "output_per_mtok", "cached_input_per_mtok"}
            if not unknown and all(_number(v) for v in values):
                table[str(model)] = (float(values[0]), float(values[1]), float(values[2]))
                continue
        elif isinstance(pair, (list, tuple)) and len(pair) == 2 and all(map(_number, pair)):
            table[str(model)] = (float(pair[0]), float(pair[1]), float(pair[0]))
            continue
        raise ValueError(
            f"{origin}: the price of {model!r} must be [usd_per_1m_input, usd_per_1m_output]"
            " or {\"input_per_mtok\": .., \"output_per_mtok\": .., \"cached_input_per_mtok\": ..}"
            f" with non-negative numbers, got {pair!r}."
        )
    return table


def load_prices_file(path: str) -> dict[str, Rate]:
    """Read a prices file (``kaizen serve --prices FILE``); raise `ValueError` naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read the prices file {path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"the prices file {path} is not valid JSON.") from None
    return _parse(loaded, f"the prices file {path}")


def _maintained(model: str) -> Rate | None:
    """The ``genai-prices`` rate of *model* (today's price), ``None`` when unknown or absent."""
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    million = 1_000_000
    try:
        plain = calc_price(Usage(input_tokens=million, output_tokens=million), model_ref=model)
        cached = calc_price(Usage(input_tokens=million, cache_read_tokens=million),
                            model_ref=model)
    except (LookupError, ValueError, TypeError):
        return None
    return float(plain.input_price), float(plain.output_price), float(cached.input_price)


class PriceTable:
    """Per-model prices: *overrides*, then ``KAIZEN_LLM_PRICES`` and ``KAIZEN_PRICES_FILE``,
    then ``genai-prices`` (unless *maintained* is false or it is not installed), then
    `DEFAULT_PRICES`. Lookups are remembered per model name.

    Example::

        prices = PriceTable({"llama3": (0, 0)})
        prices.cost("gpt-4o-mini", input_tokens=1000, output_tokens=200)   # a budget's view
        prices.trace_cost("llama3", input_tokens=900, output_tokens=80)    # 0.0

    Raises `ValueError` naming the setting when the overrides are malformed.
    """

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        maintained: bool = True,
    ) -> None:
        self._defaults: dict[str, Rate] = {m: (p[0], p[1], p[0])
                                           for m, p in DEFAULT_PRICES.items()}
        table: dict[str, Rate] = {}
        raw_env = (os.environ if environ is None else environ).get(KAIZEN_LLM_PRICES)
        if raw_env:
            try:
                loaded = json.loads(raw_env)
            except ValueError:
                raise ValueError(f"{KAIZEN_LLM_PRICES} is not valid JSON.") from None
            table.update(_parse(loaded, KAIZEN_LLM_PRICES))
        prices_file = (os.environ if environ is None else environ).get(KAIZEN_PRICES_FILE)
        if prices_file:
            table.update(load_prices_file(prices_file))
        if overrides:
            table.update(_parse(dict(overrides), "llm_prices"))
        self._table = table
        self._maintained = maintained
        self._found: dict[str, Rate | None] = {}
        self._lock = threading.Lock()

    def rate(self, model: str) -> Rate | None:
        """Return the rate of *model*, or ``None`` when no table knows it.

        Configured prices first, then ``genai-prices``, then `DEFAULT_PRICES`; a
        ``provider/`` prefix is tried without its provider too.
        """
        found = self._found.get(model, self)  # self: not looked up yet
        if found is not self:
            return found  # type: ignore[return-value]
        bare = model.split("/", 1)[-1]
        names = (model, bare) if bare != model else (model,)
        result: Rate | None = None
        for name in names:
            result = self._table.get(name)
            if result is not None:
                break
        for name in names if result is None and self._maintained else ():
            result = _maintained(name)
            if result is not None:
                break
        for name in names if result is None else ():
            result = self._defaults.get(name)
            if result is not None:
                break
        with self._lock:
            if len(self._found) >= _LOOKUPS_KEPT:
                self._found.clear()
            self._found[model] = result
        return result

    def known(self, model: str) -> bool:
        """True when some table prices *model*."""
        return self.rate(model) is not None

    def price(self, model: str) -> Price:
        """Return the budget price of *model* (`FALLBACK_PRICE` when unknown)."""
        rate = self.rate(model)
        return FALLBACK_PRICE if rate is None else (rate[0], rate[1])

    def cost(self, model: str, *, input_tokens: int, output_tokens: int) -> float:
        """Return the US dollars *input_tokens* and *output_tokens* of *model* cost, for a
        budget or an estimate (an unknown model at `FALLBACK_PRICE`)."""
        per_in, per_out = self.price(model)
        return (input_tokens * per_in + output_tokens * per_out) / 1_000_000

    def trace_cost(
        self, model: str | None, *, input_tokens: int | None, output_tokens: int | None,
        cached_input_tokens: int | None = None,
    ) -> float | None:
        """Return what one call cost in US dollars, or ``None`` when the model's price is
        unknown or the usage is missing (never a guessed price).

        *input_tokens* includes the *cached_input_tokens*, as OpenAI and the GenAI
        conventions count them; those are priced at the cached rate.
        """
        if not model or input_tokens is None or output_tokens is None:
            return None
        rate = self.rate(model)
        if rate is None:
            return None
        cached = min(max(cached_input_tokens or 0, 0), input_tokens)
        fresh = input_tokens - cached
        return (fresh * rate[0] + output_tokens * rate[1] + cached * rate[2]) / 1_000_000


def _count(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return value if ok else None


def _by_model(prices: PriceTable, by_model: dict[str, Any]) -> float | None:
    """The cost of a ``@ct.task`` call whose LLM calls used several models: each model at
    its own rate; ``None`` when any model's price or split is unknown."""
    total = 0.0
    for model, sent in by_model.items():
        if not isinstance(sent, dict):
            return None
        counts = {k: _count(sent.get(k))
                  for k in ("input_tokens", "output_tokens", "cached_input_tokens")}
        if counts["input_tokens"] is None or counts["output_tokens"] is None:
            return None
        cost = prices.trace_cost(model, **counts)
        if cost is None:
            return None
        total += cost
    return total


def trace_pricer(prices: PriceTable) -> Callable[[TraceRequest], float | None]:
    """What a trace's call cost with *prices*: by its model, else its request model (OTLP
    ``metadata.otlp.request_model``); ``None`` without the input/output split (the request's
    fields, else its ``metadata.usage``) or a price. A ``metadata.usage.by_model`` (a decorated
    call whose LLM calls used several models) prices each model at its own rate."""

    trace_cost = prices.trace_cost

    def price(req: TraceRequest) -> float | None:
        model = req.model
        if not model:
            return None
        input_tokens, output_tokens = req.input_tokens, req.output_tokens
        if input_tokens is not None and output_tokens is not None:  # the fields (OTLP traces)
            cached = req.cached_input_tokens
            cost = trace_cost(model, input_tokens=input_tokens, output_tokens=output_tokens,
                              cached_input_tokens=cached)
            if cost is None and isinstance(req.metadata, dict):
                requested = (req.metadata.get("otlp") or {}).get("request_model")
                if isinstance(requested, str):
                    cost = trace_cost(requested, input_tokens=input_tokens,
                                      output_tokens=output_tokens, cached_input_tokens=cached)
            return cost
        usage: dict[str, Any] = {"input_tokens": req.input_tokens,
                                 "output_tokens": req.output_tokens,
                                 "cached_input_tokens": req.cached_input_tokens}
        if req.input_tokens is None and isinstance(req.metadata, dict):
            sent = req.metadata.get("usage")  # the SDK's records carry the split there
            if isinstance(sent, dict):
                usage = {k: _count(sent.get(k)) for k in usage}
                by_model = sent.get("by_model")
                if isinstance(by_model, dict) and by_model:  # a decorated call, many models
                    return _by_model(prices, by_model)
        if usage["input_tokens"] is None or usage["output_tokens"] is None:
            return None
        cost = prices.trace_cost(req.model, **usage)
        if cost is None and isinstance(req.metadata, dict):
            requested = (req.metadata.get("otlp") or {}).get("request_model")
            if isinstance(requested, str):
                cost = prices.trace_cost(requested, **usage)
        return cost

    return price
