"""A FastAPI service sharing one RyngClient, with background bulk loads, metrics and traces.

- One `RyngClient` for the app's lifetime, opened and closed in the lifespan: one
  connection pool, one rate limit, one retry budget for every request of the service.
- ``POST /campaigns/{campaign_id}/leads`` appends one lead and answers when Ryng has it.
- ``POST /campaigns/{campaign_id}/loads`` starts a bulk load in the background and answers
  202 with its id at once; the load runs under the lifespan's task group, tracked by id.
- ``GET /loads/{load_id}`` reports its live counts (the `BulkReport`, filled as batches end).
- ``GET /metrics``: Prometheus metrics (`ryng_async.metrics.PrometheusObserver`); spans go
  to the application's OpenTelemetry tracer provider (`ryng_async.tracing`).
- At shutdown, running loads are stopped the gentle way: nothing new is sent, requests
  in flight get their answers (so they end accepted or failed, not unknown), their reports
  are final; after ``SHUTDOWN_GRACE`` seconds whatever is left is cancelled.

Run it with RYNG_SUBDOMAIN and RYNG_ACCESS_TOKEN (or RYNG_BASE_URL) set::

    uvicorn examples.fastapi_service:app --port 8000

Without them, ``python examples/fastapi_service.py`` runs the service against a fake Ryng
server on 127.0.0.1, calls each endpoint once with a real HTTP client, and stops.
Needs ``pip install fastapi uvicorn "ryng-async[prometheus,otel]"``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ryng_async import (
    APIError,
    BatchStream,
    BulkReport,
    LoadObserver,
    RyngClient,
    TransportError,
    ValidationError,
)
from ryng_async.metrics import PrometheusObserver
from ryng_async.tracing import OpenTelemetryObserver

SHUTDOWN_GRACE = 10.0  # seconds running loads get to settle at shutdown before a cancel


@dataclass
class Load:
    """A bulk load running in the background."""

    id: str
    campaign_id: str
    stream: BatchStream
    started: float = field(default_factory=time.monotonic)
    error: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def report(self) -> BulkReport:
        return self.stream.report

    async def run(self) -> None:
        try:
            async with self.stream as results:
                async for _ in results:  # the report fills itself; nothing to do per batch
                    pass
        except Exception as exc:  # a 403, an input that raised: the report says the rest
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def progress(self) -> dict[str, Any]:
        report = self.report
        state = "running"
        if report.finished:
            state = "failed" if self.error else ("stopped" if report.stopped_early else "done")
        elapsed = report.elapsed if report.finished else time.monotonic() - self.started
        return {
            "id": self.id,
            "campaign_id": self.campaign_id,
            "state": state,
            "total": report.total,
            "accepted": report.accepted,
            "failed": report.failed,
            "unknown": report.unknown,
            "skipped": report.skipped,
            "invalid": report.invalid,
            "ok": report.ok,
            "stop_reason": report.stop_reason,
            "error": self.error,
            "elapsed": round(elapsed, 3),
        }


class BackgroundLoads:
    """Bulk loads run under one task group, tracked by id, stopped at shutdown."""

    def __init__(self, client: RyngClient, *, grace: float = SHUTDOWN_GRACE) -> None:
        self.client = client
        self.grace = grace
        self.loads: dict[str, Load] = {}
        self._tasks: anyio.abc.TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[BackgroundLoads]:
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                yield self
            finally:
                self._tasks = None
                await self.stop_all()
                tasks.cancel_scope.cancel()  # anything the grace period did not settle

    def start(self, campaign_id: str, leads: list[dict[str, Any]], **options: Any) -> Load:
        if self._tasks is None:
            raise RuntimeError("the service is shutting down")
        stream = self.client.stream_append(campaign_id, leads, report=BulkReport(), **options)
        load = Load(id=uuid.uuid4().hex, campaign_id=campaign_id, stream=stream)
        self.loads[load.id] = load
        self._tasks.start_soon(load.run, name=f"bulk load {load.id}")
        return load

    async def stop_all(self) -> None:
        """Stop every running load: nothing new is sent, requests in flight end."""
        with anyio.move_on_after(self.grace, shield=True):
            async with anyio.create_task_group() as stopping:
                for load in self.loads.values():
                    if not load.done.is_set():
                        stopping.start_soon(load.stream.aclose)


def create_app(
    *,
    base_url: str | None = None,
    access_token: str | None = None,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    observers: Sequence[LoadObserver] = (),
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> FastAPI:
    """The service; settings default to the RYNG_* environment variables.

    ``registry`` holds its metrics (a new one if None), ``tracer_provider`` makes its
    spans (the global one if None), ``observers`` see every load event besides them.
    """
    registry = registry or CollectorRegistry()
    metrics = PrometheusObserver(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing = OpenTelemetryObserver(tracer_provider)
        client = RyngClient(
            base_url=base_url, access_token=access_token, observers=[metrics, tracing, *observers]
        )
        tracing.base_url = client.base_url  # for the spans' server.address
        async with client:
            async with BackgroundLoads(client, grace=shutdown_grace).running() as loads:
                app.state.client = client
                app.state.loads = loads
                yield

    app = FastAPI(lifespan=lifespan)

    @app.exception_handler(ValidationError)
    async def invalid_lead(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(APIError)
    async def refused(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(
            {"error": f"Ryng answered {exc.status}: {exc.message}"}, status_code=502
        )

    @app.exception_handler(TransportError)
    async def unreachable(request: Request, exc: TransportError) -> JSONResponse:
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=504)

    @app.post("/campaigns/{campaign_id}/leads")
    async def append_lead(
        campaign_id: str, lead: dict[str, Any], request: Request
    ) -> dict[str, str]:
        client: RyngClient = request.app.state.client
        response = await client.append(campaign_id, [lead])
        return {"message": response.message}

    @app.post("/campaigns/{campaign_id}/loads", status_code=202)
    async def start_load(
        campaign_id: str, leads: list[dict[str, Any]], request: Request, batch_size: int = 500
    ) -> dict[str, str]:
        load = request.app.state.loads.start(campaign_id, leads, batch_size=batch_size)
        return {"id": load.id, "progress": f"/loads/{load.id}"}

    @app.get("/loads/{load_id}")
    async def load_progress(load_id: str, request: Request) -> dict[str, Any]:
        load = request.app.state.loads.loads.get(load_id)
        if load is None:
            raise HTTPException(404, f"no load {load_id}")
        return load.progress()

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


# -- running it --------------------------------------------------------------------------


async def demo() -> None:
    """The service against a fake Ryng server, each endpoint called once over HTTP."""
    import aiohttp
    import uvicorn

    from ryng_async.testing import FakeRyngServer

    async with FakeRyngServer(latency=0.002) as ryng:
        app = create_app(base_url=ryng.base_url, access_token=ryng.access_token)
        sock = socket.create_server(("127.0.0.1", 0))
        service = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        serving = asyncio.create_task(service.serve(sockets=[sock]))
        try:
            # The socket listens already: requests wait until the lifespan has started.
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            async with aiohttp.ClientSession(url) as http:
                one = {"number": "+919876543210", "customField1": "Max"}
                async with http.post("/campaigns/42/leads", json=one) as answer:
                    print("append:", answer.status, await answer.json())
                rows = [{"number": f"+9198{i:08d}"} for i in range(20_000)]
                async with http.post("/campaigns/42/loads", json=rows) as answer:
                    load = await answer.json()
                    print("load started:", answer.status, load)
                for _ in range(1200):  # bounded: poll the progress as a dashboard would
                    async with http.get(load["progress"]) as answer:
                        progress = await answer.json()
                    if progress["state"] != "running":
                        break
                    await asyncio.sleep(0.05)
                print("progress:", progress)
                async with http.get("/metrics") as answer:
                    lines = (await answer.text()).splitlines()
                print(*(line for line in lines if line.startswith("ryng_leads_total")), sep="\n")
        finally:
            service.should_exit = True
            await serving
        assert progress["accepted"] == 20_000, progress
        assert ryng.lead_count() == 20_001


if os.environ.get("RYNG_ACCESS_TOKEN"):
    app = create_app()  # uvicorn examples.fastapi_service:app
elif __name__ == "__main__":
    asyncio.run(demo())
