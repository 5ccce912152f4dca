"""A lead file's rows besides leads: a rejected row, a row's line, an input error.

`strip_numbers` strips a JSON Lines chunk's numbers as the CSV reader strips its cells.
`LineMap` maps input positions (the SDK's ``lead #N``, from 0) to file line numbers; it
stores only the places where ``line - position`` changes (the header, a blank line, a
quoted field spanning lines), so a regular file of any length costs one entry and a row's
line is found by bisection.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from itertools import compress
from operator import is_not, itemgetter
from typing import Any

from .. import RyngError

__all__ = ["InputError", "LineMap", "RejectedRow", "strip_numbers"]

_number_of = itemgetter("number")


class InputError(RyngError):
    """The input cannot be read as a lead file (exit 2); the message names where."""


class RejectedRow:
    """A row that could not become a lead, handed to the SDK in its place.

    The SDK counts it as an invalid lead at its position (it is not a mapping); the
    command reports ``field`` and ``reason`` instead of the SDK's generic reason.
    """

    __slots__ = ("field", "reason")

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason

    def __repr__(self) -> str:
        return f"RejectedRow(field={self.field!r}, reason={self.reason!r})"


class LineMap:
    """Maps input positions to the line each row starts on, in compact arrays.

    ``line(p) = line_i + (p - position_i)`` for the last mark ``i`` at or before ``p``:
    a mark is stored only where that relation changes.
    """

    __slots__ = ("_lines", "_offset", "_positions")

    def __init__(self) -> None:
        self._positions = array("q")
        self._lines = array("q")
        self._offset: int | None = None

    def __len__(self) -> int:
        return len(self._positions)

    def note(self, position: int, line: int) -> None:
        """Record that the row at ``position`` starts on ``line`` (in position order)."""
        if line - position != self._offset:
            self._offset = line - position
            self._positions.append(position)
            self._lines.append(line)

    def line(self, position: int) -> int | None:
        """The line the row at ``position`` starts on, or None before any row."""
        index = bisect_right(self._positions, position) - 1
        if index < 0:
            return None
        return self._lines[index] + position - self._positions[index]


def strip_numbers(leads: list[Any]) -> None:
    """Drop whitespace around each lead's ``"number"`` string, as from a CSV's number cell.

    Batched: the numbers are taken, stripped and compared in C (``str.strip`` returns an
    unchanged string itself), and only a changed one is written back in Python. A chunk
    with a lead without a string number, or a rejected row, is walked lead by lead.
    """
    try:
        numbers = list(map(_number_of, leads))
        stripped = list(map(str.strip, numbers))
    except (KeyError, TypeError):  # no number, not a string, not a mapping
        pass
    else:
        if stripped != numbers:
            for index in compress(range(len(leads)), map(is_not, stripped, numbers)):
                leads[index]["number"] = stripped[index]
        return
    for lead in leads:
        if type(lead) is dict:
            number = lead.get("number")
            if type(number) is str:
                lead["number"] = number.strip()
