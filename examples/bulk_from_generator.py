"""Bulk-load a million leads from a generator, with faults on, and check the accounting."""

import asyncio

from ryng_async import BulkReport, RetryPolicy, RyngClient
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan


def leads(count: int):
    for index in range(count):
        yield {"number": f"+91{9000000000 + index}", "customField1": f"crm-{index}"}


async def main() -> None:
    faults = FaultPlan(seed=1, rates={Fault.ERROR_500: 0.05, Fault.DROP: 0.002})
    async with FakeRyngServer(faults=faults, record=False) as server:
        async with RyngClient(
            base_url=server.base_url,
            access_token=server.access_token,
            retry=RetryPolicy(initial_delay=0.01),
        ) as client:
            report = BulkReport()  # live: stays exact even if this task is cancelled
            await client.bulk_append(
                "42", leads(1_000_000), batch_size=1000, concurrency=8, report=report
            )
    print(report)
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )
    # Unknown batches may have been appended: reconcile before resending them.
    print(f"{len(report.failed_leads())} leads to check or resend")


asyncio.run(main())
