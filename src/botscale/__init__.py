"""botscale: what a Python Telegram bot needs once real users arrive.

Per-user rate limiting, Telegram flood control, retries, bounded state and
caches, update de-duplication, a performance monitor, batched database writes,
and a Bot API simulator that measures a bot's capacity offline.

Everything public is re-exported here; implementation modules are private.
``import botscale`` imports no bot framework, no Redis client and no database
driver: those live behind extras in ``botscale.adapters``,
``botscale.backends`` and ``botscale.sinks``.
"""

from __future__ import annotations

from ._batch import (
    AsyncBatchWriter,
    BatchStats,
    BatchWriter,
    WriterFullError,
    install_signal_handlers,
)
from ._clock import AsyncSleep, Clock, Sleep
from ._concurrency import (
    AsyncKeyedLock,
    ConcurrencyLimiter,
    ConcurrencyStats,
    ConcurrencyTimeout,
    KeyedLock,
)
from ._cache import CacheInfo, Cached, cached
from ._deadletter import DeadLetterFile
from ._dedup import AsyncDeduplicator, DedupStats, Deduplicator
from ._errors import (
    BackendError,
    BotscaleError,
    ConfigurationError,
    RateLimitExceeded,
    WriterClosedError,
)
from ._gcra import Decision, Rate
from ._limiter import AsyncRateLimiter, RateLimiter, RateLimiterStats, rate_limited
from ._protocols import (
    AsyncDedupStore,
    AsyncRateLimitBackend,
    AsyncStateStore,
    DedupStore,
    RateLimitBackend,
    StateStore,
)
from ._retry import RetryPolicy, RetryStats, retry, retry_stats, retry_testing
from ._settings import SettingInfo, Settings
from ._state import AsyncMemoryStateStore, MemoryStateStore, Session, StoreStats

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncBatchWriter",
    "AsyncDedupStore",
    "AsyncDeduplicator",
    "AsyncKeyedLock",
    "AsyncMemoryStateStore",
    "AsyncRateLimitBackend",
    "AsyncRateLimiter",
    "AsyncSleep",
    "AsyncStateStore",
    "BackendError",
    "BatchStats",
    "BatchWriter",
    "BotscaleError",
    "CacheInfo",
    "Cached",
    "Clock",
    "ConcurrencyLimiter",
    "ConcurrencyStats",
    "ConcurrencyTimeout",
    "ConfigurationError",
    "DeadLetterFile",
    "Decision",
    "DedupStats",
    "DedupStore",
    "Deduplicator",
    "KeyedLock",
    "MemoryStateStore",
    "Rate",
    "RateLimitBackend",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterStats",
    "RetryPolicy",
    "RetryStats",
    "Session",
    "SettingInfo",
    "Settings",
    "Sleep",
    "StateStore",
    "StoreStats",
    "WriterClosedError",
    "WriterFullError",
    "cached",
    "install_signal_handlers",
    "rate_limited",
    "retry",
    "retry_stats",
    "retry_testing",
    "__version__",
]
