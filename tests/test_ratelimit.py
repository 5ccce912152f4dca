"""Tests for ryng_async._ratelimit: AdaptiveLimiter (spacing, AIMD), PauseGate, check_rate.

Timing assertions are lower bounds only ("took at least"), never upper bounds, so a slow
or loaded machine cannot make them fail. Rates are high so the waits stay short.
"""

from __future__ import annotations

import itertools
import math
import random
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


async def answer(
    limiter: AdaptiveLimiter,
    clock: ManualClock,
    *,
    accepted: int,
    over: float,
    throttled: int = 0,
    retry_after: float | None = None,
) -> None:
    """Feed ``accepted`` successes spread evenly over ``over`` seconds, then 429s at once."""
    for _ in range(accepted):
        clock.advance(over / accepted)
        await limiter.succeeded()
    for _ in range(throttled):
        await limiter.throttled(retry_after)


def state(pacer: AdaptiveLimiter) -> tuple[float | None, float | None]:
    """The rate and the ceiling in force."""
    return pacer.rate, pacer.ceiling


async def warmed_up(clock: ManualClock) -> AdaptiveLimiter:
    """An unlimited limiter that has watched answers for more than a second already."""
    pacer = AdaptiveLimiter(None, clock=clock)
    await pacer.succeeded()
    clock.advance(1.5)
    return pacer


async def test_unlimited_pacer_learns_a_limit_under_pressure_and_lets_it_go() -> None:
    clock = ManualClock()
    pacer = await warmed_up(clock)
    # 50 accepted over a whole second, then 429s without Retry-After making a tenth of
    # the answers: a server pushing back.
    await answer(pacer, clock, accepted=50, over=1.0, throttled=6)
    assert pacer.limit is None
    assert pacer.ceiling == 50
    assert pacer.rate == 25  # half what the server accepted
    for _ in range(5):
        await pacer.succeeded()
    recovered = pacer.rate
    assert recovered is not None
    assert 25 < recovered <= 50
    for _ in range(50):
        await pacer.succeeded()
    assert pacer.rate == 50  # back at what the server accepted
    clock.advance(31)  # half a minute without a 429
    await pacer.succeeded()
    assert state(pacer) == (None, None)  # the learned limit is let go


async def test_a_429_early_in_a_load_learns_nothing_from_a_partial_window() -> None:
    # The defect: a 429 0.15 s into a load pinned the client to what 0.15 s had accepted.
    clock = ManualClock()
    pacer = AdaptiveLimiter(None, clock=clock)
    await answer(pacer, clock, accepted=70, over=0.15, throttled=10)
    assert pacer.rate is None
    assert pacer.ceiling is None


async def test_random_429s_on_a_small_share_never_pin_a_limit() -> None:
    # The defect: 2% random 429s (Retry-After: 0) slowed a 480 req/s load to 61 req/s.
    clock = ManualClock()
    pacer = AdaptiveLimiter(None, clock=clock)
    draws = random.Random(7)
    for _ in range(5000):  # ten seconds at 500 answers a second
        clock.advance(1 / 500)
        if draws.random() < 0.02:
            await pacer.throttled(0.0)
        else:
            await pacer.succeeded()
        assert pacer.rate is None


async def test_a_429_with_retry_after_is_a_pause_first() -> None:
    clock = ManualClock()
    unlimited = AdaptiveLimiter(None, clock=clock)
    limited = AdaptiveLimiter(200, clock=clock)
    for pacer in (unlimited, limited):
        await answer(pacer, clock, accepted=100, over=2.0, throttled=1, retry_after=1.0)
    assert unlimited.rate is None  # nothing learned from one 429 that paused us
    assert limited.rate == 200  # nor the configured rate cut


async def test_a_pause_that_did_not_help_learns_what_the_server_accepted() -> None:
    # A server limiting to 50 a second: 50 pass, then 429 with Retry-After: 1; after the
    # pause, 50 pass again and the next is 429 again.
    clock = ManualClock()
    pacer = AdaptiveLimiter(None, clock=clock)
    await answer(pacer, clock, accepted=50, over=0.2, throttled=8, retry_after=1.0)
    assert pacer.rate is None  # a pause first (and no whole second seen yet)
    clock.advance(1.0)  # the pause
    await answer(pacer, clock, accepted=50, over=0.2, throttled=1, retry_after=1.0)
    assert pacer.ceiling == 50
    assert pacer.rate == 50  # the pause already slowed us: go on at what passed


async def test_a_learned_limit_rises_again_by_probing() -> None:
    clock = ManualClock()
    pacer = await warmed_up(clock)
    await answer(pacer, clock, accepted=50, over=1.0, throttled=6)
    await answer(pacer, clock, accepted=20, over=0.4)
    assert (pacer.ceiling, pacer.rate) == (50, 50)
    # Ten quiet seconds at the ceiling (an isolated 429 is no pressure), then a raise.
    await answer(pacer, clock, accepted=500, over=10.0, throttled=1, retry_after=0.0)
    await answer(pacer, clock, accepted=10, over=0.2)
    assert pacer.ceiling == pytest.approx(55)
    assert pacer.rate == pytest.approx(55)
    await answer(pacer, clock, accepted=600, over=11.0, throttled=1, retry_after=0.0)
    await answer(pacer, clock, accepted=10, over=0.2)
    assert pacer.ceiling == pytest.approx(60.5)  # the raise held: and another


async def test_a_raise_pushed_back_returns_to_the_ceiling_that_held_and_waits_longer() -> None:
    clock = ManualClock()
    pacer = await warmed_up(clock)
    await answer(pacer, clock, accepted=50, over=1.0, throttled=6)
    await answer(pacer, clock, accepted=520, over=10.4)
    assert pacer.ceiling == pytest.approx(55)
    await pacer.throttled(1.0)  # the raise overshot: the server paused us
    assert pacer.ceiling == pytest.approx(50)
    assert pacer.rate == pytest.approx(50)
    await answer(pacer, clock, accepted=550, over=11.0)
    assert pacer.ceiling == pytest.approx(50)  # not after 10 s this time
    await answer(pacer, clock, accepted=500, over=10.0)
    assert pacer.ceiling == pytest.approx(55)  # but after 20


async def test_pauses_that_come_whatever_the_rate_let_a_learned_limit_go() -> None:
    # Learned 10 a second; paced at it for seconds, the server takes all we send and still
    # pauses us, twice: its 429s are not about our rate. Pace no more; pauses only.
    clock = ManualClock()
    pacer = await warmed_up(clock)
    await answer(pacer, clock, accepted=10, over=0.1, throttled=1, retry_after=1.0)
    clock.advance(1.0)
    await answer(pacer, clock, accepted=10, over=0.1, throttled=1, retry_after=1.0)
    assert state(pacer) == (10, 10)
    clock.advance(1.0)
    await answer(pacer, clock, accepted=30, over=3.0, throttled=1, retry_after=1.0)
    assert state(pacer) == (9.5, 9.5)  # once: a limit right at the ceiling, perhaps
    clock.advance(1.0)
    await answer(pacer, clock, accepted=28, over=3.0, throttled=1, retry_after=1.0)
    assert state(pacer) == (None, None)  # twice: not about our rate
    for _ in range(5):  # the same again soon after: still pauses only
        clock.advance(1.0)
        await answer(pacer, clock, accepted=10, over=0.1, throttled=1, retry_after=1.0)
        assert state(pacer) == (None, None)


async def test_a_server_taking_clearly_less_than_the_learned_limit_lowers_it() -> None:
    clock = ManualClock()
    pacer = await warmed_up(clock)
    await answer(pacer, clock, accepted=50, over=0.2, throttled=1, retry_after=1.0)
    clock.advance(1.0)
    await answer(pacer, clock, accepted=50, over=0.2, throttled=1, retry_after=1.0)
    assert state(pacer) == (50, 50)
    await answer(pacer, clock, accepted=100, over=2.0)
    # The server's limit fell to 30 a second: 30 pass, then it pauses us.
    await answer(pacer, clock, accepted=30, over=1.0, throttled=1, retry_after=1.0)
    rate, ceiling = state(pacer)
    assert ceiling is not None
    assert 30 <= ceiling <= 31  # what passed in the last second
    assert rate == ceiling


async def test_unlimited_pacer_learns_nothing_from_too_little() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(None, clock=clock)
    await answer(pacer, clock, accepted=1, over=1.5, throttled=5)
    assert pacer.rate is None  # one success in the last second: not a rate to pin a client to


async def test_a_real_server_limit_is_learned() -> None:
    # FakeRyngServer(rate_limit=50) answers 429 with Retry-After beyond 50 a second.
    async with (
        FakeRyngServer(access_token=TOKEN, rate_limit=50) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN, random_seed=0) as client,
    ):
        report = await client.bulk_append(
            "42", [{"number": f"+9198{i:08d}"} for i in range(130)], batch_size=1
        )
        limiter = client.limiter
    assert report.ok
    assert server.lead_count() == 130
    assert isinstance(limiter, AdaptiveLimiter)
    assert limiter.ceiling is not None
    assert 40 <= limiter.ceiling <= 55
    assert server.statuses[429] <= 30


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


async def push_back(pacer: AdaptiveLimiter, clock: ManualClock) -> None:
    """A second later, 429s that make a tenth of the answers: pressure."""
    clock.advance(1.02)
    for _ in range(3):
        await pacer.throttled(None)


async def test_pressure_halves_the_rate_once_a_window() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(200, clock=clock)
    assert pacer.rate == 200.0
    await push_back(pacer, clock)
    assert pacer.rate == pytest.approx(100.0)
    for _ in range(5):  # the rest of the same burst is the same signal
        await pacer.throttled(None)
    assert pacer.rate == pytest.approx(100.0)
    await push_back(pacer, clock)
    assert pacer.rate == pytest.approx(50.0)
    assert pacer.limit == 200.0


async def test_an_isolated_429_leaves_the_rate_alone() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(200, clock=clock)
    await answer(pacer, clock, accepted=100, over=1.0, throttled=1)
    clock.advance(2)
    await pacer.throttled(None)
    assert pacer.rate == 200.0


async def test_throttled_never_goes_below_a_64th_of_the_limit() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(200, clock=clock)
    for _ in range(20):
        await push_back(pacer, clock)
        assert pacer.rate is not None
        assert pacer.rate >= 200 / 64 - 1e-9
    assert pacer.rate == pytest.approx(200 / 64)


async def test_succeeded_raises_the_rate_by_a_twentieth_of_the_limit() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(200, clock=clock)
    await push_back(pacer, clock)
    await push_back(pacer, clock)
    assert pacer.rate == pytest.approx(50.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(60.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(70.0)


async def test_succeeded_never_goes_above_the_limit() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(200, clock=clock)
    await pacer.succeeded()
    assert pacer.rate == 200.0
    await push_back(pacer, clock)  # 100
    for _ in range(50):
        clock.advance(1)  # a configured limit is never probed past, however quiet
        await pacer.succeeded()
        assert pacer.rate is not None
        assert pacer.rate <= 200.0
    assert pacer.rate == 200.0


async def test_succeeded_from_the_floor_climbs_back_in_steps() -> None:
    clock = ManualClock()
    pacer = AdaptiveLimiter(64, clock=clock)
    for _ in range(10):
        await push_back(pacer, clock)
    assert pacer.rate == pytest.approx(1.0)
    await pacer.succeeded()
    assert pacer.rate == pytest.approx(1.0 + 64 / 20)


async def test_a_lowered_rate_spaces_acquisitions_further_apart() -> None:
    pacer = AdaptiveLimiter(400)
    for _ in range(3):  # three 429s at once: pressure
        await pacer.throttled(None)
    lowered = pacer.rate
    assert lowered is not None
    assert lowered == pytest.approx(200.0)
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
    pacer = Paced(200)
    await pacer.throttled(0)
    await pacer.throttled(None)
    assert pacer.limiter.rate == 200.0  # two isolated 429s: no pressure either
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


class CountingLimiter(AdaptiveLimiter):
    """The default limiter, pacing nothing, that counts its turns."""

    def __init__(self) -> None:
        super().__init__()
        self.turns = 0

    async def acquire(self) -> None:
        self.turns += 1
        await super().acquire()


async def test_every_request_waits_its_turn_unless_nothing_could_hold_it() -> None:
    # The sender skips the turn of the default limiter pacing nothing (it would await
    # nothing); a subclass, a pause or a rate still gets each request's turn.
    limiter = CountingLimiter()
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        rows = [{"number": f"+9198{i:08d}"} for i in range(30)]
        report = await client.bulk_append("42", rows, batch_size=10, limiter=limiter)
        sender = client._sender  # the fast path's condition, seen directly
        unpaced, paced = AdaptiveLimiter(), AdaptiveLimiter(1000)
        assert sender._may_go_now(unpaced)
        assert not sender._may_go_now(paced)
        assert not sender._may_go_now(limiter)
        sender.pauses.pause(60)
        assert not sender._may_go_now(unpaced)
    assert report.ok
    assert limiter.turns == 3


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


# The custom limiter example lives on the docs site's bulk loading page.
README = Path(__file__).resolve().parent.parent / "docs" / "bulk.md"


async def test_the_readme_s_custom_limiter_runs_a_bulk_load() -> None:
    readme = README.read_text()
    start = readme.index("class FixedGap:")
    source = readme[start : readme.index("report = await", start)]
    namespace: dict[str, Any] = {"anyio": anyio}
    exec(source, namespace)  # noqa: S102 - the docs' own example, run as written
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
