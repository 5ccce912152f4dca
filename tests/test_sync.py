"""ryng_async.sync: the same loads, reports and errors from synchronous code."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    AppendResponse,
    AuthenticationError,
    BatchSettled,
    BulkReport,
    ConfigurationError,
    LoadEvent,
    Outcome,
    RetryPolicy,
    RyngClient,
    RyngError,
    sync,
)
from ryng_async.sync import EventLoopRunningError
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan


class ServerThread:
    """A FakeRyngServer on an event loop of its own thread, for tests of sync code."""

    def __init__(self, **options: Any) -> None:
        self.server = FakeRyngServer(access_token=TOKEN, **options)
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.server.start())
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.close())
        self._loop.close()

    def __enter__(self) -> FakeRyngServer:
        self._thread.start()
        assert self._started.wait(10), "the fake server did not start"
        return self.server

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def threaded_server() -> Iterator[FakeRyngServer]:
    with ServerThread() as server:
        yield server


def leads(count: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"number": f"+9198{i:08d}", "customField1": f"c{i}"} for i in range(start, start + count)
    ]


def outcomes(report: BulkReport) -> list[tuple[Any, ...]]:
    return sorted(
        (b.index, b.start, b.count, b.outcome, b.status, b.attempts) for b in report.batches
    )


def test_bulk_append_returns_the_report_the_async_call_returns() -> None:
    faults = FaultPlan(seed=3, rates={Fault.ERROR_500: 0.3, Fault.BAD_REQUEST: 0.1})
    rows = [*leads(950), {"number": "12"}]
    options: dict[str, Any] = {"batch_size": 100, "concurrency": 1}
    with ServerThread(faults=faults) as server:
        report = sync.bulk_append(
            "42", rows, base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY, **options
        )
        received_sync = server.lead_count()

    async def run_async() -> BulkReport:
        async with (
            FakeRyngServer(access_token=TOKEN, faults=faults) as again,
            RyngClient(base_url=again.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
        ):
            return await client.bulk_append("42", rows, **options)

    expected = asyncio.run(run_async())
    assert report.finished
    assert expected.finished
    assert outcomes(report) == outcomes(expected)
    counts = ("total", "accepted", "failed", "unknown", "skipped", "invalid")
    assert [getattr(report, c) for c in counts] == [getattr(expected, c) for c in counts]
    assert report.invalid_leads == expected.invalid_leads
    assert report.failed
    assert report.accepted == received_sync
    assert str(report).split(" in ")[0] == str(expected).split(" in ")[0]


def test_append_returns_the_answer(threaded_server: FakeRyngServer) -> None:
    answer = sync.append(
        "42", leads(2), base_url=threaded_server.base_url, access_token=TOKEN, name="Spring"
    )
    assert isinstance(answer, AppendResponse)
    assert answer.error is False
    assert threaded_server.lead_count() == 2
    request = threaded_server.requests[0].request
    assert request is not None
    assert request.name == "Spring"


def test_a_refused_token_raises_with_the_partial_report(threaded_server: FakeRyngServer) -> None:
    with pytest.raises(AuthenticationError) as caught:
        sync.bulk_append("42", leads(1000), base_url=threaded_server.base_url, access_token="wrong")
    report = caught.value.report
    assert isinstance(report, BulkReport)
    assert report.finished
    assert report.total == report.skipped + report.failed
    assert threaded_server.lead_count() == 0


def test_bad_settings_raise_as_the_async_client_raises_them() -> None:
    with pytest.raises(ConfigurationError, match="access_token"):
        sync.bulk_append("42", leads(1), base_url="http://127.0.0.1:9", access_token="")
    # A misspelt option is named as the async bulk_append names it.
    with pytest.raises((TypeError, ConfigurationError), match="batch_sise"):
        sync.bulk_append(
            "42",
            leads(1),
            base_url="http://127.0.0.1:9",
            access_token=TOKEN,
            batch_sise=5,  # type: ignore[call-arg]
        )


@pytest.mark.anyio
async def test_inside_a_running_loop_it_refuses_and_says_what_to_do(server: FakeRyngServer) -> None:
    with pytest.raises(EventLoopRunningError) as caught:
        sync.bulk_append("42", leads(3), base_url=server.base_url, access_token=TOKEN)
    message = str(caught.value)
    assert "inside a running event loop" in message
    assert "await client.bulk_append(" in message
    assert isinstance(caught.value, RyngError)
    with pytest.raises(EventLoopRunningError, match=r"await client\.append\("):
        sync.append("42", leads(1), base_url=server.base_url, access_token=TOKEN)
    assert server.received_requests == 0


def test_observers_and_the_live_report_are_the_async_ones(threaded_server: FakeRyngServer) -> None:
    seen: list[int] = []

    def observe(event: LoadEvent) -> None:
        if isinstance(event, BatchSettled):
            seen.append(event.result.count)

    report = BulkReport()
    returned = sync.bulk_append(
        "42",
        iter(leads(250)),
        base_url=threaded_server.base_url,
        access_token=TOKEN,
        batch_size=100,
        observers=[observe],
        report=report,
    )
    assert returned is report
    assert report.ok
    assert sorted(seen) == [50, 100, 100]


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler for the test, even where SIGINT is ignored (nohup, a
    background job): these tests are about what Ctrl-C does when it reaches the process."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can be set only in the main thread")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def interrupt_after_the_first_batch(times: int) -> Any:
    def observe(event: LoadEvent) -> None:
        if isinstance(event, BatchSettled) and event.progress.batches == 1:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)

    return observe


@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_stops_the_load_gently_and_leaves_the_report_final(
    threaded_server: FakeRyngServer,
) -> None:
    report = BulkReport()
    with pytest.raises(KeyboardInterrupt) as raised:
        sync.bulk_append(
            "42",
            iter(leads(5000)),
            base_url=threaded_server.base_url,
            access_token=TOKEN,
            batch_size=100,
            concurrency=4,
            observers=[interrupt_after_the_first_batch(1)],
            report=report,
        )
    assert report.finished
    assert report.stopped_early
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )
    # The requests in flight at the Ctrl-C ended with their answers: none is unknown,
    # and the report's accepted leads are exactly the server's.
    assert report.unknown == 0
    assert report.accepted == threaded_server.lead_count() >= 100
    # Batch by batch: accepted ones reached the server, unknown ones wholly or not at all
    # (cut off in flight), the rest never; nothing arrived twice.
    received = [int(lead["number"][5:]) for lead in threaded_server.leads]
    assert len(received) == len(set(received))
    landed: set[int] = set()
    for result in report.batches:
        span = set(range(result.start, result.start + result.count))
        if result.outcome is Outcome.ACCEPTED:
            assert span <= set(received), result
        elif result.outcome is Outcome.UNKNOWN:
            assert span <= set(received) or not span & set(received), result
        else:
            assert not span & set(received), result
        if span <= set(received):
            landed |= span
    assert set(received) == landed
    assert report.total < 5000
    assert any("stopped gently" in note for note in raised.value.__notes__)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.mark.usefixtures("default_sigint")
def test_a_second_ctrl_c_cancels_the_requests_in_flight() -> None:
    # The first request is answered, the others hang: only a cancel ends them.
    hang = FaultPlan(script=[None, *[Fault.HANG] * 10])
    report = BulkReport()
    with ServerThread(faults=hang) as server, pytest.raises(KeyboardInterrupt):
        sync.bulk_append(
            "42",
            iter(leads(5000)),
            base_url=server.base_url,
            access_token=TOKEN,
            batch_size=100,
            concurrency=4,
            stop_grace=600,  # the first Ctrl-C alone would wait for them
            observers=[interrupt_after_the_first_batch(2)],
            report=report,
        )
    assert report.finished
    assert report.stopped_early
    assert report.accepted == 100
    # Cancelled in flight, they may be in Ryng: every batch sent but the first is unknown,
    # none waited for the 600 s grace, and the ones never sent are skipped. How many others
    # had started when the first answer came depends on the scheduler (2 to 4 seen; at
    # most `concurrency` in flight at once).
    sent = [result for result in report.batches if result.attempts]
    unknown = [result for result in sent if result.outcome is Outcome.UNKNOWN]
    assert [result.outcome for result in sent].count(Outcome.ACCEPTED) == 1
    assert len(unknown) == len(sent) - 1
    assert 1 <= len(unknown) <= 4
    assert report.unknown == 100 * len(unknown)
    assert all(r.outcome is Outcome.SKIPPED for r in report.batches if not r.attempts)
    assert report.total == report.accepted + report.unknown + report.skipped


def test_a_sigint_handler_of_the_caller_is_left_alone(threaded_server: FakeRyngServer) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can be set only in the main thread")
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        report = sync.bulk_append(
            "42",
            iter(leads(300)),
            base_url=threaded_server.base_url,
            access_token=TOKEN,
            batch_size=100,
            observers=[interrupt_after_the_first_batch(1)],
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert caught == [signal.SIGINT]
    assert report.ok  # the caller's handler decided: the load went on


@pytest.mark.slow
def test_a_million_row_frame_loads_from_sync_code_with_an_exact_report() -> None:
    pl = pytest.importorskip("polars")
    from ryng_async.dataframes import leads_from_frame

    count = 1_000_000
    numbers = [f"+9198{i:08d}" for i in range(count)]
    numbers[777_777] = "bad"
    frame = pl.DataFrame({"number": numbers, "Name": [f"Customer {i}" for i in range(count)]})
    del numbers
    leads_iter, names = leads_from_frame(frame)
    faults = FaultPlan(seed=5, rates={Fault.ERROR_500: 0.02})
    with ServerThread(record=False, validate_leads=False, faults=faults) as server:
        report = sync.bulk_append(
            "42",
            leads_iter,
            base_url=server.base_url,
            access_token=TOKEN,
            retry=RetryPolicy(initial_delay=0.0, max_delay=0.0, budget=None),
            batch_size=1000,
            concurrency=8,
            custom_field_names=names,
        )
        received = server.accepted_leads
    assert report.finished
    assert not report.stopped_early
    assert report.total == count
    assert report.invalid == 1
    assert report.invalid_leads[0].position == 777_777
    assert report.accepted == received == count - 1 - report.failed - report.unknown
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


def _airflow_example() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "examples" / "airflow_task.py"
    spec = importlib.util.spec_from_file_location("airflow_task_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_airflow_task_loads_a_frame_and_a_parquet_file_and_fails_on_a_refusal(
    threaded_server: FakeRyngServer, tmp_path: Any
) -> None:
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    task = _airflow_example()
    connection = {"base_url": threaded_server.base_url, "access_token": TOKEN}
    frame = pd.DataFrame(
        {"Number": [f"+9198{i:08d}" for i in range(1200)], "Plan": ["gold"] * 1200}
    )
    xcom = task.load_campaign("42", frame, **connection)
    assert xcom == {
        "campaign_id": "42",
        "total": 1200,
        "accepted": 1200,
        "resumed": 0,
        "seconds": xcom["seconds"],
    }
    path = tmp_path / "leads.parquet"
    pq.write_table(
        pa.Table.from_pandas(frame.iloc[:700], preserve_index=False), path, row_group_size=256
    )
    assert task.load_campaign("43", str(path), batch_size=100, **connection)["accepted"] == 700
    assert len(threaded_server.leads_for("43")) == 700
    assert threaded_server.leads_for("43")[0] == {"number": "+919800000000", "customField1": "gold"}
    with pytest.raises(AuthenticationError):
        task.load_campaign("44", frame, base_url=threaded_server.base_url, access_token="wrong")
