"""A load's intake: read the leads, validate, dedupe, shard and pack them into batches.

`Intake.read` reads the input a batch's worth at a time (an iterable or an async
iterable) and hands each `Lot` it packs to the load, which sends its batches; so the input
is read only as fast as batches go out. `Intake.check` runs the same checks on a chunk
without a load: the CLI's dry run (``append --dry-run``) and ``upload-sheet`` use it, so
what they call invalid is what a load calls invalid.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import anyio
import anyio.lowlevel

from ._batching import Batch, Packer
from ._exceptions import ValidationError
from ._exchange import StopSignal
from ._lead_checks import proven_rows, validate_lead
from ._models import LeadInput, WireLead, WireRow
from ._report import InvalidLead
from ._seen import SeenNumbers

__all__ = ["DUPLICATE_REASON", "Intake", "LeadChunks", "Lot", "validate_chunk"]

DUPLICATE_REASON = "duplicate of an earlier lead in this load"
"""The reason a deduplicating load gives a lead whose number it had already."""


@dataclass(slots=True)
class Lot:
    """What one step of the intake made.

    Attributes:
        read: input positions read so far (every shard's).
        taken: leads of this worker's share read by this step (valid or not).
        invalid: leads refused by this step (validation, dedupe, size), each once.
        batches: the batches packed by this step.
    """

    read: int
    taken: int = 0
    invalid: list[InvalidLead] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)


class LeadChunks:
    """Leads that come a list at a time (a file parsed a chunk of rows at a time).

    An async iterable of leads like any other; an intake takes each list whole instead of
    lead by lead (no async step a lead). ``chunks`` yields lists of leads.
    """

    __slots__ = ("_chunks",)

    def __init__(self, chunks: AsyncIterator[list[Any]]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for chunk in self._chunks:
            for lead in chunk:
                yield lead

    async def next_chunk(self) -> list[Any] | None:
        """The next list of leads, or None at the end."""
        return await anext(self._chunks, None)

    async def aclose(self) -> None:
        """Close the chunks' generator (when not read to its end)."""
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _let_senders_run() -> None:
    """Yield to the sender just handed a batch, before packing the next one.

    Packing is synchronous; without this, a sender's request body would only start going
    out once the next batch is packed, so no packing would overlap the server's work.
    """
    # Two checkpoints: one for the sender task to start, one for aiohttp's body writer.
    await anyio.lowlevel.checkpoint()
    await anyio.lowlevel.checkpoint()


def validate_chunk(
    chunk: list[Any], start: int, normalize: Callable[[Any], Any] | None = None
) -> tuple[list[dict[str, Any]], list[int], list[InvalidLead]]:
    """Validate each lead of ``chunk`` (input positions from ``start``), one by one.

    Returns the valid leads in wire form, their positions, and the invalid leads in order.
    """
    rows: list[dict[str, Any]] = []
    positions: list[int] = []
    invalid: list[InvalidLead] = []
    for position, lead in enumerate(chunk, start):
        try:
            row = validate_lead(lead if normalize is None else normalize(lead), position)
        except ValidationError as exc:
            invalid.append(InvalidLead(position=position, field=exc.field, reason=exc.reason))
            continue
        rows.append(row)
        positions.append(position)
    return rows, positions, invalid


class Intake:
    """Reads a load's input and makes its batches, in input order.

    Args:
        leads: the input (an iterable or async iterable of leads).
        packer: cuts the valid leads into batches.
        batch_size: leads read per step (the packer's batch size).
        shard: ``(index, count)``: only the blocks of ``batch_size`` positions whose number
            modulo ``count`` is ``index`` are validated and packed.
        seen: the numbers had so far, when deduplicating.
        normalize: makes a lead's number E.164 before validation.
        duplicate_reason: the reason given a lead refused by ``seen``.

    Attributes:
        position: input positions read so far.
        done: the input is exhausted.
        held: leads read but not yet validated.
    """

    def __init__(
        self,
        leads: Iterable[LeadInput] | AsyncIterable[LeadInput],
        *,
        packer: Packer,
        batch_size: int,
        shard: tuple[int, int] | None = None,
        seen: SeenNumbers | None = None,
        normalize: Callable[[Any], Any] | None = None,
        duplicate_reason: str = DUPLICATE_REASON,
    ) -> None:
        self.leads = leads
        self.packer = packer
        self.batch_size = batch_size
        self.shard = shard
        self.seen = seen
        self.normalize = normalize
        self.duplicate_reason = duplicate_reason
        self.position = 0
        self.done = False
        self.held: list[Any] = []
        self._reading: anyio.CancelScope | None = None
        self._stopped = False

    @property
    def all_packed(self) -> bool:
        """Every lead of the input was read and is in a batch (or refused)."""
        return self.done and not self.held and not self.packer.pending

    # -- reading ---------------------------------------------------------------------

    async def read(self, deliver: Callable[[Lot], Awaitable[None]], stop: StopSignal) -> None:
        """Read the input to its end (or until ``stop`` fires), delivering each lot packed.

        What the input raises is raised here.
        """
        if isinstance(self.leads, LeadChunks):
            await self._read_chunks(self.leads, deliver, stop)
        elif isinstance(self.leads, AsyncIterable):
            await self._read_async(self.leads, deliver, stop)
        else:
            await self._read_sync(self.leads, deliver, stop)

    def stop_reading(self) -> None:
        """Cancel a wait for the next lead of an async input (a stop must not wait on it)."""
        self._stopped = True
        if self._reading is not None:
            self._reading.cancel()

    async def _read_sync(
        self, source: Iterable[Any], deliver: Callable[[Lot], Awaitable[None]], stop: StopSignal
    ) -> None:
        iterator = iter(source)
        while not stop.fired:
            await _let_senders_run()
            self.held.extend(islice(iterator, self.batch_size))
            if not self.held:
                self.done = True
                break
            await deliver(self.pack())
        if not stop.fired:
            await deliver(self.pack_rest())

    async def _read_async(
        self,
        source: AsyncIterable[Any],
        deliver: Callable[[Lot], Awaitable[None]],
        stop: StopSignal,
    ) -> None:
        iterator = aiter(source)
        exhausted = False
        try:
            while not stop.fired and not exhausted:
                await _let_senders_run()
                # A stop cancels the wait for the next lead: an input that stalls (a pipe,
                # a slow query) must not hold the stop until its grace runs out.
                with anyio.CancelScope() as self._reading:
                    if self._stopped:  # stopped during the yield above
                        self._reading.cancel()
                    async for lead in iterator:
                        self.held.append(lead)
                        if len(self.held) >= self.batch_size:
                            break
                    else:
                        exhausted = self.done = True
                self._reading = None
                await deliver(self.pack())
            if not stop.fired:
                await deliver(self.pack_rest())
        finally:
            # Close an async generator we stopped reading here, in this task, rather than
            # leave it to a garbage-collection hook in another task.
            aclose = getattr(iterator, "aclose", None)
            if not exhausted and aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()

    async def _read_chunks(
        self, source: LeadChunks, deliver: Callable[[Lot], Awaitable[None]], stop: StopSignal
    ) -> None:
        """As `_read_async`, a list at a time; what is read past a batch waits in ``ahead``.

        Leads read ahead are not read yet for the load: a stop leaves them unread.
        """
        ahead: list[Any] = []
        exhausted = False
        try:
            while not stop.fired and not self.done:
                await _let_senders_run()
                with anyio.CancelScope() as self._reading:
                    if self._stopped:  # stopped during the yield above
                        self._reading.cancel()
                    while not exhausted and len(ahead) < self.batch_size:
                        chunk = await source.next_chunk()
                        if chunk is None:
                            exhausted = True
                        else:
                            ahead += chunk
                self._reading = None
                self.held, ahead = ahead[: self.batch_size], ahead[self.batch_size :]
                self.done = exhausted and not ahead
                await deliver(self.pack())
            if not stop.fired:
                await deliver(self.pack_rest())
        finally:
            if not exhausted:
                with anyio.CancelScope(shield=True):
                    await source.aclose()

    # -- checking and packing ----------------------------------------------------------

    def pack(self) -> Lot:
        """Validate, dedupe and pack the leads read so far (``held``); return the lot."""
        chunk, self.held = self.held, []
        start = self.position
        self.position += len(chunk)
        lot = Lot(read=self.position)
        if self.shard is not None and (start // self.batch_size) % self.shard[1] != self.shard[0]:
            return lot  # another worker's block of the input (chunks are batch_size-aligned)
        lot.taken = len(chunk)
        # A chunk proven valid in one batched pass (dicts, or Leads made WireLeads or wire
        # dicts) skips the lead-by-lead check, which alone names what is wrong and where.
        proven = proven_rows(chunk) if self.normalize is None else None
        rows: Sequence[WireRow]
        if proven is not None:
            rows = proven
            positions = list(range(start, start + len(chunk)))
        else:
            rows, positions, lot.invalid = validate_chunk(chunk, start, self.normalize)
        if self.seen is not None and rows:
            rows, positions = self._dedupe(rows, positions, lot.invalid)
        lot.batches = self.packer.add(rows, positions)
        if self.shard is not None:
            # A shard's blocks are not consecutive: no batch carries leads across two.
            lot.batches += self.packer.finish()
        return self._refused_by_packer(lot)

    def pack_rest(self) -> Lot:
        """Pack the valid leads still held by the packer, at the end of the input."""
        return self._refused_by_packer(Lot(read=self.position, batches=self.packer.finish()))

    def check(self, chunk: list[Any]) -> list[InvalidLead]:
        """The invalid leads of ``chunk`` (the next input positions), in order, as a load has them.

        Validation (and dedupe) first, then the size of each valid lead alone: a lead is
        refused once. The batches are packed and dropped: nothing is held between chunks.
        """
        self.held = chunk
        lot = self.pack()
        invalid = lot.invalid + self.pack_rest().invalid
        invalid.sort(key=lambda lead: lead.position)
        return invalid

    def close(self) -> None:
        """Let go of the numbers had (a temporary file past their memory)."""
        if self.seen is not None:
            self.seen.close()

    def _refused_by_packer(self, lot: Lot) -> Lot:
        if self.packer.invalid:
            lot.invalid += self.packer.invalid
            self.packer.invalid = []
        return lot

    def _dedupe(
        self, rows: Sequence[WireRow], positions: list[int], invalid: list[InvalidLead]
    ) -> tuple[Sequence[WireRow], list[int]]:
        """Refuse, as invalid, the leads whose number this load already had (one lookup)."""
        assert self.seen is not None  # noqa: S101 - only called when deduplicating
        numbers = [row.number if isinstance(row, WireLead) else row["number"] for row in rows]
        fresh = self.seen.add_many(numbers)
        if all(fresh):
            return rows, positions
        kept_rows, kept_positions = [], []
        for row, number, position, new in zip(rows, numbers, positions, fresh, strict=True):
            if new:
                kept_rows.append(row)
                kept_positions.append(position)
            else:
                invalid.append(
                    InvalidLead(
                        position=position,
                        field="number",
                        reason=f"{self.duplicate_reason}: {number}",
                    )
                )
        invalid.sort(key=lambda lead: lead.position)
        return kept_rows, kept_positions
