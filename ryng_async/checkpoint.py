"""The checkpoint journal of a bulk load: what was sent, what came back, in an SQLite file.

A load journals each batch as in flight before its request is written and its outcome as
soon as it is known, so a load killed at any instant can be run again without losing or
resending a lead. The journal holds no lead content: a batch is its index, the input
position of its first lead, its lead count, its leads' exact input positions (runs of
consecutive positions, when invalid or deduplicated leads fall between them) and a digest
of its encoded body. Its size grows with batches, never with leads.

The file is an SQLite database (the standard library's ``sqlite3``) in WAL mode: a process
killed at any instant, even by SIGKILL, leaves a consistent journal. One load at a time owns
it, by an OS advisory lock on the sidecar file ``<path>-lock`` that the OS releases when the
owner dies; readers (`SQLiteJournal.inspect`) need no lock and read while a load runs.

Records are committed on the event loop's thread, in groups: the records queued during one
turn of the loop are committed together at its end, packed into one row of a log table (one
short insert a commit, however many records), and on a busy loop (its thread's CPU time
near the wall time) with several requests in flight a commit waits a few milliseconds for
the records of the next requests, so commits stay a small share of the loop's time. The
next open folds the log into the batch table; readers replay it on top of that table.

In WAL mode with ``synchronous=NORMAL`` a commit appends to the WAL without an fsync (tens
of microseconds), far cheaper than a hand-off to a thread, which on a busy loop waits up
to the interpreter's 5 ms switch interval for the GIL twice a commit. The slow part,
copying the WAL into the database and syncing it, runs in a checkpointer thread of its
own. A commit is durable against a killed process; an OS crash or power cut can lose the
last commits, never corrupt the journal. Like the rest of the SDK, it runs on asyncio.

For example:

    journal = SQLiteJournal("load-42.journal")
    async with await journal.open(identity):
        digest = journal.digest(body)  # the batch's encoded request body
        seen = journal.prior(0, start=0, count=500, digest=digest)
        await journal.in_flight(0, start=0, count=500, digest=digest, attempt=1)
        ...  # send the batch
        await journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="ok")
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import hashlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Self

import anyio
import msgspec
import xxhash

from ._exceptions import ConfigurationError, preview

__all__ = [
    "JOURNAL_FORMAT_VERSION",
    "BatchState",
    "CheckpointError",
    "Decision",
    "JournalSummary",
    "JournalledBatch",
    "LoadIdentity",
    "Resolution",
    "SQLiteJournal",
]

JOURNAL_FORMAT_VERSION: int = 4
"""The layout this version writes. Older journals are migrated on open; newer are refused.

1: the first layout (batch digests by BLAKE2b-128). 2: the load records its digest
algorithm (new journals use XXH3-128, about 40x cheaper a batch; a journal of format 1
keeps BLAKE2b, so its resumes still match), and a load appends its records to a log
table, one row a commit, folded into the batch table by the next open. 3: a batch records
its leads' exact input positions (``ranges``); a batch of an older journal has none until
a load meets it again (its ``start`` and ``count`` may span invalid leads). 4: the
decisions an operator recorded on unknown batches (`SQLiteJournal.resolve`).
"""

# PRAGMA application_id: "RYNG" in ASCII, so `file` and sqlite tools can tell our journals.
_APPLICATION_ID = 0x52594E47
_MESSAGE_LIMIT = 500
_BUSY_TIMEOUT = 10.0
# Keeps the WAL file from staying large after a burst; SQLite truncates it to this on reset.
_WAL_SIZE_LIMIT = 4 * 1024 * 1024
# The checkpointer thread copies the WAL into the database every this many commits, so
# the writer's own automatic checkpoint (SQLite's default, every 1000 pages), which would
# copy and sync on the event loop's thread, finds little or nothing left to copy.
_CHECKPOINT_EVERY = 64
# Group commit on a busy loop (see SQLiteJournal._pace).
_BUSY = 0.8
_SPACING = 40
_MAX_WAIT = 0.005
_thread_time = time.thread_time  # the loop thread's CPU time (a seam for the tests)
_WRITER_AUTOCHECKPOINT_PAGES = 1000
_NOT_A_JOURNAL = "is not a ryng_async checkpoint journal"

# A batch digest tells a changed input from the journalled one; nothing adversarial
# writes the input, so a fast non-cryptographic 128-bit hash does.
_DIGESTS: dict[str, Callable[[bytes | bytearray | memoryview], bytes]] = {
    "xxh3-128": xxhash.xxh3_128_digest,
    "blake2b-128": lambda body: hashlib.blake2b(body, digest_size=16).digest(),
}
_NEW_JOURNAL_DIGEST = "xxh3-128"


class CheckpointError(ConfigurationError):
    """The checkpoint journal cannot be used.

    Raised by `SQLiteJournal.open` before anything is sent (the message says what differs:
    another load, a changed input, a foreign file, a newer format, an unwritable location,
    another process using it), by `SQLiteJournal.prior` and `SQLiteJournal.in_flight` when
    the input changed, and by a write that failed (disk full, file removed).
    """


class BatchState(enum.StrEnum):
    """What the journal knows of a batch."""

    IN_FLIGHT = "in_flight"
    """A request for it was about to be written, and no outcome followed: it may be in Ryng."""
    ACCEPTED = "accepted"
    """Appended by Ryng."""
    FAILED = "failed"
    """A definite error: not appended."""
    UNKNOWN = "unknown"
    """No definite answer: it may or may not have been appended."""
    SKIPPED = "skipped"
    """Not sent (cancelled, aborted or stopped first)."""


class Decision(enum.StrEnum):
    """What an operator found of an unknown batch (`SQLiteJournal.resolve`)."""

    ACCEPTED = "accepted"
    """Its leads are in Ryng: the next run counts the batch accepted and sends nothing."""
    NOT_RECEIVED = "not-received"
    """Its leads are not in Ryng: the next run sends it, not as a maybe-duplicated resend."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """A decision recorded on a batch that was in flight or unknown.

    Attributes:
        index: the batch's number in the load.
        decision: what was decided.
        at: when (UTC).
        note: the operator's note ("" if none).
        previous_state: the batch's state before the decision (in flight or unknown).
        ranges: the batch's leads' input positions, as ``(start, count)`` runs.
    """

    index: int
    decision: Decision
    at: datetime
    note: str
    previous_state: BatchState
    ranges: tuple[tuple[int, int], ...]

    @property
    def positions(self) -> str:
        """Its lead positions for messages, e.g. ``"leads 6000-6499"``."""
        return "leads " + _describe(self.ranges)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadIdentity:
    """What makes two runs the same load; a journal is refused for any other.

    Attributes:
        campaign_id: the campaign the leads go to.
        batch_size: most leads in a batch.
        max_batch_bytes: most encoded bytes in a request body.
        options: the canonical encoding of the campaign options (the request envelope
            without leads). Compared byte for byte; the journal keeps only its SHA-256,
            since callback URLs may carry secrets.
        shard: ``(index, count)`` when this worker sends one shard of the input.
    """

    campaign_id: str
    batch_size: int
    max_batch_bytes: int
    options: bytes
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.campaign_id:
            raise ValueError("campaign_id must be a non-empty string")
        if self.batch_size < 1 or self.max_batch_bytes < 1:
            raise ValueError("batch_size and max_batch_bytes must be positive")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count: {self.shard}")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalledBatch:
    """One batch as the journal holds it.

    Attributes:
        index: the batch's number in the load, from 0.
        start: input position of its first lead.
        count: leads in it.
        ranges: its leads' input positions exactly, as ``(start, count)`` runs in input
            order (one run when they are consecutive).
        exact: ``ranges`` is known exactly; False for a batch recorded by a journal of
            format 2 or older and not met by a load since (then ``ranges`` is
            ``((start, count),)``, which may span invalid or deduplicated leads).
        digest: digest of its encoded body, as the load computed it.
        state: the last state recorded.
        attempts: requests sent for it by the run that recorded the state.
        status: the last HTTP status received, or None.
        message: the server's message or a description of the failure (cut to 500
            characters).
        maybe_duplicated: it may have reached Ryng more than once (sticky: once set, it stays).
    """

    index: int
    start: int
    count: int
    digest: bytes
    state: BatchState
    attempts: int
    status: int | None
    message: str
    maybe_duplicated: bool
    ranges: tuple[tuple[int, int], ...] = ()
    exact: bool = True

    def __post_init__(self) -> None:
        if not self.ranges and self.count:
            object.__setattr__(self, "ranges", ((self.start, self.count),))

    @property
    def positions(self) -> str:
        """Its lead positions for messages, e.g. ``"leads 6000-6499"`` or ``"leads 0-1, 3-4"``."""
        return "leads " + _describe(self.ranges)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalSummary:
    """What a journal says, read without disturbing a load that may hold it.

    Attributes:
        path: the journal's path as given.
        format_version: its format version (before any migration).
        campaign_id: the campaign of its load.
        batch_size: the load's batch size.
        max_batch_bytes: the load's byte limit per request.
        shard: the load's shard, or None.
        created_at: when the journal was created (UTC).
        updated_at: when it was last written (UTC).
        batches: batches by state (every state present, zero if none).
        leads: leads by state (every state present, zero if none).
        maybe_duplicated_leads: leads of batches that may have reached Ryng twice.
        next_position: every valid lead before this input position was accepted: the start
            of the first batch, by index, that is not accepted, else the position after the
            last accepted batch's leads (leads from there on, if any, were never sent).
            In an unsharded journal a batch index missing from the journal counts as not
            accepted.
        uncertain: batches in flight or unknown: they may or may not be in Ryng; check
            their leads there before sending them again.
        size_bytes: bytes on disk (the database and its WAL file).
        holder: the process id of the load holding the journal now, or None if no load
            does: batches in flight then belong to a run that stopped (they are unknown,
            and the next run reports them so); with a holder they may be in flight now.
            0 if a load holds it but its id cannot be read.
        resolved: the decisions recorded on unknown batches (`SQLiteJournal.resolve`), in
            the order they were made.
    """

    path: str
    format_version: int
    campaign_id: str
    batch_size: int
    max_batch_bytes: int
    shard: tuple[int, int] | None
    created_at: datetime
    updated_at: datetime
    batches: Mapping[BatchState, int]
    leads: Mapping[BatchState, int]
    maybe_duplicated_leads: int
    next_position: int
    uncertain: tuple[JournalledBatch, ...]
    size_bytes: int
    holder: int | None = None
    resolved: tuple[Resolution, ...] = ()

    @property
    def total_batches(self) -> int:
        """Batches in the journal."""
        return sum(self.batches.values())

    @property
    def total_leads(self) -> int:
        """Leads of the batches in the journal."""
        return sum(self.leads.values())


# --- the layout -------------------------------------------------------------------------

_SCHEMA = (
    """CREATE TABLE load (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        campaign_id TEXT NOT NULL,
        batch_size INTEGER NOT NULL,
        max_batch_bytes INTEGER NOT NULL,
        options_sha256 BLOB NOT NULL,
        shard_index INTEGER,
        shard_count INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        digest_algorithm TEXT NOT NULL
    )""",
    """CREATE TABLE batch (
        idx INTEGER PRIMARY KEY,
        start INTEGER NOT NULL,
        count INTEGER NOT NULL,
        digest BLOB NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('in_flight', 'accepted', 'failed', 'unknown', 'skipped')),
        attempts INTEGER NOT NULL,
        status INTEGER,
        message TEXT NOT NULL,
        maybe_duplicated INTEGER NOT NULL,
        ranges TEXT
    )""",
)
# ``batch.ranges`` (format 3): '' when its leads are consecutive from ``start``, else runs
# of positions 'first-last,first-last'; NULL for a batch an older format recorded.
# A load appends its records here, one row a commit (format 2): one short insert however
# many records a commit holds. Folded into `batch` by the next open (readers replay it).
_LOG_SCHEMA = """CREATE TABLE log (
        seq INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        records BLOB NOT NULL
    )"""

# The decisions recorded on unknown batches (format 4), one row each, in order.
_RESOLUTION_SCHEMA = """CREATE TABLE resolution (
        seq INTEGER PRIMARY KEY,
        idx INTEGER NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('accepted', 'not-received')),
        at REAL NOT NULL,
        note TEXT NOT NULL,
        previous_state TEXT NOT NULL,
        ranges TEXT NOT NULL
    )"""

_Migration = Callable[[sqlite3.Connection], None]


def _to_format_2(conn: sqlite3.Connection) -> None:
    """1 -> 2: record the digest algorithm (format 1 used BLAKE2b-128); add the log."""
    conn.execute("ALTER TABLE load ADD COLUMN digest_algorithm TEXT NOT NULL DEFAULT 'blake2b-128'")
    conn.execute(_LOG_SCHEMA)


# version -> the function that turns a journal of that version into one of version + 1,
# inside the transaction that then sets the new user_version. Add one with each new layout.
def _to_format_3(conn: sqlite3.Connection) -> None:
    """2 -> 3: a batch records its leads' exact input positions (NULL: not known yet)."""
    conn.execute("ALTER TABLE batch ADD COLUMN ranges TEXT")
    old = msgspec.msgpack.Decoder(
        list[tuple[int, int, int, bytes, str, int, int | None, str, bool]]
    ).decode
    for seq, records in conn.execute("SELECT seq, records FROM log").fetchall():
        upgraded = [(*record, None) for record in old(records)]
        conn.execute("UPDATE log SET records = ? WHERE seq = ?", (_pack_records(upgraded), seq))


def _to_format_4(conn: sqlite3.Connection) -> None:
    """3 -> 4: a table for the decisions recorded on unknown batches."""
    conn.execute(_RESOLUTION_SCHEMA)


_MIGRATIONS: dict[int, _Migration] = {1: _to_format_2, 2: _to_format_3, 3: _to_format_4}

# Folding the log: one statement upserts up to _ROWS_PER_STATEMENT rows.
_UPSERT_HEAD = (
    "INSERT INTO batch (idx, start, count, digest, state, attempts, status, message,"
    " maybe_duplicated, ranges) VALUES "
)
_UPSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_TAIL = """
    ON CONFLICT (idx) DO UPDATE SET
        start = excluded.start, count = excluded.count, digest = excluded.digest,
        state = excluded.state, attempts = excluded.attempts, status = excluded.status,
        message = excluded.message,
        maybe_duplicated = batch.maybe_duplicated OR excluded.maybe_duplicated,
        ranges = coalesce(excluded.ranges, batch.ranges)
"""
# Rows per statement: 10 parameters a row stays under SQLite's 32,766 (and under the 999
# of builds older than 3.32 at 99 rows).
_ROWS_PER_STATEMENT = 99
_UPSERTS = [""] + [  # by row count
    _UPSERT_HEAD + ", ".join([_UPSERT_ROW] * rows) + _UPSERT_TAIL
    for rows in range(1, _ROWS_PER_STATEMENT + 1)
]
# New journals use small pages: a commit appends each page it changed to the WAL, and a
# commit adds a few hundred bytes to the log.
_PAGE_SIZE = 1024
_LOG_INSERT = "INSERT INTO log (at, records) VALUES (?, ?)"
_SELECT_BATCHES = (
    "SELECT idx, start, count, digest, state, attempts, status, message, maybe_duplicated,"
    " ranges FROM batch"
)

# A batch row: idx, start, count, digest, state, attempts, status, message, maybe_duplicated,
# ranges (as in the table).
_Write = tuple[int, int, int, bytes, str, int, int | None, str, bool, str | None]
_IN_FLIGHT = str(BatchState.IN_FLIGHT)
_UNKNOWN = str(BatchState.UNKNOWN)
_pack_records = msgspec.msgpack.Encoder().encode
_unpack_records = msgspec.msgpack.Decoder(
    list[tuple[int, int, int, bytes, str, int, int | None, str, bool, str | None]]
).decode
# A record and the future its writer awaits (None for a record queued without waiting).
_Queued = tuple[_Write, "asyncio.Future[None] | None"]


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def _ranges_text(start: int, count: int, ranges: Sequence[tuple[int, int]] | None) -> str:
    """A batch's runs of positions as the journal keeps them ('' when consecutive)."""
    if ranges is None or len(ranges) == 1:
        if ranges is not None and tuple(ranges[0]) != (start, count):
            raise ValueError(f"ranges {list(ranges)} do not start at {start} with {count} leads")
        return ""
    if ranges[0][0] != start or sum(run[1] for run in ranges) != count:
        raise ValueError(f"ranges {list(ranges)} do not start at {start} with {count} leads")
    return ",".join(f"{first}-{first + length - 1}" for first, length in ranges)


def _parse_ranges(start: int, count: int, text: str | None) -> tuple[tuple[int, int], ...]:
    if not text:
        return ((start, count),) if count else ()
    runs = []
    for run in text.split(","):
        first, _, last = run.partition("-")
        runs.append((int(first), int(last) - int(first) + 1))
    return tuple(runs)


def _describe(ranges: Sequence[tuple[int, int]]) -> str:
    """``"0-1, 3-4"``: runs of positions, first and last of each."""
    return ", ".join(
        str(first) if length == 1 else f"{first}-{first + length - 1}" for first, length in ranges
    )


def _batch_from_row(row: tuple[Any, ...]) -> JournalledBatch:
    index, start, count, digest, state, attempts, status, message, duplicated, ranges = row
    return JournalledBatch(
        index=index,
        start=start,
        count=count,
        digest=bytes(digest),
        state=BatchState(state),
        attempts=attempts,
        status=status,
        message=sys.intern(message),  # most batches share a few messages
        maybe_duplicated=bool(duplicated),
        ranges=_parse_ranges(start, count, ranges),
        exact=ranges is not None,
    )


def _row_from_sql(row: tuple[Any, ...]) -> _Write:
    index, start, count, digest, state, attempts, status, message, duplicated, ranges = row
    return (
        index,
        start,
        count,
        bytes(digest),
        str(BatchState(state)),
        attempts,
        status,
        sys.intern(message),
        bool(duplicated),
        ranges,
    )


class _BatchesView(Mapping[int, JournalledBatch]):
    """The journal's rows as `JournalledBatch` objects, made on access (a live view)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[int, _Write]) -> None:
        self._rows = rows

    def __getitem__(self, index: int) -> JournalledBatch:
        return _batch_from_row(self._rows[index])

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


def _replay(rows: dict[int, _Write], conn: sqlite3.Connection) -> float | None:
    """Apply the log to ``rows`` in order; return the time of its last commit, if any.

    The last record of a batch wins, except ``maybe_duplicated``, which sticks.
    """
    last = None
    for at, records in conn.execute("SELECT at, records FROM log ORDER BY seq"):
        for record in _unpack_records(records):
            known = rows.get(record[0])
            sticky = known is not None and known[8] and not record[8]
            if record[9] is None and known is not None and known[9] is not None:
                record = (*record[:9], known[9])  # noqa: PLW2901 - the runs already known
            rows[record[0]] = (*record[:8], True, record[9]) if sticky else record
        last = at
    return last


def _read_rows(conn: sqlite3.Connection) -> tuple[dict[int, _Write], float | None]:
    """Every batch row (the table, then the log on top), and the log's last commit time."""
    rows = {row[0]: row for row in map(_row_from_sql, conn.execute(_SELECT_BATCHES))}
    return rows, _replay(rows, conn)


def _fold(conn: sqlite3.Connection) -> None:
    """Move the log's records into the batch table, in one transaction."""
    if conn.execute("SELECT 1 FROM log LIMIT 1").fetchone() is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        folded: dict[int, _Write] = {}
        last = _replay(folded, conn)
        rows = [folded[index] for index in sorted(folded)]
        for first in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[first : first + _ROWS_PER_STATEMENT]
            conn.execute(_UPSERTS[len(chunk)], [value for row in chunk for value in row])
        conn.execute("DELETE FROM log")
        if last is not None:
            conn.execute("UPDATE load SET updated_at = max(updated_at, ?)", (last,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _clean_message(message: str) -> str:
    if len(message) <= _MESSAGE_LIMIT and message.isascii():
        return message  # the common case, checked without encoding
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: SQLite text must be valid UTF-8
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message


def _format_version(conn: sqlite3.Connection, path: str) -> int | None:
    """Check that ``conn`` is a journal this version can use; None for an empty database."""
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}:
            raise CheckpointError(f"{path!r} {_NOT_A_JOURNAL} ({exc})") from exc
        raise CheckpointError(f"cannot read the checkpoint journal {path!r}: {exc}") from exc
    if application_id == 0 and version == 0 and objects == 0:
        return None  # an empty database (a fresh file, or a creation cut short)
    if application_id != _APPLICATION_ID:
        raise CheckpointError(f"{path!r} {_NOT_A_JOURNAL} (it is another SQLite database)")
    current = JOURNAL_FORMAT_VERSION
    if version > current:
        raise CheckpointError(
            f"the checkpoint journal {path!r} has format version {version}, newer than the "
            f"{current} this ryng_async reads: it was written by a newer ryng_async"
        )
    if any(step not in _MIGRATIONS for step in range(version, current)):
        raise CheckpointError(
            f"the checkpoint journal {path!r} has format version {version}, which this "
            f"ryng_async (format version {current}) cannot migrate"
        )
    return int(version)


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, JOURNAL_FORMAT_VERSION):
            _MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version = {int(JOURNAL_FORMAT_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _read_summary(conn: sqlite3.Connection, path: str, version: int) -> JournalSummary:
    row = conn.execute(
        "SELECT campaign_id, batch_size, max_batch_bytes, shard_index, shard_count,"
        " created_at, updated_at FROM load"
    ).fetchone()
    if row is None:
        raise CheckpointError(f"the checkpoint journal {path!r} is damaged: no load record")
    campaign_id, batch_size, max_batch_bytes, shard_index, shard_count, created, updated = row
    shard = None if shard_index is None else (shard_index, shard_count)
    rows, last = _read_rows(conn)
    if last is not None:
        updated = max(updated, last)
    ordered = [rows[index] for index in sorted(rows)]
    batches = dict.fromkeys(BatchState, 0)
    leads = dict.fromkeys(BatchState, 0)
    duplicated = 0
    for _, _, count, _, state, _, _, _, maybe_duplicated, _ in ordered:
        batches[BatchState(state)] += 1
        leads[BatchState(state)] += count
        duplicated += count if maybe_duplicated else 0
    next_position = 0
    expected = 0
    for index, start, count, _, state, _, _, _, _, ranges in ordered:
        if shard is None and index != expected:
            break  # a batch never journalled before this one: its leads were not sent
        if state != BatchState.ACCEPTED:
            next_position = start
            break
        first, length = _parse_ranges(start, count, ranges)[-1]
        next_position = first + length
        expected = index + 1
    uncertain = tuple(
        _batch_from_row(r) for r in ordered if r[4] in {BatchState.IN_FLIGHT, BatchState.UNKNOWN}
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
        next_position=next_position,
        uncertain=uncertain,
        size_bytes=sum(
            os.path.getsize(name) for name in (path, path + "-wal") if os.path.exists(name)
        ),
        holder=_holder(path),
        resolved=_read_resolutions(conn),
    )


def _read_resolutions(conn: sqlite3.Connection) -> tuple[Resolution, ...]:
    return tuple(
        Resolution(
            index=index,
            decision=Decision(decision),
            at=datetime.fromtimestamp(at, UTC),
            note=note,
            previous_state=BatchState(previous),
            ranges=_parse_ranges(0, 0, ranges),
        )
        for index, decision, at, note, previous, ranges in conn.execute(
            "SELECT idx, decision, at, note, previous_state, ranges FROM resolution ORDER BY seq"
        )
    )


def _connect_for_reading(path: str) -> tuple[sqlite3.Connection, int]:
    """A connection to the journal at ``path`` in the current format, and its own version.

    Needs no lock and writes nothing of its own: an older journal is migrated in a copy in
    memory, never on disk.
    """
    if os.path.isdir(path):
        raise CheckpointError(f"the checkpoint path {path!r} is a directory")
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint journal at {path!r}")
    try:
        conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT)
    except sqlite3.Error as exc:
        raise CheckpointError(f"cannot open the checkpoint journal {path!r}: {exc}") from exc
    try:
        return _current_for_reading(conn, path)
    except BaseException:
        conn.close()
        raise


def _current_for_reading(conn: sqlite3.Connection, path: str) -> tuple[sqlite3.Connection, int]:
    version = _format_version(conn, path)
    if version is None:
        raise CheckpointError(f"{path!r} {_NOT_A_JOURNAL} (it is an empty database)")
    if version < JOURNAL_FORMAT_VERSION:
        copy = sqlite3.connect(":memory:", isolation_level=None)
        conn.backup(copy)
        conn.close()
        _migrate(copy, version)
        return copy, version
    return conn, version


def _precheck(path: str) -> None:
    """Refuse a file that is not a journal this version can use, without writing."""
    try:
        conn = sqlite3.connect(f"file:{_uri_path(path)}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT)
    except sqlite3.Error:  # pragma: no cover - reported by the writable open that follows
        return
    try:
        _format_version(conn, path)
    finally:
        conn.close()


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


# --- ownership ----------------------------------------------------------------------------


def _lock(path: str) -> int:
    """Take the journal's sidecar lock without waiting; return its file descriptor."""
    if sys.platform == "win32":  # pragma: no cover - POSIX advisory locks only
        raise CheckpointError("checkpoint journals need POSIX file locks (fcntl)")
    import fcntl

    lock_path = path + "-lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CheckpointError(
            f"cannot use {path!r} as a checkpoint journal: cannot create its lock file "
            f"{lock_path!r}: {_os_reason(exc)}"
        ) from exc
    try:
        _flock_briefly(fd, fcntl.LOCK_EX)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if holder == str(os.getpid()):
            holder += ", this process"
        who = f" (pid {holder})" if holder else ""
        raise CheckpointError(
            f"the checkpoint journal {path!r} is in use by another load{who}; "
            "wait for it to end, or give this load another checkpoint path"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise CheckpointError(
            f"cannot lock the checkpoint journal {path!r} ({lock_path!r}): {_os_reason(exc)}"
        ) from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _flock_briefly(fd: int, how: int) -> None:
    """Take a lock without waiting, but for the instant a reader probing it holds it."""
    import fcntl

    for _ in range(_LOCK_TRIES - 1):
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(_LOCK_RETRY)
        else:
            return
    fcntl.flock(fd, how | fcntl.LOCK_NB)


_LOCK_TRIES = 3
_LOCK_RETRY = 0.02


def _holder(path: str) -> int | None:
    """The pid of the load that holds the journal's lock now, or None if none does.

    Probes the lock with a shared lock for an instant (a load taking the journal in that
    instant retries); 0 if it is held but the pid cannot be read.
    """
    if sys.platform == "win32":  # pragma: no cover - POSIX advisory locks only
        return None
    import fcntl

    try:
        fd = os.open(path + "-lock", os.O_RDONLY)
    except OSError:
        return None  # no lock file: no load ever held it (or it cannot be read)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _unlock(fd: int) -> None:
    # Closing the descriptor releases the flock; the lock file stays, since removing it
    # would let a process that opened the old file and one that creates a new one both
    # believe they hold the lock.
    os.close(fd)


class _Checkpointer:
    """Copies the WAL into the database from its own thread and connection.

    A checkpoint copies the WAL's pages into the database and syncs both files (15-40 ms
    for a full WAL on a busy disk); run by the writer, it would stall the event loop. A
    passive checkpoint from another connection runs beside the writer's commits, and the
    writer's own automatic one (the fallback) then has little left to copy.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"ryng-checkpoint-wal {path}", daemon=True
        )
        self._thread.start()

    def request(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=_BUSY_TIMEOUT)
        except sqlite3.Error:  # pragma: no cover - the writer's own checkpoints remain
            return
        try:
            conn.execute("PRAGMA synchronous = NORMAL")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                # Best effort: a failed checkpoint loses nothing (the frames stay in the
                # WAL), and the writer's automatic checkpoint still bounds the WAL.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()


def _shut(conn: sqlite3.Connection, fd: int, checkpointer: _Checkpointer | None) -> None:
    """Stop the checkpointer, close the file and release the lock (blocking).

    The log stays as it is (readers replay it): folding it here would cost the load's end
    some 10 us a batch; the next open folds it.
    """
    try:
        if checkpointer is not None:
            checkpointer.stop()
        conn.close()  # the last connection: SQLite checkpoints and removes the WAL
    finally:
        _unlock(fd)


# --- the journal --------------------------------------------------------------------------


class SQLiteJournal:
    """The checkpoint journal of one load, in an SQLite file.

    Create it with a path (no I/O), then `open` it with the load's identity; `aclose` it
    (or use ``async with await journal.open(identity)``). It can be opened again after
    `aclose`, for the next run of the load.

    Args:
        path: the journal file, created if missing (an empty file counts as missing). The
            lock ``<path>-lock`` is kept beside it, and SQLite's ``<path>-wal`` and
            ``<path>-shm`` while it is open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._identity: LoadIdentity | None = None
        # Batch rows as last recorded (the hot path makes no JournalledBatch).
        self._rows: dict[int, _Write] = {}
        self._open: set[int] = set()  # batches this run put in flight and has not settled
        self._grouping = False
        self._next_commit = 0.0
        self._cpu_mark = 0.0
        self._wall_mark = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._checkpointer: _Checkpointer | None = None
        self._pending: list[_Queued] = []
        self._flush_handle: asyncio.Handle | None = None
        self._commits = 0
        self._closed: anyio.Event | None = None
        self._state = "new"
        self._deferred_error: CheckpointError | None = None
        self._digest = _DIGESTS[_NEW_JOURNAL_DIGEST]

    def __repr__(self) -> str:
        return f"SQLiteJournal({self._path!r}, {self._state})"

    @property
    def path(self) -> str:
        """The journal's path, as given."""
        return self._path

    @property
    def identity(self) -> LoadIdentity | None:
        """The identity it was opened with, or None before `open`."""
        return self._identity

    @property
    def batches(self) -> Mapping[int, JournalledBatch]:
        """Every journalled batch by index, as last recorded (a live read-only view)."""
        return _BatchesView(self._rows)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, identity: LoadIdentity) -> Self:
        """Take ownership of the journal for ``identity``'s load and read what it holds.

        Creates the file if missing and migrates an older format. Returns the journal,
        for ``async with await journal.open(identity):``.

        Raises:
            CheckpointError: the journal is in use by another load; it belongs to another
                load (what differs is named); it is not a journal or of a newer format; the
                location cannot be written. The journal was not changed, and a file
                that is not a journal was not touched.
        """
        if self._state in {"open", "closing"}:
            raise CheckpointError(f"the checkpoint journal {self._path!r} is already open")
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled open must not leave the lock held with no one to close it.
        with anyio.CancelScope(shield=True):
            conn, fd, rows = await anyio.to_thread.run_sync(self._open_sync, identity)
        self._rows = rows
        self._open = set()
        self._grouping = False
        self._next_commit = 0.0
        self._cpu_mark = _thread_time()
        self._wall_mark = loop.time()
        self._identity = identity
        self._loop = loop
        self._conn = conn
        self._lock_fd = fd
        self._pending = []
        self._flush_handle = None
        self._commits = 0
        self._deferred_error = None
        self._checkpointer = None
        with contextlib.suppress(RuntimeError):  # no thread to spare: the writer checkpoints
            self._checkpointer = _Checkpointer(self._path)
        self._state = "open"
        return self

    def _open_sync(
        self, identity: LoadIdentity
    ) -> tuple[sqlite3.Connection, int, dict[int, _Write]]:
        path = self._path
        if os.path.isdir(path):
            raise CheckpointError(f"the checkpoint path {path!r} is a directory")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise CheckpointError(
                f"cannot write the checkpoint journal {path!r}: {os.strerror(errno.EACCES)}"
            )
        if os.path.exists(path) and os.path.getsize(path) > 0:
            _precheck(path)  # a foreign file is refused before a lock file is made beside it
        fd = _lock(path)
        try:
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT
            )
        except sqlite3.Error as exc:
            _unlock(fd)
            raise CheckpointError(f"cannot open the checkpoint journal {path!r}: {exc}") from exc
        try:
            batches = self._prepare(conn, identity)
        except BaseException as exc:
            conn.close()
            _unlock(fd)
            if isinstance(exc, sqlite3.Error):
                raise CheckpointError(f"cannot use the checkpoint journal {path!r}: {exc}") from exc
            raise
        return conn, fd, batches

    def _prepare(self, conn: sqlite3.Connection, identity: LoadIdentity) -> dict[int, _Write]:
        """Check, create or migrate the journal; return its batch rows."""
        path = self._path
        version = _format_version(conn, path)
        if version is None:  # before WAL mode writes the header, which fixes the page size
            conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise CheckpointError(
                f"the checkpoint journal {path!r} cannot use WAL mode (got {mode!r})"
            )
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_AUTOCHECKPOINT_PAGES}")
        if version is None:
            self._create(conn, identity)
        elif version < JOURNAL_FORMAT_VERSION:
            _migrate(conn, version)
        self._check_identity(conn, identity)
        self._digest = self._digest_of(conn)
        _fold(conn)  # what a run that died left in the log
        rows, _ = _read_rows(conn)
        return rows

    @staticmethod
    def _create(conn: sqlite3.Connection, identity: LoadIdentity) -> None:
        now = time.time()
        shard = identity.shard or (None, None)
        # One transaction: a creation cut short leaves an empty database, which counts as new.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {int(JOURNAL_FORMAT_VERSION)}")
            for statement in (*_SCHEMA, _LOG_SCHEMA, _RESOLUTION_SCHEMA):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO load (id, campaign_id, batch_size, max_batch_bytes,"
                " options_sha256, shard_index, shard_count, created_at, updated_at,"
                " digest_algorithm) VALUES (0, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    identity.campaign_id,
                    identity.batch_size,
                    identity.max_batch_bytes,
                    hashlib.sha256(identity.options).digest(),
                    *shard,
                    now,
                    now,
                    _NEW_JOURNAL_DIGEST,
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _digest_of(
        self, conn: sqlite3.Connection
    ) -> Callable[[bytes | bytearray | memoryview], bytes]:
        (name,) = conn.execute("SELECT digest_algorithm FROM load").fetchone()
        digest = _DIGESTS.get(name)
        if digest is None:
            raise CheckpointError(
                f"the checkpoint journal {self._path!r} digests batches with {preview(name)},"
                " which this ryng_async does not know: it was written by a newer ryng_async"
            )
        return digest

    def _check_identity(self, conn: sqlite3.Connection, identity: LoadIdentity) -> None:
        row = conn.execute(
            "SELECT campaign_id, batch_size, max_batch_bytes, options_sha256, shard_index,"
            " shard_count FROM load"
        ).fetchone()
        if row is None:
            raise CheckpointError(
                f"the checkpoint journal {self._path!r} is damaged: no load record"
            )
        campaign_id, batch_size, max_batch_bytes, options_sha256, shard_index, shard_count = row
        shard = None if shard_index is None else (shard_index, shard_count)

        def shard_text(value: tuple[int, int] | None) -> str:
            return "no shard" if value is None else f"shard {value[0]} of {value[1]}"

        differences = []
        if campaign_id != identity.campaign_id:
            differences.append(
                f"campaign id {preview(campaign_id)} in the journal, "
                f"{preview(identity.campaign_id)} now"
            )
        if batch_size != identity.batch_size:
            differences.append(f"batch_size {batch_size} in the journal, {identity.batch_size} now")
        if max_batch_bytes != identity.max_batch_bytes:
            differences.append(
                f"max_batch_bytes {max_batch_bytes} in the journal, {identity.max_batch_bytes} now"
            )
        if bytes(options_sha256) != hashlib.sha256(identity.options).digest():
            differences.append("campaign options differ")
        if shard != identity.shard:
            differences.append(
                f"{shard_text(shard)} in the journal, {shard_text(identity.shard)} now"
            )
        if differences:
            raise CheckpointError(
                f"the checkpoint journal {self._path!r} belongs to another load: "
                + "; ".join(differences)
                + ". Give this load another checkpoint path, or delete the journal to start over"
            )

    async def aclose(self) -> None:
        """Write what is queued, close the file and release the lock. Idempotent.

        Raises:
            CheckpointError: a record queued by `settled_nowait` could not be written
                (everything is closed and released all the same).
        """
        if self._state == "closing" and self._closed is not None:
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
            return
        if self._state != "open" or self._conn is None:
            return
        self._state = "closing"
        self._closed = anyio.Event()
        self._flush()
        conn, self._conn = self._conn, None
        checkpointer, self._checkpointer = self._checkpointer, None
        # Shielded: a cancelled close must still close the file and free the lock.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(_shut, conn, self._lock_fd, checkpointer)
            finally:
                self._state = "closed"
                self._closed.set()
        error, self._deferred_error = self._deferred_error, None
        if error is not None:
            raise error

    async def __aenter__(self) -> Self:
        if self._state != "open":
            raise CheckpointError("open the journal first: async with await journal.open(identity)")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the load's records -------------------------------------------------------------

    def digest(self, body: bytes | bytearray | memoryview) -> bytes:
        """The digest of a batch's encoded body, by this journal's algorithm (16 bytes).

        Known once the journal is open: a journal keeps the algorithm it was made with.
        """
        self._check_open()
        return self._digest(body)

    def prior(
        self,
        index: int,
        *,
        start: int,
        count: int,
        digest: bytes,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> JournalledBatch | None:
        """What the journal holds of batch ``index``, or None if nothing.

        Read from memory (loaded at `open`); once this run records the batch, it returns
        this run's record. ``ranges`` are the batch's runs of input positions (None: one
        run, ``(start, count)``); a batch an older format recorded without them gets
        them now.

        Raises:
            CheckpointError: the journal holds batch ``index`` with other leads or another
                content: the input changed since it was written.
            ValueError: ``ranges`` do not start at ``start`` or hold ``count`` leads.
        """
        text = _ranges_text(start, count, ranges)
        row = self._known_row(index, start, count, digest, text)
        if row is not None and row[9] is None:
            row = (*row[:9], text)  # the exact positions, learnt now (a format 2 journal)
            self._rows[index] = row
            self._enqueue((row, None))
        return None if row is None else _batch_from_row(row)

    def _known_row(
        self, index: int, start: int, count: int, digest: bytes, ranges: str
    ) -> _Write | None:
        self._check_open()
        row = self._rows.get(index)
        if row is not None and (
            row[1] != start
            or row[2] != count
            or row[3] != digest
            or (row[9] is not None and row[9] != ranges)
        ):
            known = _batch_from_row(row)
            now = "leads " + _describe(_parse_ranges(start, count, ranges))
            then = (
                "the same positions with other content"
                if (known.start, known.count, known.ranges)
                == (start, count, _parse_ranges(start, count, ranges))
                or (not known.exact and (known.start, known.count) == (start, count))
                else f"{known.positions} in the journal"
            )
            older = (
                ""
                if known.exact or self._identity is None or self._identity.shard is None
                else "; or the journal predates format 3, whose shards never batch leads of "
                "two blocks together: a shard whose blocks hold invalid leads cannot resume "
                "it (give this load a new checkpoint path)"
            )
            raise CheckpointError(
                f"the input changed since the checkpoint journal {self._path!r} was written: "
                f"batch {index} ({now}) differs from the journalled one ({then}){older}"
            )
        return row

    async def in_flight(
        self,
        index: int,
        *,
        start: int,
        count: int,
        digest: bytes,
        attempt: int,
        maybe_duplicated: bool = False,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        """Record batch ``index`` as in flight; committed when the await returns.

        Call before each attempt's request is written. ``maybe_duplicated`` marks a resend
        of a batch that may already be in Ryng; ``ranges`` are its runs of input
        positions (see `prior`). A writer cancelled while it waits stops
        waiting, but its record is still written: a batch never sent may then read as in
        flight, the safe side.

        Raises:
            CheckpointError: the journal holds this batch with other content (see `prior`),
                or the write failed.
        """
        await self.in_flight_future(
            index,
            start=start,
            count=count,
            digest=digest,
            attempt=attempt,
            maybe_duplicated=maybe_duplicated,
            ranges=ranges,
        )

    def in_flight_future(
        self,
        index: int,
        *,
        start: int,
        count: int,
        digest: bytes,
        attempt: int,
        maybe_duplicated: bool = False,
        ranges: Sequence[tuple[int, int]] | None = None,
    ) -> asyncio.Future[None]:
        """Like `in_flight`, but return the future of the commit rather than a coroutine.

        For the bulk engine's hot path (no coroutine frame per request). The record is
        queued when this returns; the future is done once it is committed.

        Raises:
            CheckpointError: the journal holds this batch with other content (see `prior`).
        """
        digest = bytes(digest)
        text = _ranges_text(start, count, ranges)
        known = self._known_row(index, start, count, digest, text)
        self._open.add(index)
        duplicated = bool(maybe_duplicated) or (known is not None and known[8])
        row = (index, start, count, digest, _IN_FLIGHT, attempt, None, "", duplicated, text)
        self._rows[index] = row
        return self._write(row)

    async def settled(
        self,
        index: int,
        *,
        state: BatchState,
        attempts: int,
        status: int | None,
        message: str,
        maybe_duplicated: bool = False,
    ) -> None:
        """Record the outcome of batch ``index``; committed when the await returns.

        The batch must have been recorded `in_flight` (by this run or an earlier one),
        except to skip it: a batch never sent and never journalled needs no record, since a
        resume sends what the journal does not hold.

        Raises:
            ValueError: ``state`` is in flight, or the batch was never journalled (and
                is not skipped).
            CheckpointError: the write failed.
        """
        write = self._settle(
            index,
            state=state,
            attempts=attempts,
            status=status,
            message=message,
            maybe_duplicated=maybe_duplicated,
        )
        if write is not None:
            await self._write(write)

    def settled_nowait(
        self,
        index: int,
        *,
        state: BatchState,
        attempts: int,
        status: int | None,
        message: str,
        maybe_duplicated: bool = False,
    ) -> None:
        """Queue the outcome of batch ``index`` without waiting (for synchronous paths).

        Written with the next commit, and at the latest before `aclose` returns; a failure
        to write it is raised by `aclose`.

        Raises:
            ValueError: ``state`` is in flight, or the batch was never journalled (and
                is not skipped).
        """
        write = self._settle(
            index,
            state=state,
            attempts=attempts,
            status=status,
            message=message,
            maybe_duplicated=maybe_duplicated,
        )
        if write is not None:
            self._enqueue((write, None))

    def _settle(
        self,
        index: int,
        *,
        state: BatchState,
        attempts: int,
        status: int | None,
        message: str,
        maybe_duplicated: bool,
    ) -> _Write | None:
        self._check_open()
        if type(state) is not BatchState:
            state = BatchState(state)
        if state is BatchState.IN_FLIGHT:
            raise ValueError("a settled batch cannot be in flight; use in_flight()")
        known = self._rows.get(index)
        if known is None:
            if state is BatchState.SKIPPED:
                return None  # never sent and not in the journal: a resume sends it anyway
            raise ValueError(f"batch {index} was never journalled as in flight")
        self._open.discard(index)
        row = (
            index,
            known[1],
            known[2],
            known[3],
            str(state),
            attempts,
            status,
            sys.intern(_clean_message(message)),
            known[8] or bool(maybe_duplicated),
            known[9],
        )
        self._rows[index] = row
        return row

    def resolve_in_flight(self, index: int, *, message: str) -> None:
        """Record as unknown a batch an earlier run left in flight (queued, not awaited).

        For a run that reports the batch unknown without sending it: the journal then no
        longer lists it as in flight, as if a load were sending it. Nothing is written
        if the journal does not hold it in flight from an earlier run.
        """
        self._check_open()
        known = self._rows.get(index)
        if known is None or known[4] != _IN_FLIGHT or index in self._open:
            return
        row = (*known[:4], _UNKNOWN, known[5], known[6], _clean_message(message), *known[8:])
        self._rows[index] = row
        self._enqueue((row, None))

    def _check_open(self) -> None:
        if self._state != "open":
            raise CheckpointError(
                f"the checkpoint journal {self._path!r} is "
                + ("not open" if self._state == "new" else "closed")
            )

    # --- group commit -------------------------------------------------------------------
    #
    # Records queued during one turn of the event loop are committed together by a callback
    # at the end of that turn (or a little later on a busy loop: see _pace), then their
    # writers are woken; records are written in the order they were queued, so the last
    # record of a batch wins.

    def _write(self, write: _Write) -> asyncio.Future[None]:
        """Queue ``write``; its future is done once committed.

        A writer cancelled while it awaits the future stops waiting (asyncio cancels the
        future); its record is still written.
        """
        if self._loop is None:  # pragma: no cover - _check_open ran first
            raise RuntimeError("the journal is not open")
        done = self._loop.create_future()
        self._enqueue((write, done))
        return done

    def _enqueue(self, queued: _Queued) -> None:
        self._pending.append(queued)
        loop = self._loop
        if self._flush_handle is None and loop is not None:
            if self._grouping and len(self._open) > 1 and self._next_commit > loop.time():
                self._flush_handle = loop.call_at(self._next_commit, self._flush)
            else:
                self._flush_handle = loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Commit every queued record in one transaction; wake (or fail) their writers."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        group, self._pending = self._pending, []
        if not group or self._conn is None:
            return
        error: Exception | None = None
        started = time.perf_counter()
        try:
            self._commit(self._conn, [write for write, _ in group], time.time())
        except Exception as exc:  # handed to the writers of the group
            error = exc
        else:
            self._commits += 1
            if self._checkpointer is not None and self._commits % _CHECKPOINT_EVERY == 0:
                self._checkpointer.request()
        self._pace(time.perf_counter() - started)
        self._resolve(group, error)

    def _pace(self, took: float) -> None:
        """Decide whether the next commit groups: only while the loop's thread is busy.

        A commit costs the loop about the same whatever its group's size. On a loop whose
        thread was busy (CPU time >= _BUSY of the wall time since the last commit), with
        other requests in flight whose records would come soon, the next commit waits
        until _SPACING times this one's cost after it (at most _MAX_WAIT), so commits keep
        under about 2.5% of a busy loop. An idle loop, or a lone request, commits at once:
        waiting there would only slow the load.
        """
        if self._loop is None:  # pragma: no cover - set while open
            return
        wall = self._loop.time()
        cpu = _thread_time()
        elapsed = wall - self._wall_mark
        self._grouping = elapsed > 0 and (cpu - self._cpu_mark) >= _BUSY * elapsed
        self._cpu_mark, self._wall_mark = cpu, wall
        self._next_commit = wall + min(_SPACING * took, _MAX_WAIT)

    def _resolve(self, group: list[_Queued], error: Exception | None) -> None:
        """Wake the writers of a committed (or failed) group."""
        for _, done in group:
            if error is None:
                if done is not None and not done.done():
                    done.set_result(None)
                continue
            failure = CheckpointError(
                f"could not write the checkpoint journal {self._path!r}: {error}"
            )
            failure.__cause__ = error
            if done is None:
                if self._deferred_error is None:
                    self._deferred_error = failure
            elif not done.done():
                done.set_exception(failure)

    @staticmethod
    def _commit(conn: sqlite3.Connection, writes: list[_Write], now: float) -> None:
        # One insert, one transaction: the group's records packed in one row of the log.
        conn.execute(_LOG_INSERT, (now, _pack_records(writes)))

    # --- reading without a load -----------------------------------------------------------

    @staticmethod
    def inspect(path: str | os.PathLike[str]) -> JournalSummary:
        """Summarise the journal at ``path``; works while a load holds it.

        Blocking (for command lines and scripts); writes nothing, and an older format is
        read through a migrated copy in memory.

        Raises:
            CheckpointError: no journal there, not a journal, or a newer format.
        """
        name = os.fspath(path)
        conn, version = _connect_for_reading(name)
        try:
            return _read_summary(conn, name, version)
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot read the checkpoint journal {name!r}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def read_batches(
        path: str | os.PathLike[str], *, states: Collection[BatchState] | None = None
    ) -> list[JournalledBatch]:
        """Every batch of the journal at ``path`` (only those in ``states`` if given).

        Blocking; like `inspect`, needs no lock and writes nothing.

        Raises:
            CheckpointError: no journal there, not a journal, or a newer format.
        """
        name = os.fspath(path)
        conn, _ = _connect_for_reading(name)
        try:
            rows, _ = _read_rows(conn)
            wanted = None if states is None else {BatchState(s).value for s in states}
            return [
                _batch_from_row(rows[index])
                for index in sorted(rows)
                if wanted is None or rows[index][4] in wanted
            ]
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot read the checkpoint journal {name!r}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def resolve(
        path: str | os.PathLike[str],
        decision: Decision | str,
        *,
        batches: Collection[int] | None = None,
        note: str = "",
    ) -> list[Resolution]:
        """Record a decision on batches left in flight or unknown; return what was recorded.

        Blocking. ``decision`` `Decision.ACCEPTED` (its leads were found in Ryng) makes the
        batch accepted: the next run counts it accepted and sends nothing.
        `Decision.NOT_RECEIVED` makes it skipped and no longer maybe duplicated: the next
        run sends it as a batch never sent. Each decision is journalled with its time and
        ``note`` (`JournalSummary.resolved`).

        Args:
            path: the journal.
            decision: `Decision` or its value (``"accepted"``, ``"not-received"``).
            batches: the batch indexes to resolve; None for every batch in flight or unknown.
            note: why (kept in the journal, cut to 500 characters).

        Raises:
            CheckpointError: no journal there, not a journal, a newer format; a load holds
                it now (a live load's in-flight batches are not for an operator to decide);
                a given batch is not in the journal or not in flight or unknown. Nothing
                was recorded then.
        """
        name = os.fspath(path)
        decided = Decision(decision)
        if os.path.isdir(name):
            raise CheckpointError(f"the checkpoint path {name!r} is a directory")
        if not os.path.exists(name):
            raise CheckpointError(f"no checkpoint journal at {name!r}")
        _precheck(name)
        holder = _holder(name)
        if holder is not None:
            who = f" (pid {holder})" if holder else ""
            raise CheckpointError(
                f"the checkpoint journal {name!r} is held by a live load{who}: its batches in "
                "flight may be answered yet; resolve them after it ends"
            )
        fd = _lock(name)
        try:
            conn = sqlite3.connect(name, isolation_level=None, timeout=_BUSY_TIMEOUT)
            try:
                return _resolve_locked(conn, name, decided, batches, _clean_message(note))
            except sqlite3.Error as exc:
                raise CheckpointError(f"cannot resolve in the journal {name!r}: {exc}") from exc
            finally:
                conn.close()
        finally:
            _unlock(fd)


def _resolve_locked(
    conn: sqlite3.Connection,
    path: str,
    decision: Decision,
    batches: Collection[int] | None,
    note: str,
) -> list[Resolution]:
    version = _format_version(conn, path)
    if version is None:
        raise CheckpointError(f"{path!r} {_NOT_A_JOURNAL} (it is an empty database)")
    if version < JOURNAL_FORMAT_VERSION:
        _migrate(conn, version)
    _fold(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = {row[0]: row for row in map(_row_from_sql, conn.execute(_SELECT_BATCHES))}
        open_states = {_IN_FLIGHT, _UNKNOWN}
        if batches is None:
            chosen = sorted(i for i, row in rows.items() if row[4] in open_states)
        else:
            chosen = sorted(set(batches))
            _check_open_batches(rows, chosen, path)
        now = time.time()
        said = "accepted" if decision is Decision.ACCEPTED else "not received"
        message = _clean_message(f"resolved as {said}" + (f": {note}" if note else ""))
        made = []
        for index in chosen:
            row = rows[index]
            ranges = _parse_ranges(row[1], row[2], row[9])
            if decision is Decision.ACCEPTED:
                conn.execute(
                    "UPDATE batch SET state = ?, status = NULL, message = ? WHERE idx = ?",
                    (str(BatchState.ACCEPTED), message, index),
                )
            else:
                conn.execute(
                    "UPDATE batch SET state = ?, status = NULL, message = ?,"
                    " maybe_duplicated = 0 WHERE idx = ?",
                    (str(BatchState.SKIPPED), message, index),
                )
            text = ",".join(f"{first}-{first + length - 1}" for first, length in ranges)
            conn.execute(
                "INSERT INTO resolution (idx, decision, at, note, previous_state, ranges)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (index, str(decision), now, note, row[4], text),
            )
            made.append(
                Resolution(
                    index=index,
                    decision=decision,
                    at=datetime.fromtimestamp(now, UTC),
                    note=note,
                    previous_state=BatchState(row[4]),
                    ranges=ranges,
                )
            )
        if made:
            conn.execute("UPDATE load SET updated_at = max(updated_at, ?)", (now,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return made


def _check_open_batches(rows: dict[int, _Write], chosen: list[int], path: str) -> None:
    """Refuse batches that are not in the journal, or not in flight or unknown."""
    missing = [i for i in chosen if i not in rows]
    closed = [i for i in chosen if i in rows and rows[i][4] not in {_IN_FLIGHT, _UNKNOWN}]
    if not missing and not closed:
        return
    parts = []
    if missing:
        parts.append(f"not in the journal: batch {_indexes(missing)}")
    if closed:
        parts.append(
            "not in flight or unknown: "
            + ", ".join(f"batch {i} ({rows[i][4]})" for i in closed[:10])
            + (f" and {len(closed) - 10} more" if len(closed) > 10 else "")
        )
    raise CheckpointError(f"cannot resolve in {path!r}: " + "; ".join(parts))


def _indexes(indexes: Sequence[int]) -> str:
    shown = ", ".join(map(str, indexes[:10]))
    return shown + (f" and {len(indexes) - 10} more" if len(indexes) > 10 else "")
