"""The GenAI metrics of an instrumented call: recorded once the application sets a global
MeterProvider (including one set after ``instrument()`` and after the first calls), and no
work spent on them while none is set or the one set is the API's no-op provider.

Each case runs in its own process: the global MeterProvider can be set only once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openai_standin import StandIn

from kaizen_sdk.integrations import _call

pytestmark = [pytest.mark.unit]

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _run(mode: str, standin: StandIn) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAIZEN_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE)])
    done = subprocess.run(
        [sys.executable, str(HERE / "call_metrics_app.py"), mode, standin.base_url],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_no_meter_provider_means_no_metric_work_and_a_later_sdk_one_gets_every_call(
    standin: StandIn,
) -> None:
    out = _run("sdk", standin)
    assert out["before"] == 0  # two calls, no provider yet: the histograms never reached
    assert out["after"] == 3  # one non-streamed and one streamed call of "m", one of "m2"
    points = out["points"]
    durations = points["gen_ai.client.operation.duration"]
    by_model = {a["gen_ai.request.model"]: c for a, c in durations}
    assert by_model == {"m": 2, "m2": 1}  # each call shape keeps its own attributes
    for attributes, _count in durations:
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "openai"
        assert attributes["gen_ai.response.model"] == attributes["gen_ai.request.model"] + "-resp"
    tokens = points["gen_ai.client.token.usage"]
    assert sorted((a["gen_ai.request.model"], a["gen_ai.token.type"], c) for a, c in tokens) == [
        ("m", "input", 2), ("m", "output", 2), ("m2", "input", 1), ("m2", "output", 1)]


def test_the_no_op_meter_provider_means_no_metric_work(standin: StandIn) -> None:
    out = _run("noop", standin)
    assert out == {"before": 0, "after": 0, "points": {}}


def test_the_meter_provider_internal_it_reads_is_where_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.metrics import NoOpMeterProvider, _internal
    from opentelemetry.sdk.metrics import MeterProvider

    assert "_METER_PROVIDER" in vars(_internal), "OTel renamed metrics._internal._METER_PROVIDER"
    monkeypatch.setattr(_call, "_ENV_METER_PROVIDER", False)
    monkeypatch.setattr(_internal, "_METER_PROVIDER", None)
    assert _call.metrics_observable() is False
    monkeypatch.setattr(_internal, "_METER_PROVIDER", NoOpMeterProvider())
    assert _call.metrics_observable() is False
    monkeypatch.setattr(_internal, "_METER_PROVIDER", MeterProvider())
    assert _call.metrics_observable() is True
    monkeypatch.setattr(_internal, "_METER_PROVIDER", None)
    monkeypatch.setattr(_call, "_ENV_METER_PROVIDER", True)  # named by the environment
    assert _call.metrics_observable() is True
