"""Manual prompt versions and richer feedback through CTClient, AsyncCTClient and the CLI.

All against the session's real local server over HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from kaizen_sdk import AsyncCTClient, CTClient
from kaizen_sdk.cli import main
from kaizen_sdk.errors import CTNotFoundError, CTValidationError
from kaizen_server import LocalServer


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(local_server: LocalServer) -> CTClient:
    with CTClient(api_key=local_server.api_key, base_url=local_server.base_url) as c:
        yield c  # type: ignore[misc]


def test_client_creates_and_activates_manual_versions(client: CTClient) -> None:
    task = _name("manual")
    created = client.create_task(task, prompt_text="Summarize: {{ ticket }}")
    assert created.name == task
    assert client.get_prompt(task).version_number == 1  # cached from here on
    draft = client.create_prompt_version(task, "Summarize briefly: {{ ticket }}")
    assert (draft.version_number, draft.status, draft.optimizer) == (2, "candidate", "manual")
    assert client.get_prompt(task).version_number == 1
    live = client.create_prompt_version(task, "One line: {{ ticket }}", activate=True)
    assert live.status == "active"
    assert client.get_prompt(task).version_number == 3  # the cached entry was dropped
    back = client.activate_prompt(task, str(draft.id))
    assert client.get_prompt(task).version_number == back.version_number == 2
    assert [p.version_number for p in client.list_prompt_versions(task)] == [3, 2, 1]


def test_client_checks_prompt_text_before_sending(client: CTClient) -> None:
    task = _name("manual_bad")
    client.create_task(task, prompt_text="v1")
    for bad in ("", "   ", "x" * 200_001):
        with pytest.raises(CTValidationError, match="prompt_text"):
            client.create_prompt_version(task, bad)
    with pytest.raises(CTValidationError, match="prompt_text"):
        client.create_task(_name("manual_bad"), prompt_text="")
    with pytest.raises(CTNotFoundError):
        client.create_prompt_version(_name("missing"), "text")
    assert len(client.list_prompt_versions(task)) == 1


def test_async_client_creates_versions_too(local_server: LocalServer) -> None:
    async def go() -> None:
        async with AsyncCTClient(api_key=local_server.api_key,
                                 base_url=local_server.base_url) as c:
            task = _name("manual_async")
            await c.create_task(task, prompt_text="v1 {{ x }}")
            made = await c.create_prompt_version(task, "v2 {{ x }}", activate=True)
            assert made.optimizer == "manual"
            assert (await c.get_prompt(task)).prompt_text == "v2 {{ x }}"
            scored = await c.log_feedback(task, inputs={"x": "1"}, output="o", score=0.2,
                                          comment="meh", correction="better")
            assert (scored.comment, scored.correction) == ("meh", "better")

    asyncio.run(go())


def test_comment_and_correction_round_trip_on_feedback_and_scores(client: CTClient) -> None:
    task = _name("critique")
    entry = client.log_feedback(task, inputs={"ticket": "t"}, output="long", score=0.3,
                                comment="too long", correction="short")
    assert (entry.comment, entry.correction) == ("too long", "short")
    with pytest.raises(CTValidationError, match="correction"):
        client.log_feedback(task, score=0.3, correction="short")  # nothing to correct
    import httpx

    trace_id = str(uuid.uuid4())
    httpx.post(
        f"{client.settings.base_url}/api/v1/traces",
        headers={"X-API-Key": client.settings.api_key},
        json={"id": trace_id, "task_id": task, "prompt_text": "p", "response_text": "r"},
    ).raise_for_status()
    client.score(trace_id, 0.4, comment="wrong tone", correction="polite r")
    scored = next(e for e in client.list_feedback(task) if str(e.trace_id) == trace_id)
    assert (scored.score, scored.comment, scored.correction) == (0.4, "wrong tone", "polite r")
    assert len(client.list_feedback(task)) == 2


# --- the CLI -------------------------------------------------------------------------------


def _kaizen(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_creates_diffs_and_lists_versions(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    task = _name("cli_versions")
    assert _kaizen(capsys, "tasks", "create", task, "--prompt-text", "Summarize: {{ t }}")[0] == 0
    source = tmp_path / "prompt.txt"
    source.write_text("Summarize in one line: {{ t }}\nBe polite.\n", encoding="utf-8")
    code, out, err = _kaizen(capsys, "prompts", "create", task, "--file", str(source),
                             "--activate", "--json")
    assert code == 0, err
    assert '"optimizer": "manual"' in out and '"status": "active"' in out
    assert _kaizen(capsys, "prompts", "create", task, "--text", "draft {{ t }}")[0] == 0

    code, out, _ = _kaizen(capsys, "prompts", "versions", task)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["VERSION", "STATUS", "OPTIMIZER", "SCORE", "CREATED", "HASH",
                              "PROMPT"]
    assert len(rows) == 3 and max(len(line) for line in out.splitlines()) <= 100
    hashes = [row.split()[6] for row in rows]  # the age of each takes two words ("5s ago")
    assert len(set(hashes)) == 3

    code, out, _ = _kaizen(capsys, "prompts", "diff", task, "1", "v2")
    assert code == 0
    assert "-Summarize: {{ t }}" in out and "+Be polite." in out
    code, out, _ = _kaizen(capsys, "prompts", "diff", task, "2", "2")
    assert (code, out.strip()) == (0, "v2 and v2 have the same text and settings.")

    code, out, _ = _kaizen(capsys, "tasks", "list")
    header, *rows = out.splitlines()
    assert header.split()[1:3] == ["FEEDBACK", "NEXT"]  # NAME first; the id is optional
    row = next(r for r in rows if r.startswith(task + " "))
    assert row.split()[1:3] == ["0", "0/50"]


def test_cli_errors_exit_2_or_4_with_one_line(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    task = _name("cli_bad")
    _kaizen(capsys, "tasks", "create", task, "--prompt-text", "v1")
    cases = [
        (("prompts", "create", task), 2),  # neither --text nor --file
        (("prompts", "create", task, "--text", "a", "--file", "f"), 2),
        (("prompts", "create", task, "--text", "  "), 2),
        (("prompts", "create", task, "--file", str(tmp_path / "missing.txt")), 2),
        (("prompts", "create", _name("nope"), "--text", "x"), 4),
        (("prompts", "diff", task, "1", "7"), 4),
        (("prompts", "diff", _name("nope"), "1", "2"), 4),
    ]
    for argv, status in cases:
        code, _, err = _kaizen(capsys, *argv)
        assert code == status, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    code, out, _ = _kaizen(capsys, "prompts", "versions", task, "--json")
    assert out.count('"version_number"') == 1


def test_a_decorated_call_scored_through_the_client_trains_with_its_own_entry(
    client: CTClient,
) -> None:
    task = _name("decorated_score")

    @client.task(task, default_prompt="Echo {{ text }}")
    def echo(text: str, prompt: object) -> str:
        return text

    _, run = echo.call("hello")
    client.score(run.trace_id, 0.3)
    client.score(run.trace_id, 0.7, comment="fine", correction="Hello.")  # again: same entry
    entries = client.list_feedback(task)
    assert len(entries) == 1
    entry = entries[0]
    assert (str(entry.trace_id), entry.inputs, entry.output) == (
        run.trace_id, {"text": "hello"}, "hello"
    )
    assert (entry.score, entry.comment, entry.correction) == (0.7, "fine", "Hello.")
