"""Checkpoint cost: the same bulk load with and without an SQLite checkpoint journal.

Side by side in one run, rounds alternating: ``bulk_append(leads)`` against
``bulk_append(leads, checkpoint=<a new file>)``, batches of 500 (the default), against the
default (validating) fake server in its own process, and against the decode-only sink.
On this machine the client's event loop is the bottleneck in both (its thread is busy
the whole load), so every microsecond the journal costs it shows. Every attempt of a
checkpointed load waits for its in-flight record to be committed (WAL, group commits on
the loop's thread) before its request is written. The ratio is that of the medians (the
checkpointed loads' median speed over the plain loads', as every ratio in these
benchmarks); the journal's fixed cost (open a new file, close it) is timed apart.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ryng_async import BulkReport, RyngClient
from ryng_async.checkpoint import BatchState, LoadIdentity, SQLiteJournal

from . import _data
from ._harness import BenchResult, Context, Table, Target, alternate_async, median, ratio, spread
from ._server import TOKEN, ServerProcess

NAME = "checkpoint"
TITLE = "Checkpoint journal: a load with one against the same load without"
BATCH = 500
PLAIN = "no checkpoint"
JOURNAL = "checkpoint"


async def _load(
    base_url: str, leads: list[dict[str, Any]], concurrency: int, checkpoint: Path | None
) -> dict[str, float]:
    report = BulkReport()
    cpu = time.process_time()
    async with RyngClient(base_url=base_url, access_token=TOKEN) as client:
        started = time.perf_counter()
        if checkpoint is None:
            await client.bulk_append(
                "42", leads, batch_size=BATCH, concurrency=concurrency, report=report
            )
        else:
            await client.bulk_append(
                "42",
                leads,
                batch_size=BATCH,
                concurrency=concurrency,
                report=report,
                checkpoint=checkpoint,
            )
        seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    assert report.accepted == len(leads), report  # a benchmark that lost leads is void
    size = 0 if checkpoint is None else _journal_size(checkpoint)
    if checkpoint is not None:
        assert report.resumed == 0
        assert SQLiteJournal.inspect(checkpoint).leads[BatchState.ACCEPTED] == len(leads)
    return {
        "rate": len(leads) / seconds,
        "cpu_us_per_lead": cpu / len(leads) * 1e6,
        "journal_bytes": size,
        "batches": len(report.batches),
    }


def _journal_size(path: Path) -> int:
    """Bytes of the journal and its write-ahead log."""
    return sum(
        os.path.getsize(f"{path}{suffix}")
        for suffix in ("", "-wal")
        if os.path.exists(f"{path}{suffix}")
    )


async def _compare(
    *, validate_leads: bool, leads: list[dict[str, Any]], concurrency: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    with tempfile.TemporaryDirectory(prefix="ryng-bench-checkpoint-") as folder:
        counter = iter(range(1_000_000))
        with ServerProcess(validate_leads=validate_leads) as server:

            async def plain() -> dict[str, float]:
                return await _load(server.base_url, leads, concurrency, None)

            async def journalled() -> dict[str, float]:
                path = Path(folder) / f"load-{next(counter)}.db"
                return await _load(server.base_url, leads, concurrency, path)

            return await alternate_async({PLAIN: plain, JOURNAL: journalled}, rounds)


async def _fixed_cost(folder: str, rounds: int) -> float:
    """Milliseconds to open a new journal and close it, nothing written (median)."""
    identity = LoadIdentity(campaign_id="42", batch_size=BATCH, max_batch_bytes=1, options=b"")
    times = []
    for index in range(rounds):
        started = time.perf_counter()
        journal = await SQLiteJournal(Path(folder) / f"empty-{index}.db").open(identity)
        await journal.aclose()
        times.append(time.perf_counter() - started)
    return median(times) * 1e3


def run(ctx: Context) -> BenchResult:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> BenchResult:
    count = ctx.size(1_000_000, 5_000)
    rounds = ctx.rounds_or(11)
    leads = _data.rows(count)
    setups = {
        "validating server, concurrency 8": (True, 8),
        "decode-only sink, concurrency 16": (False, 16),
    }
    table = Table(
        f"{count:,} leads in batches of {BATCH}, {rounds} rounds",
        [
            "server",
            f"{PLAIN} leads/s",
            f"{JOURNAL} leads/s",
            "ratio",
            "spread (plain / journal)",
            "client CPU us/lead (plain / journal)",
            "journal bytes / batch",
        ],
    )
    data: dict[str, Any] = {}
    ratios: dict[str, float] = {}
    for label, (validate, concurrency) in setups.items():
        runs = await _compare(
            validate_leads=validate, leads=leads, concurrency=concurrency, rounds=rounds
        )
        plain = [r["rate"] for r in runs[PLAIN]]
        journal = [r["rate"] for r in runs[JOURNAL]]
        ratios[label] = ratio(median(journal), median(plain))
        per_batch = median([r["journal_bytes"] / r["batches"] for r in runs[JOURNAL]])
        table.add(
            label,
            f"{median(plain):,.0f}",
            f"{median(journal):,.0f}",
            f"{ratios[label]:.2f}x",
            f"{spread(plain):.0%} / {spread(journal):.0%}",
            f"{median([r['cpu_us_per_lead'] for r in runs[PLAIN]]):.2f} / "
            f"{median([r['cpu_us_per_lead'] for r in runs[JOURNAL]]):.2f}",
            f"{per_batch:,.0f}",
        )
        data[label] = {"runs": runs, "ratio": ratios[label]}
    with tempfile.TemporaryDirectory(prefix="ryng-bench-checkpoint-") as folder:
        fixed_ms = await _fixed_cost(folder, rounds)
    data["open_and_close_ms"] = fixed_ms
    targets = [
        Target(
            f"checkpointed / plain load speed, {label}",
            value,
            0.95,
            note="same process, rounds alternating (#8 asked 0.9x, #23 0.95x)",
        )
        for label, value in ratios.items()
    ]
    notes = [
        f"the journal's fixed cost, a new file opened and closed with nothing written: "
        f"{fixed_ms:.1f} ms a load (included in the checkpointed runs above)",
        "leads/s columns are medians of the rounds; the ratio is the journal's median over "
        "the plain median (the two columns beside it)",
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table],
        targets=targets,
        notes=notes,
        data=data,
    )
