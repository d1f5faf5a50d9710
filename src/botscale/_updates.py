"""Running updates concurrently: per-chat order, a global cap, bounded intake.

:class:`UpdateRunner` (asyncio: aiogram, PTB, AsyncTeleBot) and
:class:`ThreadedUpdateRunner` (threads: TeleBot) give every adapter the same
rules:

* updates of one chat (the key) run one at a time, in arrival order; different
  chats run concurrently;
* at most ``concurrency`` updates run at once;
* at most ``max_pending`` updates are accepted but not finished: beyond that
  ``submit`` waits, so a backlog stays with Telegram (or in the framework's
  own fetch queue) instead of becoming an unbounded pile of tasks in memory;
* an update running longer than ``time_budget`` is logged as slow (once, while
  it still runs) and, with ``cancel_slow`` (asyncio only), cancelled.

It also holds the polling presets the adapters use: long polling with a 30 s
timeout, batches of 100, and only the update types the bot's handlers use.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, TypeVar

from ._clock import Clock
from ._concurrency import AsyncKeyedLock, ConcurrencyLimiter
from ._incoming import UPDATE_KINDS, UpdateInfo
from ._validation import check_positive, check_positive_int

__all__ = [
    "POLLING_LIMIT",
    "POLLING_TIMEOUT",
    "RunnerHold",
    "RunnerStats",
    "ThreadedUpdateRunner",
    "UpdateRunner",
    "allowed_updates",
]

T = TypeVar("T")

_log: Final = logging.getLogger("botscale.updates")

POLLING_TIMEOUT: Final = 30
"""Seconds a ``getUpdates`` long poll waits for updates (the polling preset)."""
POLLING_LIMIT: Final = 100
"""Updates fetched per ``getUpdates`` (the Bot API's maximum)."""

OrderKey: TypeAlias = "Literal['chat', 'user'] | Callable[[UpdateInfo], Hashable | None]"


def allowed_updates(kinds: Iterable[str]) -> list[str]:
    """The ``allowed_updates`` list for the update kinds a bot handles, in Bot API order.

    Raises:
        ValueError: an unknown kind (a typo would silently drop updates).
    """
    wanted = set(kinds)
    unknown = wanted.difference(UPDATE_KINDS)
    if unknown:
        raise ValueError(
            f"unknown update kinds {sorted(unknown)}; known: {', '.join(UPDATE_KINDS)}"
        )
    return [kind for kind in UPDATE_KINDS if kind in wanted]


@dataclass(frozen=True, slots=True)
class RunnerStats:
    """Counters of an update runner.

    Attributes:
        submitted: updates accepted.
        completed: updates finished (successfully or not).
        failed: updates whose work raised (logged; the runner goes on).
        slow: updates that ran longer than the time budget.
        cancelled: slow updates cancelled (``cancel_slow``).
        running: updates running now.
        pending: accepted but not finished now (running + waiting).
        intake_waits: times ``submit`` had to wait because ``max_pending`` was reached.
    """

    submitted: int
    completed: int
    failed: int
    slow: int
    cancelled: int
    running: int
    pending: int
    intake_waits: int


def _order_key(info: UpdateInfo, mode: OrderKey) -> Hashable | None:
    if mode == "chat":
        return info.chat_id if info.chat_id is not None else info.user_id
    if mode == "user":
        return info.user_id if info.user_id is not None else info.chat_id
    return mode(info)


class _RunnerBase:
    def __init__(
        self,
        concurrency: int,
        max_pending: int | None,
        time_budget: float | None,
        key: OrderKey,
        clock: Clock,
    ) -> None:
        self.concurrency = check_positive_int("concurrency", concurrency)
        if max_pending is None:
            max_pending = 10 * concurrency
        self.max_pending = check_positive_int("max_pending", max_pending, minimum=concurrency)
        self.time_budget = (
            None if time_budget is None else check_positive("time_budget", time_budget)
        )
        if key not in ("chat", "user") and not callable(key):
            raise TypeError(f"key must be 'chat', 'user' or a function of UpdateInfo, got {key!r}")
        self.key = key
        self._clock = clock
        self._counts = collections.Counter[str]()
        self._count_lock = threading.Lock()
        self._pending = 0
        self._running = 0

    def _count(self, name: str) -> None:
        with self._count_lock:
            self._counts[name] += 1

    def _note_slow(self, info: UpdateInfo, started: float) -> None:
        self._count("slow")
        _log.warning(
            "update %s (%s, user %s, chat %s) still running after %.2f s (time budget %.2f s)",
            info.update_id,
            info.kind,
            info.user_id,
            info.chat_id,
            self._clock() - started,
            self.time_budget,
        )

    def stats(self) -> RunnerStats:
        """A snapshot of the counters."""
        with self._count_lock:
            c = self._counts
            return RunnerStats(
                submitted=c["submitted"],
                completed=c["completed"],
                failed=c["failed"],
                slow=c["slow"],
                cancelled=c["cancelled"],
                running=self._running,
                pending=self._pending,
                intake_waits=c["intake_waits"],
            )


class UpdateRunner(_RunnerBase):
    """Runs an asyncio bot's updates concurrently, each chat's in order, bounded.

    Two ways in:

    * :meth:`run` runs the work in the caller's task (aiogram's middleware:
      the framework already made a task per update; intake is bounded by its
      ``tasks_concurrency_limit``);
    * :meth:`submit` waits for intake room, starts a task and returns (PTB's
      update processor: its fetch loop then waits instead of piling up tasks).

    Args:
        concurrency: the most updates running at once.
        max_pending: the most updates accepted and unfinished (default
            ``10 * concurrency``; at least ``concurrency``).
        time_budget: seconds after which a running update is logged as slow.
        cancel_slow: cancel an update when its time budget runs out.
        key: what keeps order: ``"chat"`` (default; updates without a chat by
            user), ``"user"``, or a function (``None``: no ordering).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        concurrency: int = 32,
        *,
        max_pending: int | None = None,
        time_budget: float | None = None,
        cancel_slow: bool = False,
        key: OrderKey = "chat",
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(concurrency, max_pending, time_budget, key, clock)
        if cancel_slow and time_budget is None:
            raise ValueError("cancel_slow needs a time_budget")
        self.cancel_slow = bool(cancel_slow)
        self._locks = AsyncKeyedLock()
        self._slots = ConcurrencyLimiter(concurrency, name="UpdateRunner")
        self._room: asyncio.Condition | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, info: UpdateInfo, work: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``await work()`` in turn: after the chat's earlier updates, within the cap.

        Returns ``work``'s result, or ``None`` when it was cancelled as slow.
        Exceptions of ``work`` propagate (the framework reports them).
        """
        key = _order_key(info, self.key)
        with self._count_lock:
            self._pending += 1
        try:
            if key is None:
                async with self._slots:
                    return await self._timed(info, work)
            async with self._locks.lock(key), self._slots:
                return await self._timed(info, work)
        finally:
            with self._count_lock:
                self._pending -= 1
            if self._room is not None:
                async with self._room:
                    self._room.notify()

    async def hold(self, info: UpdateInfo) -> RunnerHold:
        """Wait for the update's turn and a slot, for frameworks with before/after hooks.

        The caller runs the update, then calls ``release()`` on the returned
        hold exactly once (AsyncTeleBot's middleware ``post_process``).  The
        time budget is logged as for :meth:`run`; cancelling is not possible.
        """
        key = _order_key(info, self.key)
        with self._count_lock:
            self._pending += 1
        try:
            if key is not None:
                await self._locks.acquire(key)
            try:
                await self._slots.acquire_async()
            except BaseException:
                if key is not None:
                    self._locks.release(key)
                raise
        except BaseException:
            with self._count_lock:
                self._pending -= 1
            raise
        with self._count_lock:
            self._running += 1
        timer = None
        if self.time_budget is not None:
            timer = asyncio.get_running_loop().call_later(
                self.time_budget, self._note_slow, info, self._clock()
            )
        return RunnerHold(self, key, timer)

    def _release_hold(self, key: Hashable | None, timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        self._slots.release()
        if key is not None:
            self._locks.release(key)
        with self._count_lock:
            self._running -= 1
            self._pending -= 1
            self._counts["completed"] += 1

    async def _timed(self, info: UpdateInfo, work: Callable[[], Awaitable[T]]) -> T | None:
        with self._count_lock:
            self._running += 1
        try:
            if self.time_budget is None:
                return await work()
            loop = asyncio.get_running_loop()
            started = self._clock()
            timer = loop.call_later(self.time_budget, self._note_slow, info, started)
            try:
                if not self.cancel_slow:
                    return await work()
                try:
                    return await asyncio.wait_for(_as_coroutine(work), self.time_budget)
                except asyncio.TimeoutError:
                    self._count("cancelled")
                    _log.warning(
                        "update %s (%s, chat %s) cancelled after its time budget of %.2f s",
                        info.update_id,
                        info.kind,
                        info.chat_id,
                        self.time_budget,
                    )
                    return None
            finally:
                timer.cancel()
        finally:
            with self._count_lock:
                self._running -= 1

    async def submit(self, info: UpdateInfo, work: Callable[[], Awaitable[Any]]) -> None:
        """Wait until fewer than ``max_pending`` updates are unfinished, then start ``work``.

        The task logs ``work``'s exception (and counts it) instead of raising.
        """
        if self._room is None:
            self._room = asyncio.Condition()
        if self._pending >= self.max_pending:
            self._count("intake_waits")
            async with self._room:
                await self._room.wait_for(lambda: self._pending < self.max_pending)
        self._count("submitted")
        with self._count_lock:
            self._pending += 1  # counted now, so the next submit sees it
        task = asyncio.get_running_loop().create_task(self._run_task(info, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_task(self, info: UpdateInfo, work: Callable[[], Awaitable[Any]]) -> None:
        with self._count_lock:
            self._pending -= 1  # run() counts it again
        try:
            await self.run(info, work)
        except Exception:
            self._count("failed")
            _log.exception("update %s (%s) failed", info.update_id, info.kind)
        finally:
            self._count("completed")

    async def join(self) -> None:
        """Wait for every submitted update to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class RunnerHold:
    """An update's turn from :meth:`UpdateRunner.hold`; ``release()`` it once."""

    __slots__ = ("_key", "_released", "_runner", "_timer")

    def __init__(
        self, runner: UpdateRunner, key: Hashable | None, timer: asyncio.TimerHandle | None
    ) -> None:
        self._runner = runner
        self._key = key
        self._timer = timer
        self._released = False

    def release(self) -> None:
        """Give the turn and the slot back (a second call does nothing)."""
        if not self._released:
            self._released = True
            self._runner._release_hold(self._key, self._timer)


async def _as_coroutine(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


class ThreadedUpdateRunner(_RunnerBase):
    """The threads twin of :class:`UpdateRunner` (TeleBot's worker pool).

    ``concurrency`` worker threads take updates from per-key queues: a key is
    worked on by one thread at a time, so one chat's updates run in order
    while other chats proceed.  :meth:`submit` blocks while ``max_pending``
    updates are unfinished.  A thread cannot be cancelled: an update over its
    ``time_budget`` is logged as slow while it runs (checked whenever updates
    are submitted or finish, and by an idle watchdog tick).

    Args:
        concurrency: worker threads.
        max_pending: the most updates accepted and unfinished (default ``10 * concurrency``).
        time_budget: seconds after which a running update is logged as slow.
        key: what keeps order (see :class:`UpdateRunner`).
        on_error: called with the exception of a failed update (after logging).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        concurrency: int = 8,
        *,
        max_pending: int | None = None,
        time_budget: float | None = None,
        key: OrderKey = "chat",
        on_error: Callable[[BaseException], object] | None = None,
        clock: Clock = time.monotonic,
        name: str = "botscale-update",
    ) -> None:
        super().__init__(concurrency, max_pending, time_budget, key, clock)
        self._on_error = on_error
        self._cond = threading.Condition(threading.RLock())
        self._count_lock = self._cond  # type: ignore[assignment]
        self._queues: dict[Hashable, collections.deque[tuple[UpdateInfo, Callable[[], Any]]]] = {}
        self._ready: collections.deque[Hashable] = collections.deque()
        self._started: dict[int, tuple[UpdateInfo, float, bool]] = {}
        self._closed = False
        self._anon = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def submit(
        self, info: UpdateInfo, work: Callable[[], Any], *, timeout: float | None = None
    ) -> bool:
        """Queue ``work`` behind the chat's earlier updates; block while intake is full.

        Returns ``False`` (nothing queued) if ``timeout`` passed first or the
        runner is closed.
        """
        key = _order_key(info, self.key)
        with self._cond:
            if self._pending >= self.max_pending:
                self._counts["intake_waits"] += 1
                if not self._cond.wait_for(
                    lambda: self._pending < self.max_pending or self._closed, timeout
                ):
                    return False
            if self._closed:
                return False
            if key is None:
                self._anon += 1
                key = ("botscale-anonymous", self._anon)
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = collections.deque()
                self._ready.append(key)
            queue.append((info, work))
            self._pending += 1
            self._counts["submitted"] += 1
            self._check_budgets()
            self._cond.notify_all()
        return True

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._ready and not self._closed:
                    self._cond.wait(self.time_budget)
                    self._check_budgets()
                if not self._ready:
                    return  # closed and drained
                key = self._ready.popleft()
                info, work = self._queues[key].popleft()
                self._running += 1
                self._started[ident] = (info, self._clock(), False)
            try:
                work()
            except Exception as exc:
                self._count("failed")
                _log.exception("update %s (%s) failed", info.update_id, info.kind)
                if self._on_error is not None:
                    try:
                        self._on_error(exc)
                    except Exception:
                        _log.exception("on_error failed")
            finally:
                with self._cond:
                    self._check_budgets()  # this update too, if it overran
                    del self._started[ident]
                    self._running -= 1
                    self._pending -= 1
                    self._counts["completed"] += 1
                    queue = self._queues[key]
                    if queue:
                        self._ready.append(key)  # the chat's next update, behind other chats
                    else:
                        del self._queues[key]
                    self._check_budgets()
                    self._cond.notify_all()

    def _check_budgets(self) -> None:
        """Log updates over their time budget, once each (caller holds the lock)."""
        budget = self.time_budget
        if budget is None or not self._started:
            return
        now = self._clock()
        for ident, (info, started, logged) in list(self._started.items()):
            if not logged and now - started > budget:
                self._started[ident] = (info, started, True)
                self._counts["slow"] += 1
                _log.warning(
                    "update %s (%s, user %s, chat %s) still running after %.2f s "
                    "(time budget %.2f s)",
                    info.update_id,
                    info.kind,
                    info.user_id,
                    info.chat_id,
                    now - started,
                    budget,
                )

    def join(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop accepting; with ``wait``, let the workers finish what was queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(timeout)
