"""The small Protocols that storage backends implement.

The core talks to these, never to a concrete backend, so a third party can
write a backend without subclassing anything.  One contract test suite
(``tests/contracts``) runs over every implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._gcra import Decision

__all__ = [
    "AsyncRateLimitBackend",
    "AsyncStateStore",
    "RateLimitBackend",
    "StateStore",
]

Key = str | int
"""Keys of limiters and stores: a user id, a chat id or a string."""


@runtime_checkable
class RateLimitBackend(Protocol):
    """Keeps one GCRA bucket per key and decides requests atomically.

    ``now`` is the limiter's clock reading; a backend with a clock of its own
    (Redis uses server time so that every process agrees) may ignore it.
    """

    def acquire(self, key: str, *, now: float, interval: float, burst: int, cost: int) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""
        ...

    def reset(self, key: str) -> None:
        """Forget ``key``: its bucket is full again."""
        ...


@runtime_checkable
class AsyncRateLimitBackend(Protocol):
    """The awaitable twin of :class:`RateLimitBackend`."""

    async def acquire(
        self, key: str, *, now: float, interval: float, burst: int, cost: int
    ) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it holds them."""
        ...

    async def reset(self, key: str) -> None:
        """Forget ``key``: its bucket is full again."""
        ...


@runtime_checkable
class StateStore(Protocol):
    """Per-key state (a user's quiz step, a chat's settings), bounded and expiring.

    ``MemoryStateStore`` accepts any value; ``RedisStateStore`` only
    JSON-compatible values.  ``ttl`` overrides the store's default per entry.
    """

    def get(self, key: Key, default: Any = None) -> Any:
        """The live value for ``key``, or ``default``."""
        ...

    def set(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``key``."""
        ...

    def delete(self, key: Key) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        ...

    def update(self, key: Key, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        ...

    def __len__(self) -> int:
        """Live entries."""
        ...


@runtime_checkable
class AsyncStateStore(Protocol):
    """The awaitable twin of :class:`StateStore` (``size()`` instead of ``len``)."""

    async def get(self, key: Key, default: Any = None) -> Any:
        """The live value for ``key``, or ``default``."""
        ...

    async def set(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``key``."""
        ...

    async def delete(self, key: Key) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        ...

    async def update(self, key: Key, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        ...

    async def size(self) -> int:
        """Live entries."""
        ...
