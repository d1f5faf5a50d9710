"""Static typing checks of the batch writers and sinks (mypy --strict only).

The item type flows from the sink to ``put``: a writer over a sink of ints
refuses a str, and the SQL sinks take tuples, lists or mappings.
"""

from __future__ import annotations

from collections.abc import Callable

from typing_extensions import assert_type

from botscale import (
    AsyncBatchWriter,
    BatchStats,
    BatchWriter,
    DeadLetterFile,
    install_signal_handlers,
    retry,
)
from botscale.sinks import PostgresSink, Row, SQLiteSink


def write_ints(batch: list[int]) -> None:
    print(sum(batch))


async def write_ints_async(batch: list[int]) -> None:
    print(sum(batch))


def dead(items: list[int], error: BaseException) -> None:
    print(items, error)


def sync_side() -> None:
    writer = BatchWriter(write_ints, max_batch=10, on_drop=print, dead_letter=dead)
    assert_type(writer, BatchWriter[int])
    assert_type(writer.put(1), bool)
    writer.put(2, timeout=1.5)
    writer.put("three")  # type: ignore[arg-type]
    assert_type(writer.stats(), BatchStats)
    restore = install_signal_handlers(writer)
    assert_type(restore, Callable[[], None])
    writer.flush(timeout=5.0)
    writer.close()

    rows = BatchWriter(SQLiteSink("bot.db", "answers", ["user_id", "ok"]), max_batch=50)
    assert_type(rows, BatchWriter[Row])
    rows.put((42, True))
    rows.put({"user_id": 42, "ok": True})
    rows.close()

    with BatchWriter(write_ints, retry=retry(on=OSError)) as w:
        assert_type(w, BatchWriter[int])


async def async_side() -> None:
    writer = AsyncBatchWriter(
        write_ints_async, overflow="drop_oldest", dead_letter=DeadLetterFile("x")
    )
    assert_type(writer, AsyncBatchWriter[int])
    assert_type(await writer.put(1, timeout=2.0), bool)
    assert_type(writer.put_nowait(2), bool)
    await writer.flush()
    await writer.aclose()

    sink = PostgresSink("postgresql://localhost/db", "answers", {"user_id": "bigint"})
    async with AsyncBatchWriter(sink, max_batch=500) as pg:
        assert_type(pg, AsyncBatchWriter[Row])
        await pg.put((1,))

    AsyncBatchWriter(write_ints_async, overflow="sometimes")  # type: ignore[arg-type]
