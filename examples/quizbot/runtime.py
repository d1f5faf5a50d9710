"""What every version of the bot sets up the same way, whatever its framework.

* :func:`incoming_guard`: the per-user rate limit with its polite notice,
  admins exempt, the bounded per-user quiz state and the monitor's timings;
  in memory, or in Redis when ``REDIS_URL`` is set (then several bot
  processes share limits and state);
* :func:`flood_budget`: the outgoing budget, shared through Redis too;
* :class:`Runtime`: what opens at start and closes at stop (the database
  and its writers, the conversation, the monitor's HTTP server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

from botscale import (
    AsyncFloodBudget,
    AsyncFloodControl,
    FloodBudget,
    FloodControl,
    IncomingGuard,
    MemoryStateStore,
    MonitorServer,
    PerformanceMonitor,
    RateLimitBackend,
    StateStore,
)

from .config import QuizConfig
from .flow import SLOW_DOWN, QuizFlow
from .storage import Storage, open_database

__all__ = ["Runtime", "flood_budget", "incoming_guard", "new_monitor", "setup_logging"]

log: Final = logging.getLogger("quizbot")


def setup_logging(level: str) -> None:
    """The bot's and botscale's loggers at ``level`` (``BOTSCALE_LOG_LEVEL``), the rest at WARNING.

    aiogram's one INFO line per update is left out: under load it costs more
    than the update.
    """
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("quizbot", "botscale", "aiogram.dispatcher", "telegram.ext.Application"):
        logging.getLogger(name).setLevel(level)


def new_monitor(config: QuizConfig) -> PerformanceMonitor:
    """The bot's monitor: operations over ``BOTSCALE_SLOW_THRESHOLD`` are logged as slow."""
    return PerformanceMonitor(slow_threshold=config.settings.slow_threshold)


def incoming_guard(config: QuizConfig, monitor: PerformanceMonitor) -> IncomingGuard:
    """The incoming decisions: ``BOTSCALE_USER_RATE`` per user, one notice per window.

    Quiz state lives in a ``MemoryStateStore`` of ``BOTSCALE_STATE_MAXSIZE``
    users expiring after ``BOTSCALE_STATE_TTL``, or in Redis (same TTL).
    """
    settings = config.settings
    state: StateStore
    backend: RateLimitBackend | None = None
    if settings.redis_url is None:
        state = MemoryStateStore(settings.state_maxsize, settings.state_ttl)
    else:
        from botscale.backends.redis import RedisBackend, RedisStateStore, connect

        client = connect(settings.redis_url)
        state = RedisStateStore(client, prefix=config.redis_prefix, ttl=settings.state_ttl)
        backend = RedisBackend(client, prefix=config.redis_prefix)
    return IncomingGuard(
        settings.user_rate,
        burst=settings.user_capacity,
        notice=SLOW_DOWN,
        exempt=config.admin_ids,
        monitor=monitor,
        state=state,
        backend=backend,
    )


def flood_budget(
    config: QuizConfig, *, sync: bool = False
) -> FloodBudget | AsyncFloodBudget | None:
    """The outgoing budget: in this process (``None``), or in Redis for every process."""
    url = config.settings.redis_url
    if url is None:
        return None
    from botscale.backends.redis import (
        AsyncRedisFloodBudget,
        RedisFloodBudget,
        connect,
        connect_async,
    )

    if sync:
        return RedisFloodBudget(connect(url), prefix=config.redis_prefix)
    return AsyncRedisFloodBudget(connect_async(url), prefix=config.redis_prefix)


class Runtime:
    """The database, the writers, the conversation and the monitor's endpoints.

    Start it in the bot's event loop (:meth:`start`) and :meth:`stop` it on
    the way out: stopping writes every answer still waiting.

    Attributes:
        flow: the conversation.
        storage: the database and its writers.
        server: ``/health``, ``/stats`` and ``/metrics`` on ``BOTSCALE_MONITOR_HOST``.
    """

    def __init__(
        self,
        config: QuizConfig,
        monitor: PerformanceMonitor,
        flow: QuizFlow,
        server: MonitorServer,
        probe: asyncio.Task[None],
    ) -> None:
        self.config = config
        self.monitor = monitor
        self.flow = flow
        self.storage: Storage = flow.storage
        self.server = server
        self._probe = probe

    @classmethod
    async def start(cls, config: QuizConfig, monitor: PerformanceMonitor) -> Runtime:
        """Open the database (retried), start the writers and the monitor's server."""
        storage = Storage(await open_database(config), config, monitor)
        monitor.add_check("database", storage.health)
        settings = config.settings
        server = monitor.serve(settings.monitor_host, settings.monitor_port or 0)
        await server.__aenter__()
        probe = asyncio.create_task(monitor.run_lag_probe())
        log.info(
            "quiz bot started: %s, state in %s, monitor on %s (/health /stats /metrics)",
            config.database,
            "Redis" if settings.redis_url else "memory",
            server.url,
        )
        return cls(config, monitor, QuizFlow(config, storage, monitor), server, probe)

    async def stop(self) -> None:
        """Finish background work, write what waits, close the database and the server."""
        try:
            await self.flow.close()
            await self.storage.close()
        finally:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            await self.server.__aexit__(None, None, None)

    def summary(self, guard: IncomingGuard, flood: FloodControl | AsyncFloodControl | None) -> str:
        """What botscale did in this process: the monitor's summary plus every counter."""
        lines = [self.monitor.stats().format()]
        incoming = guard.stats()
        lines.append(
            f"incoming: {incoming.passed} updates handled, {incoming.limited} rate-limited "
            f"({incoming.notices} slow-down notices), {incoming.duplicates} duplicates dropped"
        )
        if flood is not None:
            out = flood.stats()
            waited = f" (mean {out.wait_time / out.delayed:.2f} s)" if out.delayed else ""
            lines.append(
                f"outgoing: {out.sent} Bot API calls, {out.delayed} waited for their turn"
                f"{waited}, {out.flood_429} answers 429, {out.retries} retries, "
                f"{out.forbidden} answers 403"
            )
        ai = self.flow.explainer.stats()
        lines.append(
            f"explain AI: {ai.acquired} calls, at most {ai.peak_in_flight} at once "
            f"(limit {ai.limit}), {ai.timeouts} timed out"
        )
        for name, w in self.storage.writer_stats().items():
            lines.append(
                f"{name} writer: {w.items_in} rows in, {w.written} written in {w.batches} "
                f"batches, {w.retries} retries, {w.dead_lettered} dead-lettered, "
                f"{w.pending + w.in_flight} waiting"
            )
        info = self.storage.user_stats.cache_info()
        lines.append(f"/stats cache: {info.hits} hits, {info.misses} misses")
        return "\n".join(lines)
