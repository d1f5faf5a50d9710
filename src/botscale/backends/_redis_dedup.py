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

from .._protocols import Key
from .._validation import check_positive
from ._breaker import CircuitBreaker, FailurePolicy, RedisStats
from ._redis_base import FAILED, AsyncRedis, ClientT, RedisComponent, SyncRedis, encode_key

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


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout and the counters."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        ttl: float = 600.0,
        on_error: FailurePolicy = "open",
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(client, prefix, "dd")
        self.ttl = check_positive("ttl", ttl)
        self._px = max(1, math.ceil(self.ttl * 1000))
        self._init_policy(on_error, ("open", "closed"), breaker)
        self._accepted = 0
        self._duplicates = 0
        self._forgotten = 0

    def redis_key(self, key: Key) -> str:
        """The Redis key of id ``key``: ``{<prefix>:dd:<id>}`` (str ids tagged ``s:``)."""
        return self._head + encode_key(key) + "}"

    def stats(self) -> RedisDedupStats:
        """Accepted, duplicate and forgotten ids, and how Redis fared."""
        return RedisDedupStats(
            self._accepted, self._duplicates, self._forgotten, self._guard.stats()
        )

    def _answer(self, was_set: object) -> bool:
        """``seen``'s answer to ``SET NX``: an id is new when Redis could not tell."""
        if was_set is FAILED or was_set:
            self._accepted += 1
            return False
        self._duplicates += 1
        return True

    def _forgot(self, removed: int) -> bool:
        if removed:
            self._forgotten += 1
        return bool(removed)


class RedisDeduplicator(_Base[SyncRedis]):
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

    def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window (and remember it), else ``True``.

        Atomic across processes: of concurrent calls with one id exactly one
        gets ``False``.
        """
        was_set = self._call(
            FAILED, self.client.set, self.redis_key(key), b"1", nx=True, px=self._px
        )
        return self._answer(was_set)

    def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered."""
        return self._forgot(self._call(0, self.client.delete, self.redis_key(key)))


class AsyncRedisDeduplicator(_Base[AsyncRedis]):
    """The ``redis.asyncio`` twin of :class:`RedisDeduplicator` (an ``AsyncDedupStore``)."""

    async def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window, else ``True``."""
        was_set = await self._acall(
            FAILED, self.client.set, self.redis_key(key), b"1", nx=True, px=self._px
        )
        return self._answer(was_set)

    async def forget(self, key: Key) -> bool:
        """Drop ``key`` so that its next arrival is accepted; ``True`` if it was remembered."""
        return self._forgot(await self._acall(0, self.client.delete, self.redis_key(key)))
