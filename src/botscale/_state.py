"""Bounded, expiring per-key state: :class:`MemoryStateStore` and its async twin.

The replacement for ``user_states = {}``: never more than ``maxsize`` entries
(least recently used evicted first), entries older than their ttl invisible at
once and reclaimed by an amortised sweep, every eviction counted.

Layout, and why every operation is O(1) amortised:

* ``_data`` (an ``OrderedDict``) holds the entries in recency order; a hit moves
  its key to the end, a size eviction pops the front.
* Entries written with the store's default ttl expire in the order they were
  written, so a second ``OrderedDict`` in write order (``_fifo``) is also in
  expiry order: the sweep only ever looks at its front.
* Entries written with their own ``ttl=`` go into a deadline heap (``_heap``,
  O(log k) for k such entries) with lazy deletion; stale heap items are
  compacted away once they outnumber the live ones, so the heap stays bounded.
* Every write reclaims at most ``_SWEEP_STEP`` expired entries; ``len()`` and
  ``stats()`` reclaim all of them, which is still amortised O(1) because each
  entry expires once.  Memory is bounded by ``maxsize`` at every moment.
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import inspect
import itertools
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any, Literal, NamedTuple

from ._clock import Clock
from ._protocols import AsyncStateStore, Key, StateStore
from ._validation import check_key, check_positive, check_positive_int

__all__ = [
    "AsyncMemoryStateStore",
    "EvictionCause",
    "SessionLocks",
    "MemoryStateStore",
    "Session",
    "SessionContext",
    "StoreStats",
    "check_json_value",
]

logger = logging.getLogger("botscale.state")

EvictionCause = Literal["size", "ttl"]
"""Why an entry left a store without being deleted: ``"size"`` (LRU) or ``"ttl"``."""

EvictCallback = Callable[[Key, Any, EvictionCause], None]

_SWEEP_STEP = 4
_HEAP_SLACK = 32
_INF = math.inf
_KEY_TYPES = frozenset({int, str})
_MISSING: Any = object()


class StoreStats(NamedTuple):
    """A snapshot of a store's counters.

    ``hits + misses`` is the number of ``get`` calls; ``sets`` counts every
    write (``set``, ``update``, a session's write-back); ``deletes`` counts
    deletions of live entries.  Entries that left without being deleted are in
    ``evictions_size`` (least recently used, the store was full) and
    ``evictions_ttl`` (expired).
    """

    size: int
    maxsize: int
    hits: int
    misses: int
    sets: int
    deletes: int
    evictions_size: int
    evictions_ttl: int

    @property
    def evictions(self) -> int:
        """All evictions, whatever their cause."""
        return self.evictions_size + self.evictions_ttl


class _Entry:
    __slots__ = ("custom", "expires", "key", "value")

    def __init__(self, key: Key, value: Any, expires: float, custom: bool) -> None:
        self.key = key
        self.value = value
        self.expires = expires
        self.custom = custom


class MemoryStateStore:
    """A bounded, expiring, thread-safe key-value store for per-user state.

    At most ``maxsize`` entries live at any moment; writing a new key into a
    full store evicts an expired entry if there is one, else the least
    recently used entry (``get``, ``set`` and ``update`` count as use).  An
    entry expires ``ttl`` seconds after it was last written; reading does not
    extend it.  Expired entries are invisible at once and reclaimed a few per
    write, and completely by ``len()`` and ``stats()``.

    Values may be any object and are stored as they are (no copy): mutating a
    value returned by :meth:`get` mutates the stored one.  ``RedisStateStore``
    accepts JSON-compatible values only; ``strict=True`` makes this store
    reject anything else at write time, so a bot can be checked before it
    moves to Redis.

    Every method takes a short internal lock and never blocks for long, so the
    store can be called from threads and directly from async code (or use
    :class:`AsyncMemoryStateStore` / :attr:`aio` where an awaitable
    :class:`~botscale.AsyncStateStore` is expected).

    Args:
        maxsize: the most entries the store holds (>= 1).
        ttl: default seconds an entry lives after it is written (> 0), or
            ``None`` for no expiry (only size evictions).
        clock: monotonic seconds; inject a ``FakeClock`` in tests.
        strict: reject values that would not survive a JSON round trip
            (``TypeError`` naming the offending type and where it is).
        on_evict: called as ``on_evict(key, value, cause)`` after an entry is
            evicted (``cause`` is ``"size"`` or ``"ttl"``), outside the lock.
            Exceptions it raises are logged, not propagated.

    Raises:
        ValueError: ``maxsize`` < 1 or ``ttl`` <= 0 (a ``ConfigurationError``).
        TypeError: an argument of the wrong type.
    """

    def __init__(
        self,
        maxsize: int = 10_000,
        ttl: float | None = None,
        *,
        clock: Clock = time.monotonic,
        strict: bool = False,
        on_evict: EvictCallback | None = None,
    ) -> None:
        self._maxsize = check_positive_int("maxsize", maxsize)
        self._ttl = None if ttl is None else check_positive("ttl", ttl)
        if not callable(clock):
            raise TypeError(
                f"clock must be a callable returning seconds, got {type(clock).__name__}"
            )
        if not isinstance(strict, bool):
            raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
        if on_evict is not None and not callable(on_evict):
            raise TypeError(f"on_evict must be callable or None, got {type(on_evict).__name__}")
        self._clock = clock
        self._strict = strict
        self._on_evict = on_evict
        self._lock = threading.RLock()
        self._data: OrderedDict[Key, _Entry] = OrderedDict()
        self._fifo: OrderedDict[Key, _Entry] = OrderedDict()
        self._heap: list[tuple[float, int, _Entry]] = []
        self._seq = itertools.count()
        self._ncustom = 0
        self._pending: list[tuple[Key, Any, EvictionCause]] = []
        self._hits = 0
        self._misses = 0
        self._sets = 0
        self._deletes = 0
        self._evicted_size = 0
        self._evicted_ttl = 0
        self._locks = SessionLocks()
        self._aio: AsyncMemoryStateStore | None = None

    # -- the StateStore Protocol ---------------------------------------------------------------

    def get(self, key: Key, default: Any = None) -> Any:
        """The live value for ``key`` (marking it recently used), or ``default``."""
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                expires = entry.expires
                if expires == _INF or self._clock() < expires:
                    self._data.move_to_end(key)
                    self._hits += 1
                    return entry.value
                self._evict(entry, "ttl")
            self._misses += 1
            pending = self._take_pending()
        if pending:
            self._notify(pending)
        return default

    def set(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``key``; it expires ``ttl`` seconds from now.

        Args:
            key: ``str`` or ``int``.
            value: any object (JSON-compatible only, if the store is strict).
            ttl: this entry's lifetime in seconds (> 0); default: the store's.

        Raises:
            TypeError: a key that is not ``str``/``int``; with ``strict=True``,
                a value that is not JSON-compatible.
            ValueError: ``ttl`` <= 0.
        """
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        if self._strict:
            check_json_value(value)
        if ttl is None:
            seconds, custom = self._ttl, False
        else:
            seconds, custom = check_positive("ttl", ttl), True
        with self._lock:
            self._put(key, value, seconds, custom, self._clock())
            pending = self._take_pending()
        if pending:
            self._notify(pending)

    def delete(self, key: Key) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                found = False
            elif entry.expires <= self._clock():
                self._evict(entry, "ttl")
                found = False
            else:
                self._remove(entry)
                self._deletes += 1
                found = True
            pending = self._take_pending()
        if pending:
            self._notify(pending)
        return found

    def update(
        self,
        key: Key,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
    ) -> Any:
        """Atomically replace ``key``'s value with ``fn(current or default)``.

        ``fn`` runs once, under the store's lock: keep it quick (other stores
        may run it more than once, so keep it free of side effects too).  The
        entry then lives ``ttl`` seconds (default: the store's), like
        :meth:`set`.  If ``fn`` raises (or a strict store rejects its result)
        nothing changes.

        Returns:
            The new value.
        """
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        if ttl is None:
            seconds, custom = self._ttl, False
        else:
            seconds, custom = check_positive("ttl", ttl), True
        with self._lock:
            now = self._clock()
            entry = self._data.get(key)
            if entry is not None and entry.expires <= now:
                self._evict(entry, "ttl")
                entry = None
            value = fn(default if entry is None else entry.value)
            if self._strict:
                check_json_value(value)
            self._put(key, value, seconds, custom, now)
            pending = self._take_pending()
        if pending:
            self._notify(pending)
        return value

    def __len__(self) -> int:
        """Live entries (reclaims every expired entry first)."""
        with self._lock:
            self._sweep(self._clock(), None)
            pending = self._take_pending()
            size = len(self._data)
        if pending:
            self._notify(pending)
        return size

    # -- beyond the Protocol -------------------------------------------------------------------

    def stats(self) -> StoreStats:
        """Size and counters (reclaims every expired entry first, so they add up)."""
        with self._lock:
            self._sweep(self._clock(), None)
            pending = self._take_pending()
            stats = StoreStats(
                size=len(self._data),
                maxsize=self._maxsize,
                hits=self._hits,
                misses=self._misses,
                sets=self._sets,
                deletes=self._deletes,
                evictions_size=self._evicted_size,
                evictions_ttl=self._evicted_ttl,
            )
        if pending:
            self._notify(pending)
        return stats

    def clear(self) -> int:
        """Delete every entry; return how many were live (counted as deletes)."""
        with self._lock:
            self._sweep(self._clock(), None)
            removed = len(self._data)
            self._data.clear()
            self._fifo.clear()
            self._heap.clear()
            self._ncustom = 0
            self._deletes += removed
            pending = self._take_pending()
        if pending:
            self._notify(pending)
        return removed

    def session(
        self,
        key: Key,
        *,
        default: Callable[[], Any] = dict,
        ttl: float | None = None,
    ) -> SessionContext:
        """Open ``key``'s state for one handler: ``with`` or ``async with``.

        The session loads a private copy of the value (``default()`` if there
        is none), lets the handler read and change ``session.value`` and
        writes it back once when the block ends without an exception.  If the
        block raises, nothing is written: the stored state stays as it was.
        Sessions of one key run one at a time (threads and asyncio tasks
        alike), so concurrent updates of one user are never lost; sessions of
        different keys do not wait for each other.  Do not open a second
        session of the same key inside a session, and use ``async with`` in
        async code (both raise ``RuntimeError`` rather than deadlock).

        Args:
            key: ``str`` or ``int``.
            default: called for the value when ``key`` holds none.
            ttl: lifetime of the written-back entry; default: the store's.
        """
        if key.__class__ not in _KEY_TYPES:
            check_key(key)
        if ttl is not None:
            check_positive("ttl", ttl)
        return SessionContext(self, key, self._locks, default=default, ttl=ttl, copy_value=True)

    @property
    def aio(self) -> AsyncMemoryStateStore:
        """An awaitable view of this very store (same entries, same counters)."""
        if self._aio is None:
            self._aio = AsyncMemoryStateStore._wrap(self)
        return self._aio

    @property
    def maxsize(self) -> int:
        """The most entries the store holds."""
        return self._maxsize

    @property
    def ttl(self) -> float | None:
        """Default lifetime of an entry in seconds (``None``: no expiry)."""
        return self._ttl

    @property
    def strict(self) -> bool:
        """Whether values must be JSON-compatible."""
        return self._strict

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(maxsize={self._maxsize}, ttl={self._ttl}, "
            f"strict={self._strict}, entries={len(self._data)})"
        )

    # -- internals (called with self._lock held) -----------------------------------------------

    def _put(self, key: Key, value: Any, ttl: float | None, custom: bool, now: float) -> None:
        data = self._data
        old = data.get(key)
        if old is not None:
            if old.expires <= now:
                self._evict(old, "ttl")
            elif not custom and not old.custom:
                # Same kind of expiry: update in place, move to the end of both orders.
                old.value = value
                if ttl is not None:
                    old.expires = now + ttl
                    self._fifo.move_to_end(key)
                data.move_to_end(key)
                self._sets += 1
                return
            else:
                self._remove(old)
        self._sweep(now, _SWEEP_STEP)
        while len(data) >= self._maxsize:
            if not self._reclaim_one(now):
                self._evict(next(iter(data.values())), "size")
        entry = _Entry(key, value, _INF if ttl is None else now + ttl, custom)
        data[key] = entry
        if custom:
            heapq.heappush(self._heap, (entry.expires, next(self._seq), entry))
            self._ncustom += 1
        elif ttl is not None:
            self._fifo[key] = entry
        self._sets += 1

    def _remove(self, entry: _Entry) -> None:
        del self._data[entry.key]
        if entry.custom:
            self._ncustom -= 1
            if len(self._heap) > 2 * self._ncustom + _HEAP_SLACK:
                self._compact_heap()
        elif entry.expires != _INF:
            del self._fifo[entry.key]

    def _evict(self, entry: _Entry, cause: EvictionCause) -> None:
        self._remove(entry)
        if cause == "ttl":
            self._evicted_ttl += 1
        else:
            self._evicted_size += 1
        if self._on_evict is not None:
            self._pending.append((entry.key, entry.value, cause))

    def _reclaim_one(self, now: float) -> bool:
        """Evict the entry that expires first if it has expired; ``False`` if none has."""
        fifo = self._fifo
        if fifo:
            entry = next(iter(fifo.values()))
            if entry.expires <= now:
                self._evict(entry, "ttl")
                return True
        heap = self._heap
        while heap:
            expires, _, entry = heap[0]
            if self._data.get(entry.key) is not entry:
                heapq.heappop(heap)  # stale: the key was rewritten or removed
                continue
            if expires <= now:
                heapq.heappop(heap)
                self._evict(entry, "ttl")
                return True
            break
        return False

    def _sweep(self, now: float, limit: int | None) -> None:
        if limit is None:
            while self._reclaim_one(now):
                pass
            return
        for _ in range(limit):
            if not self._reclaim_one(now):
                return

    def _compact_heap(self) -> None:
        seq = self._seq
        self._heap = [(e.expires, next(seq), e) for e in self._data.values() if e.custom]
        heapq.heapify(self._heap)

    def _take_pending(self) -> list[tuple[Key, Any, EvictionCause]] | None:
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        return pending

    def _notify(self, pending: list[tuple[Key, Any, EvictionCause]]) -> None:
        callback = self._on_evict
        assert callback is not None
        for key, value, cause in pending:
            try:
                callback(key, value, cause)
            except Exception:
                logger.exception("on_evict callback failed for key %r (%s eviction)", key, cause)


class AsyncMemoryStateStore:
    """The awaitable twin of :class:`MemoryStateStore` (an :class:`~botscale.AsyncStateStore`).

    Same arguments, same behaviour; the methods are coroutines that never wait
    for I/O, so awaiting them does not block the loop.  ``store.aio`` gives an
    async view of an existing sync store instead (both share entries, counters
    and session locks), for bots that mix threads and asyncio.
    """

    def __init__(
        self,
        maxsize: int = 10_000,
        ttl: float | None = None,
        *,
        clock: Clock = time.monotonic,
        strict: bool = False,
        on_evict: EvictCallback | None = None,
    ) -> None:
        self._store = MemoryStateStore(maxsize, ttl, clock=clock, strict=strict, on_evict=on_evict)
        self._store._aio = self

    @classmethod
    def _wrap(cls, store: MemoryStateStore) -> AsyncMemoryStateStore:
        view = cls.__new__(cls)
        view._store = store
        return view

    @property
    def sync(self) -> MemoryStateStore:
        """The underlying thread-safe store (same entries)."""
        return self._store

    async def get(self, key: Key, default: Any = None) -> Any:
        """The live value for ``key`` (marking it recently used), or ``default``."""
        return self._store.get(key, default)

    async def set(self, key: Key, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` for ``key``; see :meth:`MemoryStateStore.set`."""
        self._store.set(key, value, ttl=ttl)

    async def delete(self, key: Key) -> bool:
        """Remove ``key``; ``True`` if it held a live value."""
        return self._store.delete(key)

    async def update(
        self,
        key: Key,
        fn: Callable[[Any], Any],
        *,
        default: Any = None,
        ttl: float | None = None,
    ) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        return self._store.update(key, fn, default=default, ttl=ttl)

    async def size(self) -> int:
        """Live entries."""
        return len(self._store)

    async def clear(self) -> int:
        """Delete every entry; return how many were live."""
        return self._store.clear()

    def __len__(self) -> int:
        return len(self._store)

    def stats(self) -> StoreStats:
        """Size and counters; see :meth:`MemoryStateStore.stats`."""
        return self._store.stats()

    def session(
        self, key: Key, *, default: Callable[[], Any] = dict, ttl: float | None = None
    ) -> SessionContext:
        """``async with store.session(user_id) as s:``; see :meth:`MemoryStateStore.session`."""
        return self._store.session(key, default=default, ttl=ttl)

    @property
    def maxsize(self) -> int:
        """The most entries the store holds."""
        return self._store.maxsize

    @property
    def ttl(self) -> float | None:
        """Default lifetime of an entry in seconds (``None``: no expiry)."""
        return self._store.ttl

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store!r})"


# -- sessions --------------------------------------------------------------------------------

_WAITING, _GRANTED, _ABANDONED = 0, 1, 2


class _Waiter:
    __slots__ = ("event", "future", "loop", "owner", "state")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.state = _WAITING
        self.event: threading.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class SessionLocks:
    """One mutex per key, for threads and asyncio tasks alike.

    A key's slot exists only while the key is held, so the table stays as
    small as the number of keys in use.  Ownership passes first-come
    first-served; an asyncio waiter cancelled while waiting gives up its turn
    cleanly.  Not reentrant: acquiring a key its owner already holds raises
    ``RuntimeError`` instead of deadlocking.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._slots: dict[Hashable, tuple[list[object], deque[_Waiter]]] = {}

    def acquire(self, key: Hashable) -> None:
        """Block the calling thread until it holds ``key``."""
        owner: object = ("thread", threading.get_ident())
        with self._mutex:
            waiter = self._enqueue(key, owner)
            if waiter is None:
                return
            if _loop_running():
                # Waiting here would freeze the loop, and with it the task that
                # holds the key: fail loudly instead of deadlocking.
                waiter.state = _ABANDONED
                raise RuntimeError(
                    f"key {key!r} is held and this thread runs an event loop: a blocking "
                    "`with store.session(...)` would freeze it; use `async with`"
                )
            event = waiter.event = threading.Event()
        event.wait()

    async def acquire_async(self, key: Hashable) -> None:
        """Wait, without blocking the loop, until the current task holds ``key``."""
        owner: object = asyncio.current_task()
        with self._mutex:
            waiter = self._enqueue(key, owner)
            if waiter is None:
                return
            waiter.loop = loop = asyncio.get_running_loop()
            future = waiter.future = loop.create_future()
        try:
            await future
        except BaseException:
            with self._mutex:
                granted = waiter.state == _GRANTED
                if not granted:
                    waiter.state = _ABANDONED
            if granted:
                self.release(key)
            raise

    def release(self, key: Hashable) -> None:
        """Hand ``key`` to its next waiter, or free it."""
        with self._mutex:
            slot = self._slots.get(key)
            if slot is None:
                raise RuntimeError(f"release of key {key!r}, which is not held")
            holder, queue = slot
            while queue:
                waiter = queue.popleft()
                if waiter.state == _ABANDONED:
                    continue
                if waiter.event is not None:
                    waiter.state = _GRANTED
                    holder[0] = waiter.owner
                    waiter.event.set()
                    return
                assert waiter.loop is not None
                assert waiter.future is not None
                try:
                    waiter.loop.call_soon_threadsafe(_grant, waiter.future)
                except RuntimeError:  # its loop is closed: nobody will ever wait there again
                    waiter.state = _ABANDONED
                    continue
                waiter.state = _GRANTED
                holder[0] = waiter.owner
                return
            del self._slots[key]

    def __len__(self) -> int:
        """Keys held right now."""
        with self._mutex:
            return len(self._slots)

    def _enqueue(self, key: Hashable, owner: object) -> _Waiter | None:
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = ([owner], deque())
            return None
        if owner is not None and slot[0][0] == owner:
            raise RuntimeError(
                f"key {key!r} is already held by this thread or task (a nested session of "
                "the same key would wait for itself forever)"
            )
        waiter = _Waiter(owner)
        slot[1].append(waiter)
        return waiter


class Session:
    """One key's state while a session is open.

    Attributes:
        key: the key (a user id, a chat id).
        value: the loaded state; change it in place or assign a new one.
    """

    __slots__ = ("_deleted", "key", "value")

    def __init__(self, key: Key, value: Any) -> None:
        self.key = key
        self.value = value
        self._deleted = False

    def delete(self) -> None:
        """Delete the key's state when the session ends (instead of writing it back)."""
        self._deleted = True

    @property
    def deleted(self) -> bool:
        """Whether :meth:`delete` was called."""
        return self._deleted

    def __repr__(self) -> str:
        return f"Session(key={self.key!r}, value={self.value!r}, deleted={self._deleted})"


class SessionContext:
    """The context manager behind ``store.session(key)`` (sync and async).

    It works over any :class:`~botscale.StateStore` (``with`` or ``async
    with``) and any :class:`~botscale.AsyncStateStore` (``async with`` only):
    it holds ``key`` in ``locks`` for the whole block, loads the value (a deep
    copy if ``copy_value``, for stores that hand out their own objects), and
    writes it back once (``set``, or ``delete`` after :meth:`Session.delete`)
    if the block ends without an exception.
    """

    __slots__ = ("_copy", "_default", "_key", "_locks", "_session", "_store", "_ttl")

    def __init__(
        self,
        store: StateStore | AsyncStateStore,
        key: Key,
        locks: SessionLocks,
        *,
        default: Callable[[], Any] = dict,
        ttl: float | None = None,
        copy_value: bool = False,
    ) -> None:
        self._store = store
        self._key = key
        self._locks = locks
        self._default = default
        self._ttl = ttl
        self._copy = copy_value
        self._session: Session | None = None

    def _loaded(self, value: Any) -> Session:
        if value is _MISSING:
            value = self._default()
        elif self._copy:
            value = copy.deepcopy(value)
        self._session = Session(self._key, value)
        return self._session

    def _sync_store(self) -> StateStore:
        store = self._store
        if inspect.iscoroutinefunction(getattr(store, "get", None)):
            raise TypeError("an async store's session needs `async with`, not `with`")
        return store  # type: ignore[return-value]

    def __enter__(self) -> Session:
        store = self._sync_store()
        self._locks.acquire(self._key)
        try:
            return self._loaded(store.get(self._key, _MISSING))
        except BaseException:
            self._locks.release(self._key)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if exc_type is None and session is not None:
                store = self._sync_store()
                if session.deleted:
                    store.delete(self._key)
                else:
                    store.set(self._key, session.value, ttl=self._ttl)
        finally:
            self._locks.release(self._key)

    async def __aenter__(self) -> Session:
        await self._locks.acquire_async(self._key)
        try:
            value = self._store.get(self._key, _MISSING)
            if asyncio.iscoroutine(value):
                value = await value
            return self._loaded(value)
        except BaseException:
            self._locks.release(self._key)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if exc_type is None and session is not None:
                if session.deleted:
                    result: Any = self._store.delete(self._key)
                else:
                    result = self._store.set(self._key, session.value, ttl=self._ttl)
                if asyncio.iscoroutine(result):
                    await result
        finally:
            self._locks.release(self._key)


# -- strict mode -----------------------------------------------------------------------------

_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
_HINTS: dict[type, str] = {
    tuple: " (JSON turns a tuple into a list: store a list)",
    set: " (store a sorted list)",
    frozenset: " (store a sorted list)",
    bytes: " (store text, e.g. base64)",
}


def check_json_value(value: Any, name: str = "value") -> None:
    """Raise unless ``value`` survives a JSON round trip unchanged.

    Accepted: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
    ``float``, ``bool`` and ``None``, nested to any depth (exact types:
    subclasses such as enums would come back as their base type).

    Raises:
        TypeError: naming the offending type and where it sits, e.g.
            ``value['cart'][2] is of type set``.
        ValueError: a NaN or infinite float, or a container that contains itself.
    """
    _check_json(value, name, set())


def _check_json(value: Any, path: str, active: set[int]) -> None:
    kind = type(value)
    if kind in _JSON_SCALARS:
        if kind is float and not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if kind is list or kind is dict:
        marker = id(value)
        if marker in active:
            raise ValueError(f"{path} contains itself (a circular reference cannot be JSON)")
        active.add(marker)
        if kind is list:
            for index, item in enumerate(value):
                _check_json(item, f"{path}[{index}]", active)
        else:
            for k, item in value.items():
                if type(k) is not str:
                    raise TypeError(
                        f"{path} has a key of type {type(k).__name__} ({k!r}); JSON object keys "
                        "are strings, so strict stores accept str keys only"
                    )
                _check_json(item, f"{path}[{k!r}]", active)
        active.discard(marker)
        return
    raise TypeError(
        f"{path} is of type {kind.__name__}, which is not JSON-compatible"
        f"{_HINTS.get(kind, '')}; "
        "strict stores accept dict (str keys), list, str, int, float, bool and None"
    )
