"""The job page shows the demonstrations its candidate uses (read back from the candidate's
few-shot section), bounded and escaped, and links the candidate's diff."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from ui_support import HOSTILE, wait_job

from kaizen_server import LocalServer
from kaizen_server.optimize.fewshot import Example, build_prompt
from kaizen_server.storage.sqlite import Store
from kaizen_server.ui.demos import MAX_TEXT, demonstrations


@pytest.mark.e2e
def test_the_job_page_shows_the_candidates_demonstrations_escaped(
    ui_server: LocalServer, api: httpx.Client
) -> None:
    resp = api.post("/api/v1/tasks", json={"name": "demo-task", "feedback_threshold": 100_000,
                                           "prompt_text": "Answer {question} briefly."})
    assert resp.status_code == 201, resp.text
    for i, (question, output) in enumerate([("q0", HOSTILE), ("q1", "fine"), ("q2", "good")]):
        # fixed ids: the few-shot split (a hash of the ids) keeps the hostile entry in training
        resp = api.post("/api/v1/feedback", json={
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kaizen-test/demo-task/{(i + 1) % 3}")),
            "task_id": "demo-task", "inputs": {"question": question}, "output": output,
            "score": 0.9 - i * 0.05})
        assert resp.status_code == 201, resp.text
    job = wait_job(api, api.post("/api/v1/optimize/demo-task").json()["job"]["id"])
    assert job["status"] == "SUCCESS", job
    candidate = next(v for v in api.get("/api/v1/prompts/demo-task/versions").json()
                     if v["id"] == job["prompt_version_id"])
    expected, total = demonstrations(candidate["prompt_text"])
    assert total >= 1 and len(expected) == total
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        resp = ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        assert resp.status_code == 303
        html = ui.get(f"/ui/jobs/{job['id']}").text
    table = re.search(r'<table id="demos">.*?</table>', html, re.S)
    assert table is not None, "no demonstrations table"
    assert table.group(0).count("<tr><td>") == total
    assert 'id="no-per-example"' in html
    assert 'id="candidate-diff"' not in html  # the few-shot job names no baseline version
    v1 = api.get("/api/v1/prompts/demo-task/versions").json()[-1]["id"]
    store = Store(ui_server.db_path)  # as the DSPy optimizer's job records it
    try:
        store.merge_job_metadata(job["id"], {"baseline_version": 1})
    finally:
        store.close()
    with httpx.Client(base_url=ui_server.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": ui_server.api_key, "next": "/ui/tasks"})
        judged = ui.get(f"/ui/jobs/{job['id']}").text
    assert (f'id="candidate-diff" href="/ui/tasks/demo-task/diff?a={v1}&amp;'
            f'b={job["prompt_version_id"]}"') in judged
    assert [d.output for d in expected].count(HOSTILE) == 1
    assert "&lt;script&gt;alert(" in table.group(0)
    assert "<script>alert(" not in html and "<img src=x" not in html


@pytest.mark.unit
def test_demonstrations_are_read_back_bounded() -> None:
    demos = [Example(id=str(i), inputs={"q": f"question {i}"}, output=f"answer {i}", score=1.0)
             for i in range(12)]
    demos[0] = Example(id="0", inputs={"q": "x"}, output="y" * (MAX_TEXT + 50), score=1.0)
    shown, total = demonstrations(build_prompt("Answer {q}.", demos), limit=10)
    assert (len(shown), total) == (10, 12)
    assert [d.number for d in shown] == list(range(1, 11))
    assert shown[1].inputs == '{"q": "question 1"}' and shown[1].output == "answer 1"
    assert len(shown[0].output) == MAX_TEXT and shown[0].output.endswith("…")
    assert demonstrations("Answer {q}.") == ([], 0)
