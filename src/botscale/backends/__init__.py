"""Storage backends behind botscale's Protocols.

``botscale.backends.memory`` is the default and needs nothing installed;
``botscale.backends.redis`` needs the ``redis`` extra.
"""

from __future__ import annotations

from .._protocols import AsyncRateLimitBackend, AsyncStateStore, RateLimitBackend, StateStore
from .memory import MemoryBackend

__all__ = [
    "AsyncRateLimitBackend",
    "AsyncStateStore",
    "MemoryBackend",
    "RateLimitBackend",
    "StateStore",
]
