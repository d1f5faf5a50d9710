"""State and cache cost: MemoryStateStore, cached and Deduplicator vs dict, cachetools, functools.

Every contender answers the same sequence of keys in process memory from one
thread.  The floor is a plain ``dict`` (what bots write by hand: no bound, no
expiry, no lock).  The peers are what a thread-safe bot would otherwise use:
cachetools' ``TTLCache`` / ``LRUCache`` behind a ``threading.Lock``, and
``functools.lru_cache`` (C, its own lock, no expiry).  The runs of all
contenders are interleaved and each keeps its best, so a busy machine slows
them alike.

* get (hit): 2000 users, every key present (the hot path of a handler);
* set (existing key): 2000 users written over and over;
* set (a new user every time): each write into the full store evicts one
  (the floor just grows, it has no bound);
* the ``cached`` hit path against ``cachetools.cached`` with a lock;
* ``Deduplicator.seen`` on fresh update ids against a set and a TTLCache.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable

import cachetools

from _harness import Row, Section, Target, per_op
from botscale import Deduplicator, MemoryStateStore, cached

USERS = 2000
TTL = 3600.0

Op = Callable[[int], object]


def _measure(
    contenders: dict[str, Callable[[], Op]], keys: list[int], repeat: int
) -> dict[str, float]:
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, make in contenders.items():
            op = make()

            def run(op: Op = op) -> None:
                for key in keys:
                    op(key)

            best[name] = min(best[name], per_op(run, number=1, repeat=1) / len(keys))
    return best


def _locked_get(cache: cachetools.Cache[int, object]) -> Op:
    lock = threading.Lock()

    def get(key: int) -> object:
        with lock:
            return cache.get(key)

    return get


def _locked_set(cache: cachetools.Cache[int, object]) -> Op:
    lock = threading.Lock()

    def put(key: int) -> None:
        with lock:
            cache[key] = key

    return put


def _store() -> MemoryStateStore:
    store = MemoryStateStore(maxsize=USERS, ttl=TTL)
    for user in range(USERS):
        store.set(user, {"step": 1})
    return store


def _cache(kind: str) -> cachetools.Cache[int, object]:
    cache: cachetools.Cache[int, object] = (
        cachetools.TTLCache(USERS, TTL) if kind == "ttl" else cachetools.LRUCache(USERS)
    )
    for user in range(USERS):
        cache[user] = {"step": 1}
    return cache


def _dict() -> dict[int, object]:
    return {user: {"step": 1} for user in range(USERS)}


def _lru_function() -> Op:
    @functools.lru_cache(maxsize=USERS)
    def load(key: int) -> object:
        return {"step": 1}

    for user in range(USERS):
        load(user)
    return load


def _get_contenders() -> dict[str, Callable[[], Op]]:
    return {
        "dict.get (floor)": lambda: _dict().get,
        "botscale MemoryStateStore.get": lambda: _store().get,
        "cachetools TTLCache + lock": lambda: _locked_get(_cache("ttl")),
        "cachetools LRUCache + lock": lambda: _locked_get(_cache("lru")),
        "functools.lru_cache hit": _lru_function,
    }


def _set_contenders() -> dict[str, Callable[[], Op]]:
    def dict_set() -> Op:
        data = _dict()
        return lambda key: data.__setitem__(key, key)

    def store_set() -> Op:
        store = _store()
        return lambda key: store.set(key, key)

    return {
        "dict[key] = value (floor)": dict_set,
        "botscale MemoryStateStore.set": store_set,
        "cachetools TTLCache + lock": lambda: _locked_set(_cache("ttl")),
        "cachetools LRUCache + lock": lambda: _locked_set(_cache("lru")),
    }


def _cached_contenders() -> dict[str, Callable[[], Op]]:
    def ours() -> Op:
        @cached(ttl=TTL, maxsize=USERS)
        def stats(user_id: int) -> object:
            return {"user": user_id}

        for user in range(USERS):
            stats(user)
        return stats

    def theirs(kind: str) -> Op:
        cache = cachetools.TTLCache(USERS, TTL) if kind == "ttl" else cachetools.LRUCache(USERS)

        @cachetools.cached(cache, lock=threading.Lock())
        def stats(user_id: int) -> object:
            return {"user": user_id}

        for user in range(USERS):
            stats(user)
        return stats

    return {
        "functools.lru_cache hit (floor)": _lru_function,
        "botscale cached": ours,
        "cachetools.cached(TTLCache, lock)": lambda: theirs("ttl"),
        "cachetools.cached(LRUCache, lock)": lambda: theirs("lru"),
    }


def _dedup_contenders() -> dict[str, Callable[[], Op]]:
    def plain_set() -> Op:
        seen: set[int] = set()

        def check(update_id: int) -> bool:
            if update_id in seen:
                return True
            seen.add(update_id)
            return False

        return check

    def ttlcache() -> Op:
        cache: cachetools.TTLCache[int, bool] = cachetools.TTLCache(100_000, 600.0)
        lock = threading.Lock()

        def check(update_id: int) -> bool:
            with lock:
                if update_id in cache:
                    return True
                cache[update_id] = True
                return False

        return check

    return {
        "set, unbounded (floor)": plain_set,
        "botscale Deduplicator.seen": lambda: Deduplicator(600.0, 100_000).seen,
        "cachetools TTLCache + lock": ttlcache,
    }


def _async_cached_hit(number: int) -> tuple[float, float]:
    """Per awaited call: a plain coroutine vs a cached coroutine hit (same loop)."""
    import time

    async def plain(user_id: int) -> object:
        return user_id

    @cached(ttl=TTL, maxsize=USERS)
    async def memo(user_id: int) -> object:
        return user_id

    async def loop(fn: Callable[[int], object]) -> float:
        await memo(1)
        start = time.perf_counter()
        for _ in range(number):
            await fn(1)  # type: ignore[misc]
        return (time.perf_counter() - start) / number

    best_plain = best_memo = float("inf")
    for _ in range(5):
        best_plain = min(best_plain, asyncio.run(loop(plain)))
        best_memo = min(best_memo, asyncio.run(loop(memo)))
    return best_plain, best_memo


def _section(
    title: str, note: str, best: dict[str, float], *, unit: str = "op", targets: list[Target]
) -> Section:
    rows = [Row(name, seconds) for name, seconds in best.items()]
    rows[0].note = note
    return Section(title, rows, baseline=rows[0].name, targets=targets, unit=unit)


def _within(best: dict[str, float], ours: str, theirs: str, factor: float) -> Target:
    ratio = best[ours] / best[theirs]
    return Target(
        f"{ours} within {factor:g}x of {theirs}", ratio <= factor, f"{ratio:.2f}x of {theirs}"
    )


def run(quick: bool) -> list[Section]:
    n_ops = 20_000 if quick else 200_000
    repeat = 3 if quick else 7
    hot = [i % USERS for i in range(n_ops)]
    fresh = list(range(USERS, USERS + n_ops))

    gets = _measure(_get_contenders(), hot, repeat)
    sets = _measure(_set_contenders(), hot, repeat)
    inserts = _measure(_set_contenders(), fresh, repeat)
    hits = _measure(_cached_contenders(), hot, repeat)
    dedup = _measure(_dedup_contenders(), fresh, repeat)
    plain, memo = _async_cached_hit(n_ops // 4)

    ttl_lock = "cachetools TTLCache + lock"
    return [
        _section(
            "State get (hit), 2000 users",
            "no bound, no expiry, no lock",
            gets,
            unit="get",
            targets=[_within(gets, "botscale MemoryStateStore.get", ttl_lock, 2.0)],
        ),
        _section(
            "State set, existing key, 2000 users",
            "no bound, no expiry, no lock",
            sets,
            unit="set",
            targets=[_within(sets, "botscale MemoryStateStore.set", ttl_lock, 2.0)],
        ),
        _section(
            "State set, a new user every time (full store: every write evicts)",
            "grows without bound",
            inserts,
            unit="set",
            targets=[_within(inserts, "botscale MemoryStateStore.set", ttl_lock, 2.0)],
        ),
        _section(
            "cached: the hit path (sync function, one int argument)",
            "C, no expiry",
            hits,
            unit="call",
            targets=[_within(hits, "botscale cached", "cachetools.cached(TTLCache, lock)", 2.0)],
        ),
        Section(
            "cached: the hit path of an async function",
            [
                Row("await plain coroutine (floor)", plain, "no caching at all"),
                Row("await botscale cached coroutine (hit)", memo),
            ],
            baseline="await plain coroutine (floor)",
            unit="call",
        ),
        _section(
            "Deduplicator.seen, a new update id every time",
            "grows without bound",
            dedup,
            unit="update",
            targets=[_within(dedup, "botscale Deduplicator.seen", ttl_lock, 2.0)],
        ),
    ]


if __name__ == "__main__":
    for section in run(quick=False):
        print(section.markdown())
