"""Batches accepted in part (sent in parts after a 413), as the journal keeps them.

A batch's ``accepted_ranges`` are recorded by `SQLiteJournal.part_accepted` and
`SQLiteJournal.settled`, kept by a later `in_flight` (a resend), and only ever grow: in
memory, through the log a load leaves (replayed by readers) and through the fold into the
batch table. Readers count those leads accepted and the rest under the batch's state; a
decision on such a batch is on the rest.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_checkpoint import journal_with, where

from ryng_async._runs import union_runs
from ryng_async.callbacks._load_outcomes import load_report, outcomes_of
from ryng_async.checkpoint import BatchState, Decision, SQLiteJournal
from ryng_async.checkpoint import _format as journal_format
from ryng_async.checkpoint import _rows as journal_rows

pytestmark = pytest.mark.anyio


async def part_journal(path: Path) -> None:
    """Batch 0 accepted; 1 unknown, leads 10-14 accepted; 2 failed, 20-22 and 25-26
    accepted; 3 in flight. No record awaited but the in-flight ones: `aclose` writes them."""
    journal = await journal_with(path)
    try:
        for index in range(4):
            await journal.in_flight(index, **where(index), attempt=1)
        journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        journal.part_accepted(1, [(10, 5)])
        journal.settled(1, state=BatchState.UNKNOWN, attempts=2, status=None, message="lost")
        journal.part_accepted(2, [(20, 3)])
        journal.settled(
            2,
            state=BatchState.FAILED,
            attempts=1,
            status=400,
            message="bad lead",
            accepted_ranges=[(25, 2)],
        )
    finally:
        await journal.aclose()


def accepted_column(path: Path) -> dict[int, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT idx, accepted FROM batch ORDER BY idx").fetchall())
    finally:
        conn.close()


async def test_runs_accepted_in_part_are_journalled_and_counted_by_the_readers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    await part_journal(path)
    summary = SQLiteJournal.inspect(path)  # the log, replayed
    assert dict(summary.batches) == {
        BatchState.IN_FLIGHT: 1,
        BatchState.ACCEPTED: 1,
        BatchState.FAILED: 1,
        BatchState.UNKNOWN: 1,
        BatchState.SKIPPED: 0,
    }
    assert dict(summary.leads) == {
        BatchState.IN_FLIGHT: 10,
        BatchState.ACCEPTED: 10 + 5 + 5,
        BatchState.FAILED: 5,
        BatchState.UNKNOWN: 5,
        BatchState.SKIPPED: 0,
    }
    assert summary.total_leads == 40
    assert summary.next_position == 15  # batch 1's leads 10-14 were accepted
    assert [b.index for b in summary.accepted_in_part] == [1, 2]
    unknown = summary.uncertain[0]
    assert (unknown.index, unknown.accepted_ranges) == (1, ((10, 5),))
    assert (unknown.open_ranges, unknown.open_count) == (((15, 5),), 5)
    batches = {b.index: b for b in SQLiteJournal.read_batches(path)}
    assert batches[2].accepted_ranges == ((20, 3), (25, 2))
    assert batches[2].open_ranges == ((23, 2), (27, 3))
    assert batches[0].accepted_ranges == batches[3].accepted_ranges == ()
    assert batches[3].open_ranges == ((30, 10),)
    async with await journal_with(path) as journal:  # folded into the batch table
        assert accepted_column(path) == {0: "", 1: "10-14", 2: "20-22,25-26", 3: ""}
        assert dict(journal.batches) == batches
        prior = journal.prior(1, **where(1))
        assert prior is not None
        assert prior.accepted_ranges == ((10, 5),)
    assert SQLiteJournal.inspect(path).leads == summary.leads


async def test_a_resend_in_flight_keeps_the_runs_accepted_before(tmp_path: Path) -> None:
    path = tmp_path / "j"
    await part_journal(path)
    async with await journal_with(path) as journal:
        await journal.in_flight(1, **where(1), attempt=1, maybe_duplicated=True)
        assert journal.batches[1].state is BatchState.IN_FLIGHT
        assert journal.batches[1].accepted_ranges == ((10, 5),)
        # In the same run too: runs recorded, then the batch sent again.
        await journal.in_flight(2, **where(2), attempt=2)
        journal.part_accepted(2, [(23, 2)])
        await journal.in_flight(2, **where(2), attempt=3)
        assert journal.batches[2].accepted_ranges == ((20, 7),)
        await journal.settled(2, state=BatchState.FAILED, attempts=3, status=400, message="")
    batches = {b.index: b for b in SQLiteJournal.read_batches(path)}
    assert batches[1].accepted_ranges == ((10, 5),)
    assert batches[1].state is BatchState.IN_FLIGHT
    assert batches[2].accepted_ranges == ((20, 7),)
    assert batches[2].open_ranges == ((27, 3),)


async def test_accepted_runs_only_grow_in_memory_in_the_log_and_in_the_fold(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1)
        journal.part_accepted(0, [(0, 3), (5, 2)])
        journal.part_accepted(0, [(3, 1)])
        await journal.settled(
            0,
            state=BatchState.UNKNOWN,
            attempts=1,
            status=None,
            message="",
            accepted_ranges=[(0, 1)],  # fewer runs than known: nothing is lost
        )
        assert journal.batches[0].accepted_ranges == ((0, 4), (5, 2))
    async with await journal_with(path) as journal:  # folds the log
        assert journal.batches[0].accepted_ranges == ((0, 4), (5, 2))
    # A record that knows fewer runs than the table (none), written in the log as a load
    # would: readers replaying it, and the fold upserting it, keep the table's runs.
    conn = sqlite3.connect(path, isolation_level=None)
    row = journal_rows.row_from_sql(conn.execute(journal_format.SELECT_BATCHES).fetchone())
    fewer = (*row[:4], str(BatchState.FAILED), *row[5:10], "8-8", row[11])
    conn.execute(journal_format.LOG_INSERT, (0.0, journal_rows.pack_records([fewer])))
    conn.close()
    (read,) = SQLiteJournal.read_batches(path)
    assert (read.state, read.accepted_ranges) == (BatchState.FAILED, ((0, 4), (5, 2), (8, 1)))
    conn = sqlite3.connect(path, isolation_level=None)
    journal_format.fold(conn)
    conn.close()
    assert accepted_column(path) == {0: "0-3,5-6,8-8"}
    assert SQLiteJournal.inspect(path).leads[BatchState.ACCEPTED] == 7


async def test_accepted_runs_must_be_leads_of_a_journalled_batch(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        with pytest.raises(ValueError, match="batch 0 was never journalled"):
            journal.part_accepted(0, [(0, 5)])
        with pytest.raises(ValueError, match="batch 0 was never journalled"):
            journal.settled(
                0,
                state=BatchState.SKIPPED,
                attempts=0,
                status=None,
                message="",
                accepted_ranges=[(0, 5)],
            )
        await journal.in_flight(1, start=10, count=4, digest=b"d" * 16, attempt=1,
                                ranges=[(10, 2), (13, 2)])  # fmt: skip
        with pytest.raises(ValueError, match=r"not all leads of batch 1 \(leads 10-11, 13-14\)"):
            journal.part_accepted(1, [(10, 3)])  # position 12 is not one of its leads
        with pytest.raises(ValueError, match="not all leads of batch 1"):
            journal.settled(
                1,
                state=BatchState.UNKNOWN,
                attempts=1,
                status=None,
                message="",
                accepted_ranges=[(15, 1)],
            )
        journal.part_accepted(1, [(13, 2)])
        assert journal.batches[1].state is BatchState.IN_FLIGHT  # no state of its own
        assert journal.batches[1].open_ranges == ((10, 2),)
    assert SQLiteJournal.read_batches(path)[0].accepted_ranges == ((13, 2),)


async def test_a_decision_on_a_batch_accepted_in_part_is_on_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "j"
    await part_journal(path)
    (made,) = SQLiteJournal.resolve(path, Decision.NOT_RECEIVED, batches=[1])
    assert (made.index, made.ranges, made.positions) == (1, ((15, 5),), "leads 15-19")
    (made,) = SQLiteJournal.resolve(path, Decision.ACCEPTED, batches=[3])
    assert made.ranges == ((30, 10),)
    batches = {b.index: b for b in SQLiteJournal.read_batches(path)}
    assert batches[1].state is BatchState.SKIPPED
    assert batches[1].accepted_ranges == ((10, 5),)  # a resume sends only the rest
    assert batches[1].open_ranges == ((15, 5),)
    summary = SQLiteJournal.inspect(path)
    assert [r.ranges for r in summary.resolved] == [((15, 5),), ((30, 10),)]
    assert summary.leads[BatchState.SKIPPED] == 5
    assert summary.leads[BatchState.ACCEPTED] == 10 + 5 + 5 + 10
    other = tmp_path / "other"
    await part_journal(other)
    (made,) = SQLiteJournal.resolve(other, Decision.ACCEPTED, batches=[1])
    assert made.ranges == ((15, 5),)
    assert SQLiteJournal.read_batches(other)[1].state is BatchState.ACCEPTED
    assert SQLiteJournal.inspect(other).leads[BatchState.ACCEPTED] == 10 + 10 + 5


async def test_the_journal_s_outcomes_give_accepted_runs_their_own_outcome(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    await part_journal(path)
    outcomes = outcomes_of(load_report(path))
    seen = [outcomes.at(position) for position in range(40)]
    assert [outcome for outcome, _ in seen] == (
        ["accepted"] * 15
        + ["unknown"] * 5
        + ["accepted"] * 3
        + ["failed"] * 2
        + ["accepted"] * 2
        + ["failed"] * 3
        + ["unknown"] * 10  # in flight, left by a run that stopped
    )
    assert [index for _, index in seen] == [i // 10 for i in range(40)]
    outcomes.finish(40)


# --- any sequence of records ------------------------------------------------------------------

records = st.lists(
    st.one_of(
        st.tuples(st.just("in_flight"), st.integers(0, 2), st.booleans()),
        st.tuples(
            st.just("part"),
            st.integers(0, 2),
            st.lists(st.tuples(st.integers(0, 9), st.integers(1, 3)), max_size=3),
        ),
        st.tuples(
            st.just("settled"),
            st.integers(0, 2),
            st.sampled_from([BatchState.ACCEPTED, BatchState.UNKNOWN, BatchState.FAILED]),
            st.lists(st.tuples(st.integers(0, 9), st.integers(1, 3)), max_size=2),
            st.booleans(),
        ),
        st.just(("reopen",)),
    ),
    max_size=25,
)


def inside(index: int, runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``runs`` as positions of batch ``index`` (offsets 0-9), cut to its ten leads."""
    return [(index * 10 + first, min(length, 10 - first)) for first, length in runs]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=records)
async def test_any_sequence_of_records_keeps_the_union_of_every_accepted_run(
    ops: list[tuple[Any, ...]],
) -> None:
    # ... and sent in parts once any record said so (in flight in parts, runs accepted).
    accepted: dict[int, tuple[tuple[int, int], ...]] = {}
    in_parts: dict[int, bool] = {}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "j"
        journal = await journal_with(path)
        try:
            for op in ops:
                if op[0] == "reopen":
                    await journal.aclose()
                    journal = await journal_with(path)
                elif op[0] == "in_flight":
                    await journal.in_flight(op[1], **where(op[1]), attempt=1, in_parts=op[2])
                    accepted.setdefault(op[1], ())
                    in_parts[op[1]] = in_parts.get(op[1], False) or op[2]
                elif op[1] not in accepted:
                    continue  # never journalled: refused (another test)
                elif op[0] == "part":
                    runs = inside(op[1], op[2])
                    journal.part_accepted(op[1], runs)
                    accepted[op[1]] = union_runs(accepted[op[1]], runs)
                    in_parts[op[1]] = in_parts[op[1]] or bool(runs)
                else:
                    _, index, state, runs, parts = op
                    runs = inside(index, runs)
                    journal.settled(
                        index,
                        state=state,
                        attempts=1,
                        status=None,
                        message="",
                        accepted_ranges=runs,
                        in_parts=parts,
                    )
                    accepted[index] = union_runs(accepted[index], runs)
                    in_parts[index] = in_parts[index] or parts or bool(runs)
                got = {i: b.accepted_ranges for i, b in journal.batches.items()}
                assert got == accepted
                assert {i: b.sent_in_parts for i, b in journal.batches.items()} == in_parts
        finally:
            await journal.aclose()
        assert {b.index: b.accepted_ranges for b in SQLiteJournal.read_batches(path)} == accepted
        assert {b.index: b.sent_in_parts for b in SQLiteJournal.read_batches(path)} == in_parts
        summary = SQLiteJournal.inspect(path)
        assert summary.total_leads == 10 * len(accepted)
        async with await journal_with(path) as journal:  # folded
            assert {i: b.accepted_ranges for i, b in journal.batches.items()} == accepted
            assert {i: b.sent_in_parts for i, b in journal.batches.items()} == in_parts


# --- sent in parts: a sticky flag, not a message's wording --------------------------------


def in_parts_column(path: Path) -> dict[int, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT idx, in_parts FROM batch ORDER BY idx").fetchall())
    finally:
        conn.close()


async def test_sent_in_parts_sticks_through_later_records_the_log_and_the_fold(
    tmp_path: Path,
) -> None:
    # Batch 0: a part in flight, then resent whole with a plain record, then unknown with
    # another message. 1: a part accepted, then a plain resend, failed. 2: settled with
    # runs accepted. 3: settled in parts (no part accepted). 4: never sent in parts.
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1, in_parts=True, message="a part")
        await journal.in_flight(0, **where(0), attempt=2)
        journal.settled(0, state=BatchState.UNKNOWN, attempts=2, status=502, message="Bad Gateway")
        await journal.in_flight(1, **where(1), attempt=1)
        journal.part_accepted(1, [(10, 2)])
        await journal.in_flight(1, **where(1), attempt=2)
        journal.settled(1, state=BatchState.FAILED, attempts=2, status=400, message="bad")
        await journal.in_flight(2, **where(2), attempt=1)
        journal.settled(
            2,
            state=BatchState.FAILED,
            attempts=1,
            status=400,
            message="",
            accepted_ranges=[(20, 1)],
        )
        await journal.in_flight(3, **where(3), attempt=1)
        journal.settled(
            3, state=BatchState.UNKNOWN, attempts=1, status=None, message="lost", in_parts=True
        )
        await journal.in_flight(4, **where(4), attempt=1)
        journal.settled(4, state=BatchState.FAILED, attempts=1, status=400, message="")
        expected = {0: True, 1: True, 2: True, 3: True, 4: False}
        assert {i: b.sent_in_parts for i, b in journal.batches.items()} == expected
        assert "parts" not in journal.batches[0].message
    # Readers replay the log a load left; the next open folds it into the table.
    assert {b.index: b.sent_in_parts for b in SQLiteJournal.read_batches(path)} == expected
    assert [b.index for b in SQLiteJournal.inspect(path).uncertain if b.sent_in_parts] == [0, 3]
    async with await journal_with(path) as journal:
        assert in_parts_column(path) == {i: int(flag) for i, flag in expected.items()}
        assert {i: b.sent_in_parts for i, b in journal.batches.items()} == expected
        # A later run's plain records never clear it, nor does the fold of them.
        await journal.in_flight(0, **where(0), attempt=1)
        journal.resolve_in_flight(3, message="in flight when an earlier run stopped")
        journal.settled(0, state=BatchState.UNKNOWN, attempts=1, status=504, message="timeout")
        assert journal.batches[0].sent_in_parts
    async with await journal_with(path) as journal:
        assert in_parts_column(path) == {i: int(flag) for i, flag in expected.items()}
    # An operator's decision keeps it too.
    SQLiteJournal.resolve(path, Decision.NOT_RECEIVED, batches=[0])
    assert SQLiteJournal.read_batches(path)[0].sent_in_parts


async def test_a_record_in_the_log_that_does_not_say_in_parts_keeps_the_table_s_flag(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1, in_parts=True)
    async with await journal_with(path):  # folds the log: the table says in parts
        pass
    conn = sqlite3.connect(path, isolation_level=None)
    row = journal_rows.row_from_sql(conn.execute(journal_format.SELECT_BATCHES).fetchone())
    plain = (*row[:4], str(BatchState.UNKNOWN), *row[5:7], "lost", *row[8:11], False)
    conn.execute(journal_format.LOG_INSERT, (0.0, journal_rows.pack_records([plain])))
    conn.close()
    (read,) = SQLiteJournal.read_batches(path)
    assert (read.state, read.message, read.sent_in_parts) == (BatchState.UNKNOWN, "lost", True)
    conn = sqlite3.connect(path, isolation_level=None)
    journal_format.fold(conn)
    conn.close()
    assert in_parts_column(path) == {0: 1}


# --- a batch accepted has no open runs ----------------------------------------------------


async def test_a_batch_accepted_as_a_whole_has_no_open_runs_whatever_it_accepted_in_part(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    await part_journal(path)
    SQLiteJournal.resolve(path, Decision.ACCEPTED, batches=[1])  # unknown, 10-14 accepted
    async with await journal_with(path) as journal:
        await journal.in_flight(3, **where(3), attempt=1)
        journal.part_accepted(3, [(30, 4)])
        journal.settled(3, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        held = journal.batches[3]
        assert (held.state, held.open_ranges, held.open_count) == (BatchState.ACCEPTED, (), 0)
    batches = {b.index: b for b in SQLiteJournal.read_batches(path)}
    for index in (0, 1, 3):
        assert batches[index].state is BatchState.ACCEPTED
        assert (batches[index].open_ranges, batches[index].open_count) == ((), 0)
    assert batches[2].open_ranges == ((23, 2), (27, 3))  # not accepted: its rest
    summary = SQLiteJournal.inspect(path)
    assert summary.leads[BatchState.ACCEPTED] == 40 - 5
    assert summary.next_position == 23  # batch 2's first lead not accepted
    assert [b.index for b in summary.accepted_in_part] == [2]


async def test_a_format_4_journal_reads_as_sent_in_parts_where_its_message_said_so(
    tmp_path: Path,
) -> None:
    # Format 4 said it in a batch's outcome message only: batch 0's is in the table,
    # batch 1's in the log a load left; batch 2 was sent whole.
    from test_journal_format import user_version, without_accepted_runs

    path = tmp_path / "j"
    split = "sent in 2 parts after a 413 (body too large): 5 leads at input positions"
    async with await journal_with(path) as journal:
        for index in range(3):
            await journal.in_flight(index, **where(index), attempt=1)
        journal.settled(0, state=BatchState.UNKNOWN, attempts=2, status=502, message=split)
    async with await journal_with(path) as journal:  # batch 0 folded into the table
        journal.settled(1, state=BatchState.UNKNOWN, attempts=2, status=None, message=split)
        journal.settled(2, state=BatchState.UNKNOWN, attempts=1, status=502, message="lost")
    conn = sqlite3.connect(path)
    without_accepted_runs(conn)
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    expected = {0: True, 1: True, 2: False}
    summary = SQLiteJournal.inspect(path)  # migrated in memory
    assert summary.format_version == 4
    assert {b.index: b.sent_in_parts for b in summary.uncertain} == expected
    async with await journal_with(path) as journal:  # migrated on disk, the log folded
        assert user_version(path) == journal_format.JOURNAL_FORMAT_VERSION
        assert {i: b.sent_in_parts for i, b in journal.batches.items()} == expected
    assert in_parts_column(path) == {0: 1, 1: 1, 2: 0}
