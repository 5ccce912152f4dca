"""PrometheusObserver: the counts match the report and the server, labels stay small."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import (
    AttemptEnded,
    AttemptStarting,
    BulkReport,
    ConfigurationError,
    LoadEvent,
    RetryDetails,
    RyngClient,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402

from ryng_async.metrics import PrometheusObserver  # noqa: E402


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def leads(count: int) -> list[dict[str, str]]:
    return [{"number": f"+9198{i:08d}", "customField1": f"c{i}"} for i in range(count)]


class EventLog:
    def __init__(self) -> None:
        self.events: list[LoadEvent] = []

    def __call__(self, event: LoadEvent) -> None:
        self.events.append(event)

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.mark.anyio
async def test_counts_match_the_report_and_the_server_under_faults() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    log = EventLog()
    faults = FaultPlan(
        seed=11,
        rates={
            Fault.ERROR_500: 0.2,
            Fault.RATE_LIMIT: 0.1,
            Fault.DROP: 0.05,
            Fault.BAD_REQUEST: 0.05,
        },
    )
    rows = [*leads(3000), {"number": "0"}, {"number": "+91 bad"}]
    async with FakeRyngServer(access_token=TOKEN, faults=faults) as server:
        async with RyngClient(
            base_url=server.base_url,
            access_token=TOKEN,
            retry=FAST_RETRY,
            observers=[metrics, log],
            random_seed=1,
        ) as client:
            report = await client.bulk_append(
                "42", rows, batch_size=50, concurrency=4, rate_limit=1000
            )
        statuses = server.statuses
        requests = server.received_requests
    assert report.failed
    assert report.unknown
    assert report.accepted  # the faults did show
    for outcome in ("accepted", "failed", "unknown", "skipped", "invalid"):
        assert value(registry, "ryng_leads_total", outcome=outcome) == getattr(report, outcome), (
            outcome
        )
    by_outcome = Counter(b.outcome.value for b in report.batches)
    for outcome, count in by_outcome.items():
        assert value(registry, "ryng_batches_total", outcome=outcome) == count
    assert value(registry, "ryng_loads_total", result="not_ok") == 1
    assert value(registry, "ryng_rate_limited_total") == statuses[429] > 0
    reasons = Counter()
    for event in log.of(RetryDetails):
        status = getattr(event.error, "status", None)
        reasons[str(status) if status is not None else type(event.error).__name__] += 1
    assert reasons["500"] > 0
    assert reasons["429"] > 0
    for reason, count in reasons.items():
        assert value(registry, "ryng_retries_total", reason=reason) == count
    attempts = log.of(AttemptEnded)
    assert len(attempts) == requests
    total = sum(
        value(registry, "ryng_request_duration_seconds_count", status_class=c)
        for c in ("2xx", "4xx", "5xx", "none")
    )
    assert total == requests
    assert value(registry, "ryng_request_duration_seconds_count", status_class="none") == sum(
        1 for e in attempts if e.status is None
    )
    assert value(registry, "ryng_requests_in_flight") == 0
    assert 0 < value(registry, "ryng_rate_limit_per_second") <= 1000


@pytest.mark.anyio
async def test_in_flight_counts_requests_sent_and_not_answered() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    seen: list[float] = []

    def sample(event: LoadEvent) -> None:
        if isinstance(event, AttemptStarting | AttemptEnded):
            seen.append(value(registry, "ryng_requests_in_flight"))

    async with (
        FakeRyngServer(access_token=TOKEN, latency=0.01) as server,
        RyngClient(
            base_url=server.base_url, access_token=TOKEN, observers=[metrics, sample]
        ) as client,
    ):
        report = await client.bulk_append("42", leads(800), batch_size=50, concurrency=4)
    assert report.ok
    assert max(seen) == server.max_in_flight == 4
    assert min(seen) >= 0
    assert value(registry, "ryng_requests_in_flight") == 0
    assert math.isnan(value(registry, "ryng_rate_limit_per_second"))  # no limit in force


@pytest.mark.anyio
async def test_in_flight_returns_to_zero_after_a_cancel() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)
    all_sent = anyio.Event()
    started = 0

    def watch(event: LoadEvent) -> None:
        nonlocal started
        if isinstance(event, AttemptStarting):
            started += 1
            if started == 3:
                all_sent.set()

    report = BulkReport()
    faults = FaultPlan(rates={Fault.HANG: 1.0})
    async with (
        FakeRyngServer(access_token=TOKEN, faults=faults) as server,
        RyngClient(
            base_url=server.base_url, access_token=TOKEN, observers=[metrics, watch]
        ) as client,
    ):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(
                lambda: client.bulk_append(
                    "42", leads(300), batch_size=100, concurrency=3, report=report
                )
            )
            await all_sent.wait()
            assert value(registry, "ryng_requests_in_flight") == 3
            tasks.cancel_scope.cancel()
        assert report.finished
        assert report.unknown == 300
        assert value(registry, "ryng_requests_in_flight") == 0
        # A single call cut off in a task that goes on: closed by its next attempt.
        with anyio.move_on_after(0.2):
            await client.append("42", leads(1))
        assert value(registry, "ryng_requests_in_flight") == 1
        server.faults = FaultPlan()
        await client.append("42", leads(1))
        assert value(registry, "ryng_requests_in_flight") == 0


@pytest.mark.anyio
async def test_campaign_label_and_no_lead_or_token_in_any_series(server: FakeRyngServer) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry, campaign_label=True, namespace="acme")
    async with RyngClient(base_url=server.base_url, access_token=TOKEN, rate_limit=500) as client:
        await client.bulk_append("42", leads(120), batch_size=50, observers=[metrics])
        await client.bulk_append("7", [*leads(10), {"number": "+1"}], observers=[metrics])
    assert value(registry, "acme_leads_total", campaign="42", outcome="accepted") == 120
    assert value(registry, "acme_leads_total", campaign="7", outcome="invalid") == 1
    assert value(registry, "acme_batches_total", campaign="42", outcome="accepted") == 3
    assert value(registry, "acme_rate_limit_per_second", campaign="42") == 500
    assert value(registry, "acme_requests_in_flight", campaign="42") == 0
    text = generate_latest(registry).decode()
    assert "+9198" not in text
    assert "9198" not in text
    assert TOKEN not in text
    labels = {
        sample.labels.get(name)
        for family in registry.collect()
        for sample in family.samples
        for name in sample.labels
        if name not in {"le"}
    }
    assert labels <= {
        "42",
        "7",
        "accepted",
        "failed",
        "unknown",
        "skipped",
        "invalid",
        "ok",
        "not_ok",
        "2xx",
    }


def test_one_observer_per_registry_and_namespace() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry)
    before = generate_latest(registry)
    with pytest.raises(ConfigurationError, match="one PrometheusObserver per registry"):
        PrometheusObserver(registry)
    assert generate_latest(registry) == before
    PrometheusObserver(registry, namespace="other")  # another namespace fits
    assert repr(PrometheusObserver(CollectorRegistry())) == (
        "PrometheusObserver(namespace='ryng', campaign_label=False)"
    )
