"""Bounded rendering of ``{{ name }}`` prompt templates, shared by the SDK and the local server.

A template is rendered in one pass that counts its placeholders and the characters it has
produced: a template with more than `MAX_PLACEHOLDERS` placeholders, or a result longer than
`MAX_RENDERED_CHARS`, stops with `TemplateTooLarge` (a `ValueError` whose message says which
bound was passed) instead of building a result of hundreds of megabytes (19,000 placeholders
of a 10 KB value would make 190 MB).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "MAX_PLACEHOLDERS",
    "MAX_RENDERED_CHARS",
    "PLACEHOLDER",
    "TemplateTooLarge",
    "count_placeholders",
    "render",
]

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
"""A ``{{ name }}`` placeholder; group 1 is the name."""

MAX_PLACEHOLDERS = 1000
"""Most placeholders (occurrences, not distinct names) a template may have to be rendered."""

MAX_RENDERED_CHARS = 4_000_000
"""Longest rendered prompt, in characters (about a million tokens, the largest context
windows); rendering stops with `TemplateTooLarge` past it."""


class TemplateTooLarge(ValueError):
    """A template has too many placeholders, or would render past `MAX_RENDERED_CHARS`."""


def count_placeholders(template: str) -> int:
    """Return how many ``{{ name }}`` placeholders *template* has (every occurrence)."""
    return sum(1 for _ in PLACEHOLDER.finditer(template))


def render(template: str, fill: Callable[[str], str]) -> str:
    """Replace each placeholder of *template* by ``fill(name)``, within both bounds.

    Raises `TemplateTooLarge` naming the bound; whatever *fill* raises propagates.
    """
    count = count_placeholders(template)
    if count > MAX_PLACEHOLDERS:
        raise TemplateTooLarge(
            f"the prompt template has more than {MAX_PLACEHOLDERS} placeholders ({count});"
            f" at most {MAX_PLACEHOLDERS} are rendered"
        )
    parts: list[str] = []
    size = 0
    start = 0
    for match in PLACEHOLDER.finditer(template):
        literal = template[start:match.start()]
        value = fill(match.group(1))
        size += len(literal) + len(value)
        if size > MAX_RENDERED_CHARS:
            raise TemplateTooLarge(
                f"the rendered prompt would be longer than {MAX_RENDERED_CHARS:,} characters"
                " (its variables are too large for its placeholders)"
            )
        parts += (literal, value)
        start = match.end()
    tail = template[start:]
    if size + len(tail) > MAX_RENDERED_CHARS:
        raise TemplateTooLarge(
            f"the rendered prompt would be longer than {MAX_RENDERED_CHARS:,} characters"
        )
    parts.append(tail)
    return "".join(parts)
