"""Durable spool: batches that could not be delivered, kept on disk and replayed later.

Each failed batch (the encoded bytes of an `IngestRequest`) becomes one file in the spool
directory. Files are written atomically (a temporary file, then ``os.replace``) and named so
that sorting the names gives the oldest batch first. Several processes may share one
directory: a file is *claimed* before it is replayed (an exclusive ``flock`` on POSIX, a
rename elsewhere), so exactly one process replays it; a process that dies while holding a
claim releases it with its file descriptors. A file that does not decode is moved aside to
``corrupt/`` and logged; it never stops the replay of the others. The directory is bounded
in total size: a batch that would exceed the bound is dropped and counted.

`kaizen_sdk.delivery` writes to it when a batch fails after its retries and replays it when
a pipeline starts and whenever a send succeeds again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from typing import IO

import msgspec

from kaizen_sdk.models import IngestRequest, decode

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_SPOOL_MAX_BYTES",
    "ReplayResult",
    "Spool",
    "SpoolClaim",
]

_log = logging.getLogger("kaizen_sdk.spool")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_SUFFIX = ".batch"
_PART = ".part"
_CLAIMED = ".claimed"
_CORRUPT_DIR = "corrupt"
_STALE_SECONDS = 3600.0
_SIZE_RESCAN_SECONDS = 5.0
_DROP_LOG_INTERVAL = 60.0


def _records(batch: IngestRequest) -> int:
    return len(batch.traces) + len(batch.feedback)


class SpoolClaim:
    """One spool file held by this process until `done`, `release` or `set_aside`.

    ``data`` holds the file's bytes. Exactly one of the three endings should be called;
    the later ones do nothing.
    """

    __slots__ = ("_fh", "_finished", "_path", "_spool", "data", "name")

    def __init__(self, spool: Spool, path: str, fh: IO[bytes] | None, data: bytes) -> None:
        self._spool = spool
        self._path = path
        self._fh = fh
        self._finished = False
        self.name = os.path.basename(path)
        self.data = data

    def done(self) -> None:
        """The batch was delivered: delete the file."""
        if self._finished:
            return
        self._finished = True
        try:
            os.unlink(self._path)
        except OSError as exc:
            # Remembered, so this process never sends it again (a read-only mount).
            self._spool._undeletable.add(self.name)
            self._spool._warn(
                "delete", "Could not delete delivered spool file %s (%s); it is not sent "
                "again by this process.", self.name, exc,
            )
        self._close()
        self._spool._forget(len(self.data))

    def release(self) -> None:
        """The batch could not be delivered yet: keep the file for a later replay."""
        if self._finished:
            return
        self._finished = True
        if self._fh is None:  # rename claim: put the file back under its own name
            try:
                os.replace(self._path, self._path[: -len(_CLAIMED)])
            except OSError as exc:
                self._spool._warn("release", "Could not release spool file %s: %s",
                                  self.name, exc)
        self._close()

    def set_aside(self, reason: str) -> None:
        """The file is unreadable: move it to ``corrupt/`` and log why."""
        if self._finished:
            return
        self._finished = True
        target_dir = os.path.join(self._spool.directory, _CORRUPT_DIR)
        name = self.name[: -len(_CLAIMED)] if self.name.endswith(_CLAIMED) else self.name
        try:
            os.makedirs(target_dir, exist_ok=True)
            os.replace(self._path, os.path.join(target_dir, name))
        except OSError as exc:
            self._spool._undeletable.add(self.name)  # never decoded again by this process
            self._spool._warn("aside", "Could not move corrupt spool file %s aside: %s",
                              name, exc)
        else:
            _log.warning("Spool file %s is corrupt (%s); moved to %s/.", name, reason, _CORRUPT_DIR)
        self._close()
        self._spool._forget(len(self.data), corrupt=True)

    def _close(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing also drops the flock
            self._fh = None


class ReplayResult(msgspec.Struct, kw_only=True):
    """What one `Spool.replay` pass did."""

    batches: int = 0
    records: int = 0
    corrupt: int = 0
    failed: bool = False


class Spool:
    """A directory of undelivered batches, oldest first, shared safely between processes.

    Example::

        spool = Spool("/var/spool/kaizen")
        spool.append(encode(batch), records=len(batch.traces) + len(batch.feedback))
        spool.replay(send)       # send(batch) -> True when delivered

    Parameters:
        directory: created when missing (also when it is removed while in use).
        max_bytes: bound on the total size of the spooled files; a batch that would pass
            it is dropped (``dropped_batches``/``dropped_records`` count them).
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 0) -> None:
        self.directory = os.fspath(directory)
        self.max_bytes = max_bytes if max_bytes > 0 else DEFAULT_SPOOL_MAX_BYTES
        os.makedirs(self.directory, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._last_ns = 0
        self._size = 0
        self._size_at = -_SIZE_RESCAN_SECONDS
        self._drop_logged_at = -_DROP_LOG_INTERVAL
        self.appended_batches = 0
        self.dropped_batches = 0
        self.dropped_records = 0
        self.replayed_batches = 0
        self.corrupt_files = 0
        # delivered (or corrupt) files that could not be removed: skipped from now on
        self._undeletable: set[str] = set()
        self._skipped: set[str] = set()  # entries that are not regular files (logged once)
        self._warned_at: dict[str, float] = {}
        self._clean_stale_parts()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def after_in_child() -> None:
                spool = ref()
                if spool is not None:  # a lock held by a parent thread would never be freed
                    spool._lock = threading.Lock()

            os.register_at_fork(after_in_child=after_in_child)

    def __repr__(self) -> str:
        return f"Spool({self.directory!r}, max_bytes={self.max_bytes})"

    def _warn(self, key: str, message: str, *args: object) -> None:
        """Log a warning about the spool at most once a minute per kind."""
        now = time.monotonic()
        last = self._warned_at.get(key)
        if last is not None and now - last < _DROP_LOG_INTERVAL:
            return
        self._warned_at[key] = now
        _log.warning(message, *args)

    # --- writing -----------------------------------------------------------------------

    def append(self, data: bytes, *, records: int = 0) -> bool:
        """Store one batch durably; return False when it was dropped (size bound or I/O error).

        *records* is only used to count drops. Never raises.
        """
        with self._lock:
            size = self._total_size()
            if size + len(data) > self.max_bytes:
                self.dropped_batches += 1
                self.dropped_records += records
                now = time.monotonic()
                if now - self._drop_logged_at >= _DROP_LOG_INTERVAL:
                    self._drop_logged_at = now
                    _log.warning(
                        "Spool %s is full (%d of %d bytes): dropping batches "
                        "(%d records dropped so far).",
                        self.directory, size, self.max_bytes, self.dropped_records,
                    )
                return False
            name = self._next_name()
            self._size += len(data)
        final = os.path.join(self.directory, name)
        part = final + _PART
        try:
            try:
                self._write(part, final, data)
            except FileNotFoundError:
                if os.path.isdir(self.directory):
                    raise
                # The directory was removed while running (a cleanup job, a tmp reaper):
                # make it again, and count its size afresh.
                os.makedirs(self.directory, exist_ok=True)
                with self._lock:
                    self._size = len(data)
                    self._size_at = time.monotonic()
                _log.warning("Spool directory %s was removed; created it again.",
                             self.directory)
                self._write(part, final, data)
        except OSError as exc:
            with self._lock:
                self._size -= len(data)
                self.dropped_batches += 1
                self.dropped_records += records
            self._warn("write", "Could not write spool file in %s: %s", self.directory, exc)
            with contextlib.suppress(OSError):
                os.unlink(part)
            return False
        with self._lock:
            self.appended_batches += 1
        return True

    @staticmethod
    def _write(part: str, final: str, data: bytes) -> None:
        with open(part, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, final)

    def _next_name(self) -> str:
        # Wall-clock nanoseconds first (so names sort oldest first across processes), strictly
        # increasing within this process, then pid and a counter to keep names unique.
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        return f"{now:020d}-{os.getpid()}-{next(self._seq):08d}-{uuid.uuid4().hex[:8]}{_SUFFIX}"

    # --- reading -----------------------------------------------------------------------

    def is_empty(self) -> bool:
        """True when no batch file is waiting for this process (skipped entries aside)."""
        return not self.pending()

    def pending(self) -> list[str]:
        """Names of the spooled files waiting to be sent, oldest first.

        Left out: files claimed by a rename right now, files this process delivered but could
        not delete, and entries that are not regular files (a FIFO, a symlink, a directory
        named ``*.batch``: logged once each, since opening one could block the replay).
        """
        names: list[str] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    name = entry.name
                    if not name.endswith(_SUFFIX) or name in self._undeletable:
                        continue
                    try:
                        regular = entry.is_file(follow_symlinks=False)
                    except OSError:
                        regular = False
                    if not regular:
                        if name not in self._skipped:
                            self._skipped.add(name)
                            _log.warning(
                                "Spool entry %s in %s is not a regular file; it is skipped.",
                                name, self.directory,
                            )
                        continue
                    names.append(name)
        except OSError:
            return []
        names.sort()
        return names

    def claim(self) -> SpoolClaim | None:
        """Claim the oldest file nobody else holds; None when there is none.

        The caller ends the claim with `SpoolClaim.done`, ``release`` or ``set_aside``.
        """
        for name in self.pending():
            claimed = self._claim_file(os.path.join(self.directory, name))
            if claimed is not None:
                return claimed
        return None

    def claims(self) -> Iterator[SpoolClaim]:
        """Yield claims on the pending files, oldest first, skipping those held elsewhere.

        The caller must end each claim (`SpoolClaim.done`, ``release`` or ``set_aside``)
        before asking for the next; an abandoned claim is released when the generator closes.
        """
        for name in self.pending():
            claimed = self._claim_file(os.path.join(self.directory, name))
            if claimed is None:
                continue
            try:
                yield claimed
            finally:
                claimed.release()

    def _claim_file(self, path: str) -> SpoolClaim | None:
        if fcntl is None:  # pragma: no cover - exercised via monkeypatch in tests
            return self._claim_by_rename(path)
        try:
            # O_NOFOLLOW | O_NONBLOCK: an entry swapped for a symlink or FIFO never blocks us
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            fh = os.fdopen(fd, "rb")
        except OSError:
            return None  # already replayed or moved by someone else
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return None  # another process holds it
        try:
            # Between our open() and flock() the holder may have finished with the file:
            # it is ours only if the name still points at the inode we locked.
            mine = os.fstat(fh.fileno())
            now = os.stat(path)
            if (mine.st_ino, mine.st_dev) != (now.st_ino, now.st_dev):
                fh.close()
                return None
            data = fh.read()
        except OSError:
            fh.close()
            return None
        return SpoolClaim(self, path, fh, data)

    def _claim_by_rename(self, path: str) -> SpoolClaim | None:
        claimed = path + _CLAIMED
        try:
            os.rename(path, claimed)  # atomic: exactly one process wins
        except OSError:
            return None
        try:
            with open(claimed, "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        return SpoolClaim(self, claimed, None, data)

    def replay(
        self,
        send: Callable[[IngestRequest], bool],
        *,
        max_batches: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ReplayResult:
        """Re-send spooled batches oldest first until one fails, none are left, or a limit.

        *send* returns True when the batch was delivered (its file is then deleted) and
        False when it should stay spooled (the pass stops there, to keep the order). A file
        that does not decode as an `IngestRequest` is set aside. Never raises for a bad file;
        an exception from *send* counts as a failure.
        """
        result = ReplayResult()
        for claimed in self.claims():
            if max_batches is not None and result.batches >= max_batches:
                break
            if should_stop is not None and should_stop():
                break
            try:
                batch = decode(claimed.data, IngestRequest)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                claimed.set_aside(str(exc) or type(exc).__name__)
                result.corrupt += 1
                continue
            try:
                ok = send(batch)
            except Exception:
                _log.warning("Replaying spool file %s failed.", claimed.name, exc_info=True)
                ok = False
            if not ok:
                result.failed = True
                break
            claimed.done()
            result.batches += 1
            result.records += _records(batch)
            with self._lock:
                self.replayed_batches += 1
        return result

    # --- size accounting ---------------------------------------------------------------

    def size_bytes(self) -> int:
        """Total size of the spooled files (a fresh scan of the directory)."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.name.endswith((_SUFFIX, _CLAIMED, _PART)):
                        with contextlib.suppress(OSError):
                            total += entry.stat().st_size
        except OSError:
            return 0
        return total

    def _total_size(self) -> int:
        # Other processes write to the same directory: rescan now and then, not on every append.
        now = time.monotonic()
        if now - self._size_at >= _SIZE_RESCAN_SECONDS:
            self._size = self.size_bytes()
            self._size_at = now
        return self._size

    def _forget(self, nbytes: int, *, corrupt: bool = False) -> None:
        with self._lock:
            self._size = max(0, self._size - nbytes)
            if corrupt:
                self.corrupt_files += 1

    def _clean_stale_parts(self) -> None:
        # A writer that died between write and rename leaves a .part file behind; where claims
        # are renames, a replayer that died leaves a .claimed file: both are old after an hour.
        cutoff = time.time() - _STALE_SECONDS
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        if entry.stat().st_mtime >= cutoff:
                            continue
                        if entry.name.endswith(_PART):
                            os.unlink(entry.path)
                        elif entry.name.endswith(_CLAIMED):
                            os.replace(entry.path, entry.path[: -len(_CLAIMED)])
                    except OSError:
                        pass
        except OSError:
            pass


DEFAULT_SPOOL_MAX_BYTES = 100 * 1024 * 1024
"""Default bound on the spool directory's total size (100 MiB)."""
