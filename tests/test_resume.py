"""Resumable loads: bulk_append(checkpoint=...) against a real server, killed and resumed."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    BulkReport,
    ConfigurationError,
    Outcome,
    RetryPolicy,
    RyngClient,
    RyngError,
)
from ryng_async.checkpoint import BatchState, CheckpointError, SQLiteJournal
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

pytestmark = pytest.mark.anyio

CAMPAIGN = "42"
ROOT = str(Path(__file__).resolve().parent.parent)


def leads(count: int, *, tag: str = "") -> list[dict[str, Any]]:
    return [{"number": f"+9198{i:08d}", "customField1": f"lead {i}{tag}"} for i in range(count)]


def check_invariant(report: BulkReport) -> None:
    assert report.finished
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


def received_numbers(server: FakeRyngServer) -> Counter[str]:
    return Counter(lead["number"] for lead in server.leads)


def client_for(server: FakeRyngServer, **options: Any) -> RyngClient:
    options.setdefault("retry", FAST_RETRY)
    return RyngClient(base_url=server.base_url, access_token=TOKEN, **options)


# -- resuming in process -----------------------------------------------------------------


async def test_a_resumed_load_sends_only_what_was_not_accepted(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    plan = FaultPlan(seed=4, rates={Fault.BAD_REQUEST: 0.3})  # definite failures
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        async with client_for(server) as client:
            first = await client.bulk_append(
                CAMPAIGN, leads(200), batch_size=10, checkpoint=checkpoint
            )
        check_invariant(first)
        assert first.failed > 0
        assert first.accepted > 0
        assert not first.leads_kept
        with pytest.raises(RyngError, match="again with its checkpoint"):
            first.failed_leads()
        server.faults = FaultPlan()  # the server is healthy again
        accepted_before = server.lead_count()
        async with client_for(server) as client:
            second = await client.bulk_append(
                CAMPAIGN, leads(200), batch_size=10, checkpoint=checkpoint
            )
    check_invariant(second)
    assert second.ok
    assert second.accepted == second.total == 200
    assert second.resumed == first.accepted
    assert server.lead_count() - accepted_before == first.failed
    assert set(received_numbers(server).values()) == {1}  # every lead exactly once
    resumed = [r for r in second.batches if r.resumed]
    assert all(r.outcome is Outcome.ACCEPTED and r.attempts == 0 for r in resumed)
    assert "resumed from the checkpoint" in str(second)


async def test_a_fully_journalled_load_sends_nothing_and_reports_the_same(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with client_for(server) as client:
            first = await client.bulk_append(
                CAMPAIGN, leads(55), batch_size=10, checkpoint=checkpoint
            )
            sent = server.received_requests
            again = await client.bulk_append(
                CAMPAIGN, leads(55), batch_size=10, checkpoint=checkpoint
            )
        assert server.received_requests == sent
    assert first.ok
    check_invariant(again)
    assert again.accepted == again.resumed == 55
    assert sorted((r.index, r.outcome) for r in again.batches) == sorted(
        (r.index, r.outcome) for r in first.batches
    )


async def test_an_unknown_batch_is_not_resent_unless_asked(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    # The second request is dropped after the server recorded it: unknown.
    plan = FaultPlan(script=[None, Fault.DROP])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(server) as client,
    ):
        first = await client.bulk_append(
            CAMPAIGN, leads(30), batch_size=10, concurrency=1, checkpoint=checkpoint
        )
        assert first.unknown == 10
        second = await client.bulk_append(
            CAMPAIGN, leads(30), batch_size=10, concurrency=1, checkpoint=checkpoint
        )
        assert second.unknown == 10
        assert second.resumed == 30
        (unknown,) = [r for r in second.batches if r.outcome is Outcome.UNKNOWN]
        assert unknown.resumed
        assert "check these leads in Ryng" in unknown.message
        assert max(received_numbers(server).values()) == 1
        third = await client.bulk_append(
            CAMPAIGN,
            leads(30),
            batch_size=10,
            concurrency=1,
            checkpoint=checkpoint,
            resend_unknown=True,
        )
    assert third.accepted == 30
    assert third.unknown == 0
    assert third.maybe_duplicated == 10
    assert "may be in Ryng twice" in str(third)
    # Asked for: the dropped batch's leads were sent again, so they are in Ryng twice.
    assert sorted(received_numbers(server).values()) == [1] * 20 + [2] * 10


async def test_a_cancelled_load_resumes_from_its_journal(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    async with (
        FakeRyngServer(access_token=TOKEN, latency=0.02) as server,
        client_for(server) as client,
    ):
        report = BulkReport()
        with anyio.move_on_after(0.3):
            await client.bulk_append(
                CAMPAIGN,
                leads(2000),
                batch_size=10,
                concurrency=2,
                checkpoint=checkpoint,
                report=report,
            )
        check_invariant(report)
        assert report.stopped_early
        resumed = await client.bulk_append(
            CAMPAIGN, leads(2000), batch_size=10, concurrency=8, checkpoint=checkpoint
        )
    check_invariant(resumed)
    assert resumed.total == 2000
    unknown = resumed.unknown
    counts = received_numbers(server)
    # Cut off by the cancel: in flight, so unknown, and held at most once.
    assert max(counts.values()) == 1
    assert len(counts) >= 2000 - unknown
    assert resumed.accepted + unknown == 2000


# -- refusals ---------------------------------------------------------------------------


async def test_a_changed_input_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with client_for(server) as client:
            await client.bulk_append(CAMPAIGN, leads(20), batch_size=10, checkpoint=checkpoint)
            sent = server.received_requests
            with pytest.raises(CheckpointError, match="input changed") as raised:
                await client.bulk_append(
                    CAMPAIGN, leads(20, tag="!"), batch_size=10, checkpoint=checkpoint
                )
        assert server.received_requests == sent
    report = raised.value.report
    assert isinstance(report, BulkReport)
    check_invariant(report)
    assert report.accepted == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"campaign": "43"}, "campaign id"),
        ({"batch_size": 5}, "batch_size"),
        ({"max_batch_bytes": 100_000}, "max_batch_bytes"),
        ({"name": "Other name"}, "campaign options differ"),
    ],
)
async def test_another_load_s_journal_is_refused(
    tmp_path: Path, change: dict[str, Any], says: str
) -> None:
    checkpoint = tmp_path / "load.db"
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with client_for(server) as client:
            await client.bulk_append(CAMPAIGN, leads(20), batch_size=10, checkpoint=checkpoint)
            sent = server.received_requests
            campaign = change.pop("campaign", CAMPAIGN)
            options: dict[str, Any] = {"batch_size": 10, **change}
            with pytest.raises(CheckpointError, match=says):
                await client.bulk_append(campaign, leads(20), checkpoint=checkpoint, **options)
        assert server.received_requests == sent


async def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "crm.db"
    connection = sqlite3.connect(other)
    with connection:  # commits; closing is apart (Python 3.13 warns of an unclosed one)
        connection.execute("CREATE TABLE customers (id INTEGER)")
    connection.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    before = other.read_bytes(), text.read_bytes()
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        for path in (other, text):
            with pytest.raises(CheckpointError, match="not a ryng_async checkpoint"):
                await client.bulk_append(CAMPAIGN, leads(5), checkpoint=path)
        assert server.received_requests == 0
    assert (other.read_bytes(), text.read_bytes()) == before


async def test_a_bad_checkpoint_argument_is_refused(tmp_path: Path) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        with pytest.raises(ConfigurationError, match="checkpoint must be"):
            await client.bulk_append(CAMPAIGN, leads(5), checkpoint=42)  # type: ignore[typeddict-item]
        journal = SQLiteJournal(tmp_path / "j.db")
        report = await client.bulk_append(CAMPAIGN, leads(5), checkpoint=journal)
        assert report.ok
        assert journal.batches[0].state is BatchState.ACCEPTED


# -- killed for real ---------------------------------------------------------------------

LOADER = textwrap.dedent(
    """
    import asyncio, signal, sys
    from ryng_async import AttemptStarting, BatchSettled, RetryPolicy, RyngClient

    # Ctrl-C's own handler, even when the test runs with SIGINT ignored (nohup).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def tell(event):
        if isinstance(event, AttemptStarting):
            print("starting", event.batch_index, flush=True)
        elif isinstance(event, BatchSettled):
            print("settled", event.result.index, flush=True)

    async def main():
        base_url, token, checkpoint, count = sys.argv[1:5]
        leads = ({"number": f"+9198{i:08d}"} for i in range(int(count)))
        async with RyngClient(base_url=base_url, access_token=token,
                              retry=RetryPolicy(initial_delay=0, max_delay=0)) as client:
            await client.bulk_append("42", leads, batch_size=10, concurrency=4,
                                     checkpoint=checkpoint, observers=[tell])
        print("done", flush=True)

    asyncio.run(main())
    """
)


async def _run_until(process: Process, kind: str, nth: int) -> bool:
    """Read the loader's lines until the ``nth`` of ``kind``; False if it ended first."""
    assert process.stdout is not None
    seen = 0
    buffered = ""
    async for chunk in TextReceiveStream(process.stdout):
        buffered += chunk
        *lines, buffered = buffered.split("\n")
        for line in lines:
            if line.startswith(kind):
                seen += 1
                if seen >= nth:
                    return True
    return False


class KillOnArrival:
    """An ``on_request`` hook that SIGKILLs the loader at a point the journal has recorded.

    ``"arrived"``: as its ``nth`` request reaches the server (its batch was journalled in
    flight before the request was written). ``"accepted"``: as the first request arrives
    while the journal holds ``nth`` batches accepted (read as `checkpoint show` reads it).
    """

    def __init__(self, kind: str, nth: int, journal: Path) -> None:
        self.kind = kind
        self.nth = nth
        self.journal = journal
        self.pid: int | None = None
        self.arrived = 0
        self.killed_at: int | None = None

    def __call__(self, request: ReceivedRequest) -> None:
        self.arrived += 1
        if self.killed_at is not None or self.pid is None:
            return
        if self.kind == "arrived":
            reached = self.arrived >= self.nth
        else:
            accepted = SQLiteJournal.read_batches(self.journal, states=[BatchState.ACCEPTED])
            reached = len(accepted) >= self.nth
        if reached:
            os.kill(self.pid, signal.SIGKILL)
            self.killed_at = self.arrived


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
async def test_a_load_killed_with_sigkill_resumes_with_nothing_lost_or_sent_twice(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    count = 600
    checkpoint = tmp_path / "load.db"
    kill = KillOnArrival(("arrived", "accepted")[seed % 2], rng.randint(1, 45), checkpoint)
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    async with FakeRyngServer(access_token=TOKEN, latency=0.01, on_request=kill) as server:
        command = [sys.executable, str(loader), server.base_url, TOKEN, str(checkpoint), str(count)]
        env = {**os.environ, "PYTHONPATH": ROOT}
        async with await anyio.open_process(command, env=env) as process:
            kill.pid = process.pid
            with anyio.fail_after(60):
                returncode = await process.wait()
        # Killed at the point chosen, not ended (crashed or done) before it: a loader that
        # ended first would make the "resume" below a fresh load.
        assert kill.killed_at is not None, f"the loader ended first (exit {returncode})"
        assert returncode == -signal.SIGKILL
        sent_before = server.received_requests
        async with client_for(server, retry=RetryPolicy(max_attempts=1)) as client:
            report = await client.bulk_append(
                CAMPAIGN,
                ({"number": f"+9198{i:08d}"} for i in range(count)),
                batch_size=10,
                concurrency=4,
                checkpoint=checkpoint,
            )
    check_invariant(report)
    assert report.total == count
    assert report.resumed > 0 or kill.kind == "arrived"
    assert sent_before < count // 10  # the kill cut the first run short
    counts = received_numbers(server)
    assert max(counts.values()) == 1  # nothing sent twice
    unknown_batches = [r for r in report.batches if r.outcome is Outcome.UNKNOWN]
    # Only batches in flight at the kill may be unknown, and they come from the journal.
    assert all(r.resumed for r in unknown_batches)
    assert len(unknown_batches) <= 4  # at most `concurrency` were in flight
    unknown_numbers = {
        f"+9198{i:08d}" for r in unknown_batches for i in range(r.start, r.start + r.count)
    }
    every = {f"+9198{i:08d}" for i in range(count)}
    assert every - unknown_numbers <= set(counts)  # nothing lost
    assert report.accepted == count - len(unknown_numbers)


async def test_each_request_reaches_the_server_only_once_journalled_in_flight(
    tmp_path: Path,
) -> None:
    # The README's "any instant": a crash at any point leaves every request that may have
    # reached Ryng journalled. Read the journal (as `checkpoint show` does) as each request
    # arrives: its batch must be there, in flight, with this attempt counted.
    path = tmp_path / "load.db"
    arrivals: Counter[int] = Counter()
    problems: list[str] = []

    def check_journal(request: ReceivedRequest) -> None:
        numbers = [
            lead["number"] for lead in msgspec.json.decode(request.body)["customerData"]["jsonData"]
        ]
        start = int(numbers[0][5:])
        arrivals[start] += 1
        held = {b.start: b for b in SQLiteJournal.read_batches(path)}
        batch = held.get(start)
        if batch is None:
            problems.append(f"request {request.index}: batch at {start} not in the journal")
        elif batch.state is not BatchState.IN_FLIGHT or batch.count != len(numbers):
            problems.append(f"request {request.index}: batch at {start} is {batch.state}")
        elif batch.attempts < arrivals[start]:
            problems.append(
                f"request {request.index}: attempt {arrivals[start]} of the batch at {start} "
                f"arrived before it was journalled (journal: {batch.attempts})"
            )

    faults = FaultPlan(seed=24, rates={Fault.ERROR_500: 0.3})  # retries: attempts 2, 3...
    async with (
        FakeRyngServer(access_token=TOKEN, faults=faults, on_request=check_journal) as server,
        client_for(server) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN, leads(400), batch_size=10, concurrency=4, checkpoint=path
        )
    check_invariant(report)
    assert server.received_requests > 40  # some batches were tried more than once
    assert sum(arrivals.values()) == server.received_requests
    assert problems == []


async def test_a_load_interrupted_with_sigint_resumes(tmp_path: Path) -> None:
    checkpoint = tmp_path / "load.db"
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    async with FakeRyngServer(access_token=TOKEN, latency=0.01) as server:
        command = [sys.executable, str(loader), server.base_url, TOKEN, str(checkpoint), "600"]
        env = {**os.environ, "PYTHONPATH": ROOT}
        async with await anyio.open_process(command, env=env) as process:
            with anyio.fail_after(60):
                assert await _run_until(process, "settled", 10)
            process.send_signal(signal.SIGINT)
            await process.wait()
        summary = SQLiteJournal.inspect(checkpoint)
        assert summary.campaign_id == CAMPAIGN
        async with client_for(server) as client:
            report = await client.bulk_append(
                CAMPAIGN,
                ({"number": f"+9198{i:08d}"} for i in range(600)),
                batch_size=10,
                concurrency=4,
                checkpoint=checkpoint,
            )
    check_invariant(report)
    assert report.resumed >= 100
    assert max(received_numbers(server).values()) == 1
    assert report.accepted + report.unknown == 600
