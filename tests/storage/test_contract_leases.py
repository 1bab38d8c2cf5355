"""Job leases on every storage backend: what several server processes on one database rely on.

Each job goes to one worker; a lease that ran out, or whose holder process is gone, is taken
over (and the audit log says by whom and from whom); a worker that lost the lease cannot
finish the job.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from kaizen_sdk.models import TaskCreateRequest
from kaizen_server.domain.budget import LeaseLost
from kaizen_server.storage.interface import StorageInterface


def _job(store: StorageInterface, name: str) -> str:
    store.create_task(TaskCreateRequest(name=name, prompt_text="v1 {{ x }}"))
    job, created = store.start_job(name)
    assert created
    return str(job.id)


def _claims(store: StorageInterface) -> list[tuple[str | None, str | None]]:
    entries = store.list_audit(None, 1000).items
    return [(e.target, e.detail) for e in reversed(entries) if e.action == "job.claimed"]


def test_each_job_goes_to_one_worker_oldest_first(store: StorageInterface) -> None:
    jobs = [_job(store, f"t{i}") for i in range(5)]
    taken = [store.claim_next_job(owner) for owner in ("w1", "w2", "w1", "w2", "w3")]
    assert taken == jobs
    assert store.claim_next_job("w1") is None  # every job is held: nothing for anyone
    assert store.claim_next_job("w4") is None
    assert store.claim_job(jobs[0], "w2") is False  # w1 holds it
    assert store.claim_job(jobs[0], "w1") is True  # a renewal is no change of hands
    owners = ("w1", "w2", "w1", "w2", "w3")
    assert _claims(store) == [(j, f"by {o}") for j, o in zip(jobs, owners, strict=True)]


def test_a_lease_that_ran_out_is_taken_over(store: StorageInterface) -> None:
    job = _job(store, "expired")
    store.lease_seconds = -1.0  # every lease given now has already run out
    assert store.claim_next_job("w1") == job
    assert store.claim_next_job("w1") is None  # its own job: it runs it already
    assert store.claim_next_job("w2") == job
    store.lease_seconds = 60.0
    assert store.claim_job(job, "w3") is True  # w2's lease ran out too
    assert store.claim_job(job, "w2") is False  # w3's has not
    assert _claims(store) == [(job, "by w1"), (job, "by w2, taken over from w1"),
                              (job, "by w3, taken over from w2")]


def test_a_job_of_a_process_that_is_gone_is_taken_over_at_once(store: StorageInterface) -> None:
    job = _job(store, "gone")
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert proc.wait(60) == 0  # ended and reaped: its pid names no process
    dead = f"{socket.gethostname()}:{proc.pid}:ab"
    assert store.claim_job(job, dead) is True
    assert store.claim_job(job, "w2") is True  # the holder's pid is gone: no need to wait
    other_host = f"{socket.gethostname()}-elsewhere:1:cd"
    assert store.claim_job(job, other_host) is False  # w2 is alive (its name names no pid)


def test_a_worker_that_lost_the_lease_cannot_finish_the_job(store: StorageInterface) -> None:
    job = _job(store, "lost")
    store.lease_seconds = -1.0
    assert store.claim_job(job, "w1") is True
    store.lease_seconds = 60.0
    assert store.claim_job(job, "w2") is True
    with pytest.raises(LeaseLost):
        store.finish_job_success(job, "v2 {{ x }}", eval_score=0.9, optimizer="fewshot",
                                 metadata={}, owner="w1")
    with pytest.raises(LeaseLost):
        store.finish_job_failure(job, "boom", owner="w1")
    assert store.get_job(job).status == "PENDING"
    assert [p.version_number for p in store.list_versions("lost", 10).items] == [1]
    done = store.finish_job_success(job, "v2 {{ x }}", eval_score=0.9, optimizer="fewshot",
                                    metadata={}, owner="w2")
    assert (done.status, done.prompt_version_id is not None) == ("SUCCESS", True)
    with pytest.raises(LeaseLost):  # finished: nobody holds it any more
        store.finish_job_failure(job, "late", owner="w2")
    assert store.claim_next_job("w1") is None
