"""Update de-duplication in Redis: one ``SET NX PX`` per update, shared by every process.

Each accepted id is a key ``{<prefix>:dd:<id>}`` that expires after ``ttl``:
Redis keeps the window, so the first process to see an update wins and the
others (and Telegram's webhook retries) see a duplicate.  The default policy
while Redis fails is ``"open"``: treat the update as new (processing an update
twice is better than dropping it), log and count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._protocols import Key
from .._validation import check_positive
from ._breaker import CircuitBreaker, FailurePolicy, Guard, RedisStats, check_policy
from ._redis_base import check_prefix, encode_key, redis_errors

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisDeduplicator", "RedisDedupStats", "RedisDeduplicator"]


@dataclass(frozen=True, slots=True)
class RedisDedupStats:
    """Counters of one Redis deduplicator (this process's view).

    Attributes:
        accepted: ids seen for the first time (or accepted without Redis).
        duplicates: ids already in the window.
        forgotten: ids dropped by :meth:`~RedisDeduplicator.forget`.
        redis: failures, answers without Redis and the breaker's state.
    """

    accepted: int
    duplicates: int
    forgotten: int
    redis: RedisStats


class _Base:
    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        ttl: float,
        on_error: FailurePolicy,
        breaker: CircuitBreaker | None,
    ) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self._head = "{" + self.prefix + ":dd:"
        self.ttl = check_positive("ttl", ttl)
        self._px = max(1, math.ceil(self.ttl * 1000))
        policy = check_policy("on_error", on_error, ("open", "closed"))
        self._guard = Guard(f"{type(self).__name__}(prefix={self.prefix!r})", policy, breaker)
        self._errors = redis_errors()[0]
        self._accepted = 0
        self._duplicates = 0
        self._forgotten = 0

    def redis_key(self, key: Key) -> str:
        """The Redis key of id ``key``: ``{<prefix>:dd:<id>}`` (str ids tagged ``s:``)."""
        return self._head + encode_key(key) + "}"

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this deduplicator's calls."""
        return self._guard.breaker

    def stats(self) -> RedisDedupStats:
        """Accepted, duplicate and forgotten ids, and how Redis fared."""
        return RedisDedupStats(
            self._accepted, self._duplicates, self._forgotten, self._guard.stats()
        )

    def _answer(self, was_set: object) -> bool:
        if was_set:
            self._accepted += 1
            return False
        self._duplicates += 1
        return True

    def _without_redis(self, exc: BaseException | None) -> bool:
        self._guard.degrade(exc)
        self._accepted += 1
        return False

    def _forgot(self, removed: int) -> bool:
        if removed:
            self._forgotten += 1
        return bool(removed)


class RedisDeduplicator(_Base):
    """A :class:`~botscale.DedupStore` in Redis: one window of ids for every process.

    >>> dedup = RedisDeduplicator(redis.Redis(), prefix="mybot")   # doctest: +SKIP
    >>> dedup.seen(update.update_id)   # False: new, process it; True: drop it

    Args:
        client: a ready ``redis.Redis`` client with socket timeouts.
        prefix: namespace of this bot's keys (the same in every process).
        ttl: seconds an accepted id is remembered (default 10 minutes).
        on_error: ``"open"`` (default) treats ids as new while Redis fails;
            ``"closed"`` raises :class:`~botscale.BackendError`.
        breaker: a :class:`CircuitBreaker`, possibly shared.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl: float = 600.0,
        on_error: FailurePolicy = "open",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(client, prefix=prefix, ttl=ttl, on_error=on_error, breaker=breaker)

    def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window (and remember it), else ``True``.

        Atomic across processes: of concurrent calls with one id exactly one
        gets ``False``.
        """
        rkey = self.redis_key(key)
        guard = self._guard
        if guard.ready():
            try:
                was_set = self.client.set(rkey, b"1", nx=True, px=self._px)
            except self._errors as exc:
                guard.failed(exc)
                return self._without_redis(exc)
            guard.ok()
            return self._answer(was_set)
        return self._without_redis(None)

    def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered."""
        rkey = self.redis_key(key)
        guard = self._guard
        if guard.ready():
            try:
                removed = self.client.delete(rkey)
            except self._errors as exc:
                guard.failed(exc)
                guard.degrade(exc)
                return False
            guard.ok()
            return self._forgot(removed)
        guard.degrade(None)
        return False


class AsyncRedisDeduplicator(_Base):
    """The ``redis.asyncio`` twin of :class:`RedisDeduplicator` (an ``AsyncDedupStore``)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        ttl: float = 600.0,
        on_error: FailurePolicy = "open",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(client, prefix=prefix, ttl=ttl, on_error=on_error, breaker=breaker)

    async def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window, else ``True``."""
        rkey = self.redis_key(key)
        guard = self._guard
        if guard.ready():
            try:
                was_set = await self.client.set(rkey, b"1", nx=True, px=self._px)
            except self._errors as exc:
                guard.failed(exc)
                return self._without_redis(exc)
            guard.ok()
            return self._answer(was_set)
        return self._without_redis(None)

    async def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered."""
        rkey = self.redis_key(key)
        guard = self._guard
        if guard.ready():
            try:
                removed = await self.client.delete(rkey)
            except self._errors as exc:
                guard.failed(exc)
                guard.degrade(exc)
                return False
            guard.ok()
            return self._forgot(removed)
        guard.degrade(None)
        return False
