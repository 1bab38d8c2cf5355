"""A task the decorator created gets its teacher and judge from ``kaizen tasks update``.

Before the update the dspy job fails and its error names the command that fixes it; after it,
the next job succeeds. The LLM is the loopback stand-in of `llm_standin`.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

# DSPy opens its disk cache at import: keep it out of the home directory.
os.environ.setdefault("DSPY_CACHEDIR", os.path.join(tempfile.gettempdir(), "kaizen-dspy-cache"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# found, not imported: importing it costs every worker that collects this file 0.4 s
if importlib.util.find_spec("dspy") is None:
    pytest.skip("the optimize extra (DSPy) is not installed", allow_module_level=True)

from llm_standin import LLMStandIn, shout
from optimize_helpers import WORDS, make_task, run

import kaizen_sdk as ct
from kaizen_sdk import cli
from kaizen_server import LocalServer


@pytest.fixture
def standin() -> Iterator[LLMStandIn]:
    with LLMStandIn() as s:
        yield s


@pytest.fixture
def server(standin: LLMStandIn) -> Iterator[LocalServer]:
    with LocalServer(optimizer="dspy", llm_base_url=standin.base_url,
                     llm_api_key="sk-standin") as srv:
        yield srv


def test_cli_update_gives_a_decorated_task_its_teacher_and_the_next_job_succeeds(
    server: LocalServer, standin: LLMStandIn, capsys: pytest.CaptureFixture[str],
) -> None:
    with ct.CTClient(api_key=server.api_key, base_url=server.base_url) as client:

        @client.task("decorated-shout", default_prompt="Repeat the text.\nText: {{ text }}")
        def answer(text: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return shout(text) if len(text) % 2 == 0 else text.lower()

        for i in range(16):
            text = f"{WORDS[i % len(WORDS)]}{i}"
            output, call = answer.call(text)
            call.score(0.9 if output == shout(text) else 0.1)
        assert client.flush(timeout=30) is True
        task = client.get_task("decorated-shout")
        assert (task.teacher_model, task.judge_model, task.feedback_count) == (None, None, 16)

    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                      timeout=10) as http:
        _, failed = run(http, "decorated-shout")
        assert failed["status"] == "FAILURE"
        assert failed["error_message"] == (
            "task 'decorated-shout' has no teacher_model: set one with `kaizen tasks update"
            " decorated-shout --teacher-model MODEL` to use the dspy optimizer")
        assert standin.requests == []

        status = cli.main([
            "tasks", "update", "decorated-shout", "--teacher-model", "teacher-standin",
            "--judge-model", "judge-standin", "--task-model", "student-standin",
            "--base-url", server.base_url, "--api-key", server.api_key,
        ])
        assert status == 0
        capsys.readouterr()

        _, job = run(http, "decorated-shout")

    assert job["status"] == "SUCCESS", job["error_message"]
    meta = job["job_metadata"]
    assert (meta["teacher_model"], meta["judge_model"], meta["task_model"]) == (
        "teacher-standin", "judge-standin", "student-standin")
    assert {"teacher-standin", "judge-standin", "student-standin"} == set(standin.models())
    assert meta["candidate_judged_mean"] == 1.0  # the candidate shows demonstrations


def test_a_setting_stored_before_the_checks_fails_the_job_naming_the_command(
    standin: LLMStandIn, tmp_path: Path,
) -> None:
    # Servers before PATCH stored evaluator_config unchecked; such a task still fails clearly.
    db = tmp_path / "kaizen.db"
    with LocalServer(db_path=db, optimizer="dspy", llm_base_url=standin.base_url) as srv, \
            httpx.Client(base_url=srv.base_url, headers={"X-API-Key": srv.api_key},
                         timeout=10) as http:
        make_task(http, "old-config", 12)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE tasks SET evaluator_config = ? WHERE name = 'old-config'",
                         ('{"task_model": "student-standin", "optimizer": "magic"}',))
        conn.close()

        _, job = run(http, "old-config")

        assert job["status"] == "FAILURE"
        assert job["error_message"] == (
            "evaluator_config['optimizer'] is 'magic'; use one of auto, bootstrap, mipro, gepa;"
            " change it with `kaizen tasks update old-config --evaluator-config"
            " '{\"optimizer\": \"auto\"}'`")
        fixed = http.patch("/api/v1/tasks/old-config",
                           json={"evaluator_config": {"optimizer": "bootstrap"}})
        assert fixed.status_code == 200, fixed.text
        _, job = run(http, "old-config")
        assert job["status"] == "SUCCESS", job["error_message"]


def test_kaizen_eval_takes_its_endpoint_from_flags_and_names_them_in_errors(
    server: LocalServer, standin: LLMStandIn, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                      timeout=10) as http:
        make_task(http, "eval-flags", 16)
        _, job = run(http, "eval-flags")
        assert job["status"] == "SUCCESS", job["error_message"]
        resp = http.post("/api/v1/prompts/eval-flags/activate",
                         json={"version_id": job["prompt_version_id"]})
        assert resp.status_code == 200, resp.text
    base = ["--base-url", server.base_url, "--api-key", server.api_key]

    def kaizen(*argv: str) -> tuple[int, str]:
        status = cli.main(["eval", "eval-flags", "v1", *argv, *base])
        return status, capsys.readouterr().err

    status, err = kaizen()  # no endpoint anywhere: the flag and the variable are named
    assert status == 2
    assert "--llm-base-url" in err and "KAIZEN_LLM_BASE_URL" in err
    assert "LocalServer" not in err and "llm_base_url=" not in err

    status, err = kaizen("--llm-base-url", standin.base_url, "--llm-api-key-env", "sk-pasted-1")
    assert status == 2 and "name of an environment variable" in err
    assert "sk-pasted-1" not in err  # a key given by mistake is never echoed
    status, err = kaizen("--llm-base-url", standin.base_url, "--llm-api-key-env", "MY_LLM_KEY")
    assert status == 2 and "MY_LLM_KEY is not set" in err

    monkeypatch.setenv("MY_LLM_KEY", "sk-eval-secret-77")
    standin.fail_next(401)
    status, err = kaizen("--llm-base-url", standin.base_url, "--llm-api-key-env", "MY_LLM_KEY")
    assert status == 1
    assert "HTTP 401" in err and "$MY_LLM_KEY (--llm-api-key-env)" in err
    assert "LocalServer" not in err and "llm_api_key=" not in err
    assert "sk-eval-secret-77" not in err

    status, err = kaizen("--llm-base-url", standin.base_url, "--budget", "0")
    assert status == 1 and "stopped at its budget" in err and "--budget" in err

    calls = len(standin.requests)
    monkeypatch.setenv("KAIZEN_LLM_BASE_URL", standin.base_url)
    status, _ = kaizen("--llm-api-key-env", "MY_LLM_KEY", "--json")
    assert status == 0
    assert [auth for _, _, auth in standin.requests[calls:]] == (
        ["Bearer sk-eval-secret-77"] * 16)  # 4 held-out samples x (2 answers + 2 judgements)

    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": server.api_key},
                      timeout=10) as http:
        assert http.patch("/api/v1/tasks/eval-flags", json={"judge_model": None}).status_code == 200
    status, err = kaizen()
    assert status == 2
    assert "`kaizen tasks update eval-flags --judge-model MODEL`" in err
