"""Agreement of an evaluator with people, by hand on a fixed set, and ``kaizen evaluators``.

The fixed set: 60 traces a regex check judges (an upper-case output passes) and people score.
Both pass 30, the judge passes a human fail 6, the judge fails a human pass 9, both fail 15:
accuracy (30 + 15) / 60 = 0.75; human passes 39/60 = 0.65, judge passes 36/60 = 0.6; chance
agreement 0.65 x 0.6 + 0.35 x 0.4 = 0.53; Cohen's kappa (0.75 - 0.53) / (1 - 0.53) = 0.468085.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from polling import poll

from kaizen_sdk.cli import main
from kaizen_server import LocalServer
from kaizen_server.domain import evaluators as rules

KAPPA = round(0.22 / 0.47, 6)


def test_agreement_by_hand_on_a_fixed_set() -> None:
    pairs = ([(1.0, 1.0)] * 30 + [(1.0, 0.0)] * 6 + [(0.0, 1.0)] * 9 + [(0.0, 0.0)] * 15)
    got = rules.agreement(pairs, 0.5)
    assert got == {"pairs": 60, "min_pairs": 50, "threshold": 0.5, "accuracy": 0.75,
                   "kappa": KAPPA, "confusion": [[15, 6], [9, 30]]}
    assert rules.agreement(pairs[:49], 0.5) == {"pairs": 49, "min_pairs": 50,
                                                 "threshold": 0.5}
    # the threshold decides what passes: at 0.7 a 0.6 is a fail
    assert rules.agreement([(0.6, 0.6)] * 50, 0.7)["confusion"] == [[50, 0], [0, 0]]
    assert rules.agreement([(0.6, 0.6)] * 50, 0.7)["kappa"] == 1.0



def _poll(what: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    return poll(what, done, timeout, step=0.02)


def _kaizen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_kaizen_evaluators_reports_agreement_and_gates_on_kappa(
    local_server: LocalServer, client: httpx.Client, task_name: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    assert client.post("/api/v1/tasks", json={"name": task_name,
                                              "feedback_threshold": 100_000}).status_code == 201
    code, out, err = _kaizen(capsys, "evaluators", "add", task_name, "caps", "--kind", "regex",
                             "--pattern", "^[A-Z]", "--min-kappa", "0.5")
    assert code == 0, err
    assert "caps" in out and "regex" in out
    # judge pass / human pass counts of the fixed set (module docstring)
    plan = [("ABC", 1.0)] * 30 + [("ABC", 0.0)] * 6 + [("abc", 1.0)] * 9 + [("abc", 0.0)] * 15
    ids = [str(uuid.uuid4()) for _ in plan]
    traces = [{"id": t, "task_id": task_name, "response_text": text}
              for t, (text, _) in zip(ids, plan, strict=True)]
    assert client.post("/api/v1/ingest", json={"traces": traces}).status_code == 207
    for t, (_, human) in zip(ids, plan, strict=True):
        assert client.post(f"/api/v1/traces/{t}/score",
                           json={"score": human, "scored_by": "person"}).status_code == 200
    shown = _poll(lambda: client.get(f"/api/v1/tasks/{task_name}/evaluators/caps").json(),
                  lambda e: e["agreement"]["pairs"] >= 60)
    assert shown["agreement"] == {"pairs": 60, "min_pairs": 50, "threshold": 0.5,
                                  "accuracy": 0.75, "kappa": KAPPA,
                                  "confusion": [[15, 6], [9, 30]]}
    assert shown["status"] == "below_agreement"  # 0.468 < 0.5: it reports, feeds nothing
    code, out, err = _kaizen(capsys, "evaluators", "show", task_name, "caps")
    assert code == 0, err
    assert "accuracy 0.750, Cohen's kappa 0.468" in out
    assert "human pass" in out and "below_agreement" in out
    code, out, err = _kaizen(capsys, "evaluators", "update", task_name, "caps",
                             "--min-kappa", "0.4", "--json")
    assert code == 0, err
    assert '"status": "active"' in out
    code, out, err = _kaizen(capsys, "evaluators", "list", task_name)
    assert code == 0, err
    assert "caps" in out and "0.468" in out
    code, out, err = _kaizen(capsys, "evaluators", "update", task_name, "caps",
                             "--pattern", "(")
    assert code != 0 and "pattern" in err
    code, out, err = _kaizen(capsys, "evaluators", "remove", task_name, "caps")
    assert code == 0, err
    assert "Removed evaluator caps" in out
    code, out, err = _kaizen(capsys, "evaluators", "list", task_name)
    assert (code, out.strip()) == (0, "No evaluators.")
