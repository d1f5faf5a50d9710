"""A child process of the multi-process tests: hammer one Redis bucket until a deadline.

python hammer.py MODE URL PREFIX DURATION

prints ``ready`` once connected, waits for a line on stdin, then asks as fast
as it can for DURATION seconds (bounded: at most 200 000 asks) and prints
``granted start stop`` (wall-clock seconds of its first and last ask).

MODE ``limiter`` asks a RateLimiter (100/s, burst 5) on RedisBackend for key
"hot"; MODE ``budget`` asks RedisFloodBudget for the overall lane (30/s, burst
1), as FloodControl would.
"""

from __future__ import annotations

import sys
import time

import redis

from botscale import Rate, RateLimiter
from botscale._flood import BucketSpec
from botscale.backends.redis import RedisBackend, RedisFloodBudget

LIMITER_RATE = Rate(100, 1.0)
LIMITER_BURST = 5
LANE = BucketSpec("overall", 1 / 30, 1)
MAX_ASKS = 200_000


def main(mode: str, url: str, prefix: str, duration: float) -> int:
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    if mode == "limiter":
        limiter = RateLimiter(
            LIMITER_RATE,
            LIMITER_BURST,
            backend=RedisBackend(client, prefix=prefix, on_error="closed"),
        )

        def ask() -> bool:
            return limiter.try_acquire("hot").allowed

    else:
        budget = RedisFloodBudget(client, prefix=prefix, on_error="closed")

        def ask() -> bool:
            return budget.take(LANE, None, time.monotonic()).granted

    client.ping()  # connected before the start
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    stop = start + duration
    granted = 0
    for _ in range(MAX_ASKS):
        if time.time() >= stop:
            break
        granted += ask()
    print(granted, start, time.time(), flush=True)
    return 0


if __name__ == "__main__":
    mode, url, prefix, duration = sys.argv[1:5]
    raise SystemExit(main(mode, url, prefix, float(duration)))
