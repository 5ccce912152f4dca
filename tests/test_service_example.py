"""examples/fastapi_service.py: served by uvicorn on 127.0.0.1, called with a real HTTP client."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from conftest import TOKEN

from ryng_async import AttemptStarting, LoadEvent
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

for _needed in ("fastapi", "uvicorn", "prometheus_client", "opentelemetry.sdk"):
    pytest.importorskip(_needed)

import aiohttp  # noqa: E402
import uvicorn  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from prometheus_client import CollectorRegistry  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_service.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_service_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


service = load_example()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yield an HTTP client session bound to it."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        try:
            # The socket listens already: requests wait until the lifespan has started.
            async with aiohttp.ClientSession(f"http://127.0.0.1:{sock.getsockname()[1]}") as http:
                yield http
        finally:
            server.should_exit = True


def leads(count: int) -> list[dict[str, str]]:
    return [{"number": f"+9198{i:08d}", "customField1": f"c{i}"} for i in range(count)]


@pytest.mark.anyio
async def test_append_load_progress_metrics_and_traces() -> None:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The single append's first attempt gets a 500 and its retry goes through; the load's
    # requests then meet 500s at random (seeded).
    faults = FaultPlan(seed=2, rates={Fault.ERROR_500: 0.2}, script=[Fault.ERROR_500, None])
    async with FakeRyngServer(access_token=TOKEN, faults=faults) as ryng:
        app = service.create_app(
            base_url=ryng.base_url, access_token=TOKEN, registry=registry, tracer_provider=provider
        )
        async with serving(app) as http:
            async with http.post("/campaigns/42/leads", json={"number": "+919876543210"}) as answer:
                assert answer.status == 200  # the 500 was retried
                first = await answer.json()
            assert [r.fault for r in ryng.requests] == [Fault.ERROR_500, None]
            async with http.post("/campaigns/42/leads", json={"number": "98765"}) as answer:
                assert answer.status == 422
                assert "number" in (await answer.json())["error"]
            rows = [*leads(3000), {"number": "bad"}]
            async with http.post("/campaigns/7/loads?batch_size=100", json=rows) as answer:
                assert answer.status == 202
                started = await answer.json()
            load = app.state.loads.loads[started["id"]]
            with anyio.fail_after(30):
                await load.done.wait()
            async with http.get(started["progress"]) as answer:
                progress = await answer.json()
            async with http.get("/loads/nope") as answer:
                assert answer.status == 404
            async with http.get("/metrics") as answer:
                assert answer.status == 200
                metrics = await answer.text()
        received = ryng.leads_for("7")
    report = load.report
    assert first == {"message": "Processing Campaign..."}
    assert progress["state"] == "done"
    counts = ("total", "accepted", "failed", "unknown", "skipped", "invalid")
    assert {k: progress[k] for k in counts} == {k: getattr(report, k) for k in counts}
    assert report.total == 3001
    assert report.invalid == 1
    assert report.accepted == len(received)
    # Single appends are requests, not loads: the lead counters are the load's.
    assert f'ryng_leads_total{{outcome="accepted"}} {float(report.accepted)}' in metrics
    assert registry.get_sample_value("ryng_leads_total", {"outcome": "invalid"}) == 1
    assert "ryng_request_duration_seconds_bucket" in metrics
    assert registry.get_sample_value("ryng_requests_in_flight") == 0
    spans = exporter.get_finished_spans()
    (load_span,) = [s for s in spans if s.name == "ryng bulk load"]
    attempts = [s for s in spans if s.name == "POST"]
    assert dict(load_span.attributes or {})["ryng.leads.accepted"] == report.accepted
    assert {dict(s.attributes or {})["server.address"] for s in attempts} == {"127.0.0.1"}
    assert len(attempts) == ryng.received_requests


@pytest.mark.anyio
async def test_shutdown_stops_running_loads_and_lets_requests_in_flight_end() -> None:
    sending = anyio.Event()

    def watch(event: LoadEvent) -> None:
        if isinstance(event, AttemptStarting):
            sending.set()

    async with FakeRyngServer(access_token=TOKEN, latency=0.2) as ryng:
        app = service.create_app(
            base_url=ryng.base_url,
            access_token=TOKEN,
            registry=CollectorRegistry(),
            observers=[watch],
            shutdown_grace=20,
        )
        async with serving(app) as http:
            async with http.post("/campaigns/42/loads?batch_size=100", json=leads(5000)) as answer:
                started = await answer.json()
            load = app.state.loads.loads[started["id"]]
            with anyio.fail_after(10):
                await sending.wait()
        # uvicorn has stopped: its lifespan stopped the load and closed the client.
        report = load.report
        assert load.done.is_set()
        assert app.state.client.closed
        assert report.finished
        assert report.stopped_early
        assert report.unknown == 0  # requests in flight got their answers
        assert report.accepted == ryng.lead_count() > 0
        assert report.skipped > 0
        assert report.total == report.accepted + report.skipped
        assert load.progress()["state"] == "stopped"
