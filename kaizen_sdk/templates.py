"""The ``{{ name }}`` prompt template language, public for the CT server that stores templates.

`kaizen_sdk.models.Prompt.render` renders with it; the server checks a stored template with the
same bounds (`MAX_PLACEHOLDERS`, `count_placeholders`) and renders it for judges (`render`), so
both sides agree on what a template is. See `kaizen_sdk._template` for the rendering bounds.
"""

from __future__ import annotations

from kaizen_sdk._template import (
    MAX_PLACEHOLDERS,
    MAX_RENDERED_CHARS,
    PLACEHOLDER,
    TemplateTooLarge,
    count_placeholders,
    render,
)

__all__ = [
    "MAX_PLACEHOLDERS",
    "MAX_RENDERED_CHARS",
    "PLACEHOLDER",
    "TemplateTooLarge",
    "count_placeholders",
    "render",
]
