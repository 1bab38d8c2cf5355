"""OTLP trace ingest: ``POST /v1/traces`` spans of any OpenTelemetry GenAI instrumentation
become CT traces.

`decode_export` reads an OTLP/HTTP export body (protobuf or JSON, gzip or not, the decompressed
size capped) into plain `SpanData`; `to_traces` maps the spans that are LLM calls to
`TraceRequest`s, which the store's ordinary ingest path keeps; `answer` encodes the OTLP
``ExportTraceServiceResponse`` (its ``partial_success``) in the request's encoding.

Attribute names read, the current GenAI conventions first, then the previous ones, then
OpenLLMetry's and OpenInference's: model ``gen_ai.response.model`` / ``gen_ai.request.model`` /
``llm.model_name``; tokens ``gen_ai.usage.input_tokens`` / ``gen_ai.usage.prompt_tokens`` /
``llm.token_count.prompt`` (output and cached alike); content ``gen_ai.input.messages`` and
``gen_ai.output.messages``, ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``, the span events
``gen_ai.user.message`` / ``gen_ai.choice`` / ``gen_ai.content.prompt``, and
``llm.input_messages.N.message.*`` / ``input.value`` / ``output.value``.

The task of a span: its ``ct.task.name`` attribute, else the nearest ancestor's in the same
export, else the `TaskMap` (span name, ``gen_ai.agent.name``, service name). An LLM span with no
task is rejected (counted in ``rejected_spans`` and named in the message); a span that is not an
LLM call (a tool, an agent, an HTTP request) is dropped and counted in the message only.

The protobuf classes (``opentelemetry-proto``) are imported on the first protobuf request, so
the server starts without them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import msgspec

from kaizen_sdk.models import TraceRequest

__all__ = [
    "MAX_ATTRIBUTE_CHARS",
    "OTLP_NAMESPACE",
    "Export",
    "ExportResponse",
    "Mapped",
    "OtlpError",
    "PartialSuccess",
    "SpanData",
    "TaskMap",
    "answer",
    "bearer_key",
    "decode_export",
    "to_traces",
    "trace_id_of",
]

logger = logging.getLogger("kaizen_server")

MAX_ATTRIBUTE_CHARS = 1024 * 1024
"""Longest prompt or response text kept from a span; a span with a longer one is rejected."""

OTLP_NAMESPACE = uuid.UUID("6f1d1d6c-6b1e-5a51-9c0e-2b7f3c1a0e57")
"""UUID5 namespace of the CT trace ids made from OTLP ``trace_id`` + ``span_id``."""

_NAMESPACE_BYTES = OTLP_NAMESPACE.bytes
# RFC 4122 version 5: the variant bits 10, the version nibble 5
_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_V5 = (0x8000 << 48) | (5 << 76)
_new_uuid = object.__new__
_set_field = object.__setattr__
_sha1 = hashlib.sha1
_from_bytes = int.from_bytes
_UUID = uuid.UUID
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_NO_IDS = ("0" * 32, "0" * 16)
_MAX_DEPTH = 16  # nesting of AnyValue arrays / kvlists read; deeper values are dropped
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion"})


class PartialSuccess(msgspec.Struct, kw_only=True, rename="camel"):
    """OTLP ``ExportTracePartialSuccess`` (JSON: ``rejectedSpans`` is an int64 string)."""

    rejected_spans: str = "0"
    error_message: str = ""


class ExportResponse(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """OTLP ``ExportTraceServiceResponse`` as JSON (the OpenAPI document's description)."""

    partial_success: PartialSuccess | None = None


class OtlpError(Exception):
    """A request this endpoint cannot take at all: *status* and a sentence naming the problem."""

    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class SpanData(msgspec.Struct, gc=False):
    """One span as the mapping needs it (ids as hex; times in Unix nanoseconds).

    Not tracked by the cyclic garbage collector (nothing it refers to refers back to it): an
    export's spans live for the whole request, and tracked, each counted towards the
    collector's next full pass over the server's heap.
    """

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start: int
    end: int
    error: bool
    attributes: dict[str, Any]
    events: Sequence[tuple[str, dict[str, Any]]]


@dataclasses.dataclass(slots=True)
class Export:
    """A decoded export: its spans, those rejected while decoding (with why), its encoding."""

    spans: list[SpanData]
    rejected: list[str]
    protobuf: bool


@dataclasses.dataclass(frozen=True)
class TaskMap:
    """Which task an LLM span without ``ct.task.name`` belongs to, by span name, agent name
    (``gen_ai.agent.name``) or service name (``service.name``), tried in that order.

    Example::

        TaskMap.parse("span:chat gpt-4o=summarize,service:support-bot=support")
    """

    spans: Mapping[str, str] = dataclasses.field(default_factory=dict)
    agents: Mapping[str, str] = dataclasses.field(default_factory=dict)
    services: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None) -> TaskMap:
        """Read ``KIND:NAME=TASK`` pairs separated by commas (KIND: ``span``, ``agent``,
        ``service``), or a JSON file ``{"span": {NAME: TASK}, "agent": .., "service": ..}``
        given as ``@PATH``; raise `ValueError` naming the bad entry."""
        if not spec or not spec.strip():
            return cls()
        parts: dict[str, dict[str, str]] = {"span": {}, "agent": {}, "service": {}}
        if spec.startswith("@"):
            try:
                with open(spec[1:], encoding="utf-8") as handle:
                    loaded = json.load(handle)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read the OTLP task map {spec[1:]}: {exc}") from None
            if not isinstance(loaded, dict) or set(loaded) - set(parts) or not all(
                isinstance(v, dict) and all(isinstance(t, str) and t for t in v.values())
                for v in loaded.values()
            ):
                raise ValueError(
                    f"the OTLP task map {spec[1:]} must be a JSON object with keys span, agent,"
                    " service, each an object of name -> task name"
                )
            for kind, mapping in loaded.items():
                parts[kind].update({str(k): str(v) for k, v in mapping.items()})
        else:
            for entry in spec.split(","):
                kind, _, rest = entry.strip().partition(":")
                name, eq, task = rest.rpartition("=")
                if kind not in parts or not eq or not name or not task.strip():
                    raise ValueError(
                        f"OTLP task map entry {entry.strip()!r} must be KIND:NAME=TASK with KIND"
                        " one of span, agent, service"
                    )
                parts[kind][name] = task.strip()
        return cls(spans=parts["span"], agents=parts["agent"], services=parts["service"])

    def task_of(self, span: SpanData, agent: str | None) -> str | None:
        """The mapped task of *span* (``None`` when nothing matches)."""
        return (
            self.spans.get(span.name)
            or (self.agents.get(agent) if agent else None)
            or self.services.get(span.service)
        )


def bearer_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer KEY`` header (``None`` without one)."""
    if header is None:
        return None
    scheme, _, key = header.strip().partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def trace_id_of(trace_id: str, span_id: str) -> uuid.UUID:
    """The CT trace id of the span *span_id* of trace *trace_id* (hex): the same every export
    (``uuid5(OTLP_NAMESPACE, trace_id + span_id)``)."""
    value = (_from_bytes(_sha1(_NAMESPACE_BYTES + (trace_id + span_id).encode()).digest()[:16],
                         "big") & _UUID_CLEAR) | _UUID_V5
    made = _new_uuid(_UUID)  # what UUID(bytes=..., version=5) makes, without its checks
    _set_field(made, "int", value)
    _set_field(made, "is_safe", _UNKNOWN_SAFETY)
    return made


# --- decoding ------------------------------------------------------------------------------


def _media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """*body* decompressed (gzip or deflate), never past *limit* bytes (a gzip bomb is 413)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Encoding {encoding!r} is not supported: send gzip or none.")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpError(HTTPStatus.BAD_REQUEST,
                        f"The request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise OtlpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"The request body decompresses to over {limit} bytes.")
    if not inflater.eof:
        raise OtlpError(HTTPStatus.BAD_REQUEST, f"The {encoding} request body is truncated.")
    return out


def decode_export(body: bytes, headers: Mapping[str, str], *, limit: int) -> Export:
    """Decode an OTLP/HTTP trace export; raise `OtlpError` (400, 413, 415) naming the problem.

    *headers* have lower-case names; *limit* caps the decompressed size.
    """
    media = _media_type(headers)
    if media not in (_PROTOBUF, _JSON):
        raise OtlpError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type {media or '(none)'!r} is not OTLP: send application/x-protobuf or"
            " application/json.",
        )
    data = _inflate(body, headers.get("content-encoding", "").strip().lower(), limit)
    if media == _PROTOBUF:
        return _from_protobuf(data)
    return _from_json(data)


def _from_protobuf(data: bytes) -> Export:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError (untyped), RecursionError
        raise OtlpError(HTTPStatus.BAD_REQUEST,
                        f"The request body is not an OTLP ExportTraceServiceRequest: {exc}"
                        ) from None
    spans: list[SpanData] = []
    rejected: list[str] = []
    add = spans.append
    no_trace, no_span = _NO_IDS
    for resource_spans in request.resource_spans:
        service = ""
        for kv in resource_spans.resource.attributes:
            if kv.key == "service.name":
                service = str(_pb_value(kv.value, 0) or "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                raw_trace, raw_span = span.trace_id, span.span_id
                if (len(raw_trace) != 16 or len(raw_span) != 8
                        or (trace_id := raw_trace.hex()) == no_trace
                        or (span_id := raw_span.hex()) == no_span):
                    rejected.append(f"span {span.name!r} has no valid trace_id/span_id")
                    continue
                # `_pb_attributes` inlined: this loop is most of an export's decoding
                attrs: dict[str, Any] = {}
                for kv in span.attributes:
                    value = kv.value
                    # the usual cases read without WhichOneof: a string, a non-zero integer
                    attrs[kv.key] = value.string_value or value.int_value or _pb_value(value, 0)
                events = span.events
                parent = span.parent_span_id
                add(SpanData(  # positional: the field order of SpanData
                    trace_id, span_id, parent.hex() if parent else "", span.name, service,
                    span.start_time_unix_nano, span.end_time_unix_nano,
                    span.status.code == 2, attrs,
                    [(e.name, _pb_attributes(e.attributes)) for e in events] if events else (),
                ))
    return Export(spans, rejected, protobuf=True)


def _pb_attributes(items: Iterable[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:
        value = kv.value
        # the usual cases read without WhichOneof: a string, a non-zero integer
        out[kv.key] = value.string_value or value.int_value or _pb_value(value, 0)
    return out


def _pb_value(value: Any, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if depth >= _MAX_DEPTH:
        return None
    if kind == "array_value":
        return [_pb_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return None  # bytes, or no value


def _valid_ids(trace_id: str, span_id: str) -> bool:
    return (len(trace_id) == 32 and len(span_id) == 16
            and trace_id != "0" * 32 and span_id != "0" * 16)


# The usual OTLP/JSON export, decoded in one typed pass: any body these structs do not take
# (another type anywhere, a non-object item, a float time, too deep) is read by the general
# `_from_json` instead, which means the same for every body both read.
_UNSET = msgspec.UNSET


class _JAnyValue(msgspec.Struct, gc=False, rename="camel"):
    string_value: str | msgspec.UnsetType | None = _UNSET
    int_value: int | str | msgspec.UnsetType | None = _UNSET
    double_value: float | msgspec.UnsetType | None = _UNSET
    bool_value: bool | msgspec.UnsetType | None = _UNSET
    array_value: Any = _UNSET
    kvlist_value: Any = _UNSET


class _JKeyValue(msgspec.Struct, gc=False):
    key: str
    value: _JAnyValue | None = None


class _JEvent(msgspec.Struct, gc=False):
    name: str | None = None
    attributes: list[_JKeyValue] = []


class _JStatus(msgspec.Struct, gc=False):
    code: int | str | None = None


class _JSpan(msgspec.Struct, gc=False, rename="camel"):
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    name: str | None = None
    start_time_unix_nano: int | str | None = None
    end_time_unix_nano: int | str | None = None
    attributes: list[_JKeyValue] = []
    events: list[_JEvent] = []
    status: _JStatus | None = None


class _JScopeSpans(msgspec.Struct, gc=False):
    spans: list[_JSpan] = []


class _JResource(msgspec.Struct, gc=False):
    attributes: list[_JKeyValue] = []


class _JResourceSpans(msgspec.Struct, gc=False, rename="camel"):
    resource: _JResource | None = None
    scope_spans: list[_JScopeSpans] = []


class _JRequest(msgspec.Struct, gc=False, rename="camel"):
    resource_spans: list[_JResourceSpans] = []


_JSON_EXPORT = msgspec.json.Decoder(_JRequest)


def _typed_value(value: _JAnyValue | None) -> Any:
    """`_json_value` of the AnyValue object *value* decoded as `_JAnyValue`."""
    if value is None:
        return None
    if value.string_value is not _UNSET:
        return value.string_value
    if value.int_value is not _UNSET:
        return _nanos(value.int_value)
    if value.double_value is not _UNSET:
        return value.double_value
    if value.bool_value is not _UNSET:
        return value.bool_value is True
    if value.array_value is not _UNSET:
        return _json_value({"arrayValue": value.array_value}, 0)
    if value.kvlist_value is not _UNSET:
        return _json_value({"kvlistValue": value.kvlist_value}, 0)
    return None


def _typed_attrs(items: list[_JKeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in items:
        value = kv.value
        # the usual case first: a string
        out[kv.key] = (text if value is not None and type(text := value.string_value) is str
                       else _typed_value(value))
    return out


def _from_typed_json(data: bytes) -> Export | None:
    """The export of *data* read by `_JSON_EXPORT`, ``None`` when it does not take it."""
    try:
        request = _JSON_EXPORT.decode(data)
    except (msgspec.DecodeError, RecursionError):  # ValidationError included
        return None
    spans: list[SpanData] = []
    rejected: list[str] = []
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource
        service = str(
            (_typed_attrs(resource.attributes).get("service.name") if resource else None) or "")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                name = span.name or ""
                trace_id, span_id = _hex(span.trace_id), _hex(span.span_id)
                if trace_id is None or span_id is None or not _valid_ids(trace_id, span_id):
                    rejected.append(f"span {name!r} has no valid traceId/spanId")
                    continue
                status = span.status
                spans.append(SpanData(  # positional: the field order of SpanData
                    trace_id, span_id, _hex(span.parent_span_id) or "", name, service,
                    _nanos(span.start_time_unix_nano), _nanos(span.end_time_unix_nano),
                    status is not None and status.code in (2, "STATUS_CODE_ERROR"),
                    _typed_attrs(span.attributes),
                    [(e.name or "", _typed_attrs(e.attributes)) for e in span.events]
                    if span.events else (),
                ))
    return Export(spans, rejected, protobuf=False)


def _from_json(data: bytes) -> Export:
    typed = _from_typed_json(data)
    if typed is not None:
        return typed
    try:
        request = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise OtlpError(HTTPStatus.BAD_REQUEST,
                        f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise OtlpError(HTTPStatus.BAD_REQUEST,
                        "The request body is nested too deeply (JSON depth limit).") from None
    if not isinstance(request, dict):
        raise OtlpError(HTTPStatus.BAD_REQUEST,
                        "The request body must be a JSON ExportTraceServiceRequest object.")
    spans: list[SpanData] = []
    rejected: list[str] = []
    for resource_spans in _list(request.get("resourceSpans"), "resourceSpans"):
        resource = _dict(resource_spans.get("resource"))
        service = str(_json_attrs(resource.get("attributes")).get("service.name") or "")
        for scope_spans in _list(resource_spans.get("scopeSpans"), "scopeSpans"):
            for span in _list(scope_spans.get("spans"), "spans"):
                name = span.get("name")
                name = name if isinstance(name, str) else ""
                trace_id, span_id = _hex(span.get("traceId")), _hex(span.get("spanId"))
                if trace_id is None or span_id is None or not _valid_ids(trace_id, span_id):
                    rejected.append(f"span {name!r} has no valid traceId/spanId")
                    continue
                status = _dict(span.get("status"))
                spans.append(SpanData(
                    trace_id=trace_id, span_id=span_id,
                    parent_id=_hex(span.get("parentSpanId")) or "", name=name, service=service,
                    start=_nanos(span.get("startTimeUnixNano")),
                    end=_nanos(span.get("endTimeUnixNano")),
                    error=status.get("code") in (2, "STATUS_CODE_ERROR"),
                    attributes=_json_attrs(span.get("attributes")),
                    events=[(str(e.get("name") or ""), _json_attrs(e.get("attributes")))
                            for e in _list(span.get("events"), "events")],
                ))
    return Export(spans, rejected, protobuf=False)


def _list(value: Any, field: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(HTTPStatus.BAD_REQUEST, f"`{field}` must be a JSON array.")
    return [item for item in value if isinstance(item, dict)]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _hex(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return bytes.fromhex(value).hex()
    except ValueError:
        return None


def _nanos(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _json_attrs(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _json_value(kv.get("value"), 0)
    return out


def _json_value(value: Any, depth: int) -> Any:
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        return value["stringValue"] if isinstance(value["stringValue"], str) else None
    if "intValue" in value:
        return _nanos(value["intValue"])
    if "doubleValue" in value:
        raw = value["doubleValue"]
        return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    if "boolValue" in value:
        return value["boolValue"] is True
    if depth >= _MAX_DEPTH:
        return None
    if "arrayValue" in value:
        values = _dict(value["arrayValue"]).get("values")
        return [_json_value(v, depth + 1) for v in values] if isinstance(values, list) else []
    if "kvlistValue" in value:
        values = _dict(value["kvlistValue"]).get("values")
        return _json_attrs_depth(values, depth + 1)
    return None


def _json_attrs_depth(items: Any, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _json_value(kv.get("value"), depth)
    return out


# --- mapping -------------------------------------------------------------------------------


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _any(first: Any, second: Any, third: Any) -> Any:
    """The first of three values that is not ``None``."""
    return first if first is not None else second if second is not None else third


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**63 else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < 2**63:
        return int(value)
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def _is_llm(attrs: Mapping[str, Any]) -> bool:
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return bool(kind == "LLM")
    operation = attrs.get("gen_ai.operation.name")
    if operation is not None:
        return operation in _LLM_OPERATIONS
    request_type = attrs.get("llm.request.type")  # OpenLLMetry before gen_ai.operation.name
    if request_type is not None:
        return request_type in ("chat", "completion")
    return _first(attrs, "gen_ai.request.model", "gen_ai.response.model") is not None


def _text_of(content: Any) -> str | None:
    """The text of a message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [t for t in (_part_text(p) for p in content) if t is not None]
        return "".join(texts) if texts else None
    return None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and part.get("type", "text") == "text":
        text = part.get("content", part.get("text"))
        return text if isinstance(text, str) else None
    return None


class _Part(msgspec.Struct, gc=False):
    type: str = "text"
    content: str | None = None


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    parts: list[_Part] = []


_CURRENT_MESSAGES = msgspec.json.Decoder(list[_Message])
"""``gen_ai.input.messages`` / ``gen_ai.output.messages`` as the current conventions shape them
(role and text parts), decoded without a Python loop over dicts."""


def _messages(raw: Any) -> list[tuple[str, str | None]]:
    """``(role, text)`` of a JSON messages attribute (``gen_ai.input.messages`` and alike)."""
    if isinstance(raw, str):
        try:
            typed = _CURRENT_MESSAGES.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # ValidationError included
            typed = None
        if typed and all(m.parts for m in typed):
            return [(m.role, _parts_text(m.parts)) for m in typed]
        try:
            raw = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            return []
    out = []
    if isinstance(raw, list):
        for message in raw:
            if isinstance(message, dict):
                content = message.get("parts", message.get("content"))
                out.append((str(message.get("role") or ""), _text_of(content)))
    return out


def _current_text(raw: str) -> tuple[bool, str | None]:
    """``(True, text)``: what ``_prompt(_messages(raw))`` is when *raw* has the current
    conventions' shape (every message with parts), read without building the message list;
    ``(False, None)`` otherwise (then `_messages` reads it)."""
    try:
        typed = _CURRENT_MESSAGES.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError included
        return False, None
    if not typed:
        return False, None
    for message in typed:
        if not message.parts:
            return False, None
    fallback = None
    for message in reversed(typed):
        text = _parts_text(message.parts)
        if text is not None:
            if message.role == "user":
                return True, text
            if fallback is None:
                fallback = text
    return True, fallback


def _parts_text(parts: list[_Part]) -> str | None:
    """The text parts of a message, joined (``None`` without one)."""
    if len(parts) == 1:  # the usual case
        part = parts[0]
        return part.content if part.type == "text" else None
    texts = [p.content for p in parts if p.type == "text" and p.content is not None]
    return "".join(texts) if texts else None


def _indexed(attrs: Mapping[str, Any], prefix: str, role: str, content: str
             ) -> list[tuple[str, str | None]]:
    """``(role, text)`` of flattened messages ``PREFIX.N.ROLE`` / ``PREFIX.N.CONTENT``."""
    out: list[tuple[str, str | None]] = []
    for index in range(10_000):
        text = attrs.get(f"{prefix}.{index}.{content}")
        who = attrs.get(f"{prefix}.{index}.{role}")
        if text is None and who is None:
            break
        if text is None and content == "message.content":  # OpenInference's multi-part form
            text = _contents(attrs, f"{prefix}.{index}.message.contents")
        out.append((str(who or ""), text if isinstance(text, str) else None))
    return out


def _contents(attrs: Mapping[str, Any], prefix: str) -> str | None:
    """The text parts of ``PREFIX.N.message_content.type/text``, joined."""
    texts: list[str] = []
    for n in range(1000):
        part = attrs.get(f"{prefix}.{n}.message_content.text")
        if part is None and attrs.get(f"{prefix}.{n}.message_content.type") is None:
            break
        if isinstance(part, str):
            texts.append(part)
    return "".join(texts) if texts else None


def _prompt(messages: list[tuple[str, str | None]]) -> str | None:
    """The prompt text as our own integrations keep it: the last user message."""
    for role, text in reversed(messages):
        if role == "user" and text is not None:
            return text
    for _role, text in reversed(messages):
        if text is not None:
            return text
    return None


def _event_messages(events: Sequence[tuple[str, dict[str, Any]]]
                    ) -> tuple[list[tuple[str, str | None]], str | None]:
    """Input messages and the response text of the GenAI span events."""
    inputs: list[tuple[str, str | None]] = []
    response: str | None = None
    for name, attrs in events:
        if name.startswith("gen_ai.") and name.endswith(".message"):
            role = name[len("gen_ai."):-len(".message")]
            inputs.append((str(attrs.get("role") or role), _text_of(attrs.get("content"))))
        elif name == "gen_ai.choice" and response is None:
            message = attrs.get("message")
            if isinstance(message, str):
                try:
                    message = json.loads(message)
                except ValueError:
                    message = {"content": message}
            if isinstance(message, dict):
                response = _text_of(message.get("content"))
        elif name == "gen_ai.content.prompt":
            inputs += _messages(attrs.get("gen_ai.prompt"))
        elif name == "gen_ai.content.completion" and response is None:
            response = _prompt(_messages(attrs.get("gen_ai.completion")))
    return inputs, response


def _side_text(attrs: Mapping[str, Any], messages: str, legacy: str,
               openinference: str) -> str | None:
    """The text of one side of a call (input or output) from its span attributes: the
    current conventions' *messages* JSON, else the legacy indexed *legacy*.N.role/content,
    else OpenInference's indexed *openinference*.N.message.role/content."""
    raw = attrs.get(messages)
    found, text = _current_text(raw) if isinstance(raw, str) else (False, None)
    if found:
        return text
    return _prompt(
        _messages(raw)
        or _indexed(attrs, legacy, "role", "content")
        or _indexed(attrs, openinference, "message.role", "message.content")
    )


def _content(span: SpanData) -> tuple[str | None, str | None]:
    attrs = span.attributes
    prompt = _side_text(attrs, "gen_ai.input.messages", "gen_ai.prompt", "llm.input_messages")
    response = _side_text(attrs, "gen_ai.output.messages", "gen_ai.completion",
                          "llm.output_messages")
    if (prompt is None or response is None) and span.events:
        event_inputs, event_response = _event_messages(span.events)
        prompt = prompt if prompt is not None else _prompt(event_inputs)
        response = response if response is not None else event_response
    if prompt is None:
        value = attrs.get("input.value")
        prompt = _prompt(_messages(_dict_value(value).get("messages"))) or (
            value if isinstance(value, str) and not value.startswith("{") else None)
    if response is None:
        value = attrs.get("output.value")
        if isinstance(value, str) and not value.startswith("{"):
            response = value
    return prompt, response


def _dict_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value.startswith("{"):
        try:
            loaded = json.loads(value)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


@dataclasses.dataclass
class Mapped:
    """What `to_traces` made of an export: the traces, and the spans it left out."""

    traces: list[TraceRequest]
    rejected: list[str]
    """One sentence per rejected span (invalid, no task, too large)."""
    not_llm: int = 0
    """Spans that are not LLM calls (dropped, not rejected)."""


def _ancestors(span: SpanData, by_id: Mapping[tuple[str, str], SpanData]
               ) -> Iterator[SpanData]:
    seen = 0
    parent = by_id.get((span.trace_id, span.parent_id)) if span.parent_id else None
    while parent is not None and seen < 1000:
        yield parent
        seen += 1
        parent = by_id.get((parent.trace_id, parent.parent_id)) if parent.parent_id else None


def _task(span: SpanData, by_id: Mapping[tuple[str, str], SpanData], task_map: TaskMap
          ) -> str | None:
    task = span.attributes.get("ct.task.name")
    agent = span.attributes.get("gen_ai.agent.name")
    if not (isinstance(task, str) and task):
        task = None
        for parent in _ancestors(span, by_id) if span.parent_id else ():
            found = parent.attributes.get("ct.task.name")
            if isinstance(found, str) and found:
                task = found
                break
            if not agent:
                agent = parent.attributes.get("gen_ai.agent.name")
    if task is None:
        task = task_map.task_of(span, agent if isinstance(agent, str) else None)
    return task


def to_traces(export: Export, task_map: TaskMap) -> Mapped:
    """Map the LLM spans of *export* to CT traces; count and describe what is left out."""
    mapped = Mapped(traces=[], rejected=list(export.rejected))
    by_id: dict[tuple[str, str], SpanData] = {}  # made when a span needs its ancestors
    for span in export.spans:
        attrs = span.attributes
        if not _is_llm(attrs):
            mapped.not_llm += 1
            continue
        task = attrs.get("ct.task.name")
        if not (isinstance(task, str) and task):
            if not by_id:
                by_id = {(s.trace_id, s.span_id): s for s in export.spans}
            task = _task(span, by_id, task_map)
        if task is None:
            mapped.rejected.append(f"LLM span {span.name!r} has no task (no ct.task.name on it"
                                   " or an ancestor, and no task map entry)")
            continue
        prompt, response = _content(span)
        if max(len(prompt or ""), len(response or "")) > MAX_ATTRIBUTE_CHARS:
            mapped.rejected.append(f"LLM span {span.name!r}: its prompt or response is over"
                                   f" {MAX_ATTRIBUTE_CHARS} characters")
            continue
        mapped.traces.append(_trace(span, task, prompt, response))
    return mapped


def _trace(span: SpanData, task: str, prompt: str | None, response: str | None
           ) -> TraceRequest:
    attrs = span.attributes
    get = attrs.get
    # each read: the current convention's name, then the previous one's, then OpenInference's
    # (written out rather than looped: this runs once per span)
    value = get("gen_ai.usage.input_tokens")
    if value is None:
        value = get("gen_ai.usage.prompt_tokens")
        if value is None:
            value = get("llm.token_count.prompt")
    input_tokens = _int(value)
    value = get("gen_ai.usage.output_tokens")
    if value is None:
        value = get("gen_ai.usage.completion_tokens")
        if value is None:
            value = get("llm.token_count.completion")
    output_tokens = _int(value)
    value = get("gen_ai.usage.cache_read.input_tokens")
    if value is None:
        value = get("gen_ai.usage.cache_read_input_tokens")
        if value is None:
            value = get("llm.token_count.prompt_details.cache_read")
    cached = None if value is None else _int(value)
    value = get("llm.usage.total_tokens")
    if value is None:
        value = get("llm.token_count.total")
        if value is None:
            value = get("gen_ai.usage.total_tokens")
    total = None if value is None else _int(value)
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens
    request_model = get("gen_ai.request.model") or get("llm.request.model_name") or (
        _dict_value(get("llm.invocation_parameters")).get("model"))  # OpenInference
    model = get("gen_ai.response.model") or get("llm.model_name") or request_model
    own = get("ct.trace_id")  # a span our own SDK made: the same record
    trace_id = None
    if isinstance(own, str):
        with contextlib.suppress(ValueError):
            trace_id = uuid.UUID(own)
    about: dict[str, Any] = {
        "trace_id": span.trace_id, "span_id": span.span_id, "span_name": span.name,
    }
    if span.service:
        about["service"] = span.service
    if isinstance(request_model, str) and request_model != model:
        about["request_model"] = request_model
    latency = (span.end - span.start) / 1e6 if span.end >= span.start > 0 else None
    user = get("user.id")
    if user is None:
        user = _any(None, get("enduser.id"), get("ct.user_id"))
    session = get("session.id")
    if session is None:
        session = _any(None, get("gen_ai.conversation.id"), get("ct.session_id"))
    return TraceRequest(
        task_id=task,
        id=trace_id or trace_id_of(span.trace_id, span.span_id),
        prompt_text=prompt,
        response_text=response,
        model=str(model) if model is not None else None,
        tokens=total,
        latency_ms=latency,
        metadata={"otlp": about},
        error=True if span.error or get("error.type") else None,
        user_id=str(user) if user is not None else None,
        session_id=str(session) if session is not None else None,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
    )


# --- the answer ----------------------------------------------------------------------------


def _message(rejected: Iterable[str], not_llm: int) -> str:
    reasons = list(rejected)
    parts: list[str] = []
    if reasons:
        shown = "; ".join(reasons[:5])
        more = f" (and {len(reasons) - 5} more)" if len(reasons) > 5 else ""
        parts.append(f"{len(reasons)} spans rejected: {shown}{more}")
    if not_llm:
        parts.append(f"{not_llm} spans are not LLM calls and were dropped")
    return ". ".join(parts)


def answer(protobuf: bool, rejected: list[str], not_llm: int) -> tuple[bytes, str]:
    """The ``ExportTraceServiceResponse`` bytes and their content type."""
    message = _message(rejected, not_llm)
    if protobuf:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        response = ExportTraceServiceResponse()
        if message:
            response.partial_success.rejected_spans = len(rejected)
            response.partial_success.error_message = message
        return response.SerializeToString(), _PROTOBUF
    body: dict[str, Any] = {}
    if message:
        # proto3 JSON: an int64 is a string
        body["partialSuccess"] = {"rejectedSpans": str(len(rejected)), "errorMessage": message}
    return msgspec.json.encode(body), _JSON
