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
    from ._api import Exchange, SimulatorStats
    from ._flood import FloodControl, FloodLimits
    from ._runner import BotHandle, serve_bot
    from ._simulator import TelegramSimulator
    from ._thread import SimulatorThread
    from ._users import VirtualChat, VirtualUser

__all__ = [
    "BotHandle",
    "Exchange",
    "FakeClock",
    "FloodControl",
    "FloodLimits",
    "SimulatorStats",
    "SimulatorThread",
    "TelegramSimulator",
    "VirtualChat",
    "VirtualUser",
    "serve_bot",
]

_LAZY: dict[str, str] = {
    "BotHandle": "._runner",
    "serve_bot": "._runner",
    "SimulatorThread": "._thread",
    "Exchange": "._api",
    "SimulatorStats": "._api",
    "FloodControl": "._flood",
    "FloodLimits": "._flood",
    "TelegramSimulator": "._simulator",
    "VirtualChat": "._users",
    "VirtualUser": "._users",
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
