"""A fleet of worker processes against one account's limit: shared (Redis) or each its own.

1, 2 and 4 worker processes, started the same way, each load their shard
(``shard=(i, n)``) of one input into a server (the fake one, in its own process) that
accepts ``RATE`` requests in any one-second window and answers 429 with ``Retry-After``
beyond. Two ways to limit them, each at the account's rate:

- ``RedisLimiter(rate=RATE)``: one limit for the fleet, shared through a redis-server
  started for the benchmark on 127.0.0.1;
- ``rate_limit=RATE`` in every worker: the in-process `AdaptiveLimiter`, one per worker,
  which together send ``n`` times the rate and learn from the 429s.

From the server's record: accepted requests per second over the load (first to last
arrival) and its share of the limit, the most requests (429s included) that arrived in any
one-second window, 429s answered, and leads accepted of the input.

Workers are started and connected first, then released together (a line on stdin), so the
timing starts with every worker ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._harness import BenchResult, Context, Table, Target, alternate_async, median
from ._server import CAMPAIGN, TOKEN, ServerProcess

NAME = "fleet"
TITLE = "A fleet of workers under one rate limit (Redis) or each its own"
RATE = 25
BATCH = 10
CONCURRENCY = 4
SHARED = "RedisLimiter (shared)"
LOCAL = "rate_limit= in each worker"
_ROOT = Path(__file__).resolve().parent.parent


# -- one worker (a child process) ------------------------------------------------------


async def _work(args: list[str]) -> dict[str, Any]:
    from ryng_async import RyngClient

    mode, base_url, redis_url, key = args[:4]
    index, count, requests = (int(a) for a in args[4:7])
    leads = ({"number": f"+9198{i:08d}"} for i in range(requests * BATCH))
    limiter = None
    if mode == "shared":
        from ryng_async.redis import RedisLimiter

        limiter = RedisLimiter(redis_url, key, RATE)
        await limiter.state()  # connected before the start
    try:
        async with RyngClient(base_url=base_url, access_token=TOKEN, limiter=limiter) as client:
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            began = time.perf_counter()
            report = await client.bulk_append(
                CAMPAIGN,
                leads,
                batch_size=BATCH,
                concurrency=CONCURRENCY,
                rate_limit=None if limiter is not None else RATE,
                shard=(index, count),
            )
            seconds = time.perf_counter() - began
    finally:
        if limiter is not None:
            await limiter.aclose()
    return {
        "total": report.total,
        "accepted": report.accepted,
        "failed": report.failed + report.unknown + report.skipped,
        "seconds": seconds,
    }


def _worker_main(args: list[str]) -> None:
    print(json.dumps(asyncio.run(_work(args))), flush=True)


# -- a redis-server of the benchmark's own -----------------------------------------------


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, stopped by its pid."""

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary is not None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--logfile", os.devnull),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        # Bounded: until it answers or 20 s have passed.
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise
                time.sleep(0.05)
            finally:
                client.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


# -- the parent --------------------------------------------------------------------------


async def _fleet(
    server: ServerProcess, redis_url: str, mode: str, workers: int, requests: int, run: int
) -> dict[str, Any]:
    await server.areset()
    key = f"bench-fleet-{os.getpid()}-{run}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = [mode, server.base_url, redis_url, key, "0", str(workers), str(requests)]
    processes = []
    for index in range(workers):
        args[4] = str(index)
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.bench_fleet",
                "--worker",
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=_ROOT,
                env=env,
            )
        )
    try:
        async with asyncio.timeout(requests / RATE * 20 + 60):
            for process in processes:
                assert process.stdout is not None
                assert (await process.stdout.readline()).strip() == b"ready"
            for process in processes:
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            outcomes = []
            for process in processes:
                assert process.stdout is not None
                outcomes.append(json.loads(await process.stdout.readline()))
                await process.wait()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    stats = await server.astats()
    arrivals = stats["arrivals"]
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    return {
        "accepted_per_s": (stats["accepted_requests"] - 1) / span,
        "sent_per_s": (len(arrivals) - 1) / span,
        "max_per_1s": stats["max_per_1s_window"],
        "rejected_429": stats["statuses"].get("429", 0),
        "leads_total": sum(o["total"] for o in outcomes),
        "leads_accepted": sum(o["accepted"] for o in outcomes),
        "seconds": max(o["seconds"] for o in outcomes),
    }


def run(ctx: Context) -> BenchResult:
    missing = [
        name
        for name, ok in (
            ("redis-server (apt-get install redis-server)", shutil.which("redis-server")),
            ("redis-py (pip install 'ryng-async[redis]')", _has_redis_py()),
        )
        if not ok
    ]
    if missing:
        return BenchResult(
            name=NAME,
            title=TITLE,
            description=__doc__ or "",
            notes=[f"not run: {', '.join(missing)} missing"],
        )
    return asyncio.run(_run(ctx))


def _has_redis_py() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return True


async def _run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(2)
    seconds = ctx.size(8.0, 1.0)
    requests = int(RATE * seconds)
    fleets = ctx.size((1, 2, 4), (2,))
    runs = iter(range(1 << 30))
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with RedisServer() as redis_server, ServerProcess(rate_limit=RATE) as server:
        for workers in fleets:
            contenders = {
                mode: (
                    lambda mode=mode, workers=workers: _fleet(
                        server, redis_server.url, mode, workers, requests, next(runs)
                    )
                )
                for mode in ("shared", "local")
            }

            async def pause() -> None:
                await asyncio.sleep(1.1)  # the server's window empties between runs

            measured = await alternate_async(contenders, rounds, between=pause)
            for mode, runs_of_mode in measured.items():
                results[(workers, mode)] = runs_of_mode

    def med(workers: int, mode: str, key: str) -> float:
        return median([r[key] for r in results[(workers, mode)]])

    table = Table(
        f"{requests} requests of {BATCH} leads per load, server limit {RATE}/s (429 beyond), "
        f"concurrency {CONCURRENCY} per worker, median of {rounds} rounds",
        [
            "workers",
            "limiter",
            "limiters allow req/s",
            "accepted req/s",
            "accepted / limit",
            "sent req/s",
            "max in any 1 s",
            "max / limit",
            "429s",
            "leads accepted",
            "run s",
        ],
    )
    for workers in fleets:
        for mode, name in (("shared", SHARED), ("local", LOCAL)):
            allowed = RATE / 1.05 if mode == "shared" else RATE * workers
            table.add(
                str(workers),
                name,
                f"{allowed:.1f}",
                f"{med(workers, mode, 'accepted_per_s'):.1f}",
                f"{med(workers, mode, 'accepted_per_s') / RATE:.2f}x",
                f"{med(workers, mode, 'sent_per_s'):.1f}",
                f"{med(workers, mode, 'max_per_1s'):.0f}",
                f"{med(workers, mode, 'max_per_1s') / RATE:.2f}x",
                f"{med(workers, mode, 'rejected_429'):.0f}",
                f"{med(workers, mode, 'leads_accepted'):.0f} of {requests * BATCH}",
                f"{med(workers, mode, 'seconds'):.2f}",
            )
    top = max(fleets)
    targets = [
        Target(
            f"{top} workers sharing a RedisLimiter: accepted rate / limit",
            med(top, "shared", "accepted_per_s") / RATE,
            0.9,
            note=f"each its own limiter: {med(top, 'local', 'accepted_per_s') / RATE:.2f}x",
        ),
        Target(
            f"{top} workers sharing a RedisLimiter: 429s",
            med(top, "shared", "rejected_429"),
            3,
            op="<=",
            unit="429s",
            note=f"each its own limiter: {med(top, 'local', 'rejected_429'):.0f}",
        ),
        Target(
            f"{top} workers sharing a RedisLimiter: max requests in any 1 s / limit",
            med(top, "shared", "max_per_1s") / RATE,
            1.0,
            op="<=",
            note=f"each its own limiter: {med(top, 'local', 'max_per_1s') / RATE:.2f}x",
        ),
    ]
    notes = [
        "The shared limiter paces the fleet at rate / (1 + margin) = "
        f"{RATE / 1.05:.1f} req/s (margin 0.05 s, its default): the headroom that keeps "
        "a sliding-window server's count under the limit despite the jitter between "
        "processes.",
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table],
        targets=targets,
        notes=notes,
        data={
            "rate": RATE,
            "requests": requests,
            "rounds": rounds,
            "runs": {f"{w} {m}": r for (w, m), r in results.items()},
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker_main(sys.argv[2:])
