"""The capacity report of a load test: figures, ramp stages, text, JSON, plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from .._compat import require
from ._load import LoadResult

__all__ = ["LoadReport", "StageReport", "build_report", "percentile", "plot_report"]

RECOMMENDED_SHARE: Final = 0.7
"""The recommended user count is this share of the measured capacity."""


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-quantile (``0 < q <= 1``) of sorted values, ``None`` if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class StageReport:
    """One load level of a ramp.

    Attributes:
        users: virtual users active during the stage.
        sent: updates sent during the stage.
        answered: of those, answered by the bot (at any time).
        unanswered: of those, never answered.
        within_target: share of the stage's updates answered within the p95 target.
        p50: median reply latency in seconds (answered updates), ``None`` if none.
        p95: 95th percentile.
        p99: 99th percentile.
        max: slowest reply.
        rate_limited: ``429`` answers the bot got during the stage.
        errors: other error answers during the stage.
        requests_per_minute: answered updates per minute during the stage.
        passed: ``within_target >= 0.95``: the stage's p95, counting
            unanswered updates as infinitely late, is under the target.
    """

    users: int
    sent: int
    answered: int
    unanswered: int
    within_target: float
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    rate_limited: int
    errors: int
    requests_per_minute: float
    passed: bool


@dataclass(frozen=True)
class LoadReport:
    """What ``botscale loadtest`` measured.

    Latencies are seconds from the update's creation to the bot's first
    answer in its chat (or ``answerCallbackQuery``), over answered updates.

    Attributes:
        target: the ``module:function`` tested (``None`` for an in-process run).
        framework: the bot's framework as detected.
        mode: ``"polling"`` or ``"webhook"``.
        workers: bot processes (webhook mode may run several).
        scenario: the scenario's name.
        users: virtual users at full load.
        duration: seconds of load played.
        ramp_steps: stages of the ramp (``1``: no ramp).
        updates_sent: updates the users sent.
        replies: updates the bot answered.
        unanswered: updates never answered (filtered ones excluded).
        filtered: updates the bot's ``allowed_updates`` excluded.
        errors: error answers the bot got (400, 401, 404, 409, 500) plus
            failed webhook deliveries.
        rate_limited: ``429 Too Many Requests`` answers the bot got.
        skipped_steps: button presses skipped for want of a keyboard.
        p50, p95, p99, max, mean: reply latency in seconds (``None`` if no reply).
        replies_per_second: replies over the load duration.
        peak_rss_bytes: peak resident memory of the bot process(es), summed.
        bot_cpu_percent: CPU the bot process(es) used during the load, in percent
            of one core (``None`` where it cannot be read).
        simulator_cpu_percent: CPU the simulator and virtual users used, same
            unit: near 100 the instrument itself was the bottleneck.
        p95_target: the latency target of the ramp, seconds.
        stages: the ramp's stages (one when there is no ramp).
        capacity_users: with a ramp, the largest user count whose stage stayed
            under the target (stages are read in order up to the first
            failure); ``None`` without a ramp.
        recommended_users: 70 % of ``capacity_users`` (rounded down).
        requests_per_minute_at_capacity: answered updates per minute at capacity.
        requests_per_minute_at_recommended: the same per-user rate times the
            recommended users (an estimate).
        notes: remarks worth reading (e.g. "capacity is at least N").
        aborted: why the run stopped early, else ``None``.
    """

    target: str | None
    framework: str | None
    mode: str
    workers: int
    scenario: str
    users: int
    duration: float
    ramp_steps: int
    updates_sent: int
    replies: int
    unanswered: int
    filtered: int
    errors: int
    rate_limited: int
    skipped_steps: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None
    replies_per_second: float
    peak_rss_bytes: int | None
    p95_target: float
    stages: tuple[StageReport, ...]
    capacity_users: int | None
    recommended_users: int | None
    requests_per_minute_at_capacity: float | None
    requests_per_minute_at_recommended: float | None
    notes: tuple[str, ...] = field(default=())
    aborted: str | None = None
    bot_cpu_percent: float | None = None
    simulator_cpu_percent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (``stages`` as a list of dicts)."""
        data = asdict(self)
        data["stages"] = [asdict(s) for s in self.stages]
        data["notes"] = list(self.notes)
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON."""
        return json.dumps(self.to_dict(), indent=indent)

    def format(self) -> str:
        """The report as plain text, as ``botscale loadtest`` prints it."""
        return "\n".join(_text_lines(self))


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def _text_lines(r: LoadReport) -> list[str]:
    what = r.target or "in-process bot"
    workers = f", {r.workers} workers" if r.workers > 1 else ""
    share = f" ({100 * r.replies / r.updates_sent:.1f} %)" if r.updates_sent else ""
    lines = [
        f"botscale loadtest: {what} ({r.framework or '?'}, {r.mode}{workers})",
        f"  {r.users} users, {r.duration:g} s, scenario {r.scenario}"
        + (f", ramp in {r.ramp_steps} steps" if r.ramp_steps > 1 else ""),
        "",
        f"  updates sent      {r.updates_sent}",
        f"  replies           {r.replies}{share}",
        f"  unanswered        {r.unanswered}",
        f"  errors            {r.errors}",
        f"  429 answers       {r.rate_limited}",
        f"  latency p50       {_seconds(r.p50)}",
        f"          p95       {_seconds(r.p95)}",
        f"          p99       {_seconds(r.p99)}",
        f"          max       {_seconds(r.max)}",
        f"  replies/s         {r.replies_per_second:.1f}",
        f"  peak RSS (bot)    {_mib(r.peak_rss_bytes)}",
    ]
    if r.bot_cpu_percent is not None or r.simulator_cpu_percent is not None:
        lines.append(
            f"  CPU bot / sim     {_pct(r.bot_cpu_percent)} / {_pct(r.simulator_cpu_percent)}"
            " of one core"
        )
    if r.filtered:
        lines.append(f"  filtered          {r.filtered} (excluded by the bot's allowed_updates)")
    if r.skipped_steps:
        lines.append(f"  skipped steps     {r.skipped_steps} (no inline keyboard to press)")
    if r.ramp_steps > 1:
        lines += ["", f"  ramp (p95 target {r.p95_target:g} s)"]
        lines.append("    users    sent  answered      p50      p95      p99   429s   req/min  ok")
        for s in r.stages:
            lines.append(
                f"    {s.users:5d} {s.sent:7d} {s.answered:9d} {_num(s.p50)} {_num(s.p95)} "
                f"{_num(s.p99)} {s.rate_limited:6d} {s.requests_per_minute:9.0f}  "
                f"{'yes' if s.passed else 'NO'}"
            )
        if r.capacity_users is not None:
            lines += [
                "",
                f"  capacity          {r.capacity_users} users (p95 under {r.p95_target:g} s)",
                f"  recommended       {r.recommended_users} users "
                f"({RECOMMENDED_SHARE:.0%} of capacity)",
                f"  requests/min      {_rpm(r.requests_per_minute_at_capacity)} at capacity, "
                f"~{_rpm(r.requests_per_minute_at_recommended)} at recommended",
            ]
    for note in r.notes:
        lines.append(f"  note: {note}")
    if r.aborted:
        lines.append(f"  ABORTED: {r.aborted}")
    return lines


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def _num(value: float | None) -> str:
    return "       -" if value is None else f"{value:8.3f}"


def _rpm(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def build_report(
    result: LoadResult,
    *,
    p95_target: float = 1.0,
    target: str | None = None,
    framework: str | None = None,
    mode: str = "polling",
    workers: int = 1,
    peak_rss_bytes: int | None = None,
    filtered: int | None = None,
    bot_cpu_percent: float | None = None,
    simulator_cpu_percent: float | None = None,
) -> LoadReport:
    """Compute the capacity report of a :class:`LoadResult`."""
    exchanges = result.exchanges
    live = [e for e in exchanges if not e.filtered]
    latencies = sorted(e.latency for e in live if e.latency is not None)
    stages: list[StageReport] = []
    for index, users in enumerate(result.stage_users):
        mine = [e for e in live if e.tag == index]
        lat = sorted(e.latency for e in mine if e.latency is not None)
        within = sum(1 for x in lat if x <= p95_target) / len(mine) if mine else 0.0
        stages.append(
            StageReport(
                users=users,
                sent=len(mine),
                answered=len(lat),
                unanswered=len(mine) - len(lat),
                within_target=within,
                p50=percentile(lat, 0.50),
                p95=percentile(lat, 0.95),
                p99=percentile(lat, 0.99),
                max=lat[-1] if lat else None,
                rate_limited=result.stage_rate_limited[index]
                if index < len(result.stage_rate_limited)
                else 0,
                errors=result.stage_errors[index] if index < len(result.stage_errors) else 0,
                requests_per_minute=60.0 * len(lat) / result.stage_length
                if result.stage_length
                else 0.0,
                passed=bool(mine) and within >= 0.95,
            )
        )
    notes: list[str] = []
    capacity: int | None = None
    recommended: int | None = None
    rpm_capacity: float | None = None
    rpm_recommended: float | None = None
    if len(stages) > 1:
        best: StageReport | None = None
        for stage in stages:
            if not stage.passed:
                break
            best = stage
        if best is None:
            capacity, recommended, rpm_capacity, rpm_recommended = 0, 0, 0.0, 0.0
            notes.append(
                f"the first stage ({stages[0].users} users) already missed the "
                f"{p95_target:g} s p95 target: ramp with fewer users"
            )
        else:
            capacity = best.users
            recommended = math.floor(RECOMMENDED_SHARE * capacity)
            rpm_capacity = best.requests_per_minute
            rpm_recommended = rpm_capacity * recommended / capacity
            if best is stages[-1]:
                notes.append(
                    f"the p95 target held up to the last stage: capacity is at least "
                    f"{capacity} users, ramp higher to find the limit"
                )
    total_rl = sum(result.stage_rate_limited)
    if total_rl:
        notes.append(
            f"the bot got {total_rl} '429 Too Many Requests' answers: it sent faster than "
            "Telegram's flood limits allow (botscale's outgoing throttle avoids them)"
        )
    if simulator_cpu_percent is not None and simulator_cpu_percent >= 85.0:
        notes.append(
            f"the simulator used {simulator_cpu_percent:.0f} % of a core: at this load the "
            "instrument adds its own queueing, so latencies are pessimistic and the bot's "
            "capacity may be higher than measured"
        )
    duration = result.elapsed or result.profile.duration
    return LoadReport(
        target=target,
        framework=framework,
        mode=mode,
        workers=workers,
        scenario=result.scenario.name,
        users=result.profile.users,
        duration=round(duration, 3),
        ramp_steps=len(stages),
        updates_sent=len(exchanges),
        replies=len(latencies),
        unanswered=len(live) - len(latencies),
        filtered=len(exchanges) - len(live) if filtered is None else filtered,
        errors=sum(result.stage_errors),
        rate_limited=total_rl,
        skipped_steps=result.skipped_steps,
        p50=percentile(latencies, 0.50),
        p95=percentile(latencies, 0.95),
        p99=percentile(latencies, 0.99),
        max=latencies[-1] if latencies else None,
        mean=sum(latencies) / len(latencies) if latencies else None,
        replies_per_second=len(latencies) / duration if duration else 0.0,
        peak_rss_bytes=peak_rss_bytes,
        p95_target=p95_target,
        stages=tuple(stages),
        capacity_users=capacity,
        recommended_users=recommended,
        requests_per_minute_at_capacity=rpm_capacity,
        requests_per_minute_at_recommended=rpm_recommended,
        notes=tuple(notes),
        aborted=result.aborted,
        bot_cpu_percent=None if bot_cpu_percent is None else round(bot_cpu_percent, 1),
        simulator_cpu_percent=None
        if simulator_cpu_percent is None
        else round(simulator_cpu_percent, 1),
    )


def plot_report(report: LoadReport, path: str) -> None:
    """Draw latency percentiles against active users (a ramp) into a PNG/SVG/PDF file.

    Needs matplotlib (extra ``cli``); uses no GUI backend.

    Raises:
        ValueError: the report has no ramp (a single stage), or the file
            extension is not png, svg or pdf.
    """
    if len(report.stages) < 2:
        raise ValueError("plotting needs a ramp: run the load test with ramp_steps >= 2 (--ramp)")
    if not path.lower().endswith((".png", ".svg", ".pdf")):
        raise ValueError(f"plot file must end in .png, .svg or .pdf, got {path!r}")
    figure_mod = require("matplotlib.figure", "cli", feature="--plot")
    fig = figure_mod.Figure(figsize=(8, 4.5), dpi=110)
    ax = fig.add_subplot()
    users = [s.users for s in report.stages]
    for name, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        values = [getattr(s, name) for s in report.stages]
        ax.plot(users, [math.nan if v is None else v for v in values], style, label=name)
    ax.axhline(report.p95_target, color="grey", linestyle="--", label="p95 target")
    if report.capacity_users:
        ax.axvline(report.capacity_users, color="green", linestyle=":", label="capacity")
    if report.recommended_users:
        ax.axvline(report.recommended_users, color="olive", linestyle=":", label="recommended")
    ax.set_xlabel("active virtual users")
    ax.set_ylabel("reply latency (s)")
    ax.set_title(f"{report.target or 'bot'} — {report.framework or '?'}, {report.mode}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
