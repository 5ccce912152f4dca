"""Join what a load sent with what Ryng reported back: `reconcile`, lead by lead.

Inputs: the leads as they were given to ``bulk_append`` (every row, in input order, the
invalid ones too, since report positions count them), the load's `BulkReport` (or its
``to_json()``; the reports of a sharded load's shards, merged or not; or the load's
checkpoint journals), and a callback store. Leads and callbacks are matched by a key the caller
names: the number, or a custom field holding an id unique to the lead (a CRM id).

The work is done in a temporary SQLite file, so memory stays bounded whatever the number
of leads and callbacks: the leads are streamed into it with their load outcome, the
callbacks are streamed into it with their key, and the joined rows are streamed out in
input order.

Matching by a key that several leads share (the vendor's own example repeats a number)
cannot say which lead a call belongs to: such leads are reported ``ambiguous`` with how
many leads and calls share the key, never given a guessed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal, Self, TypeAlias

import msgspec

from .._exceptions import ConfigurationError
from .._models import Lead
from .._sqlite import SQLITE_MAGIC
from ._export import FLUSH_BYTES, flush
from ._load_outcomes import ExactOutcomes, Outcomes, load_report, outcomes_of
from ._reconcile_results import COLUMNS, LeadStatus, ReconcileSummary, Status
from ._sqlite_store import CALLBACK_COLUMNS, check_store, sqlite_row
from ._stores import CallbackStore, SQLiteCallbackStore, StoredCallback, iter_store

__all__ = [
    "LeadStatus",
    "ReconcileFormat",
    "ReconcileSummary",
    "Reconciliation",
    "Status",
    "reconcile",
    "reconcile_to_file",
]

_KEY: Final = re.compile(r"number|customField[1-9][0-9]*")
_CHUNK: Final = 5000
# Leads that may have reached Ryng, hence may have callbacks.
_CANDIDATES: Final = ("accepted", "unknown")


def _key_value(value: object) -> str | None:
    """A key's value, or None: an empty or blank value is no key (it would join strangers)."""
    return value if isinstance(value, str) and value.strip() else None


def _lead_fields(lead: Any, key: str) -> tuple[str | None, str | None]:
    row = lead.to_wire() if isinstance(lead, Lead) else lead
    if not isinstance(row, Mapping):
        return None, None
    number, value = row.get("number"), row.get(key)
    return _key_value(value), number if isinstance(number, str) else None


# -- the work file -----------------------------------------------------------------------

_WORK_SCHEMA = """
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
PRAGMA temp_store = FILE;
CREATE TABLE leads (
    position INTEGER PRIMARY KEY,
    key      TEXT,
    number   TEXT,
    load     TEXT NOT NULL,
    batch    INTEGER
);
CREATE TABLE calls (
    seq            INTEGER PRIMARY KEY,
    key            TEXT NOT NULL,
    call_id        INTEGER NOT NULL,
    terminal       INTEGER NOT NULL,
    event          TEXT NOT NULL,
    disposition    TEXT,
    talktime       INTEGER,
    call_ended     TEXT,
    recording_url  TEXT,
    agent_username TEXT
);
"""
_INSERT_LEAD = "INSERT INTO leads VALUES (?, ?, ?, ?, ?)"

# Per key: the leads that may have reached Ryng, and the calls.
_AGGREGATE = """
CREATE INDEX leads_key ON leads (key) WHERE load IN ('accepted', 'unknown');
CREATE INDEX calls_key ON calls (key, terminal, call_ended, seq);
CREATE TABLE candidates AS
    SELECT key, count(*) AS n FROM leads
    WHERE load IN ('accepted', 'unknown') AND key IS NOT NULL GROUP BY key;
CREATE UNIQUE INDEX candidates_key ON candidates (key);
CREATE TABLE keyed AS
    SELECT key,
           count(DISTINCT call_id) AS calls,
           (SELECT c.seq FROM calls c WHERE c.key = k.key AND c.terminal = 1
            ORDER BY c.call_ended DESC, c.seq DESC LIMIT 1) AS terminal_seq,
           max(seq) AS last_seq
    FROM calls k GROUP BY key;
CREATE UNIQUE INDEX keyed_key ON keyed (key);
"""
_UNMATCHED = """
SELECT count(DISTINCT c.call_id) FROM calls c
WHERE NOT EXISTS (SELECT 1 FROM candidates d WHERE d.key = c.key)
"""
# Calls on the key of a lead whose batch failed (and of no lead that may have reached
# Ryng): not strangers, but signs that the failed batch reached Ryng after all.
_FAILED_CALLED = """
CREATE INDEX leads_failed_key ON leads (key) WHERE load = 'failed';
CREATE TEMP TABLE failed_called AS
    SELECT DISTINCT c.call_id FROM calls c
    WHERE NOT EXISTS (SELECT 1 FROM candidates d WHERE d.key = c.key)
      AND EXISTS (SELECT 1 FROM leads l WHERE l.key = c.key AND l.load = 'failed');
"""
_AMBIGUOUS_KEYS = "SELECT count(*) FROM candidates d JOIN keyed k USING (key) WHERE d.n > 1"
_JOINED = """
SELECT l.position, l.key, l.number, l.load, l.batch,
       coalesce(d.n, 0), coalesce(k.calls, 0),
       coalesce(t.call_id, c.call_id), coalesce(t.event, c.event),
       t.disposition, t.talktime, t.call_ended, t.recording_url,
       coalesce(t.agent_username, c.agent_username),
       t.seq IS NOT NULL, c.seq IS NOT NULL
FROM leads l
LEFT JOIN candidates d ON d.key = l.key AND l.load IN ('accepted', 'unknown')
LEFT JOIN keyed k ON k.key = l.key
LEFT JOIN calls t ON t.seq = k.terminal_seq
LEFT JOIN calls c ON c.seq = k.last_seq
ORDER BY l.position
"""


def _sqlite_store_path(store: Any) -> Path | None:
    """The file of a SQLite store given as an object or a path, for the fast path."""
    if isinstance(store, SQLiteCallbackStore):
        return store.path
    if isinstance(store, str | os.PathLike):
        path = Path(store)
        try:
            with open(path, "rb") as handle:
                if handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                    return path
        except OSError:
            return None
    return None


# The one rule from a callback to its row of ``calls``, in SQL from the store's own columns
# (only a custom field key needs the raw body: json_extract, once per callback). The
# source is the store's table (attached) or ``incoming``, where the callbacks of any
# other store are written first, in the store's own row format.
_COPY_CALLS = """
INSERT INTO calls
SELECT seq, key, call_id, callback_type = 'terminal', event,
       disposition, talktime, call_ended, recording_url, agent_username
FROM (SELECT *, {key} AS key FROM {source})
WHERE key IS NOT NULL AND trim(key, ' ' || char(9, 10, 11, 12, 13)) != ''
"""
_INCOMING = f"CREATE TABLE incoming ({CALLBACK_COLUMNS})"
_INSERT_INCOMING = "INSERT INTO incoming VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


ReconcileFormat: TypeAlias = Literal["csv", "jsonl"]
"""How `reconcile_to_file` writes the lines: CSV with a header row, or JSON Lines."""


class Reconciliation:
    """The per-lead lines of a reconciliation, streamed in input order; see `reconcile`.

    Use as ``async with reconcile(...) as lines: async for line in lines: ...``; after
    the loop, `summary` holds the counts. The temporary work file is removed on exit.
    """

    def __init__(
        self,
        leads: Iterable[Any] | AsyncIterable[Any],
        report: Any,
        store: CallbackStore | AsyncIterable[StoredCallback] | str | os.PathLike[str],
        *,
        key: str,
        deadline: timedelta | None,
        loaded_at: datetime | None,
        now: datetime | None,
        work_dir: str | os.PathLike[str] | None,
    ) -> None:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ConfigurationError(
                f"key must be 'number' or a custom field like 'customField3', got {key!r}"
            )
        if deadline is not None and loaded_at is None:
            raise ConfigurationError("a deadline needs loaded_at, the time of the load")
        if loaded_at is not None and loaded_at.tzinfo is None:
            raise ConfigurationError("loaded_at must be timezone-aware")
        self._report = load_report(report)
        self._leads = leads
        self._store = store
        self.key = key
        self._overdue = (
            deadline is not None
            and loaded_at is not None
            and (now or datetime.now(UTC)) > loaded_at + deadline
        )
        self._work_dir = work_dir
        self._dir: str | None = None
        self._db: sqlite3.Connection | None = None
        self._started = False
        self.summary = ReconcileSummary(key=key, report_total=self._report.total)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Remove the work file."""
        db, self._db = self._db, None
        directory, self._dir = self._dir, None
        if db is not None:
            db.close()
        if directory is not None:
            await asyncio.to_thread(shutil.rmtree, directory, True)

    def __aiter__(self) -> AsyncGenerator[LeadStatus, None]:
        return self._lines()

    # -- building the work file ---------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self._dir = tempfile.mkdtemp(prefix="ryng-reconcile-", dir=self._work_dir)
        db = sqlite3.connect(
            Path(self._dir) / "work.db", isolation_level=None, check_same_thread=False
        )
        db.executescript(_WORK_SCHEMA)
        db.execute(_INCOMING)
        return db

    @staticmethod
    def _insert(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")

    def _insert_leads(
        self,
        db: sqlite3.Connection,
        outcomes: Outcomes | ExactOutcomes,
        chunk: list[Any],
        start: int,
    ) -> None:
        by_load = self.summary.by_load
        rows = []
        for position, lead in enumerate(chunk, start):
            value, number = _lead_fields(lead, self.key)
            load, batch = outcomes.at(position)
            by_load[load] = by_load.get(load, 0) + 1
            rows.append((position, value, number, load, batch))
        self._insert(db, _INSERT_LEAD, rows)

    async def _load_leads(self, db: sqlite3.Connection) -> None:
        outcomes = outcomes_of(self._report)
        position = 0
        async for chunk in _chunks(self._leads):
            await asyncio.to_thread(self._insert_leads, db, outcomes, chunk, position)
            position += len(chunk)
        outcomes.finish(position)
        self.summary.leads = position

    async def _load_calls(self, db: sqlite3.Connection) -> None:
        path = _sqlite_store_path(self._store)
        if path is not None:
            await asyncio.to_thread(self._copy_calls, db, path)
            return
        store = self._store
        events: AsyncIterable[StoredCallback]
        if isinstance(store, str | os.PathLike):
            events = iter_store(store)
        elif isinstance(store, AsyncIterable):
            events = store
        else:
            events = store.iter_events()
        rows: list[tuple[Any, ...]] = []
        read = 0
        iterator = aiter(events)
        try:
            async for stored in iterator:
                read += 1
                rows.append((stored.seq, *sqlite_row(stored.event, stored.raw, stored.received_at)))
                if len(rows) == _CHUNK:
                    await asyncio.to_thread(self._copy_incoming, db, rows.copy())
                    rows.clear()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        if rows:
            await asyncio.to_thread(self._copy_incoming, db, rows)
        self._count_calls(db, read)

    def _key_sql(self) -> str:
        if self.key == "number":
            return "customer_num"
        return f"json_extract(raw, '$.customFields.{self.key}')"  # key checked by _KEY

    def _copy_incoming(self, db: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN")
        try:
            db.executemany(_INSERT_INCOMING, rows)
            db.execute(_COPY_CALLS.format(key=self._key_sql(), source="incoming"))
            db.execute("DELETE FROM incoming")
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _count_calls(self, db: sqlite3.Connection, read: int) -> None:
        (kept,) = db.execute("SELECT count(*) FROM calls").fetchone()
        self.summary.callbacks = read
        self.summary.callbacks_without_key = read - int(kept)

    def _copy_calls(self, db: sqlite3.Connection, path: Path) -> None:
        db.execute("ATTACH DATABASE ? AS store", (f"{path.resolve().as_uri()}?mode=ro",))
        try:
            if check_store(db, path, schema="store"):
                raise ConfigurationError(f"{path} is not a ryng_async callback store")
            db.execute("BEGIN")
            db.execute(_COPY_CALLS.format(key=self._key_sql(), source="store.callbacks"))
            (read,) = db.execute("SELECT count(*) FROM store.callbacks").fetchone()
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.execute("DETACH DATABASE store")
        self._count_calls(db, int(read))

    def _aggregate(self, db: sqlite3.Connection) -> None:
        db.executescript(_AGGREGATE)
        (self.summary.unmatched_calls,) = db.execute(_UNMATCHED).fetchone()
        db.executescript(_FAILED_CALLED)
        (failed_called,) = db.execute("SELECT count(*) FROM failed_called").fetchone()
        self.summary.calls_on_failed_leads = failed_called
        self.summary.unmatched_calls -= failed_called
        (self.summary.ambiguous_keys,) = db.execute(_AMBIGUOUS_KEYS).fetchone()

    # -- streaming the lines ------------------------------------------------------------

    def _status(self, row: tuple[Any, ...]) -> LeadStatus:
        (position, key, number, load, batch, sharing, calls, call_id, event, disposition,
         talktime, ended, recording, agent, has_terminal, has_connect) = row  # fmt: skip
        matched = False
        if load == "failed" and calls and key is not None:
            matched = True
            status = Status.FAILED_CALLED
        elif load not in _CANDIDATES:
            status = Status(load)
        elif key is None:
            status = Status.NO_KEY
        elif not calls:
            if load == "unknown":
                status = Status.UNKNOWN
            else:
                status = Status.OVERDUE if self._overdue else Status.AWAITING
        elif sharing > 1:
            status = Status.AMBIGUOUS
        else:
            matched = True
            status = Status.ENDED if has_terminal else Status.CONNECTED
        if not matched:
            return LeadStatus(
                position=position,
                key=key,
                number=number,
                load=load,
                batch=batch,
                status=status,
                leads_with_key=sharing,
                calls=calls,
            )
        del has_connect
        return LeadStatus(
            position=position,
            key=key,
            number=number,
            load=load,
            batch=batch,
            status=status,
            leads_with_key=sharing,
            calls=calls,
            call_id=call_id,
            last_event=event,
            disposition=disposition,
            talktime=talktime,
            call_ended=None if ended is None else datetime.fromisoformat(ended),
            recording_url=recording,
            agent_username=agent,
        )

    def _page(self, cursor: sqlite3.Cursor) -> list[LeadStatus]:
        return [self._status(row) for row in cursor.fetchmany(_CHUNK)]

    async def _lines(self) -> AsyncGenerator[LeadStatus, None]:
        if self._started:
            raise RuntimeError("a Reconciliation can be iterated once")
        self._started = True
        db = self._db = await asyncio.to_thread(self._open)
        await self._load_leads(db)
        await self._load_calls(db)
        await asyncio.to_thread(self._aggregate, db)
        cursor = await asyncio.to_thread(db.execute, _JOINED)
        by_status = self.summary.by_status
        try:
            while page := await asyncio.to_thread(self._page, cursor):
                for line in page:
                    by_status[line.status.value] = by_status.get(line.status.value, 0) + 1
                    yield line
        finally:
            cursor.close()


async def _chunks(leads: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[list[Any]]:
    """The leads in lists of `_CHUNK`, from a plain or an async iterable."""
    if isinstance(leads, AsyncIterable):
        chunk: list[Any] = []
        async for lead in leads:
            chunk.append(lead)
            if len(chunk) == _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(leads)
    while chunk := list(itertools.islice(iterator, _CHUNK)):
        yield chunk


def reconcile(
    leads: Iterable[Any] | AsyncIterable[Any],
    report: Any,
    store: CallbackStore | AsyncIterable[StoredCallback] | str | os.PathLike[str],
    *,
    key: str = "number",
    deadline: timedelta | None = None,
    loaded_at: datetime | None = None,
    now: datetime | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> Reconciliation:
    """Say, lead by lead, what became of a load: its outcome and the callbacks it got.

    For example:

        async with reconcile(leads, report, "ryng-callbacks.db", key="customField3") as lines:
            async for line in lines:
                print(line.position, line.status, line.disposition)
        print(lines.summary.table())

    Args:
        leads: every lead given to the load, in the same order (the invalid ones too):
            wire-form mappings or `Lead` s, a plain or async iterable, read once.
        report: the load's `BulkReport`, its ``to_dict()``, its ``to_json()`` bytes, or
            the path of a file holding that JSON; or a list of them: the reports of a
            sharded load's shards (or their merge, `BulkReport.merge`); or the path of
            the load's checkpoint journal, or a list of its shards' journals (a journal
            records no invalid leads: leads in no journalled batch read as skipped).
        store: a callback store, a store file (SQLite files are joined in SQL, fastest),
            or an async iterable of `StoredCallback`.
        key: what ties a callback to a lead: ``"number"`` (the callback's
            ``customerNum``) or a custom field (``"customField3"``) that holds a value
            unique to each lead, such as a CRM id. A value several leads share makes
            them `Status.AMBIGUOUS` once callbacks carry it.
        deadline: how long after ``loaded_at`` an appended lead may go without a callback
            before it is `Status.OVERDUE` rather than `Status.AWAITING`.
        loaded_at: when the load ran (timezone-aware); needed with ``deadline``.
        now: the time to judge the deadline against (default: now).
        work_dir: where the temporary work file goes (default: the system's temp dir);
            it needs room for about 100 bytes per lead and per callback.

    Returns:
        A `Reconciliation`: an async context manager and async iterable of `LeadStatus`
        in input order, with ``summary`` complete once iterated.

    Raises:
        ConfigurationError: a bad key, report or store, or leads that do not match the
            report (raised while iterating, where the mismatch shows).
    """
    return Reconciliation(
        leads,
        report,
        store,
        key=key,
        deadline=deadline,
        loaded_at=loaded_at,
        now=now,
        work_dir=work_dir,
    )


_ENDED_AT: Final = COLUMNS.index("call_ended")


def _csv_row(line: LeadStatus) -> list[Any]:
    # csv writes None as "" and a StrEnum as its value; only the datetime needs help.
    row = list(msgspec.structs.astuple(line))
    ended = row[_ENDED_AT]
    if ended is not None:
        row[_ENDED_AT] = ended.isoformat()
    return row


async def reconcile_to_file(
    lines: Reconciliation,
    out: IO[bytes],
    *,
    format: ReconcileFormat = "csv",
) -> ReconcileSummary:
    """Write a reconciliation's lines to ``out`` as CSV (with a header) or JSON Lines.

    For ``ryng-async reconcile``. The columns are `LeadStatus`'s fields, in order.

    Args:
        lines: what `reconcile` returned (not yet iterated); closed here, its work file
            removed, whatever happens.
        out: a binary file.
        format: ``"csv"`` or ``"jsonl"``.

    Returns:
        The summary, complete.

    Raises:
        ConfigurationError: an unknown format, or any error of `reconcile`.
    """
    if format not in ("csv", "jsonl"):
        raise ConfigurationError(f"format must be 'csv' or 'jsonl', got {format!r}")
    encoder = msgspec.json.Encoder()
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    if format == "csv":
        writer.writerow(COLUMNS)
    buffer = bytearray()
    async with lines, contextlib.aclosing(lines.__aiter__()) as rows:
        async for line in rows:
            if format == "csv":
                writer.writerow(_csv_row(line))
            else:
                encoder.encode_into(line, buffer, len(buffer))
                buffer += b"\n"
            if text.tell() + len(buffer) >= FLUSH_BYTES:
                await flush(text, buffer, out)
    await flush(text, buffer, out)
    await asyncio.to_thread(out.flush)
    return lines.summary
