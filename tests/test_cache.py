"""cached: TTL + LRU caching of sync and async functions with one computation per key in flight."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from botscale import CacheInfo, ConfigurationError, cached
from botscale._cache import make_key
from botscale.testing import FakeClock


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    """Spin (bounded) until other threads reach a state; synchronisation, not timing."""
    deadline = time.monotonic() + 30.0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


async def _await_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never reached: {what}")


# -- basics ----------------------------------------------------------------------------------


def test_hits_misses_and_expiry(clock: FakeClock) -> None:
    calls: list[int] = []

    @cached(ttl=300.0, maxsize=10, clock=clock)
    def stats(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"user": user_id, "version": len(calls)}

    assert stats(1) == {"user": 1, "version": 1}
    assert stats(1) == {"user": 1, "version": 1}
    clock.advance(299.0)
    assert stats(1)["version"] == 1
    clock.advance(1.0)  # 300 s after it was computed: stale
    assert stats(1)["version"] == 2
    assert calls == [1, 1]
    assert stats.cache_info() == CacheInfo(
        hits=2, misses=2, coalesced=0, size=1, maxsize=10, ttl=300.0, evictions_size=0,
        evictions_ttl=1,
    )  # fmt: skip


def test_least_recently_used_results_are_evicted_and_counted() -> None:
    @cached(maxsize=2)
    def square(x: int) -> int:
        return x * x

    square(1)
    square(2)
    square(1)
    square(3)  # evicts 2
    info = square.cache_info()
    assert (info.size, info.evictions_size) == (2, 1)
    square(1)
    assert square.cache_info().hits == 2
    square(2)
    assert square.cache_info().misses == 4


def test_invalidate_and_clear() -> None:
    calls: list[tuple[Any, ...]] = []

    @cached()
    def load(user_id: int, *, fresh: bool = False) -> int:
        calls.append((user_id, fresh))
        return len(calls)

    assert load(1) == 1
    assert load(1, fresh=True) == 2  # keyword arguments are part of the key
    assert load.invalidate(1) is True
    assert load.invalidate(1) is False
    assert load(1) == 3
    assert load(1, fresh=True) == 2
    load.clear()
    assert load.cache_info().size == 0
    assert load(1, fresh=True) == 4


def test_invalidate_after_expiry_reports_no_live_entry(clock: FakeClock) -> None:
    @cached(ttl=10.0, clock=clock)
    def f(x: int) -> int:
        return x

    f(1)
    clock.advance(10.0)
    assert f.invalidate(1) is False


def test_custom_key_keys_on_part_of_the_arguments() -> None:
    class Db:
        pass

    calls = 0

    @cached(key=lambda user_id, db: user_id)
    def profile(user_id: int, db: Db) -> str:
        nonlocal calls
        calls += 1
        return f"user {user_id}"

    assert profile(7, Db()) == profile(7, Db()) == "user 7"
    assert calls == 1
    assert profile.invalidate(7, Db()) is True


def test_default_key_separates_positional_and_keyword_arguments() -> None:
    assert make_key(1, 2) == (1, 2)
    assert make_key(1, b=2) != make_key(1, 2)
    assert make_key(a=1, b=2) == make_key(b=2, a=1)
    assert hash(make_key(1, b=(2, 3)))


def test_exceptions_are_not_cached() -> None:
    outcomes: list[Any] = [ValueError("db down"), 42]

    @cached()
    def flaky() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)

    with pytest.raises(ValueError, match="db down"):
        flaky()
    assert flaky() == 42
    assert flaky() == 42
    assert flaky.cache_info().misses == 2


def test_the_wrapper_keeps_name_signature_and_kind() -> None:
    def plain(user_id: int, *, lang: str = "en") -> str:
        """Docs."""
        return lang

    async def coro(user_id: int) -> int:
        return user_id

    wrapped = cached()(plain)
    awrapped = cached()(coro)
    assert wrapped.__name__ == "plain"  # type: ignore[attr-defined]
    assert wrapped.__doc__ == "Docs."
    assert wrapped.__wrapped__ is plain  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(plain)
    assert inspect.iscoroutinefunction(awrapped)
    assert not inspect.iscoroutinefunction(wrapped)


def test_methods_are_cached_per_instance() -> None:
    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @cached()
        def load(self, user_id: int) -> int:
            self.calls += 1
            return user_id * 2

    a, b = Repo(), Repo()
    assert a.load(2) == a.load(2) == b.load(2) == 4
    assert (a.calls, b.calls) == (1, 1)


def test_a_function_that_calls_itself_with_its_own_key_does_not_deadlock() -> None:
    depth = 0

    @cached()
    def recurse(n: int) -> int:
        nonlocal depth
        depth += 1
        return n if depth > 3 else recurse(n)

    assert recurse(5) == 5


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0, -1.0, float("inf")])
def test_ttl_must_be_positive_and_finite(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match="ttl must be a finite number > 0"):
        cached(ttl=ttl)


@pytest.mark.parametrize("maxsize", [0, -3])
def test_maxsize_must_be_at_least_one(maxsize: int) -> None:
    with pytest.raises(ValueError, match="maxsize must be an int >= 1"):
        cached(maxsize=maxsize)


def test_wrong_argument_types_are_named() -> None:
    with pytest.raises(TypeError, match="ttl"):
        cached(ttl="300")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be a callable"):
        cached(key="user_id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a callable"):
        cached(clock=3.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs parentheses"):
        cached(len)  # type: ignore[arg-type]


def test_generators_cannot_be_cached() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        cached()(gen)
    with pytest.raises(TypeError, match="generator"):
        cached()(agen)


def test_unhashable_arguments_are_named() -> None:
    @cached()
    def search(user_id: int, filters: list[str], *, tags: Any = ()) -> int:
        return user_id

    with pytest.raises(TypeError, match=r"argument 'filters' \(position 1\) is an unhashable list"):
        search(1, ["a"])
    with pytest.raises(TypeError, match=r"argument 'tags' is an unhashable set"):
        search(1, (), tags={"x"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"filters.*pass key="):
        search.invalidate(1, ["a"])
    assert search(1, ("a",)) == 1  # type: ignore[arg-type]


def test_an_unhashable_custom_key_is_blamed_on_the_key_function() -> None:
    @cached(key=lambda ids: ids)
    def total(ids: list[int]) -> int:
        return sum(ids)

    with pytest.raises(TypeError, match=r"key function of cached .*total.* unhashable list"):
        total([1, 2])


async def test_unhashable_arguments_of_async_functions_are_named() -> None:
    @cached()
    async def fetch(query: dict[str, int]) -> int:
        return 1

    with pytest.raises(TypeError, match="argument 'query'"):
        await fetch({"a": 1})


# -- single flight: threads ------------------------------------------------------------------


def test_100_threads_on_a_cold_key_cause_exactly_one_call() -> None:
    calls = 0
    release = threading.Event()

    @cached()
    def expensive(key: str) -> str:
        nonlocal calls
        calls += 1
        release.wait(timeout=30)
        return key.upper()

    results: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        value = expensive("stats")
        with lock:
            results.append(value)

    threads = [threading.Thread(target=caller) for _ in range(100)]
    for thread in threads:
        thread.start()
    _wait_until(lambda: expensive.cache_info().coalesced == 99, "99 callers waiting")
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert calls == 1
    assert results == ["STATS"] * 100
    info = expensive.cache_info()
    assert (info.misses, info.coalesced, info.hits) == (1, 99, 0)


def test_waiters_of_a_failed_flight_get_its_exception_and_the_next_call_retries() -> None:
    calls = 0
    release = threading.Event()

    @cached()
    def fails_once(key: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            release.wait(timeout=30)
            raise ConnectionError("database unavailable")
        return key

    errors: list[BaseException] = []

    def caller() -> None:
        try:
            fails_once(1)
        except ConnectionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(10)]
    for thread in threads:
        thread.start()
    _wait_until(lambda: fails_once.cache_info().coalesced == 9, "9 callers waiting")
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert len(errors) == 10
    assert calls == 1
    assert fails_once(1) == 1
    assert calls == 2


def test_invalidate_during_a_flight_keeps_its_stale_result_out() -> None:
    release = threading.Event()
    version = 0

    @cached()
    def load(key: int) -> int:
        nonlocal version
        version += 1
        if version == 1:
            release.wait(timeout=30)
        return version

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(load(1)))
    thread.start()
    _wait_until(lambda: load.cache_info().misses == 1, "the first computation to start")
    assert load.invalidate(1) is False  # nothing cached yet, but the flight is dropped
    release.set()
    thread.join(timeout=30)
    assert result == [1]  # the caller gets what it computed...
    assert load(1) == 2  # ...but it was not stored


# -- single flight: asyncio ------------------------------------------------------------------


async def test_100_tasks_on_a_cold_key_cause_exactly_one_call() -> None:
    calls = 0
    release = asyncio.Event()

    @cached(ttl=300.0, maxsize=5000)
    async def user_stats(user_id: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return {"user": user_id}

    tasks = [asyncio.create_task(user_stats(42)) for _ in range(100)]
    await _await_until(lambda: user_stats.cache_info().coalesced == 99, "99 tasks waiting")
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert results == [{"user": 42}] * 100
    assert await user_stats(42) == {"user": 42}
    info = user_stats.cache_info()
    assert (info.hits, info.misses, info.coalesced) == (1, 1, 99)


async def test_async_waiters_of_a_failed_flight_get_its_exception() -> None:
    release = asyncio.Event()
    calls = 0

    @cached()
    async def fails_once() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await release.wait()
            raise TimeoutError("api timed out")
        return 7

    tasks = [asyncio.create_task(fails_once()) for _ in range(5)]
    await _await_until(lambda: fails_once.cache_info().coalesced == 4, "4 tasks waiting")
    release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, TimeoutError) for o in outcomes)
    assert await fails_once() == 7


async def test_a_cancelled_waiter_leaves_the_flight_running() -> None:
    release = asyncio.Event()

    @cached()
    async def slow() -> str:
        await release.wait()
        return "done"

    leader = asyncio.create_task(slow())
    waiter = asyncio.create_task(slow())
    await _await_until(lambda: slow.cache_info().coalesced == 1, "the waiter to join")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    assert await leader == "done"
    assert await slow() == "done"


async def test_when_the_leader_is_cancelled_a_waiter_takes_over() -> None:
    release = asyncio.Event()
    calls = 0

    @cached()
    async def compute() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return calls

    leader = asyncio.create_task(compute())
    waiters = [asyncio.create_task(compute()) for _ in range(3)]
    await _await_until(lambda: compute.cache_info().coalesced == 3, "3 waiters")
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    await _await_until(lambda: calls == 2, "a waiter to lead a new flight")
    release.set()
    assert await asyncio.gather(*waiters) == [2, 2, 2]


def test_tasks_on_different_event_loops_share_one_flight() -> None:
    calls = 0
    started = threading.Event()
    release = threading.Event()

    @cached()
    async def shared(key: int) -> int:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return key

    results: list[int] = []

    def loop_thread() -> None:
        results.append(asyncio.run(shared(9)))

    first = threading.Thread(target=loop_thread)
    first.start()
    started.wait(timeout=30)
    second = threading.Thread(target=loop_thread)
    second.start()
    _wait_until(lambda: shared.cache_info().coalesced == 1, "the second loop to join")
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert results == [9, 9]
    assert calls == 1
