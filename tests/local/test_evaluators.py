"""Online evaluators end to end: configuration over HTTP and the clients, and the server's
background evaluator judging sampled traces (code checks; an LLM judge on a loopback stand-in).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from llm_standin import LLMStandIn, shout
from polling import poll

from kaizen_sdk import AsyncCTClient, CTClient
from kaizen_sdk.errors import CTNotFoundError, CTValidationError
from kaizen_server import LocalServer
from kaizen_server.domain import evaluators as rules

JUDGE = "judge-standin"
PRICES = {JUDGE: (1.0, 1.0)}  # dollars per million tokens, in and out



def _poll(what: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    return poll(what, done, timeout, step=0.02)


def _judged(client: httpx.Client, task: str, name: str) -> list[dict[str, Any]]:
    entries = client.get("/api/v1/feedback", params={"task_id": task, "limit": 1000}).json()
    return [e for e in entries if e["source"] == f"evaluator:{name}"]


@pytest.fixture
def ct(local_server: LocalServer) -> Iterator[CTClient]:
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as c:
        yield c


# --- configuration -------------------------------------------------------------------------


def test_evaluators_are_configured_through_the_client(ct: CTClient, task_name: str) -> None:
    ct.create_task(task_name, prompt_text="v1 {{ x }}")
    made = ct.create_evaluator(task_name, "json", "json_schema", sample_rate=0.5,
                               json_schema={"type": "object", "required": ["a"]})
    assert (made.kind, made.sample_rate, made.status) == ("json_schema", 0.5, "active")
    assert [e.name for e in ct.list_evaluators(task_name)] == ["json"]
    changed = ct.update_evaluator(task_name, "json", sample_rate=1.0, name="json2")
    assert (changed.name, changed.sample_rate, changed.id) == ("json2", 1.0, made.id)
    assert ct.get_evaluator(task_name, str(made.id)).name == "json2"
    assert ct.remove_evaluator(task_name, "json2").id == made.id
    with pytest.raises(CTNotFoundError):
        ct.get_evaluator(task_name, "json2")
    with pytest.raises(CTValidationError, match="sample_rate"):
        ct.create_evaluator(task_name, "x", "regex", pattern="a", sample_rate=2.0)
    with pytest.raises(CTValidationError, match="update_evaluator needs"):
        ct.update_evaluator(task_name, "x")


def test_the_async_client_mirrors_it(local_server: LocalServer, task_name: str) -> None:
    async def main() -> list[str]:
        async with AsyncCTClient(api_key=local_server.api_key,
                                 base_url=local_server.base_url) as c:
            await c.create_task(task_name)
            await c.create_evaluator(task_name, "short", "length", max_length=10)
            await c.update_evaluator(task_name, "short", min_length=1)
            got = await c.get_evaluator(task_name, "short")
            assert (got.min_length, got.max_length) == (1, 10)
            names = [e.name for e in await c.list_evaluators(task_name)]
            await c.remove_evaluator(task_name, "short")
            return names

    assert asyncio.run(main()) == ["short"]


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "llm_judge", "rubric": "Right?", "judge_model": "gpt-4o-mini"}, "`scale`"),
    ({"kind": "regex", "pattern": "a", "sample_rate": 1.5}, "sample_rate"),
    ({"kind": "regex", "pattern": "(a"}, "`pattern`"),
    ({"kind": "json_schema", "json_schema": {"type": "objekt"}}, "`json_schema.type`"),
    ({"kind": "llm_judge", "rubric": "R", "scale": [0, 1], "judge_model": "no-such-model-xyz"},
     "`judge_model`"),
    ({"kind": "vibes"}, "kind"),
])
def test_bad_configuration_is_a_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, task_name: str, body: dict[str, Any], field: str
) -> None:
    assert client.post("/api/v1/tasks", json={"name": task_name}).status_code == 201
    resp = client.post(f"/api/v1/tasks/{task_name}/evaluators", json={"name": "e", **body})
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["detail"]
    assert client.get(f"/api/v1/tasks/{task_name}/evaluators").json() == []


# --- background evaluation: code checks ----------------------------------------------------


def test_sampled_traces_are_checked_once_and_become_feedback(
    client: httpx.Client, task_name: str
) -> None:
    assert client.post("/api/v1/tasks", json={"name": task_name}).status_code == 201
    made = client.post(f"/api/v1/tasks/{task_name}/evaluators",
                       json={"name": "caps", "kind": "regex", "pattern": "^[A-Z]",
                             "sample_rate": 0.5}).json()
    ids = [str(uuid.uuid4()) for _ in range(40)]
    traces = [{"id": t, "task_id": task_name, "response_text": "ABC" if i % 2 else "abc"}
              for i, t in enumerate(ids)]
    assert client.post("/api/v1/ingest", json={"traces": traces}).status_code == 207
    want = {t: (1.0 if i % 2 else 0.0) for i, t in enumerate(ids)
            if rules.sampled(made["id"], t, 0.5)}
    judged = _poll(lambda: _judged(client, task_name, "caps"), lambda j: len(j) >= len(want))
    got = {e["metadata"]["trace_id"]: e["score"] for e in judged}
    assert got == want  # the sampled ones, each once, with the right score
    assert {e["comment"] for e in judged} <= {"the pattern matches the output",
                                               "the pattern does not match the output"}
    shown = client.get(f"/api/v1/tasks/{task_name}/evaluators/caps").json()
    assert shown["today"]["judged"] == len(want)
    assert shown["today"]["calls"] == 0  # a code check calls no LLM


# --- background evaluation: an LLM judge ---------------------------------------------------


@pytest.fixture
def judge_server(tmp_path: Any) -> Iterator[tuple[LocalServer, LLMStandIn]]:
    with LLMStandIn(judge=JUDGE) as standin, LocalServer(
        db_path=tmp_path / "judge.db", llm_base_url=standin.base_url, llm_api_key="sk-judge",
        llm_prices=PRICES,
    ) as server:
        yield server, standin


def _http(server: LocalServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                        timeout=10)


def _judge_body(**fields: Any) -> dict[str, Any]:
    return {"name": "judge", "kind": "llm_judge", "judge_model": JUDGE, "scale": [0, 1],
            "rubric": "Is the answer the input shouted?", **fields}


def _shout_traces(n: int, *, wrong_every: int = 3) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        text = f"hello {i}"
        answer = text.lower() if i % wrong_every == 0 else shout(text)
        out.append({"id": str(uuid.uuid4()), "task_id": "shout", "response_text": answer,
                    "metadata": {"inputs": {"text": text}}})
    return out


def test_an_llm_judge_scores_traces_through_the_endpoint(
    judge_server: tuple[LocalServer, LLMStandIn]
) -> None:
    server, standin = judge_server
    with _http(server) as c:
        assert c.post("/api/v1/tasks", json={"name": "shout"}).status_code == 201
        assert c.post("/api/v1/tasks/shout/evaluators", json=_judge_body()).status_code == 201
        traces = _shout_traces(9)
        assert c.post("/api/v1/ingest", json={"traces": traces}).status_code == 207
        judged = _poll(lambda: _judged(c, "shout", "judge"), lambda j: len(j) >= 9)
        want = {t["id"]: (0.0 if i % 3 == 0 else 1.0) for i, t in enumerate(traces)}
        assert {e["metadata"]["trace_id"]: e["score"] for e in judged} == want
        assert standin.models().count(JUDGE) == 9
        assert all(auth == "Bearer sk-judge" for _, _, auth in standin.requests)
        shown = c.get("/api/v1/tasks/shout/evaluators/judge").json()
        assert (shown["today"]["calls"], shown["today"]["judged"]) == (9, 9)
        assert shown["today"]["spent_usd"] > 0
        # a judge's score is no optimizer example by itself
        assert all(e["source"] != "sdk" for e in judged)


def test_a_judge_without_a_usable_score_leaves_the_trace_unjudged(
    judge_server: tuple[LocalServer, LLMStandIn]
) -> None:
    server, standin = judge_server
    standin.judge_no_number = True
    with _http(server) as c:
        c.post("/api/v1/tasks", json={"name": "shout"})
        c.post("/api/v1/tasks/shout/evaluators", json=_judge_body())
        c.post("/api/v1/ingest", json={"traces": _shout_traces(4)})
        shown = _poll(lambda: c.get("/api/v1/tasks/shout/evaluators/judge").json(),
                      lambda e: e["today"]["unjudged"] >= 4)
        assert (shown["today"]["judged"], shown["today"]["unjudged"]) == (0, 4)
        assert _judged(c, "shout", "judge") == []  # never a 0


def test_the_day_budget_stops_judge_calls_at_the_cap(
    judge_server: tuple[LocalServer, LLMStandIn]
) -> None:
    server, standin = judge_server
    with _http(server) as c:
        c.post("/api/v1/tasks", json={"name": "shout"})
        c.post("/api/v1/tasks/shout/evaluators", json=_judge_body(daily_calls=5))
        c.post("/api/v1/ingest", json={"traces": _shout_traces(8)})
        shown = _poll(lambda: c.get("/api/v1/tasks/shout/evaluators/judge").json(),
                      lambda e: e["today"]["judged"] + e["today"]["skipped_budget"] >= 8)
        assert (shown["today"]["calls"], shown["today"]["judged"]) == (5, 5)
        assert shown["today"]["skipped_budget"] == 3
        assert shown["status"] == "budget_spent"
        assert "5 judge calls" in shown["status_reason"]
        c.post("/api/v1/ingest", json={"traces": _shout_traces(3)})
        _poll(lambda: c.get("/api/v1/tasks/shout/evaluators/judge").json(),
              lambda e: e["today"]["skipped_budget"] >= 6)
        assert standin.models().count(JUDGE) == 5  # not one call past the cap


def test_p95_from_trace_stored_to_judged_score_at_20_traces_per_second(
    judge_server: tuple[LocalServer, LLMStandIn]
) -> None:
    """Steady 20 traces/s for 10 s with sampling 1.0; the p95 latency is reported."""
    server, _standin = judge_server
    rate, seconds = 20, 10
    with _http(server) as c:
        c.post("/api/v1/tasks", json={"name": "shout"})
        c.post("/api/v1/tasks/shout/evaluators", json=_judge_body())
        start = time.monotonic()
        for tick in range(rate * seconds // 5):  # 5 traces every 0.25 s
            c.post("/api/v1/ingest", json={"traces": _shout_traces(5)})
            pause = start + (tick + 1) * 0.25 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        total = rate * seconds
        judged = _poll(lambda: _judged(c, "shout", "judge"), lambda j: len(j) >= total,
                       timeout=120)
        traces = {t["id"]: t for t in
                  c.get("/api/v1/traces", params={"task_id": "shout", "limit": 1000}).json()}
    lags = sorted(
        (datetime.fromisoformat(e["created_at"])
         - datetime.fromisoformat(traces[e["metadata"]["trace_id"]]["created_at"])
         ).total_seconds() for e in judged)
    p95 = statistics.quantiles(lags, n=20)[-1]
    print(f"\nonline judge latency at {rate} traces/s: p50 {statistics.median(lags):.3f} s,"
          f" p95 {p95:.3f} s, max {lags[-1]:.3f} s over {len(lags)} traces")
    assert len(judged) == total
    assert p95 <= 60.0


class _LeakyJudge(LLMStandIn):
    """A judge that repeats the endpoint's key and the trace's text in its reason."""

    def answer(self, model: str, messages: list[dict[str, str]]) -> str:
        return f"SCORE: 1\nREASON: key sk-judge-SECRET-123 said {messages[-1]['content'][-80:]}"


def test_a_judge_reason_never_stores_the_endpoint_key(tmp_path: Any) -> None:
    with _LeakyJudge(judge=JUDGE) as judge, LocalServer(
        db_path=tmp_path / "leak.db", llm_base_url=judge.base_url,
        llm_api_key="sk-judge-SECRET-123", llm_prices=PRICES,
    ) as server, _http(server) as c:
        c.post("/api/v1/tasks", json={"name": "shout"})
        c.post("/api/v1/tasks/shout/evaluators", json=_judge_body())
        c.post("/api/v1/ingest", json={"traces": _shout_traces(2)})
        judged = _poll(lambda: _judged(c, "shout", "judge"), lambda j: len(j) >= 2)
        assert judge.requests[0][2] == "Bearer sk-judge-SECRET-123"  # the key was used
        for entry in judged:
            assert entry["score"] == 1.0
            assert "SECRET" not in entry["comment"] and entry["comment"].startswith("key ")
        assert "SECRET" not in c.get("/api/v1/tasks/shout/evaluators/judge").text
