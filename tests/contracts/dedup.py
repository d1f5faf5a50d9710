"""The DedupStore / AsyncDedupStore contract: one suite over every de-duplicator.

Subclass :class:`DedupContract` (sync) or :class:`AsyncDedupContract` and
override the ``make_dedup`` fixture: ``make(*, ttl=..., maxsize=...)`` returns a
fresh, empty de-duplicator (either argument may be absent).  Flags as in
``contracts.state``: ``drives_time`` (the object reads the ``clock`` fixture;
``False`` skips the expiry tests with the reason) and ``bounded`` (it keeps at
most ``maxsize`` ids; ``False`` skips the size tests).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from botscale import AsyncDedupStore, DedupStore
from botscale.testing import FakeClock

from .state import call

__all__ = ["AsyncDedupContract", "DedupContract", "DedupFactory"]

DedupFactory = Callable[..., Any]
"""``make(*, ttl=..., maxsize=...) -> de-duplicator``."""


class _DedupContract:
    drives_time: ClassVar[bool] = True
    bounded: ClassVar[bool] = True

    @pytest.fixture
    def make_dedup(self, clock: FakeClock) -> DedupFactory:
        raise NotImplementedError("a contract subclass provides the make_dedup fixture")

    def needs_time(self) -> None:
        if not self.drives_time:
            pytest.skip(f"{type(self).__name__}: keeps server time, the test cannot drive it")

    def needs_bound(self) -> None:
        if not self.bounded:
            pytest.skip(f"{type(self).__name__}: has no maxsize")

    async def test_first_arrival_is_new_the_rest_are_duplicates(
        self, make_dedup: DedupFactory
    ) -> None:
        dedup = make_dedup()
        assert await call(dedup.seen(1001)) is False
        assert await call(dedup.seen(1001)) is True
        assert await call(dedup.seen(1001)) is True
        assert await call(dedup.seen(1002)) is False

    async def test_int_and_str_ids_are_distinct(self, make_dedup: DedupFactory) -> None:
        dedup = make_dedup()
        assert await call(dedup.seen(5)) is False
        assert await call(dedup.seen("5")) is False
        assert await call(dedup.seen("bot1:5")) is False

    async def test_forget_lets_an_id_in_again(self, make_dedup: DedupFactory) -> None:
        dedup = make_dedup()
        await call(dedup.seen(7))
        assert await call(dedup.forget(7)) is True
        assert await call(dedup.forget(7)) is False
        assert await call(dedup.forget(8)) is False
        assert await call(dedup.seen(7)) is False
        assert await call(dedup.seen(7)) is True

    @pytest.mark.parametrize("key", [(1,), 1.0, None, True])
    async def test_ids_other_than_str_or_int_are_a_type_error(
        self, make_dedup: DedupFactory, key: Any
    ) -> None:
        dedup = make_dedup()
        with pytest.raises(TypeError, match="key"):
            await call(dedup.seen(key))
        with pytest.raises(TypeError, match="key"):
            await call(dedup.forget(key))

    @pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
    def test_non_positive_ttl_is_a_value_error_naming_it(
        self, make_dedup: DedupFactory, ttl: float
    ) -> None:
        with pytest.raises(ValueError, match="ttl"):
            make_dedup(ttl=ttl)

    @pytest.mark.parametrize("maxsize", [0, -1])
    def test_maxsize_below_one_is_a_value_error_naming_it(
        self, make_dedup: DedupFactory, maxsize: int
    ) -> None:
        self.needs_bound()
        with pytest.raises(ValueError, match="maxsize"):
            make_dedup(maxsize=maxsize)

    async def test_an_id_is_new_again_after_the_window(
        self, make_dedup: DedupFactory, clock: FakeClock
    ) -> None:
        self.needs_time()
        dedup = make_dedup(ttl=60.0)
        assert await call(dedup.seen(1)) is False
        clock.advance(30.0)
        assert await call(dedup.seen(1)) is True  # a duplicate does not extend the window
        clock.advance(30.5)
        assert await call(dedup.seen(1)) is False
        assert await call(dedup.seen(1)) is True

    async def test_a_full_window_forgets_the_oldest_id(self, make_dedup: DedupFactory) -> None:
        self.needs_bound()
        dedup = make_dedup(maxsize=3)
        for update_id in (1, 2, 3, 4):
            assert await call(dedup.seen(update_id)) is False
        assert await call(dedup.seen(4)) is True
        assert await call(dedup.seen(2)) is True
        assert await call(dedup.seen(1)) is False  # forgotten early (and counted)


class DedupContract(_DedupContract):
    """The contract of a sync :class:`~botscale.DedupStore`."""

    def test_satisfies_the_protocol(self, make_dedup: DedupFactory) -> None:
        assert isinstance(make_dedup(), DedupStore)

    def test_exactly_one_of_concurrent_threads_wins_an_id(self, make_dedup: DedupFactory) -> None:
        dedup = make_dedup()
        threads = 8
        start = threading.Barrier(threads)
        answers: list[bool] = []
        lock = threading.Lock()

        def work() -> None:
            start.wait()
            mine = [dedup.seen(update_id) for update_id in range(200)]
            with lock:
                answers.extend(mine)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert answers.count(False) == 200
        assert answers.count(True) == 200 * (threads - 1)


class AsyncDedupContract(_DedupContract):
    """The contract of an awaitable :class:`~botscale.AsyncDedupStore`."""

    def test_satisfies_the_protocol(self, make_dedup: DedupFactory) -> None:
        assert isinstance(make_dedup(), AsyncDedupStore)

    async def test_exactly_one_of_concurrent_tasks_wins_an_id(
        self, make_dedup: DedupFactory
    ) -> None:
        dedup = make_dedup()
        answers = await asyncio.gather(*(dedup.seen(77) for _ in range(100)))
        assert answers.count(False) == 1
