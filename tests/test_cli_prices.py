"""Trace costs from the CLI's side: ``kaizen status`` lists the models without a price, and
``kaizen serve`` refuses a bad ``--prices`` file or ``--otlp-task-map`` before it starts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kaizen_sdk.cli import main
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    with LocalServer() as s:
        yield s


def _trace(server: LocalServer, task: str, model: str, **usage: int) -> dict[str, object]:
    resp = httpx.post(f"{server.base_url}/api/v1/traces", headers={"X-API-Key": server.api_key},
                      json={"task_id": task, "model": model, "tokens": 30, **usage})
    assert resp.status_code == 201, resp.text
    body: dict[str, object] = resp.json()
    return body


def test_status_lists_the_models_without_a_price(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAIZEN_API_KEY", server.api_key)
    monkeypatch.setenv("KAIZEN_BASE_URL", server.base_url)
    task, unknown = f"prices-{uuid.uuid4().hex[:8]}", f"house-model-{uuid.uuid4().hex[:6]}"
    priced = _trace(server, task, "gpt-4o-mini", input_tokens=20, output_tokens=10)
    assert priced["cost_usd"] is not None and float(str(priced["cost_usd"])) > 0
    assert _trace(server, task, unknown, input_tokens=20, output_tokens=10)["cost_usd"] is None
    # only the total: no split to price, but a known model is not "unpriced"
    assert _trace(server, task, "gpt-4o-mini")["cost_usd"] is None
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    (line,) = [ln for ln in out.splitlines() if ln.startswith("no price")]
    assert line.endswith(f": {unknown}")
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unpriced_models"] == [unknown]


@pytest.mark.parametrize(("option", "content", "message"), [
    ("--prices", '{"m": [1]}', "the price of 'm'"),
    ("--prices", "{not json", "not valid JSON"),
    ("--otlp-task-map", None, "KIND:NAME=TASK"),
])
def test_serve_refuses_bad_prices_and_task_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, content: str | None,
    message: str,
) -> None:
    value = "nonsense"
    if content is not None:
        value = str(tmp_path / "prices.json")
        Path(value).write_text(content)
    code = main(["serve", "--port", "0", "--db", str(tmp_path / "x.db"), option, value])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
