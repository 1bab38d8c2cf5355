"""Chat-completion shaped requests and responses (openai chat, litellm): the prompt, the
input messages, a response or a stream of chunks read into `Extracted`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaizen_sdk.integrations._utils import Extracted, as_int, get_field, nonempty_str, text_of

__all__ = [
    "ChatStreamAccumulator",
    "chat_extract",
    "chat_input_messages",
    "chat_prompt",
    "chat_usage",
    "plain_model",
    "reads_dicts",
]

def chat_prompt(messages: Any) -> tuple[str | None, list[str]]:
    """The prompt text (last user message) and every message text, prompt text first."""
    prompt: str | None = None
    texts: list[str] = []
    if isinstance(messages, (list, tuple)):
        for message in messages:
            text = text_of(get_field(message, "content"))
            if text is None:
                continue
            texts.append(text)
            if get_field(message, "role") == "user":
                prompt = text
    if prompt is not None:
        texts.remove(prompt)
        texts.insert(0, prompt)
    return prompt, texts


def chat_input_messages(messages: Any) -> Callable[[], list[dict[str, Any]]]:
    """A thunk that renders *messages* as GenAI ``gen_ai.input.messages``."""

    def render() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for message in messages if isinstance(messages, (list, tuple)) else ():
            text = text_of(get_field(message, "content"))
            parts = [{"type": "text", "content": text}] if text is not None else []
            out.append({"role": str(get_field(message, "role", "user")), "parts": parts})
        return out

    return render


def chat_extract(response: Any) -> Extracted:
    """Read a chat-completion response (openai ``ChatCompletion`` or litellm ``ModelResponse``)."""
    data = Extracted(response_id=nonempty_str(get_field(response, "id")),
                     model=nonempty_str(get_field(response, "model")))
    choices = get_field(response, "choices") or []
    texts: list[str] = []
    for choice in choices:
        reason = get_field(choice, "finish_reason")
        if isinstance(reason, str):
            data.finish_reasons.append(reason)
        if get_field(choice, "index", 0) == 0:
            text = text_of(get_field(get_field(choice, "message"), "content"))
            if text is not None:
                texts.append(text)
    data.text = "".join(texts) if texts else None
    data.service_tier = nonempty_str(get_field(response, "service_tier"))
    data.system_fingerprint = nonempty_str(get_field(response, "system_fingerprint"))
    chat_usage(data, get_field(response, "usage"))
    return data


def chat_usage(data: Extracted, usage: Any) -> None:
    """Read a chat response's ``usage`` (prompt, completion, total tokens) into *data*."""
    if usage is None:
        return
    data.input_tokens = as_int(get_field(usage, "prompt_tokens"))
    data.output_tokens = as_int(get_field(usage, "completion_tokens"))
    data.total_tokens = as_int(get_field(usage, "total_tokens"))
    details = get_field(usage, "prompt_tokens_details")
    if details is not None:
        data.cached_input_tokens = as_int(get_field(details, "cached_tokens"))


_CHUNK_FIELDS = ("id", "model", "system_fingerprint", "service_tier", "choices", "usage",
                 "index", "delta", "content", "finish_reason")
"""Every field name `ChatStreamAccumulator` reads from a chunk, its choices and their deltas."""

_PLAIN_MODELS: dict[type, bool] = {}
"""`plain_model`'s verdict per class (openai's and litellm's chunk classes: a few a process)."""


def plain_model(cls: type) -> bool:
    """Whether ``getattr(obj, name, None)`` for every name in `_CHUNK_FIELDS`, on any instance
    of *cls*, is the value in ``obj.__dict__``, else in ``obj.__pydantic_extra__``, else None.

    True for pydantic v2 models that keep pydantic's attribute access (openai's chunks keep
    their fields in ``__dict__``, litellm's partly as extras) and have no class attribute of
    those names; decided once per class. Reading the two dicts costs a fraction of pydantic's
    ``__getattr__``, which runs for every extra and every missing field (issue 28).
    """
    known = _PLAIN_MODELS.get(cls)
    if known is None:
        hook = getattr(cls, "__getattr__", None)
        known = (
            getattr(cls, "__getattribute__", None) is object.__getattribute__
            and getattr(hook, "__module__", None) == "pydantic.main"
            and getattr(hook, "__qualname__", None) == "BaseModel.__getattr__"
            and hasattr(cls, "__pydantic_extra__")
            and not any(hasattr(cls, name) for name in _CHUNK_FIELDS)
        )
        _PLAIN_MODELS[cls] = known
    return known


_NO_EXTRAS: dict[str, Any] = {}
_CHUNK_NAMES = ("id", "model", "system_fingerprint", "service_tier", "choices", "usage")
_CHOICE_NAMES = ("index", "delta", "finish_reason")
_DELTA_NAMES = ("content",)
_CHUNK_DICTS: dict[type, bool] = {}
_CHOICE_DICTS: dict[type, bool] = {}
_DELTA_DICTS: dict[type, bool] = {}


def reads_dicts(cls: type, names: tuple[str, ...], cache: dict[type, bool]) -> bool:
    """Whether `ChatStreamAccumulator` reads *names* of *cls*'s instances from their dicts:
    a `plain_model` that does not declare them all as fields (litellm's chunk, choice and
    delta classes, whose fields are pydantic extras); others (openai's, every field declared)
    are read by attribute. Decided once per class, kept in *cache*."""
    known = cache.get(cls)
    if known is None:
        declared = getattr(cls, "__pydantic_fields__", None)
        known = (plain_model(cls) and isinstance(declared, dict)
                 and not all(name in declared for name in names))
        cache[cls] = known
    return known


class ChatStreamAccumulator:
    """Collects chat-completion chunks: text of choice 0, finish reasons, usage.

    Per chunk it only reads fields and appends choice 0's text (joined once, in `collect`);
    the response id, model, fingerprint and tier are read while still unknown, usage when a
    chunk carries it (the final one, with ``include_usage``). `add` reads openai's chunks by
    attribute (dicts by key); `add_fields` reads litellm's, whose fields are partly pydantic
    extras, from their instance and extras dicts, never through pydantic's ``__getattr__``.
    No allocation, lock or helper call per chunk.
    """

    __slots__ = ("data", "parts", "reasons")

    def __init__(self) -> None:
        self.data = Extracted()
        self.parts: list[str] = []
        self.reasons: dict[int, str] = {}

    def add(self, chunk: Any) -> None:
        if isinstance(chunk, dict):
            self._add_mapping(chunk)
            return
        # the hot path: attribute objects (openai's chunks), no helper calls
        data = self.data
        if data.response_id is None:
            value = getattr(chunk, "id", None)
            if isinstance(value, str) and value:
                data.response_id = value
        if data.model is None:
            value = getattr(chunk, "model", None)
            if isinstance(value, str) and value:
                data.model = value
        if data.system_fingerprint is None:
            value = getattr(chunk, "system_fingerprint", None)
            if isinstance(value, str) and value:
                data.system_fingerprint = value
        if data.service_tier is None:
            value = getattr(chunk, "service_tier", None)
            if isinstance(value, str) and value:
                data.service_tier = value
        choices = getattr(chunk, "choices", None)
        if choices:
            for choice in choices:
                if isinstance(choice, dict):
                    self._add_choice(choice)
                    continue
                index = getattr(choice, "index", 0)
                if index == 0:
                    content = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(content, str):
                        self.parts.append(content)
                reason = getattr(choice, "finish_reason", None)
                if reason is not None and isinstance(reason, str) and isinstance(index, int):
                    self.reasons[index] = reason
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            chat_usage(data, usage)

    def add_fields(self, chunk: Any) -> None:
        """`add` for litellm's chunks: fields that are pydantic extras (see `reads_dicts`) are
        read from the instance and extras dicts, inline; other chunks go to `add`."""
        data = self.data
        dicts = _CHUNK_DICTS.get(type(chunk))
        if dicts is None:
            dicts = reads_dicts(type(chunk), _CHUNK_NAMES, _CHUNK_DICTS)
        if dicts:  # litellm's chunks: some fields are pydantic extras
            fields = chunk.__dict__
            extra = chunk.__pydantic_extra__ or _NO_EXTRAS
            if data.response_id is None:
                value = fields.get("id") or extra.get("id")
                if isinstance(value, str) and value:
                    data.response_id = value
            if data.model is None:
                value = fields.get("model") or extra.get("model")
                if isinstance(value, str) and value:
                    data.model = value
            if data.system_fingerprint is None:
                value = fields.get("system_fingerprint") or extra.get("system_fingerprint")
                if isinstance(value, str) and value:
                    data.system_fingerprint = value
            if data.service_tier is None:
                value = fields.get("service_tier") or extra.get("service_tier")
                if isinstance(value, str) and value:
                    data.service_tier = value
            choices = fields.get("choices") or extra.get("choices")
            usage = fields.get("usage")
            if usage is None:
                usage = extra.get("usage")
        else:
            self.add(chunk)
            return
        if choices:
            for choice in choices:
                dicts = _CHOICE_DICTS.get(type(choice))
                if dicts is None:
                    dicts = reads_dicts(type(choice), _CHOICE_NAMES, _CHOICE_DICTS)
                if dicts:  # litellm's choices: their fields are pydantic extras, as their delta's
                    cfields = choice.__dict__
                    cextra = choice.__pydantic_extra__ or _NO_EXTRAS
                    index = cfields["index"] if "index" in cfields else cextra.get("index", 0)
                    if index == 0:
                        delta = cfields.get("delta")
                        if delta is None:
                            delta = cextra.get("delta")
                        dicts = _DELTA_DICTS.get(type(delta))
                        if dicts is None:
                            dicts = reads_dicts(type(delta), _DELTA_NAMES, _DELTA_DICTS)
                        if dicts:
                            content = delta.__dict__.get("content")
                            if content is None:
                                content = (delta.__pydantic_extra__ or _NO_EXTRAS).get("content")
                        else:
                            content = getattr(delta, "content", None)
                        if isinstance(content, str):
                            self.parts.append(content)
                    reason = cfields.get("finish_reason")
                    if reason is None:
                        reason = cextra.get("finish_reason")
                elif isinstance(choice, dict):
                    self._add_choice(choice)
                    continue
                else:
                    index = getattr(choice, "index", 0)
                    if index == 0:
                        content = getattr(getattr(choice, "delta", None), "content", None)
                        if isinstance(content, str):
                            self.parts.append(content)
                    reason = getattr(choice, "finish_reason", None)
                if isinstance(reason, str) and isinstance(index, int):
                    self.reasons[index] = reason
        if usage is not None:
            chat_usage(data, usage)

    def _add_mapping(self, chunk: Any) -> None:
        data = self.data
        if data.response_id is None:
            data.response_id = nonempty_str(get_field(chunk, "id"))
        if data.model is None:
            data.model = nonempty_str(get_field(chunk, "model"))
        if data.system_fingerprint is None:
            data.system_fingerprint = nonempty_str(get_field(chunk, "system_fingerprint"))
        if data.service_tier is None:
            data.service_tier = nonempty_str(get_field(chunk, "service_tier"))
        for choice in get_field(chunk, "choices") or ():
            self._add_choice(choice)
        usage = get_field(chunk, "usage")
        if usage is not None:
            chat_usage(data, usage)

    def _add_choice(self, choice: Any) -> None:
        index = get_field(choice, "index", 0)
        if index == 0:
            content = get_field(get_field(choice, "delta"), "content")
            if isinstance(content, str):
                self.parts.append(content)
        reason = get_field(choice, "finish_reason")
        if isinstance(reason, str) and isinstance(index, int):
            self.reasons[index] = reason

    def collect(self) -> Extracted:
        data = self.data
        data.text = "".join(self.parts) if self.parts else None
        data.finish_reasons = [self.reasons[i] for i in sorted(self.reasons)]
        return data
