"""SQLite plumbing shared by the checkpoint journal and the callback stores.

- Connections: `connect` (autocommit, a busy timeout, usable from any thread) and
  `connect_read_only` (by URI, ``mode=ro``: writes nothing, takes no lock file).
- The file header: `application_version` tells a database of ours (its
  ``PRAGMA application_id``) from an empty one and from another application's.
- Ownership: `lock` takes an advisory lock (``flock``) on a sidecar file ``<path>-lock``
  and writes the holder's pid in it; `holder` reads who holds it; `flock_nowait` is the
  non-waiting ``flock`` itself, for a file locked in place.
- `PassiveCheckpointer`: a thread with its own connection that copies the WAL into the
  database (``wal_checkpoint(PASSIVE)``) beside the writer, so that the writer's commits
  never wait for the copy and its sync.

Errors are the standard library's (``sqlite3.Error``, ``OSError``) or `LockHeldError` and
`ForeignDatabaseError`: each caller words them for its own file. `no_room` tells a write
that failed for lack of room (a full disk, a file-size limit) from the other failures.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import quote

__all__ = [
    "BUSY_TIMEOUT",
    "CALLBACK_STORE_ID",
    "JOURNAL_ID",
    "SQLITE_MAGIC",
    "ForeignDatabaseError",
    "LockFailedError",
    "LockHeldError",
    "PassiveCheckpointer",
    "application_version",
    "connect",
    "connect_read_only",
    "flock_nowait",
    "holder",
    "lock",
    "no_room",
    "os_reason",
    "unlock",
]

BUSY_TIMEOUT: Final = 10.0
"""Seconds a statement waits for another connection's lock before it fails."""

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

JOURNAL_ID: Final = 0x52594E47
"""The ``application_id`` of a checkpoint journal ("RYNG")."""

CALLBACK_STORE_ID: Final = 0x52594342
"""The ``application_id`` of a callback store ("RYCB")."""

_OURS: Final[Mapping[int, str]] = {
    JOURNAL_ID: "a ryng_async checkpoint journal",
    CALLBACK_STORE_ID: "a ryng_async callback store",
}

# A folder with less free space than this counts as full: SQLite grows its files by pages.
_LOW_SPACE: Final = 1 << 20
# What one write of SQLite can add to a file: a WAL frame of the largest page, a -shm region.
_GROWTH: Final = 1 << 17
_NO_ROOM_ERRNOS: Final[Mapping[int, str]] = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file-size limit is reached",
}

# A reader probing a lock (see `holder`) holds it for an instant: a taker retries this often.
_LOCK_TRIES: Final = 3
_LOCK_RETRY: Final = 0.02


def os_reason(exc: BaseException) -> str:
    """The OS's words for a failure (``"Permission denied"``), else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def no_room(exc: BaseException, path: str | os.PathLike[str]) -> str | None:
    """Why a write to ``path`` (or its -wal, -shm, -lock files) failed for lack of room.

    ``"the disk is full"``, ``"the disk quota is used up"`` or the file-size limit reached
    (``ulimit -f``, named with its bytes); None if ``exc`` is another failure.

    An `OSError` tells by its errno. SQLite reports ENOSPC and a short write as
    ``SQLITE_FULL``, but EFBIG (and a -shm file it could not grow) only as an I/O error,
    without the errno: for those the file system and the process's limit are asked.
    """
    if isinstance(exc, OSError):
        reason = _NO_ROOM_ERRNOS.get(exc.errno or 0)
        if exc.errno == errno.EFBIG:
            return _size_limit(None) or reason
        return reason
    if not isinstance(exc, sqlite3.Error):
        return None
    name = getattr(exc, "sqlite_errorname", "")
    if name != "SQLITE_FULL" and not name.startswith("SQLITE_IOERR"):
        return None
    found = _disk_full(path) or _size_limit(path)
    if found is None and name == "SQLITE_FULL":
        return _NO_ROOM_ERRNOS[errno.ENOSPC]
    return found


def _disk_full(path: str | os.PathLike[str]) -> str | None:
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    if stat.f_bavail * stat.f_frsize < _LOW_SPACE:
        return _NO_ROOM_ERRNOS[errno.ENOSPC]
    if stat.f_files and not stat.f_favail:
        return "the disk is full (no free inodes)"
    return None


def _size_limit(path: str | os.PathLike[str] | None) -> str | None:
    """The file-size limit's words if one is set and (``path`` given) one of its files nears it."""
    if sys.platform == "win32":  # pragma: no cover - no RLIMIT_FSIZE
        return None
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    if path is not None:
        name = os.fspath(path)
        sizes = [0]
        for suffix in ("", "-wal", "-shm", "-journal", "-lock"):
            with contextlib.suppress(OSError):
                sizes.append(os.path.getsize(name + suffix))
        if max(sizes) + _GROWTH <= limit:
            return None  # the failure was not the limit's
    return f"the file-size limit (ulimit -f) of {limit:,} bytes is reached"


# --- connections ----------------------------------------------------------------------------


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-write connection: autocommit (explicit transactions), any thread, busy timeout."""
    return sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
    )


def connect_read_only(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection that cannot write (``mode=ro``); it creates no file if there is none."""
    uri = "file:" + quote(os.path.abspath(os.fspath(path)))
    return sqlite3.connect(
        f"{uri}?mode=ro",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT,
    )


class ForeignDatabaseError(Exception):
    """The database belongs to another application (its application id is not the one asked).

    Its text says what it is: ``"it is a ryng_async checkpoint journal"``, ``"it is another
    SQLite database"``.

    Attributes:
        application_id: the database's ``PRAGMA application_id``.
    """

    def __init__(self, application_id: int) -> None:
        self.application_id = application_id
        super().__init__(f"it is {_OURS.get(application_id, 'another SQLite database')}")


def application_version(
    conn: sqlite3.Connection, application_id: int, *, schema: str = "main"
) -> int | None:
    """The format version (``user_version``) of a database of ``application_id``.

    None for an empty database (no application id, no version, no table): a new file, or
    a creation cut short. ``schema`` names an attached database.

    Raises:
        ForeignDatabaseError: it is another application's database.
        sqlite3.DatabaseError: it is not a database (``SQLITE_NOTADB``) or is damaged.
    """
    (found,) = conn.execute(f"PRAGMA {schema}.application_id").fetchone()
    (version,) = conn.execute(f"PRAGMA {schema}.user_version").fetchone()
    (objects,) = conn.execute(
        f"SELECT count(*) FROM {schema}.sqlite_master"  # noqa: S608 - a schema name of ours
    ).fetchone()
    if found == 0 and version == 0 and objects == 0:
        return None
    if found != application_id:
        raise ForeignDatabaseError(found)
    return int(version)


# --- ownership --------------------------------------------------------------------------------


class LockHeldError(Exception):
    """Another holder has the lock.

    Attributes:
        holder: what the lock file says of its holder: a pid, ``"<pid>, this process"``,
            or "" if it says nothing.
    """

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class LockFailedError(OSError):
    """The lock file exists but cannot be locked (``filename`` is the lock file)."""


def flock_nowait(fd: int) -> None:
    """Lock ``fd`` exclusively without waiting, but for the instant a `holder` probe takes.

    Raises:
        BlockingIOError: another descriptor holds it.
        OSError: it cannot be locked.
    """
    if sys.platform == "win32":  # pragma: no cover - POSIX advisory locks only
        raise OSError("file locks need POSIX fcntl")
    import fcntl

    for _ in range(_LOCK_TRIES - 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(_LOCK_RETRY)
        else:
            return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def lock(path: str) -> int:
    """Take the sidecar lock ``<path>-lock`` without waiting; return its descriptor.

    The lock file then holds this process's pid. Release it with `unlock`.

    Raises:
        LockHeldError: another holder has it.
        LockFailedError: the lock file was made but cannot be locked.
        OSError: the lock file cannot be made or written (``filename`` is the lock file).
    """
    lock_path = path + "-lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flock_nowait(fd)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if text == str(os.getpid()):
            text += ", this process"
        raise LockHeldError(text) from None
    except OSError as exc:
        os.close(fd)
        raise LockFailedError(exc.errno, exc.strerror, lock_path) from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:  # a full disk or a file-size limit: nothing holds the lock
        os.close(fd)
        raise OSError(exc.errno, exc.strerror, lock_path) from exc
    return fd


def unlock(fd: int) -> None:
    """Release a lock taken by `lock`."""
    # Closing the descriptor releases the flock; the lock file stays, since removing it
    # would let a process that opened the old file and one that creates a new one both
    # believe they hold the lock.
    os.close(fd)


def holder(path: str) -> int | None:
    """The pid of the process holding ``<path>-lock`` now, or None if none does.

    Probes the lock with a shared lock for an instant (a taker in that instant retries);
    0 if it is held but the pid cannot be read.
    """
    if sys.platform == "win32":  # pragma: no cover - POSIX advisory locks only
        return None
    import fcntl

    try:
        fd = os.open(path + "-lock", os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody ever held it (or it cannot be read)
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


# --- the WAL checkpointer -----------------------------------------------------------------------


class PassiveCheckpointer:
    """Copies the WAL into the database from its own thread and connection.

    A checkpoint copies the WAL's pages into the database and syncs both files (15-40 ms
    for a full WAL on a busy disk); run by the writer, it would stall the writer. A passive
    checkpoint from another connection runs beside the writer's commits.

    Runs when `request` is called, and every ``every`` seconds if given. ``on_result``
    gets each checkpoint's ``(busy, wal_frames, copied_frames)``; ``on_error`` each
    failure (best effort: a failed checkpoint loses nothing, the frames stay in the WAL).

    Raises:
        RuntimeError: no thread can be started.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str,
        synchronous: str = "NORMAL",
        every: float | None = None,
        on_result: Callable[[tuple[int, int, int]], None] | None = None,
        on_error: Callable[[sqlite3.Error], None] | None = None,
    ) -> None:
        self._path = path
        self._synchronous = synchronous
        self._every = every
        self._on_result = on_result
        self._on_error = on_error
        self._wake = threading.Event()
        self._stopping = False
        # A daemon: nothing is lost if it dies mid-checkpoint, and it must not hang exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Checkpoint soon (does not wait)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread and wait for it (blocking)."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = connect(self._path)
        except sqlite3.Error as exc:  # pragma: no cover - the writer's own checkpoints remain
            if self._on_error is not None:
                self._on_error(exc)
            return
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            while True:
                self._wake.wait(self._every)
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    result = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:  # the next round tries again
                    if self._on_error is not None:
                        self._on_error(exc)
                    continue
                if self._on_result is not None:
                    self._on_result(tuple(result))
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
