"""The shared `local_server`, once per storage backend: SQLite and a real PostgreSQL.

A test module that touches storage through the API imports `local_server_on_each_backend`;
its tests then run against the session's SQLite server and against a `LocalServer` on a
fresh database of the session's private PostgreSQL cluster (`pg_cluster`,
tests/pg_cluster.py), started for the module and stopped after it::

    from server_backends import local_server_on_each_backend  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kaizen_server import LocalServer

__all__ = ["SERVER_BACKENDS", "local_server_on_each_backend"]

SERVER_BACKENDS = ["sqlite", "postgres"]
"""The storage backends the API tests that import this module run on."""


@pytest.fixture(name="local_server", scope="module", params=SERVER_BACKENDS)
def local_server_on_each_backend(request: pytest.FixtureRequest) -> Iterator[LocalServer]:
    """The session's SQLite server, then a server on PostgreSQL for this module."""
    if request.param == "sqlite":
        # by its own name: a fixture named local_server would take this one's parameter
        # as its cache key and be restarted for each module
        yield request.getfixturevalue("sqlite_local_server")
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.fresh_database()
    try:
        with LocalServer(db_path=url) as server:
            yield server
    finally:
        cluster.drop(url)
