"""The rules that decide what the store writes (`kaizen_server.domain.decisions`), without a
database: each with the values a store would read, and its exact answer."""

from __future__ import annotations

import ast
import datetime as dt
import re
import uuid
from pathlib import Path

import pytest

from kaizen_server.domain import budget, decisions

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
LIMITS = budget.Limits(job_budget_usd=1.0, daily_budget_usd=5.0, max_jobs_per_day=2,
                       cooldown_minutes=60.0)
DOMAIN = Path(decisions.__file__).parent
_SQL = re.compile(r"\bSELECT\b[\s\S]+\bFROM\b|\bINSERT\s+INTO\b|\bUPDATE\s+\w+\s+SET\b"
                  r"|\bCREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\b|\bALTER\s+TABLE\b|\bDELETE\s+FROM\b")


def _usage(jobs_today: int = 0, last: dt.datetime | None = None,
           spent: float = 0.0) -> decisions.ThresholdUsage:
    return decisions.ThresholdUsage(jobs_today=jobs_today, last_job_at=last, day_used_usd=spent)


def test_threshold_due_needs_enough_new_feedback_and_one_scored() -> None:
    assert decisions.threshold_due(new_feedback=3, threshold=3, scored_since_job=1)
    assert not decisions.threshold_due(new_feedback=2, threshold=3, scored_since_job=2)
    assert not decisions.threshold_due(new_feedback=9, threshold=3, scored_since_job=0)


def test_threshold_job_starts_only_within_the_limits() -> None:
    def decide(usage: decisions.ThresholdUsage, *, active: bool = False,
               new: int = 5) -> decisions.ThresholdDecision:
        return decisions.threshold_job(LIMITS, new_feedback=new, threshold=5,
                                       scored_since_job=1, job_active=active,
                                       usage=lambda: usage, now=NOW)

    assert decide(_usage()) == decisions.ThresholdDecision(True, None)
    assert decide(_usage(), active=True) == decisions.ThresholdDecision(False, None)
    assert decide(_usage(), new=4) == decisions.ThresholdDecision(False, None)
    full = decide(_usage(jobs_today=2))
    assert not full.start and full.waiting is not None and "max_jobs_per_day" in full.waiting
    cooling = decide(_usage(jobs_today=1, last=NOW - dt.timedelta(minutes=30)))
    assert cooling.waiting == "cool-down until 12:30 UTC (cooldown_minutes)"
    assert decide(_usage(jobs_today=1, last=NOW - dt.timedelta(minutes=61))).start
    spent = decide(_usage(spent=5.0))
    assert not spent.start and spent.waiting is not None and "daily_budget_usd" in spent.waiting


def test_threshold_job_reads_the_day_only_when_a_job_is_due_and_none_runs() -> None:
    reads: list[int] = []

    def usage() -> decisions.ThresholdUsage:
        reads.append(1)
        return _usage()

    for active, new in ((True, 5), (False, 4)):
        decisions.threshold_job(LIMITS, new_feedback=new, threshold=5, scored_since_job=1,
                                job_active=active, usage=usage, now=NOW)
    assert reads == []
    decisions.threshold_job(LIMITS, new_feedback=5, threshold=5, scored_since_job=1,
                            job_active=False, usage=usage, now=NOW)
    assert reads == [1]


def test_a_rollout_evaluates_at_its_minimum_then_every_ten_percent() -> None:
    seen, at = 0, 0
    evaluated: list[int] = []
    for _ in range(300):
        step = decisions.evaluation_due(scores_seen=seen, evaluated_at=at, min_samples=50)
        seen, at = step.scores_seen, step.evaluated_at
        if step.due:
            evaluated.append(seen)
    assert seen == 300
    assert evaluated == [100, 110, 121, 133, 146, 160, 176, 193, 212, 233, 256, 281]


def test_hand_activation_ends_a_rollout_by_which_version_is_active() -> None:
    active, candidate, other = (str(uuid.uuid4()) for _ in range(3))
    kwargs = {"active_version": active, "candidate_version": candidate}
    assert decisions.hand_activation(current_active=active, **kwargs) is None
    assert decisions.hand_activation(current_active=candidate, **kwargs) == \
        decisions.HandActivation("promote", "the candidate was activated by hand")
    for current in (other, None):
        assert decisions.hand_activation(current_active=current, **kwargs) == \
            decisions.HandActivation("rollback", "another version was activated by hand")


def test_ramp_step_starts_the_next_step_at_the_candidates_count() -> None:
    assert decisions.ramp_step(step=1, candidate_n=37) == (2, 37)


def test_auto_rollout_request() -> None:
    version = str(uuid.uuid4())

    def auto(config: object, metadata: dict[str, object] | None = None,
             candidate: str | None = version) -> decisions.AutoRollout:
        return decisions.auto_rollout_request(
            candidate_version_id=candidate, job_metadata=metadata,
            evaluator_config={"auto_rollout": config})

    plain = auto(True)
    assert plain.request is not None and str(plain.request.candidate_version_id) == version
    assert plain.request.min_samples == 100
    shaped = auto({"share": 0.3, "min_samples": 20})
    assert shaped.request is not None
    assert (shaped.request.share, shaped.request.min_samples) == (0.3, 20)
    assert auto(False) == decisions.AutoRollout(None)
    assert auto(True, candidate=None) == decisions.AutoRollout(None)
    assert auto(True, {"verdict": "worse"}) == decisions.AutoRollout(None)
    assert auto(True, {"verdict": "better"}).request is not None
    bad = auto({"min_samples": 1})
    assert bad.request is None and bad.skipped is not None and "min_samples" in bad.skipped


def test_the_domain_holds_no_sql() -> None:
    """No module of domain/ imports a database driver or holds SQL text."""
    found = []
    for path in sorted(DOMAIN.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("sqlite3", "psycopg") for n in names):
                    found.append(f"{path.name}: imports a driver")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _SQL.search(node.value):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []


def test_prune_cutoff_never_reaches_a_running_rollouts_entries() -> None:
    assert decisions.prune_cutoff(beyond_limit=None, rollout_start=None) is None
    assert decisions.prune_cutoff(beyond_limit=None, rollout_start=3) is None
    assert decisions.prune_cutoff(beyond_limit=40, rollout_start=None) == 40
    assert decisions.prune_cutoff(beyond_limit=40, rollout_start=25) == 25
    assert decisions.prune_cutoff(beyond_limit=20, rollout_start=25) == 20
