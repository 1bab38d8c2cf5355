"""The ``kaizen`` command line, end to end against the local CT server.

Commands run in-process through ``main(argv)`` with stdout/stderr captured, plus a few real
``python -m kaizen_sdk.cli`` subprocesses. Every test names its own tasks, so they share the
session server with the rest of the suite.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from kaizen_sdk.cli import _Progress, build_parser, format_fields, format_table, main
from kaizen_sdk.models import Job
from kaizen_server import LocalServer

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return msgspec.json.decode(self.out)

    def assert_one_line_error(self) -> str:
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("kaizen"), self.err
        assert "Traceback" not in self.err
        return lines[0]


Kaizen = Callable[..., Run]


def _main(*argv: str) -> int:
    """``main(argv)`` as the console script ends: argparse's SystemExit becomes the status."""
    try:
        return main(list(argv))
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


def _use(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", server.base_url)


@pytest.fixture
def kaizen(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Kaizen:
    """Run ``kaizen ARGV...`` in-process against the session's local server."""
    _use(local_server, monkeypatch)

    def run(*argv: str) -> Run:
        code = _main(*argv)
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


@pytest.fixture(scope="module")
def slow_server() -> Iterator[LocalServer]:
    """A server whose jobs pause after each progress step, so RUNNING can be watched."""
    with LocalServer(job_step_delay=0.25) as server:
        yield server


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _post_trace(server: LocalServer, task: str, prompt: str, response: str) -> str:
    """Store a trace over real HTTP (as the decorator would, on its default_prompt: a new
    task takes it as version 1) and return its id."""
    resp = httpx.post(
        f"{server.base_url}/api/v1/traces",
        headers={"X-API-Key": server.api_key},
        json={
            "task_id": task, "prompt_text": prompt, "response_text": response,
            "model": "fake-model", "tokens": 12, "latency_ms": 3.5, "prompt_is_default": True,
        },
    )
    assert resp.status_code == 201, resp.text
    trace_id: str = resp.json()["id"]
    return trace_id


def _log_scored_feedback(kaizen: Kaizen, task: str, n: int) -> None:
    for i in range(n):
        run = kaizen(
            "feedback", "log", task, "--score", f"{0.5 + i / 20:.2f}",
            "--input", f"ticket=ticket {i}", "--output", f"summary {i}",
        )
        assert run.code == 0, run.err


# --- tasks -----------------------------------------------------------------------------------


def test_tasks_create_get_list(kaizen: Kaizen) -> None:
    name = _name("cli_tasks")
    run = kaizen(
        "tasks", "create", name, "--description", "One-line summaries",
        "--feedback-threshold", "7", "--teacher-model", "gpt-4o",
        "--schema-json", '{"type": "object"}', "--json",
    )
    assert run.code == 0, run.err
    created = run.json()
    assert (created["name"], created["description"]) == (name, "One-line summaries")
    assert (created["feedback_threshold"], created["teacher_model"]) == (7, "gpt-4o")
    assert created["schema_json"] == {"type": "object"}
    assert created["feedback_count"] == 0
    assert run.err == ""

    run = kaizen("tasks", "get", name, "--json")
    assert run.code == 0
    assert run.json()["id"] == created["id"]

    run = kaizen("--json", "tasks", "get", created["id"])  # --json before the command, by id
    assert run.code == 0
    assert run.json()["name"] == name

    run = kaizen("tasks", "list", "--json")
    assert run.code == 0
    mine = [t for t in run.json() if t["name"] == name]
    assert [t["id"] for t in mine] == [created["id"]]

    run = kaizen("tasks", "list")
    assert run.code == 0
    header, *rows = run.out.splitlines()
    assert header.split()[:2] == ["NAME", "FEEDBACK"]
    row = next(r for r in rows if r.startswith(name + " "))
    assert row.index(created["id"]) == header.index(" ID") + 1  # columns are aligned
    assert "0/7" in row

    run = kaizen("tasks", "get", name)
    assert run.code == 0
    fields = dict(line.split(None, 1) for line in run.out.splitlines())
    assert fields["name"] == name
    assert fields["feedback_threshold"] == "7"
    assert fields["judge_model"] == "-"


def test_tasks_create_duplicate_fails_with_status_1(kaizen: Kaizen) -> None:
    name = _name("cli_dup")
    assert kaizen("tasks", "create", name).code == 0
    run = kaizen("tasks", "create", name)
    assert run.code == 1
    assert run.out == ""
    assert "409" in run.assert_one_line_error()


def test_not_found_exits_4(kaizen: Kaizen) -> None:
    for argv in (
        ("tasks", "get", _name("missing")),
        ("prompts", "get", _name("missing")),
        ("jobs", "get", str(uuid.uuid4())),
        ("traces", "get", str(uuid.uuid4())),
        ("traces", "score", str(uuid.uuid4()), "0.5"),
    ):
        run = kaizen(*argv)
        assert run.code == 4, (argv, run.err)
        assert run.out == ""
        assert "404" in run.assert_one_line_error()


# --- auth, connection and usage --------------------------------------------------------------


def test_wrong_key_exits_3_and_the_key_is_never_printed(kaizen: Kaizen) -> None:
    secret = "sk-wrong-" + uuid.uuid4().hex
    run = kaizen("tasks", "list", "--api-key", secret)
    assert run.code == 3
    line = run.assert_one_line_error()
    assert "401" in line
    assert secret not in run.out + run.err

    run = kaizen("--api-key", secret, "traces", "list")  # before the subcommand too
    assert run.code == 3
    assert secret not in run.out + run.err


def test_the_real_key_is_never_printed(kaizen: Kaizen, local_server: LocalServer) -> None:
    name = _name("cli_secret")
    runs = [
        kaizen("tasks", "create", name),
        kaizen("tasks", "get", name, "--json"),
        kaizen("tasks", "list"),
        kaizen("feedback", "log", name, "--score", "0.5", "--output", "fine"),
        kaizen("prompts", "get", name),  # 404: no prompt yet
        kaizen("--api-key", local_server.api_key, "traces", "get", str(uuid.uuid4())),
    ]
    assert [r.code for r in runs] == [0, 0, 0, 0, 4, 4]
    for run in runs:
        assert local_server.api_key not in run.out + run.err


def test_missing_key_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIZEN_BASE_URL", "http://127.0.0.1:9")
    assert main(["tasks", "list"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "kaizen: error: no API key: pass --api-key or set the KAIZEN_API_KEY environment "
        "variable\n"
    )


def test_unreachable_server_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KAIZEN_MAX_RETRIES", "0")
    code = main(["tasks", "list", "--api-key", "some-key", "--base-url", f"http://127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("kaizen: error: ")
    assert f"http://127.0.0.1:{port}" in err
    assert "kaizen serve" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense"],
        ["prompts"],
        ["rollout"],
        ["tasks", "create"],
        ["tasks", "create", "x", "--feedback-threshold", "0"],
        ["tasks", "create", "x", "--schema-json", "{not json"],
        ["feedback", "log", "t", "--score", "1.5"],
        ["feedback", "log", "t", "--score", "high"],
        ["feedback", "log", "t", "--input", "no-equals-sign"],
        ["feedback", "log", "t", "--inputs", "[1, 2]"],
        ["traces", "score", "some-id"],
        ["traces", "score", "some-id", "-0.1"],
        ["optimize", "t", "--wait", "--timeout", "0"],
        ["jobs", "watch"],
        ["--no-such-option", "tasks", "list"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.match(r"^kaizen[\w ]*: error: .+ \(see kaizen[\w ]* --help\)$", lines[0]), err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: kaizen")


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    from kaizen_sdk import __version__

    assert _main("--version") == 0
    assert capsys.readouterr().out == f"kaizen {__version__}\n"
    assert _main("--help") == 0
    out = capsys.readouterr().out
    for command in ("status", "serve", "tasks", "prompts", "feedback", "optimize", "jobs",
                    "traces", "rollout", "completion"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


# --- prompts, feedback, optimize, jobs -------------------------------------------------------


def test_prompts_feedback_optimize_activate(kaizen: Kaizen, local_server: LocalServer) -> None:
    task = _name("cli_loop")
    _post_trace(local_server, task, "Summarize: {{ ticket }}", "ok")

    run = kaizen("prompts", "get", task, "--json")
    assert run.code == 0, run.err
    v1 = run.json()
    assert (v1["version_number"], v1["status"], v1["prompt_text"]) == (
        1, "active", "Summarize: {{ ticket }}"
    )
    run = kaizen("prompts", "get", task, "--text")
    assert (run.code, run.out) == (0, "Summarize: {{ ticket }}\n")
    run = kaizen("prompts", "get", task)
    assert run.code == 0
    assert run.out.endswith("\n\nSummarize: {{ ticket }}\n")
    assert re.search(r"^version_number\s+1$", run.out, re.M)

    _log_scored_feedback(kaizen, task, 6)
    run = kaizen("feedback", "list", "--task", task, "--json")
    assert run.code == 0
    assert len(run.json()) == 6
    assert {f["source"] for f in run.json()} == {"cli"}

    run = kaizen("optimize", task, "--json")
    assert run.code == 0, run.err
    started = run.json()
    assert started["job"]["status"] in ("PENDING", "RUNNING", "SUCCESS")
    assert started["cost_estimate"]["estimated_cost_usd"] == 0.0
    assert started["cost_estimate"]["train_size"] + started["cost_estimate"]["val_size"] == 6
    job_id = started["job"]["id"]

    run = kaizen("jobs", "watch", job_id, "--poll-interval", "0.02", "--json")
    assert run.code == 0, run.err
    done = run.json()
    assert (done["id"], done["status"]) == (job_id, "SUCCESS")
    assert f"job {job_id}  SUCCESS" in run.err  # the progress line ends on the final status
    version_id = done["prompt_version_id"]

    run = kaizen("jobs", "get", job_id, "--json")
    assert run.code == 0
    assert run.json()["status"] == "SUCCESS"
    run = kaizen("jobs", "list", "--task", task, "--json")
    assert [j["id"] for j in run.json()] == [job_id]
    run = kaizen("jobs", "list", "--task", task)
    header, row = run.out.splitlines()
    assert header.split()[:2] == ["ID", "STATUS"]
    assert row.split()[:2] == [job_id, "SUCCESS"]

    run = kaizen("prompts", "versions", task, "--json")
    assert [(p["version_number"], p["status"]) for p in run.json()] == [
        (2, "candidate"), (1, "active")
    ]
    assert run.json()[0]["id"] == version_id
    run = kaizen("prompts", "versions", task)
    lines = run.out.splitlines()
    assert lines[0].split()[:2] == ["VERSION", "STATUS"]
    assert [ln.split()[:2] for ln in lines[1:]] == [["2", "candidate"], ["1", "active"]]

    run = kaizen("prompts", "activate", task, "v2", "--json")  # by number
    assert run.code == 0, run.err
    assert (run.json()["id"], run.json()["status"]) == (version_id, "active")
    run = kaizen("prompts", "activate", task, v1["id"])  # by id, as a table
    assert run.code == 0
    assert re.search(r"^version_number\s+1$", run.out, re.M)
    run = kaizen("prompts", "activate", task, "9")
    assert run.code == 4
    assert run.assert_one_line_error() == (
        f"kaizen: error: task {task!r} has no prompt version 9"
    )


def test_feedback_log_inputs_metadata_and_table(kaizen: Kaizen) -> None:
    task = _name("cli_feedback")
    run = kaizen(
        "feedback", "log", task, "--score", "0.8", "--inputs", '{"ticket": "a", "lang": "en"}',
        "--input", "ticket=b", "--input", "extra=x=y", "--output", "short",
        "--source", "human-review", "--metadata", '{"reviewer": "ana"}', "--json",
    )
    assert run.code == 0, run.err
    entry = run.json()
    assert entry["inputs"] == {"ticket": "b", "lang": "en", "extra": "x=y"}
    assert (entry["score"], entry["source"], entry["output"]) == (0.8, "human-review", "short")
    assert entry["metadata"] == {"reviewer": "ana"}

    run = kaizen("feedback", "log", task, "--output", "unscored")
    assert run.code == 0
    fields = dict(line.split(None, 1) for line in run.out.splitlines())
    assert (fields["score"], fields["source"], fields["output"]) == ("-", "cli", "unscored")

    run = kaizen("feedback", "list", "--task", task, "--limit", "1", "--json")
    assert [f["output"] for f in run.json()] == ["unscored"]
    run = kaizen("tasks", "get", task, "--json")
    assert run.json()["feedback_count"] == 2


def test_optimize_wait_shows_progress_and_ends_on_final_status(
    slow_server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(slow_server, monkeypatch)
    task = _name("summarize_ticket")
    _post_trace(slow_server, task, "Summarize: {{ ticket }}", "ok")
    for i in range(4):
        assert main(["feedback", "log", task, "--score", "0.9", "--output", f"s{i}"]) == 0
    capsys.readouterr()

    code = main(["optimize", task, "--wait", "--poll-interval", "0.02"])
    out, err = capsys.readouterr()
    assert code == 0, err
    progress = err.splitlines()
    job_id = re.match(r"^job (\S+)  PENDING", progress[0])
    assert job_id is not None, err
    assert any(re.match(rf"^job {job_id[1]}  RUNNING  \w+", p) for p in progress), err
    assert re.match(rf"^job {job_id[1]}  SUCCESS  done  \[ *\d+\.\ds\]$", progress[-1]), err
    # A short report of the final job, not every field: its id and status, then the time.
    assert re.search(rf"^job +{job_id[1]} SUCCESS \(manual\)$", out, re.M), out
    assert re.search(r"^time +\d", out, re.M), out
    assert "job_metadata" not in out
    versions = httpx.get(
        f"{slow_server.base_url}/api/v1/prompts/{task}/versions",
        headers={"X-API-Key": slow_server.api_key},
    ).json()
    assert [(v["version_number"], v["status"]) for v in versions] == [
        (2, "candidate"), (1, "active")
    ]
    assert out.splitlines()[-1] == (  # the number and the next step, not the version's UUID
        f"job {job_id[1]} SUCCESS: candidate v2 — run `kaizen prompts activate {task} 2`, "
        f"or start a rollout with `kaizen rollout start {task} 2`"
    )

    code = main(["optimize", task, "--wait", "--poll-interval", "0.02", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = msgspec.json.decode(out)
    assert result["job"]["status"] == "SUCCESS"
    assert result["cost_estimate"]["train_size"] + result["cost_estimate"]["val_size"] == 4
    assert err.splitlines()[-1].startswith(f"job {result['job']['id']}  SUCCESS")


def test_watch_running_out_of_time_exits_1(
    slow_server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _use(slow_server, monkeypatch)
    task = _name("cli_slow")
    assert main(["feedback", "log", task, "--score", "0.9", "--output", "s"]) == 0
    capsys.readouterr()
    assert main(["optimize", task, "--json"]) == 0
    job_id = msgspec.json.decode(capsys.readouterr().out)["job"]["id"]
    # Each of the job's steps pauses 0.25 s, so it cannot end within 0.05 s.
    code = main(["jobs", "watch", job_id, "--timeout", "0.05", "--poll-interval", "0.01"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.splitlines()[0].startswith(f"job {job_id}  ")
    assert re.match(
        rf"^kaizen: error: Job {job_id} did not finish within 0.05 s", err.splitlines()[-1]
    ), err


def test_optimize_wait_on_a_failing_job_exits_1(kaizen: Kaizen) -> None:
    task = _name("cli_nofeedback")
    assert kaizen("tasks", "create", task).code == 0
    run = kaizen("optimize", task, "--wait", "--poll-interval", "0.02")
    assert run.code == 1
    last_out = run.out.splitlines()[-1]
    assert re.match(r"^job \S+ FAILURE: .*scored feedback", last_out), run.out
    assert run.err.splitlines()[-1] == f"kaizen: error: {last_out}"
    assert "Traceback" not in run.err


def test_progress_line_is_rewritten_in_place_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    progress = _Progress(stream, tick=3600)  # no ticking here: only changes are drawn
    job_id = uuid.uuid4()
    progress(Job(id=job_id, status="PENDING"))
    progress(Job(id=job_id, status="PENDING"))  # no change: nothing written
    progress(Job(id=job_id, status="RUNNING", progress_step="evaluating"))
    progress.end()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 2
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert f"\r\x1b[Kjob {job_id}  RUNNING  evaluating  [" in text


# --- traces ----------------------------------------------------------------------------------


def test_traces_list_get_score(kaizen: Kaizen, local_server: LocalServer) -> None:
    task = _name("cli_traces")
    first = _post_trace(local_server, task, "P {{ x }}", "first response")
    second = _post_trace(local_server, task, "P {{ x }}", "second response")

    run = kaizen("traces", "list", "--task", task, "--json")
    assert run.code == 0, run.err
    assert [t["id"] for t in run.json()] == [second, first]  # newest first
    run = kaizen("traces", "list", "--task", task, "--limit", "1", "--json")
    assert [t["id"] for t in run.json()] == [second]
    run = kaizen("traces", "list", "--task", task)
    header, *rows = run.out.splitlines()
    assert header.split()[:3] == ["ID", "MODEL", "TOKENS"]
    assert [r.split()[:3] for r in rows] == [
        [second, "fake-model", "12"], [first, "fake-model", "12"]
    ]

    run = kaizen("traces", "get", first, "--json")
    assert run.code == 0
    assert (run.json()["response_text"], run.json()["score"]) == ("first response", None)

    run = kaizen("traces", "score", first, "0.75", "--scored-by", "reviewer", "--json")
    assert run.code == 0, run.err
    assert (run.json()["id"], run.json()["score"], run.json()["scored_by"]) == (
        first, 0.75, "reviewer"
    )
    run = kaizen("traces", "get", first)
    fields = dict(line.split(None, 1) for line in run.out.splitlines())
    assert (fields["score"], fields["scored_by"]) == ("0.75", "reviewer")


def test_empty_lists_say_so(kaizen: Kaizen) -> None:
    task = _name("cli_empty")
    assert kaizen("tasks", "create", task).code == 0
    assert kaizen("traces", "list", "--task", task).out == "No traces.\n"
    assert kaizen("jobs", "list", "--task", task).out == "No jobs.\n"
    assert kaizen("feedback", "list", "--task", task).out == "No feedback.\n"
    assert kaizen("traces", "list", "--task", task, "--json").out == "[]\n"


# --- as a real process -----------------------------------------------------------------------


def _subprocess(server: LocalServer | None, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    if server is not None:
        env.update(KAIZEN_API_KEY=server.api_key, KAIZEN_BASE_URL=server.base_url)
    return subprocess.run(
        [sys.executable, "-m", "kaizen_sdk.cli", *argv],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )


def test_python_m_kaizen_sdk_cli(local_server: LocalServer) -> None:
    task = _name("cli_process")
    proc = _subprocess(local_server, "tasks", "create", task, "--json")
    assert proc.returncode == 0, proc.stderr
    assert msgspec.json.decode(proc.stdout)["name"] == task

    proc = _subprocess(local_server, "tasks", "get", _name("missing"))
    assert proc.returncode == 4
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith("kaizen: error: ")

    proc = _subprocess(None, "tasks", "list", "--base-url", local_server.base_url)
    assert proc.returncode == 3
    assert proc.stderr.startswith("kaizen: error: no API key")

    proc = _subprocess(local_server, "feedback", "log", task, "--score", "2")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1


def test_importing_the_cli_stays_light() -> None:
    code = (
        "import sys, kaizen_sdk.cli as c; c.build_parser(); "
        "print(sorted(m for m in ('httpx', 'opentelemetry', 'openai', 'litellm', "
        "'uvicorn', 'kaizen_server.http.server', 'kaizen_sdk.client') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "[]\n"


# --- formatting and the documentation --------------------------------------------------------


def test_format_table_aligns_and_right_aligns_numbers() -> None:
    text = format_table(
        ["name", "count", "note"],
        [["alpha", 3, None], ["b", 12.5, "line one\nline two"], ["c", None, "x" * 80]],
        max_width=20,
    )
    assert text.splitlines() == [
        "NAME   COUNT  NOTE",
        "alpha      3  -",
        "b       12.5  line one line two",
        "c          -  " + "x" * 19 + "…",
    ]
    assert format_fields([("id", 1), ("description", None)]) == "id           1\ndescription  -"


def _cli_doc_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("|")[0]
            if not line.strip().startswith("kaizen ") or "--help" in line:
                continue
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


def test_every_command_in_the_cli_docs_parses() -> None:
    commands = _cli_doc_commands()
    assert len(commands) >= 20
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)
        assert callable(args.command), argv
