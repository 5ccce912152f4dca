"""Rate accuracy: what the server sees from a client limited to 50 requests/s.

The SDK (``RyngClient(rate_limit=50)``, ``bulk_append`` at concurrency 8) runs beside bare
aiolimiter used the way its README shows: one ``AsyncLimiter(50, 1)``, ``async with
limiter:`` around each aiohttp post, every batch gathered at once. The server (the
default one, validating every lead as the real API does) records each request's arrival
time; from them: the most requests in any 1 s window (the first second included) over the
limit, and the steady rate, ``(requests - 1) / (last - first arrival)``, over the limit. A
second table repeats one round against a server enforcing the same 50/s (429 beyond) to
show what a start burst costs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec
from aiolimiter import AsyncLimiter

from . import _clients, _data
from ._harness import BenchResult, Context, Stopwatch, Table, Target, alternate_async, median
from ._server import TOKEN, ServerProcess

NAME = "rate"
TITLE = "Rate limiter accuracy (rate_limit = 50 requests/s)"
SDK = "SDK rate_limit=50"
BARE = "aiolimiter AsyncLimiter(50, 1)"
RATE = 50
BATCH = 10
CONCURRENCY = 8


async def _aiolimiter(url: str, batches: list[list[dict[str, Any]]], cap: float) -> int:
    """The obvious aiolimiter loop; return how many requests were answered 200."""
    limiter = AsyncLimiter(RATE, 1)
    encoder = msgspec.json.Encoder()
    accepted = 0
    async with aiohttp.ClientSession(headers={"x-access-token": TOKEN}) as session:

        async def post(batch: list[dict[str, Any]]) -> None:
            nonlocal accepted
            async with limiter:
                body = encoder.encode(_data.envelope(batch))
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    accepted += response.status == 200

        try:
            async with asyncio.timeout(cap):
                await asyncio.gather(*(post(batch) for batch in batches))
        except TimeoutError:
            pass
    return accepted


def _summary(stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    arrivals = sorted(stats["arrivals"])
    n = len(arrivals)
    span = arrivals[-1] - arrivals[0] if n > 1 else 0.0
    return {
        "requests": n,
        "max_per_1s": stats["max_per_1s_window"],
        "first_second": sum(1 for t in arrivals if t < 1.0),
        "steady": (n - 1) / span if span > 0 else float("nan"),
        "rejected_429": stats["statuses"].get("429", 0),
        "accepted_requests": stats["accepted_requests"],
        "seconds": seconds,
    }


def _contenders(server: ServerProcess, requests: int, cap: float) -> dict[str, Any]:
    batches = _data.chunks(_data.rows(requests * BATCH), BATCH)
    leads = [lead for batch in batches for lead in batch]

    async def sdk() -> dict[str, Any]:
        await server.areset()
        run = await _clients.sdk(
            server.base_url,
            leads,
            batch_size=BATCH,
            concurrency=CONCURRENCY,
            cap=cap,
            rate_limit=RATE,
        )
        return _summary(await server.astats(), run.seconds)

    async def bare() -> dict[str, Any]:
        await server.areset()
        with Stopwatch() as watch:
            await _aiolimiter(server.append_url, batches, cap)
        return _summary(await server.astats(), watch.seconds)

    return {SDK: sdk, BARE: bare}


def run(ctx: Context) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(3)
    seconds = ctx.size(5.0, 0.6)
    requests = int(RATE * seconds)
    cap = seconds * 3 + 2
    with ServerProcess() as server:
        results = await alternate_async(_contenders(server, requests, cap), rounds)
    with ServerProcess(rate_limit=RATE) as strict:
        enforced = await alternate_async(_contenders(strict, requests, cap), 1)

    def med(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    table = Table(
        f"{requests} requests of {BATCH} leads, server not limiting, median of {rounds} rounds",
        [
            "contender",
            "max in any 1 s",
            "in the first 1 s",
            "max / limit",
            "steady req/s",
            "steady / limit",
            "run s",
        ],
    )
    for name in results:
        table.add(
            name,
            f"{med(name, 'max_per_1s'):.0f}",
            f"{med(name, 'first_second'):.0f}",
            f"{med(name, 'max_per_1s') / RATE:.2f}x",
            f"{med(name, 'steady'):.1f}",
            f"{med(name, 'steady') / RATE:.3f}x",
            f"{med(name, 'seconds'):.2f}",
        )
    strict_table = Table(
        f"The same load, one round, against a server enforcing {RATE}/s (429 beyond)",
        ["contender", "requests seen", "answered 429", "accepted", "run s"],
    )
    for name, (summary,) in enforced.items():
        strict_table.add(
            name,
            str(summary["requests"]),
            str(summary["rejected_429"]),
            f"{summary['accepted_requests']} of {requests}",
            f"{summary['seconds']:.2f}",
        )
    targets = [
        Target(
            "SDK max requests in any 1 s window / rate_limit",
            med(SDK, "max_per_1s") / RATE,
            1.05,
            op="<=",
            note=f"aiolimiter: {med(BARE, 'max_per_1s') / RATE:.2f}x",
        ),
        Target(
            "SDK steady rate / rate_limit",
            med(SDK, "steady") / RATE,
            0.97,
            note=f"aiolimiter: {med(BARE, 'steady') / RATE:.2f}x",
        ),
    ]
    notes = [
        f"aiolimiter (not a target): max in 1 s {med(BARE, 'max_per_1s') / RATE:.2f}x the "
        f"limit, steady {med(BARE, 'steady') / RATE:.2f}x: its bucket starts full, so "
        f"{RATE} requests leave at once."
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table, strict_table],
        targets=targets,
        notes=notes,
        data={
            "rate": RATE,
            "requests": requests,
            "rounds": rounds,
            "runs": results,
            "enforced": {name: runs[0] for name, runs in enforced.items()},
        },
    )
