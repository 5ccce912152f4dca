"""The journal's file from open to close: lock it, set it up, read it; close and release.

Blocking functions, run in a worker thread by `SQLiteJournal.open` and
`SQLiteJournal.aclose`.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from .._sqlite import PassiveCheckpointer, connect, unlock
from ._format import (
    PAGE_SIZE,
    Digest,
    check_file,
    check_identity,
    create,
    digest_of,
    fold,
    format_version,
    migrate,
    outdated,
    read_rows,
    unusable,
)
from ._lock import lock_journal
from ._records import CheckpointRefusedError, LoadIdentity
from ._rows import Row

__all__ = ["open_file", "shut"]

# Keeps the WAL file from staying large after a burst; SQLite truncates it to this on reset.
_WAL_SIZE_LIMIT = 4 * 1024 * 1024
# The writer's own automatic checkpoint (SQLite's default): the fallback of the
# checkpointer thread, which leaves it little or nothing to copy.
_WRITER_AUTOCHECKPOINT_PAGES = 1000


def open_file(
    path: str, identity: LoadIdentity
) -> tuple[sqlite3.Connection, int, Digest, dict[int, Row]]:
    """Lock, check, create or migrate the journal, and read its batches (blocking).

    Returns the connection, the lock's descriptor, the digest and the batch rows.

    Raises:
        CheckpointRefusedError: the journal cannot be used for this load.
        CheckpointError: the disk is full or a file-size limit reached (or an I/O error).
    """
    if os.path.isdir(path):
        raise CheckpointRefusedError(f"the checkpoint path {path!r} is a directory")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise CheckpointRefusedError(
            f"cannot write the checkpoint journal {path!r}: {os.strerror(errno.EACCES)}"
        )
    if os.path.exists(path) and os.path.getsize(path) > 0:
        check_file(path)  # a foreign file is refused before a lock file is made beside it
    fd = lock_journal(path)
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        unlock(fd)
        raise unusable(path, exc, "open") from exc
    try:
        digest = _prepare(conn, path, identity)
        rows, _ = read_rows(conn)
    except BaseException as exc:
        conn.close()
        unlock(fd)
        if isinstance(exc, sqlite3.Error):
            raise unusable(path, exc) from exc
        raise
    return conn, fd, digest, rows


def _prepare(conn: sqlite3.Connection, path: str, identity: LoadIdentity) -> Digest:
    version = format_version(conn, path)
    if version is None:  # before WAL mode writes the header, which fixes the page size
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} cannot use WAL mode (got {mode!r})"
        )
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
    conn.execute(f"PRAGMA wal_autocheckpoint = {_WRITER_AUTOCHECKPOINT_PAGES}")
    if version is None:
        create(conn, identity)
    elif outdated(version):
        migrate(conn, version)
    check_identity(conn, path, identity)
    digest = digest_of(conn, path)
    fold(conn)  # what a run that died left in the log
    return digest


def shut(conn: sqlite3.Connection, fd: int, checkpointer: PassiveCheckpointer | None) -> None:
    """Stop the checkpointer, close the file and release the lock (blocking).

    The log stays as it is (readers replay it): folding it here would cost the load's end
    some 10 us a batch; the next open folds it.
    """
    try:
        if checkpointer is not None:
            checkpointer.stop()
        conn.close()  # the last connection: SQLite checkpoints and removes the WAL
    finally:
        unlock(fd)
