"""What makes the ``kaizen`` command pleasant: tables that fit the terminal, a ticking progress
line, human names in the final line, groups that list on their own, ``kaizen status`` and
shell completion. Against the session's local server, in-process through ``main(argv)``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from kaizen_sdk.cli import (
    _bash_completion,
    _completion_tree,
    _final_line,
    _Progress,
    build_parser,
    format_table,
    main,
)
from kaizen_sdk.models import Job
from kaizen_server import LocalServer

pytestmark = pytest.mark.e2e


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
        assert lines[0].startswith("kaizen") and "Traceback" not in self.err
        return lines[0]


Kaizen = Callable[..., Run]


@pytest.fixture
def kaizen(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Kaizen:
    """Run ``kaizen ARGV...`` in-process against the session's local server."""
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)

    def run(*argv: str) -> Run:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # usage errors, as the console script ends
            assert isinstance(exc.code, int)
            code = exc.code
        out, err = capsys.readouterr()
        return Run(code, out, err)

    return run


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _post_trace(server: LocalServer, task: str, response: str) -> None:
    """Store a trace over real HTTP, as the decorator would."""
    resp = httpx.post(
        f"{server.base_url}/api/v1/traces", headers={"X-API-Key": server.api_key},
        json={"task_id": task, "prompt_text": "Summarize: {{ ticket }}",
              "response_text": response, "model": "gpt-4o-mini-2024-07-18", "tokens": 1234,
              "latency_ms": 1234.5},
    )
    assert resp.status_code == 201, resp.text


class _Tty(io.StringIO):
    """A stream that says it is a terminal; writes may come from the ticker thread."""

    def isatty(self) -> bool:
        return True


# --- width-aware tables --------------------------------------------------------------------


def test_format_table_cuts_the_widest_text_first_and_keeps_ids_whole() -> None:
    rows = [["3f2a9c1e-0b4d-4e8f", "SUCCESS", "loading_feedback", "a long text " * 4]]
    headers = ["id", "status", "step", "note"]
    assert format_table(headers, rows, width=60, keep=[0]).splitlines() == [
        "ID                  STATUS   STEP             NOTE",
        "3f2a9c1e-0b4d-4e8f  SUCCESS  loading_feedba…  a long text a…",
    ]  # the note (widest) is cut to the step's width, then both a little more
    # narrower: long values reach the short-value floor, then everything but the id shrinks
    assert format_table(headers, rows, width=46, keep=[0]).splitlines() == [
        "ID                  STATUS   STEP      NOTE",
        "3f2a9c1e-0b4d-4e8f  SUCCESS  loading…  a long…",
    ]
    # optional columns are left out, in the given order, before short values are cut
    assert format_table(headers, rows, width=40, keep=[0], optional=[2]).splitlines() == [
        "ID                  STATUS   NOTE",
        "3f2a9c1e-0b4d-4e8f  SUCCESS  a long tex…",
    ]
    # nothing left to narrow: the line itself is cut, never wrapped
    tiny = format_table(headers, rows, width=20, keep=[0])
    assert [len(line) for line in tiny.splitlines()] == [20, 20]
    # no width (a pipe): whole values up to the cell cap
    assert format_table(headers, rows).splitlines()[1].endswith("a long text a long text")


def test_format_table_shows_times_as_ages() -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    ages = [now - timedelta(seconds=s) for s in (5, 125, 7300, 3 * 86400, 40 * 86400)]
    text = format_table(["created"], [[a] for a in ages] + [[None]], now=now)
    assert text.splitlines() == [
        "CREATED", "5s ago", "2m ago", "2h ago", "3d ago", "2026-10-23", "-"
    ]


def _fill(kaizen: Kaizen, server: LocalServer) -> str:
    """A task with long values in every list: feedback, traces, versions and a job."""
    task = _name("cli_wide_" + "x" * 20)
    long = "A rather long answer that goes on and on about the printer on fire " * 3
    assert kaizen("tasks", "create", task, "--prompt-text",
                  "Summarize the ticket in one sentence, politely: {{ ticket }}").code == 0
    for i in range(3):
        run = kaizen("feedback", "log", task, "--score", "0.8", "--source",
                     "human-review-team-" + "y" * 20, "--input", f"ticket=t{i}",
                     "--output", long)
        assert run.code == 0, run.err
        _post_trace(server, task, long)
    run = kaizen("optimize", task, "--wait", "--poll-interval", "0.02")
    assert run.code == 0, run.err
    return task


def test_every_list_command_fits_80_columns(
    kaizen: Kaizen, local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = _fill(kaizen, local_server)
    monkeypatch.setenv("COLUMNS", "80")
    commands = [
        ("tasks", "list"), ("tasks",), ("prompts", "versions", task),
        ("feedback", "list", "--task", task), ("feedback",),
        ("jobs", "list", "--task", task), ("jobs",),
        ("traces", "list", "--task", task), ("traces",), ("status",),
    ]
    for argv in commands:
        run = kaizen(*argv)
        assert run.code == 0, (argv, run.err)
        lines = run.out.splitlines()
        assert len(lines) >= 2, (argv, run.out)
        too_long = [line for line in lines if len(line) > 80]
        assert too_long == [], (argv, too_long)
    # ids stay whole, so they can be copied into the next command
    jobs = msgspec.json.decode(kaizen("jobs", "list", "--task", task, "--json").out)
    assert kaizen("jobs", "list", "--task", task).out.splitlines()[1].startswith(
        jobs[0]["id"] + "  "
    )
    traces = msgspec.json.decode(kaizen("traces", "list", "--task", task, "--json").out)
    rows = kaizen("traces", "list", "--task", task).out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [t["id"] for t in traces]
    # and the task's name too: it is how a task is addressed
    assert any(line.startswith(task + " ") for line in kaizen("tasks").out.splitlines())


def test_piped_output_is_not_cut_to_a_terminal(kaizen: Kaizen, local_server: LocalServer) -> None:
    task = _name("cli_pipe")
    assert kaizen("tasks", "create", task).code == 0
    task_id = msgspec.json.decode(kaizen("tasks", "get", task, "--json").out)["id"]
    assert "COLUMNS" not in os.environ
    row = next(r for r in kaizen("tasks").out.splitlines() if r.startswith(task + " "))
    assert row.endswith(task_id)


# --- the progress line ----------------------------------------------------------------------


def test_progress_timer_ticks_on_a_terminal_while_the_step_stays() -> None:
    stream = _Tty()
    ticks = iter(range(10_000))
    progress = _Progress(stream, tick=0.01, clock=lambda: next(ticks) * 0.5)
    job = Job(id=uuid.uuid4(), status="RUNNING", progress_step="evaluating")
    progress(job)  # one change; everything after it is the ticker
    deadline = time.monotonic() + 10
    while stream.getvalue().count("\r\x1b[K") < 4:
        assert time.monotonic() < deadline, stream.getvalue()
        time.sleep(0.01)
    progress.end()
    frames = stream.getvalue().split("\r\x1b[K")[1:]
    assert stream.getvalue().endswith("\n")
    elapsed = [float(re.search(r"\[ *([\d.]+)s\]", f)[1]) for f in frames]  # type: ignore[index]
    assert elapsed[:4] == [0.5, 1.0, 1.5, 2.0]  # the clock's readings, one per frame
    assert all(f.startswith(f"job {job.id}  RUNNING  evaluating  [") for f in frames)
    drawn = stream.getvalue()
    assert not [t for t in threading.enumerate() if t.name == "kaizen-progress"]
    assert stream.getvalue() == drawn  # stopped: nothing is written after end()


def test_progress_is_plain_lines_without_a_terminal() -> None:
    stream = io.StringIO()
    progress = _Progress(stream, tick=0.01, clock=lambda: 1.0)
    job_id = uuid.uuid4()
    progress(Job(id=job_id, status="RUNNING", progress_step="evaluating"))
    assert not [t for t in threading.enumerate() if t.name == "kaizen-progress"]
    progress(Job(id=job_id, status="RUNNING", progress_step="evaluating"))
    progress(Job(id=job_id, status="SUCCESS", progress_step="done"))
    progress.end()
    assert stream.getvalue().splitlines() == [
        f"job {job_id}  RUNNING  evaluating  [ 0.0s]", f"job {job_id}  SUCCESS  done  [ 0.0s]"
    ]


def test_final_line_says_why_no_version_was_made() -> None:
    job_id = uuid.uuid4()
    same = Job(id=job_id, status="SUCCESS",
               job_metadata={"no_new_version": "the optimized prompt is identical to version 2"})
    assert _final_line(same) == (
        f"job {job_id} SUCCESS: no new version (the optimized prompt is identical to version 2)"
    )
    assert _final_line(Job(id=job_id, status="SUCCESS")) == (
        f"job {job_id} SUCCESS: no new version (the server gave no reason)"
    )
    failed = Job(id=job_id, status="FAILURE", error_message="no scored feedback")
    assert _final_line(failed) == f"job {job_id} FAILURE: no scored feedback"


def test_a_repeated_optimization_says_it_made_no_new_version(kaizen: Kaizen) -> None:
    task = _name("cli_same")
    assert kaizen("tasks", "create", task, "--prompt-text", "P {{ x }}").code == 0
    for i in range(3):
        assert kaizen("feedback", "log", task, "--score", "0.9", "--output", f"o{i}").code == 0
    first = kaizen("optimize", task, "--wait", "--poll-interval", "0.02")
    assert first.code == 0, first.err
    assert re.search(r"SUCCESS: candidate v2 — run `kaizen prompts activate \S+ 2`",
                     first.out.splitlines()[-1])
    second = kaizen("optimize", task, "--wait", "--poll-interval", "0.02")
    assert second.code == 0, second.err
    assert second.out.splitlines()[-1].endswith(
        "SUCCESS: no new version (the optimized prompt is identical to version 2)"
    )


# --- groups alone, status -------------------------------------------------------------------


def test_groups_alone_run_their_list(kaizen: Kaizen, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    task = _name("cli_alone")
    assert kaizen("tasks", "create", task).code == 0
    assert kaizen("feedback", "log", task, "--score", "0.5", "--output", "o").code == 0
    for group in ("tasks", "feedback", "jobs", "traces"):
        alone, listed = kaizen(group, "--json"), kaizen(group, "list", "--json")
        assert (alone.code, alone.err) == (0, "")
        assert alone.json() == listed.json(), group
    assert kaizen("--json", "tasks").json() == kaizen("tasks", "list", "--json").json()
    run = kaizen("spool")
    assert (run.code, run.out) == (2, "")
    assert run.assert_one_line_error() == (
        "kaizen: error: no spool directory: pass --dir or set KAIZEN_SPOOL_DIR"
    )
    monkeypatch.setenv("KAIZEN_SPOOL_DIR", str(tmp_path))
    run = kaizen("spool", "--json")
    assert run.code == 0
    assert (run.json()["batches"], run.json()["traces"]) == (0, 0)


def test_status_shows_server_key_versions_and_rollouts(
    kaizen: Kaizen, local_server: LocalServer
) -> None:
    from kaizen_sdk import __version__

    task = _name("cli_status")
    assert kaizen("tasks", "create", task, "--prompt-text", "v1 {{ x }}").code == 0
    assert kaizen("prompts", "create", task, "--text", "v2 {{ x }}").code == 0
    assert kaizen("rollout", "start", task, "2", "--share", "0.2").code == 0
    bare = _name("cli_status_bare")
    assert kaizen("tasks", "create", bare).code == 0

    run = kaizen("status")
    assert (run.code, run.err) == (0, "")
    lines = run.out.splitlines()
    assert lines[:3] == [
        f"server   {local_server.base_url}  ok, version {__version__}",
        "API key  accepted",
        f"tasks    {len(kaizen('tasks', '--json').json())}",
    ]
    assert lines[4].split() == ["TASK", "ACTIVE", "ROLLOUT"]
    assert next(ln for ln in lines if ln.startswith(task + " ")).split() == [
        task, "v1", "v2", "at", "20%"
    ]
    assert next(ln for ln in lines if ln.startswith(bare + " ")).split() == [bare, "-", "-"]

    body = kaizen("status", "--json").json()
    assert (body["base_url"], body["server"], body["key_accepted"]) == (
        local_server.base_url, {"status": "ok", "version": __version__}, True
    )
    mine = {t["task"]: t for t in body["tasks"] if t["task"] in (task, bare)}
    assert mine == {
        task: {"task": task, "active_version": 1,
               "rollout": {"candidate_version": 2, "share": 0.2}},
        bare: {"task": bare, "active_version": None, "rollout": None},
    }
    detail = kaizen("rollout", "status", task).out  # versions by number there too
    assert re.search(r"^active +v1  n=0", detail, re.M), detail
    assert re.search(r"^candidate +v2  n=0", detail, re.M), detail
    assert kaizen("rollout", "stop", task, "rollback").code == 0


def test_status_without_a_good_key_exits_3_after_checking_the_server(
    kaizen: Kaizen, local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-wrong-" + uuid.uuid4().hex
    run = kaizen("status", "--api-key", secret)
    assert run.code == 3
    assert run.out.startswith(f"server   {local_server.base_url}  ok")
    assert "rejected the API key" in run.assert_one_line_error()
    assert secret not in run.out + run.err
    monkeypatch.delenv("KAIZEN_API_KEY")
    run = kaizen("status")
    assert run.code == 3
    assert run.out.startswith(f"server   {local_server.base_url}  ok")
    assert run.assert_one_line_error().startswith("kaizen: error: no API key")


def test_status_of_an_unreachable_server_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KAIZEN_MAX_RETRIES", "0")
    code = main(["status", "--api-key", "some-key-123", "--base-url", f"http://127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert "kaizen serve" in err


# --- shell completion -----------------------------------------------------------------------


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `kaizen WORDS...` (the last word is the one being typed)."""
    words_q = " ".join(f"'{w}'" for w in ("kaizen", *words))
    program = (
        f"{script}\nCOMP_WORDS=({words_q}); COMP_CWORD={len(words)}; _kaizen; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", program],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_bash_completion_offers_commands_options_and_choices(kaizen: Kaizen) -> None:
    run = kaizen("completion", "bash")
    assert run.code == 0
    script = run.out
    assert script.rstrip().endswith("complete -o default -F _kaizen kaizen")
    assert _complete(script, "ta") == ["tasks"]
    assert _complete(script, "") [:3] == ["--help", "--version", "--api-key"]
    assert "status" in _complete(script, "")
    assert _complete(script, "--json", "tasks", "") == [
        "--help", "--api-key", "--base-url", "--json", "list", "get", "costs", "create", "update"
    ]
    assert _complete(script, "rollout", "stop", "my_task", "") == [
        "--help", "--api-key", "--base-url", "--json", "promote", "rollback"
    ]
    assert _complete(script, "completion", "") == ["--help", "bash", "zsh", "fish"]
    assert _complete(script, "prompts", "create", "t", "--fi") == ["--file"]


def test_zsh_and_fish_scripts_cover_every_command(kaizen: Kaizen) -> None:
    tree = _completion_tree(build_parser())
    paths = [p for p in tree if p]
    assert {"tasks list", "status", "completion", "rollout stop", "spool status"} <= set(paths)
    zsh = kaizen("completion", "zsh").out
    assert zsh.startswith("#compdef kaizen\n")
    assert "bashcompinit" in zsh and _bash_completion(tree) in zsh
    fish = kaizen("completion", "fish").out.splitlines()
    for path, words in tree.items():
        assert f"complete -c kaizen -f -n '__kaizen_at {path}' -a '{' '.join(words)}'" in fish
    for argv in (("completion",), ("completion", "tcsh")):
        run = kaizen(*argv)
        assert (run.code, run.out) == (2, "")
