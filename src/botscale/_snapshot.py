"""What the monitor reports: typed, frozen snapshots, and the health rules.

Everything here is pure data and pure functions; :mod:`botscale._monitor`
fills it in under its lock.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Any

from ._validation import check_non_negative, check_positive, check_positive_int

__all__ = [
    "Health",
    "HealthStatus",
    "HealthThresholds",
    "MonitorSnapshot",
    "OperationStats",
    "ProcessStats",
    "SlowOperation",
    "WindowFigures",
    "evaluate_health",
    "format_seconds",
]

_MIB = 1024 * 1024


def format_seconds(seconds: float) -> str:
    """A duration for people: ``850 us``, ``12.3 ms``, ``1.52 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class HealthStatus(str, enum.Enum):
    """Overall state: ``ok``; ``degraded`` (a threshold crossed); ``unhealthy`` (a check failed)."""

    OK = "ok"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HealthThresholds:
    """When the monitor calls the bot degraded.  ``None`` switches a rule off.

    The defaults are the figures bot operators already use: p95 under 1 s,
    error rate under 1 %, resident memory under 512 MiB, event-loop lag under 1 s.

    Attributes:
        p95: seconds; an operation whose p95 exceeds it degrades health.
        error_rate: fraction in [0, 1]; an operation failing more often degrades health.
        max_rss: bytes of resident memory.
        max_loop_lag: seconds of event-loop lag (needs the lag probe running).
        operation_p95: per-operation overrides of ``p95`` (a slow AI call, say).
        min_count: operations with fewer calls in the window are not judged yet.
        window: seconds of recent history the operation rules look at (between
            ``window`` and ``2 * window`` when health is read regularly);
            ``None`` judges everything since start or :meth:`~botscale.PerformanceMonitor.reset`.

    Raises:
        ValueError, TypeError: a threshold is out of range.
    """

    p95: float | None = 1.0
    error_rate: float | None = 0.01
    max_rss: int | None = 512 * _MIB
    max_loop_lag: float | None = 1.0
    operation_p95: Mapping[str, float] = field(default_factory=dict)
    min_count: int = 20
    window: float | None = 300.0

    def __post_init__(self) -> None:
        if self.p95 is not None:
            check_positive("p95", self.p95)
        if self.error_rate is not None:
            check_non_negative("error_rate", self.error_rate)
            if self.error_rate > 1:
                raise ValueError(f"error_rate must be in [0, 1], got {self.error_rate!r}")
        if self.max_rss is not None:
            check_positive_int("max_rss", self.max_rss)
        if self.max_loop_lag is not None:
            check_positive("max_loop_lag", self.max_loop_lag)
        for name, seconds in self.operation_p95.items():
            if not isinstance(name, str):
                raise TypeError(f"operation_p95 keys must be str, got {type(name).__name__}")
            check_positive(f"operation_p95[{name!r}]", seconds)
        object.__setattr__(self, "operation_p95", _frozen_mapping(self.operation_p95))
        check_positive_int("min_count", self.min_count)
        if self.window is not None:
            check_positive("window", self.window)


@dataclass(frozen=True)
class OperationStats:
    """Figures of one operation name since start (or the last reset).

    Durations are seconds.  Percentiles come from a log-bucketed histogram and
    are within 1 % of the exact nearest-rank percentile; mean, min, max exact.
    """

    name: str
    count: int
    errors: int
    slow: int
    error_rate: float
    total: float
    mean: float
    min: float
    max: float
    p50: float
    p95: float
    p99: float

    def format(self) -> str:
        """One line for people."""
        return (
            f"{self.name}: {self.count} calls, {self.errors} errors "
            f"({self.error_rate:.1%}), {self.slow} slow; mean {format_seconds(self.mean)}, "
            f"p50 {format_seconds(self.p50)}, p95 {format_seconds(self.p95)}, "
            f"p99 {format_seconds(self.p99)}, max {format_seconds(self.max)}"
        )


@dataclass(frozen=True)
class ProcessStats:
    """This process's figures at snapshot time.

    Attributes:
        rss_bytes: resident memory (``None`` when unknown).
        rss_source: ``psutil``, ``procfs``, ``ru_maxrss`` (the *peak*) or ``none``.
        cpu_seconds: user + system CPU time used.
        threads: Python threads alive.
        uptime: seconds since the monitor was created (by its clock).
        event_loop_lag: the last lag the probe measured, ``None`` if it never ran.
        event_loop_lag_max: the largest lag measured since start or reset.
    """

    rss_bytes: int | None
    rss_source: str
    cpu_seconds: float
    threads: int
    uptime: float
    event_loop_lag: float | None = None
    event_loop_lag_max: float | None = None

    def format(self) -> str:
        """One line for people."""
        rss = "unknown" if self.rss_bytes is None else f"{self.rss_bytes / _MIB:.1f} MiB"
        if self.rss_source == "ru_maxrss":
            rss += " (peak)"
        lag = (
            ""
            if self.event_loop_lag is None
            else f", loop lag {format_seconds(self.event_loop_lag)} "
            f"(max {format_seconds(self.event_loop_lag_max or 0.0)})"
        )
        return (
            f"rss {rss}, cpu {self.cpu_seconds:.2f} s, {self.threads} threads, "
            f"up {self.uptime:.0f} s{lag}"
        )


@dataclass(frozen=True)
class Health:
    """The health verdict and why.

    Attributes:
        status: ok, degraded or unhealthy.
        reasons: one readable line per crossed threshold or failed check.
        checks: each pluggable check's outcome, ``"ok"`` or its error text
            (empty when the checks were not run, as in :meth:`PerformanceMonitor.stats`).
    """

    status: HealthStatus
    reasons: tuple[str, ...] = ()
    checks: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", _frozen_mapping(self.checks))

    @property
    def ok(self) -> bool:
        """True while the status is ``ok``."""
        return self.status is HealthStatus.OK

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "status": self.status.value,
            "reasons": list(self.reasons),
            "checks": dict(self.checks),
        }


@dataclass(frozen=True)
class SlowOperation:
    """One operation that took longer than its slow threshold.

    Attributes:
        name: the operation.
        seconds: how long it took.
        threshold: the slow threshold it crossed.
        error: whether it also failed.
        context: what the caller attached (user id, chat id, update type, ...).
        timestamp: wall-clock time it finished (``time.time()``), for people.
    """

    name: str
    seconds: float
    threshold: float
    error: bool
    context: Mapping[str, object]
    timestamp: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "context", _frozen_mapping(self.context))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (context values that JSON cannot hold become strings)."""
        return {
            "name": self.name,
            "seconds": self.seconds,
            "threshold": self.threshold,
            "error": self.error,
            "context": {k: _jsonable(v) for k, v in self.context.items()},
            "timestamp": self.timestamp,
        }


def _jsonable(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@dataclass(frozen=True)
class MonitorSnapshot(Mapping[str, OperationStats]):
    """A consistent copy of everything the monitor knows; a mapping name -> stats.

    ``snapshot["db.save"].p95`` reads one operation; iterate for all of them.

    Attributes:
        operations: per-operation figures by name.
        process: resident memory, CPU, threads, event-loop lag.
        health: the threshold verdict (pluggable checks are not run here).
        slow_operations: the most recent slow operations, oldest first.
        overflowed: samples recorded under ``"<other>"`` because the name cap was reached.
        max_names: the cap on distinct operation names.
    """

    operations: Mapping[str, OperationStats]
    process: ProcessStats
    health: Health
    slow_operations: tuple[SlowOperation, ...] = ()
    overflowed: int = 0
    max_names: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "operations", _frozen_mapping(self.operations))

    def __getitem__(self, name: str) -> OperationStats:
        return self.operations[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    @property
    def count(self) -> int:
        """Calls of every operation together."""
        return sum(op.count for op in self.operations.values())

    @property
    def errors(self) -> int:
        """Failed calls of every operation together."""
        return sum(op.errors for op in self.operations.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``/stats`` serves)."""
        return {
            "operations": {name: asdict(op) for name, op in self.operations.items()},
            "process": asdict(self.process),
            "health": self.health.to_dict(),
            "slow_operations": [slow.to_dict() for slow in self.slow_operations],
            "overflowed": self.overflowed,
            "max_names": self.max_names,
        }

    def to_json(self, **dumps_kwargs: Any) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), **dumps_kwargs)

    def format(self) -> str:
        """The readable multi-line summary :meth:`PerformanceMonitor.log_summary` logs."""
        lines = [
            f"performance: {self.count} calls, {self.errors} errors in "
            f"{len(self.operations)} operations; health {self.health.status.value}"
            + (f" ({'; '.join(self.health.reasons)})" if self.health.reasons else ""),
        ]
        ops = sorted(self.operations.values(), key=lambda op: op.total, reverse=True)
        lines += [f"  {op.format()}" for op in ops]
        if self.overflowed:
            lines.append(
                f"  ({self.overflowed} calls beyond {self.max_names} names counted as <other>)"
            )
        lines.append(f"  process: {self.process.format()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class WindowFigures:
    """What the health rules need of one operation over the recent window."""

    name: str
    count: int
    errors: int
    p95: float


def evaluate_health(
    thresholds: HealthThresholds,
    operations: list[WindowFigures],
    process: ProcessStats,
    period: str = "since start",
) -> tuple[HealthStatus, tuple[str, ...]]:
    """Apply the threshold rules: ``(status, reasons)``; pure, for stats() and the server.

    ``period`` says which calls ``operations`` covers, for the reasons' text.
    """
    reasons: list[str] = []
    span = f" {period}"
    for op in operations:
        if op.count < thresholds.min_count:
            continue
        limit = thresholds.operation_p95.get(op.name, thresholds.p95)
        if limit is not None and op.p95 > limit:
            reasons.append(
                f"{op.name}: p95 {format_seconds(op.p95)} above {format_seconds(limit)}"
                f" ({op.count} calls{span})"
            )
        if thresholds.error_rate is not None and op.errors / op.count > thresholds.error_rate:
            reasons.append(
                f"{op.name}: error rate {op.errors / op.count:.1%} above "
                f"{thresholds.error_rate:.1%} ({op.errors} of {op.count} calls{span})"
            )
    if (
        thresholds.max_rss is not None
        and process.rss_bytes is not None
        and process.rss_bytes > thresholds.max_rss
    ):
        reasons.append(
            f"resident memory {process.rss_bytes / _MIB:.1f} MiB above "
            f"{thresholds.max_rss / _MIB:.1f} MiB"
        )
    lag = process.event_loop_lag
    if thresholds.max_loop_lag is not None and lag is not None and lag > thresholds.max_loop_lag:
        reasons.append(
            f"event loop lag {format_seconds(lag)} above {format_seconds(thresholds.max_loop_lag)}"
        )
    return (HealthStatus.DEGRADED if reasons else HealthStatus.OK), tuple(reasons)
