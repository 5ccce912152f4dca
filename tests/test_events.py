"""Tests for ryng_async._events: load events, observers, and the Limiter protocol in use."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    APIError,
    AttemptEnded,
    AttemptStarting,
    AuthenticationError,
    BatchPacked,
    BatchSettled,
    BulkReport,
    ConfigurationError,
    LoadEnded,
    LoadEvent,
    Outcome,
    RetryDetails,
    RetryPolicy,
    RyngClient,
    ServerError,
    _bulk,
    _events,
)
from ryng_async.checkpoint import CheckpointError
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ManualClock, ReceivedRequest

pytestmark = pytest.mark.anyio

CAMPAIGN = "42"


def leads(count: int) -> list[dict[str, Any]]:
    return [{"number": f"+9198{i:08d}"} for i in range(count)]


def check_invariant(report: BulkReport) -> None:
    assert report.finished
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


class Recorder:
    def __init__(self) -> None:
        self.events: list[LoadEvent] = []

    def __call__(self, event: LoadEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [event for event in self.events if isinstance(event, kind)]


class ObserverFailureError(Exception):
    pass


# -- what observers see ---------------------------------------------------------------


async def test_a_load_tells_each_batch_s_story_in_order() -> None:
    recorder = Recorder()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN, leads(25), batch_size=10, concurrency=1, observers=[recorder]
        )
    assert report.ok
    kinds = [type(event).__name__ for event in recorder.events]
    per_batch = ["BatchPacked", "AttemptStarting", "AttemptEnded", "BatchSettled"]
    # With one sender, the reader packs the next batch while the first is in flight,
    # so events of different batches interleave; each batch's own story is in order.
    for index in range(3):
        story = [
            type(event).__name__
            for event in recorder.events
            if getattr(event, "index", None) == index
            or getattr(event, "batch_index", None) == index
            or (isinstance(event, BatchSettled) and event.result.index == index)
        ]
        assert story == per_batch
    assert kinds[-1] == "LoadEnded"
    (ended,) = recorder.of(LoadEnded)
    assert ended.report is report
    packed = recorder.of(BatchPacked)
    assert [(p.index, p.start, p.count) for p in packed] == [(0, 0, 10), (1, 10, 10), (2, 20, 5)]
    assert all(p.size > 0 and p.campaign_id == CAMPAIGN for p in packed)
    settled = recorder.of(BatchSettled)
    assert [s.progress.batches for s in settled] == [1, 2, 3]
    ended_attempts = recorder.of(AttemptEnded)
    assert all(e.status == 200 and e.error is None and e.maybe_processed for e in ended_attempts)


async def test_batch_packed_names_the_input_positions_of_a_batch_with_gaps() -> None:
    # Invalid leads leave gaps in a batch's positions: start and count alone cannot say
    # which leads it holds; ranges does, as the batch's result will.
    recorder = Recorder()
    rows: list[Any] = leads(8)
    rows[2] = {"number": "not a number"}
    rows[3] = {"number": "0123"}
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=4, observers=[recorder])
    packed = recorder.of(BatchPacked)
    assert [p.ranges for p in packed] == [((0, 2), (4, 2)), ((6, 2),)]
    assert [p.ranges for p in packed] == [r.ranges for r in report.batches]


async def test_events_no_observer_takes_are_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default logging observer takes retries and ends only: a load with no other
    # observer builds no batch events (nor the progress they carry); on_progress does.
    progress_made: list[int] = []
    real_progress = BulkReport.progress

    def counted(report: BulkReport, *args: Any) -> Any:
        progress_made.append(report.batches)
        return real_progress(report, *args)

    monkeypatch.setattr(BulkReport, "progress", counted)
    seen: list[int] = []
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, leads(25), batch_size=10)
        assert report.ok
        assert progress_made == []
        report = await client.bulk_append(
            CAMPAIGN, leads(25), batch_size=10, on_progress=lambda p: seen.append(p.batches)
        )
    assert report.ok
    assert sorted(seen) == [1, 2, 3]
    assert len(progress_made) == 3


def test_observers_say_which_events_they_take() -> None:
    logging_only = _events.Observers([_events.LoggingObserver()])
    assert logging_only.hears(RetryDetails)
    assert logging_only.hears(LoadEnded)
    assert not any(
        logging_only.hears(kind)
        for kind in (BatchPacked, AttemptStarting, AttemptEnded, BatchSettled)
    )
    progress = logging_only + _events.Observers([_events.on_progress_observer(print)])
    assert progress.hears(BatchSettled)
    assert not progress.hears(AttemptStarting)
    retries = _events.Observers([_events.on_retry_observer(print)])
    assert retries.hears(RetryDetails)
    assert not retries.hears(LoadEnded)
    anyone = progress + _events.Observers([Recorder()])
    assert all(
        anyone.hears(kind)
        for kind in (
            BatchPacked,
            AttemptStarting,
            AttemptEnded,
            RetryDetails,
            BatchSettled,
            LoadEnded,
        )
    )


async def test_retries_are_events_and_the_failed_attempt_says_what_it_was() -> None:
    recorder = Recorder()
    plan = FaultPlan(script=[Fault.ERROR_500])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
    ):
        await client.bulk_append(CAMPAIGN, leads(5), observers=[recorder])
    first, second = recorder.of(AttemptEnded)
    assert first.status == 500
    assert isinstance(first.error, ServerError)
    assert not first.maybe_processed
    assert second.status == 200
    (retry,) = recorder.of(RetryDetails)
    assert retry.attempt == 1
    assert retry.batch_index == 0


async def test_client_observers_see_single_appends() -> None:
    recorder = Recorder()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, observers=[recorder]) as client,
    ):
        await client.append(CAMPAIGN, leads(1))
    starting, ended = recorder.events
    assert isinstance(starting, AttemptStarting)
    assert starting.batch_index is None
    assert starting.attempt == 1
    assert isinstance(ended, AttemptEnded)
    assert ended.status == 200


async def test_an_awaited_observer_holds_the_request_until_it_returns() -> None:
    # How a journal makes "attempt starting" wait for its durable write.
    release = anyio.Event()
    held = anyio.Event()
    received_while_held: list[int] = []

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):

        async def journal(event: LoadEvent) -> None:
            if isinstance(event, AttemptStarting):
                held.set()
                await release.wait()
                received_while_held.append(server.received_requests)

        async def release_later() -> None:
            await held.wait()
            received_while_held.append(server.received_requests)
            release.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(release_later)
            report = await client.bulk_append(
                CAMPAIGN, leads(3), concurrency=1, observers=[journal]
            )
    assert report.ok
    assert received_while_held == [0, 0]  # nothing was written while the observer held it
    assert server.received_requests == 1


async def test_several_observers_are_called_in_order() -> None:
    order: list[str] = []

    def first(event: LoadEvent) -> None:
        if isinstance(event, LoadEnded):
            order.append("first")

    def second(event: LoadEvent) -> None:
        if isinstance(event, LoadEnded):
            order.append("second")

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        await client.bulk_append(CAMPAIGN, leads(2), observers=[first, second])
    assert order == ["first", "second"]


async def test_observers_must_be_callables() -> None:
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(ConfigurationError, match="observers"):
            await client.bulk_append(CAMPAIGN, leads(2), observers=[42])  # type: ignore[list-item]
        with pytest.raises(ConfigurationError, match="observers"):
            await client.bulk_append(CAMPAIGN, leads(2), observers=print)  # type: ignore[arg-type]
        assert server.received_requests == 0


# -- observers that raise ---------------------------------------------------------------


async def test_an_observer_raising_before_a_request_stops_the_load_unsent() -> None:
    def refuse(event: LoadEvent) -> None:
        if isinstance(event, AttemptStarting):
            raise ObserverFailureError("journal disk full")

    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(ObserverFailureError, match="journal disk full") as raised:
            await client.bulk_append(
                CAMPAIGN, leads(30), batch_size=10, observers=[refuse], report=report
            )
        assert server.received_requests == 0
    check_invariant(report)
    assert report.accepted == 0
    assert report.skipped + report.invalid == report.total
    assert report.stopped_early
    assert "ObserverFailureError" in (report.stop_reason or "")
    assert raised.value.__notes__  # the partial report's summary rides along
    assert all(r.outcome is Outcome.SKIPPED and r.error is None for r in report.batches)


async def test_an_observer_raising_after_success_keeps_the_batch_accepted() -> None:
    def fail_on_settle(event: LoadEvent) -> None:
        if isinstance(event, AttemptEnded) and event.status == 200:
            raise ObserverFailureError("metrics down")

    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(ObserverFailureError):
            await client.bulk_append(
                CAMPAIGN,
                leads(30),
                batch_size=10,
                concurrency=1,
                observers=[fail_on_settle],
                report=report,
            )
    check_invariant(report)
    assert report.accepted == server.lead_count() == 10  # the first batch was appended
    (accepted,) = [r for r in report.batches if r.outcome is Outcome.ACCEPTED]
    assert accepted.error is None


async def test_a_raising_retry_observer_keeps_the_batch_s_own_error() -> None:
    def refuse_retries(event: LoadEvent) -> None:
        if isinstance(event, RetryDetails):
            raise ObserverFailureError("no retries today")

    report = BulkReport()
    plan = FaultPlan(script=[Fault.ERROR_500])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
    ):
        with pytest.raises(ObserverFailureError):
            await client.bulk_append(CAMPAIGN, leads(5), observers=[refuse_retries], report=report)
    (failed,) = report.batches
    assert failed.outcome is Outcome.FAILED
    assert isinstance(failed.error, APIError)
    assert failed.error.status == 500


async def test_a_raising_client_observer_in_append_is_raised_itself() -> None:
    def refuse_retries(event: LoadEvent) -> None:
        if isinstance(event, RetryDetails):
            raise ObserverFailureError("no retries today")

    plan = FaultPlan(script=[Fault.ERROR_500])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(
            base_url=server.base_url,
            access_token=TOKEN,
            retry=FAST_RETRY,
            observers=[refuse_retries],
        ) as client,
    ):
        with pytest.raises(ObserverFailureError) as raised:
            await client.append(CAMPAIGN, leads(1))
    assert isinstance(raised.value.__cause__, ServerError)  # the attempt's own error


# -- the logging observer ---------------------------------------------------------------


async def test_retries_are_logged_at_info_without_lead_contents(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = FaultPlan(script=[Fault.ERROR_500])
    caplog.set_level(logging.INFO, logger="ryng_async")
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
    ):
        await client.bulk_append(CAMPAIGN, leads(3))
    text = caplog.text
    assert "batch 0: attempt 1 failed" in text
    assert "ended: ok" in text
    assert "+9198" not in text
    assert TOKEN not in text


# -- the clock ---------------------------------------------------------------------------


async def test_retry_waits_run_on_the_client_s_clock() -> None:
    clock = ManualClock()
    plan = FaultPlan(script=[Fault.ERROR_500, Fault.ERROR_500])
    retry = RetryPolicy(initial_delay=60.0, max_delay=60.0)
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=retry, clock=clock, random_seed=3
        ) as client,
    ):
        # Two backoffs of up to a minute each; on the manual clock they cost nothing.
        with anyio.fail_after(30):
            await client.append(CAMPAIGN, leads(1))
    assert len(clock.sleeps) == 2
    assert all(0 <= s <= 60 for s in clock.sleeps)
    assert clock.now() == pytest.approx(sum(clock.sleeps))


async def test_a_retry_after_pause_runs_on_the_clock_too() -> None:
    clock = ManualClock()
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after="45")
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, clock=clock) as client,
    ):
        with anyio.fail_after(30):
            await client.append(CAMPAIGN, leads(1))
    assert clock.now() >= 45


# -- the end of a load: the journal always closes, its error never hides the load's ------


def break_journal(path: Path) -> None:
    """Drop the journal's tables from outside: its next commit fails (a real SQLite error)."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batch")
    conn.execute("DROP TABLE log")
    conn.commit()
    conn.close()


def breaking_on_arrival(path: Path) -> Any:
    """An ``on_request`` hook: the batch is journalled in flight; its outcome cannot be."""

    def hook(request: ReceivedRequest) -> None:
        break_journal(path)

    return hook


CLOSE_NOTE = "the checkpoint journal did not close cleanly"


async def test_a_slow_load_ended_observer_does_not_keep_the_journal_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The observers' time limit (30 s) cut short to keep the test fast; it is what the
    # close must not depend on.
    monkeypatch.setattr(_bulk, "_TELL_END_TIMEOUT", 0.2)

    def slow(event: LoadEvent) -> Any:
        if isinstance(event, LoadEnded):
            return anyio.sleep_forever()  # past the observers' time limit
        return None

    path = tmp_path / "load.db"
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with anyio.fail_after(10):
            first = await client.bulk_append(
                CAMPAIGN, leads(30), batch_size=10, checkpoint=path, observers=[slow]
            )
        assert first.ok
        # Same process, same checkpoint: the first load released it.
        again = await client.bulk_append(CAMPAIGN, leads(30), batch_size=10, checkpoint=path)
        assert server.received_requests == 3
    assert again.ok
    assert again.resumed == 30


async def test_a_close_error_alone_is_raised_with_the_report(tmp_path: Path) -> None:
    path = tmp_path / "load.db"
    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN, on_request=breaking_on_arrival(path)) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(CheckpointError, match="could not write") as raised:
            await client.bulk_append(CAMPAIGN, leads(5), checkpoint=path, report=report)
    assert raised.value.report is report
    assert report.accepted == 5


async def test_a_close_error_does_not_replace_a_403(tmp_path: Path) -> None:
    path = tmp_path / "load.db"

    def break_when_settled(event: LoadEvent) -> None:
        if isinstance(event, BatchSettled):  # before the journal's own observer
            break_journal(path)

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token="not-the-token") as client,
    ):
        with pytest.raises(AuthenticationError) as raised:
            await client.bulk_append(
                CAMPAIGN, leads(5), checkpoint=path, observers=[break_when_settled]
            )
    report = raised.value.report
    assert isinstance(report, BulkReport)
    check_invariant(report)
    assert report.failed == 5
    assert any(CLOSE_NOTE in note for note in raised.value.__notes__)


async def test_a_close_error_does_not_replace_an_observer_s_error(tmp_path: Path) -> None:
    path = tmp_path / "load.db"

    def fail_at_the_end(event: LoadEvent) -> None:
        if isinstance(event, LoadEnded):
            raise ObserverFailureError("the dashboard is down")

    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN, on_request=breaking_on_arrival(path)) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(ObserverFailureError, match="dashboard") as raised:
            await client.bulk_append(
                CAMPAIGN, leads(5), checkpoint=path, observers=[fail_at_the_end], report=report
            )
    assert any(CLOSE_NOTE in note for note in raised.value.__notes__)
    assert report.accepted == 5


async def test_a_close_error_does_not_replace_a_timeout_s_cancel(tmp_path: Path) -> None:
    path = tmp_path / "load.db"
    hang = FaultPlan(rates={Fault.HANG: 1.0})
    report = BulkReport()
    timeouts: list[asyncio.Timeout] = []

    def break_then_time_out(request: ReceivedRequest) -> None:
        break_journal(path)
        timeouts[0].reschedule(asyncio.get_running_loop().time())  # expire now: in flight

    async with (
        FakeRyngServer(access_token=TOKEN, faults=hang, on_request=break_then_time_out) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):

        async def load_with_a_timeout() -> None:
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                await client.bulk_append(CAMPAIGN, leads(5), checkpoint=path, report=report)

        with pytest.raises(TimeoutError) as raised:
            await load_with_a_timeout()
    check_invariant(report)
    assert report.unknown == 5
    cancelled = raised.value.__context__
    assert isinstance(cancelled, asyncio.CancelledError)
    assert any(CLOSE_NOTE in note for note in cancelled.__notes__)
