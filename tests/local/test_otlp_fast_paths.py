"""The OTLP ingest's fast paths mean what the general paths mean.

An OTLP/JSON export is decoded in one typed pass when it has the usual shape, else read the
general way: both give the spans the protobuf encoding of the same export gives. The prompt and
response of ``gen_ai.input.messages`` / ``gen_ai.output.messages`` in the current
conventions' shape are read straight from the typed decoding; every other shape goes through
the general reading. Decoded spans are not tracked by the cyclic garbage collector (an export's
spans live for the whole request). A trace with the input/output token fields is priced without
the ``metadata.usage`` lookup, and still by its request model when its model has no price.
"""

from __future__ import annotations

import base64
import gc
import json
import os
from typing import Any

import httpx
import pytest
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk.models import TraceRequest
from kaizen_server import LocalServer
from kaizen_server.api.otlp import Export, SpanData, TaskMap, decode_export, to_traces
from kaizen_server.llm.pricing import PriceTable, trace_pricer


def _text(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content}


def _messages(*messages: dict[str, Any]) -> str:
    return json.dumps(list(messages))


# (raw messages attribute, the prompt and response text it gives); the same attribute is sent
# as both the input and the output messages
CASES: list[tuple[str, str | None]] = [
    (_messages({"role": "system", "parts": [_text("Summarize.")]},
               {"role": "user", "parts": [_text("ticket 7")]}), "ticket 7"),
    (_messages({"role": "user", "parts": [_text("one "), _text("two")]}), "one two"),
    # the last message has no text: the last text before it
    (_messages({"role": "user", "parts": [_text("first")]},
               {"role": "user", "parts": [{"type": "image", "content": "x"}]}), "first"),
    (_messages({"role": "assistant", "parts": [_text("only assistant")]}), "only assistant"),
    # the last user message wins over a later message of another role
    (_messages({"role": "user", "parts": [_text("asked")]},
               {"role": "assistant", "parts": [_text("later")]}), "asked"),
    (_messages({"role": "user", "parts": [_text("first question")]},
               {"role": "assistant", "parts": [_text("an answer")]},
               {"role": "user", "parts": [_text("second question")]}), "second question"),
    # no user message: the last text
    (_messages({"role": "system", "parts": [_text("a system text")]},
               {"role": "assistant", "parts": [_text("the last text")]}), "the last text"),
    # a message without parts: not the current shape, read the general way
    (_messages({"role": "user", "parts": []}, {"role": "system", "content": "old shape"}),
     "old shape"),
    (_messages({"role": "user", "content": "older shape"}), "older shape"),
    (_messages({"role": "user", "parts": [_text(None)]}), None),
    (_messages(), None),
    ("not json", None),
    (json.dumps({"role": "user"}), None),
    (_messages({"role": 5, "parts": [_text("a role that is not a string")]}),
     "a role that is not a string"),
]


@pytest.mark.parametrize(("raw", "text"), CASES)
def test_messages_give_the_last_user_text_in_every_shape(raw: str, text: str | None) -> None:
    span = SpanData("a" * 32, "b" * 16, "", "chat", "svc", 1, 2, False, {
        "ct.task.name": "t", "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": raw, "gen_ai.output.messages": raw,
    }, ())
    (trace,) = to_traces(Export([span], [], protobuf=True), TaskMap()).traces
    assert (trace.prompt_text, trace.response_text) == (text, text)


def test_a_messages_shape_the_fast_path_cannot_read_falls_back_to_the_flattened_form() -> None:
    span = SpanData("a" * 32, "b" * 16, "", "chat", "svc", 1, 2, False, {
        "ct.task.name": "t", "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": "[]", "gen_ai.output.messages": "{",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "flattened prompt",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "flat reply",
    }, ())
    (trace,) = to_traces(Export([span], [], protobuf=True), TaskMap()).traces
    assert (trace.prompt_text, trace.response_text) == ("flattened prompt", "flat reply")


def _protobuf_export(n: int) -> bytes:
    spans = [Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="chat",
                  attributes=[KeyValue(key="gen_ai.operation.name",
                                       value=AnyValue(string_value="chat")),
                              KeyValue(key="gen_ai.usage.input_tokens",
                                       value=AnyValue(int_value=3))])
             for _ in range(n)]
    body: bytes = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()
    return body


def test_decoded_spans_are_not_tracked_by_the_cyclic_collector() -> None:
    protobuf = decode_export(_protobuf_export(3), {"content-type": "application/x-protobuf"},
                             limit=1 << 20)
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat",
         "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}}]},
    ]}]}]}
    from_json = decode_export(json.dumps(body).encode(), {"content-type": "application/json"},
                              limit=1 << 20)
    spans = protobuf.spans + from_json.spans
    assert len(spans) == 4
    assert [gc.is_tracked(s) for s in spans] == [False] * 4
    assert [s.attributes["gen_ai.operation.name"] for s in spans] == ["chat"] * 4
    assert protobuf.spans[0].attributes["gen_ai.usage.input_tokens"] == 3


PRICES = PriceTable({"priced": {"input_per_mtok": 1.0, "output_per_mtok": 2.0,
                                "cached_input_per_mtok": 0.5}}, maintained=False)


def _trace(model: str, metadata: dict[str, Any] | None = None, *, input_tokens: int | None = None,
           output_tokens: int | None = None, cached_input_tokens: int | None = None
           ) -> TraceRequest:
    return TraceRequest(task_id="t", model=model, metadata=metadata, input_tokens=input_tokens,
                        output_tokens=output_tokens, cached_input_tokens=cached_input_tokens)


def test_the_token_fields_price_a_trace_with_cached_tokens_at_their_rate() -> None:
    price = trace_pricer(PRICES)
    assert price(_trace("priced", input_tokens=1_000_000, output_tokens=1_000_000,
                        cached_input_tokens=400_000)) == pytest.approx(0.6 + 0.2 + 2.0)
    assert price(_trace("priced", input_tokens=10)) is None  # no output count: no price
    assert price(_trace("unknown", input_tokens=10, output_tokens=10)) is None


def test_a_model_without_a_price_is_priced_by_the_otlp_request_model() -> None:
    price = trace_pricer(PRICES)
    otlp = {"otlp": {"request_model": "priced"}}
    assert price(_trace("priced-2025-01-01", otlp, input_tokens=2_000_000,
                        output_tokens=0)) == pytest.approx(2.0)
    assert price(_trace("priced-2025-01-01", {"otlp": {"request_model": "other"}},
                        input_tokens=2_000_000, output_tokens=0)) is None


def test_the_metadata_usage_still_prices_a_trace_without_the_token_fields() -> None:
    price = trace_pricer(PRICES)
    usage = {"usage": {"input_tokens": 1_000_000, "output_tokens": 500_000}}
    assert price(_trace("priced", usage)) == pytest.approx(2.0)


def _value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=_value(v))
                                                          for k, v in value.items()]))
    return AnyValue(string_value=value)


def _kvs(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in values.items()]


def _hex_ids(message: dict[str, Any]) -> dict[str, Any]:
    """OTLP/JSON spells ids in hex where proto3 JSON spells bytes in base64."""
    for resource_spans in message["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for field in ("traceId", "spanId", "parentSpanId"):
                    if field in span:
                        span[field] = base64.b64decode(span[field]).hex()
    return message


def test_json_and_protobuf_encodings_of_one_export_give_the_same_spans() -> None:
    parent = os.urandom(8)
    spans = [
        Span(trace_id=os.urandom(16), span_id=os.urandom(8), parent_span_id=parent,
             name="chat gpt-4o", start_time_unix_nano=1_700_000_000_000_000_000,
             end_time_unix_nano=1_700_000_000_250_000_000,
             status=Status(code=Status.STATUS_CODE_ERROR),
             attributes=_kvs({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 12,
                              "temperature": 0.5, "stream": True, "stop": ["a", "b"],
                              "nested": {"k": 1, "deeper": {"x": "y"}}, "empty": ""}),
             events=[Span.Event(name="gen_ai.choice", time_unix_nano=5,
                                attributes=_kvs({"message": '{"content": "hi"}', "index": 0}))]),
        Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="tool",
             attributes=_kvs({"ct.task.name": "t"})),
        Span(trace_id=bytes(16), span_id=os.urandom(8), name="no ids"),
    ]
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=_kvs({"service.name": "bot", "host": "h"})),
        scope_spans=[ScopeSpans(spans=spans)])])
    protobuf = decode_export(request.SerializeToString(),
                             {"content-type": "application/x-protobuf"}, limit=1 << 20)
    as_json = json.dumps(_hex_ids(MessageToDict(request))).encode()
    from_json = decode_export(as_json, {"content-type": "application/json"}, limit=1 << 20)
    assert len(protobuf.spans) == 2
    assert from_json.spans == protobuf.spans
    assert [r.replace("traceId/spanId", "trace_id/span_id") for r in from_json.rejected] == (
        protobuf.rejected)
    first = from_json.spans[0]
    assert (first.parent_id, first.service, first.error, first.end - first.start) == (
        parent.hex(), "bot", True, 250_000_000)
    assert first.attributes["nested"] == {"k": 1, "deeper": {"x": "y"}}
    assert first.attributes["stop"] == ["a", "b"]
    assert first.events[0][1] == {"message": '{"content": "hi"}', "index": 0}


def _json_span(**fields: Any) -> dict[str, Any]:
    return {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat", **fields}


@pytest.mark.parametrize(("span", "read"), [
    # shapes the typed pass does not take: read the general way
    (_json_span(startTimeUnixNano=1.5e18), lambda s: s.start == 1_500_000_000_000_000_000),
    (_json_span(status={"code": 2.0}), lambda s: s.error is True),
    (_json_span(name=7), lambda s: s.name == ""),
    (_json_span(attributes=[{"key": "k", "value": {"doubleValue": "NaN"}}, "x"]),
     lambda s: s.attributes == {"k": None}),
    (_json_span(events=[{"name": 3}]), lambda s: s.events == [("3", {})]),
    # shapes it takes
    (_json_span(startTimeUnixNano="17", endTimeUnixNano=20),
     lambda s: (s.start, s.end) == (17, 20)),
    (_json_span(traceId="AB" * 16, parentSpanId="EF" * 8),
     lambda s: (s.trace_id, s.parent_id) == ("ab" * 16, "ef" * 8)),
    (_json_span(attributes=[{"key": "k", "value": {"intValue": "12", "stringValue": None}},
                            {"key": "n", "value": None}, {"key": "b", "value": {}}]),
     lambda s: s.attributes == {"k": None, "n": None, "b": None}),
])
def test_every_json_span_shape_reads_as_before(span: dict[str, Any], read: Any) -> None:
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span, "not a span"]}]}]}
    export = decode_export(json.dumps(body).encode(), {"content-type": "application/json"},
                           limit=1 << 20)
    (decoded,) = export.spans
    assert read(decoded)


# --- end to end, on SQLite and on PostgreSQL --------------------------------------------------


def _chat_span(task: str, n: int) -> Span:
    return Span(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="chat gpt-4o-mini",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_012_500_000,
        attributes=_kvs({
            "ct.task.name": task, "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 30,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.input.messages": _messages({"role": "user", "parts": [_text(f"ask {n}")]}),
            "gen_ai.output.messages": _messages(
                {"role": "assistant", "parts": [_text(f"answer {n}")]}),
        }))


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_an_export_is_stored_once_with_content_and_cost_on_each_backend(
    local_server: LocalServer, encoding: str
) -> None:
    task = f"fast-{encoding}-{os.urandom(4).hex()}"
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=_kvs({"service.name": "bot"})),
        scope_spans=[ScopeSpans(spans=[_chat_span(task, n) for n in range(40)])])])
    if encoding == "protobuf":
        body, media = request.SerializeToString(), "application/x-protobuf"
    else:
        body, media = json.dumps(_hex_ids(MessageToDict(request))).encode(), "application/json"
    with httpx.Client(base_url=local_server.base_url, timeout=30,
                      headers={"X-API-Key": local_server.api_key}) as http:
        for _ in range(2):  # the exporter's retry stores nothing twice
            resp = http.post("/v1/traces", content=body, headers={"Content-Type": media})
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"] == media
        page = http.get("/api/v1/traces", params={"task_id": task, "limit": 100})
    assert page.status_code == 200, page.text
    traces = page.json()
    assert len(traces) == 40
    assert sorted(t["prompt_text"] for t in traces) == sorted(f"ask {n}" for n in range(40))
    assert {t["response_text"].replace("answer", "ask") for t in traces} == {
        t["prompt_text"] for t in traces}
    assert {(t["model"], t["tokens"], t["metadata"]["otlp"]["service"]) for t in traces} == {
        ("gpt-4o-mini", 42, "bot")}
    assert all(t["cost_usd"] is not None and t["cost_usd"] > 0 for t in traces)
