"""The checkpoint journal of a bulk load: what was sent, what came back, in an SQLite file.

A load journals each batch as in flight before its request is written and its outcome as
soon as it is known, so a load killed at any instant can be run again without losing or
resending a lead. The journal holds no lead content: a batch is its index, the input
position of its first lead, its lead count, its leads' exact input positions (runs of
consecutive positions, when invalid or deduplicated leads fall between them), a digest
of its encoded body, and the runs it had accepted when sent in parts after a 413. Its size
grows with batches, never with leads.

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

Where things are: the record types and `CheckpointError` in ``_records``; the file format
(schema, migrations, the log's fold and replay) in ``_format``; a batch's row and its runs
as text in ``_rows``; opening and closing the file in ``_file``, its lock in ``_lock``;
reading without a load in ``_inspect``; an operator's decisions in ``_resolve``; when
commits run in ``_pacer``; `SQLiteJournal` itself in ``_journal``.
"""

from __future__ import annotations

from ._format import JOURNAL_FORMAT_VERSION
from ._journal import SQLiteJournal
from ._records import (
    BatchState,
    CheckpointError,
    CheckpointRefusedError,
    Decision,
    JournalledBatch,
    JournalSummary,
    LoadIdentity,
    Resolution,
)

__all__ = [
    "JOURNAL_FORMAT_VERSION",
    "BatchState",
    "CheckpointError",
    "CheckpointRefusedError",
    "Decision",
    "JournalSummary",
    "JournalledBatch",
    "LoadIdentity",
    "Resolution",
    "SQLiteJournal",
]
