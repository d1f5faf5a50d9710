"""Test aids for bots: a clock to drive, and a Telegram Bot API simulator.

``FakeClock`` needs nothing installed.  The simulator, the virtual users and
the load test need the ``testing`` extra (aiohttp) and are imported on first
use, so ``import botscale.testing`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._clock import FakeClock

if TYPE_CHECKING:
    from ._api import ApiError, Exchange, SimulatorStats
    from ._flood import FloodEnforcer, FloodLimits
    from ._load import (
        Burst,
        LoadProfile,
        LoadResult,
        PressButton,
        Progress,
        Scenario,
        SendCommand,
        SendText,
        Step,
        Think,
        run_load,
    )
    from ._loadtest import LoadTestError, run_loadtest, run_loadtest_async
    from ._report import LoadReport, StageReport, build_report, plot_report
    from ._runner import BotHandle, serve_bot
    from ._simulator import TelegramSimulator
    from ._thread import SimulatorThread
    from ._users import VirtualChat, VirtualUser

__all__ = [
    "ApiError",
    "BotHandle",
    "Burst",
    "Exchange",
    "FakeClock",
    "FloodEnforcer",
    "FloodLimits",
    "LoadProfile",
    "LoadReport",
    "LoadResult",
    "LoadTestError",
    "PressButton",
    "Progress",
    "Scenario",
    "SendCommand",
    "SendText",
    "SimulatorStats",
    "SimulatorThread",
    "StageReport",
    "Step",
    "TelegramSimulator",
    "Think",
    "VirtualChat",
    "VirtualUser",
    "build_report",
    "plot_report",
    "run_load",
    "run_loadtest",
    "run_loadtest_async",
    "serve_bot",
]

_LAZY: dict[str, str] = {
    "ApiError": "._api",
    "BotHandle": "._runner",
    "Burst": "._load",
    "Exchange": "._api",
    "FloodEnforcer": "._flood",
    "FloodLimits": "._flood",
    "LoadProfile": "._load",
    "LoadReport": "._report",
    "LoadResult": "._load",
    "LoadTestError": "._loadtest",
    "PressButton": "._load",
    "Progress": "._load",
    "Scenario": "._load",
    "SendCommand": "._load",
    "SendText": "._load",
    "SimulatorStats": "._api",
    "SimulatorThread": "._thread",
    "StageReport": "._report",
    "Step": "._load",
    "TelegramSimulator": "._simulator",
    "Think": "._load",
    "VirtualChat": "._users",
    "VirtualUser": "._users",
    "build_report": "._report",
    "plot_report": "._report",
    "run_load": "._load",
    "run_loadtest": "._loadtest",
    "run_loadtest_async": "._loadtest",
    "serve_bot": "._runner",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'botscale.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
