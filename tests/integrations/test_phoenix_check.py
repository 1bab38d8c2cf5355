"""``examples/phoenix_check.py``, the offline OTLP check a newcomer runs, passes."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e]


def test_phoenix_check_receives_the_chain_and_chat_spans_over_otlp() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "phoenix_check.py")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert "task returned: echo: Summarize: Printer on fire" in lines
    received = sorted(line.split("'")[1] for line in lines if line.startswith("received "))
    assert received == ["chat gpt-4o-mini", "ct.task summarize_ticket"]
    assert lines[-1].startswith("OK: 2 spans over OTLP/HTTP")
