"""``kaizen serve --workers N``: N server processes on one port, watched by a parent process.

The parent binds the listening socket once and starts N child processes that inherit it
(``pass_fds``); each child runs a whole `LocalServer` (HTTP, job worker, retention) on that
socket, and the kernel hands each new connection to one of them. The processes share nothing
but the database: jobs go to whichever worker claims them first (job leases), rollout
decisions are compare-and-set writes, and every answer (an ``ETag`` included) is computed
from the database, so any process answers any request alike.

The parent restarts a child that dies (its running job is taken over through its lease) and
says so on its output; a child that keeps dying right after its start (`CRASH_LOOP` times
within `CRASH_SECONDS` each) stops the whole server with exit status 1. On SIGTERM or Ctrl-C
the parent sends SIGTERM to every child, waits for them (each finishes its current request
and job step), kills those still running after the grace period, and exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from kaizen_server.settings import KAIZEN_API_KEY

__all__ = ["CRASH_LOOP", "CRASH_SECONDS", "GRACE_SECONDS", "Supervisor", "child_environment"]

CRASH_SECONDS = 10.0
"""A child that ends sooner than this after its start counts as a crash at start."""

CRASH_LOOP = 5
"""Crashes at start in a row, of one child, after which the parent gives up."""

GRACE_SECONDS = 20.0
"""How long the children have to stop after SIGTERM before they are killed."""

_POLL = 0.2


@dataclasses.dataclass
class _Child:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    crashes: int = 0


class Supervisor:
    """Runs *count* children on the listening socket *sock* until `stop` (or a crash loop).

    Parameters:
        sock: the bound, listening socket the children inherit.
        count: how many child processes to keep running.
        command: ``command(fd)``, the child's argument list given the socket's descriptor.
        env: the children's environment.
        say: prints one line of the parent's report (starts, deaths, restarts).
    """

    def __init__(self, sock: socket.socket, count: int,
                 command: Callable[[int], Sequence[str]], *, env: Mapping[str, str],
                 say: Callable[[str], None] = print) -> None:
        if count < 1:
            raise ValueError(f"--workers must be at least 1, got {count}")
        self._sock = sock
        self._count = count
        self._command = command
        self._env = dict(env)
        self._say = say
        self._children: list[_Child] = []
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"Supervisor(workers={self._count})"

    @property
    def pids(self) -> list[int]:
        """The process ids of the running children."""
        return [c.proc.pid for c in self._children]

    def stop(self) -> None:
        """Ask `run` to stop the children and return (safe from a signal handler)."""
        self._stop.set()

    def _spawn(self, index: int, crashes: int = 0) -> _Child:
        fd = self._sock.fileno()
        proc = subprocess.Popen(list(self._command(fd)), pass_fds=(fd,), env=self._env)
        self._say(f"worker {index} started: pid {proc.pid}")
        return _Child(index, proc, time.monotonic(), crashes)

    def run(self) -> int:
        """Start the children and watch them; return the exit status for the parent."""
        status = 0
        try:
            self._children = [self._spawn(i + 1) for i in range(self._count)]
            while not self._stop.wait(_POLL):
                for n, child in enumerate(self._children):
                    code = child.proc.poll()
                    if code is None:
                        continue
                    quick = time.monotonic() - child.started < CRASH_SECONDS
                    crashes = child.crashes + 1 if quick else 0
                    how = f"signal {-code}" if code < 0 else f"status {code}"
                    if crashes >= CRASH_LOOP:
                        self._say(f"worker {child.index} (pid {child.proc.pid}) ended with"
                                  f" {how}, {crashes} times right after its start; stopping"
                                  " the server")
                        return 1
                    self._say(f"worker {child.index} (pid {child.proc.pid}) ended with {how};"
                              " restarting it")
                    self._children[n] = self._spawn(child.index, crashes)
        except KeyboardInterrupt:
            status = 0
        finally:
            self._stop_children()
        return status

    def _stop_children(self) -> None:
        for child in self._children:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for child in self._children:
            left = max(0.0, deadline - time.monotonic())
            try:
                child.proc.wait(left)
            except subprocess.TimeoutExpired:
                self._say(f"worker {child.index} (pid {child.proc.pid}) did not stop within"
                          f" {GRACE_SECONDS:g} s; killing it")
                child.proc.kill()
                child.proc.wait()
        self._children = []


def child_environment(api_key: str) -> dict[str, str]:
    """The children's environment: this one, with the server's key (never on a command line,
    where other users of the machine could read it)."""
    return {**os.environ, KAIZEN_API_KEY: api_key}
