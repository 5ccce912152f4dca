"""The journal's records: a load's identity, a batch as journalled, a summary, decisions.

Plain values (frozen dataclasses and string enums), and the journal's errors:
`CheckpointError` for a journal that failed while in use, `CheckpointRefusedError` for one
refused before anything is sent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .._exceptions import ConfigurationError, ResourceError
from .._runs import Runs, count_of, subtract_runs

__all__ = [
    "BatchState",
    "CheckpointError",
    "CheckpointRefusedError",
    "Decision",
    "JournalSummary",
    "JournalledBatch",
    "LoadIdentity",
    "Resolution",
    "describe_ranges",
]


class CheckpointError(ResourceError):
    """The checkpoint journal failed while in use: a write that failed (disk full, file removed).

    Also raised by `SQLiteJournal.open` when there is no room to create or open the
    journal (a full disk, a file-size limit): the environment's failure, not a refusal.

    Raised by `SQLiteJournal.in_flight` and `SQLiteJournal.settled` (through the future
    they return), by `SQLiteJournal.aclose` (a queued record), by `SQLiteJournal.resolve`,
    and by a load whose journal did not close: a `ResourceError`, the load can run again
    once the disk has room. A journal refused before anything is sent is the subclass
    `CheckpointRefusedError`.
    """


class CheckpointRefusedError(CheckpointError, ConfigurationError):
    """The checkpoint journal cannot be used for this load; nothing was sent or written.

    Raised by `SQLiteJournal.open` (the message says what differs: another load, a changed
    input, a foreign file, a newer format, an unwritable location, another process using
    it), by `SQLiteJournal.prior` and `SQLiteJournal.in_flight` when the input changed, and
    by the readers (`SQLiteJournal.inspect`, `SQLiteJournal.read_batches`). Also a
    `ConfigurationError`: the settings (the path, the input) must change.

    Attributes:
        differs: for a journal of another load, the `LoadIdentity` fields that differ
            (``"campaign_id"``, ``"batch_size"``, ``"max_batch_bytes"``, ``"options"``,
            ``"shard"``), to act on without reading the message; else empty.
    """

    def __init__(self, message: str, *, differs: Iterable[str] = ()) -> None:
        self.differs = frozenset(differs)
        super().__init__(message)


class BatchState(enum.StrEnum):
    """What the journal knows of a batch."""

    IN_FLIGHT = "in_flight"
    """A request for it was about to be written, and no outcome followed: it may be in Ryng."""
    ACCEPTED = "accepted"
    """Appended by Ryng."""
    FAILED = "failed"
    """A definite error: not appended."""
    UNKNOWN = "unknown"
    """No definite answer: it may or may not have been appended."""
    SKIPPED = "skipped"
    """Not sent (cancelled, aborted or stopped first)."""


class Decision(enum.StrEnum):
    """What an operator found of an unknown batch (`SQLiteJournal.resolve`)."""

    ACCEPTED = "accepted"
    """Its leads are in Ryng: the next run counts the batch accepted and sends nothing."""
    NOT_RECEIVED = "not-received"
    """Its leads are not in Ryng: the next run sends it, not as a maybe-duplicated resend."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolution:
    """A decision recorded on a batch that was in flight or unknown.

    Attributes:
        index: the batch's number in the load.
        decision: what was decided.
        at: when (UTC).
        note: the operator's note ("" if none).
        previous_state: the batch's state before the decision (in flight or unknown).
        ranges: the input positions decided, as ``(start, count)`` runs: the batch's
            leads but those it had accepted in part (`JournalledBatch.open_ranges`).
    """

    index: int
    decision: Decision
    at: datetime
    note: str
    previous_state: BatchState
    ranges: tuple[tuple[int, int], ...]

    @property
    def positions(self) -> str:
        """Its lead positions for messages, e.g. ``"leads 6000-6499"``."""
        return "leads " + describe_ranges(self.ranges)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadIdentity:
    """What makes two runs the same load; a journal is refused for any other.

    Attributes:
        campaign_id: the campaign the leads go to.
        batch_size: most leads in a batch.
        max_batch_bytes: most encoded bytes in a request body.
        options: the canonical encoding of the campaign options (the request envelope
            without leads). Compared byte for byte; the journal keeps only its SHA-256,
            since callback URLs may carry secrets.
        shard: ``(index, count)`` when this worker sends one shard of the input.
    """

    campaign_id: str
    batch_size: int
    max_batch_bytes: int
    options: bytes
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.campaign_id:
            raise ValueError("campaign_id must be a non-empty string")
        if self.batch_size < 1 or self.max_batch_bytes < 1:
            raise ValueError("batch_size and max_batch_bytes must be positive")
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard must be (index, count) with 0 <= index < count: {self.shard}")


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalledBatch:
    """One batch as the journal holds it.

    Attributes:
        index: the batch's number in the load, from 0.
        start: input position of its first lead.
        count: leads in it.
        ranges: its leads' input positions exactly, as ``(start, count)`` runs in input
            order (one run when they are consecutive).
        exact: ``ranges`` is known exactly; False for a batch recorded by a journal of
            format 2 or older and not met by a load since (then ``ranges`` is
            ``((start, count),)``, which may span invalid or deduplicated leads).
        digest: digest of its encoded body, as the load computed it.
        state: the last state recorded.
        attempts: requests sent for it by the run that recorded the state.
        status: the last HTTP status received, or None.
        message: the server's message or a description of the failure (cut to 500
            characters).
        maybe_duplicated: it may have reached Ryng more than once (sticky: once set, it stays).
        accepted_ranges: runs of its positions accepted though the batch was not (it was
            sent in parts after a 413), as ``(start, count)`` runs; its ``state`` describes
            the rest (`open_ranges`). Only grows; () for most batches.
        sent_in_parts: a part of it was sent on its own after a 413, in this run or an
            earlier one (so a callback for one of its leads proves that part only).
            Sticky: once set, no later record clears it; True whenever
            ``accepted_ranges`` is not empty.
    """

    index: int
    start: int
    count: int
    digest: bytes
    state: BatchState
    attempts: int
    status: int | None
    message: str
    maybe_duplicated: bool
    ranges: tuple[tuple[int, int], ...] = ()
    exact: bool = True
    accepted_ranges: tuple[tuple[int, int], ...] = ()
    sent_in_parts: bool = False

    def __post_init__(self) -> None:
        if not self.ranges and self.count:
            object.__setattr__(self, "ranges", ((self.start, self.count),))
        if self.accepted_ranges and not self.sent_in_parts:
            object.__setattr__(self, "sent_in_parts", True)

    @property
    def open_ranges(self) -> Runs:
        """Its runs its ``state`` describes: () once accepted, else all but `accepted_ranges`."""
        if self.state is BatchState.ACCEPTED:
            return ()
        if not self.accepted_ranges:
            return self.ranges
        return subtract_runs(self.ranges, self.accepted_ranges)

    @property
    def open_count(self) -> int:
        """Leads in `open_ranges` (0 once it is accepted)."""
        if self.state is BatchState.ACCEPTED:
            return 0
        if not self.accepted_ranges:
            return self.count
        return count_of(self.open_ranges)

    @property
    def positions(self) -> str:
        """Its lead positions for messages, e.g. ``"leads 6000-6499"`` or ``"leads 0-1, 3-4"``."""
        return "leads " + describe_ranges(self.ranges)


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalSummary:
    """What a journal says, read without disturbing a load that may hold it.

    Attributes:
        path: the journal's path as given.
        format_version: its format version (before any migration).
        campaign_id: the campaign of its load.
        batch_size: the load's batch size.
        max_batch_bytes: the load's byte limit per request.
        shard: the load's shard, or None.
        created_at: when the journal was created (UTC).
        updated_at: when it was last written (UTC).
        batches: batches by state (every state present, zero if none).
        leads: leads by state (every state present, zero if none); the leads of a batch
            accepted in part (`JournalledBatch.accepted_ranges`) count as accepted, the
            rest of it under its state.
        maybe_duplicated_leads: leads of batches that may have reached Ryng twice.
        next_position: every valid lead before this input position was accepted: the first
            lead of the first batch, by index, that is not accepted (not counting the runs
            it accepted in part), else the position after the last accepted batch's leads
            (leads from there on, if any, were never sent). In an unsharded journal a batch
            index missing from the journal counts as not accepted.
        uncertain: batches in flight or unknown: they may or may not be in Ryng; check
            their leads there before sending them again.
        size_bytes: bytes on disk (the database and its WAL file).
        holder: the process id of the load holding the journal now, or None if no load
            does: batches in flight then belong to a run that stopped (they are unknown,
            and the next run reports them so); with a holder they may be in flight now.
            0 if a load holds it but its id cannot be read.
        resolved: the decisions recorded on unknown batches (`SQLiteJournal.resolve`), in
            the order they were made.
        accepted_in_part: the batches not accepted as a whole of which some runs were
            (sent in parts after a 413), by index: their `JournalledBatch.accepted_ranges`.
    """

    path: str
    format_version: int
    campaign_id: str
    batch_size: int
    max_batch_bytes: int
    shard: tuple[int, int] | None
    created_at: datetime
    updated_at: datetime
    batches: Mapping[BatchState, int]
    leads: Mapping[BatchState, int]
    maybe_duplicated_leads: int
    next_position: int
    uncertain: tuple[JournalledBatch, ...]
    size_bytes: int
    holder: int | None = None
    resolved: tuple[Resolution, ...] = ()
    accepted_in_part: tuple[JournalledBatch, ...] = ()

    @property
    def total_batches(self) -> int:
        """Batches in the journal."""
        return sum(self.batches.values())

    @property
    def total_leads(self) -> int:
        """Leads of the batches in the journal."""
        return sum(self.leads.values())


def describe_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    """``"0-1, 3-4"``: runs of positions, first and last of each."""
    return ", ".join(
        str(first) if length == 1 else f"{first}-{first + length - 1}" for first, length in ranges
    )
