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
    "AsyncDedupStore",
    "AsyncRateLimitBackend",
    "AsyncStateStore",
    "DedupStore",
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

    Semantics every implementation keeps (``tests/contracts/state.py`` checks
    them): an entry expires ``ttl`` seconds after its last write (reads do not
    extend it) and is invisible from then on; ``get`` returns the very
    ``default`` object passed when there is no live value; ``int`` and ``str``
    keys are distinct (``42`` is not ``"42"``); keys of other types are a
    ``TypeError``; ``ttl`` <= 0 is a ``ValueError``.
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

    def update(
        self, key: Key, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it.

        ``fn`` may run more than once (optimistic stores retry it on a
        concurrent change): keep it free of side effects.  The entry then
        lives ``ttl`` seconds (default: the store's), like :meth:`set`.
        """
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

    async def update(
        self, key: Key, fn: Callable[[Any], Any], *, default: Any = None, ttl: float | None = None
    ) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        ...

    async def size(self) -> int:
        """Live entries."""
        ...


@runtime_checkable
class DedupStore(Protocol):
    """Remembers ids (Telegram ``update_id``s) for a window, to drop duplicates.

    ``Deduplicator`` keeps them in memory; a Redis twin is one ``SET NX EX``
    per id, so several bot processes share one window.
    """

    def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window (and remember it), else ``True``.

        Atomic: of concurrent calls with one key exactly one gets ``False``.
        """
        ...

    def forget(self, key: Key) -> bool:
        """Drop ``key`` so that it is accepted again (e.g. its handler failed); ``True`` if held."""
        ...


@runtime_checkable
class AsyncDedupStore(Protocol):
    """The awaitable twin of :class:`DedupStore`."""

    async def seen(self, key: Key) -> bool:
        """``False`` the first time ``key`` arrives in the window, else ``True``."""
        ...

    async def forget(self, key: Key) -> bool:
        """Drop ``key`` so that it is accepted again; ``True`` if it was held."""
        ...
