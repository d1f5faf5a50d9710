"""Redis rate limiting: decisions per second over one connection, side by side.

Every row makes one decision per round trip to the same local Redis, so the
ratios compare what each library adds around the round trip:

* INCRBY: the cheapest command, the floor of any Redis limiter;
* raw EVALSHA of botscale's GCRA script through the same redis-py client: the
  baseline botscale's own path is measured against (target: within 1.15x);
* the same EVALSHA on a bare redis-py connection (``send_command`` /
  ``read_response``): the round trip without the client's per-command
  bookkeeping (pool checkout, a poll for stray data, metrics, retries), which
  botscale's sync backend skips by keeping a connection per thread;
* redis-py's ``Script`` object running the same script (how much it adds);
* botscale: the backend alone, and the full ``RateLimiter.try_acquire`` path;
* peers: limits' Redis strategies (fixed window, moving window, sliding window
  counter) and pyrate-limiter's Redis buckets (sorted-set log, GCRA state).

Rows take turns call by call and report their median round trip, so a slow
spell of a shared machine hits every row alike.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable

from _harness import Row, Section, Target

REDIS_URL = os.environ.get("BOTSCALE_REDIS_URL", "redis://127.0.0.1:6379/0")
HUGE = 10**9  # a rate no row reaches: every decision takes the allow path


def _interleaved(
    rows: dict[str, Callable[[], object]], number: int, rounds: int
) -> dict[str, float]:
    """Median seconds per call of each row, the rows taking turns call by call.

    Round trips on a shared virtual machine swing by 2x within seconds, so a
    row timed in a block of its own measures the machine of that moment.
    Here every row makes one call in turn (the order rotating every round),
    each call timed alone, so all rows sample the same moments; the median
    per row shrugs off the spikes.
    """
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for fn in rows.values():  # warm up: connections, script caches
        for _ in range(50):
            fn()
    items = list(rows.items())
    clock = time.perf_counter
    for round_ in range(rounds):
        shift = round_ % len(items)  # rotate the order: no row always follows the same one
        turn = [(samples[name].append, fn) for name, fn in items[shift:] + items[:shift]]
        for _ in range(number):
            for record, fn in turn:
                start = clock()
                fn()
                record(clock() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def _sync_section(quick: bool) -> Section:
    import redis
    from limits import parse
    from limits.storage import RedisStorage
    from limits.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )
    from pyrate_limiter import Duration, Limiter, RedisBucket, StateBucket
    from pyrate_limiter import Rate as PyrateRate
    from pyrate_limiter import RedisStateStore as PyrateRedisStateStore

    from botscale import Rate, RateLimiter
    from botscale.backends._redis_limiter import _GCRA, micros
    from botscale.backends.redis import RedisBackend

    tag = "bench" + uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5.0)
    client.ping()
    interval = 1.0 / HUGE
    interval_us = micros(interval)
    key = "{" + tag + ":rl:hot}"
    client.script_load(_GCRA.source)
    script = client.register_script(_GCRA.source)
    backend = RedisBackend(client, prefix=tag)
    limiter = RateLimiter(Rate(HUGE, 1.0), 1000, backend=backend)
    item = parse(f"{HUGE}/second")
    # One storage per strategy: their keys for one identifier would collide.
    fixed = FixedWindowRateLimiter(RedisStorage(REDIS_URL, key_prefix=tag + "fixed"))
    moving = MovingWindowRateLimiter(RedisStorage(REDIS_URL, key_prefix=tag + "moving"))
    sliding = SlidingWindowCounterRateLimiter(RedisStorage(REDIS_URL, key_prefix=tag + "sliding"))
    pyrate_rates = [PyrateRate(HUGE, Duration.SECOND)]
    pyrate_log = Limiter(RedisBucket.init(pyrate_rates, client, tag + "pyrate-log"))
    pyrate_gcra = Limiter(
        StateBucket(pyrate_rates, store=PyrateRedisStateStore(client, tag + "pyrate-gcra"))
    )

    direct = client.connection_pool.make_connection()  # outside the client's bookkeeping

    def direct_evalsha() -> object:
        direct.send_command("EVALSHA", _GCRA.sha, 1, key, interval_us, 1000, 1)
        return direct.read_response()

    rows: dict[str, Callable[[], object]] = {
        "INCRBY (floor)": lambda: client.incrby(tag + "incr", 1),
        "EVALSHA on a bare connection (send_command/read_response)": direct_evalsha,
        "raw EVALSHA, botscale's GCRA script": lambda: client.evalsha(
            _GCRA.sha, 1, key, interval_us, 1000, 1
        ),
        "redis-py Script object, same script": lambda: script(
            keys=[key], args=[interval_us, 1000, 1]
        ),
        "botscale RedisBackend.acquire": lambda: backend.acquire(
            "hot", now=0.0, interval=interval, burst=1000, cost=1
        ),
        "botscale RateLimiter.try_acquire (Redis)": lambda: limiter.try_acquire("hot"),
        "limits FixedWindow (RedisStorage)": lambda: fixed.hit(item, "hot"),
        "limits MovingWindow (RedisStorage)": lambda: moving.hit(item, "hot"),
        "limits SlidingWindowCounter (RedisStorage)": lambda: sliding.hit(item, "hot"),
        "pyrate-limiter RedisBucket (log)": lambda: pyrate_log.try_acquire("hot", blocking=False),
        "pyrate-limiter StateBucket GCRA (Redis)": lambda: pyrate_gcra.try_acquire(
            "hot", blocking=False
        ),
    }
    try:
        # MovingWindow and the pyrate log keep one entry per hit: bounded by number * rounds.
        best = _interleaved(rows, number=200 if quick else 1000, rounds=3 if quick else 10)
    finally:
        leftovers = list(client.scan_iter(match=f"*{tag}*", count=1000))
        if leftovers:
            client.delete(*leftovers)
        direct.disconnect()
        backend.close()
        client.close()

    base = "raw EVALSHA, botscale's GCRA script"
    ours = "botscale RateLimiter.try_acquire (Redis)"
    peers = [n for n in rows if n.startswith(("limits", "pyrate"))]
    fastest_peer = min(peers, key=best.__getitem__)
    section = Section(
        "Redis rate limiter: one decision per round trip, one connection (sync)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline=base,
        unit="decision",
    )
    section.targets = [
        Target(
            "botscale RateLimiter on Redis within 1.15x of a raw EVALSHA round trip",
            section.ratio(ours) <= 1.15,
            f"{section.ratio(ours):.3f}x",
        ),
        Target(
            "botscale no slower than the fastest peer strategy",
            best[ours] <= best[fastest_peer],
            f"{best[ours] * 1e6:.1f} us vs {fastest_peer} {best[fastest_peer] * 1e6:.1f} us",
        ),
    ]
    return section


def _async_section(quick: bool) -> Section:
    import redis.asyncio as aredis

    from botscale import AsyncRateLimiter, Rate
    from botscale.backends._redis_limiter import _GCRA, micros
    from botscale.backends.redis import AsyncRedisBackend

    tag = "bench" + uuid.uuid4().hex[:8]
    number = 200 if quick else 1000
    rounds = 3 if quick else 10
    interval_us = micros(1.0 / HUGE)
    key = "{" + tag + ":rl:hot}"

    async def measure() -> dict[str, float]:
        client = aredis.Redis.from_url(REDIS_URL, socket_timeout=5.0)
        await client.script_load(_GCRA.source)
        limiter = AsyncRateLimiter(
            Rate(HUGE, 1.0), 1000, backend=AsyncRedisBackend(client, prefix=tag)
        )

        async def raw() -> object:
            return await client.evalsha(_GCRA.sha, 1, key, interval_us, 1000, 1)

        async def ours() -> object:
            return await limiter.try_acquire("hot")

        rows = {"raw EVALSHA (redis.asyncio)": raw, "botscale AsyncRateLimiter.try_acquire": ours}
        samples: dict[str, list[float]] = {name: [] for name in rows}
        clock = time.perf_counter
        try:
            for fn in rows.values():
                for _ in range(50):
                    await fn()
            items = list(rows.items())
            for round_ in range(rounds):  # the rows take turns call by call, as above
                turn = items if round_ % 2 else items[::-1]
                for _ in range(number):
                    for name, fn in turn:
                        start = clock()
                        await fn()
                        samples[name].append(clock() - start)
        finally:
            leftovers = [k async for k in client.scan_iter(match=f"*{tag}*", count=1000)]
            if leftovers:
                await client.delete(*leftovers)
            await client.aclose()
        return {name: statistics.median(times) for name, times in samples.items()}

    best = asyncio.run(measure())
    section = Section(
        "Redis rate limiter: one decision per round trip, one connection (asyncio)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline="raw EVALSHA (redis.asyncio)",
        unit="decision",
    )
    ratio = section.ratio("botscale AsyncRateLimiter.try_acquire")
    section.targets = [
        Target(
            "botscale AsyncRateLimiter within 1.15x of a raw EVALSHA",
            ratio <= 1.15,
            f"{ratio:.3f}x",
        )
    ]
    return section


def run(quick: bool) -> list[Section]:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1.0).ping()
    except Exception as exc:  # no server: say so instead of failing the whole run
        print(f"bench_redis skipped: Redis at {REDIS_URL} did not answer ({exc})")
        return []
    return [_sync_section(quick), _async_section(quick)]
