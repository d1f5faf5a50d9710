"""Keyed rate limiters: ``RateLimiter`` / ``AsyncRateLimiter`` and ``rate_limited``.

A bucket of capacity ``burst`` per key, refilled continuously at
``rate.limit / rate.period`` tokens per second, kept by a backend behind the
:class:`~botscale.RateLimitBackend` Protocol as one GCRA number per key.  The
twins share everything but the waiting: validation, key conversion, counting
and the wait-or-raise rule live in :class:`_LimiterCore`.

Keys are ``str`` or ``int``; an int is stored as its decimal string, so ``42``
and ``"42"`` are the same bucket (a user id reaches a handler as an int from
one framework and as text from callback data; both should hit one bucket).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from typing_extensions import ParamSpec

from ._clock import AsyncSleep, Clock, Sleep
from ._errors import ConfigurationError, RateLimitExceeded
from ._gcra import EPSILON, Decision, Rate
from ._protocols import AsyncRateLimitBackend, Key, RateLimitBackend
from ._validation import check_key, check_non_negative, check_positive_int
from .backends.memory import MemoryBackend, TryAcquire

__all__ = ["AsyncRateLimiter", "RateLimiter", "RateLimiterStats", "rate_limited"]

P = ParamSpec("P")
R = TypeVar("R")

_MIN_WAIT = 0.001
"""Seconds to wait when a backend denies without saying for how long."""


@dataclass(frozen=True, slots=True)
class RateLimiterStats:
    """A snapshot of one limiter's counters.

    Attributes:
        allowed: requests granted (``try_acquire`` and every ``acquire`` attempt).
        denied: requests refused; an ``acquire`` that waited counts its refusals.
        waits: sleeps ``acquire`` took before asking again.
        timeouts: ``acquire`` calls that raised :class:`~botscale.RateLimitExceeded`.
        backend: the backend's own ``stats()`` snapshot (a
            :class:`~botscale.backends.memory.MemoryBackendStats` for the memory
            backend), or ``None`` if it has none.
    """

    allowed: int
    denied: int
    waits: int
    timeouts: int
    backend: object | None


def _to_key(key: Key) -> str:
    """The backend key for ``key``: ``str`` as is, ``int`` as its decimal string."""
    check_key(key)
    if isinstance(key, str):
        return str.__str__(key)
    return int.__repr__(key)  # by value, also for IntEnum members


def _bad_cost(cost: object, burst: int) -> NoReturn:
    """Raise the error for a ``cost`` that is not an int in ``1..burst``."""
    check_positive_int("cost", cost)
    raise ConfigurationError(f"cost must be an int in 1..{burst} (the burst), got {cost!r}")


def _check_rate(rate: object) -> Rate:
    if isinstance(rate, Rate):
        return rate
    if isinstance(rate, str):
        return Rate.parse(rate)
    raise TypeError(f"rate must be a Rate or a string like '30/minute', got {type(rate).__name__}")


def _check_callable(name: str, value: object, accepted: str) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")


class _LimiterCore:
    """What the sync and async limiters share: configuration, counting, waiting rule."""

    def __init__(
        self,
        rate: Rate | str,
        burst: int | None,
        clock: Clock,
        backend: object | None,
        max_keys: int | None,
    ) -> None:
        self.rate = _check_rate(rate)
        if burst is None:
            burst = max(1, math.floor(self.rate.limit))
        self.burst: int = check_positive_int("burst", burst)
        _check_callable("clock", clock, "a zero-argument callable returning seconds")
        if backend is None:
            backend = MemoryBackend(100_000 if max_keys is None else max_keys)
        elif max_keys is not None:
            raise ConfigurationError(
                "max_keys applies to the default memory backend; "
                "pass it to the backend instead (MemoryBackend(max_keys=...))"
            )
        self._clock = clock
        self._interval = self.rate.interval
        self._allowed = 0
        self._denied = 0
        self._bound_counts: Callable[[], tuple[int, int]] | None = None
        self._waits = 0
        self._timeouts = 0
        self._lock = threading.Lock()
        self._backend: Any = backend

    @property
    def backend(self) -> object:
        """The backend keeping this limiter's buckets."""
        return cast(object, self._backend)

    def _bound(self) -> TryAcquire | None:
        """The memory backend's single-frame ``try_acquire``, or ``None``."""
        if type(self._backend) is not MemoryBackend:
            return None
        bound, self._bound_counts = self._backend._bind(
            self._interval, self.burst, self._clock, _to_key, _bad_cost
        )
        return bound

    def _prepare(self, key: Key, cost: int) -> str:
        """Validate a request; return the backend key."""
        k = key if type(key) is str else _to_key(key)
        if type(cost) is not int or not 0 < cost <= self.burst:
            _bad_cost(cost, self.burst)
        return k

    def _count(self, decision: Decision) -> Decision:
        with self._lock:
            if decision.allowed:
                self._allowed += 1
            else:
                self._denied += 1
        return decision

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            return None
        return self._clock() + check_non_negative("timeout", timeout)

    def _wait_or_raise(self, key: Key, decision: Decision, deadline: float | None) -> float:
        """Seconds to sleep before asking again; raise if the deadline comes first.

        Checked before sleeping: a wait that cannot end in time fails at once.
        """
        wait = decision.retry_after if decision.retry_after > 0 else _MIN_WAIT
        if deadline is not None and self._clock() + wait > deadline + EPSILON:
            with self._lock:
                self._timeouts += 1
            raise RateLimitExceeded(key, decision.retry_after)
        with self._lock:
            self._waits += 1
        return wait

    def _allowed_count(self) -> int:
        """Requests granted so far (what :meth:`stats` reports as ``allowed``), cheaply."""
        return self._allowed if self._bound_counts is None else self._bound_counts()[0]

    def stats(self) -> RateLimiterStats:
        """A snapshot of this limiter's counters and of its backend's ``stats()``."""
        backend_stats = getattr(self._backend, "stats", None)
        snapshot: object | None = None
        if callable(backend_stats) and not inspect.iscoroutinefunction(backend_stats):
            snapshot = backend_stats()
        allowed, denied = (
            (self._allowed, self._denied) if self._bound_counts is None else self._bound_counts()
        )
        return RateLimiterStats(allowed, denied, self._waits, self._timeouts, snapshot)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.rate)!r}, burst={self.burst}, backend={self._backend!r})"


class RateLimiter(_LimiterCore):
    """A keyed token-bucket rate limiter (GCRA) for threaded and plain code.

    Each key (a user id, a chat id, ``"user:42"``) has a bucket of ``burst``
    tokens refilled continuously at ``rate.limit / rate.period`` per second; a
    request of ``cost`` is allowed iff the bucket holds ``cost`` tokens, and
    then takes them.  ``42`` and ``"42"`` name the same bucket.

    >>> lim = RateLimiter(Rate(30, 60.0), burst=5)
    >>> lim.try_acquire("user:42").allowed
    True

    Args:
        rate: a :class:`~botscale.Rate` or its text (``"30/minute"``).
        burst: bucket capacity in tokens (an int >= 1); default
            ``rate.limit`` (at least 1).
        clock: monotonic seconds; inject a ``FakeClock`` in tests.
        backend: a :class:`~botscale.RateLimitBackend`; default a private
            :class:`~botscale.backends.MemoryBackend`.
        sleep: how :meth:`acquire` waits (``time.sleep``); ``FakeClock.sleep`` in tests.
        max_keys: key cap of the default memory backend (default 100 000).

    Raises:
        ConfigurationError: ``burst`` < 1, ``max_keys`` < 1, or ``max_keys``
            given together with a ``backend``; rate ``limit``/``period`` <= 0.
        TypeError: an argument of the wrong type.
    """

    def __init__(
        self,
        rate: Rate | str,
        burst: int | None = None,
        *,
        clock: Clock = time.monotonic,
        backend: RateLimitBackend | None = None,
        sleep: Sleep = time.sleep,
        max_keys: int | None = None,
    ) -> None:
        if backend is not None and (
            inspect.iscoroutinefunction(getattr(backend, "acquire", None))
            or not isinstance(backend, RateLimitBackend)
        ):
            raise TypeError(
                "backend must implement RateLimitBackend (sync acquire/reset), "
                f"got {type(backend).__name__}; use AsyncRateLimiter for async backends"
            )
        super().__init__(rate, burst, clock, backend, max_keys)
        _check_callable("sleep", sleep, "a callable taking seconds")
        self._sleep = sleep
        bound = self._bound()
        if bound is not None:
            # Like threading.Condition binding its lock's methods: with the
            # memory backend the whole decision runs in one frame.
            bound.__doc__ = RateLimiter.try_acquire.__doc__
            self.try_acquire = bound  # type: ignore[method-assign]

    def try_acquire(self, key: Key, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them; never waits.

        Thread-safe.

        Returns:
            The :class:`~botscale.Decision`; falsy when denied, with
            ``retry_after`` the seconds until this request would be allowed.

        Raises:
            TypeError: ``key`` is not str or int, or ``cost`` is not an int.
            ConfigurationError: ``cost`` is not in ``1..burst``.
        """
        k = self._prepare(key, cost)
        decision = self._backend.acquire(
            k, now=self._clock(), interval=self._interval, burst=self.burst, cost=cost
        )
        return self._count(decision)

    def acquire(self, key: Key, cost: int = 1, *, timeout: float | None = None) -> Decision:
        """Wait (with ``sleep``) until ``key`` may take ``cost`` tokens, then take them.

        Args:
            key: the bucket's key.
            cost: tokens to take.
            timeout: the most seconds to wait (>= 0); ``None`` waits as long as needed.

        Returns:
            The allowed :class:`~botscale.Decision`.

        Raises:
            RateLimitExceeded: the tokens cannot be had within ``timeout``;
                raised before sleeping, as soon as the wait is known to be too long.
            TypeError, ConfigurationError: as for :meth:`try_acquire`, or a
                negative ``timeout``.
        """
        deadline = self._deadline(timeout)
        while True:
            decision = self.try_acquire(key, cost)
            if decision.allowed:
                return decision
            self._sleep(self._wait_or_raise(key, decision, deadline))

    def reset(self, key: Key) -> None:
        """Forget ``key``: its bucket is full again."""
        self._backend.reset(_to_key(key))


class AsyncRateLimiter(_LimiterCore):
    """The awaitable twin of :class:`RateLimiter`, for asyncio bots.

    ``backend`` is an :class:`~botscale.AsyncRateLimitBackend` (e.g.
    ``AsyncRedisBackend``) or a sync :class:`~botscale.RateLimitBackend`
    that never blocks, such as the default memory backend: it is called
    directly, since its decisions are O(1) dictionary operations.

    Args:
        rate, burst, clock, max_keys: as for :class:`RateLimiter`.
        backend: an async or non-blocking sync backend; default a private
            :class:`~botscale.backends.MemoryBackend`.
        sleep: how :meth:`acquire` waits (``asyncio.sleep``); ``FakeClock.asleep`` in tests.

    Raises:
        ConfigurationError, TypeError: as for :class:`RateLimiter`.
    """

    def __init__(
        self,
        rate: Rate | str,
        burst: int | None = None,
        *,
        clock: Clock = time.monotonic,
        backend: AsyncRateLimitBackend | RateLimitBackend | None = None,
        sleep: AsyncSleep = asyncio.sleep,
        max_keys: int | None = None,
    ) -> None:
        is_async = backend is not None and inspect.iscoroutinefunction(
            getattr(backend, "acquire", None)
        )
        if backend is not None and not (is_async or isinstance(backend, RateLimitBackend)):
            raise TypeError(
                "backend must implement AsyncRateLimitBackend or RateLimitBackend, "
                f"got {type(backend).__name__}"
            )
        super().__init__(rate, burst, clock, backend, max_keys)
        _check_callable("sleep", sleep, "an async callable taking seconds")
        self._sleep = sleep
        self._sync: TryAcquire | None = None
        self._async_reset = is_async and inspect.iscoroutinefunction(
            getattr(backend, "reset", None)
        )
        if not is_async:
            self._sync = self._bound() or self._try_acquire_sync

    def _try_acquire_sync(self, key: Key, cost: int = 1) -> Decision:
        k = self._prepare(key, cost)
        decision = self._backend.acquire(
            k, now=self._clock(), interval=self._interval, burst=self.burst, cost=cost
        )
        return self._count(decision)

    async def try_acquire(self, key: Key, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them; never waits.

        Returns and raises as :meth:`RateLimiter.try_acquire`.
        """
        if self._sync is not None:
            return self._sync(key, cost)
        k = self._prepare(key, cost)
        decision = await self._backend.acquire(
            k, now=self._clock(), interval=self._interval, burst=self.burst, cost=cost
        )
        return self._count(decision)

    async def acquire(self, key: Key, cost: int = 1, *, timeout: float | None = None) -> Decision:
        """Wait (with ``sleep``) until ``key`` may take ``cost`` tokens, then take them.

        Returns and raises as :meth:`RateLimiter.acquire`.
        """
        deadline = self._deadline(timeout)
        while True:
            decision = await self.try_acquire(key, cost)
            if decision.allowed:
                return decision
            await self._sleep(self._wait_or_raise(key, decision, deadline))

    async def reset(self, key: Key) -> None:
        """Forget ``key``: its bucket is full again."""
        result = self._backend.reset(_to_key(key))
        if self._async_reset:
            await result


def rate_limited(
    limiter: RateLimiter | AsyncRateLimiter,
    key: Key | Callable[..., Key] | None = None,
    *,
    cost: int = 1,
    wait: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Rate-limit every call of a sync or async function.

    >>> limiter = RateLimiter(Rate(1, 1.0))
    >>> @rate_limited(limiter, key=lambda user_id, text: user_id)
    ... def reply(user_id: int, text: str) -> str:
    ...     return text

    Args:
        limiter: a :class:`RateLimiter` (sync functions; async functions too
            when ``wait`` is false, since its decisions never block with the
            memory backend) or an :class:`AsyncRateLimiter` (async functions).
        key: the bucket: a str or int constant, or a callable taking the
            function's arguments and returning one; default one bucket for
            the function (its qualified name).
        cost: tokens each call takes.
        wait: ``False`` (default) raises at once when the bucket is empty;
            ``True`` waits with the limiter's ``acquire``.
        timeout: with ``wait``, the most seconds to wait (``None``: no limit).

    Raises:
        RateLimitExceeded: at call time, when the call is not allowed (in time).
        TypeError: at decoration, for a limiter that cannot serve the function
            (a sync function with an ``AsyncRateLimiter``; ``wait=True`` for an
            async function with a sync ``RateLimiter``), or a bad ``key``.
        ConfigurationError: bad ``cost`` or ``timeout``, or ``timeout`` without ``wait``.
    """
    if not isinstance(limiter, (RateLimiter, AsyncRateLimiter)):
        raise TypeError(
            f"limiter must be a RateLimiter or AsyncRateLimiter, got {type(limiter).__name__}"
        )
    if type(cost) is not int or not 0 < cost <= limiter.burst:
        _bad_cost(cost, limiter.burst)
    if timeout is not None:
        check_non_negative("timeout", timeout)
        if not wait:
            raise ConfigurationError("timeout applies only with wait=True")
    if key is not None and not callable(key):
        check_key(key)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        key_of: Callable[..., Key]
        if key is None:
            name = f"{fn.__module__}.{fn.__qualname__}"
            key_of = lambda *args, **kwargs: name  # noqa: E731
        elif callable(key):
            key_of = key
        else:
            constant = key
            key_of = lambda *args, **kwargs: constant  # noqa: E731

        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _decorate_async(fn, limiter, key_of, cost, wait, timeout))
        if isinstance(limiter, AsyncRateLimiter):
            raise TypeError(
                f"{fn.__qualname__} is not async: rate-limit it with a RateLimiter, "
                "not an AsyncRateLimiter"
            )

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k = key_of(*args, **kwargs)
            if wait:
                limiter.acquire(k, cost, timeout=timeout)
            else:
                decision = limiter.try_acquire(k, cost)
                if not decision.allowed:
                    raise RateLimitExceeded(k, decision.retry_after)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _decorate_async(
    fn: Callable[..., Awaitable[Any]],
    limiter: RateLimiter | AsyncRateLimiter,
    key_of: Callable[..., Key],
    cost: int,
    wait: bool,
    timeout: float | None,
) -> Callable[..., Awaitable[Any]]:
    if isinstance(limiter, RateLimiter):
        if wait:
            raise TypeError(
                f"{fn.__qualname__} is async: waiting needs an AsyncRateLimiter "
                "(a RateLimiter would block the event loop while it sleeps)"
            )
        sync_limiter = limiter

        @functools.wraps(fn)
        async def checked(*args: Any, **kwargs: Any) -> Any:
            k = key_of(*args, **kwargs)
            decision = sync_limiter.try_acquire(k, cost)
            if not decision.allowed:
                raise RateLimitExceeded(k, decision.retry_after)
            return await fn(*args, **kwargs)

        return checked

    async_limiter = limiter

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = key_of(*args, **kwargs)
        if wait:
            await async_limiter.acquire(k, cost, timeout=timeout)
        else:
            decision = await async_limiter.try_acquire(k, cost)
            if not decision.allowed:
                raise RateLimitExceeded(k, decision.retry_after)
        return await fn(*args, **kwargs)

    return wrapper
