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

import importlib
from typing import TYPE_CHECKING, Any

from kaizen_server._version import __version__

if TYPE_CHECKING:
    # What type checkers see; at run time these load on first use through __getattr__, so
    # ``kaizen --help`` (which loads `kaizen_server.commands`) never imports uvicorn.
    from kaizen_server.http.server import DEV_API_KEY, MAX_BODY_BYTES, LocalServer

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer", "__version__"]

_LAZY = {name: "kaizen_server.http.server" for name in ("DEV_API_KEY", "MAX_BODY_BYTES",
                                                       "LocalServer")}


def __getattr__(name: str) -> Any:
    """Load `LocalServer` and its constants on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kaizen_server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
