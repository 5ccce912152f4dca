"""A load killed half-way, run again with the same checkpoint: nothing lost, nothing twice.

By default it runs against an in-process FakeRyngServer; with RYNG_ACCESS_TOKEN and
RYNG_SUBDOMAIN (or RYNG_BASE_URL) set, against your account (campaign RYNG_CAMPAIGN_ID).
"""

import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path

import anyio

from ryng_async import RyngClient
from ryng_async.testing import FakeRyngServer

COUNT = 20_000


def leads():
    # The same input on every run: a file, a query with an ORDER BY, a generator like this.
    for index in range(COUNT):
        yield {"number": f"+91{9000000000 + index}", "customField1": f"crm-{index}"}


async def load(client: RyngClient, campaign: str, checkpoint: Path, *, cut_after: float | None):
    with anyio.move_on_after(cut_after if cut_after is not None else float("inf")):
        # The first run is cut off part way, as a killed ETL job would be.
        return await client.bulk_append(
            campaign, leads(), batch_size=500, concurrency=4, checkpoint=checkpoint
        )
    return None


async def main() -> None:
    checkpoint = Path(tempfile.mkdtemp()) / "load-42.db"
    if os.environ.get("RYNG_ACCESS_TOKEN"):
        campaign = os.environ.get("RYNG_CAMPAIGN_ID", "42")
        async with RyngClient() as client:
            await load(client, campaign, checkpoint, cut_after=2.0)
            print(await load(client, campaign, checkpoint, cut_after=None))
        return
    async with FakeRyngServer(latency=0.05) as server:
        async with RyngClient(base_url=server.base_url, access_token=server.access_token) as client:
            await load(client, "42", checkpoint, cut_after=0.2)
            print(f"cut off after {server.lead_count()} leads; running the same load again")
            report = await load(client, "42", checkpoint, cut_after=None)
        print(report)
        copies = Counter(lead["number"] for lead in server.leads)
        twice = sum(1 for n in copies.values() if n > 1)
        print(f"the server holds {len(copies)} distinct leads; {twice} of them twice")
        # Unknown leads were in flight at the cut: check them in Ryng before resending.
        print(f"{report.unknown} leads to check in Ryng before resending")


asyncio.run(main())
