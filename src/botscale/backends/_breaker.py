"""The circuit breaker and failure policy shared by every Redis component.

A dead Redis must neither crash the bot nor be hammered by every update.  Each
component asks its :class:`CircuitBreaker` before a call; after ``failures``
consecutive client errors the breaker opens and calls are answered locally
(under the component's policy) without touching the network, until
``cooldown`` seconds later one probe call is let through: success closes the
breaker, failure opens it for another cooldown.

The breaker is pure state driven by an injectable clock, so its timing rules
are tested with :class:`botscale.testing.FakeClock`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from .._clock import Clock
from .._errors import BackendError, ConfigurationError
from .._validation import check_positive, check_positive_int

__all__ = ["BreakerState", "CircuitBreaker", "FailurePolicy", "RedisStats"]

BreakerState = Literal["closed", "open", "half_open"]
FailurePolicy = Literal["open", "closed"]
"""What a component does when Redis fails: ``"open"`` answers without Redis
(allow, log, count), ``"closed"`` raises :class:`~botscale.BackendError`."""

_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half_open"

logger = logging.getLogger("botscale.redis")


class CircuitBreaker:
    """Stops calling a failing server and probes it back after a cooldown.

    One breaker may be shared by every component that talks to the same Redis
    (pass ``breaker=`` to each), so they all stop and recover together.
    Thread-safe; also safe to share between sync and async components.

    Args:
        failures: consecutive failures that open the breaker (>= 1).
        cooldown: seconds the breaker stays open before one probe call (> 0).
        clock: monotonic seconds, injectable for tests.

    Raises:
        ConfigurationError: ``failures`` < 1 or ``cooldown`` not > 0.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_lock",
        "_retry_at",
        "_state",
        "cooldown",
        "failures",
        "opened",
    )

    def __init__(self, *, failures: int = 5, cooldown: float = 5.0, clock: Clock = time.monotonic):
        self.failures = check_positive_int("failures", failures)
        self.cooldown = check_positive("cooldown", cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._state: BreakerState = _CLOSED
        self._consecutive = 0
        self._retry_at = 0.0
        self.opened = 0
        """How many times the breaker has opened."""

    @property
    def state(self) -> BreakerState:
        """``"closed"`` (calls go through), ``"open"`` or ``"half_open"`` (one probe out)."""
        return self._state

    def allow(self) -> bool:
        """May a call go to the server now?

        In the open state, the first caller after the cooldown becomes the
        probe (the breaker turns half-open); everyone else is refused until
        the probe reports.  A probe that never reports is replaced after
        another cooldown.
        """
        if self._state is _CLOSED:
            return True
        with self._lock:
            if self._state is _CLOSED:
                return True
            now = self._clock()
            if now < self._retry_at:
                return False
            self._state = _HALF_OPEN
            self._retry_at = now + self.cooldown
            return True

    def record_success(self) -> None:
        """A call succeeded: reset the failure count, close the breaker."""
        if self._consecutive == 0 and self._state is _CLOSED:
            return
        with self._lock:
            if self._state is not _CLOSED:
                logger.warning("Redis answers again: circuit breaker closed")
            self._state = _CLOSED
            self._consecutive = 0

    def record_failure(self) -> None:
        """A call failed: count it, open the breaker at the threshold or after a failed probe."""
        with self._lock:
            self._consecutive += 1
            if self._state is _HALF_OPEN or (
                self._state is _CLOSED and self._consecutive >= self.failures
            ):
                self._state = _OPEN
                self._retry_at = self._clock() + self.cooldown
                self.opened += 1
                logger.warning(
                    "Redis failed %d times in a row: circuit breaker open, next probe in %.3g s",
                    self._consecutive,
                    self.cooldown,
                )

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(state={self._state!r}, failures={self.failures}, "
            f"cooldown={self.cooldown}, opened={self.opened})"
        )


@dataclass(frozen=True, slots=True)
class RedisStats:
    """Counters of one Redis component: how often it answered without Redis.

    Attributes:
        errors: client errors seen (connection refused, timeout, error replies).
        degraded: answers given without Redis under the ``"open"`` policy or
            from the local fallback.
        raised: :class:`~botscale.BackendError` raised under the ``"closed"`` policy.
        short_circuited: calls the open breaker answered without trying Redis.
        breaker: the breaker's state now.
        breaker_opened: how many times the breaker has opened.
    """

    errors: int
    degraded: int
    raised: int
    short_circuited: int
    breaker: BreakerState
    breaker_opened: int


def check_policy(name: str, value: object, accepted: tuple[str, ...]) -> str:
    """Validate an ``on_error`` argument against the accepted policy names."""
    if not isinstance(value, str) or value not in accepted:
        raise ConfigurationError(
            f"{name} must be one of {', '.join(map(repr, accepted))}, got {value!r}"
        )
    return value


class Guard:
    """One component's breaker, policy and counters (not thread-hot: plain ints).

    Components call :meth:`ready` before talking to Redis, :meth:`ok` after a
    success and :meth:`degrade` after a failure (or when not ready); the latter
    raises under the ``"closed"`` policy and otherwise counts and returns.
    """

    __slots__ = ("breaker", "degraded", "errors", "name", "policy", "raised", "short_circuited")

    def __init__(self, name: str, policy: str, breaker: CircuitBreaker | None) -> None:
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a CircuitBreaker, got {type(breaker).__name__}")
        self.name = name
        self.policy = policy
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.errors = 0
        self.degraded = 0
        self.raised = 0
        self.short_circuited = 0

    def ready(self) -> bool:
        """Whether to call Redis now (counts a refusal by the breaker)."""
        breaker = self.breaker
        if breaker._state is _CLOSED or breaker.allow():
            return True
        self.short_circuited += 1
        return False

    def ok(self) -> None:
        breaker = self.breaker
        if breaker._consecutive or breaker._state is not _CLOSED:
            breaker.record_success()

    def failed(self, exc: BaseException) -> None:
        """Record a client error (for the breaker and the counters)."""
        self.errors += 1
        if self.errors == 1 or self.breaker.state is _CLOSED:
            logger.warning("%s: Redis call failed: %s", self.name, exc)
        self.breaker.record_failure()

    def degrade(self, exc: BaseException | None) -> None:
        """Answer without Redis: raise under the ``"closed"`` policy, else count."""
        if self.policy == "closed":
            self.raise_from(exc)
        self.degraded += 1

    def raise_from(self, exc: BaseException | None) -> NoReturn:
        self.raised += 1
        if exc is None:
            raise BackendError(
                f"{self.name}: Redis circuit breaker is open after repeated failures; "
                f"next probe within {self.breaker.cooldown:g} s"
            )
        raise BackendError(f"{self.name}: Redis call failed: {exc}") from exc

    def stats(self) -> RedisStats:
        return RedisStats(
            errors=self.errors,
            degraded=self.degraded,
            raised=self.raised,
            short_circuited=self.short_circuited,
            breaker=self.breaker.state,
            breaker_opened=self.breaker.opened,
        )
