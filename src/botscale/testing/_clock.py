"""A clock tests can drive."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """A manual monotonic clock for tests: time moves only when told to.

    Pass it as ``clock=`` to any botscale class; pass :meth:`sleep` /
    :meth:`asleep` where a class takes a sleep function, so waiting code
    advances the clock instead of blocking.

    >>> clock = FakeClock()
    >>> clock.advance(1.5)
    >>> clock()
    1001.5
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        """A ``time.sleep`` stand-in that advances the clock at once."""
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        """An ``asyncio.sleep`` stand-in that advances the clock at once."""
        self.advance(max(0.0, seconds))

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"
