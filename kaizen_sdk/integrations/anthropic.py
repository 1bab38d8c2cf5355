"""Patches for the ``anthropic`` client library: the Messages API.

``messages.create`` (sync and async, ``stream=True`` included) is wrapped on its classes, so
every client instance is covered. Spans follow the GenAI conventions for Anthropic: operation
``chat``, ``gen_ai.provider.name`` (and the deprecated ``gen_ai.system``) ``anthropic``; input
tokens count cached tokens too (``input_tokens`` + ``cache_read_input_tokens`` +
``cache_creation_input_tokens``); finish reasons are Anthropic's ``stop_reason``. The
``messages.stream()`` helper is not traced. Use it through ``kaizen_sdk.instrument(anthropic)``.

A client of an anthropic version that traces itself (its ``open_telemetry`` option, on by
default, spans in the global provider) makes the call's span: kaizen then makes none and puts
its ``ct.*`` attributes on that one, as with any instrumentation beneath its patch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.trace import Tracer

from kaizen_sdk.integrations import _common, _methods
from kaizen_sdk.integrations._common import Extracted, InstrumentSettings, TracedCall
from kaizen_sdk.integrations._methods import Target

__all__ = ["_instrument", "_uninstrument"]

logger = logging.getLogger("kaizen_sdk.instrument")

_PROVIDER = "anthropic"
_MESSAGES = "anthropic.resources.messages"
_TARGETS: tuple[Target, ...] = (
    Target(_MESSAGES, "Messages", "create", False),
    Target(_MESSAGES, "AsyncMessages", "create", True),
)
_RAW_HEADER = "x-stainless-raw-response"
_NO_SERVER: tuple[str | None, int | None] = (None, None)

_switch = _common.Switch()


def _instrument(tracer: Tracer, settings: InstrumentSettings) -> None:
    """Wrap ``Messages.create`` and ``AsyncMessages.create``."""
    global _switch
    _switch.on = False
    _switch = switch = _common.Switch()
    _methods.patch("anthropic", _TARGETS, tracer, settings, switch,
                   lambda _t: _start, lambda _t: _finish)


def _uninstrument() -> None:
    """Restore the original anthropic methods (safe to call twice)."""
    _switch.on = False
    _methods.unpatch(_TARGETS)


# --- requests ------------------------------------------------------------------------------


def _system_text(system: Any) -> str | None:
    """The ``system`` parameter's text: a string, or text blocks."""
    return _common.text_of(system) if isinstance(system, (str, list)) else None


def _params(kwargs: Mapping[str, Any], settings: InstrumentSettings) -> dict[str, Any]:
    params = _common.request_attributes(kwargs, ("max_tokens",), openai=False,
                                        latest=settings.latest)
    top_k = kwargs.get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        params[_common.GEN_AI_REQUEST_TOP_K] = top_k
    stop = kwargs.get("stop_sequences")
    if isinstance(stop, (list, tuple)) and stop and all(isinstance(s, str) for s in stop):
        params[_common.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    return params


def _input_messages(kwargs: Mapping[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    given = kwargs.get("messages")
    messages = list(given) if isinstance(given, (list, tuple)) else []
    system = _system_text(kwargs.get("system"))
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return _common.chat_input_messages(messages)


def _server(instance: Any) -> tuple[str | None, int | None]:
    client = getattr(instance, "_client", None)
    return _common.server_of(getattr(client, "base_url", None))


def _native_span(instance: Any) -> bool:
    """Whether the anthropic client makes this call's span itself, in the global provider."""
    try:
        options = getattr(getattr(instance, "_client", None), "_open_telemetry", None)
        if not isinstance(options, Mapping):
            return False  # an anthropic version without tracing of its own
        traces = options.get("traces")
        if not isinstance(traces, Mapping) or traces.get("enabled") is not True:
            return False
        if options.get("tracer_provider") is not None:
            return False  # a provider of its own, which kaizen's span adopter does not see
        return isinstance(trace.get_tracer_provider(), SDKTracerProvider)
    except Exception:
        logger.debug("Reading the anthropic client's tracing options failed.", exc_info=True)
        return False


def _raw(kwargs: Mapping[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    if not isinstance(headers, Mapping):
        return False
    return any(str(k).lower() == _RAW_HEADER for k in headers)


def _start(
    tracer: Tracer, settings: InstrumentSettings, instance: Any, kwargs: Mapping[str, Any],
    wrapped: Any, peers: tuple[bool, bool],
) -> TracedCall | None:
    try:
        rich = _common.rich(tracer, settings)
        prompt, texts = _common.chat_prompt(kwargs.get("messages"))
        system = _system_text(kwargs.get("system"))
        if system is not None:
            texts.append(system)
        model = kwargs.get("model")
        # anthropic's own span is made beneath us: adopted like another instrumentation's
        native = settings.enabled and _native_span(instance)
        # ... and when it is the only other one, the GenAI metrics are still ours to record
        alone = native and not any(peers) and not _common.genai_patch(wrapped)
        return _common.start_call(
            tracer,
            settings,
            operation="chat",
            provider=_PROVIDER,
            model=model if isinstance(model, str) else None,
            stream=kwargs.get("stream") is True,
            params=_params(kwargs, settings) if rich else {},
            prompt_text=prompt,
            task_texts=texts,
            input_messages=_input_messages(kwargs) if rich else None,
            server=_server(instance) if rich else _NO_SERVER,
            wrapped=wrapped,
            beneath=peers[0] or native,
            above=peers[1],
            own_metrics=alone,  # anthropic's tracing records no GenAI metrics
        )
    except Exception:
        logger.exception("Reading an anthropic request failed; not traced.")
        return None


# --- responses -----------------------------------------------------------------------------


def _finish(call: TracedCall, kwargs: Mapping[str, Any], out: Any, is_async: bool) -> Any:
    """End the call (or hand it to a stream proxy) and return what the application gets."""
    try:
        if _raw(kwargs):
            # with_raw_response / with_streaming_response: the application parses it
            call.finish(Extracted())
            return out
        if kwargs.get("stream") is True:
            events = _StreamAccumulator()
            return _common.wrap_stream(out, call, events.add, events.collect, is_async=is_async)
        call.finish(_extract(out))
        return _common.wrap_response(out, call)
    except Exception:
        logger.exception("Recording an anthropic response failed; returned as is.")
        call.finish(Extracted())
        return out


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage(data: Extracted, usage: Any) -> None:
    """Token counts of a ``Usage`` (or a stream's ``MessageDeltaUsage``), where it has them."""
    if usage is None:
        return
    given = _int(_get(usage, "input_tokens"))
    if given is not None:
        cached = sum(_int(_get(usage, key)) or 0
                     for key in ("cache_read_input_tokens", "cache_creation_input_tokens"))
        data.input_tokens = given + cached
        read = _int(_get(usage, "cache_read_input_tokens"))
        if read:  # priced at the cached-input rate (cache writes stay at the input rate)
            data.cached_input_tokens = read
    output = _int(_get(usage, "output_tokens"))
    if output is not None:
        data.output_tokens = output
    if data.input_tokens is not None and data.output_tokens is not None:
        data.total_tokens = data.input_tokens + data.output_tokens


def _extract(message: Any) -> Extracted:
    """Read an anthropic ``Message``."""
    data = Extracted(response_id=_str(_get(message, "id")), model=_str(_get(message, "model")))
    parts = [text for block in _get(message, "content") or ()
             if _get(block, "type") == "text" and isinstance(text := _get(block, "text"), str)]
    data.text = "".join(parts) if parts else None
    reason = _str(_get(message, "stop_reason"))
    if reason is not None:
        data.finish_reasons = [reason]
    _usage(data, _get(message, "usage"))
    return data


class _StreamAccumulator:
    """Collects Messages stream events: the message, text deltas, stop reason and usage."""

    __slots__ = ("data", "parts")

    def __init__(self) -> None:
        self.data = Extracted()
        self.parts: list[str] = []

    def add(self, event: Any) -> None:
        kind = _get(event, "type")
        data = self.data
        if kind == "content_block_delta":
            delta = _get(event, "delta")
            if _get(delta, "type") == "text_delta":
                text = _get(delta, "text")
                if isinstance(text, str):
                    self.parts.append(text)
        elif kind == "message_start":
            message = _get(event, "message")
            data.response_id = _str(_get(message, "id"))
            data.model = _str(_get(message, "model"))
            _usage(data, _get(message, "usage"))
        elif kind == "message_delta":
            reason = _str(_get(_get(event, "delta"), "stop_reason"))
            if reason is not None:
                data.finish_reasons = [reason]
            _usage(data, _get(event, "usage"))

    def collect(self) -> Extracted:
        self.data.text = "".join(self.parts) if self.parts else None
        return self.data
