"""The RateLimitBackend / AsyncRateLimitBackend contract: one suite over every backend.

A backend is tested through the limiter that uses it, since that is how bots
meet it.  Subclass :class:`RateLimitBackendContract` in a ``test_*.py`` module,
declare ``drives_time`` and override the ``make_limiter`` fixture::

    class TestRedisBackend(RateLimitBackendContract):
        drives_time = False          # the backend decides on Redis server time

        @pytest.fixture
        def make_limiter(self, clock: FakeClock, client: redis.Redis) -> LimiterFactory:
            def make(rate: Rate, burst: int | None = None) -> RateLimiter:
                backend = RedisBackend(client, prefix=fresh_prefix())
                return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep, backend=backend)
            return make

``make(rate, burst=None)`` returns a limiter with fresh, empty state on every
call (hypothesis calls it once per example): a :class:`~botscale.RateLimiter`
built with ``clock=clock, sleep=clock.sleep``, or an
:class:`~botscale.AsyncRateLimiter` built with ``clock=clock,
sleep=clock.asleep``.  The tests are written once, as coroutines, over both
shapes (:func:`call` awaits a result only if it is awaitable).

``drives_time`` has no default: every subclass must say whether the backend
decides with the ``now`` the limiter passes (``True``: the ``clock`` fixture,
a :class:`~botscale.testing.FakeClock`, then drives it) or with a clock of its
own (``False``, e.g. Redis server time).  With ``False`` every test that must
move time is *skipped with the reason* (visible in ``pytest -ra``), never
passed silently; the other tests use rates of one token per hour, so the real
time they take cannot change a decision.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botscale import AsyncRateLimiter, Decision, Rate, RateLimitExceeded
from botscale.testing import FakeClock

__all__ = [
    "LimiterFactory",
    "Op",
    "RateLimitBackendContract",
    "ReferenceBucket",
    "call",
    "ops",
    "rates",
]

LimiterFactory = Callable[..., Any]
"""``make(rate, burst=None) -> RateLimiter | AsyncRateLimiter`` with fresh state."""

T = TypeVar("T")

SLOW = 3600.0
"""Seconds per token of the tests that must not depend on time: one per hour."""

TOLERANCE = 1e-6
"""Token / second slack of the reference comparisons (float rounding)."""

REAL_TIME = 5.0
"""Seconds a test without time control may take: a backend on its own clock refills meanwhile."""

fixture_settings = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)
"""Hypothesis settings of the contract.  The factory fixture hands out fresh
state per call, so function-scoped fixtures are safe across examples; every
subclass runs the same test function (an "executor" each), and an example
one backend saved as failing is a fair example for every other backend."""


async def call(result: T | Any) -> Any:
    """The value of a limiter call, awaited if the limiter is async."""
    if inspect.isawaitable(result):
        return await result
    return result


@st.composite
def rates(draw: st.DrawFn) -> tuple[Rate, int]:
    """A ``(rate, burst)``: 1-50 tokens per 0.5-120 s, burst 1-20."""
    limit = draw(st.integers(1, 50))
    period = draw(st.sampled_from([0.5, 1.0, 3.0, 7.5, 60.0, 120.0]) | st.floats(0.5, 120.0))
    burst = draw(st.integers(1, 20))
    return Rate(limit, period), burst


@dataclass(frozen=True)
class Op:
    """One step of a generated history: wait ``advance`` s, then ask ``key`` for ``cost``."""

    advance: float
    key: str
    cost: int


@st.composite
def ops(draw: st.DrawFn, rate: Rate, burst: int, keys: int = 3, max_size: int = 40) -> list[Op]:
    """A history of requests with time steps that often land exactly on token boundaries."""
    interval = rate.interval
    step = (
        st.just(0.0)
        | st.integers(1, 3 * burst).map(lambda n: n * interval / 2)
        | st.floats(0.0, 2 * burst * interval, allow_nan=False)
    )
    op = st.builds(
        Op,
        advance=step,
        key=st.sampled_from([f"k{i}" for i in range(keys)]),
        cost=st.integers(1, burst),
    )
    return draw(st.lists(op, min_size=1, max_size=max_size))


@dataclass
class ReferenceBucket:
    """The textbook token bucket, kept in tokens: what the limiter must agree with."""

    rate: Rate
    burst: int
    tokens: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def held(self, key: str, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now``."""
        tokens = self.tokens.get(key, float(self.burst))
        elapsed = now - self.last.get(key, now)
        return min(float(self.burst), tokens + elapsed * self.rate.per_second)

    def record(self, key: str, now: float, cost: int, allowed: bool) -> None:
        """Account for a decision (the limiter's, where the model is within rounding)."""
        self.tokens[key] = self.held(key, now) - (cost if allowed else 0)
        self.last[key] = now


def _near_integer(x: float) -> bool:
    return abs(x - round(x)) < TOLERANCE


class RateLimitBackendContract:
    """Every rate-limit backend, through the limiter: GCRA semantics as API.md defines them."""

    drives_time: ClassVar[bool]
    """Required: ``True`` if the backend decides with the limiter's ``now`` (see module doc)."""

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        raise NotImplementedError("a contract subclass provides the make_limiter fixture")

    def check_declared(self) -> None:
        """Fail unless the subclass says whether its backend follows the limiter's clock."""
        if not isinstance(getattr(type(self), "drives_time", None), bool):
            pytest.fail(
                f"{type(self).__name__} must declare drives_time = True or False "
                "(does its backend decide with the limiter's clock?)",
                pytrace=False,
            )

    def needs_time(self) -> None:
        """Skip, with the reason, a test that must move the backend's time."""
        self.check_declared()
        if not self.drives_time:
            pytest.skip(
                f"{type(self).__name__}: the backend reads its own clock (drives_time = False), "
                "so this test cannot move its time"
            )

    @pytest.fixture(autouse=True)
    def _declared(self) -> None:
        self.check_declared()

    @pytest.fixture
    def time_driven(self) -> None:
        self.needs_time()

    # -- no time needed (rates of one token per hour) ---------------------------------

    @fixture_settings
    @given(burst=st.integers(1, 20))
    async def test_a_fresh_key_gets_exactly_burst_then_is_denied(
        self, make_limiter: LimiterFactory, burst: int
    ) -> None:
        lim = make_limiter(Rate(1, SLOW), burst)
        for left in reversed(range(burst)):
            assert await call(lim.try_acquire("user:1")) == Decision(True, left, 0.0)
        denied = await call(lim.try_acquire("user:1"))
        assert not denied
        assert denied.remaining == 0
        assert 0.0 < denied.retry_after <= SLOW + TOLERANCE

    async def test_cost_takes_that_many_tokens_and_a_denial_takes_none(
        self, make_limiter: LimiterFactory
    ) -> None:
        lim = make_limiter(Rate(1, SLOW), 10)
        assert (await call(lim.try_acquire("k", 3))).remaining == 7
        assert (await call(lim.try_acquire("k", 3))).remaining == 4
        assert (await call(lim.try_acquire("k", 3))).remaining == 1
        denied = await call(lim.try_acquire("k", 3))
        assert (denied.allowed, denied.remaining) == (False, 1)
        assert 2 * SLOW - REAL_TIME <= denied.retry_after <= 2 * SLOW + TOLERANCE
        assert await call(lim.try_acquire("k", 1)) == Decision(True, 0, 0.0)
        assert not await call(lim.try_acquire("k", 1))

    async def test_cost_may_equal_burst(self, make_limiter: LimiterFactory) -> None:
        lim = make_limiter(Rate(1, SLOW), 4)
        assert await call(lim.try_acquire("k", 4)) == Decision(True, 0, 0.0)
        assert not await call(lim.try_acquire("k", 1))

    @pytest.mark.parametrize(
        ("cost", "error"), [(0, ValueError), (5, ValueError), (1.0, TypeError)]
    )
    async def test_bad_cost_is_refused_before_the_backend(
        self, make_limiter: LimiterFactory, cost: Any, error: type[Exception]
    ) -> None:
        lim = make_limiter(Rate(1, SLOW), 4)
        with pytest.raises(error, match="cost"):
            await call(lim.try_acquire("k", cost))
        assert await call(lim.try_acquire("k", 4)) == Decision(True, 0, 0.0)

    @fixture_settings
    @given(data=st.data())
    async def test_one_keys_traffic_never_changes_anothers_decisions(
        self, make_limiter: LimiterFactory, data: st.DataObject
    ) -> None:
        burst = data.draw(st.integers(1, 8), label="burst")
        requests = data.draw(
            st.lists(
                st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, burst)), max_size=30
            ),
            label="requests",
        )
        together = make_limiter(Rate(1, SLOW), burst)
        alone = {key: make_limiter(Rate(1, SLOW), burst) for key in "abc"}
        for key, cost in requests:
            got = await call(together.try_acquire(key, cost))
            want = await call(alone[key].try_acquire(key, cost))
            assert (got.allowed, got.remaining) == (want.allowed, want.remaining), (key, cost)

    async def test_an_int_key_and_its_decimal_string_share_a_bucket(
        self, make_limiter: LimiterFactory
    ) -> None:
        lim = make_limiter(Rate(1, SLOW), 2)
        assert await call(lim.try_acquire(42))
        assert await call(lim.try_acquire("42"))
        assert not await call(lim.try_acquire(42))
        assert await call(lim.try_acquire("042"))  # a different string is a different key

    @pytest.mark.parametrize("key", ["", "ünïcödé:✓", "a" * 300, "spaces and {braces}:*"])
    async def test_any_string_is_a_key(self, make_limiter: LimiterFactory, key: str) -> None:
        lim = make_limiter(Rate(1, SLOW), 1)
        assert await call(lim.try_acquire(key))
        assert not await call(lim.try_acquire(key))
        assert await call(lim.try_acquire(key + "x"))

    async def test_reset_gives_the_full_burst_back(self, make_limiter: LimiterFactory) -> None:
        lim = make_limiter(Rate(1, SLOW), 3)
        for _ in range(3):
            assert await call(lim.try_acquire(7))
        assert not await call(lim.try_acquire(7))
        await call(lim.reset(7))
        assert await call(lim.try_acquire("7")) == Decision(True, 2, 0.0)
        await call(lim.reset("never seen"))  # a no-op, not an error

    async def test_acquire_raises_before_sleeping_when_the_wait_exceeds_timeout(
        self, make_limiter: LimiterFactory
    ) -> None:
        lim = make_limiter(Rate(1, SLOW), 1)
        assert await call(lim.try_acquire("k"))
        with pytest.raises(RateLimitExceeded) as info:
            await call(lim.acquire("k", timeout=SLOW / 2))
        assert info.value.key == "k"
        assert SLOW / 2 < info.value.retry_after <= SLOW + TOLERANCE
        stats = lim.stats()
        assert (stats.waits, stats.timeouts) == (0, 1)

    async def test_concurrent_callers_get_exactly_burst(self, make_limiter: LimiterFactory) -> None:
        """16 threads (sync) or 16 tasks (async) hammer one key: exactly ``burst`` grants."""
        burst, callers, attempts = 2000, 16, 500
        lim = make_limiter(Rate(1, SLOW), burst)
        grants: list[int] = []
        if isinstance(lim, AsyncRateLimiter):

            async def task() -> int:
                n = 0
                for _ in range(attempts):
                    n += bool(await lim.try_acquire("hot"))
                    await asyncio.sleep(0)
                return n

            grants = list(await asyncio.gather(*(task() for _ in range(callers))))
        else:
            start = threading.Barrier(callers)
            lock = threading.Lock()

            def worker() -> None:
                start.wait()
                n = sum(bool(lim.try_acquire("hot")) for _ in range(attempts))
                with lock:
                    grants.append(n)

            threads = [threading.Thread(target=worker) for _ in range(callers)]
            interval = sys.getswitchinterval()
            sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show
            try:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=30)
            finally:
                sys.setswitchinterval(interval)
            assert len(grants) == callers, "a worker did not finish"
        assert sum(grants) == burst
        stats = lim.stats()
        assert (stats.allowed, stats.denied) == (burst, callers * attempts - burst)

    # -- time driven (skipped with the reason when drives_time is False) --------------

    @pytest.mark.usefixtures("time_driven")
    async def test_tokens_come_back_at_the_rate(
        self, make_limiter: LimiterFactory, clock: FakeClock
    ) -> None:
        lim = make_limiter(Rate(2, 1.0), 2)  # 0.5 s per token
        assert await call(lim.try_acquire("k"))
        assert await call(lim.try_acquire("k"))
        assert await call(lim.try_acquire("k")) == Decision(False, 0, 0.5)
        clock.advance(0.25)
        assert await call(lim.try_acquire("k")) == Decision(False, 0, 0.25)
        clock.advance(0.25)
        assert await call(lim.try_acquire("k")) == Decision(True, 0, 0.0)
        clock.advance(10.0)
        assert await call(lim.try_acquire("k")) == Decision(True, 1, 0.0)

    @pytest.mark.usefixtures("time_driven")
    async def test_acquire_waits_exactly_retry_after(
        self, make_limiter: LimiterFactory, clock: FakeClock
    ) -> None:
        lim = make_limiter(Rate(1, 10.0), 1)
        assert await call(lim.try_acquire("k"))
        start = clock()
        assert await call(lim.acquire("k", timeout=10.0)) == Decision(True, 0, 0.0)
        assert clock() - start == pytest.approx(10.0)
        assert lim.stats().waits == 1
        start = clock()
        assert await call(lim.acquire("k")) == Decision(True, 0, 0.0)
        assert clock() - start == pytest.approx(10.0)

    @pytest.mark.usefixtures("time_driven")
    @fixture_settings
    @given(data=st.data())
    async def test_retry_after_is_exact(
        self, make_limiter: LimiterFactory, clock: FakeClock, data: st.DataObject
    ) -> None:
        """Asking again after exactly ``retry_after`` succeeds; a little before does not."""
        rate, burst = data.draw(rates(), label="rate")
        lim = make_limiter(rate, burst)
        for op in data.draw(ops(rate, burst, keys=1), label="history"):
            clock.advance(op.advance)
            await call(lim.try_acquire(op.key, op.cost))
        cost = data.draw(st.integers(1, burst), label="cost")
        while (denied := await call(lim.try_acquire("k0", cost))).allowed:
            pass
        wait = denied.retry_after
        assert wait > 0
        early = min(TOLERANCE, wait / 2)
        if wait > 2 * TOLERANCE:
            clock.advance(wait - early)
            assert not await call(lim.try_acquire("k0", cost))
            clock.advance(early)
        else:
            clock.advance(wait)
        assert await call(lim.try_acquire("k0", cost))

    @pytest.mark.usefixtures("time_driven")
    @fixture_settings
    @given(data=st.data())
    async def test_an_idle_key_gets_its_full_burst_back(
        self, make_limiter: LimiterFactory, clock: FakeClock, data: st.DataObject
    ) -> None:
        rate, burst = data.draw(rates(), label="rate")
        lim = make_limiter(rate, burst)
        for op in data.draw(ops(rate, burst), label="history"):
            clock.advance(op.advance)
            await call(lim.try_acquire(op.key, op.cost))
        clock.advance(burst * rate.interval)
        for left in reversed(range(burst)):
            assert await call(lim.try_acquire("k0")) == Decision(True, left, 0.0)
        assert not await call(lim.try_acquire("k0"))

    @pytest.mark.usefixtures("time_driven")
    @fixture_settings
    @given(data=st.data())
    async def test_no_window_grants_more_than_burst_plus_refill(
        self, make_limiter: LimiterFactory, clock: FakeClock, data: st.DataObject
    ) -> None:
        """Over any window of length t a key is granted at most ``burst + t*limit/period``."""
        rate, burst = data.draw(rates(), label="rate")
        lim = make_limiter(rate, burst)
        grants: dict[str, list[tuple[float, int]]] = {}
        for op in data.draw(ops(rate, burst, max_size=60), label="history"):
            clock.advance(op.advance)
            if (await call(lim.try_acquire(op.key, op.cost))).allowed:
                grants.setdefault(op.key, []).append((clock(), op.cost))
        for times in grants.values():
            for i, (start, _) in enumerate(times):
                taken = 0
                for end, cost in times[i:]:
                    taken += cost
                    bound = burst + (end - start) * rate.per_second
                    assert taken <= bound + TOLERANCE, (start, end, taken, bound)

    @pytest.mark.usefixtures("time_driven")
    @fixture_settings
    @given(data=st.data())
    async def test_decisions_match_the_reference_token_bucket(
        self, make_limiter: LimiterFactory, clock: FakeClock, data: st.DataObject
    ) -> None:
        """Allowed, remaining and retry_after agree with a textbook token bucket.

        Where the model's numbers are within float rounding of a boundary the
        limiter's answer is adopted, so the two stay in step.
        """
        rate, burst = data.draw(rates(), label="rate")
        lim = make_limiter(rate, burst)
        model = ReferenceBucket(rate, burst)
        for op in data.draw(ops(rate, burst, max_size=60), label="history"):
            clock.advance(op.advance)
            held = model.held(op.key, clock())
            d = await call(lim.try_acquire(op.key, op.cost))
            if abs(held - op.cost) > TOLERANCE:
                assert d.allowed == (held >= op.cost), (held, op, d)
            left = held - op.cost if d.allowed else held
            if not _near_integer(left):
                assert d.remaining == max(0, math.floor(left)), (held, op, d)
            if d.allowed:
                assert d.retry_after == 0.0
            else:
                expected = (op.cost - held) * rate.interval
                assert d.retry_after == pytest.approx(expected, rel=1e-9, abs=TOLERANCE)
            model.record(op.key, clock(), op.cost, d.allowed)

    @pytest.mark.usefixtures("time_driven")
    @fixture_settings
    @given(data=st.data())
    async def test_other_keys_never_change_a_keys_decisions_over_time(
        self, make_limiter: LimiterFactory, clock: FakeClock, data: st.DataObject
    ) -> None:
        rate, burst = data.draw(rates(), label="rate")
        together = make_limiter(rate, burst)
        alone = {f"k{i}": make_limiter(rate, burst) for i in range(3)}
        for op in data.draw(ops(rate, burst), label="history"):
            clock.advance(op.advance)
            got = await call(together.try_acquire(op.key, op.cost))
            assert got == await call(alone[op.key].try_acquire(op.key, op.cost)), op
