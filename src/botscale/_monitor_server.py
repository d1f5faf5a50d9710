"""The monitor's HTTP endpoints: ``/health``, ``/stats``, ``/metrics``.

The standard library's threading HTTP server, in a daemon thread: no web
framework, and it keeps answering even while the bot's event loop is blocked
(``/health`` then reports async checks as timed out -- exactly what an
operator wants to see).  Every request is answered; an exception inside a
handler becomes a 500 with a JSON body, never a dead server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from typing_extensions import Self

from ._validation import check_type

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from prometheus_client.registry import CollectorRegistry

    from ._monitor import PerformanceMonitor

__all__ = ["MonitorServer"]

_logger = logging.getLogger("botscale.monitor.server")
_JSON = "application/json; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
_ENDPOINTS = ("/health", "/stats", "/metrics")


def _json(status: int, payload: object) -> tuple[int, str, bytes]:
    return status, _JSON, json.dumps(payload, default=str).encode()


class MonitorServer:
    """Serves a :class:`~botscale.PerformanceMonitor` over HTTP (create it with ``mon.serve()``).

    - ``GET /health``: 200 and ``{"status": "ok", ...}`` while healthy; 503 with the
      reasons when a threshold is crossed (degraded) or a check fails (unhealthy).
    - ``GET /stats``: the JSON snapshot of :meth:`PerformanceMonitor.stats`.
    - ``GET /metrics``: Prometheus text (needs ``botscale[prometheus]``; else 501).

    Use it as ``async with`` (async checks then run in that event loop), as
    ``with``, or call :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        monitor: PerformanceMonitor,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        check_type("host", host, str, "a str such as '127.0.0.1'")
        check_type("port", port, int, "an int in 0..65535")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535 (0 = any free port), got {port!r}")
        self._monitor = monitor
        self._host = host
        self._port = port
        self._registry: CollectorRegistry | None = registry
        self._registry_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, loop: asyncio.AbstractEventLoop | None = None) -> Self:
        """Bind and start serving in a daemon thread; returns ``self``.

        Args:
            loop: the event loop async health checks should run in.

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound (port in use, say).
        """
        from http.server import ThreadingHTTPServer

        if self._httpd is not None:
            raise RuntimeError("the monitor server is already running")
        handler = _make_handler(self)
        server_class = ThreadingHTTPServer
        if ":" in self._host:

            class _V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = _V6Server
        httpd = server_class((self._host, self._port), handler)
        httpd.daemon_threads = True
        self._loop = loop
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            daemon=True,
            name=f"botscale-monitor-server:{self.port}",
        )
        self._thread.start()
        _logger.info("monitor endpoints at %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (no-op when not running)."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(5.0)

    @property
    def running(self) -> bool:
        """Whether the server is serving."""
        return self._httpd is not None

    @property
    def host(self) -> str:
        """The bound interface."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0)."""
        if self._httpd is not None:
            return int(self._httpd.server_address[1])
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self if self.running else self.start(loop=asyncio.get_running_loop())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Off the loop: a request may be waiting for this loop to run a check.
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MonitorServer {self.url} {state}>"

    # ------------------------------------------------------------------ routes

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a GET of ``path``; never raises."""
        try:
            route = urlsplit(path).path.rstrip("/") or "/"
            if route == "/health":
                health = self._monitor.check_health(loop=self._loop)
                return _json(200 if health.ok else 503, health.to_dict())
            if route == "/stats":
                return _json(200, self._monitor.stats().to_dict())
            if route == "/metrics":
                return self._metrics()
            if route == "/":
                return _json(200, {"endpoints": list(_ENDPOINTS)})
            return _json(404, {"error": f"no such endpoint {route!r}", "endpoints": _ENDPOINTS})
        except Exception as exc:
            _logger.exception("monitor endpoint %s failed", path)
            return _json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _metrics(self) -> tuple[int, str, bytes]:
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            from .prometheus import MonitorCollector
        except ImportError:
            return (
                501,
                _TEXT,
                b"Prometheus metrics need prometheus_client: pip install 'botscale[prometheus]'\n",
            )
        with self._registry_lock:
            if self._registry is None:
                registry = CollectorRegistry(auto_describe=True)
                registry.register(MonitorCollector(self._monitor))
                self._registry = registry
        return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)


def _make_handler(server: MonitorServer) -> Any:
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        server_version = "botscale-monitor"

        def _answer(self, *, body: bool) -> None:
            status, content_type, payload = server.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def log_message(self, format: str, *args: Any) -> None:
            _logger.debug("%s %s", self.address_string(), format % args)

    return Handler
