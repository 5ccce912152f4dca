"""Tabular leads: which column is the number, which the agents, which the custom fields.

The one home of the column mapping shared by every tabular source (a CSV file, a pandas or
polars DataFrame, an Arrow table): the ``number`` column (named case-insensitively) holds
the phone numbers, an optional ``agentsAssigned`` column holds agent usernames separated
by ``;`` or ``|``, and every other column is a custom field, numbered in column order, its
header sent as its ``customField<N>Name`` (all of them, or those a caller chose). No
dependency beyond the standard library.

Whitespace around a number is no part of it (a spreadsheet leaves spaces there): every
source drops it as ``str.strip()`` does, the characters of `NUMBER_SPACES`; other cells are
sent as read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from ._exceptions import ValidationError

__all__ = [
    "AGENT_SEPARATORS",
    "AGENT_SEPARATORS_PATTERN",
    "NUMBER_SPACES",
    "ColumnMapping",
    "custom_field_names_from",
    "map_columns",
    "split_agents",
]

AGENT_SEPARATORS = re.compile(r"\s*[;|]\s*")
"""Between agent usernames in one cell: ``;`` or ``|``, spaces around them ignored."""
AGENT_SEPARATORS_PATTERN = AGENT_SEPARATORS.pattern
NUMBER_SPACES = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What is dropped around a number: the characters ``str.strip()`` drops (``str.isspace``),
spelled out for the libraries whose own whitespace differs (polars keeps ``\\x1c``-``\\x1f``)."""


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Where each column of a table goes in a wire-form lead.

    Attributes:
        keys: the wire-form key of each column sent, in column order (``"number"``,
            ``"agentsAssigned"`` or ``"customField<N>"``).
        indices: the column (0-based) each of ``keys`` is read from: every column,
            unless custom fields were chosen or left out.
        number_index: the column of phone numbers.
        agents_index: the column of agent usernames, or None.
        custom_field_names: ``{"customField<N>Name": header}`` for the custom-field
            columns sent, or None if there are none.
    """

    keys: tuple[str, ...]
    indices: tuple[int, ...]
    number_index: int
    agents_index: int | None
    custom_field_names: dict[str, str] | None

    @property
    def every_column(self) -> bool:
        """Every column of the table is sent (no custom field chosen or left out)."""
        return self.indices == tuple(range(len(self.indices)))


def _option(name: str, cli: bool) -> str:
    """How the caller's user spells an option: ``--number-column`` or ``number_column=``."""
    return f"--{name.replace('_', '-')}" if cli else f"{name}="


def _listing(header: Sequence[str]) -> str:
    return ", ".join(repr(title) for title in header) or "none"


def _find(
    header: Sequence[str], wanted: str, *, required: bool, where: str | None, cli: bool
) -> int | None:
    key = wanted.strip().casefold()
    matches = [i for i, title in enumerate(header) if title.strip().casefold() == key]
    if len(matches) > 1:
        subject = (
            f"{where} has {len(matches)} columns named"
            if where
            else f"{len(matches)} columns are named"
        )
        raise ValidationError(f"{subject} {wanted!r} (case-insensitively); rename all but one")
    if matches:
        return matches[0]
    if not required:
        return None
    raise ValidationError(
        f"no {wanted!r} column{f' in {where}' if where else ''}; the columns are: "
        f"{_listing(header)}. Name the column of phone numbers with "
        f"{_option('number_column', cli)}"
    )


def _chosen(
    titles: list[str],
    names: Collection[str],
    *,
    option: str,
    header: Sequence[str],
    where: str | None,
) -> set[int]:
    """The columns ``names`` name (case-insensitively), each name matching at least one."""
    if isinstance(names, str):
        raise ValidationError(f"{option} must be a list of column names, got the string {names!r}")
    folded = [title.casefold() for title in titles]
    chosen: set[int] = set()
    for name in names:
        key = name.strip().casefold()
        found = {i for i, title in enumerate(folded) if title == key}
        if not found:
            raise ValidationError(
                f"{option} names {name!r}: no such column{f' in {where}' if where else ''}; "
                f"the columns are: {_listing(header)}"
            )
        chosen |= found
    return chosen


def map_columns(
    header: Sequence[str],
    *,
    number_column: str = "number",
    agents_column: str | None = "agentsAssigned",
    columns: Collection[str] | None = None,
    exclude_columns: Collection[str] | None = None,
    where: str | None = None,
    cli: bool = False,
) -> ColumnMapping:
    """Map a table's column headers to wire-form keys, as the CLI maps a CSV header.

    Headers are matched case-insensitively, spaces around them ignored. A custom field
    with an empty header is named ``"column <N>"`` (its 1-based column number), and can
    be chosen by that name.

    Args:
        header: the column headers, in column order.
        number_column: the header of the phone numbers column (required).
        agents_column: the header of the agent usernames column, if there is one (None:
            no agents column, every other column is a custom field).
        columns: send only these custom-field columns (the number and agents columns
            are always sent, named here or not).
        exclude_columns: send every custom-field column but these.
        where: where the header is, for the errors (``"the header (line 1)"``).
        cli: name the options in the errors as the command line spells them
            (``--number-column``) rather than as keyword arguments.

    Raises:
        ValidationError: no number column, two columns with the number's or the
            agents' header, a name in ``columns`` or ``exclude_columns`` that is no
            column, ``exclude_columns`` naming the number or agents column, or both
            ``columns`` and ``exclude_columns`` given.
    """
    number_index = _find(header, number_column, required=True, where=where, cli=cli)
    agents_index = (
        None
        if agents_column is None
        else _find(header, agents_column, required=False, where=where, cli=cli)
    )
    assert number_index is not None  # noqa: S101 - required=True never returns None
    fixed = {number_index: "number"}
    if agents_index is not None:
        fixed[agents_index] = "agentsAssigned"
    titles = [title.strip() or f"column {index + 1}" for index, title in enumerate(header)]
    sent = set(range(len(header)))
    if columns is not None and exclude_columns is not None:
        raise ValidationError(
            f"give {_option('columns', cli)} or {_option('exclude_columns', cli)}, not both"
        )
    if columns is not None:
        option = _option("columns", cli)
        sent = _chosen(titles, columns, option=option, header=header, where=where)
        sent |= set(fixed)
    elif exclude_columns is not None:
        option = _option("exclude_columns", cli)
        left_out = _chosen(titles, exclude_columns, option=option, header=header, where=where)
        if left_out & set(fixed):
            index = min(left_out & set(fixed))
            raise ValidationError(
                f"{option} names {header[index]!r}, the {fixed[index]} column: it is always "
                "sent; only custom-field columns can be left out"
            )
        sent -= left_out
    keys: list[str] = []
    indices: list[int] = []
    names: dict[str, str] = {}
    for index in sorted(sent):
        if index in fixed:
            keys.append(fixed[index])
        else:
            field = f"customField{len(names) + 1}"
            keys.append(field)
            names[f"{field}Name"] = titles[index]
        indices.append(index)
    return ColumnMapping(tuple(keys), tuple(indices), number_index, agents_index, names or None)


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
