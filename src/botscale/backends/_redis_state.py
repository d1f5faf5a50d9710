"""Per-key state in Redis, shared by every process of a bot.

Each key is one Redis string ``{<prefix>:st:<key>}`` holding JSON, with the
entry's TTL as the Redis key's own expiry, so Redis does the eviction.
``update`` is optimistic: WATCH the key, compute, MULTI/EXEC, retry on a
concurrent change (bounded).  Counting entries (``len`` / ``size``) SCANs the
prefix: O(keys in the database) - fine for a health page, not for every update.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from typing_extensions import Self

from .._clock import AsyncSleep, Sleep
from .._concurrency import AsyncKeyedLock, KeyedLock
from .._errors import BackendError
from .._protocols import Key
from .._validation import check_positive, check_positive_int
from ._breaker import CircuitBreaker, FailurePolicy, RedisStats
from ._json import dumps, loads
from ._redis_base import (
    DEFAULT_TIMEOUT,
    AsyncRedis,
    ClientT,
    RedisComponent,
    SyncRedis,
    connect,
    connect_async,
    encode_key,
)
from ._redis_lock import LockOptions
from ._redis_session import (
    AsyncSessionLock,
    AsyncSessionLocks,
    RedisSessionContext,
    SessionLock,
    SyncSessionLocks,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisStateStore", "RedisStateStore"]

_SCAN_COUNT: Final = 1000


def _backoff(attempt: int) -> float:
    """A jittered wait after losing an optimistic race (capped at 50 ms)."""
    return random.uniform(0.0, min(0.05, 0.001 * 2**attempt))


def _millis(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _loaded(raw: str | bytes | None, default: Any) -> Any:
    """A stored value, or ``default`` where there is none."""
    return default if raw is None else loads(raw)


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout, ``from_url``, sessions."""

    __slots__ = (
        "_lock_ttl",
        "_owned",
        "_sessions",
        "_sleep",
        "_ttl_ms",
        "_updating",
        "_watch_error",
        "max_retries",
        "ttl",
    )

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        ttl: float | None,
        on_error: FailurePolicy,
        max_retries: int,
        lock_ttl: float,
        breaker: CircuitBreaker | None,
    ) -> None:
        super().__init__(client, prefix, "st")
        self.ttl = None if ttl is None else check_positive("ttl", ttl)
        self._ttl_ms = None if ttl is None else _millis(ttl)
        self.max_retries = check_positive_int("max_retries", max_retries)
        self._init_policy(on_error, ("open", "closed"), breaker)
        import redis.exceptions

        self._watch_error = redis.exceptions.WatchError
        self._owned = False
        self._sessions: SyncSessionLocks | AsyncSessionLocks | None = None
        self._lock_ttl = check_positive("lock_ttl", lock_ttl)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        ttl: float | None = None,
        on_error: FailurePolicy = "closed",
        max_retries: int = 32,
        lock_ttl: float = 30.0,
        breaker: CircuitBreaker | None = None,
        socket_timeout: float = DEFAULT_TIMEOUT,
        socket_connect_timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> Self:
        """Build the client from ``url`` (see :func:`botscale.backends.redis.connect`;
        :func:`~botscale.backends.redis.connect_async` for the asyncio twin).

        Raises:
            ConfigurationError: malformed URL or bad options.
            BackendError: ``check`` and the server is unreachable (password masked).
        """
        client = cls._client_from_url(url, prefix, socket_timeout, socket_connect_timeout, check)
        store = cls(
            client,
            prefix=prefix,
            ttl=ttl,
            on_error=on_error,
            max_retries=max_retries,
            lock_ttl=lock_ttl,
            breaker=breaker,
        )
        store._owned = True
        return store

    def session(
        self, key: Key, *, default: Callable[[], Any] = dict, ttl: float | None = None
    ) -> RedisSessionContext:
        """Open ``key``'s state for one handler (``with``/``async with``), across processes.

        Like ``MemoryStateStore.session``: the block holds ``key`` (in this
        process and, through a Redis lock living at most ``lock_ttl`` seconds,
        in every other), reads the value (``default()`` if none), and writes
        ``session.value`` back once if it ends without an exception
        (``session.delete()`` deletes instead).  Sessions of one key never
        lose an update, whichever instance runs them.
        """
        encode_key(key)
        if ttl is not None:
            check_positive("ttl", ttl)
        if self._sessions is None:
            self._sessions = self._session_locks()
        return RedisSessionContext(self, key, self._sessions, default=default, ttl=ttl)

    def _session_locks(self) -> SyncSessionLocks | AsyncSessionLocks:
        raise NotImplementedError

    def _lock_options(self) -> LockOptions:
        """How a session's Redis lock is built: this store's prefix, policy and breaker."""
        return LockOptions(
            prefix=self.prefix, ttl=self._lock_ttl, on_error=self.on_error, breaker=self.breaker
        )

    @property
    def on_error(self) -> FailurePolicy:
        """``"closed"`` (default: raise BackendError) or ``"open"`` (answer as if empty)."""
        return self._guard.policy  # type: ignore[return-value]

    def stats(self) -> RedisStats:
        """How often this store answered without Redis, and the breaker's state."""
        return self._guard.stats()

    def redis_key(self, key: str | int) -> str:
        """The Redis key of ``key``: ``{<prefix>:st:<n>}`` for ints, ``...:s:<text>}`` for str."""
        return self._head + encode_key(key) + "}"

    def _px(self, ttl: float | None) -> int | None:
        return self._ttl_ms if ttl is None else _millis(check_positive("ttl", ttl))

    def _pattern(self) -> str:
        return self._head + "*"

    def _lost_race(self, key: str | int) -> BackendError:
        return BackendError(
            f"{type(self).__name__}.update({key!r}): the value changed under it "
            f"{self.max_retries} times in a row (too much contention on one key)"
        )


class RedisStateStore(_Base[SyncRedis]):
    """A :class:`~botscale.StateStore` in Redis: JSON values, per-key TTL, atomic update.

    Args:
        client: a ready ``redis.Redis`` client (give it socket timeouts, or use
            :meth:`from_url`).
        prefix: namespace of this bot's keys (``[A-Za-z0-9_.-]``, 1-64 chars).
        ttl: default seconds an entry lives (``None``: until deleted).
        on_error: ``"closed"`` (default) raises :class:`~botscale.BackendError`
            while Redis fails; ``"open"`` answers as an empty store (``get``
            returns the default, writes are dropped) and counts it.
        max_retries: attempts of :meth:`update` under contention before it
            raises :class:`~botscale.BackendError`.
        lock_ttl: the longest a :meth:`session` holds its key's Redis lock
            (it frees itself after a crash).
        breaker: a :class:`CircuitBreaker`, possibly shared with other components.
        sleep: how :meth:`update` waits after losing a race (injectable).
    """

    __slots__ = ()

    _connect = staticmethod(connect)

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        ttl: float | None = None,
        on_error: FailurePolicy = "closed",
        max_retries: int = 32,
        lock_ttl: float = 30.0,
        breaker: CircuitBreaker | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(
            client,
            prefix=prefix,
            ttl=ttl,
            on_error=on_error,
            max_retries=max_retries,
            lock_ttl=lock_ttl,
            breaker=breaker,
        )
        self._sleep = sleep
        self._updating = KeyedLock()

    def _session_locks(self) -> SyncSessionLocks:
        return SyncSessionLocks(SessionLock(self.client, **self._lock_options()))

    def get(self, key: str | int, default: Any = None) -> Any:
        """The live value for ``key``, or ``default``."""
        return _loaded(self._call(None, self.client.get, self.redis_key(key)), default)

    def set(self, key: str | int, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` (JSON) for ``key``, living ``ttl`` seconds (default: the store's).

        Raises:
            TypeError: ``value`` is not JSON (the message names the type).
        """
        self._call(None, self.client.set, self.redis_key(key), dumps(value), px=self._px(ttl))

    def delete(self, key: str | int) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        return bool(self._call(0, self.client.delete, self.redis_key(key)))

    def update(
        self,
        key: str | int,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
    ) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it.

        Updates of one key in this process take turns (no race among them);
        against other processes it is optimistic: if another process changes
        the key meanwhile, ``fn`` runs again on the new value (so it must be
        free of side effects) after a short jittered wait, at most
        ``max_retries`` times.  The entry then lives ``ttl`` seconds (default:
        the store's), like :meth:`set`.

        Raises:
            TypeError: the new value is not JSON.
            BackendError: Redis failed (policy ``"closed"``) or the retries ran out.
        """
        rkey = self.redis_key(key)
        px = self._px(ttl)
        if not self._ready():
            return fn(default)
        try:
            with self._updating.lock(key), self.client.pipeline() as pipe:
                for attempt in range(self.max_retries):
                    pipe.watch(rkey)
                    new = fn(_loaded(pipe.get(rkey), default))
                    data = dumps(new)
                    pipe.multi()
                    pipe.set(rkey, data, px=px)
                    try:
                        pipe.execute()
                    except self._watch_error:
                        self._sleep(_backoff(attempt))
                        continue
                    self._guard.ok()
                    return new
        except self._errors as exc:
            self._failed(exc)
            return fn(default)
        self._guard.ok()
        raise self._lost_race(key)

    def __len__(self) -> int:
        """Live entries under this prefix (SCAN: O(keys in the database))."""
        return self._call(0, self._count)

    def _count(self) -> int:
        return sum(1 for _ in self.client.scan_iter(match=self._pattern(), count=_SCAN_COUNT))

    def clear(self) -> int:
        """Delete every entry under this prefix (SCAN + UNLINK); return how many."""
        removed = 0
        batch: list[Any] = []
        for rkey in self.client.scan_iter(match=self._pattern(), count=_SCAN_COUNT):
            batch.append(rkey)
            if len(batch) >= _SCAN_COUNT:
                removed += self.client.unlink(*batch)
                batch.clear()
        if batch:
            removed += self.client.unlink(*batch)
        return removed

    def close(self) -> None:
        """Close the client if :meth:`from_url` built it (a passed-in client stays yours)."""
        if self._owned:
            self.client.close()


class AsyncRedisStateStore(_Base[AsyncRedis]):
    """The ``redis.asyncio`` twin of :class:`RedisStateStore` (an ``AsyncStateStore``).

    Same arguments and policies; ``client`` is a ``redis.asyncio.Redis``.
    """

    __slots__ = ()

    _connect = staticmethod(connect_async)

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        ttl: float | None = None,
        on_error: FailurePolicy = "closed",
        max_retries: int = 32,
        lock_ttl: float = 30.0,
        breaker: CircuitBreaker | None = None,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            client,
            prefix=prefix,
            ttl=ttl,
            on_error=on_error,
            max_retries=max_retries,
            lock_ttl=lock_ttl,
            breaker=breaker,
        )
        self._sleep = sleep
        self._updating = AsyncKeyedLock()

    def _session_locks(self) -> AsyncSessionLocks:
        return AsyncSessionLocks(AsyncSessionLock(self.client, **self._lock_options()))

    async def get(self, key: str | int, default: Any = None) -> Any:
        """The live value for ``key``, or ``default``."""
        return _loaded(await self._acall(None, self.client.get, self.redis_key(key)), default)

    async def set(self, key: str | int, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` (JSON) for ``key``, living ``ttl`` seconds (default: the store's).

        Raises:
            TypeError: ``value`` is not JSON (the message names the type).
        """
        await self._acall(
            None, self.client.set, self.redis_key(key), dumps(value), px=self._px(ttl)
        )

    async def delete(self, key: str | int) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        return bool(await self._acall(0, self.client.delete, self.redis_key(key)))

    async def update(
        self,
        key: str | int,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
    ) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it.

        See :meth:`RedisStateStore.update` (optimistic, ``fn`` may run again).
        """
        rkey = self.redis_key(key)
        px = self._px(ttl)
        if not self._ready():
            return fn(default)
        try:
            async with self._updating.lock(key), self.client.pipeline() as pipe:
                for attempt in range(self.max_retries):
                    await pipe.watch(rkey)
                    new = fn(_loaded(await pipe.get(rkey), default))
                    data = dumps(new)
                    pipe.multi()
                    pipe.set(rkey, data, px=px)
                    try:
                        await pipe.execute()
                    except self._watch_error:
                        await self._sleep(_backoff(attempt))
                        continue
                    self._guard.ok()
                    return new
        except self._errors as exc:
            self._failed(exc)
            return fn(default)
        self._guard.ok()
        raise self._lost_race(key)

    async def size(self) -> int:
        """Live entries under this prefix (SCAN: O(keys in the database))."""
        return await self._acall(0, self._count)

    async def _count(self) -> int:
        count = 0
        async for _ in self.client.scan_iter(match=self._pattern(), count=_SCAN_COUNT):
            count += 1
        return count

    async def clear(self) -> int:
        """Delete every entry under this prefix (SCAN + UNLINK); return how many."""
        removed = 0
        batch: list[Any] = []
        async for rkey in self.client.scan_iter(match=self._pattern(), count=_SCAN_COUNT):
            batch.append(rkey)
            if len(batch) >= _SCAN_COUNT:
                removed += await self.client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self.client.unlink(*batch)
        return removed

    async def aclose(self) -> None:
        """Close the client if :meth:`from_url` built it (a passed-in client stays yours)."""
        if self._owned:
            await self.client.aclose()
