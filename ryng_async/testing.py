"""`FakeRyngServer`: a real HTTP server on 127.0.0.1 speaking Ryng's Append Campaign API.

For this project's tests and for yours:

    from ryng_async import RyngClient
    from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

    async with FakeRyngServer(faults=FaultPlan(seed=7, rates={Fault.ERROR_500: 0.1})) as server:
        async with RyngClient(base_url=server.base_url, access_token=server.access_token) as c:
            await c.append("42", [{"number": "+919876543210"}])
        assert server.lead_count() == 1

It checks the token (403 with the vendor's body), answers the vendor's 200 and 500
bodies, can be slow (``latency``), rate-limited (429 with ``Retry-After``) and faulty
(seeded: the same plan and bodies give the same faults whatever the arrival order), and
records every request and every lead it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import enum
import hashlib
import math
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import msgspec
from aiohttp import web
from aiohttp.helpers import parse_mimetype

from ._models import AppendRequest
from ._vendor_rules import csv_rows, first_bad_lead, leads_pass

__all__ = ["FakeRyngServer", "Fault", "FaultPlan", "ManualClock", "ReceivedRequest"]

_OK = msgspec.json.encode({"error": False, "message": "Processing Campaign...", "data": {}})
_UNAUTHORIZED = msgspec.json.encode({"error": True, "message": "Unauthorized Token"})
_FAILED = msgspec.json.encode({"error": True, "message": "Failed to create Campaign"})
_ERROR_TRUE = _FAILED  # the vendor's failure body, answered with 200
_TOO_MANY = msgspec.json.encode({"error": True, "message": "Too Many Requests"})
_API_PREFIX = "/rest-api/v1/campaign/"
_request_decoder = msgspec.json.Decoder(AppendRequest)


class Fault(enum.StrEnum):
    """A failure the server can inject into one request."""

    ERROR_500 = "500"
    """Answer 500 with the vendor's "Failed to create Campaign"; nothing recorded."""
    RATE_LIMIT = "429"
    """Answer 429 with ``Retry-After``; nothing recorded."""
    ERROR_TRUE = "error-true"
    """Answer 200 with ``"error": true``; nothing recorded."""
    BAD_REQUEST = "400"
    """Answer 400; nothing recorded."""
    RESET = "reset"
    """Reset the connection before processing; nothing recorded."""
    DROP = "drop"
    """Record the leads, then drop the connection without answering."""
    HANG = "hang"
    """Never answer (until the client gives up or the server closes); nothing recorded."""
    BAD_GATEWAY = "502"
    """Record the leads, then answer a proxy's HTML 502 (a proxy that lost the answer)."""
    GATEWAY_TIMEOUT = "504"
    """Record the leads, then answer a proxy's HTML 504 (a proxy that gave up waiting)."""
    UNAVAILABLE = "503"
    """Answer a proxy's HTML 503 (with ``Retry-After`` if the plan has one); nothing recorded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Which requests fail, and how.

    Args:
        seed: seeds the draws. A request's fault is drawn from the seed, its body and how
            many times that same body was received before, so a run is reproducible
            whatever the order requests arrive in.
        rates: the chance of each fault per request (their sum at most 1).
        script: faults for the first requests in arrival order (None: no fault), applied
            before ``rates``; handy with one request at a time.
        retry_after: the ``Retry-After`` header sent with `Fault.RATE_LIMIT` and
            `Fault.UNAVAILABLE` (None: none).
    """

    seed: int = 0
    rates: Mapping[Fault, float] = field(default_factory=dict)
    script: Sequence[Fault | None] = ()
    retry_after: str | None = "0"

    def __post_init__(self) -> None:
        total = sum(self.rates.values())
        if any(r < 0 for r in self.rates.values()) or total > 1 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1, got {total}")


@dataclass(slots=True, kw_only=True)
class ReceivedRequest:
    """One request as the server saw it.

    Attributes:
        index: arrival order, from 0.
        arrived: ``time.monotonic()`` at arrival.
        method, path: as received (the path still percent-encoded).
        campaign_id: the decoded campaign id from the path.
        headers: the request headers.
        content_type: the body's media type.
        body: the raw body.
        request: the decoded JSON body, or None (multipart, or undecodable).
        leads: the JSON body's leads as received.
        sheet: the ``campaign-sheet`` file of a multipart request.
        form: the multipart text fields (``agents``).
        fault: the fault injected, or None.
        status: the status answered (None if the connection was dropped or reset).
        accepted: the leads were recorded as appended.
    """

    index: int
    arrived: float
    method: str
    path: str
    campaign_id: str
    headers: Mapping[str, str]
    content_type: str
    body: bytes = b""
    request: AppendRequest | None = None
    leads: list[dict[str, Any]] = field(default_factory=list)
    sheet: bytes | None = None
    form: dict[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    status: int | None = None
    accepted: bool = False


class FakeRyngServer:
    """A fake Ryng API on 127.0.0.1 with an ephemeral port; an async context manager.

    Args:
        access_token: the only token accepted (others get 403 "Unauthorized Token").
        latency: seconds to wait before each answer (after recording the leads).
        faults: a `FaultPlan`, or None for no faults.
        rate_limit: requests accepted in any one-second window (its whole part, >= 1);
            beyond, 429 with ``Retry-After``.
        record: keep every request, its body and its leads (turn off for huge loads;
            counts are kept either way).
        host: the address to listen on (loopback only: 127.0.0.1 or ::1).
        port: the port, 0 for an ephemeral one.
        max_body: the largest request body accepted (larger: 413, Ryng's JSON body).
        idle_timeout: seconds an idle connection is kept before the server closes it,
            sending no ``Keep-Alive`` header (as nginx and gunicorn do); None: aiohttp's
            own (an hour).
        validate_leads: check every lead as the real API would (number in E.164 form,
            known field names, string values), answering 400 naming the first bad one,
            so tests catch bad leads sent around the SDK. The rules are the server's own,
            written from the vendor's reference, not the SDK's validation: a bug there
            cannot pass on both sides. False makes a faster sink.
        on_request: called with each request's `ReceivedRequest` (its ``body`` read,
            nothing decided yet) once it passed the token and rate checks, before any
            fault or answer; an awaitable it returns is awaited first. For tests that
            look at the world as a request arrives (a checkpoint journal, say) or act
            then (a signal to the loader). What it raises is answered 500 by aiohttp:
            collect findings and assert after the load.
    """

    def __init__(
        self,
        *,
        access_token: str = "test-token",  # noqa: S107 - a fake server's fixed test token
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        rate_limit: float | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = 64 << 20,
        validate_leads: bool = True,
        idle_timeout: float | None = None,
        on_request: Callable[[ReceivedRequest], Awaitable[None] | None] | None = None,
    ) -> None:
        if idle_timeout is not None and not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ValueError(f"idle_timeout must be > 0 seconds or None, got {idle_timeout!r}")
        if host not in {"127.0.0.1", "::1", "localhost"}:
            raise ValueError(f"FakeRyngServer listens on loopback only, got host={host!r}")
        if rate_limit is not None and not (math.isfinite(rate_limit) and rate_limit >= 1):
            raise ValueError(f"rate_limit must be a number >= 1 or None, got {rate_limit!r}")
        if not (math.isfinite(latency) and latency >= 0):
            raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")
        self.access_token = access_token
        self.latency = latency
        self.faults = faults or FaultPlan()
        self.rate_limit = rate_limit
        self.record = record
        self.host = host
        self.port = port
        self.max_body = max_body
        self.validate_leads = validate_leads
        self.idle_timeout = idle_timeout
        self.on_request = on_request
        self.requests: list[ReceivedRequest] = []
        self.leads: list[dict[str, Any]] = []
        self.received_requests = 0
        self.accepted_requests = 0
        self.accepted_leads = 0
        self.faults_injected: Counter[Fault] = Counter()
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self._seen_bodies: Counter[bytes] = Counter()
        self._window: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    # -- life cycle --------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give `RyngClient` as ``base_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, campaign_id: str) -> str:
        """The append URL of a campaign on this server."""
        return f"{self.base_url}{_API_PREFIX}{quote(campaign_id, safe='')}"

    async def start(self) -> None:
        """Start listening; `port` is then the port bound."""
        # Older aiohttp refuses a body of exactly client_max_size, newer ones only a byte
        # over: one byte of slack here, and the limit checked in _process, exact on both.
        app = web.Application(client_max_size=self.max_body + 1)
        # Any id but a slash (aiohttp's default pattern refuses braces).
        app.router.add_route("*", _API_PREFIX + "{campaign_id:[^/]+}", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        if self.idle_timeout is None:
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        else:
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, keepalive_timeout=self.idle_timeout
            )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop the server; hanging requests are released and their connections closed."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- queries -----------------------------------------------------------------------

    def lead_count(self) -> int:
        """Leads accepted (recorded as appended) so far; a sheet counts its data rows."""
        return self.accepted_leads

    def leads_for(self, campaign_id: str) -> list[dict[str, Any]]:
        """Leads accepted for one campaign, in arrival order."""
        return [
            lead
            for request in self.requests
            if request.accepted and request.campaign_id == campaign_id
            for lead in request.leads
        ]

    def lead_counts(self, key: str = "number") -> Counter[Any]:
        """How many times each value of ``key`` was accepted (to spot duplicates)."""
        return Counter(lead.get(key) for lead in self.leads)

    def max_requests_per_window(self, window: float = 1.0) -> int:
        """The most requests that arrived within any ``window`` seconds (half-open)."""
        times = self.arrivals
        best = 0
        start = 0
        for end, arrived in enumerate(times):
            while arrived - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- handling ----------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _json(404, b'{"error":true,"message":"Not Found"}')

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._process(request)
        finally:
            self.in_flight -= 1

    async def _process(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.arrivals.append(now)
        record = ReceivedRequest(
            index=self.received_requests,
            arrived=now,
            method=request.method,
            path=request.raw_path,
            campaign_id=request.match_info["campaign_id"],
            headers=dict(request.headers),
            content_type=request.content_type,
        )
        self.received_requests += 1
        if self.record:
            self.requests.append(record)
        if request.method != "POST":
            return self._answer(record, 405, b'{"error":true,"message":"Method Not Allowed"}')
        if request.headers.get("x-access-token") != self.access_token:
            return self._answer(record, 403, _UNAUTHORIZED)
        if self._over_rate(now):
            retry = max(1, math.ceil(self._window[0] + 1.0 - now))
            return self._answer(record, 429, _TOO_MANY, {"Retry-After": str(retry)})
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        if raw is None or len(raw) > self.max_body:
            return self._answer(record, 413, b'{"error":true,"message":"Payload Too Large"}')
        record.body = raw  # kept only in a record of self.requests
        if self.on_request is not None:
            waiting = self.on_request(record)
            if waiting is not None:
                await waiting
        fault = self._draw_fault(record.index, raw)
        record.fault = fault
        if fault is not None:
            self.faults_injected[fault] += 1
            early = await self._inject_early(record, request, fault)
            if early is not None:
                return early
        if request.content_type == "multipart/form-data":
            parsed, count = self._read_multipart(record, request, raw)
        else:
            parsed = self._read_json(record, raw)
            count = len(record.leads)
        if parsed is not None:
            return parsed
        self.accepted_requests += 1
        record.accepted = True
        self.accepted_leads += count
        if self.record:
            self.leads.extend(record.leads)
        else:
            record.leads = []
        if fault is Fault.DROP:
            _reset(request)
            return web.Response(status=200)
        if fault is Fault.BAD_GATEWAY or fault is Fault.GATEWAY_TIMEOUT:
            return self._proxy_page(record, int(fault.value))
        if self.latency:
            await asyncio.sleep(self.latency)
        return self._answer(record, 200, _OK)

    def _over_rate(self, now: float) -> bool:
        if self.rate_limit is None:
            return False
        window = self._window
        while window and now - window[0] >= 1.0:
            window.popleft()
        if len(window) >= int(self.rate_limit):
            return True
        window.append(now)
        return False

    def _draw_fault(self, index: int, body: bytes) -> Fault | None:
        plan = self.faults
        if index < len(plan.script):
            return plan.script[index]
        if not plan.rates:
            return None
        digest = hashlib.blake2b(body, digest_size=16).digest()
        seen = self._seen_bodies[digest]
        self._seen_bodies[digest] = seen + 1
        (draw_seed,) = struct.unpack(
            "<Q",
            hashlib.blake2b(digest + struct.pack("<qq", plan.seed, seen), digest_size=8).digest(),
        )
        draw = random.Random(draw_seed).random()
        for fault, rate in plan.rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return None

    async def _inject_early(
        self, record: ReceivedRequest, request: web.Request, fault: Fault
    ) -> web.StreamResponse | None:
        if fault is Fault.ERROR_500:
            return self._answer(record, 500, _FAILED)
        if fault is Fault.RATE_LIMIT:
            headers = (
                {} if self.faults.retry_after is None else {"Retry-After": self.faults.retry_after}
            )
            return self._answer(record, 429, _TOO_MANY, headers)
        if fault is Fault.ERROR_TRUE:
            return self._answer(record, 200, _ERROR_TRUE)
        if fault is Fault.UNAVAILABLE:
            retry_after = self.faults.retry_after
            return self._proxy_page(
                record, 503, {} if retry_after is None else {"Retry-After": retry_after}
            )
        if fault is Fault.BAD_REQUEST:
            return self._answer(record, 400, b'{"error":true,"message":"Bad Request"}')
        if fault is Fault.RESET:
            _reset(request)
            return web.Response(status=500)
        if fault is Fault.HANG:
            await self._closing.wait()
            _reset(request)
            return web.Response(status=500)
        return None

    def _read_json(self, record: ReceivedRequest, raw: bytes) -> web.StreamResponse | None:
        try:
            decoded = _request_decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            message = msgspec.json.encode({"error": True, "message": f"Invalid body: {exc}"})
            return self._answer(record, 400, message)
        leads = decoded.customer_data.json_data
        if not leads:
            return self._answer(record, 400, b'{"error":true,"message":"No customer data"}')
        if self.validate_leads and not leads_pass(leads):
            bad = first_bad_lead(leads)
            if bad is not None:
                position, field_name, reason = bad
                message = msgspec.json.encode(
                    {
                        "error": True,
                        "message": f"Invalid customer data: lead #{position}: "
                        f"{field_name}: {reason}",
                    }
                )
                return self._answer(record, 400, message)
        record.request = decoded if self.record else None
        record.leads = leads
        return None

    def _read_multipart(
        self, record: ReceivedRequest, request: web.Request, raw: bytes
    ) -> tuple[web.StreamResponse | None, int]:
        """The answer to a sheet it refuses (else None), and the sheet's data rows."""
        form = _split_multipart(raw, request.headers.get("Content-Type", ""))
        if form is None or "campaign-sheet" not in form:
            answer = self._answer(
                record, 400, b'{"error":true,"message":"campaign-sheet is required"}'
            )
            return answer, 0
        sheet = form.pop("campaign-sheet")
        record.sheet = sheet
        try:
            rows = csv_rows(sheet)
            record.form = {key: value.decode() for key, value in form.items()}
        except (ValueError, csv.Error) as exc:  # UnicodeDecodeError is a ValueError
            message = msgspec.json.encode(
                {"error": True, "message": f"campaign-sheet is not a CSV file: {exc}"}
            )
            return self._answer(record, 400, message), 0
        return None, rows

    def _answer(
        self,
        record: ReceivedRequest,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        record.status = status
        self.statuses[status] += 1
        return _json(status, body, headers)

    def _proxy_page(
        self, record: ReceivedRequest, status: int, headers: Mapping[str, str] | None = None
    ) -> web.StreamResponse:
        """Answer as nginx does when it, not Ryng, fails: an HTML page."""
        record.status = status
        self.statuses[status] += 1
        reason = _PROXY_REASONS[status]
        page = (
            f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return web.Response(status=status, text=page, content_type="text/html", headers=headers)


_PROXY_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def _json(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP reset, answering nothing."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _split_multipart(raw: bytes, content_type: str) -> dict[str, bytes] | None:
    """Split a multipart body already read into its named parts."""
    boundary = parse_mimetype(content_type).parameters.get("boundary")
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode()
    parts: dict[str, bytes] = {}
    for chunk in raw.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        name = None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                for item in line.split(b";"):
                    key, _, value = item.strip().partition(b"=")
                    if key == b"name":
                        name = value.strip(b'"').decode()
        if name is not None:
            parts[name] = content.removesuffix(b"\r\n")
    return parts


class ManualClock:
    """A `ryng_async.Clock` that only moves when told to, or when the SDK sleeps on it.

    Pass it as ``RyngClient(clock=...)`` or ``AdaptiveLimiter(clock=...)`` to test retry
    waits, pauses, a learned rate limit's release or a report's timings without waiting:
    every ``sleep(s)`` returns at once, having moved the clock ``s`` seconds on (and
    recorded ``s`` in `sleeps`). The request spacing inside `AdaptiveLimiter` is
    aiolimiter's, on the event loop's own clock, and is not driven by this one.

    Args:
        start: the first reading.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        """Return the clock's reading."""
        return self.time

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r}")
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        """Move the clock ``seconds`` on and yield to the event loop once."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"ManualClock(time={self.time!r})"
