"""Patches for Google's ``google-genai`` client library (``google.genai``).

``models.generate_content`` and ``models.generate_content_stream``, sync and async
(``client.aio.models``), are wrapped on their classes, so every client is covered. Spans
follow the GenAI conventions: operation ``generate_content``, ``gen_ai.provider.name``
``gcp.gemini`` (the Gemini Developer API) or ``gcp.vertex_ai`` (a Vertex AI client), with the
deprecated ``gen_ai.system`` ``gemini`` / ``vertex_ai`` beside it unless the latest
conventions are selected; output tokens count thinking tokens too; finish reasons are the
candidates' in lower case (``stop``, ``max_tokens``...). Use it through
``kaizen_sdk.instrument(google.genai)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Tracer

from kaizen_sdk.integrations import _common, _methods
from kaizen_sdk.integrations._common import Extracted, InstrumentSettings, TracedCall
from kaizen_sdk.integrations._methods import Finish, Start, Target

__all__ = ["_instrument", "_uninstrument"]

logger = logging.getLogger("kaizen_sdk.instrument")

_MODELS = "google.genai.models"
_TARGETS: tuple[Target, ...] = (
    Target(_MODELS, "Models", "generate_content", False, "content"),
    Target(_MODELS, "Models", "generate_content_stream", False, "stream"),
    Target(_MODELS, "AsyncModels", "generate_content", True, "content"),
    Target(_MODELS, "AsyncModels", "generate_content_stream", True, "stream"),
)
_NO_SERVER: tuple[str | None, int | None] = (None, None)
_JSON = frozenset({"application/json", "text/x.enum"})

_switch = _common.Switch()


def _instrument(tracer: Tracer, settings: InstrumentSettings) -> None:
    """Wrap ``generate_content`` and ``generate_content_stream`` of ``Models``/``AsyncModels``."""
    global _switch
    _switch.on = False
    _switch = switch = _common.Switch()
    _methods.patch("google-genai", _TARGETS, tracer, settings, switch, _starter, _finisher)


def _uninstrument() -> None:
    """Restore the original google-genai methods (safe to call twice)."""
    _switch.on = False
    _methods.unpatch(_TARGETS)


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --- requests ------------------------------------------------------------------------------


def _parts_text(parts: Any) -> str | None:
    """The text of a list of parts (thought parts left out)."""
    texts: list[str] = []
    for part in parts:
        text = _part_text(part)
        if text is not None:
            texts.append(text)
    return "".join(texts) if texts else None


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if _get(part, "thought") is True:
        return None
    text = _get(part, "text")
    return text if isinstance(text, str) else None


def _contents(contents: Any) -> list[tuple[str, str]]:
    """``(role, text)`` of each content of a request, as google-genai reads ``contents``:
    a string, a part, a content, or a list of them (loose strings and parts are one user
    content)."""
    items = contents if isinstance(contents, (list, tuple)) else [contents]
    out: list[tuple[str, str]] = []
    loose: list[str] = []
    for item in items:
        parts = None if isinstance(item, str) else _get(item, "parts")
        if isinstance(parts, (list, tuple)):
            text = _parts_text(parts)
            if text is not None:
                role = _get(item, "role")
                out.append((role if isinstance(role, str) and role else "user", text))
            continue
        text = _part_text(item) if item is not None else None
        if text is not None:
            loose.append(text)
    if loose:
        out.append(("user", "".join(loose)))
    return out


def _system_text(config: Any) -> str | None:
    given = _get(config, "system_instruction") if config is not None else None
    if given is None:
        return None
    texts = [text for _role, text in _contents(given)]
    return "".join(texts) if texts else None


def _params(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    out: dict[str, Any] = {}
    for attr, key in (
        (_common.GEN_AI_REQUEST_TEMPERATURE, "temperature"),
        (_common.GEN_AI_REQUEST_TOP_P, "top_p"),
        (_common.GEN_AI_REQUEST_FREQUENCY_PENALTY, "frequency_penalty"),
        (_common.GEN_AI_REQUEST_PRESENCE_PENALTY, "presence_penalty"),
    ):
        value = _get(config, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[attr] = value
    for attr, key in (
        (_common.GEN_AI_REQUEST_MAX_TOKENS, "max_output_tokens"),
        (_common.GEN_AI_REQUEST_SEED, "seed"),
        (_common.GEN_AI_REQUEST_TOP_K, "top_k"),
    ):
        number = _int(_get(config, key))
        if number is not None:
            out[attr] = number
    top_k = _get(config, "top_k")  # a float in google-genai's types
    if isinstance(top_k, float) and top_k.is_integer():
        out[_common.GEN_AI_REQUEST_TOP_K] = int(top_k)
    count = _int(_get(config, "candidate_count"))
    if count is not None and count != 1:
        out[_common.GEN_AI_REQUEST_CHOICE_COUNT] = count
    stop = _get(config, "stop_sequences")
    if isinstance(stop, (list, tuple)) and stop and all(isinstance(s, str) for s in stop):
        out[_common.GEN_AI_REQUEST_STOP_SEQUENCES] = list(stop)
    mime = _get(config, "response_mime_type")
    if isinstance(mime, str):
        out[_common.GEN_AI_OUTPUT_TYPE] = "json" if mime in _JSON else "text"
    return out


def _input_messages(contents: Any, system: str | None) -> Callable[[], list[dict[str, Any]]]:
    def render() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if system is not None:
            out.append({"role": "system", "parts": [{"type": "text", "content": system}]})
        for role, text in _contents(contents):
            out.append({"role": "assistant" if role == "model" else role,
                        "parts": [{"type": "text", "content": text}]})
        return out

    return render


def _provider(instance: Any) -> tuple[str, str]:
    """(``gen_ai.provider.name``, deprecated ``gen_ai.system``) of a ``Models`` object."""
    client = getattr(instance, "_api_client", None)
    if getattr(client, "vertexai", False) is True:
        return "gcp.vertex_ai", "vertex_ai"
    return "gcp.gemini", "gemini"


def _server(instance: Any) -> tuple[str | None, int | None]:
    client = getattr(instance, "_api_client", None)
    options = getattr(client, "_http_options", None)
    return _common.server_of(getattr(options, "base_url", None))


def _model(kwargs: Mapping[str, Any]) -> str | None:
    model = kwargs.get("model")
    if not isinstance(model, str) or not model:
        return None
    return model.removeprefix("models/")


def _starter(target: Target) -> Start:
    stream = target.kind == "stream"

    def start(
        tracer: Tracer, settings: InstrumentSettings, instance: Any, kwargs: Mapping[str, Any],
        wrapped: Any, peers: tuple[bool, bool],
    ) -> TracedCall | None:
        try:
            rich = _common.rich(tracer, settings)
            contents = kwargs.get("contents")
            config = kwargs.get("config")
            system = _system_text(config)
            given = _contents(contents)
            prompt: str | None = None
            texts: list[str] = []
            for role, text in given:
                if role == "user":
                    prompt = text
                texts.append(text)
            if prompt is not None:
                texts.remove(prompt)
                texts.insert(0, prompt)
            if system is not None:
                texts.append(system)
            provider, system_name = _provider(instance)
            return _common.start_call(
                tracer,
                settings,
                operation="generate_content",
                provider=provider,
                system=system_name,
                model=_model(kwargs),
                stream=stream,
                params=_params(config) if rich else {},
                prompt_text=prompt,
                task_texts=texts,
                input_messages=_input_messages(contents, system) if rich else None,
                server=_server(instance) if rich else _NO_SERVER,
                wrapped=wrapped,
                beneath=peers[0],
                above=peers[1],
            )
        except Exception:
            logger.exception("Reading a google-genai request failed; not traced.")
            return None

    return start


# --- responses -----------------------------------------------------------------------------


def _finisher(target: Target) -> Finish:
    stream = target.kind == "stream"

    def finish(call: TracedCall, kwargs: Mapping[str, Any], out: Any, is_async: bool) -> Any:
        try:
            if stream:
                chunks = _StreamAccumulator()
                return _common.wrap_stream(out, call, chunks.add, chunks.collect,
                                           is_async=is_async)
            data = Extracted()
            _read(data, out, [])
            call.finish(data)
            return _common.wrap_response(out, call)
        except Exception:
            logger.exception("Recording a google-genai response failed; returned as is.")
            call.finish(Extracted())
            return out

    return finish


def _reason(candidate: Any) -> str | None:
    reason = _get(candidate, "finish_reason")
    if reason is None:
        return None
    value = getattr(reason, "value", reason)
    return value.lower() if isinstance(value, str) and value else None


def _read(data: Extracted, response: Any, parts: list[str]) -> None:
    """Fold one ``GenerateContentResponse`` (a whole answer or a stream chunk) into *data*;
    the text of candidate 0 goes to *parts*."""
    data.response_id = _str(_get(response, "response_id")) or data.response_id
    data.model = _str(_get(response, "model_version")) or data.model
    reasons: list[str] = []
    for index, candidate in enumerate(_get(response, "candidates") or ()):
        reason = _reason(candidate)
        if reason is not None:
            reasons.append(reason)
        if (_int(_get(candidate, "index")) or index) == 0:
            content_parts = _get(_get(candidate, "content"), "parts")
            if isinstance(content_parts, (list, tuple)):
                text = _parts_text(content_parts)
                if text is not None:
                    parts.append(text)
    if reasons:
        data.finish_reasons = reasons
    usage = _get(response, "usage_metadata")
    if usage is not None:
        prompt = _int(_get(usage, "prompt_token_count"))
        output = _int(_get(usage, "candidates_token_count"))
        thoughts = _int(_get(usage, "thoughts_token_count"))
        total = _int(_get(usage, "total_token_count"))
        if prompt is not None:
            data.input_tokens = prompt
        if output is not None or thoughts is not None:
            data.output_tokens = (output or 0) + (thoughts or 0)
        if total is not None:
            data.total_tokens = total
    data.text = "".join(parts) if parts else None


class _StreamAccumulator:
    """Collects ``GenerateContentResponse`` chunks: text, finish reasons, the last usage."""

    __slots__ = ("data", "parts")

    def __init__(self) -> None:
        self.data = Extracted()
        self.parts: list[str] = []

    def add(self, chunk: Any) -> None:
        _read(self.data, chunk, self.parts)

    def collect(self) -> Extracted:
        return self.data
