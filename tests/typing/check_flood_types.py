"""Static typing checks of flood control, the incoming guard and the adapters (mypy --strict)."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from botscale import (
    ApiFailure,
    AsyncDedupStore,
    AsyncFloodBudget,
    AsyncFloodControl,
    AsyncStateStore,
    AsyncUserState,
    FailureKind,
    FloodBudget,
    FloodControl,
    FloodStats,
    IncomingGuard,
    IncomingStats,
    MemoryFloodBudget,
    OutgoingRequest,
    Priority,
    TelegramLimits,
    UpdateInfo,
    UpdateRunner,
    UserState,
    Verdict,
)


def classify(exc: BaseException) -> ApiFailure | None:
    return ApiFailure(FailureKind.SERVER) if isinstance(exc, OSError) else None


def send_sync() -> dict[str, int]:
    return {"message_id": 1}


async def send_async() -> str:
    return "ok"


flood = FloodControl(TelegramLimits(), budget=MemoryFloodBudget())
assert_type(
    flood.call(OutgoingRequest("sendMessage", 1), send_sync, classify=classify), dict[str, int]
)
assert_type(flood.acquire(OutgoingRequest("sendMessage", 1)), float)
assert_type(flood.stats(), FloodStats)
budget: FloodBudget = MemoryFloodBudget()


async def outgoing(abudget: AsyncFloodBudget) -> None:
    aflood = AsyncFloodControl(budget=abudget)
    result = await aflood.call(
        OutgoingRequest("sendMessage", 1, priority=Priority.BULK), send_async, classify=classify
    )
    assert_type(result, str)


guard = IncomingGuard("30/minute")
verdict = guard.check(UpdateInfo("message", 1, 42, 42, "private"))
assert_type(verdict, Verdict)
assert_type(verdict.notice, str | None)
assert_type(guard.stats(), IncomingStats)
assert_type(guard.user_state(UpdateInfo("message")), UserState | None)


async def incoming_on_async_pieces(dedup: AsyncDedupStore, store: AsyncStateStore) -> None:
    aguard = IncomingGuard("30/minute", dedup=dedup, state=store)
    info = UpdateInfo("message", 1, 42, 42, "private")
    assert_type(await aguard.acheck(info), Verdict)
    assert_type(await aguard.acheck_limit(info), Verdict)
    assert_type(await aguard.aseen_update(1), bool)
    assert_type(aguard.asynchronous, bool)
    state = aguard.async_user_state(info)
    assert_type(state, AsyncUserState | None)
    if state is not None:
        assert_type(await state.update(lambda n: n + 1, default=0), Any)
    assert_type(aguard.drop_duplicates([info], lambda u: u.update_id), list[UpdateInfo])
    record = aguard.recorder("handler.start")
    if record is not None:
        record(aguard.timer(), False, info)


async def incoming(runner: UpdateRunner) -> None:
    async def work() -> int:
        return 1

    assert_type(await runner.run(UpdateInfo("message"), work), int | None)


def adapters(dp: Any, bot: Any) -> None:
    from botscale.adapters.aiogram import Installed, install
    from botscale.adapters.ptb import async_user_state, user_state

    kit = install(dp, bot)
    assert_type(kit, Installed)
    assert_type(kit.polling_kwargs(dp), dict[str, Any])
    assert_type(user_state(), UserState | None)
    assert_type(async_user_state(), AsyncUserState | None)
