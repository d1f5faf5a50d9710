"""PostgresSink: batches into PostgreSQL with asyncpg (extra ``postgres``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from .._compat import require
from .._errors import ConfigurationError
from .._validation import check_positive_int
from ._common import Columns, Row, parse_columns, quote_identifier

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresSink"]

Method = Literal["copy", "executemany"]


class PostgresSink:
    """Write batches of rows into a PostgreSQL table, one transaction per batch.

    ``method="copy"`` (the default) streams each batch with
    ``copy_records_to_table`` (binary COPY, the fastest way in);
    ``"executemany"`` runs a prepared ``INSERT`` per row in the same
    transaction (for tables with rewrite rules, which COPY ignores, or roles
    not allowed to COPY).

    Give it a DSN and it opens its own pool on first use (in the event loop
    that writes; a ``BatchWriter`` uses its private loop) and closes it when
    the writer closes; give it an ``asyncpg`` pool or connection and it is
    yours to close.  Values must have the column's Python type (``int`` for
    ``bigint``, ``bool`` for ``boolean``): asyncpg encodes in binary and does
    not cast strings.

    Args:
        dsn_or_pool: a ``postgresql://`` DSN, an ``asyncpg.Pool`` or an
            ``asyncpg.Connection``.
        table: the table to insert into.
        columns: column names, or a mapping of name to SQL type (needed for
            ``create=True``): ``{"user_id": "bigint", "ok": "boolean"}``.
        schema: the table's schema (default: the search path).
        create: create the table if it does not exist (default ``False``).
        method: ``"copy"`` or ``"executemany"``.
        pool_size: the most connections of a pool opened from a DSN.

    Raises:
        ImportError: asyncpg is not installed (``pip install 'botscale[postgres]'``).
        ValueError: bad ``table``/``columns``/``method``, or ``create`` without types.
    """

    ordered: bool = True

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool | asyncpg.Connection,
        table: str,
        columns: Columns,
        *,
        schema: str | None = None,
        create: bool = False,
        method: Method = "copy",
        pool_size: int = 2,
    ) -> None:
        apg = require("asyncpg", "postgres", feature="PostgresSink")
        self.table, self.columns, self._types = parse_columns(table, columns)
        given: object = schema
        if given is not None and not (isinstance(given, str) and given):
            raise ConfigurationError(f"schema must be a non-empty str or None, got {schema!r}")
        if method not in ("copy", "executemany"):
            raise ConfigurationError(f"method must be 'copy' or 'executemany', got {method!r}")
        if create and len(self._types) != len(self.columns):
            raise ConfigurationError(
                "create=True needs every column's SQL type: pass columns as a mapping, "
                'e.g. {"user_id": "bigint", "ok": "boolean"}'
            )
        self.schema = schema
        self.method: Method = method
        self.create = bool(create)
        self.pool_size = check_positive_int("pool_size", pool_size)
        self.name = f"PostgresSink({self.table!r})"
        self.permanent_errors: tuple[type[BaseException], ...] = (
            apg.exceptions.DataError,
            apg.exceptions.IntegrityConstraintViolationError,
            apg.exceptions.SyntaxOrAccessError,
            TypeError,
            ValueError,
            OverflowError,
        )
        """Errors retrying cannot fix: a batch failing with one is split to isolate bad rows."""
        self._asyncpg = apg
        self._dsn: str | None = None
        self._target: Any = None
        if isinstance(dsn_or_pool, str):
            self._dsn = dsn_or_pool
        elif isinstance(dsn_or_pool, (apg.Pool, apg.Connection)):
            self._target = dsn_or_pool
        else:
            raise TypeError(
                "dsn_or_pool must be a DSN str, an asyncpg.Pool or an asyncpg.Connection, "
                f"got {type(dsn_or_pool).__name__}"
            )
        qualified = quote_identifier(self.table)
        if schema is not None:
            qualified = f"{quote_identifier(schema)}.{qualified}"
        self._qualified = qualified
        names = ", ".join(quote_identifier(c) for c in self.columns)
        marks = ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))
        self._insert = f"INSERT INTO {qualified} ({names}) VALUES ({marks})"
        self._ready = False
        self._lock: asyncio.Lock | None = None
        self._owned: Any = None

    async def _connection_source(self) -> Any:
        if self._ready:
            return self._target
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._ready:
                if self._target is None:
                    self._owned = await self._asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self.pool_size
                    )
                    self._target = self._owned
                if self.create:
                    defs = ", ".join(
                        f"{quote_identifier(c)} {self._types[c]}" for c in self.columns
                    )
                    await self._target.execute(
                        f"CREATE TABLE IF NOT EXISTS {self._qualified} ({defs})"
                    )
                self._ready = True
        return self._target

    async def __call__(self, rows: list[Row]) -> None:
        """Insert ``rows`` in one transaction; on any error nothing is inserted.

        Raises:
            asyncpg.PostgresError, OSError: the insert failed (rolled back).
            TypeError, ValueError: a value does not fit its column's type.
        """
        source = await self._connection_source()
        if isinstance(source, self._asyncpg.Pool):
            async with source.acquire() as conn:
                await self._write(conn, rows)
        else:
            await self._write(source, rows)

    async def _write(self, conn: Any, rows: list[Row]) -> None:
        async with conn.transaction():
            if self.method == "copy":
                await conn.copy_records_to_table(
                    self.table, records=rows, columns=self.columns, schema_name=self.schema
                )
            else:
                await conn.executemany(self._insert, rows)

    async def aclose(self) -> None:
        """Close the pool this sink opened from a DSN (a pool you gave it stays open)."""
        owned, self._owned = self._owned, None
        if owned is not None:
            self._target = None
            self._ready = False
            await owned.close()

    def __repr__(self) -> str:
        target = "dsn" if self._dsn is not None else type(self._target).__name__
        return (
            f"PostgresSink(<{target}>, {self.table!r}, {list(self.columns)!r}, "
            f"method={self.method!r})"
        )
