"""Which connections the local server keeps when it has too many: a connection that says nothing
costs nothing.

The server's HTTP protocol tells a `ConnectionBook` when a connection opens, when it starts
and ends a request, and when it closes. The book keeps the connections that are *waiting* (no
request head yet, or idle between keep-alive requests) oldest first, overall and per client
address. When a new connection takes the server past `ConnectionBook.max_connections`, or its
client past `ConnectionBook.max_per_client`, the oldest waiting connection (of that client, or
of anyone) is closed, never a connection in the middle of a request, and never one whose
request bytes have arrived but wait to be read (an accepted connection can wait a moment
behind a burst of others before the server reads it: that is a client speaking, not a
silent socket). Only requests being
served count toward the request cap (`ConnectionBook.max_requests`), so a flood of sockets
that never send a head refuses nobody's requests: it only closes its own oldest sockets.

Everything runs on the event loop thread: no locks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

__all__ = [
    "MAX_CONNECTIONS_PER_CLIENT",
    "MAX_OPEN_CONNECTIONS",
    "MAX_REQUESTS",
    "Closable",
    "ConnectionBook",
]

MAX_OPEN_CONNECTIONS = 4096
"""Connections kept open at once; past it the oldest waiting connection is closed."""

MAX_CONNECTIONS_PER_CLIENT = 2048
"""Connections one client address may keep open; past it its oldest waiting one is closed."""

MAX_REQUESTS = 1024
"""Requests served at once (a request past it gets 503); waiting connections do not count."""

_SCAN = 64  # waiting connections looked at for one that is silent


class Closable(Protocol):
    """A connection: something the book can close."""

    def close_waiting(self) -> None:
        """Close the connection (it is waiting: nothing is lost)."""

    def has_unread_data(self) -> bool:
        """True when bytes arrived that the server has not read yet (a head on its way)."""


class ConnectionBook:
    """The open connections of one server: which wait, whose they are, how many requests run.

    Example::

        book = ConnectionBook(max_connections=2)
        book.opened(a, "10.0.0.1"); book.opened(b, "10.0.0.1"); book.opened(c, "10.0.0.2")
        # a, the oldest waiting connection, was closed
    """

    def __init__(self, *, max_connections: int = MAX_OPEN_CONNECTIONS,
                 max_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
                 max_requests: int = MAX_REQUESTS) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.max_requests = max_requests
        self._client: dict[Closable, str] = {}
        self._per_client: dict[str, int] = {}
        self._waiting: OrderedDict[Closable, None] = OrderedDict()
        self._waiting_by_client: dict[str, OrderedDict[Closable, None]] = {}
        self.requests = 0
        """Requests being served now."""
        self.closed_waiting = 0
        """Waiting connections closed to make room (a counter for tests and figures)."""

    def __repr__(self) -> str:
        return (f"ConnectionBook(open={len(self._client)}, waiting={len(self._waiting)},"
                f" requests={self.requests})")

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._client)

    def opened(self, conn: Closable, client: str) -> None:
        """*conn* from *client* was accepted; close older waiting ones if there are too many."""
        self._client[conn] = client
        self._per_client[client] = self._per_client.get(client, 0) + 1
        self._wait(conn)
        if self._per_client[client] > self.max_per_client:
            self._evict(self._waiting_by_client.get(client), conn)
        if len(self._client) > self.max_connections:
            self._evict(self._waiting, conn)

    def busy(self, conn: Closable) -> None:
        """*conn* sent a complete request head: it is no longer waiting."""
        self._unwait(conn)

    def idle(self, conn: Closable) -> None:
        """*conn* finished a request and waits for the next (keep-alive)."""
        if conn in self._client:
            self._wait(conn)

    def closed(self, conn: Closable) -> None:
        """*conn* is gone."""
        self._unwait(conn)
        client = self._client.pop(conn, None)
        if client is not None:
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]

    def start_request(self) -> bool:
        """Count a request in; False (and not counted) when `max_requests` are running."""
        if self.requests >= self.max_requests:
            return False
        self.requests += 1
        return True

    def end_request(self) -> None:
        """A request counted by `start_request` ended."""
        self.requests -= 1

    def _wait(self, conn: Closable) -> None:
        self._waiting[conn] = None
        self._waiting.move_to_end(conn)
        by_client = self._waiting_by_client.setdefault(self._client[conn], OrderedDict())
        by_client[conn] = None
        by_client.move_to_end(conn)

    def _unwait(self, conn: Closable) -> None:
        self._waiting.pop(conn, None)
        client = self._client.get(conn)
        if client is None:
            return
        by_client = self._waiting_by_client.get(client)
        if by_client is not None:
            by_client.pop(conn, None)
            if not by_client:
                del self._waiting_by_client[client]

    def _evict(self, waiting: OrderedDict[Closable, None] | None, new: Closable) -> None:
        """Close the oldest silent waiting connection of *waiting*, else the new one."""
        victim = new
        for n, conn in enumerate(waiting or ()):
            if n >= _SCAN or conn is new:
                break
            if not conn.has_unread_data():
                victim = conn
                break
        self.closed(victim)
        self.closed_waiting += 1
        victim.close_waiting()
