"""kaizen beside the application's own OpenTelemetry set-up and other GenAI instrumentations.

Each scenario runs ``ecosystem_app.py`` in a process of its own (a global provider can be set
once per process) against the OpenAI stand-in and the local CT server.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import uuid
from typing import Any

import pytest
from openai_standin import StandIn

from kaizen_sdk.client import CTClient
from kaizen_sdk.tracing import SCHEMA_URL, SCOPE, Attr
from kaizen_server import LocalServer

pytestmark = [pytest.mark.e2e]

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent.parent
V2_SCOPES = ("opentelemetry.instrumentation.openai_v2", "opentelemetry.util.genai")


def _run(
    server: LocalServer, standin: StandIn, scenario: str, task: str, **env_extra: str
) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env.update(
        KAIZEN_BASE_URL=server.base_url, KAIZEN_API_KEY=server.api_key,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), **env_extra,
    )
    proc = subprocess.run(
        [sys.executable, str(HERE / "ecosystem_app.py"), scenario, standin.base_url, task],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.fixture
def task_name() -> str:
    return f"eco-{uuid.uuid4().hex[:10]}"


def _stored(server: LocalServer, trace_ids: list[str]) -> list[Any]:
    with CTClient(base_url=server.base_url, api_key=server.api_key) as reader:
        return [reader.get_trace(t) for t in trace_ids]


def test_a_provider_set_late_receives_the_kaizen_spans_from_then_on(
    local_server: LocalServer, standin: StandIn, task_name: str
) -> None:
    out = _run(local_server, standin, "late", task_name)
    names = [s["name"] for s in out["spans"]]
    # the calls before set_tracer_provider went to the private provider; the later ones arrive
    assert sorted(names) == sorted([f"ct.task {task_name}", "chat m"])
    by_name = {s["name"]: s for s in out["spans"]}
    assert by_name[f"ct.task {task_name}"]["attributes"][Attr.TRACE_ID] == out["trace_ids"][2]
    assert by_name["chat m"]["attributes"][Attr.TRACE_ID] == out["trace_ids"][3]
    assert {s["scope"] for s in out["spans"]} == {SCOPE}
    assert {s["schema"] for s in out["spans"]} == {SCHEMA_URL}
    # the late chat span has its GenAI attributes (not the private provider's bare span)
    assert by_name["chat m"]["attributes"]["gen_ai.request.model"] == "m"
    late = [w for w in out["warnings"] if "after kaizen_sdk started tracing" in w]
    assert len(late) == 1
    # every record arrived, those before included
    assert out["stats"] == {"queued": 4, "sent": 4, "dropped": 0}
    assert [str(t.id) for t in _stored(local_server, out["trace_ids"])] == out["trace_ids"]


@pytest.mark.parametrize("scenario", ["v2-first", "v2-last"])
def test_beside_openai_v2_each_call_is_one_chat_span_with_the_ct_attributes(
    local_server: LocalServer, standin: StandIn, task_name: str, scenario: str
) -> None:
    out = _run(local_server, standin, scenario, task_name)
    spans = out["spans"]
    assert [s["name"] for s in spans] == ["chat m", "chat m"]
    # openai-v2's spans (streams go through OpenTelemetry's GenAI utilities), never ours
    assert all(s["scope"].startswith(V2_SCOPES) for s in spans), spans
    for span, trace_id in zip(spans, out["trace_ids"], strict=True):
        assert span["attributes"][Attr.TRACE_ID] == trace_id
        assert span["attributes"][Attr.TASK_NAME] == task_name
        assert span["attributes"]["gen_ai.usage.input_tokens"] == 1  # set by openai-v2
    assert out["stats"] == {"queued": 2, "sent": 2, "dropped": 0}
    stored = _stored(local_server, out["trace_ids"])
    assert [(t.prompt_text, t.response_text) for t in stored] == [
        ("one", "echo: one"), ("two", "echo: two"),
    ]


def test_records_only_mode_makes_no_kaizen_spans(
    local_server: LocalServer, standin: StandIn, task_name: str
) -> None:
    out = _run(local_server, standin, "late", task_name, KAIZEN_SPANS="false")
    assert out["spans"] == []
    assert out["warnings"] == []
    assert out["stats"] == {"queued": 4, "sent": 4, "dropped": 0}
    assert len(_stored(local_server, out["trace_ids"])) == 4


@pytest.mark.parametrize("latest", [False, True])
def test_genai_metrics_are_recorded_on_the_global_meter_provider(
    local_server: LocalServer, standin: StandIn, task_name: str, latest: bool
) -> None:
    extra = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"} if latest else {}
    out = _run(local_server, standin, "metrics", task_name, **extra)
    points = {(p["name"], p["attributes"].get("gen_ai.token.type")): p for p in out["metrics"]}
    assert sorted(points) == [
        ("gen_ai.client.operation.duration", None),
        ("gen_ai.client.token.usage", "input"),
        ("gen_ai.client.token.usage", "output"),
    ]
    duration = points[("gen_ai.client.operation.duration", None)]
    assert (duration["unit"], duration["count"], duration["scope"]) == ("s", 2, SCOPE)
    assert duration["schema"] == SCHEMA_URL and duration["sum"] > 0
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m", "gen_ai.response.model": "m-resp",
        "server.address": "127.0.0.1", "server.port": standin.port,
    }
    if not latest:
        expected["gen_ai.system"] = "openai"
    assert duration["attributes"] == expected
    # stand-in tokens are words: "hello there" + "a b c" in, "echo: ..." (3 + 4 words) out
    assert (points[("gen_ai.client.token.usage", "input")]["sum"],
            points[("gen_ai.client.token.usage", "output")]["sum"]) == (5, 7)
    assert points[("gen_ai.client.token.usage", "input")]["count"] == 2
    assert points[("gen_ai.client.token.usage", "input")]["unit"] == "{token}"
