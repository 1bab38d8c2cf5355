"""PostgreSQL storage: the `Store`'s own SQL, run on PostgreSQL through a small seam.

There is one store, `kaizen_server.storage.sqlite.Store`; `PostgresStore` is a subclass that
changes where its connections come from and nothing of what it decides. The seam is
`PgConnection`, which quacks like the part of ``sqlite3.Connection`` the store uses:

- ``execute`` / ``executemany`` take the store's SQL with ``?`` placeholders; `translate`
  turns it into PostgreSQL's once per distinct string (cached): ``%s`` placeholders, and the
  few SQLite spellings the store uses rewritten (``INSERT OR IGNORE`` → ``ON CONFLICT DO
  NOTHING``, ``INDEXED BY`` dropped, ``json_extract`` → ``->>``, two-argument ``MAX`` →
  ``GREATEST``). ``executemany`` of a batch insert inside a write goes through ``COPY``
  (with an ``ON CONFLICT`` clause: ``COPY`` into a temporary table, then one ``INSERT ...
  SELECT``), anything else runs in a libpq pipeline; either way inside the batch's one
  transaction.
- rows give name and index access, as ``sqlite3.Row`` does; ``numeric`` results (``SUM`` of
  integers) come back as ``int``/``float``, as SQLite gives them.
- a write is ``BEGIN`` plus a transaction-scoped advisory lock: writers take turns across
  every process on the database, exactly what SQLite's ``BEGIN IMMEDIATE`` gives, so the
  store's read-then-write steps mean the same on both engines.
- errors map to `kaizen_server.storage.errors`: a full disk (``53100``) is `StoreFull`, a
  unique violation `Conflict`, bytes PostgreSQL cannot keep in text (NUL) `Invalid`.

Connections come from a psycopg pool (``psycopg_pool``); each thread keeps the one it took
until `release_thread`, like the SQLite store's per-thread connections, in autocommit mode
outside writes. A database URL's password never appears in a repr, a log line or an error:
`redact_url` replaces it, and connection errors are re-raised without their cause.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import urllib.parse
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, cast

import psycopg
import psycopg.errors
import psycopg_pool
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus

from kaizen_server.storage import postgres_schema
from kaizen_server.storage.errors import Conflict, DatabaseUnreachable, Invalid, StoreFull
from kaizen_server.storage.migrations import Step
from kaizen_server.storage.sqlite import Store

__all__ = [
    "COPY_MIN_ROWS",
    "DEFAULT_MAX_CONNECTIONS",
    "DatabaseUnreachable",
    "PgConnection",
    "PgRow",
    "PostgresStore",
    "connect",
    "read_status",
    "redact_url",
    "translate",
    "upgrade",
]

logger = logging.getLogger("kaizen_server.storage.postgres")

DEFAULT_MAX_CONNECTIONS = 64
"""Connections one server process keeps at most (one per thread that touches the store)."""

CONNECT_TIMEOUT = 10.0
"""Seconds to wait for the database at start before giving up."""

WRITE_LOCK_KEY = 0x6B61697A656E
"""The advisory lock every write transaction takes (``kaizen`` in ASCII)."""

_BEGIN = f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"


def redact_url(url: str) -> str:
    """*url* with its password (in the user part or a ``password=`` parameter) as ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "postgresql://***"
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            user = user.split(":", 1)[0] + ":***"
        netloc = f"{user}@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else f"{k}={v}"
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _password(url: str) -> str | None:
    try:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        return parts.password or query.get("password")
    except ValueError:
        return None


def _scrub(text: str, url: str) -> str:
    secret = _password(url)
    if secret:
        text = text.replace(secret, "***").replace(urllib.parse.quote(secret), "***")
    return text


# --- SQL translation -------------------------------------------------------------------

_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.I)
_INDEXED_BY = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.I)
_JSON_EXTRACT = re.compile(r"\bjson_extract\(\s*(\w+)\s*,\s*'\$\.(\w+)'\s*\)", re.I)
_MAX2 = re.compile(r"\bMAX\(\s*([\w.]+)\s*,\s*([\w.]+)\s*\)", re.I)
_INSERT = re.compile(
    r"^\s*INSERT\s+INTO\s+(?P<table>\w+)\s*\((?P<columns>[\w\s,]+)\)\s*VALUES\s*"
    r"\((?:\s*\?\s*,)*\s*\?\s*\)\s*(?P<conflict>ON\s+CONFLICT\b.*)?$", re.I | re.S)
_STAGING: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
"""The temporary staging tables each connection has made (they live as long as it)."""
COPY_MIN_ROWS = 32
"""Batch inserts of at least this many rows (inside a write) go through ``COPY``."""
_CACHE: dict[str, str] = {}
_CACHE_MAX = 4096


def translate(sql: str) -> str:
    """The PostgreSQL text of the store's SQLite statement *sql* (cached per string)."""
    done = _CACHE.get(sql)
    if done is not None:
        return done
    out = sql
    if _OR_IGNORE.search(out):
        out = _OR_IGNORE.sub("INSERT INTO", out).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    out = _INDEXED_BY.sub("", out)
    out = _JSON_EXTRACT.sub(r"((\1)::jsonb ->> '\2')", out)
    out = _MAX2.sub(r"GREATEST(\1, \2)", out)
    chars: list[str] = []
    quoted = False
    for ch in out:
        if ch == "'":
            quoted = not quoted
        if ch == "%":
            chars.append("%%")
        elif ch == "?" and not quoted:
            chars.append("%s")
        else:
            chars.append(ch)
    done = "".join(chars)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[sql] = done
    return done


# --- rows and values --------------------------------------------------------------------


class PgRow:
    """One result row: ``row["name"]`` and ``row[0]``, like ``sqlite3.Row``."""

    __slots__ = ("_names", "_values")

    def __init__(self, values: Sequence[Any], names: dict[str, int]) -> None:
        self._values = values
        self._names = names

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._names)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))!r})"


def _row_factory(cursor: Any) -> Any:
    description = cursor.description
    names = {} if description is None else {c.name: i for i, c in enumerate(description)}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(values, names)

    return make


class _NumberLoader(Loader):
    """``numeric`` (what PostgreSQL's SUM of integers gives) as ``int``, else ``float``."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumberLoader)
    conn.row_factory = _row_factory


# --- the connection seam -----------------------------------------------------------------


class PgConnection:
    """A psycopg connection seen as the store's ``sqlite3.Connection``: ``?`` placeholders,
    rows with names, ``in_transaction``."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        """Run *sql* (the store's dialect) with *params*; the cursor has the rows."""
        cursor = self.raw.cursor()
        try:
            cursor.execute(translate(sql), tuple(params))
        except psycopg.DataError as exc:
            raise _mapped(exc) or exc from None
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """Run *sql* once per row of *rows*: a batch insert of `COPY_MIN_ROWS` rows or more
        inside a transaction goes through ``COPY`` (see `_copy_insert`), anything else is
        pipelined (one round trip for the batch)."""
        cursor = self.raw.cursor()
        rows = list(rows)
        if not rows:
            return cursor
        insert = _INSERT.match(sql) if len(rows) >= COPY_MIN_ROWS else None
        try:
            if insert is not None and self.in_transaction:
                return self._copy_insert(cursor, insert, rows)
            cursor.executemany(translate(sql), rows)
        except psycopg.DataError as exc:
            raise _mapped(exc) or exc from None
        return cursor

    def _copy_insert(self, cursor: psycopg.Cursor[Any], insert: re.Match[str],
                     rows: list[Sequence[Any]]) -> psycopg.Cursor[Any]:
        """``INSERT INTO t (cols) VALUES (?, ...) [ON CONFLICT ...]`` of many rows, as
        PostgreSQL's fastest path: ``COPY`` straight into *t* without a conflict clause; with
        one, ``COPY`` into a temporary table (kept per connection, emptied at commit) and one
        ``INSERT ... SELECT ... ORDER BY`` the rows' order, with the same clause. Same rows,
        same order of ``seq``, same ``rowcount`` as the statement run once per row."""
        table, columns, conflict = insert["table"], insert["columns"], insert["conflict"]
        if not conflict:
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return cursor
        staging = f"kaizen_copy_{table}"
        made = _STAGING.setdefault(self.raw, set())
        if staging not in made:
            cursor.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS AS"
                f" SELECT 0::bigint AS kaizen_n, {columns} FROM {table} WITH NO DATA")
            made.add(staging)
        with cursor.copy(f"COPY {staging} (kaizen_n, {columns}) FROM STDIN") as copy:
            for n, row in enumerate(rows):
                copy.write_row((n, *row))
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging}"
                       f" ORDER BY kaizen_n {translate(conflict)}")
        self.raw.execute(f"DELETE FROM {staging}")  # for a second batch in this transaction
        return cursor  # its rowcount: the rows inserted

    @property
    def in_transaction(self) -> bool:
        """True inside a transaction (also a failed one that still needs its ROLLBACK)."""
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def close(self) -> None:
        """Close the connection."""
        self.raw.close()


def connect(url: str, *, timeout: float = CONNECT_TIMEOUT) -> PgConnection:
    """One connection to *url* in autocommit mode (for tools such as ``kaizen db``); raises
    `DatabaseUnreachable` without the password."""
    try:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
    except psycopg.Error as exc:
        raise DatabaseUnreachable(
            f"cannot connect to {redact_url(url)}: {_scrub(str(exc).strip(), url)}"
        ) from None
    _configure(raw)
    return PgConnection(raw)


def read_status(url: str) -> postgres_schema.Status:
    """Where the database at *url* stands (nothing is changed)."""
    conn = connect(url)
    try:
        return postgres_schema.status(conn.raw)
    finally:
        conn.close()


def upgrade(url: str) -> tuple[list[Step], postgres_schema.Status]:
    """Run the pending schema steps of the database at *url* in one transaction (under the
    writers' lock, so a running server's writes wait); return the steps run and the status."""
    conn = connect(url)
    try:
        conn.raw.execute(_BEGIN, prepare=False)
        try:
            ran = postgres_schema.upgrade(conn.raw, adapted=conn)
            conn.raw.execute("COMMIT")
        except BaseException:
            if not conn.raw.broken and conn.in_transaction:
                conn.raw.execute("ROLLBACK")
            raise
        return ran, postgres_schema.status(conn.raw)
    finally:
        conn.close()


def _mapped(exc: BaseException) -> Exception | None:
    """The storage error a driver error means (``None``: raise it as it is)."""
    if isinstance(exc, psycopg.errors.DiskFull | psycopg.errors.InsufficientResources):
        return StoreFull(
            "the server's database is full (PostgreSQL: disk full); this write was not"
            " stored. Free disk space on the database server; reads still work."
        )
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return Conflict("the write clashes with a stored record (a unique value is taken)")
    if isinstance(exc, psycopg.errors.CharacterNotInRepertoire) or (
        isinstance(exc, psycopg.DataError) and "NUL" in str(exc)  # psycopg refuses to send it
    ):
        return Invalid("a text value contains a NUL character (U+0000), which PostgreSQL"
                       " cannot store in text")
    return None


class PostgresStore(Store):
    """The store on a PostgreSQL database named by a ``postgresql://`` URL.

    Example::

        store = PostgresStore("postgresql://kaizen@db.internal/kaizen")
        store.create_task(TaskCreateRequest(name="summarize"))
        store.close()
    """

    update_returning = True

    def __init__(self, url: str, *, migrate: bool = True,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        """Connect (raising `DatabaseUnreachable` when the server cannot be reached) and run
        the pending schema steps; with *migrate* false raise `SchemaOutdated` instead."""
        self.url = redact_url(url)
        """The database's URL without its password."""
        connect(url).close()  # a clear error now, instead of a pool that retries quietly
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            url, min_size=1, max_size=max_connections, open=False, configure=_configure,
            kwargs={"autocommit": True}, check=psycopg_pool.ConnectionPool.check_connection,
            name="kaizen-store",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            raise DatabaseUnreachable(f"cannot connect to {self.url}") from None
        try:
            super().__init__(self.url, migrate=migrate)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore(url={self.url!r})"

    # --- connections (overrides of the SQLite store's) ---------------------------------

    def _pg(self) -> PgConnection:
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None and (conn.raw.broken or conn.raw.closed):
            self._give_back(conn)
            conn = None
        if conn is None:
            if self._closed:
                raise RuntimeError("The store is closed.")
            conn = PgConnection(self._pool.getconn())
            self._local.conn = conn
            with self._conns_lock:
                self._conns[threading.get_ident()] = cast(Any, conn)
        return conn

    def _conn(self) -> Any:
        return self._pg()

    def _give_back(self, conn: PgConnection) -> None:
        self._local.conn = None
        with self._conns_lock:
            self._conns.pop(threading.get_ident(), None)
        with contextlib.suppress(Exception):
            self._pool.putconn(conn.raw)

    def release_thread(self) -> None:
        """Give the calling thread's connection back to the pool, if it has one."""
        conn: PgConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._give_back(conn)

    def close(self) -> None:
        """Close every connection and the pool; the store cannot be used afterwards."""
        self._closed = True
        with self._conns_lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            with contextlib.suppress(Exception):
                cast(PgConnection, conn).close()
        with contextlib.suppress(Exception):
            self._pool.close()
        self._local = threading.local()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        conn = self._pg()
        with self._write_lock:
            conn.raw.execute(_BEGIN, prepare=False)
            try:
                yield conn
                conn.raw.execute("COMMIT")
            except BaseException as exc:
                if not conn.raw.broken and conn.in_transaction:
                    with contextlib.suppress(psycopg.Error):
                        conn.raw.execute("ROLLBACK")
                _STAGING.pop(conn.raw, None)  # staging tables made in it are gone too
                mapped = _mapped(exc)
                if mapped is not None:
                    raise mapped from None
                raise

    def _migrate(self, migrate: bool) -> None:
        with self._write() as conn:
            if migrate:
                ran = postgres_schema.upgrade(conn.raw, adapted=conn)
                if ran:
                    logger.info("database %s: schema steps run: %s", self.url,
                                ", ".join(step.filename for step in ran))
            else:
                postgres_schema.require_current(conn.raw, self.url)
