"""CT records into wire requests: the trace and feedback bodies of an ingest batch, encoded.

The delivery engine's sender thread turns each `~kaizen_sdk._record.CallRecord` into a
`TraceRequest` (and a `FeedbackRequest` when the task logs one) with `build_batch`, and a
batch into bytes with `encode_batch`, which never raises: objects JSON does not know become
their ``repr``, and a batch that still fails is encoded request by request. Nothing here does
I/O or keeps state, so the spool and the sender share it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from msgspec import Raw

from kaizen_sdk._safe_json import MAX_TEXT_CHARS, SAFE_ENCODER, clean_text, safe_json, truncate
from kaizen_sdk.models import FeedbackRequest, IngestRequest, TraceRequest

if TYPE_CHECKING:
    from kaizen_sdk._config import Settings
    from kaizen_sdk._record import CallRecord

__all__ = [
    "WIRE_TYPES",
    "batch_size",
    "build_batch",
    "encode_batch",
    "encode_one",
    "split_batch",
]

_log = logging.getLogger("kaizen_sdk.delivery")

# The feedback entry's id: the trace id with its last hex digit's top bit flipped.
_FLIP = dict(zip("0123456789abcdefABCDEF", "89abcdef01234567234567", strict=True))


def _json_dict(value: Any) -> Any:
    """Inputs must be a JSON object on the wire: wrap anything else as ``{"value": ...}``.

    A ``msgspec.Raw`` is trusted to hold a JSON object (the decorator makes sure of it).
    """
    if value is None or type(value) is msgspec.Raw or type(value) is dict:
        return value
    return {"value": value}


def _as_text(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value if len(value) <= MAX_TEXT_CHARS else truncate(value)
    if value is None:
        return None
    if kind is int or kind is float:
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is msgspec.Raw:
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = bytes(safe_json(value)).decode("utf-8", "replace")
    return text if len(text) <= MAX_TEXT_CHARS else truncate(text)


# --- building requests ---------------------------------------------------------------------


class _FeedbackMeta(msgspec.Struct, array_like=False, gc=False):
    """The metadata of an SDK feedback entry (encodes as the same JSON object as a dict)."""

    trace_id: str
    prompt_version: int | None
    prompt_version_id: str | None
    latency_ms: float | None


class _Trace(msgspec.Struct, omit_defaults=True, gc=False):
    """The wire form of a `TraceRequest`: the same fields in the same order, encoded alike.

    Built once per record on the sender thread, so it is built positionally (a keyword
    constructor costs more) and not tracked by the garbage collector: a batch waits for its
    HTTP round trip, and tracked, its thousands of requests would trigger collections (and
    full ones, which walk the whole heap) on the caller's thread. Its values are records'
    own (no cycle can run through it). tests/test_delivery.py checks the fields against
    `TraceRequest`.
    """

    task_id: str
    id: Any = None
    prompt_text: Any = None
    response_text: Any = None
    model: Any = None
    tokens: Any = None
    latency_ms: Any = None
    prompt_version_id: Any = None
    parent_trace_id: Any = None
    metadata: Any = None
    arm: Any = None
    error: Any = None
    user_id: Any = None
    session_id: Any = None
    tags: Any = None
    prompt_is_default: Any = False
    input_tokens: Any = None
    output_tokens: Any = None
    cached_input_tokens: Any = None
    prompt_messages: Any = None
    prompt_config: Any = None


class _ShortTrace(msgspec.Struct, omit_defaults=True, gc=False):
    """The wire form of the common trace: the fields of `_Trace` that a plain decorated call
    sets, in the same order. `build_batch` makes it for a record whose other fields would
    all be at their defaults, so it encodes to exactly the bytes of that record's `_Trace`;
    it costs half as much to build (and encodes as fast). tests/test_sender_encoding.py
    checks both forms against each other.
    """

    task_id: str
    id: Any = None
    prompt_text: Any = None
    response_text: Any = None
    latency_ms: Any = None
    prompt_version_id: Any = None


class _Feedback(msgspec.Struct, gc=False):
    """The wire form of a `FeedbackRequest` (see `_Trace`): every field is sent, defaults
    included, but the UNSET ones."""

    task_id: str
    id: Any = None
    inputs: Any = None
    output: Any = None
    score: Any = None
    source: str = "sdk"
    metadata: Any = None
    comment: Any = msgspec.UNSET
    correction: Any = msgspec.UNSET
    prompt_version_id: Any = msgspec.UNSET
    arm: Any = msgspec.UNSET


WIRE_TYPES: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    TraceRequest: _Trace,
    FeedbackRequest: _Feedback,
}
"""Each request model and the wire form `build_batch` makes of it (same fields, same order)."""


def build_batch(
    records: list[CallRecord], settings: Settings
) -> tuple[list[TraceRequest], list[FeedbackRequest], list[Exception]]:
    """Turn records into their trace (and feedback) request bodies: (traces, feedback
    entries, failures).

    Values are not converted here: the batch is encoded with a hook that turns unknown
    objects into their ``repr`` (see `encode_batch`), which falls back to converting value
    by value. Only long strings are cut.

    A record that cannot be built is left out, its exception in the third list. The loop is
    the sender thread's per-record cost, so settings are read once and the common record (text
    prompt, short text or int result, no error) takes no call beyond the two constructors.
    """
    traces: list[Any] = []  # of `_Trace`, which encodes as a TraceRequest
    feedback: list[Any] = []  # of `_Feedback`
    bad: list[Exception] = []
    capture = settings.capture_content
    mask = settings.mask
    limit = MAX_TEXT_CHARS
    flip = _FLIP
    add_trace, add_feedback = traces.append, feedback.append
    for record in records:
        try:
            latency = record.latency_ms
            trace_id: Any = record.trace_id
            metadata = record.metadata
            error = record.error
            arm = record.arm
            if error is not None:
                metadata = {**metadata, "error": error} if metadata else {"error": error}
            if record.input_tokens is not None and record.output_tokens is not None:
                # in metadata, which every CT server keeps: the input/output split prices
                # the call on servers that know it (`TraceRequest.input_tokens` is refused by
                # local servers that predate it)
                usage: dict[str, Any] = {"input_tokens": record.input_tokens,
                                         "output_tokens": record.output_tokens}
                if record.cached_input_tokens:
                    usage["cached_input_tokens"] = record.cached_input_tokens
                if record.usage_by_model is not None:  # a decorated call over several models
                    usage["by_model"] = record.usage_by_model
                metadata = {**metadata, "usage": usage} if metadata else {"usage": usage}
            if capture:
                output = record.output
                inputs = record.inputs
                prompt_text = record.prompt_text
                response = record.response_text
                if mask is not None:  # nothing the application wants hidden leaves the process
                    inputs, output = _masked(mask, inputs), _masked(mask, output)
                    prompt_text, response = _masked(mask, prompt_text), _masked(mask, response)
                if prompt_text is not None and (
                    type(prompt_text) is not str or len(prompt_text) > limit
                ):
                    prompt_text = _as_text(prompt_text)
                if response is None:
                    response = output
                if response is not None:
                    kind = type(response)
                    if kind is int:  # the common non-text result (same text as _as_text)
                        response = repr(response)
                    elif kind is not str or len(response) > limit:
                        response = _as_text(response)
            else:
                prompt_text = response = output = inputs = None
            version_id: Any = record.prompt_version_id
            parent: Any = record.parent_trace_id
            tags = record.tags
            if (
                parent is None and not metadata and arm is None and tags is None
                and record.model is None and record.tokens is None
                and record.user_id is None and record.session_id is None
                and (prompt_text is None or (
                    record.prompt_is_default is False and record.prompt_messages is None
                    and record.prompt_config is None
                ))
            ):  # the common record: every other field of `_Trace` at its default
                add_trace(_ShortTrace(record.task, trace_id, prompt_text, response, latency,
                                      version_id))
            else:
                add_trace(_Trace(  # positional: the fields of TraceRequest, in order
                    record.task, trace_id, prompt_text, response, record.model, record.tokens,
                    latency, version_id, parent, metadata or None, arm,
                    # the rollout guard's flag, only beside an arm: servers without rollouts
                    # never see it
                    None if error is None or arm is None else True,
                    record.user_id, record.session_id, None if tags is None else list(tags),
                    # the developer's default_prompt, only with its text: never a call's text
                    prompt_text is not None and record.prompt_is_default,
                    # the token split travels in metadata["usage"] (servers that do not know these
                    # fields would reject the trace): never sent as fields by the SDK
                    None, None, None,
                    # a chat default_prompt's messages and settings, only beside that flag
                    record.prompt_messages if prompt_text is not None else None,
                    record.prompt_config if prompt_text is not None else None,
                ))
            if not record.log_feedback:
                continue
            if type(output) is str and len(output) > limit:
                output = truncate(output)
            if type(trace_id) is not str:
                trace_id = str(trace_id)
            if version_id is not None and type(version_id) is not str:
                version_id = str(version_id)
            fb_meta: Any
            if metadata:
                fb_meta = {
                    "trace_id": trace_id,
                    "prompt_version": record.prompt_version_number,
                    "prompt_version_id": version_id,
                    "latency_ms": latency,
                    **metadata,
                }
            else:
                fb_meta = _FeedbackMeta(
                    trace_id, record.prompt_version_number, version_id, latency
                )
            # Stable across retries, still a UUID7, and a different id for every trace.
            fb_id: Any = None
            if len(trace_id) == 36:
                last = flip.get(trace_id[35])
                if last is not None:
                    fb_id = trace_id[:35] + last
            if inputs is not None and type(inputs) is not dict and type(inputs) is not Raw:
                inputs = _json_dict(inputs)
            entry = _Feedback(record.task, fb_id, inputs, output, None, "sdk", fb_meta)
            if arm is not None:  # served by a rollout, so the server knows these fields
                entry.prompt_version_id = version_id
                entry.arm = arm
            add_feedback(entry)
        except Exception as exc:
            bad.append(exc)
    return traces, feedback, bad


def _safe_request(item: Any) -> Any:
    """The slow path: make every free-form value of a request safe JSON on its own."""
    if isinstance(item, FeedbackRequest | _Feedback):
        inputs = item.inputs
        return msgspec.structs.replace(
            item,
            inputs=None if inputs is None else _json_dict(safe_json(inputs)),
            output=None if item.output is None else safe_json(item.output),
            metadata=None if item.metadata is None else safe_json(item.metadata),
        )
    if type(item) is _ShortTrace:  # the full form, whose fields are converted below
        item = _Trace(**msgspec.structs.asdict(item))
    metadata = item.metadata
    return msgspec.structs.replace(
        item,
        prompt_text=None if item.prompt_text is None else clean_text(item.prompt_text),
        response_text=None if item.response_text is None else clean_text(item.response_text),
        model=None if item.model is None else clean_text(item.model),
        metadata=None if metadata is None else safe_json(metadata),
    )


def encode_batch(batch: IngestRequest) -> bytes:
    """Encode a batch; objects JSON does not know become their ``repr``. Never raises."""
    try:
        return SAFE_ENCODER.encode(batch)
    except Exception:  # a cycle, keys JSON cannot hold, lone surrogates: item by item
        traces = b",".join(filter(None, map(encode_one, batch.traces)))
        feedback = b",".join(filter(None, map(encode_one, batch.feedback)))
        scores = b",".join(filter(None, map(encode_one, batch.scores)))
        return (
            b'{"traces":[' + traces + b'],"feedback":[' + feedback + b'],"scores":['
            + scores + b"]}"
        )


def split_batch(batch: IngestRequest) -> tuple[IngestRequest, IngestRequest]:
    """Cut a batch of two or more records in two, for a server that found it too large.

    Each feedback entry stays with its trace (the first half's traces are stored first);
    scores go with the second half, after every trace of the batch.
    """
    half = len(batch.traces) // 2
    first_traces, second_traces = batch.traces[:half], batch.traces[half:]
    first_ids = {str(t.id) for t in first_traces}
    first_feedback: list[Any] = []
    second_feedback: list[Any] = []
    for entry in batch.feedback:
        meta: Any = entry.metadata
        trace_id = meta.get("trace_id") if type(meta) is dict else getattr(meta, "trace_id", None)
        (first_feedback if str(trace_id) in first_ids else second_feedback).append(entry)
    if not first_traces:  # scores only: cut them instead
        cut = len(batch.scores) // 2
        return (IngestRequest(scores=batch.scores[:cut]),
                IngestRequest(feedback=batch.feedback, scores=batch.scores[cut:]))
    return (
        IngestRequest(traces=first_traces, feedback=first_feedback),
        IngestRequest(traces=second_traces, feedback=second_feedback, scores=batch.scores),
    )


def batch_size(batch: IngestRequest) -> int:
    """The records of *batch*: its traces and its scores (feedback rides with its trace)."""
    return len(batch.traces) + len(batch.scores)


def encode_one(item: Any) -> bytes:
    """Encode one request, converting its values if needed; ``b""`` if even that fails."""
    try:
        return SAFE_ENCODER.encode(item)
    except Exception:
        pass
    try:
        return SAFE_ENCODER.encode(_safe_request(item))
    except Exception:
        _log.warning("A CT record could not be encoded at all; it is dropped.", exc_info=True)
        return b""


def _masked(mask: Callable[[Any], Any], value: Any) -> Any:
    if value is None:
        return None
    if type(value) is msgspec.Raw:
        value = msgspec.json.decode(value)
    try:
        return mask(value)
    except Exception:
        _log.warning("The mask function failed; the value is sent as '<masking failed>'.")
        return "<masking failed>"
