"""A hostile upstream on loopback (raw sockets): trickles, stays silent, floods, echoes secrets.

`HostileUpstream(mode)` answers every request in one way:

- ``trickle``: the answer (head included) one byte every *interval* seconds, for ever;
- ``silent``: reads the request and never answers;
- ``huge``: ``200`` with a JSON body of *size* bytes, streamed without a length (chunked);
- ``echo``: *status* with a body echoing the request's ``Authorization`` header raw, in
  base64 and URL-encoded (what a careless upstream does in a 4xx);
- ``json``: ``200`` with the fixed *body* bytes (a malformed GitHub answer).

``requests`` counts the requests that arrived (their head was read). Threads are daemons
and every socket is closed on exit.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
from typing import Any
from urllib.parse import quote

__all__ = ["HostileUpstream"]


class HostileUpstream:
    """``with HostileUpstream("trickle") as up: up.url`` -- ``http://127.0.0.1:PORT``."""

    def __init__(self, mode: str, *, interval: float = 0.2, size: int = 100 * 1024 * 1024,
                 status: int = 422, body: bytes = b"{}") -> None:
        self.mode = mode
        self.interval = interval
        self.size = size
        self.status = status
        self.body = body
        self.requests = 0
        self.seen = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:  # a timeout too
                continue
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> dict[str, str] | None:
        conn.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            rest += chunk
        with self._lock:
            self.requests += 1
        self.seen.set()
        return headers

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while not self._stop.is_set():
                headers = self._read_request(conn)
                if headers is None:
                    return
                getattr(self, f"_{self.mode}")(conn, headers)

    def _trickle(self, conn: socket.socket, headers: dict[str, str]) -> None:
        answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                  b"content-length: 100000\r\n\r\n" + b" " * 100_000)
        for byte in answer:
            if self._stop.wait(self.interval):
                return
            conn.sendall(bytes([byte]))

    def _silent(self, conn: socket.socket, headers: dict[str, str]) -> None:
        self._stop.wait()

    def _huge(self, conn: socket.socket, headers: dict[str, str]) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        chunk = b'{"pad": "' + b"x" * (256 * 1024) + b'"}'
        sent = 0
        while sent < self.size and not self._stop.is_set():
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        conn.sendall(b"0\r\n\r\n")

    def _echo(self, conn: socket.socket, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        secret = auth.split(" ", 1)[-1]
        echo = (f'{{"message": "bad credentials {auth}", "b64": '
                f'"{base64.b64encode(secret.encode()).decode()}", "url": "{quote(secret)}",'
                f' "errors": [{{"message": "token {secret} rejected"}}]}}').encode()
        self._send(conn, self.status, echo)

    def _json(self, conn: socket.socket, headers: dict[str, str]) -> None:
        self._send(conn, 200 if self.status >= 400 else self.status, self.body)

    @staticmethod
    def _send(conn: socket.socket, status: int, body: bytes) -> None:
        conn.sendall(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d"
                     b"\r\n\r\n%s" % (status, len(body), body))

    def __repr__(self) -> str:
        return f"HostileUpstream({self.mode!r}, {self.url})"

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests}
