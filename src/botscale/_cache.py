"""TTL caching for sync and async functions, one computation per key in flight.

``cached`` keeps results in a cachetools ``TTLCache`` (LRU + TTL, the
injected clock as its timer) behind one lock.  A hit is a key build, a lock
and a dictionary lookup.  A miss registers a *flight* for the key; callers
that arrive while it runs wait for its outcome instead of calling the function
again (threads block on it, asyncio tasks await it, also from other loops).

The seam for other storages (a Redis-backed cache) is :class:`_Core`'s three
steps: ``lookup`` (cache or join a flight, under the lock), ``lead_*`` (compute
and publish) and ``_wait_async`` / ``Future.result`` (wait for a flight).  A
Redis variant replaces the ``TTLCache`` calls in ``lookup`` / ``_publish`` and
keeps the flight table, the key building and :class:`CacheInfo` as they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Concatenate, NamedTuple, Protocol, TypeVar, overload

from cachetools import TTLCache
from typing_extensions import ParamSpec, Self

from ._clock import Clock
from ._validation import check_positive, check_positive_int

__all__ = ["CacheInfo", "Cached", "cached", "make_key"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

_MISSING: Any = object()


class _KwargsMark:
    """Separates positional from keyword arguments in a default cache key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<kwargs>"


_KWMARK = (_KwargsMark(),)


def make_key(*args: Any, **kwargs: Any) -> Hashable:
    """The default cache key: the positional arguments, then the keyword ones by name.

    ``f(1, b=2)`` and ``f(1, 2)`` are different keys (as in ``functools``):
    call a cached function, and its ``invalidate``, with arguments spelled the
    same way.
    """
    if kwargs:
        return args + _KWMARK + tuple(sorted(kwargs.items()))
    return args


class CacheInfo(NamedTuple):
    """A snapshot of a cached function's counters.

    Every call is one of: ``hits`` (answered from the cache), ``misses`` (ran
    the function) or ``coalesced`` (waited for a concurrent call of the same
    key and shared its outcome).  Entries that left the cache early are in
    ``evictions_size`` (least recently used, the cache was full) and
    ``evictions_ttl`` (expired).
    """

    hits: int
    misses: int
    coalesced: int
    size: int
    maxsize: int
    ttl: float
    evictions_size: int
    evictions_ttl: int


class Cached(Protocol[P, R_co]):
    """A function wrapped by :func:`cached`: call it as before, plus cache controls."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        """Call the function, or answer from the cache."""
        ...

    def cache_info(self) -> CacheInfo:
        """Hits, misses, coalesced calls, size and evictions."""
        ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Drop the entry these arguments would hit; ``True`` if one was live."""
        ...

    def clear(self) -> None:
        """Drop every entry (computations in flight are not stored when they finish)."""
        ...

    @overload
    def __get__(self, instance: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self: Cached[Concatenate[T, P2], R_co], instance: T, owner: type[Any] | None = None
    ) -> Callable[P2, R_co]: ...

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        """Bind a cached method to its instance (the instance is part of the key)."""
        ...


class _Abandoned(Exception):
    """A flight whose leader was interrupted (cancelled, KeyboardInterrupt): retry."""


class _Flight:
    __slots__ = ("future", "owner")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _CountingTTLCache(TTLCache[Hashable, Any]):
    """A ``TTLCache`` that counts its evictions by cause."""

    def __init__(self, maxsize: int, ttl: float, timer: Clock) -> None:
        super().__init__(maxsize, ttl, timer=timer)
        self.evicted_size = 0
        self.evicted_ttl = 0

    def popitem(self) -> tuple[Hashable, Any]:
        item = super().popitem()
        self.evicted_size += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[Hashable, Any]]:
        expired = super().expire(time)
        self.evicted_ttl += len(expired)
        return list(expired)


def _copy_outcome(source: concurrent.futures.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():  # the waiting task was cancelled
        return
    exc = source.exception()
    if exc is None:
        target.set_result(source.result())
    else:
        target.set_exception(exc)


async def _wait_async(source: concurrent.futures.Future[Any]) -> Any:
    """Await a flight's future from any loop; cancelling the waiter leaves the flight alone."""
    loop = asyncio.get_running_loop()
    target: asyncio.Future[Any] = loop.create_future()

    def done(src: concurrent.futures.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(_copy_outcome, src, target)
        except RuntimeError:  # that loop is closed; nobody waits there any more
            pass

    source.add_done_callback(done)
    return await target


class _Core:
    """State shared by a cached function's wrapper and its controls."""

    def __init__(
        self,
        func: Callable[..., Any],
        ttl: float,
        maxsize: int,
        clock: Clock,
        key: Callable[..., Hashable] | None,
    ) -> None:
        self.func = func
        self.name = getattr(func, "__qualname__", repr(func))
        self.key = key
        self.ttl = ttl
        self.lock = threading.Lock()
        self.cache = _CountingTTLCache(maxsize, ttl, clock)
        self.flights: dict[Hashable, _Flight] = {}
        self.hits = 0
        self.misses = 0
        self.coalesced = 0

    def build_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable:
        if self.key is None:
            return args + _KWMARK + tuple(sorted(kwargs.items())) if kwargs else args
        return self.key(*args, **kwargs)

    def join(self, key: Hashable, owner: object) -> tuple[_Flight | None, bool]:
        """Called on a miss with the lock held: lead a new flight or join the running one."""
        flight = self.flights.get(key)
        if flight is None:
            flight = self.flights[key] = _Flight(owner)
            self.misses += 1
            return flight, True
        if flight.owner == owner:
            # The leader calls itself with its own key: compute without the cache
            # rather than wait for itself forever.
            self.misses += 1
            return None, True
        self.coalesced += 1
        return flight, False

    def _publish(self, key: Hashable, flight: _Flight, value: Any) -> None:
        with self.lock:
            # An invalidate()/clear() during the flight removed it: its value is stale.
            if self.flights.get(key) is flight:
                del self.flights[key]
                self.cache[key] = value
        flight.future.set_result(value)

    def _fail(self, key: Hashable, flight: _Flight, exc: BaseException) -> None:
        with self.lock:
            if self.flights.get(key) is flight:
                del self.flights[key]
        # Exceptions are not cached; the callers waiting on this flight get the
        # same exception, the next call computes afresh.  An interrupted leader
        # (cancelled, KeyboardInterrupt) makes its waiters retry instead.
        flight.future.set_exception(exc if isinstance(exc, Exception) else _Abandoned())

    def lead_sync(self, key: Hashable, flight: _Flight | None, args: Any, kwargs: Any) -> Any:
        if flight is None:
            return self.func(*args, **kwargs)
        try:
            value = self.func(*args, **kwargs)
        except BaseException as exc:
            self._fail(key, flight, exc)
            raise
        self._publish(key, flight, value)
        return value

    async def lead_async(
        self, key: Hashable, flight: _Flight | None, args: Any, kwargs: Any
    ) -> Any:
        if flight is None:
            return await self.func(*args, **kwargs)
        try:
            value = await self.func(*args, **kwargs)
        except BaseException as exc:
            self._fail(key, flight, exc)
            raise
        self._publish(key, flight, value)
        return value

    def check_hashable(self, key: Hashable, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise a TypeError naming the unhashable argument, if that is what went wrong."""
        try:
            hash(key)
        except TypeError:
            pass
        else:
            return
        hint = "pass key= to @cached to build a hashable key from the arguments"
        if self.key is not None:
            raise TypeError(
                f"the key function of cached {self.name}() returned an unhashable "
                f"{type(key).__name__}; it must return a hashable key"
            ) from None
        names = _positional_names(self.func)
        for index, arg in enumerate(args):
            if not _hashable(arg):
                name = names[index] if index < len(names) else f"#{index}"
                raise TypeError(
                    f"cached {self.name}(): argument {name!r} (position {index}) is an "
                    f"unhashable {type(arg).__name__}; {hint}"
                ) from None
        for name, arg in kwargs.items():
            if not _hashable(arg):
                raise TypeError(
                    f"cached {self.name}(): argument {name!r} is an unhashable "
                    f"{type(arg).__name__}; {hint}"
                ) from None
        raise TypeError(f"cached {self.name}(): the arguments are unhashable; {hint}") from None

    def cache_info(self) -> CacheInfo:
        with self.lock:
            cache = self.cache
            cache.expire()
            return CacheInfo(
                hits=self.hits,
                misses=self.misses,
                coalesced=self.coalesced,
                size=len(cache),
                maxsize=int(cache.maxsize),
                ttl=self.ttl,
                evictions_size=cache.evicted_size,
                evictions_ttl=cache.evicted_ttl,
            )

    def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        key = self.build_key(args, kwargs)
        with self.lock:
            try:
                self.flights.pop(key, None)
                return self.cache.pop(key, _MISSING) is not _MISSING
            except TypeError:
                self.check_hashable(key, args, kwargs)
                raise

    def clear(self) -> None:
        with self.lock:
            self.flights.clear()
            self.cache.clear()


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _positional_names(func: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds]


def cached(
    ttl: float = 300.0,
    maxsize: int = 5000,
    *,
    key: Callable[..., Hashable] | None = None,
    clock: Clock = time.monotonic,
) -> Callable[[Callable[P, R]], Cached[P, R]]:
    """Cache a sync or async function's results for ``ttl`` seconds, per arguments.

    At most one computation per key is in flight: concurrent callers of a key
    that is not cached wait for the first caller's result instead of all
    hitting the database.  Exceptions are never cached: the callers waiting
    on a failed computation get its exception, and the next call tries again.
    The cache is thread-safe and shared by every thread, task and event loop.

    >>> @cached(ttl=300.0, maxsize=5000)
    ... def user_stats(user_id: int) -> dict[str, int]:
    ...     return {"answers": 42}
    >>> user_stats(7)["answers"], user_stats.cache_info().hits
    (42, 0)
    >>> user_stats(7)["answers"], user_stats.cache_info().hits
    (42, 1)

    Args:
        ttl: seconds a result stays valid (> 0), counted from when it was computed.
        maxsize: the most results kept (>= 1); least recently used go first.
        key: builds the cache key from the call's arguments (default:
            :func:`make_key`, the arguments themselves, which must then be
            hashable).  Use it to key on part of the arguments, e.g.
            ``key=lambda user, db: user.id``.
        clock: monotonic seconds (the ``TTLCache`` timer); a ``FakeClock`` in tests.

    Returns:
        A decorator; the wrapped function keeps its signature and gains
        ``cache_info()``, ``invalidate(*args, **kwargs)`` and ``clear()``.

    Raises:
        ValueError: ``ttl`` <= 0 or ``maxsize`` < 1 (a ``ConfigurationError``).
        TypeError: a ``key`` or ``clock`` that is not callable; at call time,
            arguments that cannot be hashed (the message names the argument).
    """
    if callable(ttl):
        raise TypeError("cached needs parentheses: write @cached() or @cached(ttl=...)")
    seconds = check_positive("ttl", ttl)
    size = check_positive_int("maxsize", maxsize)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a callable building the cache key, got {type(key).__name__}")
    if not callable(clock):
        raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")

    def decorate(func: Callable[P, R]) -> Cached[P, R]:
        if not callable(func):
            raise TypeError(f"cached decorates a function, got {type(func).__name__}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(f"cached cannot cache the generator function {func.__qualname__}")
        core = _Core(func, seconds, size, clock, key)
        wrapper = _async_wrapper(core) if inspect.iscoroutinefunction(func) else _sync_wrapper(core)
        functools.update_wrapper(wrapper, func)
        wrapper.cache_info = core.cache_info  # type: ignore[attr-defined]
        wrapper.invalidate = core.invalidate  # type: ignore[attr-defined]
        wrapper.clear = core.clear  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _sync_wrapper(core: _Core) -> Callable[..., Any]:
    lock, cache, build_key = core.lock, core.cache, core.build_key
    default_key = core.key is None
    get_ident = threading.get_ident

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = build_key(args, kwargs) if kwargs or not default_key else args
        with lock:
            try:
                value = cache[key]
            except KeyError:
                flight, leader = core.join(key, get_ident())
            except TypeError:
                core.check_hashable(key, args, kwargs)
                raise
            else:
                core.hits += 1
                return value
        if leader:
            return core.lead_sync(key, flight, args, kwargs)
        assert flight is not None
        try:
            return flight.future.result()
        except _Abandoned:
            return wrapper(*args, **kwargs)

    return wrapper


def _async_wrapper(core: _Core) -> Callable[..., Any]:
    lock, cache, build_key = core.lock, core.cache, core.build_key
    default_key = core.key is None
    current_task = asyncio.current_task

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        key = build_key(args, kwargs) if kwargs or not default_key else args
        with lock:
            try:
                value = cache[key]
            except KeyError:
                flight, leader = core.join(key, current_task())
            except TypeError:
                core.check_hashable(key, args, kwargs)
                raise
            else:
                core.hits += 1
                return value
        if leader:
            return await core.lead_async(key, flight, args, kwargs)
        assert flight is not None
        try:
            return await _wait_async(flight.future)
        except _Abandoned:
            return await wrapper(*args, **kwargs)

    return wrapper
