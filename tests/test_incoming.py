"""The incoming guard and the update runners, framework-free."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict

import pytest

from botscale import (
    Deduplicator,
    HandlerLimit,
    IncomingGuard,
    MemoryStateStore,
    PerformanceMonitor,
    Rate,
    ThreadedUpdateRunner,
    UpdateInfo,
    UpdateRunner,
    allowed_updates,
)
from botscale.testing import FakeClock


def msg(user: int | None, chat: int | None = None, update_id: int | None = None) -> UpdateInfo:
    chat = user if chat is None else chat
    return UpdateInfo("message", update_id, user, chat, "private" if chat and chat > 0 else "group")


# --------------------------------------------------------------------------- UpdateInfo


def test_update_info_reads_raw_updates() -> None:
    info = UpdateInfo.from_dict(
        {
            "update_id": 7,
            "message": {"from": {"id": 42}, "chat": {"id": -100, "type": "supergroup"}},
        }
    )
    assert info == UpdateInfo("message", 7, 42, -100, "supergroup")
    cq = UpdateInfo.from_dict(
        {
            "update_id": 8,
            "callback_query": {
                "id": "x",
                "from": {"id": 5},
                "message": {"chat": {"id": 5, "type": "private"}},
            },
        }
    )
    assert cq == UpdateInfo("callback_query", 8, 5, 5, "private")
    post = UpdateInfo.from_dict(
        {"update_id": 9, "channel_post": {"chat": {"id": -1, "type": "channel"}}}
    )
    assert post == UpdateInfo("channel_post", 9, None, -1, "channel")
    inline = UpdateInfo.from_dict({"update_id": 10, "inline_query": {"from": {"id": 3}}})
    assert inline == UpdateInfo("inline_query", 10, 3, None, None)
    assert UpdateInfo.from_dict({"update_id": 11}).kind == "unknown"
    assert UpdateInfo.from_dict({"update_id": 12, "poll": "junk"}) == UpdateInfo("poll", 12)


def test_allowed_updates_keeps_bot_api_order_and_rejects_typos() -> None:
    assert allowed_updates({"callback_query", "message"}) == ["message", "callback_query"]
    with pytest.raises(ValueError, match="mesage"):
        allowed_updates(["mesage"])


# --------------------------------------------------------------------------- guard


def test_burst_from_one_user_is_cut_to_the_limit(clock: FakeClock) -> None:
    guard = IncomingGuard("5/minute", clock=clock)
    verdicts = [guard.check(msg(42, update_id=i)) for i in range(100)]
    assert sum(v.proceed for v in verdicts) == 5
    notices = [v.notice for v in verdicts if v.notice]
    assert len(notices) == 1  # one notice per window, never one per spam message
    assert notices[0] == "Too many requests: please wait 12 s and try again."
    s = guard.stats()
    assert (s.passed, s.limited, s.notices) == (5, 95, 1)
    clock.advance(60.0)
    assert guard.check(msg(42, update_id=1000))
    assert guard.check(msg(7, update_id=1001))  # other users were never affected


def test_notice_comes_again_only_after_the_window(clock: FakeClock) -> None:
    guard = IncomingGuard("1/10s", notice_interval=30.0, clock=clock)
    assert guard.check(msg(1))
    assert guard.check(msg(1)).notice is not None
    clock.advance(10.0)
    assert guard.check(msg(1))
    assert guard.check(msg(1)).notice is None  # 10 s later: still inside the notice window
    clock.advance(30.0)
    assert guard.check(msg(1))
    assert guard.check(msg(1)).notice is not None


def test_ignore_mode_never_asks_for_a_notice(clock: FakeClock) -> None:
    guard = IncomingGuard("1/minute", on_limited="ignore", clock=clock)
    guard.check(msg(1))
    v = guard.check(msg(1))
    assert not v
    assert v.reason == "limited"
    assert v.notice is None
    assert v.retry_after == pytest.approx(60.0)


def test_exempt_users_are_never_limited(clock: FakeClock) -> None:
    guard = IncomingGuard("1/minute", exempt={99}, clock=clock)
    assert all(guard.check(msg(99)) for _ in range(50))
    assert guard.stats().exempt == 50


def test_keys_user_chat_and_custom(clock: FakeClock) -> None:
    by_chat = IncomingGuard("1/minute", key="chat", clock=clock)
    assert by_chat.check(msg(1, chat=-5))
    assert not by_chat.check(msg(2, chat=-5))  # same group, other user: one bucket
    by_user = IncomingGuard("1/minute", clock=clock)
    assert by_user.check(msg(1, chat=-5))
    assert by_user.check(msg(2, chat=-5))
    custom = IncomingGuard("1/minute", key=lambda u: u.kind, clock=clock)
    assert custom.check(msg(1))
    assert not custom.check(msg(2))


def test_updates_without_user_are_keyed_by_chat_or_pass(clock: FakeClock) -> None:
    guard = IncomingGuard("1/minute", clock=clock)
    post = UpdateInfo("channel_post", 1, None, -100, "channel")
    assert guard.check(post)
    assert not guard.check(UpdateInfo("channel_post", 2, None, -100, "channel"))
    poll = UpdateInfo("poll", 3)
    assert all(guard.check(UpdateInfo("poll", 10 + i)) for i in range(5))
    assert guard.check(poll)
    assert guard.stats().unkeyed == 6
    limited = guard.check(UpdateInfo("channel_post", 4, None, -100, "channel"))
    assert limited.notice is None or limited.key == -100  # never a crash


def test_duplicates_are_dropped(clock: FakeClock) -> None:
    guard = IncomingGuard(None, clock=clock)
    assert guard.check(msg(1, update_id=5))
    dup = guard.check(msg(1, update_id=5))
    assert not dup
    assert dup.reason == "duplicate"
    guard.forget(msg(1, update_id=5))
    assert guard.check(msg(1, update_id=5))
    no_dedup = IncomingGuard(None, dedup=False)
    assert no_dedup.check(msg(1, update_id=5))
    assert no_dedup.check(msg(1, update_id=5))
    shared = Deduplicator(ttl=60.0)
    a, b = IncomingGuard(None, dedup=shared), IncomingGuard(None, dedup=shared)
    assert a.check(msg(1, update_id=9))
    assert not b.check(msg(1, update_id=9))  # two bot instances, one update


def test_handler_limits_are_separate_buckets(clock: FakeClock) -> None:
    guard = IncomingGuard("100/minute", clock=clock)
    report = HandlerLimit.coerce("2/minute")
    assert isinstance(report, HandlerLimit)
    results = [guard.check_handler(msg(1), report, "report") for _ in range(4)]
    assert [bool(r) for r in results] == [True, True, False, False]
    assert guard.check_handler(msg(1), report, "other")  # another handler's bucket
    assert guard.check_handler(msg(2), report, "report")  # another user's bucket
    assert HandlerLimit.coerce(None) is None
    assert HandlerLimit.coerce(False) is False
    assert HandlerLimit.coerce({"rate": "1/s", "burst": 3}) == HandlerLimit(Rate(1, 1.0), 3)
    with pytest.raises(TypeError, match="rate_limit flag"):
        HandlerLimit.coerce(3)


def test_user_state_is_bounded_and_keyed_by_user() -> None:
    store = MemoryStateStore(maxsize=2)
    guard = IncomingGuard(None, state=store)
    state = guard.user_state(msg(42, chat=-1))
    assert state is not None
    assert state.key == 42
    state.set({"step": 1})
    assert state.update(lambda s: {**s, "step": s["step"] + 1}) == {"step": 2}
    with state.session() as session:
        session.value["seen"] = True
    assert store.get(42) == {"step": 2, "seen": True}
    for user in range(100):
        guard.user_state(msg(user)).set(user)  # type: ignore[union-attr]
    assert len(store) == 2
    assert IncomingGuard(None).user_state(msg(1)) is None
    assert guard.user_state(UpdateInfo("poll")) is None


def test_track_reports_update_context_to_the_monitor(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    mon = PerformanceMonitor(slow_threshold=1.0, clock=clock)
    guard = IncomingGuard(None, monitor=mon)
    with caplog.at_level(logging.WARNING), guard.track(msg(42, chat=-7), "handler.start"):
        clock.advance(2.0)
    assert mon.stats()["handler.start"].count == 1
    assert "user_id=42" in caplog.text
    assert "chat_id=-7" in caplog.text
    assert "update='message'" in caplog.text
    with IncomingGuard(None).track(msg(1)):  # no monitor: no-op
        pass


def test_adapter_timing_reports_like_track(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    mon = PerformanceMonitor(slow_threshold=1.0, clock=clock)
    guard = IncomingGuard(None, monitor=mon)
    record = guard.recorder("handler.start")
    assert record is not None
    started = guard.timer()
    clock.advance(0.5)
    record(started, False, msg(42, chat=-7))
    started = guard.timer()
    clock.advance(3.0)
    with caplog.at_level(logging.WARNING):
        record(started, True, msg(42, chat=-7))
        guard.record_update(msg(5), guard.timer() - 2.0, error=False)
    s = mon.stats()["handler.start"]
    assert (s.count, s.errors, s.slow) == (2, 1, 1)
    assert s.max == pytest.approx(3.0)
    assert "handler.start" in caplog.text
    assert "user_id=42" in caplog.text
    assert "chat_id=-7" in caplog.text
    assert mon.stats()["update.message"].slow == 1
    mon.reset()  # the cached recorders count into the fresh operations
    record(guard.timer(), False, msg(1))
    guard.record_update(msg(1), guard.timer())
    assert mon.stats()["handler.start"].count == 1
    assert mon.stats()["update.message"].count == 1
    no_monitor = IncomingGuard(None)
    assert no_monitor.recorder("x") is None
    assert no_monitor.timer() == 0.0
    no_monitor.record_update(msg(1), 0.0)  # nothing to count into: no error


def test_batches_lose_only_their_duplicates() -> None:
    guard = IncomingGuard(None)
    batch = [msg(1, update_id=i) for i in range(5)]
    assert guard.drop_duplicates(batch, lambda u: u.update_id) is batch  # all new: as is
    again = [msg(1, update_id=i) for i in (3, 9, 4, 10, None)]
    fresh = guard.drop_duplicates(again, lambda u: u.update_id)
    assert [u.update_id for u in fresh] == [9, 10, None]
    assert guard.drop_duplicates([msg(1, update_id=9)], lambda u: u.update_id) == []
    assert guard.stats().duplicates == 3
    no_dedup = IncomingGuard(None, dedup=False)
    assert no_dedup.drop_duplicates(again, lambda u: u.update_id) is again


def test_passed_counts_every_path_exactly(clock: FakeClock) -> None:
    guard = IncomingGuard("2/minute", exempt={1}, clock=clock)
    results = [
        guard.check(msg(5)),  # limiter
        guard.check(msg(5)),
        guard.check(msg(5)),  # limited
        guard.check(msg(1)),  # exempt
        guard.check(UpdateInfo("poll")),  # unkeyed
    ]
    guard.count_passed()  # an exempt handler
    report = HandlerLimit(Rate(1, 60.0))
    assert guard.check_handler(msg(6), report, "report")
    assert not guard.check_handler(msg(6), report, "report")  # undoes one pass
    assert [r.proceed for r in results] == [True, True, False, True, True]
    s = guard.stats()
    assert (s.passed, s.limited, s.exempt, s.unkeyed) == (4 + 1 - 1, 2, 1, 1)
    unlimited = IncomingGuard(None)
    assert unlimited.check(msg(5))
    assert unlimited.stats().passed == 1


def test_bad_guard_arguments_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="on_limited"):
        IncomingGuard(on_limited="reply")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        IncomingGuard(key="users")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exempt"):
        IncomingGuard(exempt="42")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        IncomingGuard("fast")
    with pytest.raises(TypeError, match="dedup"):
        IncomingGuard(dedup=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="notice_interval"):
        IncomingGuard(notice_interval=0)


def test_guard_counts_exactly_under_threads() -> None:
    guard = IncomingGuard("10/hour", dedup=False)
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        for _ in range(200):
            guard.check(msg(1))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = guard.stats()
    assert s.passed == 10
    assert s.limited == 1590


# --------------------------------------------------------------------------- async runner


async def test_runner_keeps_chat_order_and_runs_chats_concurrently() -> None:
    runner = UpdateRunner(concurrency=4)
    log: dict[int, list[int]] = defaultdict(list)
    running = 0
    peak = 0

    async def work(chat: int, i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * ((i * 7) % 3))
        log[chat].append(i)
        running -= 1

    for i in range(60):
        chat = i % 6
        await runner.submit(msg(chat + 1), lambda c=chat, i=i: work(c, i))  # type: ignore[misc]
    await runner.join()
    for chat, got in log.items():
        assert got == sorted(got), chat
    assert peak == 4  # the cap, and reached: chats did run concurrently
    s = runner.stats()
    assert (s.submitted, s.completed, s.failed, s.pending) == (60, 60, 0, 0)


async def test_runner_intake_is_bounded() -> None:
    runner = UpdateRunner(concurrency=2, max_pending=5)
    gate = asyncio.Event()
    submitted = 0

    async def producer() -> None:
        nonlocal submitted
        for i in range(20):
            await runner.submit(msg(i + 1), gate.wait)
            submitted += 1

    task = asyncio.create_task(producer())
    for _ in range(20):
        await asyncio.sleep(0)
    assert submitted == 5  # the producer waits: no pile of pending tasks
    assert runner.stats().pending == 5
    gate.set()
    await task
    await runner.join()
    assert runner.stats().completed == 20
    assert runner.stats().intake_waits >= 1


async def test_runner_logs_slow_updates_and_can_cancel_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = UpdateRunner(concurrency=2, time_budget=0.01)
    with caplog.at_level(logging.WARNING):
        assert await runner.run(msg(1), lambda: asyncio.sleep(0.05, result="done")) == "done"
    assert "still running after" in caplog.text
    assert runner.stats().slow == 1
    cancelling = UpdateRunner(time_budget=0.01, cancel_slow=True)
    assert await cancelling.run(msg(1), lambda: asyncio.sleep(10, result="never")) is None
    assert cancelling.stats().cancelled == 1
    with pytest.raises(ValueError, match="cancel_slow"):
        UpdateRunner(cancel_slow=True)


async def test_runner_failures_are_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    runner = UpdateRunner()

    async def boom() -> None:
        raise RuntimeError("handler bug")

    await runner.submit(msg(1), boom)
    await runner.join()
    assert runner.stats().failed == 1
    assert "handler bug" in caplog.text
    with pytest.raises(RuntimeError):
        await runner.run(msg(1), boom)  # inline: the framework sees the error


async def test_updates_without_chat_are_not_serialised() -> None:
    runner = UpdateRunner(concurrency=8, key=lambda u: None)
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1

    await asyncio.gather(*(runner.run(UpdateInfo("poll"), work) for _ in range(8)))
    assert peak == 8


# --------------------------------------------------------------------------- threaded runner


def test_threaded_runner_keeps_order_caps_and_bounds_intake() -> None:
    runner = ThreadedUpdateRunner(concurrency=3, max_pending=6)
    log: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()
    running = 0
    peak = 0

    def work(chat: int, i: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.001)
        with lock:
            log[chat].append(i)
            running -= 1

    for i in range(60):
        chat = i % 5
        assert runner.submit(msg(chat + 1), lambda c=chat, i=i: work(c, i))  # type: ignore[misc]
        assert runner.stats().pending <= 6
    assert runner.join(timeout=30)
    runner.close()
    for chat, got in log.items():
        assert got == sorted(got), chat
    assert 1 <= peak <= 3
    s = runner.stats()
    assert (s.submitted, s.completed, s.pending) == (60, 60, 0)
    assert not runner.submit(msg(1), lambda: None)  # closed


def test_threaded_runner_submit_times_out_when_full() -> None:
    runner = ThreadedUpdateRunner(concurrency=1, max_pending=1)
    gate = threading.Event()
    assert runner.submit(msg(1), gate.wait)
    assert not runner.submit(msg(2), lambda: None, timeout=0.05)
    gate.set()
    assert runner.join(timeout=10)
    runner.close()


def test_threaded_runner_logs_slow_and_failed(caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []
    runner = ThreadedUpdateRunner(concurrency=1, time_budget=0.01, on_error=errors.append)
    with caplog.at_level(logging.WARNING):
        runner.submit(msg(1), lambda: time.sleep(0.1))

        def boom() -> None:
            raise ValueError("bug")

        runner.submit(msg(2), boom)
        assert runner.join(timeout=10)
    runner.close()
    assert runner.stats().slow == 1
    assert runner.stats().failed == 1
    assert isinstance(errors[0], ValueError)
    assert "still running after" in caplog.text
