"""The common trace's short wire form encodes exactly as the full one would.

`kaizen_sdk._requests.build_batch` builds a plain decorated call's trace as a six-field
struct (cheaper to build and to encode on the sender thread) when every other field of
`TraceRequest` would be at its default. These tests hold it to the full form: each field a
record can set still reaches the wire, the short form's bytes are the full form's, and the
slow encoding path (a value JSON cannot carry) still takes it.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from kaizen_sdk._config import resolve_settings
from kaizen_sdk._record import CallRecord
from kaizen_sdk._requests import WIRE_TYPES, build_batch, encode_batch
from kaizen_sdk._safe_json import SAFE_ENCODER
from kaizen_sdk.models import IngestRequest, TraceRequest

SETTINGS = resolve_settings(api_key="k", base_url="http://ct.invalid", environ={})
FULL = WIRE_TYPES[TraceRequest]
TRACE_ID = "0b7d7a8e-1f3e-4f43-8d8e-6a1c7b0e9d21"
VERSION_ID = "6f1c0c43-5a53-4c1f-9a53-3c7f1f6c2a10"


def _record(**changes: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "trace_id": TRACE_ID, "task": "encoding-test", "prompt_text": "Echo {{ x }}",
        "inputs": {"x": 1}, "output": 1, "prompt_version_id": VERSION_ID,
        "prompt_version_number": 1, "log_feedback": True, "latency_ms": 0.25,
    }
    fields.update(changes)
    return CallRecord(**fields)


def _trace(record: CallRecord) -> Any:
    traces, _, bad = build_batch([record], SETTINGS)
    assert bad == []
    [trace] = traces
    return trace


def _as_full(trace: Any) -> Any:
    return FULL(**msgspec.structs.asdict(trace))


def test_the_common_record_takes_the_short_form_with_the_same_bytes() -> None:
    trace = _trace(_record())
    assert type(trace) is not FULL
    assert len(msgspec.structs.fields(trace)) == 6
    assert SAFE_ENCODER.encode(trace) == SAFE_ENCODER.encode(_as_full(trace))
    assert json.loads(SAFE_ENCODER.encode(trace)) == {
        "task_id": "encoding-test", "id": TRACE_ID, "prompt_text": "Echo {{ x }}",
        "response_text": "1", "latency_ms": 0.25, "prompt_version_id": VERSION_ID,
    }


def test_the_short_forms_fields_are_the_full_forms_in_order() -> None:
    trace = _trace(_record())
    short = [(f.name, f.default) for f in msgspec.structs.fields(type(trace))]
    full = [(f.name, f.default) for f in msgspec.structs.fields(TraceRequest)]
    assert [pair for pair in full if pair in short] == short
    assert type(trace).__struct_config__.omit_defaults


MESSAGES = [{"role": "user", "content": "Echo {{ x }}"}]
VARIANTS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"parent_trace_id": "5d3f"}, {"parent_trace_id": "5d3f"}),
    ({"metadata": {"k": "v"}}, {"metadata": {"k": "v"}}),
    ({"error": "ValueError"}, {"metadata": {"error": "ValueError"}}),
    ({"arm": "candidate"}, {"arm": "candidate"}),
    ({"arm": "candidate", "error": "E"}, {"arm": "candidate", "error": True}),
    ({"user_id": "u-1"}, {"user_id": "u-1"}),
    ({"session_id": "s-1"}, {"session_id": "s-1"}),
    ({"tags": ("a", "b")}, {"tags": ["a", "b"]}),
    ({"model": "gpt-x"}, {"model": "gpt-x"}),
    ({"tokens": 12}, {"tokens": 12}),
    ({"input_tokens": 3, "output_tokens": 4},
     {"metadata": {"usage": {"input_tokens": 3, "output_tokens": 4}}}),
    ({"prompt_is_default": True}, {"prompt_is_default": True}),
    ({"prompt_is_default": True, "prompt_messages": MESSAGES, "prompt_config": {"t": 0}},
     {"prompt_is_default": True, "prompt_messages": MESSAGES, "prompt_config": {"t": 0}}),
    ({"prompt_messages": MESSAGES}, {"prompt_messages": MESSAGES}),
    ({"prompt_config": {"t": 0}}, {"prompt_config": {"t": 0}}),
    ({"response_text": "said"}, {"response_text": "said"}),
    ({"prompt_text": None, "prompt_is_default": True, "prompt_config": {"t": 0}}, {}),
    ({"prompt_text": None, "output": None}, {}),
]


@pytest.mark.parametrize(("changes", "expected"), VARIANTS,
                         ids=[",".join(c) for c, _ in VARIANTS])
def test_every_field_a_record_sets_reaches_the_wire(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    trace = _trace(_record(**changes))
    wire = json.loads(SAFE_ENCODER.encode(trace))
    assert {key: wire.get(key) for key in expected} == expected
    assert SAFE_ENCODER.encode(trace) == SAFE_ENCODER.encode(_as_full(trace))


def test_a_short_trace_json_cannot_carry_is_still_sent_converted() -> None:
    trace = _trace(_record(prompt_text="bad \ud800 text"))
    body = json.loads(encode_batch(IngestRequest(traces=[trace])))
    [sent] = body["traces"]
    assert sent["prompt_text"] == "bad ? text"
    assert sent["id"] == TRACE_ID
