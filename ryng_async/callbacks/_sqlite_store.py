"""`SQLiteCallbackStore`: every callback in one SQLite file, WAL mode, group commits.

Also how such a file is read without opening it for writing (`open_for_reading`,
`iter_sqlite`), and its header check (`check_store`), which reconcile uses on a store it
attaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeAlias

from .._callback_events import CallbackEvent, TerminalCallback
from .._exceptions import ConfigurationError, ResourceError, RyngError
from .._sqlite import (
    CALLBACK_STORE_ID,
    ForeignDatabaseError,
    PassiveCheckpointer,
    application_version,
    connect,
    connect_read_only,
    no_room,
)
from ._group_writer import MAX_GROUP, GroupWriter
from ._stored import PAGE, StoredCallback, now, paged, stored_callback, utf8

__all__ = [
    "CALLBACK_COLUMNS",
    "SQLiteCallbackStore",
    "Synchronous",
    "check_store",
    "iter_sqlite",
    "open_for_reading",
    "sqlite_row",
]

# "RYCB": marks a SQLite file as a ryng_async callback store.
_APPLICATION_ID: Final = CALLBACK_STORE_ID
_SCHEMA_VERSION: Final = 1
# A checkpoint is asked for after this many new rows (about 10 MB of WAL), or after this
# many seconds.
_CHECKPOINT_ROWS: Final = 4000
_CHECKPOINT_EVERY: Final = 1.0
# The WAL file is cut back to this size when it starts over.
_WAL_SIZE_LIMIT: Final = 64 << 20
logger = logging.getLogger("ryng_async.callbacks")

CALLBACK_COLUMNS: Final = """
    seq            INTEGER PRIMARY KEY,
    received_at    TEXT    NOT NULL,
    callback_type  TEXT    NOT NULL,
    call_id        INTEGER NOT NULL,
    event          TEXT    NOT NULL,
    customer_num   TEXT,
    agent_username TEXT,
    disposition    TEXT,
    talktime       INTEGER,
    call_ended     TEXT,
    recording_url  TEXT,
    raw            TEXT    NOT NULL
"""
"""The columns of the ``callbacks`` table (``seq``, then what `sqlite_row` gives)."""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS callbacks ({CALLBACK_COLUMNS});
CREATE UNIQUE INDEX IF NOT EXISTS callbacks_dedupe ON callbacks (call_id, callback_type, event);
"""
_INSERT_INTO = (
    "INSERT OR IGNORE INTO callbacks (received_at, callback_type, call_id, event, customer_num,"
    " agent_username, disposition, talktime, call_ended, recording_url, raw) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_NEW_KEYS = (
    "SELECT json_group_array(json_array(call_id, callback_type, event)) FROM callbacks"
    " WHERE seq BETWEEN ? AND ?"
)


@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    return _INSERT_INTO + ", ".join([_ROW] * rows)


_SELECT_PAGE = "SELECT seq, received_at, raw FROM callbacks WHERE seq > ? ORDER BY seq LIMIT ?"

Synchronous: TypeAlias = Literal["full", "normal"]


def sqlite_row(event: CallbackEvent, raw: bytes, received_at: datetime) -> tuple[Any, ...]:
    """The store's row of a callback: the columns of ``callbacks`` after ``seq``."""
    terminal = event if isinstance(event, TerminalCallback) else None
    ended = terminal.call_ended if terminal is not None else None
    return (
        received_at.isoformat(),
        "terminal" if terminal is not None else "connect",
        event.call_id,
        event.event,
        event.customer_num,
        event.agent_username,
        terminal.disposition if terminal is not None else None,
        terminal.talktime if terminal is not None else None,
        ended.astimezone(UTC).isoformat() if ended is not None else None,
        terminal.recording_url if terminal is not None else None,
        utf8(raw),
    )


def check_store(connection: sqlite3.Connection, path: Path, *, schema: str = "main") -> bool:
    """Check that a database is a callback store this version reads; True if it is empty.

    ``schema`` names an attached database.

    Raises:
        ConfigurationError: it is another database, or a store of another schema version.
        sqlite3.Error: it cannot be read.
    """
    try:
        version = application_version(connection, _APPLICATION_ID, schema=schema)
    except ForeignDatabaseError as foreign:
        raise ConfigurationError(f"{path} is not a ryng_async callback store ({foreign})") from None
    if version is None:
        return True
    if version != _SCHEMA_VERSION:
        raise ConfigurationError(
            f"{path} is a callback store of schema version {version}; this version of "
            f"ryng_async reads version {_SCHEMA_VERSION}"
        )
    return False


def _page(connection: sqlite3.Connection, after: int) -> list[StoredCallback]:
    rows = connection.execute(_SELECT_PAGE, (after, PAGE)).fetchall()
    return [stored_callback(*row) for row in rows]


async def iter_sqlite(path: Path) -> AsyncIterator[StoredCallback]:
    """Every callback of the store file at ``path``, in order, a page at a time."""
    connection = await asyncio.to_thread(open_for_reading, path)
    try:
        async for stored in paged(lambda after: _page(connection, after)):
            yield stored
    finally:
        connection.close()


def open_for_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection to the callback store at ``path``, its header checked.

    Raises:
        ConfigurationError: no file there; it is not a callback store (another SQLite
            database, a checkpoint journal, not a database at all: the message says which)
            or one of another schema version; it cannot be read.
    """
    if not path.is_file():
        raise ConfigurationError(f"callback store {path} does not exist")
    try:
        connection = connect_read_only(path)
        try:
            empty = check_store(connection, path)
        except BaseException:
            connection.close()
            raise
    except sqlite3.DatabaseError as exc:
        if exc.sqlite_errorname == "SQLITE_NOTADB":
            raise ConfigurationError(
                f"{path} is not a ryng_async callback store (it is not an SQLite database)"
            ) from exc
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    if empty:
        connection.close()
        raise ConfigurationError(f"{path} is not a ryng_async callback store (it is empty)")
    return connection


def _set_up(connection: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Set the writer's connection up; create the schema in a new file."""
    new = check_store(connection, path)  # a foreign file is refused untouched
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    # Checkpoints run in their own thread (a PassiveCheckpointer), not in a commit.
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
    if new:
        connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    connection.executescript(_SCHEMA)


class SQLiteCallbackStore:
    """The default store: every callback in one SQLite file (WAL mode, group commits).

    One writing thread commits each group of callbacks that arrived while the previous
    commit was being written, so a burst costs one disk flush, not one per callback. With
    ``synchronous="full"`` (the default) a commit is flushed to disk before ``add``
    returns: a stored callback survives a power cut. ``"normal"`` survives a crash of the
    process but not of the machine, and is faster on slow disks.

    The table ``callbacks`` holds, per callback: ``seq``, ``received_at`` (ISO 8601, UTC),
    ``callback_type``, ``call_id``, ``event``, a few fields for querying by hand
    (``customer_num``, ``agent_username``, ``disposition``, ``talktime``, ``call_ended``
    in UTC, ``recording_url``) and ``raw``, the body as received (JSON text, so SQLite's
    ``json_extract(raw, '$.field')`` reaches any field, unknown ones included). A UNIQUE
    index on ``(call_id, callback_type, event)`` keeps one copy of each callback.

    Several processes may share one file (SQLite locks it). Making one does no I/O: the
    file is opened by `open`, ``async with`` or the first `add`. Use ``async with`` or
    call `aclose`.

    Args:
        path: the database file; created with its schema if missing.
        synchronous: ``"full"`` or ``"normal"`` (see above).

    Raises:
        ConfigurationError: ``synchronous`` is neither; (from `open`) the file cannot be
            opened or is not a callback store.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ConfigurationError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._checkpointer: PassiveCheckpointer | None = None
        self._since_checkpoint = 0
        self._wal_behind = False
        self._writer = GroupWriter(
            f"ryng-callbacks-sqlite:{self.path.name}", self._setup, self._write, self._teardown
        )

    def __repr__(self) -> str:
        return f"SQLiteCallbackStore({str(self.path)!r})"

    async def open(self) -> Self:
        """Open the file (in a worker thread) and start the writing thread; return the store.

        ``async with`` and the first `add` open it too. Idempotent.

        Raises:
            ConfigurationError: the file cannot be opened or is not a callback store.
            ResourceError: there is no room to create or open it (a full disk, a quota,
                the file-size limit).
            RyngError: the store was closed.
        """
        await self._writer.start()
        return self

    def _setup(self) -> int:
        try:
            connection = connect(self.path)
            try:
                _set_up(connection, self.path, self.synchronous.upper())
            except BaseException:
                connection.close()
                raise
        except sqlite3.Error as exc:
            room = no_room(exc, self.path)
            if room is not None:  # the environment's failure, not a bad setting
                raise ResourceError(f"cannot write callback store {self.path}: {room}") from exc
            raise ConfigurationError(f"cannot open callback store {self.path}: {exc}") from exc
        self._connection = connection
        # A group is one INSERT statement: keep its parameters within SQLite's limit.
        variables = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        max_group = max(1, min(MAX_GROUP, variables // _ROW.count("?")))
        try:
            self._checkpointer = PassiveCheckpointer(
                self.path,
                name=f"ryng-callbacks-checkpoint:{self.path.name}",
                synchronous=self.synchronous.upper(),
                every=_CHECKPOINT_EVERY,
                on_result=self._checkpointed,
                on_error=self._checkpoint_failed,
            )
        except BaseException:
            connection.close()
            self._connection = None
            raise
        return max_group

    def _checkpointed(self, result: tuple[int, int, int]) -> None:
        """Note a passive checkpoint's result (on the checkpointer's thread).

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
        that one commit (and every callback waiting on it) takes many times longer; a
        passive checkpoint from another connection copies the bulk of it without holding
        the writer up. Under a steady stream such a checkpoint never quite catches up with
        the writer, and the WAL only starts over once it has: so after each one the writer
        finishes the few pages left between two groups (see ``_write``).
        """
        busy, log, _ = result
        # Even a checkpoint that copied every frame it saw is behind the groups committed
        # while it ran; the WAL starts over only when a write begins with nothing left to
        # copy, so the writer finishes the rest (at 8,700 callbacks/s the WAL grew to
        # 450 MB past its 64 MB limit).
        self._wal_behind = bool(busy) or log > 0

    def _checkpoint_failed(self, exc: sqlite3.Error) -> None:
        logger.warning("checkpoint of callback store %s failed: %s", self.path, exc)

    def _write(self, items: list[tuple[Any, ...]]) -> list[bool]:
        connection = self._connection
        if connection is None:  # pragma: no cover - _setup ran before any write
            raise RyngError("the callback store is not open")
        cursor = connection.cursor()
        try:
            changes = connection.total_changes
            # One statement in autocommit mode, so one transaction and one flush to disk
            # for the whole group. Each statement run releases the GIL and takes it back,
            # which costs up to a switch interval (5 ms) while the event loop is busy: a
            # statement per callback would spend the group's time waiting for the GIL.
            cursor.execute(_insert_sql(len(items)), [value for row in items for value in row])
            inserted = connection.total_changes - changes
            new_keys: set[tuple[Any, ...]] | None = None
            if inserted == 0:
                new_keys = set()
            elif inserted != len(items):
                # The rows one INSERT adds take consecutive rowids, ending at lastrowid.
                last = cursor.lastrowid or 0
                (found,) = cursor.execute(_NEW_KEYS, (last - inserted + 1, last)).fetchone()
                new_keys = {tuple(key) for key in json.loads(found)}
        except Exception as exc:
            raise RyngError(f"callback store {self.path}: write failed: {exc}") from exc
        self._since_checkpoint += inserted
        if self._since_checkpoint >= _CHECKPOINT_ROWS:
            self._since_checkpoint = 0
            if self._checkpointer is not None:
                self._checkpointer.request()
        if self._wal_behind:
            # No write runs now: this checkpoint completes, and the WAL starts over.
            self._wal_behind = False
            with contextlib.suppress(sqlite3.Error):  # the checkpointer tries again
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        if new_keys is None:
            return [True] * len(items)
        # INSERT OR IGNORE keeps the first of several copies in one group.
        results = []
        for row in items:
            key = (row[2], row[1], row[3])
            results.append(key in new_keys)
            new_keys.discard(key)
        return results

    def _teardown(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._connection is not None:
            self._connection.close()  # the last connection checkpoints the rest
            self._connection = None

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        """Store one callback; see `CallbackStore.add`.

        Raises:
            ValidationError: ``raw`` is not UTF-8 text.
            RyngError: the write failed (disk full, I/O error) or the store is closed.
        """
        return await self._writer.submit(sqlite_row(event, raw, now()))

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, a page at a time.

        Callbacks stored while the iteration runs are included if they come after the
        current page.
        """
        return iter_sqlite(self.path)

    async def count(self) -> int:
        """Return how many callbacks the store holds."""

        def count() -> int:
            connection = connect_read_only(self.path)
            try:
                (n,) = connection.execute("SELECT count(*) FROM callbacks").fetchone()
                return int(n)
            finally:
                connection.close()

        return await asyncio.to_thread(count)

    async def aclose(self) -> None:
        """Finish pending writes and close the file; later ``add`` calls fail."""
        await self._writer.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
