"""What a person sees on an 80-column terminal: `Screen` replays the CLI's output as a terminal
draws it (autowrap at the last column, ``\\r``, cursor up, erase line / screen), so a test can
assert the final screen, not the bytes. Also: an out-of-range ``--port`` is a usage error.
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kaizen_sdk.cli import main
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

__all__: list[str] = []

WIDTH = 80
_CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


class Screen(io.StringIO):
    """A fake terminal *width* columns wide: keeps what is written, answers isatty()."""

    def __init__(self, width: int = WIDTH) -> None:
        super().__init__()
        self.width = width

    def isatty(self) -> bool:
        return True

    def rows(self) -> list[str]:
        """The screen after everything written so far, trailing blank rows left out."""
        grid: list[list[str]] = [[]]
        row = col = 0
        text = self.getvalue()
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                match = _CSI.match(text, i)
                assert match is not None, repr(text[i:i + 10])
                count, command = int(match[1] or 1), match[2]
                if command == "A":
                    row = max(0, row - count)
                elif command in "JK":
                    del grid[row][col:]
                    if command == "J":
                        del grid[row + 1:]
                else:
                    raise AssertionError(f"unexpected escape {match[0]!r}")
                i = match.end()
                continue
            if ch == "\r":
                col = 0
            elif ch == "\n":
                row, col = row + 1, 0
            else:
                if col >= self.width:  # autowrap: the character goes on the next row
                    row, col = row + 1, 0
                while len(grid) <= row:
                    grid.append([])
                line = grid[row]
                line.extend(" " * (col + 1 - len(line)))
                line[col] = ch
                col += 1
            while len(grid) <= row:
                grid.append([])
            i += 1
        rows = ["".join(r).rstrip() for r in grid]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def test_screen_replays_wrapping_and_redraws() -> None:
    screen = Screen(width=10)
    screen.write("0123456789abc")
    assert screen.rows() == ["0123456789", "abc"]  # a long line wraps
    screen.write("\rX")
    assert screen.rows() == ["0123456789", "Xbc"]  # \r reaches only the last row
    screen.write("\r\x1b[1A\x1b[J")
    assert screen.rows() == []
    screen.write("one\ntwo\r\x1b[1A\x1b[Jthree")
    assert screen.rows() == ["three"]
    screen.write("\r\x1b[Kfour\n")
    assert screen.rows() == ["four"]


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Screen:
    """An 80-column terminal; ``with on(terminal):`` puts stdout and stderr on it."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    return Screen()


@contextlib.contextmanager
def on(screen: Screen) -> Iterator[Screen]:
    """stdout and stderr on *screen*, as a person runs the CLI (inside the test: pytest's
    capture sets both again when the test body starts)."""
    with contextlib.redirect_stdout(screen), contextlib.redirect_stderr(screen):
        yield screen


def _use(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", server.base_url)


def _main(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


# --- serve --port ----------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_an_out_of_range_port_is_a_usage_error_naming_the_range(
    port: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # the default database would go here
    assert _main("serve", "--port", port) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"kaizen serve: error: argument --port: a TCP port is 0 to 65535 (0 for a free one), "
        f"got {port} (see kaizen serve --help)\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_a_port_that_is_not_a_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _main("serve", "--port", "http") == 2
    assert "argument --port: not a whole number: 'http'" in capsys.readouterr().err


# --- optimize --wait -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server() -> Iterator[LocalServer]:
    """A server whose jobs pause after each progress step, so PENDING/RUNNING show."""
    with LocalServer(job_step_delay=0.1) as server:
        yield server


def test_optimize_wait_shows_only_the_current_state(
    slow_server: LocalServer, monkeypatch: pytest.MonkeyPatch, terminal: Screen
) -> None:
    _use(slow_server, monkeypatch)
    task = f"cli_term_{uuid.uuid4().hex[:10]}"
    for i in range(4):
        assert _main("feedback", "log", task, "--score", "0.9", "--output", f"s{i}") == 0
    with on(terminal):
        assert _main("optimize", task, "--wait", "--poll-interval", "0.02") == 0
    rows = terminal.rows()
    written = terminal.getvalue()
    assert "PENDING" in written  # the progress line showed it, then drew over it
    assert [r for r in rows if "PENDING" in r or "RUNNING" in r] == [], rows
    progress = [r for r in rows if re.match(r"^job \S+  ", r)]
    assert len(progress) == 1 and re.match(r"^job \S+  SUCCESS  done  \[ *\d+\.\ds\]$",
                                           progress[0]), rows
    # the short report ends it: its first row names the job and its final status
    reported = [m.group(1) for r in rows if (m := re.match(r"^job +\S+ (\w+) \(", r))]
    assert reported == ["SUCCESS"], rows
    assert all(len(r) <= WIDTH for r in rows)


# --- rollout status --watch ------------------------------------------------------------------


def _task_with_candidate(http: httpx.Client) -> tuple[str, str, str]:
    name = f"cli_watch_{uuid.uuid4().hex[:10]}"
    assert http.post("/api/v1/tasks", json={"name": name, "feedback_threshold": 100_000,
                                            "prompt_text": "v1"}).status_code == 201
    active = http.get(f"/api/v1/prompts/{name}").json()["id"]
    http.post("/api/v1/feedback", json={"task_id": name, "output": "o", "score": 0.7})
    job = http.post(f"/api/v1/optimize/{name}").json()["job"]
    deadline = time.monotonic() + 15
    while (body := http.get(f"/api/v1/jobs/{job['id']}").json())["status"] != "SUCCESS":
        assert body["status"] != "FAILURE" and time.monotonic() < deadline, body
        time.sleep(0.01)
    return name, active, str(body["prompt_version_id"])


def _scores(http: httpx.Client, name: str, version: str, values: list[float]) -> None:
    feedback = [{"task_id": name, "score": v, "prompt_version_id": version, "output": "o"}
                for v in values]
    assert http.post("/api/v1/ingest", json={"feedback": feedback}).json()["errors"] == []


@pytest.fixture
def http(local_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    _use(local_server, monkeypatch)
    with httpx.Client(base_url=local_server.base_url,
                      headers={"X-API-Key": local_server.api_key}, timeout=10) as client:
        yield client


def _watch_while_scores_arrive(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, rounds: int,
    screen: Screen | None = None,
) -> int:
    """Start a rollout and watch it while scores arrive after each of the first polls, so
    the watch draws several frames (running with new figures, then promoted)."""
    name, active, candidate = _task_with_candidate(http)
    assert _main("rollout", "start", name, candidate, "--share", "0.5",
                 "--min-samples", str(5 * rounds)) == 0
    polls = 0
    original = CTClient.get_rollout

    def get_rollout(self: CTClient, task: str) -> Any:
        nonlocal polls
        if 0 < polls <= rounds:
            _scores(http, name, active, [0.2 + 0.05 * (i % 3) for i in range(5)])
            _scores(http, name, candidate, [0.85 + 0.05 * (i % 3) for i in range(5)])
        polls += 1
        return original(self, task)

    monkeypatch.setattr(CTClient, "get_rollout", get_rollout)
    with on(screen) if screen is not None else contextlib.nullcontext():
        return _main("rollout", "status", name, "--watch", "--interval", "0.01")


def test_rollout_watch_redraws_in_place_within_80_columns(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, terminal: Screen
) -> None:
    assert _watch_while_scores_arrive(http, monkeypatch, rounds=3, screen=terminal) == 0
    written = terminal.getvalue()
    assert written.count("rollout running") >= 3  # frames with changing figures were drawn
    rows = terminal.rows()
    assert all(len(r) <= WIDTH for r in written.split("\n") if "\x1b" not in r)
    # the last frame, then the rollout's detail (its first row: "rollout   <id>")
    live = rows[:next(i for i, r in enumerate(rows) if re.match(r"^rollout +[0-9a-f-]{36}$", r))]
    assert [r for r in rows if "rollout running" in r] == [], rows  # no stale frame
    assert live[0].startswith("rollout promoted  share 50%"), rows
    assert 2 <= len(live) <= 3 and all(len(r) < WIDTH for r in live), live
    text = "  ".join(live)
    assert "active n=15 mean=0.240" in text and "candidate n=15 mean=0.890" in text, live
    assert re.search(r"diff \+0\.650 \[\+\d\.\d{3}, \+\d\.\d{3}\]", text), live


def test_rollout_watch_appends_plain_lines_when_not_a_terminal(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _watch_while_scores_arrive(http, monkeypatch, rounds=2) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    lines = err.splitlines()
    assert len(lines) >= 3 and len(set(lines)) == len(lines), err  # one line per change
    assert all(line.startswith("rollout running") for line in lines[:-1]), err
    assert lines[-1].startswith("rollout promoted  share 50%  active n=10 mean=0.240"), err
