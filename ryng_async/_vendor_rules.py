"""What Ryng's Append Campaign API accepts, for `ryng_async.testing.FakeRyngServer`.

The fake server's own rules for the leads of a JSON body and the rows of a CSV sheet,
written from the vendor's reference and the public contract, not taken from the SDK's
validation (``_validate``): a bug there cannot then pass on both sides. They are the
independent oracle the SDK's validation is tested against.
"""

from __future__ import annotations

import csv
import io
import re
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

__all__ = ["csv_rows", "first_bad_lead", "leads_pass"]

# re.ASCII: \d must not match other scripts' digits ("+٩١..." is no phone number).
_NUMBER = re.compile(r"\+[1-9]\d{6,14}", re.ASCII)
_CUSTOM_FIELD = re.compile(r"customField[1-9]\d*", re.ASCII)
# Most leads use low-numbered custom fields: a set lookup spares them the regex.
_COMMON_CUSTOM_FIELDS = frozenset(f"customField{n}" for n in range(1, 101))
_get_number = itemgetter("number")
_ANY_AGENTS = ["-"]  # stands in for a missing agentsAssigned, which is allowed
_NUMBER_RULE = "must be a string in E.164 form ('+' then 7 to 15 digits, the first not 0)"


def leads_pass(leads: list[dict[str, Any]]) -> bool:
    """Say whether every lead passes `first_bad_lead`'s rules, checking the body at once.

    Each step is one pass in C over the whole body (map, set, chain), not Python code per
    lead: every request's leads go through here, so its cost is the server's. False means
    "look lead by lead", where `first_bad_lead` finds the bad one and says why.
    """
    try:
        if not all(map(_NUMBER.fullmatch, map(_get_number, leads))):
            return False
    except (KeyError, TypeError):  # a lead without a number, or a number not a string
        return False
    keys = set().union(*leads)
    keys.discard("number")
    has_agents = "agentsAssigned" in keys
    keys.discard("agentsAssigned")
    for key in keys:  # each distinct key once, not once a lead
        if key not in _COMMON_CUSTOM_FIELDS and not _CUSTOM_FIELD.fullmatch(key):
            return False
    if not has_agents:  # then every value, numbers included, must be a string
        return set(map(type, chain.from_iterable(map(dict.values, leads)))) <= {str}
    agent_lists = list(map(dict.get, leads, repeat("agentsAssigned"), repeat(_ANY_AGENTS)))
    if set(map(type, agent_lists)) != {list} or not all(agent_lists):
        return False
    agents = list(chain.from_iterable(agent_lists))
    if set(map(type, agents)) != {str} or not all(agents):  # an empty string is falsy
        return False
    return all(
        set(map(type, map(dict.get, leads, repeat(key), repeat("")))) == {str} for key in keys
    )


def first_bad_lead(leads: list[dict[str, Any]]) -> tuple[int, str, str] | None:
    """Find the first lead the vendor's rules refuse: its position, the field and why.

    The rules for each object of ``jsonData``: ``number`` is required, a string in E.164
    form; ``agentsAssigned`` is an array of at least one agent username (non-empty
    strings); ``customField<N>`` (N >= 1, no leading zero) holds a string; there is no
    other field. Returns None when every lead passes. The reference for `leads_pass`.
    """
    match_number = _NUMBER.fullmatch
    for position, lead in enumerate(leads):
        if "number" not in lead:
            return position, "number", "is required"
        number = lead["number"]
        if not isinstance(number, str) or match_number(number) is None:
            return position, "number", f"{_NUMBER_RULE}, got {_preview(number)}"
        for key, value in lead.items():
            if key == "number":
                continue
            if key == "agentsAssigned":
                if not isinstance(value, list) or not value:
                    return (
                        position,
                        key,
                        f"must be a non-empty array of usernames, got {_preview(value)}",
                    )
                for agent in value:
                    if not isinstance(agent, str) or not agent:
                        return (
                            position,
                            key,
                            f"usernames must be non-empty strings, got {_preview(agent)}",
                        )
            elif key in _COMMON_CUSTOM_FIELDS or _CUSTOM_FIELD.fullmatch(key):
                if not isinstance(value, str):
                    return position, key, f"must be a string, got {_preview(value)}"
            else:
                return (
                    position,
                    key,
                    "is not a lead field (number, agentsAssigned, customField<N> with N >= 1)",
                )
    return None


def _preview(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for an answer's message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def csv_rows(sheet: bytes) -> int:
    """Count the data rows of a CSV sheet (its first row is the header).

    Raises:
        ValueError: the sheet is not UTF-8 text, or holds a NUL byte (a binary file).
        csv.Error: the text is not CSV.
    """
    text = sheet.decode("utf-8-sig")
    if "\x00" in text:
        raise ValueError("it holds NUL bytes (a binary file?)")
    rows = csv.reader(io.StringIO(text, newline=""), strict=True)
    return max(sum(1 for row in rows if any(cell.strip() for cell in row)) - 1, 0)
