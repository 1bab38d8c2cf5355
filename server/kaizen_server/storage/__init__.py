"""Where the server keeps its data: the `Store` (`sqlite`), its PostgreSQL seam (`postgres`)
and their schema steps; `open_store` picks the backend from a path or URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaizen_server.storage.sqlite import Store

__all__ = ["describe_database", "is_postgres_url", "open_store"]

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(target: str | None) -> bool:
    """True when *target* is a PostgreSQL URL (``postgresql://`` or ``postgres://``); any
    other value is a SQLite file path."""
    return target is not None and target.lower().startswith(_SCHEMES)


def describe_database(target: str) -> str:
    """*target* as it may be shown (logs, ``db status``): a URL without its password."""
    if is_postgres_url(target):
        from kaizen_server.storage.postgres import redact_url

        return redact_url(target)
    return target


def open_store(target: str, *, migrate: bool = True) -> Store:
    """Open the store *target* names: a ``postgresql://`` URL (needs the ``postgres`` extra:
    ``pip install 'kaizen-server[postgres]'``), else a SQLite file path (created if missing).

    Runs the pending schema steps, or with *migrate* false raises `SchemaOutdated` when any
    are pending.
    """
    if is_postgres_url(target):
        try:
            from kaizen_server.storage.postgres import PostgresStore
        except ImportError:
            raise RuntimeError(
                "a postgresql:// database needs psycopg: pip install 'kaizen-server[postgres]'"
            ) from None
        return PostgresStore(target, migrate=migrate)
    from kaizen_server.storage.sqlite import Store

    return Store(target, migrate=migrate)
