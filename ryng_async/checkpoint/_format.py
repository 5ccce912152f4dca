"""The journal's file format: its schema, the migrations between versions, the log.

A journal is an SQLite database marked by its application id, its format version in
``user_version``. A batch is one row of the ``batch`` table (`Row`, in ``_rows``); a
load appends its records to the ``log`` table instead, a commit's records packed in one
row; `fold` moves them into ``batch`` (the next owner does it at open) and `replay`
applies them in memory (readers do it, since they write nothing). Everything here is a
function on a connection.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import msgspec
import xxhash

from .._exceptions import preview
from .._sqlite import (
    JOURNAL_ID,
    ForeignDatabaseError,
    application_version,
    connect_read_only,
    no_room,
    os_reason,
)
from ._records import (
    CheckpointError,
    CheckpointRefusedError,
    LoadIdentity,
)
from ._rows import Row, pack_records, row_from_sql, union_text, unpack_records

__all__ = [
    "APPLICATION_ID",
    "DIGESTS",
    "JOURNAL_FORMAT_VERSION",
    "LOG_INSERT",
    "MIGRATIONS",
    "NEW_JOURNAL_DIGEST",
    "NOT_A_JOURNAL",
    "PAGE_SIZE",
    "SELECT_BATCHES",
    "Digest",
    "check_file",
    "check_identity",
    "create",
    "digest_of",
    "fold",
    "format_version",
    "load_record",
    "migrate",
    "no_room_error",
    "outdated",
    "read_rows",
    "replay",
    "unusable",
]

JOURNAL_FORMAT_VERSION: int = 5
"""The layout this version writes. Older journals are migrated on open; newer are refused.

1: the first layout (batch digests by BLAKE2b-128). 2: the load records its digest
algorithm (new journals use XXH3-128, about 40x cheaper a batch; a journal of format 1
keeps BLAKE2b, so its resumes still match), and a load appends its records to a log
table, one row a commit, folded into the batch table by the next open. 3: a batch records
its leads' exact input positions (``ranges``); a batch of an older journal has none until
a load meets it again (its ``start`` and ``count`` may span invalid leads). 4: the
decisions an operator recorded on unknown batches (`SQLiteJournal.resolve`). 5: runs of
a batch accepted in part after a 413 (``accepted``: sent again in parts, some accepted
while the batch as a whole was not), and whether any part of it was ever sent on its own
(``in_parts``).
"""


# PRAGMA application_id: "RYNG" in ASCII, so `file` and sqlite tools can tell our journals.
APPLICATION_ID = JOURNAL_ID
NOT_A_JOURNAL = "is not a ryng_async checkpoint journal"

# A batch digest tells a changed input from the journalled one; nothing adversarial
# writes the input, so a fast non-cryptographic 128-bit hash does.
Digest = Callable[[bytes | bytearray | memoryview], bytes]
"""A batch digest function: an encoded body to 16 bytes."""
DIGESTS: dict[str, Digest] = {
    "xxh3-128": xxhash.xxh3_128_digest,
    "blake2b-128": lambda body: hashlib.blake2b(body, digest_size=16).digest(),
}
NEW_JOURNAL_DIGEST = "xxh3-128"


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
        ranges TEXT,
        accepted TEXT NOT NULL DEFAULT '',
        in_parts INTEGER NOT NULL DEFAULT 0
    )""",
)
# ``batch.ranges`` (format 3): '' when its leads are consecutive from ``start``, else runs
# of positions 'first-last,first-last'; NULL for a batch an older format recorded.
# ``batch.accepted`` (format 5): runs of its positions accepted though the batch was not
# (sent in parts after a 413), 'first-last,first-last'; '' for none. It only grows.
# ``batch.in_parts`` (format 5): 1 once a part of the batch was sent on its own after a 413
# (a callback for one of its leads then proves that part only). It sticks, like
# ``maybe_duplicated``: no later record of the batch clears it.
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
        conn.execute("UPDATE log SET records = ? WHERE seq = ?", (pack_records(upgraded), seq))


def _to_format_4(conn: sqlite3.Connection) -> None:
    """3 -> 4: a table for the decisions recorded on unknown batches."""
    conn.execute(_RESOLUTION_SCHEMA)


# Every batch a format-4 load sent in parts ended with a message saying so (its in-flight
# records said nothing): the one trace of it a migration can turn into ``in_parts``.
_SPLIT_BY_FORMAT_4 = "parts after a 413"


def _to_format_5(conn: sqlite3.Connection) -> None:
    """4 -> 5: a batch records its runs accepted in part (none yet), and if sent in parts.

    Format 4 said the latter in a batch's outcome message only: read there, once.
    """
    conn.execute("ALTER TABLE batch ADD COLUMN accepted TEXT NOT NULL DEFAULT ''")
    conn.execute("ALTER TABLE batch ADD COLUMN in_parts INTEGER NOT NULL DEFAULT 0")
    conn.execute("UPDATE batch SET in_parts = 1 WHERE instr(message, ?) > 0", (_SPLIT_BY_FORMAT_4,))
    old = msgspec.msgpack.Decoder(
        list[tuple[int, int, int, bytes, str, int, int | None, str, bool, str | None]]
    ).decode
    for seq, records in conn.execute("SELECT seq, records FROM log").fetchall():
        upgraded = [(*record, "", _SPLIT_BY_FORMAT_4 in record[7]) for record in old(records)]
        conn.execute("UPDATE log SET records = ? WHERE seq = ?", (pack_records(upgraded), seq))


MIGRATIONS: dict[int, _Migration] = {
    1: _to_format_2,
    2: _to_format_3,
    3: _to_format_4,
    4: _to_format_5,
}

# Folding the log: one statement upserts up to _ROWS_PER_STATEMENT rows.
_UPSERT_HEAD = (
    "INSERT INTO batch (idx, start, count, digest, state, attempts, status, message,"
    " maybe_duplicated, ranges, accepted, in_parts) VALUES "
)
_UPSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_UPSERT_TAIL = """
    ON CONFLICT (idx) DO UPDATE SET
        start = excluded.start, count = excluded.count, digest = excluded.digest,
        state = excluded.state, attempts = excluded.attempts, status = excluded.status,
        message = excluded.message,
        maybe_duplicated = batch.maybe_duplicated OR excluded.maybe_duplicated,
        ranges = coalesce(excluded.ranges, batch.ranges),
        accepted = ryng_union_runs(batch.accepted, excluded.accepted),
        in_parts = batch.in_parts OR excluded.in_parts
"""
# Rows per statement: 12 parameters a row stays under SQLite's 32,766 (and under the 999
# of builds older than 3.32 at 83 rows).
_ROWS_PER_STATEMENT = 83
_UPSERTS = [""] + [  # by row count
    _UPSERT_HEAD + ", ".join([_UPSERT_ROW] * rows) + _UPSERT_TAIL
    for rows in range(1, _ROWS_PER_STATEMENT + 1)
]
# New journals use small pages: a commit appends each page it changed to the WAL, and a
# commit adds a few hundred bytes to the log.
PAGE_SIZE = 1024
LOG_INSERT = "INSERT INTO log (at, records) VALUES (?, ?)"
SELECT_BATCHES = (
    "SELECT idx, start, count, digest, state, attempts, status, message, maybe_duplicated,"
    " ranges, accepted, in_parts FROM batch"
)


def replay(rows: dict[int, Row], conn: sqlite3.Connection) -> float | None:
    """Apply the log to ``rows`` in order; return the time of its last commit, if any.

    The last record of a batch wins, except ``maybe_duplicated`` and ``in_parts``, which
    stick, and ``accepted``, which grows by union.
    """
    last = None
    for at, records in conn.execute("SELECT at, records FROM log ORDER BY seq"):
        for record in unpack_records(records):
            known = rows.get(record[0])
            if known is not None:
                ranges = record[9] if record[9] is not None else known[9]  # the runs known
                rows[record[0]] = (
                    *record[:8],
                    known[8] or record[8],
                    ranges,
                    union_text(known[10], record[10]),
                    known[11] or record[11],
                )
            else:
                rows[record[0]] = record
        last = at
    return last


def read_rows(conn: sqlite3.Connection) -> tuple[dict[int, Row], float | None]:
    """Every batch row (the table, then the log on top), and the log's last commit time."""
    rows = {row[0]: row for row in map(row_from_sql, conn.execute(SELECT_BATCHES))}
    return rows, replay(rows, conn)


def fold(conn: sqlite3.Connection) -> None:
    """Move the log's records into the batch table, in one transaction."""
    if conn.execute("SELECT 1 FROM log LIMIT 1").fetchone() is None:
        return
    conn.create_function("ryng_union_runs", 2, union_text, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        folded: dict[int, Row] = {}
        last = replay(folded, conn)
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


def format_version(conn: sqlite3.Connection, path: str) -> int | None:
    """Check that ``conn`` is a journal this version can use; None for an empty database."""
    try:
        version = application_version(conn, APPLICATION_ID)
    except ForeignDatabaseError as foreign:
        raise CheckpointRefusedError(f"{path!r} {NOT_A_JOURNAL} ({foreign})") from None
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}:
            raise CheckpointRefusedError(f"{path!r} {NOT_A_JOURNAL} ({exc})") from exc
        raise unusable(path, exc, "read") from exc
    if version is None:
        return None  # an empty database (a fresh file, or a creation cut short)
    current = JOURNAL_FORMAT_VERSION
    if version > current:
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} has format version {version}, newer than the "
            f"{current} this ryng_async reads: it was written by a newer ryng_async"
        )
    if any(step not in MIGRATIONS for step in range(version, current)):
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} has format version {version}, which this "
            f"ryng_async (format version {current}) cannot migrate"
        )
    return version


def unusable(path: str, exc: sqlite3.Error | OSError, doing: str = "use") -> CheckpointError:
    """The error for a journal that failed while opened or read: a refusal but for lack of room.

    A full disk or a file-size limit is the environment's failure (a `CheckpointError`,
    the command line's exit 4), so are SQLite's I/O errors; the rest (a read-only or
    unopenable file, a lock) says the path must change (`CheckpointRefusedError`).
    """
    full = no_room_error(path, exc, f"the checkpoint journal {path!r}")
    if full is not None:
        return full
    if isinstance(exc, sqlite3.Error) and str(getattr(exc, "sqlite_errorname", "")).startswith(
        "SQLITE_IOERR"
    ):
        return CheckpointError(f"cannot {doing} the checkpoint journal {path!r}: {exc}")
    return CheckpointRefusedError(f"cannot {doing} the checkpoint journal {path!r}: {exc}")


def no_room_error(path: str, exc: BaseException, what: str) -> CheckpointError | None:
    """A `CheckpointError` (not a refusal) if writing ``what`` failed for lack of room."""
    reason = no_room(exc, path)
    if reason is None:
        return None
    cure = "raise the limit" if "limit" in reason else "free some space"
    cause = os_reason(exc)
    return CheckpointError(
        f"cannot write {what}: {reason} ({cause}); {cure}, then run the load again"
    )


def check_file(path: str) -> None:
    """Refuse a file that is not a journal this version can use, without writing."""
    try:
        conn = connect_read_only(path)
    except sqlite3.Error:  # pragma: no cover - reported by the writable open that follows
        return
    try:
        format_version(conn, path)
    finally:
        conn.close()


def outdated(version: int) -> bool:
    """A journal of ``version`` needs `migrate` before this version uses it."""
    return version < JOURNAL_FORMAT_VERSION


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a journal of ``version`` to the current format, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for step in range(version, JOURNAL_FORMAT_VERSION):
            MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version = {int(JOURNAL_FORMAT_VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def create(conn: sqlite3.Connection, identity: LoadIdentity) -> None:
    """Make an empty database a journal of ``identity``'s load, in the current format."""
    now = time.time()
    shard = identity.shard or (None, None)
    # One transaction: a creation cut short leaves an empty database, which counts as new.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
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
                NEW_JOURNAL_DIGEST,
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def digest_of(conn: sqlite3.Connection, path: str) -> Digest:
    """The digest function of the journal's batches (the algorithm it was made with)."""
    (name,) = conn.execute("SELECT digest_algorithm FROM load").fetchone()
    digest = DIGESTS.get(name)
    if digest is None:
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} digests batches with {preview(name)},"
            " which this ryng_async does not know: it was written by a newer ryng_async"
        )
    return digest


def load_record(conn: sqlite3.Connection, path: str, columns: str) -> tuple[Any, ...]:
    """The ``columns`` (SQL, ours) of the journal's load record.

    Raises:
        CheckpointError: there is none: the journal is damaged.
    """
    row = conn.execute(f"SELECT {columns} FROM load").fetchone()  # noqa: S608 - ours
    if row is None:
        raise CheckpointRefusedError(f"the checkpoint journal {path!r} is damaged: no load record")
    return tuple(row)


def check_identity(conn: sqlite3.Connection, path: str, identity: LoadIdentity) -> None:
    """Refuse a journal of another load, naming every difference (in words and in ``differs``)."""
    row = load_record(
        conn,
        path,
        "campaign_id, batch_size, max_batch_bytes, options_sha256, shard_index, shard_count",
    )
    campaign_id, batch_size, max_batch_bytes, options_sha256, shard_index, shard_count = row
    shard = None if shard_index is None else (shard_index, shard_count)

    def shard_text(value: tuple[int, int] | None) -> str:
        return "no shard" if value is None else f"shard {value[0]} of {value[1]}"

    differences: dict[str, str] = {}
    if campaign_id != identity.campaign_id:
        differences["campaign_id"] = (
            f"campaign id {preview(campaign_id)} in the journal, "
            f"{preview(identity.campaign_id)} now"
        )
    if batch_size != identity.batch_size:
        differences["batch_size"] = (
            f"batch_size {batch_size} in the journal, {identity.batch_size} now"
        )
    if max_batch_bytes != identity.max_batch_bytes:
        differences["max_batch_bytes"] = (
            f"max_batch_bytes {max_batch_bytes} in the journal, {identity.max_batch_bytes} now"
        )
    if bytes(options_sha256) != hashlib.sha256(identity.options).digest():
        differences["options"] = "campaign options differ"
    if shard != identity.shard:
        differences["shard"] = (
            f"{shard_text(shard)} in the journal, {shard_text(identity.shard)} now"
        )
    if differences:
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} belongs to another load: "
            + "; ".join(differences.values())
            + ". Give this load another checkpoint path, or delete the journal to start over",
            differs=differences,
        )
