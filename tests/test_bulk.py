"""The bulk engine against a real FakeRyngServer: accounting, limits and the unhappy paths."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp import web
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ryng_async import (
    APIError,
    AttemptEnded,
    AuthenticationError,
    BatchResult,
    BatchStream,
    BulkReport,
    ConfigurationError,
    Lead,
    LoadEnded,
    Outcome,
    Progress,
    RateLimitError,
    RetryDetails,
    RetryPolicy,
    RyngClient,
    RyngError,
    ValidationError,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ManualClock

CAMPAIGN = "42"


# -- helpers -------------------------------------------------------------------------------


def lead(i: int) -> dict[str, Any]:
    """A valid wire-form lead whose ``customField1`` is its unique id."""
    return {"number": f"+1555{i:07d}", "customField1": str(i)}


def leads(n: int) -> list[dict[str, Any]]:
    return [lead(i) for i in range(n)]


def check_invariant(report: BulkReport) -> None:
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    ), str(report)
    assert report.unaccounted == 0
    by_outcome = dict.fromkeys(Outcome, 0)
    for result in report.batches:
        # A batch accepted in part (after a 413): its accepted runs count as accepted.
        by_outcome[Outcome.ACCEPTED] += result.accepted_count
        if result.outcome is not Outcome.ACCEPTED:
            by_outcome[result.outcome] += result.count - result.accepted_count
    assert by_outcome == {
        Outcome.ACCEPTED: report.accepted,
        Outcome.FAILED: report.failed,
        Outcome.UNKNOWN: report.unknown,
        Outcome.SKIPPED: report.skipped,
    }
    assert report.invalid == len(report.invalid_leads)
    assert sorted(r.index for r in report.batches) == list(range(len(report.batches)))


def ids(rows: Any) -> list[str]:
    return [row["customField1"] for row in rows]


@asynccontextmanager
async def serve(
    *, token: str = TOKEN, retry: RetryPolicy = FAST_RETRY, **server_options: Any
) -> AsyncIterator[tuple[FakeRyngServer, RyngClient]]:
    """A fresh server and a client bound to it (hypothesis examples need their own)."""
    async with (
        FakeRyngServer(access_token=TOKEN, **server_options) as server,
        RyngClient(
            base_url=server.base_url, access_token=token, retry=retry, random_seed=0
        ) as client,
    ):
        yield server, client


def client_tasks() -> set[asyncio.Task[Any]]:
    """Running tasks other than this one and the fake server's (handlers, accepts)."""
    server_side = ("RequestHandler.", "BaseSelectorEventLoop._accept_connection")
    return {
        task
        for task in asyncio.all_tasks()
        if task is not asyncio.current_task()
        and not task.done()
        and not getattr(task.get_coro(), "__qualname__", "").startswith(server_side)
    }


# -- the invariant, and the server's record, over fault plans ------------------------------

INVALID_ROWS: list[Any] = [
    {"number": "12345", "customField1": "bad-number"},
    {"number": "+15550000000", "customField0": "bad-key"},
    {"customField1": "no-number"},
    {"number": "+15550000000", "customField1": 7},
    "not a lead",
    Lead(number="0123"),
]
FAULTS = [
    Fault.ERROR_500,
    Fault.RATE_LIMIT,
    Fault.DROP,
    Fault.RESET,
    Fault.BAD_REQUEST,
    Fault.ERROR_TRUE,
]


@st.composite
def bulk_loads(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 30))
    invalid = draw(st.sets(st.integers(0, max(n - 1, 0)), max_size=4)) if n else set()
    kind = draw(st.sampled_from(["list", "generator", "async generator", "Lead objects"]))
    items: list[Any] = []
    for position in range(n):
        if position in invalid:
            items.append(draw(st.sampled_from(INVALID_ROWS)))
        elif kind == "Lead objects":
            items.append(Lead(number=f"+1555{position:07d}", custom_fields={1: str(position)}))
        else:
            items.append(lead(position))
    rates = {fault: draw(st.sampled_from([0.0, 0.05, 0.15])) for fault in FAULTS}
    return {
        "items": items,
        "invalid": invalid,
        "kind": kind,
        "plan": FaultPlan(seed=draw(st.integers(0, 2**16)), rates=rates, retry_after="0"),
        "batch_size": draw(st.integers(1, 6)),
        "concurrency": draw(st.integers(1, 4)),
    }


def as_input(items: list[Any], kind: str) -> Any:
    if kind == "generator":
        return (item for item in items)
    if kind == "async generator":

        async def agen() -> AsyncIterator[Any]:
            for item in items:
                yield item

        return agen()
    return list(items)


@pytest.mark.anyio
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(load=bulk_loads())
async def test_every_lead_is_accounted_for_and_matches_the_server(load: dict[str, Any]) -> None:
    items, invalid = load["items"], load["invalid"]
    async with serve(faults=load["plan"]) as (server, client):
        report = await client.bulk_append(
            CAMPAIGN,
            as_input(items, load["kind"]),
            batch_size=load["batch_size"],
            concurrency=load["concurrency"],
        )

    for outcome in sorted({r.outcome.value for r in report.batches}):
        event(f"a batch {outcome}")
    check_invariant(report)
    assert report.finished
    assert not report.stopped_early
    assert report.total == len(items)
    assert sorted(bad.position for bad in report.invalid_leads) == sorted(invalid)
    assert report.skipped == 0  # nothing stopped this load

    valid = [(p, str(p)) for p in range(len(items)) if p not in invalid]
    received = server.lead_counts("customField1")
    # Default policy: nothing is ever resent, so no lead reached the server twice.
    assert all(count == 1 for count in received.values()), received
    assert set(received) <= {i for _, i in valid}

    # Batches are consecutive runs of the valid leads, by index.
    cursor = 0
    not_accepted: list[str] = []
    for result in sorted(report.batches, key=lambda r: r.index):
        run = valid[cursor : cursor + result.count]
        cursor += result.count
        assert result.start == run[0][0]
        assert result.attempts >= 1
        batch_ids = [i for _, i in run]
        if result.outcome is Outcome.ACCEPTED:
            assert all(received[i] == 1 for i in batch_ids)  # exactly once
            assert result.leads == ()
            assert result.status == 200
            assert result.error is None
        else:
            assert ids(result.leads) == batch_ids
            assert result.error is not None
            not_accepted += batch_ids
        if result.outcome is Outcome.FAILED:  # a definite error: not appended
            assert not any(received[i] for i in batch_ids)
    assert cursor == len(valid)

    failed = ids(report.failed_leads())
    assert failed == not_accepted  # in input order
    assert {i for _, i in valid} - set(received) <= set(failed)
    assert report.ok == (report.accepted == len(items))
    if report.accepted < len(items):
        with pytest.raises(RyngError) as caught:
            report.raise_for_failures()
        assert caught.value.report is report


# -- concurrency, rate, Retry-After ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [1, 3, 6])
async def test_in_flight_requests_never_exceed_concurrency(concurrency: int) -> None:
    async with serve(latency=0.02) as (server, client):
        report = await client.bulk_append(
            CAMPAIGN, leads(60), batch_size=2, concurrency=concurrency
        )
    assert report.ok
    assert server.received_requests == 30
    assert 1 <= server.max_in_flight <= concurrency


@pytest.mark.anyio
async def test_rate_limit_is_respected_at_the_server() -> None:
    async with serve() as (server, client):
        report = await client.bulk_append(
            CAMPAIGN, leads(60), batch_size=2, concurrency=8, rate_limit=20
        )
    assert report.ok
    assert server.received_requests == 30
    # No burst at start either: no one-second window holds more than the rate (+1 edge).
    assert server.max_requests_per_window(1.0) <= 21


@asynccontextmanager
async def gated_server(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> AsyncIterator[str]:
    """A plain aiohttp server on 127.0.0.1 answering every path with ``handler``."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.anyio
async def test_retry_after_pauses_all_sending() -> None:
    # No timing race: the server holds the first wave until all four requests are in,
    # answers the first with a 429 (Retry-After: 1), and answers the other three only once
    # the client has taken the pause. Their senders then have more to send, at once
    # without a shared pause: nothing may arrive until a second after the 429 came back.
    arrivals: list[float] = []
    wave_in = anyio.Event()
    paused = anyio.Event()
    throttled_at: list[float] = []

    def watch(event: object) -> None:
        if isinstance(event, AttemptEnded) and event.status == 429:
            throttled_at.append(time.monotonic())  # before the pause starts
        if isinstance(event, RetryDetails) and isinstance(event.error, RateLimitError):
            paused.set()  # told after the pause has started

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        index = len(arrivals)
        arrivals.append(time.monotonic())
        if len(arrivals) == 4:
            wave_in.set()
        if index < 4:
            with anyio.fail_after(5):  # a failing test must not hang the server's cleanup
                await wave_in.wait()
            if index == 0:
                body = b'{"error":true,"message":"Too Many Requests"}'
                headers = {"Retry-After": "1"}
                return web.Response(status=429, body=body, headers=headers)
            with anyio.fail_after(5):
                await paused.wait()
        return web.json_response({"error": False, "message": "Processing Campaign...", "data": {}})

    retry = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=5.0)
    async with (
        gated_server(handler) as base_url,
        RyngClient(base_url=base_url, access_token=TOKEN, retry=retry, random_seed=0) as client,
    ):
        with anyio.fail_after(10):
            report = await client.bulk_append(
                CAMPAIGN, leads(24), batch_size=2, concurrency=4, observers=[watch]
            )
    assert report.ok
    assert len(arrivals) == 13  # 12 batches, one of them twice
    assert len(throttled_at) == 1
    # asyncio's timers may fire up to a clock tick early: 10 ms of tolerance.
    assert min(arrivals[4:]) >= throttled_at[0] + 1.0 - 0.01


@pytest.mark.anyio
async def test_retry_after_is_capped_by_the_policy() -> None:
    retry = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=0.2)
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after="30")
    async with serve(retry=retry, faults=plan) as (server, client):
        with anyio.fail_after(3):
            report = await client.bulk_append(CAMPAIGN, leads(8), batch_size=2, concurrency=2)
    assert report.ok
    assert server.statuses[429] == 1


@pytest.mark.anyio
async def test_a_retry_after_on_a_load_with_its_own_rate_pauses_the_client_too() -> None:
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after="0.5")
    retry = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=0.5)
    async with serve(faults=plan, retry=retry) as (server, client):
        await client.bulk_append(CAMPAIGN, leads(1), rate_limit=1000)
        paused_from = server.arrivals[0]
        await client.append(CAMPAIGN, [lead(1)])
    # the load's second attempt and the client's own append both waited out the pause
    assert all(t - paused_from >= 0.45 for t in server.arrivals[1:])
    assert len(server.arrivals) == 3


# -- the paths that are not the happy one ---------------------------------------------------


@pytest.mark.anyio
async def test_403_aborts_the_load_with_the_partial_report() -> None:
    async with serve(token="not-the-token-1234", latency=0.01) as (server, client):
        with pytest.raises(AuthenticationError) as caught:
            await client.bulk_append(CAMPAIGN, leads(1000), batch_size=5, concurrency=3)
    report = caught.value.report
    assert report is not None
    check_invariant(report)
    assert report.finished
    assert report.stopped_early
    assert "403" in (report.stop_reason or "")
    # Only the requests already in flight when the first 403 came back were sent.
    assert 1 <= server.received_requests <= 3
    assert server.statuses[403] == server.received_requests
    assert report.accepted == 0
    assert report.failed == 5 * server.received_requests
    assert report.skipped == report.total - report.failed
    assert report.total < 1000  # the rest of the input was never read
    assert all(r.outcome is Outcome.SKIPPED for r in report.batches if r.attempts == 0)
    assert len(report.failed_leads()) == report.total
    assert "not-the-token" not in str(caught.value)


@pytest.mark.anyio
async def test_a_load_stops_after_too_many_failed_batches_in_a_row() -> None:
    read = 0

    def source() -> Iterator[dict[str, Any]]:
        nonlocal read
        for i in range(10_000):
            read += 1
            yield lead(i)

    plan = FaultPlan(seed=1, rates={Fault.ERROR_500: 1.0})
    async with serve(faults=plan) as (_, client):
        report = await client.bulk_append(
            CAMPAIGN, source(), batch_size=10, concurrency=2, max_consecutive_failures=5
        )
    check_invariant(report)
    assert report.stopped_early
    assert report.stop_reason is not None
    assert "5 batches in a row" in report.stop_reason
    assert read < 200  # the rest of the input was never read
    assert report.accepted == 0


async def _slow_start_load(
    server: FakeRyngServer, client: RyngClient, report: BulkReport, scope: anyio.CancelScope
) -> None:
    def cancel_after_first(progress: Progress) -> None:
        if progress.batches == 1:
            scope.cancel()

    await client.bulk_append(
        CAMPAIGN,
        leads(400),
        batch_size=2,
        concurrency=4,
        on_progress=cancel_after_first,
        report=report,
    )


def check_cancelled_report(report: BulkReport, server: FakeRyngServer) -> None:
    check_invariant(report)
    assert report.finished
    assert report.stopped_early
    assert report.stop_reason == "cancelled"
    assert report.total < 400
    assert report.failed == 2  # the scripted 400
    assert report.unknown >= 2  # cut off in flight: may have been appended
    received = server.lead_counts("customField1")
    for result in report.batches:
        if result.outcome is Outcome.SKIPPED:  # never sent
            assert result.attempts == 0
            assert not any(received[i] for i in ids(result.leads))
        if result.outcome is Outcome.UNKNOWN:
            assert result.attempts == 1
    assert len(report.failed_leads()) == report.total


@pytest.mark.anyio
async def test_cancel_from_a_progress_hook_leaves_an_exact_report() -> None:
    # The first request is answered 400 at once; the others are in flight for 0.3 s.
    plan = FaultPlan(script=[Fault.BAD_REQUEST])
    report = BulkReport()
    before = client_tasks()
    async with serve(faults=plan, latency=0.3) as (server, client):
        with anyio.CancelScope() as scope:
            await _slow_start_load(server, client, report, scope)
        assert scope.cancelled_caught
        assert client_tasks() == before
    # The server has closed: its record is final.
    check_cancelled_report(report, server)


@pytest.mark.anyio
async def test_cancel_from_an_enclosing_task_group_leaves_an_exact_report() -> None:
    plan = FaultPlan(script=[Fault.BAD_REQUEST])
    report = BulkReport()
    first_batch_done = anyio.Event()
    before = client_tasks()

    async def watcher(scope: anyio.CancelScope) -> None:
        await first_batch_done.wait()
        scope.cancel()

    def on_progress(progress: Progress) -> None:
        first_batch_done.set()

    async with serve(faults=plan, latency=0.3) as (server, client):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watcher, tasks.cancel_scope)
            await client.bulk_append(
                CAMPAIGN,
                leads(400),
                batch_size=2,
                concurrency=4,
                on_progress=on_progress,
                report=report,
            )
            pytest.fail("the cancel must not be swallowed")
        assert client_tasks() == before
    check_cancelled_report(report, server)


@pytest.mark.anyio
async def test_move_on_after_ends_the_load_promptly() -> None:
    report = BulkReport()
    batch_size, concurrency = 10, 2
    async with serve(latency=0.05) as (server, client):
        with anyio.move_on_after(0.3) as scope:
            await client.bulk_append(
                CAMPAIGN,
                leads(10_000),
                batch_size=batch_size,
                concurrency=concurrency,
                report=report,
            )
        assert scope.cancelled_caught
        sent = server.received_requests
    arrived = server.received_requests
    check_invariant(report)
    assert report.finished
    assert report.stopped_early
    assert 0 < report.total < 10_000
    # Prompt: reading stopped where sending stopped (at most the look-ahead of
    # concurrency + 3 batches past what was sent), and nothing new went out after the
    # return: a request cut off in flight may still reach a busy server, no other can.
    assert report.total <= (arrived + concurrency + 3) * batch_size
    assert sent <= arrived <= sent + concurrency


@pytest.mark.anyio
async def test_a_cancel_while_waiting_on_the_input_says_the_load_stopped_early() -> None:
    report = BulkReport()
    first_batch_done = anyio.Event()

    async def source() -> AsyncIterator[dict[str, Any]]:
        for i in range(10):
            yield lead(i)
        await anyio.Event().wait()  # the input stalls: the load waits on it
        yield lead(10)  # pragma: no cover

    def on_progress(progress: Progress) -> None:
        if progress.batches == 2:  # all that the input gave so far is done
            first_batch_done.set()

    async with serve() as (_, client), anyio.create_task_group() as tasks:

        async def cancel_after_first_batch() -> None:
            await first_batch_done.wait()
            tasks.cancel_scope.cancel()

        tasks.start_soon(cancel_after_first_batch)
        await client.bulk_append(
            CAMPAIGN, source(), batch_size=5, on_progress=on_progress, report=report
        )
    check_invariant(report)
    assert report.finished
    assert report.stopped_early
    assert not report.ok
    assert report.accepted == 10
    with pytest.raises(RyngError, match="not read to its end"):
        report.raise_for_failures()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_input_that_raises_stops_the_load_and_reaches_the_caller(kind: str) -> None:
    boom = RuntimeError("the database went away")

    def sync_source() -> Iterator[dict[str, Any]]:
        yield from leads(7)
        raise boom

    async def async_source() -> AsyncIterator[dict[str, Any]]:
        for row in leads(7):
            yield row
        raise boom

    report = BulkReport()
    source = sync_source() if kind == "sync" else async_source()
    async with serve(latency=0.01) as (server, client):
        with pytest.raises(RuntimeError) as caught:
            await client.bulk_append(CAMPAIGN, source, batch_size=3, concurrency=2, report=report)
    assert caught.value is boom
    assert any("partial bulk report" in note for note in getattr(boom, "__notes__", []))
    check_invariant(report)
    assert report.finished
    assert report.stopped_early
    assert "RuntimeError" in (report.stop_reason or "")
    assert report.total == 7
    assert server.lead_count() == report.accepted  # no fault: accepted is what arrived
    assert len(report.failed_leads()) == report.total - report.accepted


@pytest.mark.anyio
async def test_an_async_input_is_closed_when_the_load_stops_early() -> None:
    closed = anyio.Event()

    async def source() -> AsyncIterator[dict[str, Any]]:
        try:
            for row in leads(1000):
                yield row
        finally:
            closed.set()

    rows = source()
    async with serve(token="wrong-token-0000") as (_, client):
        with pytest.raises(AuthenticationError):
            await client.bulk_append(CAMPAIGN, rows, batch_size=5, concurrency=2)
    assert closed.is_set()


@pytest.mark.anyio
async def test_input_is_read_lazily_with_bounded_memory() -> None:
    concurrency, batch_size = 3, 5
    read = 0
    gaps: list[int] = []

    def source() -> Iterator[dict[str, Any]]:
        nonlocal read
        for row in leads(300):
            read += 1
            yield row

    def on_progress(progress: Progress) -> None:
        done = (
            progress.accepted + progress.failed + progress.unknown + progress.skipped
        ) + progress.invalid
        assert progress.read <= read
        gaps.append(read - done)

    async with serve(latency=0.01) as (_, client):
        report = await client.bulk_append(
            CAMPAIGN,
            source(),
            batch_size=batch_size,
            concurrency=concurrency,
            on_progress=on_progress,
        )
    assert report.ok
    assert len(gaps) == 60
    assert max(gaps) <= (concurrency + 3) * batch_size


# -- inputs ---------------------------------------------------------------------------------


class AsyncRows:
    """An async iterable that is not an async generator."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[dict[str, Any]]:
        for row in self._rows:
            await anyio.lowlevel.checkpoint()
            yield row


def make_input(kind: str, rows: list[dict[str, Any]]) -> Any:
    if kind == "list":
        return rows
    if kind == "tuple":
        return tuple(rows)
    if kind == "iterator":
        return iter(rows)
    if kind == "generator":
        return (row for row in rows)
    if kind == "Lead objects":
        return [Lead.from_wire(row) for row in rows]
    if kind == "async generator":
        return as_input(rows, "async generator")
    return AsyncRows(rows)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "kind",
    ["list", "tuple", "iterator", "generator", "Lead objects", "async generator", "async iterable"],
)
async def test_sync_and_async_inputs(kind: str) -> None:
    rows = leads(23)
    async with serve() as (server, client):
        report = await client.bulk_append(
            CAMPAIGN, make_input(kind, rows), batch_size=4, concurrency=3
        )
    assert report.ok, str(report)
    assert (report.total, report.accepted, len(report.batches)) == (23, 23, 6)
    assert sorted(server.leads, key=lambda r: int(r["customField1"])) == rows
    assert sorted(r.start for r in report.batches) == [0, 4, 8, 12, 16, 20]


@pytest.mark.anyio
async def test_campaign_options_go_in_every_batch(
    server: FakeRyngServer, client: RyngClient
) -> None:
    report = await client.bulk_append(
        "camp/aign 7",
        leads(5),
        batch_size=2,
        name="Summer",
        agent_mapping="global",
        agents=["a@x.com"],
        custom_field_names={"customField1Name": "Id"},
    )
    assert report.ok
    assert report.campaign_id == "camp/aign 7"
    assert len(server.requests) == 3
    for request in server.requests:
        assert request.path.endswith("/camp%2Faign%207")
        assert request.request is not None
        assert request.request.name == "Summer"
        assert request.request.agents == ["a@x.com"]
        assert request.request.custom_field_names == {"customField1Name": "Id"}


@pytest.mark.anyio
async def test_a_misspelt_option_is_named() -> None:
    async with serve() as (server, client):
        with pytest.raises(TypeError, match=r"bulk_append.*bacth_size"):
            await client.bulk_append(CAMPAIGN, leads(5), bacth_size=2)  # type: ignore[call-arg]
        assert server.received_requests == 0


@pytest.mark.anyio
async def test_invalid_leads_are_reported_with_positions_and_the_load_goes_on(
    server: FakeRyngServer, client: RyngClient
) -> None:
    rows: list[Any] = leads(10)
    rows[1] = {"number": "98765", "customField1": "1"}
    rows[4] = {"number": "+15550000004", "customField1": 4}
    rows[5] = {"number": "+15550000005", "nickname": "x"}
    report = await client.bulk_append(CAMPAIGN, rows, batch_size=3)
    check_invariant(report)
    assert not report.ok
    assert (report.total, report.accepted, report.invalid) == (10, 7, 3)
    assert [(bad.position, bad.field) for bad in report.invalid_leads] == [
        (1, "number"),
        (4, "customField1"),
        (5, "nickname"),
    ]
    assert all(bad.reason for bad in report.invalid_leads)
    assert sorted(ids(server.leads), key=int) == ["0", "2", "3", "6", "7", "8", "9"]
    assert sorted((r.start, r.count) for r in report.batches) == [(0, 3), (6, 3), (9, 1)]
    assert report.failed_leads() == []
    with pytest.raises(ValidationError) as caught:
        report.raise_for_failures()
    assert caught.value.position == 1
    assert caught.value.report is report


@pytest.mark.anyio
async def test_a_malformed_lead_is_invalid_and_the_load_goes_on() -> None:
    rows: list[Any] = [lead(i) for i in range(10)]
    rows[3] = Lead(number="+15550000003", custom_fields=None)  # type: ignore[arg-type]
    rows[6] = Lead(number="+15550000006", agents_assigned="bob@example.com")
    async with serve() as (server, client):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=4)
    check_invariant(report)
    assert report.accepted == 8
    assert [(bad.position, bad.field) for bad in report.invalid_leads] == [
        (3, "custom_fields"),
        (6, "agentsAssigned"),
    ]
    assert all(
        isinstance(row.get("agentsAssigned", []), list) for row in server.leads
    )  # never one agent a letter


@pytest.mark.anyio
async def test_a_lead_larger_than_max_batch_bytes_is_invalid(
    server: FakeRyngServer, client: RyngClient
) -> None:
    rows = leads(6)
    rows[2]["customField2"] = "x" * 2000
    report = await client.bulk_append(CAMPAIGN, rows, batch_size=10, max_batch_bytes=1000)
    check_invariant(report)
    assert report.accepted == 5
    ((bad_position, reason),) = [(bad.position, bad.reason) for bad in report.invalid_leads]
    assert bad_position == 2
    assert "max_batch_bytes=1000" in reason
    assert all(len(request.body) <= 1000 for request in server.requests)
    assert "2" not in ids(server.leads)


@pytest.mark.anyio
async def test_batches_respect_max_batch_bytes(server: FakeRyngServer, client: RyngClient) -> None:
    report = await client.bulk_append(CAMPAIGN, leads(100), batch_size=100, max_batch_bytes=600)
    assert report.ok
    assert len(server.requests) > 1
    assert all(len(request.body) <= 600 for request in server.requests)
    assert server.lead_count() == 100


@pytest.mark.anyio
async def test_dedupe_drops_repeated_numbers_as_invalid(
    server: FakeRyngServer, client: RyngClient
) -> None:
    rows: list[Any] = leads(6)
    rows[3] = {**rows[1], "customField1": "dup"}
    rows[5] = Lead.from_wire({**rows[0], "customField1": "dup2"})
    report = await client.bulk_append(CAMPAIGN, rows, batch_size=2, dedupe=True)
    check_invariant(report)
    assert [(bad.position, bad.field) for bad in report.invalid_leads] == [
        (3, "number"),
        (5, "number"),
    ]
    assert all("duplicate" in bad.reason for bad in report.invalid_leads)
    assert sorted(ids(server.leads)) == ["0", "1", "2", "4"]


@pytest.mark.anyio
async def test_lead_objects_of_one_shape_load_as_their_wire_dicts() -> None:
    # Same-shaped Leads are sent as WireLeads: the server holds their wire dicts, a
    # deduplicated one and an unencodable one are refused by name, and the leads of batches
    # that failed come back as wire dicts (the input bulk_append takes again).
    rows = [
        Lead(
            number=f"+1555000{i:04d}",
            agents_assigned=("a@x.com",),
            custom_fields={2: f"{i}", 1: "c"},
        )
        for i in range(8)
    ]
    rows[5] = Lead(
        number=rows[1].number, agents_assigned=("a@x.com",), custom_fields={2: "5", 1: "c"}
    )
    rows[6] = Lead(
        number="+15550006666", agents_assigned=("a@x.com",), custom_fields={2: "\ud800", 1: "c"}
    )
    async with serve() as (server, client):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=3, dedupe=True)
        check_invariant(report)
        assert [(bad.position, bad.field) for bad in report.invalid_leads] == [
            (5, "number"),
            (6, "customField2"),
        ]
        expected = [lead.to_wire() for i, lead in enumerate(rows) if i not in (5, 6)]
        assert server.leads == expected
    plan = FaultPlan(seed=0, rates={Fault.BAD_REQUEST: 1.0})
    async with serve(faults=plan) as (server, client):
        report = await client.bulk_append(CAMPAIGN, rows[:4], batch_size=3)
        assert report.failed == 4
        failed = report.failed_leads()
        assert failed == [lead.to_wire() for lead in rows[:4]]
        assert all(type(row) is dict for row in failed)
        again = await client.bulk_append(CAMPAIGN, failed, batch_size=3)
        assert again.total == 4


@pytest.mark.anyio
async def test_duplicates_are_sent_without_dedupe(
    server: FakeRyngServer, client: RyngClient
) -> None:
    rows = [lead(0), lead(0)]
    report = await client.bulk_append(CAMPAIGN, rows)
    assert report.ok
    assert server.lead_counts()["+15550000000"] == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fault", "status"), [(Fault.BAD_REQUEST, 400), (Fault.ERROR_500, 500), (Fault.ERROR_TRUE, 200)]
)
async def test_a_definite_error_answer_fails_the_batch(fault: Fault, status: int) -> None:
    plan = FaultPlan(script=[fault])
    retry = RetryPolicy(max_attempts=1)
    async with serve(faults=plan, retry=retry) as (server, client):
        report = await client.bulk_append(CAMPAIGN, leads(4), batch_size=2, concurrency=1)
    check_invariant(report)
    (bad,) = [r for r in report.batches if r.outcome is not Outcome.ACCEPTED]
    assert bad.status == status
    assert bad.outcome is Outcome.FAILED, bad.message  # nothing was appended
    assert isinstance(bad.error, APIError)
    assert server.lead_count() == 2


@pytest.mark.anyio
async def test_a_dropped_connection_is_unknown_and_not_resent() -> None:
    async with serve(faults=FaultPlan(script=[Fault.DROP])) as (server, client):
        report = await client.bulk_append(CAMPAIGN, leads(4), batch_size=2, concurrency=1)
    (bad,) = [r for r in report.batches if r.outcome is not Outcome.ACCEPTED]
    assert bad.outcome is Outcome.UNKNOWN
    assert bad.attempts == 1
    assert server.received_requests == 2
    assert server.lead_count() == 4  # the dropped batch was in fact appended
    assert report.unknown == 2
    assert ids(report.failed_leads()) == ids(server.requests[0].leads)


@pytest.mark.anyio
async def test_a_batch_that_may_have_been_appended_is_never_failed() -> None:
    # With retry_ambiguous, a dropped attempt (appended, in fact) then a definite error:
    # the batch may be at the server, so it is unknown, not failed (failed means resend).
    retry = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_attempts=2, retry_ambiguous=True)
    plan = FaultPlan(script=[Fault.DROP, Fault.ERROR_500])
    async with serve(faults=plan, retry=retry) as (server, client):
        report = await client.bulk_append(CAMPAIGN, leads(2), batch_size=2)
    (result,) = report.batches
    assert server.lead_count() == 2
    assert result.attempts == 2
    assert result.outcome is Outcome.UNKNOWN, result.message


@pytest.mark.anyio
async def test_retryable_errors_are_retried_to_acceptance() -> None:
    plan = FaultPlan(script=[Fault.ERROR_500, Fault.RATE_LIMIT, None])
    async with serve(faults=plan) as (server, client):
        report = await client.bulk_append(CAMPAIGN, leads(2), batch_size=2)
    assert report.ok
    ((result),) = report.batches
    assert result.attempts == 3
    assert server.received_requests == 3
    assert server.lead_count() == 2


# -- streaming and hooks --------------------------------------------------------------------


@pytest.mark.anyio
async def test_stream_append_yields_each_result_in_completion_order(
    server: FakeRyngServer, client: RyngClient
) -> None:
    server.latency = 0.005
    stream = client.stream_append(CAMPAIGN, leads(20), batch_size=3, concurrency=3)
    results = [result async for result in stream]
    assert all(isinstance(result, BatchResult) for result in results)
    assert sorted(r.index for r in results) == list(range(7))
    assert isinstance(stream, BatchStream)
    assert stream.report.finished
    assert stream.report.batches == results
    assert stream.report.ok


@pytest.mark.anyio
async def test_stream_append_as_a_context_manager_settles_on_break() -> None:
    async with serve(latency=0.05) as (server, client):
        async with client.stream_append(
            CAMPAIGN, leads(1000), batch_size=5, concurrency=3
        ) as results:
            async for result in results:
                first = result
                break
        report = results.report
        assert report.finished
        check_invariant(report)
        assert report.stopped_early
        assert report.total < 1000
        assert first in report.batches
        # In-flight requests were let finish: nothing unknown, the rest never sent.
        assert report.unknown == 0
        assert report.accepted == server.lead_count()
        assert {r.outcome for r in report.batches} <= {Outcome.ACCEPTED, Outcome.SKIPPED}


@pytest.mark.anyio
async def test_on_progress_receives_a_progress_record_after_every_batch(
    server: FakeRyngServer, client: RyngClient
) -> None:
    seen: list[Progress] = []
    report = await client.bulk_append(
        CAMPAIGN, leads(10), batch_size=3, concurrency=2, on_progress=seen.append
    )
    assert [p.batches for p in seen] == [1, 2, 3, 4]
    assert all(isinstance(p, Progress) for p in seen)
    assert seen[-1].accepted == report.accepted == 10
    assert seen[-1].read == 10
    # Each record is a later snapshot than the one before: its counts never go back.
    for before, after in itertools.pairwise(seen):
        assert after.read >= before.read
        assert after.accepted >= before.accepted
    assert all(p.elapsed >= 0 for p in seen)
    with pytest.raises(AttributeError):
        seen[0].batches = 99  # type: ignore[misc]


@pytest.mark.anyio
async def test_a_failing_progress_hook_stops_the_load(
    server: FakeRyngServer, client: RyngClient
) -> None:
    def hook(progress: Progress) -> None:
        raise ValueError("dashboard down")

    report = BulkReport()
    with pytest.raises(ValueError, match="dashboard down"):
        await client.bulk_append(
            CAMPAIGN, leads(100), batch_size=5, concurrency=1, on_progress=hook, report=report
        )
    check_invariant(report)
    assert report.stopped_early
    assert report.finished


@pytest.mark.anyio
async def test_an_on_retry_hook_that_raises_stops_the_load_and_is_raised_bare() -> None:
    class HookError(Exception):
        pass

    def on_retry(details: Any) -> None:
        raise HookError("metrics backend down")

    plan = FaultPlan(script=[Fault.ERROR_500])
    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY, on_retry=on_retry
        ) as client,
    ):
        with pytest.raises(HookError):
            await client.bulk_append(
                CAMPAIGN, leads(50), batch_size=10, concurrency=1, report=report
            )
    check_invariant(report)
    assert report.stopped_early
    assert report.failed == 10  # the batch whose retry was refused: never appended
    (failed,) = [r for r in report.batches if r.outcome is Outcome.FAILED]
    assert isinstance(failed.error, APIError)  # the batch keeps its own error, the 500
    assert failed.error.status == 500


# -- the report -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_report_of_a_clean_load(server: FakeRyngServer, client: RyngClient) -> None:
    report = await client.bulk_append(CAMPAIGN, leads(9), batch_size=4)
    assert report.ok
    report.raise_for_failures()  # does nothing
    assert report.failed_leads() == []
    assert report.elapsed > 0
    assert report.leads_per_second > 0
    assert str(report).startswith("ok: 9 leads read, 9 accepted")
    data = msgspec.json.decode(report.to_json())
    assert data["total"] == data["accepted"] == 9
    assert data["ok"] is True
    assert [b["outcome"] for b in data["batches"]] == ["accepted"] * 3


@pytest.mark.anyio
async def test_report_of_a_load_with_failures() -> None:
    plan = FaultPlan(script=[None, Fault.BAD_REQUEST])
    async with serve(faults=plan) as (_, client):
        report = await client.bulk_append(
            CAMPAIGN, [*leads(4), {"number": "bad"}], batch_size=2, concurrency=1
        )
    check_invariant(report)
    assert not report.ok
    assert (report.accepted, report.failed, report.invalid) == (2, 2, 1)
    assert ids(report.failed_leads()) == ["2", "3"]
    with pytest.raises(APIError) as caught:
        report.raise_for_failures()
    assert caught.value.status == 400
    assert caught.value.report is report
    assert str(report).startswith("NOT ok: 5 leads read, 2 accepted, 2 failed")
    data = msgspec.json.decode(report.to_json())
    assert data["ok"] is False
    assert data["invalid_leads"][0]["position"] == 4
    assert sorted(b["outcome"] for b in data["batches"]) == ["accepted", "failed"]
    assert {b["error"] for b in data["batches"]} == {None, "APIError"}


@pytest.mark.anyio
@pytest.mark.parametrize("right_token", [True, False])
async def test_the_token_never_appears_in_a_report(right_token: bool) -> None:
    token = TOKEN if right_token else "wrong-secret-token-XYZ"
    plan = FaultPlan(script=[Fault.ERROR_500, Fault.ERROR_TRUE, Fault.DROP])
    texts: list[str] = []
    async with serve(token=token, faults=plan) as (_, client):
        if right_token:
            report = await client.bulk_append(CAMPAIGN, leads(8), batch_size=2, concurrency=1)
        else:
            with pytest.raises(AuthenticationError) as caught:
                await client.bulk_append(CAMPAIGN, leads(8), batch_size=2, concurrency=1)
            assert caught.value.report is not None
            report = caught.value.report
            texts += [str(caught.value), repr(caught.value)]
    texts += [report.to_json().decode(), str(report), repr(report)]
    texts += [repr(result) for result in report.batches]
    assert not [text for text in texts if token in text]


@pytest.mark.anyio
async def test_a_report_can_only_be_used_once(server: FakeRyngServer, client: RyngClient) -> None:
    report = BulkReport()
    await client.bulk_append(CAMPAIGN, leads(2), report=report)
    with pytest.raises(ConfigurationError):
        await client.bulk_append(CAMPAIGN, leads(2), report=report)


@pytest.mark.anyio
async def test_an_empty_input_is_an_ok_empty_report(
    server: FakeRyngServer, client: RyngClient
) -> None:
    report = await client.bulk_append(CAMPAIGN, [])
    assert report.ok
    assert (report.total, report.batches, server.received_requests) == (0, [], 0)


@pytest.mark.anyio
async def test_stream_append_raises_a_403_bare_with_the_report() -> None:
    seen: list[BatchResult] = []

    async def consume(results: BatchStream) -> None:
        async with results:
            async for result in results:
                seen.append(result)

    async with serve(token="wrong-token-0000") as (server, client):
        results = client.stream_append(CAMPAIGN, leads(40), batch_size=5, concurrency=2)
        with pytest.raises(AuthenticationError) as raised:
            await consume(results)
    report = raised.value.report
    assert report is results.report
    assert report is not None
    assert report.finished
    assert report.stopped_early
    assert report.total == report.failed + report.skipped + report.unknown
    assert server.received_requests <= 2
    assert {r.outcome for r in seen} <= {Outcome.FAILED, Outcome.SKIPPED}


@pytest.mark.anyio
async def test_closing_the_client_mid_load_skips_the_rest() -> None:
    async with serve(latency=0.02) as (server, client):
        two_batches_done = anyio.Event()

        def on_progress(progress: Progress) -> None:
            if progress.batches == 2:
                two_batches_done.set()

        report = BulkReport()

        async def close_after_two() -> None:
            await two_batches_done.wait()
            await client.aclose()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(close_after_two)
            with pytest.raises(ConfigurationError, match="closed"):
                await client.bulk_append(
                    CAMPAIGN,
                    leads(2000),
                    batch_size=10,
                    concurrency=2,
                    on_progress=on_progress,
                    report=report,
                )
            tasks.cancel_scope.cancel()
    check_invariant(report)
    assert report.stopped_early
    assert report.failed == 0
    assert report.total < 2000
    assert server.received_requests < 20


@pytest.mark.anyio
async def test_the_report_clock_starts_with_the_load() -> None:
    clock = ManualClock(start=100.0)
    report = BulkReport()
    clock.advance(3600)  # made an hour before the load
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, clock=clock) as client,
    ):
        await client.bulk_append(CAMPAIGN, leads(5), report=report)
    assert report.finished
    assert report.elapsed < 600


# -- abandoned and closed result streams -------------------------------------------------


def _load_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("ryng_async bulk load") and not task.done()
    ]


def connections_to(server: FakeRyngServer) -> int:
    """Open client-side TCP connections to ``server`` (ESTABLISHED, from Linux's /proc).

    Read from the kernel, not from the client: a connection the pool lost track of counts.
    """
    table = Path("/proc/self/net/tcp")
    if not table.exists():
        pytest.skip("counting connections needs Linux's /proc/self/net/tcp")
    count = 0
    for line in table.read_text().splitlines()[1:]:
        _, _, remote, state, *_ = line.split()
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == server.port:
            count += 1
    return count


async def connections_after_close(server: FakeRyngServer) -> int:
    """`connections_to` once closed transports have let go of their sockets.

    A transport closes its socket on the loop's next turn after ``close()`` (aiohttp
    before 3.11 returns from a pool's close before that; a connection dropped mid-load
    too): give it those turns, so that only connections still open are counted.
    """
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    return connections_to(server)


@pytest.mark.anyio
async def test_a_bare_async_for_that_breaks_stops_and_settles_the_load() -> None:
    import gc

    ended = anyio.Event()

    def on_end(event: object) -> None:
        if isinstance(event, LoadEnded):
            ended.set()

    async with serve(latency=0.01) as (server, client):
        stream = client.stream_append(
            CAMPAIGN, leads(1000), batch_size=10, concurrency=4, observers=[on_end]
        )
        report = stream.report
        async for _ in stream:
            break
        del stream
        gc.collect()
        with anyio.fail_after(10):
            await ended.wait()
        sent = server.received_requests
        assert _load_tasks() == []
        # No connection left busy: the server answers nothing, the pool keeps at most one
        # idle connection a sender (plus, on a slow machine, the one idle connection it may
        # hold unused as a keep-alive probe), and closing the client closes every one.
        assert server.in_flight == 0
        assert 1 <= await connections_after_close(server) <= 4 + 1
        await client.aclose()
        assert await connections_after_close(server) == 0
    check_invariant(report)
    assert report.stopped_early
    assert report.total < 1000
    assert "abandoned" in (report.stop_reason or "")
    assert server.received_requests == sent  # nothing went out after it settled
    assert report.unknown == 0  # requests in flight ended with real outcomes


@pytest.mark.anyio
async def test_closing_the_client_stops_a_stream_left_running() -> None:
    async with serve(latency=0.01) as (server, client):
        stream = client.stream_append(CAMPAIGN, leads(1000), batch_size=10, concurrency=4)
        first = await anext(stream)
        assert first.outcome is Outcome.ACCEPTED
        await client.aclose()  # the stream is still referenced, never closed by its user
        report = stream.report
        assert report.finished
        assert _load_tasks() == []
        assert server.in_flight == 0
        assert await connections_after_close(server) == 0  # the pool is closed: none left
        sent = server.received_requests
    check_invariant(report)
    assert report.stopped_early
    assert report.unknown == 0
    assert server.received_requests == sent
    await stream.aclose()  # a no-op now


# -- memory: the leads a report holds ------------------------------------------------------


@pytest.mark.anyio
async def test_a_report_holds_at_most_keep_failed_leads_then_only_positions() -> None:
    plan = FaultPlan(seed=3, rates={Fault.BAD_REQUEST: 0.3})
    async with serve(faults=plan) as (_, client):
        report = await client.bulk_append(
            CAMPAIGN, leads(1000), batch_size=10, keep_failed_leads=50
        )
    check_invariant(report)
    assert report.failed > 50
    assert not report.leads_kept
    assert all(result.leads == () for result in report.batches)
    ranges = report.failed_ranges()
    assert sum(count for _, count in ranges) == report.failed
    assert ranges == sorted(ranges)
    with pytest.raises(RyngError, match="failed_ranges"):
        report.failed_leads()


@pytest.mark.anyio
async def test_a_report_under_keep_failed_leads_keeps_them_to_send_again() -> None:
    plan = FaultPlan(seed=3, rates={Fault.BAD_REQUEST: 0.3})
    async with serve(faults=plan) as (_, client):
        report = await client.bulk_append(CAMPAIGN, leads(200), batch_size=10)
    assert report.leads_kept
    again = report.failed_leads()
    assert len(again) == report.failed
    starts = {start for start, _ in report.failed_ranges()}
    # Named apart from the helper `lead`: a comprehension variable of that name beside a
    # call of it fails under pytest's assertion rewriting on Python 3.12 (PEP 709).
    numbers_again = {row["number"] for row in again}
    expected = {lead(i)["number"] for start in starts for i in range(start, start + 10)}
    assert numbers_again == expected


# -- numbers as files hold them; batches that may be in Ryng twice ---------------------


@pytest.mark.anyio
async def test_default_region_normalizes_national_numbers_and_refuses_invalid_ones() -> None:
    rows = [
        {"number": "09876543210", "customField1": "a"},
        {"number": "98765 43210"},
        {"number": "+91-98765-43210"},
        {"number": "12"},
        {"number": "+919876543211"},
    ]
    async with serve() as (server, client):
        report = await client.bulk_append(CAMPAIGN, rows, default_region="IN")
    check_invariant(report)
    assert report.accepted == 4
    (invalid,) = report.invalid_leads
    assert invalid.position == 3
    assert invalid.field == "number"
    assert "libphonenumber" in invalid.reason
    assert [lead["number"] for lead in server.leads] == ["+919876543210"] * 3 + ["+919876543211"]
    assert server.leads[0]["customField1"] == "a"
    assert rows[0]["number"] == "09876543210"  # the caller's rows are left as they were


@pytest.mark.anyio
async def test_a_batch_resent_after_an_ambiguous_attempt_is_marked_maybe_duplicated() -> None:
    plan = FaultPlan(script=[Fault.DROP])  # recorded, then the connection dropped
    retry = RetryPolicy(initial_delay=0.0, max_delay=0.0, retry_ambiguous=True)
    async with serve(faults=plan, retry=retry) as (server, client):
        report = await client.bulk_append(CAMPAIGN, leads(30), batch_size=10, concurrency=1)
    check_invariant(report)
    assert report.accepted == 30
    assert report.maybe_duplicated == 10
    (twice,) = [r for r in report.batches if r.maybe_duplicated]
    assert twice.outcome is Outcome.ACCEPTED
    assert twice.attempts == 2
    assert "may be in Ryng twice" in str(report)
    assert report.to_dict()["maybe_duplicated"] == 10
    assert server.lead_count() == 40  # the dropped batch's leads are there twice


@pytest.mark.anyio
async def test_closing_a_stream_whose_input_is_all_sent_is_not_an_early_stop() -> None:
    async with serve(latency=0.05) as (_, client):
        async with client.stream_append(
            CAMPAIGN, leads(40), batch_size=10, concurrency=4
        ) as results:
            first = await anext(results)
            assert first.outcome is Outcome.ACCEPTED
            # Every batch is in flight or done: closing now leaves nothing undone.
        report = results.report
    check_invariant(report)
    assert report.accepted == 40
    assert not report.stopped_early
    assert report.ok


@pytest.mark.anyio
async def test_a_lead_holding_a_lone_surrogate_is_invalid_and_the_rest_load() -> None:
    rows = leads(25)
    rows[7] = {**rows[7], "customField1": "bad \ud800 text"}
    rows[19] = {**rows[19], "agentsAssigned": ["agent\udfff"]}
    async with serve() as (server, client):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=10)
    check_invariant(report)
    assert report.accepted == 23
    assert [(lead.position, lead.field) for lead in report.invalid_leads] == [
        (7, "customField1"),
        (19, "agentsAssigned"),
    ]
    assert "lone surrogate" in report.invalid_leads[0].reason
    assert server.lead_count() == 23


@pytest.mark.anyio
async def test_a_report_keeps_errors_without_the_frames_of_their_attempts() -> None:
    # The soak found it: each kept traceback held the failed attempt's frames (the batch's
    # body among their locals) for the life of the report, ~20 MB per million leads.
    plan = FaultPlan(seed=3, rates={Fault.BAD_REQUEST: 0.5, Fault.RESET: 0.3})
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
    ):
        report = await client.bulk_append(
            "42", [{"number": f"+9198{i:08d}"} for i in range(200)], batch_size=10
        )
    errors = [result.error for result in report.batches if result.error is not None]
    assert errors
    for error in errors:
        link: BaseException | None = error
        while link is not None:
            assert link.__traceback__ is None, repr(link)
            link = link.__cause__ or link.__context__
