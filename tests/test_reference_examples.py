"""The seed's ``CTClient`` examples (the reference documentation quoted in issue 3) run
unchanged against a server whose task serves a chat version with model settings and labels
(issue 24): clients that know only ``prompt_text`` keep working.

Each example is the reference's code; only its placeholders are filled (``"sk-..."``, the
ids ``"3b4e1f2a-..."`` and ``"7c8d9e0f-..."``) and the job poll's ``time.sleep(10)`` is
shortened, since the local server finishes a job in well under a second.
"""

from __future__ import annotations

import contextlib
import io
import textwrap
import uuid
from collections.abc import Iterator

import pytest

from kaizen_sdk import CTClient
from kaizen_sdk.templates import messages_text
from kaizen_server import LocalServer

CONSTRUCT = """
from kaizen_sdk import CTClient
# From environment variables (KAIZEN_API_KEY, KAIZEN_BASE_URL)
client = CTClient()
# Explicit configuration
client = CTClient(
    api_key="sk-my-key",
    base_url="https://ct.my-company.com",
    cache_ttl=600.0,
    timeout=60.0,
)
"""
CREATE_TASK = """
with CTClient() as client:
    task = client.create_task(
        name="summarize_ticket",
        description="Summarizes customer support tickets into one sentence.",
        feedback_threshold=100,
        teacher_model="gpt-4o",
        judge_model="gpt-4o-mini",
    )
    print(f"Created task: {task.id}")
"""
GET_PROMPT_FIRST = """
with CTClient(api_key="sk-...") as client:
    prompt = client.get_prompt("summarize_ticket")
    print(prompt.prompt_text)
"""
LOG_FEEDBACK = """
from kaizen_sdk import CTClient
with CTClient() as client:
    result = client.log_feedback(
        task_id="3b4e1f2a-...",
        inputs={"user_message": "Summarize this ticket"},
        output="The ticket is about a login issue.",
        score=0.9,
        metadata={"session_id": "abc123"},
    )
    print(result.id)  # UUID of the created feedback record
"""
GET_PROMPT = """
with CTClient() as client:
    prompt = client.get_prompt("3b4e1f2a-...")
    print(prompt.prompt_text)
    print(f"Version: {prompt.version_number}, Score: {prompt.eval_score}")
"""
ACTIVATE = """
with CTClient() as client:
    # Activate a specific version
    prompt = client.activate_prompt(
        task_id="3b4e1f2a-...",
        version_id="7c8d9e0f-...",
    )
    print(f"Activated version {prompt.version_number}")
"""
TRIGGER = """
with CTClient() as client:
    result = client.trigger_optimization("3b4e1f2a-...")
    print(f"Job ID: {result.job.id}")
    print(f"Estimated cost: ${result.cost_estimate.estimated_cost_usd:.4f}")
    if result.budget_warning:
        print(f"Warning: {result.budget_warning}")
"""
GET_JOB = """
import time
with CTClient() as client:
    result = client.trigger_optimization("3b4e1f2a-...")
    job_id = str(result.job.id)
    # Poll until done
    while True:
        job = client.get_job(job_id)
        print(f"Status: {job.status} — {job.progress_step}")
        if job.status in ("SUCCESS", "FAILURE", "PR_FAILED"):
            break
        time.sleep(10)
    if job.status == "SUCCESS":
        print(f"PR: {job.pr_url}")
"""
LIST_TASKS = """
with CTClient() as client:
    tasks = client.list_tasks()
    for task in tasks:
        print(f"{task.id}: {task.name} ({task.feedback_count} feedback entries)")
"""
CLOSE = """
client = CTClient()
try:
    tasks = client.list_tasks()
finally:
    client.close()
"""
MESSAGES = [{"role": "system", "content": "Summarize support tickets in one sentence."},
            {"role": "user", "content": "{{ user_message }}"}]
CONFIG = {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 60}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A fresh server (the examples create ``summarize_ticket``), named by KAIZEN_* env."""
    with LocalServer() as srv:
        monkeypatch.setenv("KAIZEN_API_KEY", srv.api_key)
        monkeypatch.setenv("KAIZEN_BASE_URL", srv.base_url)
        yield srv


def _run(example: str, fill: dict[str, str]) -> str:
    """Run *example* with its placeholders filled; return what it printed."""
    code = textwrap.dedent(example)
    for placeholder, value in fill.items():
        code = code.replace(placeholder, value)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<reference example>", "exec"), {"CTClient": CTClient})
    return out.getvalue()


def test_the_reference_examples_run_on_chat_versions(server: LocalServer) -> None:
    fill = {'"sk-..."': repr(server.api_key), "time.sleep(10)": "time.sleep(0.05)"}
    assert _run(CONSTRUCT, fill) == ""
    created = _run(CREATE_TASK, fill)
    assert created.startswith("Created task: ")
    task_id = created.split(": ", 1)[1].strip()
    fill['"3b4e1f2a-..."'] = repr(task_id)

    # the team then versions the whole call: messages and settings, plus a staging label
    with CTClient() as admin:
        v1 = admin.create_prompt_version("summarize_ticket", messages=MESSAGES, config=CONFIG,
                                         activate=True)
        v2 = admin.create_prompt_version(
            "summarize_ticket", messages=[MESSAGES[0], {"role": "user", "content":
                                                        "Ticket: {{ user_message }}"}],
            config={**CONFIG, "model": "gpt-4o"})
        admin.set_label("summarize_ticket", "staging", str(v2.id))
    fill['"7c8d9e0f-..."'] = repr(str(v2.id))
    text = messages_text(v1.messages or [])

    assert _run(GET_PROMPT_FIRST, fill) == text + "\n"
    feedback_id = _run(LOG_FEEDBACK, fill).strip()
    assert uuid.UUID(feedback_id)
    assert _run(GET_PROMPT, fill) == f"{text}\nVersion: {v1.version_number}, Score: None\n"
    assert _run(ACTIVATE, fill) == f"Activated version {v2.version_number}\n"
    triggered = _run(TRIGGER, fill).splitlines()
    assert triggered[0].startswith("Job ID: ") and triggered[1].startswith("Estimated cost: $")
    polled = _run(GET_JOB, fill).splitlines()
    assert polled[-2:] == ["Status: SUCCESS — done", "PR: None"], polled
    assert all(line.startswith("Status: ") for line in polled[:-1])
    assert _run(LIST_TASKS, fill) == f"{task_id}: summarize_ticket (1 feedback entries)\n"
    assert _run(CLOSE, fill) == ""
    with CTClient() as client:  # the activation moved production, not staging
        assert client.get_prompt("summarize_ticket").id == v2.id
        assert client.get_prompt("summarize_ticket", label="staging").id == v2.id
