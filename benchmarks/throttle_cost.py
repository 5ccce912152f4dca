"""What random 429s cost a bulk load with no rate limit set, and what a real limit teaches.

``python -m benchmarks.throttle_cost [--requests 2000] [--rounds 3]``

Issue 11, defect 3. A FakeRyngServer runs in its own process; ``bulk_append`` (batches of
10 leads, concurrency 8, no ``rate_limit``) loads into it, rounds alternating between:

- no faults;
- 429 on 2% of requests, drawn at random, with ``Retry-After: 0`` (FaultPlan's default);
- the same with ``Retry-After: 1`` (each one pauses the whole client for a second, so this
  row shows the pauses' cost, not the limiter's).

It prints the median requests per second of each, and their ratio to the first (target:
2% random 429s cost at most 20%, a ratio >= 0.80). Then one load against a server that
enforces 50 requests a second (429 with ``Retry-After`` beyond): the ceiling the client
learned and the rate it achieved (before this fix: about 46.6/s).

Not a ``bench_*`` module: ``python -m benchmarks`` does not run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from ryng_async import RyngClient

TOKEN = "bench-token"

_SERVER = r"""
import asyncio, json, sys
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

async def main() -> None:
    share, retry_after, limit = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    plan = FaultPlan(
        seed=7,
        rates={Fault.RATE_LIMIT: share} if share else {},
        retry_after=None if retry_after == "none" else retry_after,
    )
    server = FakeRyngServer(
        access_token=sys.argv[4], faults=plan, record=False, validate_leads=False,
        rate_limit=None if limit == "none" else float(limit),
    )
    await server.start()
    print(json.dumps({"port": server.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(json.dumps({"statuses": {str(k): v for k, v in server.statuses.items()}}), flush=True)

asyncio.run(main())
"""


async def one_load(
    requests: int, *, share: float = 0.0, retry_after: str = "0", limit: str = "none"
) -> dict[str, Any]:
    """Run one load against a fresh server process; return its figures."""
    server = subprocess.Popen(  # noqa: ASYNC220 - a short-lived start, our own interpreter
        [sys.executable, "-c", _SERVER, str(share), retry_after, limit, TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None
    assert server.stdout is not None
    try:
        port = json.loads(server.stdout.readline())["port"]
        leads = [{"number": f"+9198{i:08d}"} for i in range(requests * 10)]
        async with RyngClient(
            base_url=f"http://127.0.0.1:{port}", access_token=TOKEN, random_seed=1
        ) as client:
            started = time.perf_counter()
            report = await client.bulk_append("42", leads, batch_size=10, concurrency=8)
            seconds = time.perf_counter() - started
            ceiling = getattr(client.limiter, "ceiling", None)
    finally:
        server.stdin.close()
        statuses = json.loads(server.stdout.readline() or "{}").get("statuses", {})
        server.wait(timeout=30)
    assert report.accepted == len(leads), str(report)
    return {
        "rate": requests / seconds,
        "seconds": seconds,
        "ceiling": ceiling,
        "429s": statuses.get("429", 0),
    }


async def main(argv: list[str] | None = None) -> None:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throttle_cost")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit-requests", type=int, default=1000)
    args = parser.parse_args(argv)
    setups: dict[str, dict[str, Any]] = {
        "no 429": {},
        "2% 429, Retry-After: 0": {"share": 0.02},
        "2% 429, Retry-After: 1": {"share": 0.02, "retry_after": "1"},
    }
    rates: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(args.rounds):
        for name, options in setups.items():
            run = await one_load(args.requests, **options)
            rates[name].append(run["rate"])
            print(f"  {name:24s} {run['rate']:7.1f} req/s  ({run['429s']} 429s)", flush=True)
    base = statistics.median(rates["no 429"])
    print(f"\n{args.requests} requests of 10 leads, concurrency 8, median of {args.rounds}:")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:24s} {median:7.1f} req/s   ratio {median / base:.2f}")
    limited = await one_load(args.limit_requests, limit="50")
    print(
        f"\nserver enforcing 50/s: learned ceiling {limited['ceiling']}, achieved "
        f"{limited['rate']:.1f} req/s, {limited['429s']} 429s"
    )


if __name__ == "__main__":
    asyncio.run(main())
