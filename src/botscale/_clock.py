"""Time sources.

Every time-dependent class takes a ``clock``: a zero-argument callable that
returns monotonic seconds.  Pure algorithms take ``now`` as an argument; the
façades read their clock once per call and pass it down.  Tests inject
:class:`botscale.testing.FakeClock` and never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

__all__ = ["AsyncSleep", "Clock", "Sleep", "monotonic"]

Clock: TypeAlias = Callable[[], float]
"""A zero-argument callable returning monotonic seconds."""

Sleep: TypeAlias = Callable[[float], None]
"""A blocking sleep of the given number of seconds."""

AsyncSleep: TypeAlias = Callable[[float], Awaitable[None]]
"""An awaitable sleep of the given number of seconds."""

monotonic: Clock = time.monotonic
