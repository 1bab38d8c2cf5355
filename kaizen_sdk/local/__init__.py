"""The local CT server: the whole CT HTTP API on SQLite, for development, demos and tests.

Example::

    from kaizen_sdk.local import LocalServer

    with LocalServer() as server:      # free loopback port, temporary database
        print(server.base_url, server.api_key)

From a shell: ``kaizen serve --port 8000``. See ``docs/local-server.md``.
"""

from __future__ import annotations

from kaizen_sdk.local.server import DEV_API_KEY, MAX_BODY_BYTES, LocalServer

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer"]
