"""Sharded loads: N workers reading the same input send it exactly once; reports merge."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ryng_async import APIError, BulkReport, ConfigurationError, RyngClient
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

CAMPAIGN = "42"


def leads(count: int, *, bad_every: int = 0) -> list[dict[str, Any]]:
    return [
        {"number": "12345" if bad_every and i % bad_every == bad_every - 1 else f"+9198{i:08d}"}
        for i in range(count)
    ]


def check_invariant(report: BulkReport) -> None:
    assert report.finished
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


async def _load_in_shards(
    server: FakeRyngServer, rows: list[dict[str, Any]], count: int, batch_size: int, **extra: Any
) -> list[BulkReport]:
    reports: list[BulkReport] = [BulkReport() for _ in range(count)]
    async with RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY) as client:

        async def one(index: int) -> None:
            await client.bulk_append(
                CAMPAIGN,
                iter(rows),
                batch_size=batch_size,
                shard=(index, count),
                report=reports[index],
                **{key: value(index) if callable(value) else value for key, value in extra.items()},
            )

        async with anyio.create_task_group() as tasks:
            for index in range(count):
                tasks.start_soon(one, index)
    return reports


@pytest.mark.anyio
async def test_four_shards_send_the_input_exactly_once_and_merge() -> None:
    rows = leads(1037, bad_every=100)
    async with FakeRyngServer(access_token=TOKEN) as server:
        reports = await _load_in_shards(server, rows, 4, 25)
    for index, report in enumerate(reports):
        check_invariant(report)
        assert report.shard == (index, 4)
        assert 0 < report.total < len(rows)
    merged = BulkReport.merge(reports)
    check_invariant(merged)
    assert merged.total == len(rows)
    assert merged.invalid == 10
    assert merged.accepted == len(rows) - 10
    assert [lead.position for lead in merged.invalid_leads] == [99 + 100 * k for k in range(10)]
    counts = Counter(lead["number"] for lead in server.leads)
    assert len(counts) == len(rows) - 10
    assert set(counts.values()) == {1}
    assert [r.start for r in merged.batches] == sorted(r.start for r in merged.batches)
    assert not merged.ok  # the planted invalid leads
    assert merged.finished
    assert not merged.stopped_early


@pytest.mark.anyio
async def test_reports_with_failed_batches_cross_a_process_boundary_and_merge() -> None:
    # What a worker pool does with each shard's report: pickle it back to the driver.
    rows = leads(400)
    plan = FaultPlan(seed=7, rates={Fault.BAD_REQUEST: 0.3, Fault.ERROR_500: 0.1})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        reports = await _load_in_shards(server, rows, 2, 20)
    assert sum(report.failed for report in reports) > 0
    returned = [pickle.loads(pickle.dumps(report)) for report in reports]  # noqa: S301

    def seen(report: BulkReport) -> list[tuple[Any, ...]]:
        return [
            (r.index, r.outcome, r.status, r.message, r.leads, type(r.error), str(r.error))
            for r in report.batches
        ]

    for before, after in zip(reports, returned, strict=True):
        assert seen(after) == seen(before)
        failed = [r for r in after.batches if r.error is not None]
        assert failed
        assert all(isinstance(r.error, APIError) and r.error.status >= 400 for r in failed)
    merged = BulkReport.merge(returned)
    check_invariant(merged)
    assert merged.failed == sum(report.failed for report in reports)
    assert len(merged.failed_leads()) == merged.failed


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    total=st.integers(min_value=0, max_value=300),
    count=st.integers(min_value=1, max_value=5),
    batch_size=st.integers(min_value=1, max_value=40),
)
def test_shards_are_disjoint_and_complete(total: int, count: int, batch_size: int) -> None:
    async def run() -> tuple[list[BulkReport], Counter[str]]:
        async with FakeRyngServer(access_token=TOKEN) as server:
            reports = await _load_in_shards(server, leads(total), count, batch_size)
            return reports, Counter(lead["number"] for lead in server.leads)

    reports, counts = anyio.run(run, backend="asyncio")
    merged = BulkReport.merge(reports)
    check_invariant(merged)
    assert merged.total == merged.accepted == total
    assert sorted(counts) == sorted(lead["number"] for lead in leads(total))
    assert set(counts.values()) <= {1}


@pytest.mark.anyio
async def test_each_shard_resumes_from_its_own_checkpoint(tmp_path: Path) -> None:
    rows = leads(400)
    async with FakeRyngServer(access_token=TOKEN) as server:
        first = await _load_in_shards(
            server, rows, 2, 20, checkpoint=lambda index: tmp_path / f"shard-{index}.db"
        )
        sent = server.received_requests
        again = await _load_in_shards(
            server, rows, 2, 20, checkpoint=lambda index: tmp_path / f"shard-{index}.db"
        )
        assert server.received_requests == sent
    assert BulkReport.merge(first).accepted == 400
    merged = BulkReport.merge(again)
    assert merged.accepted == merged.resumed == 400


@pytest.mark.anyio
async def test_a_journal_of_another_shard_is_refused(tmp_path: Path) -> None:
    from ryng_async.checkpoint import CheckpointError

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        path = tmp_path / "shard.db"
        await client.bulk_append(CAMPAIGN, leads(40), batch_size=10, shard=(0, 2), checkpoint=path)
        with pytest.raises(CheckpointError, match="shard"):
            await client.bulk_append(
                CAMPAIGN, leads(40), batch_size=10, shard=(1, 2), checkpoint=path
            )


@pytest.mark.parametrize("bad", [(2, 2), (-1, 2), (0, 0), (1,), "0/2", (0.0, 2), (True, 2)])
@pytest.mark.anyio
async def test_a_bad_shard_is_refused(bad: Any) -> None:
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        with pytest.raises(ConfigurationError, match="shard"):
            await client.bulk_append(CAMPAIGN, leads(5), shard=bad)
        assert server.received_requests == 0


def _shard_report(index: int | None, count: int, total: int = 10) -> BulkReport:
    report = BulkReport(campaign_id=CAMPAIGN, total=total, accepted=total, finished=True)
    report.shard = None if index is None else (index, count)
    return report


def test_merge_refuses_an_incomplete_or_mixed_set() -> None:
    with pytest.raises(ValueError, match="missing"):
        BulkReport.merge([_shard_report(0, 3), _shard_report(2, 3)])
    with pytest.raises(ValueError, match="twice"):
        BulkReport.merge([_shard_report(0, 2), _shard_report(0, 2), _shard_report(1, 2)])
    with pytest.raises(ValueError, match="different counts"):
        BulkReport.merge([_shard_report(0, 2), _shard_report(1, 3)])
    with pytest.raises(ValueError, match="unsharded"):
        BulkReport.merge([_shard_report(None, 1), _shard_report(0, 2)])
    with pytest.raises(ValueError, match="at least one"):
        BulkReport.merge([])
    other = _shard_report(1, 2)
    other.campaign_id = "43"
    with pytest.raises(ValueError, match="different campaigns"):
        BulkReport.merge([_shard_report(0, 2), other])
    whole = BulkReport.merge([_shard_report(0, 2), _shard_report(1, 2, total=5)])
    assert whole.total == whole.accepted == 15
    assert whole.ok
