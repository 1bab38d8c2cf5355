"""What every storage backend raises and returns, whatever its database.

The API maps these to answers (`NotFound` 404, `Conflict` 409, `Invalid` 422, `StoreFull`
507); a backend raises them and nothing of its driver's own errors for these cases. `Page` is
one page of a keyset-paginated list.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Generic, TypeVar

__all__ = [
    "Conflict",
    "DatabaseUnreachable",
    "Invalid",
    "NotFound",
    "Page",
    "StoreError",
    "StoreFull",
    "utcnow",
]

_T = TypeVar("_T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[_T]):
    """One page of a list: its *items* and the key to pass as ``after`` for the next one.

    ``next_key`` is ``None`` on the last page. Keys are row sequence numbers (keyset
    pagination), so rows inserted while a client pages through never shift the pages.
    """

    items: list[_T]
    next_key: int | None = None


class StoreError(Exception):
    """Base of the errors the store raises on purpose; ``str()`` is a client-safe detail."""


class NotFound(StoreError):
    """The task, trace, job or prompt version does not exist."""


class Conflict(StoreError):
    """The write clashes with existing data (e.g. a duplicate task name)."""


class Invalid(StoreError):
    """A value or a reference the store will not use (an empty prompt text, a candidate of
    another task); ``str()`` names the field. Answered with 422."""


class StoreFull(StoreError):
    """The database or its disk is full (SQLite ``SQLITE_FULL``): nothing of the write was
    kept; reads still work. Answered with 507."""


class DatabaseUnreachable(RuntimeError):
    """The database server (PostgreSQL) could not be reached or refused the connection at
    start; ``str()`` names the database without its password. Not an answer of the API: the
    server does not start."""


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(timezone.utc)
