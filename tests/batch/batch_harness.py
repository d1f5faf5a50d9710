"""Drive both batch-writer twins through one synchronous interface, with a scriptable sink.

``Twin`` wraps a ``BatchWriter`` (its own worker thread) or an
``AsyncBatchWriter`` (run on a private event loop that turns only while the
test calls in), so one test body covers both.  ``ScriptedSink`` records every
batch it accepts and fails on command: transiently (the next ``k`` calls) or
permanently (any batch holding a poisoned item).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from botscale import AsyncBatchWriter, BatchStats, BatchWriter
from botscale.testing import FakeClock

Kind = Literal["sync", "async"]
R = TypeVar("R")


class TransientError(ConnectionError):
    """A failure retrying can fix (the database was briefly away)."""


class PermanentError(ValueError):
    """A failure retrying cannot fix (a row the database refuses)."""


class ScriptedSink:
    """A sink that writes a batch atomically or not at all, and fails when told to."""

    permanent_errors = (PermanentError,)

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.fail_next = 0
        self.poison: set[Any] = set()
        self.calls = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, batch: list[Any]) -> None:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.get_ident())
            if self.fail_next > 0:
                self.fail_next -= 1
                raise TransientError(f"transient failure writing {len(batch)} items")
            bad = [item for item in batch if any(item == p for p in self.poison)]
            if bad:
                raise PermanentError(f"refused {bad!r}")
            self.batches.append(list(batch))

    @property
    def items(self) -> list[Any]:
        with self._lock:
            return [item for batch in self.batches for item in batch]


class AsyncScriptedSink(ScriptedSink):
    """The same, as an ``async`` sink (called on the event loop)."""

    async def __call__(self, batch: list[Any]) -> None:  # type: ignore[override]
        ScriptedSink.__call__(self, batch)


class DeadLetters:
    """A dead-letter handler that remembers what it got."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Any], BaseException]] = []
        self._lock = threading.Lock()

    def __call__(self, items: list[Any], error: BaseException) -> None:
        with self._lock:
            self.batches.append((list(items), error))

    @property
    def items(self) -> list[Any]:
        with self._lock:
            return [item for items, _ in self.batches for item in items]


class Twin:
    """One writer of either kind behind a blocking interface."""

    def __init__(self, kind: Kind, sink: Any, clock: FakeClock | None = None, **kw: Any) -> None:
        self.kind = kind
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        if clock is not None:
            kw.setdefault("clock", clock)
        if kind == "sync":
            if clock is not None:
                kw.setdefault("sleep", clock.sleep)
            self.writer: Any = BatchWriter(sink, **kw)
        else:
            if clock is not None:
                kw.setdefault("sleep", clock.asleep)
            self.loop = asyncio.new_event_loop()
            self.writer = AsyncBatchWriter(sink, **kw)

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        assert self.loop is not None
        return self.loop.run_until_complete(coro)

    def put(self, item: Any, timeout: float | None = None) -> bool:
        if self.kind == "sync":
            return bool(self.writer.put(item, timeout))
        return bool(self.run(self.writer.put(item, timeout=timeout)))

    def flush(self, timeout: float | None = 10.0) -> None:
        if self.kind == "sync":
            self.writer.flush(timeout)
        else:
            self.run(self.writer.flush(timeout))

    def close(self, timeout: float | None = None) -> None:
        if self.kind == "sync":
            self.writer.close(timeout)
        else:
            self.run(self.writer.aclose(timeout))

    def stats(self) -> BatchStats:
        stats: BatchStats = self.writer.stats()
        return stats

    def advance(self, seconds: float) -> None:
        assert self.clock is not None
        self.clock.advance(seconds)
        self.writer.wake()
        self.turn()

    def turn(self) -> None:
        """Let an async writer's tasks run until they wait (no-op for threads)."""
        if self.loop is not None:
            for _ in range(5):
                self.run(asyncio.sleep(0))

    def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (bounded) until ``predicate()`` holds: the worker runs on its own."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {timeout} s: {self.stats()}")
            if self.loop is not None:
                self.run(asyncio.sleep(0.001))
            else:
                time.sleep(0.001)

    def shutdown(self) -> None:
        """Close the writer (if a test did not) and the private loop."""
        try:
            self.close()
        finally:
            if self.loop is not None:
                self.loop.close()


def accounted(stats: BatchStats) -> bool:
    """The books balance: every item put is in exactly one state."""
    return stats.items_in == (
        stats.written
        + stats.dead_lettered
        + stats.dead_letter_failures
        + stats.dropped
        + stats.pending
        + stats.in_flight
    )
