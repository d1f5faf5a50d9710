"""Pluggable health checks (a database ping, a Redis ping), run with a timeout.

A check is a zero-argument callable, sync or async.  It passes unless it
raises, returns ``False``, or does not finish within the timeout.  A sync check
(or any callable that is not an ``async def``) runs in a daemon thread of its
own so a hung check cannot hang ``/health`` (or the interpreter's exit); while
one call is still running, later health reads report it as timed out instead
of piling up threads -- at most one thread per check, ever.  A coroutine (from
an ``async def``, or returned by a sync callable such as ``redis.asyncio``'s
``ping``) is awaited in the caller's event loop, or in the loop given to the
threaded server, or in a fresh loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeAlias

from ._validation import check_type

__all__ = ["CheckRunner", "HealthCheck"]

HealthCheck: TypeAlias = Callable[[], object]
"""A zero-argument callable, sync or async (returning an awaitable); ``False`` or raising fails."""

OK = "ok"


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _verdict(result: object) -> str:
    return "failed: returned False" if result is False else OK


async def _await(awaitable: Awaitable[object]) -> object:
    return await awaitable


class _Call:
    """One call of a check in a daemon thread."""

    def __init__(self, check: HealthCheck) -> None:
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        threading.Thread(
            target=self._run, args=(check,), daemon=True, name="botscale-check"
        ).start()

    def _run(self, check: HealthCheck) -> None:
        try:
            self.result = check()
        except BaseException as exc:  # reported as the check's outcome
            self.error = exc
        finally:
            self.done.set()


class CheckRunner:
    """Runs named checks with a timeout; thread-safe."""

    def __init__(self, checks: Mapping[str, HealthCheck], timeout: float) -> None:
        self._checks: dict[str, HealthCheck] = {}
        self._running: dict[str, _Call] = {}
        self._lock = threading.Lock()
        self.timeout = timeout
        for name, check in checks.items():
            self.add(name, check)

    def add(self, name: str, check: HealthCheck) -> None:
        check_type("check name", name, str, "a str")
        if not name:
            raise ValueError("check name must not be empty")
        if not callable(check):
            raise TypeError(f"check {name!r} must be callable, got {type(check).__name__}")
        with self._lock:
            self._checks[name] = check

    def remove(self, name: str) -> None:
        with self._lock:
            self._checks.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return list(self._checks)

    def _start(self, name: str, check: HealthCheck) -> _Call:
        with self._lock:
            call = self._running.get(name)
            if call is None or call.done.is_set():
                call = self._running[name] = _Call(check)
            return call

    def _begin(self, name: str, check: HealthCheck) -> _Call | str | Awaitable[object]:
        """Start a check: a thread for a sync one; an async function is just called."""
        if inspect.iscoroutinefunction(check):
            try:
                return check()  # builds the coroutine, runs nothing yet
            except Exception as exc:
                return _describe(exc)
        return self._start(name, check)

    def _finish(self, call: _Call, finished: bool) -> str | Awaitable[object]:
        """The outcome text, or an awaitable the check returned (still to await)."""
        if not finished:
            return f"timed out after {self.timeout:g} s"
        if call.error is not None:
            return _describe(call.error)
        if inspect.isawaitable(call.result):
            return call.result
        return _verdict(call.result)

    def _snapshot(self) -> list[tuple[str, HealthCheck]]:
        with self._lock:
            return list(self._checks.items())

    def run(self, loop: asyncio.AbstractEventLoop | None = None) -> dict[str, str]:
        """Run every check from synchronous code: ``{name: "ok" or the error}``.

        Awaitables are awaited in ``loop`` when it runs in another thread, else
        in a fresh event loop (not possible from inside a running loop: use
        :meth:`arun` there).
        """
        outcomes: dict[str, str] = {}
        for name, check in self._snapshot():
            outcome = self._begin(name, check)
            if isinstance(outcome, _Call):
                outcome = self._finish(outcome, outcome.done.wait(self.timeout))
            outcomes[name] = (
                outcome if isinstance(outcome, str) else self._await_sync(outcome, loop)
            )
        return outcomes

    def _await_sync(
        self, awaitable: Awaitable[object], loop: asyncio.AbstractEventLoop | None
    ) -> str:
        coro: Coroutine[Any, Any, object] = _await(awaitable)
        try:
            if loop is not None and loop.is_running():
                future = asyncio.run_coroutine_threadsafe(coro, loop)
                try:
                    return _verdict(future.result(self.timeout))
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    return f"timed out after {self.timeout:g} s"
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return _verdict(asyncio.run(asyncio.wait_for(coro, self.timeout)))
            coro.close()
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            return "async check cannot run from sync code inside a running event loop"
        except (TimeoutError, asyncio.TimeoutError):
            return f"timed out after {self.timeout:g} s"
        except Exception as exc:
            return _describe(exc)

    async def arun(self) -> dict[str, str]:
        """Run every check from a running event loop, concurrently."""

        async def one(name: str, check: HealthCheck) -> str:
            outcome = self._begin(name, check)
            if isinstance(outcome, _Call):
                finished = await asyncio.to_thread(outcome.done.wait, self.timeout)
                outcome = self._finish(outcome, finished)
            if isinstance(outcome, str):
                return outcome
            try:
                return _verdict(await asyncio.wait_for(_await(outcome), self.timeout))
            except (TimeoutError, asyncio.TimeoutError):
                return f"timed out after {self.timeout:g} s"
            except Exception as exc:
                return _describe(exc)

        checks = self._snapshot()
        results = await asyncio.gather(*(one(name, check) for name, check in checks))
        return dict(zip((name for name, _ in checks), results, strict=True))
