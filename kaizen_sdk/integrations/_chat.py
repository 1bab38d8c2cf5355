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
    "dict_reads",
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
_BY_ATTRIBUTE, _FIELDS_ONLY, _FIELDS_THEN_EXTRAS = 0, 1, 2
_CHUNK_READS: dict[type, int] = {}
_CHOICE_READS: dict[type, int] = {}
_DELTA_READS: dict[type, int] = {}


def dict_reads(cls: type, names: tuple[str, ...], cache: dict[type, int]) -> int:
    """How `ChatStreamAccumulator` reads *names* of *cls*'s instances, decided once per class
    and kept in *cache*: from the instance dict alone (1: a `plain_model` declaring them all,
    as openai's chunk, choice and delta classes do), from the instance dict and then the
    pydantic extras (2: a `plain_model` that keeps some of them as extras, as litellm's do),
    or by attribute (0: anything else). On a pydantic model, attribute access itself goes
    through pydantic's ``__getattr__`` hook, a slower lookup than a dict's (issue 28)."""
    known = cache.get(cls)
    if known is None:
        declared = getattr(cls, "__pydantic_fields__", None)
        if not (plain_model(cls) and isinstance(declared, dict)):
            known = _BY_ATTRIBUTE
        elif all(name in declared for name in names):
            known = _FIELDS_ONLY
        else:
            known = _FIELDS_THEN_EXTRAS
        cache[cls] = known
    return known


class ChatStreamAccumulator:
    """Collects chat-completion chunks: text of choice 0, finish reasons, usage.

    Per chunk it only reads fields and appends choice 0's text (joined once, in `collect`);
    the response id, model, fingerprint and tier are read while still unknown (from openai's
    own chunks, the fingerprint and tier from those that open or close the stream: openai
    sends them on every chunk), usage when a chunk carries it (the final one, with
    ``include_usage``). pydantic chunks (openai's,
    litellm's, whose fields are partly pydantic extras) are read from their instance and
    extras dicts (see `dict_reads`), other objects by attribute, mappings by key; each read
    gives what attribute access would. No allocation or lock per chunk, and on openai's chunks
    no helper call.
    """

    __slots__ = ("data", "parts", "reasons")

    def __init__(self) -> None:
        self.data = Extracted()
        self.parts: list[str] = []
        self.reasons: dict[int, str] = {}

    def add(self, chunk: Any) -> None:
        """Read one chunk (any of the kinds above)."""
        reads = _CHUNK_READS.get(type(chunk))
        if reads != _FIELDS_ONLY:
            self._add_other(chunk, reads)
            return
        # openai's chunks, choices and deltas: the hot path (issue 28). On a pydantic model
        # every attribute read goes through pydantic's __getattr__ hook, so a chunk reads only
        # what it needs: its text, and the response's fields while unknown, from the chunks
        # that open the stream (until id and model are known: Azure's first chunk has
        # neither) and those that close it (a finish reason, usage). A missing field reads
        # the slow way, nothing twice.
        data = self.data
        try:
            choices = chunk.choices
            usage = chunk.usage
            opening = data.response_id is None or data.model is None
            if opening:
                if data.response_id is None:
                    data.response_id = nonempty_str(chunk.id)
                if data.model is None:
                    data.model = nonempty_str(chunk.model)
        except AttributeError:
            self._add_any(chunk)
            return
        closing = usage is not None
        for choice in choices or ():
            if _CHOICE_READS.get(type(choice)) != _FIELDS_ONLY:
                self._add_choice(choice)
                closing = True
                continue
            try:
                index = choice.index
                content = choice.delta.content if index == 0 else None
                reason = choice.finish_reason
            except AttributeError:
                self._add_choice(choice)
                closing = True
                continue
            if content is not None and isinstance(content, str):
                self.parts.append(content)
            if reason is not None:
                closing = True
                if isinstance(reason, str) and isinstance(index, int):
                    self.reasons[index] = reason
        if (opening or closing) and (data.system_fingerprint is None
                                     or data.service_tier is None):
            if data.system_fingerprint is None:
                data.system_fingerprint = nonempty_str(getattr(chunk, "system_fingerprint", None))
            if data.service_tier is None:
                data.service_tier = nonempty_str(getattr(chunk, "service_tier", None))
        if usage is not None:
            chat_usage(data, usage)

    def add_fields(self, chunk: Any) -> None:
        """`add` for litellm's chunks, whose fields are partly pydantic extras: read from the
        instance and extras dicts, inline (no helper call per chunk); others go to `add`."""
        if _CHUNK_READS.get(type(chunk)) != _FIELDS_THEN_EXTRAS:
            self.add(chunk)
            return
        data = self.data
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
        for choice in choices or ():
            if not _CHOICE_READS.get(type(choice)):  # not yet seen, or not a pydantic model
                self._add_choice(choice)
                continue
            cfields = choice.__dict__
            cextra = choice.__pydantic_extra__ or _NO_EXTRAS
            index = cfields["index"] if "index" in cfields else cextra.get("index", 0)
            if index == 0:
                delta = cfields.get("delta")
                if delta is None:
                    delta = cextra.get("delta")
                if _DELTA_READS.get(type(delta)):
                    content = delta.__dict__.get("content")
                    if content is None:
                        content = (delta.__pydantic_extra__ or _NO_EXTRAS).get("content")
                else:
                    content = _content(delta)
                if isinstance(content, str):
                    self.parts.append(content)
            reason = cfields.get("finish_reason")
            if reason is None:
                reason = cextra.get("finish_reason")
            if isinstance(reason, str) and isinstance(index, int):
                self.reasons[index] = reason
        if usage is not None:
            chat_usage(data, usage)

    def _add_other(self, chunk: Any, reads: int | None) -> None:
        if reads is None:  # a chunk class not seen yet
            reads = dict_reads(type(chunk), _CHUNK_NAMES, _CHUNK_READS)
        if reads == _FIELDS_ONLY:
            self.add(chunk)
        elif reads == _FIELDS_THEN_EXTRAS:
            self.add_fields(chunk)
        else:
            self._add_any(chunk)

    def _add_any(self, chunk: Any) -> None:
        """A chunk that is a mapping, or an object other than a plain pydantic model (or one
        missing a declared field): read by key or attribute."""
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
        """Any choice: a pydantic model's read from its dicts, else by key or attribute."""
        reads = _CHOICE_READS.get(type(choice))
        if reads is None:
            reads = dict_reads(type(choice), _CHOICE_NAMES, _CHOICE_READS)
        if reads:
            fields = choice.__dict__
            extra = (choice.__pydantic_extra__ or _NO_EXTRAS
                     if reads == _FIELDS_THEN_EXTRAS else _NO_EXTRAS)
            index = fields["index"] if "index" in fields else extra.get("index", 0)
            if index == 0:
                content = _content(_read(fields, extra, "delta"))
                if isinstance(content, str):
                    self.parts.append(content)
            reason = _read(fields, extra, "finish_reason")
        else:
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


def _read(fields: dict[str, Any], extra: dict[str, Any], name: str) -> Any:
    """What attribute access reads of a plain pydantic model: its field, else its extra."""
    value = fields.get(name)
    return extra.get(name) if value is None else value


def _content(delta: Any) -> Any:
    """A delta's ``content``, read as `ChatStreamAccumulator` reads fields."""
    reads = _DELTA_READS.get(type(delta))
    if reads is None:
        reads = dict_reads(type(delta), _DELTA_NAMES, _DELTA_READS)
    if not reads:
        return get_field(delta, "content")
    extra = (delta.__pydantic_extra__ or _NO_EXTRAS
             if reads == _FIELDS_THEN_EXTRAS else _NO_EXTRAS)
    return _read(delta.__dict__, extra, "content")
