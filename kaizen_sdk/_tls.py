"""TLS for the SDK's HTTP clients: one shared SSL context per trust setting, none for http://.

Loading a certificate bundle costs tens of milliseconds, and each ``httpx.Client`` built with
``verify=True`` loads its own; the SDK has three (the API client, the prompt fetcher and the
background exporter). `httpx_options` hands every one of them the same context, made on first
use and kept for the process; an ``http://`` base URL gets a context that loads nothing and
trusts nothing, so it costs nothing and could never complete a TLS handshake.
``verify=True`` trusts what httpx would (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, else certifi's
bundle); a path trusts that bundle (or directory); ``False`` turns verification off.
"""

from __future__ import annotations

import os
import ssl
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaizen_sdk._config import Settings

__all__ = ["httpx_options", "ssl_context"]

_lock = threading.Lock()
_contexts: dict[tuple[bool | str, str, str], ssl.SSLContext] = {}
_no_tls: ssl.SSLContext | None = None


def ssl_context(base_url: str, verify: bool | str = True) -> ssl.SSLContext:
    """Return the shared SSL context for *base_url* with the trust setting *verify*.

    Contexts are made once per setting and shared by every client and thread. For an
    ``http://`` URL the context is an empty one (no CA loaded, verification required):
    plain HTTP never uses it.

    Example::

        client = httpx.Client(verify=ssl_context("https://ct.example.com"))
    """
    global _no_tls
    if not base_url.lower().startswith("https:"):
        if _no_tls is None:
            with _lock:
                if _no_tls is None:  # trusts nothing, loads nothing
                    _no_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return _no_tls
    # what httpx itself reads for verify=True (trust_env), so the shared context trusts the same
    key = (verify, os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    context = _contexts.get(key)
    if context is None:
        with _lock:
            context = _contexts.get(key)
            if context is None:
                context = _contexts[key] = _build(*key)
    return context


def _build(verify: bool | str, cert_file: str, cert_dir: str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(verify, str):
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    if cert_file:
        return ssl.create_default_context(cafile=cert_file)
    if cert_dir:
        return ssl.create_default_context(capath=cert_dir)
    import certifi  # httpx's own dependency and default bundle

    return ssl.create_default_context(cafile=certifi.where())


def httpx_options(settings: Settings, *, timeout: float | None = None) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client``/``httpx.AsyncClient`` from *settings*.

    The timeout (*timeout* seconds, default ``settings.timeout``), the shared SSL context
    for ``settings.base_url`` and ``settings.verify``, and no redirects (an API key is
    never sent to a host it was not configured for). Headers are the caller's.

    Example::

        http = httpx.Client(base_url=settings.base_url, **httpx_options(settings))
    """
    import httpx

    return {
        "timeout": httpx.Timeout(settings.timeout if timeout is None else timeout),
        "verify": ssl_context(settings.base_url, settings.verify),
        "follow_redirects": False,
    }
