"""DataFrames as lead sources: 1,000,000 rows from a DataFrame against dicts built before.

Each load runs in a new interpreter (``python -m benchmarks.bench_dataframe --child``)
so its peak RSS (``VmHWM``) is its own, through ``ryng_async.sync.bulk_append`` (what an
Airflow task or a script runs); the server (the default one, validating every lead) runs
in yet another process and keeps no leads. The rows are `_data.row`'s (a number and two
custom fields): the "generator" baseline hands out dicts built before the load, one at a
time; the others read a polars DataFrame, a pandas DataFrame or a pyarrow Table holding
them all, with ``ryng_async.dataframes.leads_from_frame``. Every source's data is made
before the timer starts (the dicts in Python, a frame column-wise with its library's
kernels), so the time compared is the load's, not data synthesis. "RSS before the load"
includes the data (and the library); the peak is measured from there (``VmHWM`` reset
after the build), so "growth" is what the load itself added. Batches of 1,000,
concurrency 8.

A second table times the conversion alone (no sending), as CPU per row, for chunk sizes
around the default: against handing out dicts already built (the load's baseline), and
against making each dict in Python as it is read (what a script building its own dicts
pays instead of a frame's conversion).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from itertools import islice
from typing import Any

from . import _data
from ._harness import HERE, BenchResult, Context, Table, Target, alternate, median, peak_rss, ratio
from ._server import TOKEN, ServerProcess

NAME = "dataframe"
TITLE = "DataFrames as lead sources"
BATCH = 1000
CONCURRENCY = 8
MB = 1e6
SOURCES = ("generator", "polars", "pandas", "arrow")
CHUNKS = (1024, 4096, 16384)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def available(source: str) -> bool:
    """Whether this machine has the library a source needs."""
    needs = {"generator": [], "polars": ["polars"], "pandas": ["pandas"], "arrow": ["pyarrow"]}
    for module in needs[source]:
        try:
            __import__(module)
        except ImportError:
            return False
    return True


def build_frame(source: str, n: int) -> Any:
    """`_data.row`'s first ``n`` rows as a frame of ``source``'s library, built column-wise.

    Each with its own library's kernels (polars expressions, numpy and pandas string
    methods, Arrow compute), so that no Python object per row is made on the way and the
    process holds only what that library's user would have imported.
    """
    cities = list(_data.CITIES)
    if source == "polars":
        import polars as pl

        index = pl.int_range(n, eager=True).cast(pl.String)
        return pl.DataFrame(
            {
                "number": ("+9198" + index.str.zfill(8)),
                "Name": ("Customer " + index),
                "City": pl.Series(cities).gather(pl.int_range(n, eager=True) % len(cities)),
            }
        )
    import numpy as np

    if source == "pandas":
        import pandas as pd

        text = pd.Series(np.arange(n)).astype(str)
        return pd.DataFrame(
            {
                "number": "+9198" + text.str.zfill(8),
                "Name": "Customer " + text,
                "City": pd.Categorical.from_codes(np.arange(n) % len(cities), cities).astype(str),
            }
        )
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(np.arange(n, dtype=np.int64)), pa.string())
    return pa.table(
        {
            "number": pc.binary_join_element_wise("+9198", pc.utf8_lpad(text, 8, "0"), ""),
            "Name": pc.binary_join_element_wise("Customer ", text, ""),
            "City": pa.array(cities).take(pa.array(np.arange(n) % len(cities))),
        }
    )


def check_rows(source: str) -> None:
    """Make sure a source gives exactly the generator's rows (else the race is unfair)."""
    leads, options = leads_of(source, 50)
    names = options.get("custom_field_names")
    if list(leads) != _data.rows(50) or names not in (
        None,
        {"customField1Name": "Name", "customField2Name": "City"},
    ):
        raise AssertionError(f"{source} does not give the generator's rows")


def leads_of(source: str, n: int, chunk_rows: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The leads of ``source`` and the bulk options that go with them."""
    if source == "generator":
        return _data.prebuilt(n), {}
    if source == "python":  # the conversion table's reference: each dict made as it is read
        return _data.stream(n), {}
    from ryng_async.dataframes import DEFAULT_CHUNK_ROWS, leads_from_frame

    leads, names = leads_from_frame(
        build_frame(source, n), chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS
    )
    return leads, {"custom_field_names": names}


def _child(argv: list[str]) -> None:
    """Run one load in this (fresh) process; print its numbers as one JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--source", choices=SOURCES, required=True)
    args = parser.parse_args(argv)

    from ryng_async import BulkReport, sync

    leads, options = leads_of(args.source, args.leads)
    gc.collect()
    rss_ready = _rss_now()
    build_peak = peak_rss()
    # Building the frame peaks above what it then holds; reset the high-water mark so
    # that the peak measured is the load's own (Linux >= 4.0; else it stays the build's).
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass
    report = BulkReport()
    cpu, started = _cpu(), time.perf_counter()
    sync.bulk_append(
        "4242",
        leads,
        base_url=args.base_url,
        access_token=TOKEN,
        batch_size=BATCH,
        concurrency=CONCURRENCY,
        report=report,
        **options,
    )
    seconds, cpu = time.perf_counter() - started, _cpu() - cpu
    print(
        json.dumps(
            {
                "peak_rss": peak_rss(),
                "ready_rss": rss_ready,
                "build_peak_rss": build_peak,
                "accepted": report.accepted,
                "ok": report.ok,
                "seconds": seconds,
                "cpu": cpu,
            }
        )
    )


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _spawn(server: ServerProcess, leads: int, source: str, cap: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_dataframe", "--child"]
    command += ["--base-url", server.base_url, "--leads", str(leads), "--source", source]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=HERE.parent, timeout=cap, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"dataframe child failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _convert_only(source: str, n: int, chunk_rows: int) -> float:
    """CPU seconds to turn ``n`` rows of ``source`` into lead dicts (nothing sent)."""
    leads, _ = leads_of(source, n, chunk_rows)
    iterator: Iterator[Any] = iter(leads)
    gc.collect()
    cpu = _cpu()
    # Consumed a batch at a time, as the bulk engine does; the dicts are dropped.
    while batch := list(islice(iterator, BATCH)):
        del batch
    return _cpu() - cpu


def run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(3)
    n = ctx.size(1_000_000, 2_000)
    sources = [s for s in SOURCES if available(s)]
    for source in sources:
        check_rows(source)
    with ServerProcess() as server:
        spawn: dict[str, Callable[[], dict[str, Any]]] = {
            source: partial(_spawn, server, n, source, ctx.size(600.0, 120.0)) for source in sources
        }
        results = alternate(spawn, rounds)

    def med(source: str, key: str) -> float:
        return median([r[key] for r in results[source]])

    def rates(source: str) -> list[float]:
        return [r["accepted"] / r["seconds"] for r in results[source]]

    def cpu_per_lead(source: str) -> float:
        return median([r["cpu"] / n * 1e6 for r in results[source]])

    load = Table(
        f"{n:,} rows through sync.bulk_append (median of {rounds} fresh processes; "
        f"leads/s range in brackets), batch {BATCH}, concurrency {CONCURRENCY}",
        [
            "source",
            "client CPU us/lead",
            "leads/s",
            "RSS before the load MB",
            "frame build peak MB",
            "peak RSS in the load MB",
            "growth MB",
            "all accepted",
        ],
    )
    for source, runs in results.items():
        spread = rates(source)
        load.add(
            source,
            f"{cpu_per_lead(source):.2f}",
            f"{median(spread):,.0f} ({min(spread):,.0f}-{max(spread):,.0f})",
            f"{med(source, 'ready_rss') / MB:.1f}",
            f"{med(source, 'build_peak_rss') / MB:.1f}",
            f"{med(source, 'peak_rss') / MB:.1f}",
            f"{(med(source, 'peak_rss') - med(source, 'ready_rss')) / MB:.1f}",
            "yes" if all(r["ok"] and r["accepted"] == n for r in runs) else "NO",
        )

    m = ctx.size(200_000, 2_000)
    convert_cases = {
        ("generator", 0): partial(_convert_only, "generator", m, 0),
        ("python", 0): partial(_convert_only, "python", m, 0),
    }
    for source in sources[1:]:
        for chunk in CHUNKS:
            convert_cases[(source, chunk)] = partial(_convert_only, source, m, chunk)
    converted = alternate(convert_cases, ctx.rounds_or(5))
    convert = Table(
        f"Rows to lead dicts alone, {m:,} rows, CPU ns per row (median of {ctx.rounds_or(5)}):"
        " generator = dicts built before, handed out; python = each dict made as it is read",
        ["source", "chunk_rows", "ns/row", "vs making dicts in Python"],
    )
    python_ns = median(converted[("python", 0)]) / m * 1e9
    for (source, chunk), seconds in converted.items():
        ns = median(seconds) / m * 1e9
        convert.add(source, chunk or "-", f"{ns:,.0f}", f"{ratio(ns, python_ns):.2f}x")

    gen_cpu = cpu_per_lead("generator")
    gen_rate = median(rates("generator"))
    targets = []
    notes = [
        "Wall-clock rates swing 2-3x between rounds on this shared 2-core machine; the "
        "client's CPU per lead is the steadier comparison."
    ]
    for source in sources[1:]:
        cpu, rate = cpu_per_lead(source), median(rates(source))
        targets.append(
            Target(
                f"{source}: client CPU per lead vs dicts built before the load",
                ratio(cpu, gen_cpu),
                1.25,
                op="<=",
                note=f"leads/s {ratio(rate, gen_rate):.2f}x the dicts'",
                complete=all(
                    r["ok"] and r["accepted"] == n for r in results[source] + results["generator"]
                ),
            )
        )
        notes.append(
            f"{source}: {cpu:.2f} us of client CPU per lead against {gen_cpu:.2f} from dicts "
            f"built before the load ({ratio(cpu, gen_cpu):.2f}x), {rate:,.0f} leads/s against "
            f"{gen_rate:,.0f}; the load added "
            f"{(med(source, 'peak_rss') - med(source, 'ready_rss')) / MB:.0f} MB to the "
            f"{med(source, 'ready_rss') / MB:.0f} MB the process held with the frame built."
        )
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[load, convert],
        targets=targets,
        notes=notes,
        data={
            "leads": n,
            "batch_size": BATCH,
            "concurrency": CONCURRENCY,
            "rounds": rounds,
            "runs": results,
            "convert_ns": {
                f"{source}/{chunk}": [s / m * 1e9 for s in seconds]
                for (source, chunk), seconds in converted.items()
            },
        },
    )


if __name__ == "__main__":
    _child(sys.argv[1:])
