"""The rules of online evaluators: a valid configuration, which traces are sampled, the day's
budget, agreement with people, and the status an evaluator shows.

- `check_config` refuses a configuration that cannot work (`BadEvaluator`, its ``str()``
  naming the field): a judge without rubric, model or scale, a judge model no price table
  knows, a sample rate outside [0, 1], an invalid pattern or schema, empty length bounds.
- `sampled` decides from the evaluator's and the trace's ids alone (a hash), so every server
  process sharing a database takes the same traces.
- `budget_refusal` says why the day's budget refuses one more judge call (calls and dollars,
  exact at the cap), else ``None``.
- `agreement` compares judged scores with people's on the same traces: accuracy at the pass
  threshold, Cohen's κ and the confusion table once there are `MIN_PAIRS` pairs.
- `status` is what ``kaizen evaluators show`` prints first: why the evaluator is not judging
  or not feeding the loop, in a sentence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kaizen_server.evaluate.checks import check_pattern, check_schema

__all__ = [
    "CODE_CHECKS",
    "LLM_JUDGE",
    "MAX_EVALUATORS_PER_TASK",
    "MIN_PAIRS",
    "BadEvaluator",
    "agreement",
    "budget_refusal",
    "check_config",
    "feeds_loop",
    "judged_scores",
    "sampled",
    "status",
]

LLM_JUDGE = "llm_judge"
CODE_CHECKS = ("exact_match", "normalized_match", "regex", "json_schema", "length")

MIN_PAIRS = 50
"""Pairs (a human and a judged score on one trace) needed before agreement is reported."""

MAX_EVALUATORS_PER_TASK = 20
"""Evaluators one task may have."""

_MAX_RUBRIC = 20_000
_MAX_PATTERN = 2_000


class BadEvaluator(ValueError):
    """An evaluator configuration that cannot work; ``str()`` names the field."""


def check_config(config: Mapping[str, Any], known_model: Callable[[str], bool]) -> None:
    """Raise `BadEvaluator` naming the first field of *config* that cannot work.

    *config* has every field of `kaizen_sdk.models.EvaluatorRequest`; *known_model* tells
    whether a price table knows a judge model (so its budget can be kept).
    """
    kind = config["kind"]
    rate = config.get("sample_rate", 1.0)
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise BadEvaluator(f"`sample_rate` must be a number from 0 to 1, got {rate!r}")
    if kind == LLM_JUDGE:
        rubric = config.get("rubric")
        if not rubric or not str(rubric).strip():
            raise BadEvaluator("`rubric` is required for an llm_judge evaluator")
        if len(rubric) > _MAX_RUBRIC:
            raise BadEvaluator(f"`rubric` has {len(rubric)} characters; at most {_MAX_RUBRIC}")
        scale = config.get("scale")
        if scale is None:
            raise BadEvaluator("`scale` is required with a rubric: the judge's [low, high],"
                               " e.g. [0, 1] or [1, 5]")
        if len(scale) != 2 or not scale[0] < scale[1]:
            raise BadEvaluator(f"`scale` must be [low, high] with low < high, got {scale!r}")
        model = config.get("judge_model")
        if not model:
            raise BadEvaluator("`judge_model` is required for an llm_judge evaluator")
        if not known_model(model):
            raise BadEvaluator(
                f"`judge_model` {model!r} is not in the server's price table, so its budget"
                " cannot be kept; add its price (KAIZEN_LLM_PRICES or KAIZEN_PRICES_FILE) or"
                " choose a priced model")
    elif kind == "regex":
        pattern = config.get("pattern")
        if not pattern:
            raise BadEvaluator("`pattern` is required for a regex evaluator")
        if len(pattern) > _MAX_PATTERN:
            raise BadEvaluator(f"`pattern` has {len(pattern)} characters; at most {_MAX_PATTERN}")
        try:
            check_pattern(pattern)
        except ValueError as exc:
            raise BadEvaluator(str(exc)) from None
    elif kind == "json_schema":
        schema = config.get("json_schema")
        if schema is None:
            raise BadEvaluator("`json_schema` is required for a json_schema evaluator")
        try:
            check_schema(schema)
        except ValueError as exc:
            raise BadEvaluator(str(exc)) from None
    elif kind == "length":
        low, high = config.get("min_length"), config.get("max_length")
        if low is None and high is None:
            raise BadEvaluator("`min_length` or `max_length` is required for a length evaluator")
        if low is not None and high is not None and low > high:
            raise BadEvaluator(f"`min_length` ({low}) must not exceed `max_length` ({high})")
    elif kind not in CODE_CHECKS:
        raise BadEvaluator(f"`kind` must be one of {LLM_JUDGE}, {', '.join(CODE_CHECKS)}")


def sampled(evaluator_id: str, trace_id: str, rate: float) -> bool:
    """True when the evaluator takes the trace: a hash of both ids below *rate*."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.sha256(f"{evaluator_id}:{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def budget_refusal(*, calls: int, spent_usd: float, estimate_usd: float,
                   daily_calls: int | None, daily_budget_usd: float | None) -> str | None:
    """Why one more judge call (estimated *estimate_usd*) does not fit today, else ``None``."""
    if daily_calls is not None and calls + 1 > daily_calls:
        return (f"the day's budget of {daily_calls} judge calls is spent ({calls} today);"
                " judging resumes at 00:00 UTC or when `daily_calls` is raised")
    if daily_budget_usd is not None and spent_usd + estimate_usd > daily_budget_usd + 1e-12:
        return (f"the day's budget of ${daily_budget_usd:.4f} is spent (${spent_usd:.4f} today,"
                f" next call ~${estimate_usd:.6f}); judging resumes at 00:00 UTC or when"
                " `daily_budget_usd` is raised")
    return None


def agreement(pairs: Sequence[tuple[float, float]], threshold: float
              ) -> dict[str, Any]:
    """Agreement of ``(judge, human)`` score *pairs* at *threshold* (a score >= it passes).

    Returns the fields of `kaizen_sdk.models.EvaluatorAgreement`; accuracy, κ and the
    confusion table ``[[both fail, judge pass / human fail], [judge fail / human pass, both
    pass]]`` only from `MIN_PAIRS` pairs. κ is 1.0 when both always give the same single
    class (no disagreement possible by chance either).
    """
    out: dict[str, Any] = {"pairs": len(pairs), "min_pairs": MIN_PAIRS, "threshold": threshold}
    if len(pairs) < MIN_PAIRS:
        return out
    table = [[0, 0], [0, 0]]
    for judge, human in pairs:
        table[int(human >= threshold)][int(judge >= threshold)] += 1
    n = len(pairs)
    observed = (table[0][0] + table[1][1]) / n
    human_pass = (table[1][0] + table[1][1]) / n
    judge_pass = (table[0][1] + table[1][1]) / n
    chance = human_pass * judge_pass + (1 - human_pass) * (1 - judge_pass)
    kappa = 1.0 if chance >= 1.0 else (observed - chance) / (1 - chance)
    out.update(accuracy=round(observed, 6), kappa=round(kappa, 6), confusion=table)
    return out


def feeds_loop(min_kappa: float | None, kappa: float | None) -> bool:
    """True when an evaluator's scores may feed the optimizer and rollouts: no minimum, too
    few pairs to judge the judge yet, or κ at least the minimum."""
    return min_kappa is None or kappa is None or kappa >= min_kappa


def judged_scores(evaluator_config: Mapping[str, Any] | None) -> bool:
    """True when the task lets judged scores drive its loop (``evaluator_config``
    ``{"judged_scores": true}``): optimizer examples where no person scored, rollout arms'
    metric, the feedback threshold."""
    return bool(evaluator_config and evaluator_config.get("judged_scores") is True)


def status(*, enabled: bool, refusal: str | None, min_kappa: float | None,
           kappa: float | None, endpoint: bool) -> tuple[str, str | None]:
    """``(status, reason)`` of an evaluator (see `kaizen_sdk.models.Evaluator`)."""
    if not enabled:
        return "disabled", "the evaluator is disabled (`enabled: false`)"
    if not endpoint:
        return "no_endpoint", ("no LLM endpoint is configured for the judge: start the server"
                               " with --llm-base-url or KAIZEN_LLM_BASE_URL")
    if refusal is not None:
        return "budget_spent", refusal
    if not feeds_loop(min_kappa, kappa):
        return "below_agreement", (
            f"Cohen's kappa with people is {kappa:.3f}, below `min_kappa` {min_kappa:g}: its"
            " scores still show here but feed neither the optimizer nor rollouts")
    return "active", None
