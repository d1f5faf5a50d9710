"""The in-memory rate-limit backend: one float per key, O(1) per decision.

Keys live in an ``OrderedDict`` in least-recently-used order, guarded by one
lock.  Memory stays bounded two ways, both counted in :meth:`MemoryBackend.stats`:

* a key whose bucket has refilled completely (its TAT is in the past) carries
  no information; whenever a new key arrives, up to two such keys are dropped
  from the least-recently-used end (``expired``), so dropping is amortised
  into inserts and no call ever scans the whole table;
* past ``max_keys`` the least recently used key goes (``evicted``): its bucket
  is full again, i.e. that key is briefly limited less than it should be.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from .._gcra import ALLOWED, EPSILON, Decision, gcra_update
from .._protocols import Key
from .._validation import check_positive_int

__all__ = ["MemoryBackend", "MemoryBackendStats"]


class TryAcquire(Protocol):
    """The signature of :meth:`botscale.RateLimiter.try_acquire`."""

    def __call__(self, key: Key, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them; never blocks."""
        ...


@dataclass(frozen=True, slots=True)
class MemoryBackendStats:
    """A snapshot of a :class:`MemoryBackend`.

    Attributes:
        keys: keys held now (some may have refilled and wait to be dropped).
        max_keys: the cap on ``keys``.
        expired: keys dropped because their bucket had refilled completely
            (no information lost).
        evicted: keys dropped, bucket not yet full, because ``max_keys`` was
            reached: each let that key start again with a full bucket.
    """

    keys: int
    max_keys: int
    expired: int
    evicted: int


class MemoryBackend:
    """GCRA buckets in this process's memory (the default backend).

    Thread-safe (one lock, held for a few dictionary operations), O(1) per
    decision, and bounded: see the module docstring.  One backend may serve
    several limiters as long as their keys differ (``"msg:42"``, ``"cmd:42"``).

    Args:
        max_keys: the most keys kept at once (an int >= 1).

    Raises:
        ConfigurationError: ``max_keys`` < 1.
        TypeError: ``max_keys`` is not an int.
    """

    __slots__ = ("__weakref__", "_evicted", "_expired", "_lock", "_tats", "max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = check_positive_int("max_keys", max_keys)
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._expired = 0
        self._evicted = 0

    def acquire(self, key: str, *, now: float, interval: float, burst: int, cost: int) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them.

        The :class:`~botscale.RateLimitBackend` method; arguments are trusted
        (the limiter validates them once, at its boundary).
        """
        tats = self._tats
        with self._lock:
            tat = tats.get(key)
            new_tat, decision = gcra_update(tat, now, interval, burst, cost)
            if decision.allowed and new_tat is not None:  # new_tat is set whenever allowed
                if tat is None:
                    self._insert(key, new_tat, now)
                    return decision
                tats[key] = new_tat
            if tat is not None:
                tats.move_to_end(key)
            return decision

    def reset(self, key: str) -> None:
        """Forget ``key``: its bucket is full again."""
        with self._lock:
            self._tats.pop(key, None)

    def stats(self) -> MemoryBackendStats:
        """A snapshot of the key table and of the keys dropped so far."""
        with self._lock:
            return MemoryBackendStats(len(self._tats), self.max_keys, self._expired, self._evicted)

    def __len__(self) -> int:
        return len(self._tats)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` (a backend key string) has a stored bucket."""
        return key in self._tats

    def __repr__(self) -> str:
        return f"MemoryBackend(max_keys={self.max_keys}, keys={len(self._tats)})"

    def _insert(self, key: str, tat: float, now: float) -> None:
        """Store a new key; drop up to two refilled keys, or evict past ``max_keys``.

        Called with the lock held.  Two drops per insert make refilled keys
        leave faster than keys arrive.  Under ``max_keys`` the oldest key is
        only looked at (``next(iter(...))`` is O(1) on an ``OrderedDict``) and
        deleted only if it has refilled; at ``max_keys`` it goes in one
        ``popitem``, refilled or not.
        """
        tats = self._tats
        if len(tats) >= self.max_keys:
            oldest_tat = tats.popitem(last=False)[1]
            if oldest_tat > now:
                # The oldest key has not refilled: it goes with its bucket not yet full.
                self._evicted += 1
                tats[key] = tat
                return
            self._expired += 1
        elif tats:
            oldest = next(iter(tats))
            if tats[oldest] > now:  # the oldest key still carries information
                tats[key] = tat
                return
            del tats[oldest]
            self._expired += 1
        if tats:  # the oldest had refilled: the next one may have too
            second = next(iter(tats))
            if tats[second] <= now:
                del tats[second]
                self._expired += 1
        tats[key] = tat

    def _bind(
        self,
        interval: float,
        burst: int,
        clock: Callable[[], float],
        to_key: Callable[[Key], str],
        check_cost: Callable[[object, int], NoReturn],
    ) -> tuple[TryAcquire, Callable[[], tuple[int, int]]]:
        """A complete ``try_acquire`` for one limiter, and a reader of its counts.

        This is the hot path: validation, clock, GCRA and bookkeeping in one
        frame over local names, with :func:`~botscale._gcra.gcra_update`'s
        operations inlined in the same order (a test checks they agree bit for
        bit).  The second function returns ``(allowed, denied)`` so far; they
        are counted under this backend's lock, so they are exact.
        """
        tats = self._tats
        get = tats.get
        move_to_end = tats.move_to_end
        lock = self._lock
        lock_acquire = lock.acquire
        lock_release = lock.release
        insert = self._insert
        floor = math.floor
        make = tuple.__new__
        allowed = ALLOWED
        cached = len(ALLOWED)
        capacity = burst * interval
        limit = capacity + EPSILON

        one = 1
        int_repr = int.__repr__  # to_key's answer for a plain int, one call cheaper
        granted = refused = 0
        large = make(Decision, (True, -1, 0.0))

        def try_acquire(key: Key, cost: int = 1) -> Decision:
            nonlocal granted, refused, large
            if type(key) is not str:
                k = int_repr(key) if type(key) is int else to_key(key)
            else:
                k = key
            # `is` catches the usual cost=1 in one step; anything else is checked fully.
            if cost is not one and (type(cost) is not int or not 0 < cost <= burst):
                check_cost(cost, burst)
            lock_acquire()
            try:
                now = clock()
                tat = get(k)
                base = now if tat is None or tat < now else tat
                # 1 * interval is interval exactly: skip the int * float step.
                new_tat = base + (interval if cost is one else cost * interval)
                debt = new_tat - now
                if debt <= limit:
                    if tat is None:
                        insert(k, new_tat, now)
                    else:
                        tats[k] = new_tat
                        move_to_end(k)
                    granted += 1
                    remaining = floor((limit - debt) / interval)
                    if remaining < cached:
                        return allowed[remaining]
                    if remaining != large[1]:  # a burst above the shared decisions' range:
                        large = make(Decision, (True, remaining, 0.0))  # keep the last one
                    return large
                if tat is not None:
                    move_to_end(k)
                refused += 1
                if cost is one:
                    return make(Decision, (False, 0, debt - capacity))
                held = min(cost - 1, floor((limit - (base - now)) / interval))
                return make(Decision, (False, held if held > 0 else 0, debt - capacity))
            finally:
                lock_release()

        def counts() -> tuple[int, int]:
            return granted, refused

        return try_acquire, counts
