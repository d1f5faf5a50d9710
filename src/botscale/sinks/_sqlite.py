"""SQLiteSink: the embedded default sink (WAL, one transaction per batch)."""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Final, Literal

from .._errors import ConfigurationError
from .._validation import check_non_negative
from ._common import Columns, Row, parse_columns, quote_identifier

__all__ = ["SQLiteSink"]

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


class SQLiteSink:
    """Write batches of rows into a SQLite table: one transaction and one ``executemany`` each.

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
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
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
        marks = ", ".join("?" for _ in self.columns)
        self._insert = f"INSERT INTO {quote_identifier(self.table)} ({quoted}) VALUES ({marks})"

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
                conn.executemany(self._insert, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

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
