"""retry(): attempts and time bounds, server-given waits, logging, counters, testing switch."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import tenacity
from hypothesis import given
from hypothesis import strategies as st

import botscale
from botscale import ConfigurationError, RetryPolicy, retry, retry_stats, retry_testing
from botscale.testing import FakeClock


class Flaky:
    """A callable failing ``failures`` times with ``error`` (advancing the clock by ``cost``)."""

    def __init__(
        self,
        failures: int,
        error: Callable[[int], BaseException] = lambda n: ConnectionError(f"down {n}"),
        *,
        clock: FakeClock | None = None,
        cost: float = 0.0,
    ) -> None:
        self.failures = failures
        self.error = error
        self.clock = clock
        self.cost = cost
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self, value: int = 7) -> int:
        self.calls += 1
        if self.clock is not None:
            self.clock.advance(self.cost)
        if self.calls <= self.failures:
            exc = self.error(self.calls)
            self.raised.append(exc)
            raise exc
        return value

    async def acall(self, value: int = 7) -> int:
        await asyncio.sleep(0)
        return self(value)


class Sleeps:
    """Records requested waits and advances a FakeClock by them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self(seconds)


@pytest.fixture
def sleeps(clock: FakeClock) -> Sleeps:
    return Sleeps(clock)


def policy(clock: FakeClock, sleeps: Sleeps, **kwargs: object) -> RetryPolicy:
    kwargs.setdefault("on", ConnectionError)
    kwargs.setdefault("jitter", 0.0)
    return retry(clock=clock, sleep=sleeps, async_sleep=sleeps.asleep, **kwargs)  # type: ignore[arg-type]


# -- success path ---------------------------------------------------------------


def test_success_first_time_returns_value_without_entering_tenacity(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, sleeps: Sleeps
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity must not be entered on the success path")

    monkeypatch.setattr(tenacity, "Retrying", boom)
    p = policy(clock, sleeps, timeout=10.0)
    fn = p(Flaky(0))
    assert fn(3) == 3
    assert sleeps.waits == []
    assert p.stats == botscale.RetryStats()


async def test_async_success_first_time_does_not_enter_tenacity(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, sleeps: Sleeps
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("tenacity must not be entered on the success path")

    monkeypatch.setattr(tenacity, "AsyncRetrying", boom)
    flaky = Flaky(0)
    fn = policy(clock, sleeps)(flaky.acall)
    assert await fn(4) == 4


# -- attempts bound ---------------------------------------------------------------


def test_recovers_within_attempts_with_exponential_backoff(
    clock: FakeClock, sleeps: Sleeps
) -> None:
    p = policy(clock, sleeps, attempts=4, initial=0.5, multiplier=2.0, max_wait=10.0)
    flaky = Flaky(3)
    assert p(flaky)(9) == 9
    assert flaky.calls == 4
    assert sleeps.waits == [0.5, 1.0, 2.0]
    assert p.stats.retried_calls == 1
    assert p.stats.retries == 3
    assert p.stats.recovered == 1


def test_backoff_is_capped_by_max_wait(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=6, initial=1.0, multiplier=3.0, max_wait=5.0)
    p(Flaky(5))()
    assert sleeps.waits == [1.0, 3.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("attempts", [1, 2, 5])
def test_attempts_bound_total_calls_and_original_error_is_raised(
    clock: FakeClock, sleeps: Sleeps, attempts: int
) -> None:
    p = policy(clock, sleeps, attempts=attempts)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError) as info:
        p(flaky)()
    assert flaky.calls == attempts
    assert info.value is flaky.raised[-1]
    assert len(sleeps.waits) == attempts - 1
    assert p.stats.exhausted == 1
    assert p.stats.retries == attempts - 1


async def test_async_attempts_bound(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=3, initial=0.25)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError) as info:
        await p(flaky.acall)()
    assert flaky.calls == 3
    assert info.value is flaky.raised[-1]
    assert sleeps.waits == [0.25, 0.5]


async def test_async_recovers(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=3)
    flaky = Flaky(2)
    assert await p(flaky.acall)(5) == 5
    assert p.stats.recovered == 1


# -- time budget ----------------------------------------------------------------


def test_timeout_bounds_total_time(clock: FakeClock, sleeps: Sleeps) -> None:
    start = clock()
    p = policy(clock, sleeps, attempts=None, timeout=1.0, initial=0.3, multiplier=1.0)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError) as info:
        p(flaky)()
    # attempts at t = 0, 0.3, 0.6, 0.9; one more wait would end at 1.2 > 1.0
    assert flaky.calls == 4
    assert clock() - start == pytest.approx(0.9)
    assert info.value is flaky.raised[-1]
    assert p.stats.over_budget == 1
    assert p.stats.exhausted == 0


def test_time_spent_in_attempts_counts_against_the_budget(clock: FakeClock, sleeps: Sleeps) -> None:
    start = clock()
    p = policy(clock, sleeps, attempts=10, timeout=2.0, initial=0.1, multiplier=1.0)
    flaky = Flaky(100, clock=clock, cost=0.6)
    with pytest.raises(ConnectionError):
        p(flaky)()
    # 0.6 + 0.1 + 0.6 + 0.1 + 0.6 = 2.0: one more wait would pass the budget
    assert flaky.calls == 3
    assert clock() - start <= 2.0 + 1e-9


def test_both_bounds_apply_whichever_comes_first(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=2, timeout=100.0)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError):
        p(flaky)()
    assert flaky.calls == 2


async def test_async_timeout_bound(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=None, timeout=1.0, initial=0.4, multiplier=1.0)
    flaky = Flaky(100)
    with pytest.raises(ConnectionError):
        await p(flaky.acall)()
    assert flaky.calls == 3  # t = 0, 0.4, 0.8
    assert p.stats.over_budget == 1


# -- server-given waits ----------------------------------------------------------


class TooManyRequests(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"429, retry after {retry_after}")
        self.retry_after = retry_after


def extract(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, TooManyRequests) else None


def test_retry_after_overrides_backoff_and_max_wait(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=TooManyRequests, attempts=3, retry_after=extract, max_wait=1.0)
    flaky = Flaky(2, lambda n: TooManyRequests(7.0 * n))
    assert p(flaky)() == 7
    assert sleeps.waits == [7.0, 14.0]


def test_retry_after_none_falls_back_to_backoff(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=TooManyRequests, retry_after=extract, initial=0.2)
    p(Flaky(2, lambda n: TooManyRequests(None if n == 1 else 3.0)))()
    assert sleeps.waits == [0.2, 3.0]


def test_broken_retry_after_falls_back_to_backoff(
    clock: FakeClock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(exc: BaseException) -> float | None:
        raise AttributeError("no retry_after here")

    p = policy(clock, sleeps, retry_after=broken, initial=0.5)
    with caplog.at_level(logging.WARNING, logger="botscale.retry"):
        assert p(Flaky(1))() == 7
    assert sleeps.waits == [0.5]
    assert "retry_after extractor failed" in caplog.records[0].getMessage()
    q = policy(clock, sleeps, retry_after=lambda exc: float("nan"), initial=0.25)
    q(Flaky(1))()
    assert sleeps.waits == [0.5, 0.25]


def test_wait_over_the_budget_fails_at_once_with_the_original_error(
    clock: FakeClock, sleeps: Sleeps
) -> None:
    p = policy(clock, sleeps, on=TooManyRequests, timeout=10.0, retry_after=extract)
    flaky = Flaky(100, lambda n: TooManyRequests(30.0))
    start = clock()
    with pytest.raises(TooManyRequests) as info:
        p(flaky)()
    assert info.value is flaky.raised[0]
    assert not isinstance(info.value, tenacity.RetryError)
    assert flaky.calls == 1
    assert sleeps.waits == []
    assert clock() == start
    assert p.stats.over_budget == 1


async def test_async_wait_over_the_budget_fails_at_once(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=TooManyRequests, timeout=5.0, retry_after=extract)
    flaky = Flaky(100, lambda n: TooManyRequests(4.0))
    with pytest.raises(TooManyRequests) as info:
        await p(flaky.acall)()
    assert info.value is flaky.raised[1]
    assert flaky.calls == 2  # waited 4 s once; a second 4 s wait would end at 8 > 5
    assert sleeps.waits == [4.0]


# -- what is retried --------------------------------------------------------------


def test_non_matching_exception_is_not_retried(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=ConnectionError)
    flaky = Flaky(5, lambda n: KeyError(n))
    with pytest.raises(KeyError):
        p(flaky)()
    assert flaky.calls == 1
    assert p.stats == botscale.RetryStats()


def test_non_matching_error_on_a_later_attempt_propagates_and_is_counted(
    clock: FakeClock, sleeps: Sleeps
) -> None:
    p = policy(clock, sleeps, attempts=5)
    flaky = Flaky(3, lambda n: ConnectionError(n) if n == 1 else KeyError(n))
    with pytest.raises(KeyError) as info:
        p(flaky)()
    assert info.value is flaky.raised[1]
    assert flaky.calls == 2
    assert p.stats.aborted == 1


def test_tuple_of_types(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=(TimeoutError, KeyError), attempts=3)
    flaky = Flaky(2, lambda n: TimeoutError() if n == 1 else KeyError(n))
    assert p(flaky)() == 7


def test_predicate(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=lambda exc: "transient" in str(exc), attempts=5)
    flaky = Flaky(2, lambda n: RuntimeError("transient glitch"))
    assert p(flaky)() == 7
    permanent = Flaky(2, lambda n: RuntimeError("permanent"))
    with pytest.raises(RuntimeError):
        p(permanent)()
    assert permanent.calls == 1


async def test_cancellation_is_never_retried(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, on=BaseException, attempts=5)
    flaky = Flaky(5, lambda n: asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await p(flaky.acall)()
    assert flaky.calls == 1


# -- logging and counters ----------------------------------------------------------


def test_every_retry_is_logged_at_warning(
    clock: FakeClock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    def save_row() -> int:
        return flaky()

    flaky = Flaky(2)
    p = policy(clock, sleeps, attempts=3, initial=0.25)
    with caplog.at_level(logging.WARNING, logger="botscale.retry"):
        p(save_row)()
    records = [r for r in caplog.records if r.name == "botscale.retry"]
    assert len(records) == 2
    assert all(r.levelno == logging.WARNING for r in records)
    first = records[0].getMessage()
    assert "save_row" in first
    assert "0.250 s" in first
    assert "attempt 1/3" in first
    assert "ConnectionError('down 1')" in first
    assert "attempt 2/3" in records[1].getMessage()


def test_giving_up_is_logged(
    clock: FakeClock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    p = policy(clock, sleeps, attempts=2, name="db.save")
    with caplog.at_level(logging.WARNING, logger="botscale.retry"), pytest.raises(OSError):
        p(Flaky(5))()
    assert "giving up on db.save after 2 attempts" in caplog.records[-1].getMessage()


def test_counters_add_up_and_feed_the_process_totals(clock: FakeClock, sleeps: Sleeps) -> None:
    before = retry_stats()
    p = policy(clock, sleeps, attempts=3, timeout=100.0, retry_after=extract, on=Exception)
    fn = p(lambda f: f())
    fn(Flaky(0))  # no failure: not counted
    fn(Flaky(1))  # recovered
    with pytest.raises(ConnectionError):
        fn(Flaky(5))  # exhausted
    with pytest.raises(TooManyRequests):
        fn(Flaky(5, lambda n: TooManyRequests(500.0)))  # over budget
    with pytest.raises(KeyboardInterrupt):
        fn(Flaky(5, lambda n: ConnectionError() if n == 1 else KeyboardInterrupt()))  # aborted
    s = p.stats
    assert (s.retried_calls, s.recovered, s.exhausted, s.over_budget, s.aborted) == (4, 1, 1, 1, 1)
    assert s.retried_calls == s.recovered + s.exhausted + s.over_budget + s.aborted
    assert s.retries == 1 + 2 + 0 + 1
    after = retry_stats()
    assert after.retries - before.retries >= s.retries  # other code may retry meanwhile
    assert after.retried_calls - before.retried_calls >= s.retried_calls
    snapshot = s.copy()
    fn(Flaky(1))
    assert snapshot.recovered == 1
    assert p.stats.recovered == 2


# -- testing switch ----------------------------------------------------------------


def test_testing_switch_skips_waits_but_keeps_decisions(
    clock: FakeClock, sleeps: Sleeps, caplog: pytest.LogCaptureFixture
) -> None:
    p = policy(clock, sleeps, attempts=4, initial=60.0)
    flaky = Flaky(3)
    with retry_testing(), caplog.at_level(logging.WARNING, logger="botscale.retry"):
        assert p(flaky)() == 7
    assert flaky.calls == 4
    assert sleeps.waits == []
    assert p.stats.retries == 3
    assert "wait skipped" in caplog.records[0].getMessage()
    # restored on exit
    p(Flaky(1))()
    assert sleeps.waits == [60.0]


def test_testing_switch_with_the_real_sleep_is_instant() -> None:
    fn = retry(on=ConnectionError, attempts=3, initial=3600.0, max_wait=3600.0)(Flaky(2))
    with retry_testing():
        assert fn() == 7


def test_testing_switch_caps_attempts(clock: FakeClock, sleeps: Sleeps) -> None:
    flaky = Flaky(100)
    with retry_testing(attempts=2), pytest.raises(ConnectionError):
        policy(clock, sleeps, attempts=5)(flaky)()
    assert flaky.calls == 2
    unbounded = Flaky(100)
    with retry_testing(attempts=1), pytest.raises(ConnectionError):
        policy(clock, sleeps, attempts=None, timeout=5.0)(unbounded)()
    assert unbounded.calls == 1


def test_testing_switch_as_plain_calls(clock: FakeClock, sleeps: Sleeps) -> None:
    retry_testing(True)
    try:
        policy(clock, sleeps, initial=1.0)(Flaky(1))()
        assert sleeps.waits == []
    finally:
        retry_testing(False)
    policy(clock, sleeps, initial=1.0)(Flaky(1))()
    assert sleeps.waits == [1.0]


async def test_testing_switch_async(clock: FakeClock, sleeps: Sleeps) -> None:
    with retry_testing():
        assert await policy(clock, sleeps, initial=5.0)(Flaky(2).acall)() == 7
    assert sleeps.waits == []


# -- forms and signatures ------------------------------------------------------------


def test_signature_name_and_doc_are_preserved() -> None:
    def send(chat_id: int, text: str, *, silent: bool = False) -> str:
        """Send a message."""
        return text

    async def asend(chat_id: int, text: str) -> str:
        """Send asynchronously."""
        return text

    p = retry(on=OSError)
    wrapped, awrapped = p(send), p(asend)
    assert inspect.signature(wrapped) == inspect.signature(send)
    assert wrapped.__name__ == "send"
    assert wrapped.__doc__ == "Send a message."
    assert wrapped.__wrapped__ is send  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(awrapped)
    assert not inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(awrapped) == inspect.signature(asend)


async def test_methods_bind(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps)

    class Repo:
        def __init__(self) -> None:
            self.flaky = Flaky(1)

        @p
        def save(self, value: int) -> int:
            return self.flaky(value)

        @p
        async def asave(self, value: int) -> int:
            return await self.flaky.acall(value)

    repo = Repo()
    assert repo.save(3) == 3
    repo.flaky = Flaky(1)
    assert await repo.asave(4) == 4


async def test_async_callable_objects_and_partials_are_retried(
    clock: FakeClock, sleeps: Sleeps
) -> None:
    class Client:
        def __init__(self) -> None:
            self.flaky = Flaky(2)

        async def __call__(self, value: int) -> int:
            return await self.flaky.acall(value)

    client = Client()
    p = policy(clock, sleeps, attempts=3)
    wrapped = p(client)
    assert inspect.iscoroutinefunction(wrapped)
    assert await wrapped(5) == 5
    assert client.flaky.calls == 3
    flaky = Flaky(1)
    assert await p(functools.partial(flaky.acall, 9))() == 9


async def test_call_and_acall_without_decorating(clock: FakeClock, sleeps: Sleeps) -> None:
    p = policy(clock, sleeps, attempts=3)
    assert p.call(Flaky(2), 11) == 11
    assert await p.acall(Flaky(2).acall, 12) == 12
    flaky = Flaky(100, lambda n: KeyError(n))
    with pytest.raises(KeyError):
        p.call(flaky)
    assert flaky.calls == 1
    assert p.stats.recovered == 2


# -- backoff maths ---------------------------------------------------------------------


@given(
    initial=st.floats(0.0, 10.0),
    multiplier=st.floats(1.0, 4.0),
    extra=st.floats(0.0, 100.0),
    jitter=st.floats(0.0, 1.0),
    attempt=st.integers(1, 60),
)
def test_backoff_stays_within_its_jitter_band(
    initial: float, multiplier: float, extra: float, jitter: float, attempt: int
) -> None:
    max_wait = initial + extra
    p = retry(on=OSError, initial=initial, max_wait=max_wait, multiplier=multiplier, jitter=jitter)
    base = min(max_wait, initial * multiplier ** (attempt - 1))
    wait = p.backoff(attempt)
    assert base * (1 - jitter) - 1e-9 <= wait <= base + 1e-9
    assert wait <= max_wait + 1e-9


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": -3}, "attempts"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"attempts": None}, "attempts and timeout"),
        ({"initial": -0.1}, "initial"),
        ({"max_wait": 0.01, "initial": 1.0}, "max_wait"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"jitter": 1.5}, "jitter"),
        ({"on": ()}, "on"),
    ],
)
def test_bad_values_raise_value_error_naming_the_argument(
    kwargs: dict[str, object], argument: str
) -> None:
    kwargs.setdefault("on", OSError)
    with pytest.raises(ValueError, match=argument) as info:
        retry(**kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigurationError)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"on": "OSError"}, "on"),
        ({"on": (OSError, 3)}, "on"),
        ({"on": OSError, "attempts": 2.5}, "attempts"),
        ({"on": OSError, "timeout": "30"}, "timeout"),
        ({"on": OSError, "retry_after": 3.0}, "retry_after"),
    ],
)
def test_bad_types_raise_type_error_naming_the_argument(
    kwargs: dict[str, object], argument: str
) -> None:
    with pytest.raises(TypeError, match=argument):
        retry(**kwargs)  # type: ignore[arg-type]


def test_on_is_required() -> None:
    with pytest.raises(TypeError, match="on"):
        retry()  # type: ignore[call-arg]


def test_retry_testing_rejects_bad_attempts() -> None:
    with pytest.raises(ValueError, match="attempts"):
        retry_testing(attempts=0)


def test_decorating_a_non_callable_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="callable"):
        retry(on=OSError)(42)  # type: ignore[arg-type]


def test_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    page = Path(__file__).resolve().parents[1] / "docs" / "retry.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 6
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "saved 'B' for 42" in out
    assert "sent" in out
    assert "recovered=1" in out
