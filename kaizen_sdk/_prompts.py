"""The prompt fetcher: active prompts for ``@task`` calls, kept current in the background.

One `PromptFetcher` per client (`prompt_fetcher`). Calls are served from the client's prompt
cache without I/O; a background thread revalidates each task's prompt every
``prompt_refresh`` seconds with a conditional request (``If-None-Match`` with the last
``ETag``; a ``304`` costs the server almost nothing, and a server without ETags simply answers
``200`` each time), so an activation reaches running processes within seconds at no per-call
cost. Only the very first call of a task waits, and never longer than ``prompt_wait``
seconds in total, whatever the server does byte by byte: the request runs on the fetcher's
own event loop under ``asyncio`` deadlines, and the caller waits on its result with a timeout.
With a default prompt and ``prompt_wait=0`` the first call does not wait at all.

After a failure calls with a default prompt use it without waiting until a background fetch
succeeds; failed fetches are retried after 1, 2, 4 ... 60 s, a task the server has no prompt
for yet (``404``) every ``prompt_refresh`` seconds. A prompt once fetched is served, even
stale, while the server cannot be reached. `prefetch` warms prompts at start-up.

Answers are read as a stream and never held beyond `MAX_ANSWER_BYTES`; an answer larger than
that, or a prompt text longer than the server's limit (`MAX_PROMPT_CHARS`), is a failed fetch
(counted in ``PromptStats.oversize`` and logged): calls keep the prompt they had, or the
default.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Iterable
from typing import Any, cast
from urllib.parse import quote

import httpx

from kaizen_sdk._config import DEFAULT_PROMPT_WAIT
from kaizen_sdk._http import RETRY_AFTER_MAX, check_labelled, split_key
from kaizen_sdk.errors import CTError
from kaizen_sdk.models import MAX_PROMPT_CHARS, PROMPT_REF_HEADER, Prompt

__all__ = [
    "MAX_ANSWER_BYTES",
    "RETRY_FIRST",
    "RETRY_MAX",
    "PromptFetcher",
    "PromptStats",
    "missing_prompt",
    "prompt_fetcher",
]

_log = logging.getLogger("kaizen_sdk.prompts")

RETRY_FIRST = 1.0
"""Seconds before the first retry of a fetch that failed in transport or with a 5xx."""

RETRY_MAX = 60.0
"""Longest wait between two retries of a failing fetch."""

_REQUEST_DEADLINE = 10.0  # total bound of one background request, whatever the server does

_MAX_REFERABLE = 10_000  # versions remembered as referable (each is a served version)

MAX_ANSWER_BYTES = 2 * 6 * MAX_PROMPT_CHARS + 64 * 1024
"""Most bytes of one prompt answer read (after content decoding): the active version and a
rollout's candidate, each at the server's `MAX_PROMPT_CHARS` with every character
JSON-escaped (6 bytes), plus 64 KiB for the other fields. A larger answer is cut there."""


class _NoPrompt(Exception):
    """The prompt could not be fetched; the message says why (never the API key)."""


class _Oversize(Exception):
    """The answer is larger than this SDK accepts; the message says how (never the key)."""


class PromptStats:
    """Counts of the fetcher's requests: sent, answered ``304``, changed prompts, failures."""

    __slots__ = ("changed", "failed", "not_modified", "oversize", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.not_modified = 0
        self.changed = 0
        self.failed = 0
        self.oversize = 0  # of the failures: answers cut at MAX_ANSWER_BYTES or too long

    def __repr__(self) -> str:
        return (
            f"PromptStats(requests={self.requests}, not_modified={self.not_modified}, "
            f"changed={self.changed}, failed={self.failed}, oversize={self.oversize})"
        )


class _State:
    __slots__ = (
        "default_text", "delay", "error", "etag", "future", "generation", "handle", "last",
        "logged_default",
    )

    def __init__(self) -> None:
        self.last: Prompt | None = None  # the last prompt the server sent (kept when stale)
        self.etag: str | None = None
        self.future: concurrent.futures.Future[Prompt | None] | None = None  # in flight
        self.handle: asyncio.TimerHandle | None = None  # the next revalidation
        self.delay = 0.0  # current retry delay after failures
        self.error = ""
        self.default_text: str | None = None
        self.logged_default = False
        self.generation = 0  # bumped by `PromptFetcher.install`: a fetch begun before is stale


class PromptFetcher:
    """Per client: serve prompts without I/O and revalidate them in the background.

    Example::

        fetcher = prompt_fetcher(client)
        prompt = fetcher.get("summarize_ticket", default)  # waits at most prompt_wait once

    Parameters:
        client: the `CTClient` / `AsyncCTClient` whose settings, key and cache it uses.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        settings = client._settings
        self._wait = max(0.0, float(settings.prompt_wait))
        self._refresh = max(0.05, float(settings.prompt_refresh))
        self._deadline = min(float(settings.timeout), _REQUEST_DEADLINE)
        self.cache = client._prompt_cache
        self.failing: set[str] = set()  # serve the default without waiting (read lock-free)
        # versions this server fills a trace's prompt text for (PROMPT_REF_HEADER): id -> text
        self.referable: dict[str, str] = {}
        self.stats = PromptStats()
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._http: httpx.AsyncClient | None = None
        self._pid = os.getpid()
        self._closed = False

    def __repr__(self) -> str:
        return f"PromptFetcher(tasks={len(self._states)}, {self.stats!r})"

    # calls ---------------------------------------------------------------------------------

    def peek(self, name: str, default: Prompt | None) -> Prompt | None:
        """Return the prompt without I/O, or None when the first fetch has to be waited for."""
        found = self.cache.lookup(name)
        if found is not None:
            self.hit(name, found[1])
            prompt: Prompt = found[0]
            return prompt
        state = self._states.get(name)
        if state is not None and state.last is not None:
            self._start(name)  # invalidated (an activation here): fetch now, serve the last
            return state.last
        if default is not None and name in self.failing:
            return default  # a background fetch will fill the cache
        return None

    def hit(self, name: str, fresh: bool) -> None:
        """A call found *name* cached: fetch now when the entry expired, forget a failure."""
        if not fresh:
            self._start(name)
        if name in self.failing:  # someone (get_prompt) cached it: the server has one now
            with self._lock:
                self.failing.discard(name)

    def install(self, name: str, prompt: Prompt) -> None:
        """Serve *prompt* for *name* from the next call on (an activation by this client).

        A fetch already in flight, begun before the activation, no longer replaces it; the
        next revalidation asks the server unconditionally.
        """
        with self._lock:
            state = self._states.get(name)
            if state is not None:
                state.generation += 1
                state.last = prompt
                state.etag = None
                state.error = ""
            self.failing.discard(name)
            self.cache.set(name, prompt)

    @property
    def prompt_wait(self) -> float:
        """Seconds a first call waits for its prompt (the client's ``prompt_wait``)."""
        return self._wait

    def get(self, name: str, default: Prompt | None) -> Prompt:
        """Return the prompt; the first call waits at most ``prompt_wait`` s, then the default.

        Without a default a call waits up to ``prompt_wait`` (1.5 s when it is 0) and raises
        `CTError` when no prompt came.
        """
        prompt = self.peek(name, default)
        if prompt is not None:
            return prompt
        if default is not None:
            self._note_default(name, default)
        wait = self._wait if default is not None else (self._wait or DEFAULT_PROMPT_WAIT)
        future = self._start(name)
        got: Prompt | None = None
        if future is not None and wait > 0:
            try:
                got = future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                self._timed_out(name, wait)
            except Exception:  # the loop was shut down under us
                got = None
        if got is not None:
            return got
        state = self._states.get(name)
        if state is not None and state.last is not None:
            return state.last
        if default is not None:
            return default
        reason = state.error if state is not None and state.error else "it could not be fetched"
        raise missing_prompt(split_key(name)[0], reason)

    def wait(self, names: Iterable[str], timeout: float) -> bool:
        """Fetch *names* now and wait up to *timeout* s in total; True if all have a prompt."""
        futures = [f for f in (self._start(name) for name in names) if f is not None]
        done, _ = concurrent.futures.wait(futures, timeout=max(0.0, timeout))
        return len(done) == len(futures) and all(
            not f.cancelled() and f.exception() is None and f.result() is not None for f in done
        )

    def close(self) -> None:
        """Stop revalidating and close the connection pool (the client closed). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            mine = self._pid == os.getpid()
        if loop is None or thread is None or not mine:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=2.0)
        except Exception:
            _log.debug("Stopping the prompt fetcher took too long.", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not threading.current_thread():
            thread.join(2.0)

    # background ----------------------------------------------------------------------------

    def _note_default(self, name: str, default: Prompt) -> None:
        state = self._states.get(name)
        if state is None:
            with self._lock:
                state = self._states.setdefault(name, _State())
        if state.default_text is None:
            state.default_text = default.prompt_text

    def _timed_out(self, name: str, wait: float) -> None:
        with self._lock:
            state = self._states.get(name)
            if state is not None and state.last is None:
                if not state.error:
                    state.error = f"the CT server did not answer within {wait:g} s"
                self.failing.add(name)  # later calls take the default without waiting

    def _ensure_loop(self) -> asyncio.AbstractEventLoop | None:
        """The fetcher's event loop thread, started on first use (again in a forked child)."""
        loop = self._loop
        if loop is not None and self._pid == os.getpid():
            return loop
        with self._lock:
            if self._closed:
                return None
            if self._pid != os.getpid():  # a forked child: the parent's thread is not ours
                self._pid = os.getpid()
                self._loop = self._thread = self._http = None
                self._states.clear()
                self.failing.clear()
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        loop.close()

                thread = threading.Thread(target=run, name="kaizen-prompts", daemon=True)
                thread.start()
                ready.wait(5.0)
                self._loop, self._thread = loop, thread
                _live.add(self)  # closed at exit (weakly held: a dropped client is freed)
            return self._loop

    def _start(self, name: str) -> concurrent.futures.Future[Prompt | None] | None:
        """Start a fetch of *name* unless one is in flight; return its future."""
        state = self._states.get(name)
        if state is not None:
            future = state.future
            if future is not None and not future.done():
                return future
        loop = self._ensure_loop()
        if loop is None:
            return None
        with self._lock:
            state = self._states.get(name)
            if state is None:
                state = self._states[name] = _State()
            future = state.future
            if future is not None and not future.done():
                return future
            try:
                future = asyncio.run_coroutine_threadsafe(self._check(name, state), loop)
            except RuntimeError:  # the loop is closing
                return None
            state.future = future
            return future

    def _kick(self, name: str, state: _State) -> None:
        """A revalidation is due (runs on the loop)."""
        state.handle = None
        if self._closed or self._states.get(name) is not state:
            return
        future = state.future
        if future is not None and not future.done():
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            state.future = asyncio.run_coroutine_threadsafe(self._check(name, state), loop)

    async def _check(self, name: str, state: _State) -> Prompt | None:
        """Fetch *name* once (conditionally), update the cache, schedule the next check."""
        next_in = self._refresh
        prompt: Prompt | None = None
        try:
            prompt = await asyncio.wait_for(self._fetch(name, state), self._deadline)
        except asyncio.CancelledError:
            raise
        except _NoPrompt as exc:  # a real answer (404): ask again at the normal interval
            self._failed(name, state, str(exc))
        except _Oversize as exc:  # the server misbehaves: back off as after a 5xx
            self.stats.oversize += 1
            if state.error != str(exc):
                _log.warning("Task %r: %s; the prompt it had (or its default) is used.",
                             name, exc)
            self._failed(name, state, str(exc))
            state.delay = min(RETRY_MAX, max(RETRY_FIRST, state.delay * 2))
            next_in = state.delay
        except Exception as exc:
            self._failed(name, state, _why(exc))
            state.delay = min(RETRY_MAX, max(RETRY_FIRST, state.delay * 2))
            asked = getattr(exc, "retry_after", None)  # a 429's Retry-After, parsed by _http
            if asked is not None:
                state.delay = max(state.delay, min(float(asked), RETRY_AFTER_MAX))
            next_in = state.delay
        else:
            state.delay = 0.0
            state.error = ""
            if name in self.failing:
                with self._lock:
                    self.failing.discard(name)
        finally:
            if not self._closed and self._states.get(name) is state:
                if state.handle is not None:
                    state.handle.cancel()
                loop = asyncio.get_running_loop()
                state.handle = loop.call_later(next_in, self._kick, name, state)
        return prompt

    def _failed(self, name: str, state: _State, reason: str) -> None:
        self.stats.failed += 1
        first = not state.error
        state.error = reason
        if state.last is None:
            with self._lock:
                self.failing.add(name)
            if first:
                _log.info("No prompt for task %r yet (%s); retrying in the background.",
                          name, reason)

    async def _fetch(self, name: str, state: _State) -> Prompt:
        client = self._client  # its request building and decoding, our own connection pool
        task, label = split_key(name)  # a label's key: revalidated like the active prompt
        params = None if label is None else {"label": label}
        call = client._call("GET", f"/prompts/{quote(task, safe='')}", params=params)
        request = call.request
        if state.etag is not None and state.last is not None:
            request.headers["If-None-Match"] = state.etag
        http = self._http
        if http is None:
            http = self._http = httpx.AsyncClient(**client._httpx_options())
        self.stats.requests += 1
        generation = state.generation
        resp = await _bounded(http, request)
        if resp.status_code == 304 and state.last is not None:
            with self._lock:  # checked and stored at once against `install`
                last = state.last
                if state.generation == generation:
                    self.stats.not_modified += 1
                    self.cache.set(name, last)  # fresh again for cache_ttl
            return last
        if resp.status_code == 404:
            if label is not None:
                raise _NoPrompt(f"the CT server has no version labelled {label!r} for it")
            raise _NoPrompt("the CT server has no active prompt for it yet")
        prompt: Prompt = client._result(resp, Prompt)
        try:
            check_labelled(prompt, label)
        except CTError as exc:
            raise _NoPrompt(str(exc)) from None
        _check_size(prompt)
        if resp.headers.get(PROMPT_REF_HEADER) == "version-id":
            self._referable(prompt)
        with self._lock:  # checked and stored at once against `install`
            old = state.last
            if state.generation != generation and old is not None:
                return old  # activated here meanwhile: this answer may predate it
            state.etag = resp.headers.get("ETag")
            state.last = prompt
            self.cache.set(name, prompt)
        if old is None or old != prompt:
            self.stats.changed += int(old is not None)
            if old is not None:
                _log.info("Task %r now serves prompt version %s.", name, prompt.version_number)
        client._remember_prompt(name, prompt)
        if (
            state.default_text is not None
            and not state.logged_default
            and state.default_text != prompt.prompt_text
        ):
            state.logged_default = True
            _log.info(
                "Task %r: the CT server's active prompt (version %s) differs from its "
                "default_prompt; the server's prompt is used.", name, prompt.version_number,
            )
        return prompt

    def _referable(self, prompt: Prompt) -> None:
        """Note that traces of *prompt* (and of its rollout candidate) may name it by id."""
        served = [prompt] if prompt.rollout is None else [prompt, prompt.rollout.candidate]
        if len(self.referable) > _MAX_REFERABLE:
            self.referable = {}  # a new dict: readers on other threads keep the old one
        for version in served:
            if version.id is not None:
                self.referable[str(version.id)] = version.prompt_text

    async def _shutdown(self) -> None:
        for state in self._states.values():
            if state.handle is not None:
                state.handle.cancel()
                state.handle = None
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:  # fetches still waiting on a slow server
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()


async def _bounded(http: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send *request*; read its answer as a stream, at most `MAX_ANSWER_BYTES` of it.

    Returns the answer with its body read (content decoding done, so the headers that
    described the encoding are left out); raises `_Oversize` when the body is larger, having
    read no more than the limit and closed the connection.
    """
    resp = await http.send(request, stream=True)
    try:
        declared = resp.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
            raise _Oversize(_too_big(f"{int(declared)} bytes"))
        body = bytearray()
        # closed here, not left to the loop to finalize after the answer was cut
        stream = cast("AsyncGenerator[bytes, None]", resp.aiter_bytes())
        async with contextlib.aclosing(stream) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_ANSWER_BYTES:
                    raise _Oversize(_too_big(f"more than {MAX_ANSWER_BYTES} bytes"))
    finally:
        await resp.aclose()
    headers = [(k, v) for k, v in resp.headers.multi_items()
               if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
    return httpx.Response(resp.status_code, headers=headers, content=bytes(body),
                          request=request)


def _too_big(size: str) -> str:
    return (f"the CT server's prompt answer has {size}; at most {MAX_ANSWER_BYTES} are read "
            "(the server's prompt limit is "
            f"{MAX_PROMPT_CHARS} characters)")


def _check_size(prompt: Prompt) -> None:
    """Refuse a prompt (or rollout candidate) longer than the server's own limit."""
    texts = [prompt.prompt_text]
    if prompt.rollout is not None:
        texts.append(prompt.rollout.candidate.prompt_text)
    for text in texts:
        if len(text) > MAX_PROMPT_CHARS:
            raise _Oversize(
                f"the CT server's prompt has {len(text)} characters; at most "
                f"{MAX_PROMPT_CHARS} are accepted"
            )


_build_lock = threading.Lock()
_live: weakref.WeakSet[PromptFetcher] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """Close the connection pools of fetchers still running at interpreter exit."""
    for fetcher in list(_live):
        try:
            fetcher.close()
        except Exception:
            _log.debug("Closing a prompt fetcher at exit failed.", exc_info=True)


def prompt_fetcher(client: Any) -> PromptFetcher:
    """Return *client*'s `PromptFetcher`, building it on first use (``client._prompts``)."""
    fetcher: PromptFetcher | None = client._prompts
    if fetcher is not None:
        return fetcher
    with _build_lock:
        if client._prompts is None:
            client._prompts = PromptFetcher(client)
        built: PromptFetcher = client._prompts
        return built


def _why(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException)):
        return "the CT server did not answer in time"
    if isinstance(exc, httpx.TransportError):
        return "the CT server could not be reached"
    if isinstance(exc, CTError | _Oversize):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def missing_prompt(name: str, reason: str) -> CTError:
    """The error of a call that has neither a prompt from the server nor a default."""
    return CTError(
        f"No prompt for task {name!r}: {reason or 'it could not be fetched'}. Pass "
        f"default_prompt=... to @task({name!r}) (default=... to ct.prompt({name!r})) so calls"
        " can run without the CT server."
    )
