"""Settings: explicit arguments first, then ``KAIZEN_*`` environment variables, then defaults.

Every environment variable the SDK reads is named once here, with its meaning and default.
`resolve_settings` turns them into one frozen `Settings` at construction time, so hot paths
never read the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from kaizen_sdk.errors import CTError

__all__ = [
    "KAIZEN_API_KEY",
    "KAIZEN_BASE_URL",
    "KAIZEN_CACHE_TTL",
    "KAIZEN_CA_BUNDLE",
    "KAIZEN_CAPTURE_CONTENT",
    "KAIZEN_ENABLED",
    "KAIZEN_HANDLE_SIGTERM",
    "KAIZEN_MAX_QUEUE_SIZE",
    "KAIZEN_MAX_RETRIES",
    "KAIZEN_PROMPT_LABEL",
    "KAIZEN_PROMPT_REFRESH",
    "KAIZEN_PROMPT_WAIT",
    "KAIZEN_SHUTDOWN_TIMEOUT",
    "KAIZEN_SPANS",
    "KAIZEN_SPOOL_DIR",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "Masker",
    "Settings",
    "content_on_spans",
    "env_flag",
    "genai_latest_mode",
    "prompt_label",
    "resolve_settings",
]

KAIZEN_API_KEY = "KAIZEN_API_KEY"
"""API key sent as ``X-API-Key``. Required: no default."""

KAIZEN_BASE_URL = "KAIZEN_BASE_URL"
"""Base URL of the CT server. Default ``http://localhost:8000``."""

KAIZEN_MAX_RETRIES = "KAIZEN_MAX_RETRIES"
"""Retries after the first attempt for retry-safe requests. Default ``2``."""

KAIZEN_ENABLED = "KAIZEN_ENABLED"
"""``false`` turns all background tracing and delivery into a no-op. Default ``true``."""

KAIZEN_CAPTURE_CONTENT = "KAIZEN_CAPTURE_CONTENT"
"""Send prompt/completion text and inputs/outputs to the CT server. Default ``true``."""

KAIZEN_SPOOL_DIR = "KAIZEN_SPOOL_DIR"
"""Directory where undeliverable batches are kept and replayed later. Default: no spool."""

KAIZEN_SHUTDOWN_TIMEOUT = "KAIZEN_SHUTDOWN_TIMEOUT"
"""Seconds a normal interpreter exit may spend delivering queued records. Default ``5``."""

KAIZEN_MAX_QUEUE_SIZE = "KAIZEN_MAX_QUEUE_SIZE"
"""Records held in memory for background delivery before new ones are dropped. Default ``10000``."""

KAIZEN_CACHE_TTL = "KAIZEN_CACHE_TTL"
"""Seconds ``get_prompt`` serves a cached prompt without asking the server. Default ``300``."""

KAIZEN_PROMPT_REFRESH = "KAIZEN_PROMPT_REFRESH"
"""Seconds between background revalidations of each ``@task``'s prompt. Default ``2``."""

KAIZEN_PROMPT_LABEL = "KAIZEN_PROMPT_LABEL"
"""The label whose version every ``@task`` of the process serves (``staging``, ``eu``, ...)
when the decorator names none. Default: none, the active (``production``) version."""

KAIZEN_PROMPT_WAIT = "KAIZEN_PROMPT_WAIT"
"""Longest total wait of a task's first call for its prompt, in seconds. Default ``1.5``;
``0`` never waits when the task has a default prompt."""

KAIZEN_HANDLE_SIGTERM = "KAIZEN_HANDLE_SIGTERM"
"""``false`` leaves SIGTERM alone. Default ``true``: when SIGTERM has its default disposition
at client start (and the client starts in the main thread), SIGTERM first delivers or spools
what is queued (within ``KAIZEN_SHUTDOWN_TIMEOUT``), then ends the process with SIGTERM. A
handler the application installed is never replaced."""

KAIZEN_CA_BUNDLE = "KAIZEN_CA_BUNDLE"
"""Path to a CA bundle used to verify the CT server's TLS certificate. Default: system CAs."""

OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT = (
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
)
"""OpenTelemetry's opt-in for message content on spans that reach the application's own
exporters. Default ``false``. (The CT server's records follow `KAIZEN_CAPTURE_CONTENT`.)"""

# --- OpenTelemetry GenAI conventions and span output (issue 17) ---------------------------

KAIZEN_SPANS = "KAIZEN_SPANS"
"""``false``: records only. No CT spans reach any OpenTelemetry exporter (the CT server still
gets every record); useful beside another GenAI instrumentation. Default ``true``."""

OTEL_SEMCONV_STABILITY_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
"""OpenTelemetry's opt-in list; ``gen_ai_latest_experimental`` selects the latest GenAI
conventions (no deprecated ``gen_ai.system``; content capture words below). Default: unset."""

_CONTENT_ON_SPANS = frozenset({"span_only", "span_and_event"})


def genai_latest_mode(environ: Mapping[str, str] | None = None) -> bool:
    """Return True when ``OTEL_SEMCONV_STABILITY_OPT_IN`` lists ``gen_ai_latest_experimental``."""
    raw = (os.environ if environ is None else environ).get(OTEL_SEMCONV_STABILITY_OPT_IN, "")
    return "gen_ai_latest_experimental" in (part.strip().lower() for part in raw.split(","))


def content_on_spans(environ: Mapping[str, str] | None = None) -> bool:
    """Whether message content may go on span attributes, as OpenTelemetry's GenAI opt-in says.

    In the latest mode ``SPAN_ONLY`` and ``SPAN_AND_EVENT`` allow it (``EVENT_ONLY``,
    ``NO_CONTENT`` and anything else, ``true`` included, do not); otherwise ``true``/``false``.
    """
    env = os.environ if environ is None else environ
    if genai_latest_mode(env):
        word = env.get(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, "").strip().lower()
        return word in _CONTENT_ON_SPANS
    return env_flag(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, False, env)


def prompt_label(environ: Mapping[str, str] | None = None) -> str | None:
    """The `KAIZEN_PROMPT_LABEL` of the process, ``None`` when unset or blank."""
    raw = (os.environ if environ is None else environ).get(KAIZEN_PROMPT_LABEL, "").strip()
    return raw or None


Masker = Callable[[Any], Any]
"""A callable applied to inputs and outputs before they leave the process."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Read a boolean environment variable; unknown words fall back to *default*."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return default


def _env_float(name: str, default: float, environ: Mapping[str, str]) -> float:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise CTError(f"{name} must be a number, got {raw!r}.") from None


def _env_int(name: str, default: int, environ: Mapping[str, str]) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise CTError(f"{name} must be a whole number, got {raw!r}.") from None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration of one client. The API key is kept out of ``repr``."""

    api_key: str = dataclasses.field(repr=False)
    base_url: str = "http://localhost:8000"
    cache_ttl: float = 300.0
    timeout: float = 30.0
    max_retries: int = 2
    enabled: bool = True
    capture_content: bool = True
    capture_message_content_on_spans: bool = False
    spans: bool = True
    spool_dir: str | None = None
    shutdown_timeout: float = 5.0
    max_queue_size: int = 10_000
    handle_sigterm: bool = True
    verify: bool | str = True
    mask: Masker | None = dataclasses.field(default=None, repr=False)
    prompt_wait: float = 1.5
    prompt_refresh: float = 2.0


def resolve_settings(
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
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve each setting: explicit argument, else ``KAIZEN_*`` variable, else default."""
    env = os.environ if environ is None else environ
    key = api_key if api_key is not None else env.get(KAIZEN_API_KEY)
    if not key:
        raise CTError(
            "No API key: pass api_key= or set the KAIZEN_API_KEY environment variable."
        )
    url = base_url or env.get(KAIZEN_BASE_URL) or DEFAULT_BASE_URL
    ca_bundle = env.get(KAIZEN_CA_BUNDLE)
    return Settings(
        api_key=key,
        base_url=url.rstrip("/"),
        cache_ttl=(
            cache_ttl if cache_ttl is not None
            else _env_float(KAIZEN_CACHE_TTL, DEFAULT_CACHE_TTL, env)
        ),
        timeout=timeout,
        max_retries=(
            max_retries if max_retries is not None
            else _env_int(KAIZEN_MAX_RETRIES, DEFAULT_MAX_RETRIES, env)
        ),
        enabled=enabled if enabled is not None else env_flag(KAIZEN_ENABLED, True, env),
        capture_content=(
            capture_content if capture_content is not None
            else env_flag(KAIZEN_CAPTURE_CONTENT, True, env)
        ),
        capture_message_content_on_spans=content_on_spans(env) and (
            capture_content if capture_content is not None
            else env_flag(KAIZEN_CAPTURE_CONTENT, True, env)
        ),
        spans=env_flag(KAIZEN_SPANS, True, env),
        spool_dir=spool_dir if spool_dir is not None else (env.get(KAIZEN_SPOOL_DIR) or None),
        shutdown_timeout=(
            shutdown_timeout if shutdown_timeout is not None
            else _env_float(KAIZEN_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT, env)
        ),
        max_queue_size=(
            max_queue_size if max_queue_size is not None
            else _env_int(KAIZEN_MAX_QUEUE_SIZE, DEFAULT_MAX_QUEUE_SIZE, env)
        ),
        handle_sigterm=env_flag(KAIZEN_HANDLE_SIGTERM, True, env),
        verify=verify if verify is not None else (ca_bundle or True),
        mask=mask,
        prompt_wait=_non_negative(
            "prompt_wait",
            prompt_wait if prompt_wait is not None
            else _env_float(KAIZEN_PROMPT_WAIT, DEFAULT_PROMPT_WAIT, env),
        ),
        prompt_refresh=_positive(
            "prompt_refresh",
            prompt_refresh if prompt_refresh is not None
            else _env_float(KAIZEN_PROMPT_REFRESH, DEFAULT_PROMPT_REFRESH, env),
        ),
    )


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:  # also NaN
        raise CTError(f"{name} must be a number of seconds >= 0, got {value!r}.")
    return float(value)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise CTError(f"{name} must be a number of seconds > 0, got {value!r}.")
    return float(value)


DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_CACHE_TTL = 300.0
DEFAULT_PROMPT_WAIT = 1.5
DEFAULT_PROMPT_REFRESH = 2.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_MAX_QUEUE_SIZE = 10_000
