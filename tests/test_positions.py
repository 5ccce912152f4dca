"""A batch names exactly its leads: reports, journals, ``checkpoint show``, reconcile.

Each case once measured wrong (a batch's ranges around invalid leads, reconcile over
shards, the memory of a load at its edges, batches left in flight by dead runs, the unread
rest of a load that stopped) is rerun here with its exact result, then a property test over
random inputs with invalid and duplicate leads, faults, byte splits and shards: accepted,
failed, unknown, skipped, invalid and unread positions are disjoint, cover the input, and
agree with what the server received.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import random
import sys
import weakref
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ryng_async import BulkReport, Outcome, RyngClient, RyngError
from ryng_async import _seen as seen_module
from ryng_async._seen import SeenNumbers
from ryng_async.callbacks import reconcile
from ryng_async.checkpoint import BatchState, SQLiteJournal
from ryng_async.cli import main
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

CAMPAIGN = "42"
BAD = "12345"  # not E.164: an invalid lead


def numbers(count: int, *, invalid: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    return [
        {"number": BAD if i in invalid else f"+9198{i:08d}", "customField1": f"lead {i}"}
        for i in range(count)
    ]


def client_for(server: FakeRyngServer) -> RyngClient:
    return RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY)


def positions(ranges: Any) -> list[int]:
    return [p for start, count in ranges for p in range(start, start + count)]


def refused(rates: dict[Fault, float] | None = None) -> FaultPlan:
    return FaultPlan(seed=1, rates=rates if rates is not None else {Fault.BAD_REQUEST: 1.0})


# -- ranges: exactly the positions a batch holds --------------------------------------------


@pytest.mark.anyio
async def test_failed_ranges_name_exactly_the_leads_of_failed_batches() -> None:
    # 12 leads, batch_size=4, invalid at 2 and 7, every request answered 400.
    async with (
        FakeRyngServer(access_token=TOKEN, faults=refused()) as server,
        client_for(server) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, numbers(12, invalid=(2, 7)), batch_size=4)
    assert report.failed == 10
    assert report.failed_ranges() == [(0, 2), (3, 2), (5, 2), (8, 2), (10, 2)]
    by_index = sorted(report.batches, key=lambda r: r.index)
    assert [positions(r.ranges) for r in by_index] == [[0, 1, 3, 4], [5, 6, 8, 9], [10, 11]]
    assert [(r.start, r.count) for r in by_index] == [(0, 4), (5, 4), (10, 2)]
    document = json.loads(report.to_json())
    assert [b["ranges"] for b in sorted(document["batches"], key=lambda b: b["index"])] == [
        [[0, 2], [3, 2]],
        [[5, 2], [8, 2]],
        [[10, 2]],
    ]
    assert document["failed_ranges"] == [[0, 2], [3, 2], [5, 2], [8, 2], [10, 2]]


@pytest.mark.anyio
async def test_a_shard_never_carries_leads_across_its_blocks() -> None:
    # shard=(0, 2), batch_size=3, an invalid lead at 1: the first batch was [0, 2, 6].
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(
            CAMPAIGN, numbers(12, invalid=(1,)), batch_size=3, shard=(0, 2)
        )
    sent = [[lead["customField1"] for lead in request.leads] for request in server.requests]
    assert sorted(sent) == [["lead 0", "lead 2"], ["lead 6", "lead 7", "lead 8"]]
    by_index = sorted(report.batches, key=lambda r: r.index)
    assert [(r.start, r.count, r.ranges) for r in by_index] == [
        (0, 2, ((0, 1), (2, 1))),
        (6, 3, ((6, 3),)),
    ]


@pytest.mark.anyio
async def test_the_journal_and_checkpoint_show_name_the_exact_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same load, dropped after sending (unknown), journalled: rows on lines 2-13.
    data = tmp_path / "leads.csv"
    rows = numbers(12, invalid=(2, 7))
    data.write_text("number\n" + "".join(f"{row['number']}\n" for row in rows))
    journal = tmp_path / "load.db"
    async with (
        FakeRyngServer(access_token=TOKEN, faults=refused({Fault.DROP: 1.0})) as server,
        client_for(server) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN, [{"number": row["number"]} for row in rows], batch_size=4,
            checkpoint=journal,
        )  # fmt: skip
    assert report.unknown == 10
    batches = SQLiteJournal.read_batches(journal)
    assert [b.positions for b in batches] == ["leads 0-1, 3-4", "leads 5-6, 8-9", "leads 10-11"]
    assert [b.ranges for b in batches] == [((0, 2), (3, 2)), ((5, 2), (8, 2)), ((10, 2),)]
    assert main(["checkpoint", "show", str(journal), "--file", str(data)]) == 0
    text = capsys.readouterr().out
    assert f"batch 0: leads 0-1, 3-4, lines 2-3, 5-6 of {data} (unknown)" in text
    assert f"batch 1: leads 5-6, 8-9, lines 7-8, 10-11 of {data} (unknown)" in text
    assert f"batch 2: leads 10-11, lines 12-13 of {data} (unknown)" in text
    assert main(["checkpoint", "show", str(journal), "--file", str(data), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [b["lines"] for b in shown["uncertain"]] == [
        [[2, 3], [5, 6]],
        [[7, 8], [10, 11]],
        [[12, 13]],
    ]


# -- reconcile over shards -------------------------------------------------------------------


async def _shards(
    server: FakeRyngServer, rows: list[dict[str, Any]], count: int, **options: Any
) -> list[BulkReport]:
    reports = [BulkReport() for _ in range(count)]
    async with client_for(server) as client:

        async def one(index: int) -> None:
            await client.bulk_append(
                CAMPAIGN, iter(rows), shard=(index, count), report=reports[index], **options
            )

        async with anyio.create_task_group() as tasks:
            for index in range(count):
                tasks.start_soon(one, index)
    return reports


async def _reconciled(rows: list[dict[str, Any]], report: Any, tmp_path: Path) -> list[str]:
    async def no_callbacks() -> Any:
        return
        yield

    async with reconcile(rows, report, no_callbacks(), work_dir=tmp_path) as lines:
        return [line.load async for line in lines]


@pytest.mark.anyio
@pytest.mark.parametrize("max_batch_bytes", [None, 160])
async def test_reconcile_takes_a_merged_sharded_report_and_the_shards_journals(
    tmp_path: Path, max_batch_bytes: int | None
) -> None:
    rows = numbers(40, invalid=(3,))
    extra = {} if max_batch_bytes is None else {"max_batch_bytes": max_batch_bytes}
    journals = [tmp_path / f"shard{i}.db" for i in range(3)]
    async with FakeRyngServer(access_token=TOKEN) as server:
        reports = []
        for index in range(3):
            async with client_for(server) as client:
                reports.append(
                    await client.bulk_append(
                        CAMPAIGN, rows, batch_size=5, shard=(index, 3),
                        checkpoint=journals[index], **extra,
                    )
                )  # fmt: skip
    merged = BulkReport.merge(reports)
    if max_batch_bytes is not None:
        assert len(merged.batches) > 8  # blocks were split by bytes
    expected = ["invalid" if i == 3 else "accepted" for i in range(40)]
    assert await _reconciled(rows, merged, tmp_path) == expected
    assert await _reconciled(rows, merged.to_json(), tmp_path) == expected
    assert await _reconciled(rows, reports, tmp_path) == expected
    # A journal records no invalid leads: the invalid one reads as never sent.
    from_journals = ["skipped" if i == 3 else "accepted" for i in range(40)]
    assert await _reconciled(rows, journals, tmp_path) == from_journals


# -- the unread rest -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_load_stopped_by_failures_lists_the_unread_rest_to_send_again() -> None:
    rows = numbers(200, invalid=(4,))
    async with (
        FakeRyngServer(access_token=TOKEN, faults=refused()) as server,
        client_for(server) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN, rows, batch_size=5, concurrency=1, max_consecutive_failures=2
        )
    assert report.stopped_early
    first = report.unread[0]
    assert first == report.input_read < 200
    ranges = report.failed_ranges()
    assert ranges[-1] == (first, None)
    named = positions(r for r in ranges if r[1] is not None)
    assert sorted([*named, 4]) == list(range(first))  # every lead read, but the invalid one
    assert f"not read from input position {first}" in str(report)
    with pytest.raises(RyngError, match="Bad Request"):
        report.raise_for_failures()
    document = json.loads(report.to_json())
    assert document["unread"] == {"0": first}
    assert document["failed_ranges"][-1] == [first, None]


@pytest.mark.anyio
async def test_merged_shards_name_each_stopped_shards_unread_blocks() -> None:
    rows = numbers(100)

    class OutageError(Exception):
        pass

    def failing_after(limit: int) -> Any:
        seen = 0

        def observer(event: Any) -> None:
            nonlocal seen
            if type(event).__name__ == "AttemptStarting":
                seen += 1
                if seen > limit:
                    raise OutageError("the shared limiter's Redis went away")

        return observer

    reports = [BulkReport() for _ in range(4)]
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:

        async def one(index: int) -> None:
            observers = [failing_after(2)] if index == 1 else []
            try:
                await client.bulk_append(
                    CAMPAIGN, iter(rows), batch_size=5, concurrency=1, shard=(index, 4),
                    report=reports[index], observers=observers,
                )  # fmt: skip
            except OutageError:
                assert index == 1

        async with anyio.create_task_group() as tasks:
            for index in range(4):
                tasks.start_soon(one, index)
    merged = BulkReport.merge(reports)
    assert set(merged.unread) == {1}
    received = {int(lead["customField1"].split()[1]) for lead in server.leads}
    to_send = positions(merged.failed_ranges())  # every count known: others read it all
    assert sorted(received) == sorted(set(range(100)) - set(to_send))
    assert not set(received) & set(to_send)
    assert len(received) + len(to_send) == 100


# -- memory at the edges -------------------------------------------------------------------


@pytest.mark.anyio
async def test_raise_for_failures_leaves_the_stored_error_and_the_callers_frames_alone() -> None:
    async with (
        FakeRyngServer(access_token=TOKEN, faults=refused()) as server,
        client_for(server) as client,
    ):
        report = await client.bulk_append(CAMPAIGN, numbers(4), batch_size=4)
    stored = report.batches[0].error
    assert stored is not None
    assert stored.__traceback__ is None

    class Held:
        pass

    def caller() -> weakref.ref[Held]:
        held = Held()  # a large object in the caller's frame
        with pytest.raises(RyngError) as raised:
            report.raise_for_failures()
        assert raised.value.report is report
        assert type(raised.value) is type(stored)
        del raised
        return weakref.ref(held)

    refs = [caller() for _ in range(4)]
    gc.collect()
    assert [ref() for ref in refs] == [None] * 4  # no caller's frame kept by the report
    assert stored.__traceback__ is None
    with pytest.raises(RyngError) as raised:
        report.raise_for_failures()
    assert raised.value is not stored


@pytest.mark.anyio
async def test_invalid_leads_are_counted_exactly_and_described_up_to_a_bound() -> None:
    rows = numbers(300, invalid=tuple(range(0, 300, 2)))
    found: list[int] = []
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(
            CAMPAIGN, rows, batch_size=20, keep_invalid_leads=10,
            on_invalid=lambda lead: found.append(lead.position),
        )  # fmt: skip
    assert report.invalid == 150
    assert [lead.position for lead in report.invalid_leads] == list(range(0, 20, 2))
    assert found == list(range(0, 300, 2))
    assert report.accepted == 150


@pytest.mark.parametrize("use_json", [True, False])
def test_seen_numbers_is_exact_past_its_memory(use_json: bool) -> None:
    rng = random.Random(5)
    pool = [f"+91{rng.randrange(10**9, 10**10)}" for _ in range(3000)]
    drawn = [rng.choice(pool) for _ in range(6000)]
    drawn[::97] = ["not E.164"] * len(drawn[::97])  # kept apart, exact too
    seen = SeenNumbers(memory_limit=100, filter_bits=1024, pending_limit=300)
    seen._json = use_json  # the path of an SQLite without its JSON functions too
    oracle: set[str] = set()
    try:
        for first in range(0, len(drawn), 700):
            chunk = drawn[first : first + 700]  # duplicates inside a chunk too
            expected = []
            for number in chunk:
                expected.append(number not in oracle)
                oracle.add(number)
            assert seen.add_many(chunk) == expected
        assert seen.spilled
    finally:
        seen.close()


@pytest.mark.anyio
async def test_dedupe_past_its_memory_refuses_exactly_the_duplicates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(seen_module, "_MEMORY_LIMIT", 50)
    monkeypatch.setattr(seen_module.tempfile, "tempdir", str(tmp_path))
    rows = [{"number": f"+9198{i % 300:08d}"} for i in range(600)]  # each number twice
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=25, dedupe=True)
    assert report.invalid == 300
    assert report.accepted == 300
    assert sorted(lead["number"] for lead in server.leads) == sorted(
        f"+9198{i:08d}" for i in range(300)
    )
    assert os.listdir(tmp_path) == []  # the spill file is gone with the load
    # The batches leave out the duplicates: runs of positions, not one span.
    assert positions(report.failed_ranges()) == []
    assert sum(r.count for r in report.batches) == 300


# -- dead runs' batches in flight -----------------------------------------------------------


@pytest.mark.anyio
async def test_checkpoint_show_tells_a_stopped_runs_batches_from_a_live_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "load.db"
    rows = numbers(8)
    journal = SQLiteJournal(path)
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with client_for(server) as client:
            await client.bulk_append(CAMPAIGN, rows, batch_size=4, checkpoint=journal)
        identity = journal.identity
        assert identity is not None
        # A run that put batch 1 in flight, then died.
        await journal.open(identity)
        batch = journal.batches[1]
        await journal.in_flight(
            1, start=batch.start, count=batch.count, digest=batch.digest, attempt=1
        )
        live = SQLiteJournal.inspect(path)
        assert live.holder == os.getpid()
        assert main(["checkpoint", "show", str(path)]) == 0
        assert f"in_flight now (pid {os.getpid()})" in capsys.readouterr().out
        await journal.aclose()
        dead = SQLiteJournal.inspect(path)
        assert dead.holder is None
        assert [b.state for b in dead.uncertain] == [BatchState.IN_FLIGHT]
        assert main(["checkpoint", "show", str(path)]) == 0
        text = capsys.readouterr().out
        assert "batch 1: leads 4-7 (in_flight, left by a run that stopped: unknown)" in text
        assert "no load holds it now" in text
        # The rerun reports it unknown, and the journal says so from then on.
        async with client_for(server) as client:
            again = await client.bulk_append(CAMPAIGN, rows, batch_size=4, checkpoint=path)
    assert [r.outcome for r in sorted(again.batches, key=lambda r: r.index)] == [
        Outcome.ACCEPTED,
        Outcome.UNKNOWN,
    ]
    after = SQLiteJournal.inspect(path)
    assert [b.state for b in after.uncertain] == [BatchState.UNKNOWN]


# -- the property ----------------------------------------------------------------------------


def _input(draw: st.DrawFn) -> list[dict[str, Any]]:
    size = draw(st.integers(0, 60))
    rows: list[dict[str, Any]] = []
    for i in range(size):
        kind = draw(st.sampled_from(["ok", "ok", "ok", "invalid", "duplicate", "long"]))
        if kind == "invalid":
            rows.append({"number": BAD, "customField1": f"lead {i}"})
        elif kind == "duplicate" and rows:
            earlier = draw(st.integers(0, len(rows) - 1))
            rows.append({"number": rows[earlier]["number"], "customField1": f"lead {i}"})
        else:
            text = "x" * (draw(st.integers(50, 150)) if kind == "long" else 3)
            rows.append(
                {"number": f"+9198{i:08d}", "customField1": f"lead {i}", "customField2": text}
            )
    return rows


@st.composite
def loads(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "rows": _input(draw),
        "batch_size": draw(st.integers(1, 7)),
        "max_batch_bytes": draw(st.sampled_from([None, 300, 500])),
        "shards": draw(st.sampled_from([1, 1, 2, 3])),
        "dedupe": draw(st.booleans()),
        "seed": draw(st.integers(0, 1000)),
        "fault_rate": draw(st.sampled_from([0.0, 0.3, 0.6])),
        "max_consecutive_failures": draw(st.sampled_from([None, 2])),
    }


def _classify(report: BulkReport, size: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {o.value: [] for o in Outcome}
    for result in report.batches:
        out[result.outcome.value] += positions(result.ranges)
        assert len(positions(result.ranges)) == result.count
        assert result.ranges[0][0] == result.start
    out["invalid"] = []
    out["unread"] = []
    return out


async def _check_property(case: dict[str, Any]) -> None:
    rows: list[dict[str, Any]] = case["rows"]
    size = len(rows)
    plan = FaultPlan(
        seed=case["seed"],
        rates={Fault.BAD_REQUEST: case["fault_rate"] / 2, Fault.DROP: case["fault_rate"] / 2},
    )
    options: dict[str, Any] = {"batch_size": case["batch_size"], "dedupe": case["dedupe"]}
    if case["max_batch_bytes"] is not None:
        options["max_batch_bytes"] = case["max_batch_bytes"]
    options["max_consecutive_failures"] = case["max_consecutive_failures"]
    count = case["shards"]
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        if count == 1:
            async with client_for(server) as client:
                report = await client.bulk_append(CAMPAIGN, iter(rows), concurrency=2, **options)
        else:
            if case["dedupe"]:
                options["dedupe"] = False  # each shard dedupes only its share: not compared
            report = BulkReport.merge(await _shards(server, rows, count, concurrency=2, **options))
        received = [r for r in server.requests if r.fault is None or r.fault is Fault.DROP]
    assert report.finished
    assert report.total <= size
    by_outcome = _classify(report, size)
    # Invalid: every position read that is in no batch, as many as counted.
    in_batches = {
        p for name in ("accepted", "failed", "unknown", "skipped") for p in by_outcome[name]
    }
    to_send = report.failed_ranges()
    unread = [
        p for start, length in to_send for p in (
            range(start, size) if length is None else range(start, start + length)
        ) if p not in in_batches
    ]  # fmt: skip
    invalid = [p for p in range(size) if p not in in_batches and p not in unread]
    assert len(invalid) == report.invalid
    described = [lead.position for lead in report.invalid_leads]
    assert set(described) <= set(invalid)
    # Disjoint, and covering the input exactly.
    named = (
        by_outcome["accepted"] + by_outcome["failed"] + by_outcome["unknown"]
        + by_outcome["skipped"] + invalid + unread
    )  # fmt: skip
    assert sorted(named) == list(range(size))
    # What to send again is exactly failed + unknown + skipped + unread.
    again = sorted(
        p for start, length in to_send
        for p in (range(start, size) if length is None else range(start, start + length))
    )  # fmt: skip
    assert again == sorted(
        by_outcome["failed"] + by_outcome["unknown"] + by_outcome["skipped"] + unread
    )
    # The server's record agrees: accepted leads arrived exactly once (a dropped request
    # arrived too, and its batch is unknown); failed and skipped leads never did.
    arrived: list[int] = []
    for request in received:
        positions_sent = [int(lead["customField1"].split()[1]) for lead in request.leads]
        arrived += positions_sent
    ok_requests = [r for r in server.requests if r.fault is None]
    accepted_arrived = sorted(
        int(lead["customField1"].split()[1]) for r in ok_requests for lead in r.leads
    )
    assert accepted_arrived == sorted(by_outcome["accepted"])
    assert not set(arrived) & set(by_outcome["failed"] + by_outcome["skipped"] + invalid + unread)
    assert set(arrived) - set(by_outcome["accepted"]) <= set(by_outcome["unknown"])


def _run(case: dict[str, Any]) -> None:
    anyio.run(_check_property, case, backend="asyncio")


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(loads())
def test_positions_of_every_outcome_are_disjoint_cover_the_input_and_match_the_server(
    case: dict[str, Any],
) -> None:
    _run(case)


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(loads())
def test_positions_property_over_more_inputs(case: dict[str, Any]) -> None:
    _run(case)


@pytest.mark.anyio
async def test_the_cli_names_the_unread_rest_in_its_summary_and_report(tmp_path: Path) -> None:
    data = tmp_path / "leads.csv"
    data.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(300)))
    report_path = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    async with FakeRyngServer(access_token=TOKEN, faults=refused()) as server:
        env |= {"RYNG_BASE_URL": server.base_url, "RYNG_ACCESS_TOKEN": TOKEN}
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [
                    sys.executable, "-m", "ryng_async", "append", CAMPAIGN, str(data),
                    "--batch-size", "10", "--concurrency", "1",
                    "--max-consecutive-failures", "2", "--report", str(report_path),
                ],
                check=False,
                env=env,
            )  # fmt: skip
    err = done.stderr.decode()
    assert done.returncode == 1, err
    document = json.loads(report_path.read_text())
    first = document["unread"]["0"]
    assert 0 < first < 300
    assert f"the load stopped before reading input position {first}" in err
    assert f"(line {first + 2} of {data})" in err
    assert document["failed_ranges"][-1] == [first, None]
    assert document["failed_lines"][-1] == [first + 2, None]
    named = positions(r for r in document["failed_ranges"] if r[1] is not None)
    assert named == list(range(first))  # every row read was refused; the rest unread


def _stopped(shard: int, read: int, *, unread: int | None) -> BulkReport:
    report = BulkReport(campaign_id=CAMPAIGN, shard=(shard, 2), sharding=(2, 3))
    report.input_read = read
    if unread is not None:
        report.mark_unread(unread)
        report.stop("an outage")
    report.finish(0.0)
    return report


def test_merged_unread_blocks_reach_the_input_end_a_shard_read() -> None:
    # Blocks of 3, two shards: shard 0 has blocks 0, 2, 4...; shard 1 has 1, 3...
    finished = BulkReport.merge([_stopped(0, 6, unread=6), _stopped(1, 10, unread=None)])
    assert finished.failed_ranges() == [(6, 3)]  # block 3 (9) is shard 1's, read
    both = BulkReport.merge([_stopped(0, 6, unread=6), _stopped(1, 9, unread=9)])
    assert both.failed_ranges() == [(6, 3), (9, None)]  # past 9, no shard read anything
    at_end = BulkReport.merge([_stopped(0, 10, unread=10), _stopped(1, 10, unread=None)])
    assert at_end.failed_ranges() == []  # stopped at the very end: nothing left unread
    alone = _stopped(0, 6, unread=6)
    assert alone.failed_ranges() == [(6, None)]  # one shard's report: its blocks from 6 on


@pytest.mark.anyio
async def test_an_on_invalid_hook_that_raises_stops_the_load_with_its_error() -> None:
    class HookError(Exception):
        pass

    def hook(lead: Any) -> None:
        raise HookError(f"cannot write lead {lead.position}")

    report = BulkReport()
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        with pytest.raises(HookError, match="cannot write lead 1"):
            await client.bulk_append(
                CAMPAIGN, numbers(40, invalid=(1, 2)), batch_size=5, on_invalid=hook,
                report=report,
            )  # fmt: skip
    assert report.finished
    assert report.stopped_early
    assert report.invalid == 2
    assert report.unaccounted == 0


@pytest.mark.anyio
async def test_reconcile_still_reads_a_report_written_before_exact_ranges(tmp_path: Path) -> None:
    rows = numbers(12, invalid=(2, 7))
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        report = await client.bulk_append(CAMPAIGN, rows, batch_size=4)
    old = report.to_dict()
    for name in ("input_read", "unread", "sharding", "failed_ranges"):
        del old[name]
    for batch in old["batches"]:
        del batch["ranges"]  # (start, count) over valid leads, walked past the invalid ones
    expected = ["invalid" if i in (2, 7) else "accepted" for i in range(12)]
    assert await _reconciled(rows, old, tmp_path) == expected
    assert await _reconciled(rows, report, tmp_path) == expected


@pytest.mark.anyio
async def test_shards_under_a_redis_limiter_lost_mid_load_list_every_unread_lead() -> None:
    # Four shards share a RedisLimiter; Redis dies mid-load: each lists its unread leads.
    helpers = pytest.importorskip("test_redis_limiter")  # skips without redis-py
    from ryng_async.redis import RedisLimiter, RedisLimiterError

    own = helpers._start_own()  # skips without a redis-server binary
    rows = numbers(2000)
    reports = [BulkReport() for _ in range(4)]
    stopped: list[int] = []
    try:
        async with (
            FakeRyngServer(access_token=TOKEN) as server,
            RedisLimiter(own.url, f"positions:{os.getpid()}", 400, max_outage=0.5) as shared,
            RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
        ):

            def stop_redis(progress: object) -> None:
                if not stopped and server.received_requests >= 20:
                    stopped.append(server.received_requests)
                    own.stop()

            async def one(index: int) -> None:
                with contextlib.suppress(RedisLimiterError):
                    await client.bulk_append(
                        CAMPAIGN, iter(rows), batch_size=10, concurrency=2,
                        shard=(index, 4), report=reports[index], on_progress=stop_redis,
                    )  # fmt: skip

            async with anyio.create_task_group() as tasks:
                for index in range(4):
                    tasks.start_soon(one, index)
            received = sorted(int(lead["customField1"].split()[1]) for lead in server.leads)
    finally:
        own.stop()
    merged = BulkReport.merge(reports)
    assert merged.stopped_early
    assert merged.total < len(rows)  # the input was not read to its end
    to_send = merged.failed_ranges()
    tail = [start for start, count in to_send if count is None]
    end = tail[0] if tail else len(rows)
    again = positions(run for run in to_send if run[1] is not None) + list(range(end, len(rows)))
    assert sorted(received + again) == list(range(len(rows)))  # each once: complete, exact
    assert len(received) == merged.accepted
