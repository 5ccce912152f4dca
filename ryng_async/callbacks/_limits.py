"""Keep the receiver's door open: time out silent connections and bound how many are open.

aiohttp.web has neither a header read timeout nor a bound on open connections: a client
that connects and sends nothing (or half its headers) holds a descriptor until aiohttp's
keep-alive timeout, if ever, and a thousand of them run the process out of descriptors, so
``accept()`` fails and real callbacks wait in the listen queue. `ConnectionGuard` wraps
the protocol factory of an `aiohttp.web.Server` (aiohttp documents it as a factory for
``loop.create_server``) and:

* closes a connection whose request headers are not complete ``header_timeout`` seconds
  after it opened, or after the first byte of its next request;
* keeps at most ``max_connections`` open (by default the descriptor limit less a reserve):
  one over the bound closes the oldest connection that is not inside a request, else the
  new one;
* logs what it closed, and ``accept()`` failures, once per interval rather than once each.

The body's read timeout lives in the request handler (see ``body_timeout`` in
`create_app`), where the 408 can be answered.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from collections.abc import Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.typedefs import Handler

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "ConnectionGuard",
    "ThrottledLog",
    "accept_error_handler",
    "default_max_connections",
]

logger = logging.getLogger("ryng_async.callbacks")

DEFAULT_HEADER_TIMEOUT: Final = 10.0
"""Seconds a connection has to send complete request headers (Go's servers use 10 s too)."""

# Descriptors kept free for the store (database, WAL, shared memory, twice), the listening
# socket, the event loop and logs.
_FD_RESERVE: Final = 64
_LOG_EVERY: Final = 10.0
_ACCEPT_FAILED: Final = "socket.accept() out of system resource"


def default_max_connections() -> int:
    """Return the default bound on open connections: the descriptor limit less a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(1, soft - min(_FD_RESERVE, soft // 4))


class ThrottledLog:
    """Log a recurring event at most once per ``every`` seconds, with the count since."""

    def __init__(self, message: str, *, every: float = _LOG_EVERY) -> None:
        self.message = message
        self.every = every
        self._last = -math.inf
        self._count = 0

    def note(self, now: float, detail: object = "", count: int = 1) -> None:
        """Count ``count`` events at ``now``; log them if the last line is old enough."""
        self._count += count
        if now - self._last < self.every:
            return
        logger.warning(self.message, self._count, detail)
        self._last = now
        self._count = 0


def accept_error_handler(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """Return an event-loop exception handler that logs ``accept()`` failures throttled.

    asyncio reports each failed ``accept()`` (out of descriptors) with a traceback; under a
    flood that is megabytes a second. Other reports go to ``previous`` (or the default).
    """
    throttled = ThrottledLog("accept() failed %d times (out of file descriptors?): %s")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith(_ACCEPT_FAILED):
            throttled.note(loop.time(), context.get("exception", ""))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


class _Connection(asyncio.Protocol):
    """Passes every protocol call to aiohttp's handler, noting when bytes arrive."""

    __slots__ = ("active", "guard", "inner", "transport", "waiting_since")

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.active = 0  # requests of this connection inside the handler
        # Since when complete headers are due (None: idle between requests).
        self.waiting_since: float | None = guard.loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)
        self.guard.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.active == 0 and self.waiting_since is None:
            self.waiting_since = self.guard.loop.time()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.lost(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def close(self) -> None:
        self.guard.lost(self)
        if self.transport is not None:
            self.transport.close()


class ConnectionGuard:
    """A protocol factory over an `aiohttp.web.Server` that times out and bounds connections.

    Add `middleware` to the application (it tells the guard when a request is inside the
    handler), set `server` to ``AppRunner.server`` once the runner is set up, then
    ``loop.create_server(guard, host, port)`` and run `watch` while serving.

    Args:
        header_timeout: seconds to send complete request headers.
        max_connections: the most connections open at once.
    """

    def __init__(
        self,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        max_connections: int | None = None,
    ) -> None:
        self.server: Callable[[], asyncio.Protocol] | None = None
        self.header_timeout = header_timeout
        self.max_connections = (
            default_max_connections() if max_connections is None else max_connections
        )
        self.loop = asyncio.get_running_loop()
        self._open: dict[_Connection, None] = {}
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}
        self._timed_out = ThrottledLog(
            "closed %d connections that sent no complete request headers within %ss"
        )
        self._over_bound = ThrottledLog(
            "closed %d connections over the bound of %s open connections (oldest idle first)"
        )

    def __call__(self) -> asyncio.Protocol:
        if self.server is None:
            raise RuntimeError("ConnectionGuard.server is not set")
        return _Connection(self, self.server())

    @property
    def open_connections(self) -> int:
        """How many connections are open now."""
        return len(self._open)

    def opened(self, connection: _Connection) -> None:
        """Register a new connection; over the bound, close the oldest idle one."""
        self._open[connection] = None
        if connection.transport is not None:
            self._by_transport[connection.transport] = connection
        if len(self._open) <= self.max_connections:
            return
        victim = next((c for c in self._open if c.active == 0 and c is not connection), connection)
        victim.close()
        self._over_bound.note(self.loop.time(), self.max_connections)

    def lost(self, connection: _Connection) -> None:
        """Forget a connection (closed by us or by the peer)."""
        self._open.pop(connection, None)
        if connection.transport is not None:
            self._by_transport.pop(connection.transport, None)

    def sweep(self) -> int:
        """Close every connection whose headers are overdue; return how many."""
        deadline = self.loop.time() - self.header_timeout
        late = [
            c
            for c in self._open
            if c.active == 0 and c.waiting_since is not None and c.waiting_since < deadline
        ]
        for connection in late:
            connection.close()
        if late:
            self._timed_out.note(self.loop.time(), self.header_timeout, count=len(late))
        return len(late)

    async def watch(self) -> None:
        """Sweep now and then, until cancelled."""
        interval = min(1.0, self.header_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Mark the request's connection as inside a request while the handler runs."""
        transport = request.transport
        connection = None if transport is None else self._by_transport.get(transport)
        if connection is None:
            return await handler(request)
        connection.active += 1
        connection.waiting_since = None
        try:
            return await handler(request)
        finally:
            connection.active -= 1
