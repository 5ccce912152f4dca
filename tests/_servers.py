"""Test servers for keep-alive: an HTTP server that closes idle connections, and a proxy.

`IdleClosingServer` speaks just enough HTTP/1.1 for the Append Campaign API on raw asyncio,
so that it closes an idle connection exactly when its idle timeout runs out (as Node's http
server does), says so in ``Keep-Alive: timeout=N`` if asked, and records which connection
each request came on. `DelayProxy` sits between a client and a server and delays every
chunk, and every close, by a fixed one-way delay: a round trip on loopback. Data a client
sends after the server closed its side is not delivered: the client's side is reset, as a
server's kernel would answer a request on a closed socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

_OK = json.dumps({"error": False, "message": "Processing Campaign...", "data": {}}).encode()
_TOO_MANY = json.dumps({"error": True, "message": "Too Many Requests"}).encode()
_MAX_HEAD = 64 * 1024


@dataclass(slots=True)
class Received:
    """One request as `IdleClosingServer` read it."""

    connection: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def numbers(self) -> list[str]:
        """The lead numbers of the JSON body."""
        data = json.loads(self.body)
        return [lead["number"] for lead in data["customerData"]["jsonData"]]


@dataclass(slots=True)
class _Stats:
    connections: int = 0
    closed_idle: int = 0
    requests: list[Received] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection of `IdleClosingServer`."""

    def __init__(self, server: IdleClosingServer) -> None:
        self.server = server
        self.number = server.stats.connections
        server.stats.connections += 1
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.open.add(self)
        self.arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        self.server.closed.set()
        if self.idle is not None:
            self.idle.cancel()

    def arm(self) -> None:
        """Start the idle timer: close the connection if nothing comes in time."""
        if self.idle is not None:
            self.idle.cancel()
        loop = asyncio.get_running_loop()
        self.idle = loop.call_later(self.server.idle_timeout, self.close_idle)

    def close_idle(self) -> None:
        if self.transport is not None and not self.busy and not self.buffer:
            self.server.stats.closed_idle += 1
            self.server.closed_idle.set()
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.buffer += data
        self.next_request()

    def next_request(self) -> None:
        if self.busy or self.transport is None:
            return
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            if len(self.buffer) > _MAX_HEAD:
                self.transport.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        received = Received(self.number, method, path, headers, rest[:length])
        self.server.stats.requests.append(received)
        self.busy = True
        asyncio.get_running_loop().call_later(self.server.latency, self.answer, received)

    def answer(self, received: Received) -> None:
        server = self.server
        if self.transport is None or self.transport.is_closing():
            return
        index = len([r for r in server.stats.requests if r.status]) + 1
        throttle = server.throttle_every and index % server.throttle_every == 0
        status, body = (429, _TOO_MANY) if throttle else (200, _OK)
        received.status = status
        reason = "OK" if status == 200 else "Too Many Requests"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        if server.keep_alive_hint is not None:
            lines.append(f"Keep-Alive: timeout={server.keep_alive_hint}")
        if throttle:
            lines.append(f"Retry-After: {server.retry_after}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.busy = False
        if self.buffer:
            self.next_request()
        else:
            self.arm()


class IdleClosingServer:
    """An Append Campaign API on 127.0.0.1 that closes connections idle for ``idle_timeout``.

    Args:
        idle_timeout: seconds of idleness (since the last answer) before it closes.
        keep_alive_hint: the ``timeout`` sent in ``Keep-Alive``, or None for no header.
        latency: seconds before each answer.
        throttle_every: answer 429 (with ``Retry-After``) to every n-th request; 0: never.
        retry_after: the ``Retry-After`` of those 429s.
    """

    def __init__(
        self,
        *,
        idle_timeout: float,
        keep_alive_hint: int | None = None,
        latency: float = 0.0,
        throttle_every: int = 0,
        retry_after: int = 1,
    ) -> None:
        self.idle_timeout = idle_timeout
        self.keep_alive_hint = keep_alive_hint
        self.latency = latency
        self.throttle_every = throttle_every
        self.retry_after = retry_after
        self.stats = _Stats()
        self.open: set[_Connection] = set()
        self.closed_idle = asyncio.Event()  # set at each idle close; clear it to wait again
        self.closed = asyncio.Event()  # set at each close, by either side
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        """The URL to give `RyngClient` as ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Received]:
        """Every request read, in arrival order."""
        return self.stats.requests

    def accepted_numbers(self) -> list[str]:
        """The lead numbers of every request answered 200, in arrival order."""
        return [n for r in self.stats.requests if r.status == 200 for n in r.numbers]

    async def __aenter__(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self.open):
            if connection.transport is not None:
                connection.transport.abort()
        await self._server.wait_closed()


class DelayProxy:
    """A TCP proxy on 127.0.0.1 delaying each direction by ``delay`` seconds.

    Args:
        port: the server's port on 127.0.0.1.
        delay: the one-way delay, in seconds (a round trip is twice that).
    """

    def __init__(self, port: int, delay: float) -> None:
        self.upstream_port = port
        self.delay = delay
        self.port = 0
        self.dropped = 0  # client chunks not delivered: the server had closed
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        """The URL to give `RyngClient` as ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        upstream_closed = asyncio.Event()
        tasks = [
            asyncio.create_task(self._pump(reader, up_writer, writer, upstream_closed, True)),
            asyncio.create_task(self._pump(up_reader, writer, None, upstream_closed, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks.difference_update(tasks)
            for each in (writer, up_writer):
                each.transport.abort()
                self._writers.discard(each)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: asyncio.StreamWriter | None,
        upstream_closed: asyncio.Event,
        to_server: bool,
    ) -> None:
        """Copy ``reader`` to ``writer``, each chunk (and the close) ``delay`` later."""
        loop = asyncio.get_running_loop()
        queue: deque[tuple[float, bytes]] = deque()
        arrived = asyncio.Event()

        async def deliver() -> None:
            while True:
                while not queue:
                    arrived.clear()
                    await arrived.wait()
                due, chunk = queue.popleft()
                await asyncio.sleep(max(0.0, due - loop.time()))  # the one-way delay
                if not chunk:  # the sender closed: close the other side
                    writer.transport.close()
                    return
                if to_server and upstream_closed.is_set():
                    # The server closed before this request reached it: the client's
                    # connection is reset, and the server never sees the request.
                    self.dropped += 1
                    assert client is not None
                    _reset(client)
                    return
                writer.write(chunk)

        delivery = asyncio.create_task(deliver())
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk and not to_server:
                    upstream_closed.set()
                queue.append((loop.time() + self.delay, chunk))
                arrived.set()
                if not chunk:
                    break
            await delivery
        except (ConnectionError, OSError):
            pass
        finally:
            delivery.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset."""
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
