"""Outcomes of a bulk load: `BatchResult`, `Progress`, and the live `BulkReport`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ._exceptions import AmbiguousError, RyngError, ValidationError, fresh_copy
from ._runs import Runs, count_of, subtract_runs

__all__ = ["BatchResult", "BulkReport", "InvalidLead", "Outcome", "Progress"]

Ranges = Runs


class Outcome(enum.StrEnum):
    """How a batch ended; every batch ends in exactly one."""

    ACCEPTED = "accepted"
    """Answered 200 with ``"error": false``: the leads were appended."""
    FAILED = "failed"
    """A definite error after the retries allowed: the leads were not appended."""
    UNKNOWN = "unknown"
    """No definite answer (timeout, drop): the leads may or may not have been appended."""
    SKIPPED = "skipped"
    """Never sent (the load was cancelled, aborted or stopped first)."""


class InvalidLead(msgspec.Struct, frozen=True, kw_only=True):
    """A lead refused by validation in a bulk load.

    Attributes:
        position: the lead's position in the input (0 for the first lead read).
        field: the offending field in wire form, or None if the lead itself is wrong.
        reason: the rule that failed and the bad value.
    """

    position: int
    field: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResult:
    """The outcome of one batch of a bulk load.

    Attributes:
        index: the batch's number in the load, from 0, in input order (in one shard:
            a merged report of shards holds each index once per shard).
        start: input position of its first lead.
        count: leads in the batch.
        ranges: its leads' input positions exactly, as ``(start, count)`` runs in input
            order: invalid and deduplicated leads between them were not in the batch.
            ``((start, count),)`` when its leads are consecutive (filled so if not given).
        outcome: accepted, failed, unknown or skipped (of its ``open_ranges``).
        status: the last HTTP status received, or None.
        message: the server's message, or a description of the failure.
        attempts: requests sent for it (0 if skipped before any).
        elapsed: seconds from its first attempt to its outcome.
        error: the error that ended it, None if accepted.
        leads: its leads not accepted, in wire form (to send again), else empty (empty
            too when the load kept no leads: a checkpoint holds what is needed).
        resumed: its outcome comes from the checkpoint journal of an earlier run, and
            it was not sent in this one.
        maybe_duplicated: it was sent again after an attempt that may have been
            processed (``retry_ambiguous``): its leads may be in Ryng twice.
        accepted_ranges: runs of its positions accepted though the batch was not: parts
            answered 200 after a 413. They count as accepted and are never sent again.
        skipped_ranges: runs of its ``open_ranges`` never sent while others were (parts
            a stop left unsent, after a 413): they count as skipped, the rest of
            ``open_ranges`` under ``outcome`` (failed or unknown). () for most batches.
    """

    index: int
    start: int
    count: int
    outcome: Outcome
    status: int | None
    message: str
    attempts: int
    elapsed: float
    error: RyngError | None = None
    leads: tuple[dict[str, Any], ...] = ()
    resumed: bool = False
    maybe_duplicated: bool = False
    ranges: Ranges = ()
    accepted_ranges: Ranges = ()
    skipped_ranges: Ranges = ()

    def __post_init__(self) -> None:
        if not self.ranges and self.count:
            object.__setattr__(self, "ranges", ((self.start, self.count),))

    @property
    def open_ranges(self) -> Ranges:
        """Its positions not accepted: all of ``ranges`` unless it was accepted in part."""
        if self.outcome is Outcome.ACCEPTED:
            return ()
        return subtract_runs(self.ranges, self.accepted_ranges)

    @property
    def accepted_count(self) -> int:
        """Its leads accepted: all of them, some (``accepted_ranges``), or none."""
        if self.outcome is Outcome.ACCEPTED:
            return self.count
        return count_of(self.accepted_ranges)

    @property
    def skipped_count(self) -> int:
        """Its leads in ``skipped_ranges``, never sent (0 if it was accepted)."""
        return 0 if self.outcome is Outcome.ACCEPTED else count_of(self.skipped_ranges)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-able values (leads left out)."""
        return {
            "index": self.index,
            "start": self.start,
            "count": self.count,
            "ranges": [list(run) for run in self.ranges],
            "outcome": self.outcome.value,
            "status": self.status,
            "message": self.message,
            "attempts": self.attempts,
            "elapsed": round(self.elapsed, 6),
            "error": None if self.error is None else type(self.error).__name__,
            "resumed": self.resumed,
            "maybe_duplicated": self.maybe_duplicated,
            "accepted_ranges": [list(run) for run in self.accepted_ranges],
            "skipped_ranges": [list(run) for run in self.skipped_ranges],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot handed to ``on_progress`` after every batch.

    Attributes:
        batches: batches ended so far.
        read: leads read from the input so far.
        accepted, failed, unknown, skipped, invalid: leads so far, by outcome.
        rate: the request rate in force (requests/s), None if unlimited.
        elapsed: seconds since the load started.
    """

    batches: int
    read: int
    accepted: int
    failed: int
    unknown: int
    skipped: int
    invalid: int
    rate: float | None
    elapsed: float


@dataclass(slots=True, kw_only=True)
class BulkReport:
    """What a bulk load did with every lead, filled live as batches end.

    Pass one in (``bulk_append(..., report=BulkReport())``) to keep it when the load is
    cancelled from an enclosing scope or the input iterator raises: it is exact at every
    moment the load is not running code, and final once ``finished`` is True.

    The invariant ``total == accepted + failed + unknown + skipped + invalid`` holds once
    the load has ended, on every path.

    Attributes:
        campaign_id: the campaign loaded into.
        total: leads read from the input.
        accepted, failed, unknown, skipped, invalid: leads by outcome.
        batches: every batch's `BatchResult`, in completion order.
        invalid_leads: the leads refused before sending, with position and reason, in
            input order: the first ``keep_invalid_leads`` of them (``invalid`` counts all;
            a position read that is in no batch's ``ranges`` is invalid too).
        elapsed: seconds the load ran.
        finished: the load has ended (normally or not).
        stopped_early: the input was not read to its end (403, cancel, input error,
            ``max_consecutive_failures``, a limiter that failed), or the load ended with
            leads it had read never sent.
        stop_reason: why it stopped early, or None.
        input_read: input positions read (every shard reads the whole input: other
            shards' blocks included); in a merged report, the most any shard read.
        unread: for each shard that stopped before the end of its input (shard 0 for an
            unsharded load), the first input position it did not read: its leads from
            there on were never read, and `failed_ranges` lists them to send again.
        sharding: for a sharded load (and a merged report of shards), the shard count
            and the size of a shard's blocks of input positions (its ``batch_size``).
        resumed: leads whose outcome (accepted, or unknown: in flight when an earlier run
            stopped) comes from the checkpoint journal; they were not sent in this run.
        maybe_duplicated: accepted leads that were sent again after an attempt that may
            have been processed (``retry_ambiguous``, ``resend_unknown``): they may be in
            Ryng twice. For a batch sent in parts, every lead it got accepted is counted
            (an upper bound: some parts may not have been sent twice).
        leads_kept: the leads of batches not accepted are kept for `failed_leads`.
            False with a checkpoint (the journal and the input hold what is needed), or
            once more than ``keep_failed_leads`` would be held: `failed_ranges` then
            gives the input positions to read again.
        shard: ``(index, count)`` when the load sent one shard of its input (``total``
            then counts that shard's leads), else None.
        body_refused: the smallest request body, in bytes, the server refused as too
            large (HTTP 413; such batches were sent again in halves), else None.
        body_accepted: the largest request body accepted after that, else None.
    """

    campaign_id: str = ""
    total: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    invalid: int = 0
    batches: list[BatchResult] = field(default_factory=list)
    invalid_leads: list[InvalidLead] = field(default_factory=list)
    elapsed: float = 0.0
    finished: bool = False
    stopped_early: bool = False
    stop_reason: str | None = None
    resumed: int = 0
    maybe_duplicated: int = 0
    leads_kept: bool = True
    keep_failed_leads: int | None = field(default=None, repr=False)
    keep_invalid_leads: int | None = field(default=None, repr=False)
    shard: tuple[int, int] | None = None
    input_read: int = 0
    unread: dict[int, int] = field(default_factory=dict)
    sharding: tuple[int, int] | None = None
    body_refused: int | None = None
    body_accepted: int | None = None
    _started: float | None = field(default=None, repr=False)
    _resumed_accepted: int = field(default=0, repr=False)
    _leads_held: int = field(default=0, repr=False)

    @property
    def leads_per_second(self) -> float:
        """Leads accepted per second of the load (resumed ones left out: not sent)."""
        sent = self.accepted - self._resumed_accepted
        return sent / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True if the whole input was read and every lead was accepted."""
        return (
            self.finished
            and not self.stopped_early
            and self.accepted == self.total
            and not (self.failed or self.unknown or self.skipped or self.invalid)
        )

    @property
    def unaccounted(self) -> int:
        """Leads read but in no outcome (0 once the load has ended)."""
        return self.total - (
            self.accepted + self.failed + self.unknown + self.skipped + self.invalid
        )

    @classmethod
    def merge(cls, reports: Iterable[BulkReport]) -> BulkReport:
        """Join the reports of one load's shards into the report of the whole input.

        The invariant holds over the whole input when it holds for each shard. Batches
        keep their shard's index; they are listed in input order (by ``start``).

        Raises:
            ValueError: no reports; reports of different campaigns; shards of different
                counts, a shard twice or one missing (an unsharded report merges alone).
        """
        parts = list(reports)
        if not parts:
            raise ValueError("BulkReport.merge needs at least one report")
        campaigns = {part.campaign_id for part in parts}
        if len(campaigns) > 1:
            raise ValueError(f"reports of different campaigns: {sorted(campaigns)}")
        shards = [part.shard for part in parts]
        if None in shards and len(parts) > 1:
            raise ValueError("an unsharded report can only be merged alone")
        if None not in shards:
            counts = {shard[1] for shard in shards if shard is not None}
            if len(counts) > 1:
                raise ValueError(f"shards of different counts: {sorted(counts)}")
            (count,) = counts
            seen = sorted(shard[0] for shard in shards if shard is not None)
            if seen != list(range(count)):
                missing = sorted(set(range(count)) - set(seen))
                twice = sorted({i for i in seen if seen.count(i) > 1})
                raise ValueError(
                    f"shards of a {count}-way load: missing {missing or 'none'}, "
                    f"twice {twice or 'none'}"
                )
        merged = cls(campaign_id=parts[0].campaign_id)
        for part in parts:
            for name in (
                "total",
                "accepted",
                "failed",
                "unknown",
                "skipped",
                "invalid",
                "resumed",
                "maybe_duplicated",
                "_resumed_accepted",
            ):
                setattr(merged, name, getattr(merged, name) + getattr(part, name))
            merged.batches.extend(part.batches)
            merged.invalid_leads.extend(part.invalid_leads)
            merged.unread.update(part.unread)
        merged.input_read = max(part.input_read for part in parts)
        merged.shard = None if len(parts) > 1 else parts[0].shard
        merged.sharding = parts[0].sharding
        merged.batches.sort(key=lambda result: result.start)
        merged.invalid_leads.sort(key=lambda lead: lead.position)
        merged.elapsed = max(part.elapsed for part in parts)
        merged.finished = all(part.finished for part in parts)
        merged.leads_kept = all(part.leads_kept for part in parts)
        stopped = [part for part in parts if part.stopped_early]
        merged.stopped_early = bool(stopped)
        if stopped:
            merged.stop_reason = "; ".join(
                f"shard {part.shard[0] if part.shard else 0}: {part.stop_reason}"
                for part in stopped
            )
        return merged

    def record(self, result: BatchResult) -> None:
        """Add one batch's outcome to the counts."""
        if result.leads:
            if not self.leads_kept:
                result = replace(result, leads=())
            elif (
                self.keep_failed_leads is not None
                and self._leads_held + len(result.leads) > self.keep_failed_leads
            ):
                self.forget_leads()
                result = replace(result, leads=())
            else:
                self._leads_held += len(result.leads)
        self.batches.append(result)
        accepted = result.accepted_count
        if result.resumed:
            self.resumed += result.count
            self._resumed_accepted += accepted
        if result.maybe_duplicated:
            self.maybe_duplicated += accepted
        self.accepted += accepted
        never_sent = result.skipped_count  # parts a stop left unsent: skipped
        self.skipped += never_sent
        rest = result.count - accepted - never_sent
        if result.outcome is Outcome.FAILED:
            self.failed += rest
        elif result.outcome is Outcome.UNKNOWN:
            self.unknown += rest
        elif result.outcome is Outcome.SKIPPED:
            self.skipped += rest

    def forget_leads(self) -> None:
        """Drop the leads held for `failed_leads`; keep only positions from now on."""
        self.leads_kept = False
        self._leads_held = 0
        self.batches[:] = [
            replace(result, leads=()) if result.leads else result for result in self.batches
        ]

    def failed_ranges(self) -> list[tuple[int, int | None]]:
        """Return the input positions to send again, as ``(start, count)`` runs in order.

        Every lead of the failed, unknown and skipped batches (exactly: a batch's runs
        skip its invalid and deduplicated leads, and the runs of a batch accepted in part
        are left out), then the input never read when the load
        stopped early (see ``unread``). Positions count leads from 0 in the input, invalid
        ones included. A count of None means every position from ``start`` on (the end
        of the input was never read): in the report of one shard, that shard's blocks
        from there on; merge the shards' reports for their exact runs. Read them again
        when the report kept no leads (``leads_kept`` is False), or to re-drive the load
        without a checkpoint.
        """
        out: list[tuple[int, int | None]] = [
            run for result in self.batches for run in result.open_ranges
        ]
        out.extend(self._unread_ranges())
        out.sort(key=lambda run: run[0])
        return out

    def _unread_ranges(self) -> list[tuple[int, int | None]]:
        """The runs of input never read: per stopped shard, up to where the input is known."""
        if not self.unread:
            return []
        if self.sharding is None or self.shard is not None:
            # Unsharded, or one shard's own report: from its first unread position on.
            return [(min(self.unread.values()), None)]
        count, block = self.sharding
        end = self.input_read  # read to its end by a shard that did not stop, if any
        out: list[tuple[int, int | None]] = []
        for index, first in self.unread.items():
            for number in range(first // block, -(-end // block)):
                start = max(number * block, first)
                length = min((number + 1) * block, end) - start
                if number % count == index and length > 0:
                    out.append((start, length))
        if len(self.unread) == count:  # every shard stopped: the end was never read
            out.append((end, None))
        return out

    def record_invalid(self, leads: list[InvalidLead]) -> None:
        """Add leads refused by validation (described up to ``keep_invalid_leads``)."""
        keep = self.keep_invalid_leads
        if keep is None:
            self.invalid_leads.extend(leads)
        elif len(self.invalid_leads) < keep:
            self.invalid_leads.extend(leads[: keep - len(self.invalid_leads)])
        self.invalid += len(leads)

    def mark_unread(self, position: int) -> None:
        """Say the load stopped reading its input before ``position`` (the first unread)."""
        self.unread[self.shard[0] if self.shard is not None else 0] = position

    def stop(self, reason: str) -> None:
        """Mark the load as stopped before the end of its input (first reason kept)."""
        if not self.stopped_early:
            self.stopped_early = True
            self.stop_reason = reason

    def start(self, now: float) -> None:
        """Start timing at ``now`` on the load's clock (when the load starts)."""
        self._started = now

    def finish(self, now: float) -> None:
        """Mark the load as ended at ``now`` and fix its elapsed time."""
        self.elapsed = 0.0 if self._started is None else now - self._started
        self.finished = True

    def progress(self, rate: float | None, now: float) -> Progress:
        """Return a snapshot for ``on_progress``."""
        return Progress(
            batches=len(self.batches),
            read=self.total,
            accepted=self.accepted,
            failed=self.failed,
            unknown=self.unknown,
            skipped=self.skipped,
            invalid=self.invalid,
            rate=rate,
            elapsed=0.0 if self._started is None else now - self._started,
        )

    def failed_leads(self) -> list[dict[str, Any]]:
        """Return the leads of failed, unknown and skipped batches, in input order.

        A batch accepted in part (``accepted_ranges``) gives only its leads not accepted.

        These are the leads to send again. Unknown ones may already have been appended:
        check them (callbacks, the Ryng console) before resending, or customers may be
        called twice. Leads the load never read (``unread``: it stopped early) are not
        here, since it never had them: `failed_ranges` names their positions too.

        Raises:
            RyngError: the report kept no leads (``leads_kept`` is False): with a
                checkpoint, run the same load again; else read the positions of
                `failed_ranges` from the input again.
        """
        if not self.leads_kept and (self.failed or self.unknown or self.skipped):
            raise RyngError(
                "this report kept no leads (a checkpoint, or more than keep_failed_leads "
                "not accepted): run the same load again with its checkpoint, or read "
                "report.failed_ranges() from the input again"
            )
        pending = sorted(
            (r for r in self.batches if r.outcome is not Outcome.ACCEPTED), key=lambda r: r.start
        )
        return [lead for result in pending for lead in result.leads]

    def raise_for_failures(self) -> None:
        """Raise if any lead was not accepted; do nothing for an ``ok`` report.

        Raises:
            RyngError: with ``.report`` set to this report: the error of the first batch
                that ended with one (in input order; a copy, so the report's own error
                and its traceback stay as they are however often this raises); else
                `AmbiguousError` if some leads may or may not have been appended (cut off
                by a cancel); else a plain `RyngError` if leads were never sent, or the
                input not read to its end; else `ValidationError` naming the first
                invalid lead.
        """
        if self.ok:
            return
        not_accepted = sorted(
            (r for r in self.batches if r.outcome is not Outcome.ACCEPTED), key=lambda r: r.start
        )
        first_error = next((r.error for r in not_accepted if r.error is not None), None)
        reason = self.stop_reason or "the load did not finish"
        error: RyngError
        if first_error is not None:
            error = fresh_copy(first_error)
        elif self.unknown:
            error = AmbiguousError(
                f"{self.unknown} leads may or may not have been appended ({reason}); "
                "check them before sending them again"
            )
        elif self.skipped or self.stopped_early or not self.finished or not self.invalid:
            parts = [f"{self.skipped} leads were never sent"] if self.skipped else []
            if self.stopped_early:
                parts.append(
                    "the input was not read to its end"
                    + (
                        f" (first position not read: {min(self.unread.values())})"
                        if self.unread
                        else ""
                    )
                )
            error = RyngError(f"{'; '.join(parts) or 'the load did not finish'} ({reason})")
        elif self.invalid_leads:
            first = self.invalid_leads[0]
            error = ValidationError(
                f"{first.reason} ({self.invalid} invalid leads in all, none of them sent)",
                field=first.field,
                position=first.position,
            )
        else:  # invalid leads counted, none described (keep_invalid_leads=0)
            error = ValidationError(f"{self.invalid} invalid leads, none of them sent")
        error.report = self
        raise error

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able values (lead contents left out)."""
        return {
            "campaign_id": self.campaign_id,
            "total": self.total,
            "accepted": self.accepted,
            "failed": self.failed,
            "unknown": self.unknown,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "ok": self.ok,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "resumed": self.resumed,
            "maybe_duplicated": self.maybe_duplicated,
            "shard": None if self.shard is None else list(self.shard),
            "sharding": None if self.sharding is None else list(self.sharding),
            "input_read": self.input_read,
            "unread": {str(shard): position for shard, position in sorted(self.unread.items())},
            "failed_ranges": [list(run) for run in self.failed_ranges()],
            "body_refused": self.body_refused,
            "body_accepted": self.body_accepted,
            "elapsed": round(self.elapsed, 6),
            "leads_per_second": round(self.leads_per_second, 1),
            "batches": [r.to_dict() for r in self.batches],
            "invalid_leads": [msgspec.structs.asdict(lead) for lead in self.invalid_leads],
        }

    def to_json(self) -> bytes:
        """Return the report as JSON bytes (see `to_dict`)."""
        return msgspec.json.encode(self.to_dict())

    def __str__(self) -> str:
        status = "ok" if self.ok else "NOT ok"
        line = (
            f"{status}: {self.total} leads read, {self.accepted} accepted, {self.failed} failed, "
            f"{self.unknown} unknown, {self.skipped} skipped, {self.invalid} invalid "
            f"in {len(self.batches)} batches, {self.elapsed:.2f}s "
            f"({self.leads_per_second:,.0f} leads/s)"
        )
        if self.resumed:
            line += f"; {self.resumed} leads resumed from the checkpoint, not sent again"
        if self.maybe_duplicated:
            line += (
                f"; {self.maybe_duplicated} accepted leads were resent after an ambiguous "
                "attempt and may be in Ryng twice"
            )
        if self.body_refused is not None:
            line += "; " + self.body_limit_note()
        if self.stopped_early:
            line += f"; stopped early: {self.stop_reason}"
        if self.unread:
            line += "; not read from input position " + ", ".join(
                f"{position} (shard {shard})" if self.sharding else str(position)
                for shard, position in sorted(self.unread.items())
            )
        return line

    def body_limit_note(self) -> str:
        """Say what request body size a 413 taught, and which option sets it."""
        accepted = (
            ""
            if self.body_accepted is None
            else f", bodies up to {self.body_accepted:,} bytes went through"
        )
        return (
            f"the server refused request bodies of {self.body_refused:,} bytes as too large "
            f"(HTTP 413){accepted}: batches were split in halves to fit; set max_batch_bytes "
            "below the server's limit to send them whole"
        )
