"""Scoped API keys of the local CT server: secrets, scopes, who a request is, and what it may do.

A key has a name and one scope of `kaizen_sdk.models.KEY_SCOPES`:

- ``ingest`` — send traces, feedback and scores, read prompts: what an application holds;
- ``read`` — every ``GET``;
- ``admin`` — everything, including what changes what is served (versions, activation,
  rollouts, optimization, tasks, keys).

The server's own key (``--api-key`` / ``KAIZEN_API_KEY``) is the *bootstrap* key: admin, named
`BOOTSTRAP_NAME` in the audit log. Other keys are created through ``POST /api/v1/keys``; the
secret (``kz_`` and 43 random URL-safe characters, 256 bits) is shown once and stored only as
its SHA-256 hash. `Authenticator` turns an ``X-API-Key`` header into a `Principal`: the
bootstrap key is compared in constant time, any other key is looked up by its hash (an
unguessable secret, so a lookup by hash leaks nothing) and compared in constant time again.
`allowed` and `forbidden_detail` decide and explain the 403 of a route needing another scope.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable

__all__ = [
    "BOOTSTRAP_NAME",
    "SECRET_PREFIX",
    "SYSTEM_NAME",
    "Authenticator",
    "Principal",
    "allowed",
    "forbidden_detail",
    "hash_secret",
    "new_secret",
    "valid_name",
]

BOOTSTRAP_NAME = "bootstrap"
"""The audit-log name of the server's own key (``--api-key`` / ``KAIZEN_API_KEY``)."""

SYSTEM_NAME = "system"
"""The audit-log name of what the server does by itself (a rollout decided by its test)."""

SECRET_PREFIX = "kz_"
"""How every created key's secret starts (so a leaked one is easy to recognise)."""

@dataclasses.dataclass(frozen=True)
class Principal:
    """Who sent a request: the key's *name* (as the audit log shows it), scope and id."""

    name: str
    scope: str
    key_id: str | None = None


def allowed(key_scope: str, route_scope: str, method: str) -> bool:
    """Whether a key of *key_scope* may call a route that needs *route_scope*.

    Admin may do everything; a read key every ``GET``; an ingest key the ``ingest`` routes.
    """
    if key_scope == "admin":
        return True
    if key_scope == "read":
        return method == "GET"
    return key_scope == route_scope


def _holders(route_scope: str, method: str) -> str:
    if route_scope == "admin":
        return "an admin"
    if route_scope == "ingest":
        return "an ingest, read or admin" if method == "GET" else "an ingest or admin"
    return "a read or admin"


def forbidden_detail(principal: Principal, route_scope: str, method: str, path: str) -> str:
    """The 403 sentence: which keys the route needs, and the scope of the key sent."""
    return (
        f"this needs {_holders(route_scope, method)} key; the key {principal.name!r} has"
        f" the {principal.scope} scope ({method} {path})."
    )


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


def valid_name(name: str) -> bool:
    """Whether *name* may name a key: 1 to 64 letters, digits or ``._@-``, starting with a
    letter or digit (so it reads plainly in the audit log and in log lines)."""
    return _NAME.fullmatch(name) is not None


def new_secret() -> str:
    """Return a fresh key secret: `SECRET_PREFIX` and 256 random bits, URL-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Return the stored form of *secret*: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class Authenticator:
    """Turn an ``X-API-Key`` value into a `Principal`, or ``None`` when it is no valid key.

    Parameters:
        bootstrap: the server's own key (admin).
        lookup: ``lookup(secret_hash)`` returns ``(key_id, name, scope, stored_hash)`` of the
            live (not revoked) key with that hash, else ``None``.
    """

    def __init__(
        self, bootstrap: str, lookup: Callable[[str], tuple[str, str, str, str] | None]
    ) -> None:
        self._bootstrap = bootstrap.encode("utf-8")
        self._lookup = lookup
        self._admin = Principal(BOOTSTRAP_NAME, "admin")

    def __repr__(self) -> str:
        return "Authenticator(bootstrap='***')"

    def principal(self, given: str) -> Principal | None:
        """The principal of the key *given*, or ``None``."""
        raw = given.encode("utf-8", "surrogateescape")
        if hmac.compare_digest(raw, self._bootstrap):
            return self._admin
        if not given.startswith(SECRET_PREFIX):
            return None
        digest = hash_secret(given)
        found = self._lookup(digest)
        if found is None or not hmac.compare_digest(found[3], digest):
            return None
        key_id, name, scope, _ = found
        return Principal(name, scope, key_id)
