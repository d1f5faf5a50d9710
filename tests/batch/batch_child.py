"""A child process for the kill test: streams rows through a batch writer into SQLite.

python batch_child.py sync|async DB REPORT

It prints ``streaming`` once it is well into its stream, keeps putting rows
(bounded by LIMIT, which SIGTERM cuts short) and, on its way out, writes a
JSON report of how many rows it put and what the writer counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from botscale import AsyncBatchWriter, BatchWriter, install_signal_handlers
from botscale.sinks import SQLiteSink

LIMIT = 2_000_000
READY_AT = 3_000


def report(path: str, writer: Any, put: int) -> None:
    stats = writer.stats()
    with open(path, "w") as fh:
        json.dump(
            {
                "put": put,
                "items_in": stats.items_in,
                "written": stats.written,
                "dead_lettered": stats.dead_lettered,
                "pending": stats.pending,
                "closed": writer.closed,
            },
            fh,
        )


def sink(db: str) -> SQLiteSink:
    return SQLiteSink(db, "events", {"seq": "INTEGER NOT NULL"}, synchronous="NORMAL")


def run_sync(db: str, path: str) -> None:
    writer: BatchWriter[Any] = BatchWriter(sink(db), max_batch=50, max_delay=0.05)
    install_signal_handlers(writer)
    put = 0
    try:
        with writer:
            for i in range(LIMIT):
                writer.put((i,))
                put += 1
                if i == READY_AT:
                    print("streaming", flush=True)
                if i % 100 == 0:
                    time.sleep(0.0005)  # a bot takes its updates at some pace
    finally:
        report(path, writer, put)


async def run_async(db: str, path: str) -> None:
    writer: AsyncBatchWriter[Any] = AsyncBatchWriter(sink(db), max_batch=50, max_delay=0.05)
    put = 0
    try:
        async with writer:
            install_signal_handlers(writer)
            for i in range(LIMIT):
                await writer.put((i,))
                put += 1
                if i == READY_AT:
                    print("streaming", flush=True)
                if i % 100 == 0:
                    await asyncio.sleep(0.0005)
    finally:
        report(path, writer, put)


if __name__ == "__main__":
    mode, db_path, report_path = sys.argv[1:4]
    if mode == "sync":
        run_sync(db_path, report_path)
    else:
        asyncio.run(run_async(db_path, report_path))
    print("finished without a signal", flush=True)
