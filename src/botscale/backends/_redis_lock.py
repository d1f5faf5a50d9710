"""A per-key lock shared by every process: one chat's updates one at a time, across instances.

Inside a process, waiters for a key line up in a :class:`~botscale.KeyedLock`
(FIFO, no Redis traffic); only the head of the line competes for the Redis
key ``{<prefix>:lk:<key>}`` with ``SET NX PX`` and a random token, polling with
a capped exponential wait.  The TTL frees the lock of a crashed holder;
release and extend run a Lua script that checks the token, so a holder whose
lock expired can never release someone else's.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Final, TypedDict

from typing_extensions import NotRequired

from .._clock import AsyncSleep, Clock, Sleep
from .._concurrency import AsyncKeyedLock, ConcurrencyTimeout, KeyedLock
from .._validation import check_non_negative, check_positive
from ._breaker import CircuitBreaker, FailurePolicy, RedisStats
from ._redis_base import (
    FAILED,
    AsyncRedis,
    ClientT,
    LuaScript,
    RedisComponent,
    SyncRedis,
    encode_key,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisKeyedLock", "LockOptions", "RedisKeyedLock"]

_UNLOCK: Final = LuaScript("unlock.lua")
_EXTEND: Final = LuaScript("extend.lua")
_NO_REDIS: Final = ""  # token of a lock taken without Redis (policy "open")

logger = logging.getLogger("botscale.redis")


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class LockOptions(TypedDict):
    """How a component that takes locks itself (sessions, cache misses) builds them."""

    prefix: str
    ttl: float
    on_error: FailurePolicy
    breaker: CircuitBreaker
    clock: NotRequired[Clock]


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout, tokens, waits and bookkeeping."""

    _KIND = "lk"  # the key namespace: user locks; state-store sessions use "sl"

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        ttl: float,
        poll: float,
        max_poll: float,
        on_error: FailurePolicy,
        breaker: CircuitBreaker | None,
        clock: Clock,
    ) -> None:
        super().__init__(client, prefix, self._KIND)
        self.ttl = check_positive("ttl", ttl)
        self._px = _millis(self.ttl)
        self.poll = check_positive("poll", poll)
        self.max_poll = max(self.poll, check_positive("max_poll", max_poll))
        self._init_policy(on_error, ("open", "closed"), breaker)
        self._clock = clock
        self._tokens: dict[str | int, str] = {}
        self.expired = 0
        """Releases that found the lock already expired (held longer than ``ttl``)."""

    def redis_key(self, key: str | int) -> str:
        """The Redis key of ``key``'s lock: ``{<prefix>:lk:<key>}``."""
        return self._head + encode_key(key) + "}"

    def stats(self) -> RedisStats:
        """How often this lock was taken or released without Redis, and the breaker's state."""
        return self._guard.stats()

    def held(self, key: str | int) -> bool:
        """Whether this process holds ``key``."""
        return key in self._tokens

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else self._clock() + check_non_negative("timeout", timeout)

    def _waits(self, deadline: float | None) -> Iterator[float]:
        """The waits between attempts on a held key: ``poll`` doubling up to
        ``max_poll``, none left once ``deadline`` has passed."""
        wait = self.poll
        while True:
            left = None if deadline is None else max(0.0, deadline - self._clock())
            if left is not None and left <= 0:
                return
            yield wait if left is None else min(wait, left)
            wait = min(wait * 2, self.max_poll)

    def _took(self, key: str | int, token: str, taken: object) -> bool:
        """Book the answer to ``SET NX``: held with ``token``, not held, or (Redis
        failed under ``"open"``) held without Redis."""
        if taken is FAILED:
            self._tokens[key] = _NO_REDIS
            return True
        if taken:
            self._tokens[key] = token
        return bool(taken)

    def _held_token(self, key: str | int) -> str:
        token = self._tokens.get(key)
        if token is None:
            raise self._not_held(key)
        return token

    def _pop_token(self, key: str | int) -> str:
        token = self._tokens.pop(key, None)
        if token is None:
            raise self._not_held(key)
        return token

    def _extend_px(self, ttl: float | None) -> int:
        return _millis(self.ttl if ttl is None else check_positive("ttl", ttl))

    def _not_held(self, key: str | int) -> RuntimeError:
        return RuntimeError(f"release of key {key!r} that this process does not hold")

    def _released(self, key: str | int, released: object) -> None:
        if released is FAILED:
            return
        if not released:
            self.expired += 1
            logger.warning(
                "%s: lock %r expired before release (held longer than ttl=%g s)",
                self._guard.name,
                key,
                self.ttl,
            )

    def _timeout(self, key: str | int, timeout: float | None) -> ConcurrencyTimeout:
        return ConcurrencyTimeout(
            f"key {key!r} still held by another holder after {timeout:g} s",
            name=repr(key),
            timeout=timeout or 0.0,
        )


class RedisKeyedLock(_Base[SyncRedis]):
    """Per-key locks across processes (threads twin; see :class:`~botscale.KeyedLock`).

    ``with locks.lock(chat_id):`` runs the block while no other thread or
    process holds ``chat_id``.  In-process waiters keep their arrival order;
    across processes the lock guarantees exclusion, not arrival order.

    Args:
        client: a ready ``redis.Redis`` client (with socket timeouts).
        prefix: namespace of this bot's keys.
        ttl: seconds after which a lock frees itself (a crashed holder); hold
            it shorter or call :meth:`extend`.
        poll: first wait between attempts on a held key (doubles up to ``max_poll``).
        max_poll: the longest wait between attempts.
        on_error: ``"closed"`` (default) raises :class:`~botscale.BackendError`
            while Redis fails; ``"open"`` proceeds with the in-process lock only.
        breaker: a :class:`CircuitBreaker`, possibly shared.
        clock: monotonic seconds; ``sleep``: how to wait (both injectable).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl: float = 30.0,
        poll: float = 0.005,
        max_poll: float = 0.1,
        on_error: FailurePolicy = "closed",
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(
            client,
            prefix=prefix,
            ttl=ttl,
            poll=poll,
            max_poll=max_poll,
            on_error=on_error,
            breaker=breaker,
            clock=clock,
        )
        self._sleep = sleep
        self._local = KeyedLock()

    @contextmanager
    def lock(self, key: str | int, *, timeout: float | None = None) -> Iterator[None]:
        """A ``with`` block holding ``key``.

        Raises:
            ConcurrencyTimeout: ``key`` was not free within ``timeout`` seconds.
            BackendError: Redis failed under ``on_error="closed"``.
        """
        if not self.acquire(key, timeout=timeout):
            raise self._timeout(key, timeout)
        try:
            yield
        finally:
            self.release(key)

    def acquire(self, key: str | int, *, timeout: float | None = None) -> bool:
        """Hold ``key`` (waiting at most ``timeout`` seconds); ``False`` on timeout."""
        rkey = self.redis_key(key)
        deadline = self._deadline(timeout)
        if not self._local.acquire(key, timeout=timeout):
            return False
        try:
            got = self._acquire_remote(key, rkey, deadline)
        except BaseException:
            self._local.release(key)
            raise
        if not got:
            self._local.release(key)
        return got

    def _take(self, key: str | int, rkey: str, token: str) -> bool:
        """One ``SET NX``: ``True`` if this process now holds ``key`` (or Redis failed, "open")."""
        taken = self._call(FAILED, self.client.set, rkey, token, nx=True, px=self._px)
        return self._took(key, token, taken)

    def _acquire_remote(self, key: str | int, rkey: str, deadline: float | None) -> bool:
        token = secrets.token_hex(16)
        waits = self._waits(deadline)
        while not self._take(key, rkey, token):
            wait = next(waits, None)
            if wait is None:
                return False
            self._sleep(wait)
        return True

    def _release_remote(self, key: str | int) -> None:
        token = self._pop_token(key)
        if token:  # else taken without Redis
            released = self._call(FAILED, _UNLOCK.run, self.client, 1, self.redis_key(key), token)
            self._released(key, released)

    def release(self, key: str | int) -> None:
        """Free ``key`` (if the lock expired meanwhile, count and log it).

        Raises:
            RuntimeError: this process does not hold ``key``.
            BackendError: Redis failed under ``on_error="closed"`` (the
                in-process lock is released anyway; the Redis key expires).
        """
        if key not in self._tokens:
            raise self._not_held(key)
        try:
            self._release_remote(key)
        finally:
            self._local.release(key)

    def extend(self, key: str | int, ttl: float | None = None) -> bool:
        """Give a held lock ``ttl`` more seconds (default: the lock's ``ttl``).

        Returns:
            ``False`` if the lock had already expired (another holder may have it).
        """
        token = self._held_token(key)
        if not token:  # taken without Redis
            return True
        px = self._extend_px(ttl)
        try:
            return bool(_EXTEND.run(self.client, 1, self.redis_key(key), token, px))
        except self._errors as exc:
            self._failed(exc)
            return True

    def locked(self, key: str | int) -> bool:
        """Whether any process holds ``key`` now."""
        return bool(self.client.exists(self.redis_key(key)))


class AsyncRedisKeyedLock(_Base[AsyncRedis]):
    """The asyncio twin of :class:`RedisKeyedLock` (``async with locks.lock(chat_id):``).

    In-process waiters line up in an :class:`~botscale.AsyncKeyedLock`; the
    arguments are those of :class:`RedisKeyedLock` with an awaitable ``sleep``.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        ttl: float = 30.0,
        poll: float = 0.005,
        max_poll: float = 0.1,
        on_error: FailurePolicy = "closed",
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            client,
            prefix=prefix,
            ttl=ttl,
            poll=poll,
            max_poll=max_poll,
            on_error=on_error,
            breaker=breaker,
            clock=clock,
        )
        self._sleep = sleep
        self._local = AsyncKeyedLock()

    @asynccontextmanager
    async def lock(self, key: str | int, *, timeout: float | None = None) -> AsyncIterator[None]:
        """An ``async with`` block holding ``key``.

        Raises:
            ConcurrencyTimeout: ``key`` was not free within ``timeout`` seconds.
            BackendError: Redis failed under ``on_error="closed"``.
        """
        if not await self.acquire(key, timeout=timeout):
            raise self._timeout(key, timeout)
        try:
            yield
        finally:
            await self.release(key)

    async def acquire(self, key: str | int, *, timeout: float | None = None) -> bool:
        """Hold ``key`` (waiting at most ``timeout`` seconds); ``False`` on timeout."""
        rkey = self.redis_key(key)
        deadline = self._deadline(timeout)
        if deadline is None or not self._local.locked(key):
            await self._local.acquire(key)  # returns at once when the key is free here
        else:
            try:
                await asyncio.wait_for(self._local.acquire(key), timeout)
            except asyncio.TimeoutError:
                return False
        try:
            got = await self._acquire_remote(key, rkey, deadline)
        except BaseException:
            self._local.release(key)
            raise
        if not got:
            self._local.release(key)
        return got

    async def _take(self, key: str | int, rkey: str, token: str) -> bool:
        """One ``SET NX``: ``True`` if this process now holds ``key`` (or Redis failed, "open")."""
        taken = await self._acall(FAILED, self.client.set, rkey, token, nx=True, px=self._px)
        return self._took(key, token, taken)

    async def _acquire_remote(self, key: str | int, rkey: str, deadline: float | None) -> bool:
        token = secrets.token_hex(16)
        waits = self._waits(deadline)
        while not await self._take(key, rkey, token):
            wait = next(waits, None)
            if wait is None:
                return False
            await self._sleep(wait)
        return True

    async def _release_remote(self, key: str | int) -> None:
        token = self._pop_token(key)
        if token:  # else taken without Redis
            released = await self._acall(
                FAILED, _UNLOCK.arun, self.client, 1, self.redis_key(key), token
            )
            self._released(key, released)

    async def release(self, key: str | int) -> None:
        """Free ``key``; see :meth:`RedisKeyedLock.release`."""
        if key not in self._tokens:
            raise self._not_held(key)
        try:
            await self._release_remote(key)
        finally:
            self._local.release(key)

    async def extend(self, key: str | int, ttl: float | None = None) -> bool:
        """Give a held lock ``ttl`` more seconds; ``False`` if it had already expired."""
        token = self._held_token(key)
        if not token:  # taken without Redis
            return True
        px = self._extend_px(ttl)
        try:
            return bool(await _EXTEND.arun(self.client, 1, self.redis_key(key), token, px))
        except self._errors as exc:
            self._failed(exc)
            return True

    async def locked(self, key: str | int) -> bool:
        """Whether any process holds ``key`` now."""
        return bool(await self.client.exists(self.redis_key(key)))
