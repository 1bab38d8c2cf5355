"""kaizen-server: the CT server of Kaizen, the whole CT HTTP API on SQLite.

Example::

    from kaizen_server import LocalServer

    with LocalServer() as server:      # free loopback port, temporary database
        print(server.base_url, server.api_key)

From a shell: ``kaizen serve --port 8000`` (the ``serve``, ``demo`` and ``eval`` commands come
from this package). Install it with ``pip install 'kaizen-sdk[server]'``; it is released with
the SDK under the same version. See ``docs/local-server.md``.

The packages, one job each: `kaizen_server.http` (the ASGI app on uvicorn and `LocalServer`),
`kaizen_server.api` (what each route means), `kaizen_server.storage` (the SQLite store),
`kaizen_server.domain` (keys, rollouts, task settings: the rules, no SQL),
`kaizen_server.jobs` (the optimization job worker, pull requests),
`kaizen_server.optimize` and `kaizen_server.evaluate` (optimizers and judges),
`kaizen_server.llm` (the LLM endpoint client and its prices).
"""

from __future__ import annotations

from kaizen_server._version import __version__
from kaizen_server.http.server import DEV_API_KEY, MAX_BODY_BYTES, LocalServer

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer", "__version__"]
