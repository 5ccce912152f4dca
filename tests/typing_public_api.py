"""Type-checked by mypy in CI, not run: the public API as a user's code would use it."""

from __future__ import annotations

from ryng_async import (
    AgentMapping,
    AppendResponse,
    AuthenticationError,
    BatchResult,
    BatchStream,
    BulkReport,
    ConnectCallback,
    Lead,
    Outcome,
    Progress,
    ResourceError,
    RetryDetails,
    RetryPolicy,
    RyngClient,
    TerminalCallback,
    parse_callback,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan


async def typed_usage() -> None:
    def on_progress(progress: Progress) -> None:
        print(progress.accepted, progress.rate)

    def on_retry(details: RetryDetails) -> None:
        print(details.attempt, details.delay, details.reason)

    faults = FaultPlan(seed=1, rates={Fault.ERROR_500: 0.1})
    async with (
        FakeRyngServer(faults=faults) as server,
        RyngClient(
            base_url=server.base_url,
            access_token=server.access_token,
            retry=RetryPolicy(max_attempts=3, retry_ambiguous=False),
            on_retry=on_retry,
        ) as client,
    ):
        response: AppendResponse = await client.append(
            "42",
            [Lead(number="+919876543210", custom_fields={1: "Max"}), {"number": "+917994771185"}],
            agent_mapping=AgentMapping.GLOBAL,
            agents=["ashwin@example.com"],
        )
        assert not response.error
        report: BulkReport = await client.bulk_append(
            "42", ({"number": "+919876543210"} for _ in range(3)), on_progress=on_progress
        )
        leads_to_check: list[dict[str, object]] = report.failed_leads()
        stream: BatchStream = client.stream_append("42", [{"number": "+919876543210"}])
        async with stream as results:
            async for result in results:
                batch: BatchResult = result
                if batch.outcome is Outcome.UNKNOWN:
                    print(batch.index, batch.start, batch.count, batch.error)
        print(leads_to_check, results.report.ok)
    try:
        report.raise_for_failures()
    except AuthenticationError as exc:
        print(exc.status, exc.report)
    except ResourceError as exc:  # Redis, the journal's disk, descriptors: run it again later
        print(exc, exc.report)
    event = parse_callback(b"{}")
    if isinstance(event, TerminalCallback):
        print(event.disposition)
    elif isinstance(event, ConnectCallback):
        print(event.agent_username)
