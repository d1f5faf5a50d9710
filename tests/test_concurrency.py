"""ConcurrencyLimiter (threads and asyncio), AsyncKeyedLock and KeyedLock."""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botscale import (
    AsyncKeyedLock,
    ConcurrencyLimiter,
    ConcurrencyStats,
    ConcurrencyTimeout,
    ConfigurationError,
    KeyedLock,
)

pytestmark = pytest.mark.timeout(60)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Synchronisation with other threads (not a timing rule): poll, bounded."""
    deadline = time.monotonic() + 10.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.001)


def waiting_is(stats: Callable[[], ConcurrencyStats], n: int) -> bool:
    return stats().waiting == n


def locks_waiting_is(locks: KeyedLock, n: int) -> bool:
    return locks.waiting("chat") == n


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


class Gauge:
    """Counts calls inside a section and remembers the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


# -- ConcurrencyLimiter: the cap ------------------------------------------------------


def test_threads_never_exceed_the_limit() -> None:
    limiter = ConcurrencyLimiter(3)
    gauge = Gauge()

    def work() -> None:
        for _ in range(100):
            with limiter:
                gauge.enter()
                assert limiter.in_flight <= 3
                time.sleep(0)
                gauge.leave()

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = limiter.stats()
    assert gauge.peak <= 3
    assert stats.peak_in_flight <= 3
    assert stats.acquired == 1200
    assert (stats.in_flight, stats.waiting) == (0, 0)


async def test_tasks_never_exceed_the_limit_and_reach_it() -> None:
    limiter = ConcurrencyLimiter(5)
    gauge = Gauge()

    async def work() -> None:
        async with limiter:
            gauge.enter()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            gauge.leave()

    await asyncio.gather(*(work() for _ in range(200)))
    assert gauge.peak == 5
    assert limiter.stats().peak_in_flight == 5
    assert limiter.stats().acquired == 200
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


def test_reports_in_flight_and_waiting() -> None:
    limiter = ConcurrencyLimiter(2, name="api")
    go = threading.Event()

    def hold() -> None:
        with limiter:
            go.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for t in threads:
        t.start()
    wait_until(lambda: limiter.waiting == 3, "three threads wait")
    assert limiter.in_flight == 2
    assert "in_flight=2 waiting=3" in repr(limiter)
    go.set()
    for t in threads:
        t.join()
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_decorator_sync_and_async_keeps_signatures() -> None:
    limiter = ConcurrencyLimiter(1)
    gauge = Gauge()

    @limiter
    async def ask(prompt: str, *, temperature: float = 0.0) -> str:
        """Ask the model."""
        gauge.enter()
        await asyncio.sleep(0)
        gauge.leave()
        return prompt.upper()

    @limiter
    def lookup(user_id: int) -> int:
        assert limiter.in_flight == 1
        return user_id * 2

    assert inspect.iscoroutinefunction(ask)
    assert ask.__doc__ == "Ask the model."
    assert str(inspect.signature(ask)) == "(prompt: 'str', *, temperature: 'float' = 0.0) -> 'str'"
    assert await asyncio.gather(*(ask(w) for w in "abc")) == ["A", "B", "C"]
    assert gauge.peak == 1
    assert lookup(21) == 42
    assert limiter.in_flight == 0


def test_slot_is_released_when_the_body_raises() -> None:
    limiter = ConcurrencyLimiter(1)
    with pytest.raises(KeyError), limiter:
        raise KeyError("x")
    assert limiter.in_flight == 0
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    limiter.release()


# -- ConcurrencyLimiter: fairness -----------------------------------------------------------


async def test_tasks_get_slots_in_arrival_order() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[int] = []
    await limiter.acquire_async()

    async def work(i: int) -> None:
        async with limiter:
            order.append(i)
            await asyncio.sleep(0)

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(work(i)))
        await settle(1)
    assert limiter.waiting == 10
    limiter.release()
    await asyncio.gather(*tasks)
    assert order == list(range(10))


def test_threads_get_slots_in_arrival_order() -> None:
    limiter = ConcurrencyLimiter(1)
    order: list[int] = []
    limiter.acquire()

    def work(i: int) -> None:
        with limiter:
            order.append(i)

    threads = []
    for i in range(8):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        threads.append(t)
        wait_until(functools.partial(waiting_is, limiter.stats, i + 1), f"thread {i} waits")
    limiter.release()
    for t in threads:
        t.join()
    assert order == list(range(8))


async def test_released_slot_cannot_be_taken_by_a_newcomer() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire_async()
    waiter = asyncio.create_task(limiter.acquire_async())
    await settle()
    limiter.release()  # handed to the waiter, which has not run yet
    assert not limiter.try_acquire()
    await waiter
    assert limiter.in_flight == 1
    limiter.release()


async def test_threads_and_tasks_share_one_limiter() -> None:
    limiter = ConcurrencyLimiter(1)
    holding = threading.Event()
    go = threading.Event()

    def hold() -> None:
        with limiter:
            holding.set()
            go.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    await asyncio.to_thread(holding.wait, 10)
    task = asyncio.create_task(limiter.acquire_async())
    await settle()
    assert limiter.waiting == 1
    go.set()  # the thread releases: the task is woken from another thread
    await asyncio.wait_for(task, 10)
    assert limiter.in_flight == 1
    limiter.release()
    thread.join()


# -- ConcurrencyLimiter: timeouts and cancellation ------------------------------------------


def test_thread_timeout_raises_a_clear_error_and_leaves_no_waiter() -> None:
    limiter = ConcurrencyLimiter(1, timeout=0.02, name="gemini")
    limiter.acquire()
    with pytest.raises(ConcurrencyTimeout, match=r"gemini: no slot free within 0\.02 s") as info:
        limiter.acquire()
    assert isinstance(info.value, TimeoutError)
    assert "all 1 in flight" in str(info.value)
    with pytest.raises(ConcurrencyTimeout):
        limiter.acquire(timeout=0)
    stats = limiter.stats()
    assert (stats.in_flight, stats.waiting, stats.timeouts) == (1, 0, 2)
    limiter.release()
    limiter.acquire()  # free again at once
    limiter.release()


async def test_async_timeout_raises_and_leaves_no_waiter() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire_async()
    with pytest.raises(ConcurrencyTimeout, match=r"within 0\.01 s"):
        await limiter.acquire_async(timeout=0.01)
    assert limiter.waiting == 0
    assert limiter.stats().timeouts == 1
    limiter.release()
    assert limiter.in_flight == 0


async def test_explicit_infinite_timeout_overrides_the_default() -> None:
    limiter = ConcurrencyLimiter(1, timeout=0.01)
    await limiter.acquire_async()
    waiter = asyncio.create_task(limiter.acquire_async(timeout=math.inf))
    await asyncio.sleep(0.03)
    assert not waiter.done()
    limiter.release()
    await waiter
    limiter.release()


async def test_cancelled_waiter_does_not_leak_a_slot() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire_async()
    waiter = asyncio.create_task(limiter.acquire_async())
    await settle()
    assert limiter.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.waiting == 0
    assert limiter.stats().cancelled == 1
    limiter.release()
    assert limiter.in_flight == 0
    assert limiter.try_acquire()
    limiter.release()


async def test_waiter_cancelled_just_after_the_hand_off_passes_the_slot_on() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire_async()
    first = asyncio.create_task(limiter.acquire_async())
    second = asyncio.create_task(limiter.acquire_async())
    await settle()
    limiter.release()  # granted to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert limiter.in_flight == 1
    limiter.release()
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_cancellation_storm_leaves_the_limiter_consistent() -> None:
    limiter = ConcurrencyLimiter(3)

    async def work() -> None:
        async with limiter:
            await asyncio.sleep(0)

    for _ in range(20):
        tasks = [asyncio.create_task(work()) for _ in range(30)]
        await asyncio.sleep(0)
        for t in tasks[::3]:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert (limiter.in_flight, limiter.waiting) == (0, 0)


def test_release_without_a_slot_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without a held slot"):
        ConcurrencyLimiter(2).release()


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"limit": 0}, ValueError, "limit"),
        ({"limit": -4}, ValueError, "limit"),
        ({"limit": 2.5}, TypeError, "limit"),
        ({"limit": True}, TypeError, "limit"),
        ({"limit": 2, "timeout": -1.0}, ValueError, "timeout"),
        ({"limit": 2, "timeout": math.nan}, ValueError, "timeout"),
    ],
)
def test_bad_input_names_the_argument(
    kwargs: dict[str, object], error: type[Exception], argument: str
) -> None:
    with pytest.raises(error, match=argument):
        ConcurrencyLimiter(**kwargs)  # type: ignore[arg-type]


def test_bad_call_timeout_is_rejected_before_queueing() -> None:
    limiter = ConcurrencyLimiter(1)
    limiter.acquire()
    with pytest.raises(ConfigurationError, match="timeout"):
        limiter.acquire(timeout=-1)
    assert limiter.waiting == 0


async def test_bad_async_call_timeout_is_rejected_before_queueing() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire_async()
    with pytest.raises(ConfigurationError, match="timeout"):
        await limiter.acquire_async(timeout=-1)
    assert limiter.waiting == 0


# -- AsyncKeyedLock ----------------------------------------------------------------------------


async def test_same_key_runs_in_arrival_order_one_at_a_time() -> None:
    locks = AsyncKeyedLock()
    order: list[int] = []
    gauge = Gauge()

    async def handle(i: int) -> None:
        async with locks.lock(42):
            gauge.enter()
            order.append(i)
            await asyncio.sleep(0)
            gauge.leave()

    await asyncio.gather(*(handle(i) for i in range(50)))
    assert order == list(range(50))
    assert gauge.peak == 1
    assert locks._queues == {}


async def test_different_keys_run_concurrently() -> None:
    locks = AsyncKeyedLock()
    release_a = asyncio.Event()
    done: list[str] = []

    async def slow_a() -> None:
        async with locks.lock("a"):
            await release_a.wait()
            done.append("a")

    async def quick_b() -> None:
        async with locks.lock("b"):
            done.append("b")

    task_a = asyncio.create_task(slow_a())
    await settle()
    await asyncio.wait_for(quick_b(), 5)
    assert done == ["b"]
    assert locks.locked("a")
    assert not locks.locked("b")
    release_a.set()
    await task_a
    assert done == ["b", "a"]


async def test_idle_keys_cost_no_memory() -> None:
    locks = AsyncKeyedLock()

    async def handle(key: int) -> None:
        async with locks.lock(key):
            await asyncio.sleep(0)

    await asyncio.gather(*(handle(k % 700) for k in range(2000)))
    assert len(locks) == 0
    assert locks._queues == {}


async def test_cancelled_waiter_leaves_the_line_and_memory() -> None:
    locks = AsyncKeyedLock()
    await locks.acquire("chat")
    order: list[int] = []

    async def handle(i: int) -> None:
        async with locks.lock("chat"):
            order.append(i)

    tasks = [asyncio.create_task(handle(i)) for i in range(3)]
    await settle()
    assert locks.waiting("chat") == 3
    tasks[1].cancel()
    await settle()
    assert locks.waiting("chat") == 2
    locks.release("chat")
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 2]
    assert locks._queues == {}


async def test_key_handed_to_a_task_cancelled_before_it_ran_passes_on() -> None:
    locks = AsyncKeyedLock()
    await locks.acquire("k")
    first = asyncio.create_task(locks.acquire("k"))
    second = asyncio.create_task(locks.acquire("k"))
    await settle()
    locks.release("k")  # handed to `first`...
    first.cancel()  # ...cancelled before it resumed
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)
    assert locks.locked("k")
    locks.release("k")
    assert locks._queues == {}


async def test_release_by_a_cancelled_waiter_already_dropped() -> None:
    locks = AsyncKeyedLock()
    await locks.acquire("k")
    waiter = asyncio.create_task(locks.acquire("k"))
    await settle()
    waiter.cancel()  # its future is cancelled at once...
    locks.release("k")  # ...and release() drops it before the task runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert locks._queues == {}


def test_releasing_an_unheld_key_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not held"):
        AsyncKeyedLock().release("nobody")
    with pytest.raises(RuntimeError, match="not held"):
        KeyedLock().release("nobody")


@settings(max_examples=40, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=40),
    cancel=st.sets(st.integers(0, 39)),
)
def test_any_interleaving_keeps_per_key_order_and_leaves_nothing(
    jobs: list[tuple[int, int]], cancel: set[int]
) -> None:
    async def scenario() -> None:
        locks = AsyncKeyedLock()
        entered: list[tuple[int, int]] = []
        holders: dict[int, int] = {}

        async def job(i: int, key: int, yields: int) -> None:
            async with locks.lock(key):
                assert holders.get(key, 0) == 0
                holders[key] = 1
                entered.append((key, i))
                for _ in range(yields):
                    await asyncio.sleep(0)
                holders[key] = 0

        tasks = [asyncio.create_task(job(i, k, y)) for i, (k, y) in enumerate(jobs)]
        await asyncio.sleep(0)
        for i in cancel:
            if i < len(tasks):
                tasks[i].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for key in {k for k, _ in jobs}:
            seen = [i for k, i in entered if k == key]
            assert seen == sorted(seen)
        assert locks._queues == {}

    asyncio.run(scenario())


# -- KeyedLock (threads) -----------------------------------------------------------------------


def test_thread_keyed_lock_fifo_per_key() -> None:
    locks = KeyedLock()
    order: list[int] = []
    assert locks.acquire("chat")

    def work(i: int) -> None:
        with locks.lock("chat"):
            order.append(i)

    threads = []
    for i in range(8):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        threads.append(t)
        wait_until(functools.partial(locks_waiting_is, locks, i + 1), f"thread {i} waits")
    locks.release("chat")
    for t in threads:
        t.join()
    assert order == list(range(8))
    assert locks._queues == {}


def test_thread_keyed_lock_mutual_exclusion_and_no_leftovers() -> None:
    locks = KeyedLock()
    gauges = {k: Gauge() for k in range(4)}

    def work(seed: int) -> None:
        for n in range(200):
            key = (seed + n) % 4
            with locks.lock(key):
                gauges[key].enter()
                time.sleep(0)
                gauges[key].leave()

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g.peak == 1 for g in gauges.values())
    assert len(locks) == 0
    assert locks._queues == {}


def test_thread_keyed_lock_other_keys_do_not_wait() -> None:
    locks = KeyedLock()
    holding, go = threading.Event(), threading.Event()

    def hold() -> None:
        with locks.lock("a"):
            holding.set()
            go.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(10)
    assert locks.acquire("b", timeout=0)
    locks.release("b")
    go.set()
    t.join()


def test_thread_keyed_lock_timeout() -> None:
    locks = KeyedLock()
    assert locks.acquire(7)
    assert not locks.acquire(7, timeout=0.01)
    with pytest.raises(ConcurrencyTimeout, match="key 7 still held"), locks.lock(7, timeout=0.01):
        pass
    assert locks.waiting(7) == 0
    locks.release(7)
    assert locks._queues == {}


def test_thread_keyed_lock_bad_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        KeyedLock().lock("k", timeout=-1)


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "concurrency.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 5
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "20 answers, at most 3 at once" in out
    assert "9900 True" in out
    assert "weather-api: no slot free within 0.05 s (all 1 in flight, 0 waiting)" in out
    assert "True\n0\n" in out
    assert "300 True" in out
    assert "10 0" in out
