"""PerformanceMonitor: timings, percentiles in bounded memory, slow-operation log, health.

One lock per monitor guards a dict of operations; recording a sample is a dict
lookup and one bucket increment in a fixed-size histogram (see
:mod:`botscale._histogram`), so it costs about a microsecond and memory stays
constant however long the bot runs.  Reading (``stats()``) copies the
histograms under the lock and computes percentiles outside it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import ParamSpec, Self

from ._checks import CheckRunner, HealthCheck
from ._clock import AsyncSleep, Clock
from ._histogram import Histogram
from ._process import ProcessReader
from ._snapshot import (
    Health,
    HealthStatus,
    HealthThresholds,
    MonitorSnapshot,
    OperationStats,
    ProcessStats,
    SlowOperation,
    WindowFigures,
    evaluate_health,
    format_seconds,
)
from ._validation import check_positive, check_positive_int

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from ._monitor_server import MonitorServer

__all__ = ["OTHER_OPERATION", "PerformanceMonitor", "Tracker"]

P = ParamSpec("P")
R = TypeVar("R")

OTHER_OPERATION = "<other>"
"""Where samples of new names go once ``max_names`` distinct names exist."""

_INF = math.inf
_QUANTILES = (0.5, 0.95, 0.99)
_logger = logging.getLogger("botscale.monitor")


class _Operation:
    __slots__ = ("errors", "histogram", "slow")

    def __init__(self) -> None:
        self.histogram = Histogram()
        self.errors = 0
        self.slow = 0


def _bad_name(name: object) -> TypeError:
    return TypeError(f"operation name must be str, got {type(name).__name__}")


def _as_seconds(seconds: object) -> float:
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return float(seconds)
    raise TypeError(f"seconds must be a number >= 0, got {type(seconds).__name__}")


class _Taken:
    """What :meth:`PerformanceMonitor.stats` copied under the lock."""

    def __init__(
        self,
        now: float,
        ops: dict[str, tuple[Histogram, int, int]],
        overflowed: int,
        loop_lag: float | None,
        loop_lag_max: float | None,
        slow_log: tuple[SlowOperation, ...],
    ) -> None:
        self.now = now
        self.ops = ops
        self.overflowed = overflowed
        self.loop_lag = loop_lag
        self.loop_lag_max = loop_lag_max
        self.slow_log = slow_log
        self.since = now
        self.baseline: dict[str, tuple[Histogram, int]] = {}

    def period(self) -> str:
        return f"in the last {self.now - self.since:.0f} s" if self.baseline else "since start"

    def window_figures(self) -> list[WindowFigures]:
        """Each operation's figures over the health window (everything without a baseline)."""
        figures = []
        for name, (hist, errors, _) in self.ops.items():
            if name in self.baseline:
                earlier, earlier_errors = self.baseline[name]
                hist, errors = hist.since(earlier), errors - earlier_errors
            if hist.count:
                figures.append(WindowFigures(name, hist.count, errors, hist.quantile(0.95)))
        return figures


Stopwatch = Callable[[float, bool, Any], None]
"""``stop(started, error, source)`` of :meth:`PerformanceMonitor._stopwatch`."""


class Tracker:
    """Times one block: ``with monitor.track("db.save", user_id=42):`` (or ``async with``).

    The block's exception (an ``Exception``, not a cancellation) counts as an
    error and propagates.  ``context`` may be filled in inside the block; it is
    logged if the operation turns out slow.

    Attributes:
        name: the operation name.
        context: what to report with a slow operation (user id, chat id, update type...).
        seconds: the measured duration, once the block has finished (else ``None``).
    """

    __slots__ = ("_monitor", "_start", "context", "name", "seconds")

    def __init__(self, monitor: PerformanceMonitor, name: str, context: dict[str, object]) -> None:
        self._monitor = monitor
        self.name = name
        self.context = context
        self.seconds: float | None = None
        self._start = 0.0

    def __enter__(self) -> Self:
        self._start = self._monitor._clock()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        seconds = self._monitor._clock() - self._start
        self.seconds = seconds = seconds if seconds > 0.0 else 0.0
        self._monitor._add(
            self.name,
            seconds,
            exc_type is not None and issubclass(exc_type, Exception),
            self.context,
        )

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class PerformanceMonitor:
    """Where is the bot slow, for whom, and is it healthy?  Thread-safe, bounded memory.

    Record with :meth:`track` (``with`` / ``async with``), :meth:`timed`
    (decorator) or :meth:`record`; read with :meth:`stats`, :meth:`log_summary`,
    :meth:`check_health`, the Prometheus collector (``botscale.prometheus``) or
    the HTTP endpoints (:meth:`serve`).

    Args:
        slow_threshold: seconds above which an operation is slow: logged once at
            WARNING with its context and kept in the ring of recent slow operations.
        slow_thresholds: per-operation overrides of ``slow_threshold``.
        health: the thresholds of :attr:`Health.status` (defaults: p95 1 s,
            error rate 1 %, 512 MiB resident, 1 s loop lag).
        checks: named pluggable checks (sync or async callables, e.g. a database
            ping); one that raises or returns ``False`` makes health unhealthy.
        check_timeout: seconds a check may take before it counts as failed.
        max_names: cap on distinct operation names; samples of further names are
            counted under ``"<other>"`` (and in ``overflowed``), never dropped.
        slow_log_size: how many recent slow operations to keep.
        clock: monotonic seconds; ``time.perf_counter`` (monotonic, finest resolution).
        logger: where slow operations and summaries go (``botscale.monitor``).

    Raises:
        ValueError: a threshold <= 0 or a size < 1.
        TypeError: an argument of the wrong type.

    >>> mon = PerformanceMonitor(slow_threshold=2.0)
    >>> with mon.track("db.save", user_id=42):
    ...     pass
    >>> mon.stats()["db.save"].count
    1
    """

    def __init__(
        self,
        slow_threshold: float = 2.0,
        *,
        slow_thresholds: Mapping[str, float] | None = None,
        health: HealthThresholds | None = None,
        checks: Mapping[str, HealthCheck] | None = None,
        check_timeout: float = 5.0,
        max_names: int = 256,
        slow_log_size: int = 100,
        clock: Clock = time.perf_counter,
        logger: logging.Logger | None = None,
    ) -> None:
        self._slow_threshold = check_positive("slow_threshold", slow_threshold)
        self._slow_thresholds: dict[str, float] = {}
        for name, seconds in (slow_thresholds or {}).items():
            if not isinstance(name, str):
                raise _bad_name(name)
            self._slow_thresholds[name] = check_positive(f"slow_thresholds[{name!r}]", seconds)
        if health is not None and not isinstance(health, HealthThresholds):
            raise TypeError(f"health must be HealthThresholds, got {type(health).__name__}")
        self._thresholds = health or HealthThresholds()
        self._checks = CheckRunner(checks or {}, check_positive("check_timeout", check_timeout))
        self._max_names = check_positive_int("max_names", max_names)
        self._slow_log: deque[SlowOperation] = deque(
            maxlen=check_positive_int("slow_log_size", slow_log_size)
        )
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {type(clock).__name__}")
        self._clock = clock
        self._logger = logger or _logger
        self._process = ProcessReader()
        self._lock = threading.Lock()
        self._ops: dict[str, _Operation] = {}
        self._overflowed = 0
        self._loop_lag: float | None = None
        self._loop_lag_max: float | None = None
        self._started = clock()
        # Health looks at a recent window: cumulative figures minus a baseline
        # taken one or two windows ago (no cost on the recording path).
        self._baselines: deque[tuple[float, dict[str, tuple[Histogram, int]]]] = deque(
            [(self._started, {})], maxlen=2
        )

    # ------------------------------------------------------------------ recording

    def record(
        self, name: str, seconds: float, /, *, error: bool = False, **context: object
    ) -> None:
        """Count one operation that took ``seconds``.

        Args:
            name: the operation, e.g. ``"db.save"`` or ``"handler.start"``.
            seconds: its duration (finite, >= 0).
            error: whether it failed.
            **context: reported if the operation is slow (``user_id=42, update="message"``).

        Raises:
            TypeError: ``name`` is not a str or ``seconds`` not a number.
            ValueError: ``seconds`` is negative, NaN or infinite.
        """
        if type(name) is not str:
            raise _bad_name(name)
        if type(seconds) is not float:
            seconds = _as_seconds(seconds)
        if not 0.0 <= seconds < _INF:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._add(name, seconds, error, context)

    def track(self, name: str, /, **context: object) -> Tracker:
        """Time a ``with`` or ``async with`` block as operation ``name``.

        Args:
            name: the operation.
            **context: reported if the block is slow (``user_id=42, chat_id=42, update="message"``).

        Raises:
            TypeError: ``name`` is not a str.
        """
        if type(name) is not str:
            raise _bad_name(name)
        return Tracker(self, name, context)

    def timed(
        self, name: str | None = None, /, **context: object
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator timing every call of a sync or async function (signature kept).

        Args:
            name: the operation (default: the function's ``module.qualname``).
            **context: reported with every slow call.

        Raises:
            TypeError: ``name`` is not a str, or the function is a generator
                (its body runs after the call returns, so it cannot be timed).
        """
        if name is not None and type(name) is not str:
            raise _bad_name(name)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                raise TypeError(f"timed() cannot time the generator function {fn.__qualname__}")
            op = name or f"{fn.__module__}.{fn.__qualname__}"
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def timed_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    with Tracker(self, op, {**context}):
                        return await fn(*args, **kwargs)

                return timed_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def timed_sync(*args: P.args, **kwargs: P.kwargs) -> R:
                with Tracker(self, op, {**context}):
                    return fn(*args, **kwargs)

            return timed_sync

        return decorate

    def _stopwatch(self, name: str, context_of: Callable[[Any], dict[str, object]]) -> Stopwatch:
        """A cheap way to time one operation name on a per-update path.

        ``stop(started, error, source)``, with ``started`` a reading of this
        monitor's clock, counts like ``record(name, clock() - started,
        error=error, **context_of(source))`` but builds the context only when
        the sample is slow: the common sample allocates nothing.

        Raises:
            TypeError: ``name`` is not a str.
            ValueError: ``name`` is empty.
        """
        if type(name) is not str:
            raise _bad_name(name)
        if not name:
            raise ValueError("operation name must not be empty")
        threshold = self._slow_thresholds.get(name, self._slow_threshold)
        ops = self._ops  # cleared in place by reset(), never replaced
        lock = self._lock
        clock = self._clock
        add = self._add
        note_slow = self._note_slow

        def stop(started: float, error: bool, source: Any) -> None:
            seconds = clock() - started
            if seconds < 0.0:
                seconds = 0.0
            with lock:
                op = ops.get(name)
                if op is not None:
                    op.histogram.record(seconds)
                    if error:
                        op.errors += 1
                    if seconds <= threshold:
                        return
                    op.slow += 1
            if op is None:  # a new name (or past max_names): the full path
                add(name, seconds, error, context_of(source))
            else:
                note_slow(name, seconds, threshold, error, context_of(source))

        return stop

    def _add(self, name: str, seconds: float, error: bool, context: dict[str, object]) -> None:
        threshold = self._slow_thresholds.get(name, self._slow_threshold)
        slow = seconds > threshold
        announce = False
        with self._lock:
            op = self._ops.get(name)
            if op is None:
                op, announce = self._new_operation(name)
            op.histogram.record(seconds)
            if error:
                op.errors += 1
            if slow:
                op.slow += 1
        if slow:
            self._note_slow(name, seconds, threshold, error, context)
        if announce:  # once, outside the lock (a log handler may record too)
            self._logger.warning(
                "operation names reached max_names=%d: further names are counted as %r",
                self._max_names,
                OTHER_OPERATION,
            )

    def _new_operation(self, name: str) -> tuple[_Operation, bool]:
        """The operation for a name not seen yet, and whether the cap was just reached."""
        # Called under the lock, once per distinct name (per sample once capped).
        if not name:
            raise ValueError("operation name must not be empty")
        if len(self._ops) < self._max_names + (OTHER_OPERATION in self._ops):
            op = self._ops[name] = _Operation()
            return op, False
        self._overflowed += 1
        other = self._ops.get(OTHER_OPERATION)
        if other is not None:
            return other, False
        other = self._ops[OTHER_OPERATION] = _Operation()
        return other, True

    def _note_slow(
        self, name: str, seconds: float, threshold: float, error: bool, context: dict[str, object]
    ) -> None:
        self._slow_log.append(SlowOperation(name, seconds, threshold, error, context, time.time()))
        detail = "".join(f" {key}={value!r}" for key, value in context.items())
        self._logger.warning(
            "slow operation %s took %s (threshold %s)%s%s",
            name,
            format_seconds(seconds),
            format_seconds(threshold),
            " and failed" if error else "",
            detail,
            extra={
                "botscale_operation": name,
                "botscale_seconds": seconds,
                "botscale_context": dict(context),
            },
        )

    def note_loop_lag(self, seconds: float) -> None:
        """Report one event-loop lag measurement (the probe calls this)."""
        seconds = max(0.0, _as_seconds(seconds))
        with self._lock:
            self._loop_lag = seconds
            if self._loop_lag_max is None or seconds > self._loop_lag_max:
                self._loop_lag_max = seconds

    # ------------------------------------------------------------------ reading

    def _take(self, *, reset: bool) -> _Taken:
        """Copy everything under one hold of the lock (and clear it, atomically, on reset)."""
        now = self._clock()
        with self._lock:
            ops = {n: (o.histogram.copy(), o.errors, o.slow) for n, o in self._ops.items()}
            taken = _Taken(
                now,
                ops,
                self._overflowed,
                self._loop_lag,
                self._loop_lag_max,
                tuple(self._slow_log),
            )
            # Health looks at a recent window: the copies minus a baseline taken
            # one or two windows ago (taken here, so never newer than the copies).
            window = self._thresholds.window
            if window is not None:
                if now - self._baselines[-1][0] >= window:
                    self._baselines.append((now, {n: (h, e) for n, (h, e, _) in ops.items()}))
                taken.since, taken.baseline = self._baselines[0]
            if reset:
                self._clear(now)
        return taken

    def histograms(self) -> dict[str, Histogram]:
        """Copies of every operation's histogram (for exporters that want buckets)."""
        with self._lock:
            return {n: o.histogram.copy() for n, o in self._ops.items()}

    def stats(self, *, reset: bool = False) -> MonitorSnapshot:
        """A consistent snapshot: per-operation figures, process figures, health.

        Health here applies the thresholds only; pluggable checks run in
        :meth:`check_health` / :meth:`acheck_health` and on ``/health``.

        Args:
            reset: start afresh, atomically: no sample falls between this
                snapshot and the next (what a periodic report needs).
        """
        taken = self._take(reset=reset)
        operations: dict[str, OperationStats] = {}
        for name, (hist, errors, slow) in taken.ops.items():
            p50, p95, p99 = hist.quantiles(_QUANTILES)
            operations[name] = OperationStats(
                name=name,
                count=hist.count,
                errors=errors,
                slow=slow,
                error_rate=errors / hist.count,
                total=hist.sum,
                mean=hist.mean,
                min=hist.min,
                max=hist.max,
                p50=p50,
                p95=p95,
                p99=p99,
            )
        process = ProcessStats(
            rss_bytes=self._process.rss_bytes(),
            rss_source=self._process.rss_source,
            cpu_seconds=self._process.cpu_seconds(),
            threads=self._process.threads(),
            uptime=max(0.0, taken.now - self._started),
            event_loop_lag=taken.loop_lag,
            event_loop_lag_max=taken.loop_lag_max,
        )
        status, reasons = evaluate_health(
            self._thresholds, taken.window_figures(), process, taken.period()
        )
        return MonitorSnapshot(
            operations=operations,
            process=process,
            health=Health(status, reasons),
            slow_operations=taken.slow_log,
            overflowed=taken.overflowed,
            max_names=self._max_names,
        )

    def log_summary(self, level: int = logging.INFO, *, reset: bool = False) -> MonitorSnapshot:
        """Log one readable summary of :meth:`stats` and return the snapshot.

        Args:
            level: the logging level.
            reset: start counting afresh with this summary (an hourly report, say).
        """
        snapshot = self.stats(reset=reset)
        self._logger.log(level, "%s", snapshot.format())
        return snapshot

    def reset(self) -> None:
        """Forget every sample, slow operation and lag reading (configuration stays)."""
        now = self._clock()
        with self._lock:
            self._clear(now)

    def _clear(self, now: float) -> None:
        # Called under the lock.
        self._ops.clear()
        self._slow_log.clear()
        self._overflowed = 0
        self._loop_lag = self._loop_lag_max = None
        self._baselines.clear()
        self._baselines.append((now, {}))

    # ------------------------------------------------------------------ health

    @property
    def thresholds(self) -> HealthThresholds:
        """The health thresholds in force."""
        return self._thresholds

    def add_check(self, name: str, check: HealthCheck) -> None:
        """Add (or replace) a named health check: a sync or async zero-argument callable.

        Raises:
            TypeError: ``name`` is not a non-empty str or ``check`` is not callable.
        """
        self._checks.add(name, check)

    def remove_check(self, name: str) -> None:
        """Remove a health check (no error if it is not there)."""
        self._checks.remove(name)

    def _combine(self, thresholds: Health, checks: dict[str, str]) -> Health:
        failed = tuple(f"check {name}: {text}" for name, text in checks.items() if text != "ok")
        if failed:
            return Health(HealthStatus.UNHEALTHY, failed + thresholds.reasons, checks)
        return Health(thresholds.status, thresholds.reasons, checks)

    def check_health(self, *, loop: asyncio.AbstractEventLoop | None = None) -> Health:
        """Thresholds plus every pluggable check, from synchronous code.

        Args:
            loop: a running event loop (in another thread) to await async checks
                in, so they can use clients bound to it; else they run in a
                fresh loop.
        """
        return self._combine(self.stats().health, self._checks.run(loop))

    async def acheck_health(self) -> Health:
        """Thresholds plus every pluggable check, from a running event loop."""
        return self._combine(self.stats().health, await self._checks.arun())

    # ------------------------------------------------------------------ background work

    async def run_lag_probe(
        self, interval: float = 0.5, *, sleep: AsyncSleep | None = None
    ) -> None:
        """Measure event-loop lag until cancelled: ``asyncio.create_task(mon.run_lag_probe())``.

        Every ``interval`` seconds it sleeps and notes how much later than asked
        it woke up -- the time the loop was busy with something else.
        """
        interval = check_positive("interval", interval)
        pause = sleep or asyncio.sleep
        while True:
            start = self._clock()
            await pause(interval)
            self.note_loop_lag(self._clock() - start - interval)

    async def run_summary(
        self,
        every: float = 3600.0,
        *,
        reset: bool = False,
        level: int = logging.INFO,
        sleep: AsyncSleep | None = None,
    ) -> None:
        """Log a summary every ``every`` seconds until cancelled (an asyncio task).

        A failing summary is logged and the loop goes on.
        """
        every = check_positive("every", every)
        pause = sleep or asyncio.sleep
        while True:
            await pause(every)
            try:
                self.log_summary(level, reset=reset)
            except Exception:
                self._logger.exception("performance summary failed")

    def start_summary_thread(
        self, every: float = 3600.0, *, reset: bool = False, level: int = logging.INFO
    ) -> SummaryThread:
        """Log a summary every ``every`` seconds from a daemon thread; ``.stop()`` ends it."""
        return SummaryThread(self, check_positive("every", every), reset=reset, level=level)

    # ------------------------------------------------------------------ serving

    def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, registry: CollectorRegistry | None = None
    ) -> MonitorServer:
        """An HTTP server for ``/health``, ``/stats`` and ``/metrics``, not yet started.

        Use ``async with mon.serve(port=8080) as server:`` in asyncio code (async
        checks then run in that loop) or ``with mon.serve(...)``; see
        :meth:`serve_in_thread`.  Port 0 picks a free port (``server.port``).

        Args:
            host: interface to bind, loopback by default.
            port: TCP port; 0 for any free one.
            registry: a ``prometheus_client.CollectorRegistry`` to expose on
                ``/metrics`` (default: one holding just this monitor).
        """
        from ._monitor_server import MonitorServer

        return MonitorServer(self, host, port, registry=registry)

    def serve_in_thread(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        registry: CollectorRegistry | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> MonitorServer:
        """Start the HTTP server in a background thread and return it (``.stop()`` it)."""
        return self.serve(host, port, registry=registry).start(loop=loop)

    def __repr__(self) -> str:
        return (
            f"PerformanceMonitor(slow_threshold={self._slow_threshold}, "
            f"operations={len(self._ops)}, max_names={self._max_names})"
        )


class SummaryThread:
    """A daemon thread logging the monitor's summary periodically; stop it with :meth:`stop`."""

    def __init__(
        self, monitor: PerformanceMonitor, every: float, *, reset: bool, level: int
    ) -> None:
        self._stop = threading.Event()
        self._monitor = monitor
        self._every = every
        self._reset = reset
        self._level = level
        self._thread = threading.Thread(target=self._run, daemon=True, name="botscale-summary")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._monitor.log_summary(self._level, reset=self._reset)
            except Exception:
                self._monitor._logger.exception("performance summary failed")

    @property
    def running(self) -> bool:
        """Whether the thread is still alive."""
        return self._thread.is_alive()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
