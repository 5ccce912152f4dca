"""Memory: peak RSS of a fresh process bulk-loading 100k and 1M (and 10M) leads.

Each load runs in a new interpreter (``python -m benchmarks.bench_memory --child``) so
its peak RSS (``VmHWM``, imports included) is its own; the server (the default one,
validating every lead) runs in yet another process and keeps no leads (``record=False``).
Leads come from a generator that makes each dict on demand (what streaming from a file or
a cursor looks like), or from a list built before the load starts (what streaming saves).
Batches of 1,000, concurrency 8. Total RSS includes the interpreter and the imports at
rest (some 40 MB); "growth" is the load's own: the peak over the RSS measured just before
the load. A target counts only if every lead of every run was accepted.

The edges: 1M leads that are all invalid (``report.invalid_leads`` describes the first
10,000, counts them all), and 2M distinct leads with ``dedupe=True`` (the numbers seen
spill to a temporary SQLite file past 50,000, a Bloom filter in front), each against a
clean load of as many leads; one fresh process each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from functools import partial
from typing import Any

from . import _data
from ._harness import (
    HERE,
    BenchResult,
    Context,
    Stopwatch,
    Table,
    Target,
    alternate,
    median,
    peak_rss,
    ratio,
)
from ._server import TOKEN, ServerProcess

NAME = "memory"
TITLE = "Peak memory of a bulk load"
BATCH = 1000
CONCURRENCY = 8
MB = 1e6


def _child(argv: list[str]) -> None:
    """Run one load in this (fresh) process; print its numbers as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--source", choices=("generator", "list"), required=True)
    parser.add_argument("--cap", type=float, default=120.0)
    parser.add_argument("--kind", choices=("clean", "invalid", "dedupe"), default="clean")
    args = parser.parse_args(argv)

    import anyio
    import psutil

    from ryng_async import BulkReport, RyngClient

    process = psutil.Process()
    rss_ready = process.memory_info().rss
    report = BulkReport()

    async def load() -> None:
        leads = _data.stream(args.leads) if args.source == "generator" else _data.rows(args.leads)
        if args.kind == "invalid":
            leads = ({**lead, "number": "12345"} for lead in leads)
        async with RyngClient(base_url=args.base_url, access_token=TOKEN) as client:
            with anyio.move_on_after(args.cap):
                await client.bulk_append(
                    "4242",
                    leads,
                    batch_size=BATCH,
                    concurrency=CONCURRENCY,
                    report=report,
                    dedupe=args.kind == "dedupe",
                )

    with Stopwatch() as watch:
        asyncio.run(load())
    peak = peak_rss()
    print(
        json.dumps(
            {
                "peak_rss": peak,
                "ready_rss": rss_ready,
                "accepted": report.accepted,
                "invalid": report.invalid,
                "total": report.total,
                "ok": report.ok,
                "seconds": watch.seconds,
            }
        )
    )


def _spawn(
    server: ServerProcess, leads: int, source: str, cap: float, kind: str = "clean"
) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--child"]
    command += ["--base-url", server.base_url, "--leads", str(leads), "--source", source]
    command += ["--cap", str(cap), "--kind", kind]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=HERE.parent, timeout=cap + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(3)
    small, large = ctx.size((100_000, 1_000_000), (1_000, 10_000))
    huge = ctx.size(10_000_000, None)
    cap = ctx.size(60.0, 20.0)
    cases = [(n, source) for n in (small, large) for source in ("generator", "list")]
    with ServerProcess() as server:
        results = alternate(
            {case: partial(_spawn, server, case[0], case[1], cap) for case in cases}, rounds
        )
        if huge:
            results[(huge, "generator")] = [_spawn(server, huge, "generator", cap * 3)]
        invalid_n, dedupe_n = ctx.size((1_000_000, 2_000_000), (2_000, 60_000))
        edges = {
            kind: alternate(
                {
                    "clean": partial(_spawn, server, n, "generator", cap * 3),
                    kind: partial(_spawn, server, n, "generator", cap * 3, kind),
                },
                1,
            )
            for kind, n in (("invalid", invalid_n), ("dedupe", dedupe_n))
        }

    def med(case: tuple[int, str], key: str) -> float:
        return median([r[key] for r in results[case]])

    def all_accepted(*cases: tuple[int, str]) -> bool:
        return all(r["ok"] and r["accepted"] == case[0] for case in cases for r in results[case])

    def growth(case: tuple[int, str]) -> float:
        return median([r["peak_rss"] - r["ready_rss"] for r in results[case]])

    table = Table(
        f"Peak RSS in MB (median of {rounds} fresh processes; 10M: one run), "
        f"batch {BATCH}, concurrency {CONCURRENCY}",
        [
            "leads",
            "source",
            "peak RSS",
            "RSS before the load",
            "growth (the load's own)",
            "leads/s",
            "all accepted",
        ],
    )
    for case, runs in results.items():
        n, source = case
        peak = med(case, "peak_rss")
        ready = med(case, "ready_rss")
        rate = median([r["accepted"] / r["seconds"] for r in runs])
        table.add(
            f"{n:,}",
            source,
            f"{peak / MB:.1f}",
            f"{ready / MB:.1f}",
            f"{growth(case) / MB:.1f}",
            f"{rate:,.0f}",
            "yes" if all_accepted(case) else "NO",
        )

    edge_table = Table(
        "The edges: peak RSS in MB against a clean load of as many leads (one fresh process "
        "each, streaming)",
        ["leads", "load", "peak RSS", "clean load's peak", "over the clean load", "total read"],
    )
    edge_targets = []
    for kind, n in (("invalid", invalid_n), ("dedupe", dedupe_n)):
        (edge,) = edges[kind][kind]
        (clean,) = edges[kind]["clean"]
        over = (edge["peak_rss"] - clean["peak_rss"]) / MB
        label = "all invalid" if kind == "invalid" else "dedupe=True, all distinct"
        edge_table.add(
            f"{n:,}",
            label,
            f"{edge['peak_rss'] / MB:.1f}",
            f"{clean['peak_rss'] / MB:.1f}",
            f"{over:+.1f}",
            f"{edge['total']:,}",
        )
        # Complete: the clean load accepted every lead; the edge read all n, and (dedupe)
        # accepted every one, or (all invalid) refused every one.
        done = edge["accepted"] == n if kind == "dedupe" else edge["invalid"] == n
        complete = clean["ok"] and clean["accepted"] == n and edge["total"] == n and done
        edge_targets.append(
            Target(f"peak RSS over a clean load, {n:,} leads {label}", over, 30.0, op="<=",
                   unit="MB", complete=complete)
        )  # fmt: skip
    gen_large = med((large, "generator"), "peak_rss")
    gen_small = med((small, "generator"), "peak_rss")
    list_large = med((large, "list"), "peak_rss")
    streamed = ((small, "generator"), (large, "generator"))
    own = (
        f"the load's own growth {growth(streamed[0]) / MB:.1f} -> {growth(streamed[1]) / MB:.1f} MB"
    )
    targets = [
        Target(
            f"peak RSS streaming {large:,} leads",
            gen_large / MB,
            100.0,
            op="<=",
            unit="MB",
            note=f"of which the load's own growth: {growth(streamed[1]) / MB:.1f} MB",
            complete=all_accepted(streamed[1]),
        ),
        Target(
            f"RSS({large:,}) / RSS({small:,}), streaming",
            ratio(gen_large, gen_small),
            1.2,
            op="<=",
            note=f"from a list: {ratio(list_large, med((small, 'list'), 'peak_rss')):.2f}x",
            complete=all_accepted(*streamed),
        ),
        Target(
            f"the load's own growth, {large:,} / {small:,} leads, streaming",
            ratio(growth(streamed[1]), growth(streamed[0])),
            1.2,
            op="<=",
            note=own,
            complete=all_accepted(*streamed),
        ),
    ]
    notes = [
        f"streaming {large:,} leads peaks at {gen_large / MB:.0f} MB against "
        f"{list_large / MB:.0f} MB from a pre-built list ({(list_large - gen_large) / MB:.0f} MB "
        f"saved); {own}."
    ]
    if huge:
        notes.append(
            f"streaming {huge:,} leads: {med((huge, 'generator'), 'peak_rss') / MB:.1f} MB peak, "
            f"the load's own growth {growth((huge, 'generator')) / MB:.1f} MB "
            f"({ratio(growth((huge, 'generator')), growth(streamed[1])):.2f}x the "
            f"{large:,}-lead load's); every lead accepted: "
            f"{'yes' if all_accepted((huge, 'generator')) else 'NO'}."
        )
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table, edge_table],
        targets=targets + edge_targets,
        notes=notes,
        data={
            "batch_size": BATCH,
            "concurrency": CONCURRENCY,
            "rounds": rounds,
            "runs": {f"{n}/{source}": runs for (n, source), runs in results.items()},
            "edges": edges,
        },
    )


if __name__ == "__main__":
    _child(sys.argv[1:])
