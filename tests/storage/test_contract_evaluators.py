"""The storage contract of online evaluators, run against every backend in `BACKENDS`.

Configuration (valid or refused whole), claims (each trace taken once per evaluator whatever
number of workers and stores share the database), the day's budget (exact at the cap) and the
outcomes (a score becomes feedback, no score stays unjudged).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from storage_backends import Backend

from kaizen_sdk.models import (
    EvaluatorRequest,
    EvaluatorUpdateRequest,
    TaskCreateRequest,
    TaskUpdateRequest,
    TraceRequest,
)
from kaizen_server.domain import evaluators as rules
from kaizen_server.storage.errors import Conflict, Invalid, NotFound
from kaizen_server.storage.interface import StorageInterface

pytestmark = pytest.mark.unit


def _task(store: StorageInterface, name: str = "t") -> str:
    return str(store.create_task(TaskCreateRequest(name=name, prompt_text="v1 {{ x }}")).id)


def _traces(store: StorageInterface, task: str, n: int, text: str = "ABC") -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for tid in ids:
        store.add_trace(TraceRequest(task_id=task, id=uuid.UUID(tid), response_text=text))
    return ids


def _req(**fields: Any) -> EvaluatorRequest:
    return msgspec.convert({"name": "caps", "kind": "regex", "pattern": "^[A-Z]", **fields},
                           EvaluatorRequest)


def _judge(**fields: Any) -> EvaluatorRequest:
    return _req(kind="llm_judge", rubric="Right?", judge_model="gpt-4o-mini", scale=[1, 5],
                pattern=None, **fields)


def _other_store(backend: Backend) -> StorageInterface:
    """A second store on the same database (another server process)."""
    return backend.reopen()


def test_create_list_get_update_remove(store: StorageInterface) -> None:
    task = _task(store)
    created = store.create_evaluator("t", _req(sample_rate=0.25))
    assert (created.name, created.kind, created.pattern, created.sample_rate) == (
        "caps", "regex", "^[A-Z]", 0.25)
    assert created.status == "active" and created.task_id == uuid.UUID(task)
    assert [e.id for e in store.list_evaluators("t")] == [created.id]
    assert store.get_evaluator(task, "caps").id == created.id
    assert store.get_evaluator("t", str(created.id)).name == "caps"
    changed = store.update_evaluator("t", "caps", EvaluatorUpdateRequest(sample_rate=1.0,
                                                                         enabled=False))
    assert (changed.sample_rate, changed.enabled, changed.status) == (1.0, False, "disabled")
    with pytest.raises(Conflict):
        store.create_evaluator("t", _req())
    assert store.remove_evaluator("t", "caps").id == created.id
    assert store.list_evaluators("t") == []
    with pytest.raises(NotFound):
        store.get_evaluator("t", "caps")
    with pytest.raises(NotFound):
        store.create_evaluator("no-such-task", _req())


@pytest.mark.parametrize(("fields", "named"), [
    ({"kind": "llm_judge", "rubric": "Right?", "judge_model": "gpt-4o-mini"}, "`scale`"),
    ({"kind": "llm_judge", "rubric": "Right?", "scale": [1, 5]}, "`judge_model`"),
    ({"kind": "llm_judge", "judge_model": "gpt-4o-mini", "scale": [1, 5]}, "`rubric`"),
    ({"kind": "llm_judge", "rubric": "R", "judge_model": "gpt-4o-mini", "scale": [5, 1]},
     "`scale`"),
    ({"kind": "llm_judge", "rubric": "R", "judge_model": "no-such-model-xyz", "scale": [0, 1]},
     "`judge_model`"),
    ({"pattern": "(unclosed"}, "`pattern`"),
    ({"pattern": None}, "`pattern`"),
    ({"kind": "json_schema", "json_schema": {"type": "objekt"}}, "`json_schema.type`"),
    ({"kind": "json_schema", "json_schema": {"properties": {"a": {"format": "x"}}}},
     "`json_schema.properties.a.format`"),
    ({"kind": "length"}, "`min_length` or `max_length`"),
    ({"kind": "length", "min_length": 5, "max_length": 2}, "`min_length`"),
])
def test_a_configuration_that_cannot_work_is_refused_naming_the_field(
    store: StorageInterface, fields: dict[str, Any], named: str
) -> None:
    _task(store)
    with pytest.raises(Invalid, match=named.replace("[", r"\[").replace("(", r"\(")):
        store.create_evaluator("t", _req(**{"pattern": "^[A-Z]", **fields}))
    assert store.list_evaluators("t") == []


def test_a_bad_update_changes_nothing(store: StorageInterface) -> None:
    _task(store)
    store.create_evaluator("t", _req())
    with pytest.raises(Invalid, match="`pattern`"):
        store.update_evaluator("t", "caps", EvaluatorUpdateRequest(sample_rate=0.5,
                                                                   pattern="[z-a]"))
    kept = store.get_evaluator("t", "caps")
    assert (kept.pattern, kept.sample_rate) == ("^[A-Z]", 1.0)


def test_traces_before_the_evaluator_are_not_taken_and_sampling_is_by_id(
    store: StorageInterface,
) -> None:
    task = _task(store)
    _traces(store, task, 3)
    ev = store.create_evaluator("t", _req(sample_rate=0.5))
    ids = _traces(store, task, 40)
    claims = store.claim_evaluations(str(ev.id), "w1", limit=100, estimate_usd=0.0)
    want = [t for t in ids if rules.sampled(str(ev.id), t, 0.5)]
    assert [c.trace_id for c in claims] == want
    assert 0 < len(want) < 40
    assert store.claim_evaluations(str(ev.id), "w2", limit=100, estimate_usd=0.0) == []


def test_outcomes_become_feedback_or_stay_unjudged(store: StorageInterface) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _req())
    upper, lower = _traces(store, task, 1, "ABC") + _traces(store, task, 1, "abc")
    claims = {c.trace_id: c for c in
              store.claim_evaluations(str(ev.id), "w1", limit=10, estimate_usd=0.0)}
    assert store.record_evaluation(claims[upper], "w1", score=1.0, reason="matches",
                                   called=False)
    assert not store.record_evaluation(claims[lower], "intruder", score=1.0, reason="x",
                                       called=False)
    assert store.record_evaluation(claims[lower], "w1", score=None, reason="no output",
                                   called=False)
    assert not store.record_evaluation(claims[lower], "w1", score=0.0, reason="again",
                                       called=False)
    entries = store.list_feedback("t", 10).items
    judged = [f for f in entries if f.source == "evaluator:caps"]
    assert len(judged) == 1
    assert (judged[0].score, judged[0].comment) == (1.0, "matches")
    assert judged[0].metadata == {"trace_id": upper, "evaluator_id": str(ev.id),
                                  "evaluator": "caps", "judged": True}
    today = store.get_evaluator("t", "caps").today
    assert today is not None and (today.judged, today.unjudged) == (1, 1)
    # judged scores are not optimizer examples unless the loop asks for them
    assert store.scored_examples(task) == []


def test_each_trace_is_claimed_once_by_many_workers_on_two_stores(backend: Backend) -> None:
    store = backend.store
    other = _other_store(backend)
    try:
        task = _task(store)
        ev = store.create_evaluator("t", _req())
        ids = _traces(store, task, 120)
        taken: list[str] = []
        lock = threading.Lock()

        def work(s: StorageInterface, owner: str) -> None:
            try:
                for _ in range(200):
                    got = s.claim_evaluations(str(ev.id), owner, limit=7, estimate_usd=0.0)
                    with lock:
                        taken.extend(c.trace_id for c in got)
                        if len(taken) >= len(ids):
                            return
            finally:
                s.release_thread()

        threads = [threading.Thread(target=work, args=(s, f"w{i}"))
                   for i, s in enumerate([store, other] * 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(taken) == sorted(ids)  # every trace once, none twice
    finally:
        other.close()


def test_the_day_budget_in_calls_is_exact_at_the_cap(store: StorageInterface) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _judge(daily_calls=3))
    _traces(store, task, 5)
    claims = store.claim_evaluations(str(ev.id), "w1", limit=10, estimate_usd=0.001)
    assert len(claims) == 3
    now = store.get_evaluator("t", "caps")
    assert now.status == "budget_spent"
    assert now.status_reason is not None and "3 judge calls" in now.status_reason
    assert now.today is not None and (now.today.calls, now.today.skipped_budget) == (3, 2)
    # a call that never happened gives its place back
    assert store.record_evaluation(claims[0], "w1", score=None, reason="no endpoint",
                                   called=False)
    _traces(store, task, 2)
    assert len(store.claim_evaluations(str(ev.id), "w1", limit=10, estimate_usd=0.001)) == 1


def test_the_day_budget_in_dollars_is_exact_at_the_cap(store: StorageInterface) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _judge(daily_budget_usd=0.003))
    _traces(store, task, 5)
    claims = store.claim_evaluations(str(ev.id), "w1", limit=10, estimate_usd=0.001)
    assert len(claims) == 3  # 3 x 0.001 == 0.003: the cap itself is allowed
    for c in claims:
        assert store.record_evaluation(c, "w1", score=0.5, reason="ok", called=True,
                                       charged_usd=0.001)
    books = store.get_evaluator("t", "caps")
    assert books.today is not None
    assert books.today.spent_usd == pytest.approx(0.003)
    assert books.status == "budget_spent" and "$0.0030" in (books.status_reason or "")
    _traces(store, task, 2)
    assert store.claim_evaluations(str(ev.id), "w1", limit=10, estimate_usd=0.001) == []


def test_a_claim_whose_worker_died_is_taken_over(store: StorageInterface, monkeypatch:
                                                  pytest.MonkeyPatch) -> None:
    from kaizen_server.storage import evaluators as sql

    task = _task(store)
    ev = store.create_evaluator("t", _req())
    _traces(store, task, 2)
    monkeypatch.setattr(sql, "CLAIM_SECONDS", -1.0)  # claims run out at once
    first = store.claim_evaluations(str(ev.id), "dead", limit=10, estimate_usd=0.0)
    monkeypatch.setattr(sql, "CLAIM_SECONDS", 120.0)
    again = store.claim_evaluations(str(ev.id), "alive", limit=10, estimate_usd=0.0)
    assert sorted(c.trace_id for c in again) == sorted(c.trace_id for c in first)
    assert not store.record_evaluation(first[0], "dead", score=1.0, reason="late",
                                       called=False)
    assert store.record_evaluation(again[0], "alive", score=1.0, reason="ok", called=False)


def test_watching_a_rollout_takes_only_its_arms(store: StorageInterface) -> None:
    from kaizen_sdk.models import RolloutRequest

    task = _task(store)
    ev = store.create_evaluator("t", _req(watch="rollout"))
    _traces(store, task, 3)  # no rollout: nothing is taken
    assert store.claim_evaluations(str(ev.id), "w", limit=10, estimate_usd=0.0) == []
    candidate = store.create_version("t", "v2 {{ x }}", activate=False)
    store.start_rollout("t", RolloutRequest(candidate_version_id=candidate.id, share=0.5))
    active = store.active_prompt("t")
    store.add_trace(TraceRequest(task_id=task, response_text="A",
                                 prompt_version_id=candidate.id))
    store.add_trace(TraceRequest(task_id=task, response_text="B", prompt_version_id=active.id))
    store.add_trace(TraceRequest(task_id=task, response_text="C"))
    got = store.claim_evaluations(str(ev.id), "w", limit=10, estimate_usd=0.0)
    assert sorted(c.output or "" for c in got) == ["A", "B"]


def _judge_all(store: StorageInterface, ev_id: str, owner: str = "w",
               score: Callable[[str], float] = lambda output: 1.0) -> int:
    claims = store.claim_evaluations(ev_id, owner, limit=500, estimate_usd=0.0)
    for c in claims:
        assert store.record_evaluation(c, owner, score=score(c.output or ""), reason="r",
                                       called=False)
    return len(claims)


def test_judged_scores_feed_the_optimizer_only_where_the_task_says_and_people_did_not(
    store: StorageInterface,
) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _req())
    people = _traces(store, task, 2)
    _traces(store, task, 3)
    assert _judge_all(store, str(ev.id), score=lambda o: 0.75) == 5
    store.score_trace(people[0], 0.1, "person")
    store.score_trace(people[1], 0.2, "person")
    assert sorted(e.score for e in store.scored_examples(task)) == [0.1, 0.2]
    store.update_task("t", TaskUpdateRequest(evaluator_config={"judged_scores": True}))
    # people's scores win on their traces; the judge's stand for the others
    assert sorted(e.score for e in store.scored_examples(task)) == [0.1, 0.2, 0.75, 0.75, 0.75]


def test_an_evaluator_below_its_agreement_stops_feeding_the_loop_but_still_reports(
    store: StorageInterface,
) -> None:
    task = _task(store)
    store.update_task("t", TaskUpdateRequest(evaluator_config={"judged_scores": True}))
    ev = store.create_evaluator("t", _req(min_kappa=0.5))
    scored = _traces(store, task, 50)
    assert _judge_all(store, str(ev.id)) == 50  # the judge passes everything
    for i, trace_id in enumerate(scored):  # people fail half: kappa 0
        store.score_trace(trace_id, float(i % 2), "person")
    unscored = _traces(store, task, 4)
    assert _judge_all(store, str(ev.id)) == 4
    shown = store.get_evaluator("t", "caps")
    assert shown.agreement is not None and shown.agreement.kappa == 0.0
    assert shown.status == "below_agreement"
    assert shown.today is not None and shown.today.judged == 54  # it still judges
    assert len(store.scored_examples(task)) == 50  # people's only
    store.update_evaluator("t", "caps", EvaluatorUpdateRequest(min_kappa=None))
    assert len(store.scored_examples(task)) == 54
    assert len(unscored) == 4


def test_raising_the_cap_clears_the_budget_status_and_judging_resumes(
    store: StorageInterface,
) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _judge(daily_calls=1))
    _traces(store, task, 2)
    assert len(store.claim_evaluations(str(ev.id), "w", limit=10, estimate_usd=0.01)) == 1
    assert store.get_evaluator("t", "caps").status == "budget_spent"
    store.update_evaluator("t", "caps", EvaluatorUpdateRequest(daily_calls=3))
    assert store.get_evaluator("t", "caps").status == "active"
    _traces(store, task, 3)
    assert len(store.claim_evaluations(str(ev.id), "w", limit=10, estimate_usd=0.01)) == 2


def test_a_judge_call_is_reserved_by_the_size_of_the_trace(store: StorageInterface) -> None:
    task = _task(store)
    ev = store.create_evaluator("t", _judge())
    store.add_trace(TraceRequest(task_id=task, response_text="x" * 1000))
    (item,) = store.claim_evaluations(str(ev.id), "w", limit=10, estimate_usd=0.5,
                                      usd_per_char=0.001)
    assert item.reserved_usd == pytest.approx(0.5 + 1.0)
    today = store.get_evaluator("t", "caps").today
    assert today is not None and today.spent_usd == pytest.approx(1.5)
    assert store.record_evaluation(item, "w", score=1.0, reason="ok", called=True,
                                   charged_usd=0.2)
    today = store.get_evaluator("t", "caps").today
    assert today is not None and today.spent_usd == pytest.approx(0.2)  # the charge stays


@pytest.mark.parametrize("pattern", ["(a+)+$", r"(\w*x)*", "(a{1,9})+"])
def test_a_pattern_that_can_backtrack_for_ever_is_refused(store: StorageInterface,
                                                          pattern: str) -> None:
    _task(store)
    with pytest.raises(Invalid, match="`pattern` repeats a group that repeats"):
        store.create_evaluator("t", _req(pattern=pattern))
    with pytest.raises(Invalid, match=r"`json_schema.pattern` repeats"):
        store.create_evaluator("t", _req(kind="json_schema", pattern=None,
                                         json_schema={"type": "string", "pattern": pattern}))
    assert store.list_evaluators("t") == []
