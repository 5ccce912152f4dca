"""A batch row as the journal keeps it: the tuple, its runs as text, a `JournalledBatch`.

The hot path handles rows (`Row`, in the ``batch`` table's column order), never objects:
a load's records are rows packed into the log, and `JournalledBatch` objects are made
only for readers (`batch_from_row`, `BatchesView`). Runs of positions are kept as text,
``'first-last,first-last'``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

from .._runs import Runs, subtract_runs, union_runs
from ._records import (
    BatchState,
    CheckpointRefusedError,
    JournalledBatch,
    describe_ranges,
)

__all__ = [
    "IN_FLIGHT",
    "UNKNOWN",
    "BatchesView",
    "Row",
    "batch_from_row",
    "check_accepted",
    "clean_message",
    "known_row",
    "pack_records",
    "parse_ranges",
    "parse_runs",
    "ranges_text",
    "row_from_sql",
    "runs_text",
    "union_text",
    "unpack_records",
]

_MESSAGE_LIMIT = 500

# A batch row: idx, start, count, digest, state, attempts, status, message, maybe_duplicated,
# ranges, accepted, in_parts (as in the table).
Row = tuple[int, int, int, bytes, str, int, int | None, str, bool, str | None, str, bool]
IN_FLIGHT = str(BatchState.IN_FLIGHT)
UNKNOWN = str(BatchState.UNKNOWN)
pack_records = msgspec.msgpack.Encoder().encode
unpack_records = msgspec.msgpack.Decoder(
    list[tuple[int, int, int, bytes, str, int, int | None, str, bool, str | None, str, bool]]
).decode


def ranges_text(start: int, count: int, ranges: Sequence[tuple[int, int]] | None) -> str:
    """A batch's runs of positions as the journal keeps them ('' when consecutive)."""
    if ranges is None or len(ranges) == 1:
        if ranges is not None and tuple(ranges[0]) != (start, count):
            raise ValueError(f"ranges {list(ranges)} do not start at {start} with {count} leads")
        return ""
    if ranges[0][0] != start or sum(run[1] for run in ranges) != count:
        raise ValueError(f"ranges {list(ranges)} do not start at {start} with {count} leads")
    return ",".join(f"{first}-{first + length - 1}" for first, length in ranges)


def parse_ranges(start: int, count: int, text: str | None) -> tuple[tuple[int, int], ...]:
    if not text:
        return ((start, count),) if count else ()
    runs = []
    for run in text.split(","):
        first, _, last = run.partition("-")
        runs.append((int(first), int(last) - int(first) + 1))
    return tuple(runs)


def runs_text(runs: Sequence[tuple[int, int]]) -> str:
    """Runs of positions as the journal keeps them: 'first-last,first-last' ('' for none)."""
    return ",".join(f"{first}-{first + length - 1}" for first, length in runs if length > 0)


def parse_runs(text: str) -> Runs:
    """The runs of `runs_text` (() for '')."""
    return parse_ranges(0, 0, text)


def union_text(known: str, new: str) -> str:
    """Two texts of runs (`runs_text`) as one: every position of either."""
    if not new or new == known:
        return known
    if not known:
        return new
    return runs_text(union_runs(parse_runs(known), parse_runs(new)))


def check_accepted(row: Row, runs: Sequence[tuple[int, int]]) -> str:
    """Batch ``row``'s accepted runs with ``runs`` added, as text (`union_text`).

    Raises:
        ValueError: ``runs`` hold a position that is not one of the batch's leads.
    """
    if not runs:
        return row[10]
    ranges = parse_ranges(row[1], row[2], row[9])
    if any(length < 0 for _, length in runs) or subtract_runs(runs, ranges):
        raise ValueError(
            f"accepted runs {list(runs)} are not all leads of batch {row[0]} "
            f"(leads {describe_ranges(ranges)})"
        )
    return runs_text(union_runs(parse_runs(row[10]), runs))


def batch_from_row(row: tuple[Any, ...]) -> JournalledBatch:
    index, start, count, digest, state, attempts, status, message, duplicated, ranges = row[:10]
    accepted, in_parts = row[10], row[11]
    return JournalledBatch(
        index=index,
        start=start,
        count=count,
        digest=bytes(digest),
        state=BatchState(state),
        attempts=attempts,
        status=status,
        message=sys.intern(message),  # most batches share a few messages
        maybe_duplicated=bool(duplicated),
        ranges=parse_ranges(start, count, ranges),
        exact=ranges is not None,
        accepted_ranges=parse_runs(accepted),
        sent_in_parts=bool(in_parts),
    )


def row_from_sql(row: tuple[Any, ...]) -> Row:
    index, start, count, digest, state, attempts, status, message, duplicated, ranges = row[:10]
    accepted, in_parts = row[10], row[11]
    return (
        index,
        start,
        count,
        bytes(digest),
        str(BatchState(state)),
        attempts,
        status,
        sys.intern(message),
        bool(duplicated),
        ranges,
        accepted,
        bool(in_parts),
    )


def known_row(
    rows: Mapping[int, Row],
    index: int,
    batch: tuple[int, int, bytes, str],
    path: str,
    shard: tuple[int, int] | None,
) -> Row | None:
    """The row of batch ``index`` in ``rows``, if any, checked against the load's ``batch``.

    ``batch``: its start, count, digest and ranges (`ranges_text`) as the load has them.

    Raises:
        CheckpointRefusedError: the journal holds the batch with other leads or content.
    """
    start, count, digest, ranges = batch
    row = rows.get(index)
    if row is not None and (
        row[1] != start
        or row[2] != count
        or row[3] != digest
        or (row[9] is not None and row[9] != ranges)
    ):
        known = batch_from_row(row)
        now = "leads " + describe_ranges(parse_ranges(start, count, ranges))
        then = (
            "the same positions with other content"
            if (known.start, known.count, known.ranges)
            == (start, count, parse_ranges(start, count, ranges))
            or (not known.exact and (known.start, known.count) == (start, count))
            else f"{known.positions} in the journal"
        )
        older = (
            ""
            if known.exact or shard is None
            else "; or the journal predates format 3, whose shards never batch leads of "
            "two blocks together: a shard whose blocks hold invalid leads cannot resume "
            "it (give this load a new checkpoint path)"
        )
        raise CheckpointRefusedError(
            f"the input changed since the checkpoint journal {path!r} was written: "
            f"batch {index} ({now}) differs from the journalled one ({then}){older}"
        )
    return row


def clean_message(message: str) -> str:
    """A message as the journal keeps it: at most 500 characters of valid UTF-8."""
    if len(message) <= _MESSAGE_LIMIT and message.isascii():
        return message  # the common case, checked without encoding
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 3] + "..."
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: SQLite text must be valid UTF-8
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return message


class BatchesView(Mapping[int, JournalledBatch]):
    """The journal's rows as `JournalledBatch` objects, made on access (a live view)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: dict[int, Row]) -> None:
        self._rows = rows

    def __getitem__(self, index: int) -> JournalledBatch:
        return batch_from_row(self._rows[index])

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"
