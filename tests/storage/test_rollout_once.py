"""A rollout decision is a compare-and-set: a process deciding on a stale read changes nothing.

On SQLite the writers of several processes take turns (``BEGIN IMMEDIATE``), so two decisions
can never interleave there; on a database where they can (PostgreSQL, READ COMMITTED), the
second process decides on a rollout row it read before the first one committed. This test
plays that second process by hand: it reads the running rollout, lets another writer promote
it, then decides with the stale row, which must write nothing (no second decision, no event,
no audit entry, no prompt status changed).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from kaizen_sdk.models import RolloutRequest, TaskCreateRequest
from kaizen_server.storage.sqlite import Store


def _events(store: Store, name: str) -> list[str]:
    return [e.event for e in store.get_rollout(name).audit]


def test_a_decision_made_on_a_stale_read_writes_nothing(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "once.db"))
    try:
        store.create_task(TaskCreateRequest(name="r", prompt_text="v1 {{ x }}"))
        active = str(store.active_prompt("r").id)
        candidate = str(store.create_version("r", "v2 {{ x }}", activate=False).id)
        store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                                ramp=[0.2, 0.5]))
        conn = store._conn()
        stale = conn.execute("SELECT * FROM rollouts WHERE task_id = (SELECT id FROM tasks"
                             " WHERE name = 'r')").fetchone()
        assert stale["state"] == "running"
        store.stop_rollout("r", "promote")  # the first process decides
        with store._write() as wconn:  # the second decides on what it read before
            store._end_rollout(wconn, stale, "rollback", "late", {"share": 0.2})
            store._override_rollout(wconn, stale, wconn.execute(
                "SELECT * FROM prompts WHERE id = ?", (active,)).fetchone())
        rollout = store.get_rollout("r")
        assert (rollout.state, rollout.reason) == ("promoted", "stopped by request (promote)")
        assert _events(store, "r") == ["started", "promoted"]
        assert str(store.active_prompt("r").id) == candidate
        statuses = {str(p.id): p.status for p in store.list_versions("r", 10).items}
        assert statuses == {candidate: "active", active: "inactive"}
        decided = [e.action for e in store.list_audit("r", 100).items
                   if e.action.startswith("rollout.") and e.action != "rollout.started"]
        assert decided == ["rollout.stopped"]
    finally:
        store.close()


def test_a_ramp_step_taken_on_a_stale_read_is_not_taken_twice(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "ramp.db"))
    try:
        store.create_task(TaskCreateRequest(name="r", prompt_text="v1 {{ x }}"))
        candidate = str(store.create_version("r", "v2 {{ x }}", activate=False).id)
        store.start_rollout("r", RolloutRequest(candidate_version_id=uuid.UUID(candidate),
                                                ramp=[0.2, 0.5, 1.0]))
        conn = store._conn()
        stale = conn.execute("SELECT * FROM rollouts").fetchone()
        with store._write() as wconn:
            assert store._rollout_moves(wconn, stale, "step = ?", (1,)) is True
            assert store._rollout_moves(wconn, stale, "step = ?", (2,)) is False
        assert store.get_rollout("r").step == 1
    finally:
        store.close()
