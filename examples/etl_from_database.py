"""Stream leads from a database cursor into a campaign, reading the cursor off the event loop.

The standard library's sqlite3 stands in for your database: the cursor is read a batch of
rows at a time in a worker thread (a blocking fetch never stalls the requests in flight),
through an async generator, so memory holds a few batches whatever the table's size.
After the load, the rows the report says were appended are marked as loaded, so the next
run picks up the rest.

Runs as is against a fake Ryng server started in-process; with RYNG_ACCESS_TOKEN and
RYNG_SUBDOMAIN (or RYNG_BASE_URL) set, it loads into your account (campaign from
RYNG_CAMPAIGN, default 42).
"""

import asyncio
import contextlib
import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from ryng_async import BulkReport, Outcome, RyngClient
from ryng_async.testing import FakeRyngServer

FETCH = 1000  # rows per fetchmany, in a worker thread


def make_database(path: Path, rows: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, phone TEXT, name TEXT, "
            "plan TEXT, loaded INTEGER DEFAULT 0)"
        )
        db.executemany(
            "INSERT INTO customers (id, phone, name, plan) VALUES (?, ?, ?, ?)",
            (
                (i, f"+9198{i:08d}", f"Customer {i}", "gold" if i % 3 else "silver")
                for i in range(1, rows + 1)
            ),
        )


async def pending_leads(db: sqlite3.Connection, ids: list[int]) -> AsyncIterator[dict]:
    """Customers not loaded yet, as wire-form leads; ``ids`` gets each one's id in order."""
    cursor = db.execute("SELECT id, phone, name, plan FROM customers WHERE loaded = 0 ORDER BY id")
    try:
        while rows := await anyio.to_thread.run_sync(cursor.fetchmany, FETCH):
            for customer_id, phone, name, plan in rows:
                ids.append(customer_id)
                yield {"number": phone, "customField1": name, "customField2": plan}
    finally:
        cursor.close()


def mark_loaded(db: sqlite3.Connection, report: BulkReport, ids: list[int]) -> int:
    """Mark the customers whose batch was accepted; failed and unknown ones stay pending."""
    invalid = {lead.position for lead in report.invalid_leads}
    accepted = []
    for batch in report.batches:
        if batch.outcome is not Outcome.ACCEPTED:
            continue
        # A batch holds `count` valid leads from `start` on; invalid ones leave gaps.
        position, taken = batch.start, 0
        while taken < batch.count:
            if position not in invalid:
                accepted.append((ids[position],))
                taken += 1
            position += 1
    with db:
        db.executemany("UPDATE customers SET loaded = 1 WHERE id = ?", accepted)
    return len(accepted)


async def main() -> None:
    async with contextlib.AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        make_database(folder / "crm.db", 25_000)
        # Read from worker threads one at a time (the generator awaits each fetch).
        db = sqlite3.connect(folder / "crm.db", check_same_thread=False)
        stack.callback(db.close)
        if os.environ.get("RYNG_ACCESS_TOKEN"):
            client = RyngClient()  # RYNG_SUBDOMAIN or RYNG_BASE_URL, and RYNG_ACCESS_TOKEN
            campaign = os.environ.get("RYNG_CAMPAIGN", "42")
        else:
            server = await stack.enter_async_context(FakeRyngServer())
            client = RyngClient(base_url=server.base_url, access_token=server.access_token)
            campaign = "42"
        await stack.enter_async_context(client)
        ids: list[int] = []
        report = await client.bulk_append(
            campaign,
            pending_leads(db, ids),
            custom_field_names={"customField1Name": "Name", "customField2Name": "Plan"},
            batch_size=1000,
            concurrency=4,
        )
        print(report)
        print(f"marked {mark_loaded(db, report, ids):,} customers as loaded")
        (left,) = db.execute("SELECT count(*) FROM customers WHERE loaded = 0").fetchone()
        print(f"{left:,} customers still to load (failed, unknown or invalid)")
        assert left == report.total - report.accepted


asyncio.run(main())
