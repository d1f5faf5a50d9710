"""Run the simulator in a background thread, for synchronous bots and tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from ._api import JsonObject
from ._simulator import TelegramSimulator
from ._users import VirtualChat, VirtualUser

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["SimulatorThread"]

T = TypeVar("T")


class SimulatorThread:
    """A :class:`TelegramSimulator` serving from its own thread and event loop.

    For synchronous code — a ``telebot.TeleBot`` test, a plain pytest
    function — that cannot ``await``::

        with SimulatorThread() as st:
            apihelper.API_URL = st.base_url + "/bot{0}/{1}"
            bot = telebot.TeleBot(st.token)
            ...
            user = st.user()
            assert st.ask(user, "hi")["text"] == "hi"

    Simulator state lives on the thread's loop: reach it through
    :meth:`call` (a function) and :meth:`run` (a coroutine).

    Args:
        simulator: the simulator to run; a default one if omitted.
        start_timeout: seconds to wait for the server to come up.
    """

    def __init__(
        self, simulator: TelegramSimulator | None = None, *, start_timeout: float = 10.0
    ) -> None:
        self.sim = simulator if simulator is not None else TelegramSimulator()
        self._start_timeout = start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def token(self) -> str:
        """The bot token."""
        return self.sim.token

    @property
    def base_url(self) -> str:
        """The simulator's base URL (see :attr:`TelegramSimulator.base_url`)."""
        return self.sim.base_url

    def start(self) -> None:
        """Start the thread and wait until the server listens.

        Raises:
            RuntimeError: the server did not start within ``start_timeout``.
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name="botscale-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout):
            raise RuntimeError(f"the simulator did not start within {self._start_timeout} s")
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error!r}") from self._error

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.sim.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and join the thread (bounded by ``timeout``)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run a coroutine on the simulator's loop and return its result.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        if self._loop is None:
            coro.close()
            raise RuntimeError("the simulator thread is not running: call start() first")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"simulator call did not finish within {timeout} s") from None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the simulator's loop and return its result."""

        async def invoke() -> T:
            return fn(*args)

        return self.run(invoke())

    def user(self, first_name: str | None = None, **kwargs: Any) -> VirtualUser:
        """Create a virtual user (see :meth:`TelegramSimulator.user`)."""
        return self.call(lambda: self.sim.user(first_name, **kwargs))

    def group(self, title: str | None = None, **kwargs: Any) -> VirtualChat:
        """Create a group chat (see :meth:`TelegramSimulator.group`)."""
        return self.call(lambda: self.sim.group(title, **kwargs))

    def ask(
        self,
        user: VirtualUser,
        text: str,
        *,
        chat: VirtualChat | None = None,
        timeout: float = 10.0,
    ) -> JsonObject:
        """Send ``text`` as ``user`` and return the bot's answer (blocking).

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
        """
        return self.run(user.ask(text, chat=chat, timeout=timeout), timeout=timeout + 5.0)
