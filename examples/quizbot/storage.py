"""Where answers go and where scores come from: SQLite by default, PostgreSQL on request.

Writes never wait for the database: every answer and every ``/start`` is put
into an :class:`~botscale.AsyncBatchWriter`, which writes batches of
``BOTSCALE_BATCH_SIZE`` rows (or whatever waited ``BOTSCALE_BATCH_DELAY``
seconds) in one transaction.  While the database is down, batches are retried
for ``WRITE_RETRY_TIMEOUT`` seconds and new rows wait in memory, at most
``MAX_PENDING_ANSWERS`` of them; :meth:`Storage.health` reports the outage
and nothing is lost when the database comes back.

Reads (``/stats``, ``/top``, the broadcast list) go through
:func:`~botscale.retry` (transient errors only) and, for the two commands,
through :func:`~botscale.cached`: a user's stats stay cached for
``BOTSCALE_CACHE_TTL`` seconds but are invalidated as soon as a batch with
one of their answers is written, so ``/stats`` is never older than the last
write.  ``/top`` accepts the staleness: the leaderboard may lag by up to
the TTL (5 minutes by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from botscale import (
    AsyncBatchWriter,
    BatchStats,
    PerformanceMonitor,
    WriterFullError,
    cached,
    retry,
)
from botscale.sinks import PostgresSink, SQLiteSink

from .config import QuizConfig

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "ANSWER_COLUMNS",
    "START_COLUMNS",
    "AnswerRow",
    "Database",
    "Leader",
    "PostgresDatabase",
    "SQLiteDatabase",
    "Storage",
    "UserStats",
    "WriterFullError",
    "open_database",
]

log: Final = logging.getLogger("quizbot")

ANSWER_COLUMNS: Final = (
    "update_id",
    "user_id",
    "quiz",
    "question_id",
    "option",
    "correct",
    "answered_at",
)
"""Columns of the answers table; ``update_id`` ties a row to the Telegram update."""
START_COLUMNS: Final = ("user_id", "first_name", "started_at")
"""Columns of the starts table (every ``/start``; its users are the broadcast list)."""

AnswerRow = tuple[int, int, str, int, int, bool, float]
"""``(update_id, user_id, quiz, question_id, option, correct, answered_at)``."""
StartRow = tuple[int, str, float]
"""``(user_id, first_name, started_at)``."""


@dataclass(frozen=True)
class UserStats:
    """One user's score: answers given, correct ones, quizzes played."""

    answered: int
    correct: int
    quizzes: int


@dataclass(frozen=True)
class Leader:
    """One row of the leaderboard."""

    user_id: int
    name: str
    correct: int
    answered: int


class Database(Protocol):
    """What :class:`Storage` needs from a database (SQLite and PostgreSQL below)."""

    transient: tuple[type[BaseException], ...]
    """Errors worth retrying (connection lost, database locked)."""

    def sinks(self) -> tuple[Callable[[list[Any]], object], Callable[[list[Any]], object]]:
        """The batch sinks of the answers and starts tables."""
        ...

    async def user_stats(self, user_id: int) -> UserStats: ...

    async def top(self, limit: int) -> list[Leader]: ...

    async def known_users(self) -> list[int]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


_TOP_SQL: Final = """
SELECT a.user_id, COALESCE(n.name, ''), a.correct, a.answered
FROM (SELECT user_id, SUM(CASE WHEN correct THEN 1 ELSE 0 END) AS correct,
             COUNT(*) AS answered
      FROM {answers} GROUP BY user_id) AS a
LEFT JOIN (SELECT user_id, MAX(first_name) AS name FROM {starts} GROUP BY user_id) AS n
       ON n.user_id = a.user_id
ORDER BY a.correct DESC, a.answered ASC, a.user_id ASC
LIMIT {limit}
"""


class SQLiteDatabase:
    """SQLite in WAL mode: the batch writers write, one read connection reads.

    Readers never block the writer in WAL mode; reads run in a worker thread
    so the event loop never waits for the disk.
    """

    transient: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: str, *, prefix: str = "quizbot_", busy_timeout: float = 5.0) -> None:
        self.path = path
        self.answers_table = f"{prefix}answers"
        self.starts_table = f"{prefix}starts"
        self._answers = SQLiteSink(
            path,
            self.answers_table,
            {
                "update_id": "INTEGER",
                "user_id": "INTEGER",
                "quiz": "TEXT",
                "question_id": "INTEGER",
                "option": "INTEGER",
                "correct": "INTEGER",
                "answered_at": "REAL",
            },
            busy_timeout=busy_timeout,
        )
        self._starts = SQLiteSink(
            path,
            self.starts_table,
            {"user_id": "INTEGER", "first_name": "TEXT", "started_at": "REAL"},
            busy_timeout=busy_timeout,
        )
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False)
        with self._lock:
            for table in (self.answers_table, self.starts_table):
                self._conn.execute(
                    f'CREATE INDEX IF NOT EXISTS "{table}_user_id" ON "{table}" (user_id)'
                )
            self._conn.commit()

    def sinks(self) -> tuple[SQLiteSink, SQLiteSink]:
        return self._answers, self._starts

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    async def _fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._query, sql, params)

    async def user_stats(self, user_id: int) -> UserStats:
        rows = await self._fetch(
            "SELECT COUNT(*), COALESCE(SUM(correct), 0), COUNT(DISTINCT quiz) "
            f'FROM "{self.answers_table}" WHERE user_id = ?',
            (user_id,),
        )
        answered, correct, quizzes = rows[0]
        return UserStats(int(answered), int(correct), int(quizzes))

    async def top(self, limit: int) -> list[Leader]:
        sql = _TOP_SQL.format(
            answers=f'"{self.answers_table}"', starts=f'"{self.starts_table}"', limit=int(limit)
        )
        return [Leader(int(u), str(n), int(c), int(a)) for u, n, c, a in await self._fetch(sql)]

    async def known_users(self) -> list[int]:
        rows = await self._fetch(
            f'SELECT DISTINCT user_id FROM "{self.starts_table}" ORDER BY user_id'
        )
        return [int(r[0]) for r in rows]

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


def _pg_transient() -> tuple[type[BaseException], ...]:
    import asyncpg

    return (
        OSError,
        asyncio.TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.CannotConnectNowError,
        asyncpg.TooManyConnectionsError,
    )


class PostgresDatabase:
    """PostgreSQL through one asyncpg pool shared by the sinks and the reads.

    Build it with :meth:`connect` (it creates the tables it needs).
    """

    def __init__(self, pool: asyncpg.Pool, *, prefix: str = "quizbot_") -> None:
        self.pool = pool
        self.transient = _pg_transient()
        self.answers_table = f"{prefix}answers"
        self.starts_table = f"{prefix}starts"
        self._answers = PostgresSink(pool, self.answers_table, ANSWER_COLUMNS)
        self._starts = PostgresSink(pool, self.starts_table, START_COLUMNS)

    @classmethod
    async def connect(cls, dsn: str, *, prefix: str = "quizbot_") -> PostgresDatabase:
        """Open a pool and create the tables and indexes if missing."""
        import asyncpg

        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4, timeout=5.0)
        try:
            async with pool.acquire() as conn:
                await conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{prefix}answers" (update_id bigint, '
                    "user_id bigint, quiz text, question_id integer, option integer, "
                    "correct boolean, answered_at double precision);"
                    f'CREATE INDEX IF NOT EXISTS "{prefix}answers_user_id" '
                    f'ON "{prefix}answers" (user_id);'
                    f'CREATE TABLE IF NOT EXISTS "{prefix}starts" (user_id bigint, '
                    "first_name text, started_at double precision);"
                    f'CREATE INDEX IF NOT EXISTS "{prefix}starts_user_id" '
                    f'ON "{prefix}starts" (user_id);'
                )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, prefix=prefix)

    def sinks(self) -> tuple[PostgresSink, PostgresSink]:
        return self._answers, self._starts

    async def user_stats(self, user_id: int) -> UserStats:
        row = await self.pool.fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN correct THEN 1 ELSE 0 END), 0), "
            f'COUNT(DISTINCT quiz) FROM "{self.answers_table}" WHERE user_id = $1',
            user_id,
        )
        assert row is not None
        return UserStats(int(row[0]), int(row[1]), int(row[2]))

    async def top(self, limit: int) -> list[Leader]:
        sql = _TOP_SQL.format(
            answers=f'"{self.answers_table}"', starts=f'"{self.starts_table}"', limit=int(limit)
        )
        return [
            Leader(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in await self.pool.fetch(sql)
        ]

    async def known_users(self) -> list[int]:
        rows = await self.pool.fetch(
            f'SELECT DISTINCT user_id FROM "{self.starts_table}" ORDER BY user_id'
        )
        return [int(r[0]) for r in rows]

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def close(self) -> None:
        await self.pool.close()


class _WatchedSink:
    """A sink that times each batch, remembers the last failure and reports written rows.

    The writers see an ``async`` sink; a sync one (SQLite) runs in a worker
    thread.  The attributes the writers read (``columns``,
    ``permanent_errors``, ``dead_letter_path``, ``ordered``) are the wrapped
    sink's.
    """

    def __init__(
        self,
        sink: Callable[[list[Any]], object],
        name: str,
        monitor: PerformanceMonitor,
        on_written: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.sink = sink
        self.name = name
        self.monitor = monitor
        self.on_written = on_written
        self.columns: tuple[str, ...] = tuple(getattr(sink, "columns", ()))
        self.permanent_errors: tuple[type[BaseException], ...] = tuple(
            getattr(sink, "permanent_errors", ())
        )
        self.dead_letter_path: str | None = getattr(sink, "dead_letter_path", None)
        self.ordered: bool = bool(getattr(sink, "ordered", True))
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._is_async = inspect.iscoroutinefunction(sink) or inspect.iscoroutinefunction(
            type(sink).__call__
        )

    async def __call__(self, rows: list[Any]) -> None:
        try:
            async with self.monitor.track(f"db.write.{self.name}", rows=len(rows)):
                if self._is_async:
                    await self.sink(rows)  # type: ignore[misc]
                else:
                    await asyncio.to_thread(self.sink, rows)
        except Exception as exc:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.failing_since = None
        self.last_error = None
        if self.on_written is not None:
            self.on_written(rows)

    async def aclose(self) -> None:
        close = getattr(self.sink, "aclose", None) or getattr(self.sink, "close", None)
        if close is not None:
            result = close()
            if asyncio.iscoroutine(result):
                await result


async def open_database(config: QuizConfig, *, prefix: str = "quizbot_") -> Database:
    """The database the configuration names, ready to use (tables created).

    PostgreSQL connection attempts are retried like every other database
    call (``BOTSCALE_RETRY_ATTEMPTS`` within ``BOTSCALE_RETRY_TIMEOUT``).
    """
    dsn = config.settings.postgres_dsn
    if dsn is None:
        return SQLiteDatabase(
            config.sqlite_path, prefix=prefix, busy_timeout=config.sqlite_busy_timeout
        )
    settings = config.settings
    connect = retry(
        on=_pg_transient(),
        attempts=settings.retry_attempts,
        timeout=settings.retry_timeout,
        name="postgres connect",
    )(PostgresDatabase.connect)
    return await connect(dsn, prefix=prefix)


class Storage:
    """The bot's persistence: batched writes, retried and cached reads, a health check.

    Args:
        db: the database (from :func:`open_database`).
        config: batch sizes, retry budgets and cache settings.
        monitor: times every batch and read.
    """

    def __init__(self, db: Database, config: QuizConfig, monitor: PerformanceMonitor) -> None:
        settings = config.settings
        self.db = db
        self.monitor = monitor
        answers_sink, starts_sink = db.sinks()
        write_retry = retry(
            on=db.transient,
            attempts=None,
            timeout=config.write_retry_timeout,
            initial=0.2,
            max_wait=5.0,
            name="quizbot batch write",
        )
        self._answers_sink = _WatchedSink(answers_sink, "answers", monitor, self._written)
        self._starts_sink = _WatchedSink(starts_sink, "starts", monitor)
        self.answers: AsyncBatchWriter[AnswerRow] = AsyncBatchWriter(
            self._answers_sink,
            max_batch=settings.batch_size,
            max_delay=settings.batch_delay,
            max_pending=config.max_pending_answers,
            retry=write_retry,
            name="answers",
        )
        self.starts: AsyncBatchWriter[StartRow] = AsyncBatchWriter(
            self._starts_sink,
            max_batch=settings.batch_size,
            max_delay=settings.batch_delay,
            max_pending=config.max_pending_answers,
            retry=write_retry,
            name="starts",
        )
        read_retry = retry(
            on=db.transient,
            attempts=settings.retry_attempts,
            timeout=settings.retry_timeout,
            name="quizbot db read",
        )
        self.user_stats = cached(ttl=settings.cache_ttl, maxsize=settings.cache_maxsize)(
            read_retry(monitor.timed("db.user_stats")(db.user_stats))
        )
        self._top = read_retry(monitor.timed("db.top")(db.top))
        self.top = cached(ttl=settings.cache_ttl, maxsize=64)(self._fresh_top)
        self._known_users = read_retry(db.known_users)

    async def _fresh_top(self, limit: int) -> list[Leader]:
        # The leaderboard is cached for minutes: write the waiting names first.
        with contextlib.suppress(TimeoutError):
            await self.starts.flush(timeout=1.0)
        return await self._top(limit)

    def _written(self, rows: list[AnswerRow]) -> None:
        for user_id in {row[1] for row in rows}:
            self.user_stats.invalidate(user_id)

    async def record_answer(self, row: AnswerRow, *, timeout: float = 2.0) -> None:
        """Queue one answer for the database.

        Raises:
            WriterFullError: ``MAX_PENDING_ANSWERS`` answers already wait
                (the database has been down for a while); nothing was queued.
        """
        await self.answers.put(row, timeout=timeout)

    async def record_start(self, user_id: int, first_name: str) -> None:
        """Queue one ``/start`` (it puts the user on the broadcast list).

        When ``MAX_PENDING_ANSWERS`` starts already wait (a long database
        outage) this one is dropped, logged: the quiz itself goes on.
        """
        try:
            await self.starts.put((user_id, first_name, time.time()), timeout=2.0)
        except WriterFullError:
            log.warning("user %s not added to the broadcast list: the database is down", user_id)

    async def known_users(self) -> list[int]:
        """Every user who ever sent ``/start``, including the ones not written yet."""
        await self.starts.flush(timeout=30.0)
        return await self._known_users()

    def writer_stats(self) -> dict[str, BatchStats]:
        """The two writers' counters."""
        return {"answers": self.answers.stats(), "starts": self.starts.stats()}

    async def health(self) -> bool:
        """The monitor's ``database`` check: writes going through and a read answering.

        Raises:
            ConnectionError: writes have been failing (says since when and how
                many answers wait), or the read probe failed.
        """
        for sink, writer in ((self._answers_sink, self.answers), (self._starts_sink, self.starts)):
            if sink.failing_since is not None:
                stats = writer.stats()
                waiting = stats.pending + stats.in_flight
                raise ConnectionError(
                    f"{sink.name} writes failing for {time.monotonic() - sink.failing_since:.0f} s "
                    f"({sink.last_error}); {waiting} rows waiting, none lost"
                )
        await asyncio.wait_for(self.db.ping(), 5.0)
        return True

    async def close(self) -> None:
        """Write everything still waiting, then close the database."""
        try:
            await asyncio.gather(self.answers.aclose(), self.starts.aclose())
        finally:
            await self.db.close()
