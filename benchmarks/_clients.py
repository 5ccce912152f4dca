"""End-to-end contenders: the SDK's ``bulk_append`` and the loops users would write instead.

Each takes the append URL (or base URL), the leads, a concurrency and a time cap, and
returns a `LoadRun`: leads the server accepted (answered 200) and the seconds it took.
The hand-written loops are what the docs of each library suggest for this job: one
session, ``asyncio.gather`` over the batches, a semaphore for the concurrency; they
validate nothing and only check the status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import httpx
import msgspec

from ryng_async import BulkReport, RyngClient

from ._data import envelope
from ._harness import Stopwatch
from ._server import CAMPAIGN, TOKEN, ServerProcess

_JSON = {"Content-Type": "application/json"}
_AUTH = {"x-access-token": TOKEN}


@dataclass(slots=True)
class LoadRun:
    """What one contender did in one run."""

    leads: int = 0
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    def count(self, status: int, leads: int) -> None:
        self.requests += 1
        if status == 200:
            self.leads += leads
        else:
            self.errors += 1

    @property
    def rate(self) -> float:
        """Leads accepted per second."""
        return self.leads / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_us_per_lead(self) -> float:
        """Client CPU microseconds per lead accepted (steady under a noisy neighbour)."""
        return 1e6 * self.client_cpu / self.leads if self.leads else float("nan")

    @property
    def server_us_per_lead(self) -> float:
        """Server CPU microseconds per lead accepted."""
        return 1e6 * self.server_cpu / self.leads if self.leads else float("nan")


async def measured(server: ServerProcess, work: Callable[[], Awaitable[LoadRun]]) -> LoadRun:
    """Run ``work`` and add the CPU time it cost this process and the server process."""
    client_before = time.process_time()
    server_before = server.cpu_seconds()
    run = await work()
    run.client_cpu = time.process_time() - client_before
    run.server_cpu = server.cpu_seconds() - server_before
    return run


async def sdk(
    base_url: str,
    leads: list[dict[str, Any]],
    *,
    batch_size: int,
    concurrency: int,
    cap: float,
    rate_limit: float | None = None,
) -> LoadRun:
    """``RyngClient.bulk_append`` over a list of wire-form dicts (validated by the SDK)."""
    report = BulkReport()
    async with RyngClient(base_url=base_url, access_token=TOKEN, rate_limit=rate_limit) as client:
        with Stopwatch() as watch, anyio.move_on_after(cap):
            await client.bulk_append(
                CAMPAIGN, leads, batch_size=batch_size, concurrency=concurrency, report=report
            )
    return LoadRun(
        leads=report.accepted,
        seconds=watch.seconds,
        requests=len(report.batches),
        errors=report.failed + report.unknown,
    )


async def aiohttp_msgspec(
    url: str, batches: list[list[dict[str, Any]]], *, concurrency: int, cap: float
) -> LoadRun:
    """aiohttp + ``msgspec.json.Encoder`` + a semaphore."""
    run = LoadRun()
    encoder = msgspec.json.Encoder()
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=_AUTH) as session:

        async def post(batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                try:
                    body = encoder.encode(envelope(batch))
                    async with session.post(url, data=body, headers=_JSON) as response:
                        await response.read()
                        run.count(response.status, len(batch))
                except (aiohttp.ClientError, OSError):
                    run.errors += 1

        run.seconds = await _gather(post, batches, cap)
    return run


async def aiohttp_json(
    url: str, batches: list[list[dict[str, Any]]], *, concurrency: int, cap: float
) -> LoadRun:
    """aiohttp with ``json=`` (stdlib ``json.dumps``) + a semaphore."""
    run = LoadRun()
    semaphore = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=_AUTH, json_serialize=json.dumps) as session:

        async def post(batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                try:
                    async with session.post(url, json=envelope(batch)) as response:
                        await response.read()
                        run.count(response.status, len(batch))
                except (aiohttp.ClientError, OSError):
                    run.errors += 1

        run.seconds = await _gather(post, batches, cap)
    return run


async def httpx_client(
    url: str, batches: list[list[dict[str, Any]]], *, concurrency: int, cap: float
) -> LoadRun:
    """``httpx.AsyncClient`` with ``json=`` + a semaphore (default pool limits)."""
    run = LoadRun()
    semaphore = asyncio.Semaphore(concurrency)
    # trust_env=False: loopback only, whatever proxy the environment names.
    async with httpx.AsyncClient(headers=_AUTH, timeout=30.0, trust_env=False) as client:

        async def post(batch: list[dict[str, Any]]) -> None:
            async with semaphore:
                try:
                    response = await client.post(url, json=envelope(batch))
                    run.count(response.status_code, len(batch))
                except httpx.HTTPError:
                    run.errors += 1

        run.seconds = await _gather(post, batches, cap)
    return run


async def _gather(post: Any, batches: list[list[dict[str, Any]]], cap: float) -> float:
    """Run ``post`` over every batch at once (the semaphore bounds it); stop at ``cap`` s."""
    with Stopwatch() as watch:
        try:
            async with asyncio.timeout(cap):
                await asyncio.gather(*(post(batch) for batch in batches))
        except TimeoutError:
            pass
    return watch.seconds


BASELINES = {
    "aiohttp + msgspec": aiohttp_msgspec,
    "aiohttp + json": aiohttp_json,
    "httpx": httpx_client,
}
"""The hand-written loops, by the name the tables use."""
