"""Batches a server refused as too large (HTTP 413): split in halves, and the size learned.

A 413 is definite: the body was refused before it was read. The bulk engine then sends the
batch again as halves (each carrying exactly its own leads and their input positions), and
halves of those, down to one lead; `BodyLimit` remembers the smallest body refused so
that later batches are split before they are sent, rather than refused first.
Pure and I/O-free apart from what the caller's ``send`` does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import NamedTuple

from ._batching import Batch, BodyTemplate
from ._exceptions import APIError
from ._report import BatchResult, Outcome
from ._runs import Runs, positions_in, union_runs

__all__ = [
    "BodyLimit",
    "CutOff",
    "Splitter",
    "combine",
    "halves",
    "is_too_large",
    "remainder",
    "send_in_parts",
]


def is_too_large(error: BaseException | None) -> bool:
    """Say whether ``error`` is a 413: the request body was refused unread."""
    return isinstance(error, APIError) and error.status == 413


def halves(batch: Batch, template: BodyTemplate) -> tuple[Batch, Batch]:
    """Split a batch of two leads or more in two, each with its own leads and positions."""
    middle = len(batch.rows) // 2
    first_rows, second_rows = batch.rows[:middle], batch.rows[middle:]
    first_positions, second_positions = batch.positions[:middle], batch.positions[middle:]
    return (
        Batch(
            batch.index,
            first_positions[0],
            first_positions,
            first_rows,
            template.body(first_rows),
        ),
        Batch(
            batch.index,
            second_positions[0],
            second_positions,
            second_rows,
            template.body(second_rows),
        ),
    )


class BodyLimit:
    """The request body size a server refused (413), learned during one load.

    Attributes:
        refused: the smallest body, in bytes, refused with a 413 (None: none yet).
        accepted: the largest body accepted since then (None: none yet).
    """

    __slots__ = ("accepted", "refused")

    def __init__(self) -> None:
        self.refused: int | None = None
        self.accepted: int | None = None

    def fits(self, size: int) -> bool:
        """Say whether a body of ``size`` bytes is below every size refused so far."""
        return self.refused is None or size < self.refused

    def note_refused(self, size: int) -> None:
        """Remember a body of ``size`` bytes refused with a 413."""
        self.refused = size if self.refused is None else min(self.refused, size)

    def note_accepted(self, size: int) -> None:
        """Remember a body of ``size`` bytes accepted, once a 413 was seen."""
        if self.refused is not None:
            self.accepted = size if self.accepted is None else max(self.accepted, size)


class Splitter:
    """What a load needs to split batches: its body template and the limit it learned.

    For each batch being sent in parts, what a cut-off (a cancel, the end of a stop's
    grace) must not lose (see `cut_off`).

    Attributes:
        accepted: the runs of positions its parts got accepted so far.
        tried: the runs of positions its parts sent and not accepted (failed, or unknown).
        failed: batches of which a part failed.
        doubtful: batches of which a part may have been appended (ambiguous).
        sending: the runs of the part in flight.
        duplicated: batches of which an accepted part was sent again after an ambiguous
            attempt (``retry_ambiguous``).
    """

    __slots__ = (
        "accepted",
        "doubtful",
        "duplicated",
        "failed",
        "limit",
        "sending",
        "template",
        "tried",
    )

    def __init__(self, template: BodyTemplate) -> None:
        self.template = template
        self.limit = BodyLimit()
        self.accepted: dict[int, Runs] = {}
        self.tried: dict[int, Runs] = {}
        self.failed: set[int] = set()
        self.doubtful: set[int] = set()
        self.sending: dict[int, Runs] = {}
        self.duplicated: set[int] = set()

    def forget(self, index: int) -> None:
        """Drop what was kept on batch ``index``, which has its outcome."""
        self.accepted.pop(index, None)
        self.tried.pop(index, None)
        self.failed.discard(index)
        self.doubtful.discard(index)
        self.sending.pop(index, None)
        self.duplicated.discard(index)

    def note_sending(self, index: int, part: Batch) -> None:
        """Remember the part of batch ``index`` about to be sent."""
        self.sending[index] = part.ranges

    def note_part(self, index: int, part: BatchResult) -> None:
        """Remember how a part of batch ``index`` ended."""
        self.sending.pop(index, None)
        if part.count > 1 and is_too_large(part.error):
            return  # sent again in halves, which say how it ends
        self._note(index, part.outcome, part.ranges)
        if part.outcome is Outcome.ACCEPTED and part.maybe_duplicated:
            self.duplicated.add(index)

    def _note(self, index: int, outcome: Outcome, ranges: Runs) -> None:
        if outcome is Outcome.ACCEPTED:
            self.accepted[index] = union_runs(self.accepted.get(index, ()), ranges)
        elif outcome is not Outcome.SKIPPED:
            self.tried[index] = union_runs(self.tried.get(index, ()), ranges)
            (self.doubtful if outcome is Outcome.UNKNOWN else self.failed).add(index)

    def cut_off(self, index: int, last: Outcome) -> CutOff | None:
        """How batch ``index`` ends if the load is cut off while it is sent in parts.

        ``last`` is the outcome of its last request (`outcome_of` its exchange). None if
        it is not being sent in parts (``last`` then holds for the whole batch).
        """
        part = self.sending.pop(index, None)
        if part is not None:  # its part in flight ended as ``last``, not yet noted
            self._note(index, last, part)
        accepted = self.accepted.get(index, ())
        doubtful, failed = index in self.doubtful, index in self.failed
        if part is None and not accepted and not doubtful and not failed:
            return None
        rest = Outcome.UNKNOWN if doubtful else Outcome.FAILED if failed else Outcome.SKIPPED
        return CutOff(rest, accepted, index in self.duplicated, self.tried.get(index, ()))


class CutOff(NamedTuple):
    """How a batch sent in parts ends when the load is cut off (`Splitter.cut_off`).

    Attributes:
        outcome: its rest's: unknown if a part may have been appended, failed if a part
            failed, else skipped (no part of the rest was sent).
        accepted: the runs its parts got accepted.
        duplicated: whether an accepted part may be in Ryng twice.
        tried: the runs of its parts sent and not accepted; the rest of its open leads
            were never sent, and count as skipped.
    """

    outcome: Outcome
    accepted: Runs
    duplicated: bool
    tried: Runs


def remainder(batch: Batch, accepted: Runs, template: BodyTemplate) -> Batch | None:
    """The part of ``batch`` whose positions are not in ``accepted``, None if none is left."""
    taken = positions_in(accepted)
    kept = [i for i, position in enumerate(batch.positions) if position not in taken]
    if not kept:
        return None
    rows = [batch.rows[i] for i in kept]
    positions = [batch.positions[i] for i in kept]
    return Batch(batch.index, positions[0], positions, rows, template.body(rows))


async def send_in_parts(
    batch: Batch,
    split: Splitter,
    send: Callable[[Batch], Awaitable[BatchResult]],
    *,
    first: BatchResult | None = None,
) -> list[BatchResult]:
    """Send ``batch`` as parts that fit ``limit``, halving each part refused with a 413.

    ``send`` sends one part. ``first`` is the result of the whole batch already sent (a
    413), if it was. Parts go
    one after another, in input order; a single lead refused with a 413 stays refused.
    Returns the result of every final part, in input order.
    """
    limit, template = split.limit, split.template
    pending = [batch]
    done: list[BatchResult] = []
    # Bounded: each pass either settles a part or replaces it by its two halves, and a
    # batch of n leads has fewer than 2n parts in all.
    while pending:
        part = pending.pop(0)
        too_big = len(part.rows) > 1 and not limit.fits(len(part.body))
        if not too_big:
            result = first if first is not None and part is batch else await send(part)
            if result.outcome is Outcome.ACCEPTED:
                limit.note_accepted(len(part.body))
            elif is_too_large(result.error):
                limit.note_refused(len(part.body))
                too_big = len(part.rows) > 1
            if not too_big:
                done.append(result)
                continue
        pending[:0] = halves(part, template)
    return done


def combine(batch: Batch, parts: list[BatchResult], *, accepted_before: Runs = ()) -> BatchResult:
    """One result for a batch sent in parts: what each part proves, no more, no less.

    The accepted parts' positions (and ``accepted_before``: those an earlier run had
    accepted, the parts then covering the rest) are its ``accepted_ranges``; its outcome
    is that of the rest: accepted if nothing is left, unknown if a part may have been
    appended, skipped if no part of the rest was sent, else failed. Parts of the rest a
    stop left unsent while others were sent (a 403 in the middle) are its
    ``skipped_ranges``: they count as skipped, not under its outcome. Its ``leads`` are
    the rest's, so that what is sent again never holds a lead appended already.
    """
    if len(parts) == 1 and parts[0].count == batch.count:
        return parts[0]
    rest = [part for part in parts if part.outcome is not Outcome.ACCEPTED]
    outcomes = {part.outcome for part in rest}
    if not rest:
        outcome = Outcome.ACCEPTED
    elif Outcome.UNKNOWN in outcomes:
        outcome = Outcome.UNKNOWN
    elif outcomes == {Outcome.SKIPPED}:
        outcome = Outcome.SKIPPED
    else:
        outcome = Outcome.FAILED
    accepted = union_runs(
        accepted_before, *(part.ranges for part in parts if part.outcome is Outcome.ACCEPTED)
    )
    never_sent = (
        union_runs(*(part.ranges for part in rest if part.outcome is Outcome.SKIPPED))
        if outcome is Outcome.FAILED or outcome is Outcome.UNKNOWN
        else ()
    )
    worst = next((part for part in rest if part.outcome is outcome), parts[-1])
    described = "; ".join(
        f"{_span(part)} {part.outcome.value}"
        + ("" if part.outcome is Outcome.ACCEPTED else f" ({part.message})")
        for part in parts
    )
    if accepted_before:
        earlier = ", ".join(f"{start}-{start + count - 1}" for start, count in accepted_before)
        described = f"positions {earlier} accepted in an earlier run; {described}"
    return replace(
        worst,
        index=batch.index,
        start=batch.start,
        count=batch.count,
        ranges=batch.ranges,
        outcome=outcome,
        # "parts after a 413" in every such message: `checkpoint resolve --callbacks` reads
        # it (a call proves its own part only).
        message=f"sent in {f'{len(parts)} ' if len(parts) > 1 else ''}parts after a 413 "
        f"(body too large): {described}",
        attempts=sum(part.attempts for part in parts),
        elapsed=sum(part.elapsed for part in parts),
        error=None if outcome is Outcome.ACCEPTED else worst.error,
        leads=tuple(lead for part in rest for lead in part.leads),
        maybe_duplicated=any(part.maybe_duplicated for part in parts),
        accepted_ranges=() if outcome is Outcome.ACCEPTED else accepted,
        skipped_ranges=never_sent,
    )


def _span(part: BatchResult) -> str:
    if part.count == 1:
        return f"lead at input position {part.start}"
    runs = ", ".join(f"{start}-{start + count - 1}" for start, count in part.ranges)
    return f"{part.count} leads at input positions {runs}"
