"""The ``{{ name }}`` prompt template language, public for the CT server that stores templates.

`kaizen_sdk.models.Prompt.render` renders with it; the server checks a stored template with the
same bounds (`MAX_PLACEHOLDERS`, `count_placeholders`) and renders it for judges (`render`), so
both sides agree on what a template is. See `kaizen_sdk._template` for the rendering bounds.

Chat prompts too: `check_recipe` checks a version's messages and settings (`BadRecipe` names
the field), `messages_text` is a chat version's ``prompt_text`` (`keeps_messages` tells whether
an optimizer's text still reads as its messages), `check_label` checks a label
(`PRODUCTION` is the active version's); see `kaizen_sdk._recipe`.
"""

from __future__ import annotations

from kaizen_sdk._recipe import (
    LABEL_PATTERN,
    PRODUCTION,
    ROLES,
    BadRecipe,
    check_label,
    check_recipe,
    keeps_messages,
    messages_text,
    parse_messages_text,
)
from kaizen_sdk._template import (
    MAX_PLACEHOLDERS,
    MAX_RENDERED_CHARS,
    PLACEHOLDER,
    TemplateTooLarge,
    count_placeholders,
    render,
)

__all__ = [
    "LABEL_PATTERN",
    "MAX_PLACEHOLDERS",
    "MAX_RENDERED_CHARS",
    "PLACEHOLDER",
    "PRODUCTION",
    "ROLES",
    "BadRecipe",
    "TemplateTooLarge",
    "check_label",
    "check_recipe",
    "count_placeholders",
    "keeps_messages",
    "messages_text",
    "parse_messages_text",
    "render",
]
