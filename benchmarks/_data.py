"""The leads every benchmark sends: the same rows for every contender."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

CITIES = ("Bengaluru", "Mumbai", "Pune", "Chennai", "Delhi", "Kolkata", "Jaipur")


def row(i: int) -> dict[str, Any]:
    """One wire-form lead: an E.164 number and two custom fields, ~75 bytes of JSON."""
    return {
        "number": f"+9198{i:08d}",
        "customField1": f"Customer {i}",
        "customField2": CITIES[i % len(CITIES)],
    }


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    """``n`` wire-form leads, numbered from ``start``."""
    return [row(i) for i in range(start, start + n)]


def stream(n: int) -> Iterator[dict[str, Any]]:
    """``n`` wire-form leads, made one at a time (nothing held)."""
    return (row(i) for i in range(n))


def prebuilt(n: int) -> Iterator[dict[str, Any]]:
    """``n`` wire-form leads made now, then handed out one at a time.

    The baseline for a source whose rows exist before the load (a frame, a file): building
    them here, before any timer starts, keeps data synthesis out of the time compared.
    """
    return iter(rows(n))


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` cut in consecutive lists of ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def envelope(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """The request body a hand-written client builds around a batch."""
    return {"customerData": {"jsonData": batch}}
