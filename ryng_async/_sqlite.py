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
`ForeignDatabaseError`: each caller words them for its own file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import quote

__all__ = [
    "BUSY_TIMEOUT",
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
    "os_reason",
    "unlock",
]

BUSY_TIMEOUT: Final = 10.0
"""Seconds a statement waits for another connection's lock before it fails."""

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""

# A reader probing a lock (see `holder`) holds it for an instant: a taker retries this often.
_LOCK_TRIES: Final = 3
_LOCK_RETRY: Final = 0.02


def os_reason(exc: BaseException) -> str:
    """The OS's words for a failure (``"Permission denied"``), else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


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
    """The database belongs to another application (its application id is not ours)."""


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
        raise ForeignDatabaseError(f"application id {found:#x}")
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
        OSError: the lock file cannot be made (``filename`` is the lock file).
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
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
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
