"""SQLiteSink: the embedded default sink (WAL, one transaction per batch)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Final, Literal

from .._errors import ConfigurationError
from .._retry import retry
from .._validation import check_non_negative
from ._common import Columns, Row, parse_columns, quote_identifier

__all__ = ["SQLiteSink"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
_ROWS_PER_STATEMENT: Final = 64
"""Rows per multi-row INSERT: most of the gain over ``executemany`` (measured: 32
rows ~90 %, 64 ~95 % of the best), and at most 64 distinct statements, which
sqlite3's per-connection cache of 128 prepared statements keeps."""
_FALLBACK_VARIABLE_LIMIT: Final = 999
"""SQLite's lowest default bound on ``?`` per statement (Python < 3.11 cannot ask)."""


def _is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (busy), which waiting can cure."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


def _enable_wal(conn: sqlite3.Connection, busy: float, name: str) -> object:
    """Switch ``conn``'s database to WAL; return the journal mode SQLite reports.

    The switch needs an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting its busy timeout, when another process
    switches the same new database at that moment (several bot processes
    starting together): retried for up to ``busy`` seconds.
    """
    policy = retry(
        on=_is_locked, attempts=None, timeout=busy, initial=0.01, max_wait=0.1, name=name
    )
    return policy.call(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])


class SQLiteSink:
    """Write batches of rows into a SQLite table, one transaction each.

    Rows go in as multi-row ``INSERT ... VALUES (...), (...)`` statements of
    up to 64 rows: about twice the throughput of ``executemany``, which runs
    the statement, and releases and retakes the GIL, once per row (a batch of
    50 is one statement instead of 50 steps, so the writer's thread also
    waits far less for a busy event loop's GIL).  A batch holding anything
    but tuples or lists of the right length goes through ``executemany``
    instead, so SQLite reports the bad row exactly as it would have.

    The database runs in WAL mode (readers never block the writer) with the
    given ``synchronous`` level: ``NORMAL`` (the default) is durable against
    a crashed process, ``FULL`` also against a power cut, at a higher cost
    per transaction, which batching amortises.  The connection may be used
    from any thread (the writers call it from one worker thread); calls are
    serialised by a lock.

    With a writer, a failed batch is dead-lettered to ``<path>.dead-letters.jsonl``
    (see :attr:`dead_letter_path`).

    Args:
        path: the database file (created if missing); ``":memory:"`` for tests.
        table: the table to insert into.
        columns: column names, or a mapping of name to SQL type used when
            the table is created (``{"user_id": "INTEGER", "ok": "INTEGER"}``).
        create: create the table if it does not exist (default ``True``).
        synchronous: ``"OFF"``, ``"NORMAL"``, ``"FULL"`` or ``"EXTRA"``.
        busy_timeout: seconds to wait for another connection's lock.

    Raises:
        ValueError: bad ``table``/``columns``/``synchronous``.
        sqlite3.Error: the database cannot be opened or the table created.
    """

    ordered: bool = True
    permanent_errors: tuple[type[BaseException], ...] = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.ProgrammingError,
        sqlite3.InterfaceError,
        TypeError,
        ValueError,
        OverflowError,
    )
    """Errors retrying cannot fix: a batch failing with one is split to isolate the bad rows."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str,
        columns: Columns,
        *,
        create: bool = True,
        synchronous: Synchronous = "NORMAL",
        busy_timeout: float = 5.0,
    ) -> None:
        self.table, self.columns, types = parse_columns(table, columns)
        level = str(synchronous).upper()
        if level not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.synchronous: str = level
        busy = check_non_negative("busy_timeout", busy_timeout)
        self.path = os.fspath(path)
        self.name = f"SQLiteSink({self.table!r})"
        memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self.dead_letter_path: str | None = None if memory else self.path + ".dead-letters.jsonl"
        """Where the writers' default dead-letter file goes (``None`` for ``:memory:``)."""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=busy, isolation_level=None, check_same_thread=False
        )
        try:
            if not memory:
                mode = _enable_wal(self._conn, busy, self.name)
                if str(mode).lower() != "wal":  # pragma: no cover - a filesystem without WAL
                    raise sqlite3.OperationalError(f"cannot enable WAL on {self.path}: {mode}")
            self._conn.execute(f"PRAGMA synchronous={level}")
            quoted = ", ".join(quote_identifier(c) for c in self.columns)
            if create:
                defs = ", ".join(
                    f"{quote_identifier(c)} {types[c]}" if c in types else quote_identifier(c)
                    for c in self.columns
                )
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.table)} ({defs})"
                )
        except BaseException:
            self._conn.close()
            raise
        self._head = f"INSERT INTO {quote_identifier(self.table)} ({quoted}) VALUES "
        self._group = "(" + ", ".join("?" for _ in self.columns) + ")"
        self._insert = self._head + self._group
        self._width = len(self.columns)
        self._statements: dict[int, str] = {}
        getlimit = getattr(self._conn, "getlimit", None)
        limit = (
            _FALLBACK_VARIABLE_LIMIT
            if getlimit is None
            else getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[attr-defined,unused-ignore]
        )
        self._chunk = min(_ROWS_PER_STATEMENT, limit // self._width)

    def __call__(self, rows: list[Row]) -> None:
        """Insert ``rows`` in one transaction; on any error nothing is inserted.

        Raises:
            sqlite3.Error: the insert failed (rolled back).
            RuntimeError: the sink is closed.
        """
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError(f"{self.name} is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._insert_rows(conn, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _insert_rows(self, conn: sqlite3.Connection, rows: Sequence[Row]) -> None:
        """Insert ``rows`` in multi-row statements, or by ``executemany`` if any row is odd."""
        width = self._width
        chunk = self._chunk
        n = len(rows)
        if chunk < 2 or n < 2:
            conn.executemany(self._insert, rows)
            return
        for row in rows:  # flattening trusts every row's shape: check it first
            kind = type(row)
            if (kind is not tuple and kind is not list) or len(row) != width:
                conn.executemany(self._insert, rows)
                return
        flat = list(itertools.chain.from_iterable(rows))
        statements = self._statements
        done = 0
        while done < n:
            size = min(chunk, n - done)
            sql = statements.get(size)
            if sql is None:
                sql = statements[size] = self._head + ", ".join([self._group] * size)
            conn.execute(sql, flat[done * width : (done + size) * width])
            done += size

    def close(self) -> None:
        """Close the connection (harmless if already closed)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __repr__(self) -> str:
        return (
            f"SQLiteSink({self.path!r}, {self.table!r}, {list(self.columns)!r}, "
            f"synchronous={self.synchronous!r})"
        )
