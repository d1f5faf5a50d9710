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
from ._cache import Cached, CacheInfo, cached
from ._checks import HealthCheck
from ._clock import AsyncSleep, Clock, Sleep
from ._concurrency import (
    AsyncKeyedLock,
    ConcurrencyLimiter,
    ConcurrencyStats,
    ConcurrencyTimeout,
    KeyedLock,
)
from ._deadletter import DeadLetterFile
from ._dedup import AsyncDeduplicator, Deduplicator, DedupStats
from ._errors import (
    BackendError,
    BotscaleError,
    ConfigurationError,
    RateLimitExceeded,
    WriterClosedError,
)
from ._flood import (
    AsyncFloodBudget,
    AsyncFloodControl,
    BucketSpec,
    FloodBudget,
    FloodControl,
    FloodStats,
    ForbiddenChat,
    Grant,
    MemoryFloodBudget,
    OutgoingRequest,
    Priority,
    replying_to,
    send_priority,
)
from ._gcra import Decision, Rate
from ._incoming import (
    AsyncUserState,
    HandlerLimit,
    IncomingGuard,
    IncomingStats,
    UpdateInfo,
    UserState,
    Verdict,
)
from ._limiter import AsyncRateLimiter, RateLimiter, RateLimiterStats, rate_limited
from ._monitor import PerformanceMonitor, SummaryThread, Tracker
from ._monitor_server import MonitorServer
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
from ._snapshot import (
    Health,
    HealthStatus,
    HealthThresholds,
    MonitorSnapshot,
    OperationStats,
    ProcessStats,
    SlowOperation,
)
from ._state import AsyncMemoryStateStore, MemoryStateStore, Session, StoreStats
from ._telegram import (
    ApiFailure,
    FailureKind,
    TelegramLimits,
    TelegramLimitWarning,
    classify_api_answer,
)
from ._updates import (
    RunnerHold,
    RunnerStats,
    ThreadedUpdateRunner,
    UpdateRunner,
    allowed_updates,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ApiFailure",
    "AsyncBatchWriter",
    "AsyncDedupStore",
    "AsyncDeduplicator",
    "AsyncFloodBudget",
    "AsyncFloodControl",
    "AsyncKeyedLock",
    "AsyncMemoryStateStore",
    "AsyncRateLimitBackend",
    "AsyncRateLimiter",
    "AsyncSleep",
    "AsyncStateStore",
    "AsyncUserState",
    "BackendError",
    "BatchStats",
    "BatchWriter",
    "BotscaleError",
    "BucketSpec",
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
    "FailureKind",
    "FloodBudget",
    "FloodControl",
    "FloodStats",
    "ForbiddenChat",
    "Grant",
    "HandlerLimit",
    "Health",
    "HealthCheck",
    "HealthStatus",
    "HealthThresholds",
    "IncomingGuard",
    "IncomingStats",
    "KeyedLock",
    "MemoryFloodBudget",
    "MemoryStateStore",
    "MonitorServer",
    "MonitorSnapshot",
    "OperationStats",
    "OutgoingRequest",
    "PerformanceMonitor",
    "Priority",
    "ProcessStats",
    "Rate",
    "RateLimitBackend",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterStats",
    "RetryPolicy",
    "RetryStats",
    "RunnerHold",
    "RunnerStats",
    "Session",
    "SettingInfo",
    "Settings",
    "Sleep",
    "SlowOperation",
    "StateStore",
    "StoreStats",
    "SummaryThread",
    "TelegramLimitWarning",
    "TelegramLimits",
    "ThreadedUpdateRunner",
    "Tracker",
    "UpdateInfo",
    "UpdateRunner",
    "UserState",
    "Verdict",
    "WriterClosedError",
    "WriterFullError",
    "allowed_updates",
    "cached",
    "classify_api_answer",
    "install_signal_handlers",
    "rate_limited",
    "replying_to",
    "retry",
    "retry_stats",
    "retry_testing",
    "send_priority",
    "__version__",
]
