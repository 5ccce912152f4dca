"""Bulk-load a CSV file from Python, reading it off the event loop, with line numbers.

Runs as is against a fake Ryng server started in-process (on a sample CSV it writes);
with RYNG_ACCESS_TOKEN and RYNG_SUBDOMAIN (or RYNG_BASE_URL) set, it loads into your
account instead: pass the file and the campaign id (`python bulk_from_csv.py leads.csv 42`).
From the shell, `ryng-async append 42 leads.csv` does all of this and more.
"""

import asyncio
import contextlib
import csv
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio.to_thread

from ryng_async import BulkReport, RyngClient
from ryng_async.testing import FakeRyngServer

CHUNK = 2000  # rows parsed per trip to a worker thread


def write_sample(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["number", "name", "city"])
        for i in range(rows):
            number = "not-a-number" if i == 1234 else f"+9198{i:08d}"
            writer.writerow([number, f"Customer {i}", "Pune, MH"])  # a comma inside a field


def read_chunks(path: Path, lines: list[int]) -> Iterator[list[dict[str, str]]]:
    """Rows as wire-form leads, a chunk at a time; ``lines`` gets each row's file line."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        # "number" stays; every other column becomes customField1, 2... in order.
        keys, extra = [], 0
        for title in header:
            if title != "number":
                extra += 1
            keys.append("number" if title == "number" else f"customField{extra}")
        chunk: list[dict[str, str]] = []
        for row in reader:
            lines.append(reader.line_num)
            chunk.append(dict(zip(keys, row, strict=False)))
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


async def leads(path: Path, lines: list[int]) -> AsyncIterator[dict[str, str]]:
    """The file's leads; each chunk is parsed in a worker thread, not on the event loop."""
    chunks = read_chunks(path, lines)
    while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
        for lead in chunk:
            yield lead


async def main() -> None:
    async with contextlib.AsyncExitStack() as stack:
        if os.environ.get("RYNG_ACCESS_TOKEN") and len(sys.argv) == 3:
            path, campaign = Path(sys.argv[1]), sys.argv[2]
            client = RyngClient()  # RYNG_SUBDOMAIN or RYNG_BASE_URL, and RYNG_ACCESS_TOKEN
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            path, campaign = folder / "leads.csv", "42"
            write_sample(path, 20_000)
            server = await stack.enter_async_context(FakeRyngServer())
            client = RyngClient(base_url=server.base_url, access_token=server.access_token)
        await stack.enter_async_context(client)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle))
        names = [title for title in header if title != "number"]
        lines: list[int] = []  # small here; see ryng_async.cli for a compact map
        report = BulkReport()
        await client.bulk_append(
            campaign,
            leads(path, lines),
            custom_field_names={f"customField{i}Name": n for i, n in enumerate(names, 1)},
            batch_size=1000,
            report=report,
        )
    print(report)
    for invalid in report.invalid_leads:
        print(f"{path.name}:{lines[invalid.position]}: {invalid.field}: {invalid.reason}")
    assert report.unaccounted == 0


asyncio.run(main())
