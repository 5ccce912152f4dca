"""CSV rows into lead dicts: each row's picked cells under wire keys, the number stripped.

`leads_maker` gives the function a CSV source turns each chunk of rows with: the compiled
``rows_to_dicts`` where ``_speedups`` is built (one loop, no Python code a row), else its
pure-Python twin, `lead_maker`'s one dict display a row mapped over the chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .._compiled import SPEEDUPS

__all__ = ["lead_maker", "leads_maker", "python_leads_maker"]

_WIRE_KEY = re.compile(r"number|agentsAssigned|customField[0-9]+")


def lead_maker(keys: tuple[str, ...], indices: tuple[int, ...]) -> Callable[[list[str]], Any]:
    """A row's lead: its cells at ``indices`` under ``keys``, the number stripped of spaces.

    One dict display made per file, about 2x faster a row than ``dict(zip(keys, cells))``;
    its source holds only the SDK's own wire keys and integers, never the file's text.
    """
    _check_keys(keys)
    items = ", ".join(
        f"{key!r}: row[{index:d}]{'.strip()' if key == 'number' else ''}"
        for key, index in zip(keys, indices, strict=True)
    )
    make: Callable[[list[str]], Any] = eval(f"lambda row: {{{items}}}")  # noqa: S307
    return make


def python_leads_maker(
    keys: tuple[str, ...], indices: tuple[int, ...]
) -> Callable[[list[list[str]]], list[dict[str, Any]]]:
    """The leads of a chunk of rows, `lead_maker`'s display mapped over it (the twin)."""
    make = lead_maker(keys, indices)
    return lambda rows: list(map(make, rows))


def leads_maker(
    keys: tuple[str, ...], indices: tuple[int, ...]
) -> Callable[[list[list[str]]], list[dict[str, Any]]]:
    """The leads of a chunk of rows, one a row, as `lead_maker` makes each.

    Compiled where ``_speedups`` is built (`python_leads_maker` elsewhere); the same
    dicts, keys in the same order, the number stripped by ``str.strip()``.
    """
    if SPEEDUPS is None:
        return python_leads_maker(keys, indices)
    _check_keys(keys)
    if len(indices) != len(keys):
        raise ValueError(f"{len(keys)} keys but {len(indices)} indices")
    rows_to_dicts = SPEEDUPS.rows_to_dicts
    keys, indices = tuple(keys), tuple(indices)
    strip_at = keys.index("number") if "number" in keys else -1
    return lambda rows: rows_to_dicts(rows, keys, indices, strip_at)


def _check_keys(keys: tuple[str, ...]) -> None:
    if not all(map(_WIRE_KEY.fullmatch, keys)):  # guards the source against a change
        raise AssertionError(f"not wire keys: {keys!r}")
