"""DSPy candidates of a chat version keep its messages and settings (issue 24).

A task whose version has ``messages`` and ``config`` is optimized by each DSPy strategy
against the loopback stand-in (`llm_standin.LLMStandIn`). The candidate keeps every role, every
variable of every message and every setting: the teacher's new instructions go inside the
messages, and instructions that lose the messages are rejected like those that lose a variable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# found, not imported: importing it costs every worker that collects this file 0.7 s
if importlib.util.find_spec("dspy") is None:
    pytest.skip("the optimize extra (DSPy) is not installed", allow_module_level=True)

from llm_standin import LLMStandIn
from optimize_helpers import feedback, wait

from kaizen_server import LocalServer

MESSAGES = [
    {"role": "system", "content": "You answer in the style the user asks for."},
    {"role": "user", "content": "Text: {{ text }}"},
]
CONFIG = {
    "model": "student-standin", "temperature": 0.3, "max_tokens": 40, "stop": ["\n\n"],
    "response_format": {"type": "text"}, "seed": 7, "tools": [],
}
_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    with LLMStandIn() as s:
        yield s


@pytest.fixture
def client(standin: LLMStandIn) -> Iterator[httpx.Client]:
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url, llm_api_key="sk-x") as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key},
                         timeout=10) as c:
        yield c


def _optimize(client: httpx.Client, strategy: str) -> tuple[dict[str, Any], list[Any]]:
    """A chat task with 30 scored entries, one job of *strategy*: (job, versions)."""
    name = f"chat-{strategy}"
    resp = client.post("/api/v1/tasks", json={
        "name": name, "messages": MESSAGES, "config": CONFIG, "feedback_threshold": 1000,
        "teacher_model": "teacher-standin", "judge_model": "judge-standin",
        "evaluator_config": {"task_model": "student-standin"},
    })
    assert resp.status_code == 201, resp.text
    resp = client.post("/api/v1/ingest", json={"feedback": feedback(name, 30)})
    assert resp.status_code == 207 and resp.json()["accepted"] == 30, resp.text
    resp = client.post(f"/api/v1/optimize/{name}", params={"strategy": strategy})
    assert resp.status_code == 202, resp.text
    job = wait(client, resp.json()["job"]["id"], timeout=120)
    assert job["status"] == "SUCCESS", job["error_message"]
    versions: list[Any] = client.get(f"/api/v1/prompts/{name}/versions").json()
    return job, versions


def _keeps_the_recipe(version: dict[str, Any]) -> None:
    assert version["config"] == CONFIG
    assert version["messages"] is not None, version["prompt_text"]
    assert [m["role"] for m in version["messages"]] == [m["role"] for m in MESSAGES]
    for old, new in zip(MESSAGES, version["messages"], strict=True):
        assert set(_VARIABLE.findall(new["content"])) == set(_VARIABLE.findall(old["content"]))


@pytest.mark.parametrize("strategy", ["bootstrap", "mipro", "gepa"])
def test_dspy_candidate_keeps_messages_and_settings(client: httpx.Client, strategy: str) -> None:
    job, versions = _optimize(client, strategy)
    made = next(v for v in versions if v["id"] == job["prompt_version_id"])
    assert made["optimizer"] == f"dspy-{strategy}"
    _keeps_the_recipe(made)
    meta = job["job_metadata"]
    assert meta["instructions_rejected"] is False
    system, user = (m["content"] for m in made["messages"])
    if strategy == "bootstrap":  # the demonstrations go inside the last message
        assert system == MESSAGES[0]["content"] and meta["instructions_changed"] is False
        assert user.startswith("Text: {{ text }}\n\n### Examples\n")
    else:  # the teacher's instructions go inside the messages
        assert meta["instructions_changed"] is True
        assert system == "Shout the text back in capitals."
        assert user.startswith("Text: {{ text }}")


@pytest.mark.parametrize("strategy", ["mipro", "gepa"])
def test_instructions_that_lose_the_messages_are_rejected(
    client: httpx.Client, standin: LLMStandIn, strategy: str
) -> None:
    standin.drops_roles = True  # the teacher proposes plain text, the variable kept
    job, versions = _optimize(client, strategy)
    meta = job["job_metadata"]
    assert meta["instructions_rejected"] is True and meta["instructions_changed"] is False
    for version in versions:  # whatever was made, and the active version, keep the recipe
        _keeps_the_recipe(version)
        assert "capitals" not in version["prompt_text"]
    assert len(versions) == 1 + (job["prompt_version_id"] is not None)

