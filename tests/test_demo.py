"""``kaizen demo``: the whole loop runs offline, and its output tells the story."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest

from kaizen_server import LocalServer
from kaizen_server import demo as _demo

pytestmark = [pytest.mark.e2e]


def _summary(text: str) -> dict[str, str]:
    rows = {}
    summary = text.split("[6/6] Summary", 1)[1]
    for name in ("calls", "traces delivered", "prompt versions", "mean score"):
        match = re.search(rf"^  {name} +(\S.*?) {{2,}}", summary, re.MULTILINE)
        assert match is not None, (name, summary)
        rows[name] = match.group(1)
    return rows


def test_the_demo_runs_the_whole_loop_on_an_embedded_server() -> None:
    out = io.StringIO()
    assert _demo.main(out) == 0
    text = out.getvalue()
    assert "Started an embedded local CT server" in text
    for step in range(1, 7):
        assert f"[{step}/6]" in text
    assert "(v0)" in text and "(v1)" in text and "(v2)" in text
    assert "loading_feedback" in text and "job finished: SUCCESS" in text
    rows = _summary(text)
    assert rows["calls"] == "24"
    assert rows["traces delivered"] == "24"
    assert rows["prompt versions"] == "2"
    before, after = (float(x) for x in re.findall(r"\d\.\d\d", rows["mean score"]))
    assert (before, after) == (0.62, 0.92)  # the stand-in model and judge are deterministic
    assert "24 stored, 0 dropped" in text


def test_the_demo_uses_the_server_in_kaizen_base_url(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    out = io.StringIO()
    assert _demo.main(out) == 0
    text = out.getvalue()
    assert f"Using the CT server at {local_server.base_url}" in text
    assert _summary(text)["traces delivered"] == "24"


def test_the_demo_explains_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIZEN_BASE_URL", "http://127.0.0.1:9")
    out = io.StringIO()
    assert _demo.main(out) == 1
    assert "needs KAIZEN_API_KEY" in out.getvalue()


def test_kaizen_demo_on_the_command_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "kaizen_sdk.cli", "demo"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[6/6] Summary" in proc.stdout
    assert proc.stderr == ""  # nothing logged on a clean run


@pytest.mark.parametrize(
    ("ticket", "with_examples", "label"),
    [
        ("Refund please", False, "billing"),
        ("Every time I open the dashboard on my phone it shows an error", False, "account"),
        ("Every time I open the dashboard on my phone it shows an error", True, "bug"),
        ("The invoice page shows an error whenever I open it", True, "billing"),
    ],
)
def test_the_stand_in_model_reads_more_with_examples(
    ticket: str, with_examples: bool, label: str
) -> None:
    prompt = f"Classify.\nTicket: {ticket}"
    if with_examples:
        prompt += "\n\n### Examples\n\nExample 1:\nInput: {}\nOutput: bug"
    assert _demo.stand_in_model(prompt) == label


def test_the_demo_ends_by_saying_how_to_look_at_it_in_a_browser() -> None:
    out = io.StringIO()
    assert _demo.main(out) == 0
    assert out.getvalue().splitlines()[-1] == (
        "See it in a browser: `kaizen demo --serve` keeps the server up and prints the address"
        " of its web UI (docs/ui.md).")


def test_kaizen_demo_serve_keeps_the_server_up_for_the_web_ui() -> None:
    import httpx

    out = io.StringIO()
    seen: list[int] = []

    def until() -> bool:  # the server is still up while the demo waits: sign in to the UI
        match = re.search(r"Web UI: (\S+) \(sign in with the key (\S+)\)", out.getvalue())
        assert match is not None
        with httpx.Client(timeout=10) as client:
            resp = client.post(match.group(1) + "signin", data={"key": match.group(2)})
            assert resp.status_code == 303
            page = client.get(match.group(1) + "tasks/classify_ticket")
            seen.append(page.status_code)
            assert "Task classify_ticket" in page.text
        return True

    assert _demo.main(out, serve=True, until=until) == 0
    assert seen == [200]
    assert out.getvalue().splitlines()[-1] == "Stopped."
