"""Patches for the ``openai`` client library (1.x to 3.x).

``chat.completions.create`` (and ``parse`` where it exists) and ``responses.create``, sync and
async, streaming included, are wrapped on their classes, so every client instance is covered;
the ``stream()`` helpers go through ``create`` and are covered too. Use it through
``kaizen_sdk.instrument(openai)``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Tracer

from kaizen_sdk.integrations import _common
from kaizen_sdk.integrations._common import (
    ChatStreamAccumulator,
    Extracted,
    InstrumentSettings,
    TracedCall,
)

__all__ = ["_instrument", "_uninstrument"]

logger = logging.getLogger("kaizen_sdk.instrument")

_PROVIDER = "openai"
_CHAT = "openai.resources.chat.completions"
_RESPONSES = "openai.resources.responses"
# (module, class, method, API, async)
_TARGETS: tuple[tuple[str, str, str, str, bool], ...] = (
    (_CHAT, "Completions", "create", "chat", False),
    (_CHAT, "AsyncCompletions", "create", "chat", True),
    # structured outputs; not every openai version has it on chat.completions
    (_CHAT, "Completions", "parse", "chat", False),
    (_CHAT, "AsyncCompletions", "parse", "chat", True),
    (_RESPONSES, "Responses", "create", "responses", False),
    (_RESPONSES, "AsyncResponses", "create", "responses", True),
)
_RAW_HEADER = "x-stainless-raw-response"
_NO_SERVER: tuple[str | None, int | None] = (None, None)

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


_switch = _common.Switch()


def _instrument(tracer: Tracer, settings: InstrumentSettings) -> None:
    """Wrap the openai create methods (every one this openai version has)."""
    global _switch
    _switch.on = False
    _switch = switch = _common.Switch()
    for module, cls, method, api, is_async in _TARGETS:
        try:
            owner = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            logger.debug("openai has no %s.%s; not instrumented.", module, cls)
            continue
        if method not in vars(owner):
            logger.debug("openai's %s has no %s; not instrumented.", cls, method)
            continue
        factory = _async_wrapper if is_async else _sync_wrapper
        patch = factory(tracer, settings, api, switch, (owner, method))
        _common.wrap(module, f"{cls}.{method}", patch)


def _uninstrument() -> None:
    """Restore the original openai methods (safe to call twice)."""
    _switch.on = False
    for module, cls, method, _api, _is_async in _TARGETS:
        try:
            owner = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
        _common.unwrap(owner, method)


# --- wrappers ------------------------------------------------------------------------------


def _peers_of(owner: Any, name: str) -> Callable[[Any], tuple[bool, bool]]:
    """``peers(instance) -> (beneath, above)``: whether another GenAI instrumentation's patch
    runs beneath / around a call of ``owner.name`` (our patched method).

    Beneath: the client's ``request`` method is patched (OpenInference traces there).
    Around: our patched method has been patched again on top of ours (OpenLLMetry, when
    instrumented after us, starts its Responses span only once the call has returned).
    Both attributes are read on every call; what they are is worked out again only when one
    is another object than last time (each kept with its answer in one tuple, so a thread
    reads a consistent pair).
    """
    seen: list[tuple[Any, bool]] = [(_UNSEEN, False), (_UNSEEN, False)]  # above, beneath
    attributes = vars(owner)

    def peers(instance: Any) -> tuple[bool, bool]:
        try:
            patch = attributes.get(name)
            # read on the class: a wrapt patch stays a wrapper (with its _self_wrapper) there
            request = getattr(type(getattr(instance, "_client", None)), "request", None)
            above = seen[0]
            if above[0] is not patch:
                above = seen[0] = (patch, _common.genai_patch(patch))
            beneath = seen[1]
            if beneath[0] is not request:
                beneath = seen[1] = (request, _common.genai_patch(request))
            return beneath[1], above[1]
        except Exception:
            logger.debug("Looking for other openai instrumentations failed.", exc_info=True)
            return False, False

    return peers


_UNSEEN = object()


def _sync_wrapper(
    tracer: Tracer, settings: InstrumentSettings, api: str, switch: _common.Switch,
    patched: tuple[Any, str],
) -> Wrapper:
    start = _start_chat if api == "chat" else _start_responses
    peers = _peers_of(*patched)

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return wrapped(*args, **kwargs)
        call = start(tracer, settings, instance, kwargs, wrapped, peers(instance))
        if call is None:
            return wrapped(*args, **kwargs)
        out = call.run(wrapped, args, kwargs)
        return _finish(call, api, kwargs, out, is_async=False)

    return wrapper


def _async_wrapper(
    tracer: Tracer, settings: InstrumentSettings, api: str, switch: _common.Switch,
    patched: tuple[Any, str],
) -> Wrapper:
    start = _start_chat if api == "chat" else _start_responses
    peers = _peers_of(*patched)

    async def wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return await wrapped(*args, **kwargs)
        call = start(tracer, settings, instance, kwargs, wrapped, peers(instance))
        if call is None:
            return await wrapped(*args, **kwargs)
        # TracedCall.arun, inlined: one coroutine per call, not two (about 9k instructions)
        call.enter()
        try:
            out = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            call.exit()
        return _finish(call, api, kwargs, out, is_async=True)

    return wrapper


def _finish(call: TracedCall, api: str, kwargs: Mapping[str, Any], out: Any, *,
            is_async: bool) -> Any:
    """End the call (or hand it to a stream proxy) and return what the application gets."""
    try:
        if kwargs.get("extra_headers") is not None and _raw(kwargs):
            # with_raw_response / with_streaming_response: an HTTP response object, which
            # the application parses itself; the span keeps the request side only.
            call.finish(Extracted())
            return out
        if kwargs.get("stream") is True:
            if api == "chat":
                chat = ChatStreamAccumulator()
                return _common.wrap_stream(out, call, chat.add, chat.collect, is_async=is_async)
            events = _ResponsesStreamAccumulator()
            return _common.wrap_stream(out, call, events.add, events.collect, is_async=is_async)
        extract = _common.chat_extract if api == "chat" else _responses_extract
        call.finish(extract(out))
        return _common.wrap_response(out, call)
    except Exception:
        logger.exception("Recording an openai response failed; returned as is.")
        call.finish(Extracted())
        return out


def _raw(kwargs: Mapping[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    if not isinstance(headers, Mapping):
        return False
    return any(str(k).lower() == _RAW_HEADER for k in headers)


def _server(instance: Any) -> tuple[str | None, int | None]:
    client = getattr(instance, "_client", None)
    return _common.server_of(getattr(client, "base_url", None))


def _params(
    kwargs: Mapping[str, Any], settings: InstrumentSettings, *max_keys: str, api_type: str
) -> dict[str, Any]:
    params = _common.request_attributes(kwargs, max_keys, openai=True, latest=settings.latest)
    if settings.latest:  # an openai.* name: latest mode only, as openai-v2's default has none
        params[_common.OPENAI_API_TYPE] = api_type
    return params


def _model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("model")
    return model if isinstance(model, str) else None


# --- chat completions ----------------------------------------------------------------------


def _start_chat(
    tracer: Tracer, settings: InstrumentSettings, instance: Any, kwargs: Mapping[str, Any],
    wrapped: Any = None, peers: tuple[bool, bool] = (False, False),
) -> TracedCall | None:
    try:
        rich = _common.rich(tracer, settings)
        messages = kwargs.get("messages")
        model = kwargs.get("model")
        prompt, texts = _common.chat_prompt(messages)
        return _common.start_call(
            tracer,
            settings,
            operation="chat",
            provider=_PROVIDER,
            model=model if isinstance(model, str) else None,  # `_model`, inlined
            stream=kwargs.get("stream") is True,
            params=(
                _params(kwargs, settings, "max_completion_tokens", "max_tokens",
                        api_type="chat_completions") if rich else {}
            ),
            prompt_text=prompt,
            task_texts=texts,
            input_messages=_common.chat_input_messages(messages) if rich else None,
            server=_server(instance) if rich else _NO_SERVER,
            wrapped=wrapped,
            beneath=peers[0],
            above=peers[1],
            messages=messages,
            spans_read=rich,
        )
    except Exception:
        logger.exception("Reading an openai chat request failed; not traced.")
        return None


# --- responses -----------------------------------------------------------------------------


def _responses_prompt(kwargs: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    given = kwargs.get("input")
    if isinstance(given, str):
        prompt: str | None = given
        texts = [given]
    else:
        prompt, texts = _common.chat_prompt(given)
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str):
        texts.append(instructions)
    return prompt, texts


def _responses_messages(kwargs: Mapping[str, Any]) -> Callable[[], list[dict[str, Any]]]:
    given = kwargs.get("input")
    if isinstance(given, str):
        given = [{"role": "user", "content": given}]
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str):
        given = [{"role": "system", "content": instructions}, *(given or [])]
    return _common.chat_input_messages(given)


def _start_responses(
    tracer: Tracer, settings: InstrumentSettings, instance: Any, kwargs: Mapping[str, Any],
    wrapped: Any = None, peers: tuple[bool, bool] = (False, False),
) -> TracedCall | None:
    try:
        rich = _common.rich(tracer, settings)
        prompt, texts = _responses_prompt(kwargs)
        return _common.start_call(
            tracer,
            settings,
            operation="chat",
            provider=_PROVIDER,
            model=_model(kwargs),
            stream=kwargs.get("stream") is True,
            params=(
                _params(kwargs, settings, "max_output_tokens", api_type="responses")
                if rich else {}
            ),
            prompt_text=prompt,
            task_texts=texts,
            input_messages=_responses_messages(kwargs) if rich else None,
            server=_server(instance) if rich else _NO_SERVER,
            wrapped=wrapped,
            beneath=peers[0],
            above=peers[1],
            spans_read=rich,
        )
    except Exception:
        logger.exception("Reading an openai responses request failed; not traced.")
        return None


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _responses_text(response: Any) -> str | None:
    parts: list[str] = []
    for item in _get(response, "output") or ():
        if _get(item, "type") != "message":
            continue
        for content in _get(item, "content") or ():
            if _get(content, "type") == "output_text":
                text = _get(content, "text")
                if isinstance(text, str):
                    parts.append(text)
    return "".join(parts) if parts else None


def _responses_extract(response: Any) -> Extracted:
    """Read an openai ``Response``."""
    response_id = _get(response, "id")
    model = _get(response, "model")
    data = Extracted(
        response_id=response_id if isinstance(response_id, str) else None,
        model=model if isinstance(model, str) else None,
        text=_responses_text(response),
    )
    status = _get(response, "status")
    if status == "completed":
        data.finish_reasons = ["stop"]
    elif isinstance(status, str):
        reason = _get(_get(response, "incomplete_details"), "reason")
        data.finish_reasons = [reason if isinstance(reason, str) else status]
    usage = _get(response, "usage")
    if usage is not None:
        for field, value in (
            ("input_tokens", _get(usage, "input_tokens")),
            ("output_tokens", _get(usage, "output_tokens")),
            ("total_tokens", _get(usage, "total_tokens")),
        ):
            if isinstance(value, int):
                setattr(data, field, value)
    return data


class _ResponsesStreamAccumulator:
    """Collects Responses stream events: text deltas, then the final response."""

    __slots__ = ("final", "first", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.first: Any = None
        self.final: Any = None

    def add(self, event: Any) -> None:
        kind = _get(event, "type")
        if kind == "response.output_text.delta":
            delta = _get(event, "delta")
            if isinstance(delta, str):
                self.parts.append(delta)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = _get(event, "response")
        elif kind == "response.created":
            self.first = _get(event, "response")

    def collect(self) -> Extracted:
        source = self.final if self.final is not None else self.first
        data = _responses_extract(source) if source is not None else Extracted()
        if self.final is None:
            data.finish_reasons = []
        if self.parts:
            data.text = "".join(self.parts)
        return data
