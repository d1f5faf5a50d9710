"""Telegram flood control: keep a bot's outgoing calls inside Telegram's limits.

Three layers, from pure to I/O:

* :class:`FloodBudget` (Protocol) and :class:`MemoryFloodBudget`: the token
  buckets (overall lane, paid lane, one per chat) and the 429 cooldown
  deadlines.  ``take`` decides atomically for a lane bucket and a chat bucket
  together; ``pause`` moves a cooldown deadline, forward only.  A Redis budget
  implements the same two methods so several processes share one bot's limits.
* ``_Scheduler`` (pure, time as an argument): the queue of waiting requests.
  One FIFO per chat (a chat's messages keep their order); the heads of the
  chats and the chat-less requests wait in one priority heap per lane, so when
  the overall budget is short the best-priority, oldest request goes first.
* :class:`FloodControl` / :class:`AsyncFloodControl`: the threaded and asyncio
  façades.  ``acquire`` waits for a request's turn; ``call`` wraps one Bot API
  call with acquire, 429 handling (scoped, forward-only cooldowns, bounded
  retries) and backoff retries of 5xx / network errors.  Framework knowledge
  enters as a value: each adapter passes a ``classify`` function that turns its
  framework's exception into an :class:`~botscale.ApiFailure`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import enum
import heapq
import inspect
import itertools
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

from ._clock import AsyncSleep, Clock, Sleep
from ._errors import RateLimitExceeded
from ._gcra import EPSILON, gcra_update
from ._telegram import ApiFailure, ChatKind, FailureKind, MethodKind, TelegramLimits, chat_kind
from ._validation import check_non_negative, check_positive, check_positive_int

__all__ = [
    "AsyncFloodBudget",
    "AsyncFloodControl",
    "BucketSpec",
    "FloodBudget",
    "FloodControl",
    "FloodStats",
    "Grant",
    "MemoryFloodBudget",
    "OutgoingRequest",
    "Priority",
    "current_reply_chat",
    "replying_to",
    "send_priority",
]

T = TypeVar("T")

_log: Final = logging.getLogger("botscale.flood")

BOT_SCOPE: Final = "bot"
"""The cooldown scope that pauses every chat of the bot."""
_FLOOD_WINDOW: Final = 1.0  # seconds in which 429s from several chats mean "the bot is limited"
_MAX_CHAT_COUNTERS: Final = 1000


class Priority(enum.IntEnum):
    """Which waiting request goes first when the overall budget is short.

    Lower values go first; equal priorities go oldest first.
    """

    INTERACTIVE = 0
    """Answers to a user who is waiting (callback answers, replies to the current update)."""
    NORMAL = 1
    """Everything not marked otherwise."""
    BULK = 2
    """Broadcasts and other sends nobody is waiting for."""


_priority_var: contextvars.ContextVar[Priority | None] = contextvars.ContextVar(
    "botscale_send_priority", default=None
)
_reply_chat_var: contextvars.ContextVar[int | str | None] = contextvars.ContextVar(
    "botscale_reply_chat", default=None
)
"""The chat whose update is being handled, as the update gave it (compared as text):
the adapters set it for every update, so it is stored without a conversion."""


@contextlib.contextmanager
def send_priority(priority: Priority) -> Iterator[None]:
    """Give every send made inside the block ``priority`` (e.g. a broadcast: ``BULK``).

    Works across ``await`` and in threads: the setting lives in a context variable.
    """
    if not isinstance(priority, Priority):
        raise TypeError(f"priority must be a Priority, got {type(priority).__name__}")
    token = _priority_var.set(priority)
    try:
        yield
    finally:
        _priority_var.reset(token)


@contextlib.contextmanager
def replying_to(chat_id: int | str | None) -> Iterator[None]:
    """Mark the code inside as handling an update from ``chat_id``.

    Sends to that chat are then replies to a waiting user and get
    :attr:`Priority.INTERACTIVE`.  The incoming guard of every adapter sets
    this around the handlers; call it yourself only in custom dispatch code.
    """
    token = _reply_chat_var.set(chat_id)
    try:
        yield
    finally:
        _reply_chat_var.reset(token)


def current_reply_chat() -> str | None:
    """The chat (as text) whose update is being handled here, if any."""
    reply = _reply_chat_var.get()
    return None if reply is None else str(reply)


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """A framework-free description of one Bot API call.

    Attributes:
        method: the Bot API method name, e.g. ``"sendMessage"``.
        chat_id: the target chat (``None`` when the call has none, e.g. an
            inline query answer: it then counts against the overall budget only).
        cost: messages the call puts into the chat (``sendMediaGroup``: the
            number of media).
        paid: ``allow_paid_broadcast`` was set: the call uses the paid lane.
        priority: overrides the automatic priority.
    """

    method: str
    chat_id: int | str | None = None
    cost: int = 1
    paid: bool = False
    priority: Priority | None = None

    @classmethod
    def from_params(
        cls, method: str, params: Mapping[str, Any] | None, *, priority: Priority | None = None
    ) -> OutgoingRequest:
        """Read the target chat, paid flag and cost from a call's parameters.

        ``params`` are the call's parameters as a framework holds them (a dict
        of Bot API field names); unknown fields are ignored.
        """
        if not params:
            return cls(method, None, 1, False, priority)
        chat_id = params.get("chat_id")
        if isinstance(chat_id, bool) or not isinstance(chat_id, (int, str)) or chat_id == "":
            chat_id = None
        paid = params.get("allow_paid_broadcast")
        paid = paid is True or (isinstance(paid, str) and paid.lower() == "true")
        cost = 1
        for name in ("media", "message_ids"):
            items = params.get(name)
            if isinstance(items, (list, tuple)) and items:
                cost = len(items)
            elif isinstance(items, str) and items.startswith("["):
                cost = max(1, items.count(",") + 1)
        return cls(method, chat_id, cost, paid, priority)


# --------------------------------------------------------------------------- budget


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One token bucket of a budget, as the flood controller asks for it.

    Attributes:
        key: the bucket's name (``"overall"``, ``"paid"``, ``"chat:<id>"``).
        interval: seconds one token takes to refill.
        burst: the bucket's capacity in tokens.
        cost: tokens this request takes (``1 <= cost <= burst``).
    """

    key: str
    interval: float
    burst: int
    cost: int = 1


@dataclass(frozen=True, slots=True)
class Grant:
    """A budget's answer to one ``take``.

    Attributes:
        granted: both buckets held the tokens and they were taken.
        chat_wait: if granted, seconds until the chat bucket holds one token
            again; if not, seconds until the chat (bucket and cooldown) allows
            this request (``0.0`` when the chat is not what blocks it).
        lane_wait: if not granted, seconds until the lane (bucket and bot-wide
            cooldown) allows it; ``0.0`` when granted.
    """

    granted: bool
    chat_wait: float = 0.0
    lane_wait: float = 0.0

    def __bool__(self) -> bool:
        return self.granted


@runtime_checkable
class FloodBudget(Protocol):
    """Where a bot's outgoing budget lives (this process, or Redis for several).

    Both methods are atomic.  ``now`` is the caller's clock; a budget with a
    clock of its own (Redis server time) may ignore it, as long as the waits it
    returns are relative seconds.
    """

    def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """Take ``lane.cost`` from the lane and ``chat.cost`` from the chat, or nothing.

        Refuses while the ``"bot"`` cooldown or the chat's cooldown (scope
        ``chat.key``) runs.
        """
        ...

    def pause(self, scope: str, seconds: float, now: float) -> float:
        """Hold ``scope`` (``"bot"`` or a chat key) for ``seconds``; forward only.

        The deadline becomes ``max(current, now + seconds)``: a shorter pause
        never shortens a longer one.  Returns the seconds left until it ends.
        """
        ...


@runtime_checkable
class AsyncFloodBudget(Protocol):
    """The awaitable twin of :class:`FloodBudget`."""

    async def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """See :meth:`FloodBudget.take`."""
        ...

    async def pause(self, scope: str, seconds: float, now: float) -> float:
        """See :meth:`FloodBudget.pause`."""
        ...


class MemoryFloodBudget:
    """The in-process :class:`FloodBudget`: GCRA buckets and deadlines in dicts.

    Thread-safe, O(1) per decision.  Buckets that have refilled completely and
    cooldowns that have ended carry no information; they are swept in batches
    (amortised O(1)), so memory follows the chats active in the last few
    seconds, not every chat the bot ever wrote to.
    """

    __slots__ = ("_deadlines", "_lock", "_sweep_at", "_tats")

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._deadlines: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sweep_at = 1024

    def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        """See :meth:`FloodBudget.take`."""
        with self._lock:
            deadlines = self._deadlines
            bot_hold = deadlines.get(BOT_SCOPE, 0.0) - now
            chat_hold = deadlines.get(chat.key, 0.0) - now if chat is not None else 0.0
            chat_tat: float | None = None
            chat_wait = 0.0
            if chat is not None:
                new_chat_tat, decision = gcra_update(
                    self._tats.get(chat.key), now, chat.interval, chat.burst, chat.cost
                )
                chat_wait = decision.retry_after
                chat_tat = new_chat_tat
            if chat_hold > 0 or chat_wait > 0:
                return Grant(False, max(chat_hold, chat_wait), 0.0)
            new_lane_tat, lane_decision = gcra_update(
                self._tats.get(lane.key), now, lane.interval, lane.burst, lane.cost
            )
            if bot_hold > 0 or not lane_decision.allowed:
                return Grant(False, 0.0, max(bot_hold, lane_decision.retry_after))
            assert new_lane_tat is not None
            self._tats[lane.key] = new_lane_tat
            next_chat = 0.0
            if chat is not None:
                assert chat_tat is not None
                self._tats[chat.key] = chat_tat
                next_chat = max(0.0, chat_tat - now - (chat.burst - 1) * chat.interval)
            if len(self._tats) >= self._sweep_at:
                self._sweep(now)
            return Grant(True, next_chat, 0.0)

    def pause(self, scope: str, seconds: float, now: float) -> float:
        """See :meth:`FloodBudget.pause`."""
        with self._lock:
            deadline = max(self._deadlines.get(scope, 0.0), now + seconds)
            self._deadlines[scope] = deadline
            if len(self._deadlines) >= self._sweep_at:
                self._sweep(now)
            return deadline - now

    def _sweep(self, now: float) -> None:
        self._tats = {k: v for k, v in self._tats.items() if v > now}
        self._deadlines = {k: v for k, v in self._deadlines.items() if v > now}
        self._sweep_at = max(1024, 2 * max(len(self._tats), len(self._deadlines)))

    def __len__(self) -> int:
        """Buckets and deadlines currently held (idle ones may linger until a sweep)."""
        return len(self._tats) + len(self._deadlines)


# --------------------------------------------------------------------------- scheduler

_WAITING: Final = 0
_GRANTED: Final = 1
_CANCELLED: Final = 2


class _Ticket:
    """One request waiting for its turn."""

    __slots__ = ("chat", "lane", "priority", "queue", "seq", "state", "waker")

    def __init__(self, seq: int, priority: int, lane: BucketSpec, chat: BucketSpec | None) -> None:
        self.seq = seq
        self.priority = priority
        self.lane = lane
        self.chat = chat
        self.state = _WAITING
        self.queue: _ChatQueue | None = None
        self.waker: Any = None  # the façade's wake-up handle (Event / Future)


class _ChatQueue:
    """The waiting tickets of one chat, oldest first."""

    __slots__ = ("key", "scheduled", "tickets")

    def __init__(self, key: str) -> None:
        self.key = key
        self.tickets: collections.deque[_Ticket] = collections.deque()
        self.scheduled = False  # in a heap, or being decided


_Entry = tuple[int, int, int, "_ChatQueue | None", _Ticket]


class _Scheduler:
    """Orders waiting requests; the budget decides, time is an argument.

    Invariant: a chat with waiting tickets is ``scheduled``: exactly one entry
    for it sits in the sleeping heap (chat not ready before a time) or in its
    head's lane heap, or it is the candidate being decided.
    """

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._tiebreak = itertools.count()
        self._chats: dict[str, _ChatQueue] = {}
        self._sleeping: list[tuple[float, int, _ChatQueue]] = []
        self._ready: dict[str, list[_Entry]] = {}
        self._blocked_until: dict[str, float] = {}
        self.waiting = 0

    def ticket(self, priority: int, lane: BucketSpec, chat: BucketSpec | None) -> _Ticket:
        return _Ticket(next(self._seq), priority, lane, chat)

    def submit(self, ticket: _Ticket, *, front: bool = False) -> None:
        """Queue ``ticket``; ``front`` puts a retried request first in its chat."""
        ticket.state = _WAITING
        self.waiting += 1
        if ticket.chat is None:
            self._push_ready(None, ticket)
            return
        queue = self._chats.get(ticket.chat.key)
        if queue is None:
            queue = self._chats[ticket.chat.key] = _ChatQueue(ticket.chat.key)
        ticket.queue = queue
        if front:
            queue.tickets.appendleft(ticket)
        else:
            queue.tickets.append(ticket)
        if not queue.scheduled:
            queue.scheduled = True
            self._push_ready(queue, ticket)

    def cancel(self, ticket: _Ticket) -> None:
        """Withdraw a waiting ticket (its entry is dropped lazily)."""
        if ticket.state == _WAITING:
            ticket.state = _CANCELLED
            self.waiting -= 1

    def _push_ready(self, queue: _ChatQueue | None, ticket: _Ticket) -> None:
        heap = self._ready.get(ticket.lane.key)
        if heap is None:
            heap = self._ready[ticket.lane.key] = []
        heapq.heappush(heap, (ticket.priority, ticket.seq, next(self._tiebreak), queue, ticket))

    def _head(self, queue: _ChatQueue) -> _Ticket | None:
        tickets = queue.tickets
        while tickets and tickets[0].state != _WAITING:
            tickets.popleft()
        if not tickets:
            queue.scheduled = False
            if self._chats.get(queue.key) is queue:
                del self._chats[queue.key]
            return None
        return tickets[0]

    def candidate(self, now: float) -> _Ticket | None:
        """The next request to ask the budget about, or ``None`` (wait).

        The returned ticket is out of every heap until :meth:`resolve`.
        """
        sleeping = self._sleeping
        while sleeping and sleeping[0][0] <= now:
            woken = heapq.heappop(sleeping)[2]
            head = self._head(woken)
            if head is not None:
                self._push_ready(woken, head)
        best: list[_Entry] | None = None
        for lane, heap in self._ready.items():
            if not heap or self._blocked_until.get(lane, -math.inf) > now:
                continue
            while heap:
                entry = heap[0]
                queue, ticket = entry[3], entry[4]
                if queue is None:
                    if ticket.state == _WAITING:
                        break
                    heapq.heappop(heap)
                    continue
                head = self._head(queue)
                if head is ticket:
                    break
                heapq.heappop(heap)
                if head is not None:  # the head changed: re-rank by the new head
                    self._push_ready(queue, head)
            if heap and (best is None or heap[0][:2] < best[0][:2]):
                best = heap
        if best is None:
            return None
        return heapq.heappop(best)[4]

    def resolve(self, ticket: _Ticket, grant: Grant, now: float) -> None:
        """Apply the budget's answer for the candidate ``ticket``."""
        queue = ticket.queue
        if ticket.state != _WAITING:  # cancelled while being decided
            if queue is not None:
                self._reschedule(queue, now, 0.0)
            return
        if grant.granted:
            ticket.state = _GRANTED
            self.waiting -= 1
            if queue is not None:
                if queue.tickets and queue.tickets[0] is ticket:
                    queue.tickets.popleft()
                else:
                    queue.tickets.remove(ticket)
                self._reschedule(queue, now, grant.chat_wait)
            return
        if queue is not None and grant.chat_wait > 0:
            heapq.heappush(self._sleeping, (now + grant.chat_wait, next(self._tiebreak), queue))
            return
        # The lane is short (or the budget gave no reason): the lane waits.
        self._blocked_until[ticket.lane.key] = now + max(grant.lane_wait, 1e-3)
        self._push_ready(queue, ticket)

    def _reschedule(self, queue: _ChatQueue, now: float, wait: float) -> None:
        head = self._head(queue)
        if head is None:
            return
        if wait > EPSILON:
            heapq.heappush(self._sleeping, (now + wait, next(self._tiebreak), queue))
        else:
            self._push_ready(queue, head)

    def any_waiting(self, accept: Callable[[_Ticket], bool]) -> _Ticket | None:
        """A waiting ticket ``accept`` agrees to, preferring the heads of the queues."""
        for heap in self._ready.values():
            for entry in heap:
                ticket = entry[4]
                if ticket.state == _WAITING and accept(ticket):
                    return ticket
        for queue in self._chats.values():
            for ticket in queue.tickets:
                if ticket.state == _WAITING and accept(ticket):
                    return ticket
        return None

    def next_wakeup(self) -> float | None:
        """When waiting requests may next be decided (``None``: nothing waits)."""
        times = [self._sleeping[0][0]] if self._sleeping else []
        for lane, heap in self._ready.items():
            if heap:
                times.append(self._blocked_until.get(lane, -math.inf))
        return min(times) if times else None


# --------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class FloodStats:
    """A snapshot of a flood controller's counters.

    Attributes:
        sent: calls that completed successfully.
        attempts: HTTP attempts made (first tries and retries).
        delayed: counted calls that had to wait for their turn.
        wait_time: seconds spent waiting (turns, 429 cooldowns and backoffs).
        waiting: calls waiting right now.
        retries: attempts made after a failure (429, 5xx or network).
        failures: calls that finally failed, by :class:`~botscale.FailureKind` value.
        flood_429: 429 answers received.
        flood_by_chat: 429 answers per chat (the first 1000 chats; the rest
            under ``"other"``).
        flood_by_method: 429 answers per method.
        bot_pauses: times a 429 paused the whole bot.
        forbidden: 403 answers (blocked, kicked, may not write).
    """

    sent: int = 0
    attempts: int = 0
    delayed: int = 0
    wait_time: float = 0.0
    waiting: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    flood_429: int = 0
    flood_by_chat: dict[str, int] = field(default_factory=dict)
    flood_by_method: dict[str, int] = field(default_factory=dict)
    bot_pauses: int = 0
    forbidden: int = 0


class _Counters:
    __slots__ = (
        "attempts",
        "bot_pauses",
        "delayed",
        "failures",
        "flood_429",
        "flood_by_chat",
        "flood_by_method",
        "forbidden",
        "retries",
        "sent",
        "wait_time",
    )

    def __init__(self) -> None:
        self.sent = 0
        self.attempts = 0
        self.delayed = 0
        self.wait_time = 0.0
        self.retries = 0
        self.failures: dict[str, int] = {}
        self.flood_429 = 0
        self.flood_by_chat: dict[str, int] = {}
        self.flood_by_method: dict[str, int] = {}
        self.bot_pauses = 0
        self.forbidden = 0


# --------------------------------------------------------------------------- shared core


@dataclass(frozen=True, slots=True)
class _Plan:
    kind: MethodKind
    request: OutgoingRequest
    lane: BucketSpec
    chat: BucketSpec | None
    priority: Priority


@dataclass(frozen=True, slots=True)
class ForbiddenChat:
    """What ``on_forbidden`` receives when Telegram answers 403.

    Attributes:
        chat_id: the chat the call was for (``None`` if it had none).
        method: the Bot API method.
        description: Telegram's text, e.g. ``"Forbidden: bot was blocked by the user"``.
        blocked: whether the user blocked the bot.
    """

    chat_id: int | str | None
    method: str
    description: str
    blocked: bool


Classifier = Callable[[BaseException], "ApiFailure | None"]
"""Turns a framework's exception into an :class:`~botscale.ApiFailure` (``None``: not one)."""


class _FloodCore:
    """Everything the sync and async façades share: planning, decisions, counters."""

    def __init__(
        self,
        limits: TelegramLimits | None,
        *,
        flood_retries: int,
        max_retry_after: float,
        error_retries: int,
        backoff: float,
        max_backoff: float,
        bot_wide_after: int,
        on_forbidden: Callable[[ForbiddenChat], object] | None,
        clock: Clock,
    ) -> None:
        if limits is None:
            limits = TelegramLimits()
        if not isinstance(limits, TelegramLimits):
            raise TypeError(f"limits must be TelegramLimits, got {type(limits).__name__}")
        self.limits = limits
        self.flood_retries = check_positive_int("flood_retries", flood_retries, minimum=0)
        self.max_retry_after = check_positive("max_retry_after", max_retry_after)
        self.error_retries = check_positive_int("error_retries", error_retries, minimum=0)
        self.backoff = check_non_negative("backoff", backoff)
        self.max_backoff = check_non_negative("max_backoff", max_backoff)
        self.bot_wide_after = check_positive_int("bot_wide_after", bot_wide_after)
        if on_forbidden is not None and not callable(on_forbidden):
            raise TypeError("on_forbidden must be a callable taking a ForbiddenChat")
        self.on_forbidden = on_forbidden
        self.clock = clock
        self.scheduler = _Scheduler()
        self.counters = _Counters()
        self.counter_lock = threading.Lock()
        self.recent_floods: collections.deque[tuple[float, str]] = collections.deque()
        self.lanes = {
            "overall": (limits.overall.interval, limits.overall_burst),
            "paid": (limits.paid.interval, limits.paid_burst),
        }
        self.chat_specs = {
            kind: (rate.interval, burst)
            for kind in ChatKind
            for rate, burst in [limits.chat_rate(kind)]
        }

    def plan(self, request: OutgoingRequest) -> _Plan:
        if not isinstance(request, OutgoingRequest):
            raise TypeError(f"request must be an OutgoingRequest, got {type(request).__name__}")
        kind = self.limits.method_kind(request.method)
        lane_name = "paid" if request.paid else "overall"
        interval, burst = self.lanes[lane_name]
        lane = BucketSpec(lane_name, interval, burst, min(request.cost, burst))
        chat: BucketSpec | None = None
        chat_id = request.chat_id
        if kind is MethodKind.MESSAGE and chat_id is not None:
            interval, burst = self.chat_specs[chat_kind(chat_id)]
            chat = BucketSpec(f"chat:{chat_id}", interval, burst, min(request.cost, burst))
        return _Plan(kind, request, lane, chat, self.priority(request, kind))

    @staticmethod
    def priority(request: OutgoingRequest, kind: MethodKind) -> Priority:
        if request.priority is not None:
            return request.priority
        if kind is MethodKind.INTERACTIVE:
            return Priority.INTERACTIVE
        chosen = _priority_var.get()
        if chosen is not None:
            return chosen
        reply = _reply_chat_var.get()
        if (
            reply is not None
            and request.chat_id is not None
            and (reply == request.chat_id or str(reply) == str(request.chat_id))
        ):
            return Priority.INTERACTIVE
        return Priority.NORMAL

    def flood_scope(self, plan: _Plan, now: float) -> str:
        """The scope a 429 for ``plan`` pauses: its chat, or the whole bot.

        A 429 for a call without a chat, or 429s for ``bot_wide_after``
        different chats within a second, mean the bot as a whole is limited.
        """
        chat = plan.chat.key if plan.chat is not None else None
        if chat is None:
            return BOT_SCOPE
        recent = self.recent_floods
        recent.append((now, chat))
        while recent and recent[0][0] < now - _FLOOD_WINDOW:
            recent.popleft()
        if len({c for _, c in recent}) >= self.bot_wide_after:
            recent.clear()
            return BOT_SCOPE
        return chat

    def backoff_for(self, retry: int) -> float:
        """Exponential backoff with jitter for the ``retry``-th retry (1-based)."""
        wait = min(self.max_backoff, self.backoff * 2.0 ** (retry - 1))
        return wait - random.uniform(0.0, 0.5 * wait)

    def count_wait(self, seconds: float, *, delayed: bool = False) -> None:
        with self.counter_lock:
            self.counters.wait_time += seconds
            if delayed:
                self.counters.delayed += 1

    def count(self, name: str, amount: int = 1) -> None:
        with self.counter_lock:
            setattr(self.counters, name, getattr(self.counters, name) + amount)

    def count_failure(self, failure: ApiFailure) -> None:
        with self.counter_lock:
            failures = self.counters.failures
            failures[failure.kind.value] = failures.get(failure.kind.value, 0) + 1

    def count_flood(self, plan: _Plan) -> None:
        with self.counter_lock:
            c = self.counters
            c.flood_429 += 1
            chat = "none" if plan.request.chat_id is None else str(plan.request.chat_id)
            if chat not in c.flood_by_chat and len(c.flood_by_chat) >= _MAX_CHAT_COUNTERS:
                chat = "other"
            c.flood_by_chat[chat] = c.flood_by_chat.get(chat, 0) + 1
            method = plan.request.method
            c.flood_by_method[method] = c.flood_by_method.get(method, 0) + 1

    def report_forbidden(self, plan: _Plan, failure: ApiFailure) -> None:
        self.count("forbidden")
        if self.on_forbidden is None:
            return
        info = ForbiddenChat(
            plan.request.chat_id, plan.request.method, failure.description, failure.blocked
        )
        try:
            self.on_forbidden(info)
        except Exception:
            _log.exception("on_forbidden callback failed for chat %s", info.chat_id)

    def stats(self) -> FloodStats:
        with self.counter_lock:
            c = self.counters
            return FloodStats(
                sent=c.sent,
                attempts=c.attempts,
                delayed=c.delayed,
                wait_time=c.wait_time,
                waiting=self.scheduler.waiting,
                retries=c.retries,
                failures=dict(c.failures),
                flood_429=c.flood_429,
                flood_by_chat=dict(c.flood_by_chat),
                flood_by_method=dict(c.flood_by_method),
                bot_pauses=c.bot_pauses,
                forbidden=c.forbidden,
            )


_FLOOD_RETRY: Final = -1.0  # decide(): retry after the cooldown, through acquire


class _Attempts:
    __slots__ = ("errors", "floods")

    def __init__(self) -> None:
        self.floods = 0
        self.errors = 0


def _decide(
    core: _FloodCore, plan: _Plan, failure: ApiFailure, attempts: _Attempts
) -> float | None:
    """After a failed attempt: ``None`` to give up, else the backoff to sleep.

    A 429 returns ``_FLOOD_RETRY``: the caller pauses the scope and re-acquires.
    """
    kind = failure.kind
    if kind is FailureKind.FLOOD:
        core.count_flood(plan)
        retry_after = failure.retry_after if failure.retry_after is not None else 1.0
        if attempts.floods >= core.flood_retries or retry_after > core.max_retry_after:
            return None
        attempts.floods += 1
        return _FLOOD_RETRY
    if kind in (FailureKind.SERVER, FailureKind.NETWORK):
        if attempts.errors >= core.error_retries:
            return None
        attempts.errors += 1
        return core.backoff_for(attempts.errors)
    if kind is FailureKind.FORBIDDEN:
        core.report_forbidden(plan, failure)
    return None


def _log_retry(plan: _Plan, failure: ApiFailure, wait: float) -> None:
    _log.warning(
        "Bot API %s to chat %s failed (%s%s); retrying in %.2f s",
        plan.request.method,
        plan.request.chat_id,
        failure.kind.value,
        f" {failure.status}" if failure.status else "",
        wait,
    )


def _check_timeout(timeout: float | None) -> float | None:
    return None if timeout is None else check_non_negative("timeout", timeout)


# --------------------------------------------------------------------------- sync façade


class FloodControl:
    """Keeps a threaded bot's outgoing Bot API calls inside Telegram's limits.

    ``acquire(request)`` blocks until the request's turn: its chat's budget
    (private 1/s, group 20/min), the overall budget (30/s) or the paid lane
    (1000/s), and any 429 cooldown of its chat or of the whole bot.  When the
    overall budget is short, :attr:`Priority.INTERACTIVE` requests go first,
    then the oldest.  ``call(request, send, classify=...)`` also retries:

    * 429: the cooldown (deadline ``now + retry_after``, only ever moved
      forward) pauses the request's chat, or the whole bot when the call has no
      chat or several chats were refused within a second; the call then
      waits its turn again, at most ``flood_retries`` times, and never for a
      ``retry_after`` above ``max_retry_after``;
    * 5xx and network errors: up to ``error_retries`` retries with exponential
      backoff and jitter (``backoff`` doubling up to ``max_backoff``);
    * 400 / 403: never retried; a 403 is reported to ``on_forbidden``.

    When it gives up, the framework's own exception propagates unchanged.
    Thread-safe; one instance per bot token (or one shared :class:`FloodBudget`).

    Args:
        limits: the budgets (default :class:`~botscale.TelegramLimits`).
        budget: where buckets and cooldowns live (default in memory).
        flood_retries: retries after 429 answers before giving up.
        max_retry_after: a 429 asking to wait longer than this fails at once.
        error_retries: retries after 5xx / network errors.
        backoff: first backoff in seconds; doubles each retry.
        max_backoff: the longest backoff.
        bot_wide_after: 429s from this many chats within one second pause the bot.
        on_forbidden: called with a :class:`ForbiddenChat` on every 403.
        clock: monotonic seconds.
        sleep: how to wait (default: a wake-up event; pass ``FakeClock.sleep`` in tests).
    """

    def __init__(
        self,
        limits: TelegramLimits | None = None,
        *,
        budget: FloodBudget | None = None,
        flood_retries: int = 3,
        max_retry_after: float = 60.0,
        error_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        bot_wide_after: int = 3,
        on_forbidden: Callable[[ForbiddenChat], object] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
    ) -> None:
        self._core = _FloodCore(
            limits,
            flood_retries=flood_retries,
            max_retry_after=max_retry_after,
            error_retries=error_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            bot_wide_after=bot_wide_after,
            on_forbidden=on_forbidden,
            clock=clock,
        )
        if budget is None:
            budget = MemoryFloodBudget()
        if inspect.iscoroutinefunction(getattr(budget, "take", None)):
            raise TypeError("FloodControl needs a sync FloodBudget; use AsyncFloodControl")
        if not isinstance(budget, FloodBudget):
            raise TypeError(f"budget must implement FloodBudget, got {type(budget).__name__}")
        self._budget = budget
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pumper: _Ticket | None = None
        self._pumper_wake = math.inf

    @property
    def limits(self) -> TelegramLimits:
        """The budgets in force."""
        return self._core.limits

    def stats(self) -> FloodStats:
        """A snapshot of the counters."""
        return self._core.stats()

    def acquire(self, request: OutgoingRequest, *, timeout: float | None = None) -> float:
        """Block until ``request`` may be sent; return the seconds waited.

        Calls that are not throttled (``getUpdates``, ``getMe``, ...) return at once.

        Raises:
            RateLimitExceeded: the turn did not come within ``timeout`` seconds.
        """
        plan = self._core.plan(request)
        return self._acquire(plan, _check_timeout(timeout), front=False)

    def pause(self, chat_id: int | str | None, seconds: float) -> None:
        """Hold a chat (or, with ``None``, the whole bot) for ``seconds``, forward only."""
        check_non_negative("seconds", seconds)
        scope = BOT_SCOPE if chat_id is None else f"chat:{chat_id}"
        with self._lock:
            self._budget.pause(scope, seconds, self._clock())

    def call(
        self,
        request: OutgoingRequest,
        send: Callable[[], T],
        *,
        classify: Classifier,
        timeout: float | None = None,
    ) -> T:
        """Send ``request`` with ``send()`` in its turn, retrying as the class describes.

        Args:
            request: what is being sent.
            send: makes the call; returns its result or raises the framework's error.
            classify: the adapter's exception -> :class:`~botscale.ApiFailure` function.
            timeout: the longest wait for one turn.

        Raises:
            Exception: ``send``'s own exception when the call is not retried or
                retries are used up.
            RateLimitExceeded: a turn did not come within ``timeout``.
        """
        core = self._core
        plan = core.plan(request)
        if plan.kind is MethodKind.FREE:
            return send()
        timeout = _check_timeout(timeout)
        attempts = _Attempts()
        front = False
        while True:
            self._acquire(plan, timeout, front=front)
            core.count("attempts")
            try:
                result = send()
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                wait = _decide(core, plan, failure, attempts)
                if wait is None:
                    core.count_failure(failure)
                    raise
                core.count("retries")
                if wait == _FLOOD_RETRY:
                    self._pause_for_flood(plan, failure)
                    _log_retry(plan, failure, failure.retry_after or 1.0)
                else:
                    _log_retry(plan, failure, wait)
                    self._backoff_sleep(wait)
                    core.count_wait(wait)
                front = True
                continue
            core.count("sent")
            return result

    def _pause_for_flood(self, plan: _Plan, failure: ApiFailure) -> None:
        seconds = failure.retry_after if failure.retry_after is not None else 1.0
        with self._lock:
            now = self._clock()
            scope = self._core.flood_scope(plan, now)
            self._budget.pause(scope, seconds, now)
        if scope == BOT_SCOPE:
            self._core.count("bot_pauses")

    # Waiting: every waiter holds an Event; one of them (the "pumper") sleeps
    # until the scheduler's next wake-up and decides for everyone, setting the
    # Events of the tickets it grants.  Others sleep on their Event only.

    def _acquire(self, plan: _Plan, timeout: float | None, *, front: bool) -> float:
        core = self._core
        if plan.kind is MethodKind.FREE:
            return 0.0
        clock = self._clock
        start = clock()
        deadline = None if timeout is None else start + timeout
        scheduler = core.scheduler
        ticket = scheduler.ticket(plan.priority, plan.lane, plan.chat)
        waker = threading.Event()
        with self._lock:
            scheduler.submit(ticket, front=front)
            self._pump()
            if ticket.state == _GRANTED:
                return 0.0
            ticket.waker = waker
        try:
            while True:
                with self._lock:
                    if ticket.state == _GRANTED:
                        break
                    if self._pumper is None:
                        self._pumper = ticket
                    pumping = self._pumper is ticket
                    waker.clear()
                    now = clock()
                    wake = scheduler.next_wakeup() if pumping else None
                    delay = None if wake is None else max(0.0, wake - now)
                    if deadline is not None:
                        if now >= deadline:
                            raise _timeout_error(plan, timeout, delay)
                        delay = deadline - now if delay is None else min(delay, deadline - now)
                    if pumping:
                        self._pumper_wake = math.inf if delay is None else now + delay
                if pumping and self._sleep is not None and delay is not None:
                    self._sleep(delay)
                else:
                    waker.wait(delay)
                if pumping:
                    with self._lock:
                        self._pump()
        except BaseException:
            with self._lock:
                scheduler.cancel(ticket)
            raise
        finally:
            with self._lock:
                ticket.waker = None
                if self._pumper is ticket:
                    self._pumper = None
                    self._nudge()
        waited = clock() - start
        core.count_wait(waited, delayed=True)
        return waited

    def _backoff_sleep(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        else:
            time.sleep(delay)

    def _pump(self) -> None:
        """Grant every ticket the budget allows now (caller holds the lock)."""
        scheduler = self._core.scheduler
        now = self._clock()
        while (ticket := scheduler.candidate(now)) is not None:
            scheduler.resolve(ticket, self._budget.take(ticket.lane, ticket.chat, now), now)
            if ticket.state == _GRANTED and ticket.waker is not None:
                ticket.waker.set()
        pumper = self._pumper
        if pumper is None:
            self._nudge()
        elif pumper.waker is not None:
            wake = scheduler.next_wakeup()
            if wake is not None and wake < self._pumper_wake - 1e-6:
                pumper.waker.set()  # something is due before the pumper meant to look

    def _nudge(self) -> None:
        """Wake one waiting ticket so it takes over the pumping."""
        ticket = self._core.scheduler.any_waiting(lambda t: t.waker is not None)
        if ticket is not None:
            ticket.waker.set()


def _timeout_error(plan: _Plan, timeout: float | None, delay: float | None) -> RateLimitExceeded:
    chat_id = plan.request.chat_id
    return RateLimitExceeded(
        chat_id if chat_id is not None else BOT_SCOPE,
        delay or 0.0,
        f"no turn for {plan.request.method} to chat {chat_id} within {timeout} s",
    )


# --------------------------------------------------------------------------- async façade


class AsyncFloodControl:
    """The asyncio twin of :class:`FloodControl` (aiogram, PTB, AsyncTeleBot).

    Same rules and arguments; ``acquire`` and ``call`` are awaitable, ``send``
    returns an awaitable, and ``budget`` may be a :class:`FloodBudget` or an
    :class:`AsyncFloodBudget` (Redis).  Use one instance per event loop.
    """

    def __init__(
        self,
        limits: TelegramLimits | None = None,
        *,
        budget: FloodBudget | AsyncFloodBudget | None = None,
        flood_retries: int = 3,
        max_retry_after: float = 60.0,
        error_retries: int = 2,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        bot_wide_after: int = 3,
        on_forbidden: Callable[[ForbiddenChat], object] | None = None,
        clock: Clock = time.monotonic,
        sleep: AsyncSleep | None = None,
    ) -> None:
        self._core = _FloodCore(
            limits,
            flood_retries=flood_retries,
            max_retry_after=max_retry_after,
            error_retries=error_retries,
            backoff=backoff,
            max_backoff=max_backoff,
            bot_wide_after=bot_wide_after,
            on_forbidden=on_forbidden,
            clock=clock,
        )
        if budget is None:
            budget = MemoryFloodBudget()
        if not isinstance(budget, (FloodBudget, AsyncFloodBudget)):
            raise TypeError(f"budget must implement FloodBudget, got {type(budget).__name__}")
        self._budget = budget
        self._async_budget = inspect.iscoroutinefunction(budget.take)
        self._clock = clock
        self._sleep: AsyncSleep = sleep if sleep is not None else asyncio.sleep
        self._pump_lock: asyncio.Lock | None = None
        self._pumper: _Ticket | None = None
        self._pumper_wake = math.inf

    @property
    def limits(self) -> TelegramLimits:
        """The budgets in force."""
        return self._core.limits

    def stats(self) -> FloodStats:
        """A snapshot of the counters."""
        return self._core.stats()

    async def acquire(self, request: OutgoingRequest, *, timeout: float | None = None) -> float:
        """Wait until ``request`` may be sent; return the seconds waited.

        Raises:
            RateLimitExceeded: the turn did not come within ``timeout`` seconds.
        """
        plan = self._core.plan(request)
        return await self._acquire(plan, _check_timeout(timeout), front=False)

    async def pause(self, chat_id: int | str | None, seconds: float) -> None:
        """Hold a chat (or, with ``None``, the whole bot) for ``seconds``, forward only."""
        check_non_negative("seconds", seconds)
        scope = BOT_SCOPE if chat_id is None else f"chat:{chat_id}"
        await self._budget_pause(scope, seconds, self._clock())

    async def call(
        self,
        request: OutgoingRequest,
        send: Callable[[], Awaitable[T]],
        *,
        classify: Classifier,
        timeout: float | None = None,
    ) -> T:
        """Send ``request`` with ``await send()`` in its turn, retrying as described.

        See :meth:`FloodControl.call`.
        """
        core = self._core
        plan = core.plan(request)
        if plan.kind is MethodKind.FREE:
            return await send()
        timeout = _check_timeout(timeout)
        attempts = _Attempts()
        front = False
        while True:
            await self._acquire(plan, timeout, front=front)
            core.count("attempts")
            try:
                result = await send()
            except Exception as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                wait = _decide(core, plan, failure, attempts)
                if wait is None:
                    core.count_failure(failure)
                    raise
                core.count("retries")
                if wait == _FLOOD_RETRY:
                    seconds = failure.retry_after if failure.retry_after is not None else 1.0
                    now = self._clock()
                    scope = core.flood_scope(plan, now)
                    await self._budget_pause(scope, seconds, now)
                    if scope == BOT_SCOPE:
                        core.count("bot_pauses")
                    _log_retry(plan, failure, seconds)
                else:
                    _log_retry(plan, failure, wait)
                    await self._sleep(wait)
                    core.count_wait(wait)
                front = True
                continue
            core.count("sent")
            return result

    async def _budget_pause(self, scope: str, seconds: float, now: float) -> float:
        if self._async_budget:
            return await self._budget.pause(scope, seconds, now)  # type: ignore[no-any-return,misc]
        return self._budget.pause(scope, seconds, now)  # type: ignore[return-value]

    async def _acquire(self, plan: _Plan, timeout: float | None, *, front: bool) -> float:
        core = self._core
        if plan.kind is MethodKind.FREE:
            return 0.0
        clock = self._clock
        start = clock()
        deadline = None if timeout is None else start + timeout
        scheduler = core.scheduler
        ticket = scheduler.ticket(plan.priority, plan.lane, plan.chat)
        scheduler.submit(ticket, front=front)
        await self._pump()
        if ticket.state == _GRANTED:
            return 0.0
        loop = asyncio.get_running_loop()
        try:
            while ticket.state != _GRANTED:
                if self._pumper is None:
                    self._pumper = ticket
                pumping = self._pumper is ticket
                now = clock()
                wake = scheduler.next_wakeup() if pumping else None
                delay = None if wake is None else max(0.0, wake - now)
                if deadline is not None:
                    if now >= deadline:
                        raise _timeout_error(plan, timeout, delay)
                    delay = deadline - now if delay is None else min(delay, deadline - now)
                waker: asyncio.Future[None] = loop.create_future()
                ticket.waker = waker
                if pumping:
                    self._pumper_wake = math.inf if delay is None else now + delay
                if delay is None:
                    await waker
                else:
                    sleeper = asyncio.ensure_future(self._sleep_unless(waker, delay))
                    try:
                        await asyncio.wait((waker, sleeper), return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        sleeper.cancel()
                if pumping and ticket.state != _GRANTED:
                    await self._pump()
        except BaseException:
            scheduler.cancel(ticket)
            raise
        finally:
            ticket.waker = None
            if self._pumper is ticket:
                self._pumper = None
                self._nudge()
        waited = clock() - start
        core.count_wait(waited, delayed=True)
        return waited

    async def _sleep_unless(self, waker: asyncio.Future[None], delay: float) -> None:
        # The sleep starts one loop turn later: if a wake-up came in between,
        # don't sleep at all (with a FakeClock, a started sleep moves time).
        if not waker.done():
            await self._sleep(delay)

    async def _pump(self) -> None:
        scheduler = self._core.scheduler
        if not self._async_budget:
            budget: FloodBudget = self._budget  # type: ignore[assignment]
            now = self._clock()
            while (ticket := scheduler.candidate(now)) is not None:
                scheduler.resolve(ticket, budget.take(ticket.lane, ticket.chat, now), now)
                if ticket.state == _GRANTED:
                    _wake(ticket)
        else:
            if self._pump_lock is None:
                self._pump_lock = asyncio.Lock()
            async with self._pump_lock:
                abudget: AsyncFloodBudget = self._budget  # type: ignore[assignment]
                while (ticket := scheduler.candidate(now := self._clock())) is not None:
                    try:
                        grant = await abudget.take(ticket.lane, ticket.chat, now)
                    except BaseException:
                        scheduler.resolve(ticket, Grant(False, 0.0, 0.05), now)
                        raise
                    scheduler.resolve(ticket, grant, now)
                    if ticket.state == _GRANTED:
                        _wake(ticket)
        pumper = self._pumper
        if pumper is None:
            self._nudge()
        elif pumper.waker is not None:
            wake = scheduler.next_wakeup()
            if wake is not None and wake < self._pumper_wake - 1e-6:
                _wake(pumper)  # something is due before the pumper meant to look

    def _nudge(self) -> None:
        ticket = self._core.scheduler.any_waiting(lambda t: t.waker is not None)
        if ticket is not None:
            _wake(ticket)


def _wake(ticket: _Ticket) -> None:
    waker = ticket.waker
    if waker is not None and not waker.done():
        waker.set_result(None)
