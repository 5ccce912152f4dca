"""Command line: ``ryng-async append`` of a CSV and of a JSON Lines file, beside the Python API.

The same leads three ways, each in a fresh process: the Python API's ``bulk_append`` fed
the row dicts, built before its timer starts (as the files are written before theirs),
``ryng-async append`` of a CSV file (``number,name,city``), and ``ryng-async append`` of
the same leads as JSON Lines. The command line runs through its real ``main`` (as the
console script does); the time is that of the load itself (imports left out, file
opening, reading and the header included). The
fake server runs in another process, validating every lead (the default), keeping none.
Batches of 1,000, concurrency 8. Peak RSS is the process's own high-water mark; the
command is run on a file 10x smaller too, to show memory does not grow with the file.

The last table times JSON Lines decoding alone, in this process: a plain decode against
the typed decode (``dict[str, str | list[str]]``) the reader uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import msgspec

from . import _data
from ._harness import (
    HERE,
    BenchResult,
    Context,
    Table,
    Target,
    alternate,
    median,
    peak_rss,
    ratio,
    spread,
)
from ._server import CAMPAIGN, TOKEN, ServerProcess

NAME = "cli"
TITLE = "Command line: ryng-async append of CSV and JSON Lines files"
BATCH = 1000
CONCURRENCY = 8
MB = 1e6
API, CSV, JSONL = "Python API (dicts)", "ryng-async append CSV", "ryng-async append JSONL"
NAMES_OPTION = {"customField1Name": "name", "customField2Name": "city"}


def write_files(folder: Path, rows: int) -> tuple[Path, Path]:
    """The leads of `_data.row` as a CSV and as JSON Lines, written a block at a time."""
    encoder = msgspec.json.Encoder()
    csv_path, jsonl_path = folder / f"leads{rows}.csv", folder / f"leads{rows}.jsonl"
    with csv_path.open("w") as csv_out, jsonl_path.open("wb") as jsonl_out:
        csv_out.write("number,name,city\n")
        for start in range(0, rows, 50_000):
            block = _data.rows(min(50_000, rows - start), start)
            csv_out.write(
                "".join(f"{r['number']},{r['customField1']},{r['customField2']}\n" for r in block)
            )
            jsonl_out.write(b"\n".join(map(encoder.encode, block)) + b"\n")
    return csv_path, jsonl_path


# -- the child process -----------------------------------------------------------------


def _child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--mode", choices=("api", "csv", "jsonl"), required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--leads", type=int, required=True)
    parser.add_argument("--file", default=None)
    args = parser.parse_args(argv)
    os.environ["RYNG_BASE_URL"] = args.base_url
    os.environ["RYNG_ACCESS_TOKEN"] = TOKEN

    import asyncio

    from ryng_async import BulkReport, RyngClient
    from ryng_async.cli import main

    # The API's rows are made before the timer, as the files are written before theirs.
    prebuilt = _data.prebuilt(args.leads if args.mode == "api" else 0)
    rss_ready = peak_rss()
    cpu0 = time.process_time()
    started = time.perf_counter()
    if args.mode == "api":
        report = BulkReport()

        async def load() -> None:
            async with RyngClient() as client:
                await client.bulk_append(
                    CAMPAIGN,
                    prebuilt,
                    batch_size=BATCH,
                    concurrency=CONCURRENCY,
                    custom_field_names=NAMES_OPTION,
                    report=report,
                )

        asyncio.run(load())
        accepted, code = report.accepted, 0 if report.ok else 1
    else:
        with tempfile.TemporaryDirectory() as folder:
            report_path = Path(folder) / "report.json"
            command = ["append", CAMPAIGN, args.file, "--batch-size", str(BATCH)]
            command += ["--concurrency", str(CONCURRENCY), "--progress", "none"]
            command += ["--report", str(report_path)]
            if args.mode == "jsonl":
                command += ["--custom-field-names", "name,city"]
            code = main(command)
            accepted = json.loads(report_path.read_text())["accepted"]
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "accepted": accepted,
                "code": code,
                "peak_rss": peak_rss(),
                "ready_rss": rss_ready,
            }
        )
    )


def _spawn(server: ServerProcess, mode: str, leads: int, path: Path | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_cli", "--child", "--mode", mode]
    command += ["--base-url", server.base_url, "--leads", str(leads)]
    if path is not None:
        command += ["--file", str(path)]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=HERE.parent, timeout=900, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cli child failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0 or result["accepted"] != leads:
        raise RuntimeError(f"{mode}: not every lead accepted: {result}")
    return result


# -- JSON Lines decoding, in this process ----------------------------------------------


class _WireLead(msgspec.Struct):
    number: str
    customField1: str | None = None  # noqa: N815 - the wire name
    customField2: str | None = None  # noqa: N815 - the wire name


class _CheckedLead(msgspec.Struct):
    number: Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$")]
    customField1: str | None = None  # noqa: N815 - the wire name
    customField2: str | None = None  # noqa: N815 - the wire name


def _decode_costs(rows: int, rounds: int) -> dict[str, float]:
    """Nanoseconds a lead for each way of decoding JSON Lines (best of ``rounds``)."""
    block = b"\n".join(map(msgspec.json.encode, _data.rows(rows))) + b"\n"
    lines = block.splitlines()
    plain = msgspec.json.Decoder()
    typed = msgspec.json.Decoder(dict[str, str | list[str]])
    structs = msgspec.json.Decoder(_WireLead)
    checked = msgspec.json.Decoder(_CheckedLead)
    cases = {
        "plain decode_lines (dicts, untyped)": lambda: plain.decode_lines(block),
        "typed decode_lines: dict[str, str | list[str]] (the reader's)": lambda: typed.decode_lines(
            block
        ),
        "typed decode_lines: a Struct": lambda: structs.decode_lines(block),
        "a Struct with Meta(pattern=E.164) on number": lambda: checked.decode_lines(block),
        "plain decode, line by line": lambda: [plain.decode(line) for line in lines],
    }
    costs: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            started = time.process_time()
            run()
            costs[name].append((time.process_time() - started) / rows * 1e9)
    return {name: min(values) for name, values in costs.items()}


# -- the benchmark ---------------------------------------------------------------------


def run(ctx: Context) -> BenchResult:
    rounds = ctx.rounds_or(3)
    large, small = ctx.size((1_000_000, 100_000), (2_000, 500))
    with tempfile.TemporaryDirectory(prefix="ryng-bench-cli-") as folder:
        csv_large, jsonl_large = write_files(Path(folder), large)
        csv_small, jsonl_small = write_files(Path(folder), small)
        with ServerProcess() as server:
            contenders = {
                API: partial(_spawn, server, "api", large, None),
                CSV: partial(_spawn, server, "csv", large, csv_large),
                JSONL: partial(_spawn, server, "jsonl", large, jsonl_large),
            }
            results = alternate(contenders, rounds)
            smaller = alternate(
                {
                    CSV: partial(_spawn, server, "csv", small, csv_small),
                    JSONL: partial(_spawn, server, "jsonl", small, jsonl_small),
                },
                rounds,
            )
        sizes = {
            CSV: (csv_small.stat().st_size, csv_large.stat().st_size),
            JSONL: (jsonl_small.stat().st_size, jsonl_large.stat().st_size),
        }
    decode = _decode_costs(ctx.size(200_000, 2_000), ctx.rounds_or(5))

    def rate(name: str) -> float:
        return median([r["accepted"] / r["seconds"] for r in results[name]])

    def med(runs: dict[str, list[dict[str, Any]]], name: str, key: str) -> float:
        return median([r[key] for r in runs[name]])

    api_rate = rate(API)
    table = Table(
        f"{large:,} leads into the fake server (another process), batch {BATCH}, concurrency "
        f"{CONCURRENCY}; median of {rounds} fresh processes",
        ["contender", "leads/s", "/ Python API", "spread", "client CPU us/lead", "peak RSS MB"],
    )
    for name in (API, CSV, JSONL):
        table.add(
            name,
            f"{rate(name):,.0f}",
            f"{ratio(rate(name), api_rate):.2f}x",
            f"{spread([r['accepted'] / r['seconds'] for r in results[name]]):.0%}",
            f"{med(results, name, 'cpu') / large * 1e6:.2f}",
            f"{med(results, name, 'peak_rss') / MB:.1f}",
        )
    memory = Table(
        "Peak RSS against the file's size (the command's own process)",
        ["input", f"{small:,} rows", f"{large:,} rows", "file size ratio", "RSS ratio"],
    )
    rss_ratios = {}
    for name in (CSV, JSONL):
        low, high = med(smaller, name, "peak_rss"), med(results, name, "peak_rss")
        rss_ratios[name] = ratio(high, low)
        small_size, large_size = sizes[name]
        memory.add(
            name,
            f"{low / MB:.1f} MB ({small_size / MB:.1f} MB file)",
            f"{high / MB:.1f} MB ({large_size / MB:.1f} MB file)",
            f"{ratio(large_size, small_size):.1f}x",
            f"{rss_ratios[name]:.2f}x",
        )
    decoding = Table(
        "Decoding JSON Lines alone (CPU ns a lead, best of the rounds, no network)",
        ["decoder", "ns/lead"],
    )
    for name, cost in decode.items():
        decoding.add(name, f"{cost:,.0f}")
    targets = [
        Target(f"{CSV} / Python API", ratio(rate(CSV), api_rate), 0.6),
        Target(f"{JSONL} / Python API", ratio(rate(JSONL), api_rate), 0.8),
        # Issue #23 asked CSV 0.77 -> 0.9x and JSON Lines 1.19 -> 1.2x of a Python API whose
        # rows were built inside its timer (issue #24 made it fair: 0.33x and 0.45x at
        # 57b0b3b); the same asks on the fair baseline: x1.17 and x1.01.
        Target(
            f"#23 {CSV} / Python API",
            ratio(rate(CSV), api_rate),
            0.39,
            note="#23's 0.9x restated on the fair baseline (0.33x x 0.9 / 0.77)",
        ),
        Target(
            f"#23 {JSONL} / Python API",
            ratio(rate(JSONL), api_rate),
            0.45,
            note="#23's 1.2x restated on the fair baseline (0.45x x 1.2 / 1.19)",
        ),
        Target(f"RSS({large:,}) / RSS({small:,}), CSV", rss_ratios[CSV], 1.2, op="<="),
        Target(f"RSS({large:,}) / RSS({small:,}), JSONL", rss_ratios[JSONL], 1.2, op="<="),
    ]
    return BenchResult(
        name=NAME,
        title=TITLE,
        description=__doc__ or "",
        tables=[table, memory, decoding],
        targets=targets,
        notes=[
            "client CPU includes the reader's worker thread (CSV parsing and JSON decoding "
            "run there, off the event loop).",
        ],
        data={"runs": results, "smaller": smaller, "decode_ns": decode, "rows": [small, large]},
    )


if __name__ == "__main__":
    _child(sys.argv[1:])
