"""Judged evaluation: run two prompt templates on held-out inputs and let a judge model score them.

`compare` renders the candidate and the active template with each held-out sample's inputs,
runs both on the task model, and asks the judge model to score each answer from 0 to 1 against
the rubric (from the task's ``evaluator_config["rubric"]``). A feedback ``correction`` is the
reference answer when present, else an output users rated at least `REFERENCE_MIN_SCORE`. The
result is a `Comparison`: both judged means, the paired difference (candidate - active) and its
95 % Student-t interval, and the sample size. Needs no DSPy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kaizen_sdk.templates import render
from kaizen_server.llm.client import BudgetExceeded, LLMClient, LLMError
from kaizen_server.optimize.fewshot import Example

__all__ = [
    "DEFAULT_RUBRIC",
    "EXAMPLES_PER_SIDE",
    "EXAMPLE_INPUT_CHARS",
    "REFERENCE_MIN_SCORE",
    "Comparison",
    "JudgeError",
    "Sample",
    "compare",
    "judge_messages",
    "paired_interval",
    "parse_score",
    "reference_answer",
    "render_template",
    "template_variables",
]

DEFAULT_RUBRIC = (
    "Score how well the answer performs the task for this input: 1 is fully correct and"
    " complete, 0 is wrong or unusable."
)
"""Rubric used when ``evaluator_config`` has no ``rubric``."""

REFERENCE_MIN_SCORE = 0.5
"""An output rated at least this (and without a correction) is shown to the judge as reference."""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)")

# Two-sided 95 % Student-t critical values by degrees of freedom; 1.96 beyond the table.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


EXAMPLES_PER_SIDE = 5
"""Wins and losses each stored in a job's metadata at most (the job object stays small)."""
EXAMPLE_INPUT_CHARS = 160
"""A stored example's inputs are cut to this many characters."""


class JudgeError(LLMError):
    """The judge model answered without a usable score."""


Sample = Example
"""One scored feedback entry (the optimizer's `Example`, comment and correction included)."""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Judged means of candidate and active on the same samples, with the paired difference."""

    n: int
    candidate_mean: float
    active_mean: float
    diff: float
    ci_low: float | None
    ci_high: float | None
    candidate_scores: tuple[float, ...]
    active_scores: tuple[float, ...]
    stopped: str | None = None
    """Why judging stopped before the end of the sample (a budget), else ``None``."""
    inputs: tuple[str, ...] = ()
    """Each judged sample's inputs as text, in the order of the scores."""

    def examples(self, per_side: int = EXAMPLES_PER_SIDE,
                 width: int = EXAMPLE_INPUT_CHARS) -> list[dict[str, Any]]:
        """Return the largest wins then the largest losses of the candidate, at most *per_side*
        each, with inputs cut to *width* characters (ties broken by sample order)."""
        rows = list(enumerate(zip(self.candidate_scores, self.active_scores, strict=True)))
        wins = sorted((r for r in rows if r[1][0] > r[1][1]), key=lambda r: (r[1][1] - r[1][0],
                                                                           r[0]))
        losses = sorted((r for r in rows if r[1][0] < r[1][1]), key=lambda r: (r[1][0] - r[1][1],
                                                                              r[0]))
        chosen = wins[:per_side] + losses[:per_side]
        return [{"input": _cut(self.inputs[i] if i < len(self.inputs) else "", width),
                 "candidate_score": round(c, 4), "active_score": round(a, 4)}
                for i, (c, a) in chosen]

    def as_dict(self) -> dict[str, Any]:
        """Return the figures (rounded to 4 places) for ``job_metadata`` and reports."""
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        pairs = list(zip(self.candidate_scores, self.active_scores, strict=True))
        return {
            "sample_size": self.n,
            "candidate_judged_mean": r(self.candidate_mean),
            "active_judged_mean": r(self.active_mean),
            "paired_diff": r(self.diff),
            "paired_diff_ci95": [r(self.ci_low), r(self.ci_high)],
            "wins": sum(c > a for c, a in pairs),
            "losses": sum(c < a for c, a in pairs),
            "ties": sum(c == a for c, a in pairs),
            "examples": self.examples(),
        }


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def template_variables(template: str) -> list[str]:
    """Return the ``{{ name }}`` placeholders of *template*, in order of first appearance."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def render_template(template: str, inputs: Mapping[str, Any] | None) -> str:
    """Fill *template*'s placeholders from *inputs* (missing ones become empty).

    A template without placeholders gets the inputs appended as an ``Input:`` line, so the
    model always sees them. Rendering is bounded (`kaizen_sdk.templates`): past the bounds
    it raises `TemplateTooLarge` naming the bound.
    """
    values = dict(inputs or {})
    if not _PLACEHOLDER.search(template):
        return f"{template}\n\nInput: {_text(values)}" if values else template
    return render(template, lambda name: _text(values.get(name, "")))


def reference_answer(sample: Sample) -> str | None:
    """Return the reference answer the judge sees for *sample* (``None`` when there is none)."""
    if sample.correction is not None and sample.correction != "":
        return _text(sample.correction)
    if sample.score >= REFERENCE_MIN_SCORE and sample.output is not None:
        return _text(sample.output)
    return None


def judge_messages(rubric: str, sample: Sample, answer: str) -> list[dict[str, str]]:
    """Build the judge's chat messages for one *answer* to *sample*."""
    reference = reference_answer(sample)
    parts = [
        f"Rubric: {rubric}",
        f"Task input:\n{_text(sample.inputs or {})}",
        f"Reference answer:\n{reference}" if reference is not None else "Reference answer: none",
        f"Answer to score:\n{answer}",
        "Reply with the score only: a number from 0 to 1.",
    ]
    return [
        {"role": "system", "content": "You are a strict evaluator of answers."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def parse_score(text: str) -> float | None:
    """Return the first number in *text* as a score in [0, 1] (10- and 100-point scales too)."""
    match = _NUMBER.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    for scale in (1.0, 10.0, 100.0):
        if value <= scale:
            return value / scale
    return None


def judge(llm: LLMClient, judge_model: str, rubric: str, sample: Sample, answer: str) -> float:
    """Score *answer* with the judge model; raise `JudgeError` when it gives no number."""
    reply = llm.chat(judge_model, judge_messages(rubric, sample, answer), purpose="judge",
                     temperature=0.0)
    score = parse_score(reply)
    if score is None:
        raise JudgeError(
            f"the judge model {judge_model!r} returned no score from 0 to 1"
            f" (answer began {reply[:60]!r}); use a judge_model that follows the rubric"
            " (`kaizen tasks update TASK --judge-model MODEL`) or state the scale in the"
            " rubric (`kaizen tasks update TASK --rubric TEXT`)"
        )
    return score


def paired_interval(diffs: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Return the mean of *diffs* and its two-sided 95 % Student-t interval.

    The interval is ``(None, None)`` with fewer than two values.
    """
    n = len(diffs)
    if n == 0:
        return 0.0, None, None
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, None, None
    t = _T95[n - 2] if n - 2 < len(_T95) else 1.96
    half = t * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half


def compare(
    llm: LLMClient,
    *,
    task_model: str,
    judge_model: str,
    rubric: str,
    candidate: str,
    active: str,
    samples: Sequence[Sample],
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    """Run *candidate* and *active* on every sample, judge both answers, compare them.

    Four LLM calls per sample; *progress* gets ``(done, total)`` after each sample. When a
    budget stops the calls after at least two complete pairs, the comparison covers the pairs
    judged so far and says so in ``stopped``; before that, `BudgetExceeded` propagates.
    """
    cand_scores: list[float] = []
    act_scores: list[float] = []
    inputs: list[str] = []
    stopped: str | None = None
    for done, sample in enumerate(samples, start=1):
        pair: list[float] = []
        try:
            for template in (active, candidate):
                messages = [{"role": "user",
                             "content": render_template(template, sample.inputs)}]
                answer = llm.chat(task_model, messages, purpose="evaluate")
                pair.append(judge(llm, judge_model, rubric, sample, answer))
        except BudgetExceeded as exc:
            if len(act_scores) < 2:
                raise
            stopped = str(exc)
            break
        act_scores.append(pair[0])
        cand_scores.append(pair[1])
        inputs.append(_text(sample.inputs if sample.inputs is not None else ""))
        if progress is not None:
            progress(done, len(samples))
    diff, low, high = paired_interval([c - a for c, a in zip(cand_scores, act_scores,
                                                             strict=True)])
    n = len(cand_scores)
    return Comparison(
        n=n,
        candidate_mean=math.fsum(cand_scores) / n if n else 0.0,
        active_mean=math.fsum(act_scores) / n if n else 0.0,
        diff=diff,
        ci_low=low,
        ci_high=high,
        candidate_scores=tuple(cand_scores),
        active_scores=tuple(act_scores),
        stopped=stopped,
        inputs=tuple(inputs),
    )
