"""The compiled ``_speedups`` module, where it is in use.

``_speedups`` (``ryng_async/_speedups.c``) is built at install where a C compiler is found;
each of its functions has a pure-Python twin beside its caller, which serves where it is
not built, where it is stale (a build without one of the names below), or where
``RYNG_ASYNC_NO_EXTENSIONS`` is set.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

__all__ = ["SPEEDUPS"]


def _load() -> SimpleNamespace | None:
    if os.environ.get("RYNG_ASYNC_NO_EXTENSIONS"):
        return None
    try:
        from ._speedups import lead_columns, leads_are_valid, rows_to_dicts
    except ImportError:  # built without a C compiler, or a stale build: the twins serve
        return None
    return SimpleNamespace(
        leads_are_valid=leads_are_valid, lead_columns=lead_columns, rows_to_dicts=rows_to_dicts
    )


SPEEDUPS = _load()
"""The compiled functions (``leads_are_valid``, ``lead_columns``, ``rows_to_dicts``), or None."""
