"""A gentle stop: nothing new is read or sent, the requests in flight end with real outcomes.

`BatchStream.stop()` and the ``stop=`` event of `bulk_append`; the grace after which the
requests still in flight are cancelled. The server holds each request until the test
lets it go, so "in flight" is exact and no test depends on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    BatchSettled,
    BulkReport,
    ConfigurationError,
    LoadEvent,
    Outcome,
    RyngClient,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

pytestmark = pytest.mark.anyio

CAMPAIGN = "42"
CONCURRENCY = 4


def leads(count: int) -> list[dict[str, Any]]:
    return [{"number": f"+9198{i:08d}"} for i in range(count)]


def check_invariant(report: BulkReport) -> None:
    assert report.finished
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


class Gate:
    """An ``on_request`` hook that holds every request until `release`, counting arrivals."""

    def __init__(self, hold: int) -> None:
        self.arrived = 0
        self.all_in = anyio.Event()  # ``hold`` requests are held
        self._hold = hold
        self._release = anyio.Event()

    async def __call__(self, request: ReceivedRequest) -> None:
        self.arrived += 1
        if self.arrived >= self._hold:
            self.all_in.set()
        await self._release.wait()

    def release(self) -> None:
        self._release.set()


def client_for(server: FakeRyngServer, **options: Any) -> RyngClient:
    return RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY, **options)


def check_stopped_with_the_requests_in_flight_accepted(
    report: BulkReport, server: FakeRyngServer
) -> None:
    check_invariant(report)
    assert server.received_requests == CONCURRENCY  # nothing sent after the stop
    assert report.accepted == server.lead_count() == CONCURRENCY * 10
    assert report.unknown == report.failed == 0
    assert report.skipped == report.total - report.accepted > 0
    assert report.stopped_early
    assert report.stop_reason is not None
    assert "stopped on request" in report.stop_reason
    skipped = [r for r in report.batches if r.outcome is Outcome.SKIPPED]
    assert skipped
    assert all(r.attempts == 0 and r.message.startswith("not sent") for r in skipped)


async def test_stream_stop_lets_the_requests_in_flight_end_and_skips_the_rest() -> None:
    gate = Gate(CONCURRENCY)
    async with (
        FakeRyngServer(access_token=TOKEN, on_request=gate) as server,
        client_for(server) as client,
    ):
        results = client.stream_append(
            CAMPAIGN, leads(1000), batch_size=10, concurrency=CONCURRENCY
        )
        seen = []
        async with results, anyio.create_task_group() as tasks:

            async def stop_when_all_in() -> None:
                await gate.all_in.wait()
                results.stop()
                gate.release()

            tasks.start_soon(stop_when_all_in)
            with anyio.fail_after(10):
                seen = [result async for result in results]
    report = results.report
    check_stopped_with_the_requests_in_flight_accepted(report, server)
    # The results of the requests in flight still came through the iteration.
    assert (
        sorted(r.outcome for r in seen if r.outcome is Outcome.ACCEPTED)
        == [Outcome.ACCEPTED] * CONCURRENCY
    )
    assert len(seen) == len(report.batches)


@pytest.mark.parametrize("kind", ["asyncio", "anyio"])
async def test_a_stop_event_stops_bulk_append_gently(kind: str) -> None:
    stop: asyncio.Event | anyio.Event = asyncio.Event() if kind == "asyncio" else anyio.Event()
    gate = Gate(CONCURRENCY)
    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN, on_request=gate) as server,
        client_for(server) as client,
        anyio.create_task_group() as tasks,
    ):

        async def stop_when_all_in() -> None:
            await gate.all_in.wait()
            stop.set()
            gate.release()

        tasks.start_soon(stop_when_all_in)
        with anyio.fail_after(10):
            returned = await client.bulk_append(
                CAMPAIGN,
                leads(1000),
                batch_size=10,
                concurrency=CONCURRENCY,
                stop=stop,
                report=report,
            )
    assert returned is report  # returned, not raised
    check_stopped_with_the_requests_in_flight_accepted(report, server)


async def test_a_stop_event_set_before_the_load_sends_nothing() -> None:
    stop = anyio.Event()
    stop.set()
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(CAMPAIGN, leads(100), batch_size=10, stop=stop)
    check_invariant(report)
    assert server.received_requests == 0
    assert report.total == 0
    assert report.stopped_early


async def test_stop_before_the_stream_starts_sends_nothing() -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        results = client.stream_append(CAMPAIGN, leads(100), batch_size=10)
        results.stop()
        assert [result async for result in results] == []
    check_invariant(results.report)
    assert server.received_requests == 0
    assert results.report.stopped_early


async def test_the_requests_still_in_flight_after_the_grace_are_cancelled_unknown() -> None:
    hang = FaultPlan(rates={Fault.HANG: 1.0})  # no answer until the server closes
    stop = anyio.Event()

    def stop_once_all_in(request: ReceivedRequest) -> None:
        if request.index + 1 >= CONCURRENCY:
            stop.set()

    async with (
        FakeRyngServer(access_token=TOKEN, faults=hang, on_request=stop_once_all_in) as server,
        client_for(server) as client,
    ):
        with anyio.fail_after(10):
            report = await client.bulk_append(
                CAMPAIGN,
                leads(1000),
                batch_size=10,
                concurrency=CONCURRENCY,
                stop=stop,
                stop_grace=0.2,
            )
    check_invariant(report)
    assert server.received_requests == CONCURRENCY
    assert report.unknown == CONCURRENCY * 10  # cancelled in flight: they may be in Ryng
    assert report.skipped == report.total - report.unknown
    assert report.stopped_early
    assert report.stop_reason is not None
    assert "grace ran out" in report.stop_reason


async def test_a_second_stop_with_a_shorter_grace_cuts_the_wait() -> None:
    hang = FaultPlan(rates={Fault.HANG: 1.0})
    gate = Gate(CONCURRENCY)
    async with (
        FakeRyngServer(access_token=TOKEN, faults=hang, on_request=gate) as server,
        client_for(server, timeout=120) as client,
    ):
        gate.release()  # let requests through to the hang
        results = client.stream_append(CAMPAIGN, leads(1000), batch_size=10)
        async with results, anyio.create_task_group() as tasks:

            async def stop_twice() -> None:
                await gate.all_in.wait()
                results.stop()  # the grace would be the client's timeout: 120 s
                results.stop(grace=0)  # cancel them now

            tasks.start_soon(stop_twice)
            with anyio.fail_after(10):
                outcomes = [result.outcome async for result in results]
    assert outcomes.count(Outcome.UNKNOWN) == results.report.unknown // 10 > 0
    assert Outcome.ACCEPTED not in outcomes


async def test_a_stop_does_not_wait_for_an_input_that_stalls() -> None:
    stop = anyio.Event()

    async def stalling() -> AsyncIterator[dict[str, Any]]:
        for lead in leads(25):
            yield lead
        await anyio.sleep_forever()  # a pipe that stays open, a query that hangs
        yield {}  # pragma: no cover

    def stop_after_two(event: LoadEvent) -> None:
        if isinstance(event, BatchSettled) and event.progress.batches == 2:
            stop.set()

    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        with anyio.fail_after(10):
            report = await client.bulk_append(
                CAMPAIGN, stalling(), batch_size=10, stop=stop, observers=[stop_after_two]
            )
    check_invariant(report)
    assert report.accepted == server.lead_count() == 20
    assert report.total == 25
    assert report.skipped == 5  # read and held for the next batch, never sent
    assert report.stopped_early


async def test_an_error_after_a_gentle_stop_is_still_raised() -> None:
    gate = Gate(CONCURRENCY)
    stop = anyio.Event()

    class ObserverError(Exception):
        pass

    def fail_on_settled(event: LoadEvent) -> None:
        if isinstance(event, BatchSettled) and stop.is_set():
            raise ObserverError("an observer failed after the stop")

    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN, on_request=gate) as server,
        client_for(server) as client,
        anyio.create_task_group() as tasks,
    ):

        async def stop_when_all_in() -> None:
            await gate.all_in.wait()
            stop.set()
            gate.release()

        tasks.start_soon(stop_when_all_in)
        with anyio.fail_after(10), pytest.raises(ObserverError):
            await client.bulk_append(
                CAMPAIGN,
                leads(1000),
                batch_size=10,
                concurrency=CONCURRENCY,
                stop=stop,
                observers=[fail_on_settled],
                report=report,
            )
    check_invariant(report)
    assert report.accepted == server.lead_count() == CONCURRENCY * 10


async def test_a_load_that_ends_before_the_stop_is_not_stopped_early() -> None:
    stop = anyio.Event()
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(CAMPAIGN, leads(50), batch_size=10, stop=stop)
    assert report.ok
    assert not report.stopped_early


async def test_bad_stop_arguments_are_refused_before_anything_is_sent() -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        with pytest.raises(ConfigurationError, match=r"stop must be an asyncio\.Event"):
            await client.bulk_append(CAMPAIGN, leads(5), stop=threading.Event())  # type: ignore[typeddict-item]
        with pytest.raises(ConfigurationError, match="stop_grace must be a number"):
            await client.bulk_append(CAMPAIGN, leads(5), stop_grace=-1)
        results = client.stream_append(CAMPAIGN, leads(5))
        with pytest.raises(ConfigurationError, match="grace must be a number"):
            results.stop(grace=float("nan"))
        await results.aclose()
        assert server.received_requests == 0
