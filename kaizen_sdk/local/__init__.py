"""Deprecated: the local CT server is the ``kaizen_server`` package (``kaizen-server``).

This shim stays for one release and re-exports `LocalServer`; import it from its new home::

    from kaizen_server import LocalServer

Install it with ``pip install 'kaizen-sdk[server]'``. See ``docs/local-server.md``.
"""

from __future__ import annotations

import warnings

warnings.warn(
    "kaizen_sdk.local is deprecated and will be removed in the next release: the CT server is "
    "the kaizen_server package (pip install 'kaizen-sdk[server]'); import LocalServer from "
    "kaizen_server",
    DeprecationWarning,
    stacklevel=2,
)

try:
    from kaizen_server import DEV_API_KEY, MAX_BODY_BYTES, LocalServer
except ImportError as _exc:
    raise ImportError(
        "The CT server is the kaizen-server package: pip install 'kaizen-sdk[server]'"
    ) from _exc

__all__ = ["DEV_API_KEY", "MAX_BODY_BYTES", "LocalServer"]
