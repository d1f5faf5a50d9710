"""Rate-limit backends on Redis: one GCRA decision per EVALSHA round trip.

The script (``lua/gcra.lua``) reads the Redis server clock, so every process
sharing the server agrees on time, and stores one number per key (the
theoretical arrival time) with a TTL equal to the time until the bucket is
full again: an idle key costs nothing.  Intervals are rounded *up* to whole
microseconds, so a shared bucket never runs faster than its rate.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from typing_extensions import Self

from .._errors import ConfigurationError
from .._gcra import ALLOWED, Decision
from .._protocols import RateLimitBackend
from .._validation import check_positive
from ._breaker import CircuitBreaker, RedisStats
from ._redis_base import (
    DEFAULT_TIMEOUT,
    AsyncRedis,
    ClientT,
    DirectLine,
    LuaScript,
    RedisComponent,
    SyncRedis,
    connect,
    connect_async,
    redis_errors,
)

__all__ = ["AsyncRedisBackend", "LimiterPolicy", "RedisBackend", "check_share", "micros"]

LimiterPolicy = Literal["open", "closed", "local"]
"""``"open"``: allow while Redis fails; ``"closed"``: raise BackendError;
``"local"``: decide in this process with ``local_share`` of each rate."""

_GCRA: Final = LuaScript("gcra.lua")
_SHA: Final = _GCRA.sha
_CACHED: Final = len(ALLOWED)


_MICROS: dict[float, int] = {}


def micros(interval: float) -> int:
    """Seconds per token as whole microseconds, rounded up (>= 1).

    Memoised: a limiter asks with the same few intervals on every decision,
    and the exact rounding costs a microsecond.
    """
    us = _MICROS.get(interval)
    if us is None:
        # round() first: 0.1 s is 100000.00000000001 us in binary floating point.
        us = max(1, math.ceil(round(interval * 1e6, 3)))
        if len(_MICROS) >= 1024:
            _MICROS.clear()
        _MICROS[interval] = us
    return us


def decision(reply: int | list[int]) -> Decision:
    """The :class:`Decision` for a reply of ``gcra.lua``.

    ``n >= 0``: allowed, ``n`` tokens left; ``n < 0``: denied holding no
    token, retry after ``-1 - n`` microseconds; ``[held, retry_us]``: denied
    holding ``held`` tokens (fewer than the cost).
    """
    if type(reply) is int:
        if reply >= 0:
            return ALLOWED[reply] if reply < _CACHED else Decision(True, reply, 0.0)
        return Decision(False, 0, (-1 - reply) / 1e6)
    held, retry_us = reply  # type: ignore[misc]
    return Decision(False, held, retry_us / 1e6)


def check_share(share: float) -> float:
    """Validate ``local_share``: a fraction in (0, 1]."""
    value = check_positive("local_share", share)
    if value > 1:
        raise ConfigurationError(f"local_share must be a fraction in (0, 1], got {share!r}")
    return value


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout, ``from_url``, the answer without Redis."""

    __slots__ = ("_line", "_local", "_noscript", "_owned", "local_share")

    _direct: bool = False
    """Whether decisions take a :class:`DirectLine` where the client allows one."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        on_error: LimiterPolicy = "open",
        local_share: float = 1.0,
        local_backend: RateLimitBackend | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(client, prefix, "rl")
        policy = self._init_policy(on_error, ("open", "closed", "local"), breaker)
        self.local_share = check_share(local_share)
        self._local: RateLimitBackend | None = None
        if policy == "local":
            if local_backend is None:
                from .memory import MemoryBackend

                local_backend = MemoryBackend()
            self._local = local_backend
        self._noscript = redis_errors()[1]
        self._line = DirectLine.for_client(client) if self._direct else None
        self._owned = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        on_error: LimiterPolicy = "open",
        local_share: float = 1.0,
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
        backend = cls(
            client, prefix=prefix, on_error=on_error, local_share=local_share, breaker=breaker
        )
        backend._owned = True
        return backend

    @property
    def on_error(self) -> LimiterPolicy:
        """The failure policy (``"open"``, ``"closed"`` or ``"local"``)."""
        return self._guard.policy  # type: ignore[return-value]

    def stats(self) -> RedisStats:
        """How often this backend answered without Redis, and the breaker's state."""
        return self._guard.stats()

    def redis_key(self, key: str) -> str:
        """The Redis key holding ``key``'s bucket: ``{<prefix>:rl:<key>}``."""
        return self._head + key + "}"

    def _reset_local(self, key: str) -> None:
        if self._local is not None:
            self._local.reset(key)

    def _without_redis(
        self,
        exc: BaseException | None,
        key: str,
        now: float,
        interval: float,
        burst: int,
        cost: int,
    ) -> Decision:
        self._guard.degrade(exc)
        if self._local is None:
            return Decision(True, max(0, burst - cost), 0.0)
        share = self.local_share
        return self._local.acquire(
            key,
            now=now,
            interval=interval / share,
            burst=max(cost, math.floor(burst * share)),
            cost=cost,
        )


class RedisBackend(_Base[SyncRedis]):
    """GCRA buckets in Redis for :class:`~botscale.RateLimiter`, shared by every process.

    Each thread's decisions go over a connection of the backend's own, made
    with the client's pool settings (host, auth, TLS, timeouts): redis-py's
    per-command bookkeeping would cost about a quarter of a local round trip.
    Other commands, and the retry after a broken connection, go through
    ``client``; a cluster, sentinel or single-connection client is used as
    is.  :meth:`close` disconnects them.

    Args:
        client: a ready ``redis.Redis`` (or ``RedisCluster``) client.  Give it
            ``socket_timeout`` / ``socket_connect_timeout`` (redis-py waits
            5 s by default) or build it with :meth:`from_url`.
        prefix: namespace of this bot's keys (``[A-Za-z0-9_.-]``, 1-64 chars).
        on_error: what happens while Redis fails: ``"open"`` (default) allows
            the request, logs and counts; ``"closed"`` raises
            :class:`~botscale.BackendError`; ``"local"`` decides in this
            process with ``local_share`` of each rate.
        local_share: the fraction of each rate and burst this process may use
            under ``"local"`` (e.g. ``1/3`` for three instances).
        local_backend: where ``"local"`` keeps its buckets (a new
            ``MemoryBackend`` by default).
        breaker: a :class:`CircuitBreaker`, possibly shared with other components.

    Raises:
        ConfigurationError: bad prefix, policy or share.
    """

    __slots__ = ()

    _connect = staticmethod(connect)
    _direct = True

    def acquire(self, key: str, *, now: float, interval: float, burst: int, cost: int) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them (server time).

        Raises:
            BackendError: Redis failed and ``on_error="closed"``.
        """
        guard = self._guard
        if guard.ready():
            rkey = self._head + key + "}"
            us = micros(interval)
            line = self._line
            try:
                try:
                    if line is None:
                        reply = self.client.evalsha(_SHA, 1, rkey, us, burst, cost)
                    else:
                        try:
                            reply = line.call("EVALSHA", _SHA, 1, rkey, us, burst, cost)
                        except line.broken:  # the line dropped its connection: the client retries
                            reply = self.client.evalsha(_SHA, 1, rkey, us, burst, cost)
                except self._noscript:
                    reply = _GCRA.run(self.client, 1, rkey, us, burst, cost)
            except self._errors as exc:
                guard.failed(exc)
                return self._without_redis(exc, key, now, interval, burst, cost)
            guard.ok()
            return decision(reply)
        return self._without_redis(None, key, now, interval, burst, cost)

    def reset(self, key: str) -> None:
        """Forget ``key``: its bucket is full again (also in the local fallback)."""
        self._reset_local(key)
        self._call(None, self.client.delete, self.redis_key(key))

    def close(self) -> None:
        """Close the decision connections, and the client if :meth:`from_url` built it
        (a passed-in client stays yours)."""
        if self._line is not None:
            self._line.close()
            self._line = None
        if self._owned:
            self.client.close()


class AsyncRedisBackend(_Base[AsyncRedis]):
    """The ``redis.asyncio`` twin of :class:`RedisBackend`, for :class:`~botscale.AsyncRateLimiter`.

    Same arguments and policies; ``client`` is a ``redis.asyncio.Redis``.
    """

    __slots__ = ()

    _connect = staticmethod(connect_async)

    async def acquire(
        self, key: str, *, now: float, interval: float, burst: int, cost: int
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them (server time).

        Raises:
            BackendError: Redis failed and ``on_error="closed"``.
        """
        guard = self._guard
        if guard.ready():
            rkey = self._head + key + "}"
            try:
                try:
                    reply = await self.client.evalsha(_SHA, 1, rkey, micros(interval), burst, cost)
                except self._noscript:
                    reply = await _GCRA.arun(self.client, 1, rkey, micros(interval), burst, cost)
            except self._errors as exc:
                guard.failed(exc)
                return self._without_redis(exc, key, now, interval, burst, cost)
            guard.ok()
            return decision(reply)
        return self._without_redis(None, key, now, interval, burst, cost)

    async def reset(self, key: str) -> None:
        """Forget ``key``: its bucket is full again (also in the local fallback)."""
        self._reset_local(key)
        await self._acall(None, self.client.delete, self.redis_key(key))

    async def aclose(self) -> None:
        """Close the client if :meth:`from_url` built it (a passed-in client stays yours)."""
        if self._owned:
            await self.client.aclose()
