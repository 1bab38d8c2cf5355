"""The short report of an optimization job, as ``kaizen jobs get`` / ``watch`` /
``optimize --wait`` print it: verdict, judged means with the interval and n, calls and tokens,
cost estimated vs spent, duration, flags, errors — a few lines whatever the job's size
(per-call records are behind ``--calls`` and ``GET /api/v1/jobs/{job_id}/calls``).

`job_report` formats a `Job` from the wire alone; `next_step` says what to run next, following
the verdict: only a ``better`` candidate is proposed for activation or a rollout.
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kaizen_sdk.models import Job

__all__ = ["MAX_REPORT_LINES", "job_report", "next_step"]

MAX_REPORT_LINES = 24
"""Most lines `job_report` returns (the caller adds the next-step line)."""

_LABEL = 9  # width of the label column


def _usd(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, (int, float)) else "?"


def _num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _signed(value: Any) -> str:
    return f"{value:+.3f}" if isinstance(value, (int, float)) else "?"


def _duration(start: datetime | None, end: datetime | None) -> str | None:
    if start is None or end is None:
        return None
    seconds = max(0, int((end - start).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _judged(meta: Mapping[str, Any]) -> list[str]:
    if meta.get("candidate_judged_mean") is None:
        return []
    ci = meta.get("paired_diff_ci95") or [None, None]
    base = meta.get("baseline_version")
    against = f"active v{base}" if base is not None else "the active prompt"
    return [
        f"candidate {meta['candidate_judged_mean']:.3f} vs {against}"
        f" {meta.get('active_judged_mean', 0):.3f} on the same {meta.get('sample_size', '?')}"
        " held-out examples",
        f"difference {_signed(meta.get('paired_diff'))}, 95 % interval"
        f" [{_signed(ci[0])}, {_signed(ci[1])}]",
    ]


def job_report(job: Job, *, width: int = 80) -> list[str]:
    """The job's report as lines of at most *width* characters (at most `MAX_REPORT_LINES`)."""
    meta: Mapping[str, Any] = job.job_metadata or {}
    rows: list[tuple[str, str]] = [
        ("job", f"{job.id} {job.status}"
                + (f" ({job.triggered_by})" if job.triggered_by else "")),
    ]
    if job.progress_step and not job.is_terminal:
        rows.append(("step", job.progress_step))
    if meta.get("verdict"):
        rows.append(("verdict", str(meta["verdict"])))
    rows += [("judged", line) for line in _judged(meta)]
    if meta.get("optimizer") and meta.get("candidate_judged_mean") is None \
            and meta.get("val_size") is not None:
        rows.append(("score", f"mean validation feedback score on {meta['val_size']} examples"
                              " (not judged against the active prompt)"))
    if "llm_calls" in meta:
        rows.append(("calls", f"{_num(meta['llm_calls'])} LLM calls,"
                              f" {_num(meta.get('llm_retries', 0))} retries;"
                              f" {_num(meta.get('input_tokens'))} in /"
                              f" {_num(meta.get('output_tokens'))} out tokens"))
    if "spent_usd" in meta or "estimated_cost_usd" in meta:
        cost = f"spent {_usd(meta.get('spent_usd', 0.0))} of estimated"
        cost += f" {_usd(meta.get('estimated_cost_usd'))}"
        if meta.get("cost_budget") is not None:
            cost += f" (job budget {_usd(meta['cost_budget'])})"
        rows.append(("cost", cost))
    took = _duration(job.started_at, job.completed_at)
    if took is not None:
        rows.append(("time", took))
    if job.prompt_version_id is not None:
        rows.append(("version", str(job.prompt_version_id)))
    elif meta.get("no_new_version"):
        rows.append(("version", f"none: {meta['no_new_version']}"))
    flags: list[str] = []
    if meta.get("budget_reached"):
        flags.append(f"budget reached: {meta['budget_reached']}")
    raw_flags = meta.get("flags")
    if isinstance(raw_flags, Sequence) and not isinstance(raw_flags, str):
        flags += [str(f) for f in raw_flags]
    rows += [("flag", f) for f in flags]
    if job.error_message and meta.get("budget_reached") != job.error_message:
        rows.append(("error", job.error_message))
    if job.pr_url:
        rows.append(("pr", job.pr_url))
    lines: list[str] = []
    for label, text in rows:
        wrapped = textwrap.wrap(text, width - _LABEL - 1, break_long_words=True,
                                break_on_hyphens=False) or [""]
        wrapped = wrapped[:4] if len(wrapped) <= 4 else [*wrapped[:3], wrapped[3][:-1] + "…"]
        lines.append(f"{label.ljust(_LABEL)} {wrapped[0]}")
        lines += [" " * (_LABEL + 1) + more for more in wrapped[1:]]
    return lines[:MAX_REPORT_LINES]


def next_step(job: Job, task: str | None, version: Any | None) -> str:
    """One line: what the job did and what to run next, following its verdict.

    *task* is the task's name and *version* the `Prompt` the job made (``None`` if unknown).
    """
    meta: Mapping[str, Any] = job.job_metadata or {}
    head = f"job {job.id} {job.status}"
    if not job.is_success:
        return f"{head}: {job.error_message}" if job.error_message else head
    if job.prompt_version_id is None:
        why = meta.get("no_new_version") or "the server gave no reason"
        return f"{head}: no new version ({why})"
    if task is None or version is None:
        return f"{head}: new prompt version {job.prompt_version_id}"
    n = version.version_number
    judged = meta.get("verdict")
    base = meta.get("baseline_version")
    against = f"active v{base}" if base is not None else "the active prompt"
    if version.status == "active":
        return f"{head}: v{n} of {task} is active"
    if judged == "worse":
        return (f"{head}: candidate v{n} is worse than {against}; stored as rejected."
                " Nothing to do: keep collecting feedback.")
    if judged == "not_better":
        return (f"{head}: candidate v{n} is not shown better than {against}. Nothing to do:"
                " the next job runs on new feedback.")
    quoted = shlex.quote(task)
    flags = meta.get("flags") or []
    flagged = f" (flagged: {', '.join(map(str, flags))}; read it first)" if flags else ""
    rollout = meta.get("rollout")
    if isinstance(rollout, dict) and rollout.get("state") == "awaiting_approval":
        return (f"{head}: candidate v{n}{flagged} — its automatic rollout waits for"
                f" `kaizen rollout approve {quoted}`")
    return (f"{head}: candidate v{n}{flagged} — run `kaizen prompts activate {quoted} {n}`, or"
            f" start a rollout with `kaizen rollout start {quoted} {n}`")
