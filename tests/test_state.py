"""MemoryStateStore and its async twin: the contract, stats, strict mode, sessions, threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from botscale import (
    AsyncMemoryStateStore,
    AsyncStateStore,
    ConfigurationError,
    MemoryStateStore,
    StateStore,
    StoreStats,
)
from botscale._state import SessionContext, SessionLocks, check_json_value
from botscale.testing import FakeClock
from contracts.state import AsyncStateStoreContract, StateStoreContract, StoreFactory

# -- the contract, three ways ----------------------------------------------------------------


class TestMemoryStateStoreContract(StateStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> MemoryStateStore:
            return MemoryStateStore(maxsize, ttl, clock=clock)

        return make


class TestStrictMemoryStateStoreContract(StateStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> MemoryStateStore:
            return MemoryStateStore(maxsize, ttl, clock=clock, strict=True)

        return make


class TestAsyncMemoryStateStoreContract(AsyncStateStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> AsyncMemoryStateStore:
            return AsyncMemoryStateStore(maxsize, ttl, clock=clock)

        return make


class TestAioViewContract(AsyncStateStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> AsyncMemoryStateStore:
            return MemoryStateStore(maxsize, ttl, clock=clock).aio

        return make


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize("maxsize", [0, -1])
def test_maxsize_below_one_names_the_argument(maxsize: int) -> None:
    with pytest.raises(ConfigurationError, match=r"maxsize must be an int >= 1, got -?\d"):
        MemoryStateStore(maxsize=maxsize)
    with pytest.raises(ValueError, match="maxsize"):
        AsyncMemoryStateStore(maxsize=maxsize)


@pytest.mark.parametrize("ttl", [0, 0.0, -3.0])
def test_ttl_not_above_zero_names_the_argument(ttl: float) -> None:
    with pytest.raises(ConfigurationError, match=r"ttl must be a finite number > 0"):
        MemoryStateStore(ttl=ttl)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"maxsize": 2.5}, "maxsize"),
        ({"maxsize": "10"}, "maxsize"),
        ({"ttl": "60"}, "ttl"),
        ({"clock": 5}, "clock"),
        ({"strict": 1}, "strict"),
        ({"on_evict": "print"}, "on_evict"),
    ],
)
def test_wrong_types_are_type_errors_naming_the_argument(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(TypeError, match=name):
        MemoryStateStore(**kwargs)


def test_both_shapes_satisfy_their_protocols() -> None:
    store = MemoryStateStore()
    assert isinstance(store, StateStore)
    assert isinstance(store.aio, AsyncStateStore)
    assert isinstance(AsyncMemoryStateStore(), AsyncStateStore)
    assert store.aio is store.aio
    assert store.aio.sync is store
    assert "maxsize=10000" in repr(store)


# -- stats and evictions ---------------------------------------------------------------------


def test_stats_count_hits_misses_writes_and_evictions_by_cause(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=2, ttl=10.0, clock=clock)
    store.set(1, "a")
    store.set(2, "b")
    store.get(1)
    store.get(3)
    store.set(3, "c")  # evicts 2 (least recently used)
    clock.advance(11.0)
    store.get(1)  # expired: a miss and a ttl eviction
    store.set(4, "d")
    store.delete(4)
    assert store.stats() == StoreStats(
        size=0,
        maxsize=2,
        hits=1,
        misses=2,
        sets=4,
        deletes=1,
        evictions_size=1,
        evictions_ttl=2,
    )
    assert store.stats().evictions == 3


def test_every_eviction_reaches_on_evict_outside_the_lock(clock: FakeClock) -> None:
    seen: list[tuple[Any, Any, str]] = []
    store: MemoryStateStore

    def on_evict(key: Any, value: Any, cause: str) -> None:
        store.get("probe")  # the store is usable from the callback
        seen.append((key, value, cause))

    store = MemoryStateStore(maxsize=2, ttl=10.0, clock=clock, on_evict=on_evict)
    store.set(1, "a")
    store.set(2, "b")
    store.set(3, "c")
    clock.advance(10.0)
    assert len(store) == 0
    assert seen == [(1, "a", "size"), (2, "b", "ttl"), (3, "c", "ttl")]


def test_a_failing_on_evict_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def on_evict(key: Any, value: Any, cause: str) -> None:
        raise RuntimeError("callback bug")

    store = MemoryStateStore(maxsize=1, on_evict=on_evict)
    store.set(1, "a")
    with caplog.at_level(logging.ERROR, logger="botscale.state"):
        store.set(2, "b")
    assert store.get(2) == "b"
    assert "on_evict callback failed for key 1" in caplog.text


def test_expired_entries_are_reclaimed_without_reading_them(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=10_000, ttl=5.0, clock=clock)
    for user in range(1000):
        store.set(user, user)
    clock.advance(6.0)
    for user in range(1000, 1300):
        store.set(user, user)  # each write reclaims a few expired entries
    assert len(store._data) < 1300  # the sweep reclaimed some before anyone asked
    assert len(store) == 300
    assert store.stats().evictions_ttl == 1000


def test_rewriting_keys_with_their_own_ttl_keeps_the_heap_bounded(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=50, ttl=100.0, clock=clock)
    for round_ in range(200):
        for user in range(50):
            store.set(user, round_, ttl=1000.0 + round_)
    assert len(store._heap) <= 2 * 50 + 32
    clock.advance(2000.0)
    assert len(store) == 0


def test_keys_that_expire_out_of_write_order_are_all_reclaimed(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=100, ttl=50.0, clock=clock)
    store.set("late", 1, ttl=90.0)
    store.set("early", 1, ttl=10.0)
    store.set("default", 1)
    clock.advance(20.0)
    assert len(store) == 2
    clock.advance(40.0)
    assert len(store) == 1
    clock.advance(40.0)
    assert len(store) == 0


def test_clear_removes_everything_and_counts_it(clock: FakeClock) -> None:
    store = MemoryStateStore(ttl=10.0, clock=clock)
    store.set(1, "a")
    store.set(2, "b", ttl=3.0)
    clock.advance(5.0)
    assert store.clear() == 1
    assert len(store) == 0
    stats = store.stats()
    assert (stats.deletes, stats.evictions_ttl) == (1, 1)
    store.set(3, "c")
    assert store.get(3) == "c"


async def test_the_async_twin_shares_counters_with_its_sync_store() -> None:
    store = AsyncMemoryStateStore(maxsize=5)
    await store.set(1, "x")
    assert await store.get(1) == "x"
    assert await store.get(2) is None
    assert store.sync.get(1) == "x"
    assert (store.stats().hits, store.stats().misses) == (2, 1)
    assert await store.clear() == 1
    assert len(store) == 0


# -- strict mode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, r"value is of type set"),
        ((1, 2), r"value is of type tuple.*store a list"),
        ({"cart": [1, {"when": object()}]}, r"value\['cart'\]\[1\]\['when'\] is of type object"),
        ({1: "a"}, r"value has a key of type int \(1\)"),
        (b"raw", r"value is of type bytes"),
        ([1.5, {"ok": True, "no": frozenset()}], r"value\[1\]\['no'\] is of type frozenset"),
    ],
)
def test_strict_rejects_non_json_values_naming_the_type(value: Any, message: str) -> None:
    store = MemoryStateStore(strict=True)
    with pytest.raises(TypeError, match=message):
        store.set(1, value)
    with pytest.raises(TypeError, match=message):
        store.update(1, lambda _: value)
    assert store.get(1) is None
    MemoryStateStore().set(1, value)  # the default store takes any object


def test_strict_rejects_subclasses_that_would_come_back_as_their_base() -> None:
    import enum

    class Color(enum.IntEnum):
        RED = 1

    with pytest.raises(TypeError, match="Color"):
        check_json_value({"c": Color.RED})


def test_strict_rejects_nan_and_circular_values() -> None:
    with pytest.raises(ValueError, match="nan"):
        check_json_value([float("nan")])
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="contains itself"):
        check_json_value(loop)
    shared = [1]
    check_json_value({"a": shared, "b": shared})  # shared but not circular is fine


def test_strict_session_rejects_the_write_back_and_keeps_the_old_state() -> None:
    store = MemoryStateStore(strict=True)
    store.set(1, {"items": []})
    with pytest.raises(TypeError, match="set"), store.session(1) as session:
        session.value["items"] = {1, 2}
    assert store.get(1) == {"items": []}


# -- sessions --------------------------------------------------------------------------------


def test_session_loads_a_private_copy_so_a_failure_changes_nothing() -> None:
    store = MemoryStateStore()
    store.set("u", {"answers": [1]})

    def failing_handler() -> None:
        with store.session("u") as session:
            session.value["answers"].append(2)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        failing_handler()
    assert store.get("u") == {"answers": [1]}


def test_session_default_factory_and_ttl(clock: FakeClock) -> None:
    store = MemoryStateStore(ttl=100.0, clock=clock)
    with store.session("u", default=lambda: {"step": 0}, ttl=5.0) as session:
        assert session.value == {"step": 0}
        session.value["step"] = 1
    clock.advance(6.0)
    assert store.get("u") is None
    with pytest.raises(ValueError, match="ttl"):
        store.session("u", ttl=0)
    with pytest.raises(TypeError, match="key"):
        store.session(("u",))  # type: ignore[arg-type]


def test_a_nested_session_of_the_same_key_raises_instead_of_hanging() -> None:
    store = MemoryStateStore()
    with store.session(1), pytest.raises(RuntimeError, match="already held"):
        store.session(1).__enter__()
    with store.session(1), store.session(2):  # other keys are independent
        pass
    assert len(store._locks) == 0


async def test_a_nested_async_session_of_the_same_key_raises() -> None:
    store = AsyncMemoryStateStore()
    async with store.session(1):
        with pytest.raises(RuntimeError, match="already held"):
            async with store.session(1):
                pass
    assert len(store.sync._locks) == 0


def test_with_on_an_async_only_store_is_a_type_error() -> None:
    class AsyncOnly:
        async def get(self, key: Any, default: Any = None) -> Any:
            return default

    context = SessionContext(AsyncOnly(), 1, SessionLocks())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async with"), context:
        pass


async def test_sessions_of_different_keys_do_not_wait_for_each_other() -> None:
    store = AsyncMemoryStateStore()
    inside = asyncio.Event()

    async def slow() -> None:
        async with store.session("a"):
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(slow())
    await inside.wait()
    async with store.session("b") as session:  # does not wait for "a"
        session.value["ok"] = True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.get("b") == {"ok": True}
    assert await store.get("a") is None  # the cancelled session wrote nothing
    assert len(store.sync._locks) == 0


async def test_a_waiter_cancelled_in_the_queue_gives_up_its_turn() -> None:
    store = AsyncMemoryStateStore()
    release = asyncio.Event()
    order: list[str] = []

    async def holder() -> None:
        async with store.session("k"):
            await release.wait()
            order.append("holder")

    async def waiter(name: str) -> None:
        async with store.session("k"):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    doomed = asyncio.create_task(waiter("doomed"))
    survivor = asyncio.create_task(waiter("survivor"))
    await asyncio.sleep(0)
    doomed.cancel()
    release.set()
    await asyncio.gather(first, survivor)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert order == ["holder", "survivor"]
    assert len(store.sync._locks) == 0


def test_threads_and_tasks_share_one_session_lock_per_key() -> None:
    store = MemoryStateStore()
    rounds = 200

    def in_thread() -> None:
        for _ in range(rounds):
            with store.session("mixed", default=lambda: {"n": 0}) as session:
                value = session.value["n"]
                time.sleep(0)  # let the other threads and the loop in mid-session
                session.value["n"] = value + 1

    async def in_loop() -> None:
        for _ in range(rounds):
            async with store.session("mixed", default=lambda: {"n": 0}) as session:
                value = session.value["n"]
                await asyncio.sleep(0)
                session.value["n"] = value + 1

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    threads.append(threading.Thread(target=lambda: asyncio.run(in_loop())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert store.get("mixed") == {"n": 4 * rounds}


# -- threads ---------------------------------------------------------------------------------


def test_many_threads_keep_the_bound_and_the_counts(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=64, ttl=30.0, clock=clock)
    threads, per_thread = 8, 2000
    start = threading.Barrier(threads)

    def work(seed: int) -> None:
        start.wait()
        for i in range(per_thread):
            key = (seed * 7919 + i * 31) % 500
            if i % 3 == 0:
                store.set(key, i)
            elif i % 3 == 1:
                store.get(key)
            else:
                store.update(key, lambda v: (v or 0) + 1)
            if i % 500 == 0:
                clock.advance(1.0)
            assert len(store._data) <= 64

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    stats = store.stats()
    calls = threads * per_thread
    assert stats.size <= 64
    reads = sum(1 for i in range(per_thread) if i % 3 == 1) * threads
    writes = calls - reads
    assert stats.hits + stats.misses == reads
    assert stats.sets == writes


async def test_a_blocking_session_inside_the_event_loop_fails_instead_of_freezing_it() -> None:
    store = MemoryStateStore()
    async with store.session(1):
        with pytest.raises(RuntimeError, match="use `async with`"):
            store.session(1).__enter__()  # would wait for this very task
    with store.session(1) as session:  # uncontended: fine even inside async code
        session.value["ok"] = True
    assert store.get(1) == {"ok": True}
    assert len(store._locks) == 0
