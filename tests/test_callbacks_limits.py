"""The receiver under idle and slow connections: timeouts, the bound on open connections.

The full-size measurement runs a real ``ryng-async callbacks serve`` under a lowered
descriptor limit (``ulimit -n``) with idle and trickling connections open, and checks that
a normal sender's callbacks are all answered 200. The rest runs `serve` in-process with
small timeouts and speaks to it over raw sockets where the framing matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from test_callback_events import CONNECT_EXAMPLE

import ryng_async.callbacks as callbacks
from ryng_async import ConfigurationError
from ryng_async.callbacks import _limits as limits
from ryng_async.callbacks import create_app, iter_store

pytestmark = pytest.mark.anyio

SECRET = "s3cret-Token_0123456789abcdef"
TIMEOUT = 60


def connect_body(call_id: int) -> bytes:
    body = json.loads(CONNECT_EXAMPLE)
    body["callID"] = call_id
    return json.dumps(body).encode()


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[str, int]]:
    """Run `callbacks.serve` in-process; yield its callback URL and port."""
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        callbacks.serve(
            port=0,
            store_path=tmp_path / "served.db",
            secret=SECRET,
            on_ready=ready.put_nowait,
            **options,
        )
    )
    try:
        url = await asyncio.wait_for(ready.get(), 10)
        port = int(re.findall(r":(\d+)/", url)[0])
        yield url, port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes the connection; return what it sent."""
    with anyio.fail_after(TIMEOUT):
        return await reader.read()


# -- timeouts -----------------------------------------------------------------------------


async def test_a_connection_without_complete_headers_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, header_timeout=0.2) as (_, port):
        silent = await asyncio.open_connection("127.0.0.1", port)
        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"POST /callbacks HTTP/1.1\r\nHost: x\r\n")
        assert await closed_by_server(silent[0]) == b""
        assert await closed_by_server(partial[0]) == b""
        for _, writer in (silent, partial):
            writer.close()


async def test_a_keep_alive_connection_is_reused_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    # Idle between requests is keep-alive, not a late header: the next request works.
    async with (
        serving(tmp_path, header_timeout=0.2) as (url, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.post(url, data=connect_body(1)) as answer:
            assert answer.status == 200
        slept = asyncio.Event()
        asyncio.get_running_loop().call_later(0.6, slept.set)
        await slept.wait()
        async with http.post(url, data=connect_body(2)) as answer:
            assert answer.status == 200
            assert answer.headers.get("Connection", "").lower() != "close"


async def test_a_body_that_trickles_gets_408_and_the_connection_closes(tmp_path: Path) -> None:
    async with serving(tmp_path, body_timeout=0.3) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /callbacks/{SECRET} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
        writer.write(head.encode() + b"{")
        answer = await closed_by_server(reader)
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'{"error":"body not received within 0.3s"}' in answer


def test_timeouts_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="body_timeout"):
        create_app(body_timeout=0)
    with pytest.raises(ConfigurationError, match="body_timeout"):
        create_app(body_timeout=float("nan"))


@pytest.mark.parametrize(
    "options",
    [{"header_timeout": -1}, {"max_connections": 0}, {"max_connections": True}],
)
async def test_serve_refuses_bad_limits(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        await callbacks.serve(port=0, store_path=tmp_path / "x.db", **options)


# -- the bound on open connections --------------------------------------------------------


async def test_over_the_bound_the_oldest_idle_connection_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections=4) as (url, port):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        async with aiohttp.ClientSession() as http, http.post(url, data=connect_body(1)) as answer:
            assert answer.status == 200
        # The new connection pushed out the oldest idle one; the others stay open.
        assert await closed_by_server(idle[0][0]) == b""
        for reader, _ in idle[2:]:
            assert not reader.at_eof()
        for _, writer in idle:
            writer.close()
    assert [s.event.call_id async for s in iter_store(tmp_path / "served.db")] == [1]


def test_the_default_bound_is_below_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert 0 < limits.default_max_connections() < soft


# -- accept() failures --------------------------------------------------------------------


async def test_accept_failures_are_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[dict[str, Any]] = []
    handle = limits.accept_error_handler(lambda _, context: seen.append(context))
    loop = asyncio.get_running_loop()
    failure = {
        "message": "socket.accept() out of system resource",
        "exception": OSError(24, "Too many open files"),
    }
    for _ in range(2000):
        handle(loop, failure)
    handle(loop, {"message": "something else"})
    lines = [r.getMessage() for r in caplog.records if r.name == "ryng_async.callbacks"]
    assert lines == [
        "accept() failed 1 times (out of file descriptors?): [Errno 24] Too many open files"
    ]
    assert seen == [{"message": "something else"}]


def test_the_asyncio_message_the_throttle_matches_is_still_asyncio_s() -> None:
    # The one internal this relies on: the text asyncio reports a failed accept() with.
    import asyncio.selector_events

    assert limits._ACCEPT_FAILED in inspect.getsource(asyncio.selector_events)


def test_aiohttp_server_is_still_a_protocol_factory() -> None:
    # The guard wraps aiohttp.web.Server as loop.create_server's factory (documented
    # API); its handler must still be an asyncio protocol with these methods.
    from aiohttp.web_protocol import RequestHandler

    for name in ("connection_made", "data_received", "eof_received", "connection_lost"):
        assert callable(getattr(RequestHandler, name))
    assert issubclass(RequestHandler, asyncio.Protocol)


# -- the measurement: a real `callbacks serve` under a lowered descriptor limit -----------


async def _flood_and_send(
    tmp_path: Path, *, nofile: int, idle: int, trickling: int, callbacks_sent: int
) -> tuple[list[float], str]:
    """Open idle and trickling connections, then send callbacks; return their latencies."""
    store = tmp_path / "flood.db"
    command = [sys.executable, "-m", "ryng_async", "callbacks", "serve", "--port", "0"]
    command += ["--store", str(store)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "RYNG_CALLBACK_SECRET": SECRET}
    shell = f'ulimit -n {nofile} && exec "$@"'
    process = await anyio.open_process(
        ["sh", "-c", shell, "sh", *command],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    held: list[asyncio.StreamWriter] = []
    latencies: list[float] = []
    async with process:
        assert process.stdout is not None
        assert process.stderr is not None
        shown = b""
        with anyio.fail_after(TIMEOUT):
            while b"Ctrl-C" not in shown:
                shown += await process.stdout.receive()
        port = int(re.findall(rb"http://127\.0\.0\.1:(\d+)/", shown)[0])
        url = f"http://127.0.0.1:{port}/callbacks/{SECRET}"
        stop = asyncio.Event()
        try:
            with anyio.fail_after(TIMEOUT):
                for number in range(idle):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    if number % 2:  # half send part of their headers, then nothing
                        writer.write(b"POST /callbacks HTTP/1.1\r\nHost: x\r\n")
                    held.append(writer)
                slow: list[asyncio.StreamWriter] = []
                for _ in range(trickling):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(
                        f"POST /callbacks/{SECRET} HTTP/1.1\r\nHost: x\r\n"
                        "Content-Length: 100000\r\n\r\n".encode()
                    )
                    slow.append(writer)
                held += slow

            async def trickle() -> None:
                while not stop.is_set():
                    for writer in slow:
                        writer.write(b" ")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)

            trickler = asyncio.create_task(trickle())
            connector = aiohttp.TCPConnector(force_close=True)  # a new connection each
            async with aiohttp.ClientSession(connector=connector) as http:
                for call_id in range(1, callbacks_sent + 1):
                    started = time.monotonic()
                    with anyio.fail_after(5):  # before the fix: never, until idle ones close
                        async with http.post(url, data=connect_body(call_id)) as answer:
                            assert answer.status == 200, await answer.text()
                    latencies.append(time.monotonic() - started)
            stop.set()
            await trickler
        finally:
            stop.set()
            for writer in held:
                writer.transport.abort()
            process.terminate()
            with anyio.fail_after(TIMEOUT):
                err = b"".join([chunk async for chunk in process.stderr])
                await process.wait()
    stored = [s.event.call_id async for s in iter_store(store)]
    assert stored == list(range(1, callbacks_sent + 1))
    return latencies, err.decode()


async def test_idle_and_trickling_connections_do_not_shut_callbacks_out(
    tmp_path: Path,
) -> None:
    latencies, err = await _flood_and_send(
        tmp_path, nofile=256, idle=260, trickling=50, callbacks_sent=20
    )
    assert len(latencies) == 20
    # Throttled: a line per interval, not a traceback per attempt.
    assert "closed" in err
    assert "over the bound of 192 open connections" in err
    assert len(err) < 20_000, err[-2000:]
    assert "Traceback" not in err


@pytest.mark.slow
async def test_a_sender_is_answered_beside_1030_idle_and_200_trickling_connections(
    tmp_path: Path,
) -> None:
    # 1,030 idle and 200 trickling connections under ulimit -n 1024: a normal sender's
    # callbacks are all answered, within about 1 s.
    latencies, err = await _flood_and_send(
        tmp_path, nofile=1024, idle=1030, trickling=200, callbacks_sent=50
    )
    # Each within 5 s (the sender's own limit); 9 in 10 within 1 s. Measured
    # alone: the slowest 0.003-0.012 s; once 1.98 s with the machine's two cores loaded.
    assert sorted(latencies)[len(latencies) * 9 // 10] < 1.0, sorted(latencies)[-5:]
    assert "Traceback" not in err
