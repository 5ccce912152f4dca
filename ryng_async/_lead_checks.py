"""Every lead check, before anything is sent.

Leads take two paths. `leads_are_valid` checks a whole chunk of wire-form dicts at once:
the compiled ``_speedups`` module does it in one C loop; where it is not built (or
``RYNG_ASYNC_NO_EXTENSIONS`` is set) its pure-Python twin `python_leads_are_valid` does it
with a few passes of C-level iteration (no per-lead Python bytecode). That is what keeps
validation cheap beside encoding; `wire_leads` does the same for a chunk of `Lead`
objects, made wire dicts first. Only a chunk they cannot vouch for goes lead by lead
through `validate_lead`, the reference rules, which name the field, the value and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from itertools import chain, repeat
from operator import attrgetter, is_not, itemgetter
from typing import Any

from ._compiled import SPEEDUPS
from ._exceptions import ValidationError, preview
from ._models import Lead, WireRow, wire_lead_class

__all__ = [
    "ACCELERATED",
    "LeadColumns",
    "agents_field",
    "check_agents",
    "check_text",
    "lead_columns",
    "leads_are_valid",
    "proven_rows",
    "python_lead_columns",
    "python_leads_are_valid",
    "validate_lead",
    "validate_leads",
    "wire_leads",
]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# One number a line: a whole chunk's numbers are checked by one fullmatch.
_E164_LINES = re.compile(r"(?:\+[1-9][0-9]{6,14}\n)*")
_CUSTOM_FIELD = re.compile(r"customField[1-9][0-9]*")
_NUMBER_RULE = "must be E.164: '+' then 7 to 15 digits, the first not 0"
_MISSING = object()
_AGENTS = repeat("agentsAssigned")
_NOT_THERE = repeat(_MISSING)
_EMPTY = repeat("")
_get_number = itemgetter("number")
_is_present = partial(is_not, _MISSING)
_FIXED_KEYS = frozenset({"number", "agentsAssigned"})
_custom_fields_of = attrgetter("custom_fields")
_agents_of = attrgetter("agents_assigned")
# Agents a Lead may hold for the batch path: to_wire reads them once, without side effects.
_PLAIN_AGENTS = frozenset({type(None), list, tuple})
_LISTED_AGENTS = frozenset({list, tuple})
_NO_AGENTS = {type(None)}
_number_of = attrgetter("number")


def agents_field(agents: object) -> str | None:
    """Return the ``agents`` form field of a sheet upload (comma-joined, or "in-file")."""
    if agents is None:
        return None
    if agents == "in-file":
        return "in-file"
    if isinstance(agents, str) or not isinstance(agents, Sequence):
        raise ValidationError(
            f"must be a list of usernames or 'in-file', got {preview(agents)}", field="agents"
        )
    if not agents:
        raise ValidationError("must name at least one agent, got []", field="agents")
    for index, agent in enumerate(agents):
        if not isinstance(agent, str) or not agent or "," in agent:
            raise ValidationError(
                f"item {index} must be a non-empty username without commas, got {preview(agent)}",
                field="agents",
            )
    return ",".join(agents)


# -- leads ----------------------------------------------------------------------------


def _is_lead_key(key: object) -> bool:
    return key in _FIXED_KEYS or (isinstance(key, str) and bool(_CUSTOM_FIELD.fullmatch(key)))


def python_leads_are_valid(rows: list[Any]) -> bool:
    """Say whether every row is a plain wire-form dict that `validate_lead` would accept.

    False means "not proven", not "invalid": the caller then checks lead by lead. Each
    step below is one C-level pass over the chunk; no Python code runs per lead. The
    compiled `leads_are_valid` answers the same in one loop, some 7x faster.
    """
    if not rows:
        return True
    if set(map(type, rows)) != {dict}:
        return False
    keys = set().union(*rows)
    if not all(map(_is_lead_key, keys)):
        return False
    try:
        numbers = "\n".join(map(_get_number, rows))
    except (KeyError, TypeError):
        return False
    # One line a number: a number with a newline inside would pass as two lines.
    if numbers.count("\n") != len(rows) - 1 or not _E164_LINES.fullmatch(numbers + "\n"):
        return False
    if "agentsAssigned" in keys:
        agent_lists = list(filter(_is_present, map(dict.get, rows, _AGENTS, _NOT_THERE)))
        if set(map(type, agent_lists)) != {list} or not all(agent_lists):
            return False
        agents = list(chain.from_iterable(agent_lists))
        if set(map(type, agents)) != {str} or not all(map(len, agents)):
            return False
    custom = keys - _FIXED_KEYS
    try:
        # str.join refuses anything but strings: one pass checks a custom field's values
        # (the numbers were joined above). Every row holding every key (the usual ETL
        # shape), a column is one itemgetter pass; a row without one, a pass of dict.get.
        try:
            for key in custom:
                "".join(map(itemgetter(key), rows))
        except KeyError:
            for key in custom:
                "".join(map(dict.get, rows, repeat(key), _EMPTY))
    except TypeError:
        return False
    return True


leads_are_valid: Callable[[list[Any]], bool] = (
    python_leads_are_valid if SPEEDUPS is None else SPEEDUPS.leads_are_valid
)
"""Say whether every row is a plain wire-form dict that `validate_lead` would accept.

The compiled check where ``_speedups`` is built, else `python_leads_are_valid`. False
means "not proven", not "invalid": the caller then checks lead by lead.
"""

ACCELERATED = leads_are_valid is not python_leads_are_valid
"""Whether leads are proven by the compiled ``_speedups`` module."""


def proven_rows(rows: list[Any]) -> Sequence[WireRow] | None:
    """Return ``rows`` as a batch holds them if every lead is proven valid, else None.

    Plain wire-form dicts come back as given. A chunk of `Lead` s whose custom fields are
    the same in every lead, and which all name agents or none (the usual ETL chunk), comes
    back as `WireLead` s, checked and built a column at a time; any other chunk of `Lead` s
    as the wire dicts of `wire_leads`. None means "not proven": the caller goes lead by lead.
    """
    if leads_are_valid(rows):
        return rows
    structs = _wire_structs(rows)
    if structs is not None:
        return structs
    return _leads_to_wire(rows)


LeadColumns = tuple[tuple[int, ...], bool, list[list[Any]]]
"""A same-shaped chunk of valid `Lead` s a column at a time: the first lead's custom field
indexes (in its order), whether the leads name agents, and the columns: the numbers, the
agents' lists (a new list a lead) if named, then one column a custom field."""


def python_lead_columns(rows: list[Any], lead_type: type[Lead] = Lead) -> LeadColumns | None:
    """The columns of a same-shaped chunk of valid ``lead_type`` s, or None (not proven).

    The same rules as `python_leads_are_valid`, on columns: each step is one C-level pass.
    The compiled `lead_columns` answers the same in one loop.
    """
    if set(map(type, rows)) != {lead_type}:
        return None
    fields = list(map(_custom_fields_of, rows))
    if set(map(type, fields)) != {dict} or len(set(map(len, fields))) != 1:
        return None
    indexes = tuple(fields[0])  # the first lead's order; every lead has these keys
    # Exact ints, in every lead: True == 1, yet it must stay "customFieldTrue" (refused).
    if set(map(type, chain.from_iterable(fields))) - {int} or min(indexes, default=1) < 1:
        return None  # e.g. customField0 or customFieldTrue: refused lead by lead
    numbers = list(map(_number_of, rows))
    try:
        columns = [list(map(itemgetter(index), fields)) for index in indexes]
        for column in columns:
            "".join(column)  # str.join refuses anything but strings
        text = "\n".join(numbers)
    except (KeyError, TypeError):
        return None
    if text.count("\n") != len(rows) - 1 or not _E164_LINES.fullmatch(text + "\n"):
        return None
    agents = list(map(_agents_of, rows))
    agent_types = set(map(type, agents))
    named = agent_types <= _LISTED_AGENTS
    if named:
        agent_lists = list(map(list, agents))
        listed = list(chain.from_iterable(agent_lists))
        if not all(agent_lists) or set(map(type, listed)) - {str} or not all(map(len, listed)):
            return None
        columns.insert(0, agent_lists)
    elif agent_types != _NO_AGENTS:
        return None
    columns.insert(0, numbers)
    return indexes, named, columns


lead_columns: Callable[[list[Any], type[Lead]], LeadColumns | None] = (
    python_lead_columns if SPEEDUPS is None else SPEEDUPS.lead_columns
)
"""The columns of a same-shaped chunk of valid `Lead` s, or None: compiled where built."""


def _wire_structs(rows: list[Any]) -> Sequence[WireRow] | None:
    """The `WireLead` s of a same-shaped chunk of valid `Lead` s, or None (not proven)."""
    shape = lead_columns(rows, Lead)
    if shape is None:
        return None
    indexes, named, columns = shape
    names = ["agentsAssigned"] if named else []
    names += [f"customField{index}" for index in indexes]
    made = wire_lead_class(tuple(names))
    if made is None:
        return None
    return list(map(made, *columns))


def wire_leads(rows: list[Any]) -> list[dict[str, Any]] | None:
    """Return ``rows`` in wire form if every lead is proven valid, else None.

    Plain wire-form dicts come back as given (`leads_are_valid`); a chunk of `Lead` s comes
    back as their wire dicts, exactly what `validate_lead` returns for each. None means "not
    proven", as for `leads_are_valid`: the caller then goes lead by lead with
    `validate_lead`, which names the field and the input position.
    """
    if leads_are_valid(rows):
        return rows
    return _leads_to_wire(rows)


def _leads_to_wire(rows: list[Any]) -> list[dict[str, Any]] | None:
    if (
        set(map(type, rows)) != {Lead}
        or set(map(type, map(_custom_fields_of, rows))) != {dict}
        or not set(map(type, map(_agents_of, rows))) <= _PLAIN_AGENTS
    ):
        return None
    # The same Lead.to_wire as validate_lead's, then the same batched proof as for dicts.
    wire = list(map(Lead.to_wire, rows))
    return wire if leads_are_valid(wire) else None


def check_text(value: str, field: str, position: int | None = None) -> str:
    """Return ``value`` if it can be encoded as UTF-8 (no lone surrogate); else refuse it."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(
                f"holds a lone surrogate, which is not text and cannot be sent as UTF-8: "
                f"{preview(value)}",
                field=field,
                position=position,
            ) from None
    return value


def check_agents(value: object, field: str, position: int | None) -> list[str]:
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise ValidationError(
            f"must be a list of agent usernames, got {preview(value)}",
            field=field,
            position=position,
        )
    agents = list(value)
    if not agents:
        raise ValidationError(
            "must name at least one agent, got []", field=field, position=position
        )
    for index, agent in enumerate(agents):
        if not isinstance(agent, str) or not agent:
            raise ValidationError(
                f"item {index} must be a non-empty username string, got {preview(agent)}",
                field=field,
                position=position,
            )
        check_text(agent, field, position)
    return agents


def validate_lead(lead: object, position: int | None = None) -> dict[str, Any]:
    """Check one lead (a `Lead` or a wire-form mapping) and return its wire-form dict.

    Raises:
        ValidationError: naming the field, the bad value and the rule.
    """
    if isinstance(lead, Lead):
        # Structs do not check types when built: a Lead may hold anything.
        if not isinstance(lead.custom_fields, Mapping):
            raise ValidationError(
                f"must map field numbers to strings, got {preview(lead.custom_fields)}",
                field="custom_fields",
                position=position,
            )
        try:
            row: Mapping[Any, Any] = lead.to_wire()
        except (AttributeError, TypeError, ValueError) as exc:
            raise ValidationError(
                f"the Lead could not be read: {type(exc).__name__}: {exc}", position=position
            ) from exc
    elif isinstance(lead, Mapping):
        row = lead
    else:
        raise ValidationError(
            f"a lead must be a Lead or a mapping in wire form, got {type(lead).__name__}",
            position=position,
        )
    wire: dict[str, Any] = {}
    for key, value in row.items():
        if key == "number":
            if not isinstance(value, str) or not _E164.fullmatch(value):
                raise ValidationError(
                    f"{_NUMBER_RULE}, got {preview(value)}", field="number", position=position
                )
        elif key == "agentsAssigned":
            value = check_agents(value, "agentsAssigned", position)  # noqa: PLW2901
        elif isinstance(key, str) and _CUSTOM_FIELD.fullmatch(key):
            if not isinstance(value, str):
                raise ValidationError(
                    f"custom field values must be strings, got {preview(value)}",
                    field=key,
                    position=position,
                )
            check_text(value, key, position)
        else:
            raise ValidationError(
                f"unknown lead field {preview(key)}: expected 'number', 'agentsAssigned' "
                "or 'customField<N>' with N >= 1",
                field=str(key),
                position=position,
            )
        wire[key] = value
    if "number" not in wire:
        raise ValidationError("is required", field="number", position=position)
    return wire


def validate_leads(leads: Iterable[object]) -> list[dict[str, Any]]:
    """Validate the leads of a single append; the first bad one raises `ValidationError`."""
    if not isinstance(leads, Iterable) or isinstance(leads, str | bytes | Mapping):
        raise ValidationError(
            f"must be an iterable of leads, got {type(leads).__name__}", field="leads"
        )
    rows: list[Any] = leads if isinstance(leads, list) else list(leads)
    if not rows:
        raise ValidationError("an append needs at least one lead", field="leads")
    proven = wire_leads(rows)
    if proven is not None:
        return proven
    return [validate_lead(row, position) for position, row in enumerate(rows)]
