"""Tests for ryng_async.testing.FakeRyngServer, driven over real HTTP on loopback.

Most tests speak to the server with a plain `aiohttp.ClientSession`, so they check the
server itself and not the client's mapping of its answers; a few use `RyngClient` where
the round trip is the point.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from conftest import FAST_RETRY, TOKEN, VENDOR_EXAMPLE_BODY

from ryng_async import RyngClient
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

pytestmark = pytest.mark.anyio

OK_BODY = {"error": False, "message": "Processing Campaign...", "data": {}}
UNAUTHORIZED_BODY = {"error": True, "message": "Unauthorized Token"}
FAILED_BODY = {"error": True, "message": "Failed to create Campaign"}

AUTH = {"x-access-token": TOKEN, "Content-Type": "application/json"}


def leads_body(*numbers: str, **extra: Any) -> bytes:
    """A JSON append body with one lead per number."""
    leads = [{"number": number} for number in numbers]
    return msgspec.json.encode({**extra, "customerData": {"jsonData": leads}})


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"+9198765{n:05d}" for n in range(start, start + count)]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    total: float | None = None,
) -> tuple[int, bytes, Mapping[str, str]]:
    """POST and return status, body and headers (``total``: the client's timeout)."""
    client_timeout = aiohttp.ClientTimeout(total=total)
    async with http.post(
        url, data=body, headers=AUTH if headers is None else headers, timeout=client_timeout
    ) as response:
        return response.status, await response.read(), dict(response.headers)


async def wait_until(condition: Callable[[], bool], limit: float = 5.0) -> None:
    """Poll server state until ``condition`` holds (fails after ``limit`` seconds)."""
    with anyio.fail_after(limit):
        # The server exposes counters, not events, for requests in its handler.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.002)


# -- listening -------------------------------------------------------------------------


async def test_listens_on_loopback_with_an_ephemeral_port(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server:
        assert server.host == "127.0.0.1"
        assert 0 < server.port < 65536
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert server.url("42") == f"{server.base_url}/rest-api/v1/campaign/42"
        status, _, _ = await post(session, server.url("42"), leads_body("+919876543210"))
        assert status == 200


async def test_two_servers_get_different_ports() -> None:
    async with FakeRyngServer() as first, FakeRyngServer() as second:
        assert first.port != second.port


async def test_closed_server_refuses_connections(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server:
        url = server.url("42")
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, url, leads_body("+919876543210"))


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::", ""])  # noqa: S104
def test_refuses_a_non_loopback_host(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FakeRyngServer(host=host)


def test_ipv6_loopback_base_url_is_bracketed() -> None:
    server = FakeRyngServer(host="::1", port=8123)
    assert server.base_url == "http://[::1]:8123"


def test_default_token_is_exposed_for_clients() -> None:
    server = FakeRyngServer()
    assert server.access_token
    assert FakeRyngServer(access_token="abc").access_token == "abc"


@pytest.mark.parametrize("rate_limit", [0, -1, math.nan])
def test_refuses_a_rate_limit_that_is_not_positive(rate_limit: float) -> None:
    # rate_limit=0 is accepted today and every request then dies on an IndexError inside
    # the handler (the client sees aiohttp's bare "500 Internal Server Error").
    with pytest.raises(ValueError, match="rate_limit"):
        FakeRyngServer(rate_limit=rate_limit)


# -- the vendor's answers --------------------------------------------------------------


async def test_success_body_is_the_vendors(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    status, body, headers = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 200
    assert json.loads(body) == OK_BODY
    assert headers["Content-Type"].startswith("application/json")


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"x-access-token": "wrong-token", "Content-Type": "application/json"},
        {"x-access-token": "", "Content-Type": "application/json"},
        {"x-access-token": TOKEN.upper(), "Content-Type": "application/json"},
    ],
    ids=["missing", "wrong", "empty", "wrong-case"],
)
async def test_wrong_or_missing_token_gets_the_vendors_403(
    server: FakeRyngServer, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    status, body, _ = await post(
        session, server.url("42"), leads_body("+919876543210"), headers=headers
    )
    assert status == 403
    assert json.loads(body) == UNAUTHORIZED_BODY
    assert server.leads == []
    assert server.lead_count() == 0
    assert server.requests[0].status == 403
    assert not server.requests[0].accepted


async def test_token_header_name_is_case_insensitive(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    headers = {"X-Access-Token": TOKEN, "Content-Type": "application/json"}
    status, _, _ = await post(session, server.url("42"), leads_body("+919876543210"), headers)
    assert status == 200


async def test_500_body_is_the_vendors(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(
        access_token=TOKEN, faults=FaultPlan(script=[Fault.ERROR_500])
    ) as server:
        status, body, _ = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 500
    assert json.loads(body) == FAILED_BODY


async def test_unknown_path_is_404(server: FakeRyngServer, session: aiohttp.ClientSession) -> None:
    for path in ("/", "/rest-api/v1/campaign/", "/rest-api/v2/campaign/42", "/other"):
        status, body, _ = await post(session, server.base_url + path, leads_body("+919876543210"))
        assert status == 404, path
        assert json.loads(body)["error"] is True
    assert server.lead_count() == 0


async def test_other_methods_are_refused(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    async with session.get(server.url("42"), headers=AUTH) as response:
        assert response.status == 405
        assert (await response.json())["error"] is True
    assert server.lead_count() == 0


async def test_invalid_json_is_400(server: FakeRyngServer, session: aiohttp.ClientSession) -> None:
    for body in (b"{not json", b"[]", b'{"customerData": {"jsonData": "nope"}}'):
        status, answer, _ = await post(session, server.url("42"), body)
        assert status == 400, body
        assert json.loads(answer)["error"] is True
    assert server.lead_count() == 0
    assert server.leads == []
    assert [r.status for r in server.requests] == [400, 400, 400]


async def test_body_without_leads_is_400(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    for body in (b"{}", b'{"customerData": {"jsonData": []}}'):
        status, _, _ = await post(session, server.url("42"), body)
        assert status == 400, body
    assert server.accepted_requests == 0


async def test_body_over_max_body_is_413(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(access_token=TOKEN, max_body=200) as server:
        fits = leads_body(*numbers(3))
        assert len(fits) <= 200
        status, _, _ = await post(session, server.url("42"), fits)
        assert status == 200
        too_big = leads_body(*numbers(20))
        assert len(too_big) > 200
        status, body, _ = await post(session, server.url("42"), too_big)
        assert status == 413
        assert json.loads(body)["error"] is True
        assert server.lead_count() == 3


async def test_body_of_exactly_max_body_is_accepted(session: aiohttp.ClientSession) -> None:
    body = leads_body(*numbers(3))
    async with FakeRyngServer(access_token=TOKEN, max_body=len(body)) as server:
        status, _, _ = await post(session, server.url("42"), body)
        assert status == 200


async def test_body_one_byte_over_max_body_is_413(session: aiohttp.ClientSession) -> None:
    body = leads_body(*numbers(3))
    async with FakeRyngServer(access_token=TOKEN, max_body=len(body) - 1) as server:
        status, _, _ = await post(session, server.url("42"), body)
        assert status == 413
        assert server.accepted_requests == 0


# -- lead validation: the server's own rules, from the vendor's reference --------------


async def test_the_vendors_example_body_is_accepted(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(session, server.url("42"), VENDOR_EXAMPLE_BODY)
    assert status == 200, body
    assert server.lead_count() == 4
    assert server.leads == json.loads(VENDOR_EXAMPLE_BODY)["customerData"]["jsonData"]


async def test_bad_leads_sent_around_the_sdk_are_refused_naming_the_lead(
    session: aiohttp.ClientSession,
) -> None:
    body = leads_body("+919876543210", "12345")
    async with FakeRyngServer(access_token=TOKEN) as server:
        status, answer, _ = await post(session, server.url("7"), body)
        assert status == 400
        message = msgspec.json.decode(answer)["message"]
        assert "lead #1" in message
        assert "number" in message
        assert server.lead_count() == 0
        assert server.leads == []


@pytest.mark.parametrize(
    ("bad", "field", "says"),
    [
        ({"customField1": "Max"}, "number", "is required"),
        ({"number": 919876543210}, "number", "E.164"),
        ({"number": "+919876543210\n"}, "number", "E.164"),
        ({"number": "+91987654321\uff10"}, "number", "E.164"),
        ({"number": "+0919876543210"}, "number", "E.164"),
        ({"number": "+919876543210", "customField0": "x"}, "customField0", "not a lead field"),
        ({"number": "+919876543210", "agents": ["a@x.com"]}, "agents", "not a lead field"),
        ({"number": "+919876543210", "customField3": 7}, "customField3", "must be a string"),
        ({"number": "+919876543210", "agentsAssigned": []}, "agentsAssigned", "non-empty"),
        ({"number": "+919876543210", "agentsAssigned": "a@x.com"}, "agentsAssigned", "array"),
        ({"number": "+919876543210", "agentsAssigned": ["a@x.com", ""]}, "agentsAssigned", "''"),
    ],
)
async def test_the_400_names_the_first_bad_lead_its_field_and_the_rule(
    server: FakeRyngServer,
    session: aiohttp.ClientSession,
    bad: dict[str, Any],
    field: str,
    says: str,
) -> None:
    good = {"number": "+14155550123", "agentsAssigned": ["bob@x.com"], "customField1": "Ann"}
    body = msgspec.json.encode({"customerData": {"jsonData": [good, good, bad, bad, good]}})
    status, answer, _ = await post(session, server.url("7"), body)
    assert status == 400
    message = msgspec.json.decode(answer)["message"]
    assert message.startswith(f"Invalid customer data: lead #2: {field}: "), message
    assert says in message
    assert server.lead_count() == 0


async def test_every_lead_of_a_big_body_is_checked(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    rows: list[dict[str, Any]] = [
        {"number": number, "agentsAssigned": ["a@x.com"], "customField150": "x"}
        for number in numbers(500)
    ]
    status, _, _ = await post(
        session, server.url("7"), msgspec.json.encode({"customerData": {"jsonData": rows}})
    )
    assert status == 200
    rows[499] = {**rows[499], "customField150": None}
    status, answer, _ = await post(
        session, server.url("7"), msgspec.json.encode({"customerData": {"jsonData": rows}})
    )
    assert status == 400
    assert "lead #499: customField150" in msgspec.json.decode(answer)["message"]
    assert server.lead_count() == 500


async def test_lead_validation_can_be_turned_off(session: aiohttp.ClientSession) -> None:
    body = leads_body("+919876543210", "12345")
    async with FakeRyngServer(access_token=TOKEN, validate_leads=False) as server:
        status, _, _ = await post(session, server.url("7"), body)
        assert status == 200
        assert server.lead_count() == 2


# -- faults, one by one (scripted) -----------------------------------------------------


async def test_script_applies_faults_in_arrival_order_then_none(
    session: aiohttp.ClientSession,
) -> None:
    script = [Fault.ERROR_500, None, Fault.ERROR_TRUE, Fault.BAD_REQUEST]
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=script)) as server:
        statuses = []
        for n in numbers(6):
            status, _, _ = await post(session, server.url("42"), leads_body(n))
            statuses.append(status)
    assert statuses == [500, 200, 200, 400, 200, 200]
    assert [r.fault for r in server.requests] == [*script, None, None]
    assert server.faults_injected == {Fault.ERROR_500: 1, Fault.ERROR_TRUE: 1, Fault.BAD_REQUEST: 1}
    assert server.statuses == {200: 4, 500: 1, 400: 1}
    # Only the unfaulted requests' leads were recorded.
    assert [lead["number"] for lead in server.leads] == [numbers(6)[i] for i in (1, 4, 5)]


async def test_fault_error_500(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(
        access_token=TOKEN, faults=FaultPlan(script=[Fault.ERROR_500])
    ) as server:
        status, body, _ = await post(session, server.url("42"), leads_body("+919876543210"))
    assert (status, json.loads(body)) == (500, FAILED_BODY)
    assert server.lead_count() == 0
    assert server.requests[0].fault is Fault.ERROR_500
    assert server.requests[0].status == 500
    assert not server.requests[0].accepted


async def test_fault_rate_limit_sends_retry_after(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after="7")
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        status, body, headers = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert json.loads(body)["error"] is True
    assert server.lead_count() == 0
    assert server.requests[0].fault is Fault.RATE_LIMIT


async def test_fault_rate_limit_default_and_absent_retry_after(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeRyngServer(
        access_token=TOKEN, faults=FaultPlan(script=[Fault.RATE_LIMIT])
    ) as server:
        status, _, headers = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 429
    assert headers["Retry-After"] == "0"
    plan = FaultPlan(script=[Fault.RATE_LIMIT], retry_after=None)
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        status, _, headers = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 429
    assert "Retry-After" not in headers


async def test_fault_error_true_is_200_with_error_flag(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(
        access_token=TOKEN, faults=FaultPlan(script=[Fault.ERROR_TRUE])
    ) as server:
        status, body, _ = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 200
    assert json.loads(body)["error"] is True
    assert server.lead_count() == 0
    assert server.requests[0].fault is Fault.ERROR_TRUE


async def test_fault_bad_request(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(
        access_token=TOKEN, faults=FaultPlan(script=[Fault.BAD_REQUEST])
    ) as server:
        status, body, _ = await post(session, server.url("42"), leads_body("+919876543210"))
    assert status == 400
    assert json.loads(body)["error"] is True
    assert server.lead_count() == 0


async def test_fault_reset_is_a_connection_error_and_records_nothing(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=[Fault.RESET])) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, server.url("42"), leads_body("+919876543210"))
        assert server.lead_count() == 0
        assert server.leads == []
        assert server.requests[0].fault is Fault.RESET
        assert server.requests[0].status is None
        assert not server.requests[0].accepted
        # The server goes on answering the next request.
        status, _, _ = await post(session, server.url("42"), leads_body("+919876543211"))
        assert status == 200


async def test_fault_drop_records_the_leads_but_never_answers(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=[Fault.DROP])) as server:
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, server.url("42"), leads_body("+919876543210", "+919876543211"))
        assert server.lead_count() == 2
        assert [lead["number"] for lead in server.leads] == ["+919876543210", "+919876543211"]
        record = server.requests[0]
        assert record.fault is Fault.DROP
        assert record.accepted
        assert record.status is None
        assert server.statuses == {}


async def test_fault_hang_until_client_timeout(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=[Fault.HANG])) as server:
        with pytest.raises(TimeoutError):
            await post(session, server.url("42"), leads_body("+919876543210"), total=0.2)
        # Still hanging on the server's side; nothing recorded, nothing answered.
        assert server.in_flight == 1
        assert server.lead_count() == 0
        assert server.requests[0].fault is Fault.HANG
        assert server.requests[0].status is None
    assert server.in_flight == 0  # closing the server released it


async def test_fault_hang_until_server_close(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=[Fault.HANG])) as server:
        task = asyncio.ensure_future(post(session, server.url("42"), leads_body("+919876543210")))
        await wait_until(lambda: server.in_flight == 1)
        assert not task.done()
        await server.close()
        with pytest.raises(aiohttp.ClientConnectionError):
            await task
        assert server.in_flight == 0
        assert server.lead_count() == 0


def test_fault_plan_refuses_bad_rates() -> None:
    with pytest.raises(ValueError, match="rates"):
        FaultPlan(rates={Fault.ERROR_500: 0.7, Fault.RESET: 0.5})
    with pytest.raises(ValueError, match="rates"):
        FaultPlan(rates={Fault.ERROR_500: -0.1})
    FaultPlan(rates={Fault.ERROR_500: 0.5, Fault.RESET: 0.5})  # exactly 1 is fine


# -- seeded fault rates ----------------------------------------------------------------

ANSWERED_RATES = {Fault.ERROR_500: 0.25, Fault.RATE_LIMIT: 0.2, Fault.ERROR_TRUE: 0.15}


async def _faults_per_body(
    http: aiohttp.ClientSession, plan: FaultPlan, bodies: list[bytes]
) -> dict[tuple[bytes, int], tuple[Fault | None, int]]:
    """Send ``bodies`` one at a time; map (body, nth time sent) -> (fault, status)."""
    seen: dict[bytes, int] = {}
    outcome: dict[tuple[bytes, int], tuple[Fault | None, int]] = {}
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        for body in bodies:
            status, _, _ = await post(http, server.url("42"), body)
            nth = seen.get(body, 0)
            seen[body] = nth + 1
            outcome[body, nth] = (server.requests[-1].fault, status)
    return outcome


async def test_seeded_faults_are_the_same_whatever_the_arrival_order(
    session: aiohttp.ClientSession,
) -> None:
    bodies = [leads_body(n) for n in numbers(40)]
    bodies += bodies[:5]  # a few bodies sent twice: each sending draws its own fault
    shuffled = bodies[:]
    random.Random(1234).shuffle(shuffled)
    assert shuffled != bodies
    plan = FaultPlan(seed=42, rates=ANSWERED_RATES)
    in_order = await _faults_per_body(session, plan, bodies)
    reordered = await _faults_per_body(session, plan, shuffled)
    assert in_order == reordered
    # The rates did inject faults, of more than one kind, and let some through.
    kinds = {fault for fault, _ in in_order.values()}
    assert None in kinds
    assert len(kinds - {None}) >= 2


async def test_a_different_seed_gives_different_faults(session: aiohttp.ClientSession) -> None:
    bodies = [leads_body(n) for n in numbers(40)]
    first = await _faults_per_body(session, FaultPlan(seed=1, rates=ANSWERED_RATES), bodies)
    second = await _faults_per_body(session, FaultPlan(seed=2, rates=ANSWERED_RATES), bodies)
    assert first != second


async def test_fault_status_matches_the_fault_drawn(session: aiohttp.ClientSession) -> None:
    bodies = [leads_body(n) for n in numbers(40)]
    outcome = await _faults_per_body(session, FaultPlan(seed=5, rates=ANSWERED_RATES), bodies)
    expected = {None: 200, Fault.ERROR_500: 500, Fault.RATE_LIMIT: 429, Fault.ERROR_TRUE: 200}
    for fault, status in outcome.values():
        assert status == expected[fault]


async def test_seeded_faults_are_reproducible_under_concurrency(
    session: aiohttp.ClientSession,
) -> None:
    bodies = [leads_body(n) for n in numbers(30)]
    plan = FaultPlan(seed=9, rates=ANSWERED_RATES)
    sequential = await _faults_per_body(session, plan, bodies)
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        async with anyio.create_task_group() as group:
            for body in bodies:
                group.start_soon(post, session, server.url("42"), body)
        # Accepted requests keep their body; they must be exactly the unfaulted ones.
        accepted = {r.body for r in server.requests if r.accepted}
    assert accepted == {body for (body, _), (fault, _) in sequential.items() if fault is None}


async def test_script_comes_before_rates(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan(script=[Fault.BAD_REQUEST, None], rates={Fault.ERROR_500: 1.0})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        statuses = [(await post(session, server.url("42"), leads_body(n)))[0] for n in numbers(4)]
    assert statuses == [400, 200, 500, 500]


# -- rate limit and latency ------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after_beyond_the_rate(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeRyngServer(access_token=TOKEN, rate_limit=3) as server:
        answers = [await post(session, server.url("42"), leads_body(n)) for n in numbers(10)]
    limited = [(body, headers) for status, body, headers in answers if status == 429]
    assert limited  # ten requests cannot all fit in windows of three per second here
    for body, headers in limited:
        assert json.loads(body)["error"] is True
        assert int(headers["Retry-After"]) >= 1
    assert {status for status, _, _ in answers} <= {200, 429}
    # Whatever the timing, no one-second window accepted more than the rate.
    accepted = FakeRyngServer()
    accepted.arrivals = [r.arrived for r in server.requests if r.status == 200]
    assert 1 <= accepted.max_requests_per_window(1.0) <= 3
    # Refused requests recorded no leads.
    assert server.lead_count() == len(answers) - len(limited)


async def test_latency_delays_answers(session: aiohttp.ClientSession) -> None:
    latency = 0.15
    async with FakeRyngServer(access_token=TOKEN, latency=latency) as server:
        start = time.monotonic()
        status, _, _ = await post(session, server.url("42"), leads_body("+919876543210"))
        elapsed = time.monotonic() - start
    assert status == 200
    assert elapsed >= latency - 0.002  # a lower bound only


# -- the record ------------------------------------------------------------------------


async def test_record_of_requests_as_received(session: aiohttp.ClientSession) -> None:
    body = leads_body("+919876543210", "+917994771185", name="Example Campaign")
    async with FakeRyngServer(access_token=TOKEN) as server:
        before = time.monotonic()
        await post(session, server.url("a b/c"), body)
        await post(session, server.url("7"), leads_body("+919876543212"))
    assert len(server.requests) == 2
    first, second = server.requests
    assert isinstance(first, ReceivedRequest)
    assert (first.index, second.index) == (0, 1)
    assert before <= first.arrived <= second.arrived
    assert first.method == "POST"
    assert first.path == "/rest-api/v1/campaign/a%20b%2Fc"
    assert first.campaign_id == "a b/c"
    assert first.headers["x-access-token"] == TOKEN
    assert first.content_type == "application/json"
    assert first.body == body
    assert first.request is not None
    assert first.request.name == "Example Campaign"
    assert first.leads == [{"number": "+919876543210"}, {"number": "+917994771185"}]
    assert first.status == 200
    assert first.accepted
    assert first.fault is None
    assert first.sheet is None
    assert server.received_requests == 2
    assert server.accepted_requests == 2
    assert server.statuses == {200: 2}


async def test_record_keeps_the_body_of_refused_requests(session: aiohttp.ClientSession) -> None:
    # ReceivedRequest.body: "the raw body (empty when the server does not record bodies)".
    # With record=True a request answered with an injected fault or a 400 is still a
    # request received, and its body is what a test wants to look at.
    faulted = leads_body("+919876543210")
    invalid = b"{not json"
    plan = FaultPlan(script=[Fault.ERROR_500])
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        await post(session, server.url("42"), faulted)
        await post(session, server.url("42"), invalid)
    assert [r.status for r in server.requests] == [500, 400]
    assert [r.body for r in server.requests] == [faulted, invalid]


async def test_record_of_leads_and_queries(session: aiohttp.ClientSession) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server:
        await post(session, server.url("1"), leads_body("+910000000001", "+910000000002"))
        await post(session, server.url("2"), leads_body("+910000000003"))
        await post(session, server.url("1"), leads_body("+910000000001"))
        await post(session, server.url("1"), leads_body(), headers={})  # 403: not recorded
    assert server.lead_count() == 4
    assert [lead["number"] for lead in server.leads] == [
        "+910000000001",
        "+910000000002",
        "+910000000003",
        "+910000000001",
    ]
    assert [lead["number"] for lead in server.leads_for("1")] == [
        "+910000000001",
        "+910000000002",
        "+910000000001",
    ]
    assert server.leads_for("2") == [{"number": "+910000000003"}]
    assert server.leads_for("3") == []
    counts = server.lead_counts()
    assert counts["+910000000001"] == 2
    assert counts["+910000000002"] == 1
    assert sum(counts.values()) == 4
    assert [n for n, c in counts.items() if c > 1] == ["+910000000001"]


async def test_lead_counts_by_another_key(session: aiohttp.ClientSession) -> None:
    body = msgspec.json.encode(
        {
            "customerData": {
                "jsonData": [
                    {"number": "+910000000001", "customField1": "Max"},
                    {"number": "+910000000002", "customField1": "Max"},
                    {"number": "+910000000003"},
                ]
            }
        }
    )
    async with FakeRyngServer(access_token=TOKEN) as server:
        await post(session, server.url("1"), body)
    assert server.lead_counts("customField1") == {"Max": 2, None: 1}


async def test_record_false_keeps_counts_but_not_bodies(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan(script=[None, Fault.ERROR_500, None])
    async with FakeRyngServer(access_token=TOKEN, record=False, faults=plan) as server:
        await post(session, server.url("1"), leads_body("+910000000001", "+910000000002"))
        await post(session, server.url("1"), leads_body("+910000000003"))
        await post(session, server.url("1"), leads_body("+910000000004"))
        await post(session, server.url("1"), leads_body("+910000000005"), headers={})
    assert server.requests == []
    assert server.leads == []
    assert server.leads_for("1") == []
    assert not server.lead_counts()
    assert server.lead_count() == 3
    assert server.received_requests == 4
    assert server.accepted_requests == 2
    assert server.accepted_leads == 3
    assert server.statuses == {200: 2, 500: 1, 403: 1}
    assert server.faults_injected == {Fault.ERROR_500: 1}
    assert len(server.arrivals) == 4


async def test_max_in_flight_counts_concurrent_requests(session: aiohttp.ClientSession) -> None:
    plan = FaultPlan(script=[Fault.HANG] * 3)
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        tasks = [
            asyncio.ensure_future(post(session, server.url("1"), leads_body(n))) for n in numbers(3)
        ]
        await wait_until(lambda: server.in_flight == 3)
        assert server.max_in_flight == 3
        await server.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, aiohttp.ClientConnectionError) for r in results)
    assert server.in_flight == 0
    assert server.max_in_flight == 3


async def test_max_in_flight_is_one_for_sequential_requests(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    for n in numbers(3):
        await post(session, server.url("1"), leads_body(n))
    assert server.max_in_flight == 1
    assert server.in_flight == 0


def test_max_requests_per_window() -> None:
    server = FakeRyngServer()
    assert server.max_requests_per_window() == 0
    server.arrivals = [10.0]
    assert server.max_requests_per_window() == 1
    server.arrivals = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 3.0]
    assert server.max_requests_per_window(1.0) == 4  # half-open: 0.0 and 1.0 never together
    assert server.max_requests_per_window(0.5) == 2
    assert server.max_requests_per_window(0.25) == 1
    assert server.max_requests_per_window(2.0) == 6
    assert server.max_requests_per_window(10.0) == 7
    server.arrivals = [0.0, 1.0, 2.0, 3.0]
    assert server.max_requests_per_window(1.0) == 1
    server.arrivals = [5.0, 5.0, 5.0, 7.0]
    assert server.max_requests_per_window(1.0) == 3


async def test_max_requests_per_window_counts_real_arrivals(
    server: FakeRyngServer, session: aiohttp.ClientSession
) -> None:
    for n in numbers(4):
        await post(session, server.url("1"), leads_body(n))
    assert len(server.arrivals) == 4
    assert server.arrivals == sorted(server.arrivals)
    # An hour-long window holds them all, whatever the machine's speed.
    assert server.max_requests_per_window(3600.0) == 4


# -- multipart -------------------------------------------------------------------------


async def test_multipart_sheet_and_agents_are_parsed(session: aiohttp.ClientSession) -> None:
    sheet = b"number,customField1\r\n+919876543210,Max\r\n+917994771185,Alex\r\n"
    form = aiohttp.FormData()
    form.add_field("campaign-sheet", sheet, filename="leads.csv", content_type="text/csv")
    form.add_field("agents", "ashwin@example.com,alice@example.com")
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        session.post(server.url("42"), data=form, headers={"x-access-token": TOKEN}) as response,
    ):
        assert response.status == 200
        assert await response.json() == OK_BODY
    record = server.requests[0]
    assert record.content_type == "multipart/form-data"
    assert record.sheet == sheet
    assert record.form == {"agents": "ashwin@example.com,alice@example.com"}
    assert record.accepted
    assert record.request is None


async def test_multipart_without_agents(session: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("campaign-sheet", b"number\n+919876543210\n", filename="x.csv")
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        session.post(server.url("42"), data=form, headers={"x-access-token": TOKEN}) as response,
    ):
        assert response.status == 200
    assert server.requests[0].sheet == b"number\n+919876543210\n"
    assert server.requests[0].form == {}


async def test_multipart_without_campaign_sheet_is_400(session: aiohttp.ClientSession) -> None:
    form = aiohttp.FormData()
    form.add_field("agents", "in-file")
    form.add_field("other", b"x", filename="x.csv")
    async with (
        FakeRyngServer(access_token=TOKEN) as server,
        session.post(server.url("42"), data=form, headers={"x-access-token": TOKEN}) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"] is True
    assert server.accepted_requests == 0


@pytest.mark.parametrize(
    "sheet",
    [
        gzip.compress(b"number\n" + b"".join(b"+9198%08d\n" % i for i in range(500)), mtime=0),
        b"number\n+919876543210\x00\n",  # UTF-8, but a NUL byte: not a text file
        b'number\n"+919876543210\n',  # a quote left open to the end
    ],
    ids=["gzip", "nul", "open-quote"],
)
async def test_a_sheet_that_is_not_csv_is_400_and_counts_nothing(
    session: aiohttp.ClientSession, sheet: bytes
) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server:
        good = aiohttp.FormData()
        good.add_field(
            "campaign-sheet", b"number\n+919876543210\n+917994771185\n", filename="a.csv"
        )
        async with session.post(server.url("42"), data=good, headers={"x-access-token": TOKEN}):
            pass
        bad = aiohttp.FormData()
        bad.add_field("campaign-sheet", sheet, filename="leads.csv")
        async with session.post(server.url("42"), data=bad, headers={"x-access-token": TOKEN}) as r:
            assert r.status == 400
            body = await r.json()
        assert body["error"] is True
        assert body["message"].startswith("campaign-sheet is not a CSV file: ")
        assert server.accepted_requests == 1
        assert server.lead_count() == 2  # the first sheet's rows only
        assert not server.requests[1].accepted
        assert server.statuses[500] == 0


# -- with RyngClient -------------------------------------------------------------------


async def test_client_append_round_trip(server: FakeRyngServer, client: RyngClient) -> None:
    answer = await client.append(
        "a b/c", [{"number": "+919876543210", "customField1": "Max"}], name="Example"
    )
    assert answer.error is False
    assert answer.message == "Processing Campaign..."
    record = server.requests[0]
    assert record.path == "/rest-api/v1/campaign/a%20b%2Fc"
    assert record.headers["x-access-token"] == TOKEN
    assert server.leads_for("a b/c") == [{"number": "+919876543210", "customField1": "Max"}]


async def test_client_upload_sheet_round_trip(server: FakeRyngServer, client: RyngClient) -> None:
    sheet = b"number\n+919876543210\n"
    answer = await client.upload_sheet("7", sheet, agents=["a@example.com", "b@example.com"])
    assert answer.error is False
    record = server.requests[0]
    assert record.sheet == sheet
    assert record.form == {"agents": "a@example.com,b@example.com"}


async def test_client_retries_through_scripted_faults() -> None:
    plan = FaultPlan(script=[Fault.ERROR_500, Fault.RATE_LIMIT])
    async with (
        FakeRyngServer(access_token=TOKEN, faults=plan) as server,
        RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY, random_seed=0
        ) as ryng,
    ):
        answer = await ryng.append("42", [{"number": "+919876543210"}])
    assert answer.error is False
    assert [r.status for r in server.requests] == [500, 429, 200]
    assert server.lead_counts() == {"+919876543210": 1}


async def test_the_documented_example_works() -> None:
    plan = FaultPlan(seed=7, rates={Fault.ERROR_500: 0.1})
    async with FakeRyngServer(faults=plan) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=server.access_token, retry=FAST_RETRY
        ) as ryng:
            await ryng.append("42", [{"number": "+919876543210"}])
        assert server.lead_count() == 1
