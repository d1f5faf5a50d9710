"""Scenarios and the load driver: many virtual users playing against one bot.

Each virtual user runs its scenario in a closed loop — send, wait for the
bot's answer (bounded by ``reply_timeout``), think, repeat — until the
profile's duration is over.  A ramp starts the users in equal stages so the
report can show latency against the number of active users.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeAlias

from .._errors import ConfigurationError
from .._validation import check_non_negative, check_positive, check_positive_int, check_type
from ._api import Exchange

if TYPE_CHECKING:
    from ._simulator import TelegramSimulator
    from ._users import VirtualChat, VirtualUser

__all__ = [
    "Burst",
    "LoadProfile",
    "LoadResult",
    "PressButton",
    "Progress",
    "Scenario",
    "SendCommand",
    "SendText",
    "Step",
    "Think",
    "run_load",
]


@dataclass(frozen=True, slots=True)
class SendText:
    """Send a text message; ``{n}`` is the user's message counter, ``{user}`` its id."""

    text: str = "hello {n}"


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send ``/command args`` (``command`` without the slash)."""

    command: str = "start"
    args: str = ""


@dataclass(frozen=True, slots=True)
class PressButton:
    """Press a button of the bot's last inline keyboard (a callback query).

    Attributes:
        button: the button's text, its index, or ``None`` for a random one.
        fallback: text to send instead when there is no keyboard to press
            (e.g. ``"/start"`` to restart a quiz); ``None`` skips the step
            (counted in ``skipped_steps``).
    """

    button: str | int | None = None
    fallback: str | None = None


@dataclass(frozen=True, slots=True)
class Burst:
    """Send ``count`` messages at once, then wait for all the answers."""

    count: int = 5
    text: str = "burst {n}"

    def __post_init__(self) -> None:
        check_positive_int("count", self.count)


@dataclass(frozen=True, slots=True)
class Think:
    """Pause ``low`` seconds, or a uniform random time in ``[low, high]``."""

    low: float
    high: float | None = None

    def __post_init__(self) -> None:
        check_non_negative("low", self.low)
        if self.high is not None:
            check_non_negative("high", self.high)
            if self.high < self.low:
                raise ConfigurationError(f"high must be >= low ({self.low}), got {self.high}")


Step: TypeAlias = SendText | SendCommand | PressButton | Burst | Think
"""One step of a :class:`Scenario`."""
_STEP_TYPES: Final = (SendText, SendCommand, PressButton, Burst, Think)


@dataclass(frozen=True)
class Scenario:
    """What each virtual user does: ``start`` once, then ``steps`` in a loop.

    After every step that sends, the user waits for the bot's answers, then
    thinks for a uniform random time in ``think`` seconds.

    Args:
        steps: the repeated steps (at least one).
        start: steps played once at the beginning (e.g. ``/start``).
        think: ``(low, high)`` seconds of thinking after each sending step.
        name: a label for reports.
    """

    steps: tuple[Step, ...]
    start: tuple[Step, ...] = ()
    think: tuple[float, float] = (1.0, 3.0)
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "start", tuple(self.start))
        if not self.steps:
            raise ConfigurationError("steps must hold at least one step")
        for step in (*self.start, *self.steps):
            check_type(
                "step", step, _STEP_TYPES, "SendText, SendCommand, PressButton, Burst or Think"
            )
        if not any(not isinstance(s, Think) for s in self.steps):
            raise ConfigurationError("steps must send something, not only Think")
        low, high = self.think
        check_non_negative("think low", low)
        check_non_negative("think high", high)
        if high < low:
            raise ConfigurationError(
                f"think must be (low, high) with low <= high, got {self.think}"
            )

    def with_think(self, low: float, high: float) -> Scenario:
        """The same scenario with another think time."""
        return Scenario(self.steps, self.start, (low, high), self.name)

    @classmethod
    def chat(cls, think: tuple[float, float] = (1.0, 3.0)) -> Scenario:
        """``/start``, then text messages: the echo-bot workload."""
        return cls((SendText("hello {n}"),), (SendCommand("start"),), think, "chat")

    @classmethod
    def commands(cls, think: tuple[float, float] = (1.0, 3.0)) -> Scenario:
        """Commands and texts mixed: ``/start``, text, ``/help``, text."""
        steps = (
            SendCommand("start"),
            SendText("question {n}"),
            SendCommand("help"),
            SendText("ok {n}"),
        )
        return cls(steps, (), think, "commands")

    @classmethod
    def quiz(cls, think: tuple[float, float] = (1.0, 3.0)) -> Scenario:
        """``/start``, then press a random inline button of each question (restart with
        ``/start`` when there is no keyboard)."""
        return cls((PressButton(None, fallback="/start"),), (SendCommand("start"),), think, "quiz")

    @classmethod
    def bursts(cls, think: tuple[float, float] = (2.0, 5.0)) -> Scenario:
        """Five messages at once, then a pause: impatient users (meets the per-chat limit)."""
        return cls((Burst(5, "burst {n}"),), (), think, "bursts")

    @classmethod
    def named(cls, name: str, think: tuple[float, float] | None = None) -> Scenario:
        """A built-in scenario by name: ``chat``, ``commands``, ``quiz`` or ``bursts``.

        Raises:
            ConfigurationError: unknown name.
        """
        factory = _NAMED.get(name)
        if factory is None:
            raise ConfigurationError(f"scenario must be one of {sorted(_NAMED)}, got {name!r}")
        scenario = factory(cls)
        return scenario if think is None else scenario.with_think(*think)


_NAMED: Final[dict[str, Callable[[type[Scenario]], Scenario]]] = {
    "chat": lambda cls: cls.chat(),
    "commands": lambda cls: cls.commands(),
    "quiz": lambda cls: cls.quiz(),
    "bursts": lambda cls: cls.bursts(),
}


@dataclass(frozen=True)
class LoadProfile:
    """How many users, for how long, how they arrive.

    Args:
        users: virtual users at full load (>= 1).
        duration: seconds of load (> 0).
        ramp_steps: ``1`` starts every user at once; ``k > 1`` starts them in
            ``k`` equal stages of ``duration / k`` seconds each, so each stage
            measures one load level.
        group_size: ``0`` puts every user in a private chat; ``k > 0`` puts
            users in group chats of ``k`` members instead.
        reply_timeout: seconds a user waits for an answer before moving on.
        seed: seed of the random think times and button choices.
    """

    users: int
    duration: float
    ramp_steps: int = 1
    group_size: int = 0
    reply_timeout: float = 10.0
    seed: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("users", self.users)
        check_positive("duration", self.duration)
        check_positive_int("ramp_steps", self.ramp_steps)
        if self.ramp_steps > self.users:
            raise ConfigurationError(
                f"ramp_steps must be <= users ({self.users}), got {self.ramp_steps}"
            )
        check_positive_int("group_size", self.group_size, minimum=0)
        check_positive("reply_timeout", self.reply_timeout)

    def stage_users(self) -> list[int]:
        """Active users in each stage (the last is ``users``)."""
        k = self.ramp_steps
        return [math.ceil(self.users * (s + 1) / k) for s in range(k)]


@dataclass(frozen=True, slots=True)
class Progress:
    """A live snapshot of a running load test (for progress displays)."""

    elapsed: float
    duration: float
    stage: int
    stages: int
    active_users: int
    sent: int
    answered: int
    rate_limited: int
    errors: int
    recent_p95: float | None


@dataclass
class LoadResult:
    """The raw outcome of :func:`run_load` (see ``LoadReport`` for the figures).

    Attributes:
        profile: the load profile played.
        scenario: the scenario played.
        exchanges: every update sent, in order; ``Exchange.tag`` is its stage.
        stage_users: active users per stage.
        stage_length: seconds per stage.
        stage_rate_limited: ``429`` answers counted during each stage.
        stage_errors: other error answers counted during each stage.
        elapsed: seconds of load actually played.
        skipped_steps: button presses skipped for want of a keyboard.
        aborted: why the run stopped early, or ``None``.
    """

    profile: LoadProfile
    scenario: Scenario
    exchanges: list[Exchange] = field(default_factory=list)
    stage_users: list[int] = field(default_factory=list)
    stage_length: float = 0.0
    stage_rate_limited: list[int] = field(default_factory=list)
    stage_errors: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    skipped_steps: int = 0
    aborted: str | None = None


def _recent_p95(exchanges: Sequence[Exchange], since: float) -> float | None:
    latencies: list[float] = []
    for exchange in reversed(exchanges):
        if exchange.sent_at < since:
            break
        if exchange.latency is not None:
            latencies.append(exchange.latency)
    if not latencies:
        return None
    latencies.sort()
    return latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]


async def run_load(
    sim: TelegramSimulator,
    profile: LoadProfile,
    scenario: Scenario | None = None,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 0.5,
    should_abort: Callable[[], str | None] | None = None,
    silent_timeout: float | None = None,
) -> LoadResult:
    """Play ``scenario`` with ``profile``'s users against the bot connected to ``sim``.

    The bot must already be running against the simulator.  Returns after
    ``profile.duration`` seconds plus at most ``profile.reply_timeout``
    seconds for the last answers — or earlier, with ``aborted`` set, when
    ``should_abort()`` returns a reason or the bot answered nothing for
    ``silent_timeout`` seconds (default: ``reply_timeout``) after the first
    update.

    Args:
        sim: the running simulator.
        profile: users, duration, ramp.
        scenario: what each user does (default :meth:`Scenario.chat`).
        on_progress: called every ``progress_interval`` seconds with a snapshot.
        progress_interval: seconds between progress snapshots.
        should_abort: polled as often; a returned string stops the run.
        silent_timeout: see above.
    """
    if scenario is None:
        scenario = Scenario.chat()
    check_type("profile", profile, LoadProfile, "a LoadProfile")
    check_type("scenario", scenario, Scenario, "a Scenario")
    check_positive("progress_interval", progress_interval)
    silent_after = profile.reply_timeout if silent_timeout is None else silent_timeout
    loop = asyncio.get_running_loop()
    rng = random.Random(profile.seed)
    stage_users = profile.stage_users()
    stages = len(stage_users)
    stage_length = profile.duration / stages
    result = LoadResult(profile, scenario, stage_users=stage_users, stage_length=stage_length)
    stats = sim.api.stats

    users = [sim.user() for _ in range(profile.users)]
    chats: list[VirtualChat | None] = [None] * profile.users
    if profile.group_size:
        groups = [
            sim.group(f"load group {g + 1}")
            for g in range(math.ceil(profile.users / profile.group_size))
        ]
        chats = [groups[i // profile.group_size] for i in range(profile.users)]

    t0 = loop.time()
    deadline = t0 + profile.duration
    low, high = scenario.think

    def stage_now() -> int:
        return min(stages - 1, max(0, int((loop.time() - t0) / stage_length)))

    async def pause(seconds: float) -> None:
        remaining = deadline - loop.time()
        if remaining > 0:
            await asyncio.sleep(min(seconds, remaining))

    def steps_of(scn: Scenario) -> Iterable[Step]:
        return itertools.chain(scn.start, itertools.cycle(scn.steps))

    async def play(
        index: int, user: VirtualUser, chat: VirtualChat | None, user_rng: random.Random
    ) -> None:
        first_stage = next(s for s, n in enumerate(stage_users) if n > index)
        jitter = user_rng.uniform(0.0, min(high, stage_length / 4))
        await asyncio.sleep(max(0.0, t0 + first_stage * stage_length + jitter - loop.time()))
        counter = 0
        for step in steps_of(scenario):
            if loop.time() >= deadline:
                return
            if isinstance(step, Think):
                await pause(
                    step.low if step.high is None else user_rng.uniform(step.low, step.high)
                )
                continue
            sent: list[Exchange] = []
            fmt = {"user": user.id}
            if isinstance(step, SendText):
                sent.append(user.send(step.text.format(n=counter, **fmt), chat=chat))
            elif isinstance(step, SendCommand):
                sent.append(user.command(step.command, step.args, chat=chat))
            elif isinstance(step, Burst):
                sent.extend(
                    user.send(step.text.format(n=counter + i, **fmt), chat=chat)
                    for i in range(step.count)
                )
            else:
                try:
                    sent.append(user.press(step.button, chat=chat, rng=user_rng))
                except LookupError:
                    if step.fallback is None:
                        result.skipped_steps += 1
                    else:
                        sent.append(user.send(step.fallback, chat=chat))
            counter += len(sent)
            stage = stage_now()
            for exchange in sent:
                exchange.tag = stage
            result.exchanges.extend(sent)
            for exchange in sent:
                if exchange.filtered:
                    continue
                wait = min(profile.reply_timeout, deadline - loop.time())
                if wait <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await exchange.wait(wait)
            for exchange in sent:
                # Only latencies matter here: drop the answer so a long run stays small.
                exchange.answer = None
            await pause(user_rng.uniform(low, high) if high > 0 else 0.0)
            if high == 0:
                await asyncio.sleep(0)

    tasks = [
        asyncio.create_task(play(i, user, chats[i], random.Random(rng.random())))
        for i, user in enumerate(users)
    ]
    replies0 = stats.replies
    marks_rl = [stats.rate_limited]
    marks_err = [stats.errors + stats.webhook_failures]
    current_stage = 0

    def snapshot(now: float) -> Progress:
        stage = stage_now()
        return Progress(
            elapsed=min(now - t0, profile.duration),
            duration=profile.duration,
            stage=stage,
            stages=stages,
            active_users=stage_users[stage],
            sent=len(result.exchanges),
            answered=stats.replies - replies0,
            rate_limited=stats.rate_limited - marks_rl[0],
            errors=stats.errors + stats.webhook_failures - marks_err[0],
            recent_p95=_recent_p95(result.exchanges, now - 5.0),
        )

    try:
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=progress_interval)
            now = loop.time()
            stage = stage_now()
            while current_stage < stage:
                current_stage += 1
                marks_rl.append(stats.rate_limited)
                marks_err.append(stats.errors + stats.webhook_failures)
            if on_progress is not None:
                on_progress(snapshot(now))
            reason = should_abort() if should_abort is not None else None
            if (
                reason is None
                and result.exchanges
                and stats.replies == replies0
                and sim.api.clock() - result.exchanges[0].sent_at > silent_after
            ):
                reason = (
                    f"the bot answered none of the {len(result.exchanges)} updates "
                    f"sent in {silent_after:g} s"
                )
            if reason is not None:
                result.aborted = reason
                break
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        result.elapsed = min(loop.time() - t0, profile.duration)
        if result.aborted is None:
            # Late answers still count: wait (bounded) for the stragglers.
            expected = sum(1 for e in result.exchanges if not e.filtered)
            grace_end = loop.time() + profile.reply_timeout
            while loop.time() < grace_end and stats.replies - replies0 < expected:
                await asyncio.sleep(0.05)
                if should_abort is not None and should_abort() is not None:
                    break
    finally:
        for task in tasks:
            task.cancel()
    while len(marks_rl) < stages:
        marks_rl.append(stats.rate_limited)
        marks_err.append(stats.errors + stats.webhook_failures)
    marks_rl.append(stats.rate_limited)
    marks_err.append(stats.errors + stats.webhook_failures)
    result.stage_rate_limited = [marks_rl[i + 1] - marks_rl[i] for i in range(stages)]
    result.stage_errors = [marks_err[i + 1] - marks_err[i] for i in range(stages)]
    if on_progress is not None:
        on_progress(snapshot(loop.time()))
    return result
