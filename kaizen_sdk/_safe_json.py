"""Safe JSON: encode any value without raising, long strings cut with a marker.

The one place that decides how a value the SDK records (inputs, outputs, texts) becomes
JSON: the decorator encodes inputs with `enc_hook` on the caller's thread, the delivery
engine encodes whole records with `safe_json`/`SAFE_ENCODER` in its own thread. A leaf:
it imports nothing of kaizen_sdk.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_TEXT_CHARS",
    "SAFE_ENCODER",
    "clean_text",
    "enc_hook",
    "safe_json",
    "truncate",
]

MAX_TEXT_CHARS = 65_536
"""Longest string (prompt, response, one input value) sent as is; longer ones are cut
and end with a ``…[truncated N chars]`` marker."""

MAX_JSON_BYTES = 262_144
"""Largest encoded value; a bigger one becomes a truncated string under ``ct.truncated``."""


def truncate(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """*text* if it has at most *limit* characters, else cut, ending ``…[truncated N chars]``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        return f"<unrepresentable {type(obj).__qualname__}>"
    return truncate(text, 1024)


def enc_hook(obj: Any) -> Any:
    """msgspec ``enc_hook``: an object JSON does not know becomes its (truncated) ``repr``."""
    return _safe_repr(obj)


SAFE_ENCODER = msgspec.json.Encoder(enc_hook=enc_hook)
"""A JSON encoder that turns unknown objects into their ``repr`` (shared, thread-safe)."""


def _shrink(value: Any) -> Any:
    """Cut long strings and bytes at the top level of *value* (or of a dict's values)."""
    kind = type(value)
    if kind is str:
        return truncate(value)
    if kind is bytes or kind is bytearray:
        return f"<{len(value)} bytes>" if len(value) > 1024 else value
    if kind is dict:
        return {k: _shrink(v) for k, v in value.items()}
    return value


def clean_text(text: str) -> str:
    """Replace what UTF-8 cannot carry (lone surrogates) with ``?``."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _sanitize(value: Any, depth: int) -> Any:
    """Convert value by value what JSON cannot carry as a whole (the slow path)."""
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float:
        return value
    if kind is str:
        return clean_text(truncate(value))
    if depth >= 8:
        return clean_text(_safe_repr(value))
    if isinstance(value, dict):
        return {
            (k if type(k) is str else clean_text(_safe_repr(k))): _sanitize(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_sanitize(v, depth + 1) for v in value]
    try:
        return msgspec.Raw(SAFE_ENCODER.encode(_shrink(value)))
    except Exception:
        return clean_text(_safe_repr(value))


def safe_json(value: Any) -> msgspec.Raw:
    """Encode *value* as JSON, never raising: unknown objects become their ``repr``.

    Long strings are cut with a marker; a result over 256 KiB becomes a truncated string.
    """
    try:
        data = SAFE_ENCODER.encode(_shrink(value))
    except Exception:  # cycles, unencodable keys, lone surrogates, ...
        try:
            data = SAFE_ENCODER.encode(_sanitize(value, 0))
        except Exception:
            data = SAFE_ENCODER.encode(clean_text(_safe_repr(value)))
    if len(data) > MAX_JSON_BYTES:
        text = data[: MAX_JSON_BYTES // 2].decode("utf-8", "replace")
        data = SAFE_ENCODER.encode({"ct.truncated": f"{text}…[truncated {len(data)} bytes]"})
    return msgspec.Raw(data)
