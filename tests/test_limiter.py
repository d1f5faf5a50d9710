"""RateLimiter and rate_limited: the backend contract over memory, the API, bad input."""

from __future__ import annotations

import inspect
import threading
import time
from typing import Any

import pytest

from botscale import (
    ConfigurationError,
    Decision,
    Rate,
    RateLimiter,
    RateLimiterStats,
    RateLimitExceeded,
    rate_limited,
)
from botscale.backends import MemoryBackend
from botscale.backends.memory import MemoryBackendStats
from botscale.testing import FakeClock
from contracts.rate_limit import SLOW, LimiterFactory, RateLimitBackendContract

SLOW_RATE = Rate(1, SLOW)


class ProtocolOnly:
    """A MemoryBackend seen only through the RateLimitBackend Protocol, as a custom backend is."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()

    def acquire(self, key: str, *, now: float, interval: float, burst: int, cost: int) -> Decision:
        return self.inner.acquire(key, now=now, interval=interval, burst=burst, cost=cost)

    def reset(self, key: str) -> None:
        self.inner.reset(key)


class TestMemoryBackend(RateLimitBackendContract):
    """The default: the memory backend's single-frame bound path."""

    drives_time = True

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> RateLimiter:
            return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)

        return make


class TestMemoryBackendThroughTheProtocol(RateLimitBackendContract):
    """The same backend through the generic Protocol path every other backend takes."""

    drives_time = True

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> RateLimiter:
            return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep, backend=ProtocolOnly())

        return make


class _Undeclared(RateLimitBackendContract):
    pass


class _OwnClock(RateLimitBackendContract):
    drives_time = False


def test_the_contract_demands_drives_time_and_skips_time_tests_without_it() -> None:
    with pytest.raises(pytest.fail.Exception, match="must declare drives_time"):
        _Undeclared().check_declared()
    with pytest.raises(pytest.skip.Exception, match="drives_time = False"):
        _OwnClock().needs_time()
    TestMemoryBackend().needs_time()  # declared True: runs


@pytest.fixture(params=["bound", "protocol"])
def make(request: pytest.FixtureRequest, clock: FakeClock) -> Any:
    """A RateLimiter factory over both paths (bound memory, generic Protocol)."""

    def build(rate: Rate | str = SLOW_RATE, burst: int | None = None, **kw: Any) -> RateLimiter:
        kw.setdefault("clock", clock)
        kw.setdefault("sleep", clock.sleep)
        if request.param == "protocol":
            kw.setdefault("backend", ProtocolOnly())
        return RateLimiter(rate, burst, **kw)

    return build


# -- construction ----------------------------------------------------------------------


def test_burst_defaults_to_the_rate_limit_and_rate_may_be_text(clock: FakeClock) -> None:
    assert RateLimiter(Rate(30, 60.0)).burst == 30
    lim = RateLimiter("5/minute", clock=clock)
    assert (lim.rate, lim.burst) == (Rate(5, 60.0), 5)
    assert RateLimiter(Rate(2.5, 1.0)).burst == 2  # whole tokens only
    assert RateLimiter(Rate(0.5, 1.0)).burst == 1  # at least one


def test_the_default_backend_is_a_private_memory_backend_with_max_keys() -> None:
    a, b = RateLimiter(Rate(1, 1.0)), RateLimiter(Rate(1, 1.0), max_keys=7)
    assert isinstance(a.backend, MemoryBackend)
    assert a.backend is not b.backend
    assert isinstance(b.backend, MemoryBackend)
    assert b.backend.max_keys == 7
    assert "RateLimiter('1/1s', burst=1" in repr(a)


def test_limiters_may_share_a_memory_backend_with_distinct_keys(clock: FakeClock) -> None:
    backend = MemoryBackend()
    messages = RateLimiter(Rate(1, SLOW), 1, clock=clock, backend=backend)
    commands = RateLimiter(Rate(1, SLOW), 2, clock=clock, backend=backend)
    assert messages.try_acquire("msg:42")
    assert not messages.try_acquire("msg:42")
    assert commands.try_acquire("cmd:42")
    assert commands.try_acquire("cmd:42")
    assert backend.stats().keys == 2


# -- bad input: every argument, at the boundary -----------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rate": Rate(1, 1.0), "burst": 0}, ConfigurationError, "burst must be an int >= 1"),
        ({"rate": Rate(1, 1.0), "burst": -3}, ConfigurationError, "burst"),
        ({"rate": Rate(1, 1.0), "burst": 1.5}, TypeError, "burst must be an int"),
        ({"rate": Rate(1, 1.0), "burst": "5"}, TypeError, "burst"),
        ({"rate": Rate(1, 1.0), "burst": True}, TypeError, "burst"),
        ({"rate": 30}, TypeError, "rate must be a Rate"),
        ({"rate": None}, TypeError, "rate must be a Rate"),
        ({"rate": "thirty a minute"}, ConfigurationError, "rate must look like"),
        ({"rate": Rate(1, 1.0), "clock": 1000.0}, TypeError, "clock must be"),
        ({"rate": Rate(1, 1.0), "sleep": None}, TypeError, "sleep must be"),
        ({"rate": Rate(1, 1.0), "backend": object()}, TypeError, "backend must implement"),
        ({"rate": Rate(1, 1.0), "max_keys": 0}, ConfigurationError, "max_keys must be an int >= 1"),
        ({"rate": Rate(1, 1.0), "max_keys": "many"}, TypeError, "max_keys"),
        (
            {"rate": Rate(1, 1.0), "max_keys": 10, "backend": MemoryBackend()},
            ConfigurationError,
            "max_keys applies to the default memory backend",
        ),
    ],
)
def test_bad_constructor_arguments_fail_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RateLimiter(**kwargs)


@pytest.mark.parametrize(
    ("limit", "period", "match"),
    [
        (0, 1.0, "limit"),
        (-1, 1.0, "limit"),
        (1, 0.0, "period"),
        (1, -5.0, "period"),
        (float("nan"), 1.0, "limit"),
        (1, float("inf"), "period"),
    ],
)
def test_a_rate_or_period_not_above_zero_is_refused(
    limit: float, period: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        RateLimiter(Rate(limit, period))


def test_an_async_backend_is_refused_by_the_sync_limiter() -> None:
    class AsyncOnly:
        async def acquire(
            self, key: str, *, now: float, interval: float, burst: int, cost: int
        ) -> Decision:
            raise AssertionError

        async def reset(self, key: str) -> None:
            raise AssertionError

    with pytest.raises(TypeError, match="use AsyncRateLimiter"):
        RateLimiter(Rate(1, 1.0), backend=AsyncOnly())  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [None, 1.5, b"user", True, (1,), ["a"], object()])
def test_keys_other_than_str_or_int_are_a_type_error(make: Any, key: Any) -> None:
    lim = make()
    for method in (lim.try_acquire, lim.acquire, lim.reset):
        with pytest.raises(TypeError, match="key must be str or int"):
            method(key)
    assert lim.stats().allowed == lim.stats().denied == 0


@pytest.mark.parametrize(
    ("cost", "error", "match"),
    [
        (0, ConfigurationError, "cost must be an int >= 1"),
        (-2, ConfigurationError, "cost must be an int >= 1"),
        (4, ConfigurationError, r"cost must be an int in 1\.\.3 \(the burst\)"),
        (1.0, TypeError, "cost must be an int"),
        (True, TypeError, "cost must be an int"),
        ("1", TypeError, "cost must be an int"),
        (None, TypeError, "cost must be an int"),
    ],
)
def test_bad_cost_fails_naming_the_argument(
    make: Any, cost: Any, error: type[Exception], match: str
) -> None:
    lim = make(burst=3)
    with pytest.raises(error, match=match):
        lim.try_acquire("k", cost)
    with pytest.raises(error, match=match):
        lim.acquire("k", cost)
    assert lim.try_acquire("k", 3) == Decision(True, 0, 0.0)  # nothing was taken


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1.0, ValueError), (float("nan"), ValueError), (float("-inf"), ValueError), ("1", TypeError)],
)
def test_bad_timeout_fails_naming_the_argument(
    make: Any, timeout: Any, error: type[Exception]
) -> None:
    lim = make()
    with pytest.raises(error, match="timeout"):
        lim.acquire("k", timeout=timeout)


def test_cost_above_burst_is_a_value_error_even_for_a_full_bucket(make: Any) -> None:
    with pytest.raises(ValueError, match="burst"):
        make(burst=2).try_acquire("fresh", 3)


# -- keys ------------------------------------------------------------------------------


def test_int_subclasses_and_str_subclasses_key_by_value(make: Any) -> None:
    import enum

    class Chat(enum.IntEnum):
        MAIN = 42

    class Tag(str):
        pass

    lim = make(burst=3)
    assert lim.try_acquire(Chat.MAIN)
    assert lim.try_acquire(42)
    assert lim.try_acquire(Tag("42")) == Decision(True, 0, 0.0)


def test_a_negative_or_huge_int_is_a_key(make: Any) -> None:
    lim = make(burst=1)
    for key in (-1001234567890, 2**80, 0):
        assert lim.try_acquire(key)
        assert not lim.try_acquire(str(key))


# -- acquire ---------------------------------------------------------------------------


def test_acquire_sleeps_exactly_retry_after(clock: FakeClock) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    lim = RateLimiter(Rate(1, 4.0), 2, clock=clock, sleep=sleep)
    lim.try_acquire("k", 2)
    assert lim.acquire("k", 2, timeout=8.0) == Decision(True, 0, 0.0)
    assert slept == [8.0]


def test_a_timeout_equal_to_the_wait_is_enough_and_zero_means_try_once(
    make: Any, clock: FakeClock
) -> None:
    lim = make(Rate(1, 5.0), 1)
    lim.try_acquire("k")
    with pytest.raises(RateLimitExceeded):
        lim.acquire("k", timeout=0)
    start = clock()
    assert lim.acquire("k", timeout=5.0)
    assert clock() - start == pytest.approx(5.0)
    assert lim.acquire("other", timeout=0)  # a full bucket needs no wait


def test_acquire_timeout_counts_time_already_waited(clock: FakeClock) -> None:
    """Two callers race for one key: the loser's second wait must fit the remaining time."""
    stolen = [False]
    lim: RateLimiter

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if not stolen[0]:  # another caller takes the token while we sleep
            stolen[0] = True
            lim.try_acquire("k")

    lim = RateLimiter(Rate(1, 10.0), 1, clock=clock, sleep=sleep)
    lim.try_acquire("k")
    start = clock()
    with pytest.raises(RateLimitExceeded) as info:
        lim.acquire("k", timeout=15.0)
    assert clock() - start == pytest.approx(10.0)  # slept once, refused the second wait at once
    assert info.value.retry_after == pytest.approx(10.0)
    assert lim.stats().waits == 1
    assert lim.stats().timeouts == 1


def test_acquire_without_timeout_waits_as_long_as_needed(make: Any, clock: FakeClock) -> None:
    lim = make(Rate(1, 3600.0), 1)
    lim.try_acquire("k")
    start = clock()
    assert lim.acquire("k")
    assert clock() - start == pytest.approx(3600.0)


def test_a_backend_denying_without_retry_after_is_polled_not_spun(clock: FakeClock) -> None:
    answers = iter([Decision(False, 0, 0.0), Decision(False, 0, 0.0), Decision(True, 0, 0.0)])

    class Flaky:
        def acquire(
            self, key: str, *, now: float, interval: float, burst: int, cost: int
        ) -> Decision:
            return next(answers)

        def reset(self, key: str) -> None:
            pass

    slept: list[float] = []
    lim = RateLimiter(Rate(1, 1.0), clock=clock, backend=Flaky(), sleep=slept.append)
    assert lim.acquire("k")
    assert slept == [0.001, 0.001]


# -- stats -----------------------------------------------------------------------------


def test_stats_count_every_decision_wait_and_timeout(make: Any) -> None:
    lim = make(Rate(1, 10.0), 2)
    lim.try_acquire("a")
    lim.try_acquire("a")
    lim.try_acquire("a")
    lim.acquire("a")  # one wait, then granted
    with pytest.raises(RateLimitExceeded):
        lim.acquire("a", timeout=1.0)
    stats = lim.stats()
    assert isinstance(stats, RateLimiterStats)
    assert (stats.allowed, stats.denied, stats.waits, stats.timeouts) == (3, 3, 1, 1)


def test_stats_include_the_memory_backends_own(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, 1.0), clock=clock, max_keys=50)
    lim.try_acquire("a")
    assert lim.stats().backend == MemoryBackendStats(keys=1, max_keys=50, expired=0, evicted=0)
    assert RateLimiter(Rate(1, 1.0), backend=ProtocolOnly()).stats().backend is None


def test_limiters_on_one_backend_count_their_own_decisions(clock: FakeClock) -> None:
    backend = MemoryBackend()
    a = RateLimiter(Rate(1, SLOW), 1, clock=clock, backend=backend)
    b = RateLimiter(Rate(1, SLOW), 1, clock=clock, backend=backend)
    a.try_acquire("a")
    a.try_acquire("a")
    b.try_acquire("b")
    assert (a.stats().allowed, a.stats().denied) == (1, 1)
    assert (b.stats().allowed, b.stats().denied) == (1, 0)


def test_decisions_unpack_and_test_as_bool(make: Any) -> None:
    allowed, remaining, retry_after = make(burst=2).try_acquire("k")
    assert (allowed, remaining, retry_after) == (True, 1, 0.0)
    assert bool(Decision(False, 0, 1.0)) is False


def test_threads_with_a_real_clock_never_exceed_burst_plus_refill() -> None:
    """16 threads, real time, a fast rate: grants stay within burst + elapsed * rate."""
    lim = RateLimiter(Rate(1000, 1.0), 50)
    grants = [0] * 16
    start = time.monotonic()

    def worker(i: int) -> None:
        for _ in range(300):
            grants[i] += bool(lim.try_acquire("hot"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - start
    assert 50 <= sum(grants) <= 50 + elapsed * 1000 + 1


# -- the decorator ---------------------------------------------------------------------


def test_rate_limited_raises_when_the_bucket_is_empty(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, 10.0), 2, clock=clock)

    @rate_limited(lim, key=lambda user_id, text: user_id)
    def reply(user_id: int, text: str) -> str:
        return f"{user_id}: {text}"

    assert reply(1, "a") == "1: a"
    assert reply(1, text="b") == "1: b"
    assert reply(2, "c") == "2: c"  # another user, another bucket
    with pytest.raises(RateLimitExceeded) as info:
        reply(1, "d")
    assert info.value.key == 1
    assert info.value.retry_after == pytest.approx(10.0)
    clock.advance(10.0)
    assert reply(1, "e") == "1: e"


def test_rate_limited_can_wait_instead_within_a_timeout(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, 10.0), 1, clock=clock, sleep=clock.sleep)
    calls: list[int] = []

    @rate_limited(lim, key="api", wait=True, timeout=10.0)
    def fetch(n: int) -> int:
        calls.append(n)
        return n

    start = clock()
    assert [fetch(1), fetch(2)] == [1, 2]
    assert clock() - start == pytest.approx(10.0)

    @rate_limited(lim, key="api", wait=True, timeout=5.0)
    def impatient() -> None:
        raise AssertionError("must not run")

    with pytest.raises(RateLimitExceeded):
        impatient()
    assert calls == [1, 2]


def test_rate_limited_defaults_to_one_bucket_per_function(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, SLOW), 1, clock=clock)

    @rate_limited(lim)
    def a() -> str:
        return "a"

    @rate_limited(lim)
    def b() -> str:
        return "b"

    assert (a(), b()) == ("a", "b")
    with pytest.raises(RateLimitExceeded) as info:
        a()
    assert str(info.value.key).endswith(
        "test_rate_limited_defaults_to_one_bucket_per_function.<locals>.a"
    )


def test_rate_limited_keeps_the_signature_and_cost(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, SLOW), 5, clock=clock)

    @rate_limited(lim, key=7, cost=2)
    def send(chat_id: int, text: str, *, silent: bool = False) -> str:
        """Send a message."""
        return text

    assert send.__name__ == "send"
    assert send.__doc__ == "Send a message."
    assert (
        str(inspect.signature(send))
        == "(chat_id: 'int', text: 'str', *, silent: 'bool' = False) -> 'str'"
    )
    send(1, "x")
    send(1, "y")
    with pytest.raises(RateLimitExceeded):
        send(1, "z")  # 2 + 2 + 2 > 5
    assert lim.try_acquire(7) == Decision(True, 0, 0.0)


def test_rate_limited_checks_the_key_the_callable_returns(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, 1.0), clock=clock)

    @rate_limited(lim, key=lambda payload: payload)
    def handle(payload: Any) -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="key must be str or int"):
        handle(1.5)


def test_rate_limited_refuses_bad_arguments_at_decoration() -> None:
    lim = RateLimiter(Rate(1, 1.0), 2)
    with pytest.raises(TypeError, match="limiter must be a RateLimiter"):
        rate_limited(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key must be str or int"):
        rate_limited(lim, key=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"cost must be an int in 1\.\.2"):
        rate_limited(lim, cost=3)
    with pytest.raises(ConfigurationError, match="cost must be an int >= 1"):
        rate_limited(lim, cost=0)
    with pytest.raises(ValueError, match="timeout"):
        rate_limited(lim, wait=True, timeout=-1.0)
    with pytest.raises(ConfigurationError, match="timeout applies only with wait=True"):
        rate_limited(lim, timeout=1.0)


async def test_a_sync_limiter_guards_an_async_function_without_waiting(clock: FakeClock) -> None:
    lim = RateLimiter(Rate(1, SLOW), 1, clock=clock)

    @rate_limited(lim, key=lambda user_id: user_id)
    async def handler(user_id: int) -> int:
        return user_id

    assert inspect.iscoroutinefunction(handler)
    assert await handler(5) == 5
    with pytest.raises(RateLimitExceeded):
        await handler(5)

    async def other() -> None: ...

    with pytest.raises(TypeError, match="needs an AsyncRateLimiter"):
        rate_limited(lim, wait=True)(other)
