"""The decorated signature and the client's return types survive for type checkers."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

USAGE = pathlib.Path(__file__).with_name("usage.py")


@pytest.mark.timeout(300)
def test_mypy_strict_sees_precise_types(tmp_path: pathlib.Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
         "--cache-dir", str(tmp_path / "cache"), str(USAGE)],
        capture_output=True, text=True, timeout=280,
    )
    # older mypy spells builtins with their module ("builtins.str"); newer ones do not
    revealed = [line.split("Revealed type is ", 1)[1].strip('"').replace("builtins.", "")
                for line in out.stdout.splitlines() if "Revealed type is" in line]
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert errors == []
    assert revealed == [
        "str",
        "typing.Coroutine[Any, Any, int]",
        "kaizen_sdk.models.Prompt",
        "list[kaizen_sdk.models.Task]",
        "str | None",
    ]
