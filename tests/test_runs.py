"""Runs of input positions: union and difference agree with plain sets of positions."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from ryng_async._runs import count_of, subtract_runs, union_runs

_run = st.tuples(st.integers(0, 60), st.integers(0, 12))


def _positions(runs: tuple[tuple[int, int], ...] | list[tuple[int, int]]) -> set[int]:
    return {p for start, count in runs for p in range(start, start + count)}


def _disjoint_in_order(runs: tuple[tuple[int, int], ...]) -> bool:
    return all(a[0] + a[1] <= b[0] for a, b in itertools.pairwise(runs)) and all(
        count > 0 for _, count in runs
    )


@given(st.lists(_run, max_size=6), st.lists(_run, max_size=6))
def test_union_holds_every_position_once_in_order(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    joined = union_runs(a, b)
    assert _positions(joined) == _positions(a) | _positions(b)
    assert _disjoint_in_order(joined)
    assert all(x[0] + x[1] < y[0] for x, y in itertools.pairwise(joined))  # joined up
    assert count_of(joined) == len(_positions(joined))


@given(st.lists(_run, max_size=6), st.lists(_run, max_size=6))
def test_subtract_keeps_exactly_the_positions_not_cut(
    a: list[tuple[int, int]], b: list[tuple[int, int]]
) -> None:
    runs = union_runs(a)  # a batch's runs: disjoint, in order
    left = subtract_runs(runs, b)
    assert _positions(left) == _positions(runs) - _positions(b)
    assert _disjoint_in_order(left)


def test_subtract_keeps_a_batchs_separate_runs_apart() -> None:
    assert subtract_runs(((0, 2), (2, 3)), ()) == ((0, 2), (2, 3))
    assert subtract_runs(((0, 4), (6, 4)), ((2, 6),)) == ((0, 2), (8, 2))
    assert subtract_runs(((0, 4),), ((0, 4),)) == ()
