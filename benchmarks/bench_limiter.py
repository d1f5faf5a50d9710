"""Rate-limit decision cost: botscale vs a hand-written dict bucket, limits and pyrate-limiter.

Every implementation limits 30 requests per minute per key (burst 30) and is
asked the same sequence of keys, in process memory, from one thread:

* many keys: 10 000 distinct keys ("user:0" ... "user:9999") in turn, each
  asked at most 20 times, so nearly every request is allowed (the path a bot
  under normal load takes);
* one hot key: the same key every time, so after 30 grants every request is
  denied (a user flooding the bot);
* a new key every time (200 000 distinct keys, as when a bot goes viral): every
  request inserts a key, and past botscale's default cap of 100 000 keys each
  insert also evicts one (the floor just grows).

The floor is the dict token bucket bot authors write by hand (two floats per
key, no lock, returns a bool).  botscale returns a ``Decision`` (allowed,
remaining, retry_after), is thread-safe and bounds its memory.  The runs of
all implementations are interleaved and each keeps its best, so a busy machine
slows them alike.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from _harness import Row, Section, Target, per_op
from botscale import Rate, RateLimiter
from botscale.backends import MemoryBackend

LIMIT, PERIOD = 30, 60.0
KEYS = [f"user:{i}" for i in range(10_000)]
HOT = "user:42"


class DictTokenBucket:
    """The floor: the minimal per-key token bucket people write by hand."""

    def __init__(self, limit: int, period: float) -> None:
        self.rate = limit / period
        self.burst = float(limit)
        self.buckets: dict[str, tuple[float, float]] = {}

    def try_acquire(self, key: str) -> bool:
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return True
        self.buckets[key] = (tokens, now)
        return False


class LockedDictTokenBucket(DictTokenBucket):
    """The floor made thread-safe with one lock (what botscale also pays for)."""

    def __init__(self, limit: int, period: float) -> None:
        super().__init__(limit, period)
        self.lock = threading.Lock()

    def try_acquire(self, key: str) -> bool:
        with self.lock:
            now = time.monotonic()
            tokens, last = self.buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self.buckets[key] = (tokens - 1, now)
                return True
            self.buckets[key] = (tokens, now)
            return False


class ProtocolOnly:
    """A MemoryBackend seen only through the RateLimitBackend Protocol (as a custom backend is)."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.acquire = self.inner.acquire
        self.reset = self.inner.reset


def _limits() -> dict[str, Callable[[], Callable[[str], object]]]:
    from limits import RateLimitItemPerMinute
    from limits.storage import MemoryStorage
    from limits.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )
    from limits.strategies import (
        RateLimiter as LimitsStrategy,
    )

    item = RateLimitItemPerMinute(LIMIT)

    def factory(cls: type[LimitsStrategy]) -> Callable[[], Callable[[str], object]]:
        def make() -> Callable[[str], object]:
            hit = cls(MemoryStorage()).hit
            return lambda key: hit(item, key)

        return make

    return {
        "limits FixedWindow": factory(FixedWindowRateLimiter),
        "limits MovingWindow": factory(MovingWindowRateLimiter),
        "limits SlidingWindowCounter": factory(SlidingWindowCounterRateLimiter),
    }


def _pyrate() -> Callable[[str], object]:
    from pyrate_limiter import BucketFactory, Duration, InMemoryBucket, Limiter, RateItem
    from pyrate_limiter import Rate as PyrateRate
    from pyrate_limiter.clocks import MonotonicClock

    rates = [PyrateRate(LIMIT, Duration.MINUTE)]
    clock = MonotonicClock()

    class PerKey(BucketFactory):
        """One InMemoryBucket per key (pyrate's buckets are not keyed by themselves)."""

        def __init__(self) -> None:
            self.buckets: dict[str, InMemoryBucket] = {}

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            return RateItem(name, clock.now(), weight=weight)

        def get(self, item: RateItem) -> InMemoryBucket:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.buckets[item.name] = InMemoryBucket(rates)
            return bucket

    limiter = Limiter(PerKey())
    return lambda key: limiter.try_acquire(key, blocking=False)


def _contenders() -> dict[str, Callable[[], Callable[[str], object]]]:
    """Name -> factory of a fresh ``decide(key)`` (fresh state for every run)."""
    rate = Rate(LIMIT, PERIOD)
    contenders: dict[str, Callable[[], Callable[[str], object]]] = {
        "dict token bucket (floor)": lambda: DictTokenBucket(LIMIT, PERIOD).try_acquire,
        "dict token bucket + lock": lambda: LockedDictTokenBucket(LIMIT, PERIOD).try_acquire,
        "botscale RateLimiter": lambda: RateLimiter(rate).try_acquire,
        "botscale via the Protocol": lambda: RateLimiter(rate, backend=ProtocolOnly()).try_acquire,
    }
    contenders.update(_limits())
    contenders["pyrate-limiter InMemoryBucket"] = _pyrate
    return contenders


def _measure(keys: list[str], repeat: int) -> dict[str, float]:
    contenders = _contenders()
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, make in contenders.items():
            decide = make()

            def run(decide: Callable[[str], object] = decide) -> None:
                for key in keys:
                    decide(key)

            best[name] = min(best[name], per_op(run, number=1, repeat=1) / len(keys))
    return best


def _section(title: str, note: str, best: dict[str, float]) -> Section:
    floor = "dict token bucket (floor)"
    ours = "botscale RateLimiter"
    limits_names = [n for n in best if n.startswith("limits ")]
    fastest_limits = min(limits_names, key=best.__getitem__)
    rows = [Row(name, seconds) for name, seconds in best.items()]
    rows[0].note = note
    vs_floor = best[ours] / best[floor]
    vs_limits = best[fastest_limits] / best[ours]
    return Section(
        title,
        rows,
        baseline=floor,
        targets=[
            Target("botscale within 1.5x of the floor", vs_floor <= 1.5, f"{vs_floor:.2f}x"),
            Target(
                "botscale >= 2x faster than limits' fastest strategy",
                vs_limits >= 2.0,
                f"{vs_limits:.2f}x faster than {fastest_limits}",
            ),
        ],
        unit="decision",
    )


def run(quick: bool) -> list[Section]:
    n_ops = 20_000 if quick else 200_000
    repeat = 3 if quick else 7
    many = [KEYS[i % len(KEYS)] for i in range(n_ops)]
    hot = [HOT] * n_ops
    fresh = [f"new:{i}" for i in range(n_ops)]
    return [
        _section(
            "Rate limit decision, 10 000 keys (mostly allowed)",
            "10k keys in turn, 30/min each",
            _measure(many, repeat),
        ),
        _section(
            "Rate limit decision, one hot key (mostly denied)",
            "one key, 30/min",
            _measure(hot, repeat),
        ),
        _section(
            "Rate limit decision, a new key every time (inserts, evictions)",
            "200k distinct keys (20k with --quick)",
            _measure(fresh, repeat),
        ),
    ]


if __name__ == "__main__":
    for section in run(quick=False):
        print(section.markdown())
