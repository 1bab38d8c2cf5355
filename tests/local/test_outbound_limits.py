"""Every outbound call has a total deadline and a size cap; jobs have a wall-clock limit.

Hostile loopback upstreams (`hostile_upstream.HostileUpstream`): one that trickles its answer
one byte at a time (head included), one that never answers, one that streams 100 MB.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hostile_upstream import HostileUpstream
from optimize_helpers import make_task, wait

from kaizen_sdk.models import MAX_PROMPT_CHARS
from kaizen_server import LocalServer
from kaizen_server.llm.client import JobTimeout, LLMClient, LLMError
from kaizen_server.llm.pricing import PriceTable
from kaizen_server.outbound import (
    AnswerTooLarge,
    DeadlineExceeded,
    Outbound,
    OutboundCancelled,
)

os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MIB = 1024 * 1024


@pytest.fixture
def trickle() -> Iterator[HostileUpstream]:
    with HostileUpstream("trickle", interval=0.2) as up:
        yield up


@pytest.fixture
def silent() -> Iterator[HostileUpstream]:
    with HostileUpstream("silent") as up:
        yield up


def _client(server: LocalServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                        timeout=10)


# --- the outbound client ---------------------------------------------------------------------


def test_the_outbound_sockets_are_deadline_bound() -> None:
    # httpcore 1.x keeps the pool's network backend here; an upgrade that moves it fails here
    # instead of silently bounding calls only between chunks.
    from kaizen_server import outbound

    transport = outbound.deadline_transport(outbound.Canceller())
    pool = getattr(transport, "_pool", None)
    assert isinstance(getattr(pool, "_network_backend", None), outbound._Backend)


def test_a_trickling_answer_ends_at_the_total_deadline(trickle: HostileUpstream) -> None:
    out = Outbound(deadline=1.0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        out.request("GET", trickle.url + "/x")
    elapsed = time.monotonic() - started
    out.close()
    # A per-read timeout never trips on one byte every 0.2 s; the total deadline does.
    assert 1.0 <= elapsed < 3.0
    assert trickle.requests == 1


def test_a_huge_answer_is_stopped_at_the_cap_without_holding_it() -> None:
    with HostileUpstream("huge", size=100 * MIB) as up:
        out = Outbound(deadline=30.0, max_bytes=4 * MIB)
        tracemalloc.start()
        try:
            with pytest.raises(AnswerTooLarge, match="over the cap of 4194304 bytes"):
                out.request("GET", up.url + "/big")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            out.close()
    assert peak < 16 * MIB, peak


def test_cancel_unblocks_a_call_waiting_on_a_silent_upstream(silent: HostileUpstream) -> None:
    out = Outbound(deadline=60.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            out.request("POST", silent.url + "/v1/chat/completions", json={})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert silent.seen.wait(10)
    started = time.monotonic()
    out.canceller.cancel()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert len(errors) == 1 and isinstance(errors[0], OutboundCancelled)
    with pytest.raises(OutboundCancelled):  # and every later call
        out.request("GET", silent.url)
    out.close()


# --- the LLM client ----------------------------------------------------------------------------


def test_llm_chat_deadline_covers_every_attempt(trickle: HostileUpstream) -> None:
    llm = LLMClient(trickle.url + "/v1", "sk-x", prices=PriceTable(), timeout=1.0,
                    max_retries=2, backoff=0.0)
    started = time.monotonic()
    with pytest.raises(LLMError, match="did not answer model 'm' within 1 s"):
        llm.chat("m", [{"role": "user", "content": "hi"}], purpose="task")
    assert time.monotonic() - started < 3.0
    llm.close()


def test_llm_chat_stops_at_the_job_deadline_naming_it(silent: HostileUpstream) -> None:
    llm = LLMClient(silent.url + "/v1", None, prices=PriceTable(), timeout=60.0,
                    job_deadline=time.monotonic() + 0.5, job_limit_hint="the limit of 0.5 s")
    started = time.monotonic()
    with pytest.raises(JobTimeout, match=r"the job ran past the limit of 0\.5 s"):
        llm.chat("m", [{"role": "user", "content": "hi"}], purpose="teacher")
    assert time.monotonic() - started < 3.0
    with pytest.raises(JobTimeout):  # no call after the deadline
        llm.chat("m", [{"role": "user", "content": "hi"}], purpose="teacher")
    assert silent.requests == 1
    llm.close()


def test_llm_huge_teacher_answer_is_dropped() -> None:
    with HostileUpstream("huge", size=100 * MIB) as up:
        llm = LLMClient(up.url + "/v1", None, prices=PriceTable(), timeout=30.0)
        with pytest.raises(LLMError, match="too much data: the answer is over the cap"):
            llm.chat("teacher", [{"role": "user", "content": "hi"}], purpose="teacher")
        assert llm.summary()["llm_calls"] == 0
        llm.close()


# --- jobs --------------------------------------------------------------------------------------


def test_a_job_on_a_trickling_endpoint_ends_failure_naming_its_wall_clock_limit(
    trickle: HostileUpstream,
) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    with LocalServer(optimizer="dspy", llm_base_url=trickle.url + "/v1", job_timeout=2.0) as srv, \
            _client(srv) as c:
        make_task(c, "slow", 12)
        resp = c.post("/api/v1/optimize/slow")
        assert resp.status_code == 202, resp.text
        job = wait(c, resp.json()["job"]["id"], timeout=30)
    assert job["status"] == "FAILURE"
    assert job["error_message"].startswith(
        "the job ran past its wall-clock limit of 2 s (--job-timeout / KAIZEN_JOB_TIMEOUT)")
    assert trickle.requests == 1
    assert job["job_metadata"]["llm_calls"] == 0


def test_stopping_the_server_does_not_wait_on_an_upstream(
    silent: HostileUpstream, caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    caplog.set_level(logging.WARNING)
    srv = LocalServer(optimizer="dspy", llm_base_url=silent.url + "/v1").start()
    try:
        with _client(srv) as c:
            make_task(c, "stuck", 12)
            assert c.post("/api/v1/optimize/stuck").status_code == 202
        assert silent.seen.wait(20)
        worker: Any = srv._worker
        started = time.monotonic()
    finally:
        srv.stop()
    elapsed = time.monotonic() - started
    # The call's own deadline is 60 s and the worker's join gives up after 5 s.
    assert elapsed < 4.0, elapsed
    assert not worker._thread.is_alive()
    assert "did not stop" not in caplog.text


def test_a_candidate_over_the_prompt_limit_is_rejected_and_not_stored() -> None:
    with LocalServer() as srv, _client(srv) as c:
        assert c.post("/api/v1/tasks", json={"name": "long", "feedback_threshold": 1000}
                      ).status_code == 201
        big = "y" * 90_000
        items = [{"task_id": "long", "inputs": {"q": str(i)}, "output": big + str(i),
                  "score": 1.0} for i in range(8)]
        resp = c.post("/api/v1/ingest", json={"feedback": items})
        assert resp.status_code == 207 and resp.json()["accepted"] == 8
        resp = c.post("/api/v1/optimize/long")
        assert resp.status_code == 202
        job = wait(c, resp.json()["job"]["id"])
        versions = c.get("/api/v1/prompts/long/versions").json()
    assert job["status"] == "FAILURE"
    assert f"over the limit of {MAX_PROMPT_CHARS}; it was rejected and not stored" in \
        job["error_message"]
    assert job["job_metadata"]["candidates_rejected_too_long"] == 1
    assert job["prompt_version_id"] is None
    assert versions == []


def test_dspy_candidate_drops_what_would_pass_the_prompt_limit() -> None:
    from kaizen_server.optimize import dspy_optimizer

    demos = [{"text": "a", "output": "A" * 150_000}, {"text": "b", "output": "B!"},
             {"text": "c", "output": "C" * 120_000}]
    text, changed, rejected, too_long, kept = dspy_optimizer._candidate(
        "Shout: {{ text }}", "x {{ text }}" * 30_000, demos, ["text"])
    assert len(text) <= MAX_PROMPT_CHARS
    assert (changed, rejected, too_long, kept) == (False, True, 2, 2)
    # The longest demonstration goes first; the rest fit.
    assert '"B!"' in text and "AAAA" not in text and "CCCC" in text
