"""What `CTClient` and `AsyncCTClient` share: everything but the I/O call.

`BaseClient` resolves settings, builds requests (URL, quoted path segments, headers,
msgspec-encoded bodies), checks arguments before anything is sent, decodes responses into
typed models, maps error statuses onto the `CTError` tree and decides whether and when to
retry. `translate_errors` is the one boundary where httpx and msgspec exceptions become ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import ipaddress
import logging
import math
import random
import re
import sys
import threading
import time
import typing
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar, cast

import httpx
import msgspec

from kaizen_sdk import _recipe, models
from kaizen_sdk._config import Masker, Settings, resolve_settings
from kaizen_sdk._record import new_trace_id
from kaizen_sdk._tls import httpx_options
from kaizen_sdk._version import __version__
from kaizen_sdk.cache import DEFAULT_MAXSIZE, TTLCache
from kaizen_sdk.errors import (
    CTConnectionError,
    CTError,
    CTRateLimitError,
    CTTimeoutError,
    CTValidationError,
    error_for_status,
)
from kaizen_sdk.models import Prompt

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "DELIVERY_RETRY_STATUSES",
    "PAGE_SIZE",
    "RETRY_AFTER_MAX",
    "RETRY_STATUSES",
    "USER_AGENT",
    "BaseClient",
    "PreparedCall",
    "check_labelled",
    "check_prompt_text",
    "check_recipe",
    "evaluator_body",
    "is_loopback",
    "list_params",
    "next_cursor",
    "parse_retry_after",
    "prompt_key",
    "require_id",
    "segment",
    "split_key",
    "translate_errors",
]

logger = logging.getLogger("kaizen_sdk.client")

T = TypeVar("T")

USER_AGENT = f"kaizen-sdk/{__version__} python/{sys.version_info[0]}.{sys.version_info[1]}"
"""The ``User-Agent`` header of every request."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses after which a retry-safe request is sent again."""

DELIVERY_RETRY_STATUSES = RETRY_STATUSES | {408, 500}
"""Statuses after which background delivery sends a batch again: its ids are made on the
client, so even a request the server may have half-handled is stored once."""

BACKOFF_BASE = 0.5
"""Seconds before the first retry (doubled each time, then jittered to 50-100 %)."""

BACKOFF_MAX = 8.0
"""Longest backoff between two attempts, before jitter."""

RETRY_AFTER_MAX = 30.0
"""Longest wait a ``Retry-After`` header can ask for; longer asks are capped to this."""

_API = "/api/v1"

_NOT_JSON = object()

_warned_hosts: set[str] = set()
_warned_lock = threading.Lock()


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedCall:
    """One API call: the httpx request, whether a retry is safe, and a label for messages."""

    request: httpx.Request
    retry_safe: bool
    label: str


@contextlib.contextmanager
def translate_errors(label: str, into: Any = None) -> Iterator[None]:
    """Turn httpx and msgspec exceptions raised inside the block into `CTError`s.

    This is the only place that catches foreign exceptions; ours are raised ``from`` them.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise CTTimeoutError(f"{label} timed out ({type(exc).__name__}).") from _scrubbed(exc)
    except httpx.TransportError as exc:
        raise CTConnectionError(
            f"{label} could not reach the CT server: {exc or type(exc).__name__}."
        ) from _scrubbed(exc)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise CTError(f"{label} failed: {exc}.") from _scrubbed(exc)
    except msgspec.ValidationError as exc:
        raise CTError(
            f"The CT server's answer to {label} does not match {_type_name(into)}: "
            f"{_field_message(exc)}."
        ) from exc
    except msgspec.DecodeError as exc:
        raise CTError(f"The CT server's answer to {label} is not valid JSON: {exc}.") from exc
    except msgspec.EncodeError as exc:
        raise CTValidationError(f"{label}: the request body cannot be encoded: {exc}.") from exc


def _scrubbed(exc: BaseException) -> BaseException:
    """Give *exc* a copy of its request without the API key (it stays the cause, for
    debugging, but nothing reachable from our exception holds the key)."""
    request = getattr(exc, "_request", None)
    if isinstance(request, httpx.Request):
        headers = {
            k: ("<redacted>" if k.lower() == "x-api-key" else v)
            for k, v in request.headers.items()
        }
        try:
            exc.request = httpx.Request(  # type: ignore[attr-defined]
                request.method, request.url, headers=headers
            )
        except Exception:
            exc._request = None  # type: ignore[attr-defined]
    return exc


def _field_message(exc: msgspec.ValidationError) -> str:
    """``Expected `int`, got `str` - at `$.version_number``` -> names field ``version_number``."""
    text = str(exc)
    head, sep, where = text.rpartition(" - at `")
    if not sep:
        return text
    path = where.rstrip("`")
    field = path[2:] if path.startswith("$.") else path.removeprefix("$")
    return f"field `{field}`: {head}"


def _type_name(into: Any) -> str:
    if into is None:
        return "the expected type"
    origin = typing.get_origin(into)
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(into))
        return f"{getattr(origin, '__name__', origin)}[{args}]"
    return str(getattr(into, "__name__", into))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_retry_after(
    value: str | None, now: Callable[[], datetime] = _utcnow
) -> float | None:
    """Parse ``Retry-After`` (seconds, or an HTTP date) into seconds; ``None`` if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - now()).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def is_loopback(host: str) -> bool:
    """True when *host* (an address or ``localhost``) only accepts connections from this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def segment(name: str, value: Any) -> str:
    """Check an id/name argument and quote it as one URL path segment."""
    return urllib.parse.quote(require_id(name, value), safe="")


def require_id(name: str, value: Any) -> str:
    """Return *value* as a non-empty string, else raise `CTValidationError` naming *name*."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise CTValidationError(
            f"{name} must be a string or UUID, got {type(value).__name__}."
        )
    if not value.strip():
        raise CTValidationError(f"{name} must not be empty.")
    return value


def _check_score(score: Any) -> float:
    """Return *score* as a float in [0, 1], else raise `CTValidationError`."""
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise CTValidationError(
            f"score must be a number between 0.0 and 1.0, got {type(score).__name__}."
        )
    value = float(score)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise CTValidationError(f"score must be between 0.0 and 1.0, got {score!r}.")
    return value


def check_prompt_text(text: Any) -> str:
    """Return *text* if it is a usable prompt text, else raise `CTValidationError`."""
    if not isinstance(text, str):
        raise CTValidationError(f"prompt_text must be a string, got {type(text).__name__}.")
    if not text.strip():
        raise CTValidationError("prompt_text must not be empty.")
    if len(text) > models.MAX_PROMPT_CHARS:
        raise CTValidationError(
            f"prompt_text has {len(text)} characters; at most {models.MAX_PROMPT_CHARS} "
            "are allowed."
        )
    return text


def check_recipe(
    messages: Any, config: Any, prompt_text: str | None = None
) -> tuple[list[models.ChatMessage] | None, str]:
    """Check a chat prompt's *messages* and *config* locally; return them and the text.

    Raises `CTValidationError` naming the first bad message or setting (the server's rules,
    `kaizen_sdk.templates.check_recipe`).
    """
    try:
        parsed = None if messages is None else msgspec.convert(
            [m if isinstance(m, dict) else msgspec.to_builtins(m) for m in messages],
            list[models.ChatMessage],
        )
        if config is not None and not isinstance(config, dict):
            raise _recipe.BadRecipe("`config` must be a dict (a JSON object)")
        text = _recipe.check_recipe(parsed, config, prompt_text,
                                    max_chars=models.MAX_PROMPT_CHARS)
    except msgspec.ValidationError as exc:
        raise CTValidationError(str(exc).replace("`$", "`messages")) from None
    except (_recipe.BadRecipe, TypeError) as exc:
        raise CTValidationError(f"{exc}.") from None
    return parsed, text


def prompt_key(task_id: str, label: str | None) -> str:
    """The prompt-cache key of *task_id* served under *label* (``None``/``production``: the
    active version, keyed by the task as given). Checks the label (`CTValidationError`)."""
    if label is None:
        return task_id
    try:
        _recipe.check_label(label)
    except _recipe.BadRecipe as exc:
        raise CTValidationError(f"{exc}.") from None
    return task_id if label == _recipe.PRODUCTION else f"{task_id}{_LABEL_SEP}{label}"


def check_labelled(prompt: Prompt, label: str | None) -> Prompt:
    """Return *prompt* if it carries *label*; a server that predates labels ignores the
    ``label`` query and answers the active version, which must not pass for the label's."""
    if label is not None and label != _recipe.PRODUCTION and label not in prompt.labels:
        raise CTError(
            f"The CT server answered a version without the label {label!r}: it predates"
            " labels (upgrade it) or the label moved during the request."
        )
    return prompt


def split_key(key: str) -> tuple[str, str | None]:
    """The task and label of a `prompt_key` (label ``None``: the active version)."""
    task_id, sep, label = key.partition(_LABEL_SEP)
    return task_id, (label if sep else None)


_LABEL_SEP = "\x1f"  # never in a label; a task name with it cannot be served under a label


def _critique(comment: Any, correction: Any, no_output: bool) -> dict[str, Any]:
    """The ``comment``/``correction`` fields of a feedback or score body (absent if None)."""
    fields: dict[str, Any] = {}
    if comment is not None:
        if not isinstance(comment, str):
            raise CTValidationError(f"comment must be a string, got {type(comment).__name__}.")
        fields["comment"] = comment
    if correction is not None:
        if no_output:
            raise CTValidationError(
                "correction needs an output to correct: pass output=... as well."
            )
        fields["correction"] = correction
    return fields


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise CTValidationError(f"limit must be a positive whole number, got {limit!r}.")
    return limit


def list_params(
    task_id: str | None, limit: int, cursor: str | None = None
) -> dict[str, str | int]:
    """Query parameters of the list endpoints, checked."""
    params: dict[str, str | int] = {"limit": _check_limit(limit)}
    if task_id is not None:
        params["task_id"] = require_id("task_id", task_id)
    if cursor is not None:
        params["cursor"] = require_id("cursor", cursor)
    return params


_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

PAGE_SIZE = 1000
"""Items per request when an ``iter_*`` method pages through a list (the server's maximum)."""


def next_cursor(resp: httpx.Response, previous: str | None) -> str | None:
    """The ``cursor`` of the RFC 8288 ``Link: <...>; rel="next"`` header, or ``None`` at the end.

    Raises `CTError` when the server hands back the cursor it was just given, which would
    otherwise page forever.
    """
    link = resp.links.get("next")
    if link is None or "url" not in link:
        return None
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(link["url"]).query).get("cursor")
    if not values:
        raise CTError(f"The CT server's next-page link has no cursor: {link['url']!r}.")
    if values[-1] == previous:
        raise CTError("The CT server answered the same next-page cursor twice; stopping.")
    return values[-1]


class BaseClient:
    """Settings, request building, decoding, error mapping and retry policy (no I/O)."""

    _kind = "CTClient"

    def __init__(
        self,
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
    ) -> None:
        self._settings = resolve_settings(
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
        )
        self._tracer_provider = tracer_provider
        self._prompt_cache: TTLCache[str, Prompt] = TTLCache(
            self._settings.cache_ttl, maxsize=DEFAULT_MAXSIZE
        )
        # task UUID (str) -> other keys (names) the same task's prompt is cached under
        self._cache_aliases: dict[str, set[str]] = {}
        self._pipeline: Any = None
        self._prompts: Any = None  # the decorator's PromptFetcher (kaizen_sdk._prompts)
        self._closed = False
        self._clock: Callable[[], float] = time.monotonic
        self._random: Callable[[], float] = random.random
        self._now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._http_checked = False

    # The headers are built on use, so the key sits in no plain attribute (``vars(client)``).
    @property
    def _headers(self) -> dict[str, str]:
        return {
            "X-API-Key": self._settings.api_key,
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    @property
    def _body_headers(self) -> dict[str, str]:
        return {**self._headers, "Content-Type": "application/json"}

    # --- public state -------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The resolved configuration (its ``repr`` leaves out the API key)."""
        return self._settings

    @property
    def closed(self) -> bool:
        """True after `close`."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}(base_url={self._settings.base_url!r}, {state})"

    def get_prompt_cached(self, task_id: str, *, allow_stale: bool = False) -> Prompt | None:
        """Return the cached active prompt of *task_id* without any I/O, or ``None``.

        With ``allow_stale=True`` an expired entry is returned too (stale-while-revalidate).
        The key is *task_id* exactly as it was passed to ``get_prompt``.
        """
        if allow_stale:
            return self._prompt_cache.get_stale(str(task_id))
        return self._prompt_cache.get(str(task_id))

    # --- lifecycle helpers --------------------------------------------------------------

    def _close_prompts(self) -> None:
        fetcher = self._prompts
        if fetcher is not None:
            try:
                fetcher.close()
            except Exception:
                logger.exception("Stopping the prompt fetcher failed.")

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"This {type(self).__name__} is closed; create a new client to make more calls."
            )

    def _httpx_options(self) -> dict[str, Any]:
        # one shared SSL context per trust setting, none loaded for http:// (kaizen_sdk._tls)
        return httpx_options(self._settings)

    # --- requests -----------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str | int] | None = None,
        retry_safe: bool | None = None,
    ) -> PreparedCall:
        """Build the request for ``method _API+path``; GETs are always retry-safe."""
        self._ensure_open()
        label = f"{method} {_API}{path}"
        with translate_errors(label):
            content = None if body is None else models.encode(body)
            request = httpx.Request(
                method,
                self._settings.base_url + _API + path,
                params={k: v for k, v in (params or {}).items() if v is not None} or None,
                content=content,
                headers=self._headers if content is None else self._body_headers,
            )
        self._warn_plain_http(request.url)
        safe = method == "GET" if retry_safe is None else retry_safe
        return PreparedCall(request=request, retry_safe=safe, label=label)

    def _warn_plain_http(self, url: httpx.URL) -> None:
        if self._http_checked:
            return
        self._http_checked = True
        if url.scheme != "http" or is_loopback(url.host):
            return
        origin = f"{url.scheme}://{url.host}:{url.port or 80}"
        with _warned_lock:
            if origin in _warned_hosts:
                return
            _warned_hosts.add(origin)
        logger.warning(
            "The API key is being sent over plain http:// to %s, where anyone on the network "
            "can read it; use an https:// base_url.",
            origin,
        )

    # --- responses ----------------------------------------------------------------------

    def _result(self, resp: httpx.Response, into: type[T]) -> T:
        """Decode a successful response into *into*, or raise the matching `CTError`."""
        label = f"{resp.request.method} {resp.request.url.path}"
        if not 200 <= resp.status_code < 300:
            raise self._error(resp, label)
        with translate_errors(label, into):
            result: T = models.decoder(cast(Any, into)).decode(resp.content)
        return result

    def _error(self, resp: httpx.Response, label: str) -> CTError:
        status = resp.status_code
        title, detail = self._error_fields(resp)
        reason = title or resp.reason_phrase or "error"
        message = f"{label} failed with {status} {reason}"
        message += f": {detail}" if detail else "."
        cls = error_for_status(status)
        if cls is CTRateLimitError:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._now)
            if retry_after is not None:
                message += f" Retry after {retry_after:g} s."
            return CTRateLimitError(
                message, status_code=status, detail=detail, retry_after=retry_after
            )
        return cls(message, status_code=status, detail=detail)

    @staticmethod
    def _error_fields(resp: httpx.Response) -> tuple[str | None, str | None]:
        """Read ``{title, detail}`` leniently: an error body that is not JSON is still an error."""
        raw = resp.content
        if not raw:
            return None, None
        body: Any = _NOT_JSON
        with contextlib.suppress(CTError), translate_errors("error body"):
            body = msgspec.json.decode(raw)
        if body is _NOT_JSON:  # keep a short excerpt as the detail
            return None, raw[:200].decode("utf-8", "replace").strip() or None
        if not isinstance(body, dict):
            return None, str(body)[:200]
        title = body.get("title")
        detail = body.get("detail")
        if detail is not None and not isinstance(detail, str):
            detail = models.encode(detail).decode()
        return (title if isinstance(title, str) else None), detail

    # --- retries ------------------------------------------------------------------------

    def _retry_delay(
        self, call: PreparedCall, attempt: int, resp: httpx.Response | None, error: CTError | None
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or ``None`` to stop.

        *resp* is the answer of attempt *attempt* (0-based), or ``None`` when it failed in
        transport with *error*.
        """
        if not call.retry_safe or attempt >= max(0, self._settings.max_retries):
            return None
        if resp is not None:
            if resp.status_code not in RETRY_STATUSES:
                return None
            if resp.status_code == 429:
                asked = parse_retry_after(resp.headers.get("Retry-After"), self._now)
                if asked is not None:
                    delay = min(asked, RETRY_AFTER_MAX)
                    self._log_retry(call, attempt, delay, f"{resp.status_code}")
                    return delay
            why = str(resp.status_code)
        else:
            why = type(error).__name__
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2.0**attempt) * (0.5 + 0.5 * self._random())
        self._log_retry(call, attempt, delay, why)
        return delay

    def _log_retry(self, call: PreparedCall, attempt: int, delay: float, why: str) -> None:
        logger.info(
            "%s: retry %d of %d in %.2f s after %s.",
            call.label,
            attempt + 1,
            self._settings.max_retries,
            delay,
            why,
        )

    # --- cache keys ---------------------------------------------------------------------

    def _remember_prompt(self, key: str, prompt: Prompt) -> None:
        """Note that *key* caches the prompt of task ``prompt.task_id`` (for invalidation)."""
        if prompt.task_id is not None and str(prompt.task_id) != key:
            self._cache_aliases.setdefault(str(prompt.task_id), set()).add(key)

    def _forget_prompt(self, task_id: str, prompt: Prompt | None = None) -> None:
        """Invalidate every cache key of this task: as passed, its UUID, and its names."""
        keys = {task_id}
        if prompt is not None and prompt.task_id is not None:
            keys.add(str(prompt.task_id))
        for key in list(keys):  # kept: an activation here serves every key (_serve_activated)
            keys |= self._cache_aliases.get(key, set())
        for key in keys:
            self._prompt_cache.invalidate(key)

    def _serve_activated(self, task_id: str, prompt: models.Prompt) -> None:
        """After this client activated *prompt*: every cache key of its task serves it now.

        So the very next call of every decorated function on this client runs on it (the
        prompt fetcher's copy too), not on the previous version until a revalidation.
        """
        keys = {task_id}
        if prompt.task_id is not None:
            keys.add(str(prompt.task_id))
        for key in list(keys):
            keys |= self._cache_aliases.get(key, set())
        fetcher = self._prompts
        for key in keys:
            if split_key(key)[1] is not None:  # a label: activation does not move it
                self._prompt_cache.invalidate(key)
                continue
            self._prompt_cache.invalidate(key)  # a get_prompt load in flight stores nothing
            if fetcher is not None:
                fetcher.install(key, prompt)
            else:
                self._prompt_cache.set(key, prompt)

    # --- request bodies -----------------------------------------------------------------

    def _feedback_body(
        self,
        task_id: str,
        inputs: dict[str, Any] | None,
        output: Any,
        score: float | None,
        source: str,
        metadata: dict[str, Any] | None,
        comment: str | None = None,
        correction: Any = None,
    ) -> models.FeedbackRequest:
        mask = self._settings.mask
        if mask is not None:
            inputs = mask(inputs) if inputs is not None else None
            output = mask(output) if output is not None else None
            correction = mask(correction) if correction is not None else None
        critique = _critique(comment, correction, output is None)
        return models.FeedbackRequest(
            **critique,
            task_id=require_id("task_id", task_id),
            id=uuid.UUID(new_trace_id()),  # a UUID7: the server's index grows at its end
            inputs=inputs,
            output=output,
            score=None if score is None else _check_score(score),
            source=source,
            metadata=metadata,
        )

    @staticmethod
    def _task_body(
        name: str,
        description: str | None,
        schema_json: dict[str, Any] | None,
        feedback_threshold: int,
        extra: dict[str, Any],
    ) -> Any:
        fields = {f.name for f in msgspec.structs.fields(models.TaskCreateRequest)}
        known = {k: v for k, v in extra.items() if k in fields}
        unknown = {k: v for k, v in extra.items() if k not in fields}
        body = models.TaskCreateRequest(
            name=require_id("name", name),
            description=description,
            schema_json=schema_json,
            feedback_threshold=feedback_threshold,
            **known,
        )
        # Documented defaults (feedback_threshold) are sent; fields left unset are not, and
        # fields this SDK does not know yet go to the server as given.
        sent = {k: v for k, v in msgspec.to_builtins(body).items() if v is not None}
        return {**sent, **unknown}

    @staticmethod
    def _task_update_body(settings: dict[str, Any]) -> Any:
        """The ``PATCH /tasks/{task_id}`` body: only the settings given (``None`` clears one).

        Settings this SDK does not know yet go to the server as given (it names any it does
        not know either). A number that JSON cannot carry is refused here, naming the field.
        """
        if not settings:
            raise CTValidationError("update_task needs at least one setting to change")
        for name, value in settings.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise CTValidationError(f"`{name}` must be a finite number, got {value!r}")
        fields = {f.name for f in msgspec.structs.fields(models.TaskUpdateRequest)}
        known = {k: v for k, v in settings.items() if k in fields}
        unknown = {k: v for k, v in settings.items() if k not in fields}
        body = models.TaskUpdateRequest(**known)
        return {**msgspec.to_builtins(body), **unknown}

    def _score_body(
        self, score: float, scored_by: str, comment: str | None, correction: Any
    ) -> models.ScoreRequest:
        mask = self._settings.mask
        if mask is not None and correction is not None:
            correction = mask(correction)
        return models.ScoreRequest(
            score=_check_score(score), scored_by=scored_by,
            **_critique(comment, correction, False),
        )

    @staticmethod
    def _version_body(
        prompt_text: str | None, activate: bool, messages: Any = None, config: Any = None
    ) -> models.PromptVersionRequest:
        if messages is None and config is None:
            return models.PromptVersionRequest(
                prompt_text=check_prompt_text(prompt_text), activate=bool(activate)
            )
        if prompt_text is not None:
            check_prompt_text(prompt_text)
        parsed, text = check_recipe(messages, config, prompt_text)
        return models.PromptVersionRequest(  # a chat version's text is made by the server
            prompt_text=text if parsed is None else None, messages=parsed, config=config,
            activate=bool(activate),
        )

    @staticmethod
    def _label_call_path(task_id: str, label: str) -> str:
        """The path of a settable label of a task (not ``production``), checked."""
        try:
            _recipe.check_label(label, settable=True)
        except _recipe.BadRecipe as exc:
            raise CTValidationError(f"{exc}.") from None
        return f"/prompts/{segment('task_id', task_id)}/labels/{label}"

    def _serve_labelled(
        self, task_id: str, label: str, prompt: models.Prompt | None, *, removed: bool = False
    ) -> None:
        """After this client moved *label* to *prompt* (or *removed* it from *prompt*): drop
        the task's cached prompts; a moved label serves *prompt* from the next call."""
        key = prompt_key(task_id, label)
        self._forget_prompt(task_id, prompt)
        self._prompt_cache.invalidate(key)
        if prompt is None or removed:
            return
        self._remember_prompt(key, prompt)
        fetcher = self._prompts
        if fetcher is not None:
            fetcher.install(key, prompt)
        else:
            self._prompt_cache.set(key, prompt)

    @staticmethod
    def _activate_body(version_id: str) -> models.ActivateRequest:
        raw = require_id("version_id", version_id)
        try:
            parsed = uuid.UUID(raw)
        except ValueError:
            raise CTValidationError(f"version_id must be a UUID, got {raw!r}.") from None
        return models.ActivateRequest(version_id=parsed)

    # --- rollouts -----------------------------------------------------------------------

    @staticmethod
    def _rollout_body(candidate_version_id: str, options: dict[str, Any]) -> models.RolloutRequest:
        """Check the arguments of `start_rollout` locally and build its body."""
        raw = require_id("candidate_version_id", candidate_version_id)
        try:
            parsed = uuid.UUID(raw)
        except ValueError:
            raise CTValidationError(f"candidate_version_id must be a UUID, got {raw!r}.") from None
        share, ramp = options.get("share"), options.get("ramp")
        if share is not None and ramp is not None:
            raise CTValidationError("Give either share or ramp, not both.")
        for value in [share] if share is not None else list(ramp or ()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= value <= 1.0
            ):
                raise CTValidationError(f"A share must be a number in [0, 1], got {value!r}.")
        if ramp is not None:
            options = {**options, "ramp": [float(v) for v in ramp]}
        try:
            return msgspec.convert({**options, "candidate_version_id": parsed},
                                   models.RolloutRequest)
        except msgspec.ValidationError as exc:
            raise CTValidationError(f"Invalid rollout option: {exc}.") from None

    def _sync_prompt_cache(self, task_id: str, rollout: models.Rollout) -> None:
        """Drop the task's cached prompt when it disagrees with *rollout* (decided, re-ramped)."""
        cached = self.get_prompt_cached(task_id, allow_stale=True)
        if cached is None:
            return
        serving = cached.rollout
        if rollout.is_running:
            stale = serving is None or (serving.id, serving.share) != (rollout.id, rollout.share)
        else:
            stale = serving is not None or (
                rollout.state == "promoted" and cached.id != rollout.candidate_version_id
            )
        if stale:
            self._forget_prompt(task_id, cached)

    @staticmethod
    def _served_by(
        body: models.FeedbackRequest, prompt_version_id: str | None, arm: str | None
    ) -> models.FeedbackRequest:
        """Add the version served (and its rollout arm) to a feedback body, checked."""
        version = None
        if prompt_version_id is not None:
            raw = require_id("prompt_version_id", prompt_version_id)
            try:
                version = uuid.UUID(raw)
            except ValueError:
                raise CTValidationError(f"prompt_version_id must be a UUID, got {raw!r}.") from None
        if arm not in (None, "active", "candidate"):
            raise CTValidationError(f"arm must be 'active' or 'candidate', got {arm!r}.")
        unset = msgspec.UNSET  # what is not given is not sent (older servers reject the keys)
        return msgspec.structs.replace(
            body, prompt_version_id=unset if version is None else version,
            arm=unset if arm is None else arm,
        )

    @staticmethod
    def _stop_body(action: str) -> models.RolloutStopRequest:
        if action not in ("promote", "rollback"):
            raise CTValidationError(f"action must be 'promote' or 'rollback', got {action!r}.")
        return models.RolloutStopRequest(action=action)  # type: ignore[arg-type]

    # --- keys -------------------------------------------------------------------------

    @staticmethod
    def _key_body(name: str, scope: str) -> models.KeyCreateRequest:
        """Check the arguments of `create_key` locally and build its body."""
        if scope not in models.KEY_SCOPES:
            raise CTValidationError(
                f"scope must be one of {', '.join(models.KEY_SCOPES)}, got {scope!r}."
            )
        if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
            raise CTValidationError(
                "name must be 1 to 64 letters, digits or ._@- (starting with a letter or digit),"
                f" got {name!r}."
            )
        return models.KeyCreateRequest(name=name, scope=scope)  # type: ignore[arg-type]


def evaluator_body(into: Any, settings: dict[str, Any]) -> Any:
    """An evaluator request (*into*: `EvaluatorRequest` or `EvaluatorUpdateRequest`) from
    keyword *settings*; a bad or unknown one raises `CTValidationError` naming it."""
    if into is models.EvaluatorUpdateRequest and not settings:
        raise CTValidationError("update_evaluator needs at least one setting to change")
    try:
        return msgspec.convert(settings, into)
    except msgspec.ValidationError as exc:
        raise CTValidationError(f"Invalid evaluator setting: {exc}.") from None
