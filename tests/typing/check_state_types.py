"""Static typing checks of the state, cache and dedup API, run by mypy --strict.

Never executed by pytest: mypy verifies that ``cached`` keeps the decorated
function's signature (sync and async) and that the stores and de-duplicators
satisfy their Protocols.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from botscale import (
    AsyncDeduplicator,
    AsyncDedupStore,
    AsyncMemoryStateStore,
    AsyncStateStore,
    Cached,
    CacheInfo,
    Deduplicator,
    DedupStats,
    DedupStore,
    MemoryStateStore,
    StateStore,
    StoreStats,
    cached,
)


@cached(ttl=300.0, maxsize=5000)
def user_stats(user_id: int, *, lang: str = "en") -> dict[str, int]:
    return {"user": user_id}


@cached(ttl=60.0, key=lambda chat_id: chat_id)
async def leaderboard(chat_id: int) -> list[str]:
    return []


assert_type(user_stats(42), dict[str, int])
assert_type(user_stats(42, lang="vi"), dict[str, int])
assert_type(user_stats.cache_info(), CacheInfo)
assert_type(user_stats.cache_info().hits, int)
assert_type(user_stats.invalidate(42), bool)
user_stats.clear()
coro = leaderboard(-100)
_ = assert_type(coro, Coroutine[Any, Any, list[str]])
coro.close()
stats_fn: Cached[[int], dict[str, int]] = user_stats


class Repo:
    @cached()
    def load(self, user_id: int) -> str:
        return str(user_id)


assert_type(Repo().load(1), str)


async def use_async() -> None:
    assert_type(await leaderboard(-100), list[str])


store = MemoryStateStore(maxsize=2000, ttl=3600.0, strict=True)
sync_store: StateStore = store
async_store: AsyncStateStore = store.aio
other_async: AsyncStateStore = AsyncMemoryStateStore(maxsize=10)
assert_type(store.stats(), StoreStats)
assert_type(store.stats().evictions, int)
assert_type(store.delete(1), bool)
assert_type(len(store), int)

with store.session(42) as session:
    session.value["step"] = 1

dedup = Deduplicator(ttl=600.0, maxsize=100_000)
sync_dedup: DedupStore = dedup
async_dedup: AsyncDedupStore = dedup.aio
other_dedup: AsyncDedupStore = AsyncDeduplicator()
assert_type(dedup.seen(1001), bool)
assert_type(dedup.stats(), DedupStats)
