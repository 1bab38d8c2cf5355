"""Sessions of the web UI: a random id in a cookie, mapped here to who signed in.

The cookie carries only a random session id (256 bits); the key itself never leaves the
sign-in form. A `Session` holds the key's `Principal`, the SHA-256 of the key (so a revoked
key's sessions end on their next request: the store is asked whether the hash is still live),
and the session's CSRF token, checked on every change. Sessions expire `IDLE_SECONDS` after
their last request and `MAX_AGE_SECONDS` after sign-in; at most `MAX_SESSIONS` live at once
(the least recently used one is dropped for a new one). The server keeps them in its database
(`SessionStore`, a row per session named by a hash of its id), so every server process on the
database knows every session and a restart signs nobody out; without a store they live in
this process's memory.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol

from kaizen_server.domain.keys import Principal
from kaizen_server.storage.ui_sessions import SessionRecord

__all__ = ["IDLE_SECONDS", "MAX_AGE_SECONDS", "MAX_SESSIONS", "TOUCH_SECONDS", "Session",
           "SessionBook", "SessionStore"]

MAX_SESSIONS = 1000
"""Sessions kept at once; past it the least recently used one ends."""

IDLE_SECONDS = 3600.0
"""A session ends this long after its last request."""

MAX_AGE_SECONDS = 12 * 3600.0
"""A session ends this long after sign-in, however busy."""

TOUCH_SECONDS = 60.0
"""A stored session's last use is written at most this often (not on every page and asset)."""


class SessionStore(Protocol):
    """Where sessions live when they are shared (`kaizen_server.storage.interface`)."""

    def open_session(self, id_hash: str, record: SessionRecord, *, keep: int,
                     expired_before: float) -> None:
        """Store a session; drop expired ones and the least recently seen past *keep*."""
        ...

    def get_session(self, id_hash: str) -> SessionRecord | None:
        """The session named *id_hash*, or ``None``."""
        ...

    def touch_session(self, id_hash: str, seen: float) -> None:
        """Note the session's use at *seen*."""
        ...

    def close_session(self, id_hash: str) -> None:
        """End the session named *id_hash*."""
        ...


@dataclasses.dataclass
class Session:
    """One signed-in browser: who, the key's hash (``None`` for the server's own key), CSRF."""

    principal: Principal
    key_hash: str | None
    csrf: str
    created: float
    seen: float

    def __repr__(self) -> str:
        return f"Session({self.principal.name!r}, {self.principal.scope})"

    def csrf_ok(self, given: str | None) -> bool:
        """Whether *given* is this session's CSRF token (constant-time comparison)."""
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class SessionBook:
    """The live sessions, bounded in number and age; safe to use from many threads.

    Parameters:
        key_live: ``key_live(key_hash)`` says whether a created key is still live (not
            revoked); asked on every request of a session signed in with such a key.
        clock: seconds (tests pass their own); monotonic by default, the wall clock with a
            *store* (several processes and machines share it).
        store: where the sessions live (every server process on one database shares them);
            ``None`` keeps them in this process's memory.
    """

    def __init__(
        self,
        key_live: Callable[[str], bool],
        *,
        max_sessions: int = MAX_SESSIONS,
        idle: float = IDLE_SECONDS,
        max_age: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] | None = None,
        store: SessionStore | None = None,
    ) -> None:
        self._key_live = key_live
        self._max = max_sessions
        self._idle = idle
        self._max_age = max_age
        self._store = store
        self._clock = clock or (time.monotonic if store is None else time.time)
        self._lock = threading.Lock()
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def open(self, principal: Principal, key_hash: str | None) -> tuple[str, Session]:
        """Start a session for *principal*; return its (secret) id and the session."""
        now = self._clock()
        sid = secrets.token_urlsafe(32)
        session = Session(principal, key_hash, secrets.token_urlsafe(32), now, now)
        if self._store is not None:
            self._store.open_session(_name(sid), SessionRecord(
                principal.name, principal.scope, principal.key_id, key_hash, session.csrf,
                now, now), keep=self._max, expired_before=now - self._idle)
            return sid, session
        with self._lock:
            self._sessions[sid] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session of id *sid*, or ``None`` (expired, unknown, or its key revoked)."""
        if not sid:
            return None
        now = self._clock()
        if self._store is not None:
            return self._stored(sid, now)
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if now - session.seen > self._idle or now - session.created > self._max_age:
                del self._sessions[sid]
                return None
            session.seen = now
            self._sessions.move_to_end(sid)
        if session.key_hash is not None and not self._key_live(session.key_hash):
            self.close(sid)
            return None
        return session

    def _stored(self, sid: str, now: float) -> Session | None:
        assert self._store is not None
        name = _name(sid)
        record = self._store.get_session(name)
        if record is None:
            return None
        if now - record.seen > self._idle or now - record.created > self._max_age or (
                record.key_hash is not None and not self._key_live(record.key_hash)):
            self._store.close_session(name)
            return None
        if now - record.seen >= TOUCH_SECONDS:
            self._store.touch_session(name, now)
        return Session(Principal(record.name, record.scope, record.key_id), record.key_hash,
                       record.csrf, record.created, now)

    def close(self, sid: str | None) -> None:
        """End the session *sid* (sign-out); nothing happens for an unknown id."""
        if sid and self._store is not None:
            self._store.close_session(_name(sid))
        elif sid:
            with self._lock:
                self._sessions.pop(sid, None)


def _name(sid: str) -> str:
    """What names a session in the store: the SHA-256 of its id, never the id itself."""
    return hashlib.sha256(sid.encode("utf-8", "surrogateescape")).hexdigest()
