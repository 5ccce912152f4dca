"""Tests for ryng_async._client: RyngClient against a real FakeRyngServer on loopback."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import anyio
import pytest
from aiohttp import web
from conftest import FAST_RETRY, TOKEN, VENDOR_EXAMPLE_BODY

from ryng_async import (
    AgentMapping,
    AmbiguousError,
    APIError,
    AppendResponse,
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    Lead,
    RateLimitError,
    RetryDetails,
    RetryPolicy,
    RyngClient,
    RyngError,
    ServerError,
    ValidationError,
)
from ryng_async._exceptions import UnreadableResponseError
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytestmark = pytest.mark.anyio

NUMBER = "+919876543210"
LEAD = {"number": NUMBER}
API_PATH = "/rest-api/v1/campaign/"

# The vendor's "Example Body", with "agentMapping": "global" picked from its three values.
VENDOR_EXAMPLE: dict[str, Any] = json.loads(VENDOR_EXAMPLE_BODY)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def policy(**overrides: Any) -> RetryPolicy:
    """FAST_RETRY (no waits) with some fields changed."""
    settings: dict[str, Any] = {"initial_delay": 0.0, "max_delay": 0.0, "max_retry_after": 0.0}
    settings.update(overrides)
    return RetryPolicy(**settings)


@asynccontextmanager
async def fake(
    *script: Fault | None, retry_after: str | None = "0", token: str = TOKEN
) -> AsyncIterator[FakeRyngServer]:
    """A FakeRyngServer whose first requests get the scripted faults."""
    plan = FaultPlan(script=script, retry_after=retry_after)
    async with FakeRyngServer(access_token=token, faults=plan) as server:
        yield server


@asynccontextmanager
async def client_for(base_url: str, **options: Any) -> AsyncIterator[RyngClient]:
    options.setdefault("access_token", TOKEN)
    options.setdefault("retry", FAST_RETRY)
    options.setdefault("random_seed", 0)
    async with RyngClient(base_url=base_url, **options) as ryng:
        yield ryng


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def tiny_server(handler: Handler) -> AsyncIterator[str]:
    """A one-route aiohttp.web app on 127.0.0.1; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def pipe_reader(data: bytes) -> BinaryIO:
    """A binary file object that cannot seek (the read end of a pipe holding ``data``)."""
    read_end, write_end = os.pipe()
    os.write(write_end, data)
    os.close(write_end)
    return open(read_end, "rb")  # the caller closes it


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RYNG_SUBDOMAIN", "RYNG_ACCESS_TOKEN", "RYNG_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


# -- the request as the server saw it -------------------------------------------------


async def test_append_sends_one_post_with_token_and_json(
    server: FakeRyngServer, client: RyngClient
) -> None:
    response = await client.append("42", [LEAD])

    assert response == AppendResponse(error=False, message="Processing Campaign...", data={})
    assert server.received_requests == 1
    (seen,) = server.requests
    assert seen.method == "POST"
    assert seen.path == API_PATH + "42"
    assert seen.campaign_id == "42"
    assert seen.headers["x-access-token"] == TOKEN
    assert seen.content_type == "application/json"
    assert seen.body == b'{"customerData":{"jsonData":[{"number":"+919876543210"}]}}'
    assert server.leads == [LEAD]


@pytest.mark.parametrize(
    ("campaign_id", "path"),
    [
        ("4 2/x", "4%202%2Fx"),
        (42, "42"),
        ("café", "caf%C3%A9"),
        ("a?b#c", "a%3Fb%23c"),
        ("100%", "100%25"),
    ],
)
async def test_campaign_id_is_percent_encoded(
    server: FakeRyngServer, client: RyngClient, campaign_id: str | int, path: str
) -> None:
    await client.append(campaign_id, [LEAD])

    (seen,) = server.requests
    assert seen.path == API_PATH + path
    assert seen.campaign_id == str(campaign_id)
    assert client.campaign_url(campaign_id) == server.base_url + API_PATH + path


async def test_body_is_exactly_the_vendor_wire_format(
    server: FakeRyngServer, client: RyngClient
) -> None:
    data = VENDOR_EXAMPLE["customerData"]
    await client.append(
        "42",
        data["jsonData"],
        name=VENDOR_EXAMPLE["name"],
        agent_mapping="global",
        agents=VENDOR_EXAMPLE["agents"],
        custom_field_names=VENDOR_EXAMPLE["customFieldNames"],
        terminal_callback_url=data["terminalCallbackUrl"],
        connect_callback_url=data["connectCallbackUrl"],
    )

    (seen,) = server.requests
    assert json.loads(seen.body) == VENDOR_EXAMPLE
    assert seen.body == compact(VENDOR_EXAMPLE)
    assert server.leads == data["jsonData"]


async def test_leads_and_wire_dicts_are_both_accepted(
    server: FakeRyngServer, client: RyngClient
) -> None:
    leads: list[Any] = [
        Lead(number="+917994771185", agents_assigned=["a@x.com"], custom_fields={1: "Max"}),
        {"number": NUMBER, "agentsAssigned": ["b@x.com"], "customField2": "Brand"},
        Lead(number="+14155550123"),
    ]

    await client.append("42", leads, agent_mapping=AgentMapping.INLINE)

    assert server.leads == [
        {"number": "+917994771185", "agentsAssigned": ["a@x.com"], "customField1": "Max"},
        {"number": NUMBER, "agentsAssigned": ["b@x.com"], "customField2": "Brand"},
        {"number": "+14155550123"},
    ]
    (seen,) = server.requests
    assert json.loads(seen.body)["agentMapping"] == "inline"


async def test_append_takes_any_iterable_of_leads(
    server: FakeRyngServer, client: RyngClient
) -> None:
    await client.append("42", ({"number": f"+9198765432{i:02d}"} for i in range(3)))

    assert [lead["number"] for lead in server.leads] == [
        "+919876543200",
        "+919876543201",
        "+919876543202",
    ]


# -- upload_sheet ----------------------------------------------------------------------

SHEET = b"number,customField1\n+919876543210,Max\n+917994771185,Alex\n"


async def test_upload_sheet_from_bytes_with_agents(
    server: FakeRyngServer, client: RyngClient
) -> None:
    response = await client.upload_sheet("4 2", SHEET, agents=["a@x.com", "b@x.com"])

    assert response.error is False
    (seen,) = server.requests
    assert seen.method == "POST"
    assert seen.path == API_PATH + "4%202"
    assert seen.headers["x-access-token"] == TOKEN
    assert seen.content_type == "multipart/form-data"
    assert seen.sheet == SHEET
    assert seen.form == {"agents": "a@x.com,b@x.com"}


async def test_upload_sheet_from_a_path_in_file(
    server: FakeRyngServer, client: RyngClient, tmp_path: Path
) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(SHEET)

    await client.upload_sheet("42", path, agents="in-file")
    await client.upload_sheet("42", str(path))

    first, second = server.requests
    assert first.sheet == SHEET
    assert first.form == {"agents": "in-file"}
    assert second.sheet == SHEET
    assert second.form == {}
    assert b'filename="leads.csv"' in first.body


async def test_upload_sheet_from_a_binary_file_object(
    server: FakeRyngServer, client: RyngClient, tmp_path: Path
) -> None:
    path = tmp_path / "sheet.csv"
    path.write_bytes(SHEET)

    with path.open("rb") as handle:
        await client.upload_sheet("42", handle, agents=["a@x.com"])
        assert not handle.closed, "the caller's file object is the caller's to close"

    (seen,) = server.requests
    assert seen.sheet == SHEET
    assert seen.form == {"agents": "a@x.com"}


async def test_upload_sheet_from_a_path_is_retried_with_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(SHEET)
    async with fake(Fault.ERROR_500, None) as server, client_for(server.base_url) as client:
        await client.upload_sheet("42", path, agents="in-file")

    assert server.received_requests == 2
    assert server.requests[1].sheet == SHEET


async def test_upload_sheet_seekable_file_object_is_rewound_on_retry() -> None:
    handle = io.BytesIO(b"header\n" + SHEET)
    handle.readline()  # the caller already consumed a header line
    async with fake(Fault.ERROR_500, None) as server, client_for(server.base_url) as client:
        await client.upload_sheet("42", handle)

    assert server.received_requests == 2
    assert server.requests[1].sheet == SHEET


@pytest.mark.anyio
async def test_a_file_object_is_retried_and_never_closed() -> None:
    sheet = io.BytesIO(b"number\n+919876543210\n")
    async with fake(Fault.ERROR_500) as server, client_for(server.base_url) as client:
        await client.upload_sheet("42", sheet, agents="in-file")
    assert not sheet.closed
    assert server.requests[-1].sheet == b"number\n+919876543210\n"
    assert server.received_requests == 2


async def test_upload_sheet_unseekable_file_object_is_not_retried() -> None:
    with pipe_reader(SHEET) as handle:
        assert not handle.seekable()
        async with fake(Fault.ERROR_500, None) as server, client_for(server.base_url) as client:
            with pytest.raises(ServerError):
                await client.upload_sheet("42", handle)

    assert server.received_requests == 1


@pytest.mark.parametrize(
    ("sheet", "agents", "field"),
    [
        (SHEET, "a@x.com", "agents"),
        (SHEET, [], "agents"),
        (SHEET, ["a@x.com,b@x.com"], "agents"),
        (SHEET, [""], "agents"),
        (12345, None, "campaign-sheet"),
        ("/no/such/file.csv", None, "campaign-sheet"),
    ],
)
async def test_upload_sheet_refuses_bad_input_and_sends_nothing(
    server: FakeRyngServer, client: RyngClient, sheet: Any, agents: Any, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.upload_sheet("42", sheet, agents=agents)

    assert info.value.field == field
    assert server.received_requests == 0


@pytest.mark.anyio
async def test_a_directory_is_not_a_sheet(tmp_path: Path) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server.base_url) as client:
        with pytest.raises(ValidationError, match="is not a file"):
            await client.upload_sheet("42", tmp_path)
        assert server.received_requests == 0


@pytest.mark.anyio
async def test_a_text_mode_file_is_refused_before_sending() -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server.base_url) as client:
        with pytest.raises(ValidationError, match="binary mode"):
            await client.upload_sheet("42", io.StringIO("number\n+919876543210\n"))  # type: ignore[arg-type]
        assert server.received_requests == 0


# -- error mapping ---------------------------------------------------------------------


async def test_wrong_token_is_authentication_error_never_retried(server: FakeRyngServer) -> None:
    async with client_for(server.base_url, access_token="wrong-token-abc") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.append("42", [LEAD])

    error = info.value
    assert error.status == 403
    assert error.message == "Unauthorized Token"
    assert "Unauthorized Token" in error.body
    assert "wrong-token-abc" not in str(error)
    assert "wrong-token-abc" not in repr(error)
    assert server.received_requests == 1
    assert server.lead_count() == 0


def test_a_403_message_says_what_to_check() -> None:
    error = AuthenticationError("Unauthorized Token", status=403)
    assert error.message == "Unauthorized Token"
    assert "RYNG_ACCESS_TOKEN" in str(error)


async def test_429_is_rate_limit_error_with_retry_after_seconds() -> None:
    async with (
        fake(Fault.RATE_LIMIT, retry_after="7") as server,
        client_for(server.base_url, retry=RetryPolicy.no_retries()) as client,
    ):
        with pytest.raises(RateLimitError) as info:
            await client.append("42", [LEAD])

    assert info.value.status == 429
    assert info.value.retry_after == 7.0
    assert server.received_requests == 1


async def test_429_without_retry_after_has_none() -> None:
    async with (
        fake(Fault.RATE_LIMIT, retry_after=None) as server,
        client_for(server.base_url, retry=RetryPolicy.no_retries()) as client,
    ):
        with pytest.raises(RateLimitError) as info:
            await client.append("42", [LEAD])

    assert info.value.retry_after is None


async def test_429_with_retry_after_http_date() -> None:
    async def handler(request: web.Request) -> web.Response:
        when = formatdate(time.time() + 30, usegmt=True)
        return web.json_response(
            {"error": True, "message": "Too Many Requests"},
            status=429,
            headers={"Retry-After": when},
        )

    async with (
        tiny_server(handler) as base_url,
        client_for(base_url, retry=RetryPolicy.no_retries()) as client,
    ):
        with pytest.raises(RateLimitError) as info:
            await client.append("42", [LEAD])

    assert info.value.retry_after is not None
    assert 25.0 <= info.value.retry_after <= 31.0


async def test_429_then_success_is_retried() -> None:
    async with fake(Fault.RATE_LIMIT, None) as server, client_for(server.base_url) as client:
        response = await client.append("42", [LEAD])

    assert response.error is False
    assert server.received_requests == 2
    assert server.lead_count() == 1


async def test_long_retry_after_is_capped_by_the_policy() -> None:
    # The policy honours Retry-After only up to max_retry_after (0 here): the retry must not
    # wait an hour, neither in the backoff nor in the client-wide pause after a 429.
    async with (
        fake(Fault.RATE_LIMIT, None, retry_after="3600") as server,
        client_for(server.base_url) as client,
    ):
        with anyio.fail_after(2):
            response = await client.append("42", [LEAD])

    assert response.error is False
    assert server.received_requests == 2


@pytest.mark.parametrize("fault", [Fault.ERROR_500, Fault.ERROR_TRUE])
async def test_server_failures_are_server_errors(fault: Fault) -> None:
    async with (
        fake(fault) as server,
        client_for(server.base_url, retry=RetryPolicy.no_retries()) as client,
    ):
        with pytest.raises(ServerError) as info:
            await client.append("42", [LEAD])

    assert info.value.status == (500 if fault is Fault.ERROR_500 else 200)
    assert info.value.message == "Failed to create Campaign"
    assert server.lead_count() == 0


async def test_400_is_api_error_not_retried() -> None:
    async with fake(Fault.BAD_REQUEST, None) as server, client_for(server.base_url) as client:
        with pytest.raises(APIError) as info:
            await client.append("42", [LEAD])

    assert type(info.value) is APIError
    assert info.value.status == 400
    assert info.value.message == "Bad Request"
    assert server.received_requests == 1


async def test_non_json_200_is_ambiguous_with_status_and_truncated_body() -> None:
    # A 2xx we cannot read may have appended the leads, so it is an AmbiguousError (with
    # its status and body), not a plain APIError.
    page = "<html><body>" + "gateway says hi " * 100 + "</body></html>"

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200, text=page, content_type="text/html")

    async with tiny_server(handler) as base_url, client_for(base_url) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", [LEAD])

    error = info.value
    assert isinstance(error, UnreadableResponseError)
    assert not isinstance(error, APIError)
    assert error.status == 200
    assert error.body.startswith("<html><body>gateway says hi")
    assert 0 < len(error.body) < len(page)
    assert len(error.body) <= 200
    assert "may have been processed" in str(error)


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, b""), (200, b'{"message": "ok?"}'), (201, b"OK"), (204, b"")],
    ids=["empty", "no-error-flag", "plain-text", "no-content"],
)
async def test_an_unreadable_2xx_is_ambiguous_and_not_resent(status: int, body: bytes) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await request.read()
        return web.Response(status=status, body=body)

    async with tiny_server(handler) as base_url, client_for(base_url) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", [LEAD])
    assert isinstance(info.value, UnreadableResponseError)
    assert info.value.status == status
    assert calls == 1  # ambiguous: not resent by default


async def test_an_unreadable_2xx_ends_its_bulk_batch_unknown_with_an_ambiguous_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=b"")

    async with tiny_server(handler) as base_url, client_for(base_url) as client:
        report = await client.bulk_append("42", [LEAD, {"number": "+919876543211"}], batch_size=1)
    assert report.unknown == 2
    for result in report.batches:
        assert isinstance(result.error, AmbiguousError)
        assert result.status == 200
    with pytest.raises(AmbiguousError):
        report.raise_for_failures()


async def test_html_502_from_a_proxy_is_ambiguous_and_not_resent() -> None:
    # A proxy's 502 may follow a request Ryng processed; resending it appended every lead
    # five times behind nginx (measured).
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    async with tiny_server(handler) as base_url, client_for(base_url) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", [LEAD])

    assert info.value.status == 502
    assert "Bad Gateway" in info.value.body
    assert str(info.value).startswith(
        "HTTP 502 from a proxy or gateway (not Ryng's JSON): Bad Gateway"
    )
    assert calls == 1


async def test_a_502_widened_into_the_definite_set_is_retried() -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    policy = replace(FAST_RETRY, definite_statuses=frozenset({502, 503}))
    async with tiny_server(handler) as base_url, client_for(base_url, retry=policy) as client:
        with pytest.raises(ServerError) as info:
            await client.append("42", [LEAD])

    assert info.value.status == 502
    assert "not Ryng's JSON" in str(info.value)
    assert calls == FAST_RETRY.max_attempts


async def test_a_redirect_is_never_followed_and_its_message_names_the_location() -> None:
    # The token goes only to the configured address. The redirect points
    # at a second server that would record the token if the client followed it.
    followed: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.headers.get("x-access-token"))
        return web.json_response({"error": False, "message": "Processing Campaign..."})

    async with tiny_server(elsewhere) as target:
        location = f"{target}/rest-api/v1/campaign/42"

        async def handler(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(location)

        async with tiny_server(handler) as base_url, client_for(base_url) as client:
            with pytest.raises(APIError) as info:
                await client.append("42", [LEAD])

    assert followed == []
    assert info.value.status == 307
    assert location in str(info.value)
    assert "not followed" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_200_without_the_error_flag_is_ambiguous() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"message": "ok?"})

    async with tiny_server(handler) as base_url, client_for(base_url) as client:
        with pytest.raises(UnreadableResponseError) as info:
            await client.append("42", [LEAD])

    assert info.value.status == 200


@pytest.mark.anyio
@pytest.mark.parametrize("data", [b"null", b"[]", b'"x"'])
async def test_a_success_with_an_odd_data_field_is_still_a_success(data: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        body = b'{"error": false, "message": "Processing Campaign...", "data": ' + data + b"}"
        return web.Response(body=body, content_type="application/json")

    async with tiny_server(handler) as url, client_for(url) as client:
        response = await client.append("42", [LEAD])
    assert response.error is False
    assert isinstance(response.data, dict)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_2xx_body_is_ambiguous(chunked: bool) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        if not chunked:
            return web.Response(status=200, body=b"x" * 5000, content_type="application/json")
        response = web.StreamResponse(status=200)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(5):
                await response.write(b"x" * 1000)
            await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass  # the client hung up once it had read enough
        return response

    async with tiny_server(handler) as base_url, client_for(base_url, max_response_bytes=100) as c:
        with pytest.raises(AmbiguousError) as info:
            await c.append("42", [LEAD])

    assert type(info.value) is UnreadableResponseError
    assert info.value.status == 200
    assert "max_response_bytes" in str(info.value)


async def test_oversized_error_body_stays_a_definite_api_error() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=400, body=b"x" * 5000, content_type="application/json")

    async with tiny_server(handler) as base_url, client_for(base_url, max_response_bytes=100) as c:
        with pytest.raises(APIError) as info:
            await c.append("42", [LEAD])
    assert type(info.value) is APIError
    assert info.value.status == 400


async def test_connection_refused_is_connect_error_and_retried() -> None:
    details: list[RetryDetails] = []
    async with client_for(f"http://127.0.0.1:{free_port()}", on_retry=details.append) as client:
        with pytest.raises(ConnectError) as info:
            await client.append("42", [LEAD])

    assert isinstance(info.value.__cause__, aiohttp.ClientError | OSError)
    assert len(details) == FAST_RETRY.max_attempts - 1
    assert all(isinstance(d.error, ConnectError) for d in details)


async def test_timeout_is_ambiguous_and_not_retried() -> None:
    async with (
        fake(Fault.HANG, None) as server,
        client_for(server.base_url, timeout=0.2) as client,
    ):
        with anyio.fail_after(5), pytest.raises(AmbiguousError):
            await client.append("42", [LEAD])
        assert server.received_requests == 1


async def test_timeout_is_retried_when_the_policy_allows_ambiguous_retries() -> None:
    async with (
        fake(Fault.HANG, None) as server,
        client_for(server.base_url, timeout=0.2, retry=policy(retry_ambiguous=True)) as client,
    ):
        with anyio.fail_after(5):
            response = await client.append("42", [LEAD])

    assert response.error is False
    assert server.received_requests == 2


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.RESET])
async def test_dropped_connection_is_ambiguous_and_not_retried(fault: Fault) -> None:
    async with fake(fault, None) as server, client_for(server.base_url) as client:
        with pytest.raises(AmbiguousError) as info:
            await client.append("42", [LEAD])

    assert isinstance(info.value.__cause__, aiohttp.ClientError | OSError)
    assert server.received_requests == 1
    # DROP appended the leads before hanging up: that is why it must not be resent.
    assert server.lead_count() == (1 if fault is Fault.DROP else 0)


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.RESET])
async def test_dropped_connection_is_retried_with_retry_ambiguous(fault: Fault) -> None:
    retry = policy(retry_ambiguous=True)
    async with fake(fault, None) as server, client_for(server.base_url, retry=retry) as client:
        response = await client.append("42", [LEAD])

    assert response.error is False
    assert server.received_requests == 2


async def test_no_foreign_error_escapes_raw() -> None:
    """Every failure mode surfaces as a RyngError, never aiohttp's or OSError."""
    failures: list[BaseException] = []
    async with client_for(f"http://127.0.0.1:{free_port()}") as client:
        try:
            await client.append("42", [LEAD])
        except Exception as exc:  # the point: catch anything
            failures.append(exc)
    for fault in (Fault.DROP, Fault.RESET, Fault.HANG, Fault.ERROR_500, Fault.BAD_REQUEST):
        async with (
            fake(fault) as server,
            client_for(server.base_url, timeout=0.2, retry=RetryPolicy.no_retries()) as client,
        ):
            try:
                await client.append("42", [LEAD])
            except Exception as exc:
                failures.append(exc)

    assert len(failures) == 6
    for failure in failures:
        assert isinstance(failure, RyngError), repr(failure)
        assert not isinstance(failure, aiohttp.ClientError | OSError)


# -- retries ---------------------------------------------------------------------------


async def test_500_then_success_appends_once() -> None:
    async with fake(Fault.ERROR_500, None) as server, client_for(server.base_url) as client:
        response = await client.append("42", [LEAD])

    assert response.error is False
    assert server.received_requests == 2
    assert server.statuses == {500: 1, 200: 1}
    assert server.lead_count() == 1
    assert server.leads == [LEAD]


async def test_retries_stop_after_max_attempts() -> None:
    async with (
        fake(*[Fault.ERROR_500] * 10) as server,
        client_for(server.base_url, retry=policy(max_attempts=3)) as client,
    ):
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])

    assert server.received_requests == 3


async def test_no_retries_policy_sends_once() -> None:
    async with (
        fake(Fault.ERROR_500, None) as server,
        client_for(server.base_url, retry=RetryPolicy.no_retries()) as client,
    ):
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])

    assert server.received_requests == 1


async def test_retry_budget_limits_retries_across_requests() -> None:
    # Capacity 10, each retry costs 5: two retries in all, then failures are final.
    retry = policy(budget=10, retry_cost=5, success_refund=1)
    async with (
        fake(*[Fault.ERROR_500] * 10) as server,
        client_for(server.base_url, retry=retry) as client,
    ):
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])
        assert server.received_requests == 3  # first attempt + 2 budgeted retries
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])
        assert server.received_requests == 4  # budget empty: no retry at all


async def test_answers_that_ask_to_slow_down_do_not_spend_the_retry_budget() -> None:
    # A budget of one retry: 429s and 503s are pacing (the limiter slows down), so a
    # rate-limited load does not run out of retries the way a failing server would.
    retry = policy(budget=5, retry_cost=5, success_refund=0)
    script = [Fault.RATE_LIMIT, Fault.UNAVAILABLE, Fault.RATE_LIMIT, None, Fault.ERROR_500]
    async with (
        fake(*script, Fault.ERROR_500, Fault.ERROR_500) as server,
        client_for(server.base_url, retry=retry) as client,
    ):
        await client.append("42", [LEAD])  # 429, 503, 429, 200: three retries, budget intact
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])  # 500, one budgeted retry (500), then final
    assert server.received_requests == 6
    assert server.lead_count() == 1


async def test_answers_that_ask_to_slow_down_do_not_use_up_the_attempts() -> None:
    # Two attempts allowed: 429s and 503s pace the load, so a batch meeting four of them
    # still gets its turn; a server that never lets it in ends it after 4 x 2 attempts.
    retry = policy(max_attempts=2)
    paced = [Fault.RATE_LIMIT, Fault.UNAVAILABLE, Fault.RATE_LIMIT, Fault.UNAVAILABLE, None]
    async with (
        fake(*paced, *[Fault.UNAVAILABLE] * 20) as server,
        client_for(server.base_url, retry=retry) as client,
    ):
        await client.append("42", [LEAD])
        assert server.received_requests == 5
        with pytest.raises(ServerError):
            await client.append("42", [LEAD])
        assert server.received_requests == 5 + 8
    assert server.lead_count() == 1


async def test_retry_budget_refills_on_success() -> None:
    retry = policy(budget=5, retry_cost=5, success_refund=5)
    script = [Fault.ERROR_500, None, Fault.ERROR_500, None]
    async with fake(*script) as server, client_for(server.base_url, retry=retry) as client:
        await client.append("42", [LEAD])  # 500, retry (budget 5 -> 0), 200 (refund -> 5)
        await client.append("42", [LEAD])  # 500, retry allowed again thanks to the refund

    assert server.received_requests == 4
    assert server.lead_count() == 2


async def test_on_retry_hook_gets_retry_details() -> None:
    details: list[RetryDetails] = []
    async with (
        fake(Fault.ERROR_500, Fault.RATE_LIMIT, None) as server,
        client_for(server.base_url, on_retry=details.append) as client,
    ):
        await client.append("4 2", [LEAD])

    assert [d.attempt for d in details] == [1, 2]
    first, second = details
    assert isinstance(first, RetryDetails)
    assert first.campaign_id == "4 2"
    assert first.batch_index is None
    assert first.delay == 0.0
    assert isinstance(first.error, ServerError)
    assert first.error.status == 500
    assert first.reason
    assert isinstance(second.error, RateLimitError)
    assert server.received_requests == 3


async def test_403_is_never_retried_even_with_a_generous_policy(server: FakeRyngServer) -> None:
    details: list[RetryDetails] = []
    retry = policy(max_attempts=10, retry_ambiguous=True)
    async with client_for(
        server.base_url, access_token="nope", retry=retry, on_retry=details.append
    ) as client:
        with pytest.raises(AuthenticationError):
            await client.append("42", [LEAD])

    assert server.received_requests == 1
    assert details == []


# -- configuration ---------------------------------------------------------------------


@pytest.mark.usefixtures("no_env")
def test_subdomain_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYNG_SUBDOMAIN", "acme")
    monkeypatch.setenv("RYNG_ACCESS_TOKEN", TOKEN)

    client = RyngClient()

    assert client.base_url == "https://acme.ryng.in"
    assert client.campaign_url("42") == "https://acme.ryng.in/rest-api/v1/campaign/42"


@pytest.mark.usefixtures("no_env")
def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYNG_SUBDOMAIN", "acme")
    monkeypatch.setenv("RYNG_ACCESS_TOKEN", "env-token")

    client = RyngClient("other", TOKEN)

    assert client.base_url == "https://other.ryng.in"


@pytest.mark.usefixtures("no_env")
async def test_base_url_and_token_from_the_environment(
    server: FakeRyngServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RYNG_BASE_URL", server.base_url)
    monkeypatch.setenv("RYNG_ACCESS_TOKEN", TOKEN)

    async with RyngClient(retry=FAST_RETRY) as client:
        await client.append("42", [LEAD])

    assert server.requests[0].headers["x-access-token"] == TOKEN
    assert server.lead_count() == 1


def test_explicit_subdomain_beats_the_base_url_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A leftover RYNG_BASE_URL must not send a production token to another host.
    monkeypatch.setenv("RYNG_BASE_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("RYNG_SUBDOMAIN", "envsub")
    client = RyngClient(subdomain="acme", access_token=TOKEN)
    assert client.base_url == "https://acme.ryng.in"
    assert RyngClient(access_token=TOKEN).base_url == "http://127.0.0.1:8080"


@pytest.mark.usefixtures("no_env")
def test_missing_token_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RYNG_ACCESS_TOKEN"):
        RyngClient(subdomain="acme")


@pytest.mark.usefixtures("no_env")
def test_missing_subdomain_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="RYNG_SUBDOMAIN"):
        RyngClient(access_token=TOKEN)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "subdomain",
    ["a.b", "-x", "x-", "x" * 64, "", "a b", "a/b", "a_b", "acme\n", "ácme", "acme.ryng.in"],
)
def test_bad_subdomain_is_refused(subdomain: str) -> None:
    with pytest.raises(ConfigurationError):
        RyngClient(subdomain=subdomain, access_token=TOKEN)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("subdomain", ["a", "acme", "ACME-2", "x" * 63])
def test_good_subdomain_is_accepted(subdomain: str) -> None:
    client = RyngClient(subdomain=subdomain, access_token=TOKEN)

    assert client.base_url == f"https://{subdomain.lower()}.ryng.in"


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "token",
    [
        "abc\r\nX-Evil: 1",
        "abc\n",
        "abc\r",
        "ab c",
        " abc",
        "abc\t",
        "tökén",
        "abc\x00",
        "abc\x7f",
        "",
    ],
)
def test_bad_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RyngClient(subdomain="acme", access_token=token)

    if token:
        assert token not in str(info.value)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://example.com",
        "example.com",
        "/rest-api",
        "http://",
        "http://example.com/?q=1",
        "http://example.com/#frag",
        "http://[::1",
        "http://example.com:99999",
    ],
)
def test_bad_base_url_is_configuration_error(base_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RyngClient(base_url=base_url, access_token=TOKEN)


# -- plain http: the token in clear only to loopback -----------------------------------


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "base_url",
    [
        "http://10.1.2.3",
        "http://acme.ryng.in",
        "http://example.com:8080/proxy",
        "http://[2001:db8::1]:8080",
        "http://0.0.0.0:8080",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "HTTP://10.1.2.3",
    ],
)
def test_plain_http_to_a_host_not_loopback_is_refused(base_url: str) -> None:
    with pytest.raises(ConfigurationError, match="unencrypted") as info:
        RyngClient(base_url=base_url, access_token=TOKEN)
    assert "allow_insecure_http=True" in str(info.value)
    assert TOKEN not in str(info.value)


@pytest.mark.usefixtures("no_env")
def test_plain_http_from_the_environment_alone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RYNG_BASE_URL", "http://10.1.2.3:8080")
    with pytest.raises(ConfigurationError, match="unencrypted"):
        RyngClient(access_token=TOKEN)
    client = RyngClient(access_token=TOKEN, allow_insecure_http=True)
    assert client.base_url == "http://10.1.2.3:8080"


@pytest.mark.usefixtures("no_env")
def test_plain_http_is_accepted_when_the_caller_opts_in() -> None:
    client = RyngClient(base_url="http://10.1.2.3", access_token=TOKEN, allow_insecure_http=True)
    assert client.base_url == "http://10.1.2.3"


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://localhost:9000",
        "http://LOCALHOST",
        "http://[::1]:8080",
        "https://10.1.2.3",
        "https://acme.ryng.in",
    ],
)
def test_loopback_http_and_any_https_are_accepted(base_url: str) -> None:
    RyngClient(base_url=base_url, access_token=TOKEN)


@pytest.mark.usefixtures("no_env")
@pytest.mark.parametrize("flag", [1, "yes", None])
def test_allow_insecure_http_must_be_a_bool(flag: object) -> None:
    with pytest.raises(ConfigurationError, match="allow_insecure_http"):
        RyngClient(base_url="https://x.example", access_token=TOKEN, allow_insecure_http=flag)  # type: ignore[arg-type]


@pytest.mark.usefixtures("no_env")
def test_a_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError, match="user or password") as info:
        RyngClient(base_url="https://bob:hunter2@acme.example", access_token=TOKEN)
    assert "hunter2" not in str(info.value)


@pytest.mark.usefixtures("no_env")
def test_base_url_replaces_the_subdomain_and_trailing_slash_is_dropped() -> None:
    client = RyngClient("acme", TOKEN, base_url="http://127.0.0.1:8080/proxy/")

    assert client.base_url == "http://127.0.0.1:8080/proxy"
    assert client.campaign_url("7") == "http://127.0.0.1:8080/proxy/rest-api/v1/campaign/7"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5", True, None])
def test_bad_timeout_is_configuration_error(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        RyngClient("acme", TOKEN, timeout=timeout)


@pytest.mark.parametrize(
    "option",
    [
        {"connect_timeout": 0},
        {"rate_limit": 0},
        {"rate_limit": -1.0},
        {"rate_limit": float("inf")},
        {"max_connections": 0},
        {"max_response_bytes": -5},
        {"retry": {"max_attempts": 3}},
    ],
)
def test_bad_options_are_configuration_errors(option: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RyngClient("acme", TOKEN, **option)


@pytest.mark.parametrize("hook", [42, "print"])
def test_a_hook_that_is_not_callable_is_refused(hook: object) -> None:
    with pytest.raises(ConfigurationError, match="on_retry"):
        RyngClient(base_url="http://127.0.0.1:1", access_token=TOKEN, on_retry=hook)  # type: ignore[arg-type]


def test_an_async_hook_is_refused_up_front() -> None:
    async def on_retry(details: object) -> None:
        return None

    with pytest.raises(ConfigurationError, match="not async"):
        RyngClient(base_url="http://127.0.0.1:1", access_token=TOKEN, on_retry=on_retry)


@pytest.mark.parametrize("campaign_id", ["", ".", "..", None, True, 4.2])
async def test_bad_campaign_id_is_validation_error_and_nothing_is_sent(
    server: FakeRyngServer, client: RyngClient, campaign_id: Any
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.append(campaign_id, [LEAD])
    with pytest.raises(ValidationError):
        await client.upload_sheet(campaign_id, SHEET)
    with pytest.raises(ValidationError):
        client.campaign_url(campaign_id)

    assert info.value.field == "campaign_id"
    assert server.received_requests == 0


@pytest.mark.parametrize(
    ("leads", "options", "field"),
    [
        ([], {}, "leads"),
        ([{"number": "9876543210"}], {}, "number"),
        ([{"number": NUMBER, "customField0": "x"}], {}, "customField0"),
        ([{"number": NUMBER, "customField1": 5}], {}, "customField1"),
        ([{"number": NUMBER, "agentsAssigned": "a@x.com"}], {}, "agentsAssigned"),
        ([{"number": NUMBER}], {"agent_mapping": "global"}, "agents"),
        ([{"number": NUMBER}], {"agent_mapping": "global", "agents": []}, "agents"),
        ([{"number": NUMBER}], {"agents": ["a@x.com"]}, "agents"),
        ([{"number": NUMBER}], {"agent_mapping": "everyone"}, "agentMapping"),
        ([{"number": NUMBER}], {"custom_field_names": {"customField1": "N"}}, "customFieldNames"),
        ([{"number": NUMBER}], {"terminal_callback_url": "/cb"}, "terminalCallbackUrl"),
        ([{"number": NUMBER}], {"connect_callback_url": "ftp://x.com/"}, "connectCallbackUrl"),
        ([LEAD, LEAD, {"number": "+0123456789"}], {}, "number"),
    ],
)
async def test_validation_failure_sends_nothing(
    server: FakeRyngServer,
    client: RyngClient,
    leads: list[Any],
    options: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.append("42", leads, **options)

    assert info.value.field == field
    assert server.received_requests == 0


async def test_validation_error_gives_the_lead_position(
    server: FakeRyngServer, client: RyngClient
) -> None:
    with pytest.raises(ValidationError) as info:
        await client.append("42", [LEAD, LEAD, {"number": "+0123456789"}])

    assert info.value.position == 2
    assert "lead #2" in str(info.value)
    assert server.received_requests == 0


@pytest.mark.anyio
@pytest.mark.parametrize("leads", [None, "+919876543210", {"number": "+919876543210"}])
async def test_leads_that_are_not_a_list_of_leads_are_refused(leads: Any) -> None:
    async with FakeRyngServer(access_token=TOKEN) as server, client_for(server.base_url) as client:
        with pytest.raises(ValidationError, match="leads"):
            await client.append("42", leads)
        assert server.received_requests == 0


async def test_closed_client_refuses_reuse(server: FakeRyngServer) -> None:
    client = RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY)
    async with client:
        await client.append("42", [LEAD])
    assert client.closed
    assert "closed" in repr(client)

    with pytest.raises(ConfigurationError, match="closed"):
        await client.append("42", [LEAD])
    with pytest.raises(ConfigurationError, match="closed"):
        await client.upload_sheet("42", SHEET)
    with pytest.raises(ConfigurationError):
        async with client:
            pass
    await client.aclose()  # closing twice is harmless

    assert server.received_requests == 1


async def test_client_without_context_manager_works_and_closes(server: FakeRyngServer) -> None:
    client = RyngClient(base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY)
    try:
        await client.append("42", [LEAD])
    finally:
        await client.aclose()

    assert server.lead_count() == 1
    assert client.closed


async def test_injected_session_is_used_and_not_closed(server: FakeRyngServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, session=session
        ) as client:
            await client.append("42", [LEAD])
        await client.aclose()

        assert not session.closed
        assert client.closed
        # The caller's session still works after the client is gone.
        async with session.post(server.url("42"), json={}) as response:
            assert response.status == 403
    assert server.received_requests == 2


@pytest.mark.anyio
async def test_a_closed_injected_session_is_a_configuration_error() -> None:
    async with FakeRyngServer(access_token=TOKEN) as server:
        session = aiohttp.ClientSession()
        await session.close()
        client = RyngClient(base_url=server.base_url, access_token=TOKEN, session=session)
        with pytest.raises(ConfigurationError, match="session"):
            await client.append("42", [LEAD])
        assert server.received_requests == 0


# -- the token stays secret ------------------------------------------------------------


async def test_token_never_in_repr_urls_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[RyngError] = []
    details: list[RetryDetails] = []
    async with (
        fake(Fault.ERROR_500, Fault.RATE_LIMIT, None, Fault.DROP) as server,
        client_for(server.base_url, on_retry=details.append) as client,
    ):
        assert TOKEN not in repr(client)
        assert TOKEN not in str(client)
        assert TOKEN not in client.campaign_url("42")
        await client.append("42", [LEAD])
        with pytest.raises(AmbiguousError) as ambiguous:
            await client.append("42", [LEAD])
        errors.append(ambiguous.value)
    async with client_for(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ConnectError) as connect:
            await client.append("42", [LEAD])
        errors.append(connect.value)
    async with client_for(server.base_url) as client:
        with pytest.raises(ValidationError) as invalid:
            await client.append("", [LEAD])
    errors.append(invalid.value)
    errors.extend(d.error for d in details)

    assert len(errors) >= 5
    for error in errors:
        assert TOKEN not in str(error)
        assert TOKEN not in repr(error)
        assert TOKEN not in str(error.__cause__)
        if isinstance(error, APIError):
            assert TOKEN not in error.body
    assert "retrying" in caplog.text  # the retries were logged...
    assert TOKEN not in caplog.text  # ...without the token
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


# -- out of file descriptors ------------------------------------------------------------

_FD_CHILD = r"""
import asyncio, json, os, resource, sys
from ryng_async import ResourceError, RyngClient
from ryng_async import BulkReport

async def main() -> None:
    report = BulkReport()
    out = {}
    async with RyngClient(
        base_url=sys.argv[1], access_token=sys.argv[2], max_connections=64, random_seed=0
    ) as client:
        await client.append("42", [{"number": "+919800000000"}])  # warm up: imports, loop
        # Leave room for four more sockets: the rest of the load's connections fail.
        open_now = len(os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, hard))
        try:
            await client.append("42", [{"number": "+919800000001"}])  # fits: one socket
            leads = [{"number": f"+9198{i:08d}"} for i in range(2, 402)]
            await client.bulk_append("42", leads, batch_size=10, concurrency=32, report=report)
        except ResourceError as exc:
            out["error"] = type(exc).__name__
            out["message"] = str(exc)
            out["errno"] = getattr(exc, "errno", None)
            out["limit"] = getattr(exc, "limit", None)
            out["soft"] = open_now + 4
    out["report"] = {
        "total": report.total, "accepted": report.accepted, "failed": report.failed,
        "unknown": report.unknown, "skipped": report.skipped, "invalid": report.invalid,
        "stopped_early": report.stopped_early, "finished": report.finished,
    }
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
async def test_running_out_of_file_descriptors_stops_the_load_with_one_clear_error() -> None:
    pytest.importorskip("resource")
    # The server (here) answers slowly, so the child's connections stay open at once.
    async with FakeRyngServer(access_token=TOKEN, latency=0.2) as server:
        done = await anyio.run_process(
            [sys.executable, "-c", _FD_CHILD, server.base_url, TOKEN], check=False
        )
        received = server.received_requests
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    out = json.loads(done.stdout)
    assert out.get("error") == "ResourceLimitError", out
    assert f"ulimit -n is {out['soft']}" in out["message"]
    assert "max_connections" in out["message"]
    assert out["limit"] == out["soft"]
    report = out["report"]
    # Not charged to the server: nothing failed; what was not sent is skipped.
    assert report["failed"] == 0
    assert report["unknown"] == 0
    assert report["skipped"] > 0
    assert report["stopped_early"]
    assert report["finished"]
    assert report["accepted"] + report["skipped"] + report["invalid"] == report["total"]
    assert report["accepted"] // 10 + 2 <= received  # each accepted batch reached the server
