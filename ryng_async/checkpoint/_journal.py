"""`SQLiteJournal`: one load's checkpoint journal, open, recording and committing.

`SQLiteJournal.open` takes the journal's lock, checks, creates or migrates the file,
folds the log a previous run left, and reads every batch into memory; what an open
journal holds is one `_Session`, made there and nowhere else. Each record method queues
one row and returns the future of its commit; the records queued during one turn of the
event loop (or a little longer on a busy loop, see `CommitPacer`) are committed together,
as one row of the log table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Self

import anyio

from .._sqlite import PassiveCheckpointer, no_room
from ._file import open_file, shut
from ._format import LOG_INSERT, Digest
from ._inspect import inspect, read_batches
from ._pacer import CommitPacer
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
from ._resolve import resolve
from ._rows import (
    IN_FLIGHT,
    UNKNOWN,
    BatchesView,
    Row,
    batch_from_row,
    check_accepted,
    clean_message,
    known_row,
    pack_records,
    ranges_text,
)

__all__ = ["SQLiteJournal"]

# The checkpointer thread copies the WAL into the database every this many commits, so
# the writer's own automatic checkpoint (SQLite's default, every 1000 pages), which would
# copy and sync on the event loop's thread, finds little or nothing left to copy.
_CHECKPOINT_EVERY = 64


class _Commit(asyncio.Future[None]):
    """The future of a record's commit; it knows whether its writer claimed it.

    Claimed: awaited, or its result or exception read. A failed commit that nobody claimed
    by `SQLiteJournal.aclose` is raised there, so a record whose future the bulk engine
    never awaits still reports a failed write.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.claimed = False

    def __await__(self) -> Any:
        self.claimed = True
        return super().__await__()

    __iter__ = __await__

    def result(self) -> None:
        self.claimed = True
        return super().result()

    def exception(self) -> BaseException | None:
        self.claimed = True
        return super().exception()


# A record and the future of its commit (None for a record queued by the journal itself).
_Queued = tuple[Row, "_Commit | None"]


class _Session:
    """What an open journal holds: made by `SQLiteJournal.open`, nowhere else.

    ``rows`` are the batch rows as last recorded (the hot path makes no JournalledBatch);
    ``sending`` the batches this run put in flight and has not settled; ``pending`` the
    records queued for the next commit.
    """

    __slots__ = (
        "checkpointer",
        "commits",
        "conn",
        "deferred_error",
        "digest",
        "flush_handle",
        "identity",
        "lock_fd",
        "loop",
        "pacer",
        "pending",
        "rows",
        "sending",
        "unclaimed",
    )

    def __init__(
        self,
        *,
        identity: LoadIdentity,
        conn: sqlite3.Connection,
        lock_fd: int,
        rows: dict[int, Row],
        digest: Digest,
        loop: asyncio.AbstractEventLoop,
        checkpointer: PassiveCheckpointer | None,
    ) -> None:
        self.identity = identity
        self.conn: sqlite3.Connection | None = conn
        self.lock_fd = lock_fd
        self.rows = rows
        self.digest = digest
        self.loop = loop
        self.checkpointer = checkpointer
        self.sending: set[int] = set()
        self.pending: list[_Queued] = []
        self.flush_handle: asyncio.Handle | None = None
        self.commits = 0
        self.pacer = CommitPacer(loop.time())
        self.deferred_error: CheckpointError | None = None
        self.unclaimed: list[_Commit] = []  # failed commits no writer had claimed yet


class SQLiteJournal:
    """The checkpoint journal of one load, in an SQLite file.

    Create it with a path (no I/O), then `open` it with the load's identity; `aclose` it
    (or use ``async with await journal.open(identity)``). It can be opened again after
    `aclose`, for the next run of the load.

    Each record method (`in_flight`, `settled`) queues its record and returns the future
    of its commit. Await it to know the record is durable and to see a failed write; a
    caller that need not wait (the bulk engine, for outcomes) leaves it: the record goes
    out with the next commit, at the latest by `aclose`, which then raises a failed write
    that no one awaited.

    Args:
        path: the journal file, created if missing (an empty file counts as missing). The
            lock ``<path>-lock`` is kept beside it, and SQLite's ``<path>-wal`` and
            ``<path>-shm`` while it is open.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._session: _Session | None = None
        self._closed: anyio.Event | None = None
        self._state = "new"

    def __repr__(self) -> str:
        return f"SQLiteJournal({self._path!r}, {self._state})"

    @property
    def path(self) -> str:
        """The journal's path, as given."""
        return self._path

    @property
    def identity(self) -> LoadIdentity | None:
        """The identity it was opened with, or None before `open`."""
        return None if self._session is None else self._session.identity

    @property
    def batches(self) -> Mapping[int, JournalledBatch]:
        """Every journalled batch by index, as last recorded (a live read-only view)."""
        return BatchesView({} if self._session is None else self._session.rows)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, identity: LoadIdentity) -> Self:
        """Take ownership of the journal for ``identity``'s load and read what it holds.

        Creates the file if missing and migrates an older format. Returns the journal,
        for ``async with await journal.open(identity):``.

        Raises:
            CheckpointRefusedError: the journal is in use by another load; it belongs to
                another load (what differs is named, and in ``differs``); it is not a
                journal or of a newer format; the location cannot be written. The journal
                was not changed, and a file that is not a journal was not touched.
            CheckpointError: (not a refusal) no room to create or open it: the disk is
                full or a file-size limit reached (the message says which, naming the
                file), or an I/O error.
        """
        if self._state in {"open", "closing"}:
            raise CheckpointRefusedError(f"the checkpoint journal {self._path!r} is already open")
        loop = asyncio.get_running_loop()
        # Shielded: a cancelled open must not leave the lock held with no one to close it.
        with anyio.CancelScope(shield=True):
            conn, fd, digest, rows = await anyio.to_thread.run_sync(open_file, self._path, identity)
        checkpointer = None
        with contextlib.suppress(RuntimeError):  # no thread to spare: the writer checkpoints
            checkpointer = PassiveCheckpointer(self._path, name=f"ryng-checkpoint-wal {self._path}")
        self._session = _Session(
            identity=identity,
            conn=conn,
            lock_fd=fd,
            rows=rows,
            digest=digest,
            loop=loop,
            checkpointer=checkpointer,
        )
        self._state = "open"
        return self

    async def aclose(self) -> None:
        """Write what is queued, close the file and release the lock. Idempotent.

        Raises:
            CheckpointError: a record whose commit no one awaited could not be written
                (everything is closed and released all the same).
        """
        if self._state == "closing" and self._closed is not None:
            with anyio.CancelScope(shield=True):
                await self._closed.wait()
            return
        session = self._session
        if self._state != "open" or session is None or session.conn is None:
            return
        self._state = "closing"
        self._closed = anyio.Event()
        self._flush()
        conn, session.conn = session.conn, None
        checkpointer, session.checkpointer = session.checkpointer, None
        # Shielded: a cancelled close must still close the file and free the lock.
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(shut, conn, session.lock_fd, checkpointer)
            finally:
                self._state = "closed"
                self._closed.set()
        error, session.deferred_error = session.deferred_error, None
        unclaimed, session.unclaimed = session.unclaimed, []
        if error is None:
            error = next((_failure(c) for c in unclaimed if not c.claimed), None)
        if error is not None:
            raise error

    async def __aenter__(self) -> Self:
        if self._state != "open":
            raise CheckpointRefusedError(
                "open the journal first: async with await journal.open(identity)"
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _live(self) -> _Session:
        if self._state != "open" or self._session is None:
            raise CheckpointRefusedError(
                f"the checkpoint journal {self._path!r} is "
                + ("not open" if self._state == "new" else "closed")
            )
        return self._session

    # --- the load's records -------------------------------------------------------------

    def digest(self, body: bytes | bytearray | memoryview) -> bytes:
        """The digest of a batch's encoded body, by this journal's algorithm (16 bytes).

        Known once the journal is open: a journal keeps the algorithm it was made with.
        """
        return self._live().digest(body)

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
        text = ranges_text(start, count, ranges)
        session = self._live()
        row = known_row(
            session.rows, index, (start, count, digest, text), self._path, session.identity.shard
        )
        if row is not None and row[9] is None:
            row = (*row[:9], text, *row[10:])  # the exact positions, learnt now (format 2)
            session.rows[index] = row
            self._enqueue(session, row, None)
        return None if row is None else batch_from_row(row)

    def in_flight(
        self,
        index: int,
        *,
        start: int,
        count: int,
        digest: bytes,
        attempt: int,
        maybe_duplicated: bool = False,
        ranges: Sequence[tuple[int, int]] | None = None,
        message: str = "",
        in_parts: bool = False,
    ) -> asyncio.Future[None]:
        """Record batch ``index`` as in flight; return the future of its commit.

        Call before each attempt's request is written, and await the future before
        writing it: once it is done the record is durable. The record is queued when this
        returns (no coroutine: the bulk engine's hot path). ``maybe_duplicated`` marks a
        resend of a batch that may already be in Ryng; ``ranges`` are its runs of input
        positions (see `prior`); ``message`` says what is in flight; ``in_parts``: only a
        part of it (after a 413; `JournalledBatch.sent_in_parts` then sticks). A writer
        cancelled while it awaits stops waiting, but its record is still written: a batch
        never sent may then read as in flight, the safe side.

        Raises:
            CheckpointError: the journal holds this batch with other content (see `prior`);
                (from the future) the write failed.
        """
        session = self._live()
        digest = bytes(digest)
        text = ranges_text(start, count, ranges)
        known = known_row(
            session.rows, index, (start, count, digest, text), self._path, session.identity.shard
        )
        session.sending.add(index)
        duplicated = bool(maybe_duplicated) or (known is not None and known[8])
        accepted = "" if known is None else known[10]  # runs accepted before: they stay
        parts = bool(in_parts) or (known is not None and known[11])
        row = (
            index,
            start,
            count,
            digest,
            IN_FLIGHT,
            attempt,
            None,
            clean_message(message),
            duplicated,
            text,
            accepted,
            parts,
        )
        session.rows[index] = row
        done = _Commit(session.loop)
        self._enqueue(session, row, done)
        return done

    def settled(
        self,
        index: int,
        *,
        state: BatchState,
        attempts: int,
        status: int | None,
        message: str,
        maybe_duplicated: bool = False,
        accepted_ranges: Sequence[tuple[int, int]] = (),
        in_parts: bool = False,
    ) -> asyncio.Future[None]:
        """Record the outcome of batch ``index``; return the future of its commit.

        Await the future to wait until the record is durable; or leave it (as the bulk
        engine does, from synchronous code): the record goes out with the next commit,
        at the latest by `aclose`, which then raises its failure if no one awaited it.

        The batch must have been recorded `in_flight` (by this run or an earlier one),
        except to skip it: a batch never sent and never journalled needs no record, since
        a resume sends what the journal does not hold (the future is then done already).
        ``accepted_ranges``: runs of its positions accepted though it was not as a whole
        (see `part_accepted`), added to those the journal holds; ``state`` is the rest's.
        ``in_parts`` (implied by ``accepted_ranges``): it was sent in parts after a 413.

        Raises:
            ValueError: ``state`` is in flight, the batch was never journalled (and is
                not skipped with no ``accepted_ranges``), or those are not its leads.
            CheckpointError: (from the future, or from `aclose`) the write failed.
        """
        session = self._live()
        if type(state) is not BatchState:
            state = BatchState(state)
        if state is BatchState.IN_FLIGHT:
            raise ValueError("a settled batch cannot be in flight; use in_flight()")
        done = _Commit(session.loop)
        known = session.rows.get(index)
        if known is None:
            if state is not BatchState.SKIPPED or accepted_ranges:
                raise ValueError(f"batch {index} was never journalled as in flight")
            done.set_result(None)  # never sent and not in the journal: a resume sends it
            return done
        session.sending.discard(index)
        row = (
            index,
            known[1],
            known[2],
            known[3],
            str(state),
            attempts,
            status,
            sys.intern(clean_message(message)),
            known[8] or bool(maybe_duplicated),
            known[9],
            check_accepted(known, accepted_ranges),
            known[11] or bool(in_parts) or bool(accepted_ranges),
        )
        session.rows[index] = row
        self._enqueue(session, row, done)
        return done

    def part_accepted(self, index: int, ranges: Sequence[tuple[int, int]]) -> None:
        """Record runs ``ranges`` of batch ``index`` (in flight) accepted (queued, not awaited).

        For a batch sent in parts after a 413: its state stays; these leads count as
        accepted whatever the rest becomes (`JournalledBatch.accepted_ranges`); it was
        sent in parts (`JournalledBatch.sent_in_parts`).

        Raises:
            ValueError: the batch was never journalled, or ``ranges`` are not its leads.
        """
        session = self._live()
        known = session.rows.get(index)
        if known is None:
            raise ValueError(f"batch {index} was never journalled as in flight")
        row = (*known[:10], check_accepted(known, ranges), known[11] or bool(ranges))
        session.rows[index] = row
        self._enqueue(session, row, None)

    def resolve_in_flight(self, index: int, *, message: str) -> None:
        """Record as unknown a batch an earlier run left in flight (queued, not awaited).

        For a run that reports the batch unknown without sending it: the journal then no
        longer lists it as in flight, as if a load were sending it. Nothing is written
        if the journal does not hold it in flight from an earlier run.
        """
        session = self._live()
        known = session.rows.get(index)
        if known is None or known[4] != IN_FLIGHT or index in session.sending:
            return
        row = (*known[:4], UNKNOWN, known[5], known[6], clean_message(message), *known[8:])
        session.rows[index] = row
        self._enqueue(session, row, None)

    # --- group commit -------------------------------------------------------------------
    #
    # Records queued during one turn of the event loop are committed together by a callback
    # at the end of that turn (or a little later on a busy loop: see CommitPacer), then
    # their writers are woken; records are written in the order they were queued, so the
    # last record of a batch wins. A writer cancelled while it awaits its future stops
    # waiting (asyncio cancels the future); its record is still written.

    def _enqueue(self, session: _Session, row: Row, done: _Commit | None) -> None:
        session.pending.append((row, done))
        if session.flush_handle is None:
            loop = session.loop
            at = session.pacer.commit_at(loop.time(), len(session.sending))
            if at is None:
                session.flush_handle = loop.call_soon(self._flush)
            else:
                session.flush_handle = loop.call_at(at, self._flush)

    def _flush(self) -> None:
        """Commit every queued record in one transaction; wake (or fail) their writers."""
        session = self._session
        if session is None:  # pragma: no cover - queued only while open
            return
        if session.flush_handle is not None:
            session.flush_handle.cancel()
            session.flush_handle = None
        group, session.pending = session.pending, []
        if not group or session.conn is None:
            return
        error: Exception | None = None
        started = time.perf_counter()
        try:
            self._commit(session.conn, [row for row, _ in group], time.time())
        except Exception as exc:  # handed to the writers of the group
            error = exc
        else:
            session.commits += 1
            if session.checkpointer is not None and session.commits % _CHECKPOINT_EVERY == 0:
                session.checkpointer.request()
        session.pacer.committed(session.loop.time(), time.perf_counter() - started)
        if error is None:
            for _, done in group:
                if done is not None and not done.done():
                    done.set_result(None)
        else:
            self._fail(session, group, error)

    def _fail(self, session: _Session, group: list[_Queued], error: Exception) -> None:
        """Hand a failed commit to its writers; keep it for `aclose` where none waits."""
        room = no_room(error, self._path)  # a disk that filled mid-load says so
        cause = f"{room} ({error})" if room is not None else str(error)
        failure = CheckpointError(f"could not write the checkpoint journal {self._path!r}: {cause}")
        failure.__cause__ = error
        for _, done in group:
            if done is None:
                if session.deferred_error is None:
                    session.deferred_error = failure
            elif not done.done():
                done.set_exception(failure)
                if not done.claimed:
                    # Read here so asyncio does not log it as never retrieved; aclose
                    # raises it if its writer has not claimed it by then.
                    asyncio.Future.exception(done)
                    session.unclaimed.append(done)

    @staticmethod
    def _commit(conn: sqlite3.Connection, rows: list[Row], now: float) -> None:
        # One insert, one transaction: the group's records packed in one row of the log.
        conn.execute(LOG_INSERT, (now, pack_records(rows)))

    # --- reading and deciding without a load -----------------------------------------------

    @staticmethod
    def inspect(path: str | os.PathLike[str]) -> JournalSummary:
        """Summarise the journal at ``path``; works while a load holds it.

        Blocking (for command lines and scripts); writes nothing, and an older format is
        read through a migrated copy in memory.

        Raises:
            CheckpointError: no journal there, not a journal, or a newer format.
        """
        return inspect(path)

    @staticmethod
    def read_batches(
        path: str | os.PathLike[str], *, states: Collection[BatchState] | None = None
    ) -> list[JournalledBatch]:
        """Every batch of the journal at ``path`` (only those in ``states`` if given).

        Blocking; like `inspect`, needs no lock and writes nothing.

        Raises:
            CheckpointError: no journal there, not a journal, or a newer format.
        """
        return read_batches(path, states=states)

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
        ``note`` (`JournalSummary.resolved`). A batch accepted in part
        (`JournalledBatch.accepted_ranges`) keeps those runs accepted: the decision is on
        the rest (`Resolution.ranges`), which is all the next run sends of it.

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
        return resolve(path, decision, batches=batches, note=note)


def _failure(commit: _Commit) -> CheckpointError | None:
    error = asyncio.Future.exception(commit)
    return error if isinstance(error, CheckpointError) else None
