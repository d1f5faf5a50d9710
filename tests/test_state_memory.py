"""Memory is bounded: a million distinct users leave a MemoryStateStore(maxsize=2000) small.

The traced runs measure (tracemalloc) what the store holds after the churn and
compare it with what the same store holds when it is simply full: the churn
may cost a constant (hash tables that grew once), never something that grows
with the number of users seen.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from botscale import MemoryStateStore
from botscale.testing import FakeClock

MAXSIZE = 2000


def _state(user: int) -> dict[str, object]:
    return {"step": 1, "answers": [user]}


@pytest.fixture
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _traced_now() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_a_million_distinct_users_leave_at_most_maxsize_entries(clock: FakeClock) -> None:
    store = MemoryStateStore(maxsize=MAXSIZE, ttl=3600.0, clock=clock)
    for user in range(1_000_000):
        store.set(user, _state(user))
        if user % 100_000 == 0:
            clock.advance(60.0)
    assert len(store) == MAXSIZE
    assert len(store._data) == len(store._fifo) == MAXSIZE
    assert store._heap == []
    stats = store.stats()
    assert stats.evictions_size == 1_000_000 - MAXSIZE
    assert [store.get(u) for u in (0, 997_999)] == [None, None]
    assert store.get(999_999) == _state(999_999)


def _churn(store: MemoryStateStore, clock: FakeClock, users: range) -> None:
    for user in users:
        if user % 3 == 0:
            store.set(user, _state(user), ttl=30.0 + user % 7)  # the deadline heap
        else:
            store.set(user, _state(user))
        if user % 5 == 0:
            store.get(user - 1000)
        if user % 10_000 == 0:
            clock.advance(20.0)  # some entries expire and are swept


def test_traced_memory_after_churn_is_what_a_full_store_costs(
    clock: FakeClock, traced: None
) -> None:
    base = _traced_now()
    store = MemoryStateStore(maxsize=MAXSIZE, ttl=60.0, clock=clock)
    _churn(store, clock, range(MAXSIZE))
    full = _traced_now() - base
    _churn(store, clock, range(MAXSIZE, 100_000))
    after = _traced_now() - base
    assert len(store._data) <= MAXSIZE
    assert after <= 1.5 * full, f"{after} bytes after the churn, {full} for a full store"


@pytest.mark.slow
def test_traced_memory_after_a_million_users(clock: FakeClock, traced: None) -> None:
    base = _traced_now()
    store = MemoryStateStore(maxsize=MAXSIZE, ttl=3600.0, clock=clock)
    for user in range(MAXSIZE):
        store.set(user, _state(user))
    full = _traced_now() - base
    for user in range(MAXSIZE, 500_000):
        store.set(user, _state(user))
    halfway = _traced_now() - base
    for user in range(500_000, 1_000_000):
        store.set(user, _state(user))
    after = _traced_now() - base
    assert len(store) == MAXSIZE
    assert after <= 1.5 * full, f"{after} bytes after a million users, {full} for 2000"
    assert after - halfway <= 64 * 1024, "memory still grows with the number of users seen"
