"""Static typing checks of flood control, the incoming guard and the adapters (mypy --strict)."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

from botscale import (
    ApiFailure,
    AsyncFloodBudget,
    AsyncFloodControl,
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


async def incoming(runner: UpdateRunner) -> None:
    async def work() -> int:
        return 1

    assert_type(await runner.run(UpdateInfo("message"), work), int | None)


def adapters(dp: Any, bot: Any) -> None:
    from botscale.adapters.aiogram import Installed, install

    kit = install(dp, bot)
    assert_type(kit, Installed)
    assert_type(kit.polling_kwargs(dp), dict[str, Any])
