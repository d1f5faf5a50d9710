"""Rates, decisions and the GCRA maths shared by every rate-limit backend.

The token bucket of capacity ``burst`` refilled at ``limit / period`` tokens per
second is implemented as the Generic Cell Rate Algorithm: per key one number,
the *theoretical arrival time* (TAT).  With ``interval = period / limit`` (the
seconds one token takes to refill) the bucket holds
``burst - max(0, tat - now) / interval`` tokens.  A request of ``cost`` is
allowed iff ``max(tat, now) + cost * interval - now <= burst * interval``.

This module is pure: time is an argument.  The memory backend calls
:func:`gcra_update`; the Redis backend runs the same formula in Lua.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from ._errors import ConfigurationError
from ._validation import check_positive

__all__ = ["Decision", "Rate", "gcra_update"]

_UNITS: Final[dict[str, float]] = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE_RE: Final = re.compile(
    r"^\s*(?P<limit>\d+(?:\.\d+)?)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+?)s?\s*$"
)

# Floating-point slack when comparing times: a request made exactly
# ``retry_after`` seconds later must succeed despite rounding in ``now + wait``.
EPSILON: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` events per ``period`` seconds, e.g. ``Rate(30, 60.0)``.

    Raises:
        ConfigurationError: ``limit`` or ``period`` is not a finite number > 0.
    """

    limit: float
    period: float

    def __post_init__(self) -> None:
        check_positive("limit", self.limit)
        check_positive("period", self.period)

    @property
    def interval(self) -> float:
        """Seconds for one token to refill (``period / limit``)."""
        return self.period / self.limit

    @property
    def per_second(self) -> float:
        """Tokens refilled per second (``limit / period``)."""
        return self.limit / self.period

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"30/minute"``, ``"1/s"``, ``"20 per 60 seconds"``, ``"100/2h"``.

        Raises:
            ConfigurationError: the text is not of that form.
        """
        if not isinstance(text, str):
            raise TypeError(f"rate text must be str, got {type(text).__name__}")
        match = _RATE_RE.match(text.lower())
        unit = match and _UNITS.get(match["unit"])
        if match is None or unit is None:
            raise ConfigurationError(
                f"rate must look like '30/minute' or '20 per 60 seconds' "
                f"(units: s, m, h, d or second, minute, hour, day), got {text!r}"
            )
        count = float(match["count"]) if match["count"] else 1.0
        return cls(float(match["limit"]), count * unit)

    def __str__(self) -> str:
        return f"{self.limit:g}/{self.period:g}s"


class Decision(NamedTuple):
    """The answer to one rate-limit request.

    An immutable named tuple, so ``allowed, remaining, retry_after = d`` works
    and a decision costs a fraction of a dataclass to build (it is made on
    every request).  ``bool(d)`` is ``d.allowed``.

    Attributes:
        allowed: whether the request may go ahead (its tokens were taken).
        remaining: whole tokens left in the bucket after this decision.
        retry_after: seconds until the same request would be allowed; ``0.0``
            when allowed.
    """

    allowed: bool
    remaining: int
    retry_after: float

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED: Final[tuple[Decision, ...]] = tuple(Decision(True, n, 0.0) for n in range(256))
"""Shared allowed decisions by ``remaining`` (decisions are immutable)."""


def gcra_update(
    tat: float | None, now: float, interval: float, burst: int, cost: int
) -> tuple[float | None, Decision]:
    """Decide one request of ``cost`` tokens against a bucket whose TAT is ``tat``.

    Args:
        tat: the key's theoretical arrival time, ``None`` for a fresh key.
        now: the current time in seconds.
        interval: seconds per token (``Rate.interval``).
        burst: bucket capacity in tokens.
        cost: tokens this request takes (``1 <= cost <= burst``).

    Returns:
        ``(new_tat, decision)``.  ``new_tat`` is the TAT to store (unchanged
        when denied).  The bucket is full again at ``new_tat``; a key whose TAT
        is ``<= now`` carries no information and may be dropped.
    """
    # The memory backend's hot path inlines these exact operations, in this
    # order (tests/test_backend_memory.py checks that both agree bit for bit).
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    debt = new_tat - now
    capacity = burst * interval
    limit = capacity + EPSILON
    if debt <= limit:
        remaining = math.floor((limit - debt) / interval)
        return new_tat, ALLOWED[remaining] if remaining < 256 else Decision(True, remaining, 0.0)
    # Denied: the whole tokens held now, fewer than cost (clamped against
    # rounding, and against a TAT another limiter or clock left beyond this
    # capacity).
    held = min(cost - 1, math.floor((limit - (base - now)) / interval)) if cost > 1 else 0
    return tat, Decision(False, max(0, held), debt - capacity)
