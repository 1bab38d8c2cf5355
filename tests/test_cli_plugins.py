"""``kaizen serve``, ``demo`` and ``eval`` come from kaizen-server's ``kaizen.commands`` entry
points: listed when the server is installed, absent (a usage error) when it is not."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from kaizen_sdk import cli

pytestmark = [pytest.mark.unit]

SERVER_COMMANDS = ("serve", "demo", "eval", "db")  # db: listed after the SDK's own commands


def _commands(help_text: str) -> list[str]:
    """The command names of ``kaizen --help``, in order."""
    lines = help_text.split("commands:", 1)[1].splitlines()
    return [line.split()[0] for line in lines
            if line.startswith("    ") and not line.startswith("     ")]


def _only(points: list[importlib.metadata.EntryPoint]) -> Callable[..., Any]:
    real = importlib.metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == cli.COMMAND_GROUP:
            return importlib.metadata.EntryPoints(points)
        return real(**params)

    return entry_points


def test_help_lists_the_server_commands_when_the_server_is_installed() -> None:
    done = subprocess.run([sys.executable, "-m", "kaizen_sdk.cli", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    names = _commands(done.stdout)
    assert names[:5] == ["status", "serve", "spool", "demo", "tasks"]
    assert names[names.index("optimize") + 1] == "eval"
    assert set(cli.command_plugins()) == set(SERVER_COMMANDS)


def test_without_the_server_its_commands_are_not_there(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", _only([]))
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    names = _commands(capsys.readouterr().out)
    assert "tasks" in names and "rollout" in names
    assert not set(SERVER_COMMANDS) & set(names)


def test_a_plugin_that_cannot_load_is_one_line_and_the_rest_still_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    group = cli.COMMAND_GROUP
    monkeypatch.setattr(importlib.metadata, "entry_points", _only([
        importlib.metadata.EntryPoint("broken", "no_such_module_here:add", group),
        importlib.metadata.EntryPoint("eval", "kaizen_server.commands:add_eval", group),
    ]))
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "kaizen: the broken command (no_such_module_here:add) cannot be loaded: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    ]
    assert [n for n in _commands(out) if n in SERVER_COMMANDS] == ["eval"]


def test_a_server_command_without_the_server_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", _only([]))
    for name in SERVER_COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([name])
        assert done.value.code == 2
        assert capsys.readouterr().err == (
            f"kaizen: error: '{name}' is a command of the CT server, which is not installed: "
            "pip install 'kaizen-sdk[server]' (see kaizen --help)\n")
    with pytest.raises(SystemExit):
        cli.main(["nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
