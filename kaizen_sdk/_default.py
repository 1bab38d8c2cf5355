"""The process-wide default client that ``@ct.task`` and ``ct.instrument`` use.

``ct.configure(...)`` sets it explicitly; otherwise `get_client` builds it on first use from
the ``KAIZEN_*`` environment variables. ``ct.flush()`` delivers what every client of the
process has queued.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kaizen_sdk import delivery
from kaizen_sdk._config import KAIZEN_ENABLED, env_flag, prompt_label
from kaizen_sdk._http import prompt_key
from kaizen_sdk._prompts import prompt_fetcher
from kaizen_sdk.errors import CTError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from kaizen_sdk._config import Masker
    from kaizen_sdk.client import CTClient

__all__ = ["client_for_tasks", "configure", "current", "flush", "get_client", "prefetch"]

_log = logging.getLogger("kaizen_sdk")
_prompts_log = logging.getLogger("kaizen_sdk.prompts")
_lock = threading.Lock()
_client: CTClient | None = None


def configure(
    api_key: str | None = None,
    base_url: str | None = None,
    cache_ttl: float | None = None,
    timeout: float = 30.0,
    *,
    max_retries: int | None = None,
    enabled: bool | None = None,
    capture_content: bool | None = None,
    spool_dir: str | None = None,
    shutdown_timeout: float | None = None,
    max_queue_size: int | None = None,
    verify: bool | str | None = None,
    mask: Masker | None = None,
    prompt_wait: float | None = None,
    prompt_refresh: float | None = None,
    tracer_provider: TracerProvider | None = None,
    **kwargs: Any,
) -> CTClient:
    """Build the process-wide default client and use it (arguments as for ``CTClient``).

    Each setting left out comes from its ``KAIZEN_*`` variable, else its default (see
    docs/configuration.md): ``cache_ttl`` (``KAIZEN_CACHE_TTL``, 300 s), ``prompt_wait``
    (``KAIZEN_PROMPT_WAIT``, 1.5 s), ``prompt_refresh`` (``KAIZEN_PROMPT_REFRESH``, 2 s), ...
    A default client configured before is closed (its queued records are delivered first).

    Example:
        ```python
        import kaizen_sdk as ct

        ct.configure(api_key="sk-...", base_url="https://ct.example.com", prompt_refresh=5)
        ```
    """
    global _client
    from kaizen_sdk.client import CTClient

    new = CTClient(
        api_key,
        base_url,
        cache_ttl,
        timeout,
        max_retries=max_retries,
        enabled=enabled,
        capture_content=capture_content,
        spool_dir=spool_dir,
        shutdown_timeout=shutdown_timeout,
        max_queue_size=max_queue_size,
        verify=verify,
        mask=mask,
        prompt_wait=prompt_wait,
        prompt_refresh=prompt_refresh,
        tracer_provider=tracer_provider,
        **kwargs,  # transport= (tests)
    )
    with _lock:
        old, _client = _client, new
    if old is not None:
        old.close()
    return new


def get_client() -> CTClient:
    """Return the process-wide default client, building it from ``KAIZEN_*`` on first use.

    Raises `CTError` when no API key is configured (``KAIZEN_API_KEY``).
    """
    global _client
    client = _client
    if client is not None:
        return client
    from kaizen_sdk.client import CTClient

    with _lock:
        if _client is None:
            _client = CTClient()
        return _client


def current() -> CTClient | None:
    """The default client if one is configured or built already, else None (never builds)."""
    return _client


_untraced_logged: set[str] = set()


def client_for_tasks() -> CTClient | None:
    """The default client for ``@task`` and ``instrument()``, or None when none can be built.

    A configuration problem (no ``KAIZEN_API_KEY``, a malformed ``KAIZEN_*`` value) never
    reaches application code: calls run untraced on their default prompt, and the problem
    is logged once (the message names the variable).
    """
    client = _client
    if client is not None:
        return client
    try:
        return get_client()
    except CTError as exc:
        message = str(exc)
        with _lock:
            first = message not in _untraced_logged
            _untraced_logged.add(message)
        if first:
            if env_flag(KAIZEN_ENABLED, True):
                _log.warning("CT tracing is off: %s Decorated and instrumented calls run "
                             "untraced (default prompts are served).", message)
            else:
                _log.info("CT tracing is off (KAIZEN_ENABLED=false).")
        return None


def flush(timeout: float | None = None) -> bool:
    """Deliver everything every client of this process has queued so far.

    Returns False when *timeout* seconds ran out first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for item in delivery.live():
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ok = item.flush(left) and ok
    return ok


def prefetch(*tasks: str, timeout: float | None = None, client: CTClient | None = None) -> bool:
    """Fetch the active prompts of *tasks* now, so the first calls are served from the cache.

    Under ``KAIZEN_PROMPT_LABEL`` the versions that label names are fetched instead.

    Waits up to *timeout* seconds in total (default ``prompt_wait``); never raises: a task
    whose prompt did not arrive in time keeps being fetched in the background, and a missing
    configuration is logged. Returns True when every task has its prompt.

    Example:
        ```python
        import kaizen_sdk as ct

        ct.prefetch("summarize_ticket", "classify_ticket", timeout=3)
        ```
    """
    try:  # an explicit start-up call: say why every time, not once per process
        chosen = client if client is not None else get_client()
    except CTError as exc:
        _prompts_log.warning("ct.prefetch(%s): no CT client (%s).",
                             ", ".join(map(repr, tasks)), exc)
        return False
    try:
        keys = [prompt_key(task, prompt_label()) for task in tasks]
    except CTError as exc:
        _prompts_log.warning("ct.prefetch(%s): %s", ", ".join(map(repr, tasks)), exc)
        return False
    fetcher = prompt_fetcher(chosen)
    limit = fetcher.prompt_wait if timeout is None else timeout
    started = time.monotonic()
    ok = fetcher.wait(keys, limit)
    _prompts_log.debug("ct.prefetch: %d task(s) in %.3f s, complete=%s", len(tasks),
               time.monotonic() - started, ok)
    return ok
