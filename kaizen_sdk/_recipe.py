"""Chat prompts and their settings ("the call's recipe"), shared by the SDK and the CT server.

A prompt version may carry ``messages`` (role + content templates with ``{{ name }}``
placeholders) and ``config`` (the model and any provider keyword) besides ``prompt_text``. For a
chat version ``prompt_text`` is `messages_text` of its messages, so clients that only read
``prompt_text`` keep working. `check_recipe` is the one check both sides run: a message without
a role or content, an unknown role, settings that are not a JSON object, too many placeholders,
or a version larger than the server's bound are refused with a `BadRecipe` naming the field.

Labels name versions: `PRODUCTION` is the active version (moved by activation, never set by
hand); any other label matches `LABEL_PATTERN`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from kaizen_sdk import _template

__all__ = [
    "LABEL_PATTERN",
    "PRODUCTION",
    "ROLES",
    "BadRecipe",
    "MessageLike",
    "check_label",
    "check_recipe",
    "keeps_messages",
    "messages_text",
    "parse_messages_text",
    "render_messages",
]

ROLES = ("system", "developer", "user", "assistant", "tool")
"""The message roles the chat-completion providers accept."""

PRODUCTION = "production"
"""The label of the active version: moved by activation (and rollouts), never set by hand."""

LABEL_PATTERN = re.compile(r"[a-z0-9._-]{1,64}")
"""A label: 1 to 64 characters of lower-case letters, digits and ``._-``."""

_RESERVED_CONFIG = ("messages",)


class BadRecipe(ValueError):
    """A chat prompt or its settings cannot be stored or rendered; the message names the field."""


class MessageLike(Protocol):
    """Anything with a ``role`` and a ``content`` (`kaizen_sdk.models.ChatMessage`)."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


def messages_text(messages: Sequence[MessageLike]) -> str:
    """The readable text of a chat prompt: each message under a ``[role]`` header.

    This is a chat version's ``prompt_text``, what clients that predate messages show and use.
    """
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)


_HEADER = re.compile(r"(?:^|\n\n)\[(" + "|".join(ROLES) + r")\]\n")


def parse_messages_text(text: str, roles: Sequence[str]) -> list[dict[str, str]] | None:
    """Read `messages_text` back into messages with exactly *roles*, in order; else ``None``.

    For a text an optimizer derived from a chat version's text: the messages come back only
    when the headers are the same roles and the result renders to *text* again.
    """
    found = list(_HEADER.finditer(text))
    if [m.group(1) for m in found] != list(roles) or not found or found[0].start() != 0:
        return None
    messages = [
        {"role": m.group(1),
         "content": text[m.end():found[i + 1].start() if i + 1 < len(found) else len(text)]}
        for i, m in enumerate(found)
    ]
    rebuilt = "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
    return messages if rebuilt == text else None


def keeps_messages(base: str, text: str) -> bool:
    """Whether *text*, derived from *base* by an optimizer, still reads as *base*'s messages.

    *base* is a chat version's ``prompt_text`` (`messages_text`) when its ``[role]`` headers
    read back into messages; *text* keeps them when it has the same headers in the same order
    and each message keeps every ``{{ variable }}`` it had. A *base* that is no chat text
    keeps nothing, so any *text* does.
    """
    roles = [m.group(1) for m in _HEADER.finditer(base)]
    old = parse_messages_text(base, roles)
    if old is None:
        return True
    new = parse_messages_text(text, roles)
    return new is not None and all(
        set(_template.PLACEHOLDER.findall(o["content"]))
        <= set(_template.PLACEHOLDER.findall(n["content"]))
        for o, n in zip(old, new, strict=True)
    )


def check_label(label: Any, *, settable: bool = False) -> str:
    """Return *label* if it is a label; with *settable*, refuse `PRODUCTION` too."""
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise BadRecipe(
            f"`label` must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-', got {label!r}"
        )
    if settable and label == PRODUCTION:
        raise BadRecipe(
            "`label` 'production' is the active version: activate a version (or promote a"
            " rollout) to move it"
        )
    return label


def check_recipe(
    messages: Sequence[MessageLike] | None,
    config: Mapping[str, Any] | None,
    prompt_text: str | None,
    *,
    max_chars: int,
) -> str:
    """Check a version's parts; return the ``prompt_text`` to store with them.

    With *messages*, the text is `messages_text` of them (a *prompt_text* given as well must
    equal it). The text and the encoded settings together have at most *max_chars* characters.
    Raises `BadRecipe` naming the first bad field.
    """
    if messages is not None:
        if not messages:
            raise BadRecipe("`messages` must have at least one message")
        placeholders = 0
        for index, message in enumerate(messages):
            where = f"`messages[{index}]"
            if message.role not in ROLES:
                raise BadRecipe(
                    f"{where}.role` must be one of {', '.join(ROLES)}, got {message.role!r}"
                )
            if not isinstance(message.content, str):
                raise BadRecipe(f"{where}.content` must be a string")
            placeholders += _template.count_placeholders(message.content)
        if placeholders > _template.MAX_PLACEHOLDERS:
            raise BadRecipe(
                f"`messages` have {placeholders} placeholders; at most"
                f" {_template.MAX_PLACEHOLDERS} are allowed"
            )
        text = messages_text(messages)
        if prompt_text is not None and prompt_text != text:
            raise BadRecipe(
                "`prompt_text` must be left out for a chat version (it is the text of its"
                " `messages`)"
            )
        if not any(m.content.strip() for m in messages):
            raise BadRecipe("`messages` must not all be empty")
    elif prompt_text is None:
        raise BadRecipe("`prompt_text` or `messages` is required")
    else:
        text = prompt_text
    size = len(text)
    if config is not None:
        if not isinstance(config, Mapping):
            raise BadRecipe("`config` must be a JSON object")
        for key in _RESERVED_CONFIG:
            if key in config:
                raise BadRecipe(f"`config.{key}` is not a setting: give `messages` instead")
        model = config.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise BadRecipe("`config.model` must be a non-empty string")
        try:
            size += len(msgspec.json.encode(dict(config)))
        except (TypeError, ValueError):
            raise BadRecipe("`config` must hold JSON values only") from None
    if size > max_chars:
        field = "messages" if messages is not None else "prompt_text"
        extra = " and `config`" if config else ""
        raise BadRecipe(
            f"`{field}`{extra} have {size} characters; at most {max_chars} are allowed"
        )
    return text


def render_messages(
    messages: Sequence[MessageLike], fill: Callable[[str], str]
) -> list[dict[str, str]]:
    """Render each message's content with *fill*; ``[{"role", "content"}, ...]``.

    Whatever *fill* raises propagates; `_template.TemplateTooLarge` past the bounds.
    """
    return [
        {"role": m.role, "content": _template.render(m.content, fill)} for m in messages
    ]
