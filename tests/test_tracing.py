"""OpenTelemetryObserver: a span per load and per attempt, HTTP client attributes, no leads."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from conftest import FAST_RETRY, TOKEN

from ryng_async import AttemptStarting, BulkReport, LoadEvent, RyngClient
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from ryng_async.tracing import OpenTelemetryObserver


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def leads(count: int, start: int = 0) -> list[dict[str, str]]:
    return [
        {"number": f"+9198{i:08d}", "customField1": f"secret-{i}"}
        for i in range(start, start + count)
    ]


def loads(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name == "ryng bulk load"]


def attempts(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    return [s for s in spans if s.name == "POST"]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.mark.anyio
async def test_a_load_span_holds_an_attempt_span_per_request(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    faults = FaultPlan(script=[None, Fault.ERROR_500, None, Fault.DROP, Fault.BAD_REQUEST])
    async with FakeRyngServer(access_token=TOKEN, faults=faults) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY
        ) as client:
            tracing = OpenTelemetryObserver(provider, base_url=client.base_url)
            report = await client.bulk_append(
                "42",
                [*leads(400), {"number": "+0"}],
                batch_size=100,
                concurrency=1,
                observers=[tracing],
            )
        port = server.port
        requests = server.received_requests
    spans = exporter.get_finished_spans()
    (load,) = loads(spans)
    tries = attempts(spans)
    assert len(tries) == requests == 5
    assert all(s.parent is not None and s.parent.span_id == load.context.span_id for s in tries)
    assert all(s.kind is trace.SpanKind.CLIENT for s in tries)
    by_batch = sorted((attrs(s)["ryng.batch.index"], attrs(s)["ryng.attempt"]) for s in tries)
    assert by_batch == [(0, 1), (1, 1), (1, 2), (2, 1), (3, 1)]
    first, second, retried, dropped, refused = sorted(tries, key=lambda s: s.start_time or 0)
    assert attrs(first) == {
        "http.request.method": "POST",
        "url.template": "/rest-api/v1/campaign/{campaignId}",
        "server.address": "127.0.0.1",
        "server.port": port,
        "ryng.campaign.id": "42",
        "ryng.attempt": 1,
        "ryng.batch.index": 0,
        "ryng.batch.start": 0,
        "ryng.batch.count": 100,
        "http.response.status_code": 200,
        "ryng.outcome": "accepted",
    }
    assert first.status.status_code is trace.StatusCode.UNSET
    assert attrs(second)["error.type"] == "500"
    assert attrs(second)["ryng.outcome"] == "failed"
    assert second.status.status_code is trace.StatusCode.ERROR
    assert "http.request.resend_count" not in attrs(second)
    assert attrs(retried)["http.request.resend_count"] == 1
    assert attrs(retried)["ryng.outcome"] == "accepted"
    assert attrs(dropped)["ryng.outcome"] == "unknown"
    assert attrs(dropped)["error.type"] == "AmbiguousError"
    assert "http.response.status_code" not in attrs(dropped)
    assert attrs(refused)["http.response.status_code"] == 400
    assert attrs(refused)["ryng.batch.start"] == 300
    load_attrs = attrs(load)
    assert load_attrs["ryng.leads.total"] == report.total == 401
    assert load_attrs["ryng.leads.accepted"] == report.accepted == 200
    assert load_attrs["ryng.leads.unknown"] == 100
    assert load_attrs["ryng.leads.failed"] == 100
    assert load_attrs["ryng.leads.invalid"] == 1
    assert load_attrs["ryng.outcome"] == "not_ok"
    assert load_attrs["error.type"] == "AmbiguousError"  # what raise_for_failures raises
    assert load.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in load.events] == ["ryng.retry"]
    assert dict(load.events[0].attributes or {})["error.type"] == "500"
    assert load.start_time is not None
    assert load.end_time is not None
    assert all(
        load.start_time <= (s.start_time or 0) and (s.end_time or 0) <= load.end_time for s in tries
    )
    everything = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "+9198" not in everything
    assert "secret-" not in everything
    assert TOKEN not in everything


@pytest.mark.anyio
async def test_an_ok_load_and_a_single_append_under_the_callers_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, server: FakeRyngServer
) -> None:
    tracing = OpenTelemetryObserver(provider)
    tracer = provider.get_tracer("app")
    async with RyngClient(
        base_url=server.base_url, access_token=TOKEN, observers=[tracing]
    ) as client:
        with tracer.start_as_current_span("handler") as handler:
            await client.append("42", leads(1))
            await client.bulk_append("42", leads(150), batch_size=100)
    spans = exporter.get_finished_spans()
    (load,) = loads(spans)
    single, *batched = sorted(attempts(spans), key=lambda s: s.start_time or 0)
    assert single.parent is not None
    assert single.parent.span_id == handler.get_span_context().span_id
    assert "ryng.batch.index" not in attrs(single)
    assert "server.address" not in attrs(single)
    assert load.parent is not None
    assert load.parent.span_id == handler.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == load.context.span_id for s in batched)
    assert attrs(load)["ryng.outcome"] == "ok"
    assert "error.type" not in attrs(load)
    assert load.status.status_code is trace.StatusCode.UNSET


@pytest.mark.anyio
async def test_concurrent_loads_of_other_campaigns_get_their_own_spans(
    provider: TracerProvider, exporter: InMemorySpanExporter, server: FakeRyngServer
) -> None:
    tracing = OpenTelemetryObserver(provider)
    async with (
        RyngClient(base_url=server.base_url, access_token=TOKEN, observers=[tracing]) as client,
        anyio.create_task_group() as tasks,
    ):
        for campaign in ("1", "2", "3"):
            tasks.start_soon(lambda c=campaign: client.bulk_append(c, leads(300), batch_size=50))
    spans = exporter.get_finished_spans()
    by_campaign = {attrs(s)["ryng.campaign.id"]: s for s in loads(spans)}
    assert sorted(by_campaign) == ["1", "2", "3"]
    for campaign, load in by_campaign.items():
        children = [
            s for s in attempts(spans) if s.parent and s.parent.span_id == load.context.span_id
        ]
        assert len(children) == 6
        assert {attrs(s)["ryng.campaign.id"] for s in children} == {campaign}


@pytest.mark.anyio
async def test_a_cancelled_load_ends_every_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    started = anyio.Event()

    def watch(event: LoadEvent) -> None:
        if isinstance(event, AttemptStarting) and event.batch_index == 1:
            started.set()

    tracing = OpenTelemetryObserver(provider)
    report = BulkReport()
    hang = FaultPlan(rates={Fault.HANG: 1.0})
    async with (
        FakeRyngServer(access_token=TOKEN, faults=hang) as server,
        RyngClient(base_url=server.base_url, access_token=TOKEN) as client,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(
            lambda: client.bulk_append(
                "42", leads(200), batch_size=100, observers=[tracing, watch], report=report
            )
        )
        await started.wait()
        tasks.cancel_scope.cancel()
    spans = exporter.get_finished_spans()
    (load,) = loads(spans)
    tries = attempts(spans)
    assert len(tries) == 2
    assert {attrs(s)["ryng.outcome"] for s in tries} == {"abandoned"}
    assert attrs(load)["ryng.leads.unknown"] == report.unknown == 200
    # Cancelled with both batches in flight: the load stopped early, and the span says so.
    assert report.stopped_early is True
    assert attrs(load)["ryng.stopped_early"] is True


def test_it_uses_the_global_provider_by_default() -> None:
    observer = OpenTelemetryObserver(base_url="https://acme.ryng.in")
    assert repr(observer) == "OpenTelemetryObserver(server='acme.ryng.in', loads_open=0)"
