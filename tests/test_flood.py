"""Flood control: budgets, scheduling, priorities, 429 scopes, retries, counters.

Every timing rule runs on a FakeClock: the async façade sleeps with
``clock.asleep`` (which advances time), so a minute of Telegram traffic takes
milliseconds and the grant times are exact.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from botscale import (
    ApiFailure,
    AsyncFloodControl,
    BucketSpec,
    FailureKind,
    FloodControl,
    ForbiddenChat,
    Grant,
    MemoryFloodBudget,
    OutgoingRequest,
    Priority,
    Rate,
    RateLimitExceeded,
    TelegramLimits,
    TelegramLimitWarning,
    classify_api_answer,
    replying_to,
    send_priority,
)
from botscale._flood import _Scheduler
from botscale._telegram import ChatKind, MethodKind, chat_kind
from botscale.testing import FakeClock

# --------------------------------------------------------------------------- helpers


class FakeApiError(Exception):
    """What a framework raises; the classifier below translates it."""

    def __init__(self, failure: ApiFailure) -> None:
        super().__init__(failure.description or failure.kind.value)
        self.failure = failure


def classify(exc: BaseException) -> ApiFailure | None:
    return exc.failure if isinstance(exc, FakeApiError) else None


def flood(seconds: float) -> FakeApiError:
    return FakeApiError(ApiFailure(FailureKind.FLOOD, seconds, 429, "Too Many Requests"))


def limits(**kw: object) -> TelegramLimits:
    return TelegramLimits(**kw)  # type: ignore[arg-type]


def msg(chat: int | str | None, method: str = "sendMessage", **kw: object) -> OutgoingRequest:
    return OutgoingRequest(method, chat, **kw)  # type: ignore[arg-type]


def async_control(clock: FakeClock, **kw: object) -> AsyncFloodControl:
    kw.setdefault("limits", TelegramLimits())
    return AsyncFloodControl(clock=clock, sleep=clock.asleep, **kw)  # type: ignore[arg-type]


def conforms(times: list[float], rate: Rate, burst: int) -> bool:
    """GCRA conformance: no window of length t holds more than burst + t * rate grants."""
    times = sorted(times)
    per_second = rate.per_second
    for i in range(len(times)):
        for j in range(i, len(times)):
            if j - i + 1 > burst + (times[j] - times[i]) * per_second + 1e-6:
                return False
    return True


class RecordingBudget(MemoryFloodBudget):
    """The memory budget, noting the exact time of every grant."""

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[tuple[float, str | None]] = []

    def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        grant = super().take(lane, chat, now)
        if grant.granted:
            self.grants.append((now, chat.key if chat is not None else None))
        return grant


# --------------------------------------------------------------------------- Telegram knowledge


def test_chat_kinds_follow_the_sign_of_the_id() -> None:
    assert chat_kind(42) is ChatKind.PRIVATE
    assert chat_kind(-100123) is ChatKind.GROUP
    assert chat_kind("@mychannel") is ChatKind.GROUP
    assert chat_kind("42") is ChatKind.PRIVATE
    assert chat_kind("-5") is ChatKind.GROUP
    with pytest.raises(TypeError, match="chat_id"):
        chat_kind(1.5)  # type: ignore[arg-type]


def test_method_table_is_explicit() -> None:
    lim = TelegramLimits()
    for method in ("sendMessage", "sendPhoto", "copyMessage", "sendMediaGroup", "editMessageText"):
        assert lim.method_kind(method) is MethodKind.MESSAGE, method
    assert lim.method_kind("sendmessage") is MethodKind.MESSAGE  # telebot spells some lower
    # Telegram's 30/s limits messages: callback answers are free unless counted.
    assert lim.method_kind("answerCallbackQuery") is MethodKind.FREE
    counted = TelegramLimits(count_interactive=True)
    assert counted.method_kind("answerCallbackQuery") is MethodKind.INTERACTIVE
    assert counted.method_kind("answercallbackquery") is MethodKind.INTERACTIVE
    for method in ("getUpdates", "getMe", "sendChatAction", "deleteMessage", "setWebhook"):
        assert lim.method_kind(method) is MethodKind.FREE, method
    assert TelegramLimits(count_edits=False).method_kind("editMessageText") is MethodKind.FREE


def test_request_is_read_from_call_parameters() -> None:
    r = OutgoingRequest.from_params("sendMessage", {"chat_id": 5, "text": "hi"})
    assert (r.chat_id, r.cost, r.paid) == (5, 1, False)
    r = OutgoingRequest.from_params("sendMediaGroup", {"chat_id": -7, "media": [1, 2, 3]})
    assert (r.chat_id, r.cost) == (-7, 3)
    r = OutgoingRequest.from_params("sendMessage", {"chat_id": 1, "allow_paid_broadcast": True})
    assert r.paid
    r = OutgoingRequest.from_params("sendMessage", {"chat_id": "1", "allow_paid_broadcast": "true"})
    assert r.paid
    assert r.chat_id == "1"
    assert (
        OutgoingRequest.from_params("answerInlineQuery", {"inline_query_id": "x"}).chat_id is None
    )
    assert OutgoingRequest.from_params("getMe", None).chat_id is None


def test_bot_api_answers_are_classified() -> None:
    assert classify_api_answer(200, {"ok": True, "result": {}}) is None
    f = classify_api_answer(
        429, {"ok": False, "error_code": 429, "description": "x", "parameters": {"retry_after": 7}}
    )
    assert f is not None
    assert f.kind is FailureKind.FLOOD
    assert f.retry_after == 7.0
    f = classify_api_answer(
        403, {"ok": False, "description": "Forbidden: bot was blocked by the user"}
    )
    assert f is not None
    assert f.kind is FailureKind.FORBIDDEN
    assert f.blocked
    f = classify_api_answer(403, {"ok": False, "description": "Forbidden: bot was kicked"})
    assert f is not None
    assert not f.blocked
    assert classify_api_answer(400, {"ok": False})
    assert classify_api_answer(400, {"ok": False}).kind is FailureKind.CLIENT  # type: ignore[union-attr]
    assert classify_api_answer(502, None).kind is FailureKind.SERVER  # type: ignore[union-attr]
    assert classify_api_answer(429, None).kind is FailureKind.FLOOD  # type: ignore[union-attr]
    inner = classify_api_answer(200, {"ok": False, "error_code": 400, "description": "bad"})
    assert inner is not None
    assert inner.status == 400


def test_limits_above_telegram_ceilings_warn_once() -> None:
    with pytest.warns(TelegramLimitWarning, match="overall"):
        TelegramLimits(overall=Rate(45, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TelegramLimits(overall=Rate(45, 1.0))  # same setting again: silent
        TelegramLimits(overall=Rate(100, 1.0), check_ceilings=False)
        TelegramLimits(overall=Rate(20, 1.0))  # below the ceiling: silent
    with pytest.warns(TelegramLimitWarning, match="group"):
        TelegramLimits(group=Rate(1, 1.0))


def test_bad_limits_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="private_burst"):
        TelegramLimits(private_burst=0)
    with pytest.raises(TypeError, match="overall"):
        TelegramLimits(overall=30)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="count_edits"):
        TelegramLimits(count_edits=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flood_retries"):
        FloodControl(flood_retries=-1)
    with pytest.raises(ValueError, match="max_retry_after"):
        AsyncFloodControl(max_retry_after=0)
    with pytest.raises(TypeError, match="budget"):
        FloodControl(budget=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="request"):
        FloodControl().acquire("sendMessage")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- budget


def test_budget_takes_both_buckets_or_neither() -> None:
    budget = MemoryFloodBudget()
    lane = BucketSpec("overall", 1 / 30, 1)
    chat = BucketSpec("chat:1", 1.0, 1)
    assert budget.take(lane, chat, 0.0).granted
    refused = budget.take(BucketSpec("overall", 1 / 30, 5), chat, 0.0)
    assert not refused.granted
    assert refused.chat_wait == pytest.approx(1.0)
    # the refused call did not spend the lane: another chat goes at once
    assert budget.take(BucketSpec("overall", 1 / 30, 5), BucketSpec("chat:2", 1.0, 1), 0.0)


def test_budget_lane_wait_and_chat_wait_after_a_grant() -> None:
    budget = MemoryFloodBudget()
    lane = BucketSpec("overall", 0.5, 1)
    g = budget.take(lane, BucketSpec("chat:1", 1.0, 2), 0.0)
    assert g.granted
    assert g.chat_wait == 0.0
    refused = budget.take(lane, BucketSpec("chat:2", 1.0, 1), 0.1)
    assert not refused.granted
    assert refused.lane_wait == pytest.approx(0.4)
    g = budget.take(lane, BucketSpec("chat:1", 1.0, 2), 0.5)
    assert g.granted
    assert g.chat_wait == pytest.approx(0.5)


def test_pause_deadlines_only_move_forward() -> None:
    budget = MemoryFloodBudget()
    assert budget.pause("chat:1", 10.0, 0.0) == pytest.approx(10.0)
    assert budget.pause("chat:1", 2.0, 1.0) == pytest.approx(9.0)  # shorter: no early release
    lane = BucketSpec("overall", 0.01, 1)
    assert budget.take(lane, BucketSpec("chat:1", 1.0, 1), 9.9).chat_wait == pytest.approx(0.1)
    assert budget.take(lane, BucketSpec("chat:1", 1.0, 1), 10.0).granted
    budget.pause("bot", 3.0, 20.0)
    refused = budget.take(lane, BucketSpec("chat:2", 1.0, 1), 21.0)
    assert not refused.granted
    assert refused.lane_wait == pytest.approx(2.0)


def test_budget_forgets_idle_chats() -> None:
    budget = MemoryFloodBudget()
    lane = BucketSpec("overall", 1e-6, 1)
    for i in range(5000):
        budget.take(lane, BucketSpec(f"chat:{i}", 1.0, 1), i * 0.01)
    assert len(budget) < 2200  # only chats touched in the last second (plus one batch)


# --------------------------------------------------------------------------- scheduler (pure)


def test_scheduler_serves_priority_then_age_and_keeps_chat_order() -> None:
    sched = _Scheduler()
    lane = BucketSpec("overall", 1.0, 1)
    bulk = [sched.ticket(Priority.BULK, lane, BucketSpec(f"chat:{i}", 1.0, 1)) for i in range(3)]
    for t in bulk:
        sched.submit(t)
    urgent = sched.ticket(Priority.INTERACTIVE, lane, None)
    sched.submit(urgent)
    order = []
    while (picked := sched.candidate(0.0)) is not None:
        order.append(picked)
        sched.resolve(picked, Grant(True), 0.0)
    assert order == [urgent, *bulk]
    assert sched.waiting == 0
    assert sched.next_wakeup() is None


def test_scheduler_cancelled_tickets_are_skipped() -> None:
    sched = _Scheduler()
    lane = BucketSpec("overall", 1.0, 1)
    chat = BucketSpec("chat:1", 1.0, 1)
    a, b = sched.ticket(1, lane, chat), sched.ticket(1, lane, chat)
    sched.submit(a)
    sched.submit(b)
    sched.cancel(a)
    assert sched.candidate(0.0) is b
    assert sched.waiting == 1


# --------------------------------------------------------------------------- async façade: turns


async def test_broadcast_runs_at_the_overall_rate(clock: FakeClock) -> None:
    fc = async_control(clock)
    start = clock()
    times: list[float] = []

    async def send(chat: int) -> None:
        await fc.acquire(msg(chat))
        times.append(clock() - start)

    await asyncio.gather(*(send(c) for c in range(1, 201)))
    assert conforms(times, Rate(30, 1.0), 1)
    assert max(times) == pytest.approx(199 / 30)  # no slack: exactly 30/s
    s = fc.stats()
    assert s.delayed == 199
    assert s.waiting == 0
    assert s.wait_time == pytest.approx(sum(times))


async def test_one_chat_gets_its_burst_then_one_per_second(clock: FakeClock) -> None:
    fc = async_control(clock)
    start = clock()
    times: list[float] = []

    async def send(i: int) -> None:
        await fc.acquire(msg(42))
        times.append(clock() - start)

    await asyncio.gather(*(send(i) for i in range(6)))
    assert times == pytest.approx([0.0, 1 / 30, 1.0, 2.0, 3.0, 4.0])


async def test_groups_are_limited_per_minute(clock: FakeClock) -> None:
    fc = async_control(clock)
    start = clock()
    times: list[float] = []

    async def send() -> None:
        await fc.acquire(msg(-1001))
        times.append(clock() - start)

    await asyncio.gather(*(send() for _ in range(23)))
    assert conforms(times, Rate(20, 60.0), 3)
    assert times[-1] == pytest.approx(20 * 3.0)  # 3 at once, then one per 3 s


async def test_paid_broadcast_has_its_own_lane(clock: FakeClock) -> None:
    fc = async_control(clock)
    start = clock()
    paid: list[float] = []

    async def send(chat: int) -> None:
        await fc.acquire(msg(chat, paid=True))
        paid.append(clock() - start)

    async def free_lane() -> float:
        await asyncio.sleep(0)  # after the paid broadcast queued up
        await fc.acquire(msg(99999))
        return clock() - start

    normal = asyncio.create_task(free_lane())
    await asyncio.gather(*(send(c) for c in range(1, 1001)))
    assert max(paid) == pytest.approx(0.999)
    assert await normal < 0.1  # the paid broadcast did not use the 30/s lane


async def test_requests_without_chat_count_only_overall(clock: FakeClock) -> None:
    fc = async_control(clock, limits=TelegramLimits(count_interactive=True))
    start = clock()
    done: list[float] = []

    async def answer() -> None:
        await fc.acquire(msg(None, "answerInlineQuery"))
        done.append(clock() - start)

    await asyncio.gather(*(answer() for _ in range(5)))
    assert done == pytest.approx([i / 30 for i in range(5)])


async def test_untracked_methods_pass_without_waiting(clock: FakeClock) -> None:
    fc = async_control(clock)
    for _ in range(100):
        assert await fc.acquire(msg(1, "sendChatAction")) == 0.0
        assert await fc.acquire(msg(None, "getUpdates")) == 0.0
    assert clock() == 1000.0
    assert fc.stats().delayed == 0


async def test_callback_answers_spend_no_message_budget_by_default(clock: FakeClock) -> None:
    fc = async_control(clock)
    for chat in range(1, 31):  # a broadcast empties the overall budget
        fc_task = asyncio.ensure_future(fc.acquire(msg(chat)))
        await asyncio.sleep(0)
    started = clock()
    for _ in range(50):
        assert await fc.acquire(msg(None, "answerCallbackQuery")) == 0.0
    assert clock() == started
    await fc_task


async def test_interactive_goes_ahead_of_bulk_when_the_budget_is_short(clock: FakeClock) -> None:
    fc = async_control(clock, limits=TelegramLimits(count_interactive=True))
    order: list[str] = []

    async def bulk(chat: int) -> None:
        with send_priority(Priority.BULK):
            await fc.acquire(msg(chat))
        order.append(f"bulk{chat}")

    async def callback_answer() -> None:
        await asyncio.sleep(0)  # arrives after the broadcast queued up
        await fc.acquire(msg(None, "answerCallbackQuery"))
        order.append("answer")

    async def reply() -> None:
        await asyncio.sleep(0)
        with replying_to(777):
            await fc.acquire(msg(777))
        order.append("reply")

    await asyncio.gather(*(bulk(c) for c in range(1, 31)), callback_answer(), reply())
    assert order[0] == "bulk1"  # granted at once, before the others arrived
    assert set(order[1:3]) == {"answer", "reply"}
    assert order[3:] == [f"bulk{c}" for c in range(2, 31)]


async def test_normal_goes_ahead_of_bulk_and_age_breaks_ties(clock: FakeClock) -> None:
    fc = async_control(clock)
    order: list[int] = []

    async def send(chat: int, priority: Priority) -> None:
        await fc.acquire(msg(chat, priority=priority))
        order.append(chat)

    await asyncio.gather(
        send(1, Priority.BULK),
        send(2, Priority.BULK),
        send(3, Priority.NORMAL),
        send(4, Priority.BULK),
    )
    assert order == [1, 3, 2, 4]


async def test_chat_order_is_kept_for_mixed_priorities(clock: FakeClock) -> None:
    fc = async_control(clock)
    order: list[str] = []

    async def send(name: str, priority: Priority) -> None:
        await fc.acquire(msg(5, priority=priority))
        order.append(name)

    await asyncio.gather(
        send("a", Priority.BULK), send("b", Priority.BULK), send("c", Priority.INTERACTIVE)
    )
    assert order == ["a", "b", "c"]  # one chat's messages never overtake each other


async def test_acquire_timeout_raises_and_leaves_no_trace(clock: FakeClock) -> None:
    fc = async_control(clock)
    await fc.acquire(msg(1))
    await fc.acquire(msg(1))
    with pytest.raises(RateLimitExceeded) as info:
        await fc.acquire(msg(1), timeout=0.5)
    assert info.value.key == 1
    assert fc.stats().waiting == 0
    clock.advance(1.0)
    assert await fc.acquire(msg(1)) == 0.0  # the timed-out request took nothing


async def test_cancelled_waiter_is_withdrawn() -> None:
    fc = AsyncFloodControl(limits(private=Rate(1, 3600.0), private_burst=1, overall_burst=5))
    await fc.acquire(msg(1))
    task = asyncio.create_task(fc.acquire(msg(1)))
    await asyncio.sleep(0.01)
    assert fc.stats().waiting == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fc.stats().waiting == 0
    assert await fc.acquire(msg(2)) == 0.0


async def test_a_new_request_due_sooner_wakes_the_waiting_pumper() -> None:
    """Real clock: the pumper sleeps an hour; a request due now must not wait for it."""
    fc = AsyncFloodControl(limits(group=Rate(1, 3600.0), group_burst=1, overall_burst=5))
    await fc.acquire(msg(-1))
    sleeper = asyncio.create_task(fc.acquire(msg(-1)))  # due in an hour
    await asyncio.sleep(0.01)
    await asyncio.wait_for(fc.acquire(msg(2)), timeout=5.0)  # different chat: goes now
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper


# --------------------------------------------------------------------------- hypothesis


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, -10, -11, None]),
            st.sampled_from(list(Priority)),
            st.floats(0.0, 3.0),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_traffic_stays_within_every_budget_and_keeps_chat_order(
    requests: list[tuple[int | None, Priority, float]],
) -> None:
    lim = limits(
        overall=Rate(10, 1.0),
        overall_burst=2,
        private=Rate(1, 1.0),
        private_burst=2,
        group=Rate(3, 10.0),
        group_burst=2,
        count_interactive=True,
    )

    async def run() -> RecordingBudget:
        clock = FakeClock(0.0)
        budget = RecordingBudget()
        fc = AsyncFloodControl(lim, clock=clock, sleep=clock.asleep, budget=budget)

        async def send(chat: int | None, priority: Priority, at: float) -> None:
            await clock.asleep(max(0.0, at - clock()))
            method = "sendMessage" if chat is not None else "answerInlineQuery"
            await fc.acquire(OutgoingRequest(method, chat, priority=priority))

        await asyncio.gather(*(send(c, p, at) for c, p, at in requests))
        assert fc.stats().waiting == 0
        return budget

    budget = asyncio.run(run())
    overall = [t for t, _ in budget.grants]
    grants: dict[str | None, list[float]] = defaultdict(list)
    for t, chat in budget.grants:
        grants[chat].append(t)

    assert len(overall) == len(requests)
    assert conforms(overall, lim.overall, lim.overall_burst)
    for chat, got in grants.items():
        if chat is None:
            continue
        rate, burst = lim.chat_rate(chat_kind(chat.removeprefix("chat:")))
        assert conforms(got, rate, burst)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([1, 2, -5]), min_size=2, max_size=25))
def test_one_chats_requests_are_granted_in_submission_order(chats: list[int]) -> None:
    async def run() -> dict[int, list[int]]:
        clock = FakeClock(0.0)
        fc = AsyncFloodControl(TelegramLimits(), clock=clock, sleep=clock.asleep)
        seen: dict[int, list[int]] = defaultdict(list)

        async def send(i: int, chat: int) -> None:
            await fc.acquire(msg(chat, priority=Priority(i % 3)))
            seen[chat].append(i)

        await asyncio.gather(*(send(i, c) for i, c in enumerate(chats)))
        return seen

    for got in asyncio.run(run()).values():
        assert got == sorted(got)


# --------------------------------------------------------------------------- 429 and retries


class Script:
    """A fake Bot API: per chat, the failures to raise before succeeding."""

    def __init__(self, clock: FakeClock, failures: dict[int | None, list[Exception]]) -> None:
        self.clock = clock
        self.failures = {k: list(v) for k, v in failures.items()}
        self.calls: list[tuple[float, int | None]] = []

    def sender(self, chat: int | None) -> Callable[[], Awaitable[str]]:
        async def send() -> str:
            self.calls.append((self.clock(), chat))
            pending = self.failures.get(chat)
            if pending:
                raise pending.pop(0)
            return f"ok {chat}"

        return send


async def test_429_pauses_only_its_chat(clock: FakeClock) -> None:
    fc = async_control(clock)
    api = Script(clock, {1: [flood(5)]})
    start = clock()
    results = await asyncio.gather(
        *(fc.call(msg(c), api.sender(c), classify=classify) for c in (1, 2, 3, 4))
    )
    assert results == ["ok 1", "ok 2", "ok 3", "ok 4"]
    done = {c: t - start for t, c in api.calls}
    assert max(done[c] for c in (2, 3, 4)) < 0.2  # other chats were not held
    retried = [t - start for t, c in api.calls if c == 1]
    assert retried[1] >= 5.0  # chat 1 waited its retry_after
    s = fc.stats()
    assert s.flood_429 == 1
    assert s.flood_by_chat == {"1": 1}
    assert s.flood_by_method == {"sendMessage": 1}
    assert s.retries == 1
    assert s.sent == 4
    assert s.attempts == 5
    assert s.bot_pauses == 0


async def test_429_without_chat_pauses_the_bot(clock: FakeClock) -> None:
    fc = async_control(clock, limits=TelegramLimits(count_interactive=True))
    api = Script(clock, {None: [flood(4)]})
    start = clock()
    await fc.call(msg(None, "answerInlineQuery"), api.sender(None), classify=classify)
    await fc.call(msg(9), api.sender(9), classify=classify)
    assert api.calls[-1][0] - start >= 4.0
    assert fc.stats().bot_pauses == 1


async def test_429s_from_several_chats_at_once_pause_the_bot(clock: FakeClock) -> None:
    fc = async_control(clock, bot_wide_after=3)
    api = Script(clock, {1: [flood(2)], 2: [flood(2)], 3: [flood(2)]})
    start = clock()
    await asyncio.gather(*(fc.call(msg(c), api.sender(c), classify=classify) for c in (1, 2, 3)))
    assert fc.stats().bot_pauses == 1
    await fc.call(msg(50), api.sender(50), classify=classify)
    assert api.calls[-1][0] - start >= 2.0  # a fourth chat also waited for the bot pause


async def test_cooldown_is_not_released_early_by_a_shorter_429(clock: FakeClock) -> None:
    fc = async_control(clock)
    await fc.pause(1, 10.0)
    await fc.pause(1, 1.0)  # e.g. a later, shorter retry_after for the same chat
    start = clock()
    await fc.acquire(msg(1))
    assert clock() - start == pytest.approx(10.0)


async def test_finishing_requests_do_not_release_a_bot_pause(clock: FakeClock) -> None:
    fc = async_control(clock)
    await fc.pause(None, 6.0)
    start = clock()
    got: list[float] = []

    async def send(chat: int) -> None:
        await fc.acquire(msg(chat))
        got.append(clock() - start)

    await asyncio.gather(*(send(c) for c in range(1, 4)))
    assert min(got) >= 6.0


async def test_429_retries_are_capped_and_the_framework_error_surfaces(clock: FakeClock) -> None:
    fc = async_control(clock, flood_retries=2)
    last = flood(1)
    api = Script(clock, {1: [flood(1), flood(1), last, flood(1)]})
    with pytest.raises(FakeApiError) as info:
        await fc.call(msg(1), api.sender(1), classify=classify)
    assert info.value is last
    s = fc.stats()
    assert len(api.calls) == 3
    assert s.retries == 2
    assert s.failures == {"flood": 1}
    assert s.flood_429 == 3


async def test_a_retry_after_above_the_cap_fails_at_once(clock: FakeClock) -> None:
    fc = async_control(clock, max_retry_after=30.0)
    api = Script(clock, {1: [flood(3600)]})
    with pytest.raises(FakeApiError):
        await fc.call(msg(1), api.sender(1), classify=classify)
    assert len(api.calls) == 1


async def test_server_and_network_errors_retry_with_backoff(clock: FakeClock) -> None:
    fc = async_control(clock, error_retries=2, backoff=1.0)
    server = FakeApiError(ApiFailure(FailureKind.SERVER, status=502))
    network = FakeApiError(ApiFailure(FailureKind.NETWORK))
    api = Script(clock, {1: [server, network]})
    start = clock()
    assert await fc.call(msg(1), api.sender(1), classify=classify) == "ok 1"
    gaps = [b[0] - a[0] for a, b in zip(api.calls, api.calls[1:], strict=False)]
    assert 0.5 <= gaps[0] <= 1.0 + 1e-9  # backoff 1 s, up to half of it jittered off
    assert 1.0 <= gaps[1] <= 2.0 + 1e-9
    assert fc.stats().retries == 2
    assert clock() - start >= 1.5


async def test_server_errors_give_up_after_error_retries(clock: FakeClock) -> None:
    fc = async_control(clock, error_retries=1)
    errors: list[Exception] = [
        FakeApiError(ApiFailure(FailureKind.SERVER, status=500)) for _ in range(3)
    ]
    api = Script(clock, {1: errors})
    with pytest.raises(FakeApiError) as info:
        await fc.call(msg(1), api.sender(1), classify=classify)
    assert info.value is errors[1]
    assert len(api.calls) == 2
    assert fc.stats().failures == {"server": 1}


async def test_client_errors_are_never_retried(clock: FakeClock) -> None:
    fc = async_control(clock)
    api = Script(clock, {1: [FakeApiError(ApiFailure(FailureKind.CLIENT, status=400))]})
    with pytest.raises(FakeApiError):
        await fc.call(msg(1), api.sender(1), classify=classify)
    assert len(api.calls) == 1
    assert fc.stats().retries == 0


async def test_forbidden_is_reported_and_not_retried(clock: FakeClock) -> None:
    reported: list[ForbiddenChat] = []
    fc = async_control(clock, on_forbidden=reported.append)
    blocked = FakeApiError(
        ApiFailure(
            FailureKind.FORBIDDEN, status=403, description="Forbidden: bot was blocked by the user"
        )
    )
    api = Script(clock, {7: [blocked]})
    with pytest.raises(FakeApiError):
        await fc.call(msg(7), api.sender(7), classify=classify)
    assert reported == [
        ForbiddenChat(7, "sendMessage", "Forbidden: bot was blocked by the user", True)
    ]
    assert len(api.calls) == 1
    assert fc.stats().forbidden == 1


async def test_a_failing_forbidden_callback_does_not_hide_the_error(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(info: ForbiddenChat) -> None:
        raise RuntimeError("db down")

    fc = async_control(clock, on_forbidden=broken)
    api = Script(clock, {7: [FakeApiError(ApiFailure(FailureKind.FORBIDDEN, status=403))]})
    with pytest.raises(FakeApiError):
        await fc.call(msg(7), api.sender(7), classify=classify)
    assert "on_forbidden callback failed" in caplog.text


async def test_unknown_exceptions_pass_through_untouched(clock: FakeClock) -> None:
    fc = async_control(clock)

    async def send() -> str:
        raise KeyError("not a Bot API error")

    with pytest.raises(KeyError):
        await fc.call(msg(1), send, classify=classify)
    assert fc.stats().retries == 0


async def test_untracked_methods_are_passed_through_by_call(clock: FakeClock) -> None:
    fc = async_control(clock)
    api = Script(clock, {1: [flood(3)]})
    with pytest.raises(FakeApiError):
        await fc.call(msg(1, "getUpdates"), api.sender(1), classify=classify)
    assert fc.stats().attempts == 0


# --------------------------------------------------------------------------- async budget


class AsyncMemoryBudget:
    """An AsyncFloodBudget over the memory one, with an await in each call (like Redis)."""

    def __init__(self) -> None:
        self.inner = MemoryFloodBudget()
        self.takes = 0

    async def take(self, lane: BucketSpec, chat: BucketSpec | None, now: float) -> Grant:
        await asyncio.sleep(0)
        self.takes += 1
        return self.inner.take(lane, chat, now)

    async def pause(self, scope: str, seconds: float, now: float) -> float:
        await asyncio.sleep(0)
        return self.inner.pause(scope, seconds, now)


async def test_an_async_budget_plugs_in(clock: FakeClock) -> None:
    budget = AsyncMemoryBudget()
    fc = async_control(clock, budget=budget)
    start = clock()
    times: list[float] = []
    api = Script(clock, {3: [flood(2)]})

    async def send(chat: int) -> None:
        await fc.call(msg(chat), api.sender(chat), classify=classify)
        times.append(clock() - start)

    await asyncio.gather(*(send(c) for c in range(1, 31)))
    assert len(times) == 30
    assert budget.takes >= 31
    assert conforms([t for t, _ in api.calls], Rate(30, 1.0), 1)
    assert [t - start for t, c in api.calls if c == 3][1] >= 2.0


# --------------------------------------------------------------------------- sync façade


def test_sync_control_follows_the_same_rules(clock: FakeClock) -> None:
    fc = FloodControl(clock=clock, sleep=clock.sleep)
    start = clock()
    for _ in range(3):
        fc.acquire(msg(1))
    assert clock() - start == pytest.approx(1.0)
    calls: list[float] = []
    failures = [flood(4)]

    def send() -> str:
        calls.append(clock())
        if failures:
            raise failures.pop()
        return "ok"

    assert fc.call(msg(2), send, classify=classify) == "ok"
    assert calls[1] - calls[0] >= 4.0
    fc.pause(None, 2.0)
    before = clock()
    fc.acquire(msg(3))
    assert clock() - before == pytest.approx(2.0)
    s = fc.stats()
    assert s.flood_429 == 1
    assert s.retries == 1
    assert s.sent == 1


def test_sync_timeout_raises(clock: FakeClock) -> None:
    fc = FloodControl(clock=clock, sleep=clock.sleep)
    fc.pause(5, 100.0)
    with pytest.raises(RateLimitExceeded):
        fc.acquire(msg(5), timeout=1.0)
    assert fc.stats().waiting == 0


def test_sync_control_under_threads_stays_within_the_budget() -> None:
    """Real threads and the real clock; the check is on the grant times, not on speed."""
    lim = limits(overall=Rate(400, 1.0), private=Rate(200, 1.0), check_ceilings=False)
    fc = FloodControl(lim)
    grants: list[float] = []
    per_chat: dict[int, list[float]] = defaultdict(list)
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(10):
            chat = (n * 10 + i) % 5 + 1
            fc.acquire(msg(chat))
            now = time.monotonic()
            with lock:
                grants.append(now)
                per_chat[chat].append(now)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(grants) == 80
    assert fc.stats().waiting == 0
    # grant times are read after acquire returns, so they can only be later:
    # allow the scheduling delay of a thread as slack in the burst.
    assert conforms(grants, lim.overall, lim.overall_burst + 8)
