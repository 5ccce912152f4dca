"""Resuming a load from its checkpoint journal: the one part of the engine that talks to it.

`Resume` opens the journal for a load, tells for each batch packed whether an earlier run
settled it (accepted, or in flight so maybe in Ryng: not sent again), journals each
attempt durably before it is written (`Resume.observer`) and each outcome once known, and
closes the journal at the end whatever happened.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

import anyio

from ._batching import Batch
from ._events import AttemptStarting, BatchSettled, LoadEvent, LoadObserver
from ._exceptions import RyngError
from ._report import BatchResult, BulkReport, Outcome
from ._runs import Runs
from .checkpoint import BatchState, CheckpointError, JournalledBatch, LoadIdentity, SQLiteJournal

__all__ = ["IN_PARTS", "Resume"]

IN_PARTS = "a part in flight: sent in parts after a 413"
"""The message of a batch journalled in flight while it is sent in parts."""
_MAYBE_IN_RYNG = frozenset({BatchState.IN_FLIGHT, BatchState.UNKNOWN})
_JOURNAL_STATE = {outcome: BatchState(outcome.value) for outcome in Outcome}


class Resume:
    """A load's side of its checkpoint journal.

    Attributes:
        journal: the journal.
        resend_unknown: send again the batches an earlier run left in flight.
        digests: the content digest of each batch to send, by index (journalled with
            its attempts).
        sent_again: indexes of batches sent again though an earlier run may have
            appended them.
        accepted_before: for batches to send that an earlier run accepted in part (sent
            in parts after a 413), the runs of positions accepted then: not sent again.
    """

    def __init__(self, journal: SQLiteJournal, *, resend_unknown: bool) -> None:
        self.journal = journal
        self.resend_unknown = resend_unknown
        self.digests: dict[int, bytes] = {}
        self.sent_again: set[int] = set()
        self.accepted_before: dict[int, Runs] = {}
        self.in_parts: set[int] = set()

    async def open(self, identity: LoadIdentity) -> None:
        """Open the journal for the load ``identity`` names (refused if it differs)."""
        await self.journal.open(identity)

    def prior_result(self, batch: Batch) -> BatchResult | None:
        """The result of ``batch`` from an earlier run's record, if it must not be sent.

        Synchronous (no coroutine a batch on the hot path).

        Raises:
            RyngError: the batch's content changed since the journal was written.
        """
        digest = self.journal.digest(batch.body)
        ranges = batch.ranges
        prior = self.journal.prior(
            batch.index, start=batch.start, count=batch.count, digest=digest, ranges=ranges
        )
        outcome = _resumed_outcome(prior, resend_unknown=self.resend_unknown)
        if prior is None or outcome is None:
            self.digests[batch.index] = digest
            if prior is not None and prior.state in _MAYBE_IN_RYNG:
                self.sent_again.add(batch.index)  # resend_unknown: maybe twice now
            if prior is not None and prior.accepted_ranges:
                self.accepted_before[batch.index] = prior.accepted_ranges
            return None
        if outcome is Outcome.ACCEPTED:
            message = f"accepted in an earlier run: {prior.message}"
        else:
            message = (
                "in flight when an earlier run stopped: it may have been appended; check "
                "these leads in Ryng, then record what you found (ryng-async checkpoint "
                "resolve, or SQLiteJournal.resolve); resend_unknown=True sends them anyway"
            )
            if prior.sent_in_parts:  # the journal's flag sticks; the words are for people
                message += " (sent in parts after a 413)"
        return BatchResult(
            index=batch.index,
            start=batch.start,
            count=batch.count,
            outcome=outcome,
            status=prior.status,
            message=message,
            attempts=0,
            elapsed=0.0,
            resumed=True,
            maybe_duplicated=prior.maybe_duplicated,
            ranges=ranges,
            accepted_ranges=() if outcome is Outcome.ACCEPTED else prior.accepted_ranges,
        )

    def forget(self, index: int) -> None:
        """Drop what was kept for batch ``index``, which has its outcome."""
        self.digests.pop(index, None)
        self.accepted_before.pop(index, None)
        self.in_parts.discard(index)

    def sending_part(self, index: int) -> None:
        """Say batch ``index`` is being sent in parts: its in-flight records say so."""
        self.in_parts.add(index)

    def part_accepted(self, index: int, ranges: Runs) -> None:
        """Journal that a part of batch ``index`` (sent in parts) was accepted (queued)."""
        self.journal.part_accepted(index, ranges)

    def observer(self, unfinished: Mapping[int, Batch], report: BulkReport) -> LoadObserver:
        """The load's last observer: journals attempts and outcomes (see `_JournalObserver`).

        ``unfinished`` holds the batches being sent, by index; ``report`` is the load's.
        """
        return _JournalObserver(self, unfinished, report)

    def record_ended(self, results: list[BatchResult]) -> None:
        """Queue the outcomes given at the end of the load (its observers may not run)."""
        for result in results:
            _journal_settled(self.journal, result)

    async def close(self, report: BulkReport) -> Exception | None:
        """Close the journal, even under a cancel; return its error (carrying ``.report``)."""
        journal = self.journal
        try:
            with anyio.CancelScope(shield=True):
                await journal.aclose()
        except Exception as exc:  # noted on the load's own error, or raised alone
            error = exc
            if not isinstance(exc, RyngError):
                error = CheckpointError(
                    f"could not close the checkpoint journal {journal.path!r}: "
                    f"{type(exc).__name__}: {exc}"
                )
                error.__cause__ = exc
            error.report = report  # type: ignore[attr-defined]
            return error
        return None


def _resumed_outcome(prior: JournalledBatch | None, *, resend_unknown: bool) -> Outcome | None:
    """The outcome an earlier run settled a batch with, or None if it is to be sent."""
    if prior is None:
        return None
    if prior.state is BatchState.ACCEPTED:
        return Outcome.ACCEPTED
    if prior.state in _MAYBE_IN_RYNG and not resend_unknown:
        return Outcome.UNKNOWN
    return None  # failed, skipped, or unknown to resend: send it (again)


class _JournalObserver:
    """Journals each attempt durably before it is written, and each outcome once known.

    Synchronous, returning the commit's future only for an attempt about to start: the
    hot path makes no coroutine for the events it ignores.
    """

    __slots__ = ("_report", "_resume", "_unfinished")

    def __init__(self, resume: Resume, unfinished: Mapping[int, Batch], report: BulkReport) -> None:
        self._resume = resume
        self._unfinished = unfinished
        self._report = report

    def __call__(self, event: LoadEvent) -> Awaitable[None] | None:
        journal = self._resume.journal
        if isinstance(event, AttemptStarting) and event.batch_index is not None:
            batch = self._unfinished[event.batch_index]
            in_parts = batch.index in self._resume.in_parts
            return journal.in_flight(
                batch.index,
                start=batch.start,
                count=batch.count,
                digest=self._resume.digests[batch.index],
                attempt=event.attempt,
                ranges=batch.ranges,
                message=IN_PARTS if in_parts else "",
                # Sticky: `checkpoint resolve --callbacks` never lets a call prove such a
                # batch (a call proves its own part only).
                in_parts=in_parts,
            )
        if isinstance(event, BatchSettled) and not self._report.finished:
            # Once the report is finished, the load journalled the rest itself.
            _journal_settled(journal, event.result)
        return None


def _journal_settled(journal: SQLiteJournal, result: BatchResult) -> None:
    """Queue a batch's outcome for the journal (a resumed one is there already).

    Committed with the next group (or at close): a load does not wait on it. Lost to a
    crash, the batch reads as in flight, so unknown: never resent.
    """
    if result.resumed:
        if result.outcome is Outcome.UNKNOWN:
            # In flight when a run died: this run says unknown, and the journal too,
            # so it is not listed as in flight (as if a load were sending it) forever.
            journal.resolve_in_flight(result.index, message=result.message)
        return
    journal.settled(
        result.index,
        state=_JOURNAL_STATE[result.outcome],
        attempts=result.attempts,
        status=result.status,
        message=result.message,
        maybe_duplicated=result.maybe_duplicated,
        accepted_ranges=result.accepted_ranges,
        in_parts=bool(result.skipped_ranges),  # a split's; its parts' records said so too
    )
