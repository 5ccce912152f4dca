"""Hostile input, by hypothesis: refused before sending, or sent exactly as given.

Leads of arbitrary unicode (lone surrogates included), huge strings, NaN and infinities,
bytes, None, nested containers and wrong types; campaign ids and options of any shape;
settings with CR/LF, empty strings, path traversal, odd subdomains and base URLs. Every case
ends in a `ValidationError` / `ConfigurationError` before anything is sent, or in a correct
request: the one path of that campaign on the one host configured, with the leads as given,
which the server (its own rules, not the SDK's) accepts. Never another exception, a request
the server cannot parse, or a request to another path or host.

The servers run in a thread with their own event loop, so that each example can run its
client in a fresh ``asyncio.run`` (hypothesis drives plain functions).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
from collections.abc import Coroutine, Iterator
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp import web
from conftest import TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from ryng_async import (
    ConfigurationError,
    Lead,
    RetryPolicy,
    RyngClient,
    ValidationError,
)
from ryng_async.testing import FakeRyngServer

API_PATH = "/rest-api/v1/campaign/"
NO_RETRIES = RetryPolicy.no_retries()
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_the_examples_drawn_are_the_same_on_every_run() -> None:
    # conftest's Hypothesis profile: a failure in CI reproduces on any machine.
    if os.environ.get("HYPOTHESIS_PROFILE") == "explore":
        pytest.skip("HYPOTHESIS_PROFILE=explore draws random examples on purpose")
    assert SETTINGS.derandomize
    assert SETTINGS.database is None


LONG = "\u0928" * 5_000  # 15 kB of UTF-8 in one value (see also the huge-value test)


class Servers:
    """A FakeRyngServer and a catch-all recorder, on loopback, in their own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fake = FakeRyngServer(access_token=TOKEN)
        self.paths: list[str] = []  # raw paths the catch-all server saw
        self.catch_all_port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        await self.fake.start()

        async def record(request: web.Request) -> web.Response:
            self.paths.append(request.raw_path)
            await request.read()
            return web.json_response({"error": False, "message": "ok", "data": {}})

        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", r"/{tail:[\s\S]*}", record)  # any path, newlines too
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.catch_all_port = self._runner.addresses[0][1]

    def stop(self) -> None:
        async def stop() -> None:
            await self.fake.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    running = Servers()
    running.start()
    yield running
    running.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def refusal(coro: Any) -> ValidationError | None:
    """Run ``coro``; return the `ValidationError` it raised, or None if it succeeded."""
    try:
        run(coro)
    except ValidationError as exc:
        return exc
    return None


# -- strategies --------------------------------------------------------------------------

# Any code point but lone surrogates (those: test_lone_surrogates_are_refused_before_sending).
any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
    | st.binary(max_size=10)
    | st.just(LONG)
    | st.sampled_from([math.nan, math.inf, -math.inf, "", "\r\n", "\x00", "\ufeff", "\U0010ffff"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(any_text, inner, max_size=3)
    ),
    max_leaves=6,
)
e164 = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
numbers = e164 | e164.map(lambda n: n + "\n") | values
names = st.text(min_size=1, max_size=8).filter(lambda s: "," not in s)
lead_keys = (
    st.sampled_from(
        [
            "number",
            "agentsAssigned",
            "customField1",
            "customField2",
            "customField0",
            "customField01",
            "customField1Name",
            "Number",
            "number ",
            "",
        ]
    )
    | any_text
)
wire_leads = st.fixed_dictionaries(
    {"number": numbers},
    optional={
        "customField1": any_text | st.just(LONG) | values,
        "customField2": any_text,
        "agentsAssigned": st.lists(names, min_size=1, max_size=3) | values,
    },
) | st.dictionaries(lead_keys, values, max_size=4)
lead_objects = st.builds(
    Lead,
    number=numbers,
    agents_assigned=st.none() | st.lists(names, max_size=2) | values,
    custom_fields=st.dictionaries(st.integers(-2, 12), any_text | values, max_size=3) | values,
)
any_lead = wire_leads | lead_objects | values
lead_lists = st.lists(any_lead, max_size=4) | any_lead


def canonical(lead: dict[str, Any]) -> str:
    return json.dumps(lead, sort_keys=True)


def expected_wire(leads: Any) -> list[dict[str, Any]]:
    """What the server must receive for leads the SDK accepted."""
    return [lead.to_wire() if isinstance(lead, Lead) else dict(lead) for lead in leads]


# -- leads -------------------------------------------------------------------------------


async def append_once(base_url: str, campaign_id: Any, leads: Any, **options: Any) -> Any:
    """One append through a fresh client that never retries."""
    async with RyngClient(base_url=base_url, access_token=TOKEN, retry=NO_RETRIES) as client:
        return await client.append(campaign_id, leads, **options)


@SETTINGS
@given(leads=lead_lists)
def test_hostile_leads_are_refused_or_sent_exactly(servers: Servers, leads: Any) -> None:
    fake = servers.fake
    before = fake.received_requests

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, "42", leads)

    try:
        response = run(append())
    except ValidationError:
        assert fake.received_requests == before  # refused before anything was sent
        return
    assert response.error is False
    assert fake.received_requests == before + 1
    request = fake.requests[-1]
    assert request.path == API_PATH + "42"
    assert request.accepted
    assert request.leads == expected_wire(leads)


@SETTINGS
@given(leads=st.lists(any_lead, max_size=12), batch_size=st.integers(1, 4))
def test_a_hostile_bulk_load_keeps_the_valid_leads_and_names_the_rest(
    servers: Servers, leads: list[Any], batch_size: int
) -> None:
    fake = servers.fake
    before = len(fake.leads)

    async def load() -> Any:
        async with RyngClient(
            base_url=fake.base_url, access_token=TOKEN, retry=NO_RETRIES
        ) as client:
            return await client.bulk_append("42", leads, batch_size=batch_size)

    report = run(load())
    assert report.total == len(leads)
    assert report.accepted + report.invalid == report.total  # nothing failed or unknown
    invalid = {lead.position for lead in report.invalid_leads}
    kept = [lead for position, lead in enumerate(leads) if position not in invalid]
    # Batches go concurrently: the server may record them in another order.
    assert sorted(map(canonical, fake.leads[before:])) == sorted(
        map(canonical, expected_wire(kept))
    )


# -- campaign ids and options ------------------------------------------------------------

campaign_ids = (
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
    | st.integers()
    | st.sampled_from(
        [
            "..",
            ".",
            "../42",
            "..%2F42",
            "%2e%2e",
            "42/../../admin",
            "42?x=1",
            "42#frag",
            "42\r\nX-Injected: 1",
            "4 2",
            "/",
            "\\..\\",
            "٤٢",
            "42\x00",
        ]
    )
    | values
)


@SETTINGS
@given(campaign_id=campaign_ids)
def test_any_campaign_id_stays_one_segment_of_the_api_path(
    servers: Servers, campaign_id: Any
) -> None:
    # The catch-all server records every raw path, as sent.
    count = len(servers.paths)

    def append() -> Coroutine[Any, Any, Any]:
        catch_all = f"http://127.0.0.1:{servers.catch_all_port}"
        return append_once(catch_all, campaign_id, [{"number": "+919876543210"}])

    refused = refusal(append())
    if refused is not None:
        assert refused.field == "campaign_id"
        assert len(servers.paths) == count
        return
    (path,) = servers.paths[count:]
    assert path.startswith(API_PATH)
    segment = path[len(API_PATH) :]
    assert "/" not in segment
    assert segment == quote(str(campaign_id), safe="")
    assert unquote(segment) == str(campaign_id)  # the server reads back the same id


@SETTINGS
@given(campaign_id=st.integers(0) | st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True))
def test_plain_campaign_ids_reach_the_fake_server_as_given(
    servers: Servers, campaign_id: Any
) -> None:
    fake = servers.fake

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, campaign_id, [{"number": "+919876543210"}])

    run(append())
    request = fake.requests[-1]
    assert request.campaign_id == str(campaign_id)
    assert request.accepted


@SETTINGS
@given(campaign_id=campaign_ids)
def test_any_campaign_id_the_sdk_sends_reaches_the_fake_server_as_given(
    servers: Servers, campaign_id: Any
) -> None:
    fake = servers.fake
    count = len(fake.requests)

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, campaign_id, [{"number": "+919876543210"}])

    refused = refusal(append())
    if refused is not None:
        assert len(fake.requests) == count
        return
    request = fake.requests[-1]
    assert request.campaign_id == str(campaign_id)  # braces and newlines included
    assert request.accepted


callback_urls = (
    st.sampled_from(
        [
            "https://example.com/cb",
            "http://api.example.com/call-data",
            "javascript:alert(1)",
            "https://example.com/\r\nX: y",
            "ftp://example.com",
            "",
            "//example.com",
        ]
    )
    | any_text
    | values
)
options = st.fixed_dictionaries(
    {},
    optional={
        "name": any_text | values,
        "agent_mapping": st.sampled_from(["global", "inline", "all-agents", "GLOBAL", ""]) | values,
        "agents": st.lists(names, max_size=3) | values,
        "custom_field_names": st.dictionaries(
            st.sampled_from(["customField1Name", "customField2Name", "customField0Name"])
            | any_text,
            any_text | values,
            max_size=2,
        )
        | values,
        "terminal_callback_url": callback_urls,
        "connect_callback_url": callback_urls,
    },
)


@SETTINGS
@given(campaign_options=options)
def test_hostile_campaign_options_are_refused_or_sent_as_given(
    servers: Servers, campaign_options: dict[str, Any]
) -> None:
    fake = servers.fake
    before = fake.received_requests

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, "42", [{"number": "+919876543210"}], **campaign_options)

    try:
        run(append())
    except ValidationError:
        assert fake.received_requests == before
        return
    request = fake.requests[-1]
    assert request.accepted
    assert request.request is not None
    sent = request.request
    assert sent.name == campaign_options.get("name")
    assert sent.agents == campaign_options.get("agents")
    assert sent.custom_field_names == campaign_options.get("custom_field_names")
    data = sent.customer_data
    assert data.terminal_callback_url == campaign_options.get("terminal_callback_url")
    assert data.connect_callback_url == campaign_options.get("connect_callback_url")


# -- settings ----------------------------------------------------------------------------

hosts = st.sampled_from(
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.1.2.3",
        "example.com",
        "evil.com@127.0.0.1",
        "127.0.0.1@evil.com",
        "user:pw@127.0.0.1",
        "127.0.0.1\r\nX: y",
        "127.0.0.1%2F..",
        "",
        "xn--80ak6aa92e.com",
        "ex ample.com",
        "[::ffff:127.0.0.1]",
        "127.1",
        "0x7f.0.0.1",
    ]
)
paths = st.sampled_from(
    ["", "/", "/proxy", "/a/../..", "/%2e%2e/x", "/a b", "/\r\n", "/?q=1", "/#f", "/;x", "//x"]
) | any_text.map(lambda text: "/" + text)
base_urls = (
    st.builds(
        lambda scheme, host, port, path: f"{scheme}{host}{port}{path}",
        st.sampled_from(["http://", "https://", "HTTP://", "ftp://", "", "http:/", "http:///"]),
        hosts,
        st.sampled_from(["", ":8080", ":0", ":65536", ":-1", ":x"]),
        paths,
    )
    | any_text
    | values
)
subdomains = (
    any_text
    | st.sampled_from(
        ["", "acme", "ACME", "a" * 63, "a" * 64, "-acme", "acme-", "ac.me", "ac me", "acme\n"]
    )
    | values
)
tokens = any_text | st.sampled_from(["", " ", "tok\r\nX: y", "tök", TOKEN]) | values


@SETTINGS
@given(
    subdomain=st.none() | subdomains,
    base_url=st.none() | base_urls,
    token=tokens,
    insecure=st.booleans(),
)
def test_hostile_settings_are_refused_or_give_one_safe_base_url(
    subdomain: Any, base_url: Any, token: Any, insecure: bool
) -> None:
    with pytest.MonkeyPatch.context() as env:
        for name in ("RYNG_SUBDOMAIN", "RYNG_ACCESS_TOKEN", "RYNG_BASE_URL"):
            env.delenv(name, raising=False)
        try:
            client = RyngClient(subdomain, token, base_url=base_url, allow_insecure_http=insecure)
        except ConfigurationError as exc:
            message = str(exc)
            client = None
    if client is None:
        echoed = f"{subdomain!r} {base_url!r}"  # settings that may be named in the message
        if isinstance(token, str) and len(token) > 3 and token not in echoed:
            assert token not in message
        return
    url = URL(client.campaign_url("42"), encoded=True)
    assert url.scheme in {"http", "https"}
    assert url.raw_path.endswith(API_PATH + "42")
    assert not set(client.base_url) & {"\r", "\n", " ", "\x00"}
    assert url.user is None
    assert url.password is None
    if base_url is None:
        assert url.host == f"{str(subdomain).lower()}.ryng.in"
        assert url.scheme == "https"
    else:
        assert url.host == URL(base_url).host  # the path cannot move the host
    if url.scheme == "http" and not insecure:
        assert url.host in {"127.0.0.1", "localhost", "::1"} or str(url.host).startswith("127.")


@SETTINGS
@given(path=paths)
def test_a_base_url_path_prefixes_every_request_and_nothing_else(
    servers: Servers, path: str
) -> None:
    base_url = f"http://127.0.0.1:{servers.catch_all_port}{path}"
    try:
        client = RyngClient(base_url=base_url, access_token=TOKEN, retry=NO_RETRIES)
    except ConfigurationError:
        return
    expected = URL(client.campaign_url("42"), encoded=True)
    count = len(servers.paths)

    async def append() -> Any:
        async with client:
            return await client.append("42", [{"number": "+919876543210"}])

    run(append())
    assert servers.paths[count:] == [expected.raw_path]
    assert expected.port == servers.catch_all_port
    assert expected.raw_path.endswith(API_PATH + "42")


# -- values the strategies leave out -----------------------------------------------------

HUGE = "\u0928" * 2_000_000  # 6 MB of UTF-8


@pytest.mark.parametrize(
    "lead",
    [
        {"number": "+919876543210", "customField1": HUGE},
        {"number": "+91" + "9" * 1_000_000},
        {"number": "+919876543210", "agentsAssigned": ["a" * 1_000_000]},
        {"number": "+919876543210", HUGE: "x"},
    ],
    ids=["huge-field", "huge-number", "huge-agent", "huge-key"],
)
def test_huge_values_are_refused_or_sent_whole(servers: Servers, lead: dict[str, Any]) -> None:
    fake = servers.fake
    before = fake.received_requests

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, "42", [lead])

    try:
        run(append())
    except ValidationError:
        assert fake.received_requests == before
        return
    assert fake.requests[-1].leads == [lead]


@pytest.mark.parametrize(
    ("lead", "campaign_options"),
    [
        ({"number": "+919876543210", "customField1": "\ud800"}, {}),
        ({"number": "+919876543210", "agentsAssigned": ["a\udfff"]}, {}),
        ({"number": "+919876543210"}, {"name": "\ud800"}),
        ({"number": "+919876543210"}, {"terminal_callback_url": "https://x.example/\ud800"}),
    ],
    ids=["custom-field", "agent", "name", "callback-url"],
)
def test_lone_surrogates_are_refused_before_sending(
    servers: Servers, lead: dict[str, Any], campaign_options: dict[str, Any]
) -> None:
    fake = servers.fake
    before = fake.received_requests

    def append() -> Coroutine[Any, Any, Any]:
        return append_once(fake.base_url, "42", [lead], **campaign_options)

    with pytest.raises(ValidationError):
        run(append())
    assert fake.received_requests == before
