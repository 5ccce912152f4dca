"""What a load did with each input position, from its report(s) or checkpoint journal(s).

`load_report` reads a `BulkReport` (or its ``to_dict()``/``to_json()``, or a file of
either), several reports of a sharded load (merged), or the load's journals; `outcomes`
then walks the report once, giving each input position its outcome and batch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .._exceptions import ConfigurationError
from .._runs import subtract_runs
from .._sqlite import SQLITE_MAGIC

__all__ = ["ExactOutcomes", "Outcomes", "Report", "load_report", "outcomes_of"]


class _Batch(msgspec.Struct):
    index: int
    start: int
    count: int
    outcome: str
    # Exact runs of positions (reports since journal format 3); None in older reports.
    ranges: list[tuple[int, int]] | None = None
    # Runs accepted though the batch was not (sent in parts after a 413): accepted
    # whatever its outcome, which is the rest's (journal format 5).
    accepted_ranges: list[tuple[int, int]] = msgspec.field(default_factory=list)
    # Runs of the rest never sent though other parts were (a stop in the middle of a
    # split): skipped whatever its outcome (failed or unknown).
    skipped_ranges: list[tuple[int, int]] = msgspec.field(default_factory=list)


class _Invalid(msgspec.Struct):
    position: int


class Report(msgspec.Struct):
    total: int
    batches: list[_Batch]
    invalid_leads: list[_Invalid] = msgspec.field(default_factory=list)
    input_read: int | None = None
    unread: dict[int, int] = msgspec.field(default_factory=dict)
    sharding: tuple[int, int] | None = None
    # Positions in no batch are invalid (a report) or not sent (a journal: it does not
    # record invalid leads, nor batches never sent).
    outside: str = "invalid"


_JOURNAL_OUTCOME = {"in_flight": "unknown"}


def load_report(report: Any) -> Report:
    """Read one report, or merge several: reports of a load's shards, or its journals."""
    if isinstance(report, list | tuple):
        if not report:
            raise ConfigurationError("report: no report or journal given")
        return _merged([_load_one(part) for part in report])
    return _load_one(report)


def _merged(parts: list[Report]) -> Report:
    if len(parts) == 1:
        return parts[0]
    reads = [part.input_read for part in parts]
    merged = Report(
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


def _from_journal(path: Path) -> Report:
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
    return Report(
        total=sum(batch.count for batch in batches),
        batches=[
            _Batch(
                index=batch.index,
                start=batch.start,
                count=batch.count,
                outcome=_JOURNAL_OUTCOME.get(batch.state.value, batch.state.value),
                ranges=list(batch.ranges),
                accepted_ranges=list(batch.accepted_ranges),
            )
            for batch in batches
        ],
        sharding=None if summary.shard is None else (summary.shard[1], summary.batch_size),
        outside="skipped",
    )


def _load_one(report: Any) -> Report:
    """Read a report: a `BulkReport`, its ``to_dict()``, its JSON, a file of either kind."""
    try:
        if isinstance(report, str | os.PathLike):
            path = Path(report)
            with contextlib.suppress(OSError), path.open("rb") as head:
                if head.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC:
                    return _from_journal(path)
        if hasattr(report, "to_dict"):
            return msgspec.convert(report.to_dict(), Report, strict=False)
        if isinstance(report, Mapping):
            return msgspec.convert(report, Report, strict=False)
        if isinstance(report, bytes | bytearray | memoryview):
            return msgspec.json.decode(report, type=Report)
        if isinstance(report, str | os.PathLike):
            try:
                data = Path(report).read_bytes()
            except OSError as exc:
                raise ConfigurationError(f"cannot read the report {report}: {exc}") from exc
            return msgspec.json.decode(data, type=Report)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ConfigurationError(f"not a bulk load report: {exc}") from exc
    raise ConfigurationError(
        f"report must be a BulkReport, its to_dict() or to_json(), or a path, "
        f"got {type(report).__name__}"
    )


class Outcomes:
    """Gives each input position its load outcome and batch, walking the report once.

    A report that names each batch's exact runs of positions (and the input each shard did
    not read) is walked by them: a merged report of shards, whose batch indices repeat,
    and batches whose leads are not consecutive, are read as they are. An older report
    (no runs) is walked by its batches' counts, skipping its invalid leads.
    """

    def __init__(self, report: Report) -> None:
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


class ExactOutcomes:
    """`Outcomes` by each batch's exact runs of positions (see `Outcomes`)."""

    def __init__(self, report: Report) -> None:
        self.total = report.total
        runs = [
            (first, first + length, outcome, batch.index)
            for batch in report.batches
            for outcome, ranges in _by_outcome(batch)
            for first, length in ranges
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


def _by_outcome(batch: _Batch) -> list[tuple[str, Sequence[tuple[int, int]]]]:
    """A batch's runs by outcome: those it accepted in part, those never sent, the rest."""
    ranges = batch.ranges or [(batch.start, batch.count)]
    skipped = batch.skipped_ranges if batch.outcome in {"failed", "unknown"} else []
    if not (batch.accepted_ranges or skipped) or batch.outcome == "accepted":
        return [(batch.outcome, ranges)]
    rest = subtract_runs(ranges, [*batch.accepted_ranges, *skipped])
    return [("accepted", batch.accepted_ranges), ("skipped", skipped), (batch.outcome, rest)]


def outcomes_of(report: Report) -> Outcomes | ExactOutcomes:
    exact = all(batch.ranges is not None for batch in report.batches)
    if exact and (report.input_read is not None or report.outside != "invalid"):
        return ExactOutcomes(report)
    return Outcomes(report)
