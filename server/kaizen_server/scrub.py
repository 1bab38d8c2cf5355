"""One scrubber for every text that comes from (or names) an upstream: LLM, judge, GitHub.

A `Scrubber` knows the secrets of the local server's upstreams (the LLM key, the GitHub token,
the password of a ``https://user:key@host`` base URL) and removes them from a text, together
with simple encodings of them: URL-encoding, base64 (standard and URL-safe, at any alignment
inside a longer encoded text) and hex. It also blanks the user-info of every URL in the text.
Job errors, job metadata, log lines and pull-request errors pass through it before they are
stored, logged or returned.

    >>> s = Scrubber(["sk-secret-123456"])
    >>> s("upstream said: bad key sk-secret-123456 at https://bob:pw@llm.example/v1")
    'upstream said: bad key *** at https://***@llm.example/v1'
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "Scrubber", "url_secrets", "without_userinfo"]

REDACTED = "***"
"""What a secret is replaced with."""

MIN_SECRET_CHARS = 6
"""Secrets shorter than this are not scrubbed (they would blank ordinary words)."""

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")


def without_userinfo(url: str) -> str:
    """Return *url* with any ``user:password@`` replaced by ``***@`` (for messages)."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", url)


def url_secrets(url: str | None) -> list[str]:
    """The user name and password of *url*'s user-info (raw and unquoted), if any."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    for value in (parts.username, parts.password):
        if value:
            found += [value, unquote(value)]
    return found


def _b64_cores(secret: bytes) -> set[str]:
    """The base64 characters that depend only on *secret*, at each of the 3 alignments."""
    cores: set[str] = set()
    n = len(secret)
    for k in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * k + secret).decode("ascii")
            start = -(-8 * k // 6)
            end = (8 * (k + n)) // 6
            core = text[start:end]
            if len(core) >= MIN_SECRET_CHARS:
                cores.add(core)
    return cores


class Scrubber:
    """Removes the given secrets and their simple encodings, and URL user-info, from texts.

    Parameters:
        secrets: the texts to remove; ``None``, empty and very short ones are ignored.
        limit: longest text returned (longer ones are cut and end with ``...``).
    """

    def __init__(self, secrets: Iterable[str | None] = (), *, limit: int = 2000) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if not secret or len(secret) < MIN_SECRET_CHARS:
                continue
            raw = secret.encode("utf-8")
            forms |= {secret, quote(secret, safe=""), quote_plus(secret, safe=""),
                      binascii.hexlify(raw).decode(), binascii.hexlify(raw).decode().upper()}
            forms |= _b64_cores(raw)
        # Longest first, so a form that contains another is removed whole.
        self._forms = sorted(forms, key=len, reverse=True)
        self._pattern = (re.compile("|".join(re.escape(f) for f in self._forms))
                         if self._forms else None)
        self.limit = limit

    def __repr__(self) -> str:
        return f"Scrubber({len(self._forms)} forms)"

    def __call__(self, text: object) -> str:
        """Return ``str(text)`` without secrets, URL user-info or control characters."""
        out = str(text)
        if self._pattern is not None:
            out = self._pattern.sub(REDACTED, out)
        out = without_userinfo(out)
        out = "".join(c if c.isprintable() or c in "\n\t" else " " for c in out)
        if len(out) > self.limit:
            out = out[: self.limit - 3] + "..."
        return out

    def extend(self, secrets: Iterable[str | None]) -> Scrubber:
        """A new scrubber that also removes *secrets*."""
        return Scrubber([*self._forms, *secrets], limit=self.limit)
