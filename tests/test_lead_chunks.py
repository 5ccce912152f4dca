"""Tests for ryng_async._intake.LeadChunks: leads that come a list at a time (the CLI's files).

The intake takes each list whole; the load must be the same as for the same leads one by
one: the same batches and positions, shards, invalid leads, and a stop that leaves the
leads read ahead of the batches unread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import cycle
from typing import Any

import anyio
import pytest
from conftest import TOKEN

from ryng_async import BulkReport, Outcome, RyngClient
from ryng_async._intake import LeadChunks
from ryng_async.testing import FakeRyngServer

pytestmark = pytest.mark.anyio

CAMPAIGN = "42"


def leads(count: int, *, bad_every: int = 0) -> list[dict[str, Any]]:
    return [
        {"number": "12345" if bad_every and i % bad_every == bad_every - 1 else f"+9198{i:08d}"}
        for i in range(count)
    ]


async def in_chunks(rows: list[Any], sizes: list[int]) -> AsyncIterator[list[Any]]:
    start = 0
    for size in cycle(sizes):
        if start >= len(rows):
            return
        yield rows[start : start + size]
        start += size


class OnlyWhole(LeadChunks):
    """Chunks that refuse to be iterated lead by lead: the intake must take lists."""

    def __aiter__(self) -> AsyncIterator[Any]:
        raise AssertionError("iterated lead by lead")


def story(report: BulkReport) -> list[tuple[int, int, Any, Outcome]]:
    return sorted((b.index, b.start, b.ranges, b.outcome) for b in report.batches)


def check_invariant(report: BulkReport) -> None:
    assert report.finished
    assert report.total == (
        report.accepted + report.failed + report.unknown + report.skipped + report.invalid
    )


@pytest.mark.parametrize("sizes", [[3, 7, 1, 12, 5], [10], [25], [1], [2048]])
async def test_a_load_of_chunks_is_the_load_of_its_leads(sizes: list[int]) -> None:
    rows = leads(103, bad_every=9)
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        plain = await client.bulk_append(CAMPAIGN, rows, batch_size=10, concurrency=3)
        plain_numbers = server.lead_counts()
        server.leads.clear()
        chunked = await client.bulk_append(
            CAMPAIGN, OnlyWhole(in_chunks(rows, sizes)), batch_size=10, concurrency=3
        )
        chunked_numbers = server.lead_counts()
    check_invariant(chunked)
    assert story(chunked) == story(plain)
    assert [lead.position for lead in chunked.invalid_leads] == [
        lead.position for lead in plain.invalid_leads
    ]
    assert (chunked.total, chunked.accepted, chunked.invalid) == (103, 103 - 11, 11)
    assert chunked_numbers == plain_numbers
    assert chunked.input_read == 103


async def test_shards_of_chunks_send_the_input_exactly_once() -> None:
    rows = leads(257, bad_every=50)
    reports = [BulkReport() for _ in range(3)]
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):

        async def one(index: int) -> None:
            await client.bulk_append(
                CAMPAIGN,
                LeadChunks(in_chunks(rows, [64, 3, 100])),
                batch_size=20,
                shard=(index, 3),
                report=reports[index],
            )

        async with anyio.create_task_group() as tasks:
            for index in range(3):
                tasks.start_soon(one, index)
    received = server.lead_counts()
    valid = {row["number"] for row in rows if row["number"] != "12345"}
    assert set(received) == valid
    assert set(received.values()) == {1}
    assert sum(report.accepted for report in reports) == len(valid)
    for report in reports:
        check_invariant(report)


async def test_a_stop_leaves_the_leads_read_ahead_unread() -> None:
    # Chunks of 50 leads, batches of 10: a stop after the first batch leaves most of the
    # first chunk read ahead of the batches; they are unread, not skipped.
    rows = leads(200)
    stop = anyio.Event()
    closed: list[bool] = []

    async def chunks() -> AsyncIterator[list[Any]]:
        try:
            async for chunk in in_chunks(rows, [50]):
                yield chunk
        finally:
            closed.append(True)

    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
    ):
        report = await client.bulk_append(
            CAMPAIGN,
            LeadChunks(chunks()),
            batch_size=10,
            concurrency=1,
            stop=stop,
            on_progress=lambda progress: stop.set(),
        )
    check_invariant(report)
    assert report.stopped_early
    assert report.accepted == len(server.leads) >= 10
    assert report.unread == {0: report.total}
    assert report.total < 50
    assert report.input_read == report.total
    assert closed == [True]  # the chunks' generator is closed, in the load's task
