"""A Redis-backed ``cached``: results shared by every process, one computation per key.

``@cache.cached(ttl=300)`` stores each result as JSON under
``{<prefix>:ca:<function>:<arguments>}`` with the ttl as the key's expiry.  A
miss takes the key's :class:`RedisKeyedLock` (in-process callers line up
behind it, other processes poll it), looks again - another process may have
filled the entry meanwhile - and only then calls the function: one
computation per key in flight across every process, a short lock with a TTL
so a crashed leader cannot block the key.

While Redis fails the default policy (``"open"``) calls the function directly,
uncached, and counts it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeVar

from typing_extensions import ParamSpec

from .._clock import AsyncSleep, Clock, Sleep
from .._validation import check_positive
from ._breaker import CircuitBreaker, FailurePolicy, RedisStats
from ._json import dumps, loads
from ._redis_base import FAILED, AsyncRedis, ClientT, RedisComponent, SyncRedis
from ._redis_lock import AsyncRedisKeyedLock, LockOptions, RedisKeyedLock

if TYPE_CHECKING:
    import redis
    import redis.asyncio

__all__ = ["AsyncRedisCache", "AsyncRedisCached", "RedisCache", "RedisCacheInfo", "RedisCached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_MISS: Final[Any] = object()
_GLOB: Final = re.compile(r"([*?\[\]\\])")


class RedisCacheInfo(NamedTuple):
    """A cached function's counters in this process.

    Every call is one of: ``hits`` (answered from Redis), ``misses`` (ran the
    function and stored the result), ``coalesced`` (waited for another
    caller, in this or another process, and read its result) or ``uncached``
    (ran the function without the cache: Redis failed, or the lock was not
    freed within the lock's ttl).
    """

    hits: int
    misses: int
    coalesced: int
    uncached: int


class RedisCached(Protocol[P, R_co]):
    """A function wrapped by :meth:`RedisCache.cached`: call it as before, plus controls."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function, or answer from Redis."""
        ...

    def cache_info(self) -> RedisCacheInfo:
        """Hits, misses, coalesced and uncached calls in this process."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry these arguments would hit (in Redis); ``True`` if one was live."""
        ...

    def clear(self) -> int:
        """Drop every entry of this function (SCAN + UNLINK); return how many."""
        ...


class AsyncRedisCached(Protocol[P, R_co]):
    """An async function wrapped by :meth:`AsyncRedisCache.cached`."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R_co]:
        """Call the function, or answer from Redis."""
        ...

    def cache_info(self) -> RedisCacheInfo:
        """Hits, misses, coalesced and uncached calls in this process."""
        ...

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry these arguments would hit (in Redis); ``True`` if one was live."""
        ...

    async def clear(self) -> int:
        """Drop every entry of this function (SCAN + UNLINK); return how many."""
        ...


def _arguments_text(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    return dumps([list(args), dict(sorted(kwargs.items()))] if kwargs else list(args), "arguments")


class _Function:
    """One cached function's key layout and counters."""

    def __init__(
        self,
        head: str,
        func: Callable[..., Any],
        ttl: float,
        key: Callable[..., Any] | None,
        name: str | None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"cached decorates a function, got {type(func).__name__}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable, got {type(key).__name__}")
        self.func = func
        self.name = name or f"{func.__module__}.{func.__qualname__}"
        self.head = head + self.name + ":"
        self.px = max(1, math.ceil(check_positive("ttl", ttl) * 1000))
        self.key = key
        self.hits = self.misses = self.coalesced = self.uncached = 0

    def redis_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        text = (
            _arguments_text(args, kwargs) if self.key is None else dumps(self.key(*args, **kwargs))
        )
        return self.head + text + "}"

    def pattern(self) -> str:
        return _GLOB.sub(r"\\\1", self.head) + "*"

    def info(self) -> RedisCacheInfo:
        return RedisCacheInfo(self.hits, self.misses, self.coalesced, self.uncached)


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout, decoding, the wrapper's controls."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        lock_ttl: float,
        on_error: FailurePolicy,
        breaker: CircuitBreaker | None,
    ) -> None:
        super().__init__(client, prefix, "ca")
        self.lock_ttl = check_positive("lock_ttl", lock_ttl)
        self._init_policy(on_error, ("open", "closed"), breaker)

    def stats(self) -> RedisStats:
        """How often this cache worked without Redis, and the breaker's state."""
        return self._guard.stats()

    def _lock_options(self, clock: Clock) -> LockOptions:
        """The per-key locks of misses: same prefix and breaker; proceed without Redis."""
        return LockOptions(
            prefix=self.prefix,
            ttl=self.lock_ttl,
            on_error="open",
            breaker=self.breaker,
            clock=clock,
        )

    def _decode(self, raw: bytes | str | None) -> Any:
        """A read's answer: the cached value, ``_MISS``, or ``FAILED`` (Redis did not answer)."""
        if raw is FAILED:
            return FAILED
        return _MISS if raw is None else loads(raw)

    def _lock_key(self, rkey: str) -> str:
        """A miss's lock: the entry's key without its head and closing brace."""
        return rkey[len(self._head) : -1]

    def _wrap(self, wrapper: Callable[..., Any], fn: _Function) -> None:
        """Give ``wrapper`` its controls: ``cache_info``, ``invalidate`` and ``clear``."""
        wrapper.cache_info = fn.info  # type: ignore[attr-defined]
        wrapper.invalidate = lambda *a, **k: self._invalidate(fn, a, k)  # type: ignore[attr-defined]
        wrapper.clear = lambda: self._clear(fn)  # type: ignore[attr-defined]

    def _invalidate(
        self, fn: _Function, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool | Awaitable[bool]:
        raise NotImplementedError

    def _clear(self, fn: _Function) -> int | Awaitable[int]:
        raise NotImplementedError


class RedisCache(_Base[SyncRedis]):
    """Results of sync functions cached in Redis for every process.

    >>> cache = RedisCache(redis.Redis(), prefix="mybot")   # doctest: +SKIP
    >>> @cache.cached(ttl=300.0)                            # doctest: +SKIP
    ... def user_stats(user_id: int) -> dict[str, int]: ...

    Results must be JSON (a ``TypeError`` names the type otherwise); the
    arguments too, unless ``key=`` builds the key.

    Args:
        client: a ready ``redis.Redis`` client with socket timeouts.
        prefix: namespace of this bot's keys.
        lock_ttl: seconds a computation may hold its key's lock; followers
            wait at most this long before computing themselves.
        on_error: ``"open"`` (default) computes uncached while Redis fails;
            ``"closed"`` raises :class:`~botscale.BackendError`.
        breaker: a :class:`CircuitBreaker`, possibly shared.
        clock: monotonic seconds; ``sleep``: how followers wait (both injectable).
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        lock_ttl: float = 30.0,
        on_error: FailurePolicy = "open",
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        super().__init__(
            client, prefix=prefix, lock_ttl=lock_ttl, on_error=on_error, breaker=breaker
        )
        self._locks = RedisKeyedLock(client, **self._lock_options(clock), sleep=sleep)

    def cached(
        self,
        ttl: float = 300.0,
        *,
        key: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[P, R]], RedisCached[P, R]]:
        """Cache a sync function's results in Redis for ``ttl`` seconds, per arguments.

        Args:
            ttl: seconds a result stays valid (> 0).
            key: builds the (JSON) cache key from the arguments; default: the
                arguments themselves.
            name: the function's namespace in Redis (default
                ``module.qualname``); keep it stable across deployments.

        Returns:
            A decorator; the wrapper gains ``cache_info()``, ``invalidate(*args,
            **kwargs) -> bool`` and ``clear() -> int``.
        """

        def decorate(func: Callable[P, R]) -> RedisCached[P, R]:
            if inspect.iscoroutinefunction(func):
                raise TypeError(f"{func.__qualname__} is async: use AsyncRedisCache")
            fn = _Function(self._head, func, ttl, key, name)

            @functools.wraps(func)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                return self._cached_call(fn, args, kwargs)  # type: ignore[no-any-return]

            self._wrap(wrapper, fn)
            return wrapper  # type: ignore[return-value]

        return decorate

    def _get(self, rkey: str) -> Any:
        return self._decode(self._call(FAILED, self.client.get, rkey))

    def _put(self, rkey: str, data: str, px: int) -> None:
        self._call(None, self.client.set, rkey, data, px=px)

    def _cached_call(self, fn: _Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        rkey = fn.redis_key(args, kwargs)
        value = self._get(rkey)
        if value is FAILED:
            fn.uncached += 1
            return fn.func(*args, **kwargs)
        if value is not _MISS:
            fn.hits += 1
            return value
        if not self._locks.acquire(self._lock_key(rkey), timeout=self.lock_ttl):
            fn.uncached += 1
            return fn.func(*args, **kwargs)
        try:
            value = self._get(rkey)
            if value is not _MISS and value is not FAILED:
                fn.coalesced += 1
                return value
            fn.misses += 1
            result = fn.func(*args, **kwargs)
            self._put(rkey, dumps(result, "result"), fn.px)
            return result
        finally:
            self._locks.release(self._lock_key(rkey))

    def _invalidate(self, fn: _Function, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        return bool(self.client.delete(fn.redis_key(args, kwargs)))

    def _clear(self, fn: _Function) -> int:
        keys = list(self.client.scan_iter(match=fn.pattern(), count=1000))
        return int(self.client.unlink(*keys)) if keys else 0


class AsyncRedisCache(_Base[AsyncRedis]):
    """The ``redis.asyncio`` twin of :class:`RedisCache`, for async functions.

    Same arguments, with an awaitable ``sleep``; ``invalidate`` and ``clear``
    of a wrapped function are coroutines.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str,
        lock_ttl: float = 30.0,
        on_error: FailurePolicy = "open",
        breaker: CircuitBreaker | None = None,
        clock: Clock = time.monotonic,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            client, prefix=prefix, lock_ttl=lock_ttl, on_error=on_error, breaker=breaker
        )
        self._locks = AsyncRedisKeyedLock(client, **self._lock_options(clock), sleep=sleep)

    def cached(
        self,
        ttl: float = 300.0,
        *,
        key: Callable[..., Any] | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], AsyncRedisCached[P, R]]:
        """Cache an async function's results in Redis; see :meth:`RedisCache.cached`."""

        def decorate(func: Callable[P, Awaitable[R]]) -> AsyncRedisCached[P, R]:
            if not inspect.iscoroutinefunction(func):
                raise TypeError(
                    f"{getattr(func, '__qualname__', func)!r} is not async: use RedisCache"
                )
            fn = _Function(self._head, func, ttl, key, name)

            @functools.wraps(func)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                return await self._cached_call(fn, args, kwargs)  # type: ignore[no-any-return]

            self._wrap(wrapper, fn)
            return wrapper  # type: ignore[return-value]

        return decorate

    async def _get(self, rkey: str) -> Any:
        return self._decode(await self._acall(FAILED, self.client.get, rkey))

    async def _put(self, rkey: str, data: str, px: int) -> None:
        await self._acall(None, self.client.set, rkey, data, px=px)

    async def _cached_call(
        self, fn: _Function, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        rkey = fn.redis_key(args, kwargs)
        value = await self._get(rkey)
        if value is FAILED:
            fn.uncached += 1
            return await fn.func(*args, **kwargs)
        if value is not _MISS:
            fn.hits += 1
            return value
        if not await self._locks.acquire(self._lock_key(rkey), timeout=self.lock_ttl):
            fn.uncached += 1
            return await fn.func(*args, **kwargs)
        try:
            value = await self._get(rkey)
            if value is not _MISS and value is not FAILED:
                fn.coalesced += 1
                return value
            fn.misses += 1
            result = await fn.func(*args, **kwargs)
            await self._put(rkey, dumps(result, "result"), fn.px)
            return result
        finally:
            await self._locks.release(self._lock_key(rkey))

    async def _invalidate(
        self, fn: _Function, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bool:
        return bool(await self.client.delete(fn.redis_key(args, kwargs)))

    async def _clear(self, fn: _Function) -> int:
        keys = [k async for k in self.client.scan_iter(match=fn.pattern(), count=1000)]
        return int(await self.client.unlink(*keys)) if keys else 0
