"""MemoryBackend: bounded key table (expiry, LRU eviction), counts, and its bound hot path."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botscale import ConfigurationError, Decision, Rate, RateLimitBackend, RateLimiter
from botscale._gcra import gcra_update
from botscale.backends import MemoryBackend
from botscale.backends.memory import MemoryBackendStats
from botscale.testing import FakeClock
from contracts.rate_limit import ops, rates

SLOW = Rate(1, 3600.0)


def test_it_is_a_rate_limit_backend() -> None:
    assert isinstance(MemoryBackend(), RateLimitBackend)
    assert repr(MemoryBackend(5)) == "MemoryBackend(max_keys=5, keys=0)"


@pytest.mark.parametrize(
    ("max_keys", "error"),
    [
        (0, ConfigurationError),
        (-1, ConfigurationError),
        (1.5, TypeError),
        ("9", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_max_keys_fails_naming_it(max_keys: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_keys"):
        MemoryBackend(max_keys)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_the_bound_path_agrees_with_gcra_update_bit_for_bit(data: st.DataObject) -> None:
    """The hot path inlines gcra_update: every decision and stored TAT must be identical."""
    rate, burst = data.draw(rates(), label="rate")
    clock = FakeClock()
    backend = MemoryBackend()
    lim = RateLimiter(rate, burst, clock=clock, backend=backend)
    tats: dict[str, float] = {}
    for op in data.draw(ops(rate, burst, max_size=60), label="history"):
        clock.advance(op.advance)
        new_tat, expected = gcra_update(tats.get(op.key), clock(), rate.interval, burst, op.cost)
        if new_tat is not None:
            tats[op.key] = new_tat
        got = lim.try_acquire(op.key, op.cost)
        assert got == expected, op
        assert type(got) is Decision
        assert backend._tats[op.key] == tats[op.key]


def test_the_protocol_method_and_the_bound_path_share_one_table() -> None:
    clock = FakeClock()
    backend = MemoryBackend()
    lim = RateLimiter(Rate(1, 10.0), 2, clock=clock, backend=backend)
    assert lim.try_acquire("k")
    d = backend.acquire("k", now=clock(), interval=10.0, burst=2, cost=1)
    assert d == Decision(True, 0, 0.0)
    assert lim.try_acquire("k") == Decision(False, 0, 10.0)


def test_remaining_above_the_cached_decisions_is_exact() -> None:
    lim = RateLimiter(Rate(1, 3600.0), 1000, clock=FakeClock())
    assert lim.try_acquire("k") == Decision(True, 999, 0.0)
    assert lim.try_acquire("k", 500) == Decision(True, 499, 0.0)
    assert lim.try_acquire("k", 499) == Decision(True, 0, 0.0)


def test_a_denied_multi_token_request_reports_the_whole_tokens_held() -> None:
    clock = FakeClock()
    lim = RateLimiter(Rate(1, 1.0), 10, clock=clock)
    lim.try_acquire("k", 10)
    clock.advance(3.5)
    assert lim.try_acquire("k", 5) == Decision(False, 3, 1.5)


def test_a_tat_beyond_this_limiters_capacity_reports_nothing_held() -> None:
    """Two limiters with different bursts on one key (a misuse) never report negative tokens."""
    clock = FakeClock()
    backend = MemoryBackend()
    big = RateLimiter(Rate(1, 1.0), 10, clock=clock, backend=backend)
    small = RateLimiter(Rate(1, 1.0), 2, clock=clock, backend=backend)
    big.try_acquire("k", 10)
    assert small.try_acquire("k", 2) == Decision(False, 0, 10.0)
    assert small.try_acquire("k") == Decision(False, 0, 9.0)


# -- bounded memory ----------------------------------------------------------------------


def test_refilled_keys_are_dropped_two_per_new_key_and_counted() -> None:
    clock = FakeClock()
    lim = RateLimiter(Rate(1, 1.0), 1, clock=clock)
    for i in range(10):
        lim.try_acquire(f"old{i}")
    clock.advance(1.0)  # every old bucket is full again
    backend = lim.backend
    assert isinstance(backend, MemoryBackend)
    lim.try_acquire("new0")
    assert backend.stats() == MemoryBackendStats(keys=9, max_keys=100_000, expired=2, evicted=0)
    for i in range(1, 5):
        lim.try_acquire(f"new{i}")
    assert backend.stats() == MemoryBackendStats(keys=5, max_keys=100_000, expired=10, evicted=0)
    assert all(f"old{i}" not in backend for i in range(10))


def test_one_new_key_never_scans_the_table() -> None:
    """10 000 refilled keys: the next insert drops two of them, not all (amortised, O(1))."""
    clock = FakeClock()
    backend = MemoryBackend()
    for i in range(10_000):
        backend.acquire(f"k{i}", now=clock(), interval=1.0, burst=1, cost=1)
    clock.advance(5.0)
    backend.acquire("new", now=clock(), interval=1.0, burst=1, cost=1)
    assert backend.stats().expired == 2
    assert len(backend) == 9_999


def test_a_key_not_yet_refilled_stops_the_sweep_until_it_refills() -> None:
    clock = FakeClock()
    backend = MemoryBackend()
    backend.acquire("slow", now=clock(), interval=100.0, burst=1, cost=1)
    backend.acquire("fast", now=clock(), interval=1.0, burst=1, cost=1)
    clock.advance(2.0)
    backend.acquire("new", now=clock(), interval=1.0, burst=1, cost=1)
    assert backend.stats().expired == 0  # the oldest key still carries information
    clock.advance(100.0)
    backend.acquire("newer", now=clock(), interval=1.0, burst=1, cost=1)
    assert backend.stats().expired == 2
    assert "slow" not in backend
    assert "fast" not in backend


def test_past_max_keys_the_least_recently_used_key_is_evicted_and_counted() -> None:
    clock = FakeClock()
    lim = RateLimiter(SLOW, 2, clock=clock, max_keys=3)
    backend = lim.backend
    assert isinstance(backend, MemoryBackend)
    for key in ("a", "b", "c"):
        lim.try_acquire(key)
    lim.try_acquire("a")  # a is used again (allowed)
    lim.try_acquire("b")
    lim.try_acquire("b")  # b is used again (denied: still counts as use)
    lim.try_acquire("d")  # c is the least recently used
    assert "c" not in backend
    assert all(k in backend for k in "abd")
    assert backend.stats() == MemoryBackendStats(keys=3, max_keys=3, expired=0, evicted=1)
    assert lim.try_acquire("c") == Decision(True, 1, 0.0)  # evicted: full again (counted above)


def test_at_max_keys_a_refilled_oldest_key_is_counted_as_expired_not_evicted() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_keys=4)
    for key, interval in (("a", 1.0), ("b", 1.0), ("c", 100.0), ("d", 1.0)):
        backend.acquire(key, now=clock(), interval=interval, burst=1, cost=1)
    clock.advance(2.0)  # a, b and d have refilled; c has not
    backend.acquire("e", now=clock(), interval=1.0, burst=1, cost=1)
    assert backend.stats() == MemoryBackendStats(keys=3, max_keys=4, expired=2, evicted=0)
    backend.acquire("f", now=clock(), interval=100.0, burst=1, cost=1)
    # c is the oldest now and has not refilled: the sweep stops there, under max_keys.
    assert backend.stats() == MemoryBackendStats(keys=4, max_keys=4, expired=2, evicted=0)
    backend.acquire("g", now=clock(), interval=1.0, burst=1, cost=1)
    assert "c" not in backend  # at max_keys: the not-yet-refilled oldest goes
    assert backend.stats() == MemoryBackendStats(keys=4, max_keys=4, expired=2, evicted=1)


def test_a_flooding_key_is_never_the_one_evicted() -> None:
    """A key denied on every request stays most recently used, so it keeps its empty bucket."""
    clock = FakeClock()
    lim = RateLimiter(SLOW, 1, clock=clock, max_keys=10)
    lim.try_acquire("spammer")
    for i in range(100):
        assert not lim.try_acquire("spammer")
        lim.try_acquire(f"user{i}")
    assert not lim.try_acquire("spammer")
    assert lim.stats().backend == MemoryBackendStats(keys=10, max_keys=10, expired=0, evicted=91)


@settings(max_examples=100, deadline=None)
@given(
    max_keys=st.integers(1, 8),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["take", "take", "take", "reset", "wait"]),
            st.integers(0, 15),
            st.sampled_from([0.0, 0.5, 1.0, 3.0]),
        ),
        max_size=80,
    ),
)
def test_nothing_leaves_the_table_uncounted(
    max_keys: int, steps: list[tuple[str, int, float]]
) -> None:
    """Never more than max_keys, and every key that entered is held, expired, evicted or reset."""
    clock = FakeClock()
    backend = MemoryBackend(max_keys)
    lim = RateLimiter(Rate(1, 1.0), 2, clock=clock, backend=backend)
    entered = reset = 0
    for action, n, dt in steps:
        key = f"k{n}"
        if action == "wait":
            clock.advance(dt)
        elif action == "reset":
            reset += key in backend
            lim.reset(key)
        else:
            fresh = key not in backend
            decision = lim.try_acquire(key, 1 + n % 2)
            entered += fresh and decision.allowed
        stats = backend.stats()
        assert stats.keys <= max_keys
        assert stats.keys + stats.expired + stats.evicted + reset == entered


def test_threads_over_many_keys_keep_the_table_bounded_and_consistent() -> None:
    backend = MemoryBackend(max_keys=64)
    lim = RateLimiter(Rate(5, 1.0), 3, backend=backend)
    calls = 8 * 2_000

    def worker(i: int) -> None:
        for n in range(2_000):
            lim.try_acquire(f"user:{(i * 7919 + n * 31) % 500}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stats = lim.stats()
    assert stats.allowed + stats.denied == calls
    backend_stats = backend.stats()
    assert backend_stats.keys <= 64
    assert backend_stats.evicted + backend_stats.expired > 0


def test_reset_removes_the_key_and_unknown_keys_are_ignored() -> None:
    backend = MemoryBackend()
    backend.acquire("k", now=0.0, interval=1.0, burst=1, cost=1)
    assert "k" in backend
    backend.reset("k")
    backend.reset("never")
    assert len(backend) == 0
    assert backend.stats() == MemoryBackendStats(0, 100_000, 0, 0)
