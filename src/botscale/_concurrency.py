"""Bulkheads and per-key ordering for threads and asyncio.

:class:`ConcurrencyLimiter` caps how many calls run at once (a bulkhead around
a slow external API).  One instance serves threads and asyncio tasks alike:
the count lives behind a ``threading.Lock`` and waiters (threads or tasks) queue
in one FIFO line.  A released slot is handed straight to the first waiter, so
nobody can barge in ahead of the line and a waiter never wakes up for nothing.

:class:`AsyncKeyedLock` and :class:`KeyedLock` keep one key's work (a chat's
updates) strictly in arrival order while different keys run concurrently.
A key is in the table only while someone holds or waits for it: the entry goes
away with the last waiter, so idle chats cost no memory.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from typing_extensions import ParamSpec

from ._errors import BotscaleError
from ._retry import is_async_callable
from ._validation import check_non_negative, check_positive_int

__all__ = [
    "AsyncKeyedLock",
    "ConcurrencyLimiter",
    "ConcurrencyStats",
    "ConcurrencyTimeout",
    "KeyedLock",
]

P = ParamSpec("P")
R = TypeVar("R")


class ConcurrencyTimeout(BotscaleError, TimeoutError):
    """No slot of a :class:`ConcurrencyLimiter` (or key of a :class:`KeyedLock`) freed in time.

    Also a ``TimeoutError``.

    Attributes:
        name: the limiter's name (or the key's repr).
        timeout: the seconds waited.
    """

    def __init__(self, message: str, *, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(message)


@dataclass(frozen=True)
class ConcurrencyStats:
    """A snapshot of a :class:`ConcurrencyLimiter`.

    Attributes:
        limit: the most calls allowed at once.
        in_flight: calls holding a slot now.
        waiting: calls queued for a slot now.
        peak_in_flight: the highest ``in_flight`` seen.
        acquired: slots granted so far.
        timeouts: waits that ended with :class:`ConcurrencyTimeout`.
        cancelled: waits abandoned by cancellation (asyncio) or interruption.
    """

    limit: int
    in_flight: int
    waiting: int
    peak_in_flight: int
    acquired: int
    timeouts: int
    cancelled: int


def _check_timeout(timeout: float | None) -> float | None:
    """``None`` or ``inf`` mean forever; otherwise a finite number >= 0."""
    if timeout is None or timeout == math.inf:
        return None
    return check_non_negative("timeout", timeout)


class _ThreadWaiter:
    __slots__ = ("granted", "lock")

    def __init__(self) -> None:
        self.granted = False
        self.lock = threading.Lock()
        self.lock.acquire()


class _TaskWaiter:
    __slots__ = ("future", "granted", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.granted = False
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.thread = threading.get_ident()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ConcurrencyLimiter:
    """A bulkhead: at most ``limit`` calls run at once; the rest wait in FIFO order.

    Works from threads (``with``, :meth:`acquire`) and asyncio tasks
    (``async with``, :meth:`acquire_async`), even both at once on one instance,
    and as a decorator of sync and async callables::

        gemini = ConcurrencyLimiter(8, timeout=30.0, name="gemini")

        @gemini
        async def ask(prompt: str) -> str: ...

    Args:
        limit: the most calls holding a slot at once (int >= 1).
        timeout: default seconds to wait for a slot before
            :class:`ConcurrencyTimeout`; ``None`` waits forever.
        name: shown in errors and ``repr``.

    Raises:
        ValueError: ``limit`` < 1 or ``timeout`` < 0.
    """

    def __init__(
        self, limit: int, *, timeout: float | None = None, name: str = "ConcurrencyLimiter"
    ) -> None:
        self._limit = check_positive_int("limit", limit)
        self._timeout = _check_timeout(timeout)
        self.name = name
        self._lock = threading.Lock()
        self._in_flight = 0
        self._waiters: OrderedDict[_ThreadWaiter | _TaskWaiter, None] = OrderedDict()
        self._peak = 0
        self._acquired = 0
        self._timeouts = 0
        self._cancelled = 0

    # -- state ----------------------------------------------------------------

    @property
    def limit(self) -> int:
        """The most calls allowed at once."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Calls queued for a slot now."""
        return len(self._waiters)

    def stats(self) -> ConcurrencyStats:
        """A consistent snapshot of the counters."""
        with self._lock:
            return ConcurrencyStats(
                limit=self._limit,
                in_flight=self._in_flight,
                waiting=len(self._waiters),
                peak_in_flight=self._peak,
                acquired=self._acquired,
                timeouts=self._timeouts,
                cancelled=self._cancelled,
            )

    def __repr__(self) -> str:
        return (
            f"<ConcurrencyLimiter {self.name!r} limit={self._limit} "
            f"in_flight={self._in_flight} waiting={len(self._waiters)}>"
        )

    # -- the slot bookkeeping (callers hold self._lock) -------------------------

    def _take_locked(self) -> bool:
        if self._in_flight < self._limit and not self._waiters:
            self._in_flight += 1
            self._acquired += 1
            if self._in_flight > self._peak:
                self._peak = self._in_flight
            return True
        return False

    def _timeout_error(self, timeout: float) -> ConcurrencyTimeout:
        return ConcurrencyTimeout(
            f"{self.name}: no slot free within {timeout:g} s "
            f"(all {self._limit} in flight, {len(self._waiters)} waiting)",
            name=self.name,
            timeout=timeout,
        )

    # -- acquire / release --------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody is waiting; never blocks."""
        with self._lock:
            return self._take_locked()

    def acquire(self, timeout: float | None = None) -> None:
        """Block the calling thread until a slot is free, then take it.

        Args:
            timeout: seconds to wait; ``None`` uses the limiter's default,
                ``math.inf`` waits forever.

        Raises:
            ConcurrencyTimeout: no slot freed within ``timeout``.
        """
        wait = self._timeout if timeout is None else _check_timeout(timeout)
        with self._lock:
            if self._take_locked():
                return
            waiter = _ThreadWaiter()
            self._waiters[waiter] = None
        try:
            got = waiter.lock.acquire(True, -1 if wait is None else wait)
        except BaseException:
            self._abandon(waiter, cancelled=True)
            raise
        if not got and not self._abandon(waiter, cancelled=False):
            raise self._timeout_error(cast("float", wait))

    async def acquire_async(self, timeout: float | None = None) -> None:
        """Wait (without blocking the event loop) until a slot is free, then take it.

        Cancelling the waiting task leaves no slot behind.

        Args:
            timeout: seconds to wait; ``None`` uses the limiter's default,
                ``math.inf`` waits forever.

        Raises:
            ConcurrencyTimeout: no slot freed within ``timeout``.
        """
        wait = self._timeout if timeout is None else _check_timeout(timeout)
        with self._lock:
            if self._take_locked():
                return
            waiter = _TaskWaiter(asyncio.get_running_loop())
            self._waiters[waiter] = None
        timer = None if wait is None else waiter.loop.call_later(wait, self._expire, waiter, wait)
        try:
            await waiter.future
        except asyncio.CancelledError:
            self._abandon(waiter, cancelled=True)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _abandon(self, waiter: _ThreadWaiter | _TaskWaiter, *, cancelled: bool) -> bool:
        """Take ``waiter`` out of the line; ``True`` if it had been granted a slot.

        A waiter granted a slot in the instant it gave up owns that slot: after
        a cancellation it is passed on, after a timeout the caller keeps it.
        """
        with self._lock:
            granted = waiter.granted
            if not granted:
                del self._waiters[waiter]
                if cancelled:
                    self._cancelled += 1
                else:
                    self._timeouts += 1
        if granted and cancelled:
            self.release()
        return granted

    def _expire(self, waiter: _TaskWaiter, wait: float) -> None:
        with self._lock:
            if waiter.granted or waiter not in self._waiters:
                return
            del self._waiters[waiter]
            self._timeouts += 1
            error = self._timeout_error(wait)
        if not waiter.future.done():
            waiter.future.set_exception(error)

    def release(self) -> None:
        """Give a slot back; the first waiter in line gets it at once.

        Raises:
            RuntimeError: no slot is held.
        """
        with self._lock:
            if not self._waiters:
                if self._in_flight <= 0:
                    raise RuntimeError(f"{self.name}: release() without a held slot")
                self._in_flight -= 1
                return
            waiter, _ = self._waiters.popitem(last=False)
            waiter.granted = True
            self._acquired += 1
        if isinstance(waiter, _ThreadWaiter):
            waiter.lock.release()
        elif waiter.thread == threading.get_ident():
            _resolve(waiter.future)
        else:
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its loop is closed: nobody will take the slot
                self.release()

    # -- context managers and decorator ---------------------------------------------

    def __enter__(self) -> ConcurrencyLimiter:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> ConcurrencyLimiter:
        with self._lock:  # a free slot: the common case, inlined
            if self._in_flight < self._limit and not self._waiters:
                self._in_flight += 1
                self._acquired += 1
                if self._in_flight > self._peak:
                    self._peak = self._in_flight
                return self
        await self.acquire_async()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async callable so that every call holds a slot."""
        if not callable(fn):
            raise TypeError(f"ConcurrencyLimiter decorates a callable, got {type(fn).__name__}")
        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self:
                    return await afn(*args, **kwargs)

            return cast("Callable[P, R]", async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return cast("Callable[P, R]", wrapper)


K = TypeVar("K", bound=Hashable)


class _AsyncHold:
    __slots__ = ("_key", "_owner")

    def __init__(self, owner: AsyncKeyedLock, key: Hashable) -> None:
        self._owner = owner
        self._key = key

    async def __aenter__(self) -> None:
        queues = self._owner._queues
        if self._key not in queues:  # free: the common case, inlined
            queues[self._key] = None
            return
        await self._owner.acquire(self._key)

    async def __aexit__(self, *exc_info: object) -> None:
        self._owner.release(self._key)


class AsyncKeyedLock:
    """Per-key FIFO locks for asyncio: one chat's updates in order, chats concurrently.

    ``async with locks.lock(chat_id):`` runs the body once every earlier
    holder of that key has left, in the order the tasks arrived; other keys
    do not wait.  The table holds only keys that are held or awaited, so an
    idle key costs nothing.  Use it from one event loop (it is not thread-safe;
    :class:`KeyedLock` is the threads twin).

    Combine it with a :class:`ConcurrencyLimiter` for a global cap, taking the
    key first so a chat's queued updates do not sit on global slots::

        async with chat_locks.lock(chat_id), limiter:
            await handle(update)
    """

    def __init__(self) -> None:
        # key -> futures of the tasks waiting for it (None: nobody waits);
        # a key is present exactly while it is held.
        self._queues: dict[Hashable, deque[asyncio.Future[None]] | None] = {}

    def lock(self, key: Hashable) -> _AsyncHold:
        """An ``async with`` holding ``key`` for the block."""
        return _AsyncHold(self, key)

    async def acquire(self, key: Hashable) -> None:
        """Wait for ``key`` (behind everyone already waiting for it), then hold it.

        Cancelling the waiting task takes it out of the line (or, if the key
        was just handed to it, passes the key on): nothing leaks.
        """
        queues = self._queues
        if key not in queues:
            queues[key] = None
            return
        queue = queues[key]
        if queue is None:
            queue = queues[key] = deque()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(key)  # handed over as we were cancelled: pass it on
            else:
                try:
                    queue.remove(future)
                except ValueError:  # release() already dropped it
                    pass
            raise

    def release(self, key: Hashable) -> None:
        """Hand ``key`` to its next waiter, or forget it if nobody waits.

        Raises:
            RuntimeError: ``key`` is not held.
        """
        try:
            queue = self._queues[key]
        except KeyError:
            raise RuntimeError(f"release of key {key!r} that is not held") from None
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
                return
        del self._queues[key]

    def locked(self, key: Hashable) -> bool:
        """Whether ``key`` is held now."""
        return key in self._queues

    def waiting(self, key: Hashable) -> int:
        """Tasks waiting for ``key`` now (not counting its holder)."""
        queue = self._queues.get(key)
        return 0 if queue is None else len(queue)

    def __len__(self) -> int:
        """Keys held now (idle keys are not kept)."""
        return len(self._queues)

    def __repr__(self) -> str:
        return f"<AsyncKeyedLock keys={len(self._queues)}>"


class _Hold:
    __slots__ = ("_key", "_owner", "_timeout")

    def __init__(self, owner: KeyedLock, key: Hashable, timeout: float | None) -> None:
        self._owner = owner
        self._key = key
        self._timeout = timeout

    def __enter__(self) -> None:
        if not self._owner.acquire(self._key, timeout=self._timeout):
            timeout = cast("float", self._timeout)
            raise ConcurrencyTimeout(
                f"key {self._key!r} still held by another thread after {timeout:g} s",
                name=repr(self._key),
                timeout=timeout,
            )

    def __exit__(self, *exc_info: object) -> None:
        self._owner.release(self._key)


class KeyedLock:
    """Per-key FIFO locks for threads (the twin of :class:`AsyncKeyedLock`).

    ``with locks.lock(chat_id):`` runs the block once every earlier holder of
    that key has left, in the order the threads arrived; other keys do not
    wait.  Only held or awaited keys are in the table.
    """

    def __init__(self) -> None:
        self._mutex: Final = threading.Lock()
        self._queues: dict[Hashable, deque[_ThreadWaiter]] = {}

    def lock(self, key: Hashable, *, timeout: float | None = None) -> _Hold:
        """A ``with`` block holding ``key``.

        Raises:
            ConcurrencyTimeout: (on entry) ``key`` was not free within ``timeout``.
        """
        return _Hold(self, key, _check_timeout(timeout))

    def acquire(self, key: Hashable, *, timeout: float | None = None) -> bool:
        """Hold ``key`` after everyone already waiting for it; ``False`` on timeout."""
        wait = _check_timeout(timeout)
        with self._mutex:
            queue = self._queues.get(key)
            if queue is None:
                self._queues[key] = deque()
                return True
            waiter = _ThreadWaiter()
            queue.append(waiter)
        try:
            got = waiter.lock.acquire(True, -1 if wait is None else wait)
        except BaseException:
            if self._give_up(key, waiter):
                self.release(key)
            raise
        return got or self._give_up(key, waiter)

    def _give_up(self, key: Hashable, waiter: _ThreadWaiter) -> bool:
        """Leave the line; ``True`` if the key was handed over meanwhile (we hold it)."""
        with self._mutex:
            if waiter.granted:
                return True
            self._queues[key].remove(waiter)
            return False

    def release(self, key: Hashable) -> None:
        """Hand ``key`` to its next waiter, or forget it if nobody waits.

        Raises:
            RuntimeError: ``key`` is not held.
        """
        with self._mutex:
            queue = self._queues.get(key)
            if queue is None:
                raise RuntimeError(f"release of key {key!r} that is not held")
            if not queue:
                del self._queues[key]
                return
            waiter = queue.popleft()
            waiter.granted = True
        waiter.lock.release()

    def locked(self, key: Hashable) -> bool:
        """Whether ``key`` is held now."""
        return key in self._queues

    def waiting(self, key: Hashable) -> int:
        """Threads waiting for ``key`` now (not counting its holder)."""
        queue = self._queues.get(key)
        return 0 if queue is None else len(queue)

    def __len__(self) -> int:
        """Keys held now (idle keys are not kept)."""
        return len(self._queues)

    def __repr__(self) -> str:
        return f"<KeyedLock keys={len(self._queues)}>"
