"""``POST /v1/traces``: OTLP/HTTP exports (protobuf and JSON, gzip) against a real local server.

What an export becomes (a trace per LLM span, idempotent by span), the OTLP partial-success
answer in the request's encoding, and bad input: a wrong content type, bytes that are not
protobuf, a truncated body, 10,000-deep attribute values, huge values, a gzip bomb, a span
without ids. Nothing of a refused request is stored.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from kaizen_server import LocalServer
from kaizen_server.api.otlp import MAX_ATTRIBUTE_CHARS, TaskMap, trace_id_of
from kaizen_server.llm.pricing import FALLBACK_PRICE, PriceTable

pytestmark = [pytest.mark.e2e]

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server of this module's own: a task map, and a custom price for a local model."""
    with LocalServer(otlp_task_map="span:mapped call=by-span,agent:helper=by-agent",
                     llm_prices={"my-llama": (1.0, 2.0)}) as s:
        yield s


@pytest.fixture
def http(server: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {server.api_key}"}) as c:
        yield c


@pytest.fixture
def task() -> str:
    return f"otlp-{uuid.uuid4().hex[:10]}"


def _attrs(values: dict[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        else:
            any_value = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


def _ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def llm_span(task: str | None = None, *, name: str = "chat gpt-4o-mini", error: bool = False,
             ids: tuple[bytes, bytes] | None = None, parent: bytes = b"",
             extra: dict[str, Any] | None = None) -> Span:
    trace_id, span_id = ids or _ids()
    values: dict[str, Any] = {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 200,
        "gen_ai.input.messages": json.dumps([
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": "hello"}]}]),
        "gen_ai.output.messages": json.dumps([
            {"role": "assistant", "parts": [{"type": "text", "content": "hi"}]}]),
        **({"ct.task.name": task} if task else {}),
        **(extra or {}),
    }
    return Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_000_250_000_000,
                status=Status(code=2 if error else 0), attributes=_attrs(values))


def export(*spans: Span, service: str = "svc") -> bytes:
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": _attrs({"service.name": service})},
        scope_spans=[ScopeSpans(spans=list(spans))],
    )])
    return request.SerializeToString()


def _traces(http: httpx.Client, task: str) -> list[dict[str, Any]]:
    resp = http.get("/api/v1/traces", params={"task_id": task, "limit": 1000},
                    headers={"X-API-Key": http.headers["Authorization"][7:]})
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()
    return found


def _count(http: httpx.Client) -> int:
    """Traces stored on the module's server (each test stores fewer than a page)."""
    resp = http.get("/api/v1/traces", params={"limit": 1000},
                    headers={"X-API-Key": http.headers["Authorization"][7:]})
    return len(resp.json())


def _answer(resp: httpx.Response) -> ExportTraceServiceResponse:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-protobuf"
    out = ExportTraceServiceResponse()
    out.ParseFromString(resp.content)
    return out


# --- what an export becomes ------------------------------------------------------------------


def test_an_llm_span_becomes_one_trace_with_cost_and_a_resend_changes_nothing(
    http: httpx.Client, task: str
) -> None:
    ids = _ids()
    body = export(llm_span(task, ids=ids))
    first = _answer(http.post("/v1/traces", content=body, headers=PROTOBUF))
    assert not first.HasField("partial_success")
    again = _answer(http.post("/v1/traces", content=gzip.compress(body),
                              headers={**PROTOBUF, "Content-Encoding": "gzip"}))
    assert not again.HasField("partial_success")
    (trace,) = _traces(http, task)
    assert trace["id"] == str(trace_id_of(ids[0].hex(), ids[1].hex()))
    assert (trace["prompt_text"], trace["response_text"]) == ("hello", "hi")
    assert (trace["model"], trace["tokens"]) == ("gpt-4o-mini-2024-07-18", 1200)
    assert trace["latency_ms"] == pytest.approx(250.0)
    expected = PriceTable(environ={}).trace_cost("gpt-4o-mini-2024-07-18",
                                                 input_tokens=1000, output_tokens=200)
    assert expected is not None and trace["cost_usd"] == pytest.approx(expected)
    assert trace["metadata"]["otlp"]["span_id"] == ids[1].hex()


def test_previous_and_openinference_names_and_span_events(http: httpx.Client, task: str) -> None:
    old = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="openai.chat",
               attributes=_attrs({
                   "ct.task.name": task, "llm.request.type": "chat",
                   "gen_ai.request.model": "my-llama", "gen_ai.usage.prompt_tokens": 10,
                   "gen_ai.usage.completion_tokens": 5, "user.id": "u1", "session.id": "s1"}),
               events=[Span.Event(name="gen_ai.user.message",
                                  attributes=_attrs({"content": "from an event"})),
                       Span.Event(name="gen_ai.choice",
                                  attributes=_attrs({"message": '{"content": "event reply"}'}))])
    inference = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="ChatCompletion",
                     attributes=_attrs({
                         "ct.task.name": task, "openinference.span.kind": "LLM",
                         "llm.model_name": "never-priced-model", "llm.token_count.prompt": 7,
                         "llm.token_count.completion": 3, "llm.token_count.total": 10,
                         "llm.input_messages.0.message.role": "user",
                         "llm.input_messages.0.message.content": "openinference prompt",
                         "llm.output_messages.0.message.role": "assistant",
                         "llm.output_messages.0.message.content": "openinference reply"}))
    assert not _answer(http.post("/v1/traces", content=export(old, inference),
                                 headers=PROTOBUF)).HasField("partial_success")
    by_model = {t["model"]: t for t in _traces(http, task)}
    llama, unknown = by_model["my-llama"], by_model["never-priced-model"]
    assert (llama["prompt_text"], llama["response_text"]) == ("from an event", "event reply")
    assert (llama["user_id"], llama["session_id"], llama["tokens"]) == ("u1", "s1", 15)
    assert llama["cost_usd"] == pytest.approx((10 * 1.0 + 5 * 2.0) / 1e6)  # the custom price
    assert (unknown["prompt_text"], unknown["response_text"]) == ("openinference prompt",
                                                                  "openinference reply")
    assert unknown["tokens"] == 10 and unknown["cost_usd"] is None  # never a guessed price
    models = http.get("/api/v1/models/unpriced",
                      headers={"X-API-Key": http.headers["Authorization"][7:]}).json()
    assert {"model": "never-priced-model", "traces": 1} in models
    assert "my-llama" not in {m["model"] for m in models}


def test_the_task_comes_from_an_ancestor_then_the_task_map(http: httpx.Client, task: str) -> None:
    trace_id = os.urandom(16)
    root = Span(trace_id=trace_id, span_id=os.urandom(8), name="request",
                attributes=_attrs({"ct.task.name": task}))
    agent = Span(trace_id=trace_id, span_id=os.urandom(8), parent_span_id=root.span_id,
                 name="invoke_agent", attributes=_attrs({"gen_ai.operation.name": "invoke_agent",
                                                         "gen_ai.agent.name": "helper"}))
    nested = llm_span(ids=(trace_id, os.urandom(8)), parent=agent.span_id)
    by_agent = llm_span(parent=b"", extra={"gen_ai.agent.name": "helper"})
    by_span = llm_span(name="mapped call")
    answer = _answer(http.post("/v1/traces", content=export(root, agent, nested, by_agent,
                                                              by_span), headers=PROTOBUF))
    # the two spans that are not LLM calls are dropped and counted, not rejected
    assert answer.partial_success.rejected_spans == 0
    assert "2 spans are not LLM calls" in answer.partial_success.error_message
    assert [t["id"] for t in _traces(http, task)] == [
        str(trace_id_of(trace_id.hex(), nested.span_id.hex()))]
    assert {t["metadata"]["otlp"]["span_id"] for t in _traces(http, "by-agent")} >= {
        by_agent.span_id.hex()}
    assert by_span.span_id.hex() in {t["metadata"]["otlp"]["span_id"]
                                     for t in _traces(http, "by-span")}


def test_partial_success_names_what_was_left_out_in_either_encoding(
    http: httpx.Client, task: str
) -> None:
    before = _count(http)
    spans = (llm_span(task), llm_span(None), llm_span(task, ids=(b"", b"")),
             Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="GET /"))
    answer = _answer(http.post("/v1/traces", content=export(*spans), headers=PROTOBUF))
    assert answer.partial_success.rejected_spans == 2
    message = answer.partial_success.error_message
    assert "no valid trace_id/span_id" in message and "has no task" in message
    assert "1 spans are not LLM calls" in message
    assert _count(http) == before + 1
    as_json = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "chat",
         "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]},
        {"traceId": "", "spanId": "", "name": "no ids"}]}]}]}
    resp = http.post("/v1/traces", json=as_json)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    partial = resp.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "2"  # proto3 JSON: int64 as a string
    assert "has no task" in partial["errorMessage"]
    assert _count(http) == before + 1


def test_a_json_export_with_string_ints(http: httpx.Client, task: str) -> None:
    body = {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
            "name": "chat", "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000100000000", "status": {"code": 2},
            "attributes": [
                {"key": "ct.task.name", "value": {"stringValue": task}},
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 20}},
                {"key": "gen_ai.prompt.0.role", "value": {"stringValue": "user"}},
                {"key": "gen_ai.prompt.0.content", "value": {"stringValue": "json prompt"}},
            ]}]}]}]}
    resp = http.post("/v1/traces", json=body)
    assert resp.status_code == 200 and resp.json() == {}
    (trace,) = _traces(http, task)
    assert (trace["prompt_text"], trace["tokens"], trace["error"]) == ("json prompt", 120, True)
    assert trace["latency_ms"] == pytest.approx(100.0) and trace["cost_usd"] > 0


# --- bad input -------------------------------------------------------------------------------


def _deep_kvlist(depth: int) -> bytes:
    """An OTLP export whose one attribute is *depth* kvlists deep (encoded by hand)."""

    def field(number: int, payload: bytes) -> bytes:
        size, length = len(payload), b""
        while True:
            byte = size & 0x7F
            size >>= 7
            length += bytes([byte | (0x80 if size else 0)])
            if not size:
                break
        return bytes([(number << 3) | 2]) + length + payload

    value = field(1, b"x")  # AnyValue.string_value
    for _ in range(depth):
        value = field(6, field(1, field(1, b"k") + field(2, value)))  # kvlist -> values -> kv
    attribute = field(1, b"deep") + field(2, value)
    span = field(1, os.urandom(16)) + field(2, os.urandom(8)) + field(5, b"chat") + field(
        9, attribute)
    return field(1, field(2, field(2, span)))


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Content-Type": "text/plain"}, b"hello", 415),
    ({}, b"hello", 415),
    ({**PROTOBUF, "Content-Encoding": "br"}, b"hello", 415),
    (PROTOBUF, b"\xff\xff\xff\xff not protobuf", 400),
    (JSON, b"{not json", 400),
    (JSON, b'{"resourceSpans": 3}', 400),
    ({**PROTOBUF, "Content-Encoding": "gzip"}, b"not gzip", 400),
])
def test_bad_requests_get_a_4xx_naming_the_problem(
    http: httpx.Client, headers: dict[str, str], body: bytes, status: int
) -> None:
    before = _count(http)
    resp = http.post("/v1/traces", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"]
    assert _count(http) == before


def test_a_truncated_export_stores_nothing(http: httpx.Client, task: str) -> None:
    body = export(*(llm_span(task) for _ in range(20)))
    before = _count(http)
    for cut in (len(body) - 3, len(body) // 2):
        assert http.post("/v1/traces", content=body[:cut], headers=PROTOBUF).status_code == 400
    truncated_gzip = gzip.compress(body)[:-12]
    resp = http.post("/v1/traces", content=truncated_gzip,
                     headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert resp.status_code == 400 and "truncated" in resp.json()["detail"]
    assert _count(http) == before


def test_deep_attribute_values_are_refused(http: httpx.Client) -> None:
    before = _count(http)
    resp = http.post("/v1/traces", content=_deep_kvlist(10_000), headers=PROTOBUF)
    assert resp.status_code == 400 and "ExportTraceServiceRequest" in resp.json()["detail"]
    depth = 10_000  # json.dumps cannot write it: by hand
    deep = ('{"kvlistValue": {"values": [{"key": "k", "value": ' * depth + '{"stringValue": "x"}'
            + "}]}}" * depth)
    body = ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "' + "ab" * 16
            + '", "spanId": "' + "cd" * 8 + '", "name": "chat", "attributes": [{"key": "deep",'
            ' "value": ' + deep + "}]}]}]}]}")
    resp = http.post("/v1/traces", content=body.encode(), headers=JSON)
    assert resp.status_code == 400 and "deeply" in resp.json()["detail"]
    assert _count(http) == before


def test_a_huge_value_rejects_its_span_and_a_gzip_bomb_is_413(
    http: httpx.Client, task: str
) -> None:
    before = _count(http)
    huge = llm_span(task, extra={"gen_ai.input.messages": json.dumps(
        [{"role": "user", "content": "x" * (MAX_ATTRIBUTE_CHARS + 1)}])})
    answer = _answer(http.post("/v1/traces", content=export(huge), headers=PROTOBUF))
    assert answer.partial_success.rejected_spans == 1
    assert f"over {MAX_ATTRIBUTE_CHARS} characters" in answer.partial_success.error_message
    bomb = gzip.compress(b"\0" * (17 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    resp = http.post("/v1/traces", content=bomb, headers={**PROTOBUF, "Content-Encoding": "gzip"})
    assert resp.status_code == 413 and "decompresses" in resp.json()["detail"]
    assert _count(http) == before


def test_keys_x_api_key_or_bearer(server: LocalServer, task: str) -> None:
    body = export(llm_span(task))
    with httpx.Client(base_url=server.base_url, timeout=10) as anon:
        assert anon.post("/v1/traces", content=body, headers=PROTOBUF).status_code == 401
        wrong = {**PROTOBUF, "Authorization": "Bearer nope"}
        assert anon.post("/v1/traces", content=body, headers=wrong).status_code == 401
        key = {**PROTOBUF, "X-API-Key": server.api_key}
        assert anon.post("/v1/traces", content=body, headers=key).status_code == 200
        # only the OTLP route takes a bearer token
        bearer = {"Authorization": f"Bearer {server.api_key}"}
        assert anon.get("/api/v1/traces", headers=bearer).status_code == 401


# --- settings --------------------------------------------------------------------------------


def test_the_task_map_spec_and_file(tmp_path: Path) -> None:
    parsed = TaskMap.parse("span:chat gpt-4o=summarize, service:support-bot=support,agent:a=b")
    assert parsed.spans == {"chat gpt-4o": "summarize"}
    assert parsed.services == {"support-bot": "support"} and parsed.agents == {"a": "b"}
    for bad in ("chat=summarize", "span:=x", "span:x=", "model:x=y"):
        with pytest.raises(ValueError, match="KIND:NAME=TASK"):
            TaskMap.parse(bad)
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"service": {"bot": "support"}}))
    assert TaskMap.parse(f"@{path}").services == {"bot": "support"}
    path.write_text(json.dumps({"model": {"x": "y"}}))
    with pytest.raises(ValueError, match="span, agent"):
        TaskMap.parse(f"@{path}")


def test_prices_unknown_models_have_no_trace_cost_but_a_budget_price(tmp_path: Path) -> None:
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(json.dumps({
        "house-model": {"input_per_mtok": 1, "output_per_mtok": 4, "cached_input_per_mtok": 0.5},
        "gpt-4o-mini": [9, 9],
    }))
    prices = PriceTable(environ={"KAIZEN_PRICES_FILE": str(prices_file)})
    assert prices.trace_cost("house-model", input_tokens=1000, output_tokens=100,
                             cached_input_tokens=400) == pytest.approx(
        (600 * 1 + 100 * 4 + 400 * 0.5) / 1e6)
    assert prices.rate("gpt-4o-mini") == (9.0, 9.0, 9.0)  # configured before the table
    assert prices.trace_cost("nobody-knows-me", input_tokens=1, output_tokens=1) is None
    assert prices.price("nobody-knows-me") == FALLBACK_PRICE  # budgets stay safe
    maintained = PriceTable(environ={})
    assert maintained.rate("gpt-5-mini") is not None  # the table knows more than 8 models
    assert maintained.trace_cost("gpt-4o-mini", input_tokens=None, output_tokens=3) is None
    prices_file.write_text(json.dumps({"m": {"input_per_mtok": -1, "output_per_mtok": 1}}))
    with pytest.raises(ValueError, match="prices file"):
        PriceTable(environ={"KAIZEN_PRICES_FILE": str(prices_file)})


def test_the_server_starts_without_importing_protobuf_or_the_price_data() -> None:
    code = (
        "import sys\n"
        "from kaizen_server import LocalServer\n"
        "with LocalServer() as s:\n"
        "    pass\n"
        "print(sorted(m for m in ('opentelemetry.proto', 'google.protobuf', 'genai_prices')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             str(Path(__file__).resolve().parent.parent.parent / p)
                             for p in (".", "server"))})
    assert out.stdout.strip() == "[]", out.stderr


def test_a_prices_file_given_to_the_server_prices_its_traces(tmp_path: Path, task: str) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"house-model": {"input_per_mtok": 2, "output_per_mtok": 8}}))
    span = llm_span(task, extra={"gen_ai.request.model": "house-model",
                                 "gen_ai.response.model": "house-model"})
    with LocalServer(prices_file=str(prices)) as s, httpx.Client(
        base_url=s.base_url, headers={"X-API-Key": s.api_key}, timeout=30
    ) as c:
        assert c.post("/v1/traces", content=export(span), headers=PROTOBUF).status_code == 200
        (trace,) = c.get("/api/v1/traces", params={"task_id": task}).json()
    assert trace["cost_usd"] == pytest.approx((1000 * 2 + 200 * 8) / 1e6)
