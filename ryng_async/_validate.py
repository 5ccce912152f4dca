"""Validation of leads and append options, before anything is sent.

Leads take two paths. `leads_are_valid` checks a whole chunk of wire-form dicts with a
few passes of C-level iteration (no per-lead Python bytecode), which is what keeps
validation cheap beside encoding. Only a chunk it cannot vouch for goes lead by lead
through `validate_lead`, the reference rules, which name the field, the value and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from itertools import chain, repeat
from operator import is_not, itemgetter
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._exceptions import ValidationError, preview
from ._models import AgentMapping, AppendRequest, CustomerData, Lead

__all__ = [
    "InvalidLead",
    "build_request",
    "leads_are_valid",
    "validate_lead",
    "validate_leads",
]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
# One number a line: a whole chunk's numbers are checked by one fullmatch.
_E164_LINES = re.compile(r"(?:\+[1-9][0-9]{6,14}\n)*")
_CUSTOM_FIELD = re.compile(r"customField[1-9][0-9]*")
_CUSTOM_FIELD_NAME = re.compile(r"customField[1-9][0-9]*Name")
_NUMBER_RULE = "must be E.164: '+' then 7 to 15 digits, the first not 0"
_MISSING = object()
_AGENTS = repeat("agentsAssigned")
_NOT_THERE = repeat(_MISSING)
_EMPTY = repeat("")
_get_number = itemgetter("number")
_is_present = partial(is_not, _MISSING)
_FIXED_KEYS = frozenset({"number", "agentsAssigned"})


class InvalidLead(msgspec.Struct, frozen=True, kw_only=True):
    """A lead refused by validation in a bulk load.

    Attributes:
        position: the lead's position in the input (0 for the first lead read).
        field: the offending field in wire form, or None if the lead itself is wrong.
        reason: the rule that failed and the bad value.
    """

    position: int
    field: str | None
    reason: str


def _is_lead_key(key: object) -> bool:
    return key in _FIXED_KEYS or (isinstance(key, str) and bool(_CUSTOM_FIELD.fullmatch(key)))


def leads_are_valid(rows: list[Any]) -> bool:
    """Say whether every row is a plain wire-form dict that `validate_lead` would accept.

    False means "not proven", not "invalid": the caller then checks lead by lead. Each
    step below is one C-level pass over the chunk; no Python code runs per lead.
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
    if "agentsAssigned" not in keys:
        try:
            # str.join refuses anything but strings: one pass checks every value.
            "".join(chain.from_iterable(map(dict.values, rows)))
        except TypeError:
            return False
        return True
    agent_lists = list(filter(_is_present, map(dict.get, rows, _AGENTS, _NOT_THERE)))
    if set(map(type, agent_lists)) != {list} or not all(agent_lists):
        return False
    agents = list(chain.from_iterable(agent_lists))
    if set(map(type, agents)) != {str} or not all(map(len, agents)):
        return False
    try:
        for key in keys - {"number", "agentsAssigned"}:
            "".join(map(dict.get, rows, repeat(key), _EMPTY))
    except TypeError:
        return False
    return True


def _check_agents(value: object, field: str, position: int | None) -> list[str]:
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
            value = _check_agents(value, "agentsAssigned", position)  # noqa: PLW2901
        elif isinstance(key, str) and _CUSTOM_FIELD.fullmatch(key):
            if not isinstance(value, str):
                raise ValidationError(
                    f"custom field values must be strings, got {preview(value)}",
                    field=key,
                    position=position,
                )
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
    if leads_are_valid(rows):
        return rows
    return [validate_lead(row, position) for position, row in enumerate(rows)]


def _check_url(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"must be a URL string, got {preview(value)}", field=field)
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValidationError(f"must be an absolute http(s) URL, got {preview(value)}", field=field)
    return value


def build_request(
    *,
    name: str | None = None,
    agent_mapping: AgentMapping | str | None = None,
    agents: Sequence[str] | None = None,
    custom_field_names: Mapping[str, str] | None = None,
    terminal_callback_url: str | None = None,
    connect_callback_url: str | None = None,
) -> AppendRequest:
    """Validate the campaign options of an append and return its envelope (no leads yet).

    Raises:
        ValidationError: naming the option in wire form and the rule it broke.
    """
    if name is not None and not isinstance(name, str):
        raise ValidationError(f"must be a string, got {preview(name)}", field="name")
    mapping: str | None = None
    if agent_mapping is not None:
        try:
            mapping = AgentMapping(agent_mapping).value
        except ValueError:
            choices = ", ".join(repr(m.value) for m in AgentMapping)
            raise ValidationError(
                f"must be one of {choices}, got {preview(agent_mapping)}", field="agentMapping"
            ) from None
    agent_list = None if agents is None else _check_agents(agents, "agents", None)
    if mapping == AgentMapping.GLOBAL and agent_list is None:
        raise ValidationError(
            "agent_mapping='global' needs a non-empty agents list", field="agents"
        )
    if agent_list is not None and mapping is None:
        raise ValidationError(
            "agents were given without agent_mapping; Ryng would ignore them "
            "(pass agent_mapping='global')",
            field="agents",
        )
    names: dict[str, str] | None = None
    if custom_field_names is not None:
        if not isinstance(custom_field_names, Mapping):
            raise ValidationError(
                f"must be a mapping, got {preview(custom_field_names)}", field="customFieldNames"
            )
        names = {}
        for key, value in custom_field_names.items():
            if not isinstance(key, str) or not _CUSTOM_FIELD_NAME.fullmatch(key):
                raise ValidationError(
                    f"keys must look like 'customField<N>Name' with N >= 1, got {preview(key)}",
                    field="customFieldNames",
                )
            if not isinstance(value, str):
                raise ValidationError(
                    f"values must be strings, got {preview(value)}", field=f"customFieldNames.{key}"
                )
            names[key] = value
    return AppendRequest(
        name=name,
        agent_mapping=mapping,
        agents=agent_list,
        custom_field_names=names,
        customer_data=CustomerData(
            terminal_callback_url=None
            if terminal_callback_url is None
            else _check_url(terminal_callback_url, "terminalCallbackUrl"),
            connect_callback_url=None
            if connect_callback_url is None
            else _check_url(connect_callback_url, "connectCallbackUrl"),
        ),
    )
