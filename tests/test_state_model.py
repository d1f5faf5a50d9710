"""Stateful property tests: MemoryStateStore and cached against plain reference models.

Hypothesis runs random sequences of writes, reads, deletes, updates and clock
advances, and checks after every step that the real structure agrees with a
model written the obvious (slow) way: a dict scanned in full on every call.
The expensive comparisons (stats, recency order) are rules of their own, so
that the store is *not* swept before every step and its lazy paths (expired
entries still physically present) are exercised too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from botscale import MemoryStateStore, StoreStats, _state, cached
from botscale.testing import FakeClock

KEYS = st.sampled_from([0, 1, 2, 3, 4, 5, "a", "b"])
TTLS = st.sampled_from([None, None, 1.0, 2.5, 8.0])
STEPS = st.sampled_from([0.0, 0.5, 1.0, 2.5, 3.0, 10.0])

MISSING = object()


@dataclass
class _Item:
    value: Any
    expires: float
    used: int


@dataclass
class StoreModel:
    """The obvious implementation: every call scans the whole dict for expired items."""

    maxsize: int
    ttl: float | None
    items: dict[Any, _Item] = field(default_factory=dict)
    tick: int = 0
    hits: int = 0
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    evicted_size: int = 0
    evicted_ttl: int = 0

    def expire(self, now: float) -> None:
        for key in [k for k, item in self.items.items() if item.expires <= now]:
            del self.items[key]
            self.evicted_ttl += 1

    def touch(self) -> int:
        self.tick += 1
        return self.tick

    def set(self, key: Any, value: Any, ttl: float | None, now: float) -> None:
        self.expire(now)
        if key not in self.items and len(self.items) >= self.maxsize:
            oldest = min(self.items, key=lambda k: self.items[k].used)
            del self.items[oldest]
            self.evicted_size += 1
        seconds = self.ttl if ttl is None else ttl
        expires = math.inf if seconds is None else now + seconds
        self.items[key] = _Item(value, expires, self.touch())
        self.sets += 1

    def get(self, key: Any, now: float) -> Any:
        self.expire(now)
        item = self.items.get(key)
        if item is None:
            self.misses += 1
            return MISSING
        self.hits += 1
        item.used = self.touch()
        return item.value

    def delete(self, key: Any, now: float) -> bool:
        self.expire(now)
        if key in self.items:
            del self.items[key]
            self.deletes += 1
            return True
        return False

    def recency_order(self) -> list[Any]:
        return sorted(self.items, key=lambda k: self.items[k].used)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()

    @initialize(
        maxsize=st.integers(1, 6),
        ttl=st.sampled_from([None, 2.0, 5.0]),
        sweep_step=st.sampled_from([0, 1, 4]),
    )
    def create(self, maxsize: int, ttl: float | None, sweep_step: int) -> None:
        # Correctness must not depend on how much each write sweeps: with a
        # step of 0 only the eviction path reclaims expired entries.
        self.saved_step = _state._SWEEP_STEP
        _state._SWEEP_STEP = sweep_step
        self.store = MemoryStateStore(maxsize, ttl, clock=self.clock)
        self.model = StoreModel(maxsize, ttl)

    def teardown(self) -> None:
        if hasattr(self, "saved_step"):
            _state._SWEEP_STEP = self.saved_step

    @rule(key=KEYS, value=st.integers(), ttl=TTLS)
    def set(self, key: Any, value: int, ttl: float | None) -> None:
        self.store.set(key, value, ttl=ttl)
        self.model.set(key, value, ttl, self.clock())

    @rule(key=KEYS)
    def get(self, key: Any) -> None:
        expected = self.model.get(key, self.clock())
        actual = self.store.get(key, MISSING)
        assert (actual is MISSING) == (expected is MISSING)
        assert actual == expected

    @rule(key=KEYS)
    def delete(self, key: Any) -> None:
        assert self.store.delete(key) == self.model.delete(key, self.clock())

    @rule(key=KEYS, add=st.integers(1, 3), ttl=TTLS)
    def update(self, key: Any, add: int, ttl: float | None) -> None:
        now = self.clock()
        self.model.expire(now)
        item = self.model.items.get(key)
        new = (0 if item is None else item.value) + add
        self.model.set(key, new, ttl, now)
        assert self.store.update(key, lambda v: v + add, default=0, ttl=ttl) == new

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def stats_add_up_and_recency_order_holds(self) -> None:
        self.model.expire(self.clock())
        model = self.model
        assert self.store.stats() == StoreStats(
            size=len(model.items),
            maxsize=model.maxsize,
            hits=model.hits,
            misses=model.misses,
            sets=model.sets,
            deletes=model.deletes,
            evictions_size=model.evicted_size,
            evictions_ttl=model.evicted_ttl,
        )
        assert list(self.store._data) == model.recency_order()

    @invariant()
    def never_more_than_maxsize_entries_even_before_a_sweep(self) -> None:
        if hasattr(self, "store"):
            assert len(self.store._data) <= self.store.maxsize
            assert len(self.store._heap) <= 2 * self.store.maxsize + 32


TestMemoryStateStoreModel = StoreMachine.TestCase
TestMemoryStateStoreModel.settings = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class CacheMachine(RuleBasedStateMachine):
    """``cached`` (sync) against a model of a TTL + LRU cache."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.computed: dict[Any, int] = {}

    @initialize(maxsize=st.integers(1, 4), ttl=st.sampled_from([1.0, 3.0]))
    def create(self, maxsize: int, ttl: float) -> None:
        computed = self.computed

        @cached(ttl=ttl, maxsize=maxsize, clock=self.clock)
        def compute(key: Any) -> tuple[Any, int]:
            computed[key] = computed.get(key, 0) + 1
            return key, computed[key]

        self.fn = compute
        self.model = StoreModel(maxsize, ttl)
        self.calls = 0

    @precondition(lambda self: hasattr(self, "fn"))
    @rule(key=KEYS)
    def call(self, key: Any) -> None:
        now = self.clock()
        cached_value = self.model.get(key, now)
        result = self.fn(key)
        if cached_value is MISSING:
            assert result == (key, self.computed[key])
            self.model.set(key, result, None, now)
        else:
            assert result is cached_value  # served from the cache, not recomputed

    @precondition(lambda self: hasattr(self, "fn"))
    @rule(key=KEYS)
    def invalidate(self, key: Any) -> None:
        assert self.fn.invalidate(key) == self.model.delete(key, self.clock())

    @rule(seconds=STEPS)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: hasattr(self, "fn"))
    @rule()
    def info_adds_up(self) -> None:
        self.model.expire(self.clock())
        info = self.fn.cache_info()
        model = self.model
        assert (info.hits, info.misses, info.coalesced) == (model.hits, model.misses, 0)
        assert info.size == len(model.items)
        assert (info.evictions_size, info.evictions_ttl) == (
            model.evicted_size,
            model.evicted_ttl,
        )
        assert sum(self.computed.values()) == model.misses


TestCachedModel = CacheMachine.TestCase
TestCachedModel.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
