"""Judged scores drive the loop: a task nobody scores gets a candidate, a canary and a decision.

End to end on one real local server and a loopback LLM stand-in: an application's decorated
function calls the stand-in's *student* model with the served prompt (its answers are right
for every text only when the prompt shows examples, else for even-length texts only); an
LLM-judge evaluator scores every trace (the stand-in's judge); the task lets judged scores
drive its loop (``evaluator_config["judged_scores"]``). No person and no application ever
sends a score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from llm_standin import LLMStandIn
from polling import poll

import kaizen_sdk as ct
from kaizen_sdk import CTClient
from kaizen_sdk.errors import CTNotFoundError
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e

JUDGE = "judge-standin"



def _poll(what: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    return poll(what, done, timeout, step=0.05)


def _rollout(admin: CTClient) -> ct.Rollout | None:
    try:
        return admin.get_rollout("shout")
    except CTNotFoundError:
        return None


def _texts(n: int, start: int = 0) -> list[str]:
    # lengths alternate odd / even: v1 gets half of them wrong
    return [("hello" if i % 2 else "hey you") + f" {i:04d}" + ("!" * (i % 2))
            for i in range(start, start + n)]


def test_a_task_without_human_feedback_is_optimized_and_promoted_on_judged_scores(
    tmp_path: Any,
) -> None:
    with LLMStandIn(judge=JUDGE) as llm, LocalServer(
        db_path=tmp_path / "loop.db", llm_base_url=llm.base_url, llm_prices={JUDGE: (1.0, 1.0)},
    ) as server, CTClient(api_key=server.api_key, base_url=server.base_url) as admin, \
            CTClient(api_key=server.api_key, base_url=server.base_url,
                     prompt_refresh=0.2) as app, httpx.Client(timeout=10) as model:
        admin.create_task(
            "shout", prompt_text="Repeat the text.\nText: {{ text }}", feedback_threshold=30,
            evaluator_config={
                "judged_scores": True, "unattended_rollouts": True,
                "auto_rollout": {"share": 0.5, "min_samples": 30, "latency_margin": 100.0},
            })
        admin.create_evaluator("shout", "judge", "llm_judge", judge_model=JUDGE, scale=[0, 1],
                               rubric="1 when the answer is the input text shouted, else 0")

        @app.task("shout")
        def shout_it(text: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            reply = model.post(f"{llm.base_url}/chat/completions", json={
                "model": "student", "messages": [{"role": "user",
                                                  "content": prompt.render(text=text)}]})
            answer: str = reply.json()["choices"][0]["message"]["content"]
            return answer

        v1 = admin.get_prompt("shout")
        for text in _texts(40):
            shout_it(text)
        assert app.flush(timeout=30)

        # 30 judged scores reach the threshold: a job runs on them
        job = _poll(lambda: admin.list_jobs("shout"), lambda jobs: bool(jobs)
                    and jobs[0].status in ("SUCCESS", "FAILURE"))[0]
        assert job.status == "SUCCESS", job.error_message
        assert job.triggered_by == "threshold"
        versions = {p.id: p for p in admin.list_prompt_versions("shout")}
        assert job.prompt_version_id in versions, (job.job_metadata, job.error_message,
                                                   [p.prompt_text for p in versions.values()])
        candidate = versions[job.prompt_version_id]
        assert "### Examples" in candidate.prompt_text
        entries = admin.list_feedback("shout", limit=1000)
        assert not [f for f in entries if f.score is not None
                    and f.source != "evaluator:judge"]  # not one score from a person
        rollout = _poll(lambda: _rollout(admin), lambda r: r is not None)
        assert rollout.state == "running"
        assert rollout.candidate_version_id == candidate.id

        # the canary is decided on judged scores alone
        start = 40
        while admin.get_rollout("shout").state == "running":
            assert start < 2000, "no decision after 2000 calls"
            for text in _texts(40, start):
                shout_it(text)
            start += 40
            assert app.flush(timeout=30)
            _poll(lambda: admin.get_evaluator("shout", "judge").today,
                  lambda today, want=start: today is not None and today.judged >= want,
                  timeout=60)
        final = admin.get_rollout("shout")
        assert final.state == "promoted", (final.state, final.reason)
        assert admin.get_prompt("shout").id == candidate.id != v1.id
        assert final.candidate.mean is not None and final.active.mean is not None
        assert final.candidate.mean > final.active.mean
        assert final.candidate.n >= 30 and final.active.n >= 30
