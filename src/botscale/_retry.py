"""Retries with exponential backoff, a time budget and server-given waits.

``retry(on=..., attempts=..., timeout=..., retry_after=...)`` decorates sync and
async callables.  The first attempt is a plain call inside ``try``: a call that
succeeds never touches tenacity, so the success path costs a few dozen
nanoseconds.  Only when that attempt raises a matching exception does the call
continue in a tenacity ``Retrying`` / ``AsyncRetrying`` whose stop, wait,
retry and before-sleep hooks are the ones defined here (with botscale's own
injectable clock, so the time budget is testable with a ``FakeClock``).

Decisions, in order, after attempt ``n`` failed with ``exc``:

1. ``exc`` does not match ``on`` (or is a cancellation): it propagates as is.
2. the wait is ``retry_after(exc)`` when that returns a number (a server knows
   best), else ``min(max_wait, initial * multiplier ** (n - 1))`` with up to
   ``jitter`` of it taken off at random;
3. ``n == attempts``, or ``elapsed + wait > timeout``: give up at once and
   re-raise ``exc`` itself (never tenacity's ``RetryError``);
4. otherwise log one WARNING, count it, sleep, and try again.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, Final, TypeAlias, TypeVar, cast

import tenacity
from typing_extensions import ParamSpec

from ._clock import AsyncSleep, Clock, Sleep
from ._errors import ConfigurationError
from ._validation import check_non_negative, check_positive_int

__all__ = [
    "ExceptionMatcher",
    "RetryPolicy",
    "RetryStats",
    "retry",
    "retry_stats",
    "retry_testing",
]

P = ParamSpec("P")
R = TypeVar("R")

ExceptionMatcher: TypeAlias = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""What ``on=`` accepts: an exception type, a tuple of them, or a predicate."""

_DEFAULT_MAX_WAIT: Final = 5.0
_log: Final = logging.getLogger("botscale.retry")

# Never retried, whatever ``on`` says: retrying them would swallow a cancellation
# or a shutdown request.
_NEVER_RETRY: Final = (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass
class RetryStats:
    """Counters of one retry policy (or, from :func:`retry_stats`, of the process).

    Once every call has finished,
    ``retried_calls == recovered + exhausted + over_budget + aborted``.

    Attributes:
        retried_calls: calls whose first attempt failed with a retryable error.
        retries: attempts made after a failure (each one followed a logged wait).
        recovered: retried calls that finally succeeded.
        exhausted: calls that failed on their last allowed attempt.
        over_budget: calls given up because the next wait would not fit in
            ``timeout``.
        aborted: retried calls that ended with an error ``on`` does not match.
    """

    retried_calls: int = 0
    retries: int = 0
    recovered: int = 0
    exhausted: int = 0
    over_budget: int = 0
    aborted: int = 0

    def copy(self) -> RetryStats:
        """A snapshot that later calls do not change."""
        return RetryStats(**{f.name: getattr(self, f.name) for f in fields(self)})


_stats_lock: Final = threading.Lock()
_global_stats: Final = RetryStats()


def retry_stats() -> RetryStats:
    """A snapshot of the counters summed over every retry policy in this process."""
    with _stats_lock:
        return _global_stats.copy()


def _count(stats: RetryStats, name: str) -> None:
    with _stats_lock:
        setattr(stats, name, getattr(stats, name) + 1)
        setattr(_global_stats, name, getattr(_global_stats, name) + 1)


class _Testing:
    """The testing switch's state: read only on the failure path."""

    __slots__ = ("attempts", "enabled")

    def __init__(self) -> None:
        self.enabled = False
        self.attempts: int | None = None


_testing: Final = _Testing()


class _TestingSwitch:
    """Returned by :func:`retry_testing`: also a context manager that restores."""

    __slots__ = ("_previous",)

    def __init__(self, previous: tuple[bool, int | None]) -> None:
        self._previous = previous

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        _testing.enabled, _testing.attempts = self._previous


def retry_testing(enabled: bool = True, *, attempts: int | None = None) -> _TestingSwitch:
    """Turn every retry wait off (or back on) for a test suite.

    While on, retries happen at once: the decisions (which errors retry, how
    many attempts, the time budget) stay exactly as configured and are logged
    and counted as usual; only the sleeping is skipped.  ``attempts`` also caps
    the attempts of every policy (``attempts=1`` disables retrying).

    Call it once (``retry_testing()``), or use it as a context manager that
    restores the previous setting on exit::

        with botscale.retry_testing():
            flaky_save()

    Args:
        enabled: ``True`` to skip waits, ``False`` to restore normal behaviour.
        attempts: if given, no policy makes more than this many attempts.

    Raises:
        ValueError: ``attempts`` is < 1.
    """
    if attempts is not None:
        check_positive_int("attempts", attempts)
    previous = (_testing.enabled, _testing.attempts)
    _testing.enabled = bool(enabled)
    _testing.attempts = attempts if enabled else None
    return _TestingSwitch(previous)


def _matcher(
    on: object,
) -> tuple[tuple[type[BaseException], ...], Callable[[BaseException], bool] | None]:
    """Split ``on`` into the types to catch and an optional predicate."""
    if isinstance(on, type) and issubclass(on, BaseException):
        return (on,), None
    if isinstance(on, tuple):
        if not on:
            raise ConfigurationError("on must name at least one exception type, got ()")
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(
                    f"on must be an exception type, a tuple of them or a predicate; "
                    f"the tuple holds {item!r}"
                )
        return cast("tuple[type[BaseException], ...]", on), None
    if callable(on):
        return (Exception,), cast("Callable[[BaseException], bool]", on)
    raise TypeError(
        f"on must be an exception type, a tuple of them or a predicate "
        f"(exception -> bool), got {type(on).__name__}"
    )


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (functions, partials, async ``__call__``)."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with async __call__
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(call)


def _qualname(fn: object) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}.{qualname}" if module else str(qualname)


class _Call:
    """One call's retry state, and the tenacity hooks that read it."""

    __slots__ = ("attempts", "name", "outcome", "policy", "start", "testing")

    def __init__(self, policy: RetryPolicy, start: float, name: str) -> None:
        self.policy = policy
        self.start = start
        self.name = name
        self.outcome = "aborted"
        self.testing = _testing.enabled
        attempts = policy.attempts
        if self.testing and _testing.attempts is not None:
            attempts = min(_testing.attempts, attempts or _testing.attempts)
        self.attempts = attempts

    def should_retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        return self.policy._matches(cast("BaseException", outcome.exception()))

    def wait(self, state: tenacity.RetryCallState) -> float:
        exc = cast("BaseException", cast("tenacity.Future", state.outcome).exception())
        return self.policy._wait(state.attempt_number, exc)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        policy = self.policy
        exc = cast("tenacity.Future", state.outcome).exception()
        if self.attempts is not None and state.attempt_number >= self.attempts:
            self.outcome = "exhausted"
            _log.warning(
                "giving up on %s after %d attempts: %r",
                self.name,
                state.attempt_number,
                exc,
            )
            return True
        if policy.timeout is not None:
            elapsed = policy.clock() - self.start
            if elapsed + state.upcoming_sleep > policy.timeout:
                self.outcome = "over_budget"
                _log.warning(
                    "giving up on %s after attempt %d: the next wait of %.3f s does not fit "
                    "in the %.3f s left of its %.3f s budget: %r",
                    self.name,
                    state.attempt_number,
                    state.upcoming_sleep,
                    max(0.0, policy.timeout - elapsed),
                    policy.timeout,
                    exc,
                )
                return True
        return False

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        policy = self.policy
        exc = cast("tenacity.Future", state.outcome).exception()
        _count(policy.stats, "retries")
        _log.warning(
            "retrying %s in %.3f s%s (attempt %s failed): %r",
            self.name,
            state.upcoming_sleep,
            " (wait skipped: retry_testing)" if self.testing else "",
            state.attempt_number
            if self.attempts is None
            else f"{state.attempt_number}/{self.attempts}",
            exc,
        )

    def sleep(self, seconds: float) -> None:
        if not self.testing:
            self.policy.sleep(seconds)

    async def async_sleep(self, seconds: float) -> None:
        if not self.testing:
            await self.policy._async_sleep(seconds)

    def retrying_kwargs(self) -> dict[str, Any]:
        return {
            "stop": self.stop,
            "wait": self.wait,
            "retry": self.should_retry,
            "before_sleep": self.before_sleep,
            "reraise": True,
        }


class RetryPolicy:
    """A configured retry rule: decorate functions with it, or run calls through it.

    Made by :func:`retry`; see there for the arguments.  One policy may decorate
    several functions; its :attr:`stats` then sum over all of them.

    Attributes:
        stats: this policy's :class:`RetryStats` (live; ``.copy()`` for a snapshot).
    """

    def __init__(
        self,
        *,
        on: ExceptionMatcher,
        attempts: int | None = 3,
        timeout: float | None = None,
        retry_after: Callable[[BaseException], float | None] | None = None,
        initial: float = 0.1,
        max_wait: float | None = None,
        multiplier: float = 2.0,
        jitter: float = 0.5,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        async_sleep: AsyncSleep | None = None,
        name: str | None = None,
    ) -> None:
        self._catch, self._predicate = _matcher(on)
        if attempts is not None:
            check_positive_int("attempts", attempts)
        if timeout is not None:
            timeout = check_non_negative("timeout", timeout)
        if attempts is None and timeout is None:
            raise ConfigurationError(
                "attempts and timeout cannot both be None: give attempts (an int >= 1), "
                "timeout (seconds >= 0) or both, so retrying always ends"
            )
        self.initial = check_non_negative("initial", initial)
        if max_wait is None:
            max_wait = max(_DEFAULT_MAX_WAIT, self.initial)
        self.max_wait = check_non_negative("max_wait", max_wait)
        if self.max_wait < self.initial:
            raise ConfigurationError(f"max_wait must be >= initial ({initial!r}), got {max_wait!r}")
        self.multiplier = check_non_negative("multiplier", multiplier)
        if self.multiplier < 1:
            raise ConfigurationError(f"multiplier must be a number >= 1, got {multiplier!r}")
        self.jitter = check_non_negative("jitter", jitter)
        if self.jitter > 1:
            raise ConfigurationError(f"jitter must be a fraction between 0 and 1, got {jitter!r}")
        if retry_after is not None and not callable(retry_after):
            raise TypeError(
                f"retry_after must be a callable (exception -> seconds or None), "
                f"got {type(retry_after).__name__}"
            )
        self.on = on
        self.attempts = attempts
        self.timeout = timeout
        self.retry_after = retry_after
        self.clock = clock
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.name = name
        self.stats = RetryStats()

    # -- decisions (pure but for the jitter) ---------------------------------

    def _matches(self, exc: BaseException) -> bool:
        if isinstance(exc, _NEVER_RETRY) or not isinstance(exc, self._catch):
            return False
        return self._predicate is None or bool(self._predicate(exc))

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), with jitter."""
        base = min(self.max_wait, self.initial * self.multiplier ** (attempt - 1))
        return base * (1.0 - self.jitter * random.random())

    def _wait(self, attempt: int, exc: BaseException) -> float:
        if self.retry_after is not None:
            # A broken extractor must not hide the error being retried: it falls
            # back to the backoff, loudly.
            try:
                server = self.retry_after(exc)
                wait = None if server is None else float(server)
            except Exception:
                _log.exception("retry_after extractor failed on %r; using the backoff", exc)
                wait = None
            if wait is not None and math.isfinite(wait):
                return max(0.0, wait)
            if wait is not None:
                _log.warning("retry_after gave %r for %r; using the backoff", server, exc)
        return self.backoff(attempt)

    async def _async_sleep(self, seconds: float) -> None:
        if self.async_sleep is not None:
            await self.async_sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    # -- the failure path: hand the call over to tenacity --------------------

    def _continue(
        self,
        first: BaseException,
        start: float,
        name: str | None,
        fn: Callable[..., R],
        args: Any,
        kwargs: Any,
    ) -> R:
        call = _Call(self, start, name or _qualname(fn))
        _count(self.stats, "retried_calls")
        replay: list[BaseException] = [first]

        def attempt() -> R:
            if replay:
                raise replay.pop()
            return fn(*args, **kwargs)

        retrying = tenacity.Retrying(sleep=call.sleep, **call.retrying_kwargs())
        try:
            result = retrying(attempt)
        except BaseException:
            _count(self.stats, call.outcome)
            raise
        _count(self.stats, "recovered")
        return result

    async def _acontinue(
        self,
        first: BaseException,
        start: float,
        name: str | None,
        fn: Callable[..., Awaitable[R]],
        args: Any,
        kwargs: Any,
    ) -> R:
        call = _Call(self, start, name or _qualname(fn))
        _count(self.stats, "retried_calls")
        replay: list[BaseException] = [first]

        async def attempt() -> R:
            if replay:
                raise replay.pop()
            return await fn(*args, **kwargs)

        retrying = tenacity.AsyncRetrying(sleep=call.async_sleep, **call.retrying_kwargs())
        try:
            result: R = await retrying(attempt)
        except BaseException:
            _count(self.stats, call.outcome)
            raise
        _count(self.stats, "recovered")
        return result

    # -- the public forms -----------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` (sync or async); its signature is kept."""
        if not callable(fn):
            raise TypeError(f"retry(...) decorates a callable, got {type(fn).__name__}")
        name = self.name or _qualname(fn)
        catch = self._catch
        predicate = self._predicate
        clock = self.clock
        timed = self.timeout is not None
        cont = self._continue
        acont = self._acontinue

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                start = clock() if timed else 0.0
                try:
                    return await afn(*args, **kwargs)
                except catch as exc:
                    if isinstance(exc, _NEVER_RETRY) or (
                        predicate is not None and not predicate(exc)
                    ):
                        raise
                    first = exc
                return await acont(first, start, name, afn, args, kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = clock() if timed else 0.0
            try:
                return fn(*args, **kwargs)
            except catch as exc:
                if isinstance(exc, _NEVER_RETRY) or (predicate is not None and not predicate(exc)):
                    raise
                first = exc
            return cont(first, start, name, fn, args, kwargs)

        return cast("Callable[P, R]", wrapper)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the sync ``fn(*args, **kwargs)`` under this policy (no decorator needed)."""
        start = self.clock() if self.timeout is not None else 0.0
        try:
            return fn(*args, **kwargs)
        except self._catch as exc:
            if not self._matches(exc):
                raise
            first = exc
        return self._continue(first, start, self.name, fn, args, kwargs)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` under this policy (no decorator needed)."""
        start = self.clock() if self.timeout is not None else 0.0
        try:
            return await fn(*args, **kwargs)
        except self._catch as exc:
            if not self._matches(exc):
                raise
            first = exc
        return await self._acontinue(first, start, self.name, fn, args, kwargs)

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(on={self.on!r}, attempts={self.attempts!r}, "
            f"timeout={self.timeout!r}, name={self.name!r})"
        )


def retry(
    *,
    on: ExceptionMatcher,
    attempts: int | None = 3,
    timeout: float | None = None,
    retry_after: Callable[[BaseException], float | None] | None = None,
    initial: float = 0.1,
    max_wait: float | None = None,
    multiplier: float = 2.0,
    jitter: float = 0.5,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    async_sleep: AsyncSleep | None = None,
    name: str | None = None,
) -> RetryPolicy:
    """Retry a sync or async callable on the given errors, with backoff and a time budget.

    ::

        @retry(on=ConnectionError, attempts=3, timeout=30.0)
        def save(row: Row) -> None: ...

    A call that succeeds first time costs one ``try`` more than a plain call;
    tenacity is entered only after a matching failure.

    Args:
        on: what to retry (required, so nothing retries every error by
            accident): an exception type, a tuple of them, or a predicate
            ``exception -> bool`` (consulted for ``Exception`` subclasses).
            Cancellation, ``KeyboardInterrupt`` and ``SystemExit`` never retry.
        attempts: the most calls made in total (>= 1); ``None`` for no limit
            but ``timeout``.
        timeout: the time budget in seconds from the start of the first
            attempt (>= 0).  A wait that would end past it fails at once with
            the last error.  Running attempts are not interrupted.
        retry_after: ``exception -> seconds | None``; a number overrides the
            backoff for that wait (Telegram's 429 ``retry_after``).  It is not
            capped by ``max_wait``, only by ``timeout``.
        initial: the first backoff in seconds (>= 0).
        max_wait: the longest backoff in seconds (>= initial; default 5.0,
            or ``initial`` if that is longer).
        multiplier: growth of the backoff per attempt (>= 1).
        jitter: the fraction (0..1) of each backoff that is random: the wait
            is drawn uniformly from ``[base * (1 - jitter), base]``.
        clock: monotonic seconds, for the time budget.
        sleep: the blocking sleep used between sync attempts.
        async_sleep: the awaitable sleep between async attempts
            (``asyncio.sleep`` by default).
        name: the name used in logs (default: the function's qualified name).

    Returns:
        A :class:`RetryPolicy`: use it as a decorator, or call ``policy.call(fn,
        ...)`` / ``await policy.acall(fn, ...)``; ``policy.stats`` counts.

    Raises:
        ValueError: an argument is outside its range (the message names it).
        TypeError: ``on`` or ``retry_after`` has the wrong type.
    """
    return RetryPolicy(
        on=on,
        attempts=attempts,
        timeout=timeout,
        retry_after=retry_after,
        initial=initial,
        max_wait=max_wait,
        multiplier=multiplier,
        jitter=jitter,
        clock=clock,
        sleep=sleep,
        async_sleep=async_sleep,
        name=name,
    )
