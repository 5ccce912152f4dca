"""Keep-alive: a stale pooled connection never turns a batch unknown.

A POST written onto a connection the server has just closed fails without an answer: the
batch would end ``unknown`` although the server never read it. The owned pool never reuses
a connection idle longer than ``keepalive_timeout`` (4 s by default) or than the server's
``Keep-Alive: timeout=N`` less a second, and a request none of whose body reached a
connection is a `ConnectError` (retried). The servers are in ``tests/_servers.py``: one that
closes idle connections exactly on time, and a proxy that adds a round trip.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import pytest
from _servers import DelayProxy, IdleClosingServer
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    AmbiguousError,
    ConfigurationError,
    ConnectError,
    RetryDetails,
    RetryPolicy,
    RyngClient,
    _sender,
)
from ryng_async._sender import keep_alive_timeout

pytestmark = pytest.mark.anyio

# Retries without waits, as in conftest, but with room for a few connect errors.
RETRY = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=5.0)


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+9198{i:08d}" for i in range(start, start + count)]


@asynccontextmanager
async def client_for(base_url: str, **options: Any) -> AsyncIterator[RyngClient]:
    options.setdefault("retry", RETRY)
    options.setdefault("random_seed", 0)
    async with RyngClient(base_url=base_url, access_token=TOKEN, **options) as client:
        yield client


# -- the Keep-Alive header -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("timeout=5", 5.0),
        ("timeout=5, max=1000", 5.0),
        ("max=100, Timeout=2", 2.0),
        (" timeout = 1 ", 1.0),
        ('timeout="3"', 3.0),
        ("timeout=0", 0.0),
        ("timeout=1.5", 1.5),
        (None, None),
        ("", None),
        ("max=5", None),
        ("timeout=", None),
        ("timeout=soon", None),
        ("timeout=-1", None),
        ("timeout=inf", None),
        ("timeout=nan", None),
    ],
)
def test_the_keep_alive_timeout_is_read_from_the_header(
    header: str | None, seconds: float | None
) -> None:
    assert keep_alive_timeout(header) == seconds


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf, True, "4", None])
def test_a_bad_keepalive_timeout_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="keepalive_timeout"):
        RyngClient(base_url="http://127.0.0.1:1", access_token=TOKEN, keepalive_timeout=bad)  # type: ignore[arg-type]


# -- which connection a request goes on ------------------------------------------------


class IdleClock:
    """Stands in for the pool's idle clock: moved by hand, so no test waits on time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idle_clock(monkeypatch: pytest.MonkeyPatch) -> IdleClock:
    clock = IdleClock()
    monkeypatch.setattr(_sender, "_idle_clock", clock)
    return clock


async def test_a_connection_is_reused_within_the_hint_and_never_past_it(
    idle_clock: IdleClock,
) -> None:
    # The server keeps connections 5 s but says 2: the client reuses one for 1 s at most.
    async with (
        IdleClosingServer(idle_timeout=5.0, keep_alive_hint=2) as server,
        client_for(server.base_url) as client,
    ):
        for number in numbers(2):
            await client.append("42", [{"number": number}])
        idle_clock.now += 1.2  # idle past the hint less its margin (2 - 1 s)
        await client.append("42", [{"number": numbers(1, 2)[0]}])
    first, second, third = (request.connection for request in server.requests)
    assert first == second  # reused while fresh
    assert third != second  # not reused once idle past the hint


async def test_a_hint_of_a_second_or_less_means_no_reuse() -> None:
    async with (
        IdleClosingServer(idle_timeout=5.0, keep_alive_hint=1) as server,
        client_for(server.base_url) as client,
    ):
        for number in numbers(3):
            await client.append("42", [{"number": number}])
    assert len({request.connection for request in server.requests}) == 3
    assert server.stats.closed_idle == 0  # the client closed each connection itself


async def test_keepalive_timeout_bounds_reuse_without_a_hint() -> None:
    async with IdleClosingServer(idle_timeout=5.0) as server:
        async with client_for(server.base_url) as client:  # the default: 4 s
            for number in numbers(2):
                await client.append("42", [{"number": number}])
        async with client_for(server.base_url, keepalive_timeout=0.3) as client:
            await client.append("42", [{"number": numbers(1, 2)[0]}])
            await anyio.sleep(0.5)
            await client.append("42", [{"number": numbers(1, 3)[0]}])
        async with client_for(server.base_url, keepalive_timeout=0) as client:
            for number in numbers(2, 4):
                await client.append("42", [{"number": number}])
    connections = [request.connection for request in server.requests]
    assert connections[0] == connections[1]  # default: reused
    assert connections[2] != connections[3]  # idle 0.5 s > 0.3 s: not reused
    assert connections[4] != connections[5]  # 0: never reused


# -- a server closing idle connections: with a hint, without, behind a proxy -----------


async def test_appends_sent_as_the_server_closes_the_connection_never_end_unknown() -> None:
    # The server closes connections idle for 2 s and says "Keep-Alive: timeout=2"; a proxy
    # adds a 50 ms round trip. Each append goes the moment the server closes the connection
    # the last one used (its close still on its way to the client): reused, it would reach
    # the server after the close.
    async with (
        IdleClosingServer(idle_timeout=2.0, keep_alive_hint=2) as server,
        DelayProxy(server.port, 0.025) as proxy,
        client_for(proxy.base_url) as client,
    ):
        unknown = 0
        for number in numbers(3):
            server.closed_idle.clear()
            try:
                await client.append("42", [{"number": number}])
            except AmbiguousError:
                unknown += 1
            with anyio.fail_after(10):
                await server.closed_idle.wait()
    assert unknown == 0
    assert server.accepted_numbers() == numbers(3)
    assert proxy.dropped == 0


@pytest.mark.parametrize(
    "idle_timeout", [1.0, 2.0, pytest.param(5.0, marks=pytest.mark.slow)], ids=str
)
async def test_a_server_closing_idle_connections_without_a_hint_never_makes_unknown(
    idle_timeout: float,
) -> None:
    # nginx (keepalive_timeout 2s) and gunicorn (2 s) send no Keep-Alive
    # header. The append goes the moment the server closes the idle connection, its close
    # still on its way through the proxy: the old pool (4 s, no hint) reused it, and the
    # proxy dropped the request after the close: unknown, though the server never read it.
    async with (
        IdleClosingServer(idle_timeout=idle_timeout) as server,
        DelayProxy(server.port, 0.025) as proxy,
        client_for(proxy.base_url) as client,
    ):
        unknown = 0
        for number in numbers(3):
            server.closed.clear()
            try:
                await client.append("42", [{"number": number}])
            except AmbiguousError:
                unknown += 1
                continue  # nothing of it reached the server: no close to wait for
            with anyio.fail_after(idle_timeout + 10):
                await server.closed.wait()  # the server's close (the client's at 4 s for 5 s)
    assert unknown == 0
    assert proxy.dropped == 0
    assert server.accepted_numbers() == numbers(3)


@pytest.mark.slow
async def test_the_default_keepalive_reuses_a_connection_proven_open_and_none_past_4_s() -> None:
    # The README's 4 s default, against a server keeping connections 30 s
    # without a hint. Idle 2.2 s is past what is reused unproven (0.5 s): a new connection,
    # while the first stays open, unused, as a probe; once the probe has lived 4 s, 2.2 s
    # idle is proven safe and reused; past 4 s idle, never.
    async with (
        IdleClosingServer(idle_timeout=30.0) as server,
        client_for(server.base_url) as client,
    ):
        await client.append("42", [{"number": numbers(1)[0]}])
        await anyio.sleep(2.2)  # the idle spells under test, not waits for a state
        await client.append("42", [{"number": numbers(1, 1)[0]}])
        await anyio.sleep(2.2)
        await client.append("42", [{"number": numbers(1, 2)[0]}])
        await anyio.sleep(4.3)
        await client.append("42", [{"number": numbers(1, 3)[0]}])
    connections = [request.connection for request in server.requests]
    assert connections[1] != connections[0]  # 2.2 s idle, unproven: not reused
    assert connections[2] == connections[1]  # 2.2 s idle, proven by the probe: reused
    assert connections[3] not in connections[:3]  # 4.3 s idle: past the default
    assert server.stats.closed_idle == 0  # every close was the client's


async def test_a_rate_limit_just_under_one_a_second_never_ends_unknown() -> None:
    delay = 0.025
    async with (
        IdleClosingServer(idle_timeout=1.0, keep_alive_hint=1) as server,
        DelayProxy(server.port, delay) as proxy,
        client_for(proxy.base_url) as client,
    ):
        report = await client.bulk_append(
            "42", [{"number": n} for n in numbers(5)], batch_size=1, rate_limit=0.98
        )
    assert report.unknown == 0
    assert report.accepted == 5
    assert sorted(server.accepted_numbers()) == numbers(5)


@pytest.mark.slow
async def test_a_bulk_load_paused_by_retry_after_never_ends_unknown() -> None:
    # Concurrency 8 against 50 ms answers, a 429 "Retry-After: 1" on every tenth request:
    # each pause leaves every pooled connection idle for about the server's 1 s.
    async with (
        IdleClosingServer(
            idle_timeout=1.0, keep_alive_hint=1, latency=0.05, throttle_every=10, retry_after=1
        ) as server,
        client_for(server.base_url, retry=RetryPolicy(max_attempts=8)) as client,
    ):
        report = await client.bulk_append(
            "42", [{"number": n} for n in numbers(80)], batch_size=1, concurrency=8
        )
    assert report.unknown == 0
    assert report.accepted == 80
    assert sorted(server.accepted_numbers()) == numbers(80)


# -- a request that provably never left ------------------------------------------------


class StaleConnector(aiohttp.TCPConnector):
    """Hands out a pooled connection only once the server has closed it (the race, forced)."""

    def __init__(self) -> None:
        super().__init__(keepalive_timeout=30)
        self.lost: dict[object, asyncio.Event] = {}
        self.stale = 0

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> aiohttp.connector.Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        assert protocol is not None
        if protocol in self.lost:
            self.stale += 1
            with anyio.fail_after(5):  # the server closes it within its idle timeout
                await self.lost[protocol].wait()
            return connection
        lost = self.lost[protocol] = asyncio.Event()
        original = protocol.connection_lost

        def connection_lost(exc: BaseException | None) -> None:
            original(exc)
            lost.set()

        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return connection


async def test_a_request_on_a_connection_closed_before_it_was_written_is_retried() -> None:
    retries: list[RetryDetails] = []
    connector = StaleConnector()
    async with (
        IdleClosingServer(idle_timeout=0.2) as server,
        aiohttp.ClientSession(connector=connector) as session,
        RyngClient(
            base_url=server.base_url,
            access_token=TOKEN,
            session=session,
            retry=FAST_RETRY,
            on_retry=retries.append,
        ) as client,
    ):
        await client.append("42", [{"number": numbers(1)[0]}])
        await client.append("42", [{"number": numbers(1, 1)[0]}])
    assert connector.stale >= 1
    assert [type(detail.error) for detail in retries] == [ConnectError]
    assert "before the request was sent" in str(retries[0].error)
    assert server.accepted_numbers() == numbers(2)  # each once


# -- the aiohttp internals relied on -----------------------------------------------------


def test_the_aiohttp_internals_relied_on_are_there() -> None:
    # Each of _sender.AIOHTTP_INTERNALS: fails if aiohttp renames, removes or reshapes one.
    import inspect

    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import BaseConnector, Connection
    from aiohttp.http_writer import StreamWriter

    checked = {
        "TCPConnector.connect(req, traces, timeout)": list(
            inspect.signature(aiohttp.TCPConnector.connect).parameters
        )
        == ["self", "req", "traces", "timeout"],
        "Connection.protocol": isinstance(inspect.getattr_static(Connection, "protocol"), property),
        "Connection.close": callable(getattr(Connection, "close", None)),
        "ResponseHandler.is_connected": callable(getattr(ResponseHandler, "is_connected", None)),
        "ResponseHandler.close": callable(getattr(ResponseHandler, "close", None)),
        "BaseConnector._get checks is_connected": "is_connected()"
        in inspect.getsource(BaseConnector._get),
        "BytesPayload.write_with_length(writer, content_length)": list(
            inspect.signature(aiohttp.BytesPayload.write_with_length).parameters
        )
        == ["self", "writer", "content_length"],
        "StreamWriter.transport": isinstance(
            inspect.getattr_static(StreamWriter, "transport"), property
        ),
    }
    assert set(checked) == set(_sender.AIOHTTP_INTERNALS)
    assert [name for name, ok in checked.items() if not ok] == []
