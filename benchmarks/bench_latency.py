"""Latency-bound: the fake server answers each request after 50 ms.

With ``c`` requests in flight, each of ``batch`` leads and each taking at least the
latency, Little's law bounds the rate at ``c * batch / latency`` leads/s. A client that
keeps its pipe full gets close to it; the aiohttp + msgspec loop runs beside the SDK to
show what this machine allows. The server is the default one, validating every lead as
the real API does. At high concurrency the bound nears what either process can do on its
one core: the second table gives each side's CPU per lead and how busy it was (CPU
seconds over wall seconds; 100% is one core saturated).
"""

from __future__ import annotations

import asyncio
from functools import partial
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
    # Per contender and concurrency: medians of client / server CPU us per lead and busy share.
    cpu: dict[str, dict[int, dict[str, float]]] = {SDK: {}, BARE: {}}
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

            results = await alternate_async(
                {
                    SDK: partial(_clients.measured, server, sdk),
                    BARE: partial(_clients.measured, server, bare),
                },
                rounds,
            )
            for name, load_runs in results.items():
                runs[name][c] = [r.rate for r in load_runs]
                errors[name] += sum(r.errors for r in load_runs)
                cpu[name][c] = {
                    "client_us": median([r.client_us_per_lead for r in load_runs]),
                    "server_us": median([r.server_us_per_lead for r in load_runs]),
                    "client_busy": median([ratio(r.client_cpu, r.seconds) for r in load_runs]),
                    "server_busy": median([ratio(r.server_cpu, r.seconds) for r in load_runs]),
                }

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
    load = Table(
        "CPU per lead (us, client / server) and how busy each process was (CPU s / wall s)",
        [
            "concurrency",
            f"{SDK} us/lead",
            f"{SDK} busy",
            f"{BARE} us/lead",
            f"{BARE} busy",
            "client us/lead the bound allows",
        ],
    )
    for c in concurrency:
        cells = []
        for name in (SDK, BARE):
            m = cpu[name][c]
            cells += [
                f"{m['client_us']:.2f} / {m['server_us']:.2f}",
                f"{m['client_busy']:.0%} / {m['server_busy']:.0%}",
            ]
        load.add(str(c), *cells, f"{1e6 / bound[c]:.2f}")

    def cpu_note(c: int) -> str:
        m = cpu[SDK][c]
        return (
            f"{BARE} reaches {ratio(medians[BARE][c], bound[c]):.2f}x; SDK client "
            f"{m['client_us']:.2f} us/lead, {m['client_busy']:.0%} busy "
            f"(the bound allows {1e6 / bound[c]:.2f} us/lead)"
        )

    targets = [
        Target(
            f"SDK / Little's bound, concurrency {c}",
            ratio(medians[SDK][c], bound[c]),
            0.9,
            note=cpu_note(c),
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
        tables=[table, load],
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
            "cpu": {name: {str(c): v for c, v in by_c.items()} for name, by_c in cpu.items()},
        },
    )
