"""Latency-bound: the fake server answers each request after 50 ms.

With ``c`` requests in flight, each of ``batch`` leads and each taking at least the
latency, Little's law bounds the rate at ``c * batch / latency`` leads/s. A client that
keeps its pipe full gets close to it; the aiohttp + msgspec loop runs beside the SDK to
show what this machine allows (the server also spends CPU decoding every body, so at
high concurrency the bound can exceed what one server process can take in).
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _clients, _data
from ._harness import BenchResult, Context, Table, Target, alternate_async, median, ratio
from ._server import ServerProcess

NAME = "latency"
TITLE = "Latency-bound throughput (server latency 50 ms)"
SDK = "SDK bulk_append"
BARE = "aiohttp + msgspec"
BATCH = 1000
LATENCY = 0.05
CONCURRENCY = (1, 4, 8, 16, 64)
TARGETED = (8, 64)


def run(ctx: Context) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(5)
    waves = ctx.size(16, 3)  # each request slot is reused this many times per run
    concurrency = ctx.size(CONCURRENCY, (8,))
    cap = ctx.size(10.0, 3.0)
    base = _data.rows(min(100_000, BATCH * waves * max(concurrency)))
    runs: dict[str, dict[int, list[float]]] = {SDK: {}, BARE: {}}
    errors = dict.fromkeys(runs, 0)
    with ServerProcess(latency=LATENCY) as server:
        for c in concurrency:
            total = BATCH * waves * c
            leads = (base * (total // len(base) + 1))[:total]
            batches = _data.chunks(leads, BATCH)

            async def sdk(c: int = c, leads: Any = leads) -> _clients.LoadRun:
                return await _clients.sdk(
                    server.base_url, leads, batch_size=BATCH, concurrency=c, cap=cap
                )

            async def bare(c: int = c, batches: Any = batches) -> _clients.LoadRun:
                return await _clients.aiohttp_msgspec(
                    server.append_url, batches, concurrency=c, cap=cap
                )

            results = await alternate_async({SDK: sdk, BARE: bare}, rounds)
            for name, load_runs in results.items():
                runs[name][c] = [r.rate for r in load_runs]
                errors[name] += sum(r.errors for r in load_runs)

    bound = {c: c * BATCH / LATENCY for c in concurrency}
    medians = {name: {c: median(v) for c, v in by_c.items()} for name, by_c in runs.items()}
    table = Table(
        f"Leads/s, median of {rounds} rounds ({waves} requests per slot, batch {BATCH})",
        ["concurrency", "Little's bound", SDK, "SDK / bound", BARE, f"{BARE} / bound"],
    )
    for c in concurrency:
        table.add(
            str(c),
            f"{bound[c]:,.0f}",
            f"{medians[SDK][c]:,.0f}",
            f"{ratio(medians[SDK][c], bound[c]):.2f}x",
            f"{medians[BARE][c]:,.0f}",
            f"{ratio(medians[BARE][c], bound[c]):.2f}x",
        )
    targets = [
        Target(
            f"SDK / Little's bound, concurrency {c}",
            ratio(medians[SDK][c], bound[c]),
            0.9,
            note=f"{BARE} reaches {ratio(medians[BARE][c], bound[c]):.2f}x",
        )
        for c in TARGETED
        if c in concurrency
    ]
    notes = [
        "each run sends concurrency * "
        f"{waves} batches, so a perfect client takes {waves} * latency; errors: "
        + ", ".join(f"{name} {count}" for name, count in errors.items())
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table],
        targets=targets,
        notes=notes,
        data={
            "concurrency": list(concurrency),
            "batch_size": BATCH,
            "latency": LATENCY,
            "rounds": rounds,
            "bound": [bound[c] for c in concurrency],
            "runs": {name: {str(c): v for c, v in by_c.items()} for name, by_c in runs.items()},
            "median": {name: [medians[name][c] for c in concurrency] for name in runs},
        },
    )
