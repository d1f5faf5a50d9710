"""Update de-duplication: accept each ``update_id`` once per window.

Telegram re-sends a webhook update when the bot did not answer 200 in time,
and several bot instances behind one webhook may each receive it; without a
check the bot answers twice.  :class:`Deduplicator` remembers the ids it
accepted for ``ttl`` seconds, at most ``maxsize`` of them.

Every id lives exactly ``ttl`` seconds from its acceptance, so insertion order
is expiry order: one ``OrderedDict`` serves both the lookup and the sweep
(its front is always the next id to expire), and each call is O(1) amortised.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from ._clock import Clock
from ._protocols import Key
from ._validation import check_key, check_positive, check_positive_int

__all__ = ["AsyncDeduplicator", "DedupStats", "Deduplicator"]

_SWEEP_STEP = 4
_KEY_TYPES = frozenset({int, str})


class DedupStats(NamedTuple):
    """A snapshot of a :class:`Deduplicator`'s counters.

    ``accepted + duplicates`` is the number of :meth:`~Deduplicator.seen`
    calls.  Ids that left the window early because it was full are in
    ``evictions_size``: a late duplicate of one of them would be accepted
    again, so a growing count means ``maxsize`` is too small for the traffic.
    """

    size: int
    maxsize: int
    accepted: int
    duplicates: int
    forgotten: int
    evictions_size: int
    evictions_ttl: int


class Deduplicator:
    """Remembers accepted ids for ``ttl`` seconds so duplicates can be dropped.

    >>> dedup = Deduplicator(ttl=600.0, maxsize=100_000)
    >>> dedup.seen(1001)    # first time: process it
    False
    >>> dedup.seen(1001)    # a retry of the same update: drop it
    True

    :meth:`seen` is atomic (of concurrent calls with one id exactly one gets
    ``False``), thread-safe, and never waits for I/O, so it may be called from
    async code directly; :class:`AsyncDeduplicator` / :attr:`aio` give the
    awaitable shape (:class:`~botscale.AsyncDedupStore`) that the Redis twin
    shares.  A duplicate does not extend its id's window.

    Args:
        ttl: seconds an accepted id is remembered (> 0).  Telegram retries a
            failed webhook delivery for a while; the default of 10 minutes
            covers retries and instances racing for one update.
        maxsize: the most ids remembered (>= 1); when full, the oldest is
            forgotten early and counted in ``evictions_size``.
        clock: monotonic seconds; inject a ``FakeClock`` in tests.

    Raises:
        ValueError: ``ttl`` <= 0 or ``maxsize`` < 1 (a ``ConfigurationError``).
    """

    def __init__(
        self,
        ttl: float = 600.0,
        maxsize: int = 100_000,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._ttl = check_positive("ttl", ttl)
        self._maxsize = check_positive_int("maxsize", maxsize)
        if not callable(clock):
            raise TypeError(
                f"clock must be a callable returning seconds, got {type(clock).__name__}"
            )
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: OrderedDict[Key, float] = OrderedDict()
        self._accepted = 0
        self._duplicates = 0
        self._forgotten = 0
        self._evicted_size = 0
        self._evicted_ttl = 0
        # No id expires before this: a lower bound of the oldest id's expiry
        # (ids only leave from the front or the middle), so seen() skips the
        # sweep until it can find something.
        self._front = -math.inf
        self._aio: AsyncDeduplicator | None = None
        # Like RateLimiter with its memory backend: the per-update method runs
        # in one frame over local names, bound once (unless a subclass overrides it).
        self._seen = self._bind_seen()
        if type(self).seen is Deduplicator.seen:
            self.seen = self._seen  # type: ignore[method-assign, assignment]

    def seen(self, key: Key) -> bool:
        """``False`` if ``key`` is new in the window (and remember it), ``True`` for a duplicate.

        Args:
            key: an ``update_id`` (``int``) or any ``str`` id, e.g.
                ``f"{bot_id}:{update_id}"`` when several bots share one store.

        Raises:
            TypeError: a key that is not ``str`` or ``int``.
        """
        return self._seen(key)

    def _bind_seen(self) -> Callable[[Key], bool]:
        """:meth:`seen` over local names, for this deduplicator."""
        lock = self._lock
        clock = self._clock
        ids = self._ids
        get = ids.get
        popitem = ids.popitem
        sweep = self._sweep
        maxsize = self._maxsize
        ttl = self._ttl
        key_types = _KEY_TYPES

        def seen(key: Key) -> bool:
            if key.__class__ not in key_types:
                check_key(key)
            with lock:
                now = clock()
                expires = get(key)
                if expires is not None:
                    if now < expires:
                        self._duplicates += 1
                        return True
                    del ids[key]
                    self._evicted_ttl += 1
                if now >= self._front:
                    sweep(now, _SWEEP_STEP)
                while len(ids) >= maxsize:
                    _, oldest = popitem(last=False)
                    if oldest <= now:
                        self._evicted_ttl += 1
                    else:
                        self._evicted_size += 1
                ids[key] = now + ttl
                self._accepted += 1
                return False

        seen.__doc__ = Deduplicator.seen.__doc__
        return seen

    def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered.

        Call it when the handler of an accepted update failed and the retry
        Telegram will send should be processed after all.
        """
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        with self._lock:
            expires = self._ids.pop(key, None)
            if expires is None:
                return False
            if expires <= self._clock():
                self._evicted_ttl += 1
                return False
            self._forgotten += 1
            return True

    def __len__(self) -> int:
        """Ids remembered right now (reclaims every expired one first)."""
        with self._lock:
            self._sweep(self._clock(), None)
            return len(self._ids)

    def stats(self) -> DedupStats:
        """Size and counters (reclaims every expired id first, so they add up)."""
        with self._lock:
            self._sweep(self._clock(), None)
            return DedupStats(
                size=len(self._ids),
                maxsize=self._maxsize,
                accepted=self._accepted,
                duplicates=self._duplicates,
                forgotten=self._forgotten,
                evictions_size=self._evicted_size,
                evictions_ttl=self._evicted_ttl,
            )

    @property
    def aio(self) -> AsyncDeduplicator:
        """An awaitable view of this very deduplicator (same window, same counters)."""
        if self._aio is None:
            self._aio = AsyncDeduplicator._wrap(self)
        return self._aio

    @property
    def ttl(self) -> float:
        """Seconds an accepted id is remembered."""
        return self._ttl

    @property
    def maxsize(self) -> int:
        """The most ids remembered."""
        return self._maxsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ttl={self._ttl}, maxsize={self._maxsize})"

    def _sweep(self, now: float, limit: int | None) -> None:
        ids = self._ids
        budget = len(ids) if limit is None else limit
        while ids:
            key, expires = next(iter(ids.items()))
            if now < expires or budget <= 0:
                self._front = expires
                return
            del ids[key]
            self._evicted_ttl += 1
            budget -= 1
        self._front = -math.inf  # empty: look again at the next call


class AsyncDeduplicator:
    """The awaitable twin of :class:`Deduplicator` (an :class:`~botscale.AsyncDedupStore`).

    Same arguments and behaviour; the coroutines never wait for I/O.
    """

    def __init__(
        self,
        ttl: float = 600.0,
        maxsize: int = 100_000,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._dedup = Deduplicator(ttl, maxsize, clock=clock)
        self._dedup._aio = self

    @classmethod
    def _wrap(cls, dedup: Deduplicator) -> AsyncDeduplicator:
        view = cls.__new__(cls)
        view._dedup = dedup
        return view

    @property
    def sync(self) -> Deduplicator:
        """The underlying thread-safe deduplicator."""
        return self._dedup

    async def seen(self, key: Key) -> bool:
        """``False`` if ``key`` is new in the window (and remember it), ``True`` for a duplicate."""
        return self._dedup.seen(key)

    async def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered."""
        return self._dedup.forget(key)

    async def size(self) -> int:
        """Ids remembered right now."""
        return len(self._dedup)

    def __len__(self) -> int:
        return len(self._dedup)

    def stats(self) -> DedupStats:
        """Size and counters; see :meth:`Deduplicator.stats`."""
        return self._dedup.stats()

    @property
    def ttl(self) -> float:
        """Seconds an accepted id is remembered."""
        return self._dedup.ttl

    @property
    def maxsize(self) -> int:
        """The most ids remembered."""
        return self._dedup.maxsize

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ttl={self._dedup.ttl}, maxsize={self._dedup.maxsize})"
