"""One process of test_call_metrics: instrumented openai calls before and after the
application sets its global MeterProvider (an SDK one, or the API's no-op one).

Prints a JSON line: how many calls reached the histograms before and after, and the
points the SDK provider's reader holds.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import kaizen_sdk as ct
from kaizen_sdk.client import CTClient
from kaizen_sdk.integrations import _call

MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello there"}]
reached: list[int] = []
_real = _call._histograms


def _counting() -> Any:
    reached.append(1)
    return _real()


def main(mode: str, base_url: str) -> dict[str, Any]:
    _call._histograms = _counting  # type: ignore[assignment]
    client = CTClient(base_url="http://127.0.0.1:9", api_key="call-metrics-key")
    ct.instrument(openai, client=client, task_map={"You are terse.": "t"})
    llm = openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

    def calls() -> None:
        llm.chat.completions.create(model="m", messages=MESSAGES)
        for _chunk in llm.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ):
            pass

    calls()
    before = len(reached)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(
        MeterProvider(metric_readers=[reader]) if mode == "sdk" else metrics.NoOpMeterProvider()
    )
    calls()
    llm.chat.completions.create(model="m2", messages=MESSAGES)  # another shape of call
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data() if mode == "sdk" else None
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points.setdefault(metric.name, []).append(
                        [dict(point.attributes), point.count])
    ct.uninstrument(openai)
    client.close()
    return {"before": before, "after": len(reached) - before, "points": points}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
