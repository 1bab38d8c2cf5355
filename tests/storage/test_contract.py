"""The storage contract: what `StorageInterface` promises, tested on every backend directly.

Each test runs once per name in `conftest.BACKENDS` (today ``sqlite``), against a fresh
store, without HTTP. A backend passes when every test here passes unchanged.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
from storage_backends import Backend

from kaizen_sdk.models import (
    FeedbackRequest,
    RolloutRequest,
    ScoreItem,
    TaskCreateRequest,
    TaskUpdateRequest,
    TraceRequest,
)
from kaizen_server.storage.errors import Conflict, Invalid, NotFound, StoreFull
from kaizen_server.storage.interface import (
    AUTO_TASK_THRESHOLD,
    StorageInterface,
)

pytestmark = pytest.mark.unit


def _task(store: StorageInterface, name: str = "t", **fields: object) -> str:
    req = TaskCreateRequest(name=name, prompt_text="v1 {{ x }}", **fields)  # type: ignore[arg-type]
    return str(store.create_task(req).id)


def _trace(store: StorageInterface, task: str, **fields: object) -> str:
    trace_id = uuid.uuid4()
    store.add_trace(TraceRequest(task_id=task, id=trace_id, response_text="r", **fields))  # type: ignore[arg-type]
    return str(trace_id)


# --- tasks -----------------------------------------------------------------------------------


def test_tasks_create_get_by_id_and_name_and_conflict(store: StorageInterface) -> None:
    task = store.create_task(TaskCreateRequest(name="alpha", feedback_threshold=7))
    assert store.get_task("alpha").id == task.id
    assert store.get_task(str(task.id)).name == "alpha"
    assert store.task_id("alpha") == str(task.id)
    assert task.feedback_threshold == 7
    with pytest.raises(Conflict):
        store.create_task(TaskCreateRequest(name="alpha"))
    with pytest.raises(NotFound):
        store.get_task("nope")
    with pytest.raises(NotFound):
        store.task_id(str(uuid.uuid4()))
    assert [t.name for t in store.list_tasks(10).items] == ["alpha"]


def test_task_update_is_all_or_nothing(store: StorageInterface) -> None:
    _task(store, "u")
    updated = store.update_task("u", TaskUpdateRequest(feedback_threshold=3, description="d"))
    assert (updated.feedback_threshold, updated.description) == (3, "d")
    with pytest.raises(Invalid):
        store.update_task("u", TaskUpdateRequest(description="e", feedback_threshold=0))
    assert store.get_task("u").description == "d"  # nothing of the refused update kept
    with pytest.raises(NotFound):
        store.update_task("nope", TaskUpdateRequest(description="x"))


def test_list_tasks_pages_oldest_first_with_a_stable_cursor(store: StorageInterface) -> None:
    for i in range(5):
        _task(store, f"p{i}")
    first = store.list_tasks(2)
    assert [t.name for t in first.items] == ["p0", "p1"]
    assert first.next_key is not None
    _task(store, "p5")  # written while paging: the next pages do not shift
    second = store.list_tasks(2, after=first.next_key)
    assert [t.name for t in second.items] == ["p2", "p3"]
    third = store.list_tasks(3, after=second.next_key)
    assert [t.name for t in third.items] == ["p4", "p5"]
    assert third.next_key is None


# --- prompt versions -------------------------------------------------------------------------


def test_versions_create_activate_and_list_newest_first(store: StorageInterface) -> None:
    _task(store, "v")
    v1 = store.active_prompt("v")
    assert v1.version_number == 1
    v2 = store.create_version("v", "v2 {{ x }}", activate=False)
    assert (v2.version_number, v2.status) == (2, "candidate")
    assert store.active_prompt("v").id == v1.id
    v3 = store.create_version("v", "v3 {{ x }}", activate=True)
    assert store.active_prompt("v").id == v3.id
    assert v2.id is not None
    activated = store.activate("v", v2.id)
    assert (activated.id, activated.status) == (v2.id, "active")
    page = store.list_versions("v", 2)
    assert [(p.version_number, p.status) for p in page.items] == [(3, "inactive"),
                                                                    (2, "active")]
    rest = store.list_versions("v", 2, after=page.next_key)
    assert [p.version_number for p in rest.items] == [1]
    assert rest.next_key is None
    assert store.version_with_text(store.task_id("v"), "v3 {{ x }}") == 3
    assert store.version_with_text(store.task_id("v"), "v9") is None


def test_version_refusals(store: StorageInterface) -> None:
    _task(store, "a")
    _task(store, "b")
    with pytest.raises(Invalid, match="prompt_text"):
        store.create_version("a", "   ", activate=False)
    with pytest.raises(NotFound):
        store.create_version("nope", "x", activate=False)
    other = store.active_prompt("b")
    assert other.id is not None
    with pytest.raises(NotFound):
        store.activate("a", other.id)  # a version of another task
    with pytest.raises(NotFound):
        store.activate("a", uuid.uuid4())
    assert len(store.list_versions("a", 10).items) == 1


# --- traces, feedback, scores ----------------------------------------------------------------


def test_traces_are_idempotent_by_client_id_and_create_their_task(store: StorageInterface) -> None:
    trace_id = uuid.uuid4()
    first = store.add_trace(TraceRequest(task_id="implicit", id=trace_id, response_text="a"))
    again = store.add_trace(TraceRequest(task_id="implicit", id=trace_id, response_text="b"))
    assert first.id == again.id == trace_id
    assert again.response_text == "a"  # the first write stays
    assert store.get_task("implicit").feedback_threshold == AUTO_TASK_THRESHOLD
    assert [t.id for t in store.list_traces("implicit", 10).items] == [trace_id]
    with pytest.raises(NotFound):
        store.get_trace(str(uuid.uuid4()))


def test_feedback_is_idempotent_by_client_id(store: StorageInterface) -> None:
    fid = uuid.uuid4()
    req = FeedbackRequest(task_id="fb", id=fid, inputs={"x": 1}, output="o", score=0.5)
    first, jobs = store.add_feedback(req)
    again, _ = store.add_feedback(req)
    assert first.id == again.id == fid
    assert jobs == []
    assert len(store.list_feedback("fb", 10).items) == 1
    assert store.get_task("fb").feedback_count == 1


def test_lists_of_traces_and_feedback_page_newest_first(store: StorageInterface) -> None:
    ids = [_trace(store, "lt") for _ in range(5)]
    page = store.list_traces("lt", 2)
    assert [str(t.id) for t in page.items] == ids[:-3:-1]
    seen = [str(t.id) for t in page.items]
    key = page.next_key
    while key is not None:
        page = store.list_traces("lt", 2, after=key)
        seen += [str(t.id) for t in page.items]
        key = page.next_key
    assert seen == ids[::-1]
    for i in range(3):
        store.add_feedback(FeedbackRequest(task_id="lt", output=str(i)))
    fb = store.list_feedback("lt", 2)
    assert [f.output for f in fb.items] == ["2", "1"]
    assert [f.output for f in store.list_feedback("lt", 2, after=fb.next_key).items] == ["0"]
    assert len(store.list_traces(None, 100).items) == 5


def test_score_trace_makes_one_feedback_entry_and_updates_it(store: StorageInterface) -> None:
    trace = _trace(store, "s", prompt_text="hello")
    scored = store.score_trace(trace, 0.25, "judge")
    assert scored.score == 0.25
    store.score_trace(trace, 0.75, "judge", comment="better")
    entries = store.list_feedback("s", 10).items
    assert [(e.score, e.comment, str(e.trace_id)) for e in entries] == [(0.75, "better", trace)]
    assert [e.score for e in store.scored_examples(store.task_id("s"))] == [0.75]
    with pytest.raises(NotFound):
        store.score_trace(str(uuid.uuid4()), 0.5, "judge")


def test_score_takes_the_feedback_entry_that_names_the_trace(store: StorageInterface) -> None:
    trace = _trace(store, "own")
    store.add_feedback(FeedbackRequest(task_id="own", inputs={"q": 1}, output="o",
                                       metadata={"trace_id": trace}))
    store.score_trace(trace, 1.0, "user")
    entries = store.list_feedback("own", 10).items
    assert [(e.inputs, e.score) for e in entries] == [({"q": 1}, 1.0)]


def test_scores_are_idempotent_and_held_until_their_trace(store: StorageInterface) -> None:
    _task(store, "h")
    known = _trace(store, "h")
    later = uuid.uuid4()
    scores = [
        ScoreItem(id=uuid.uuid4(), trace_id=uuid.UUID(known), score=0.5),
        ScoreItem(id=uuid.uuid4(), trace_id=later, score=0.9),
    ]
    assert store.apply_scores(scores) == (2, [])
    assert store.apply_scores(scores) == (2, [])  # sent again: applied once
    assert store.get_trace(known).score == 0.5
    assert len(store.list_feedback("h", 10).items) == 1
    arrived = store.add_trace(TraceRequest(task_id="h", id=later, response_text="late"))
    assert arrived.score == 0.9  # the held score applied when the trace came
    assert store.get_trace(str(later)).score == 0.9
    assert sorted(e.score or 0 for e in store.list_feedback("h", 10).items) == [0.5, 0.9]
    assert store.apply_held_scores([str(later)]) == 0  # nothing left held


def test_ingest_keeps_good_items_and_reports_each_bad_one(store: StorageInterface) -> None:
    _task(store, "i")
    missing = str(uuid.uuid4())
    t1, t2 = uuid.uuid4(), uuid.uuid4()
    f1 = uuid.uuid4()
    traces = [
        TraceRequest(task_id="i", id=t1, response_text="a"),
        TraceRequest(task_id=missing, id=t2, response_text="b"),
        TraceRequest(task_id="i", id=t1, response_text="a"),  # twice in the batch
    ]
    feedback = [FeedbackRequest(task_id="i", id=f1, output="o"),
                FeedbackRequest(task_id=missing, output="x")]
    accepted, errors, jobs = store.ingest(traces, feedback)
    assert accepted == 3
    assert [(kind, item) for kind, item, _ in errors] == [("trace", str(t2)),
                                                         ("feedback", None)]
    assert all(missing in detail for _, _, detail in errors)
    assert jobs == []
    assert [t.id for t in store.list_traces("i", 10).items] == [t1]
    assert [f.id for f in store.list_feedback("i", 10).items] == [f1]
    again = store.ingest(traces[:1], feedback[:1])  # stored before: accepted, stored once
    assert again == (2, [], [])
    assert len(store.list_traces("i", 10).items) == 1
    assert store.get_task("i").feedback_count == 1


# --- jobs ------------------------------------------------------------------------------------


def test_threshold_job_starts_once_enough_scored_feedback(store: StorageInterface) -> None:
    _task(store, "j", feedback_threshold=3)
    started: list[str] = []
    for i in range(2):
        _, jobs = store.add_feedback(FeedbackRequest(task_id="j", output=str(i), score=0.5))
        started += jobs
    assert started == []
    _, jobs = store.add_feedback(FeedbackRequest(task_id="j", output="2", score=0.5))
    assert len(jobs) == 1
    job = store.get_job(jobs[0])
    assert (job.status, job.triggered_by) == ("PENDING", "threshold")
    _, more = store.add_feedback(FeedbackRequest(task_id="j", output="3", score=0.5))
    assert more == []  # one active job per task


def test_job_lifecycle_and_leases(store: StorageInterface) -> None:
    _task(store, "jl")
    job, created = store.start_job("jl")
    same, again = store.start_job("jl")
    assert (created, again, same.id) == (True, False, job.id)
    job_id = str(job.id)
    assert store.unfinished_jobs() == [job_id]
    assert store.claim_job(job_id, "w1") is True
    assert store.claim_job(job_id, "w2") is False  # w1's lease runs
    assert store.claim_job(job_id, "w1") is True  # renewal
    store.release_job(job_id, "w1")
    assert store.claim_job(job_id, "w2") is True
    store.set_job_step(job_id, "optimizing")
    running = store.get_job(job_id)
    assert (running.status, running.progress_step) == ("RUNNING", "optimizing")
    assert store.job_context(job_id)[1:] == ("jl", "v1 {{ x }}")
    store.merge_job_metadata(job_id, {"a": 1})
    assert store.merge_job_metadata(job_id, {"b": 2}).job_metadata == {"a": 1, "b": 2}
    done = store.finish_job_success(job_id, "v2 {{ x }}", eval_score=0.8, optimizer="fewshot",
                                    metadata={"k": "v"})
    assert done.status == "SUCCESS"
    assert done.prompt_version_id is not None
    assert store.unfinished_jobs() == []
    assert store.claim_job(job_id, "w2") is False  # a finished job is never claimed
    versions = store.list_versions("jl", 10).items
    assert [(p.version_number, p.status) for p in versions] == [(2, "candidate"), (1, "active")]
    failed, _ = store.start_job("jl")
    assert store.finish_job_failure(str(failed.id), "boom").status == "FAILURE"
    assert [str(j.id) for j in store.list_jobs("jl", 10).items] == [str(failed.id), job_id]
    with pytest.raises(NotFound):
        store.get_job(str(uuid.uuid4()))


def test_a_job_with_a_known_text_makes_no_new_version(store: StorageInterface) -> None:
    _task(store, "same")
    job, _ = store.start_job("same")
    done = store.finish_job_success(str(job.id), "v1 {{ x }}", eval_score=0.5,
                                    optimizer="fewshot", metadata={})
    assert done.status == "SUCCESS"
    assert done.prompt_version_id is None
    assert (done.job_metadata or {}).get("same_as_version") == 1
    assert len(store.list_versions("same", 10).items) == 1


# --- rollouts --------------------------------------------------------------------------------


def _rollout_task(store: StorageInterface, name: str) -> tuple[str, str]:
    _task(store, name)
    active = str(store.active_prompt(name).id)
    candidate = str(store.create_version(name, "v2 {{ x }}", activate=False).id)
    return active, candidate


def test_rollout_start_refusals_and_stop(store: StorageInterface) -> None:
    active, candidate = _rollout_task(store, "r")
    with pytest.raises(Invalid):
        store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.UUID(active)))
    with pytest.raises(NotFound):
        store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.uuid4()))
    with pytest.raises(Conflict):
        store.stop_rollout("r", "promote")  # none runs
    rollout = store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                                      share=0.5))
    assert (rollout.state, rollout.share) == ("running", 0.5)
    assert store.rollout_serving("r") is not None
    with pytest.raises(Conflict):
        store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.UUID(candidate)))
    ended = store.stop_rollout("r", "promote")
    assert ended.state == "promoted"
    assert str(store.active_prompt("r").id) == candidate
    assert store.rollout_serving("r") is None
    assert store.get_rollout("r").state == "promoted"


def test_rollout_rolls_back_on_a_breached_guard(store: StorageInterface) -> None:
    active, candidate = _rollout_task(store, "g")
    store.start_rollout("g", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                            share=0.5, min_samples=2))
    for arm, version, error in (("active", active, False), ("candidate", candidate, True)):
        for _ in range(2):
            trace = _trace(store, "g", arm=arm, prompt_version_id=uuid.UUID(version),
                           error=error)
            store.score_trace(trace, 0.5, "judge")
    assert store.rollout_serving("g") is None  # the fourth score decided (before any read)
    rollout = store.get_rollout("g")
    assert (rollout.candidate.n, rollout.active.n) == (2, 2)
    assert rollout.candidate.errors == 2
    assert rollout.state == "rolled_back"
    assert rollout.reason is not None and "guard" in rollout.reason
    assert str(store.active_prompt("g").id) == active


def test_rollout_advances_its_ramp_on_scores(store: StorageInterface) -> None:
    active, candidate = _rollout_task(store, "ramp")
    store.start_rollout("ramp", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                               ramp=[0.1, 0.5], min_samples=2))
    for version in (active, candidate):
        for _ in range(2):
            trace = _trace(store, "ramp", prompt_version_id=uuid.UUID(version))
            store.score_trace(trace, 0.5, "judge")
    serving = store.rollout_serving("ramp")  # the fourth score advanced it (before any read)
    assert serving is not None and serving.share == 0.5
    rollout = store.get_rollout("ramp")
    assert (rollout.state, rollout.step, rollout.share) == ("running", 1, 0.5)
    assert [e.event for e in rollout.audit][:2] == ["started", "ramp"]


def test_held_scores_count_for_a_running_rollout(store: StorageInterface) -> None:
    _, candidate = _rollout_task(store, "hr")
    store.start_rollout("hr", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                             share=0.5, min_samples=2))
    trace_id = uuid.uuid4()
    assert store.apply_scores([ScoreItem(id=uuid.uuid4(), trace_id=trace_id, score=1.0)]) == (1, [])
    store.add_trace(TraceRequest(task_id="hr", id=trace_id, arm="candidate",
                                 prompt_version_id=uuid.UUID(candidate)))
    rollout = store.get_rollout("hr")
    assert (rollout.candidate.n, rollout.candidate.mean) == (1, 1.0)
    assert rollout.active.n == 0


# --- keys and audit --------------------------------------------------------------------------


def test_keys_and_the_audit_log(store: StorageInterface) -> None:
    with store.acting_as("admin-key", None):
        created = store.create_key("ci", "ingest")
    assert created.secret.startswith("kz_")
    with pytest.raises(Conflict):
        store.create_key("ci", "read")
    keys = store.list_keys(10).items
    assert [(k.name, k.scope, k.revoked_at) for k in keys] == [("ci", "ingest", None)]
    found = store.key_for_hash(hashlib.sha256(created.secret.encode()).hexdigest())
    assert found is not None and found[1:3] == ("ci", "ingest")
    revoked = store.revoke_key(str(created.id))
    assert revoked.revoked_at is not None
    assert store.revoke_key(str(created.id)).revoked_at == revoked.revoked_at  # again: no change
    assert store.key_for_hash(found[3]) is None
    with pytest.raises(NotFound):
        store.revoke_key(str(uuid.uuid4()))
    store.create_key("ci", "read")  # the name is free again once revoked
    _task(store, "audited")
    store.audit("custom.action", task_id=store.task_id("audited"), detail="d")
    entries = store.list_audit(None, 100).items
    assert [(e.action, e.actor) for e in entries] == [
        ("custom.action", "system"),
        ("version.created", "system"),
        ("task.created", "system"),
        ("key.created", "system"),
        ("key.revoked", "system"),
        ("key.created", "admin-key"),
    ]
    assert [e.action for e in store.list_audit("audited", 10).items] == [
        "custom.action", "version.created", "task.created"]
    page = store.list_audit(None, 2)
    assert len(page.items) == 2 and page.next_key is not None


# --- a full database -------------------------------------------------------------------------


def test_a_full_database_raises_store_full_and_keeps_nothing(backend: Backend) -> None:
    store = backend.store
    _task(store, "full")
    before = _trace(store, "full")
    backend.make_full()
    with pytest.raises(StoreFull):
        store.add_trace(TraceRequest(task_id="full", response_text="x" * 200_000))
    with pytest.raises(StoreFull):
        store.ingest([TraceRequest(task_id="full", response_text="y" * 200_000)], [])
    assert [str(t.id) for t in store.list_traces("full", 10).items] == [before]  # reads work
    assert store.get_task("full").name == "full"


# --- retention -------------------------------------------------------------------------------


def test_prune_feedback_keeps_each_tasks_newest_entries(store: StorageInterface) -> None:
    _task(store, "kept5", feedback_retention_limit=5)
    _task(store, "unlimited")
    for i in range(12):
        store.add_feedback(FeedbackRequest(task_id="kept5", output=str(i)))
        store.add_feedback(FeedbackRequest(task_id="unlimited", output=str(i)))
    assert store.prune_feedback(4) == 4  # one batch at most
    assert store.prune_feedback(4) == 3
    assert store.prune_feedback(4) == 0
    kept = [f.output for f in store.list_feedback("kept5", 100).items]
    assert kept == ["11", "10", "9", "8", "7"]
    assert len(store.list_feedback("unlimited", 100).items) == 12
    assert store.get_task("kept5").feedback_count == 12  # the number received


def test_prune_feedback_keeps_what_a_running_rollout_counts(store: StorageInterface) -> None:
    _task(store, "pr", feedback_retention_limit=2)
    for i in range(3):
        store.add_feedback(FeedbackRequest(task_id="pr", output=f"before{i}"))
    candidate = store.create_version("pr", "v2 {{ x }}", activate=False)
    assert candidate.id is not None
    store.start_rollout("pr", RolloutRequest(candidate_version_id=candidate.id, share=0.5))
    for i in range(4):
        store.add_feedback(FeedbackRequest(task_id="pr", output=f"during{i}",
                                           prompt_version_id=candidate.id, score=0.5))
    assert store.prune_feedback(100) == 3  # only the entries from before the rollout
    assert store.prune_feedback(100) == 0
    outputs = [f.output for f in store.list_feedback("pr", 100).items]
    assert outputs == ["during3", "during2", "during1", "during0"]
    store.stop_rollout("pr", "rollback")
    assert store.prune_feedback(100) == 2
    assert [f.output for f in store.list_feedback("pr", 100).items] == ["during3", "during2"]
