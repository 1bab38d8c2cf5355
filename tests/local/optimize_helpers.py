"""Helpers of the optimization tests: a task with scored feedback, and running one job."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from llm_standin import shout

__all__ = ["TERMINAL", "feedback", "make_task", "run", "wait"]

WORDS = ["apple", "kiwi", "banana", "fig", "cherry", "plum", "grape", "melon", "lemon", "lime"]
TERMINAL = ("SUCCESS", "FAILURE", "PR_FAILED")
"""Job statuses that end a job."""


def feedback(task: str, n: int) -> list[dict[str, Any]]:
    """*n* scored entries: two of three carry the right answer (0.9), the rest a wrong one."""
    items = []
    for i in range(n):
        text = f"{WORDS[i % len(WORDS)]}{i}"
        good = i % 3 != 0
        items.append({
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kaizen-test/{task}/{i}")),
            "task_id": task, "inputs": {"text": text},
            "output": shout(text) if good else text.lower(), "score": 0.9 if good else 0.1,
        })
    return items


def make_task(client: httpx.Client, name: str, n: int, **fields: Any) -> None:
    body = {"name": name, "feedback_threshold": 1000, "teacher_model": "teacher-standin",
            "judge_model": "judge-standin",
            "evaluator_config": {"task_model": "student-standin"}, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    assert client.post("/api/v1/tasks", json=body).status_code == 201
    resp = client.post("/api/v1/ingest", json={"feedback": feedback(name, n)})
    assert resp.status_code == 207 and resp.json()["accepted"] == n, resp.text


def wait(client: httpx.Client, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.02)


def run(client: httpx.Client, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    resp = client.post(f"/api/v1/optimize/{task}")
    assert resp.status_code == 202, resp.text
    started = resp.json()
    return started, wait(client, started["job"]["id"])
