"""Replay a 15-minute stream of scored calls against ``LocalServer(optimizer="dspy")``, compressed.

The application of issue 29: 20 scored calls a second for 15 minutes (18,000 feedback entries,
threshold 50), sent in 1-second batches compressed into *seconds* of wall time, against the
deterministic LLM stand-in (`llm_standin.LLMStandIn` with ``demos_hurt``: every candidate is
judged worse than the active prompt, which asks for capitals). When the stream ends, the
replay waits for the last job and returns what the tuning loop did: jobs, LLM calls, cost.

Run it on any checkout (it uses the HTTP API only) to compare before and after::

    PYTHONPATH=<checkout>:tests/local python tests/local/replay_stream.py --seconds 60
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

import httpx
from llm_standin import LLMStandIn, shout

__all__ = ["PRICES", "replay"]

PRICES = {"student-standin": (0.15, 0.60), "teacher-standin": (2.50, 10.00),
          "judge-standin": (0.15, 0.60)}
"""Prices like a small task/judge model and a large teacher (USD per 1M tokens)."""

ACTIVE = "Shout the text back in capitals.\nText: {{ text }}"
WORDS = ["apple", "kiwi", "banana", "fig", "cherry", "plum", "grape", "melon", "lemon", "lime"]
TERMINAL = ("SUCCESS", "FAILURE", "PR_FAILED")


def _entry(task: str, i: int) -> dict[str, Any]:
    text = f"{WORDS[i % len(WORDS)]}{i}"
    good = i % 3 != 0
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kaizen-replay/{task}/{i}")),
            "task_id": task, "inputs": {"text": text},
            "output": shout(text) if good else text.lower(), "score": 0.9 if good else 0.1}


def replay(client: httpx.Client, *, seconds: float, minutes: int = 15, rate: int = 20,
           task: str = "stream", task_fields: dict[str, Any] | None = None,
           settle_timeout: float = 600.0) -> dict[str, Any]:
    """Stream *minutes* x 60 batches of *rate* entries over *seconds*; return the outcome."""
    body = {"name": task, "feedback_threshold": 50, "teacher_model": "teacher-standin",
            "judge_model": "judge-standin", "prompt_text": ACTIVE,
            "evaluator_config": {"task_model": "student-standin", "auto_rollout": True},
            **(task_fields or {})}
    resp = client.post("/api/v1/tasks", json=body)
    assert resp.status_code == 201, resp.text
    batches = minutes * 60
    start = time.monotonic()
    for b in range(batches):
        items = [_entry(task, b * rate + k) for k in range(rate)]
        resp = client.post("/api/v1/ingest", json={"feedback": items})
        assert resp.status_code == 207 and resp.json()["accepted"] == rate, resp.text
        pause = start + (b + 1) * seconds / batches - time.monotonic()
        if pause > 0:  # the workload's pace, not a synchronisation
            time.sleep(pause)
    streamed = time.monotonic() - start
    deadline = time.monotonic() + settle_timeout
    while True:
        jobs = client.get("/api/v1/jobs", params={"task_id": task, "limit": 1000}).json()
        if all(j["status"] in TERMINAL for j in jobs):
            break
        assert time.monotonic() < deadline, "jobs still running after the stream"
        time.sleep(0.1)
    metas = [j.get("job_metadata") or {} for j in jobs]
    versions = client.get(f"/api/v1/prompts/{task}/versions", params={"limit": 1000}).json()
    rollout = client.get(f"/api/v1/rollouts/{task}")
    return {
        "streamed_s": round(streamed, 1),
        "jobs": len(jobs),
        "statuses": sorted(j["status"] for j in jobs),
        "verdicts": [m.get("verdict") for m in metas],
        "llm_calls": sum(int(m.get("llm_calls") or 0) for m in metas),
        "spent_usd": round(sum(float(m.get("spent_usd") or 0) for m in metas), 6),
        "versions": [(v["version_number"], v["status"]) for v in versions],
        "rollout": rollout.status_code == 200,
        "job_list": jobs,
        "version_list": versions,
    }


def main() -> None:
    """Run the replay on a fresh server and print the figures as JSON."""
    from kaizen_server import LocalServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--task-field", action="append", default=[], metavar="NAME=JSON")
    args = parser.parse_args()
    fields = {k: json.loads(v) for k, v in (f.split("=", 1) for f in args.task_field)}
    with LLMStandIn() as standin:
        standin.demos_hurt = True
        with LocalServer(optimizer="dspy", llm_base_url=standin.base_url,
                         llm_prices=PRICES) as srv, \
                httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key},
                             timeout=30) as c:
            out = replay(c, seconds=args.seconds, task_fields=fields)
        out["standin_requests"] = len(standin.requests)
    out.pop("job_list")
    out.pop("version_list")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
