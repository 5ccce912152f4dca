"""Never twice behind a proxy: a real nginx in front of FakeRyngServer.

A proxy's 502, 504, 503, 413 and idle close, each rerun: the upstream's own record is the
oracle (no lead twice, none lost except those reported ``unknown``). The first tests use
the fake server's own faults (502/504 after recording, 503, 413, idle close), the rest a
real nginx from Debian's package (tests/_nginx.py), whose pages and closes our fake could
not imitate.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _nginx import NGINX, Nginx
from conftest import FAST_RETRY, TOKEN

from ryng_async import AmbiguousError, APIError, BulkReport, RetryPolicy, RyngClient, ServerError
from ryng_async.cli._progress import summary_table
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ManualClock

pytestmark = pytest.mark.anyio

# .ci/run installs nginx and sets RYNG_TEST_NGINX: there, a missing nginx fails the tests.
needs_nginx = pytest.mark.skipif(
    NGINX is None and not os.environ.get("RYNG_TEST_NGINX"),
    reason="nginx is not installed (.ci/run installs it)",
)


def leads(count: int, *, fields: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "number": f"+9198{i:08d}",
            **{f"customField{n}": f"value {n} of lead {i:08d} " * 2 for n in range(1, fields + 1)},
        }
        for i in range(count)
    ]


@asynccontextmanager
async def client_for(base_url: str, **options: Any) -> AsyncIterator[RyngClient]:
    options.setdefault("random_seed", 0)
    async with RyngClient(base_url=base_url, access_token=TOKEN, **options) as client:
        yield client


def assert_matches_upstream(report: BulkReport, server: FakeRyngServer, total: int) -> None:
    """No lead twice upstream; every lead the report does not call unknown is as it says."""
    counts = server.lead_counts()
    assert max(counts.values(), default=1) == 1, "a lead was appended twice"
    assert report.total == total
    assert report.maybe_duplicated == 0
    recorded = set(counts)
    for result in report.batches:
        numbers = {f"+9198{i:08d}" for i in range(result.start, result.start + result.count)}
        if result.outcome.value == "accepted":
            assert numbers <= recorded
            continue
        parts = {f"+9198{i:08d}" for s, c in result.accepted_ranges for i in range(s, s + c)}
        assert parts <= recorded  # accepted in part, after a 413
        if result.outcome.value in {"failed", "skipped"}:
            assert not (numbers - parts) & recorded, "a lead reported not appended is upstream"
    assert report.accepted <= len(recorded) <= report.accepted + report.unknown


# -- without nginx: the fake server's faults ---------------------------------------------


@pytest.mark.parametrize("fault", [Fault.BAD_GATEWAY, Fault.GATEWAY_TIMEOUT])
async def test_a_gateway_error_after_recording_is_unknown_and_never_resent(fault: Fault) -> None:
    plan = FaultPlan(seed=3, rates={fault: 0.3})
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(server.base_url, retry=FAST_RETRY) as client,
    ):
        report = await client.bulk_append("42", leads(400), batch_size=20, concurrency=4)
    assert report.unknown > 0
    assert report.failed == 0
    assert report.accepted + report.unknown == 400
    assert_matches_upstream(report, server, 400)
    assert server.received_requests == len(report.batches)  # none sent twice
    unknown = next(r for r in report.batches if r.outcome.value == "unknown")
    assert unknown.status == int(fault.value)
    assert f"HTTP {fault.value} from a proxy or gateway (not Ryng's JSON)" in unknown.message


async def test_retry_ambiguous_resends_a_502_and_counts_it_maybe_duplicated() -> None:
    plan = FaultPlan(script=[Fault.BAD_GATEWAY])
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0, retry_ambiguous=True)
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(server.base_url, retry=policy) as client,
    ):
        report = await client.bulk_append("42", leads(10), batch_size=10)
    assert report.accepted == 10
    assert report.maybe_duplicated == 10
    assert max(server.lead_counts().values()) == 2  # as the report warns


async def test_append_raises_an_ambiguous_error_that_keeps_the_page() -> None:
    async with (
        FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=[Fault.GATEWAY_TIMEOUT])) as s,
        client_for(s.base_url, retry=FAST_RETRY) as client,
    ):
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", leads(1))
    assert info.value.status == 504
    assert "504 Gateway Time-out" in info.value.body
    assert s.received_requests == 1
    assert s.lead_count() == 1


@pytest.mark.parametrize(("retry_after", "paused"), [("1", True), (None, False)])
async def test_a_503_is_definite_retried_and_paces_the_client(
    retry_after: str | None, paused: bool
) -> None:
    plan = FaultPlan(script=[Fault.UNAVAILABLE], retry_after=retry_after)
    waits: list[float] = []
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=1.0)
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(server.base_url, retry=policy, on_retry=lambda d: waits.append(d.delay)) as c,
    ):
        await c.append("42", leads(1))
    assert server.lead_count() == 1
    assert server.received_requests == 2
    assert waits == ([1.0] if paused else [0.0])


async def test_a_503_with_an_http_date_retry_after_is_honoured() -> None:
    plan = FaultPlan(script=[Fault.UNAVAILABLE], retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    waits: list[float] = []
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(
            server.base_url, retry=FAST_RETRY, on_retry=lambda d: waits.append(d.delay)
        ) as c,
    ):
        await c.append("42", leads(1))
    assert waits == [0.0]  # a date in the past: go now
    assert server.lead_count() == 1


async def test_a_413_splits_the_batch_and_the_load_keeps_under_what_it_learned() -> None:
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=16_000) as server,
        client_for(server.base_url, retry=FAST_RETRY) as client,
    ):
        report = await client.bulk_append("42", leads(600, fields=5), batch_size=200, concurrency=1)
    assert report.accepted == 600
    assert report.ok
    assert_matches_upstream(report, server, 600)
    assert report.body_refused is not None
    assert report.body_refused > 16_000
    assert report.body_accepted is not None
    assert report.body_accepted <= 16_000
    assert "max_batch_bytes" in str(report)
    # The first batch taught it (refused whole, then in halves, until its parts fit); the
    # later ones were split before they were sent.
    statuses = [r.status for r in server.requests]
    first_accepted = statuses.index(200)
    assert statuses[:first_accepted] == [413] * first_accepted
    assert 413 not in statuses[first_accepted:]
    assert first_accepted >= 2
    assert all(len(r.body) <= 16_000 for r in server.requests if r.accepted)


async def test_a_batch_sent_in_parts_still_names_exactly_its_leads() -> None:
    # An invalid lead at 3 and a huge one at 5: the batch of positions 0-2, 4-7 is split
    # after a 413; its one result must name those positions, not a part's.
    rows: list[Any] = leads(8)
    rows[3] = {"number": "not a number"}
    rows[5] = {"number": "+919900000000", "customField1": "x" * 2_000}
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_000) as server,
        client_for(server.base_url, retry=FAST_RETRY) as client,
    ):
        report = await client.bulk_append("42", rows, batch_size=8)
    (result,) = report.batches
    assert "parts after a 413" in result.message
    assert result.ranges == ((0, 3), (4, 4))
    assert result.count == 7
    assert report.invalid == 1
    assert report.total == report.accepted + report.failed + report.unknown + report.invalid


async def test_a_single_lead_too_large_fails_naming_its_size() -> None:
    huge = {"number": "+919900000000", "customField1": "x" * 2_000}
    async with (
        FakeRyngServer(access_token=TOKEN, max_body=1_000) as server,
        client_for(server.base_url, retry=FAST_RETRY) as client,
    ):
        alone = await client.bulk_append("42", [*leads(2), huge], batch_size=1)
        mixed = await client.bulk_append("43", [*leads(3), huge])
    assert alone.accepted == 2
    assert alone.failed == 1
    (failed,) = [r for r in alone.batches if r.outcome.value == "failed"]
    assert isinstance(failed.error, APIError)
    assert failed.error.status == 413
    assert "a request body of 2,0" in failed.message
    assert "is larger than the server accepts" in failed.message
    # In a batch with others, the parts that fit are accepted: they count as accepted
    # (accepted_ranges) and only the rest, which failed, is to be sent again; its message
    # says which positions went through.
    assert server.leads_for("43") == leads(3)
    assert (mixed.accepted, mixed.failed, mixed.unknown) == (3, 1, 0)
    (result,) = mixed.batches
    assert result.outcome.value == "failed"
    assert result.accepted_ranges == ((0, 3),)
    assert mixed.failed_leads() == [huge]
    assert "sent in 3 parts after a 413" in result.message
    assert "2 leads at input positions 0-1 accepted" in result.message
    assert "lead at input position 3 failed" in result.message


# -- behind a real nginx -----------------------------------------------------------------


@needs_nginx
async def test_nginx_504_after_a_slow_upstream_is_unknown_never_resent(tmp_path: Path) -> None:
    # Setup 1: upstream latency 2 s, proxy_read_timeout 1s.
    async with (
        FakeRyngServer(access_token=TOKEN, latency=2.0) as server,
        Nginx(tmp_path, server.port, location="proxy_read_timeout 1s;") as nginx,
        client_for(nginx.base_url) as client,
    ):
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", leads(1))
        report = await client.bulk_append("7", leads(800), batch_size=100, concurrency=8)
    assert info.value.status == 504
    assert str(info.value).startswith("HTTP 504 from a proxy or gateway (not Ryng's JSON)")
    assert report.unknown == 800
    assert report.failed == 0
    assert server.received_requests == 1 + 8  # each request once
    assert len(server.leads_for("42")) == 1
    numbers = [lead["number"] for lead in server.leads_for("7")]
    assert sorted(numbers) == [lead["number"] for lead in leads(800)]  # each once
    assert TOKEN not in str(info.value)


@needs_nginx
async def test_nginx_502_after_a_drop_is_unknown_and_nothing_twice(tmp_path: Path) -> None:
    # Setup 2: the upstream records a batch, then drops the connection (20%).
    plan = FaultPlan(seed=11, rates={Fault.DROP: 0.2})
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        Nginx(tmp_path, server.port) as nginx,
        client_for(nginx.base_url) as client,
    ):
        report = await client.bulk_append("42", leads(2_000), batch_size=100, concurrency=8)
    assert_matches_upstream(report, server, 2_000)
    assert report.unknown > 0
    assert report.accepted + report.unknown == 2_000
    assert server.lead_count() == 2_000  # every batch reached it once
    assert server.received_requests == 20
    assert not report.ok


@needs_nginx
@pytest.mark.slow
async def test_nginx_limit_req_503_paces_the_load_to_its_limit(tmp_path: Path) -> None:
    # Setup 3: limit_req at 20 r/s (burst 10, nodelay) with its default status, 503.
    async with (
        FakeRyngServer(access_token=TOKEN, validate_leads=False) as server,
        Nginx(
            tmp_path,
            server.port,
            http="limit_req_zone $binary_remote_addr zone=rl:1m rate=20r/s;",
            location="limit_req zone=rl burst=10 nodelay;",
        ) as nginx,
        client_for(nginx.base_url) as client,
    ):
        report = await client.bulk_append("42", leads(3_000), batch_size=10, concurrency=8)
    assert report.accepted == 3_000
    assert_matches_upstream(report, server, 3_000)
    rate = server.accepted_requests / report.elapsed
    assert rate >= 0.9 * 20, f"{rate:.1f} requests/s accepted, limit 20"


@needs_nginx
@pytest.mark.slow
async def test_nginx_idle_close_without_a_header_makes_no_unknown(tmp_path: Path) -> None:
    # Setup 4: keepalive_timeout 2s (no Keep-Alive header), a load paced at one batch per 2 s.
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        Nginx(tmp_path, server.port, http="keepalive_timeout 2s;") as nginx,
        client_for(nginx.base_url) as client,
    ):
        report = await client.bulk_append("42", leads(10), batch_size=1, rate_limit=0.5)
    assert report.unknown == 0
    assert report.accepted == 10
    assert_matches_upstream(report, server, 10)


@needs_nginx
async def test_nginx_413_splits_batches_and_every_lead_is_accepted(tmp_path: Path) -> None:
    # Setup 5: client_max_body_size 64k, leads with 5 custom fields, default settings.
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        Nginx(tmp_path, server.port, server="client_max_body_size 64k;") as nginx,
        client_for(nginx.base_url) as client,
    ):
        report = await client.bulk_append("42", leads(2_000, fields=5))
    assert report.accepted == 2_000
    assert report.ok
    assert_matches_upstream(report, server, 2_000)
    assert report.body_refused is not None
    assert report.body_refused > 64 * 1024
    assert "max_batch_bytes" in str(report)


@needs_nginx
async def test_nginx_503_without_ryng_json_is_definite_and_retried(tmp_path: Path) -> None:
    # nginx answers 503 itself (no upstream handles the request): definite, retried, paced.
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        Nginx(tmp_path, server.port, location="return 503;") as nginx,
        client_for(nginx.base_url, retry=FAST_RETRY) as client,
    ):
        with pytest.raises(ServerError) as info:
            await client.append("42", leads(1))
    assert info.value.status == 503
    assert "not Ryng's JSON" in str(info.value)
    assert "503 Service Temporarily Unavailable" in str(info.value)
    assert server.received_requests == 0


class RecordingLimiter:
    """A `Limiter` that lets everything through and records the feedback it gets."""

    def __init__(self) -> None:
        self.throttled_with: list[float | None] = []
        self.successes = 0

    @property
    def rate(self) -> float | None:
        return None

    async def acquire(self) -> None:
        return None

    async def throttled(self, retry_after: float | None) -> None:
        self.throttled_with.append(retry_after)

    async def succeeded(self) -> None:
        self.successes += 1


async def test_a_503_is_told_to_the_limiter_and_pauses_the_client_like_a_429() -> None:
    plan = FaultPlan(script=[Fault.UNAVAILABLE, Fault.UNAVAILABLE], retry_after="2")
    limiter = RecordingLimiter()
    clock = ManualClock()
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        client_for(server.base_url, limiter=limiter, clock=clock) as client,
    ):
        await client.append("42", leads(1))
    assert limiter.throttled_with == [2.0, 2.0]
    assert limiter.successes == 1
    assert clock.sleeps[:2] == [2.0, 2.0]  # the pause of each Retry-After
    assert server.lead_count() == 1


def test_the_cli_summary_says_what_body_size_was_learned_and_which_option_sets_it() -> None:
    report = BulkReport(total=10, accepted=10, body_refused=92_345, body_accepted=46_170)
    table = summary_table(report)
    assert "refused request bodies of 92,345 bytes as too large (HTTP 413)" in table
    assert "bodies up to 46,170 bytes went through" in table
    assert "max_batch_bytes" in table
    assert "--max-batch-bytes" in table
    assert "92,345" in str(report)
    assert report.to_dict()["body_refused"] == 92_345


async def test_the_fake_server_closes_idle_connections_without_a_keep_alive_header() -> None:
    async with FakeRyngServer(access_token=TOKEN, idle_timeout=0.3) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b'{"customerData": {"jsonData": [{"number": "+919876543210"}]}}'
        writer.write(
            b"POST /rest-api/v1/campaign/42 HTTP/1.1\r\nHost: x\r\n"
            + f"x-access-token: {TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        with anyio.fail_after(10):
            rest = await reader.read()  # b"" once the server has closed the idle connection
        writer.close()
        await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 200")
    assert b"keep-alive:" not in head.lower()
    assert rest.endswith(b"}")  # the answer's body, then the close
    assert server.lead_count() == 1
