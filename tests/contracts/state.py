"""The StateStore / AsyncStateStore contract: one suite over every implementation.

Subclass :class:`StateStoreContract` (sync stores) or
:class:`AsyncStateStoreContract` (awaitable stores) in a ``test_*.py`` module
and override the ``make_store`` fixture::

    class TestMyStore(StateStoreContract):
        drives_time = False          # the store keeps server time
        bounded = False              # the store has no maxsize

        @pytest.fixture
        def make_store(self, clock: FakeClock) -> StoreFactory:
            def make(*, maxsize: int = 100, ttl: float | None = None) -> StateStore:
                return MyStore(ttl=ttl)
            return make

The factory is called with keyword arguments ``maxsize`` and ``ttl`` (either
may be absent) and returns a fresh, empty store.  The test may advance the
``clock`` fixture (a :class:`~botscale.testing.FakeClock`) between calls.

Capability flags, so that a test a store cannot take part in is *skipped with
the reason* (visible in ``pytest -ra``), never passed silently:

* ``drives_time``: the store reads the ``clock`` given to the factory.
  ``False`` for stores on server time (Redis): every expiry test is skipped.
* ``bounded``: the store keeps at most ``maxsize`` entries, least recently
  used evicted first.  ``False``: the size tests are skipped.
* Session tests run where the store has a ``session(key)`` method, and are
  skipped otherwise.

Values used here are JSON-compatible, so JSON-only stores can run every test.
The tests are written once, as coroutines, over both shapes: :meth:`call`
awaits a result only if it is awaitable.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from botscale import AsyncStateStore, StateStore
from botscale.testing import FakeClock

__all__ = ["AsyncStateStoreContract", "StateStoreContract", "StoreFactory"]

StoreFactory = Callable[..., Any]
"""``make(*, maxsize=..., ttl=...) -> store`` (a StateStore or an AsyncStateStore)."""

NESTED = {"step": 2, "answers": [1, "b", None, True, 2.5], "nested": {"x": {}, "y": [[]]}}


async def call(result: Any) -> Any:
    """The value of a store call, awaited if the store is async."""
    if inspect.isawaitable(result):
        return await result
    return result


class _StateContract:
    drives_time: ClassVar[bool] = True
    bounded: ClassVar[bool] = True

    @pytest.fixture
    def make_store(self, clock: FakeClock) -> StoreFactory:
        raise NotImplementedError("a contract subclass provides the make_store fixture")

    async def size(self, store: Any) -> int:
        raise NotImplementedError

    def needs_time(self) -> None:
        if not self.drives_time:
            pytest.skip(
                f"{type(self).__name__}: the store keeps its own (server) time, "
                "so this expiry test cannot drive it"
            )

    def needs_bound(self) -> None:
        if not self.bounded:
            pytest.skip(f"{type(self).__name__}: the store has no maxsize")

    def needs_sessions(self, store: Any) -> None:
        if not callable(getattr(store, "session", None)):
            pytest.skip(f"{type(self).__name__}: the store has no session(key)")

    # -- basics ------------------------------------------------------------------------------

    async def test_missing_key_gives_the_default_object_itself(
        self, make_store: StoreFactory
    ) -> None:
        store = make_store()
        marker = object()
        assert await call(store.get(1)) is None
        assert await call(store.get("absent", marker)) is marker

    async def test_set_then_get_round_trips_json_values(self, make_store: StoreFactory) -> None:
        store = make_store()
        await call(store.set(42, NESTED))
        await call(store.set("text", "héllo ✓"))
        await call(store.set("zero", 0))
        await call(store.set("none", None))
        assert await call(store.get(42)) == NESTED
        assert await call(store.get("text")) == "héllo ✓"
        assert await call(store.get("zero", "d")) == 0
        assert await call(store.get("none", "d")) is None

    async def test_set_overwrites(self, make_store: StoreFactory) -> None:
        store = make_store()
        await call(store.set(1, {"step": 1}))
        await call(store.set(1, {"step": 2}))
        assert await call(store.get(1)) == {"step": 2}
        assert await self.size(store) == 1

    async def test_int_and_str_keys_are_distinct(self, make_store: StoreFactory) -> None:
        store = make_store()
        await call(store.set(42, "int"))
        await call(store.set("42", "str"))
        assert (await call(store.get(42)), await call(store.get("42"))) == ("int", "str")

    async def test_delete_reports_whether_a_value_was_live(self, make_store: StoreFactory) -> None:
        store = make_store()
        await call(store.set("a", 1))
        assert await call(store.delete("a")) is True
        assert await call(store.delete("a")) is False
        assert await call(store.delete("never")) is False
        assert await call(store.get("a")) is None

    async def test_update_starts_from_the_default(self, make_store: StoreFactory) -> None:
        store = make_store()
        new = await call(store.update(7, lambda v: v + 1, default=0))
        assert new == 1
        assert await call(store.get(7)) == 1
        await call(store.update(7, lambda v: v + 10, default=0))
        assert await call(store.get(7)) == 11

    async def test_update_that_raises_changes_nothing(self, make_store: StoreFactory) -> None:
        store = make_store()
        await call(store.set(1, {"n": 1}))

        def boom(value: Any) -> Any:
            raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError, match="handler failed"):
            await call(store.update(1, boom))
        assert await call(store.get(1)) == {"n": 1}

    async def test_size_counts_live_entries(self, make_store: StoreFactory) -> None:
        store = make_store()
        assert await self.size(store) == 0
        for user in range(5):
            await call(store.set(user, {"user": user}))
        await call(store.delete(3))
        assert await self.size(store) == 4

    # -- bad input -----------------------------------------------------------------------------

    @pytest.mark.parametrize("key", [(1, 2), 1.5, None, b"x", True])
    async def test_keys_other_than_str_or_int_are_a_type_error(
        self, make_store: StoreFactory, key: Any
    ) -> None:
        store = make_store()
        with pytest.raises(TypeError, match="key"):
            await call(store.set(key, 1))
        with pytest.raises(TypeError, match="key"):
            await call(store.get(key))
        with pytest.raises(TypeError, match="key"):
            await call(store.delete(key))
        with pytest.raises(TypeError, match="key"):
            await call(store.update(key, lambda v: v))

    @pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf")])
    async def test_non_positive_ttl_is_a_value_error_naming_it(
        self, make_store: StoreFactory, ttl: float
    ) -> None:
        with pytest.raises(ValueError, match="ttl"):
            make_store(ttl=ttl)
        store = make_store()
        with pytest.raises(ValueError, match="ttl"):
            await call(store.set(1, "x", ttl=ttl))
        with pytest.raises(ValueError, match="ttl"):
            await call(store.update(1, lambda v: v, ttl=ttl))
        assert await call(store.get(1)) is None

    @pytest.mark.parametrize("maxsize", [0, -5])
    async def test_maxsize_below_one_is_a_value_error_naming_it(
        self, make_store: StoreFactory, maxsize: int
    ) -> None:
        self.needs_bound()
        with pytest.raises(ValueError, match="maxsize"):
            make_store(maxsize=maxsize)

    # -- bounded ------------------------------------------------------------------------------

    async def test_never_more_than_maxsize_entries(self, make_store: StoreFactory) -> None:
        self.needs_bound()
        store = make_store(maxsize=3)
        for user in range(10):
            await call(store.set(user, user))
            assert await self.size(store) <= 3
        assert [await call(store.get(u)) for u in range(10)] == [None] * 7 + [7, 8, 9]

    async def test_least_recently_used_goes_first(self, make_store: StoreFactory) -> None:
        self.needs_bound()
        store = make_store(maxsize=3)
        for user in (1, 2, 3):
            await call(store.set(user, user))
        assert await call(store.get(1)) == 1  # 1 is now the most recently used
        await call(store.set(4, 4))  # evicts 2
        assert await call(store.get(2)) is None
        await call(store.update(3, lambda v: v * 10))  # 3 used: 1 is now the oldest
        await call(store.set(5, 5))
        assert await call(store.get(1)) is None
        assert [await call(store.get(u)) for u in (3, 4, 5)] == [30, 4, 5]

    async def test_overwriting_a_key_in_a_full_store_evicts_nothing(
        self, make_store: StoreFactory
    ) -> None:
        self.needs_bound()
        store = make_store(maxsize=2)
        await call(store.set(1, "a"))
        await call(store.set(2, "b"))
        await call(store.set(1, "c"))
        assert [await call(store.get(1)), await call(store.get(2))] == ["c", "b"]

    # -- time ---------------------------------------------------------------------------------

    async def test_entries_expire_after_ttl_and_are_invisible_at_once(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        store = make_store(ttl=10.0)
        await call(store.set(1, "x"))
        clock.advance(9.9)
        assert await call(store.get(1)) == "x"
        clock.advance(0.2)
        assert await call(store.get(1)) is None
        await call(store.set(2, "y"))
        clock.advance(10.0)
        assert await self.size(store) == 0
        assert await call(store.delete(2)) is False

    async def test_reading_does_not_extend_an_entry_writing_does(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        store = make_store(ttl=10.0)
        await call(store.set("read", 1))
        await call(store.set("written", 1))
        for _ in range(3):
            clock.advance(4.0)
            await call(store.get("read"))
            await call(store.set("written", 1))
        assert await call(store.get("read")) is None
        assert await call(store.get("written")) == 1

    async def test_update_restarts_the_ttl_and_sees_expired_as_missing(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        store = make_store(ttl=10.0)
        await call(store.set("n", 5))
        clock.advance(8.0)
        assert await call(store.update("n", lambda v: v + 1, default=0)) == 6
        clock.advance(8.0)
        assert await call(store.get("n")) == 6
        clock.advance(3.0)
        assert await call(store.update("n", lambda v: v + 1, default=0)) == 1

    async def test_per_entry_ttl_overrides_the_default(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        store = make_store(ttl=10.0)
        await call(store.set("short", 1, ttl=2.0))
        await call(store.set("long", 1, ttl=100.0))
        await call(store.set("default", 1))
        await call(store.update("updated", lambda v: 1, ttl=50.0))
        clock.advance(5.0)
        assert await call(store.get("short")) is None
        clock.advance(10.0)
        assert await call(store.get("default")) is None
        assert await call(store.get("updated")) == 1
        assert await call(store.get("long")) == 1
        clock.advance(40.0)
        assert await call(store.get("updated")) is None
        assert await self.size(store) == 1

    async def test_without_ttl_entries_never_expire(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        store = make_store(ttl=None)
        await call(store.set(1, "forever"))
        clock.advance(10.0 * 365 * 24 * 3600)
        assert await call(store.get(1)) == "forever"

    async def test_expired_entries_do_not_count_toward_maxsize(
        self, make_store: StoreFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        self.needs_bound()
        store = make_store(maxsize=3, ttl=10.0)
        await call(store.set("old", 1, ttl=1.0))
        await call(store.set("a", 1))
        await call(store.set("b", 1))
        clock.advance(2.0)
        await call(store.set("c", 1))  # the expired "old" makes room: "a" stays
        assert [await call(store.get(k)) for k in ("a", "b", "c")] == [1, 1, 1]

    # -- sessions -----------------------------------------------------------------------------

    async def test_session_writes_back_once_on_success(self, make_store: StoreFactory) -> None:
        store = make_store()
        self.needs_sessions(store)
        async with store.session(42) as session:
            assert session.value == {}
            session.value["step"] = 1
        assert await call(store.get(42)) == {"step": 1}
        async with store.session(42) as session:
            session.value = {"step": session.value["step"] + 1}
        assert await call(store.get(42)) == {"step": 2}

    async def test_session_writes_nothing_when_the_handler_raises(
        self, make_store: StoreFactory
    ) -> None:
        store = make_store()
        self.needs_sessions(store)
        await call(store.set(42, {"step": 1}))

        async def failing_handler() -> None:
            async with store.session(42) as session:
                session.value["step"] = 99
                raise RuntimeError("handler failed")

        with pytest.raises(RuntimeError):
            await failing_handler()
        assert await call(store.get(42)) == {"step": 1}

    async def test_session_delete_removes_the_state(self, make_store: StoreFactory) -> None:
        store = make_store()
        self.needs_sessions(store)
        await call(store.set(42, {"step": 3}))
        async with store.session(42) as session:
            session.delete()
        assert await call(store.get(42)) is None

    async def test_concurrent_sessions_of_one_key_lose_no_update(
        self, make_store: StoreFactory
    ) -> None:
        store = make_store()
        self.needs_sessions(store)

        async def handler() -> None:
            async with store.session("user", default=lambda: {"n": 0}) as session:
                current = session.value["n"]
                await asyncio.sleep(0)  # let every other task load the state too
                session.value["n"] = current + 1

        await asyncio.gather(*(handler() for _ in range(50)))
        assert await call(store.get("user")) == {"n": 50}


class StateStoreContract(_StateContract):
    """The contract of a sync :class:`~botscale.StateStore`."""

    async def size(self, store: Any) -> int:
        return len(store)

    def test_satisfies_the_protocol(self, make_store: StoreFactory) -> None:
        assert isinstance(make_store(), StateStore)

    def test_update_is_atomic_across_threads(self, make_store: StoreFactory) -> None:
        store = make_store()
        threads, per_thread = 8, 50
        start = threading.Barrier(threads)

        def work() -> None:
            start.wait()
            for _ in range(per_thread):
                store.update("counter", lambda v: v + 1, default=0)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert store.get("counter") == threads * per_thread

    def test_sync_sessions_in_threads_lose_no_update(self, make_store: StoreFactory) -> None:
        store = make_store()
        self.needs_sessions(store)
        threads, per_thread = 8, 25
        start = threading.Barrier(threads)

        def work() -> None:
            start.wait()
            for _ in range(per_thread):
                with store.session("user", default=lambda: {"n": 0}) as session:
                    current = session.value["n"]
                    time.sleep(0)  # give the other threads the GIL mid-session
                    session.value["n"] = current + 1

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert store.get("user") == {"n": threads * per_thread}


class AsyncStateStoreContract(_StateContract):
    """The contract of an awaitable :class:`~botscale.AsyncStateStore`."""

    async def size(self, store: Any) -> int:
        return int(await store.size())

    def test_satisfies_the_protocol(self, make_store: StoreFactory) -> None:
        assert isinstance(make_store(), AsyncStateStore)

    async def test_update_is_atomic_across_tasks(self, make_store: StoreFactory) -> None:
        store = make_store()

        async def work() -> None:
            for _ in range(20):
                await store.update("counter", lambda v: v + 1, default=0)
                await asyncio.sleep(0)

        await asyncio.gather(*(work() for _ in range(10)))
        assert await store.get("counter") == 200
