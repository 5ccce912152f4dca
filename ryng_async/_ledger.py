"""A load's accounts: every lead read ends in exactly one outcome.

The `Ledger` fills the load's `BulkReport`: it counts what the intake read and refused,
holds each batch made until its outcome is recorded, and at the end gives every batch
still held its outcome in one place (`Ledger.close`): unknown if a request for it may
have been processed, else skipped. So ``total == accepted + failed + unknown + skipped +
invalid`` on every path, and the positions of what was not accepted (``failed_ranges``,
the unread rest) come from here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace

from ._batching import Batch
from ._clock import Clock
from ._exceptions import RyngError
from ._exchange import Exchange, StopSignal
from ._intake import Lot
from ._models import wire_dict
from ._report import BatchResult, InvalidLead, Outcome
from ._runs import Runs, count_of, positions_in, subtract_runs
from ._settings import LoadSettings
from ._split import CutOff

__all__ = ["Ledger", "TooManyFailuresError", "outcome_of"]


class TooManyFailuresError(Exception):
    """``max_consecutive_failures`` stopped the load (its report says so; not raised)."""


def outcome_of(exchange: Exchange | None, otherwise: Outcome) -> Outcome:
    """Accepted if answered so, unknown if it may have been processed, else ``otherwise``."""
    if exchange is None:
        return otherwise
    if exchange.response is not None:
        return Outcome.ACCEPTED
    return Outcome.UNKNOWN if exchange.maybe_processed else otherwise


class Ledger:
    """The outcomes of one load, kept in its `BulkReport`.

    Args:
        settings: the load's settings (its report is set up here, and its clock started).
        clock: the load's clock.
        stop: fired once the load stops.
        fail: stops the load for a reason (what ``on_invalid`` raises, too many failures).
        sent_again: indexes of batches sent again though an earlier run may have
            appended them (``resend_unknown``): their results say maybe duplicated.

    Attributes:
        report: the load's report.
        unfinished: the batches made and not yet given an outcome, by index.
        exchanges: the last request of each batch being sent, by index.
    """

    def __init__(
        self,
        settings: LoadSettings,
        *,
        clock: Clock,
        stop: StopSignal,
        fail: Callable[[BaseException, str], None],
        sent_again: Collection[int] = (),
    ) -> None:
        report = self.report = settings.report
        report.campaign_id = settings.campaign_id
        report.leads_kept = settings.journal is None
        report.keep_failed_leads = settings.keep_failed_leads
        report.shard = settings.shard
        if settings.shard is not None:
            report.sharding = (settings.shard[1], settings.batch_size)
        report.keep_invalid_leads = settings.keep_invalid_leads
        report.start(clock.now())
        self.clock = clock
        self.stop = stop
        self.fail = fail
        self.sent_again = sent_again
        self.on_invalid = settings.on_invalid
        self.max_consecutive_failures = settings.max_consecutive_failures
        self.consecutive_failures = 0
        self.unfinished: dict[int, Batch] = {}
        self.exchanges: dict[int, Exchange] = {}

    def enter(self, lot: Lot) -> list[Batch]:
        """Count what the intake read and refused; hold its batches until they end."""
        report = self.report
        report.input_read = lot.read
        report.total += lot.taken
        if lot.invalid:
            self.refuse(lot.invalid)
        for batch in lot.batches:
            self.unfinished[batch.index] = batch
        return lot.batches

    def refuse(self, invalid: list[InvalidLead]) -> None:
        """Count leads refused before sending, and hand each to ``on_invalid``.

        Plain code that also runs at the end of the load: what ``on_invalid`` raises stops
        the load (raised once it has ended) and it is not called again.
        """
        self.report.record_invalid(invalid)
        if self.on_invalid is None:
            return
        try:
            for lead in invalid:
                self.on_invalid(lead)
        except Exception as exc:
            self.on_invalid = None
            self.fail(exc, f"{type(exc).__name__} raised by on_invalid: {exc}")

    def count_failures(self, outcome: Outcome) -> None:
        """Stop a load whose batches keep failing, rather than read the whole input.

        A server that is down would otherwise fail batch after batch to the end of the
        input, and the report would hold every lead of it for `failed_leads`.
        """
        if outcome is Outcome.ACCEPTED:
            self.consecutive_failures = 0
            return
        if outcome is Outcome.SKIPPED:
            return
        self.consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit is not None and self.consecutive_failures >= limit and not self.stop.fired:
            self.fail(TooManyFailuresError(), f"{limit} batches in a row were not accepted")

    def result(
        self,
        *,
        batch: Batch,
        outcome: Outcome,
        exchange: Exchange | None,
        message: str,
        error: RyngError | None,
        started: float | None,
    ) -> BatchResult:
        """The result of ``batch`` (its leads kept only if not accepted, and if wanted)."""
        if error is not None:
            _drop_tracebacks(error)
        return BatchResult(
            index=batch.index,
            start=batch.start,
            count=batch.count,
            outcome=outcome,
            status=None if exchange is None else exchange.status,
            message=message,
            attempts=0 if exchange is None else exchange.attempts,
            elapsed=0.0 if started is None else self.clock.now() - started,
            error=error,
            leads=()
            if outcome is Outcome.ACCEPTED or not self.report.leads_kept
            else tuple(map(wire_dict, batch.rows)),
            maybe_duplicated=(exchange is not None and exchange.maybe_duplicated)
            or batch.index in self.sent_again,
            ranges=batch.ranges,
        )

    def accepted_earlier(self, batch: Batch, message: str) -> BatchResult:
        """The result of ``batch``, found accepted without a request of this run."""
        result = self.result(
            batch=batch,
            outcome=Outcome.ACCEPTED,
            exchange=None,
            message=message,
            error=None,
            started=None,
        )
        return replace(result, maybe_duplicated=False)  # nothing was sent again

    def record(self, batch: Batch, result: BatchResult) -> None:
        """Give ``batch`` its outcome: it is no longer held."""
        del self.unfinished[batch.index]
        self.exchanges.pop(batch.index, None)
        self.report.record(result)

    def close(
        self,
        *,
        reason: str | None,
        cut_off: Callable[[int, Outcome], CutOff | None],
        gently_stopped: bool,
        unread_from: int | None,
    ) -> list[BatchResult]:
        """Give every batch still held its outcome, then end the report.

        A batch with a request that may have been processed is unknown; any other is
        skipped, for ``reason``. For a batch being sent in parts (or resumed with parts
        accepted before), ``cut_off`` gives its rest's outcome, its accepted runs (which
        count as accepted), whether it may be duplicated and the runs of its parts sent
        and not accepted: the rest, never sent, counts as skipped. ``unread_from``
        is the first input position not read, if the input was not read to its end.
        Plain synchronous code, safe while a cancel is pending. Returns the results it
        recorded, for the observers.
        """
        ended = []
        for index in sorted(self.unfinished):
            batch = self.unfinished[index]
            exchange = self.exchanges.get(index)
            outcome = outcome_of(exchange, Outcome.SKIPPED)
            accepted: Runs = ()
            never_sent: Runs = ()
            duplicated = False
            in_parts = cut_off(index, outcome)
            if in_parts is not None:
                outcome, accepted, duplicated, tried = in_parts
                if count_of(accepted) == batch.count:
                    outcome, accepted = Outcome.ACCEPTED, ()
                elif outcome is Outcome.FAILED or outcome is Outcome.UNKNOWN:
                    never_sent = subtract_runs(subtract_runs(batch.ranges, accepted), tried)
            if outcome is Outcome.ACCEPTED:
                message = "accepted before the load was cut off"
            elif outcome is Outcome.UNKNOWN:
                message = "cancelled after sending: may have been appended"
            elif outcome is Outcome.FAILED:
                message = "a part failed before the load was cut off" + (
                    f": {reason}" if reason else ""
                )
            else:
                message = f"not sent: {reason}"
            if in_parts is not None:  # read by `checkpoint resolve --callbacks`
                message += " (sent in parts after a 413)"
            result = self.result(
                batch=batch,
                outcome=outcome,
                exchange=exchange,
                message=message,
                error=None,
                started=None,
            )
            if accepted:
                result = _without(result, batch, accepted)
            if never_sent:
                result = replace(result, skipped_ranges=never_sent)
            if duplicated and not result.maybe_duplicated:
                result = replace(result, maybe_duplicated=True)
            self.record(batch, result)
            ended.append(result)
        if gently_stopped and (unread_from is not None or ended):
            self.report.stop(reason or "the result stream was closed")
        if unread_from is not None:
            self.report.mark_unread(unread_from)
        self.report.finish(self.clock.now())
        return ended


def _without(result: BatchResult, batch: Batch, accepted: Runs) -> BatchResult:
    """``result`` for ``batch`` less its parts accepted already (``accepted``)."""
    taken = positions_in(accepted)
    leads = tuple(
        wire_dict(row)
        for position, row in zip(batch.positions, batch.rows, strict=True)
        if position not in taken
    )
    return replace(result, accepted_ranges=accepted, leads=leads if result.leads else ())


def _drop_tracebacks(error: BaseException) -> None:
    """Let the frames of a failed attempt go: its error lives as long as the report.

    A traceback keeps every frame of the attempt alive, the batch's body among their
    locals: about 20 MB over a million leads with one batch in five failing. The chain
    (cause, context) is cleared too, at most a few links deep.
    """
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen and len(seen) < 8:
        seen.add(id(link))
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
