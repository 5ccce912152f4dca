"""An operator's decision on batches a load left in flight or unknown: `resolve`.

The one write to a journal that no load makes: it takes the journal's lock like a load,
so it is refused while a load holds it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from .._runs import subtract_runs
from .._sqlite import connect, holder, unlock
from ._format import (
    NOT_A_JOURNAL,
    SELECT_BATCHES,
    check_file,
    fold,
    format_version,
    migrate,
    outdated,
)
from ._lock import lock_journal
from ._records import (
    BatchState,
    CheckpointError,
    CheckpointRefusedError,
    Decision,
    Resolution,
)
from ._rows import (
    IN_FLIGHT,
    UNKNOWN,
    Row,
    clean_message,
    parse_ranges,
    parse_runs,
    row_from_sql,
    runs_text,
)

__all__ = ["resolve"]


def resolve(
    path: str | os.PathLike[str],
    decision: Decision | str,
    *,
    batches: Collection[int] | None = None,
    note: str = "",
) -> list[Resolution]:
    """`SQLiteJournal.resolve`: record ``decision`` on open batches (blocking, locked)."""
    name = os.fspath(path)
    decided = Decision(decision)
    if os.path.isdir(name):
        raise CheckpointRefusedError(f"the checkpoint path {name!r} is a directory")
    if not os.path.exists(name):
        raise CheckpointRefusedError(f"no checkpoint journal at {name!r}")
    check_file(name)
    pid = holder(name)
    if pid is not None:
        who = f" (pid {pid})" if pid else ""
        raise CheckpointRefusedError(
            f"the checkpoint journal {name!r} is held by a live load{who}: its batches in "
            "flight may be answered yet; resolve them after it ends"
        )
    fd = lock_journal(name)
    try:
        conn = connect(name)
        try:
            return _resolve_locked(conn, name, decided, batches, clean_message(note))
        except sqlite3.Error as exc:
            raise CheckpointError(f"cannot resolve in the journal {name!r}: {exc}") from exc
        finally:
            conn.close()
    finally:
        unlock(fd)


def _resolve_locked(
    conn: sqlite3.Connection,
    path: str,
    decision: Decision,
    batches: Collection[int] | None,
    note: str,
) -> list[Resolution]:
    version = format_version(conn, path)
    if version is None:
        raise CheckpointRefusedError(f"{path!r} {NOT_A_JOURNAL} (it is an empty database)")
    if outdated(version):
        migrate(conn, version)
    fold(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = {row[0]: row for row in map(row_from_sql, conn.execute(SELECT_BATCHES))}
        open_states = {IN_FLIGHT, UNKNOWN}
        if batches is None:
            chosen = sorted(i for i, row in rows.items() if row[4] in open_states)
        else:
            chosen = sorted(set(batches))
            _check_open_batches(rows, chosen, path)
        now = time.time()
        said = "accepted" if decision is Decision.ACCEPTED else "not received"
        message = clean_message(f"resolved as {said}" + (f": {note}" if note else ""))
        made = []
        for index in chosen:
            row = rows[index]
            # A batch accepted in part: the decision is on the rest (its accepted runs stay).
            ranges = subtract_runs(parse_ranges(row[1], row[2], row[9]), parse_runs(row[10]))
            if decision is Decision.ACCEPTED:
                conn.execute(
                    "UPDATE batch SET state = ?, status = NULL, message = ? WHERE idx = ?",
                    (str(BatchState.ACCEPTED), message, index),
                )
            else:
                conn.execute(
                    "UPDATE batch SET state = ?, status = NULL, message = ?,"
                    " maybe_duplicated = 0 WHERE idx = ?",
                    (str(BatchState.SKIPPED), message, index),
                )
            text = runs_text(ranges)
            conn.execute(
                "INSERT INTO resolution (idx, decision, at, note, previous_state, ranges)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (index, str(decision), now, note, row[4], text),
            )
            made.append(
                Resolution(
                    index=index,
                    decision=decision,
                    at=datetime.fromtimestamp(now, UTC),
                    note=note,
                    previous_state=BatchState(row[4]),
                    ranges=ranges,
                )
            )
        if made:
            conn.execute("UPDATE load SET updated_at = max(updated_at, ?)", (now,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return made


def _check_open_batches(rows: dict[int, Row], chosen: list[int], path: str) -> None:
    """Refuse batches that are not in the journal, or not in flight or unknown."""
    missing = [i for i in chosen if i not in rows]
    closed = [i for i in chosen if i in rows and rows[i][4] not in {IN_FLIGHT, UNKNOWN}]
    if not missing and not closed:
        return
    parts = []
    if missing:
        parts.append(f"not in the journal: batch {_indexes(missing)}")
    if closed:
        parts.append(
            "not in flight or unknown: "
            + ", ".join(f"batch {i} ({rows[i][4]})" for i in closed[:10])
            + (f" and {len(closed) - 10} more" if len(closed) > 10 else "")
        )
    raise CheckpointRefusedError(f"cannot resolve in {path!r}: " + "; ".join(parts))


def _indexes(indexes: Sequence[int]) -> str:
    shown = ", ".join(map(str, indexes[:10]))
    return shown + (f" and {len(indexes) - 10} more" if len(indexes) > 10 else "")
