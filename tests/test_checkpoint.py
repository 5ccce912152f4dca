"""The checkpoint journal's records and its load's hold on it, on real files.

A journal round-trips what a load records (in flight, settled, sticky maybe-duplicated,
exact positions) and refuses a batch whose input changed or a load it does not belong to;
one load holds it at a time, across processes, and a killed one loses no awaited record;
records are committed in groups, a failed write reaches its writer (or `aclose`); readers
summarise it while a load holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ryng_async import ConfigurationError, ResourceError
from ryng_async import checkpoint as checkpoint_module
from ryng_async.checkpoint import (
    JOURNAL_FORMAT_VERSION,
    BatchState,
    CheckpointError,
    CheckpointRefusedError,
    JournalledBatch,
    LoadIdentity,
    SQLiteJournal,
)
from ryng_async.checkpoint import _pacer as commit_pacer

pytestmark = pytest.mark.anyio

OPTIONS = b'{"name":"Spring","agentMapping":"global","agents":["a@x.com"],"customerData":{'
IDENTITY = LoadIdentity(campaign_id="42", batch_size=10, max_batch_bytes=65536, options=OPTIONS)
SETTLED_STATES = [s for s in BatchState if s is not BatchState.IN_FLIGHT]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def exists(path: Path | str) -> bool:
    return os.path.exists(path)


def open_descriptors() -> int | None:
    """How many file descriptors this process has open (None without /proc)."""
    fds = Path("/proc/self/fd")
    return len(list(fds.iterdir())) if fds.is_dir() else None


def digest(index: int) -> bytes:
    return bytes([index % 256]) * 16


def where(index: int) -> dict[str, Any]:
    """The start, count and digest of batch ``index`` in the tests' synthetic load."""
    return {"start": index * 10, "count": 10, "digest": digest(index)}


async def journal_with(path: Path, identity: LoadIdentity = IDENTITY) -> SQLiteJournal:
    return await SQLiteJournal(path).open(identity)


async def write_some(journal: SQLiteJournal) -> None:
    """Batches 0-1 accepted, 2 failed, 3 in flight."""
    for index in range(4):
        await journal.in_flight(index, **where(index), attempt=1)
    for index in (0, 1):
        await journal.settled(
            index, state=BatchState.ACCEPTED, attempts=1, status=200, message="ok"
        )
    await journal.settled(
        2, state=BatchState.FAILED, attempts=3, status=500, message="Failed to create Campaign"
    )


def test_every_public_name_is_documented() -> None:
    for name in checkpoint_module.__all__:
        value = getattr(checkpoint_module, name)
        if isinstance(value, type):
            assert value.__doc__, name
            for attribute, member in vars(value).items():
                if not attribute.startswith("_") and callable(member):
                    assert member.__doc__, f"{name}.{attribute}"
    assert checkpoint_module.__doc__
    assert sorted(checkpoint_module.__all__) == sorted(set(checkpoint_module.__all__))


# --- create, reopen, records ----------------------------------------------------------------


async def test_a_journal_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "load.journal"
    journal = SQLiteJournal(path)
    assert not exists(path)  # no I/O before open
    assert repr(journal.identity) == "None"
    async with await journal.open(IDENTITY):
        assert journal.identity == IDENTITY
        assert journal.batches == {}
        assert journal.prior(0, **where(0)) is None
        await write_some(journal)
        before = dict(journal.batches)
    assert exists(path)
    assert exists(f"{path}-lock")
    assert not exists(f"{path}-wal")  # a clean close folds the WAL into the file

    async with await SQLiteJournal(str(path)).open(IDENTITY) as again:
        assert dict(again.batches) == before
        assert again.prior(2, **where(2)) == JournalledBatch(
            index=2,
            start=20,
            count=10,
            digest=digest(2),
            state=BatchState.FAILED,
            attempts=3,
            status=500,
            message="Failed to create Campaign",
            maybe_duplicated=False,
        )
        third = again.prior(3, **where(3))
        assert third is not None
        assert third.state is BatchState.IN_FLIGHT
        assert again.prior(4, **where(4)) is None


async def test_a_journal_object_can_be_opened_again_after_close(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j")
    assert "new" in repr(journal)
    await journal.open(IDENTITY)
    assert "open" in repr(journal)
    await journal.in_flight(0, **where(0), attempt=1)
    await journal.aclose()
    await journal.aclose()  # idempotent
    assert "closed" in repr(journal)
    await journal.open(IDENTITY)
    assert journal.batches[0].state is BatchState.IN_FLIGHT
    await journal.aclose()


async def test_the_lifecycle_is_enforced(tmp_path: Path) -> None:
    journal = SQLiteJournal(tmp_path / "j")
    await journal.aclose()  # nothing to close
    with pytest.raises(CheckpointError, match="not open"):
        journal.prior(0, **where(0))
    with pytest.raises(CheckpointError, match="open the journal first"):
        async with journal:
            pass
    await journal.open(IDENTITY)
    with pytest.raises(CheckpointError, match="already open"):
        await journal.open(IDENTITY)
    await journal.aclose()
    with pytest.raises(CheckpointError, match="closed"):
        await journal.in_flight(0, **where(0), attempt=1)
    with pytest.raises(CheckpointError, match="closed"):
        journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")


async def test_settled_needs_a_journalled_batch_and_a_final_state(tmp_path: Path) -> None:
    async with await journal_with(tmp_path / "j") as journal:
        with pytest.raises(ValueError, match="batch 7 was never journalled"):
            await journal.settled(
                7, state=BatchState.ACCEPTED, attempts=1, status=200, message="ok"
            )
        # a batch never sent can be skipped without a record: a resume sends it anyway
        await journal.settled(8, state=BatchState.SKIPPED, attempts=0, status=None, message="")
        journal.settled(9, state=BatchState.SKIPPED, attempts=0, status=None, message="")
        assert 8 not in journal.batches
        assert 9 not in journal.batches
        await journal.in_flight(7, **where(7), attempt=1)
        with pytest.raises(ValueError, match="use in_flight"):
            journal.settled(7, state=BatchState.IN_FLIGHT, attempts=1, status=None, message="")
        # plain strings are accepted as states
        await journal.settled(7, state="unknown", attempts=1, status=None, message="timeout")  # type: ignore[arg-type]
        assert journal.batches[7].state is BatchState.UNKNOWN


async def test_maybe_duplicated_is_sticky(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1)
        await journal.settled(0, state=BatchState.UNKNOWN, attempts=1, status=None, message="")
        await journal.in_flight(0, **where(0), attempt=1, maybe_duplicated=True)
        await journal.settled(0, state=BatchState.FAILED, attempts=1, status=500, message="")
        await journal.in_flight(0, **where(0), attempt=1)
        await journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        assert journal.batches[0].maybe_duplicated
        await journal.in_flight(1, **where(1), attempt=1)
        await journal.settled(
            1, state=BatchState.ACCEPTED, attempts=2, status=200, message="", maybe_duplicated=True
        )
    async with await journal_with(path) as journal:
        assert journal.batches[0].maybe_duplicated
        assert journal.batches[1].maybe_duplicated
    assert SQLiteJournal.inspect(path).maybe_duplicated_leads == 20


async def test_messages_are_kept_short_and_valid_text(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        for index in (0, 1):
            await journal.in_flight(index, **where(index), attempt=1)
        await journal.settled(
            0, state=BatchState.FAILED, attempts=1, status=500, message="x" * 5000
        )
        await journal.settled(
            1, state=BatchState.FAILED, attempts=1, status=500, message="a\udc80b"
        )
        expected = {0: "x" * 497 + "...", 1: "a\\udc80b"}
        assert {i: b.message for i, b in journal.batches.items()} == expected
    async with await journal_with(path) as journal:
        assert {i: b.message for i, b in journal.batches.items()} == expected


def test_load_identity_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="campaign_id"):
        dataclasses.replace(IDENTITY, campaign_id="")
    with pytest.raises(ValueError, match="positive"):
        dataclasses.replace(IDENTITY, batch_size=0)
    with pytest.raises(ValueError, match="shard"):
        dataclasses.replace(IDENTITY, shard=(3, 3))
    assert issubclass(CheckpointRefusedError, ConfigurationError)
    assert issubclass(CheckpointError, ResourceError)


# --- a changed input ------------------------------------------------------------------------


async def test_prior_refuses_a_batch_that_changed(tmp_path: Path) -> None:
    async with await journal_with(tmp_path / "j") as journal:
        await journal.in_flight(12, start=6000, count=500, digest=b"d" * 16, attempt=1)
        with pytest.raises(
            CheckpointError,
            match=r"input changed .*: batch 12 \(leads 6000-6498\) differs from the journalled "
            r"one \(leads 6000-6499 in the journal\)",
        ):
            journal.prior(12, start=6000, count=499, digest=b"d" * 16)
        with pytest.raises(CheckpointError, match=r"batch 12 \(leads 6001-6500\)"):
            journal.prior(12, start=6001, count=500, digest=b"d" * 16)
        with pytest.raises(CheckpointError, match="same positions with other content"):
            journal.prior(12, start=6000, count=500, digest=b"e" * 16)
        with pytest.raises(CheckpointError, match="same positions with other content"):
            await journal.in_flight(12, start=6000, count=500, digest=b"e" * 16, attempt=2)
        batch = journal.prior(12, start=6000, count=500, digest=b"d" * 16)
        assert batch is not None
        assert batch.positions == "leads 6000-6499"


async def test_a_batch_keeps_its_exact_runs_and_refuses_others(tmp_path: Path) -> None:
    runs = ((6000, 2), (6003, 498))  # an invalid lead at 6002
    async with await journal_with(tmp_path / "j") as journal:
        await journal.in_flight(12, start=6000, count=500, digest=b"d" * 16, attempt=1, ranges=runs)
        batch = journal.prior(12, start=6000, count=500, digest=b"d" * 16, ranges=runs)
        assert batch is not None
        assert batch.ranges == runs
        assert batch.exact
        assert batch.positions == "leads 6000-6001, 6003-6500"
        with pytest.raises(
            CheckpointError,
            match=r"batch 12 \(leads 6000-6499\) differs from the journalled one "
            r"\(leads 6000-6001, 6003-6500 in the journal\)",
        ):
            journal.prior(12, start=6000, count=500, digest=b"d" * 16)
        with pytest.raises(ValueError, match="do not start at 6000 with 500 leads"):
            journal.prior(12, start=6000, count=500, digest=b"d" * 16, ranges=((6000, 499),))
    (read,) = SQLiteJournal.read_batches(tmp_path / "j")
    assert read.ranges == runs
    async with await journal_with(tmp_path / "k") as journal:
        await journal.in_flight(0, **where(0), attempt=1, ranges=((0, 4), (5, 6)))
        await journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
    summary = SQLiteJournal.inspect(tmp_path / "k")
    assert summary.next_position == 11  # after the last lead of the accepted batch
    assert summary.holder is None


# --- refusals at open -----------------------------------------------------------------------


def make_foreign_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.execute("INSERT INTO customers VALUES ('Ada')")
    conn.close()


def make_random_file(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 20)


def make_text_file(path: Path) -> None:
    path.write_text("number,name\n+919876543210,Max\n")


def make_sqlite_header_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)


@pytest.mark.parametrize(
    "make",
    [make_foreign_database, make_random_file, make_text_file, make_sqlite_header_garbage],
)
async def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    path = tmp_path / "data.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="is not a ryng_async checkpoint journal"):
        await journal_with(path)
    with pytest.raises(CheckpointError, match="is not a ryng_async checkpoint journal"):
        SQLiteJournal.inspect(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.db"]  # not even a lock file beside it
    # a second attempt says the same, not "in use"
    with pytest.raises(CheckpointError, match="not a ryng_async checkpoint journal"):
        await journal_with(path)


async def test_an_empty_file_or_database_becomes_a_journal(tmp_path: Path) -> None:
    empty_file = tmp_path / "empty"
    empty_file.touch()
    empty_db = tmp_path / "empty.db"
    conn = sqlite3.connect(empty_db)
    conn.execute("PRAGMA journal_mode = WAL")  # a header, no schema: a creation cut short
    conn.close()
    for path in (empty_file, empty_db):
        with pytest.raises(CheckpointError, match="empty database"):
            SQLiteJournal.inspect(path)
        async with await journal_with(path) as journal:
            await journal.in_flight(0, **where(0), attempt=1)
        assert SQLiteJournal.inspect(path).total_batches == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"campaign_id": "41"}, "campaign id '41' in the journal, '42' now"),
        ({"batch_size": 500}, "batch_size 500 in the journal, 10 now"),
        ({"max_batch_bytes": 1000}, "max_batch_bytes 1000 in the journal, 65536 now"),
        ({"options": OPTIONS + b"x"}, "campaign options differ"),
        ({"shard": (1, 4)}, "shard 1 of 4 in the journal, no shard now"),
    ],
)
async def test_a_journal_of_another_load_is_refused(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "j"
    async with await journal_with(path, dataclasses.replace(IDENTITY, **change)):
        pass
    with pytest.raises(CheckpointError, match="belongs to another load") as caught:
        await journal_with(path)
    assert message in str(caught.value)
    assert "Spring" not in str(caught.value)  # options are never dumped
    # What differs, for code to act on without parsing the words (the CLI's hint does).
    assert isinstance(caught.value, CheckpointRefusedError)
    assert caught.value.differs == set(change)


async def test_every_difference_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path, dataclasses.replace(IDENTITY, shard=(0, 2))):
        pass
    other = dataclasses.replace(IDENTITY, campaign_id="7", batch_size=3, shard=(1, 2))
    with pytest.raises(CheckpointError) as caught:
        await journal_with(path, other)
    text = str(caught.value)
    assert isinstance(caught.value, CheckpointRefusedError)
    assert caught.value.differs == {"campaign_id", "batch_size", "shard"}
    for part in ("campaign id '42' in the journal, '7' now", "batch_size 10", "shard 0 of 2"):
        assert part in text


def missing_directory(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "nowhere" / "j", "No such file or directory"


def under_a_file(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "j", "Not a directory"


def a_directory(tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "dir").mkdir()
    return tmp_path / "dir", "is a directory"


def read_only_directory(tmp_path: Path) -> tuple[Path, str]:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    return directory / "j", "Permission denied"


def read_only_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "j"
    path.touch()
    path.chmod(0o400)
    return path, "Permission denied"


root_bypasses = pytest.mark.skipif(IS_ROOT, reason="root ignores file permissions")


@pytest.mark.parametrize(
    "place",
    [
        missing_directory,
        under_a_file,
        a_directory,
        pytest.param(read_only_directory, marks=root_bypasses),
        pytest.param(read_only_file, marks=root_bypasses),
    ],
)
async def test_a_location_that_cannot_be_written_is_refused(
    tmp_path: Path, place: Callable[[Path], tuple[Path, str]]
) -> None:
    path, reason = place(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        await journal_with(path)
    assert str(path) in str(caught.value)
    assert reason in str(caught.value)


async def test_a_second_opener_in_the_same_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path):
        with pytest.raises(
            CheckpointError, match=rf"in use by another load \(pid {os.getpid()}, this process\)"
        ):
            await journal_with(path)
    async with await journal_with(path):  # released by the close
        pass


async def test_nothing_is_left_open_after_close(tmp_path: Path) -> None:
    before = open_descriptors()
    if before is None:
        pytest.skip("needs /proc")
    for _ in range(3):
        async with await journal_with(tmp_path / "j") as journal:
            await write_some(journal)
        with pytest.raises(CheckpointError):
            await journal_with(tmp_path / "j", dataclasses.replace(IDENTITY, campaign_id="1"))
    assert open_descriptors() == before


# --- another process ----------------------------------------------------------------------

CHILD = """
import sys, anyio
from ryng_async.checkpoint import BatchState, LoadIdentity, SQLiteJournal

async def main(path):
    journal = SQLiteJournal(path)
    await journal.open(LoadIdentity(campaign_id="42", batch_size=10, max_batch_bytes=65536,
                                    options=OPTIONS))
    for i in range(5):
        await journal.in_flight(i, start=i * 10, count=10, digest=bytes([i]) * 16, attempt=1)
    for i in range(3):
        await journal.settled(i, state=BatchState.ACCEPTED, attempts=1, status=200, message="ok")
    print("ready", flush=True)
    sys.stdin.read()  # held until the test closes stdin or kills this process

anyio.run(main, sys.argv[1])
""".replace("OPTIONS", repr(OPTIONS))


@asynccontextmanager
async def journal_held_by_a_child(path: Path) -> AsyncIterator[anyio.abc.Process]:
    """A process that opened the journal at ``path``, journalled 5 batches, and holds it."""
    command = [sys.executable, "-c", CHILD, str(path)]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        output = b""
        with anyio.fail_after(30):
            while b"ready" not in output:
                try:
                    output += await process.stdout.receive()
                except anyio.EndOfStream:
                    assert process.stderr is not None
                    errors = b""
                    async for chunk in process.stderr:
                        errors += chunk
                    pytest.fail(f"the child ended early: {errors.decode(errors='replace')}")
        yield process
        if process.returncode is None:
            process.kill()


def check_child_records(batches: dict[int, JournalledBatch]) -> None:
    assert sorted(batches) == [0, 1, 2, 3, 4]
    assert [b.state for b in batches.values()] == [BatchState.ACCEPTED] * 3 + [
        BatchState.IN_FLIGHT
    ] * 2


async def test_another_process_holding_the_journal_refuses_a_second_load(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with journal_held_by_a_child(path) as child:
        with pytest.raises(CheckpointError, match=rf"in use by another load \(pid {child.pid}\)"):
            await journal_with(path)
        # readers need no lock
        summary = SQLiteJournal.inspect(path)
        assert summary.batches[BatchState.ACCEPTED] == 3
        assert summary.batches[BatchState.IN_FLIGHT] == 2
        assert [b.index for b in summary.uncertain] == [3, 4]
        check_child_records({b.index: b for b in SQLiteJournal.read_batches(path)})


async def test_a_journal_whose_owner_was_killed_reopens_at_once_with_its_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    async with journal_held_by_a_child(path) as child:
        os.kill(child.pid, signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
    assert exists(f"{path}-wal")  # the commits live in the WAL: nothing checkpointed
    check_child_records({b.index: b for b in SQLiteJournal.read_batches(path)})
    async with await journal_with(path) as journal:
        check_child_records(dict(journal.batches))


BUSY_CHILD = """
import sys, anyio
from ryng_async.checkpoint import BatchState, LoadIdentity, SQLiteJournal

async def main(path):
    journal = await SQLiteJournal(path).open(LoadIdentity(
        campaign_id="42", batch_size=10, max_batch_bytes=65536, options=OPTIONS))

    async def worker(w):
        for k in range(100_000):
            i = k * 8 + w
            await journal.in_flight(i, start=i * 10, count=10, digest=bytes([i % 256]) * 16,
                                    attempt=1)
            print(f"f{i}", flush=True)
            await journal.settled(i, state=BatchState.ACCEPTED, attempts=1, status=200,
                                  message="ok")
            print(f"s{i}", flush=True)

    async with anyio.create_task_group() as tg:
        for w in range(8):
            tg.start_soon(worker, w)

anyio.run(main, sys.argv[1])
""".replace("OPTIONS", repr(OPTIONS))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_record_awaited_before_a_sigkill_is_in_the_journal(
    tmp_path: Path, seed: int
) -> None:
    # Eight tasks write as fast as they can; each prints a record once its await returned.
    path = tmp_path / "j"
    kill_after = random.Random(seed).randrange(20, 400)
    confirmed: list[str] = []
    command = [sys.executable, "-c", BUSY_CHILD, str(path)]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None
        buffer = b""
        with anyio.fail_after(60):
            while len(confirmed) < kill_after:
                try:
                    buffer += await process.stdout.receive()
                except anyio.EndOfStream:
                    pytest.fail("the child ended before it was killed")
                *lines, buffer = buffer.split(b"\n")
                confirmed += [line.decode() for line in lines]
        os.kill(process.pid, signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL
    async with await journal_with(path) as journal:
        for record in confirmed:
            batch = journal.prior(int(record[1:]), **where(int(record[1:])))
            assert batch is not None, record
            if record.startswith("s"):
                assert batch.state is BatchState.ACCEPTED, record
            else:
                assert batch.state in {BatchState.IN_FLIGHT, BatchState.ACCEPTED}, record
        assert len(journal.batches) >= len({record[1:] for record in confirmed})


# --- queued records, write failures, group commit -------------------------------------------


async def test_a_settled_record_not_awaited_is_written_by_aclose(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = await journal_with(path)
    await journal.in_flight(0, **where(0), attempt=1)
    await journal.in_flight(1, **where(1), attempt=1)
    journal.settled(0, state=BatchState.SKIPPED, attempts=1, status=None, message="cancel")
    journal.settled(1, state=BatchState.UNKNOWN, attempts=1, status=None, message="drop")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await journal.aclose()  # shielded: a cancelled close still writes and releases
    states = {b.index: b.state for b in SQLiteJournal.read_batches(path)}
    assert states == {0: BatchState.SKIPPED, 1: BatchState.UNKNOWN}


async def test_a_settled_record_not_awaited_goes_out_with_the_next_commit(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1)
        journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        await journal.in_flight(1, **where(1), attempt=1)
        states = {b.index: b.state for b in SQLiteJournal.read_batches(path)}
        assert states == {0: BatchState.ACCEPTED, 1: BatchState.IN_FLIGHT}


def drop_batches(path: Path) -> None:
    """Break the journal under its owner, as a vanished disk would."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE batch")
    conn.execute("DROP TABLE log")
    conn.commit()
    conn.close()


async def test_a_failed_write_is_raised_to_its_writer(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path) as journal:
        await journal.in_flight(0, **where(0), attempt=1)
        drop_batches(path)
        with pytest.raises(CheckpointError, match="could not write the checkpoint journal") as e:
            await journal.in_flight(1, **where(1), attempt=1)
        assert isinstance(e.value.__cause__, sqlite3.Error)


async def test_a_failed_queued_write_is_raised_by_aclose_after_releasing(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = await journal_with(path)
    await journal.in_flight(0, **where(0), attempt=1)
    drop_batches(path)
    journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
    with pytest.raises(CheckpointError, match="could not write"):
        await journal.aclose()
    await journal.aclose()  # closed all the same, and the error was given once
    with pytest.raises(CheckpointError, match=r"damaged|no such table"):
        await journal_with(path)  # not "in use": the lock was released


def count_commit_groups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each group of records the journal commits from now on, in order."""
    groups: list[int] = []
    commit = SQLiteJournal._commit

    def counting(conn: sqlite3.Connection, writes: list[Any], now: float) -> None:
        groups.append(len(writes))
        commit(conn, writes, now)

    monkeypatch.setattr(SQLiteJournal, "_commit", staticmethod(counting))
    return groups


async def test_concurrent_writes_share_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = count_commit_groups(monkeypatch)
    async with await journal_with(tmp_path / "j") as journal:

        async def batch(index: int) -> None:
            await journal.in_flight(index, **where(index), attempt=1)
            await journal.settled(
                index, state=BatchState.ACCEPTED, attempts=1, status=200, message="ok"
            )

        async with anyio.create_task_group() as tg:
            for index in range(50):
                tg.start_soon(batch, index)
        assert all(b.state is BatchState.ACCEPTED for b in journal.batches.values())
    assert sum(groups) == 100
    assert len(groups) <= 25  # grouped: far fewer commits than records


async def loop_turns_until(done: anyio.Event) -> int:
    """How many turns of the event loop pass before ``done`` is set."""
    turns = 0
    while not done.is_set():
        await anyio.lowlevel.checkpoint()
        turns += 1
        assert turns < 10_000, "never done"
    return turns


def pretend_the_loop_is(monkeypatch: pytest.MonkeyPatch, *, busy: bool) -> None:
    """Make the journal read the loop thread as always busy (CPU time = wall) or idle."""
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(commit_pacer, "thread_time", loop.time if busy else lambda: 0.0)


@pytest.mark.parametrize("busy", [False, True])
async def test_a_lone_writer_commits_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    pretend_the_loop_is(monkeypatch, busy=busy)
    async with await journal_with(tmp_path / "j") as journal:
        for index in range(5):  # one request at a time: waiting could only slow it
            committed = anyio.Event()

            async def write(index: int = index, committed: anyio.Event = committed) -> None:
                await journal.in_flight(index, **where(index), attempt=1)
                committed.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                assert await loop_turns_until(committed) <= 4
            journal.settled(index, state=BatchState.ACCEPTED, attempts=1, status=200, message="")


@pytest.mark.parametrize("busy", [False, True])
async def test_a_busy_loop_with_requests_in_flight_groups_its_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    pretend_the_loop_is(monkeypatch, busy=busy)
    groups = count_commit_groups(monkeypatch)
    async with await journal_with(tmp_path / "j") as journal:
        for index in range(4):  # four requests in flight
            await journal.in_flight(index, **where(index), attempt=1)
        groups.clear()
        # Then one new request a turn of the loop, as a load whose senders start in turn.
        writers = []
        async with anyio.create_task_group() as tg:
            for index in range(4, 24):
                done = anyio.Event()
                writers.append(done)

                async def write(index: int = index, done: anyio.Event = done) -> None:
                    await journal.in_flight(index, **where(index), attempt=1)
                    done.set()

                tg.start_soon(write)
                await anyio.lowlevel.checkpoint()
        assert all(done.is_set() for done in writers)
    assert sum(groups) == 20
    if busy:
        assert len(groups) < 10  # records of many turns shared a commit
    else:
        assert len(groups) >= 10  # an idle loop commits each turn's records at once


async def test_a_cancelled_writer_stops_waiting_and_its_record_is_still_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    written: list[int] = []
    async with await journal_with(path) as journal:
        scopes = {index: anyio.CancelScope() for index in range(6)}

        async def writer(index: int) -> None:
            with scopes[index]:
                await journal.in_flight(index, **where(index), attempt=1)
                written.append(index)

        async with anyio.create_task_group() as tg:
            for index in range(6):
                tg.start_soon(writer, index)
            await anyio.lowlevel.checkpoint()  # every writer has queued its record
            scopes[1].cancel()
            scopes[4].cancel()
        assert sorted(written) == [0, 2, 3, 5]
        # the journal still works for the others
        await journal.in_flight(6, **where(6), attempt=1)
    assert sorted(b.index for b in SQLiteJournal.read_batches(path)) == list(range(7))


async def test_the_writer_thread_is_joined_by_aclose(tmp_path: Path) -> None:
    path = tmp_path / "j"

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.endswith(str(path))]

    journal = await journal_with(path)
    assert writers()
    await journal.aclose()
    assert writers() == []  # the writer, and the checkpointer it started


async def test_aclose_waits_for_writes_under_way(tmp_path: Path) -> None:
    path = tmp_path / "j"
    journal = await journal_with(path)
    written: list[int] = []

    async def writer(index: int) -> None:
        await journal.in_flight(index, **where(index), attempt=1)
        written.append(index)

    async with anyio.create_task_group() as tg:
        for index in range(5):
            tg.start_soon(writer, index)
        tg.start_soon(journal.aclose)
        tg.start_soon(journal.aclose)
    assert sorted(written) == [0, 1, 2, 3, 4]
    assert "closed" in repr(journal)
    assert len(SQLiteJournal.read_batches(path)) == 5


# --- inspection -------------------------------------------------------------------------------


async def test_inspect_summarises_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    async with await journal_with(path, dataclasses.replace(IDENTITY, shard=None)) as journal:
        await write_some(journal)
        await journal.in_flight(4, **where(4), attempt=1)
        await journal.settled(4, state=BatchState.UNKNOWN, attempts=1, status=None, message="")
    summary = SQLiteJournal.inspect(path)
    assert summary.path == str(path)
    assert summary.format_version == JOURNAL_FORMAT_VERSION
    assert (summary.campaign_id, summary.batch_size, summary.max_batch_bytes) == ("42", 10, 65536)
    assert summary.shard is None
    assert summary.created_at <= summary.updated_at
    assert summary.created_at.tzinfo is not None
    assert dict(summary.batches) == {
        BatchState.IN_FLIGHT: 1,
        BatchState.ACCEPTED: 2,
        BatchState.FAILED: 1,
        BatchState.UNKNOWN: 1,
        BatchState.SKIPPED: 0,
    }
    assert summary.leads[BatchState.ACCEPTED] == 20
    assert (summary.total_batches, summary.total_leads) == (5, 50)
    assert summary.next_position == 20  # batch 2 failed
    assert [b.index for b in summary.uncertain] == [3, 4]
    assert summary.maybe_duplicated_leads == 0
    assert summary.size_bytes == path.stat().st_size
    failed = SQLiteJournal.read_batches(path, states=[BatchState.FAILED])
    assert [b.index for b in failed] == [2]


async def summary_after(tmp_path: Path, records: dict[int, BatchState], **change: Any) -> int:
    path = tmp_path / f"j{len(os.listdir(tmp_path))}"
    async with await journal_with(path, dataclasses.replace(IDENTITY, **change)) as journal:
        for index, state in records.items():
            await journal.in_flight(index, **where(index), attempt=1)
            if state is not BatchState.IN_FLIGHT:
                await journal.settled(index, state=state, attempts=1, status=None, message="")
    return SQLiteJournal.inspect(path).next_position


async def test_next_position_is_where_unaccepted_leads_begin(tmp_path: Path) -> None:
    ok = BatchState.ACCEPTED
    assert await summary_after(tmp_path, {}) == 0
    assert await summary_after(tmp_path, {0: ok, 1: ok}) == 20
    assert await summary_after(tmp_path, {0: ok, 1: BatchState.SKIPPED, 2: ok}) == 10
    assert await summary_after(tmp_path, {1: ok}) == 0  # batch 0 never journalled
    assert await summary_after(tmp_path, {0: ok, 2: ok, 3: BatchState.FAILED}) == 10
    # a shard journals every n-th batch: gaps are other shards' batches
    assert await summary_after(tmp_path, {1: ok, 3: ok}, shard=(1, 2)) == 40
    assert await summary_after(tmp_path, {1: ok, 3: BatchState.UNKNOWN}, shard=(1, 2)) == 30


def test_inspect_refuses_what_is_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint journal at"):
        SQLiteJournal.inspect(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="is a directory"):
        SQLiteJournal.inspect(tmp_path)
    with pytest.raises(CheckpointError, match="is a directory"):
        SQLiteJournal.read_batches(tmp_path)


# --- the whole story, generated ---------------------------------------------------------------

indexes = st.integers(0, 5)
in_flights = st.tuples(st.just("in_flight"), indexes, st.integers(1, 4), st.booleans())
settles = st.tuples(
    st.sampled_from(["settled", "nowait"]),
    indexes,
    st.sampled_from(SETTLED_STATES),
    st.integers(0, 4),
    st.none() | st.sampled_from([200, 429, 500, 503]),
    st.text(max_size=8),
    st.booleans(),
)
operations = st.lists(in_flights | settles | st.just(("reopen",)), max_size=30)


async def settle(journal: SQLiteJournal, kind: str, index: int, fields: dict[str, Any]) -> None:
    if kind == "settled":
        await journal.settled(index, **fields)
    else:
        journal.settled(index, **fields)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
async def test_any_sequence_of_records_reads_back_as_the_last_of_each_batch(
    ops: list[tuple[Any, ...]],
) -> None:
    model: dict[int, JournalledBatch] = {}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "j"
        journal = await journal_with(path)
        try:
            for op in ops:
                if op[0] == "reopen":
                    await journal.aclose()
                    journal = await journal_with(path)
                    assert dict(journal.batches) == model
                elif op[0] == "in_flight":
                    _, index, attempt, duplicated = op
                    await journal.in_flight(
                        index, **where(index), attempt=attempt, maybe_duplicated=duplicated
                    )
                    old = model.get(index)
                    model[index] = JournalledBatch(
                        index=index,
                        **where(index),
                        state=BatchState.IN_FLIGHT,
                        attempts=attempt,
                        status=None,
                        message="",
                        maybe_duplicated=duplicated or (old is not None and old.maybe_duplicated),
                    )
                else:
                    kind, index, state, attempts, status, message, duplicated = op
                    fields = {
                        "state": state,
                        "attempts": attempts,
                        "status": status,
                        "message": message,
                        "maybe_duplicated": duplicated,
                    }
                    old = model.get(index)
                    if old is None and state is BatchState.SKIPPED:
                        await settle(journal, kind, index, fields)  # nothing to record
                        continue
                    if old is None:
                        with pytest.raises(ValueError, match="never journalled"):
                            await settle(journal, kind, index, fields)
                        continue
                    await settle(journal, kind, index, fields)
                    model[index] = dataclasses.replace(
                        old,
                        state=state,
                        attempts=attempts,
                        status=status,
                        message=message.encode("utf-8", "backslashreplace").decode(),
                        maybe_duplicated=old.maybe_duplicated or duplicated,
                    )
                assert dict(journal.batches) == model
        finally:
            await journal.aclose()
        assert {b.index: b for b in SQLiteJournal.read_batches(path)} == model
        summary = SQLiteJournal.inspect(path)
        assert summary.total_batches == len(model)
        for state in BatchState:
            assert summary.batches[state] == sum(b.state is state for b in model.values())


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
@pytest.mark.parametrize("limit", [0, 8192], ids=["lock-file", "journal"])
async def test_no_room_for_a_journal_is_a_checkpoint_error_not_a_refusal(
    tmp_path: Path, limit: int
) -> None:
    # Run where the file-size limit (ulimit -f) is lowered: only that process is limited.
    path = tmp_path / "load.db"
    script = f"""
import os, resource, signal, anyio
from ryng_async import ConfigurationError
from ryng_async.checkpoint import (
    CheckpointError, CheckpointRefusedError, LoadIdentity, SQLiteJournal
)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
identity = LoadIdentity(campaign_id="42", batch_size=10, max_batch_bytes=65536, options=b"{{}}")
async def main():
    try:
        await SQLiteJournal({str(path)!r}).open(identity)
    except CheckpointError as exc:
        print(isinstance(exc, CheckpointRefusedError), isinstance(exc, ConfigurationError))
        print(exc)
anyio.run(main)
"""
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert done.returncode == 0, done.stderr.decode()
    kinds, message = done.stdout.decode().splitlines()
    assert kinds == "False False"  # a CheckpointError (a ResourceError), neither refusal
    assert str(path) in message
    assert f"the file-size limit (ulimit -f) of {limit:,} bytes is reached" in message
