"""End to end: leads/s posted to the fake server, SDK against hand-written loops.

No faults, no latency, batches of 1,000, concurrency 1, 4, 8, 16, 64. The server runs in
its own process; on a 2-core machine client and server get one core each, so whichever
side spends more CPU per lead sets the pace.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from . import _clients, _data
from ._harness import BenchResult, Context, Table, Target, alternate_async, median, ratio, spread
from ._server import ServerProcess

NAME = "throughput"
TITLE = "End-to-end throughput (no latency, no faults)"
SDK = "SDK bulk_append"
BATCH = 1000
CONCURRENCY = (1, 4, 8, 16, 64)


def run(ctx: Context) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(11)
    total = ctx.size(300_000, 20_000)
    cap = ctx.size(10.0, 3.0)
    concurrency = ctx.size(CONCURRENCY, (1, 16))
    base = _data.rows(min(total, 100_000))
    leads = base * (total // len(base))
    batches = _data.chunks(leads, BATCH)

    runs: dict[str, dict[int, list[float]]] = {SDK: {}, **{n: {} for n in _clients.BASELINES}}
    client_cpu: dict[str, dict[int, float]] = {name: {} for name in runs}
    server_cpu: dict[str, dict[int, float]] = {name: {} for name in runs}
    errors = dict.fromkeys(runs, 0)
    client_leads = 0
    with ServerProcess() as server:
        for c in concurrency:

            def sdk(c: int = c) -> Any:
                return _clients.sdk(
                    server.base_url, leads, batch_size=BATCH, concurrency=c, cap=cap
                )

            contenders: dict[str, Any] = {SDK: sdk}
            for name, baseline in _clients.BASELINES.items():

                def loop(baseline: Any = baseline, c: int = c) -> Any:
                    return baseline(server.append_url, batches, concurrency=c, cap=cap)

                contenders[name] = loop
            results = await alternate_async(
                {
                    name: partial(_clients.measured, server, work)
                    for name, work in contenders.items()
                },
                rounds,
            )
            for name, load_runs in results.items():
                runs[name][c] = [r.rate for r in load_runs]
                client_cpu[name][c] = median([r.client_us_per_lead for r in load_runs])
                server_cpu[name][c] = median([r.server_us_per_lead for r in load_runs])
                errors[name] += sum(r.errors for r in load_runs)
                client_leads += sum(r.leads for r in load_runs)
        stats = await server.astats()

    medians = {name: {c: median(v) for c, v in by_c.items()} for name, by_c in runs.items()}
    table = Table(
        f"Leads/s, median of {rounds} rounds ({total:,} leads a run, batch {BATCH})",
        ["concurrency", *runs, *(f"SDK / {n}" for n in _clients.BASELINES)],
    )
    for c in concurrency:
        rates = [medians[name][c] for name in runs]
        ratios = [ratio(medians[SDK][c], medians[n][c]) for n in _clients.BASELINES]
        table.add(str(c), *(f"{r:,.0f}" for r in rates), *(f"{x:.2f}x" for x in ratios))
    noise = Table(
        "Spread of the rounds, (max - min) / median",
        ["concurrency", *runs],
    )
    for c in concurrency:
        noise.add(str(c), *(f"{spread(runs[name][c]):.0%}" for name in runs))

    cpu = Table(
        "CPU microseconds per lead, client / server process (median; robust to other load)",
        ["concurrency", *runs, "SDK client CPU / aiohttp + msgspec"],
    )
    for c in concurrency:
        cpu.add(
            str(c),
            *(f"{client_cpu[name][c]:.2f} / {server_cpu[name][c]:.2f}" for name in runs),
            f"{ratio(client_cpu[SDK][c], client_cpu['aiohttp + msgspec'][c]):.2f}x",
        )

    at = 16 if 16 in concurrency else concurrency[-1]
    sdk_at = medians[SDK][at]
    worst = min(concurrency, key=lambda c: ratio(medians[SDK][c], medians["aiohttp + msgspec"][c]))

    def cpu_note(baseline: str, c: int) -> str:
        # Client CPU per lead: the same comparison, far less sensitive to other load.
        return f"client CPU per lead: {ratio(client_cpu[SDK][c], client_cpu[baseline][c]):.2f}x"

    targets = [
        Target(
            f"SDK / aiohttp + msgspec, concurrency {at}",
            ratio(sdk_at, medians["aiohttp + msgspec"][at]),
            0.95,
            note=cpu_note("aiohttp + msgspec", at),
        ),
        Target(
            f"SDK / aiohttp + msgspec, worst concurrency ({worst})",
            ratio(medians[SDK][worst], medians["aiohttp + msgspec"][worst]),
            0.95,
            note=cpu_note("aiohttp + msgspec", worst),
        ),
        Target(
            f"SDK / aiohttp + json, concurrency {at}",
            ratio(sdk_at, medians["aiohttp + json"][at]),
            1.3,
            note=cpu_note("aiohttp + json", at),
        ),
        Target(
            f"SDK / httpx, concurrency {at}",
            ratio(sdk_at, medians["httpx"][at]),
            2.0,
            note=cpu_note("httpx", at),
        ),
    ]
    notes = [
        f"server accepted {stats['accepted_leads']:,} leads; the clients counted "
        f"{client_leads:,}; errors by contender: "
        + ", ".join(f"{name} {count}" for name, count in errors.items()),
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table, noise, cpu],
        targets=targets,
        notes=notes,
        data={
            "concurrency": list(concurrency),
            "batch_size": BATCH,
            "leads_per_run": total,
            "rounds": rounds,
            "runs": {name: {str(c): v for c, v in by_c.items()} for name, by_c in runs.items()},
            "median": {name: [medians[name][c] for c in concurrency] for name in runs},
            "client_cpu_us_per_lead": {
                name: [client_cpu[name][c] for c in concurrency] for name in runs
            },
            "server_cpu_us_per_lead": {
                name: [server_cpu[name][c] for c in concurrency] for name in runs
            },
        },
    )
