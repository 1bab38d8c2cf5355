"""A judged job's verdict: is the candidate better than the active prompt, on the evidence?

`verdict` reads the paired difference's 95 % interval (candidate - active, on the same
held-out sample): ``better`` when the whole interval is above 0, ``worse`` when it is below 0,
``not_better`` otherwise (too close to call, or too few examples for an interval). Only a
``better`` candidate is offered: it is stored as a ``candidate`` version that the job's report
proposes and an automatic rollout may start. A ``worse`` one is stored with status
`REJECTED` (kept for the record and the pull request, never offered or rolled out); a
``not_better`` one stays a ``candidate`` a person may still choose, but nothing proposes it.
"""

from __future__ import annotations

__all__ = ["BETTER", "NOT_BETTER", "REJECTED", "VERDICTS", "WORSE", "verdict", "version_status"]

BETTER = "better"
NOT_BETTER = "not_better"
WORSE = "worse"
VERDICTS = (BETTER, NOT_BETTER, WORSE)
"""Every verdict a judged job can end with."""

REJECTED = "rejected"
"""Status of a prompt version judged worse than the active one."""


def verdict(ci_low: float | None, ci_high: float | None) -> str:
    """The verdict of a paired difference's interval (``None`` bounds: `NOT_BETTER`)."""
    if ci_low is not None and ci_low > 0:
        return BETTER
    if ci_high is not None and ci_high < 0:
        return WORSE
    return NOT_BETTER


def version_status(v: str) -> str:
    """The status a new version gets for verdict *v*."""
    return REJECTED if v == WORSE else "candidate"
