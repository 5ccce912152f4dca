"""The batched proofs of a chunk of leads, both ways, checked to agree.

Tests call `leads_are_valid` (wire-form dicts) and `lead_columns` (`Lead` objects) from
here: each asks the pure-Python passes and, where it is built, the compiled ``_speedups``
check, asserts that they agree and returns the answer.
The compiled one may only be stricter, and only for a lone surrogate (see _speedups.c).
"""

from __future__ import annotations

from typing import Any

from ryng_async import Lead
from ryng_async._lead_checks import LeadColumns, python_lead_columns, python_leads_are_valid

try:
    from ryng_async._speedups import leads_are_valid as compiled_leads_are_valid
except ImportError:  # pragma: no cover - built without a C compiler
    compiled_leads_are_valid = None


def holds_lone_surrogate(value: object) -> bool:
    """Whether a string anywhere in ``value`` (rows, dicts, lists) holds a lone surrogate."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(holds_lone_surrogate(k) or holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(holds_lone_surrogate(item) for item in value)
    return False


def leads_are_valid(rows: list[Any]) -> bool:
    """Both proofs' answer; fails the test where they disagree beyond the surrogate case."""
    expected = python_leads_are_valid(rows)
    if compiled_leads_are_valid is not None:
        got = compiled_leads_are_valid(rows)
        stricter = expected and not got and holds_lone_surrogate(rows)
        assert got == expected or stricter, (rows, got, expected)
    return expected


try:
    from ryng_async._speedups import lead_columns as compiled_lead_columns
except ImportError:  # pragma: no cover - built without a C compiler
    compiled_lead_columns = None


def lead_columns(rows: list[Any]) -> LeadColumns | None:
    """Both column checks' answer for a chunk of `Lead` s, asserted to agree."""
    expected = python_lead_columns(rows)
    if compiled_lead_columns is not None:
        got = compiled_lead_columns(rows, Lead)
        stricter = expected is not None and got is None and holds_lone_surrogate(expected[2])
        assert got == expected or stricter, (rows, got, expected)
    return expected
