"""Telegram's flood limits as the simulator enforces them.

Telegram answers ``429 Too Many Requests`` with ``parameters.retry_after``
when a bot sends faster than about 30 messages per second overall, 1 message
per second to one private chat (short bursts tolerated) or 20 messages per
minute to one group.  :class:`FloodEnforcer` applies the same three buckets
with botscale's GCRA maths; it is pure apart from its injectable clock, so
the rules are tested with :class:`~botscale.testing.FakeClock`.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

from .._clock import Clock
from .._gcra import Rate, gcra_update
from .._validation import check_positive_int, check_type

__all__ = ["FloodEnforcer", "FloodLimits", "is_limited_method"]

_LIMITED_PREFIXES = ("send", "forward", "copy", "editmessage")
_UNLIMITED = frozenset({"sendchataction"})


def is_limited_method(method: str) -> bool:
    """Whether ``method`` (any case) is a sending method subject to flood limits.

    ``send*`` (except ``sendChatAction``), ``forward*``, ``copy*`` and
    ``editMessage*`` count; reading methods, ``answerCallbackQuery`` and
    ``deleteMessage`` do not.
    """
    name = method.lower()
    return name not in _UNLIMITED and name.startswith(_LIMITED_PREFIXES)


@dataclass(frozen=True, slots=True)
class FloodLimits:
    """The flood limits of one bot token; ``None`` switches a bucket off.

    Attributes:
        per_bot: all sending calls of the bot (Telegram: about 30 per second).
        per_bot_burst: capacity of the per-bot bucket.
        per_private_chat: sending calls to one private chat (1 per second).
        per_private_chat_burst: short burst tolerated in a private chat.
        per_group: sending calls to one group, supergroup or channel (20 per minute).
        per_group_burst: capacity of the per-group bucket.
    """

    per_bot: Rate | None = field(default_factory=lambda: Rate(30, 1.0))
    per_bot_burst: int = 30
    per_private_chat: Rate | None = field(default_factory=lambda: Rate(1, 1.0))
    per_private_chat_burst: int = 3
    per_group: Rate | None = field(default_factory=lambda: Rate(20, 60.0))
    per_group_burst: int = 20

    def __post_init__(self) -> None:
        for name in ("per_bot", "per_private_chat", "per_group"):
            value = getattr(self, name)
            if value is not None:
                check_type(name, value, Rate, "a botscale.Rate or None")
        check_positive_int("per_bot_burst", self.per_bot_burst)
        check_positive_int("per_private_chat_burst", self.per_private_chat_burst)
        check_positive_int("per_group_burst", self.per_group_burst)

    @classmethod
    def off(cls) -> FloodLimits:
        """No flood limits at all (measure the bot alone, not Telegram's ceiling)."""
        return cls(per_bot=None, per_private_chat=None, per_group=None)


class FloodEnforcer:
    """Decides whether a sending call passes Telegram's flood limits (the server's side).

    The simulator's enforcer of the limits a bot must stay under; the bot's
    own side is :class:`botscale.FloodControl`.

    A call takes one token from the bot's bucket and one from its chat's
    bucket, or from neither: when either is empty the call is refused with
    the whole seconds to wait, as Telegram's ``retry_after``.  Refusals are
    counted per chat and per method.

    Args:
        limits: the buckets to apply.
        clock: monotonic seconds (inject a FakeClock in tests).
    """

    def __init__(self, limits: FloodLimits | None = None, *, clock: Clock = time.monotonic) -> None:
        if limits is None:
            limits = FloodLimits()
        check_type("limits", limits, FloodLimits, "a FloodLimits")
        self.limits = limits
        self._clock = clock
        self._bot_tat: float | None = None
        self._chat_tat: dict[int, float] = {}
        self._sweep_at = 1024
        self.allowed = 0
        self.rate_limited = 0
        self.rate_limited_by_chat: Counter[int] = Counter()
        self.rate_limited_by_method: Counter[str] = Counter()

    def check(self, chat_id: int, chat_type: str, method: str) -> int | None:
        """Take the tokens for one call, or refuse it.

        Args:
            chat_id: the target chat.
            chat_type: ``"private"``, ``"group"``, ``"supergroup"`` or ``"channel"``.
            method: the Bot API method, for the per-method count.

        Returns:
            ``None`` when the call may go ahead, else the ``retry_after``
            seconds (an int >= 1) to answer with.
        """
        now = self._clock()
        limits = self.limits
        if chat_type == "private":
            chat_rate, chat_burst = limits.per_private_chat, limits.per_private_chat_burst
        else:
            chat_rate, chat_burst = limits.per_group, limits.per_group_burst
        wait = 0.0
        new_bot_tat = self._bot_tat
        if limits.per_bot is not None:
            new_bot_tat, decision = gcra_update(
                self._bot_tat, now, limits.per_bot.interval, limits.per_bot_burst, 1
            )
            wait = max(wait, decision.retry_after)
        new_chat_tat: float | None = None
        if chat_rate is not None:
            new_chat_tat, decision = gcra_update(
                self._chat_tat.get(chat_id), now, chat_rate.interval, chat_burst, 1
            )
            wait = max(wait, decision.retry_after)
        if wait > 0:
            self.count_refusal(chat_id, method)
            return max(1, math.ceil(wait))
        self.allowed += 1
        self._bot_tat = new_bot_tat
        if new_chat_tat is not None:
            self._chat_tat[chat_id] = new_chat_tat
            if len(self._chat_tat) >= self._sweep_at:
                self._sweep(now)
        return None

    def count_refusal(self, chat_id: int | None, method: str) -> None:
        """Count one ``429`` answer (this enforcer's, or one injected into the simulator)."""
        self.rate_limited += 1
        if chat_id is not None:
            self.rate_limited_by_chat[chat_id] += 1
        self.rate_limited_by_method[method] += 1

    def _sweep(self, now: float) -> None:
        # A TAT in the past means a full bucket: forgetting it changes nothing.
        self._chat_tat = {k: v for k, v in self._chat_tat.items() if v > now}
        self._sweep_at = max(1024, 2 * len(self._chat_tat))
