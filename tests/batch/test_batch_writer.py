"""The batch writers: flush rules, back-pressure, overflow, failures, shutdown, bad input.

Timing rules run on a FakeClock.  Most tests run against both twins through
``Twin`` (see batch_harness.py); twin-specific wiring is tested on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from batch_harness import (
    AsyncScriptedSink,
    DeadLetters,
    PermanentError,
    ScriptedSink,
    TransientError,
    Twin,
    accounted,
)

from botscale import (
    AsyncBatchWriter,
    BatchWriter,
    ConfigurationError,
    DeadLetterFile,
    WriterClosedError,
    WriterFullError,
    install_signal_handlers,
    retry,
)
from botscale._batch import _Core, _Outcome
from botscale.testing import FakeClock

MakeTwin = Callable[..., Twin]

# -- the pure core: the flush rule, ordering, flush targets ---------------------------


def at(t: float) -> Callable[[], float]:
    return lambda: t


def test_core_batch_is_due_at_max_batch_items_or_when_the_oldest_reaches_max_delay() -> None:
    core: _Core[int] = _Core(max_batch=3, max_delay=2.0, max_pending=10)
    assert not core.due(0.0)
    assert core.wait_time(0.0) is None
    assert core.append(1, at(10.0))  # a new chunk: the worker must learn its deadline
    assert not core.append(2, at(11.0))
    assert not core.due(11.9)
    assert core.wait_time(11.0) == pytest.approx(1.0)  # the oldest decides
    assert core.due(12.0)  # 2 s after the oldest
    assert core.append(3, at(11.5))  # the chunk is full: wake the worker
    assert core.due(10.0)  # 3 items: due at once, whatever their age


def test_core_takes_oldest_first_at_most_max_batch_and_tracks_the_next_deadline() -> None:
    core: _Core[int] = _Core(max_batch=2, max_delay=5.0, max_pending=10)
    for i, t in enumerate([0.0, 1.0, 2.0]):
        core.append(i, at(t))
    assert core.pending == 3
    key, batch = core.take()
    assert batch == [0, 1]
    assert key == 0
    assert core.wait_time(2.0) == pytest.approx(5.0)  # item 2 arrived at t=2
    assert core.in_flight_items == 2
    assert not core.resolved(1)
    core.finish(key, _Outcome(written=2, batches=1), latency=0.1)
    assert core.resolved(2)
    assert not core.resolved(3)


def test_core_flush_makes_everything_put_before_it_due_but_nothing_after() -> None:
    core: _Core[int] = _Core(max_batch=10, max_delay=60.0, max_pending=100)
    core.append(1, at(0.0))
    target = core.request_flush()
    assert core.due(0.0)
    key, _ = core.take()
    core.append(2, at(0.0))
    assert not core.due(0.0)  # put after the flush: waits for its own rule
    core.finish(key, _Outcome(written=1, batches=1), 0.0)
    assert core.resolved(target)


def test_core_drop_oldest_keeps_order_and_never_delays_the_next_batch() -> None:
    core: _Core[int] = _Core(max_batch=2, max_delay=5.0, max_pending=4)
    for i in range(4):
        core.append(i, at(float(i)))
    assert core.full()
    assert core.drop_oldest() == 0
    assert core.wait_time(1.0) == pytest.approx(4.0)  # still the dropped item's chunk start
    assert core.drop_oldest() == 1
    assert core.wait_time(2.0) == pytest.approx(5.0)  # the chunk of 2 and 3 started at t=2
    _, batch = core.take()
    assert batch == [2, 3]
    assert core.stats(0).dropped == 2


# -- the flush rule, wired ------------------------------------------------------------


def test_a_full_batch_is_written_at_once(twin: MakeTwin, clock: FakeClock) -> None:
    sink = ScriptedSink()
    w = twin(sink, clock, max_batch=3, max_delay=10.0)
    for i in range(3):
        w.put(i)
    w.until(lambda: sink.batches == [[0, 1, 2]])
    assert w.stats().batches == 1


def test_a_partial_batch_waits_for_max_delay_then_is_written(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    w = twin(sink, clock, max_batch=10, max_delay=2.0)
    w.put("a")
    w.put("b")
    w.advance(1.0)
    assert sink.batches == [] or w.kind == "sync"  # async: deterministic; sync: checked below
    w.advance(1.0)
    w.until(lambda: sink.batches == [["a", "b"]])


def test_async_writer_does_not_write_a_partial_batch_before_max_delay(clock: FakeClock) -> None:
    sink = ScriptedSink()
    w = Twin("async", sink, clock, max_batch=10, max_delay=2.0)
    try:
        w.put(1)
        w.advance(1.999)
        w.turn()
        assert sink.batches == []
        assert w.stats().pending == 1
        w.advance(0.001)
        w.until(lambda: sink.batches == [[1]])
    finally:
        w.shutdown()


def test_items_are_written_in_the_order_they_were_put(twin: MakeTwin, clock: FakeClock) -> None:
    sink = ScriptedSink()
    w = twin(sink, clock, max_batch=7, max_delay=1.0)
    for i in range(100):
        w.put(i)
    w.flush()
    assert sink.items == list(range(100))
    assert all(len(b) <= 7 for b in sink.batches)


def test_flush_writes_a_partial_batch_now(twin: MakeTwin, clock: FakeClock) -> None:
    sink = ScriptedSink()
    w = twin(sink, clock, max_batch=50, max_delay=60.0)
    w.put(1)
    w.flush()
    assert sink.batches == [[1]]
    w.flush()  # nothing pending: returns at once
    assert w.stats().batches == 1


# -- back-pressure and overflow -------------------------------------------------------


class GatedSink(ScriptedSink):
    """Blocks every call until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __call__(self, batch: list[Any]) -> None:
        self.entered.set()
        assert self.gate.wait(10.0), "the test never opened the gate"
        super().__call__(batch)


def test_block_overflow_makes_put_wait_for_room(kind: str, clock: FakeClock) -> None:
    sink = GatedSink()
    w = Twin(kind, sink, clock, max_batch=2, max_delay=60.0, max_pending=2)  # type: ignore[arg-type]
    try:
        w.put(1)
        w.put(2)  # a full batch: taken by the worker, which blocks in the sink
        w.until(sink.entered.is_set)
        accepted = [1, 2]
        for i in range(3, 20):  # bounded: fills what waits (and what is queued for the sink)
            w.turn()
            if w.stats().pending == 2:
                with pytest.raises(WriterFullError, match="not queued"):
                    w.put(i, timeout=0)
                refused = i
                break
            w.put(i, timeout=0)
            accepted.append(i)
        else:
            pytest.fail("the writer never pushed back")
        stats = w.stats()
        assert stats.pending == 2
        assert stats.dropped == 0
        assert stats.items_in == len(accepted)
        if kind == "sync":
            unblocked = threading.Timer(0.05, sink.gate.set)
            unblocked.start()
            assert w.put(refused) is True  # blocks until the worker takes the next batch
            unblocked.join()
        else:
            sink.gate.set()
            assert w.put(refused) is True
        w.flush()
        assert sink.items == [*accepted, refused]
    finally:
        sink.gate.set()
        w.shutdown()


class SteppedSink(ScriptedSink):
    """Writes one batch per ``steps.release()``; counts the batches it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.steps = threading.Semaphore(0)
        self.handed = 0

    def __call__(self, batch: list[Any]) -> None:
        self.handed += 1
        assert self.steps.acquire(timeout=10.0), "the test never let the batch through"
        super().__call__(batch)


def test_a_put_that_found_the_writer_full_resumes_once_half_of_it_is_written() -> None:
    # Resuming at the first free slot would wake the producer for every batch
    # (and, on CPython, hand the GIL back and forth each time): it waits
    # until at most half of max_pending is left, then puts in one burst.
    sink = SteppedSink()
    w: BatchWriter[int] = BatchWriter(sink, max_batch=2, max_delay=60.0, max_pending=8)
    try:
        w.put(0)
        w.put(1)
        deadline = time.monotonic() + 5.0
        while sink.handed < 1 and time.monotonic() < deadline:  # bounded: [0, 1] in the sink
            time.sleep(0.005)
        for i in range(2, 10):  # eight pending: full
            w.put(i, timeout=0)
        assert w.stats().pending == 8
        done = threading.Event()
        blocked = threading.Thread(target=lambda: (w.put(10), done.set()))
        blocked.start()
        sink.steps.release()  # [0, 1] written, [2, 3] taken: six pending, more than half
        deadline = time.monotonic() + 5.0
        while sink.handed < 2 and time.monotonic() < deadline:  # bounded
            time.sleep(0.005)
        assert sink.handed == 2
        assert not done.wait(0.2)  # still waiting: one batch of room is not enough
        sink.steps.release()  # [2, 3] written, [4, 5] taken: four pending, half
        assert done.wait(5.0)
        blocked.join(5.0)
        for _ in range(10):
            sink.steps.release()
        w.close(timeout=10.0)
        assert sink.items == list(range(11))
    finally:
        for _ in range(10):
            sink.steps.release()
        w.close(timeout=10.0)


@pytest.mark.parametrize("overflow", ["drop_oldest", "reject"])
def test_shedding_overflow_counts_every_dropped_item_and_passes_it_to_on_drop(
    kind: str, clock: FakeClock, overflow: str
) -> None:
    sink = GatedSink()
    dropped: list[int] = []
    w = Twin(
        kind,  # type: ignore[arg-type]
        sink,
        clock,
        max_batch=2,
        max_delay=60.0,
        max_pending=2,
        overflow=overflow,
        on_drop=dropped.append,
    )
    try:
        w.put(1)
        w.put(2)
        w.until(sink.entered.is_set)  # [1, 2] in flight, blocked
        results: dict[int, bool] = {}
        for i in range(3, 30):  # bounded: until three items were shed
            w.turn()
            results[i] = w.put(i)
            if len(dropped) == 3:
                break
        assert len(dropped) == 3
        stats = w.stats()
        assert stats.dropped == 3
        assert stats.pending == 2
        assert accounted(stats)
        if overflow == "reject":
            assert dropped == [i for i, ok in results.items() if not ok]
            assert dropped == list(results)[-3:]  # the newest were refused
        else:
            assert all(results.values())
            assert dropped == sorted(dropped)  # the oldest pending went first
        sink.gate.set()
        w.flush()
        assert sink.items == sorted(sink.items)
        assert not set(sink.items) & set(dropped)
        assert sorted(sink.items + dropped) == list(range(1, max(results) + 1))
    finally:
        sink.gate.set()
        w.shutdown()


# -- failures: retries, dead letters, splitting ---------------------------------------


def test_a_transient_failure_is_retried_and_the_batch_written_once(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    sink.fail_next = 2
    dead = DeadLetters()
    w = twin(sink, clock, max_batch=3, retry_attempts=3, dead_letter=dead)
    for i in range(3):
        w.put(i)
    w.flush()
    assert sink.batches == [[0, 1, 2]]
    assert dead.batches == []
    stats = w.stats()
    assert stats.retries == 2
    assert stats.written == 3
    assert accounted(stats)


def test_after_the_retry_budget_the_batch_goes_to_the_dead_letters(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    sink.fail_next = 3
    dead = DeadLetters()
    w = twin(sink, clock, max_batch=2, retry_attempts=3, dead_letter=dead)
    w.put("a")
    w.put("b")
    w.put("c")
    w.flush()
    assert dead.items == ["a", "b"]
    assert isinstance(dead.batches[0][1], TransientError)
    assert sink.items == ["c"]  # the next batch is written once the sink is back
    stats = w.stats()
    assert stats.dead_lettered == 2
    assert stats.written == 1
    assert accounted(stats)


def test_retries_wait_with_backoff_on_the_injected_sleep(kind: str) -> None:
    clock = FakeClock()
    sink = ScriptedSink()
    sink.fail_next = 3
    w = Twin(kind, sink, clock, max_batch=1, retry_attempts=4, retry_backoff=1.0)  # type: ignore[arg-type]
    try:
        start = clock()
        w.put(1)
        w.flush()
        waited = clock() - start
        # 1 + 2 + 4 s of backoff, each cut by up to 50 % jitter.
        assert 3.5 <= waited <= 7.0
    finally:
        w.shutdown()


def test_a_permanent_error_is_not_retried_and_the_bad_row_is_isolated(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    sink.poison = {5}
    dead = DeadLetters()
    w = twin(sink, clock, max_batch=8, dead_letter=dead)
    for i in range(8):
        w.put(i)
    w.flush()
    assert dead.items == [5]
    assert isinstance(dead.batches[0][1], PermanentError)
    assert sink.items == [0, 1, 2, 3, 4, 6, 7]  # neighbours written, order kept
    stats = w.stats()
    assert stats.retries == 0
    assert stats.splits == 3
    assert accounted(stats)


def test_without_splitting_the_whole_batch_is_dead_lettered(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    sink.poison = {1}
    dead = DeadLetters()
    w = twin(sink, clock, max_batch=4, dead_letter=dead, split_on_failure=False)
    for i in range(4):
        w.put(i)
    w.flush()
    assert dead.items == [0, 1, 2, 3]
    assert sink.items == []


def test_errors_outside_retry_on_are_permanent(twin: MakeTwin, clock: FakeClock) -> None:
    calls: list[list[int]] = []

    def sink(batch: list[int]) -> None:
        calls.append(batch)
        raise KeyError("no such thing")

    dead = DeadLetters()
    w = twin(sink, clock, max_batch=1, retry_on=ConnectionError, dead_letter=dead)
    w.put(1)
    w.flush()
    assert calls == [[1]]
    assert dead.items == [1]


def test_a_failing_dead_letter_handler_counts_and_logs_the_items(
    twin: MakeTwin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(items: list[Any], error: BaseException) -> None:
        raise OSError("disk full")

    sink = ScriptedSink()
    sink.poison = {"lost-row-42"}
    w = twin(sink, clock, max_batch=1, dead_letter=broken)
    with caplog.at_level(logging.ERROR, logger="botscale.batch"):
        w.put("lost-row-42")
        w.flush()
    stats = w.stats()
    assert stats.dead_letter_failures == 1
    assert stats.dead_lettered == 0
    assert accounted(stats)
    assert "lost-row-42" in caplog.text
    assert "disk full" in caplog.text


def test_without_a_dead_letter_file_the_items_are_logged_at_error(
    twin: MakeTwin, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ScriptedSink()
    sink.poison = {"row-7"}
    w = twin(sink, clock, max_batch=1)
    with caplog.at_level(logging.ERROR, logger="botscale.batch"):
        w.put("row-7")
        w.flush()
    assert w.stats().dead_lettered == 1
    assert any(r.levelno == logging.ERROR and "row-7" in r.getMessage() for r in caplog.records)


def test_a_retry_policy_can_be_given_instead_of_the_retry_settings(
    twin: MakeTwin, clock: FakeClock
) -> None:
    policy = retry(on=TransientError, attempts=2, clock=clock, sleep=clock.sleep)
    policy.async_sleep = clock.asleep
    sink = ScriptedSink()
    sink.fail_next = 1
    w = twin(sink, clock, max_batch=1, retry=policy)
    w.put(1)
    w.flush()
    assert sink.items == [1]
    assert policy.stats.retries == 1


# -- shutdown -------------------------------------------------------------------------


def test_close_drains_is_idempotent_and_put_after_close_raises(
    twin: MakeTwin, clock: FakeClock
) -> None:
    sink = ScriptedSink()
    w = twin(sink, clock, max_batch=50, max_delay=60.0)
    for i in range(120):
        w.put(i)
    w.close()
    assert sink.items == list(range(120))
    w.close()  # harmless
    w.flush()  # nothing to do
    assert w.writer.closed
    with pytest.raises(WriterClosedError, match="closed"):
        w.put(999)
    stats = w.stats()
    assert stats.pending == 0
    assert stats.written == 120
    assert accounted(stats)


def test_close_timeout_sends_what_is_left_to_the_dead_letters(kind: str) -> None:
    sink = ScriptedSink()
    sink.fail_next = 10**6  # the database is down for good
    dead = DeadLetters()
    w = Twin(
        kind,  # type: ignore[arg-type]
        sink,
        None,
        max_batch=2,
        max_delay=60.0,
        retry_attempts=100,
        retry_backoff=30.0,
        retry_max_backoff=30.0,
        dead_letter=dead,
    )
    try:
        for i in range(5):
            w.put(i)
        w.close(timeout=0.05)  # the backoff wait is cut short, nothing is lost
        assert sorted(dead.items) == [0, 1, 2, 3, 4]
        assert any(isinstance(e, WriterClosedError) for _, e in dead.batches)
        assert accounted(w.stats())
        assert w.stats().dead_lettered == 5
    finally:
        w.shutdown()


def test_sync_context_manager_drains() -> None:
    rows: list[int] = []
    with BatchWriter(rows.extend, max_batch=10, max_delay=60.0) as w:
        for i in range(25):
            w.put(i)
    assert rows == list(range(25))


async def test_async_context_manager_drains() -> None:
    rows: list[int] = []

    async def sink(batch: list[int]) -> None:
        rows.extend(batch)

    async with AsyncBatchWriter(sink, max_batch=10, max_delay=60.0) as w:
        for i in range(25):
            await w.put(i)
    assert rows == list(range(25))
    with pytest.raises(WriterClosedError):
        await w.put(1)
    await w.aclose()


async def test_a_blocked_put_fails_clearly_when_the_writer_closes() -> None:
    gate = asyncio.Event()

    async def sink(batch: list[int]) -> None:
        await gate.wait()

    w: AsyncBatchWriter[int] = AsyncBatchWriter(sink, max_batch=1, max_pending=1)
    await w.put(1)
    await asyncio.sleep(0)  # the worker takes item 1 and blocks
    await w.put(2)
    blocked = asyncio.ensure_future(w.put(3))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(w.aclose())
    await asyncio.sleep(0)
    with pytest.raises(WriterClosedError):
        await blocked
    gate.set()
    await closing
    assert w.stats().written == 2


async def test_cancelled_worker_rescues_pending_items_into_the_dead_letters() -> None:
    dead = DeadLetters()
    gate = asyncio.Event()

    async def sink(batch: list[int]) -> None:
        await gate.wait()

    w: AsyncBatchWriter[int] = AsyncBatchWriter(sink, max_batch=2, dead_letter=dead)
    for i in range(5):
        await w.put(i)
    await asyncio.sleep(0)  # [0, 1] in flight
    for task in w._workers:
        task.cancel()  # what asyncio.run does to a writer nobody closed
    await asyncio.gather(*w._workers, return_exceptions=True)
    assert sorted(dead.items) == [0, 1, 2, 3, 4]
    assert accounted(w.stats())


# -- sinks of every shape -------------------------------------------------------------


async def test_async_writer_runs_a_sync_sink_off_the_event_loop_on_one_thread() -> None:
    sink = ScriptedSink()
    async with AsyncBatchWriter(sink, max_batch=3) as w:
        for i in range(30):
            await w.put(i)
        await w.flush()
    assert threading.get_ident() not in sink.threads
    assert len(sink.threads) == 1
    assert sink.items == list(range(30))


def test_sync_writer_accepts_an_async_sink() -> None:
    sink = AsyncScriptedSink()
    with BatchWriter(sink, max_batch=4) as w:
        for i in range(10):
            w.put(i)
    assert sink.items == list(range(10))


async def test_unordered_sink_may_be_written_concurrently() -> None:
    running = 0
    peak = 0
    rows: list[int] = []

    async def sink(batch: list[int]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        rows.extend(batch)
        running -= 1

    async with AsyncBatchWriter(sink, max_batch=2, ordered=False, concurrency=3) as w:
        for i in range(30):
            await w.put(i)
    assert sorted(rows) == list(range(30))
    assert peak > 1


def test_sink_columns_check_rows_at_put(twin: MakeTwin) -> None:
    class Sink(ScriptedSink):
        columns = ("user_id", "ok")
        name = "answers-sink"

    sink = Sink()
    w = twin(sink)
    with pytest.raises(ValueError, match=r"3 values but answers-sink expects 2 columns"):
        w.put((1, True, "extra"))
    with pytest.raises(TypeError, match="must be a tuple, a list or a mapping"):
        w.put("12")
    with pytest.raises(ValueError, match="keys must be exactly user_id, ok"):
        w.put({"user_id": 1})
    w.put({"ok": False, "user_id": 7})  # a mapping becomes a tuple in column order
    w.put([8, True])
    w.flush()
    assert sink.items == [(7, False), [8, True]]
    assert w.stats().items_in == 2  # rejected rows never entered


def test_sink_arity_checks_rows_at_put(twin: MakeTwin) -> None:
    class Sink(ScriptedSink):
        arity = 3

    w = twin(Sink())
    with pytest.raises(ValueError, match="has 2 values"):
        w.put((1, 2))


# -- bad configuration ----------------------------------------------------------------


@pytest.mark.parametrize("cls", [BatchWriter, AsyncBatchWriter])
@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"max_batch": 0}, ConfigurationError, "max_batch"),
        ({"max_batch": 2.5}, TypeError, "max_batch"),
        ({"max_delay": 0}, ConfigurationError, "max_delay"),
        ({"max_delay": -1.0}, ConfigurationError, "max_delay"),
        ({"max_delay": float("nan")}, ConfigurationError, "max_delay"),
        ({"max_batch": 100, "max_pending": 99}, ConfigurationError, "max_pending"),
        ({"overflow": "drop"}, ConfigurationError, "overflow"),
        ({"concurrency": 2}, ConfigurationError, "concurrency"),
        ({"concurrency": 0, "ordered": False}, ConfigurationError, "concurrency"),
        ({"retry_attempts": 0}, ConfigurationError, "retry_attempts"),
        ({"retry_backoff": 5.0, "retry_max_backoff": 1.0}, ConfigurationError, "retry_max"),
        ({"close_timeout": -1}, ConfigurationError, "close_timeout"),
        ({"on_drop": 3}, TypeError, "on_drop"),
        ({"dead_letter": "file.jsonl"}, TypeError, "dead_letter"),
        ({"retry": retry(on=OSError), "retry_attempts": 3}, ConfigurationError, "retry_attempts"),
    ],
)
def test_bad_configuration_fails_at_construction_naming_the_argument(
    cls: type[Any], kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        cls(lambda batch: None, **kwargs)


@pytest.mark.parametrize("cls", [BatchWriter, AsyncBatchWriter])
def test_a_sink_must_be_callable(cls: type[Any]) -> None:
    with pytest.raises(TypeError, match="sink must be a callable"):
        cls("bot.db")


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        BatchWriter(print, max_batch=10, max_pending=5)


# -- dead-letter file -----------------------------------------------------------------


def test_dead_letter_file_appends_json_lines_that_read_back(tmp_path: Any) -> None:
    path = tmp_path / "sub" / "dead.jsonl"
    handler = DeadLetterFile(path)
    handler([(1, "a"), (2, object())], ConnectionError("db down"))
    handler([(3, None)], ValueError("bad"))
    records = handler.read()
    assert [r["item"][0] for r in records] == [1, 2, 3]
    assert records[0]["error"] == "ConnectionError: db down"
    assert records[1]["item"][1].startswith("<object object")  # repr of what JSON cannot hold
    assert DeadLetterFile(tmp_path / "none.jsonl").read() == []


# -- signals, in process --------------------------------------------------------------


def test_sigterm_raises_system_exit_and_the_with_block_drains() -> None:
    rows: list[int] = []
    w: BatchWriter[int] = BatchWriter(rows.extend, max_batch=1000, max_delay=60.0)
    restore = install_signal_handlers(w, exit_code=3)

    def bot() -> None:
        with w:
            for i in range(100):
                w.put(i)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10**6):  # bounded: the signal ends this loop
                pass

    try:
        with pytest.raises(SystemExit) as exit_info:
            bot()
        assert exit_info.value.code == 3
        assert rows == list(range(100))
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_inside_put_waits_until_the_item_is_accounted_for() -> None:
    def signal_myself(item: int) -> None:  # runs inside put's bookkeeping
        os.kill(os.getpid(), signal.SIGTERM)

    gate = threading.Event()

    def sink(batch: list[int]) -> None:
        gate.wait(10.0)

    w: BatchWriter[int] = BatchWriter(
        sink, max_batch=1, max_pending=1, overflow="reject", on_drop=signal_myself
    )
    restore = install_signal_handlers(w)

    def bot() -> None:
        for i in range(10):  # the writer fills up; the first refused item signals
            w.put(i)

    try:
        with pytest.raises(SystemExit):
            bot()
        stats = w.stats()
        assert stats.dropped == 1
        assert accounted(stats)
        assert stats.items_in == stats.dropped + stats.pending + stats.in_flight + stats.written
    finally:
        restore()
        gate.set()
        w.close()


def test_install_signal_handlers_wants_a_writer() -> None:
    with pytest.raises(TypeError, match="BatchWriter or an AsyncBatchWriter"):
        install_signal_handlers(object())  # type: ignore[arg-type]


def test_install_for_an_async_writer_needs_a_running_loop() -> None:
    w: AsyncBatchWriter[int] = AsyncBatchWriter(print)
    with pytest.raises(RuntimeError, match="running event loop"):
        install_signal_handlers(w)


# -- put_nowait -----------------------------------------------------------------------


@pytest.mark.parametrize("sink_kind", ["sync", "async"])
async def test_put_nowait_never_waits(sink_kind: str) -> None:
    sink: Any = ScriptedSink() if sink_kind == "sync" else AsyncScriptedSink()
    dropped: list[int] = []
    w: AsyncBatchWriter[int] = AsyncBatchWriter(sink, max_batch=2, max_delay=60.0, max_pending=2)
    assert w.put_nowait(1) is True
    assert w.put_nowait(2) is True
    if w.stats().pending == 2:  # the async sink's task has not taken them yet
        with pytest.raises(WriterFullError, match="is full"):
            w.put_nowait(3)
    await w.aclose()
    assert sink.items == [1, 2]
    shedding: AsyncBatchWriter[int] = AsyncBatchWriter(
        ScriptedSink(), max_batch=1, max_pending=1, overflow="reject", on_drop=dropped.append
    )
    results = [shedding.put_nowait(i) for i in range(50)]
    assert results.count(False) == len(dropped) == shedding.stats().dropped
    await shedding.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_unordered_sync_sink_is_written_by_several_threads_at_once(kind: str) -> None:
    meeting = threading.Barrier(2, timeout=10.0)  # passes only if two batches meet in the sink
    rows: list[int] = []
    lock = threading.Lock()

    def sink(batch: list[int]) -> None:
        if batch[0] < 4:
            meeting.wait()
        with lock:
            rows.extend(batch)

    w = Twin(kind, sink, None, max_batch=2, ordered=False, concurrency=2)  # type: ignore[arg-type]
    try:
        for i in range(10):
            w.put(i)
        w.flush()
        assert sorted(rows) == list(range(10))
        assert w.stats().written == 10
    finally:
        w.shutdown()
