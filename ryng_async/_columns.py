"""Tabular leads: which column is the number, which the agents, which the custom fields.

The one home of the column mapping shared by every tabular source (a CSV file, a pandas or
polars DataFrame, an Arrow table): the ``number`` column (named case-insensitively) holds
the phone numbers, an optional ``agentsAssigned`` column holds agent usernames separated
by ``;`` or ``|``, and every other column is a custom field, numbered in column order, its
header sent as its ``customField<N>Name``. No dependency beyond the standard library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._exceptions import ValidationError

__all__ = [
    "AGENT_SEPARATORS",
    "AGENT_SEPARATORS_PATTERN",
    "ColumnMapping",
    "custom_field_names_from",
    "map_columns",
    "split_agents",
]

AGENT_SEPARATORS = re.compile(r"\s*[;|]\s*")
"""Between agent usernames in one cell: ``;`` or ``|``, spaces around them ignored."""
AGENT_SEPARATORS_PATTERN = AGENT_SEPARATORS.pattern


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Where each column of a table goes in a wire-form lead.

    Attributes:
        keys: the wire-form key of each column, in column order (``"number"``,
            ``"agentsAssigned"`` or ``"customField<N>"``).
        number_index: the column of phone numbers.
        agents_index: the column of agent usernames, or None.
        custom_field_names: ``{"customField<N>Name": header}`` for the custom-field
            columns, or None if there are none.
    """

    keys: tuple[str, ...]
    number_index: int
    agents_index: int | None
    custom_field_names: dict[str, str] | None

    @property
    def custom_fields(self) -> list[tuple[int, str]]:
        """``(column index, wire key)`` of every custom-field column, in column order."""
        return [
            (index, key)
            for index, key in enumerate(self.keys)
            if index not in (self.number_index, self.agents_index)
        ]


def _find(header: Sequence[str], wanted: str, *, required: bool, option: str) -> int | None:
    key = wanted.strip().casefold()
    matches = [i for i, title in enumerate(header) if title.strip().casefold() == key]
    if len(matches) > 1:
        raise ValidationError(
            f"{len(matches)} columns are named {wanted!r} (case-insensitively); rename all but one"
        )
    if matches:
        return matches[0]
    if not required:
        return None
    found = ", ".join(repr(title) for title in header) or "none"
    raise ValidationError(
        f"no {wanted!r} column; the columns are: {found}. Name the column of phone "
        f"numbers with {option}"
    )


def map_columns(
    header: Sequence[str],
    *,
    number_column: str = "number",
    agents_column: str | None = "agentsAssigned",
    number_option: str = "number_column=",
) -> ColumnMapping:
    """Map a table's column headers to wire-form keys, as the CLI maps a CSV header.

    Headers are matched case-insensitively, spaces around them ignored. A custom field
    with an empty header is named ``"column <N>"`` (its 1-based column number).

    Args:
        header: the column headers, in column order.
        number_column: the header of the phone numbers column (required).
        agents_column: the header of the agent usernames column, if there is one (None:
            no agents column, every other column is a custom field).
        number_option: how the caller's user names the number column (for the error).

    Raises:
        ValidationError: no number column, or two columns with the number's or the
            agents' header.
    """
    number_index = _find(header, number_column, required=True, option=number_option)
    agents_index = (
        None
        if agents_column is None
        else _find(header, agents_column, required=False, option=number_option)
    )
    keys: list[str] = []
    names: dict[str, str] = {}
    for index, title in enumerate(header):
        if index == number_index:
            keys.append("number")
        elif index == agents_index:
            keys.append("agentsAssigned")
        else:
            field = f"customField{len(names) + 1}"
            keys.append(field)
            names[f"{field}Name"] = title.strip() or f"column {index + 1}"
    assert number_index is not None  # noqa: S101 - required=True never returns None
    return ColumnMapping(tuple(keys), number_index, agents_index, names or None)


def split_agents(cell: str) -> list[str] | None:
    """Split one agents cell into usernames; None for an empty cell (no agents given)."""
    cell = cell.strip()
    return AGENT_SEPARATORS.split(cell) if cell else None


def custom_field_names_from(
    names: Mapping[str, str] | Sequence[str] | None,
) -> dict[str, str] | None:
    """Turn the caller's custom field names into ``customFieldNames``.

    A mapping is taken as is (``{"customField1Name": "Name"}``); a sequence names the
    custom fields in order (``["Name", "City"]``); None or empty gives None.

    Raises:
        ValidationError: a bare string (a sequence of characters is surely a mistake).
    """
    if names is None:
        return None
    if isinstance(names, str):
        raise ValidationError(
            f"custom_field_names must be a mapping or a list of names, got the string {names!r}"
        )
    if isinstance(names, Mapping):
        return dict(names) or None
    return {f"customField{i}Name": name for i, name in enumerate(names, 1)} or None
