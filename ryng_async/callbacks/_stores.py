"""Where received callbacks are kept: the `CallbackStore` protocol and two stores.

`SQLiteCallbackStore` (the default) keeps every callback in one SQLite file in WAL mode;
`JSONLinesCallbackStore` appends one JSON line per callback. Both write from one thread
that commits whatever arrived while the previous commit was on disk (a group commit), and
both answer ``add`` only once the callback is on disk, so a 200 sent after ``add`` never
covers a callback that a crash could lose.

A callback is known by its dedupe key ``(callID, callbackType, event)``: Ryng resends a
callback it got no 200 for, and the store keeps the first copy only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec

from .._callback_events import CallbackEvent, ConnectCallback, TerminalCallback, parse_callback
from .._exceptions import ConfigurationError, RyngError, ValidationError

__all__ = [
    "DEFAULT_STORE_PATH",
    "CallbackKey",
    "CallbackStore",
    "JSONLinesCallbackStore",
    "SQLiteCallbackStore",
    "StoredCallback",
    "callback_key",
    "iter_store",
]

DEFAULT_STORE_PATH: Final = "ryng-callbacks.db"
"""Where `create_app` keeps callbacks when given no store: a file in the working directory."""

CallbackKey: TypeAlias = tuple[int, str, str]
"""``(callID, callbackType, event)``: what makes a callback the same callback."""

# At most this many callbacks go into one commit; more wait for the next.
_MAX_GROUP: Final = 1024
# Rows read per round trip to the reading thread when iterating a store.
_PAGE: Final = 1000
# "RYCB": marks a SQLite file as a ryng_async callback store.
_APPLICATION_ID: Final = 0x52594342
_SCHEMA_VERSION: Final = 1
_BUSY_TIMEOUT_MS: Final = 10_000
# A checkpoint is asked for after this many new rows (about 10 MB of WAL), or after this
# many seconds.
_CHECKPOINT_ROWS: Final = 4000
_CHECKPOINT_EVERY: Final = 1.0
# The WAL file is cut back to this size when it starts over.
_WAL_SIZE_LIMIT: Final = 64 << 20

_WIRE_NAMES: Final = {
    cls: frozenset({f.encode_name for f in msgspec.structs.fields(cls)} | {"callbackType"})
    for cls in (ConnectCallback, TerminalCallback)
}
_any_object = msgspec.json.Decoder(dict[str, Any])
logger = logging.getLogger("ryng_async.callbacks")


def callback_key(event: CallbackEvent) -> CallbackKey:
    """Return the dedupe key of a callback: ``(callID, callbackType, event)``."""
    kind = "terminal" if isinstance(event, TerminalCallback) else "connect"
    return (event.call_id, kind, event.event)


class StoredCallback(msgspec.Struct, frozen=True, kw_only=True):
    """A callback as a store keeps it: the parsed event, the raw body and when it came.

    Attributes:
        seq: its number in the store, from 1, in the order stored.
        received_at: when the receiver stored it (UTC).
        event: the parsed callback, every known field typed.
        raw: the request body exactly as Ryng sent it, unknown fields included.
    """

    seq: int
    received_at: datetime
    event: CallbackEvent
    raw: bytes

    @property
    def key(self) -> CallbackKey:
        """The dedupe key, ``(callID, callbackType, event)``."""
        return callback_key(self.event)

    @property
    def callback_type(self) -> str:
        """``"connect"`` or ``"terminal"``."""
        return "terminal" if isinstance(self.event, TerminalCallback) else "connect"

    def extra_fields(self) -> dict[str, Any]:
        """Return the fields of the raw body that the event's struct does not know.

        Ryng may add fields; they are kept in `raw` and surface here, decoded.
        """
        body = _any_object.decode(self.raw)
        known = _WIRE_NAMES[type(self.event)]
        return {name: value for name, value in body.items() if name not in known}


@runtime_checkable
class CallbackStore(Protocol):
    """What the receiver needs from a store; implement it to keep callbacks elsewhere.

    ``add`` must return only once the callback is durable (the receiver answers 200 right
    after it), must be safe to call concurrently, and must recognise a callback it already
    holds by `callback_key`.
    """

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        """Store one callback durably.

        Args:
            event: the parsed callback.
            raw: its request body, as received.

        Returns:
            True if it was stored, False if the store already held its key.
        """
        ...

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, streaming (never all at once)."""
        ...

    async def aclose(self) -> None:
        """Finish pending writes and release the store; later ``add`` calls fail."""
        ...


# -- the writing thread -------------------------------------------------------------------


class _Pending:
    __slots__ = ("future", "item", "loop")

    def __init__(self, item: Any, future: asyncio.Future[bool], loop: Any) -> None:
        self.item = item
        self.future = future
        self.loop = loop


def _settle(futures: list[asyncio.Future[bool]], results: list[bool] | BaseException) -> None:
    for index, future in enumerate(futures):
        if future.done():  # the request went away (cancelled) meanwhile
            continue
        if isinstance(results, BaseException):
            future.set_exception(results)
        else:
            future.set_result(results[index])


class _GroupWriter:
    """One thread that writes queued items in groups and settles each caller's future.

    ``write`` gets every item queued since the last group (up to ``max_group``, which
    ``setup`` may return) and returns one bool per item; it must make the whole group
    durable before returning.
    """

    def __init__(
        self,
        name: str,
        setup: Callable[[], int | None],
        write: Callable[[list[Any]], list[bool]],
        teardown: Callable[[], None],
    ) -> None:
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._setup, self._write, self._teardown = setup, write, teardown
        self.max_group = _MAX_GROUP
        self._ready = threading.Event()
        self._setup_error: list[BaseException] = []
        self._closed = False
        self._lock = threading.Lock()
        # A daemon: an app never cleaned up must not hang the interpreter at exit, and
        # nothing is acknowledged before it is on disk, so dying mid-group loses nothing.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._setup_error:
            self._thread.join()
            raise self._setup_error[0]

    async def submit(self, item: Any) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        with self._lock:
            if self._closed:
                raise RyngError("the callback store is closed")
            self._queue.put(_Pending(item, future, loop))
        return await future

    async def aclose(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        try:
            max_group = self._setup()
        except BaseException as exc:
            self._setup_error.append(exc)
            self._ready.set()
            return
        if max_group is not None:
            self.max_group = max_group
        self._ready.set()
        try:
            stop = False
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                while len(group) < self.max_group:
                    try:
                        pending = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if pending is None:
                        stop = True
                        break
                    group.append(pending)
                self._write_group(group)
        finally:
            self._teardown()

    def _write_group(self, group: list[_Pending]) -> None:
        results: list[bool] | BaseException
        try:
            results = self._write([pending.item for pending in group])
        except Exception as exc:
            if len(group) > 1:
                # One bad item must not fail its neighbours: write each on its own.
                for pending in group:
                    self._write_group([pending])
                return
            results = exc
        by_loop: dict[Any, tuple[list[asyncio.Future[bool]], list[bool] | None]] = {}
        for index, pending in enumerate(group):
            futures, flags = by_loop.setdefault(
                pending.loop, ([], None if isinstance(results, BaseException) else [])
            )
            futures.append(pending.future)
            if flags is not None and not isinstance(results, BaseException):
                flags.append(results[index])
        for loop, (futures, flags) in by_loop.items():
            outcome: list[bool] | BaseException = results if flags is None else flags
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, futures, outcome)


def _now() -> datetime:
    return datetime.now(UTC)


def _utf8(raw: bytes) -> str:
    """Return the body as text; JSON is UTF-8 (RFC 8259), and both stores keep text."""
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError as exc:
        raise ValidationError(f"callback body is not UTF-8: {exc}") from exc


async def _paged(read_page: Callable[[int], list[StoredCallback]]) -> AsyncIterator[StoredCallback]:
    after = 0
    while True:
        page = await asyncio.to_thread(read_page, after)
        if not page:
            return
        for stored in page:
            yield stored
        after = page[-1].seq


# -- SQLite -----------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
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
);
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


def _sqlite_row(event: CallbackEvent, raw: bytes, received_at: datetime) -> tuple[Any, ...]:
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
        _utf8(raw),
    )


def _sqlite_page(connection: sqlite3.Connection, after: int) -> list[StoredCallback]:
    rows = connection.execute(_SELECT_PAGE, (after, _PAGE)).fetchall()
    return [_stored(*row) for row in rows]


async def _iter_sqlite(path: Path) -> AsyncIterator[StoredCallback]:
    connection = await asyncio.to_thread(_open_for_reading, path)
    try:
        async for stored in _paged(lambda after: _sqlite_page(connection, after)):
            yield stored
    finally:
        connection.close()


def _open_for_reading(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ConfigurationError(f"callback store {path} does not exist")
    try:
        connection = _connect(path, read_only=True)
        (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    if application_id != _APPLICATION_ID:
        connection.close()
        raise ConfigurationError(f"{path} is not a ryng_async callback store")
    return connection


def _stored(seq: int, received_at: str, raw: str | bytes) -> StoredCallback:
    body = raw.encode() if isinstance(raw, str) else bytes(raw)
    return StoredCallback(
        seq=seq,
        received_at=datetime.fromisoformat(received_at),
        event=parse_callback(body),
        raw=body,
    )


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
        )
    else:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return connection


def _check_or_init(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file; refuse a file that is not a callback store."""
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if application_id == 0 and tables == 0:
        connection.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    elif application_id != _APPLICATION_ID:
        raise ConfigurationError(f"{path} is not a ryng_async callback store")
    else:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version != _SCHEMA_VERSION:
            raise ConfigurationError(
                f"{path} is a callback store of schema version {version}; this version of "
                f"ryng_async reads version {_SCHEMA_VERSION}"
            )
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

    Several processes may share one file (SQLite locks it). Use ``async with`` or call
    `aclose`.

    Args:
        path: the database file; created with its schema if missing.
        synchronous: ``"full"`` or ``"normal"`` (see above).

    Raises:
        ConfigurationError: the file cannot be opened or is not a callback store.
    """

    def __init__(self, path: str | os.PathLike[str], *, synchronous: Synchronous = "full") -> None:
        if synchronous not in ("full", "normal"):
            raise ConfigurationError(f"synchronous must be 'full' or 'normal', got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_due = threading.Event()
        self._stopping = False
        self._since_checkpoint = 0
        self._wal_behind = False
        self._writer = _GroupWriter(
            f"ryng-callbacks-sqlite:{self.path.name}", self._setup, self._write, self._teardown
        )

    def __repr__(self) -> str:
        return f"SQLiteCallbackStore({str(self.path)!r})"

    def _setup(self) -> int:
        try:
            connection = _connect(self.path)
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
                # Checkpoints run in their own thread (see _checkpoint), not in a commit.
                connection.execute("PRAGMA wal_autocheckpoint = 0")
                connection.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
                _check_or_init(connection, self.path)
            except BaseException:
                connection.close()
                raise
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open callback store {self.path}: {exc}") from exc
        self._connection = connection
        # A group is one INSERT statement: keep its parameters within SQLite's limit.
        variables = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        max_group = max(1, min(_MAX_GROUP, variables // _ROW.count("?")))
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name=f"ryng-callbacks-checkpoint:{self.path.name}", daemon=True
        )
        self._checkpointer.start()
        return max_group

    def _checkpoint(self) -> None:
        """Copy the WAL into the database now and then, beside the writer, never in its way.

        SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so
        that one commit (and every callback waiting on it) takes many times longer. A
        passive checkpoint from another connection copies the bulk of it without holding
        the writer up. Under a steady stream such a checkpoint never quite catches up with
        the writer, and the WAL only starts over once it has: so after each one the writer
        finishes the few pages left between two groups (see ``_write``).
        """
        connection = _connect(self.path)
        try:
            connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            while not self._stopping:
                self._checkpoint_due.wait(_CHECKPOINT_EVERY)
                self._checkpoint_due.clear()
                try:
                    busy, log, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the next round tries again
                    logger.warning("checkpoint of callback store %s failed: %s", self.path, exc)
                    continue
                # Even a checkpoint that copied every frame it saw is behind the groups
                # committed while it ran; the WAL starts over only when a write begins
                # with nothing left to copy, so the writer finishes the rest (issue 22:
                # at 8,700 callbacks/s the WAL grew to 450 MB past its 64 MB limit).
                self._wal_behind = bool(busy) or log > 0
        finally:
            connection.close()

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
            self._checkpoint_due.set()
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
            self._stopping = True
            self._checkpoint_due.set()
            self._checkpointer.join()
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
        return await self._writer.submit(_sqlite_row(event, raw, _now()))

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, a page at a time.

        Callbacks stored while the iteration runs are included if they come after the
        current page.
        """
        return _iter_sqlite(self.path)

    async def count(self) -> int:
        """Return how many callbacks the store holds."""

        def count() -> int:
            connection = _connect(self.path, read_only=True)
            try:
                (n,) = connection.execute("SELECT count(*) FROM callbacks").fetchone()
                return int(n)
            finally:
                connection.close()

        return await asyncio.to_thread(count)

    async def aclose(self) -> None:
        """Finish pending writes and close the file; later ``add`` calls fail."""
        await self._writer.aclose()

    async def __aenter__(self) -> SQLiteCallbackStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# -- JSON Lines ---------------------------------------------------------------------------


class _Line(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    received_at: datetime
    callback_type: str
    call_id: int
    event: str
    raw: str


_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(_Line)


def _jsonl_page(path: Path, lines: Iterator[tuple[int, bytes]]) -> list[StoredCallback]:
    page = []
    for number, line in lines:
        if not line.endswith(b"\n"):
            break  # being written right now, or torn by a crash: never acknowledged
        try:
            record = _line_decoder.decode(line)
            body = record.raw.encode()
            event = parse_callback(body)
        except (msgspec.DecodeError, ValidationError) as exc:
            raise ConfigurationError(
                f"{path} line {number} is not a stored callback: {exc}"
            ) from exc
        page.append(
            StoredCallback(seq=record.seq, received_at=record.received_at, event=event, raw=body)
        )
        if len(page) == _PAGE:
            break
    return page


async def _iter_jsonl(path: Path) -> AsyncIterator[StoredCallback]:
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except OSError as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    try:
        lines = enumerate(handle, 1)
        async for stored in _paged(lambda _: _jsonl_page(path, lines)):
            yield stored
    finally:
        handle.close()


_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def iter_store(path: str | os.PathLike[str]) -> AsyncIterator[StoredCallback]:
    """Read a store file without opening it for writing (a receiver may be running).

    The kind of store is told by the file's first bytes: SQLite, else JSON Lines.

    Args:
        path: a `SQLiteCallbackStore` or `JSONLinesCallbackStore` file.

    Returns:
        An async iterator of every stored callback, in the order stored, streaming.

    Raises:
        ConfigurationError: (while iterating) the file is missing or not a store.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigurationError(f"cannot read callback store {path}: {exc}") from exc
    return _iter_sqlite(path) if head == _SQLITE_MAGIC else _iter_jsonl(path)


class JSONLinesCallbackStore:
    """A store that appends one JSON object per line to a text file.

    Each line holds ``seq``, ``received_at``, ``callback_type``, ``call_id``, ``event``
    and ``raw`` (the body as received, as a JSON string). Writes are grouped like the
    SQLite store's: each group is appended, flushed and, with ``fsync=True`` (the
    default), ``os.fsync``-ed before any of its callers is answered; ``fsync=False``
    survives a crash of the process but not of the machine.

    Duplicates are found through an in-memory set of every stored key, loaded when the
    store opens (about 150 bytes per callback). A last line cut short by a crash was never
    acknowledged, so it is dropped at open; any other unreadable line is an error. The
    file is locked (``flock``) so a second process cannot append to it at the same time.

    Args:
        path: the file; created if missing.
        fsync: flush each group to disk before answering (see above).

    Raises:
        ConfigurationError: the file cannot be opened, is locked by another process, or
            holds a line that is not a stored callback.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._file: Any = None
        self._keys: set[CallbackKey] = set()
        self._seq = 0
        self._writer = _GroupWriter(
            f"ryng-callbacks-jsonl:{self.path.name}", self._setup, self._write, self._teardown
        )

    def __repr__(self) -> str:
        return f"JSONLinesCallbackStore({str(self.path)!r})"

    def _setup(self) -> None:
        try:
            handle = open(self.path, "a+b")  # noqa: SIM115 - closed by _teardown
        except OSError as exc:
            raise ConfigurationError(f"cannot open callback store {self.path}: {exc}") from exc
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise ConfigurationError(
                    f"callback store {self.path} is in use by another process"
                ) from exc
            handle.seek(0)
            good_end = 0
            for number, line in enumerate(handle, 1):
                if not line.endswith(b"\n"):
                    break  # a torn last line: never acknowledged, dropped below
                try:
                    record = _line_decoder.decode(line)
                except msgspec.DecodeError as exc:
                    raise ConfigurationError(
                        f"{self.path} line {number} is not a stored callback: {exc}"
                    ) from exc
                self._keys.add((record.call_id, record.callback_type, record.event))
                self._seq = record.seq
                good_end += len(line)
            handle.truncate(good_end)
            handle.seek(0, os.SEEK_END)
        except BaseException:
            handle.close()
            raise
        self._file = handle

    def _write(self, items: list[tuple[CallbackEvent, str, datetime]]) -> list[bool]:
        results = []
        buffer = bytearray()
        added: set[CallbackKey] = set()
        for event, raw, received_at in items:
            key = callback_key(event)
            if key in self._keys or key in added:
                results.append(False)
                continue
            self._seq += 1
            line = _Line(
                seq=self._seq,
                received_at=received_at,
                callback_type=key[1],
                call_id=key[0],
                event=key[2],
                raw=raw,
            )
            _line_encoder.encode_into(line, buffer, len(buffer))
            buffer += b"\n"
            added.add(key)
            results.append(True)
        if buffer:
            end = self._file.tell()
            try:
                self._file.write(buffer)
                self._file.flush()
                if self.fsync:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                self._seq -= len(added)
                with contextlib.suppress(OSError):  # keep the file a whole number of lines
                    self._file.truncate(end)
                    self._file.seek(end)
                raise RyngError(f"callback store {self.path}: write failed: {exc}") from exc
            self._keys.update(added)
        return results

    def _teardown(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        """Store one callback; see `CallbackStore.add`.

        Raises:
            ValidationError: ``raw`` is not UTF-8 text.
            RyngError: the write failed or the store is closed.
        """
        return await self._writer.submit((event, _utf8(raw), _now()))

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        """Yield every stored callback in the order stored, a page at a time."""
        return _iter_jsonl(self.path)

    async def aclose(self) -> None:
        """Finish pending writes and close the file; later ``add`` calls fail."""
        await self._writer.aclose()

    async def __aenter__(self) -> JSONLinesCallbackStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
