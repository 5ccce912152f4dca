"""Runs of input positions, ``(start, count)`` pairs in input order: their arithmetic.

A batch's leads are runs of positions (``BatchResult.ranges``); after a 413 split, some
runs of a batch may be accepted while the rest is not (``accepted_ranges``). What is left
to send again is the difference, and what is accepted grows by union.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Runs", "count_of", "positions_in", "subtract_runs", "union_runs"]

Runs = tuple[tuple[int, int], ...]
"""Runs of input positions: ``(start, count)`` pairs, in input order, not overlapping."""


def count_of(runs: Iterable[tuple[int, int]]) -> int:
    """The positions in ``runs``."""
    return sum(count for _, count in runs)


def positions_in(runs: Iterable[tuple[int, int]]) -> set[int]:
    """Every position of ``runs``, for membership tests."""
    return {p for start, count in runs for p in range(start, start + count)}


def union_runs(*groups: Iterable[tuple[int, int]]) -> Runs:
    """Every position of any of ``groups``, as runs in order (adjacent runs joined)."""
    out: list[tuple[int, int]] = []
    for start, count in sorted(run for group in groups for run in group if run[1] > 0):
        if out and start <= out[-1][0] + out[-1][1]:
            first, length = out[-1]
            out[-1] = (first, max(length, start + count - first))
        else:
            out.append((start, count))
    return tuple(out)


def subtract_runs(runs: Iterable[tuple[int, int]], minus: Iterable[tuple[int, int]]) -> Runs:
    """The positions of ``runs`` not in ``minus``, as runs in order.

    Runs of ``runs`` that touch stay apart, as given (a batch's runs skip positions
    that were not in it); only what ``minus`` covers is cut out.
    """
    cut = union_runs(minus)
    if not cut:
        return tuple(run for run in runs if run[1] > 0)
    out: list[tuple[int, int]] = []
    for start, count in runs:
        end = start + count
        at = start
        for first, length in cut:
            last = first + length
            if last <= at or first >= end:
                continue
            if first > at:
                out.append((at, first - at))
            at = max(at, last)
        if at < end:
            out.append((at, end - at))
    return tuple(out)
