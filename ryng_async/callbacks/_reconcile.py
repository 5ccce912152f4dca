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
import enum
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

from .._callback_events import TerminalCallback
from .._exceptions import ConfigurationError
from .._models import Lead
from ._export import FLUSH_BYTES, flush
from ._stores import (
    _APPLICATION_ID,
    CallbackStore,
    SQLiteCallbackStore,
    StoredCallback,
    iter_store,
)

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


class Status(enum.StrEnum):
    """What became of one lead."""

    ENDED = "ended"
    """Appended, called, and the call ended: a terminal callback matched."""
    CONNECTED = "connected"
    """Appended and a connect callback matched, but no terminal callback yet."""
    AWAITING = "awaiting"
    """Appended, no callback yet (within the deadline, or no deadline given)."""
    OVERDUE = "overdue"
    """Appended, and still no callback after the deadline."""
    AMBIGUOUS = "ambiguous"
    """Callbacks came for its key, but other leads that may have been appended share it."""
    NO_KEY = "no_key"
    """Appended, but the lead has no value for the key, so no callback can match it."""
    FAILED = "failed"
    """Its batch failed at load time: not appended."""
    FAILED_CALLED = "failed_called"
    """Its batch failed at load time, yet a callback carries its key: the batch may have
    reached Ryng after all. Ask Ryng before loading it again (a second load calls twice)."""
    UNKNOWN = "unknown"
    """Its batch's fate is unknown (timeout, drop) and no callback has shown it appended."""
    SKIPPED = "skipped"
    """Read but never sent (the load was cancelled, aborted or stopped)."""
    INVALID = "invalid"
    """Refused by validation before sending."""
    NOT_READ = "not_read"
    """Past the point where the load stopped reading its input."""


# Load outcomes, as a lead's ``load``; "not_read" for positions past the report's total.
LoadOutcome: TypeAlias = Literal["accepted", "failed", "unknown", "skipped", "invalid", "not_read"]
# Leads that may have reached Ryng, hence may have callbacks.
_CANDIDATES: Final = ("accepted", "unknown")


class LeadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One lead's line in a reconciliation.

    Attributes:
        position: the lead's input position (0 for the first lead).
        key: the lead's value for the matching key, or None.
        number: the lead's number.
        load: its outcome at load time: accepted, failed, unknown, skipped, invalid, or
            not_read.
        batch: the index of its batch, or None (invalid, not read).
        status: what became of it (`Status`).
        leads_with_key: leads that may have been appended and share its key (1: unique).
        calls: distinct calls (callIDs) whose callbacks carry its key.
        call_id: the matched call (the terminal one if any, else the last connected).
        last_event: that call's last event, e.g. ``"call-ended"``.
        disposition: the terminal callback's disposition.
        talktime: talk time in seconds.
        call_ended: when the call ended.
        recording_url: the call recording.
        agent_username: the agent who took the call.
    """

    position: int
    key: str | None
    number: str | None
    load: str
    batch: int | None
    status: Status
    leads_with_key: int = 0
    calls: int = 0
    call_id: int | None = None
    last_event: str | None = None
    disposition: str | None = None
    talktime: int | None = None
    call_ended: datetime | None = None
    recording_url: str | None = None
    agent_username: str | None = None


COLUMNS: Final = tuple(LeadStatus.__struct_fields__)


class ReconcileSummary(msgspec.Struct, kw_only=True):
    """Counts over a whole reconciliation.

    Attributes:
        key: the matching key.
        leads: leads read.
        by_status: leads per `Status` value.
        by_load: leads per load outcome.
        ambiguous_keys: distinct keys shared by several leads and carried by callbacks.
        callbacks: callbacks read from the store.
        callbacks_without_key: callbacks carrying no value for the key.
        unmatched_calls: distinct calls whose key matches no lead that may have been
            appended (another load's, or a key typed differently).
        calls_on_failed_leads: distinct calls whose key matches only leads of failed
            batches (`Status.FAILED_CALLED`): those batches may have reached Ryng.
        report_total: the report's ``total``, to compare with ``leads``.
    """

    key: str
    leads: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    by_load: dict[str, int] = msgspec.field(default_factory=dict)
    ambiguous_keys: int = 0
    callbacks: int = 0
    callbacks_without_key: int = 0
    unmatched_calls: int = 0
    calls_on_failed_leads: int = 0
    report_total: int = 0

    def table(self) -> str:
        """Return the counts as a small plain-text table."""
        lines = [f"{'status':<13} {'leads':>10}", f"{'-' * 13} {'-' * 10}"]
        for status in Status:
            count = self.by_status.get(status.value, 0)
            if count:
                lines.append(f"{status.value:<13} {count:>10,}")
        lines.append(f"{'total':<13} {self.leads:>10,}")
        notes = [f"matched by {self.key}; {_counted(self.callbacks, 'callback')} read"]
        if self.ambiguous_keys:
            shared = self.by_status.get("ambiguous", 0)
            notes.append(
                f"{_counted(self.ambiguous_keys, 'key')} "
                f"{_verb(self.ambiguous_keys, 'is', 'are')} shared by several leads: "
                f"{_counted(shared, 'lead')} cannot be told apart"
            )
        if self.unmatched_calls:
            notes.append(
                f"{_counted(self.unmatched_calls, 'call')} "
                f"{_verb(self.unmatched_calls, 'matches', 'match')} no lead of this load"
            )
        if self.calls_on_failed_leads:
            failed = self.by_status.get("failed_called", 0)
            notes.append(
                f"{_counted(self.calls_on_failed_leads, 'call')} "
                f"{_verb(self.calls_on_failed_leads, 'matches', 'match')} "
                f"{_counted(failed, 'lead')} of failed batches: those batches may have "
                "reached Ryng after all; ask Ryng before loading them again"
            )
        if self.callbacks_without_key:
            notes.append(
                f"{_counted(self.callbacks_without_key, 'callback')} "
                f"{_verb(self.callbacks_without_key, 'carries', 'carry')} no {self.key}"
            )
        if self.report_total != self.leads:
            notes.append(
                f"the report counts {_counted(self.report_total, 'lead')} read, "
                f"the input has {self.leads:,}"
            )
        return "\n".join(lines + notes)


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _verb(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


# -- the load's record -------------------------------------------------------------------


class _Batch(msgspec.Struct):
    index: int
    start: int
    count: int
    outcome: str
    # Exact runs of positions (reports since journal format 3); None in older reports.
    ranges: list[tuple[int, int]] | None = None


class _Invalid(msgspec.Struct):
    position: int


class _Report(msgspec.Struct):
    total: int
    batches: list[_Batch]
    invalid_leads: list[_Invalid] = msgspec.field(default_factory=list)
    input_read: int | None = None
    unread: dict[int, int] = msgspec.field(default_factory=dict)
    sharding: tuple[int, int] | None = None
    # Positions in no batch are invalid (a report) or not sent (a journal: it does not
    # record invalid leads, nor batches never sent).
    outside: str = "invalid"


_SQLITE_HEADER = b"SQLite format 3\x00"
_JOURNAL_OUTCOME = {"in_flight": "unknown"}


def _load_report(report: Any) -> _Report:
    """Read one report, or merge several: reports of a load's shards, or its journals."""
    if isinstance(report, list | tuple):
        if not report:
            raise ConfigurationError("report: no report or journal given")
        return _merged([_load_one(part) for part in report])
    return _load_one(report)


def _merged(parts: list[_Report]) -> _Report:
    if len(parts) == 1:
        return parts[0]
    reads = [part.input_read for part in parts]
    merged = _Report(
        total=sum(part.total for part in parts),
        batches=[batch for part in parts for batch in part.batches],
        invalid_leads=[lead for part in parts for lead in part.invalid_leads],
        input_read=None if None in reads else max(r for r in reads if r is not None),
        sharding=parts[0].sharding,
        outside=parts[0].outside,
    )
    for part in parts:
        merged.unread.update(part.unread)
    return merged


def _from_journal(path: Path) -> _Report:
    """A load's record as its checkpoint journal holds it (in flight: unknown)."""
    from ..checkpoint import CheckpointError, SQLiteJournal

    try:
        summary = SQLiteJournal.inspect(path)
        batches = SQLiteJournal.read_batches(path)
    except CheckpointError as exc:
        raise ConfigurationError(str(exc)) from exc
    if not all(batch.exact for batch in batches):
        raise ConfigurationError(
            f"the checkpoint journal {str(path)!r} was written by an older ryng_async and "
            "holds no exact positions for some batches: give the load's report instead"
        )
    return _Report(
        total=sum(batch.count for batch in batches),
        batches=[
            _Batch(
                index=batch.index,
                start=batch.start,
                count=batch.count,
                outcome=_JOURNAL_OUTCOME.get(batch.state.value, batch.state.value),
                ranges=list(batch.ranges),
            )
            for batch in batches
        ],
        sharding=None if summary.shard is None else (summary.shard[1], summary.batch_size),
        outside="skipped",
    )


def _load_one(report: Any) -> _Report:
    """Read a report: a `BulkReport`, its ``to_dict()``, its JSON, a file of either kind."""
    try:
        if isinstance(report, str | os.PathLike):
            path = Path(report)
            with contextlib.suppress(OSError), path.open("rb") as head:
                if head.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER:
                    return _from_journal(path)
        if hasattr(report, "to_dict"):
            return msgspec.convert(report.to_dict(), _Report, strict=False)
        if isinstance(report, Mapping):
            return msgspec.convert(report, _Report, strict=False)
        if isinstance(report, bytes | bytearray | memoryview):
            return msgspec.json.decode(report, type=_Report)
        if isinstance(report, str | os.PathLike):
            try:
                data = Path(report).read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"cannot read the report {report}: {exc}") from exc
            return msgspec.json.decode(data, type=_Report)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigurationError(f"not a bulk load report: {exc}") from exc
    raise ConfigurationError(
        f"report must be a BulkReport, its to_dict() or to_json(), or a path, "
        f"got {type(report).__name__}"
    )


class _Outcomes:
    """Gives each input position its load outcome and batch, walking the report once.

    A report that names each batch's exact runs of positions (and the input each shard did
    not read) is walked by them: a merged report of shards, whose batch indices repeat,
    and batches whose leads are not consecutive, are read as they are. An older report
    (no runs) is walked by its batches' counts, skipping its invalid leads.
    """

    def __init__(self, report: _Report) -> None:
        self.total = report.total
        self._invalid = sorted(lead.position for lead in report.invalid_leads)
        self._batches = sorted(report.batches, key=lambda b: b.index)
        self._next_invalid = 0
        self._next_batch = 0
        self._left = 0
        self._outcome = ""
        self._index = 0

    def at(self, position: int) -> tuple[str, int | None]:
        if position >= self.total:
            return "not_read", None
        invalid = self._invalid
        while self._next_invalid < len(invalid) and invalid[self._next_invalid] < position:
            self._next_invalid += 1
        if self._next_invalid < len(invalid) and invalid[self._next_invalid] == position:
            return "invalid", None
        if self._left == 0:
            if self._next_batch == len(self._batches):
                # Read, valid, but never packed into a batch before the load stopped.
                return "skipped", None
            batch = self._batches[self._next_batch]
            self._next_batch += 1
            if batch.start != position:
                raise ConfigurationError(
                    f"the leads do not match the report: batch {batch.index} starts at "
                    f"input position {batch.start}, but its first lead here is at {position}"
                )
            self._outcome, self._index, self._left = batch.outcome, batch.index, batch.count
        self._left -= 1
        return self._outcome, self._index

    def finish(self, read: int) -> None:
        if self._left or self._next_batch < len(self._batches):
            raise ConfigurationError(
                f"the leads do not match the report: the input ended after {read} leads, "
                f"before the report's batches did"
            )


class _ExactOutcomes:
    """`_Outcomes` by each batch's exact runs of positions (see `_Outcomes`)."""

    def __init__(self, report: _Report) -> None:
        self.total = report.total
        runs = [
            (first, first + length, batch.outcome, batch.index)
            for batch in report.batches
            for first, length in (batch.ranges or [(batch.start, batch.count)])
        ]
        runs.sort()
        self._runs = runs
        self._next = 0
        for (_, end, _, index), (after, _, _, then) in itertools.pairwise(runs):
            if after < end:
                raise ConfigurationError(
                    f"the report's batches overlap: batch {index} and batch {then} both "
                    f"hold input position {after} (a shard's report given twice?)"
                )
        self._read = report.input_read
        self._unread = report.unread
        self._sharding = report.sharding
        self._outside = report.outside

    def at(self, position: int) -> tuple[str, int | None]:
        runs = self._runs
        while self._next < len(runs) and runs[self._next][1] <= position:
            self._next += 1
        if self._next < len(runs) and runs[self._next][0] <= position:
            _, _, outcome, index = runs[self._next]
            return outcome, index
        if self._not_read(position):
            return "not_read", None
        return self._outside, None

    def _not_read(self, position: int) -> bool:
        if self._read is not None and position >= self._read:
            return True
        if not self._unread:
            return False
        if self._sharding is None:
            return position >= min(self._unread.values())
        count, block = self._sharding
        first = self._unread.get(position // block % count)
        return first is not None and position >= first

    def finish(self, read: int) -> None:
        runs = self._runs
        while self._next < len(runs) and runs[self._next][1] <= read:
            self._next += 1
        if self._next < len(runs):
            raise ConfigurationError(
                f"the leads do not match the report: the input ended after {read} leads, "
                f"before the report's batches did (batch {runs[self._next][3]} holds input "
                f"position {max(read, runs[self._next][0])})"
            )


def _outcomes(report: _Report) -> _Outcomes | _ExactOutcomes:
    exact = all(batch.ranges is not None for batch in report.batches)
    if exact and (report.input_read is not None or report.outside != "invalid"):
        return _ExactOutcomes(report)
    return _Outcomes(report)


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
_INSERT_CALL = "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

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


def _utc(stamp: datetime | None) -> str | None:
    # Normalised to UTC so that the text sorts in time order.
    return None if stamp is None else stamp.astimezone(UTC).isoformat()


def _call_row(stored: StoredCallback, key: str) -> tuple[Any, ...] | None:
    event = stored.event
    value = _key_value(event.customer_num if key == "number" else event.custom_fields.get(key))
    if value is None:
        return None
    if isinstance(event, TerminalCallback):
        return (
            stored.seq,
            value,
            event.call_id,
            1,
            event.event,
            event.disposition,
            event.talktime,
            _utc(event.call_ended),
            event.recording_url,
            event.agent_username,
        )
    return (stored.seq, value, event.call_id, 0, event.event, None, None, None, None,
            event.agent_username)  # fmt: skip


def _sqlite_store_path(store: Any) -> Path | None:
    """The file of a SQLite store given as an object or a path, for the fast path."""
    if isinstance(store, SQLiteCallbackStore):
        return store.path
    if isinstance(store, str | os.PathLike):
        path = Path(store)
        try:
            with open(path, "rb") as handle:
                if handle.read(16) == b"SQLite format 3\x00":
                    return path
        except OSError:
            return None
    return None


# What `_call_row` does in Python, in SQL, from the store's own columns; only a custom
# field key needs the raw body (json_extract, once per callback).
_COPY_CALLS = """
INSERT INTO calls
SELECT seq, key, call_id, callback_type = 'terminal', event,
       disposition, talktime, call_ended, recording_url, agent_username
FROM (SELECT *, {key} AS key FROM store.callbacks)
WHERE key IS NOT NULL AND trim(key, ' ' || char(9, 10, 11, 12, 13)) != ''
"""


ReconcileFormat: TypeAlias = Literal["csv", "jsonl"]


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
        self._report = _load_report(report)
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
        return db

    @staticmethod
    def _insert(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")

    def _insert_leads(
        self,
        db: sqlite3.Connection,
        outcomes: _Outcomes | _ExactOutcomes,
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
        outcomes = _outcomes(self._report)
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
        read = without_key = 0
        iterator = aiter(events)
        try:
            async for stored in iterator:
                read += 1
                row = _call_row(stored, self.key)
                if row is None:
                    without_key += 1
                    continue
                rows.append(row)
                if len(rows) == _CHUNK:
                    await asyncio.to_thread(self._insert, db, _INSERT_CALL, rows.copy())
                    rows.clear()
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        if rows:
            await asyncio.to_thread(self._insert, db, _INSERT_CALL, rows)
        self.summary.callbacks = read
        self.summary.callbacks_without_key = without_key

    def _copy_calls(self, db: sqlite3.Connection, path: Path) -> None:
        db.execute("ATTACH DATABASE ? AS store", (f"{path.resolve().as_uri()}?mode=ro",))
        try:
            (application_id,) = db.execute("PRAGMA store.application_id").fetchone()
            if application_id != _APPLICATION_ID:
                raise ConfigurationError(f"{path} is not a ryng_async callback store")
            key = (
                "customer_num"
                if self.key == "number"
                else f"json_extract(raw, '$.customFields.{self.key}')"  # key checked by _KEY
            )
            db.execute("BEGIN")
            db.execute(_COPY_CALLS.format(key=key))
            (read,) = db.execute("SELECT count(*) FROM store.callbacks").fetchone()
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.execute("DETACH DATABASE store")
        (kept,) = db.execute("SELECT count(*) FROM calls").fetchone()
        self.summary.callbacks = int(read)
        self.summary.callbacks_without_key = int(read) - int(kept)

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

    ::

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
