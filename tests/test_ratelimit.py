"""Tests for ryng_async._ratelimit: AdaptiveLimiter (spacing, AIMD), PauseGate, check_rate.

Timing assertions are lower bounds only ("took at least"), never upper bounds, so a slow
or loaded machine cannot make them fail. Rates are high so the waits stay short.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    AdaptiveLimiter,
    BulkReport,
    ConfigurationError,
    EventLoopClock,
    Limiter,
    RyngClient,
)
from ryng_async._ratelimit import PauseGate
from ryng_async._validate import check_rate
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ManualClock

pytestmark = pytest.mark.anyio

# asyncio may run a timer up to its clock resolution early; leave a little more than that.
TOLERANCE = 0.005


class Paced:
    """A limiter behind a client's pause gate, as the sender uses them."""

    def __init__(self, rate: float | None) -> None:
        self.limiter = AdaptiveLimiter(rate)
        self.gate = PauseGate(EventLoopClock())

    async def acquire(self) -> None:
        await self.gate.admit(self.limiter)

    async def throttled(self, retry_after: float | None) -> None:
        if retry_after:
            self.gate.pause(retry_after)
        await self.limiter.throttled(retry_after)


async def _acquire_times(pacer: Limiter | Paced, count: int) -> list[float]:
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
        AdaptiveLimiter(bad)  # type: ignore[arg-type]


# -- no limit --------------------------------------------------------------------------


async def test_unlimited_pacer_returns_at_once() -> None:
    pacer = AdaptiveLimiter(None)
    assert pacer.rate is None
    assert pacer.limit is None
    # 1000 acquisitions would take 999 s at 1/s; with no limit they are immediate. The
    # bound is only a guard against a hang, orders of magnitude above the real time.
    with anyio.fail_after(5):
        for _ in range(1000):
            await pacer.acquire()


async def test_unlimited_pacer_learns_a_limit_at_a_429_and_lets_it_go() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(None, clock=clock)
    for _ in range(50):  # the server accepted 50 requests in the last second
        await pacer.acquire()
        await pacer.succeeded()
    await pacer.throttled(None)
    assert pacer.limit is None
    assert pacer.rate == 25  # half what the server accepted
    for _ in range(5):
        await pacer.succeeded()
    recovered = pacer.rate
    assert recovered is not None
    assert 25 < recovered <= 50
    for _ in range(50):
        await pacer.succeeded()
    assert pacer.rate == 50  # never above what the server accepted
    clock.advance(31)  # half a minute without a 429
    await pacer.succeeded()
    assert pacer.rate is None  # the learned limit is let go
    assert pacer.ceiling is None


async def test_unlimited_pacer_learns_nothing_from_too_little() -> None:
    pacer = AdaptiveLimiter(None)
    await pacer.succeeded()
    await pacer.throttled(None)  # one success in the last second: not a rate to pin a client to
    assert pacer.rate is None


async def test_unlimited_pacer_still_honours_retry_after_pauses() -> None:
    pacer = Paced(None)
    start = anyio.current_time()
    await pacer.throttled(0.1)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.1 - TOLERANCE


# -- spacing ---------------------------------------------------------------------------


async def test_acquisitions_are_spaced_at_the_rate() -> None:
    rate, count = 200.0, 21
    pacer = AdaptiveLimiter(rate)
    start = anyio.current_time()
    await _acquire_times(pacer, count)
    assert anyio.current_time() - start >= (count - 1) / rate - TOLERANCE


async def test_no_start_burst_the_second_acquisition_waits_one_interval() -> None:
    rate = 50.0
    pacer = AdaptiveLimiter(rate)
    first, second, third = await _acquire_times(pacer, 3)
    assert second - first >= 1 / rate - TOLERANCE
    assert third - second >= 1 / rate - TOLERANCE


async def test_concurrent_tasks_share_the_rate() -> None:
    rate, tasks = 200.0, 12
    pacer = AdaptiveLimiter(rate)
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
    pacer = AdaptiveLimiter(100)
    assert pacer.limit == 100.0
    start = anyio.current_time()
    await _acquire_times(pacer, 6)
    assert anyio.current_time() - start >= 5 / 100 - TOLERANCE


# -- AIMD ------------------------------------------------------------------------------


async def test_throttled_halves_the_rate() -> None:
    pacer = AdaptiveLimiter(200)
    assert pacer.rate == 200.0
    await pacer.throttled(None)
    assert pacer.rate == pytest.approx(100.0)
    await pacer.throttled(None)
    assert pacer.rate == pytest.approx(50.0)
    assert pacer.limit == 200.0


async def test_throttled_never_goes_below_a_64th_of_the_limit() -> None:
    pacer = AdaptiveLimiter(200)
    for _ in range(20):
        await pacer.throttled(None)
        assert pacer.rate is not None
        assert pacer.rate >= 200 / 64 - 1e-9
    assert pacer.rate == pytest.approx(200 / 64)


async def test_succeeded_raises_the_rate_by_a_twentieth_of_the_limit() -> None:
    pacer = AdaptiveLimiter(200)
    await pacer.throttled(None)
    await pacer.throttled(None)
    assert pacer.rate == pytest.approx(50.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(60.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(70.0)


async def test_succeeded_never_goes_above_the_limit() -> None:
    pacer = AdaptiveLimiter(200)
    await pacer.succeeded()
    assert pacer.rate == 200.0
    await pacer.throttled(None)  # 100
    for _ in range(50):
        await pacer.succeeded()
        assert pacer.rate is not None
        assert pacer.rate <= 200.0
    assert pacer.rate == 200.0


async def test_succeeded_from_the_floor_climbs_back_in_steps() -> None:
    pacer = AdaptiveLimiter(64)
    for _ in range(10):
        await pacer.throttled(None)
    assert pacer.rate == pytest.approx(1.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(1.0 + 64 / 20)


async def test_a_lowered_rate_spaces_acquisitions_further_apart() -> None:
    pacer = AdaptiveLimiter(400)
    await pacer.throttled(None)
    await pacer.throttled(None)
    lowered = pacer.rate
    assert lowered == pytest.approx(100.0)
    start = anyio.current_time()
    await _acquire_times(pacer, 6)
    assert anyio.current_time() - start >= 5 / lowered - TOLERANCE


# -- Retry-After pauses ----------------------------------------------------------------


async def test_throttled_with_retry_after_pauses_the_next_acquire() -> None:
    pacer = Paced(1000)
    await pacer.acquire()
    start = anyio.current_time()
    await pacer.throttled(0.15)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.15 - TOLERANCE


async def test_retry_after_pause_applies_to_every_task() -> None:
    pacer = Paced(1000)
    start = anyio.current_time()
    await pacer.throttled(0.1)
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
    pacer = Paced(None)
    start = anyio.current_time()
    await pacer.throttled(0.15)
    await pacer.throttled(0.01)
    await pacer.acquire()
    assert anyio.current_time() - start >= 0.15 - TOLERANCE


async def test_zero_or_none_retry_after_does_not_pause() -> None:
    # Only the rate changes; the pacer then spaces as usual (checked by the rate).
    pacer = Paced(200)
    await pacer.throttled(0)
    await pacer.throttled(None)
    assert pacer.limiter.rate == pytest.approx(50.0)
    assert pacer.gate.is_open()


async def test_retry_after_pauses_tasks_already_waiting_for_their_turn() -> None:
    # "A Retry-After pauses every request of the client": a task already queued behind
    # the spacing when the 429 arrives must not go out during the pause either.
    rate = 20.0  # one acquisition every 50 ms
    pacer = Paced(rate)
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
        await pacer.throttled(0.3)
    assert len(times) == 3
    assert min(times) - paused_at >= 0.3 - TOLERANCE


@pytest.mark.anyio
async def test_no_one_second_window_ever_holds_more_than_the_rate() -> None:
    # The slack that keeps the long-run rate must never let a sliding second exceed it.
    pacer = AdaptiveLimiter(100)
    sent: list[float] = []
    for _ in range(130):
        await pacer.acquire()
        sent.append(anyio.current_time())
    most = max(sum(1 for t in sent[i:] if t - start < 1.0) for i, start in enumerate(sent))
    assert most <= 100


# -- the Limiter protocol ----------------------------------------------------------------


class EveryOther:
    """The README's custom limiter: a fixed gap between requests, halved on success."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.throttles: list[float | None] = []
        self.successes = 0

    @property
    def rate(self) -> float:
        return 1 / self.gap

    async def acquire(self) -> None:
        await anyio.sleep(self.gap)

    async def throttled(self, retry_after: float | None) -> None:
        self.throttles.append(retry_after)

    async def succeeded(self) -> None:
        self.successes += 1


def test_the_default_limiter_meets_the_protocol() -> None:
    assert isinstance(AdaptiveLimiter(5), Limiter)
    assert isinstance(EveryOther(0.001), Limiter)


async def test_a_custom_limiter_paces_a_bulk_load_and_hears_back() -> None:
    limiter = EveryOther(0.001)
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after="0")
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client,
    ):
        report = await client.bulk_append(
            "42", [{"number": f"+9198{i:08d}"} for i in range(50)], batch_size=10, limiter=limiter
        )
    assert report.ok
    assert limiter.throttles == [0.0]
    assert limiter.successes == 5
    assert server.lead_count() == 50


async def test_a_client_limiter_paces_single_appends() -> None:
    limiter = EveryOther(0.001)
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=limiter) as client,
    ):
        assert client.limiter is limiter
        await client.append("42", [{"number": "+919876543210"}])
    assert limiter.successes == 1


async def test_a_limiter_that_raises_stops_the_load_with_nothing_sent() -> None:
    class RemoteStoreDownError(Exception):
        pass

    class Broken(EveryOther):
        async def acquire(self) -> None:
            raise RemoteStoreDownError("redis: connection refused")

    report = BulkReport()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(RemoteStoreDownError):
            await client.bulk_append(
                "42",
                [{"number": f"+9198{i:08d}"} for i in range(30)],
                batch_size=10,
                limiter=Broken(0.001),
                report=report,
            )
        assert server.received_requests == 0
    assert report.finished
    assert report.skipped == report.total <= 30
    assert report.stopped_early


@pytest.mark.parametrize("bad", [object(), 10, "fast"])
def test_a_non_limiter_is_refused(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="Limiter protocol"):
        RyngClient(base_url="http://127.0.0.1:1", access_token=TOKEN, limiter=bad)  # type: ignore[arg-type]


def test_a_limiter_and_a_rate_limit_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        RyngClient(
            base_url="http://127.0.0.1:1",
            access_token=TOKEN,
            limiter=EveryOther(1.0),
            rate_limit=5,
        )


README = Path(__file__).resolve().parent.parent / "README.md"


async def test_the_readme_s_custom_limiter_runs_a_bulk_load() -> None:
    readme = README.read_text()
    start = readme.index("class FixedGap:")
    source = readme[start : readme.index("report = await", start)]
    namespace: dict[str, Any] = {"anyio": anyio}
    exec(source, namespace)  # noqa: S102 - the README's own example, run as written
    limiter = namespace["FixedGap"](0.002)
    assert isinstance(limiter, Limiter)
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        started = anyio.current_time()
        report = await client.bulk_append(
            "42", [{"number": f"+9198{i:08d}"} for i in range(40)], batch_size=4, limiter=limiter
        )
    assert report.ok
    assert server.lead_count() == 40
    # ten requests, each at least a gap after the one before
    assert anyio.current_time() - started >= 9 * 0.002 - TOLERANCE
