"""Per-example wins and losses of a judged (DSPy) job: stored bounded in the job metadata by
`kaizen_server.evaluate.judge.Comparison`, and shown on the job page, escaped."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import httpx
import pytest
from ui_support import HOSTILE

from kaizen_server import LocalServer
from kaizen_server.evaluate.judge import EXAMPLE_INPUT_CHARS, EXAMPLES_PER_SIDE, Comparison

LOCAL_TESTS = str(Path(__file__).resolve().parents[1] / "local")


def _comparison(cand: list[float], act: list[float], inputs: list[str]) -> Comparison:
    return Comparison(n=len(cand), candidate_mean=0.0, active_mean=0.0, diff=0.0, ci_low=None,
                      ci_high=None, candidate_scores=tuple(cand), active_scores=tuple(act),
                      inputs=tuple(inputs))


def test_examples_are_the_largest_wins_then_the_largest_losses_bounded() -> None:
    diffs = [0.1, -0.2, 0.0, 0.5, -0.6, 0.3, 0.2, 0.4, 0.6, 0.7, -0.1, -0.3, -0.4, -0.5, -0.7,
             0.05]
    act = [0.2] * len(diffs)
    cand = [a + d for a, d in zip(act, diffs, strict=True)]
    comp = _comparison(cand, act, [f"in{i}" + "x" * 500 for i in range(len(diffs))])
    figures = comp.as_dict()
    assert (figures["wins"], figures["losses"], figures["ties"]) == (8, 7, 1)
    rows = figures["examples"]
    order = [int(re.match(r"in(\d+)", r["input"]).group(1)) for r in rows]  # type: ignore[union-attr]
    assert EXAMPLES_PER_SIDE == 5
    assert order == [9, 8, 3, 7, 5, 14, 4, 13, 12, 11]
    assert all(len(r["input"]) == EXAMPLE_INPUT_CHARS and r["input"].endswith("…")
               for r in rows)
    assert rows[0] == {"input": rows[0]["input"], "candidate_score": 0.9, "active_score": 0.2}
    assert _comparison([0.5, 0.5], [0.5, 0.5], ["a", "b"]).as_dict()["examples"] == []


@pytest.mark.e2e
def test_a_dspy_jobs_page_shows_its_wins_and_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("dspy", reason="the optimize extra (DSPy) is not installed")
    monkeypatch.syspath_prepend(LOCAL_TESTS)
    from llm_standin import LLMStandIn
    from optimize_helpers import make_task, run

    with LLMStandIn() as standin, LocalServer(
        optimizer="dspy", llm_base_url=standin.base_url, llm_api_key="sk-standin-ui3",
    ) as srv, httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key},
                           timeout=10) as api:
        make_task(api, "shout", 20)
        _, job = run(api, "shout")
        assert job["status"] == "SUCCESS", job["error_message"]
        meta = job["job_metadata"]
        with httpx.Client(base_url=srv.base_url, timeout=10) as ui:
            resp = ui.post("/ui/signin", data={"key": srv.api_key, "next": "/ui/tasks"})
            assert resp.status_code == 303
            html = ui.get(f"/ui/jobs/{job['id']}").text
    # The stand-in's judge gives 1 to right answers only; the candidate (with demonstrations)
    # is always right, the active prompt only on texts of even length: so the candidate wins
    # exactly on the held-out texts of odd length and ties on the others.
    assert meta["sample_size"] == 5
    assert (meta["wins"], meta["losses"], meta["ties"]) == (2, 0, 3)
    assert len(meta["examples"]) == 2
    texts = [json.loads(e["input"])["text"] for e in meta["examples"]]
    assert all(len(t) % 2 == 1 for t in texts), texts
    assert all((e["candidate_score"], e["active_score"]) == (1.0, 0.0)
               for e in meta["examples"])
    assert re.search(r"won on <strong>2</strong>, lost on <strong>0</strong> and tied on "
                     r"<strong>3</strong>", html)
    table = re.search(r'<table id="examples">.*?</table>', html, re.S)
    assert table is not None and table.group(0).count("<td>win</td>") == 2
    for e in meta["examples"]:
        assert e["input"].replace('"', "&#34;") in table.group(0)
    assert 'id="no-per-example"' not in html
    for e in meta["examples"]:
        assert e["input"].replace('"', "&#34;") in table.group(0)


def test_stored_examples_are_escaped_on_the_job_page(tmp_path: Path) -> None:
    from kaizen_sdk.models import TaskCreateRequest
    from kaizen_server.storage.sqlite import Store

    db = tmp_path / "ex.db"
    store = Store(str(db))
    try:
        store.create_task(TaskCreateRequest(name="esc"))
        job, _ = store.start_job("esc")
        assert store.claim_job(str(job.id), "test-owner")
        store.finish_job_success(str(job.id), "Base prompt", eval_score=0.5, optimizer="dspy",
                                 metadata=_comparison([0.9, 0.1, 0.5], [0.2, 0.4, 0.5],
                                                      [HOSTILE, "calm", "same"]).as_dict())
    finally:
        store.close()
    with LocalServer(db_path=db) as srv, httpx.Client(base_url=srv.base_url, timeout=10) as ui:
        ui.post("/ui/signin", data={"key": srv.api_key, "next": "/ui/tasks"})
        html = ui.get(f"/ui/jobs/{job.id}").text
    assert re.search(r"won on <strong>1</strong>, lost on <strong>1</strong> and tied on "
                     r"<strong>1</strong>", html)
    assert "&lt;script&gt;alert(" in html and "<script>alert(" not in html
    assert "<img src=x" not in html
    rows = re.findall(r"<td>(win|loss|tie)</td>", html)
    assert rows == ["win", "loss"]
