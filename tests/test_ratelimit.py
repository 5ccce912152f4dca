"""Tests for ryng_async._ratelimit: RatePacer (spacing, AIMD, global pauses) and check_rate.

Timing assertions are lower bounds only ("took at least"), never upper bounds, so a slow
or loaded machine cannot make them fail. Rates are high so the waits stay short.
"""

from __future__ import annotations

import itertools
import math

import anyio
import anyio.lowlevel
import pytest

from ryng_async import ConfigurationError
from ryng_async._ratelimit import RatePacer, check_rate

pytestmark = pytest.mark.anyio

# asyncio may run a timer up to its clock resolution early; leave a little more than that.
TOLERANCE = 0.005


async def _acquire_times(pacer: RatePacer, count: int) -> list[float]:
    times = []
    for _ in range(count):
        await pacer.acquire()
        times.append(anyio.current_time())
    return times


# -- check_rate ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "10", b"10", [10]]
)
def test_check_rate_refuses_non_positive_non_finite_and_non_numbers(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        check_rate(bad)  # type: ignore[arg-type]


def test_check_rate_names_the_setting_in_its_message() -> None:
    with pytest.raises(ConfigurationError, match="bulk_rate"):
        check_rate(-3, "bulk_rate")


@pytest.mark.parametrize(("rate", "expected"), [(5, 5.0), (0.25, 0.25), (1e6, 1e6)])
def test_check_rate_returns_a_float(rate: float, expected: float) -> None:
    checked = check_rate(rate)
    assert checked == expected
    assert type(checked) is float


def test_check_rate_accepts_none_as_no_limit() -> None:
    assert check_rate(None) is None


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "5"])
def test_pacer_refuses_a_bad_rate(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        RatePacer(bad)  # type: ignore[arg-type]


# -- no limit --------------------------------------------------------------------------


async def test_unlimited_pacer_returns_at_once() -> None:
    pacer = RatePacer(None)
    assert pacer.rate is None
    assert pacer.limit is None
    # 1000 acquisitions would take 999 s at 1/s; with no limit they are immediate. The
    # bound is only a guard against a hang, orders of magnitude above the real time.
    with anyio.fail_after(5):
        for _ in range(1000):
            await pacer.acquire()


async def test_unlimited_pacer_learns_a_limit_at_a_429_and_lets_it_go() -> None:
    pacer = RatePacer(None)
    for _ in range(50):  # the server accepted 50 requests in the last second
        await pacer.acquire()
        pacer.succeeded()
    pacer.throttled(None)
    assert pacer.limit is None
    assert pacer.rate == 25  # half what the server accepted
    for _ in range(5):
        pacer.succeeded()
    recovered = pacer.rate
    assert recovered is not None
    assert 25 < recovered <= 50
    for _ in range(50):
        pacer.succeeded()
    assert pacer.rate == 50  # never above what the server accepted
    pacer._last_throttle -= 31  # half a minute without a 429
    pacer.succeeded()
    assert pacer.rate is None  # the learned limit is let go
    assert not pacer.must_wait()


async def test_unlimited_pacer_learns_nothing_from_too_little() -> None:
    pacer = RatePacer(None)
    pacer.succeeded()
    pacer.throttled(None)  # one success in the last second: not a rate to pin a client to
    assert pacer.rate is None


async def test_unlimited_pacer_still_honours_retry_after_pauses() -> None:
    pacer = RatePacer(None)
    start = anyio.current_time()
    pacer.throttled(0.1)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.1 - TOLERANCE


# -- spacing ---------------------------------------------------------------------------


async def test_acquisitions_are_spaced_at_the_rate() -> None:
    rate, count = 200.0, 21
    pacer = RatePacer(rate)
    start = anyio.current_time()
    await _acquire_times(pacer, count)
    assert anyio.current_time() - start >= (count - 1) / rate - TOLERANCE


async def test_no_start_burst_the_second_acquisition_waits_one_interval() -> None:
    rate = 50.0
    pacer = RatePacer(rate)
    first, second, third = await _acquire_times(pacer, 3)
    assert second - first >= 1 / rate - TOLERANCE
    assert third - second >= 1 / rate - TOLERANCE


async def test_concurrent_tasks_share_the_rate() -> None:
    rate, tasks = 200.0, 12
    pacer = RatePacer(rate)
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(anyio.current_time())

    start = anyio.current_time()
    async with anyio.create_task_group() as group:
        for _ in range(tasks):
            group.start_soon(one)
    assert len(times) == tasks
    assert max(times) - start >= (tasks - 1) / rate - TOLERANCE
    # No window of one interval ever holds two acquisitions.
    ordered = sorted(times)
    for earlier, later in itertools.pairwise(ordered):
        assert later - earlier >= 1 / rate - TOLERANCE


async def test_pacer_with_an_integer_rate_paces_too() -> None:
    pacer = RatePacer(100)
    assert pacer.limit == 100.0
    start = anyio.current_time()
    await _acquire_times(pacer, 6)
    assert anyio.current_time() - start >= 5 / 100 - TOLERANCE


# -- AIMD ------------------------------------------------------------------------------


async def test_throttled_halves_the_rate() -> None:
    pacer = RatePacer(200)
    assert pacer.rate == 200.0
    pacer.throttled(None)
    assert pacer.rate == pytest.approx(100.0)
    pacer.throttled(None)
    assert pacer.rate == pytest.approx(50.0)
    assert pacer.limit == 200.0


async def test_throttled_never_goes_below_a_64th_of_the_limit() -> None:
    pacer = RatePacer(200)
    for _ in range(20):
        pacer.throttled(None)
        assert pacer.rate is not None
        assert pacer.rate >= 200 / 64 - 1e-9
    assert pacer.rate == pytest.approx(200 / 64)


async def test_succeeded_raises_the_rate_by_a_twentieth_of_the_limit() -> None:
    pacer = RatePacer(200)
    pacer.throttled(None)
    pacer.throttled(None)
    assert pacer.rate == pytest.approx(50.0)
    pacer.succeeded()
    assert pacer.rate == pytest.approx(60.0)
    pacer.succeeded()
    assert pacer.rate == pytest.approx(70.0)


async def test_succeeded_never_goes_above_the_limit() -> None:
    pacer = RatePacer(200)
    pacer.succeeded()
    assert pacer.rate == 200.0
    pacer.throttled(None)  # 100
    for _ in range(50):
        pacer.succeeded()
        assert pacer.rate is not None
        assert pacer.rate <= 200.0
    assert pacer.rate == 200.0


async def test_succeeded_from_the_floor_climbs_back_in_steps() -> None:
    pacer = RatePacer(64)
    for _ in range(10):
        pacer.throttled(None)
    assert pacer.rate == pytest.approx(1.0)
    pacer.succeeded()
    assert pacer.rate == pytest.approx(1.0 + 64 / 20)


async def test_a_lowered_rate_spaces_acquisitions_further_apart() -> None:
    pacer = RatePacer(400)
    pacer.throttled(None)
    pacer.throttled(None)
    lowered = pacer.rate
    assert lowered == pytest.approx(100.0)
    start = anyio.current_time()
    await _acquire_times(pacer, 6)
    assert anyio.current_time() - start >= 5 / lowered - TOLERANCE


# -- Retry-After pauses ----------------------------------------------------------------


async def test_throttled_with_retry_after_pauses_the_next_acquire() -> None:
    pacer = RatePacer(1000)
    await pacer.acquire()
    start = anyio.current_time()
    pacer.throttled(0.15)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.15 - TOLERANCE


async def test_retry_after_pause_applies_to_every_task() -> None:
    pacer = RatePacer(1000)
    start = anyio.current_time()
    pacer.throttled(0.1)
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(one)
    assert len(times) == 5
    assert min(times) - start >= 0.1 - TOLERANCE


async def test_a_shorter_retry_after_does_not_cut_a_longer_pause() -> None:
    pacer = RatePacer(None)
    start = anyio.current_time()
    pacer.throttled(0.15)
    pacer.throttled(0.01)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.15 - TOLERANCE


async def test_zero_or_none_retry_after_does_not_pause() -> None:
    # Only the rate changes; the pacer then spaces as usual (checked by the rate).
    pacer = RatePacer(200)
    pacer.throttled(0)
    pacer.throttled(None)
    assert pacer.rate == pytest.approx(50.0)


async def test_retry_after_pauses_tasks_already_waiting_for_their_turn() -> None:
    # "A Retry-After pauses every request of the client": a task already queued behind
    # the spacing when the 429 arrives must not go out during the pause either.
    rate = 20.0  # one acquisition every 50 ms
    pacer = RatePacer(rate)
    await pacer.acquire()  # the bucket is now full: the next waits ~50 ms
    times: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        times.append(anyio.current_time())

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one)
        await anyio.lowlevel.checkpoint()  # let the three tasks queue up in acquire()
        paused_at = anyio.current_time()
        pacer.throttled(0.3)
    assert len(times) == 3
    assert min(times) - paused_at >= 0.3 - TOLERANCE


@pytest.mark.anyio
async def test_no_one_second_window_ever_holds_more_than_the_rate() -> None:
    # The slack that keeps the long-run rate must never let a sliding second exceed it.
    pacer = RatePacer(100)
    sent: list[float] = []
    for _ in range(130):
        await pacer.acquire()
        sent.append(anyio.current_time())
    most = max(sum(1 for t in sent[i:] if t - start < 1.0) for i, start in enumerate(sent))
    assert most <= 100
