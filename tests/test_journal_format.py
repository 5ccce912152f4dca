"""The journal's file format: versions refused or migrated, the log folded and replayed.

A newer format is refused and an older one migrated (on disk by a load or `resolve`, in
memory by readers); a migration that fails leaves the file as it was; a journal of every
earlier format resumes its load; the log a killed load leaves is replayed by readers and
folded into the batch table by the next owner.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import msgspec
import pytest
from conftest import TOKEN
from test_checkpoint import (
    check_child_records,
    journal_held_by_a_child,
    journal_with,
    write_some,
)
from test_resolve import unknown_journal
from test_resume import CAMPAIGN, client_for, leads, received_numbers

from ryng_async.checkpoint import JOURNAL_FORMAT_VERSION, BatchState, CheckpointError, SQLiteJournal
from ryng_async.checkpoint import _format as journal_format
from ryng_async.checkpoint import _rows as journal_rows
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytestmark = pytest.mark.anyio


def set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


async def test_a_newer_format_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path):
        pass
    set_user_version(path, 7)
    message = rf"format version 7, newer than the {JOURNAL_FORMAT_VERSION} this ryng_async reads"
    with pytest.raises(CheckpointError, match=message):
        await journal_with(path)
    with pytest.raises(CheckpointError, match=message):
        SQLiteJournal.inspect(path)


async def test_an_older_format_without_a_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path):
        pass
    set_user_version(path, 0)
    with pytest.raises(CheckpointError, match=r"format version 0, which this ryng_async \(format"):
        await journal_with(path)


async def test_a_journal_digesting_with_an_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        assert journal.digest(b"body") == journal.digest(bytearray(b"body"))
        assert len(journal.digest(b"body")) == 16
        assert journal.digest(b"body") != journal.digest(b"bodY")
    conn = sqlite3.connect(path)
    conn.execute("UPDATE load SET digest_algorithm = 'sha3-999'")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointError, match="digests batches with 'sha3-999', which this"):
        await journal_with(path)
    with pytest.raises(CheckpointError, match="not open"):
        SQLiteJournal(path).digest(b"body")


async def test_a_journal_without_its_load_record_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM load")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointError, match="damaged: no load record"):
        await journal_with(path)
    with pytest.raises(CheckpointError, match="damaged: no load record"):
        SQLiteJournal.inspect(path)


def count_rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
    finally:
        conn.close()


async def test_a_load_s_log_is_read_as_it_is_and_folded_by_the_next_owner(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with journal_held_by_a_child(path) as child:
        os.kill(child.pid, signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
    assert count_rows(path, "log") > 0  # the records of the killed run, not yet folded
    summary = SQLiteJournal.inspect(path)  # readers replay the log
    assert (summary.batches[BatchState.ACCEPTED], summary.batches[BatchState.IN_FLIGHT]) == (3, 2)
    assert summary.updated_at >= summary.created_at
    async with await journal_with(path) as journal:
        assert count_rows(path, "log") == 0  # folded by the new owner, before it sends
        assert count_rows(path, "batch") == 5
        check_child_records(dict(journal.batches))
        await journal.settled(3, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        assert count_rows(path, "log") == 1
    assert count_rows(path, "log") == 1  # a clean close leaves it for the next open
    assert SQLiteJournal.inspect(path).batches[BatchState.ACCEPTED] == 4
    async with await journal_with(path) as journal:
        assert count_rows(path, "log") == 0
        assert journal.batches[3].state is BatchState.ACCEPTED


def add_note_column(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE batch ADD COLUMN note TEXT NOT NULL DEFAULT ''")


def add_index(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX batch_state ON batch (state)")


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


CURRENT = JOURNAL_FORMAT_VERSION


@pytest.mark.parametrize("future", [CURRENT + 1, CURRENT + 2])
async def test_a_journal_of_this_version_survives_a_format_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, future: int
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await write_some(journal)
        written = dict(journal.batches)
    assert user_version(path) == JOURNAL_FORMAT_VERSION == CURRENT

    # A later ryng_async: format `future`, with a migration for each step from this one.
    steps = {CURRENT: add_note_column, CURRENT + 1: add_index}
    monkeypatch.setattr(journal_format, "JOURNAL_FORMAT_VERSION", future)
    monkeypatch.setattr(journal_format, "MIGRATIONS", {v: steps[v] for v in range(CURRENT, future)})

    summary = SQLiteJournal.inspect(path)  # read through a migrated copy in memory
    assert summary.format_version == CURRENT
    assert summary.batches[BatchState.ACCEPTED] == 2
    assert user_version(path) == CURRENT  # inspect wrote nothing

    async with await journal_with(path) as journal:
        assert dict(journal.batches) == written
        await journal.settled(3, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
    assert user_version(path) == future
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM batch WHERE note = ''").fetchone() == (4,)
    conn.close()
    assert SQLiteJournal.inspect(path).format_version == future


async def test_a_failed_migration_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await write_some(journal)

    def broken(conn: sqlite3.Connection) -> None:
        add_note_column(conn)
        conn.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(journal_format, "JOURNAL_FORMAT_VERSION", CURRENT + 1)
    monkeypatch.setattr(journal_format, "MIGRATIONS", {CURRENT: broken})
    with pytest.raises(CheckpointError, match="no such table"):
        await journal_with(path)
    monkeypatch.undo()
    assert user_version(path) == CURRENT
    async with await journal_with(path) as journal:
        assert len(journal.batches) == 4


def as_format_1(path: Path) -> None:
    """Rewrite a journal as ryng_async's first format wrote it (no digest algorithm, no log)."""
    conn = sqlite3.connect(path, isolation_level=None)
    journal_format.fold(conn)  # the records into the batch table, as format 1 kept them
    conn.execute("ALTER TABLE batch DROP COLUMN ranges")
    conn.execute("ALTER TABLE batch DROP COLUMN accepted")  # format 5's
    conn.execute("ALTER TABLE batch DROP COLUMN in_parts")  # format 5's
    conn.execute("ALTER TABLE load DROP COLUMN digest_algorithm")
    conn.execute("DROP TABLE log")
    conn.execute("DROP TABLE resolution")  # format 4's
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


async def test_a_journal_of_the_first_format_resumes_with_its_own_digests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "load.db"
    plan = FaultPlan(seed=4, rates={Fault.BAD_REQUEST: 0.3})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        # The first format digested batches with BLAKE2b-128.
        monkeypatch.setattr(journal_format, "NEW_JOURNAL_DIGEST", "blake2b-128")
        async with client_for(server) as client:
            first = await client.bulk_append(
                CAMPAIGN, leads(200), batch_size=10, checkpoint=checkpoint
            )
        monkeypatch.undo()
        assert 0 < first.accepted < 200
        as_format_1(checkpoint)
        server.faults = FaultPlan()
        async with client_for(server) as client:
            second = await client.bulk_append(
                CAMPAIGN, leads(200), batch_size=10, checkpoint=checkpoint
            )
    assert second.accepted == 200
    assert second.resumed == first.accepted  # its digests matched: no "input changed"
    assert set(received_numbers(server).values()) == {1}
    conn = sqlite3.connect(checkpoint)
    assert conn.execute("PRAGMA user_version").fetchone() == (JOURNAL_FORMAT_VERSION,)
    assert conn.execute("SELECT digest_algorithm FROM load").fetchone() == ("blake2b-128",)
    conn.close()
    fresh = tmp_path / "fresh.db"
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server) as client:
        await client.bulk_append(CAMPAIGN, leads(20), batch_size=10, checkpoint=fresh)
    conn = sqlite3.connect(fresh)
    assert conn.execute("SELECT digest_algorithm FROM load").fetchone() == ("xxh3-128",)
    conn.close()


def as_format_2(path: Path) -> None:
    """Rewrite a journal as format 2 wrote it: no ranges (start and count only), a log."""
    conn = sqlite3.connect(path, isolation_level=None)
    rows = conn.execute("SELECT records FROM log").fetchall()
    conn.execute("ALTER TABLE batch DROP COLUMN ranges")
    conn.execute("ALTER TABLE batch DROP COLUMN accepted")  # format 5's
    conn.execute("ALTER TABLE batch DROP COLUMN in_parts")  # format 5's
    conn.execute("DROP TABLE resolution")  # format 4's
    encode = msgspec.msgpack.encode
    decode = journal_rows.unpack_records
    for (records,) in rows:  # the log's records lose their ranges too
        conn.execute(
            "UPDATE log SET records = ? WHERE records = ?",
            (encode([list(record[:9]) for record in decode(records)]), records),
        )
    conn.execute("PRAGMA user_version = 2")
    conn.close()


async def test_a_journal_of_format_2_resumes_and_learns_the_exact_positions(
    tmp_path: Path,
) -> None:
    checkpoint = tmp_path / "load.db"
    rows = leads(40)
    for bad in (3, 17, 18):
        rows[bad] = {"number": "12345"}
    plan = FaultPlan(seed=4, rates={Fault.BAD_REQUEST: 0.4})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        async with client_for(server) as client:
            first = await client.bulk_append(CAMPAIGN, rows, batch_size=10, checkpoint=checkpoint)
        assert 0 < first.accepted < 37
        as_format_2(checkpoint)
        old = SQLiteJournal.read_batches(checkpoint)
        assert not any(batch.exact for batch in old)
        server.faults = FaultPlan()
        async with client_for(server) as client:
            second = await client.bulk_append(CAMPAIGN, rows, batch_size=10, checkpoint=checkpoint)
    assert second.accepted == 37
    assert second.resumed == first.accepted
    assert set(received_numbers(server).values()) == {1}
    after = SQLiteJournal.read_batches(checkpoint)
    assert all(batch.exact for batch in after)
    assert [batch.ranges for batch in after] == [
        ((0, 3), (4, 7)),
        ((11, 6), (19, 4)),
        ((23, 10),),
        ((33, 7),),
    ]
    assert [r.ranges for r in sorted(second.batches, key=lambda r: r.index)] == [
        batch.ranges for batch in after
    ]


def without_accepted_runs(conn: sqlite3.Connection) -> None:
    """Drop what format 5 added: the batch's accepted runs and its in-parts flag, in the
    table and the log."""
    conn.execute("ALTER TABLE batch DROP COLUMN accepted")
    conn.execute("ALTER TABLE batch DROP COLUMN in_parts")
    rows = conn.execute("SELECT seq, records FROM log").fetchall()
    for seq, records in rows:
        old = [list(record[:10]) for record in journal_rows.unpack_records(records)]
        conn.execute("UPDATE log SET records = ? WHERE seq = ?", (msgspec.msgpack.encode(old), seq))


async def test_a_format_3_journal_is_read_and_migrated_by_resolve(tmp_path: Path) -> None:
    path = tmp_path / "j"
    await unknown_journal(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE resolution")  # as format 3 wrote it
    without_accepted_runs(conn)
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    summary = SQLiteJournal.inspect(path)
    assert summary.format_version == 3
    assert [b.index for b in summary.uncertain] == [1, 3]
    SQLiteJournal.resolve(path, "accepted", batches=[3])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (JOURNAL_FORMAT_VERSION,)
    conn.close()
    assert [r.index for r in SQLiteJournal.inspect(path).resolved] == [3]


async def test_a_format_4_journal_and_its_log_are_migrated_with_no_runs_accepted_in_part(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await write_some(journal)  # a clean close leaves its records in the log
    before = SQLiteJournal.read_batches(path)
    assert count_rows(path, "log") > 0
    conn = sqlite3.connect(path)
    without_accepted_runs(conn)  # as format 4 wrote it: records of 10 fields
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    summary = SQLiteJournal.inspect(path)  # migrated in memory, its log records too
    assert summary.format_version == 4
    assert (summary.leads[BatchState.ACCEPTED], summary.leads[BatchState.IN_FLIGHT]) == (20, 10)
    assert summary.accepted_in_part == ()
    assert SQLiteJournal.read_batches(path) == before
    assert all(batch.accepted_ranges == () for batch in before)
    assert user_version(path) == 4  # a reader writes nothing
    async with await journal_with(path) as journal:  # migrated on disk, the log folded
        assert user_version(path) == JOURNAL_FORMAT_VERSION
        assert count_rows(path, "log") == 0
        assert list(journal.batches.values()) == before
        journal.part_accepted(3, [(30, 5)])
    assert SQLiteJournal.read_batches(path)[3].accepted_ranges == ((30, 5),)
