"""A batch refused as too large (413) and sent in parts: what its parts prove, no more.

The parts accepted count as accepted (``accepted_ranges``) and nothing sends them again:
not `failed_leads`, not `failed_ranges`, not a resume from the checkpoint. The server's
record is the oracle: after re-driving what the report says to send again, every lead is
upstream exactly once (none where a part may have been appended: those are ``unknown``).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ryng_async import (
    AttemptEnded,
    AttemptStarting,
    AuthenticationError,
    BatchPacked,
    BulkReport,
    Outcome,
    RetryPolicy,
    RyngClient,
)
from ryng_async.checkpoint import SQLiteJournal
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

pytestmark = pytest.mark.anyio

CAMPAIGN = "42"
ROOT = str(Path(__file__).resolve().parent.parent)


def lead(i: int, *, size: int = 40) -> dict[str, Any]:
    """A lead whose ``customField1`` is its id, padded to about ``size`` bytes of JSON."""
    return {"number": f"+1555{i:07d}", "customField1": str(i), "customField2": "x" * size}


def ids(rows: Any) -> list[str]:
    return [row["customField1"] for row in rows]


def positions(runs: Any) -> list[int]:
    return [p for start, count in runs for p in range(start, start + count)]


def client_of(server: FakeRyngServer, **options: Any) -> RyngClient:
    options.setdefault("retry", FAST_RETRY)
    return RyngClient(base_url=server.base_url, access_token=TOKEN, random_seed=0, **options)


def accepted_positions(report: BulkReport) -> list[int]:
    """Every position the report calls accepted: whole batches and accepted parts."""
    out: list[int] = []
    for result in report.batches:
        out += positions(result.ranges if result.outcome is Outcome.ACCEPTED else ())
        out += positions(result.accepted_ranges)
    return sorted(out)


def check_counts(report: BulkReport) -> None:
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    ), str(report)
    assert report.accepted == len(accepted_positions(report))
    by_outcome = dict.fromkeys(Outcome, 0)
    for result in report.batches:
        by_outcome[Outcome.ACCEPTED] += result.accepted_count
        if result.outcome is not Outcome.ACCEPTED:
            # Parts never sent (a stop in the middle of a split) count as skipped.
            skipped = positions(result.skipped_ranges)
            assert set(skipped) <= set(positions(result.open_ranges))
            assert not skipped or result.outcome in {Outcome.FAILED, Outcome.UNKNOWN}
            by_outcome[Outcome.SKIPPED] += len(skipped)
            by_outcome[result.outcome] += len(positions(result.open_ranges)) - len(skipped)
            assert set(positions(result.accepted_ranges)) <= set(positions(result.ranges))
            assert not set(positions(result.accepted_ranges)) & set(positions(result.open_ranges))
    assert by_outcome == {
        Outcome.ACCEPTED: report.accepted,
        Outcome.FAILED: report.failed,
        Outcome.UNKNOWN: report.unknown,
        Outcome.SKIPPED: report.skipped,
    }


# -- one batch, parts accepted and not ------------------------------------------------------


async def test_a_part_that_fails_leaves_the_accepted_parts_accepted_and_out_of_the_resend() -> None:
    rows = [lead(i) for i in range(3)] + [lead(3, size=2_000)]  # the last one never fits
    async with FakeRyngServer(access_token=TOKEN, max_body=1_000) as server:
        async with client_of(server) as client:
            report = await client.bulk_append(CAMPAIGN, rows, batch_size=8)
        (result,) = report.batches
        assert result.outcome is Outcome.FAILED  # the rest failed definitely
        assert result.accepted_ranges == ((0, 3),)
        assert result.open_ranges == ((3, 1),)
        assert "sent in 3 parts after a 413" in result.message
        assert (report.accepted, report.failed, report.unknown) == (3, 1, 0)
        check_counts(report)
        assert ids(report.failed_leads()) == ["3"]
        assert report.failed_ranges() == [(3, 1)]
        assert report.to_dict()["batches"][0]["accepted_ranges"] == [[0, 3]]
    # Re-driven as the report says, to a server that takes the big lead: each lead once.
    async with FakeRyngServer(access_token=TOKEN) as bigger, client_of(bigger) as client:
        again = await client.bulk_append(CAMPAIGN, report.failed_leads())
    assert again.ok
    upstream = server.lead_counts("customField1") + bigger.lead_counts("customField1")
    assert upstream == dict.fromkeys(["0", "1", "2", "3"], 1)


async def test_a_part_that_may_have_been_appended_makes_only_the_rest_unknown() -> None:
    # Whole: 413. Halves of 4 fit: the first is accepted, the second answered 502 after the
    # server recorded it (it may have been appended: unknown, and never resent).
    plan = FaultPlan(script=[None, None, Fault.BAD_GATEWAY])
    rows = [lead(i, size=200) for i in range(8)]
    async with FakeRyngServer(access_token=TOKEN, max_body=1_200, faults=plan) as server:
        async with client_of(server) as client:
            report = await client.bulk_append(CAMPAIGN, rows, batch_size=8)
        assert [r.status for r in server.requests] == [413, 200, 502]
    (result,) = report.batches
    assert result.outcome is Outcome.UNKNOWN
    assert result.accepted_ranges == ((0, 4),)
    assert (report.accepted, report.unknown) == (4, 4)
    check_counts(report)
    assert ids(report.failed_leads()) == ["4", "5", "6", "7"]
    assert report.failed_ranges() == [(4, 4)]
    assert server.lead_counts("customField1") == {str(i): 1 for i in range(8)}


async def test_cut_off_while_a_part_is_in_flight_keeps_the_parts_accepted_before() -> None:
    arrived = anyio.Event()
    release = anyio.Event()

    async def hold_the_second_half(request: ReceivedRequest) -> None:
        if request.index == 2:  # the whole (413), the first half (200), then this
            arrived.set()
            await release.wait()

    rows = [lead(i, size=200) for i in range(8)]
    report = BulkReport()
    async with FakeRyngServer(
        access_token=TOKEN, max_body=1_200, on_request=hold_the_second_half
    ) as server:
        async with client_of(server) as client, anyio.create_task_group() as group:

            async def load() -> None:
                await client.bulk_append(CAMPAIGN, rows, batch_size=8, report=report)

            with anyio.fail_after(10):
                group.start_soon(load)
                await arrived.wait()
                group.cancel_scope.cancel()
        release.set()
    (result,) = report.batches
    assert result.outcome is Outcome.UNKNOWN  # the second half was on its way
    assert "parts after a 413" in result.message  # for resolve --callbacks
    assert result.accepted_ranges == ((0, 4),)
    assert (report.accepted, report.unknown) == (4, 4)
    check_counts(report)
    assert ids(report.failed_leads()) == ["4", "5", "6", "7"]


# -- with a checkpoint: a resume sends only the rest ---------------------------------------


async def test_a_resume_sends_only_what_a_batch_accepted_in_part_left(tmp_path: Path) -> None:
    journal = tmp_path / "load.ckpt"
    rows = [lead(i) for i in range(3)] + [lead(3, size=2_000)]
    async with FakeRyngServer(access_token=TOKEN, max_body=1_000) as server:
        async with client_of(server) as client:
            first = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
        assert (first.accepted, first.failed) == (3, 1)
        check_counts(first)
        (kept,) = SQLiteJournal.read_batches(journal)
        assert kept.accepted_ranges == ((0, 3),)
    async with FakeRyngServer(access_token=TOKEN) as bigger, client_of(bigger) as client:
        second = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert [ids(request.leads) for request in bigger.requests] == [["3"]]  # the rest alone
    assert second.ok
    upstream = server.lead_counts("customField1") + bigger.lead_counts("customField1")
    assert upstream == dict.fromkeys(["0", "1", "2", "3"], 1)
    (kept,) = SQLiteJournal.read_batches(journal)
    assert str(kept.state) == "accepted"


async def test_resend_unknown_resends_only_the_part_that_may_have_been_appended(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "load.ckpt"
    plan = FaultPlan(script=[None, None, Fault.BAD_GATEWAY])
    rows = [lead(i, size=200) for i in range(8)]
    async with FakeRyngServer(access_token=TOKEN, max_body=1_200, faults=plan) as server:
        async with client_of(server) as client:
            first = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
        assert (first.accepted, first.unknown) == (4, 4)
        async with client_of(server) as client:
            kept = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
        assert (kept.accepted, kept.unknown, kept.resumed) == (4, 4, 8)  # nothing sent
        assert server.received_requests == 3
        async with client_of(server) as client:
            again = await client.bulk_append(
                CAMPAIGN, rows, batch_size=8, checkpoint=journal, resend_unknown=True
            )
        assert ids(server.requests[3].leads) == ["4", "5", "6", "7"]
    assert again.ok
    # The batch was sent again after an ambiguous attempt: its accepted leads are counted
    # (an upper bound for a batch sent in parts; the server's record below is exact).
    assert again.maybe_duplicated == 8
    counts = server.lead_counts("customField1")
    assert all(counts[str(i)] == 1 for i in range(4))  # the accepted half: once
    assert all(counts[str(i)] == 2 for i in range(4, 8))  # as resend_unknown warns


# -- the property: over fault plans and body limits, what a part proves ----------------------

FAULTS = [Fault.ERROR_500, Fault.DROP, Fault.BAD_GATEWAY, Fault.BAD_REQUEST]


@st.composite
def split_loads(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 24))
    sizes = draw(st.lists(st.sampled_from([10, 60, 200, 900]), min_size=n, max_size=n))
    rates = {fault: draw(st.sampled_from([0.0, 0.1, 0.25])) for fault in FAULTS}
    return {
        "rows": [lead(i, size=size) for i, size in enumerate(sizes)],
        "max_body": draw(st.sampled_from([700, 1_200, 2_500])),
        "plan": FaultPlan(seed=draw(st.integers(0, 2**16)), rates=rates),
        "batch_size": draw(st.integers(2, 12)),
        "concurrency": draw(st.integers(1, 3)),
        # A stop in the middle of a split leaves parts never sent (skipped_ranges).
        "stop_after": draw(st.sampled_from([None, None, 1, 2])),
    }


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(load=split_loads())
async def test_parts_prove_what_they_say_and_a_redrive_appends_each_lead_once(
    load: dict[str, Any],
) -> None:
    rows = load["rows"]
    async with FakeRyngServer(
        access_token=TOKEN, max_body=load["max_body"], faults=load["plan"]
    ) as server:
        async with client_of(server) as client:
            report = await client.bulk_append(
                CAMPAIGN,
                rows,
                batch_size=load["batch_size"],
                concurrency=load["concurrency"],
                max_consecutive_failures=load["stop_after"],
            )
        check_counts(report)
        received = server.lead_counts("customField1")
        assert all(count == 1 for count in received.values())  # nothing resent
        accepted = {str(p) for p in accepted_positions(report)}
        assert accepted <= set(received)  # what the report calls accepted is upstream
        # ... and exactly what the server answered 200 for: a part proves its leads.
        answered = {
            row["customField1"] for r in server.requests if r.status == 200 for row in r.leads
        }
        assert accepted == answered
        read = {  # the leads of every body the server read (a 413 refuses one unread)
            lead_id.decode()
            for r in server.requests
            if r.body
            for lead_id in re.findall(rb'"customField1":"(\d+)"', r.body)
        }
        unknown = set()
        for result in report.batches:
            if result.accepted_ranges:
                event("a batch accepted in part")
            if result.skipped_ranges:
                event("parts of a batch never sent")
            assert not {str(p) for p in positions(result.skipped_ranges)} & read
            open_ids = {str(p) for p in positions(result.open_ranges)}
            if result.outcome is Outcome.UNKNOWN:
                unknown |= open_ids
            else:  # failed: not appended
                assert not open_ids & set(received)
        assert set(received) <= accepted | unknown
        resend = report.failed_leads()
        assert ids(resend) == [
            str(p)
            for start, count in report.failed_ranges()
            for p in range(start, start + (count or 0))
        ]
        assert not set(ids(resend)) & accepted
    # Re-drive everything not accepted but what may have been appended, to a server that
    # takes it all: then every lead that is not unknown is upstream exactly once.
    unread = [
        row for start, count in report.failed_ranges() if count is None for row in rows[start:]
    ]
    async with FakeRyngServer(access_token=TOKEN) as bigger, client_of(bigger) as client:
        again = await client.bulk_append(
            CAMPAIGN, [row for row in resend if row["customField1"] not in unknown] + unread
        )
    assert again.ok
    final = server.lead_counts("customField1") + bigger.lead_counts("customField1")
    assert all(count == 1 for count in final.values())
    assert set(final) | unknown == {str(i) for i in range(len(rows))}


async def test_resolving_not_received_then_resuming_sends_only_the_open_part(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "load.ckpt"
    plan = FaultPlan(script=[None, None, Fault.BAD_GATEWAY])
    rows = [lead(i, size=200) for i in range(8)]
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_200, faults=plan) as server,
        client_of(server) as client,
    ):
        first = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert (first.accepted, first.unknown) == (4, 4)
    (made,) = SQLiteJournal.resolve(journal, "not-received", note="checked in the console")
    assert made.ranges == ((4, 4),)  # the decision covers the open part only
    async with FakeRyngServer(access_token=TOKEN) as second, client_of(second) as client:
        again = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert [ids(request.leads) for request in second.requests] == [["4", "5", "6", "7"]]
    assert again.ok
    assert again.maybe_duplicated == 0


async def test_an_accepted_part_is_durable_in_the_journal_before_the_next_part_is_sent(
    tmp_path: Path,
) -> None:
    # What a crash (SIGKILL) during the second half would leave: read the journal from
    # the server's side as that half arrives, before it is answered.
    journal = tmp_path / "load.ckpt"
    seen: list[Any] = []

    def read_the_journal(request: ReceivedRequest) -> None:
        if request.index == 2:  # the whole (413), the first half (200), then this
            seen.extend(SQLiteJournal.read_batches(journal))

    rows = [lead(i, size=200) for i in range(8)]
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_200, on_request=read_the_journal) as s,
        client_of(s) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert report.ok
    (held,) = seen
    assert str(held.state) == "in_flight"
    assert held.accepted_ranges == ((0, 4),)
    assert held.open_ranges == ((4, 4),)
    assert "parts after a 413" in held.message  # for resolve --callbacks


# -- cut off between a part's answer and its record -----------------------------------------


async def hold_after(
    event_type: type, matches: Any, rows: list[dict[str, Any]], **options: Any
) -> BulkReport:
    """A load cancelled while an observer holds the first event of ``event_type`` that
    ``matches``: a cut-off at that very point (a cancel, a second Ctrl-C, a grace ended)."""
    arrived = anyio.Event()

    async def wait_forever() -> None:
        await anyio.sleep_forever()

    def observer(event: Any) -> Any:
        if isinstance(event, event_type) and matches(event) and not arrived.is_set():
            arrived.set()
            return wait_forever()
        return None

    report = BulkReport()
    server_options = options.pop("server", {})
    async with (
        FakeRyngServer(access_token=TOKEN, **server_options) as server,
        client_of(server, retry=options.pop("retry", FAST_RETRY)) as client,
        anyio.create_task_group() as group,
    ):

        async def load() -> None:
            await client.bulk_append(CAMPAIGN, rows, report=report, observers=[observer], **options)

        with anyio.fail_after(10):
            group.start_soon(load)
            await arrived.wait()
            group.cancel_scope.cancel()
    return report


async def test_cut_off_just_after_a_parts_200_keeps_that_part_and_never_claims_the_rest() -> None:
    # The first half is answered 200; the load is cut off before the engine notes it. The
    # second half was never sent: skipped, not accepted.
    rows = [lead(i, size=200) for i in range(8)]
    report = await hold_after(
        AttemptEnded,
        lambda e: e.status == 200,
        rows,
        server={"max_body": 1_200},
        batch_size=8,
    )
    (result,) = report.batches
    assert result.outcome is Outcome.SKIPPED
    assert result.accepted_ranges == ((0, 4),)
    assert (report.accepted, report.skipped, report.unknown) == (4, 4, 0)
    check_counts(report)
    assert ids(report.failed_leads()) == ["4", "5", "6", "7"]


async def test_a_part_resent_after_an_ambiguous_answer_stays_maybe_duplicated_when_cut_off() -> (
    None
):
    # Whole: 413. First half: 502 after recording, resent (retry_ambiguous), then 200.
    # Cut off while the second half is announced: the first half may be in Ryng twice.
    plan = FaultPlan(script=[None, Fault.BAD_GATEWAY])
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0, retry_ambiguous=True)
    rows = [lead(i, size=200) for i in range(8)]
    starts = itertools.count(1)  # the whole, the first half twice, then the second half
    report = await hold_after(
        AttemptStarting,
        lambda _: next(starts) == 4,
        rows,
        server={"max_body": 1_200, "faults": plan},
        retry=policy,
        batch_size=8,
    )
    (result,) = report.batches
    assert result.accepted_ranges == ((0, 4),)
    assert result.maybe_duplicated
    assert report.maybe_duplicated == 4
    check_counts(report)


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [(Fault.BAD_REQUEST, Outcome.FAILED), (Fault.BAD_GATEWAY, Outcome.UNKNOWN)],
)
async def test_cut_off_after_a_part_failed_leaves_the_parts_never_sent_skipped(
    fault: Fault, outcome: Outcome
) -> None:
    # Whole: 413; first half: 413; first quarter: the fault; cut off as the second quarter
    # is about to go. The quarter refused counts under the batch's outcome, the six leads
    # never sent as skipped (they were all "skipped", or all "unknown", before).
    plan = FaultPlan(script=[None, None, fault])
    starts = itertools.count(1)
    rows = [lead(i, size=200) for i in range(8)]
    report = await hold_after(
        AttemptStarting,
        lambda _: next(starts) == 4,
        rows,
        server={"max_body": 700, "faults": plan},
        batch_size=8,
    )
    (result,) = report.batches
    assert result.outcome is outcome
    assert result.accepted_ranges == ()
    assert result.skipped_ranges == ((2, 6),)
    assert "parts after a 413" in result.message  # for resolve --callbacks
    counts = {Outcome.FAILED: report.failed, Outcome.UNKNOWN: report.unknown}
    assert counts[outcome] == 2
    assert report.skipped == 6
    check_counts(report)
    assert ids(report.failed_leads()) == [str(i) for i in range(8)]


async def test_cut_off_after_a_part_refused_as_too_large_leaves_the_batch_skipped() -> None:
    # Whole: 413; first half: 413 (it is sent again in quarters); cut off as the first
    # quarter is about to go. No lead was refused or may have been appended: all skipped.
    starts = itertools.count(1)
    rows = [lead(i, size=200) for i in range(8)]
    report = await hold_after(
        AttemptStarting, lambda _: next(starts) == 3, rows, server={"max_body": 700}, batch_size=8
    )
    (result,) = report.batches
    assert result.outcome is Outcome.SKIPPED
    assert (result.accepted_ranges, result.skipped_ranges) == ((), ())
    assert (report.skipped, report.failed, report.unknown) == (8, 0, 0)
    check_counts(report)


async def test_a_resumed_batch_cut_off_before_it_is_sent_keeps_its_parts_accepted_before(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "load.ckpt"
    rows = [lead(i) for i in range(3)] + [lead(3, size=2_000)]
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_000) as server,
        client_of(server) as client,
    ):
        first = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert (first.accepted, first.failed) == (3, 1)
    report = await hold_after(BatchPacked, lambda e: True, rows, batch_size=8, checkpoint=journal)
    (result,) = report.batches
    assert result.outcome is Outcome.SKIPPED
    assert result.accepted_ranges == ((0, 3),)
    assert (report.accepted, report.skipped) == (3, 1)
    assert report.failed_ranges() == [(3, 1)]
    check_counts(report)


async def test_a_callback_never_proves_a_batch_sent_in_parts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whole: 413. First half: 502 after recording (unknown); second half: 400 (failed,
    # not appended). A call for a lead of the first half proves that half only: resolving
    # the batch accepted would lose the second half.
    from datetime import UTC, datetime

    from test_resolve import connect_callback

    from ryng_async import parse_callback
    from ryng_async.callbacks import SQLiteCallbackStore
    from ryng_async.cli import main

    journal = tmp_path / "load.ckpt"
    rows = [lead(i, size=200) for i in range(8)]
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"{row['number']}\n" for row in rows))
    plan = FaultPlan(script=[None, Fault.BAD_GATEWAY, Fault.BAD_REQUEST])
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_200, faults=plan) as server,
        client_of(server) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    (result,) = report.batches
    assert (result.outcome, result.accepted_ranges) == (Outcome.UNKNOWN, ())
    assert "parts after a 413" in result.message
    store_path = tmp_path / "store.db"
    async with SQLiteCallbackStore(store_path) as store:
        body = connect_callback(1, rows[1]["number"], datetime.now(UTC))
        assert await store.add(parse_callback(body), body)
    capsys.readouterr()
    args = ["checkpoint", "resolve", str(journal), "--callbacks", str(store_path)]
    code = main([*args, "--file", str(leads)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "batch 0: leads 0-7 was sent in parts after a 413: a callback proves only" in out
    assert SQLiteJournal.inspect(journal).resolved == ()


LOADER = """
import asyncio, sys
from ryng_async import RetryPolicy, RyngClient

async def main():
    base_url, token, checkpoint = sys.argv[1:4]
    rows = [{"number": f"+1555{i:07d}", "customField1": str(i), "customField2": "x" * 200}
            for i in range(8)]
    async with RyngClient(base_url=base_url, access_token=token,
                          retry=RetryPolicy(initial_delay=0, max_delay=0)) as client:
        await client.bulk_append("42", rows, batch_size=8, checkpoint=checkpoint)

asyncio.run(main())
"""


async def test_a_run_killed_with_a_part_in_flight_leaves_a_batch_no_callback_proves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SIGKILLed as the first half arrives (the whole was refused with 413): the journal
    # holds the batch in flight, nothing of it accepted. A call for a lead of that half
    # proves that half only, now and after a run that reports the batch unknown.
    import os
    import signal
    import sys
    from datetime import UTC, datetime

    from test_resolve import connect_callback

    from ryng_async import parse_callback
    from ryng_async.callbacks import SQLiteCallbackStore
    from ryng_async.cli import main

    journal = tmp_path / "load.ckpt"
    rows = [lead(i, size=200) for i in range(8)]
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"{row['number']}\n" for row in rows))
    loader = tmp_path / "loader.py"
    loader.write_text(LOADER)
    pid: list[int] = []

    def kill_at_the_first_half(request: ReceivedRequest) -> None:
        if request.index == 1 and pid:
            os.kill(pid[0], signal.SIGKILL)

    async with FakeRyngServer(
        access_token=TOKEN, max_body=1_200, on_request=kill_at_the_first_half
    ) as server:
        command = [sys.executable, str(loader), server.base_url, TOKEN, str(journal)]
        async with await anyio.open_process(
            command, env={**os.environ, "PYTHONPATH": ROOT}
        ) as process:
            pid.append(process.pid)
            with anyio.fail_after(60):
                assert await process.wait() == -signal.SIGKILL
    (held,) = SQLiteJournal.read_batches(journal)
    assert (str(held.state), held.accepted_ranges) == ("in_flight", ())
    assert "parts after a 413" in held.message

    store_path = tmp_path / "store.db"
    async with SQLiteCallbackStore(store_path) as store:
        body = connect_callback(1, rows[1]["number"], datetime.now(UTC))
        assert await store.add(parse_callback(body), body)
    args = ["checkpoint", "resolve", str(journal), "--callbacks", str(store_path)]
    capsys.readouterr()
    assert main([*args, "--file", str(leads)]) == 1
    assert "was sent in parts after a 413: a callback proves only" in capsys.readouterr().out

    # A run that finds it in flight reports it unknown (not sent again): still unproven.
    async with FakeRyngServer(access_token=TOKEN) as second, client_of(second) as client:
        again = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert (again.unknown, second.received_requests) == (8, 0)
    assert main([*args, "--file", str(leads)]) == 1
    assert "was sent in parts after a 413: a callback proves only" in capsys.readouterr().out
    assert SQLiteJournal.inspect(journal).resolved == ()


async def test_a_batch_once_sent_in_parts_stays_unproven_whatever_its_later_records_say(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run 1: whole 413; first half 502 after recording (may be appended); second half 400.
    # Run 2 (resend_unknown) to a server that takes the whole batch, answered 502: its
    # last record is a plain 502, not a word of parts. A call for a lead of the first
    # half may come from run 1's half: it proves that half only, so the batch stays open.
    from datetime import UTC, datetime

    from test_resolve import connect_callback

    from ryng_async import parse_callback
    from ryng_async.callbacks import SQLiteCallbackStore
    from ryng_async.cli import main

    journal = tmp_path / "load.ckpt"
    rows = [lead(i, size=200) for i in range(8)]
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"{row['number']}\n" for row in rows))
    plan = FaultPlan(script=[None, Fault.BAD_GATEWAY, Fault.BAD_REQUEST])
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_200, faults=plan) as server,
        client_of(server) as client,
    ):
        first = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert first.unknown == 8
    whole = FaultPlan(script=[Fault.BAD_GATEWAY])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=whole) as second,
        client_of(second) as client,
    ):
        again = await client.bulk_append(
            CAMPAIGN, rows, batch_size=8, checkpoint=journal, resend_unknown=True
        )
        assert [len(request.leads) for request in second.requests] == [8]  # sent whole
    assert again.unknown == 8
    (held,) = SQLiteJournal.read_batches(journal)
    assert str(held.state) == "unknown"
    assert "parts" not in held.message  # the last record says nothing of parts
    assert held.sent_in_parts
    store_path = tmp_path / "store.db"
    async with SQLiteCallbackStore(store_path) as store:
        body = connect_callback(1, rows[1]["number"], datetime.now(UTC))
        assert await store.add(parse_callback(body), body)
    capsys.readouterr()
    args = ["checkpoint", "resolve", str(journal), "--callbacks", str(store_path)]
    code = main([*args, "--file", str(leads)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "batch 0: leads 0-7 was sent in parts after a 413: a callback proves only" in out
    assert SQLiteJournal.inspect(journal).resolved == ()
    assert main(["checkpoint", "show", str(journal), "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["uncertain"]
    assert (shown["index"], shown["sent_in_parts"]) == (0, True)


# -- a definite stop in the middle of a split ---------------------------------------------


def revoke_the_token_at(server: FakeRyngServer, index: int) -> Any:
    """An ``on_request`` that makes every request after the ``index``-th one get a 403."""

    def revoke(request: ReceivedRequest) -> None:
        if request.index == index:
            server.access_token = "revoked"

    return revoke


async def test_a_403_in_the_middle_of_a_split_leaves_the_parts_never_sent_skipped(
    tmp_path: Path,
) -> None:
    # Whole: 413. First half: 413. Its first quarter: 200, and the token is revoked then.
    # Its second quarter: 403 (failed). The second half is never sent: skipped.
    journal = tmp_path / "load.ckpt"
    rows = [lead(i, size=200) for i in range(8)]
    report = BulkReport()
    server = FakeRyngServer(access_token=TOKEN, max_body=700)
    server.on_request = revoke_the_token_at(server, 2)
    async with server, client_of(server) as client:
        with pytest.raises(AuthenticationError):
            await client.bulk_append(
                CAMPAIGN, rows, batch_size=8, checkpoint=journal, report=report
            )
    assert [(r.status, len(r.leads)) for r in server.requests] == [
        (413, 0), (413, 0), (200, 2), (403, 0)
    ]  # fmt: skip
    assert (report.accepted, report.failed, report.skipped, report.unknown) == (2, 2, 4, 0)
    (result,) = report.batches
    assert result.outcome is Outcome.FAILED  # the part the 403 refused
    assert result.accepted_ranges == ((0, 2),)
    assert result.skipped_ranges == ((4, 4),)  # never sent
    assert result.open_ranges == ((2, 6),)
    check_counts(report)
    assert report.failed_ranges() == [(2, 6)]  # failed and skipped: both to send again
    assert report.to_dict()["batches"][0]["skipped_ranges"] == [[4, 4]]
    # A resume sends the rest, failed and never sent alike, and nothing accepted again.
    async with FakeRyngServer(access_token=TOKEN) as bigger, client_of(bigger) as client:
        again = await client.bulk_append(CAMPAIGN, rows, batch_size=8, checkpoint=journal)
    assert again.ok
    assert [ids(request.leads) for request in bigger.requests] == [[str(i) for i in range(2, 8)]]
    upstream = server.lead_counts("customField1") + bigger.lead_counts("customField1")
    assert upstream == {str(i): 1 for i in range(8)}


async def test_a_403_in_a_split_without_a_checkpoint_resends_the_failed_and_skipped() -> None:
    rows = [lead(i, size=200) for i in range(8)]
    report = BulkReport()
    server = FakeRyngServer(access_token=TOKEN, max_body=700)
    server.on_request = revoke_the_token_at(server, 2)
    async with server, client_of(server) as client:
        with pytest.raises(AuthenticationError):
            await client.bulk_append(CAMPAIGN, rows, batch_size=8, report=report)
    (result,) = report.batches
    assert (report.accepted, report.failed, report.skipped) == (2, 2, 4)
    check_counts(report)
    assert ids(report.failed_leads()) == [str(i) for i in range(2, 8)]
    assert ids(result.leads) == [str(i) for i in range(2, 8)]
    async with FakeRyngServer(access_token=TOKEN) as bigger, client_of(bigger) as client:
        again = await client.bulk_append(CAMPAIGN, report.failed_leads())
    assert again.ok
    upstream = server.lead_counts("customField1") + bigger.lead_counts("customField1")
    assert upstream == {str(i): 1 for i in range(8)}


async def test_the_parts_a_403_left_unsent_are_skipped_in_the_metrics_and_for_reconcile() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry

    from ryng_async.callbacks._load_outcomes import load_report, outcomes_of
    from ryng_async.metrics import PrometheusObserver

    registry = CollectorRegistry()
    rows = [lead(i, size=200) for i in range(8)]
    report = BulkReport()
    server = FakeRyngServer(access_token=TOKEN, max_body=700)
    server.on_request = revoke_the_token_at(server, 2)
    async with server, client_of(server, observers=[PrometheusObserver(registry)]) as client:
        with pytest.raises(AuthenticationError):
            await client.bulk_append(CAMPAIGN, rows, batch_size=8, report=report)
    counted = {
        outcome: registry.get_sample_value("ryng_leads_total", {"outcome": outcome}) or 0
        for outcome in ("accepted", "failed", "skipped", "unknown")
    }
    assert counted == {"accepted": 2, "failed": 2, "skipped": 4, "unknown": 0}
    outcomes = outcomes_of(load_report(report))
    assert [outcomes.at(position)[0] for position in range(8)] == (
        ["accepted"] * 2 + ["failed"] * 2 + ["skipped"] * 4
    )
    outcomes.finish(8)


async def test_a_stop_for_failures_in_a_split_leaves_the_parts_never_sent_skipped() -> None:
    # Whole: 413. First half: 413 (neither counts toward max_consecutive_failures: each is
    # sent again in parts). Its quarters: 400 and 400, the second stops the load: the
    # second half is never sent. 4 leads failed, 4 skipped.
    plan = FaultPlan(script=[None, None, Fault.BAD_REQUEST, Fault.BAD_REQUEST])
    rows = [lead(i, size=200) for i in range(8)]
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=700, faults=plan) as server,
        client_of(server) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=8, max_consecutive_failures=2)
    assert [r.status for r in server.requests] == [413, 413, 400, 400]
    assert (report.accepted, report.failed, report.skipped, report.unknown) == (0, 4, 4, 0)
    (result,) = report.batches
    assert (result.outcome, result.skipped_ranges) == (Outcome.FAILED, ((4, 4),))
    assert "2 batches in a row were not accepted" in (report.stop_reason or "")
    check_counts(report)
    assert report.failed_ranges() == [(0, 8)]
    assert ids(report.failed_leads()) == [str(i) for i in range(8)]


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_a_413_split_again_is_no_failure_toward_max_consecutive_failures(
    concurrency: int,
) -> None:
    # Every batch is refused whole, then its halves too: more 413s in a row than the limit
    # allows, none of them a failure (each is sent again in parts, which are accepted).
    rows = [lead(i, size=200) for i in range(64)]
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=700) as server,
        client_of(server) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN, rows, batch_size=8, concurrency=concurrency, max_consecutive_failures=2
        )
    assert not report.stopped_early, report.stop_reason
    assert report.accepted == 64
    assert report.body_refused is not None
    check_counts(report)
