"""Reading a journal without a load: `inspect`, `read_batches`, `next_position`.

Readers take no lock and write nothing, so they work while a load holds the journal:
they read the batch table and replay the log on top of it, and read an older format
through a migrated copy in memory.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from types import MappingProxyType

from .._runs import subtract_runs
from .._sqlite import connect_read_only, holder
from ._format import (
    NOT_A_JOURNAL,
    format_version,
    load_record,
    migrate,
    outdated,
    read_rows,
)
from ._records import (
    BatchState,
    CheckpointRefusedError,
    Decision,
    JournalledBatch,
    JournalSummary,
    Resolution,
)
from ._rows import Row, batch_from_row, parse_ranges, parse_runs

__all__ = [
    "connect_for_reading",
    "inspect",
    "next_position",
    "read_batches",
    "read_summary",
]


def next_position(ordered: Sequence[Row], *, sharded: bool) -> int:
    """Every valid lead before this input position was accepted (see `JournalSummary`).

    ``ordered``: the journal's batch rows by index. Unsharded, a batch index missing from
    the journal counts as not accepted (its leads were never sent).
    """
    position = 0
    expected = 0
    for index, start, count, _, state, _, _, _, _, ranges, accepted, _ in ordered:
        if not sharded and index != expected:
            break  # a batch never journalled before this one: its leads were not sent
        runs = parse_ranges(start, count, ranges)
        if state != BatchState.ACCEPTED:
            open_runs = subtract_runs(runs, parse_runs(accepted)) if accepted else runs
            if open_runs or not runs:  # past the runs it had accepted in part, if any
                return open_runs[0][0] if open_runs else start
        first, length = runs[-1]
        position = first + length
        expected = index + 1
    return position


def read_summary(conn: sqlite3.Connection, path: str, version: int) -> JournalSummary:
    """The `JournalSummary` of the journal on ``conn`` (of format ``version`` on disk)."""
    row = load_record(
        conn,
        path,
        "campaign_id, batch_size, max_batch_bytes, shard_index, shard_count, created_at,"
        " updated_at",
    )
    campaign_id, batch_size, max_batch_bytes, shard_index, shard_count, created, updated = row
    shard = None if shard_index is None else (shard_index, shard_count)
    rows, last = read_rows(conn)
    if last is not None:
        updated = max(updated, last)
    ordered = [rows[index] for index in sorted(rows)]
    batches = dict.fromkeys(BatchState, 0)
    leads = dict.fromkeys(BatchState, 0)
    duplicated = 0
    in_part = []
    for row in ordered:
        count, state, maybe_duplicated, accepted = row[2], BatchState(row[4]), row[8], row[10]
        batches[state] += 1
        if accepted and state is not BatchState.ACCEPTED:
            batch = batch_from_row(row)
            in_part.append(batch)
            leads[BatchState.ACCEPTED] += count - batch.open_count
            count = batch.open_count
        leads[state] += count
        duplicated += row[2] if maybe_duplicated else 0
    uncertain = tuple(
        batch_from_row(r) for r in ordered if r[4] in {BatchState.IN_FLIGHT, BatchState.UNKNOWN}
    )
    return JournalSummary(
        path=path,
        format_version=version,
        campaign_id=campaign_id,
        batch_size=batch_size,
        max_batch_bytes=max_batch_bytes,
        shard=shard,
        created_at=datetime.fromtimestamp(created, UTC),
        updated_at=datetime.fromtimestamp(updated, UTC),
        batches=MappingProxyType(batches),
        leads=MappingProxyType(leads),
        maybe_duplicated_leads=duplicated,
        next_position=next_position(ordered, sharded=shard is not None),
        uncertain=uncertain,
        size_bytes=sum(
            os.path.getsize(name) for name in (path, path + "-wal") if os.path.exists(name)
        ),
        holder=holder(path),
        resolved=_read_resolutions(conn),
        accepted_in_part=tuple(in_part),
    )


def _read_resolutions(conn: sqlite3.Connection) -> tuple[Resolution, ...]:
    return tuple(
        Resolution(
            index=index,
            decision=Decision(decision),
            at=datetime.fromtimestamp(at, UTC),
            note=note,
            previous_state=BatchState(previous),
            ranges=parse_ranges(0, 0, ranges),
        )
        for index, decision, at, note, previous, ranges in conn.execute(
            "SELECT idx, decision, at, note, previous_state, ranges FROM resolution ORDER BY seq"
        )
    )


def connect_for_reading(path: str) -> tuple[sqlite3.Connection, int]:
    """A connection to the journal at ``path`` in the current format, and its own version.

    Needs no lock and writes nothing of its own: an older journal is migrated in a copy in
    memory, never on disk.
    """
    if os.path.isdir(path):
        raise CheckpointRefusedError(f"the checkpoint path {path!r} is a directory")
    if not os.path.exists(path):
        raise CheckpointRefusedError(f"no checkpoint journal at {path!r}")
    try:
        conn = connect_read_only(path)
    except sqlite3.Error as exc:
        raise CheckpointRefusedError(f"cannot open the checkpoint journal {path!r}: {exc}") from exc
    try:
        return _current_for_reading(conn, path)
    except BaseException:
        conn.close()
        raise


def _current_for_reading(conn: sqlite3.Connection, path: str) -> tuple[sqlite3.Connection, int]:
    version = format_version(conn, path)
    if version is None:
        raise CheckpointRefusedError(f"{path!r} {NOT_A_JOURNAL} (it is an empty database)")
    if outdated(version):
        copy = sqlite3.connect(":memory:", isolation_level=None)
        conn.backup(copy)
        conn.close()
        migrate(copy, version)
        return copy, version
    return conn, version


def inspect(path: str | os.PathLike[str]) -> JournalSummary:
    """`SQLiteJournal.inspect`: summarise the journal at ``path`` (blocking, no lock)."""
    name = os.fspath(path)
    conn, version = connect_for_reading(name)
    try:
        return read_summary(conn, name, version)
    except sqlite3.Error as exc:
        raise CheckpointRefusedError(f"cannot read the checkpoint journal {name!r}: {exc}") from exc
    finally:
        conn.close()


def read_batches(
    path: str | os.PathLike[str], *, states: Collection[BatchState] | None = None
) -> list[JournalledBatch]:
    """`SQLiteJournal.read_batches`: the batches at ``path`` (blocking, no lock)."""
    name = os.fspath(path)
    conn, _ = connect_for_reading(name)
    try:
        rows, _ = read_rows(conn)
        wanted = None if states is None else {BatchState(s).value for s in states}
        return [
            batch_from_row(rows[index])
            for index in sorted(rows)
            if wanted is None or rows[index][4] in wanted
        ]
    except sqlite3.Error as exc:
        raise CheckpointRefusedError(f"cannot read the checkpoint journal {name!r}: {exc}") from exc
    finally:
        conn.close()
