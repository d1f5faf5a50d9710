"""Batched, back-pressured, loss-free writes: ``AsyncBatchWriter`` and ``BatchWriter``.

A bot puts one item (a row) per answer; a writer collects them and hands the
sink a batch when ``max_batch`` items wait or the oldest has waited
``max_delay`` seconds, whichever comes first.  The two twins share the pure
bookkeeping in :class:`_Core` (what is pending, what is due, what is in
flight, the counters) and the write path (retries, splitting, dead letters).
``BatchWriter`` is the threaded engine: a worker thread waits on a
``threading.Condition``.  ``AsyncBatchWriter`` runs a sync sink in that same
engine (so SQLite never blocks the event loop and a batch never waits for a
loop round trip) and awaits an ``async`` sink on the loop with asyncio tasks.

Guarantees (each one has a test):

* Nothing vanishes.  Every item put is, in the end, written, dead-lettered,
  dropped by the overflow policy you chose (counted, and passed to
  ``on_drop``), or, if even the dead-letter handler fails, logged at ERROR
  with its values and counted.  ``BatchStats`` adds up:
  ``items_in == written + dead_lettered + dead_letter_failures + dropped +
  pending + in_flight``.
* A failing batch is retried with :mod:`botscale.retry` (backoff, attempts and
  a time budget); after that it goes to the dead-letter handler.  An error the
  sink calls permanent (a constraint violation, a value of the wrong type) is
  not retried: the batch is split in halves until the bad rows are isolated,
  so one bad row does not take its neighbours down with it.
* Order is kept: one batch at a time, oldest first, a failing batch retried in
  place before the next one is written.  Only when order does not matter
  (``ordered=False``, or a sink with ``ordered = False``) may ``concurrency``
  batches be written at once.
* Shutdown drains: ``flush()``, ``close()``/``aclose()`` and the context
  managers return only once everything put before them is written or
  dead-lettered; ``close_timeout`` bounds that, and what is left then goes to
  the dead letters, not to the floor.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import inspect
import logging
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar, cast

from ._clock import AsyncSleep, Clock, Sleep
from ._deadletter import DeadLetterFile, log_dead_letters
from ._errors import BotscaleError, ConfigurationError, WriterClosedError
from ._retry import ExceptionMatcher, RetryPolicy
from ._validation import check_non_negative, check_positive, check_positive_int

__all__ = [
    "AsyncBatchWriter",
    "BatchStats",
    "BatchWriter",
    "DeadLetterHandler",
    "Overflow",
    "Sink",
    "WriterFullError",
    "install_signal_handlers",
]

T = TypeVar("T")

Overflow: TypeAlias = Literal["block", "drop_oldest", "reject"]
"""What ``put`` does when ``max_pending`` items wait: wait for room, drop the
oldest pending item, or refuse the new one."""

Sink: TypeAlias = Callable[[list[T]], object]
"""A sink: any callable taking a list of items, sync or ``async``.

It may declare, as attributes: ``columns`` (names, so rows are checked at
``put`` and mappings accepted) or ``arity`` (an int); ``ordered = False`` (the
order of rows does not matter); ``permanent_errors`` (a tuple of exception
types retrying cannot fix); ``dead_letter_path`` (where the default
dead-letter file goes); ``close()`` or ``aclose()`` (called when the writer
closes, unless ``close_sink=False``).  A sink should write a batch atomically
(one transaction): then a retried batch is never written twice."""

DeadLetterHandler: TypeAlias = Callable[[list[T], BaseException], object]
"""``handler(items, error)``: receives a batch that could not be written
(sync; the async writer also awaits an ``async`` handler)."""

_log: Final = logging.getLogger("botscale.batch")
_OVERFLOWS: Final = ("block", "drop_oldest", "reject")


class WriterFullError(BotscaleError, TimeoutError):
    """``put`` waited ``timeout`` seconds for room in a full writer (``overflow="block"``).

    The item was not accepted; the caller still holds it.
    """


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of a writer's counters.

    Every item put is accounted for exactly once::

        items_in == written + dead_lettered + dead_letter_failures
                    + dropped + pending + in_flight

    Attributes:
        items_in: items given to ``put`` (those ``overflow="reject"`` refused
            included; not those it raised for).
        written: items the sink accepted.
        batches: successful sink calls.
        retries: sink calls repeated after a failure.
        splits: failed batches split in halves to isolate bad rows.
        dead_lettered: items handed to the dead-letter handler.
        dead_letter_failures: items whose dead-letter handler failed too; they
            were logged at ERROR with their values.
        dropped: items shed by ``overflow="drop_oldest"`` / ``"reject"``.
        pending: items waiting for a batch.
        in_flight: items in batches being written.
        last_flush_latency: seconds the last batch took from being taken to
            being written or dead-lettered, retries included (``None`` before
            the first).
    """

    items_in: int
    written: int
    batches: int
    retries: int
    splits: int
    dead_lettered: int
    dead_letter_failures: int
    dropped: int
    pending: int
    in_flight: int
    last_flush_latency: float | None


class _Aborted(Exception):
    """Raised by the backoff sleep when ``close_timeout`` ran out."""


class _Outcome(Generic[T]):
    """What became of one batch (and the halves it was split into).

    Halves are written left to right, so the items written or set aside for
    the dead letters so far are always a prefix of the batch: ``done`` long.
    ``last`` is the sink's latest error (a retry cut short by ``close_timeout``
    reports it).
    """

    __slots__ = ("batches", "dead", "dead_failed", "done", "failures", "last", "splits", "written")

    def __init__(self, written: int = 0, batches: int = 0, done: int = 0) -> None:
        self.written = written
        self.batches = batches
        self.splits = 0
        self.dead = 0
        self.dead_failed = 0
        self.done = done
        self.failures: list[tuple[list[T], BaseException]] = []
        self.last: BaseException | None = None

    def wrote(self, batch: list[T]) -> None:
        """``batch`` is written."""
        self.written += len(batch)
        self.batches += 1
        self.done += len(batch)


# --------------------------------------------------------------------------------------
# The shared, pure bookkeeping.
# --------------------------------------------------------------------------------------


class _Core(Generic[T]):
    """Pending items, due batches, in-flight batches and counters; no waiting, no I/O.

    Pending items live in chunks of at most ``max_batch``, oldest first: a
    put fills the last chunk or starts a new one (reading the clock only
    then), and a batch is the head chunk, taken whole in O(1).  The head
    chunk's start time is its oldest item's, which is all the age rule needs.

    Items carry implicit sequence numbers: the oldest pending item has number
    ``removed`` and the newest ``items_in - 1``.  ``flush()`` asks for every
    item numbered below a target to be resolved; an in-flight batch is keyed
    by the number of its first item.  Not thread-safe: the threaded twin holds
    its lock around every call.  The twins' ``put`` fast paths inline
    :meth:`append` (keep them in step).
    """

    __slots__ = (
        "batches",
        "blocked",
        "chunks",
        "closed",
        "dead_letter_failures",
        "dead_lettered",
        "dropped",
        "flush_target",
        "in_flight",
        "in_flight_items",
        "items_in",
        "last_latency",
        "limit",
        "max_batch",
        "max_delay",
        "max_pending",
        "rejected",
        "removed",
        "splits",
        "starts",
        "written",
    )

    def __init__(self, max_batch: int, max_delay: float, max_pending: int) -> None:
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_pending = max_pending
        self.limit = max_pending  # pending items at which puts wait (lower while they resume)
        self.blocked = False  # a blocking put is waiting for room
        self.chunks: deque[list[T]] = deque()
        self.starts: deque[float] = deque()
        self.removed = 0
        self.items_in = 0
        self.written = 0
        self.batches = 0
        self.splits = 0
        self.dead_lettered = 0
        self.dead_letter_failures = 0
        self.dropped = 0
        self.rejected = 0
        self.in_flight: dict[int, int] = {}
        self.in_flight_items = 0
        self.flush_target = 0
        self.closed = False
        self.last_latency: float | None = None

    @property
    def pending(self) -> int:
        return self.items_in - self.removed

    def full(self) -> bool:
        return self.items_in - self.removed >= self.limit

    def block(self) -> None:
        """A blocking put found the writer full: puts wait until it is half drained.

        Resuming at the first free slot wakes the waiting producer once per
        batch written, for one batch's worth of puts, and on CPython makes it
        and the writer's thread hand the GIL to each other every time
        (measured: a producer in a tight loop then puts half as many rows
        per second as one that never waits).  Waiting until at most half of
        ``max_pending`` (or less than one batch) is left lets it put the rest
        in one burst.  The worker lifts the wait early whenever it pauses
        (idle, or backing off a failing sink): see :meth:`lift`.
        """
        self.blocked = True
        self.limit = max(self.max_pending // 2, self.max_batch - 1) + 1

    def room_after_take(self) -> bool:
        """After a take: whether waiting puts may go on now (the limit is restored)."""
        return self.blocked and self.items_in - self.removed < self.limit and self.lift()

    def lift(self) -> bool:
        """The worker pauses: let waiting puts have any room there is (``True`` if any wait)."""
        if self.blocked:
            self.blocked = False
            self.limit = self.max_pending
            return True
        return False

    def append(self, item: T, clock: Clock) -> bool:
        """Queue ``item``; return whether the worker must look (a new or a full chunk)."""
        chunks = self.chunks
        self.items_in += 1
        if chunks:
            last = chunks[-1]
            if len(last) < self.max_batch:
                last.append(item)
                return len(last) == self.max_batch
        chunks.append([item])
        self.starts.append(clock())
        return True

    def reject(self) -> None:
        """Count an item refused by ``overflow="reject"`` (it never gets a number)."""
        self.rejected += 1

    def drop_oldest(self) -> T:
        """Drop the oldest pending item.

        Its chunk keeps its start time, so the next batch may be written a
        little before ``max_delay``, never after.
        """
        head = self.chunks[0]
        item = head.pop(0)
        if not head:
            self.chunks.popleft()
            self.starts.popleft()
        self.removed += 1
        self.dropped += 1
        return item

    def due(self, now: float) -> bool:
        """Whether a batch should be taken now."""
        chunks = self.chunks
        if not chunks:
            return False
        return (
            len(chunks[0]) >= self.max_batch
            or len(chunks) > 1
            or self.closed
            or self.removed < self.flush_target
            or now - self.starts[0] >= self.max_delay
        )

    def wait_time(self, now: float) -> float | None:
        """Seconds until the oldest item is due by age (``None``: nothing pending)."""
        if not self.chunks:
            return None
        return max(0.0, self.starts[0] + self.max_delay - now)

    def take(self) -> tuple[int, list[T]]:
        """Move the oldest chunk (at most ``max_batch`` items) in flight; return its key."""
        batch = self.chunks.popleft()
        self.starts.popleft()
        return self._in_flight(batch), batch

    def take_all(self) -> tuple[int, list[T]]:
        """Move every pending item in flight at once (to dead-letter them on abort)."""
        batch = [item for chunk in self.chunks for item in chunk]
        self.chunks.clear()
        self.starts.clear()
        return self._in_flight(batch), batch

    def _in_flight(self, batch: list[T]) -> int:
        key = self.removed
        n = len(batch)
        self.removed += n
        self.in_flight[key] = n
        self.in_flight_items += n
        return key

    def finish(self, key: int, outcome: _Outcome[T], latency: float) -> None:
        self.in_flight_items -= self.in_flight.pop(key)
        self.written += outcome.written
        self.batches += outcome.batches
        self.splits += outcome.splits
        self.dead_lettered += outcome.dead
        self.dead_letter_failures += outcome.dead_failed
        self.last_latency = latency

    def request_flush(self) -> int:
        target = self.items_in
        if target > self.flush_target:
            self.flush_target = target
        return target

    def resolved(self, target: int) -> bool:
        """Whether every item numbered below ``target`` is written, dead or dropped."""
        if self.removed < target:
            return False
        return all(first >= target for first in self.in_flight)

    def drained(self) -> bool:
        return not self.chunks and not self.in_flight

    def stats(self, retries: int) -> BatchStats:
        return BatchStats(
            items_in=self.items_in + self.rejected,
            written=self.written,
            batches=self.batches,
            retries=retries,
            splits=self.splits,
            dead_lettered=self.dead_lettered,
            dead_letter_failures=self.dead_letter_failures,
            dropped=self.dropped + self.rejected,
            pending=self.items_in - self.removed,
            in_flight=self.in_flight_items,
            last_flush_latency=self.last_latency,
        )


# --------------------------------------------------------------------------------------
# Configuration shared by both twins.
# --------------------------------------------------------------------------------------


def _identity(row: Any) -> Any:
    return row


def _row_checker(sink: object, name: str) -> tuple[int, Callable[[Any], Any]]:
    """A put-time check of a row's shape from the sink's ``columns`` or ``arity``.

    Returns the row width (0: the sink declares none, nothing is checked) and
    the check, which returns the row to queue (a mapping becomes a tuple).
    A tuple of the right width needs no call: the writers test that inline.
    """
    columns = getattr(sink, "columns", None)
    arity = getattr(sink, "arity", None)
    if columns is not None:
        if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
            raise TypeError(f"{name}.columns must be a sequence of column names")
        names = tuple(columns)
        n = len(names)
    elif arity is not None:
        names = ()
        n = check_positive_int(f"{name}.arity", arity)
    else:
        return 0, _identity
    wanted = ", ".join(names) if names else f"{n} values"
    shape = f"{n} columns ({wanted})" if names else wanted

    def check(row: Any) -> Any:
        kind = type(row)
        if kind is tuple or kind is list:
            if len(row) == n:
                return row
        elif isinstance(row, Mapping) and names:
            if len(row) == n and all(c in row for c in names):
                return tuple([row[c] for c in names])
            raise ValueError(
                f"row {row!r} does not match {name}: its keys must be exactly {wanted}"
            )
        elif isinstance(row, (str, bytes)) or not isinstance(row, Sequence):
            accepted = "a tuple, a list or a mapping" if names else "a tuple or a list"
            raise TypeError(f"a row for {name} must be {accepted}, got {kind.__name__}")
        elif len(row) == n:
            return row
        raise ValueError(f"row {row!r} has {len(row)} values but {name} expects {shape}")

    return n, check


def _sink_name(sink: object) -> str:
    name = getattr(sink, "name", None)
    if isinstance(name, str):
        return name
    return getattr(sink, "__qualname__", None) or type(sink).__name__


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - looking for an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _close_call(sink: object) -> object:
    """Close ``sink``: its ``aclose()`` if that is async, else its ``close()`` if any.

    Returns what the call returned: an awaitable is the caller's to await.
    """
    aclose = getattr(sink, "aclose", None)
    if aclose is not None and _is_async_callable(aclose):
        return aclose()
    close = getattr(sink, "close", None)
    return close() if callable(close) else None


def _matches(matcher: ExceptionMatcher, exc: BaseException) -> bool:
    if isinstance(matcher, (type, tuple)):
        return isinstance(exc, matcher)
    return isinstance(exc, Exception) and bool(matcher(exc))


class _Settings(Generic[T]):
    """Validated writer arguments, shared by both twins."""

    def __init__(
        self,
        sink: Sink[T],
        *,
        max_batch: int,
        max_delay: float,
        max_pending: int,
        overflow: Overflow,
        on_drop: Callable[[T], object] | None,
        retry: RetryPolicy | None,
        retry_on: ExceptionMatcher | None,
        retry_attempts: int | None,
        retry_timeout: float | None,
        retry_backoff: float | None,
        retry_max_backoff: float | None,
        dead_letter: DeadLetterHandler[T] | None,
        ordered: bool | None,
        concurrency: int,
        split_on_failure: bool,
        close_timeout: float | None,
        close_sink: bool,
        name: str | None,
        clock: Clock,
    ) -> None:
        if not callable(sink):
            raise TypeError(
                f"sink must be a callable taking a list of items (sync or async), "
                f"got {type(sink).__name__}"
            )
        self.sink = sink
        self.name = name if name is not None else _sink_name(sink)
        self.max_batch = check_positive_int("max_batch", max_batch)
        self.max_delay = check_positive("max_delay", max_delay)
        self.max_pending = check_positive_int("max_pending", max_pending)
        if self.max_pending < self.max_batch:
            raise ConfigurationError(
                f"max_pending must be an int >= max_batch ({max_batch!r}), got {max_pending!r}"
            )
        if overflow not in _OVERFLOWS:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(map(repr, _OVERFLOWS))}, got {overflow!r}"
            )
        self.overflow = overflow
        if on_drop is not None and not callable(on_drop):
            raise TypeError(
                f"on_drop must be a callable (item -> None), got {type(on_drop).__name__}"
            )
        self.on_drop = on_drop
        self.concurrency = check_positive_int("concurrency", concurrency)
        self.ordered = bool(getattr(sink, "ordered", True)) if ordered is None else bool(ordered)
        if self.concurrency > 1 and self.ordered:
            raise ConfigurationError(
                f"concurrency must be 1 while order matters (writing batches at once can "
                f"reorder items), got {concurrency!r}; pass ordered=False if the sink "
                f"does not care about order"
            )
        self.split_on_failure = bool(split_on_failure)
        self.close_timeout = (
            None if close_timeout is None else check_non_negative("close_timeout", close_timeout)
        )
        self.close_sink = bool(close_sink)
        self.clock = clock
        self.row_width, self.check_row = _row_checker(sink, self.name)
        permanent = getattr(sink, "permanent_errors", ())
        if isinstance(permanent, type):
            permanent = (permanent,)
        self.permanent: tuple[type[BaseException], ...] = tuple(permanent)
        self.is_async_sink = _is_async_callable(sink)

        knobs = {
            "retry_on": retry_on,
            "retry_attempts": retry_attempts,
            "retry_timeout": retry_timeout,
            "retry_backoff": retry_backoff,
            "retry_max_backoff": retry_max_backoff,
        }
        self.retry = retry
        if retry is not None:
            given = [k for k, v in knobs.items() if v is not None]
            if not isinstance(retry, RetryPolicy):
                raise TypeError(
                    f"retry must be a botscale.RetryPolicy (from botscale.retry(...)), "
                    f"got {type(retry).__name__}"
                )
            if given:
                raise ConfigurationError(
                    f"retry and {', '.join(given)} cannot be combined: put those settings "
                    f"in the RetryPolicy"
                )
        self.retry_on: ExceptionMatcher = Exception if retry_on is None else retry_on
        self.retry_attempts = check_positive_int(
            "retry_attempts", 5 if retry_attempts is None else retry_attempts
        )
        self.retry_timeout = (
            60.0 if retry_timeout is None else check_non_negative("retry_timeout", retry_timeout)
        )
        self.retry_backoff = check_non_negative(
            "retry_backoff", 0.5 if retry_backoff is None else retry_backoff
        )
        self.retry_max_backoff = check_non_negative(
            "retry_max_backoff", 10.0 if retry_max_backoff is None else retry_max_backoff
        )
        if self.retry_max_backoff < self.retry_backoff:
            raise ConfigurationError(
                f"retry_max_backoff must be >= retry_backoff ({self.retry_backoff!r}), "
                f"got {retry_max_backoff!r}"
            )
        if dead_letter is None:
            path = getattr(sink, "dead_letter_path", None)
            dead_letter = DeadLetterFile(path) if path else log_dead_letters
        elif not callable(dead_letter):
            raise TypeError(
                f"dead_letter must be a callable (items, error) -> None, "
                f"got {type(dead_letter).__name__}"
            )
        self.dead_letter: DeadLetterHandler[T] = dead_letter

    def permanent_error(self, exc: BaseException) -> bool:
        """Whether retrying cannot fix ``exc`` (so a batch is split rather than retried)."""
        if isinstance(exc, self.permanent):
            return True
        return self.retry is None and not _matches(self.retry_on, exc)

    def policy(self, sleep: Sleep, async_sleep: AsyncSleep) -> RetryPolicy:
        """The retry policy: the one given, or one built from the ``retry_*`` settings."""
        if self.retry is not None:
            return self.retry
        permanent = self.permanent
        retry_on = self.retry_on

        def transient(exc: BaseException) -> bool:
            return not isinstance(exc, permanent) and _matches(retry_on, exc)

        return RetryPolicy(
            on=transient,
            attempts=self.retry_attempts,
            timeout=self.retry_timeout,
            initial=self.retry_backoff,
            max_wait=self.retry_max_backoff,
            clock=self.clock,
            sleep=sleep,
            async_sleep=async_sleep,
            name=f"{self.name} (batch write)",
        )


def _unrecorded(
    name: str, out: _Outcome[Any], items: list[Any], error: BaseException, why: object
) -> None:
    """The dead-letter handler failed for ``items``: count them and log them whole."""
    out.dead_failed += len(items)
    _log.error(
        "%s: the dead-letter handler failed (%r) for %d items that could not be written "
        "(%s: %s); they are stored nowhere else, here they are: %r",
        name,
        why,
        len(items),
        type(error).__name__,
        error,
        items,
    )


def _call_on_drop(settings: _Settings[T], item: T) -> None:
    if settings.on_drop is None:
        return
    try:
        settings.on_drop(item)
    except Exception:
        _log.exception("%s: on_drop raised for dropped item %r", settings.name, item)


def _full_error(s: _Settings[Any], timeout: float | None) -> WriterFullError:
    how = "is full" if not timeout else f"stayed full for {timeout!r} s"
    return WriterFullError(
        f"the batch writer for {s.name} {how} ({s.max_pending} items pending); "
        f"the item was not queued"
    )


def _closed_error(name: str) -> WriterClosedError:
    return WriterClosedError(f"the batch writer for {name} is closed; put() is no longer accepted")


def _flush_timeout(name: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"flush of {name} did not finish within {timeout!r} s")


def _abort_error(name: str, timeout: float | None) -> WriterClosedError:
    return WriterClosedError(
        f"the batch writer for {name} closed before these items were written "
        f"(close_timeout {timeout!r} s ran out)"
    )


def _attempt(call: Callable[[list[T]], object], batch: list[T], out: _Outcome[T]) -> object:
    """One sink call; its error is kept in ``out.last``."""
    try:
        return call(batch)
    except BaseException as exc:
        out.last = exc
        raise


def _failed_write(
    s: _Settings[T], batch: list[T], exc: BaseException, out: _Outcome[T]
) -> tuple[list[T], ...]:
    """Book ``batch``, whose write failed with ``exc``; return the halves to write
    instead (a permanent error splits it), or nothing when it goes to the dead letters."""
    if isinstance(exc, _Aborted):
        out.failures.append((batch, out.last or _abort_error(s.name, None)))
    elif s.split_on_failure and len(batch) > 1 and s.permanent_error(exc):
        out.splits += 1
        mid = len(batch) // 2
        return batch[:mid], batch[mid:]
    else:
        out.failures.append((batch, exc))
    out.done += len(batch)
    return ()


def _write_all_sync(
    s: _Settings[T],
    policy: RetryPolicy,
    call: Callable[[list[T]], object],
    batch: list[T],
    out: _Outcome[T],
) -> None:
    """Write ``batch`` with retries; split it on a permanent error; record failures in ``out``.

    Runs on a thread (the threaded twin's worker, or the asyncio twin's sink
    thread).  Halves are written left to right, so ``out.done`` stays a prefix.
    """
    try:
        policy.call(_attempt, call, batch, out)
    except BaseException as exc:
        for half in _failed_write(s, batch, exc, out):
            _write_all_sync(s, policy, call, half, out)
        return
    out.wrote(batch)


def _dead_letter_sync(
    s: _Settings[T], out: _Outcome[T], run: Callable[[Awaitable[Any]], Any]
) -> None:
    """Hand ``out``'s failures to the dead-letter handler (``run`` awaits an async one)."""
    handler = s.dead_letter
    for items, error in out.failures:
        try:
            result = handler(items, error)
            if inspect.isawaitable(result):
                run(result)
            out.dead += len(items)
        except Exception as why:
            _unrecorded(s.name, out, items, error, why)
    out.failures.clear()


# --------------------------------------------------------------------------------------
# A private event loop in a thread: async sinks (PostgresSink) behind the threaded twin.
# --------------------------------------------------------------------------------------


class _LoopThread:
    """An event loop running in a daemon thread, for coroutines from sync code."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.loop.close()


# --------------------------------------------------------------------------------------
# What both twins are built from.
# --------------------------------------------------------------------------------------

_SleepT = TypeVar("_SleepT")  # how a twin waits between retries: Sleep or AsyncSleep


class _Writer(Generic[T, _SleepT]):
    """The constructor both twins share (arguments: see :class:`AsyncBatchWriter`)."""

    def __init__(
        self,
        sink: Sink[T],
        max_batch: int = 50,
        max_delay: float = 2.0,
        max_pending: int = 10_000,
        *,
        overflow: Overflow = "block",
        on_drop: Callable[[T], object] | None = None,
        retry: RetryPolicy | None = None,
        retry_on: ExceptionMatcher | None = None,
        retry_attempts: int | None = None,
        retry_timeout: float | None = None,
        retry_backoff: float | None = None,
        retry_max_backoff: float | None = None,
        dead_letter: DeadLetterHandler[T] | None = None,
        ordered: bool | None = None,
        concurrency: int = 1,
        split_on_failure: bool = True,
        close_timeout: float | None = None,
        close_sink: bool = True,
        name: str | None = None,
        clock: Clock = time.monotonic,
        sleep: _SleepT | None = None,
    ) -> None:
        self._s: _Settings[T] = _Settings(
            sink,
            max_batch=max_batch,
            max_delay=max_delay,
            max_pending=max_pending,
            overflow=overflow,
            on_drop=on_drop,
            retry=retry,
            retry_on=retry_on,
            retry_attempts=retry_attempts,
            retry_timeout=retry_timeout,
            retry_backoff=retry_backoff,
            retry_max_backoff=retry_max_backoff,
            dead_letter=dead_letter,
            ordered=ordered,
            concurrency=concurrency,
            split_on_failure=split_on_failure,
            close_timeout=close_timeout,
            close_sink=close_sink,
            name=name,
            clock=clock,
        )
        self._setup(sleep)

    def _setup(self, sleep: _SleepT | None) -> None:
        """The twin's own state, waits and workers (``self._s`` is set)."""
        raise NotImplementedError

    def _init_core(self, sleep: _SleepT | None) -> None:
        """The state both twins keep: the bookkeeping and the hot paths' shortcuts."""
        s = self._s
        self._core: _Core[T] = _Core(s.max_batch, s.max_delay, s.max_pending)
        self._clock = s.clock
        self._max_batch = s.max_batch
        self._max_pending = s.max_pending
        self._row_width = s.row_width
        self._check_row = s.check_row
        self._user_sleep = sleep
        self._aborting = False
        self._sink_closed = False


# --------------------------------------------------------------------------------------
# The threaded twin.
# --------------------------------------------------------------------------------------


def _close_at_exit(ref: weakref.ref[BatchWriter[Any]]) -> None:
    writer = ref()
    if writer is not None:
        writer.close()


class BatchWriter(_Writer[T, Sleep]):
    """Batch items into a sink from sync code (telebot, scripts), on a background thread.

    ``put`` is thread-safe and returns at once unless ``max_pending`` items
    wait; a worker thread hands the sink a batch when ``max_batch`` items wait
    or the oldest has waited ``max_delay`` seconds.  A writer that is never
    closed is drained at interpreter exit.  See :class:`AsyncBatchWriter` for
    every argument; only the waiting differs.

    ::

        with BatchWriter(SQLiteSink("bot.db", "answers", ["user_id", "ok"])) as w:
            w.put((42, True))
    """

    @classmethod
    def _engine(
        cls,
        settings: _Settings[T],
        sleep: Sleep | None,
        run_awaitable: Callable[[Awaitable[Any]], Any],
        on_room: Callable[[], object],
    ) -> BatchWriter[T]:
        """The threaded engine behind an ``AsyncBatchWriter`` with a sync sink."""
        engine = cls.__new__(cls)
        engine._s = settings
        engine._setup(sleep, run_awaitable=run_awaitable, on_room=on_room)
        return engine

    def _setup(
        self,
        sleep: Sleep | None,
        *,
        run_awaitable: Callable[[Awaitable[Any]], Any] | None = None,
        on_room: Callable[[], object] | None = None,
    ) -> None:
        self._init_core(sleep)
        s = self._s
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._run_external = run_awaitable
        self._on_room = on_room
        self._policy = s.policy(self._backoff_sleep, self._unused_async_sleep)
        self._targets: list[int] = []  # what flush() / close() calls wait to see resolved
        self._loop_thread: _LoopThread | None = None
        self._loop_lock = threading.Lock()
        # Signal handling (install_signal_handlers): the handler runs in the main
        # thread between two bytecodes; inside put()'s bookkeeping it only notes
        # the exit, which put() then raises once its item is fully accounted for.
        self._sig_guard = False
        self._sig_main = threading.main_thread().ident
        self._sig_busy = False
        self._sig_exit: int | None = None
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)
        self._workers = [
            threading.Thread(target=self._work, name=f"botscale-batch-{s.name}-{i}", daemon=True)
            for i in range(s.concurrency)
        ]
        for worker in self._workers:
            worker.start()

    # -- putting --------------------------------------------------------------------

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Queue ``item`` for the next batch.

        Args:
            item: the item (a row: its shape is checked here if the sink
                declares ``columns`` or ``arity``).
            timeout: with ``overflow="block"``, the most seconds to wait for
                room when ``max_pending`` items wait (``None``: as long as it
                takes).

        Returns:
            ``True`` if the item was queued; ``False`` if ``overflow="reject"``
            refused it (it was counted as dropped and passed to ``on_drop``).

        Raises:
            WriterClosedError: the writer is closed.
            WriterFullError: no room within ``timeout``.
            ValueError, TypeError: the row does not fit the sink's columns.
        """
        width = self._row_width
        if width and (type(item) is not tuple or len(item) != width):  # type: ignore[arg-type]
            item = self._check_row(item)
        if self._try_put(item):
            return True
        return self._put_slow(item, timeout)

    def _try_put(self, item: T) -> bool:
        """The fast path: queue ``item`` if there is room, the writer is open and no
        signal guard is installed; else return ``False``.  Inlines ``_Core.append``."""
        if self._sig_guard:
            return False
        core = self._core
        with self._lock:
            if core.items_in - core.removed >= core.limit or core.closed:
                return False
            core.items_in += 1
            chunks = core.chunks
            if chunks:
                last = chunks[-1]
                if len(last) < self._max_batch:
                    last.append(item)
                    if len(last) == self._max_batch:
                        self._cond.notify_all()
                    return True
            chunks.append([item])
            core.starts.append(self._clock())
            self._cond.notify_all()
            return True

    def _put_slow(self, item: T, timeout: float | None) -> bool:
        """``put`` when the writer is full or closed, or a signal guard is installed."""
        s = self._s
        core = self._core
        guard = self._sig_guard and threading.get_ident() == self._sig_main
        try:
            with self._cond:
                if core.closed:
                    raise _closed_error(s.name)
                full = core.full()
                if full and s.overflow == "block":
                    core.block()
                    self._wait_for_room(timeout)
                    full = False
                if guard:
                    self._sig_busy = True
                if full and s.overflow == "reject":
                    core.reject()
                    shed = item
                else:
                    if full:
                        shed = core.drop_oldest()
                    if core.append(item, self._clock):
                        self._cond.notify_all()
            if full:
                _call_on_drop(s, shed)
        finally:
            if guard:
                self._leave_busy()
        return not (full and s.overflow == "reject")

    def _wait_for_room(self, timeout: float | None) -> None:
        """Wait (holding the condition) until there is room; raise if closed or too late."""
        core = self._core
        deadline = (
            None if timeout is None else self._clock() + check_non_negative("timeout", timeout)
        )
        while core.full():
            if core.closed:
                raise _closed_error(self._s.name)
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise _full_error(self._s, timeout)
            self._cond.wait(remaining)
        if core.closed:
            raise _closed_error(self._s.name)

    def _leave_busy(self) -> None:
        self._sig_busy = False
        code = self._sig_exit
        if code is not None:
            self._sig_exit = None
            raise SystemExit(code)

    # -- the worker -----------------------------------------------------------------

    def _work(self) -> None:
        core = self._core
        cond = self._cond
        clock = self._clock
        while True:
            with cond:
                while True:
                    now = clock()
                    if core.due(now):
                        break
                    if core.closed and not core.chunks:
                        cond.notify_all()
                        return
                    if core.lift():  # idle: waiting puts take what room there is
                        self._room_now()
                    cond.wait(core.wait_time(now))
                key, batch = core.take()
                if core.room_after_take():  # puts may be waiting for room
                    self._room_now()
            start = clock()
            outcome: _Outcome[T] = _Outcome()
            try:
                self._write_all(batch, outcome)
                if outcome.failures:
                    self._dead_letter(outcome)
            finally:
                with cond:
                    core.finish(key, outcome, clock() - start)
                    # Wake flush() / close() only once what they wait for is done:
                    # a wake per batch costs a context switch per batch.
                    targets = self._targets
                    if targets and core.resolved(min(targets)):
                        cond.notify_all()

    def _call_sink(self, batch: list[T]) -> object:
        sink = self._s.sink
        if self._s.is_async_sink:
            return self._loop().run(cast("Awaitable[object]", sink(batch)))
        return sink(batch)

    def _write_all(self, batch: list[T], out: _Outcome[T]) -> None:
        _write_all_sync(self._s, self._policy, self._call_sink, batch, out)

    def _dead_letter(self, out: _Outcome[T]) -> None:
        _dead_letter_sync(self._s, out, self._run_awaitable)

    def _run_awaitable(self, awaitable: Awaitable[Any]) -> Any:
        if self._run_external is not None:
            return self._run_external(awaitable)
        return self._loop().run(awaitable)

    def _room_now(self) -> None:
        """Wake the puts waiting for room (the caller holds the condition)."""
        self._cond.notify_all()
        if self._on_room is not None:
            self._on_room()

    def _backoff_sleep(self, seconds: float) -> None:
        if self._aborting:
            raise _Aborted
        with self._cond:
            if self._core.lift():  # backing off: waiting puts take what room there is
                self._room_now()
        if self._user_sleep is not None:
            self._user_sleep(seconds)
        else:
            with self._cond:
                self._cond.wait_for(lambda: self._aborting, seconds)
        if self._aborting:
            raise _Aborted

    async def _unused_async_sleep(self, seconds: float) -> None:  # pragma: no cover
        raise AssertionError("the threaded writer never awaits its retry policy")

    def _loop(self) -> _LoopThread:
        with self._loop_lock:
            if self._loop_thread is None:
                self._loop_thread = _LoopThread(f"botscale-batch-{self._s.name}-loop")
            return self._loop_thread

    # -- flushing and closing -------------------------------------------------------

    def wake(self) -> None:
        """Re-check the flush rule now.

        Only needed when the writer runs on a fake clock: after
        ``clock.advance(...)`` the worker learns that a batch became due.
        """
        with self._cond:
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> None:
        """Write everything put so far, now; return when it is written or dead-lettered.

        Args:
            timeout: the most seconds to wait (``None``: as long as it takes).

        Raises:
            TimeoutError: not everything was resolved within ``timeout``.
        """
        core = self._core
        with self._cond:
            target = core.request_flush()
            self._cond.notify_all()
            deadline = None if timeout is None else self._clock() + timeout
            self._targets.append(target)
            try:
                while not core.resolved(target):
                    remaining = None if deadline is None else deadline - self._clock()
                    if remaining is not None and remaining <= 0:
                        raise _flush_timeout(self._s.name, timeout)
                    self._cond.wait(remaining)
            finally:
                self._targets.remove(target)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, drain everything pending, then close the sink.

        Calling it again is harmless (it waits for the drain too).

        Args:
            timeout: the most seconds to spend draining (default:
                ``close_timeout``); what is left then goes to the dead letters.
        """
        guard = self._sig_guard and threading.get_ident() == self._sig_main
        if guard:
            self._sig_busy = True
        try:
            self._close(self._s.close_timeout if timeout is None else timeout)
        finally:
            if guard:
                self._leave_busy()

    def _mark_closed(self) -> None:
        with self._cond:
            self._core.closed = True
            self._cond.notify_all()

    def _close(self, timeout: float | None) -> None:
        core = self._core
        cond = self._cond
        self._mark_closed()
        atexit.unregister(self._exit_hook)
        deadline = None if timeout is None else self._clock() + timeout
        with cond:
            target = core.items_in  # closed: nothing follows, so resolved == drained
            self._targets.append(target)
            try:
                while not core.drained():
                    remaining = None if deadline is None else deadline - self._clock()
                    if remaining is not None and remaining <= 0:
                        break
                    cond.wait(remaining)
            finally:
                self._targets.remove(target)
            leftovers: tuple[int, list[T]] | None = None
            if not core.drained():
                self._aborting = True
                cond.notify_all()
                if core.chunks:
                    leftovers = core.take_all()
        if leftovers is not None:
            key, items = leftovers
            outcome: _Outcome[T] = _Outcome()
            outcome.failures.append((items, _abort_error(self._s.name, timeout)))
            start = self._clock()
            try:
                self._dead_letter(outcome)
            finally:
                with cond:
                    core.finish(key, outcome, self._clock() - start)
                    cond.notify_all()
        current = threading.current_thread()
        for worker in self._workers:
            if worker is not current:
                worker.join()
        with cond:
            close_sink = self._s.close_sink and not self._sink_closed
            self._sink_closed = True
        if close_sink:
            self._close_sink()
        with self._loop_lock:
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            loop_thread.stop()

    def _close_sink(self) -> None:
        try:
            result = _close_call(self._s.sink)
            if inspect.isawaitable(result):
                self._loop().run(result)
        except Exception:
            _log.exception("%s: closing the sink failed", self._s.name)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    def stats(self) -> BatchStats:
        """A snapshot of the counters (see :class:`BatchStats`)."""
        with self._cond:
            return self._core.stats(self._policy.stats.retries)

    def __enter__(self) -> BatchWriter[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        core = self._core
        state = "closed" if core.closed else "open"
        return (
            f"<BatchWriter {self._s.name} {state} pending={core.pending} "
            f"in_flight={core.in_flight_items}>"
        )


# --------------------------------------------------------------------------------------
# The asyncio twin.
# --------------------------------------------------------------------------------------


class _Broadcast:
    """Wake every waiter at once (single event loop, so no lost wake-ups)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        event = self._event
        if event is not None:
            self._event = None
            event.set()

    async def wait(self, timeout: float | None = None) -> None:
        event = self._event
        if event is None:
            event = self._event = asyncio.Event()
        if timeout is None:
            await event.wait()
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class AsyncBatchWriter(_Writer[T, AsyncSleep]):
    """Batch items into a sink from asyncio code (aiogram, python-telegram-bot).

    ``await put(item)`` returns at once unless ``max_pending`` items wait; a
    worker task hands the sink a batch when ``max_batch`` items wait or the
    oldest has waited ``max_delay`` seconds, whichever comes first.  A sync
    sink (``SQLiteSink``, any plain function) runs on the writer's own thread,
    never on the event loop; an ``async`` sink (``PostgresSink``) is awaited.

    ::

        async with AsyncBatchWriter(SQLiteSink("bot.db", "answers", ["user_id", "ok"])) as w:
            await w.put((42, True))

    Args:
        sink: a callable taking a ``list`` of items, sync or async (see :data:`Sink`).
        max_batch: the most items per sink call (>= 1).
        max_delay: the most seconds an item waits before its batch is written (> 0).
        max_pending: items queued before ``overflow`` applies (>= max_batch).
        overflow: ``"block"`` (``put`` waits for room: back-pressure; a put
            that found the writer full goes on once at most half of
            ``max_pending`` is left), ``"drop_oldest"`` or ``"reject"`` (shed
            load; each shed item is counted in ``stats().dropped`` and passed
            to ``on_drop``).
        on_drop: called with every dropped item.
        retry: a :class:`~botscale.RetryPolicy` for failed sink calls, instead
            of the ``retry_*`` settings below.
        retry_on: which errors are retried (default: every ``Exception`` but
            the sink's ``permanent_errors``).
        retry_attempts: sink calls per batch in total (default 5).
        retry_timeout: seconds a batch may spend retrying (default 60).
        retry_backoff: first wait between attempts in seconds (default 0.5),
            doubling up to ``retry_max_backoff`` (default 10), with jitter.
        dead_letter: ``handler(items, error)`` for batches that still fail;
            default: a :class:`~botscale.DeadLetterFile` next to the sink's
            database if it names one (``SQLiteSink`` does), else the items are
            logged at ERROR.
        ordered: whether order matters (default: the sink's ``ordered``
            attribute, else ``True``).
        concurrency: batches written at once (>1 only when order does not matter).
        split_on_failure: split a batch failing with a permanent error in
            halves until the bad rows are isolated (default ``True``).
        close_timeout: the most seconds ``aclose`` spends draining; the rest
            goes to the dead letters (default: no limit).
        close_sink: call the sink's ``aclose()``/``close()`` on close (default ``True``).
        name: the name in logs (default: the sink's).
        clock: monotonic seconds (a :class:`~botscale.testing.FakeClock` in tests).
        sleep: the awaitable wait between retries (default: an interruptible
            ``asyncio`` wait; ``FakeClock.asleep`` in tests).

    Raises:
        ValueError: an argument is outside its range (the message names it).
        TypeError: an argument has the wrong type.
    """

    def _setup(self, sleep: AsyncSleep | None) -> None:
        self._init_core(sleep)
        self._policy = self._s.policy(self._thread_sleep, self._backoff_sleep)
        self._wake = _Broadcast()  # workers
        self._space = _Broadcast()  # puts waiting for room
        self._progress = _Broadcast()  # flush / close waiting for batches to finish
        self._abort = _Broadcast()  # backoff waits, on close_timeout
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal_exit: int | None = None
        # A sync sink (SQLiteSink, a plain function) runs in the threaded engine:
        # its worker thread takes batches straight from the locked core, retries
        # and dead-letters them, and never needs the event loop; this facade only
        # waits (for room, for a flush, for the drain) without blocking the loop.
        self._engine: BatchWriter[T] | None = None
        if not self._s.is_async_sink:
            self._engine = BatchWriter._engine(
                self._s,
                None if sleep is None else self._thread_sleep,
                self._run_on_loop,
                self._room_from_thread,
            )

    # -- putting --------------------------------------------------------------------

    async def put(self, item: T, *, timeout: float | None = None) -> bool:
        """Queue ``item`` for the next batch; wait for room if ``max_pending`` items wait.

        Args:
            item: the item (a row: its shape is checked here if the sink
                declares ``columns`` or ``arity``).
            timeout: with ``overflow="block"``, the most seconds to wait for
                room (``None``: as long as it takes).

        Returns:
            ``True`` if queued; ``False`` if ``overflow="reject"`` refused it
            (counted as dropped and passed to ``on_drop``).

        Raises:
            WriterClosedError: the writer is closed.
            WriterFullError: no room within ``timeout``.
            ValueError, TypeError: the row does not fit the sink's columns.
        """
        width = self._row_width
        if width and (type(item) is not tuple or len(item) != width):  # type: ignore[arg-type]
            item = self._check_row(item)
        engine = self._engine
        if engine is not None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            if engine._try_put(item):
                return True
            return await self._engine_put(engine, item, timeout)
        core = self._core
        if core.items_in - core.removed < core.limit and not core.closed and self._workers:
            # The fast path: room, open, running.  Inlines _Core.append.
            core.items_in += 1
            chunks = core.chunks
            if chunks:
                last = chunks[-1]
                if len(last) < self._max_batch:
                    last.append(item)
                    if len(last) == self._max_batch:
                        self._wake.notify()
                    return True
            chunks.append([item])
            core.starts.append(self._clock())
            self._wake.notify()
            return True
        if not core.full() or self._s.overflow != "block":
            return self._put_nowait(item)
        s = self._s
        if core.closed:
            raise _closed_error(s.name)
        self._start()
        deadline = (
            None if timeout is None else self._clock() + check_non_negative("timeout", timeout)
        )
        core.block()
        while core.full():
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise _full_error(s, timeout)
            await self._space.wait(remaining)
            if core.closed:
                raise _closed_error(s.name)
        if core.append(item, self._clock):
            self._wake.notify()
        return True

    def put_nowait(self, item: T) -> bool:
        """Queue ``item`` without waiting (call it from the event loop's thread).

        Like :meth:`put`, except that a full writer with ``overflow="block"``
        raises :class:`WriterFullError` at once instead of waiting.
        """
        width = self._row_width
        if width and (type(item) is not tuple or len(item) != width):  # type: ignore[arg-type]
            item = self._check_row(item)
        engine = self._engine
        if engine is not None:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            return engine._try_put(item) or engine._put_slow(item, 0)
        return self._put_nowait(item)

    async def _engine_put(self, engine: BatchWriter[T], item: T, timeout: float | None) -> bool:
        """``put`` into the threaded engine when it is full or closed: wait on the loop."""
        s = self._s
        deadline = (
            None if timeout is None else self._clock() + check_non_negative("timeout", timeout)
        )
        while True:
            if engine.closed:
                raise _closed_error(s.name)
            try:  # under the engine's lock: queued, or marked as waiting for room
                return engine._put_slow(item, 0)
            except WriterFullError:
                pass  # full: wait for the worker to say there is room
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise _full_error(s, timeout)
            await self._space.wait(remaining)

    def _room_from_thread(self) -> None:
        """The engine's worker made room in a full writer: wake the puts waiting here."""
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._space.notify)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _put_nowait(self, item: T) -> bool:
        s = self._s
        core = self._core
        if core.closed:
            raise _closed_error(s.name)
        if not self._workers:
            self._start()
        if core.full():
            if s.overflow == "block":
                raise _full_error(s, 0)
            if s.overflow == "reject":
                core.reject()
                _call_on_drop(s, item)
                return False
            _call_on_drop(s, core.drop_oldest())
        if core.append(item, self._clock):
            self._wake.notify()
        return True

    def _start(self) -> None:
        if self._workers or self._engine is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._work(), name=f"botscale-batch-{self._s.name}-{i}")
            for i in range(self._s.concurrency)
        ]

    # -- the workers: async sinks -----------------------------------------------------

    async def _work(self) -> None:
        core = self._core
        clock = self._clock
        try:
            while True:
                now = clock()
                if not core.due(now):
                    if core.closed and not core.chunks:
                        self._progress.notify()
                        return
                    if core.lift():  # idle: waiting puts take what room there is
                        self._space.notify()
                    await self._wake.wait(core.wait_time(now))
                    continue
                key, batch = core.take()
                if core.room_after_take():
                    self._space.notify()
                start = clock()
                outcome: _Outcome[T] = _Outcome()
                try:
                    await self._write_all(batch, outcome)
                    await self._dead_letter(outcome)
                except asyncio.CancelledError:
                    self._rescue(batch, outcome)
                    raise
                finally:
                    core.finish(key, outcome, clock() - start)
                    self._progress.notify()
        except asyncio.CancelledError:
            self._rescue_pending()
            raise

    # -- bridges for the threaded engine (sync sinks) ---------------------------------

    def _run_on_loop(self, awaitable: Awaitable[Any]) -> Any:
        async def wrap() -> Any:
            return await awaitable

        loop = self._loop
        assert loop is not None, "the sink threads start with the loop"
        return asyncio.run_coroutine_threadsafe(wrap(), loop).result()

    def _thread_sleep(self, seconds: float) -> None:
        """The engine's backoff wait when ``sleep`` is given: awaited on the loop."""
        assert self._user_sleep is not None
        self._run_on_loop(self._user_sleep(seconds))

    def _rescue_pending(self) -> None:
        core = self._core
        if core.chunks:
            key, rest = core.take_all()
            rest_outcome: _Outcome[T] = _Outcome(done=len(rest))
            rest_outcome.failures.append((rest, self._cancelled_error()))
            self._dead_letter_now(rest_outcome)
            core.finish(key, rest_outcome, 0.0)

    def _cancelled_error(self) -> WriterClosedError:
        return WriterClosedError(
            f"the batch writer for {self._s.name} was cancelled (its event loop stopped?) "
            f"before aclose() drained it"
        )

    def _rescue(self, batch: list[T], outcome: _Outcome[T]) -> None:
        """The worker was cancelled mid-batch: dead-letter whatever is unresolved.

        The items written are a prefix; what follows it was never confirmed.
        The sub-batch whose sink call was cancelled may have been committed
        all the same: it is dead-lettered too (a possible duplicate beats a
        possible loss), with a warning.
        """
        unconfirmed = batch[outcome.done :]
        if unconfirmed:
            _log.warning(
                "%s: cancelled while writing %d items; they go to the dead letters "
                "although the sink may have stored some of them",
                self._s.name,
                len(unconfirmed),
            )
            outcome.failures.append((unconfirmed, self._cancelled_error()))
        self._dead_letter_now(outcome)

    def _dead_letter_now(self, out: _Outcome[T]) -> None:
        """Dead-letter without awaiting (the task is being cancelled)."""
        handler = self._s.dead_letter
        for items, error in out.failures:
            try:
                if _is_async_callable(handler):
                    raise RuntimeError(
                        "an async dead-letter handler cannot run in a cancelled task"
                    )
                handler(items, error)
                out.dead += len(items)
            except Exception as why:
                _unrecorded(self._s.name, out, items, error, why)
        out.failures.clear()

    async def _attempt(self, batch: list[T], out: _Outcome[T]) -> object:
        try:
            return await cast("Awaitable[object]", self._s.sink(batch))
        except BaseException as exc:
            out.last = exc
            raise

    async def _write_all(self, batch: list[T], out: _Outcome[T]) -> None:
        try:
            await self._policy.acall(self._attempt, batch, out)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            for half in _failed_write(self._s, batch, exc, out):
                await self._write_all(half, out)
            return
        out.wrote(batch)

    async def _dead_letter(self, out: _Outcome[T]) -> None:
        handler = self._s.dead_letter
        while out.failures:
            items, error = out.failures[0]
            try:
                result = handler(items, error)
                if inspect.isawaitable(result):
                    await result
                out.dead += len(items)
            except Exception as why:
                _unrecorded(self._s.name, out, items, error, why)
            out.failures.pop(0)

    async def _backoff_sleep(self, seconds: float) -> None:
        if self._aborting:
            raise _Aborted
        if self._core.lift():  # backing off: waiting puts take what room there is
            self._space.notify()
        if self._user_sleep is not None:
            await self._user_sleep(seconds)
        else:
            await self._abort.wait(seconds)
        if self._aborting:
            raise _Aborted

    # -- flushing and closing -------------------------------------------------------

    def wake(self) -> None:
        """Re-check the flush rule now (after advancing a fake clock)."""
        if self._engine is not None:
            self._engine.wake()
        self._wake.notify()

    async def flush(self, timeout: float | None = None) -> None:
        """Write everything put so far, now; return when it is written or dead-lettered.

        Raises:
            TimeoutError: not everything was resolved within ``timeout`` seconds.
        """
        if self._engine is not None:
            await asyncio.to_thread(self._engine.flush, timeout)
            return
        core = self._core
        target = core.request_flush()
        if core.resolved(target):
            return
        self._start()
        self._wake.notify()
        deadline = None if timeout is None else self._clock() + timeout
        while not core.resolved(target):
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise _flush_timeout(self._s.name, timeout)
            await self._progress.wait(remaining)

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop accepting items, drain everything pending, then close the sink.

        Calling it again is harmless (it waits for the drain too).

        Args:
            timeout: the most seconds to spend draining (default:
                ``close_timeout``); what is left then goes to the dead letters.
        """
        timeout = self._s.close_timeout if timeout is None else timeout
        engine = self._engine
        if engine is not None:
            engine._mark_closed()
            self._space.notify()  # blocked puts fail at once with WriterClosedError
            # In a thread: a cancelled aclose() leaves the drain running, not half done.
            await asyncio.to_thread(engine.close, timeout)
            return
        core = self._core
        core.closed = True
        self._wake.notify()
        self._space.notify()
        deadline = None if timeout is None else self._clock() + timeout
        if core.chunks:
            self._start()
        while not core.drained():
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                break
            await self._progress.wait(remaining)
        if not core.drained():
            self._aborting = True
            self._abort.notify()
            if core.chunks:
                key, items = core.take_all()
                outcome: _Outcome[T] = _Outcome()
                outcome.failures.append((items, _abort_error(self._s.name, timeout)))
                try:
                    await self._dead_letter(outcome)
                finally:
                    core.finish(key, outcome, 0.0)
            while core.in_flight:  # retries now give up at once
                await self._progress.wait()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        if self._s.close_sink and not self._sink_closed:
            self._sink_closed = True
            await self._close_sink()

    async def _close_sink(self) -> None:
        try:
            result = _close_call(self._s.sink)
            if inspect.isawaitable(result):
                await result
        except Exception:
            _log.exception("%s: closing the sink failed", self._s.name)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        if self._engine is not None:
            return self._engine.closed
        return self._core.closed

    def stats(self) -> BatchStats:
        """A snapshot of the counters (see :class:`BatchStats`)."""
        if self._engine is not None:
            return self._engine.stats()
        return self._core.stats(self._policy.stats.retries)

    async def __aenter__(self) -> AsyncBatchWriter[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
        code = self._signal_exit
        if (
            code is not None
            and exc_type is not None
            and issubclass(exc_type, asyncio.CancelledError)
        ):
            # The cancellation came from install_signal_handlers: everything is
            # written, so leave the way a signalled program should.
            raise SystemExit(code)

    def __repr__(self) -> str:
        stats = self.stats()
        state = "closed" if self.closed else "open"
        return (
            f"<AsyncBatchWriter {self._s.name} {state} pending={stats.pending} "
            f"in_flight={stats.in_flight}>"
        )


# --------------------------------------------------------------------------------------
# Signals: flush, then exit cleanly.
# --------------------------------------------------------------------------------------


def install_signal_handlers(
    writer: BatchWriter[Any] | AsyncBatchWriter[Any],
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
    *,
    exit_code: int = 0,
) -> Callable[[], None]:
    """On SIGTERM / SIGINT, drain ``writer`` and exit with ``exit_code``.

    * ``BatchWriter`` (call it from the main thread): the handler raises
      ``SystemExit(exit_code)`` in the main thread, so ``with`` blocks and
      ``finally`` clauses run; the writer is drained by its ``with`` block,
      an explicit ``close()``, or at interpreter exit.  A signal that lands
      while ``put`` is updating its books waits until the item is accounted for.
    * ``AsyncBatchWriter`` (call it inside the running loop, in the task that
      holds ``async with writer``): the handler cancels that task; leaving
      ``async with`` drains the writer and then raises ``SystemExit(exit_code)``.
      Frameworks that handle signals themselves (aiogram's ``start_polling``,
      PTB's ``run_polling``) do not need this: close the writer in their
      shutdown hook instead.

    Args:
        writer: the writer to drain.
        signals: the signals to handle (POSIX signal numbers).
        exit_code: the process's exit status after draining (default 0).

    Returns:
        A function that puts the previous handlers back.

    Raises:
        RuntimeError: an async writer but no running event loop, or a sync
            writer outside the main thread.
    """
    if isinstance(writer, AsyncBatchWriter):
        return _install_async(writer, signals, exit_code)
    if isinstance(writer, BatchWriter):
        return _install_sync(writer, signals, exit_code)
    raise TypeError(
        f"writer must be a BatchWriter or an AsyncBatchWriter, got {type(writer).__name__}"
    )


def _install_sync(
    writer: BatchWriter[Any], signals: Sequence[int], exit_code: int
) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "install_signal_handlers(BatchWriter) must be called from the main thread"
        )

    def handler(signum: int, frame: FrameType | None) -> None:
        _log.info("signal %d: draining %r, then exiting", signum, writer)
        if writer._sig_busy:
            writer._sig_exit = exit_code
            return
        raise SystemExit(exit_code)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    writer._sig_main = threading.get_ident()
    writer._sig_guard = True

    def restore() -> None:
        writer._sig_guard = False
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _install_async(
    writer: AsyncBatchWriter[Any], signals: Sequence[int], exit_code: int
) -> Callable[[], None]:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "install_signal_handlers(AsyncBatchWriter) must be called inside the running event loop"
        ) from None
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - get_running_loop() succeeded outside a task
        raise RuntimeError("install_signal_handlers(AsyncBatchWriter) must be called from a task")

    def handler(signum: int) -> None:
        if writer._signal_exit is not None:
            _log.warning("signal %d: already draining %r", signum, writer)
            return
        _log.info("signal %d: draining %r, then exiting", signum, writer)
        writer._signal_exit = exit_code
        task.cancel(f"signal {signum}: drain the batch writer and exit")

    for sig in signals:
        loop.add_signal_handler(sig, handler, sig)

    def restore() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return restore
