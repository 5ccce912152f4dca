"""Deterministic splitting of valid leads into request bodies, by count and by bytes.

Pure and I/O-free. A batch takes leads greedily in input order while it holds at most
``batch_size`` leads and its whole request body is at most ``max_batch_bytes``; so the same
lead sequence always gives the same batches, however the input was chunked when read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from ._models import AppendRequest, WireRow, wire_dict
from ._report import InvalidLead

__all__ = ["Batch", "BodyTemplate", "Packer", "runs"]

_encoder = msgspec.json.Encoder()
_MARKER: list[dict[str, Any]] = [{}]
_TAIL = b"[{}]}}"


class BodyTemplate:
    """The encoded envelope of a request, with the leads array spliced in per batch.

    The options are encoded once, around a marker lead; ``jsonData`` is the last field of
    the last object, so a body is ``prefix + encoded_leads_array + b"}}"``.
    """

    __slots__ = ("overhead", "prefix", "suffix")

    def __init__(self, request: AppendRequest) -> None:
        marked = msgspec.structs.replace(
            request,
            customer_data=msgspec.structs.replace(request.customer_data, json_data=_MARKER),
        )
        empty = _encoder.encode(marked)
        if not empty.endswith(_TAIL):  # pragma: no cover - guards the struct field order
            raise AssertionError("jsonData must be the last field of the request body")
        self.prefix = empty[: -len(_TAIL)]
        self.suffix = b"}}"
        self.overhead = len(self.prefix) + len(self.suffix)

    def body(self, rows: Sequence[WireRow]) -> bytearray:
        """Encode ``rows`` straight into a full request body (one copy, no joins)."""
        buffer = bytearray(self.prefix)
        _encoder.encode_into(rows, buffer, len(buffer))
        buffer += self.suffix
        return buffer


def runs(positions: list[int]) -> tuple[tuple[int, int], ...]:
    """The ``(start, count)`` runs of consecutive input positions in ``positions``.

    ``positions`` is increasing; ``[0, 1, 3, 4]`` gives ``((0, 2), (3, 2))``.
    """
    if not positions:
        return ()
    first = positions[0]
    if positions[-1] - first + 1 == len(positions):
        return ((first, len(positions)),)  # the common case, found without a scan
    out: list[tuple[int, int]] = []
    start = previous = first
    for position in positions[1:]:
        if position != previous + 1:
            out.append((start, previous - start + 1))
            start = position
        previous = position
    out.append((start, previous - start + 1))
    return tuple(out)


@dataclass(slots=True)
class Batch:
    """One request's worth of leads.

    Its leads' input positions are ``positions``, one per row: a part of a batch (a split
    half) is ``Batch(index, positions[i], positions[i:j], rows[i:j], body)``, and its
    ranges follow from its own positions.

    Attributes:
        index: the batch's number in the load, from 0.
        start: input position of its first lead.
        positions: input position of each lead, increasing (invalid and deduplicated
            leads leave gaps: `ranges` names them exactly).
        rows: the leads in wire form, as sent (dicts, or `WireLead` s; see `wire_dict`).
        body: the encoded request body.
    """

    index: int
    start: int
    positions: list[int]
    rows: list[WireRow]
    body: bytearray

    @property
    def count(self) -> int:
        """Number of leads in the batch."""
        return len(self.rows)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """Its leads' input positions as ``(start, count)`` runs, in input order."""
        return runs(self.positions)


class Packer:
    """Cuts a stream of valid leads into `Batch` es, greedily and deterministically.

    Feed it with `add`, take finished batches from its return value, and `finish` at the
    end of the input. A lead whose body alone would exceed ``max_batch_bytes`` is returned
    as an `InvalidLead`, never sent.
    """

    def __init__(self, template: BodyTemplate, batch_size: int, max_batch_bytes: int) -> None:
        self._template = template
        self._batch_size = batch_size
        self._max_bytes = max_batch_bytes
        self._rows: list[WireRow] = []
        self._positions: list[int] = []
        self._next_index = 0
        self.invalid: list[InvalidLead] = []

    @property
    def pending(self) -> int:
        """Leads held, not yet in a batch."""
        return len(self._rows)

    def add(self, rows: Sequence[WireRow], positions: list[int]) -> list[Batch]:
        """Take valid leads; return every batch now full."""
        self._rows.extend(rows)
        self._positions.extend(positions)
        batches: list[Batch] = []
        while len(self._rows) >= self._batch_size:
            self._cut(batches)
        return batches

    def finish(self) -> list[Batch]:
        """Return the batches of the leads still held, at the end of the input."""
        batches: list[Batch] = []
        while self._rows:
            self._cut(batches)
        return batches

    def _cut(self, out: list[Batch]) -> None:
        whole = len(self._rows) <= self._batch_size  # all held leads, most often one chunk
        rows = self._rows if whole else self._rows[: self._batch_size]
        try:
            body = self._template.body(rows)
        except UnicodeEncodeError:
            self._drop_unencodable(len(rows))
            return
        count = len(rows)
        if len(body) > self._max_bytes:
            count, body = self._fit(rows)
        if count == 0:
            self.invalid.append(
                InvalidLead(
                    position=self._positions[0],
                    field=None,
                    reason=f"the lead alone makes a request body larger than "
                    f"max_batch_bytes={self._max_bytes}",
                )
            )
            del self._rows[0], self._positions[0]
            return
        if whole and count == len(rows):
            # The batch takes the held lists as they are: no copy of its rows a request.
            positions, self._rows, self._positions = self._positions, [], []
        else:
            positions, rows = self._positions[:count], rows[:count]
            del self._rows[:count], self._positions[:count]
        out.append(Batch(self._next_index, positions[0], positions, rows, body))
        self._next_index += 1

    def _drop_unencodable(self, count: int) -> None:
        """Refuse, as invalid, the leads among the next ``count`` that are not UTF-8 text.

        The batched validity check does not look for lone surrogates; the encoder does.
        """
        kept_rows: list[WireRow] = []
        kept_positions: list[int] = []
        for row, position in zip(self._rows[:count], self._positions[:count], strict=True):
            try:
                _encoder.encode(row)
            except UnicodeEncodeError:
                field = next(
                    (key for key, value in wire_dict(row).items() if not _is_utf8(value)), None
                )
                self.invalid.append(
                    InvalidLead(
                        position=position,
                        field=field,
                        reason="holds a lone surrogate, which is not text and cannot be "
                        "sent as UTF-8",
                    )
                )
            else:
                kept_rows.append(row)
                kept_positions.append(position)
        self._rows[:count] = kept_rows
        self._positions[:count] = kept_positions

    def _fit(self, rows: list[WireRow]) -> tuple[int, bytearray]:
        """Return how many leading rows fit in ``max_batch_bytes``, and their body."""
        size = self._template.overhead + 2 - 1  # brackets; the first lead has no comma
        count = 0
        for encoded in map(_encoder.encode, rows):
            size += len(encoded) + 1
            if size > self._max_bytes:
                break
            count += 1
        return count, (self._template.body(rows[:count]) if count else bytearray())


def _is_utf8(value: object) -> bool:
    try:
        _encoder.encode(value)
    except UnicodeEncodeError:
        return False
    return True
