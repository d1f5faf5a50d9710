"""The outgoing budget of flood control in Redis: N processes stay within one bot's limits.

:class:`RedisFloodBudget` implements :class:`~botscale.FloodBudget` (the seam
of ``FloodControl``): ``take`` decides a lane bucket (overall or paid) and a
chat bucket together, honouring the bot-wide and per-chat 429 cooldowns, in
one Lua script on the Redis clock; ``pause`` moves a cooldown deadline forward
only (a max-set in Lua).  Every key of one bot shares the hash tag
``{<prefix>:out}`` so the script is atomic on Redis Cluster too.

When Redis fails the default policy is ``"local"``: this process decides alone
with ``local_share`` of every rate (``1/N`` for N instances), so the bot keeps
sending, more slowly, instead of either stopping or flooding Telegram.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

from .._flood import BucketSpec, FloodBudget, Grant, MemoryFloodBudget
from .._validation import check_non_negative
from ._breaker import CircuitBreaker, RedisStats
from ._redis_base import FAILED, AsyncRedis, ClientT, LuaScript, RedisComponent, SyncRedis
from ._redis_limiter import check_share, micros

__all__ = ["AsyncRedisFloodBudget", "BudgetPolicy", "RedisFloodBudget"]

BudgetPolicy = Literal["local", "open", "closed"]
"""``"local"`` (default): decide in this process with ``local_share`` of each
rate; ``"open"``: grant everything; ``"closed"``: raise BackendError."""

_TAKE: Final = LuaScript("outgoing_take.lua")
_PAUSE: Final = LuaScript("outgoing_pause.lua")
_GRANTED: Final = Grant(True, 0.0, 0.0)


def _pause_us(seconds: float) -> int:
    """A cooldown in whole microseconds, rounded up (0 stays 0)."""
    return math.ceil(round(check_non_negative("seconds", seconds) * 1e6, 3))


class _Base(RedisComponent[ClientT]):
    """What both twins share: arguments, key layout, script arguments, the answer without Redis."""

    def __init__(
        self,
        client: ClientT,
        *,
        prefix: str,
        on_error: BudgetPolicy = "local",
        local_share: float = 1.0,
        local_budget: FloodBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(client, prefix, "out")
        self._head = "{" + self.prefix + ":out}:"  # one hash tag: the script takes several keys
        policy = self._init_policy(on_error, ("local", "open", "closed"), breaker)
        self.local_share = check_share(local_share)
        self._local: FloodBudget | None = None
        if policy == "local":
            self._local = MemoryFloodBudget() if local_budget is None else local_budget

    def stats(self) -> RedisStats:
        """How often this budget decided without Redis, and the breaker's state."""
        return self._guard.stats()

    def bucket_key(self, name: str) -> str:
        """The Redis key of bucket ``name``: ``{<prefix>:out}:b:<name>``."""
        return self._head + "b:" + name

    def cooldown_key(self, scope: str) -> str:
        """The Redis key of ``scope``'s 429 cooldown: ``{<prefix>:out}:hold:<scope>``."""
        return self._head + "hold:" + scope

    def _take_args(self, lane: BucketSpec, chat: BucketSpec | None) -> list[Any]:
        chat_name = chat.key if chat is not None else ""
        args: list[Any] = [
            self.bucket_key(lane.key),
            self.bucket_key(chat_name),
            self.cooldown_key("bot"),
            self.cooldown_key(chat_name),
            1 if chat is not None else 0,
            micros(lane.interval),
            lane.burst,
            lane.cost,
        ]
        if chat is not None:
            args += [micros(chat.interval), chat.burst, chat.cost]
        else:
            args += [1, 1, 1]
        return args

    def _share(self, spec: BucketSpec) -> BucketSpec:
        share = self.local_share
        return BucketSpec(
            spec.key,
            spec.interval / share,
            max(spec.cost, math.floor(spec.burst * share)),
            spec.cost,
        )

    def _granted(self, reply: Any, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """The :class:`Grant` from ``outgoing_take.lua``'s reply (or from the local budget)."""
        if reply is FAILED:
            if self._local is None:
                return _GRANTED
            return self._local.take(
                self._share(lane), None if chat is None else self._share(chat), now
            )
        granted, chat_us, lane_us = reply
        return Grant(granted == 1, chat_us / 1e6, lane_us / 1e6)

    def _paused(self, reply: Any, scope: str, seconds: float, now: float) -> float:
        """Seconds left of ``scope``'s cooldown (from ``outgoing_pause.lua``, or locally)."""
        if reply is FAILED:
            if self._local is None:
                return seconds
            return self._local.pause(scope, seconds, now)
        return float(reply / 1e6)


class RedisFloodBudget(_Base[SyncRedis]):
    """A :class:`~botscale.FloodBudget` in Redis, shared by every process of one bot.

    ``FloodControl(budget=RedisFloodBudget(client, prefix="mybot", local_share=1/3))``
    in each of three processes keeps the three together within Telegram's
    limits (30 messages/s overall, 1/s per chat, 20/min per group) and makes a
    429 seen by one process pause the others.

    Args:
        client: a ready ``redis.Redis`` client with socket timeouts.
        prefix: namespace of this bot's keys; use the same in every process.
        on_error: ``"local"`` (default) decides in this process with
            ``local_share`` of each rate while Redis fails; ``"open"`` grants
            everything; ``"closed"`` raises :class:`~botscale.BackendError`.
        local_share: this process's fraction of the budget under ``"local"``
            (``1/N`` for N instances).
        local_budget: where ``"local"`` keeps its buckets (a new
            ``MemoryFloodBudget`` by default).
        breaker: a :class:`CircuitBreaker`, possibly shared.
    """

    def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """See :meth:`botscale.FloodBudget.take` (decided on the Redis clock)."""
        reply = self._call(FAILED, _TAKE.run, self.client, 4, *self._take_args(lane, chat))
        return self._granted(reply, lane, chat, now)

    def pause(self, scope: str, seconds: float, now: float) -> float:
        """See :meth:`botscale.FloodBudget.pause`: forward only, on the Redis clock."""
        micros_left = _pause_us(seconds)
        reply = self._call(
            FAILED, _PAUSE.run, self.client, 1, self.cooldown_key(scope), micros_left
        )
        return self._paused(reply, scope, seconds, now)


class AsyncRedisFloodBudget(_Base[AsyncRedis]):
    """The ``redis.asyncio`` twin of :class:`RedisFloodBudget` (an ``AsyncFloodBudget``)."""

    async def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """See :meth:`botscale.FloodBudget.take` (decided on the Redis clock)."""
        reply = await self._acall(FAILED, _TAKE.arun, self.client, 4, *self._take_args(lane, chat))
        return self._granted(reply, lane, chat, now)

    async def pause(self, scope: str, seconds: float, now: float) -> float:
        """See :meth:`botscale.FloodBudget.pause`: forward only, on the Redis clock."""
        micros_left = _pause_us(seconds)
        reply = await self._acall(
            FAILED, _PAUSE.arun, self.client, 1, self.cooldown_key(scope), micros_left
        )
        return self._paused(reply, scope, seconds, now)
