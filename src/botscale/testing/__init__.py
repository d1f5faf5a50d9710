"""Test aids for bots: a clock to drive, and a Telegram Bot API simulator.

``FakeClock`` needs nothing installed.  The simulator and the load test need
the ``testing`` extra (aiohttp) and are imported on first use.
"""

from __future__ import annotations

from ._clock import FakeClock

__all__ = ["FakeClock"]
