"""RedisLimiter against a real redis-server: the schedule's arithmetic, the fleet, failures.

A redis-server is needed (Debian's ``redis-server``; ``.ci/run`` installs it). The shared
one comes from ``RYNG_TEST_REDIS_URL`` when set (``.ci/run`` starts it), else a fixture
starts one on a free port; tests that stop Redis start their own. Without the binary (and
no URL), the tests skip saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("redis", reason="redis-py is not installed: pip install 'ryng-async[redis]'")

from ryng_async import BulkReport, ConfigurationError, Limiter, RyngClient
from ryng_async.redis import KEY_PREFIX, RedisAccessError, RedisLimiter, RedisLimiterError
from ryng_async.testing import FakeRyngServer

TOKEN = "test-token-0123456789"
REDIS_SERVER = shutil.which("redis-server")
NO_REDIS_SERVER = "no redis-server binary (apt-get install redis-server; .ci/run installs it)"
needs_binary = pytest.mark.skipif(REDIS_SERVER is None, reason=NO_REDIS_SERVER)


# -- a redis-server of our own -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _refusing_port() -> Iterator[int]:
    """A port bound but not listening, held for the block: connecting is refused, and no
    other process can start listening there meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@dataclass
class RedisServer:
    """A redis-server subprocess on 127.0.0.1, stopped by its pid."""

    port: int
    args: tuple[str, ...] = ()  # more redis-server options, e.g. --requirepass
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.ready.clear()
        process = subprocess.Popen(  # noqa: S603 - the Debian binary, fixed arguments
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.process = process
        # Drain its log on a thread (a full pipe would block it); it says when it is ready.
        self.reader = threading.Thread(target=self._read_log, args=(process,), daemon=True)
        self.reader.start()
        if not self.ready.wait(15) or process.poll() is not None:
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                self.ready.set()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        if self.reader is not None:
            self.reader.join(10)  # the log ends with the process
        if process.stdout is not None:
            process.stdout.close()


def _start_own(*args: str) -> RedisServer:
    if REDIS_SERVER is None:
        pytest.skip(NO_REDIS_SERVER)
    # redis-server must bind the port itself, so a port is picked, then freed: another
    # process may take it in between. redis-server then exits; try another port.
    for _ in range(4):
        server = RedisServer(_free_port(), args)
        try:
            server.start()
        except RuntimeError:
            continue
        return server
    server = RedisServer(_free_port(), args)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("RYNG_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = _start_own()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = _start_own()
    try:
        yield server
    finally:
        server.stop()


REDIS_PASSWORD = "right-horse-battery-7f3a"
WRONG_PASSWORD = "wrong-staple-9c1e"


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    """A redis-server of our own that needs ``REDIS_PASSWORD``."""
    server = _start_own("--requirepass", REDIS_PASSWORD)
    try:
        yield server
    finally:
        server.stop()


_keys = iter(range(1 << 30))


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"test:{request.node.name}:{os.getpid()}:{next(_keys)}"


@pytest.fixture
async def limiter(redis_url: str, key: str) -> AsyncIterator[RedisLimiter]:
    async with RedisLimiter(redis_url, key, 10) as shared:
        await shared.reset()
        yield shared


def _leads(count: int) -> list[dict[str, str]]:
    return [{"number": f"+9198{i:08d}"} for i in range(count)]


def _check_invariant(report: BulkReport) -> None:
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


async def _throttle(
    limiter: RedisLimiter, retry_after: float | None, now: float
) -> tuple[float, float, int]:
    """Tell a 429 at simulated time ``now``; return the fleet's factor, pause left, epoch."""
    await limiter.throttled(retry_after, now=now)
    state = await limiter.state(now=now)
    return state.factor, state.paused_for, state.epoch


# -- the schedule's arithmetic under a simulated clock ---------------------------------


@pytest.mark.anyio
async def test_meets_the_limiter_protocol(limiter: RedisLimiter) -> None:
    assert isinstance(limiter, Limiter)
    assert limiter.rate == pytest.approx(10 / 1.05)


@pytest.mark.anyio
async def test_no_burst_at_start_and_none_after_idling(limiter: RedisLimiter) -> None:
    interval = 1.05 / 10
    # Twelve workers ask at the same instant: one slot now, the others one interval apart.
    waits = [(await limiter.reserve(now=1000.0)).wait for _ in range(12)]
    assert waits == pytest.approx([i * interval for i in range(12)], abs=1e-6)
    # A long idle spell earns no credit: again one slot now, the rest spaced.
    later = 1000.0 + 60
    waits = [(await limiter.reserve(now=later)).wait for _ in range(3)]
    assert waits == pytest.approx([0, interval, 2 * interval], abs=1e-6)


@pytest.mark.anyio
async def test_long_run_rate_and_any_window(limiter: RedisLimiter) -> None:
    # Saturated for 30 simulated seconds: each request asks when the previous one went.
    now, slots = 5000.0, []
    while now < 5030.0:
        reservation = await limiter.reserve(now=now)
        now += reservation.wait
        slots.append(now)
    rate = (len(slots) - 1) / (slots[-1] - slots[0])
    assert rate == pytest.approx(10 / 1.05, rel=1e-4)
    # No one-second window (half-open, as the fake server counts) holds more than 10.
    assert max(sum(1 for s in slots if start <= s < start + 1) for start in slots) <= 10


@pytest.mark.anyio
async def test_horizon_bounds_a_reservation(redis_url: str, key: str) -> None:
    async with RedisLimiter(redis_url, key, 10, margin=0, horizon=0.25) as shared:
        waits = [await shared.reserve(now=10.0) for _ in range(4)]
        assert [r.reserved for r in waits] == [True, True, True, False]
        # Nothing reserved: ask again once the queue's end is within the horizon.
        assert waits[3].wait == pytest.approx(0.05, abs=1e-6)
        assert (await shared.reserve(now=10.05)).reserved


def test_slots_are_work_conserving(redis_url: str) -> None:
    """Any arrivals: each slot is max(arrival, previous slot + interval), never earlier."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        rate=st.sampled_from([1.0, 7.0, 50.0]),
        gaps=st.lists(st.floats(0, 2, allow_nan=False), min_size=1, max_size=25),
    )
    def check(rate: float, gaps: list[float]) -> None:
        async def run() -> list[tuple[float, float]]:
            key = f"test:conserving:{os.getpid()}:{next(_keys)}"
            async with RedisLimiter(redis_url, key, rate, margin=0.02) as shared:
                now, pairs = 100.0, []
                for gap in gaps:
                    now += gap
                    pairs.append((now, now + (await shared.reserve(now=now)).wait))
                await shared.reset()
            return pairs

        interval = 1.02 / rate
        previous = -math.inf
        for arrival, slot in anyio.run(run, backend="asyncio"):
            assert slot == pytest.approx(max(arrival, previous + interval), abs=1e-5)
            previous = slot

    check()


@pytest.mark.anyio
async def test_a_long_retry_after_pauses_every_worker_and_voids_slots_given(
    redis_url: str, key: str
) -> None:
    async with (
        RedisLimiter(redis_url, key, 10) as first,
        RedisLimiter(redis_url, key, 10) as second,
    ):
        await first.reset()
        given_out = await second.reserve(now=100.0)
        factor, paused_for, epoch = await _throttle(first, 2.0, now=100.1)
        assert (factor, paused_for) == (1.0, pytest.approx(2.0))
        assert epoch == given_out.epoch + 1  # the slot given before is void
        # The other worker's next slot is after the pause, spaced from there.
        assert (await second.reserve(now=100.2)).wait == pytest.approx(1.9, abs=1e-6)
        assert (await second.reserve(now=100.2)).wait == pytest.approx(1.9 + 0.105, abs=1e-6)
        state = await second.state(now=101.0)
        assert state.paused_for == pytest.approx(1.1, abs=1e-6)


@pytest.mark.anyio
async def test_pressure_slows_and_pauses_the_fleet_and_it_recovers(
    redis_url: str, key: str
) -> None:
    async with (
        RedisLimiter(redis_url, key, 10) as first,
        RedisLimiter(redis_url, key, 10) as second,
    ):
        await first.reset()
        # A 429 alone is the pause of the worker that got it (its client holds it), and so
        # is another worker's soon after: jitter that bunched a few requests.
        assert await _throttle(first, 1.0, now=10.0) == (1.0, 0.0, 0)
        assert await _throttle(second, 1.0, now=10.3) == (1.0, 0.0, 0)
        # The first worker's pause did not help: pressure. The fleet pauses for the
        # Retry-After and halves its rate; the slots given out are void.
        assert await _throttle(first, 1.0, now=11.5) == (0.5, pytest.approx(1.0), 1)
        # During the fleet pause, 429s answer requests already in flight: not counted.
        assert await _throttle(second, 1.0, now=12.0) == (0.5, pytest.approx(0.5), 1)
        # Pushed back again just after it: a longer pause, but one slow-down a second.
        assert await _throttle(first, 1.0, now=12.505) == (0.5, pytest.approx(1.0), 2)
        # Three 429s within a second across the fleet are pressure too.
        assert (await _throttle(first, None, now=20.0))[0] == 0.5
        assert (await _throttle(second, None, now=20.1))[0] == 0.5
        assert await _throttle(first, None, now=20.2) == (0.25, 0.0, 3)
        # The whole fleet paces at the lower rate.
        first_slot = await second.reserve(now=30.0)
        assert (await second.reserve(now=30.0)).wait - first_slot.wait == pytest.approx(
            1.05 / 2.5, abs=1e-6
        )
        assert second.rate == pytest.approx(2.5 / 1.05)
        # Each success anywhere climbs back by 1/20 of the rate.
        for _ in range(5):
            await first.succeeded()
        assert (await second.state()).factor == pytest.approx(0.5)
        for _ in range(20):
            await second.succeeded()
        assert (await first.state()).factor == 1.0
        assert second.rate == pytest.approx(10 / 1.05)


@pytest.mark.anyio
async def test_throttled_and_succeeded_through_the_protocol(limiter: RedisLimiter) -> None:
    await limiter.throttled(30.0)  # a long Retry-After: the fleet pauses
    state = await limiter.state()
    assert 29 < state.paused_for <= 30
    assert state.epoch == 1
    await limiter.succeeded()  # at full rate: nothing to record
    assert (await limiter.state()).factor == 1.0


@pytest.mark.anyio
async def test_acquire_paces_real_requests(redis_url: str, key: str) -> None:
    async with (
        FakeRyngServer(access_token=TOKEN, rate_limit=20) as server,
        RedisLimiter(redis_url, key, 20) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):
        await shared.reset()
        report = await client.bulk_append("42", _leads(300), batch_size=10, concurrency=8)
    assert report.ok
    # Slots are spaced in Redis's time; arrivals carry the event loop's jitter (a loaded
    # machine can bunch two by tens of milliseconds), which the margin mostly absorbs.
    assert server.statuses[429] <= 1
    assert server.max_requests_per_window(1.0) <= 21
    arrivals = server.arrivals
    assert (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) <= 20 / 1.05 * 1.02


# -- four worker processes, one limit ---------------------------------------------------

FLEET_RATE = 20
FLEET_WORKERS = 4
FLEET_BATCH = 10
FLEET_LEADS = 1200  # 120 requests: about six seconds at the fleet's pace


# One worker process: loads shard argv[4] of argv[5] under the shared limit. Says "ready"
# once connected, waits for a line on stdin (all start together), then prints its pickled
# report. A script of its own: it imports only the SDK, so the four start quickly.
FLEET_WORKER = """
import asyncio, pickle, sys
import anyio
from ryng_async import RyngClient
from ryng_async.redis import RedisLimiter

base_url, redis_url, key, token = sys.argv[1:5]
index, count, rate, leads, batch = map(int, sys.argv[5:10])

async def main():
    async with (
        RedisLimiter(redis_url, key, rate) as shared,
        RyngClient(base_url=base_url, access_token=token, limiter=shared) as client,
    ):
        await shared.state()
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        report = await client.bulk_append(
            "42",
            ({"number": f"+9198{i:08d}"} for i in range(leads)),
            batch_size=batch,
            concurrency=4,
            shard=(index, count),
        )
    print(pickle.dumps(report).hex(), flush=True)

asyncio.run(main())
"""


async def _run_fleet(base_url: str, redis_url: str, key: str) -> list[BulkReport]:
    settings = [FLEET_WORKERS, FLEET_RATE, FLEET_LEADS, FLEET_BATCH]
    processes = [
        await anyio.open_process(
            [sys.executable, "-c", FLEET_WORKER, base_url, redis_url, key, TOKEN]
            + [str(n) for n in (i, *settings)],
            stderr=None,
        )
        for i in range(FLEET_WORKERS)
    ]
    try:
        streams = []
        for process in processes:
            assert process.stdout is not None
            streams.append(BufferedByteReceiveStream(process.stdout))
        with anyio.fail_after(120):
            for stream in streams:
                assert await stream.receive_until(b"\n", 100) == b"ready"
            for process in processes:
                assert process.stdin is not None
                await process.stdin.send(b"go\n")
            lines = [await stream.receive_until(b"\n", 1 << 24) for stream in streams]
            for process in processes:
                assert await process.wait() == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return [pickle.loads(bytes.fromhex(line.decode())) for line in lines]  # noqa: S301


@needs_binary
@pytest.mark.slow
@pytest.mark.anyio
async def test_four_processes_share_one_rate(redis_url: str, key: str) -> None:
    async with (
        FakeRyngServer(access_token=TOKEN, rate_limit=FLEET_RATE) as server,
        RedisLimiter(redis_url, key, FLEET_RATE) as shared,
    ):
        await shared.reset()
        reports = await _run_fleet(server.base_url, redis_url, key)
    merged = BulkReport.merge(reports)
    _check_invariant(merged)
    assert (merged.total, merged.accepted) == (FLEET_LEADS, FLEET_LEADS)
    # Disjoint and complete: every lead reached the server exactly once.
    counts = server.lead_counts()
    assert len(counts) == FLEET_LEADS
    assert set(counts.values()) == {1}
    # A handful of 429s at most, and together at >= 0.9 of the account's rate.
    accepted = sorted(r.arrived for r in server.requests if r.accepted)
    fleet_rate = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    seen = f"{fleet_rate:.2f} req/s, {server.statuses[429]} 429s"
    assert server.statuses[429] <= 3, seen
    assert fleet_rate >= 0.9 * FLEET_RATE, seen
    assert {r.shard for r in reports} == {(i, FLEET_WORKERS) for i in range(FLEET_WORKERS)}


# -- the command line -------------------------------------------------------------------


@pytest.mark.anyio
async def test_append_takes_its_slots_from_the_shared_schedule(
    redis_url: str, key: str, tmp_path: Path
) -> None:
    from redis.asyncio import Redis

    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(40)))
    redis = Redis.from_url(redis_url)
    try:
        assert await redis.hget(KEY_PREFIX + key, "tat") is None
        async with FakeRyngServer(access_token=TOKEN) as server:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
            env.update(
                RYNG_BASE_URL=server.base_url, RYNG_ACCESS_TOKEN=TOKEN, RYNG_REDIS_URL=redis_url
            )
            with anyio.fail_after(60):
                done = await anyio.run_process(
                    [sys.executable, "-m", "ryng_async", "append", "42", str(leads),
                     "--batch-size", "10", "--rate-limit", "50", "--redis-key", key],
                    env=env, check=False,
                )  # fmt: skip
            assert server.lead_count() == 40
        assert done.returncode == 0, done.stderr.decode()
        assert "at most 50 requests/s shared through Redis" in done.stderr.decode()
        # Its four requests took their slots from the key's schedule in Redis.
        assert await redis.hget(KEY_PREFIX + key, "tat") is not None
    finally:
        await redis.aclose()


@needs_binary
@pytest.mark.anyio
async def test_append_exits_4_when_redis_is_lost_mid_load(
    own_redis: RedisServer, key: str, tmp_path: Path
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(400)))
    report = tmp_path / "report.json"
    stopped_at: list[int] = []

    def stop_redis(request: object) -> None:
        if not stopped_at and server.received_requests >= 3:
            stopped_at.append(server.received_requests)
            own_redis.stop()

    async with FakeRyngServer(access_token=TOKEN, on_request=stop_redis) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
        env.update(RYNG_BASE_URL=server.base_url, RYNG_ACCESS_TOKEN=TOKEN)
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [sys.executable, "-m", "ryng_async", "append", "42", str(leads),
                 "--batch-size", "10", "--concurrency", "2", "--rate-limit", "20",
                 "--redis-url", own_redis.url, "--redis-key", key,
                 "--redis-max-outage", "0.5", "--report", str(report)],
                env=env, check=False,
            )  # fmt: skip
        received = server.received_requests
    err = done.stderr.decode()
    assert done.returncode == 4, err
    assert f"lost Redis at 127.0.0.1:{own_redis.port}" in err
    assert "stopping rather than sending unthrottled" in err
    # Nothing unlimited after the loss: at most the requests already given their slots.
    assert stopped_at
    assert received <= stopped_at[0] + 2
    document = json.loads(report.read_text())
    assert document["exit_code"] == 4
    assert document["skipped"] > 0


def _cli_env(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env.update(RYNG_BASE_URL=base_url, RYNG_ACCESS_TOKEN=TOKEN)
    return env


async def _append(leads: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-m", "ryng_async", "append", "42", str(leads), *args],
            env=env,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@needs_binary
@pytest.mark.anyio
async def test_append_exits_2_when_redis_refuses_the_password(
    locked_redis: RedisServer, tmp_path: Path
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(30)))
    report = tmp_path / "report.json"
    port = locked_redis.port
    async with FakeRyngServer(access_token=TOKEN) as server:
        code, out, err = await _append(
            leads, "--batch-size", "10", "--rate-limit", "50", "--report", str(report),
            "--redis-url", f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0",
            "--redis-fallback", "local", "--redis-workers", "2",
            env=_cli_env(server.base_url),
        )  # fmt: skip
        assert server.received_requests == 0
    assert code == 2, err
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 refused the credentials" in err
    assert "(exit 2)" in out
    assert "falling back" not in err
    assert WRONG_PASSWORD not in out + err
    assert TOKEN not in out + err
    document = json.loads(report.read_text())
    assert document["exit_code"] == 2
    assert WRONG_PASSWORD not in report.read_text()


def test_append_redis_fallback_local_needs_a_worker_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ryng_async.cli import main

    leads = tmp_path / "leads.csv"
    leads.write_text("number\n+919800000001\n")
    for name in [n for n in os.environ if n.startswith("RYNG_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RYNG_ACCESS_TOKEN", TOKEN)
    command = ["append", "42", str(leads), "--base-url", "http://127.0.0.1:9/"]
    command += ["--rate-limit", "40", "--redis-url", "redis://127.0.0.1:9/0"]
    assert main([*command, "--redis-fallback", "local"]) == 2
    err = capsys.readouterr().err
    assert "--redis-fallback local needs --redis-workers N or --shard I/N" in err
    monkeypatch.setenv("RYNG_REDIS_FALLBACK", "sometimes")
    with pytest.raises(SystemExit) as caught:
        main(command)
    assert caught.value.code == 2
    assert "RYNG_REDIS_FALLBACK='sometimes': must be fail or local" in capsys.readouterr().err


@pytest.mark.anyio
async def test_append_falls_back_to_its_share_with_redis_fallback_local(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(40)))
    report = tmp_path / "report.json"
    common = ["--batch-size", "10", "--rate-limit", "40", "--report", str(report)]
    common += ["--redis-key", "fleet"]
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = _cli_env(server.base_url)
        with _refusing_port() as port:
            dead = ["--redis-url", f"redis://127.0.0.1:{port}/0"]
            # A warning, then every lead at this worker's share of the rate.
            code, out, err = await _append(
                leads, *common, *dead, "--redis-fallback", "local", "--redis-workers", "4",
                env=env,
            )  # fmt: skip
            assert code == 0, err
            assert "every lead accepted (exit 0)" in out
            assert (
                "ryng-async append: warning: cannot reach Redis at 127.0.0.1:"
                f"{port} (db 0) for the shared limit 'fleet'" in err
            )
            assert "falling back to a local share of the rate: 10 requests/s (40 / 4" in err
            assert server.lead_count() == 40
        document = json.loads(report.read_text())
        assert document["accepted"] == document["total"] == 40


@pytest.mark.anyio
async def test_append_redis_fallback_local_takes_the_worker_count_from_shard(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(40)))
    report = tmp_path / "report.json"
    common = ["--batch-size", "10", "--rate-limit", "40", "--report", str(report)]
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = {**_cli_env(server.base_url), "RYNG_REDIS_FALLBACK": "local"}
        with _refusing_port() as port:
            dead = ["--redis-url", f"redis://127.0.0.1:{port}/0"]
            # The worker count is the N of --shard I/N; its share, half the file, is sent.
            # With --log-format json, the warning is one of the JSON lines.
            code, _, err = await _append(
                leads, *common, *dead, "--shard", "0/2", "--log-format", "json", env=env
            )
            assert code == 0, err
            logs = [json.loads(line) for line in err.splitlines()]
            warnings = [e for e in logs if e["event"] == "log" and e["level"] == "warning"]
            assert len(warnings) == 1, err
            assert warnings[0]["logger"] == "ryng_async.redis"
            assert "local share of the rate: 20 requests/s (40 / 2" in warnings[0]["message"]
            received = server.lead_count()
        document = json.loads(report.read_text())
        assert 0 < document["accepted"] == received < 40
        assert document["failed"] == document["unknown"] == document["skipped"] == 0


# -- when Redis fails ------------------------------------------------------------------


@pytest.mark.anyio
async def test_unreachable_at_start_stops_before_sending() -> None:
    with _refusing_port() as port:
        await _unreachable_at_start_stops_before_sending(
            f"redis://:s3cret-password@127.0.0.1:{port}/0"
        )


async def _unreachable_at_start_stops_before_sending(dead: str) -> None:
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RedisLimiter(dead, "nowhere", 10, timeout=0.5) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):
        with pytest.raises(
            RedisLimiterError, match=r"cannot reach Redis at 127\.0\.0\.1"
        ) as caught:
            await client.bulk_append("42", _leads(50), batch_size=10)
    assert "s3cret" not in str(caught.value)
    assert "nothing was sent" in str(caught.value)
    assert "pass fallback='local' with expected_workers=" in str(caught.value)
    report = caught.value.report
    _check_invariant(report)
    assert report.accepted == 0
    assert report.skipped == report.total > 0
    assert server.received_requests == 0


@pytest.mark.anyio
async def test_fallback_to_a_local_share(caplog: pytest.LogCaptureFixture) -> None:
    with _refusing_port() as port:
        await _fallback_to_a_local_share(f"redis://127.0.0.1:{port}/0", caplog)


async def _fallback_to_a_local_share(dead: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ryng_async")
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RedisLimiter(
            dead, "nowhere", 40, fallback="local", expected_workers=4, timeout=0.5
        ) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):
        report = await client.bulk_append("42", _leads(150), batch_size=10)
    assert report.ok
    assert shared.local
    assert shared.rate == 10  # 40 / 4 workers, never unlimited
    # 15 requests: unpaced (or paced at the fleet's 40/s) they would all fall within one
    # second; at 10/s no one-second window holds more than the rate (+1 edge).
    assert server.received_requests == 15
    assert server.max_requests_per_window(1.0) <= 11
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("falling back to a local share" in m and "10 requests/s" in m for m in warnings)


@needs_binary
@pytest.mark.anyio
async def test_redis_lost_mid_load_stops_with_the_rest_skipped(
    own_redis: RedisServer, key: str
) -> None:
    concurrency = 4
    sent_when_stopped: list[int] = []
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RedisLimiter(own_redis.url, key, 50, max_outage=0.5) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):

        def stop_redis(progress: object) -> None:
            if not sent_when_stopped and server.received_requests >= 10:
                sent_when_stopped.append(server.received_requests)
                own_redis.stop()

        with pytest.raises(RedisLimiterError, match=r"lost Redis at 127\.0\.0\.1") as caught:
            await client.bulk_append(
                "42",
                _leads(2000),
                batch_size=10,
                concurrency=concurrency,
                on_progress=stop_redis,
            )
    report = caught.value.report
    _check_invariant(report)
    assert report.stopped_early
    assert report.accepted >= 100
    assert report.skipped > 0
    assert report.failed == report.unknown == 0
    # Nothing went unthrottled: only requests already past the limiter were sent.
    assert server.received_requests <= sent_when_stopped[0] + concurrency
    assert server.lead_count() == report.accepted
    assert "stopping rather than sending unthrottled" in str(caught.value)


@needs_binary
@pytest.mark.anyio
async def test_redis_back_within_max_outage_resumes(
    own_redis: RedisServer, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ryng_async")
    restarted = threading.Event()

    def bounce() -> None:
        own_redis.stop()
        time.sleep(0.3)  # the outage itself
        own_redis.start()
        restarted.set()

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RedisLimiter(own_redis.url, key, 100, max_outage=20) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):
        bounced: list[threading.Thread] = []

        def on_progress(progress: object) -> None:
            if server.received_requests >= 10 and not bounced:
                bounced.append(threading.Thread(target=bounce, daemon=True))
                bounced[0].start()

        report = await client.bulk_append(
            "42", _leads(600), batch_size=10, concurrency=4, on_progress=on_progress
        )
    assert restarted.is_set()
    assert report.ok
    assert server.lead_count() == 600
    assert any("lost Redis" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_redis_error_is_not_retried(redis_url: str, key: str) -> None:
    from redis.asyncio import Redis

    other = Redis.from_url(redis_url)
    try:
        # The documented key of the shared state, holding something else.
        await other.set(f"ryng_async:rate:{key}", "not a hash")
        async with RedisLimiter(redis_url, key, 10) as shared:
            with pytest.raises(RedisLimiterError, match="answered an error"):
                await shared.acquire()
        await other.delete(f"ryng_async:rate:{key}")
    finally:
        await other.aclose()


@needs_binary
@pytest.mark.anyio
async def test_a_refused_password_is_a_configuration_error(locked_redis: RedisServer) -> None:
    port = locked_redis.port
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RedisLimiter(
            f"redis://:{WRONG_PASSWORD}@127.0.0.1:{port}/0",
            "locked",
            10,
            fallback="local",  # a refused password is no outage: never a fallback
            expected_workers=2,
        ) as shared,
        RyngClient(base_url=server.base_url, access_token=TOKEN, limiter=shared) as client,
    ):
        with pytest.raises(ConfigurationError) as caught:
            await client.bulk_append("42", _leads(30), batch_size=10)
        assert not shared.local
    error = caught.value
    assert RedisAccessError.__bases__ == (RedisLimiterError, ConfigurationError)
    assert isinstance(error, RedisAccessError)
    assert isinstance(error, RedisLimiterError)  # what `except RedisLimiterError` catches
    text = str(error)
    assert f"Redis at redis://:***@127.0.0.1:{port}/0 refused the credentials" in text
    assert "fix the user and password in the Redis URL" in text
    assert WRONG_PASSWORD not in text
    assert TOKEN not in text
    _check_invariant(error.report)
    assert error.report.skipped == error.report.total == 30
    assert server.received_requests == 0


@needs_binary
@pytest.mark.anyio
async def test_no_password_or_an_acl_user_without_rights_is_a_configuration_error(
    locked_redis: RedisServer,
) -> None:
    from redis.asyncio import Redis

    port = locked_redis.port
    # No password where Redis needs one (NOAUTH).
    async with RedisLimiter(locked_redis.url, "locked", 10) as shared:
        with pytest.raises(RedisAccessError, match="refused the credentials"):
            await shared.acquire()
    # ACL users: one with the rights the module's docstring lists, one without the keys,
    # one without a command its scripts run (Redis 7.0 answers that one with a plain ERR).
    admin = Redis.from_url(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
    rights = ["+evalsha", "+script|load", "+hget", "+hmget", "+hset", "+del", "+pexpire", "+time"]
    try:
        for user, commands, keys in [
            ("enough", rights, f"~{KEY_PREFIX}*"),
            ("nokeys", rights, "~other:*"),
            ("nohset", [c for c in rights if c != "+hset"], f"~{KEY_PREFIX}*"),
        ]:
            await admin.execute_command("ACL", "SETUSER", user, "on", ">pw-0123", *commands, keys)
    finally:
        await admin.aclose()
    async with RedisLimiter(f"redis://enough:pw-0123@127.0.0.1:{port}/0", "acl", 10) as shared:
        await shared.acquire()
        await shared.reset()
        assert (await shared.state()).factor == 1
    for user in ("nokeys", "nohset"):
        url = f"redis://{user}:pw-0123@127.0.0.1:{port}/0"
        async with RedisLimiter(url, "acl", 10) as shared:
            with pytest.raises(ConfigurationError) as caught:
                await shared.acquire()
        text = str(caught.value)
        assert isinstance(caught.value, RedisAccessError), text
        assert f"Redis at redis://{user}:***@127.0.0.1:{port}/0 refused the rights" in text
        assert f"~{KEY_PREFIX}*" in text
        assert "pw-0123" not in text


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError, match="rate must be a finite number > 0"):
        RedisLimiter("redis://127.0.0.1/0", "k", 0)
    with pytest.raises(ConfigurationError, match="needs expected_workers"):
        RedisLimiter("redis://127.0.0.1/0", "k", 10, fallback="local")
    with pytest.raises(ConfigurationError, match="key must be a non-empty string"):
        RedisLimiter("redis://127.0.0.1/0", "", 10)
    with pytest.raises(ConfigurationError, match="cannot use this URL"):
        RedisLimiter("http://127.0.0.1/0", "k", 10)
    with pytest.raises(ConfigurationError, match="fallback must be"):
        RedisLimiter("redis://127.0.0.1/0", "k", 10, fallback="remote")  # type: ignore[arg-type]


def test_import_without_the_extra_names_it() -> None:
    code = "import sys; sys.modules['redis'] = None; import ryng_async.redis"
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode != 0
    assert "pip install 'ryng-async[redis]'" in done.stderr
