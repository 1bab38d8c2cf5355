"""LLM prices and token estimates for the local server's cost figures.

`PriceTable` maps a model name to US dollars per million input and output tokens. The built-in
`DEFAULT_PRICES` cover common hosted models; ``KAIZEN_LLM_PRICES`` (a JSON object
``{"model": [input, output]}``) or ``LocalServer(llm_prices=...)`` override or extend them. A model
missing from the table is priced at `FALLBACK_PRICE` (a mid-range hosted model), so an
unknown model never looks free; set its price to ``[0, 0]`` for a local model.

`estimate_tokens` is the usual four-characters-per-token rule, used only for estimates; spend is
always computed from the usage the endpoint reports.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

from kaizen_server.settings import KAIZEN_LLM_PRICES

__all__ = ["DEFAULT_PRICES", "FALLBACK_PRICE", "Price", "PriceTable", "estimate_tokens"]

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
"""Price of a model missing from the table."""


def estimate_tokens(text: str) -> int:
    """Estimate the tokens in *text* (about four characters each, at least one)."""
    return max(1, math.ceil(len(text) / 4))


def _parse(raw: Any, origin: str) -> dict[str, Price]:
    if not isinstance(raw, dict):
        raise ValueError(f"{origin} must be a JSON object of model -> [input, output] prices.")
    table: dict[str, Price] = {}
    for model, pair in raw.items():
        ok = (
            isinstance(pair, (list, tuple)) and len(pair) == 2
            and all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0
                    for p in pair)
        )
        if not ok:
            raise ValueError(
                f"{origin}: the price of {model!r} must be [usd_per_1m_input, usd_per_1m_output]"
                f" with non-negative numbers, got {pair!r}."
            )
        table[str(model)] = (float(pair[0]), float(pair[1]))
    return table


class PriceTable:
    """Per-model prices: built-ins, then ``KAIZEN_LLM_PRICES``, then *overrides*.

    Example::

        prices = PriceTable({"llama3": (0, 0)})
        prices.cost("gpt-4o-mini", input_tokens=1000, output_tokens=200)

    Raises `ValueError` naming the setting when the overrides are malformed.
    """

    def __init__(
        self,
        overrides: Mapping[str, Price] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        table: dict[str, Price] = dict(DEFAULT_PRICES)
        raw_env = (os.environ if environ is None else environ).get(KAIZEN_LLM_PRICES)
        if raw_env:
            try:
                loaded = json.loads(raw_env)
            except ValueError:
                raise ValueError(f"{KAIZEN_LLM_PRICES} is not valid JSON.") from None
            table.update(_parse(loaded, KAIZEN_LLM_PRICES))
        if overrides:
            table.update(_parse(dict(overrides), "llm_prices"))
        self._table = table

    def price(self, model: str) -> Price:
        """Return the price of *model* (`FALLBACK_PRICE` when unknown)."""
        if model in self._table:
            return self._table[model]
        bare = model.split("/", 1)[-1]
        return self._table.get(bare, FALLBACK_PRICE)

    def cost(self, model: str, *, input_tokens: int, output_tokens: int) -> float:
        """Return the US dollars *input_tokens* and *output_tokens* of *model* cost."""
        per_in, per_out = self.price(model)
        return (input_tokens * per_in + output_tokens * per_out) / 1_000_000
