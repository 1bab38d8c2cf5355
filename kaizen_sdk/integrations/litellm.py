"""Patches for ``litellm``: ``completion`` and ``acompletion``, streaming included.

The patch replaces the ``litellm.completion`` and ``litellm.acompletion`` module attributes,
so calls written ``litellm.completion(...)`` are traced. A name bound earlier with
``from litellm import completion`` still points at the original function and is not traced.
Use it through ``kaizen_sdk.instrument(litellm)``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
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

_MODULE = "litellm"
_TARGETS: tuple[tuple[str, bool], ...] = (("completion", False), ("acompletion", True))

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


_switch = _common.Switch()


def _instrument(tracer: Tracer, settings: InstrumentSettings) -> None:
    """Wrap ``litellm.completion`` and ``litellm.acompletion``."""
    global _switch
    module = importlib.import_module(_MODULE)
    _switch.on = False
    _switch = switch = _common.Switch()
    providers = frozenset(str(getattr(p, "value", p)) for p in getattr(module, "provider_list", ()))
    for name, is_async in _TARGETS:
        original = getattr(module, name)
        positional = _positional_names(original)
        factory = _async_wrapper if is_async else _sync_wrapper
        _common.wrap(_MODULE, name, factory(tracer, settings, positional, providers, switch))


def _uninstrument() -> None:
    """Restore the original litellm functions (safe to call twice)."""
    _switch.on = False
    try:
        module = importlib.import_module(_MODULE)
    except ImportError:
        return
    for name, _is_async in _TARGETS:
        _common.unwrap(module, name)


def _positional_names(function: Any) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return ("model", "messages")
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in parameters if p.kind in kinds)


def _arguments(
    positional: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Mapping[str, Any]:
    if not args:
        return kwargs
    bound = dict(zip(positional, args, strict=False))
    bound.update(kwargs)
    return bound


# --- wrappers ------------------------------------------------------------------------------


def _sync_wrapper(
    tracer: Tracer, settings: InstrumentSettings, positional: tuple[str, ...],
    providers: frozenset[str], switch: _common.Switch,
) -> Wrapper:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return wrapped(*args, **kwargs)
        arguments = _arguments(positional, args, kwargs)
        call = _start(tracer, settings, arguments, providers, wrapped)
        if call is None:
            return wrapped(*args, **kwargs)
        out = call.run(wrapped, args, kwargs)
        return _finish(call, arguments, out, is_async=False)

    return wrapper


def _async_wrapper(
    tracer: Tracer, settings: InstrumentSettings, positional: tuple[str, ...],
    providers: frozenset[str], switch: _common.Switch,
) -> Wrapper:
    async def wrapper(
        wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not switch.on or _common.in_instrumented_call():
            return await wrapped(*args, **kwargs)
        arguments = _arguments(positional, args, kwargs)
        call = _start(tracer, settings, arguments, providers, wrapped)
        if call is None:
            return await wrapped(*args, **kwargs)
        out = await call.arun(wrapped, args, kwargs)
        return _finish(call, arguments, out, is_async=True)

    return wrapper


def _finish(call: TracedCall, arguments: Mapping[str, Any], out: Any, *, is_async: bool) -> Any:
    try:
        if arguments.get("stream") is True:
            chat = ChatStreamAccumulator()
            return _common.wrap_stream(out, call, chat.add_fields, chat.collect,
                                       is_async=is_async)
        call.finish(_common.chat_extract(out))
        return _common.wrap_response(out, call)
    except Exception:
        logger.exception("Recording a litellm response failed; returned as is.")
        call.finish(Extracted())
        return out


@functools.lru_cache(maxsize=256)
def _provider(model: str, providers: frozenset[str]) -> str:
    prefix, sep, _rest = model.partition("/")
    if sep and prefix in providers:
        return prefix
    try:
        litellm = importlib.import_module(_MODULE)
        found = litellm.get_llm_provider(model)[1]
        if isinstance(found, str) and found:
            return found
    except Exception:
        logger.debug("litellm could not name the provider of %r.", model, exc_info=True)
    return "litellm"


def _start(
    tracer: Tracer, settings: InstrumentSettings, arguments: Mapping[str, Any],
    providers: frozenset[str], wrapped: Any = None,
) -> TracedCall | None:
    try:
        rich = _common.rich(tracer, settings)
        model = arguments.get("model")
        model = model if isinstance(model, str) else None
        provider = arguments.get("custom_llm_provider")
        if not rich:
            provider = "litellm"  # only span attributes name it
        elif not isinstance(provider, str) or not provider:
            provider = _provider(model, providers) if model else "litellm"
        messages = arguments.get("messages")
        prompt, texts = _common.chat_prompt(messages)
        params: dict[str, Any] = {}
        server: tuple[str | None, int | None] = (None, None)
        if rich:
            params = _common.request_attributes(
                arguments, ("max_completion_tokens", "max_tokens"), openai=False,
                latest=settings.latest,
            )
            base = arguments.get("api_base") or arguments.get("base_url")
            if isinstance(base, str):
                server = _common.server_of(base)
        return _common.start_call(
            tracer,
            settings,
            operation="chat",
            provider=provider,
            model=model,
            stream=arguments.get("stream") is True,
            params=params,
            prompt_text=prompt,
            task_texts=texts,
            input_messages=_common.chat_input_messages(messages) if rich else None,
            server=server,
            wrapped=wrapped,
            messages=messages,
        )
    except Exception:
        logger.exception("Reading a litellm request failed; not traced.")
        return None
