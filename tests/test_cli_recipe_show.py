"""``kaizen prompts show TASK [VERSION]``: any version's messages and settings (issue 24)."""

from __future__ import annotations

import uuid

import pytest

from kaizen_sdk.cli import main
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

MESSAGES = [{"role": "system", "content": "You triage tickets."},
            {"role": "user", "content": "{{ ticket }}"}]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_show_renders_any_version(
    local_server: LocalServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", local_server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", local_server.base_url)
    task = f"cli_show_{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        admin.create_task(task, messages=MESSAGES, config={"model": "big", "temperature": 0.2})
        v2 = admin.create_prompt_version(task, messages=MESSAGES, config={"model": "small"})
        admin.set_label(task, "staging", str(v2.id))

    code, out, err = _run(capsys, "prompts", "show", task)  # the active version
    assert code == 0, err
    assert out.endswith("[settings]\nmodel: \"big\"\ntemperature: 0.2\n")
    for version in ("2", "v2", str(v2.id)):
        code, out, err = _run(capsys, "prompts", "show", task, version)
        assert code == 0, err
        assert out.endswith("\n\n[system]\nYou triage tickets.\n\n[user]\n{{ ticket }}\n\n"
                            "[settings]\nmodel: \"small\"\n"), out
    code, out, err = _run(capsys, "prompts", "show", task, "--label", "staging", "--text")
    assert (code, out) == (0, "[system]\nYou triage tickets.\n\n[user]\n{{ ticket }}\n"), err
    code, out, err = _run(capsys, "prompts", "show", task, "9")
    assert code == 4 and "no prompt version 9" in err
    code, out, err = _run(capsys, "prompts", "show", task, "2", "--label", "staging")
    assert code == 2 and "not both" in err
