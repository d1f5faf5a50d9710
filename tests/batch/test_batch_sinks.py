"""The sinks against real databases: SQLite files and the PostgreSQL server.

PostgreSQL tests use the ``postgres_dsn`` fixture (skip with the reason when no
server answers; fail under BOTSCALE_REQUIRE_SERVICES=1), one fresh table per
test, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from botscale import (
    AsyncBatchWriter,
    BatchWriter,
    ConfigurationError,
    DeadLetterFile,
    retry_testing,
)
from botscale.sinks import PostgresSink, SQLiteSink


def rows_in(db: str | Path, sql: str = "SELECT * FROM answers ORDER BY rowid") -> list[Any]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- SQLite -----------------------------------------------------------------------------


def test_import_sinks_loads_no_driver() -> None:
    code = (
        "import sys, botscale.sinks; "
        "print(','.join(m for m in ('sqlite3', 'asyncpg') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


async def test_async_writer_into_sqlite_in_wal_mode(tmp_db: str) -> None:
    sink = SQLiteSink(tmp_db, "answers", {"user_id": "INTEGER", "question": "INTEGER", "ok": "INT"})
    async with AsyncBatchWriter(sink, max_batch=50, max_delay=2.0) as w:
        for i in range(1_234):
            await w.put((i, i % 10, i % 2 == 0))
        await w.put({"user_id": -1, "question": 0, "ok": True})
    stats = w.stats()
    assert stats.written == 1_235
    assert stats.batches == 25
    assert stats.dead_lettered == 0
    rows = rows_in(tmp_db)
    assert rows[:2] == [(0, 0, 1), (1, 1, 0)]
    assert rows[-1] == (-1, 0, 1)
    assert len(rows) == 1_235
    assert rows_in(tmp_db, "PRAGMA journal_mode") == [("wal",)]
    assert rows_in(tmp_db, "SELECT type FROM pragma_table_info('answers')") == [
        ("INTEGER",),
        ("INTEGER",),
        ("INT",),
    ]


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL", "off"])
def test_sync_writer_into_sqlite(tmp_db: str, synchronous: Any) -> None:
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "ok"], synchronous=synchronous)
    level = sink._conn.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[union-attr]
    assert level == {"NORMAL": 1, "FULL": 2, "off": 0}[synchronous]
    with BatchWriter(sink, max_batch=100) as w:
        for i in range(500):
            w.put([i, True])
    assert rows_in(tmp_db) == [(i, 1) for i in range(500)]
    assert sink._conn is None  # the writer closed its sink


def test_a_bad_value_is_dead_lettered_next_to_the_database_and_its_neighbours_written(
    tmp_db: str,
) -> None:
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "payload"])
    with BatchWriter(sink, max_batch=10) as w:
        for i in range(10):
            w.put((i, {"not": "storable"} if i == 4 else f"answer {i}"))
    assert [r[0] for r in rows_in(tmp_db)] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert sink.dead_letter_path == tmp_db + ".dead-letters.jsonl"
    records = DeadLetterFile(sink.dead_letter_path).read()
    assert [r["item"] for r in records] == [[4, {"not": "storable"}]]
    assert "ProgrammingError" in records[0]["error"] or "InterfaceError" in records[0]["error"]
    assert w.stats().retries == 0
    assert w.stats().splits >= 1


def test_a_batch_is_one_transaction(tmp_db: str) -> None:
    sink = SQLiteSink(tmp_db, "answers", ["user_id"])
    with pytest.raises(sqlite3.Error):
        sink([(1,), (2,), ({"bad": 1},)])
    assert rows_in(tmp_db) == []
    sink([(3,)])
    assert rows_in(tmp_db) == [(3,)]
    sink.close()
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink([(4,)])


@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 127, 128, 500])
def test_multi_row_statements_insert_every_row_once_in_order(tmp_db: str, n: int) -> None:
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "answer"])
    batch: list[Any] = [(i, f"a{i}") if i % 2 else [i, f"a{i}"] for i in range(n)]
    sink(batch)
    sink([(n, "last")])
    sink.close()
    assert rows_in(tmp_db) == [(i, f"a{i}") for i in range(n)] + [(n, "last")]


@pytest.mark.parametrize(
    "odd",
    [(1, "a", "extra"), (1,), "ab", range(2)],
    ids=["too-long", "too-short", "str", "other-sequence"],
)
def test_a_batch_with_an_odd_row_goes_through_executemany(tmp_db: str, odd: Any) -> None:
    # Flattening would shift every later value into the wrong column: the sink
    # hands such a batch to executemany, which judges each row on its own.
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "answer"])
    batch: list[Any] = [(1, "x"), (2, "y"), odd, (3, "z")]
    if len(odd) == 2:  # another sequence sqlite3 takes: written as executemany writes it
        sink(batch)
        assert rows_in(tmp_db) == [(1, "x"), (2, "y"), tuple(odd), (3, "z")]
    else:
        with pytest.raises(sqlite3.ProgrammingError):
            sink(batch)
        assert rows_in(tmp_db) == []  # one transaction: nothing of the batch
    sink.close()


def test_a_long_row_and_a_short_row_never_even_out(tmp_db: str) -> None:
    # Together they hold the right number of values: flattened, every value
    # after the long row would land one column off, and nothing would fail.
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "answer"])
    with pytest.raises(sqlite3.ProgrammingError):
        sink([(1, "x"), (2, "y", 3), ("z",), (4, "w")])
    assert rows_in(tmp_db) == []
    sink.close()


def test_wide_rows_stay_under_sqlites_limit_on_parameters(tmp_db: str) -> None:
    columns = [f"c{i}" for i in range(600)]  # 600 * 64 rows would be 38,400 "?"s
    sink = SQLiteSink(tmp_db, "wide", columns)
    limit = sqlite3.connect(":memory:").getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    assert sink._chunk * len(columns) <= limit
    sink([tuple(range(r, r + 600)) for r in range(100)])
    sink.close()
    got = rows_in(tmp_db, "SELECT c0, c599 FROM wide ORDER BY rowid")
    assert got == [(r, r + 599) for r in range(100)]


def test_a_locked_database_is_retried_until_it_frees(tmp_db: str) -> None:
    sink = SQLiteSink(tmp_db, "answers", ["user_id"], busy_timeout=0.01)
    blocker = sqlite3.connect(tmp_db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    w = BatchWriter(
        sink, max_batch=5, retry_attempts=50, retry_backoff=0.01, retry_max_backoff=0.02
    )
    try:
        for i in range(5):
            w.put((i,))
        done = threading.Event()

        def flush_then_signal() -> None:
            w.flush()
            done.set()

        waiter = threading.Thread(target=flush_then_signal)
        waiter.start()
        for _ in range(500):  # bounded: until the writer has retried at least once
            if w.stats().retries:
                break
            done.wait(0.01)
        assert w.stats().retries >= 1
        assert not done.is_set()
        blocker.execute("COMMIT")
        waiter.join(10)
        assert done.is_set()
    finally:
        blocker.close()
        w.close()
    assert rows_in(tmp_db) == [(i,) for i in range(5)]
    assert w.stats().dead_lettered == 0


def test_identifiers_are_quoted(tmp_db: str) -> None:
    sink = SQLiteSink(tmp_db, 'odd "table"', ["user id", 'say "hi"'])
    sink([(1, "x")])
    sink.close()
    assert rows_in(tmp_db, 'SELECT * FROM "odd ""table"""') == [(1, "x")]


def _open_sink(path: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=30)
    try:
        SQLiteSink(path, "answers", {"user_id": "INTEGER", "ok": "INTEGER"}).close()
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_processes_starting_together_all_open_one_new_database(tmp_path: Path) -> None:
    """Several bot processes creating the same database at once: none gets "locked".

    SQLite refuses a concurrent switch to WAL at once, without its busy
    timeout; before the sink retried it, about one round in six failed here.
    """
    ctx = multiprocessing.get_context("fork")
    for trial in range(15):  # bounded
        path = str(tmp_path / f"{trial}.db")
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_sink, args=(path, barrier, results)) for _ in range(6)]
        for proc in procs:
            proc.start()
        outcomes = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
        assert outcomes == ["ok"] * 6, f"round {trial}: {outcomes}"
        assert rows_in(path, "PRAGMA journal_mode") == [("wal",)]


def test_create_false_expects_the_table(tmp_db: str) -> None:
    conn = sqlite3.connect(tmp_db)
    conn.execute("CREATE TABLE answers (user_id INTEGER, ok INTEGER)")
    conn.close()
    sink = SQLiteSink(tmp_db, "answers", ["user_id", "ok"], create=False)
    sink([(1, 1)])
    sink.close()
    assert rows_in(tmp_db) == [(1, 1)]


def test_in_memory_database_has_no_dead_letter_file() -> None:
    sink = SQLiteSink(":memory:", "answers", ["a"])
    assert sink.dead_letter_path is None
    sink.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"synchronous": "SOMETIMES"}, ConfigurationError, "synchronous"),
        ({"columns": []}, ConfigurationError, "at least one column"),
        ({"columns": ["a", "a"]}, ConfigurationError, "unique"),
        ({"columns": "ab"}, TypeError, "columns"),
        ({"columns": {"a": 3}}, TypeError, "SQL type"),
        ({"table": ""}, ConfigurationError, "table"),
        ({"table": 7}, TypeError, "table"),
        ({"busy_timeout": -1}, ConfigurationError, "busy_timeout"),
    ],
)
def test_sqlite_sink_bad_configuration(
    tmp_db: str, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"table": "answers", "columns": ["a", "b"], **kwargs}
    with pytest.raises(error, match=match):
        SQLiteSink(tmp_db, **args)


def test_wrong_arity_is_rejected_at_put_naming_the_columns(tmp_db: str) -> None:
    with BatchWriter(SQLiteSink(tmp_db, "answers", ["user_id", "ok"])) as w:
        with pytest.raises(ValueError, match=r"3 values.*2 columns \(user_id, ok\)"):
            w.put((1, True, "oops"))
        w.put((1, True))
    assert rows_in(tmp_db) == [(1, 1)]


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[str]:
    """A unique table name; the table is dropped after the test."""
    name = f"botscale_batch_{uuid.uuid4().hex[:12]}"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(drop())


async def pg_rows(dsn: str, table: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(f'SELECT * FROM "{table}" ORDER BY user_id')]
    finally:
        await conn.close()


COLUMNS = {"user_id": "bigint", "answer": "text", "ok": "boolean"}


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_async_writer_into_postgres(postgres_dsn: str, pg_table: str, method: Any) -> None:
    sink = PostgresSink(postgres_dsn, pg_table, COLUMNS, create=True, method=method)
    async with AsyncBatchWriter(sink, max_batch=100) as w:
        for i in range(1_000):
            await w.put((i, f"a{i}", i % 3 == 0))
    assert w.stats().written == 1_000
    assert w.stats().batches == 10
    rows = await pg_rows(postgres_dsn, pg_table)
    assert rows[:2] == [(0, "a0", True), (1, "a1", False)]
    assert len(rows) == 1_000
    assert sink._owned is None  # the pool it opened is closed


@pytest.mark.postgres
def test_sync_writer_into_postgres_through_its_private_loop(
    postgres_dsn: str, pg_table: str
) -> None:
    sink = PostgresSink(postgres_dsn, pg_table, COLUMNS, create=True)
    with BatchWriter(sink, max_batch=64) as w:
        for i in range(300):
            w.put({"user_id": i, "answer": "x", "ok": True})
    rows = asyncio.run(pg_rows(postgres_dsn, pg_table))
    assert [r[0] for r in rows] == list(range(300))


@pytest.mark.postgres
async def test_a_pool_you_give_stays_open(postgres_dsn: str, pg_table: str) -> None:
    pool = await asyncpg.create_pool(postgres_dsn, min_size=1, max_size=2)
    try:
        sink = PostgresSink(pool, pg_table, COLUMNS, create=True)
        async with AsyncBatchWriter(sink, max_batch=10) as w:
            for i in range(25):
                await w.put((i, "p", False))
        assert await pool.fetchval(f'SELECT count(*) FROM "{pg_table}"') == 25
    finally:
        await pool.close()


@pytest.mark.postgres
@pytest.mark.parametrize("method", ["copy", "executemany"])
async def test_a_bad_value_is_isolated_and_dead_lettered(
    postgres_dsn: str, pg_table: str, method: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = PostgresSink(postgres_dsn, pg_table, COLUMNS, create=True, method=method)
    async with AsyncBatchWriter(sink, max_batch=8) as w:
        for i in range(8):
            await w.put((i if i != 3 else "three", "x", True))
    rows = await pg_rows(postgres_dsn, pg_table)
    assert [r[0] for r in rows] == [0, 1, 2, 4, 5, 6, 7]
    stats = w.stats()
    assert stats.dead_lettered == 1
    assert stats.retries == 0
    assert "'three'" in caplog.text  # no file next to a server: logged at ERROR


@pytest.mark.postgres
async def test_a_server_that_is_away_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    dead = DeadLetterFile(tmp_path / "dead.jsonl")
    sink = PostgresSink("postgresql://postgres@127.0.0.1:1/none", "t", COLUMNS)
    with retry_testing():  # keep the decisions, skip the waits
        async with AsyncBatchWriter(sink, max_batch=2, retry_attempts=3, dead_letter=dead) as w:
            await w.put((1, "a", True))
            await w.put((2, "b", False))
    assert [r["item"] for r in dead.read()] == [[1, "a", True], [2, "b", False]]
    assert w.stats().retries == 2


def test_postgres_sink_bad_configuration() -> None:
    dsn = "postgresql://postgres@127.0.0.1/test"
    with pytest.raises(ConfigurationError, match="create=True needs every column's SQL type"):
        PostgresSink(dsn, "t", ["a", "b"], create=True)
    with pytest.raises(ConfigurationError, match="method"):
        PostgresSink(dsn, "t", ["a"], method="insert")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dsn_or_pool"):
        PostgresSink(5432, "t", ["a"])
    with pytest.raises(ConfigurationError, match="pool_size"):
        PostgresSink(dsn, "t", ["a"], pool_size=0)


def test_postgres_sink_without_asyncpg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ImportError, match=r"botscale\[postgres\]"):
        PostgresSink("postgresql://x", "t", ["a"])
