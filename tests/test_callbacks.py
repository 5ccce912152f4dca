"""Tests for ryng_async.callbacks: the receiver over real HTTP on loopback, and the stores.

The receiver runs in an `aiohttp.web.AppRunner` on 127.0.0.1 (port 0), as `serve` runs it
(no handler cancellation on client disconnect), and is spoken to with a plain
`aiohttp.ClientSession` or raw sockets where the framing matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import inspect
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_callback_events import (
    CONNECT_EXAMPLE,
    TERMINAL_EXAMPLE,
    TERMINAL_EXAMPLE_AS_PUBLISHED,
)

import ryng_async.callbacks as callbacks
from ryng_async import ConfigurationError, RyngError, ValidationError
from ryng_async.callbacks import (
    EXPORT_COLUMNS,
    CallbackEvent,
    CallbackStore,
    ConnectCallback,
    JSONLinesCallbackStore,
    RedactingAccessLogger,
    SQLiteCallbackStore,
    StoredCallback,
    TerminalCallback,
    callback_key,
    callback_url,
    create_app,
    encode_callback,
    export,
    iter_store,
    parse_callback,
)

pytestmark = pytest.mark.anyio

SECRET = "s3cret-Token_0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent


def _with(example: bytes, **changes: Any) -> bytes:
    body = json.loads(example)
    body.update(changes)
    return json.dumps(body).encode()


def connect_body(call_id: int, event: str = "agent-connected", **changes: Any) -> bytes:
    return _with(CONNECT_EXAMPLE, callID=call_id, event=event, **changes)


class Receiver:
    """A running receiver and a client session bound to it."""

    def __init__(self, base: str, http: aiohttp.ClientSession, secret: str | None) -> None:
        self.base = base
        self.http = http
        self.secret = secret

    @property
    def url(self) -> str:
        path = "/callbacks" if self.secret is None else f"/callbacks/{self.secret}"
        return self.base + path

    async def post(
        self, body: bytes, *, url: str | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        async with self.http.post(url or self.url, data=body, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw.startswith(b"{") else raw

    async def request(self, method: str, path: str) -> int:
        async with self.http.request(method, self.base + path) as response:
            await response.read()
            return response.status


@contextlib.asynccontextmanager
async def running(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 with an ephemeral port; yield its base URL."""
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def receiver_for(
    store: CallbackStore | None, *, secret: str | None = SECRET, **options: Any
) -> AsyncIterator[Receiver]:
    app = create_app(store=store, secret=secret, **options)
    async with running(app) as base, aiohttp.ClientSession() as http:
        yield Receiver(base, http, secret)


@pytest.fixture(params=["sqlite", "jsonl"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CallbackStore]:
    made: SQLiteCallbackStore | JSONLinesCallbackStore
    if request.param == "sqlite":
        made = SQLiteCallbackStore(tmp_path / "callbacks.db")
    else:
        made = JSONLinesCallbackStore(tmp_path / "callbacks.jsonl")
    async with made:
        yield made


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteCallbackStore]:
    async with SQLiteCallbackStore(tmp_path / "callbacks.db") as made:
        yield made


@pytest.fixture
async def receiver(store: CallbackStore) -> AsyncIterator[Receiver]:
    async with receiver_for(store) as running_receiver:
        yield running_receiver


async def stored_events(store: CallbackStore) -> list[StoredCallback]:
    return [stored async for stored in store.iter_events()]


# -- the public surface ------------------------------------------------------------------


def test_public_names_are_exported_and_documented() -> None:
    assert callbacks.__all__ == sorted(callbacks.__all__, key=lambda n: (not n.isupper(), n))
    for name in callbacks.__all__:
        obj = getattr(callbacks, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name


def test_structs_are_the_packages() -> None:
    import ryng_async

    assert callbacks.ConnectCallback is ryng_async.ConnectCallback
    assert callbacks.TerminalCallback is ryng_async.TerminalCallback
    assert callbacks.parse_callback is ryng_async.parse_callback


def test_the_core_never_imports_callbacks() -> None:
    for path in (ROOT / "ryng_async").glob("*.py"):
        text = path.read_text()
        assert "callbacks import" not in text, path
        assert "import ryng_async.callbacks" not in text, path


def test_stores_meet_the_protocol(tmp_path: Path) -> None:
    assert issubclass(SQLiteCallbackStore, CallbackStore)
    assert issubclass(JSONLinesCallbackStore, CallbackStore)


# -- the vendor's examples, end to end -------------------------------------------------


async def test_vendor_examples_are_received_stored_and_read_back_typed(
    receiver: Receiver, store: CallbackStore
) -> None:
    assert await receiver.post(CONNECT_EXAMPLE) == (200, {"ok": True, "duplicate": False})
    assert await receiver.post(TERMINAL_EXAMPLE) == (200, {"ok": True, "duplicate": False})

    first, second = await stored_events(store)

    assert (first.seq, second.seq) == (1, 2)
    assert first.raw == CONNECT_EXAMPLE
    assert second.raw == TERMINAL_EXAMPLE
    assert first.received_at.tzinfo is not None
    assert first.received_at <= second.received_at <= datetime.now(UTC)
    assert first.extra_fields() == {} == second.extra_fields()
    assert first.callback_type == "connect"
    assert second.callback_type == "terminal"

    connect = first.event
    assert isinstance(connect, ConnectCallback)
    assert connect == parse_callback(CONNECT_EXAMPLE)
    assert first.key == (131, "connect", "agent-connected")
    assert connect.agent_id == 67136
    assert connect.agent_username == "ashwin@example.com"
    assert connect.agent_num == "+919999999999"
    assert connect.customer_num == "+917777445511"
    assert connect.call_created == datetime(2023, 2, 1, 18, 13, 18, tzinfo=UTC)
    assert connect.call_started is None
    assert connect.call_direction == "outbound"
    assert connect.custom_field_names["customField8Name"] == "meta data 7"
    assert connect.custom_fields["customField1"] == "ashwin"

    terminal = second.event
    assert isinstance(terminal, TerminalCallback)
    assert terminal == parse_callback(TERMINAL_EXAMPLE)
    assert second.key == (28, "terminal", "call-ended")
    assert terminal.call_log_id == 64
    assert terminal.virtual_num == "+914954389444"
    assert terminal.call_started == datetime(2023, 1, 19, 8, 7, 7, tzinfo=UTC)
    assert terminal.call_ended == datetime(2023, 1, 19, 8, 12, 52, tzinfo=UTC)
    assert terminal.call_disposed == datetime(2023, 1, 19, 8, 13, 0, tzinfo=UTC)
    assert terminal.callback_time is None
    assert terminal.talktime == 5
    assert terminal.call_duration is None
    assert terminal.parent_disposition is None
    assert terminal.disposition == "New Disposition"
    assert terminal.notes == ""
    assert terminal.status == "2"
    assert terminal.recording_url is not None
    assert terminal.recording_url.endswith("2af2864f323c31e1da22c2e82d78178s.mp3")
    assert terminal.leg_details == {
        "leg0Status": 5,
        "leg0Duration": 16,
        "leg1Status": 5,
        "leg1Duration": 5,
    }
    assert terminal.custom_fields["customField3"] == "custfield"


async def test_the_published_terminal_example_is_refused_with_a_reason(
    receiver: Receiver, store: CallbackStore
) -> None:
    status, body = await receiver.post(TERMINAL_EXAMPLE_AS_PUBLISHED)

    assert status == 400
    assert "not valid JSON" in body["error"]
    assert await stored_events(store) == []


async def test_unknown_fields_are_kept_not_refused(
    receiver: Receiver, store: CallbackStore
) -> None:
    extra = {"newVendorField": {"nested": [1, 2.5, None]}, "queue": "sales"}
    body = _with(TERMINAL_EXAMPLE, **extra)

    assert (await receiver.post(body))[0] == 200

    (stored,) = await stored_events(store)
    assert stored.raw == body
    assert stored.extra_fields() == extra
    assert stored.event == parse_callback(TERMINAL_EXAMPLE)


# -- duplicates ------------------------------------------------------------------------


async def test_a_resent_callback_is_stored_once_and_answered_200(
    receiver: Receiver, store: CallbackStore
) -> None:
    answers = [await receiver.post(TERMINAL_EXAMPLE) for _ in range(3)]

    assert answers == [
        (200, {"ok": True, "duplicate": False}),
        (200, {"ok": True, "duplicate": True}),
        (200, {"ok": True, "duplicate": True}),
    ]
    assert len(await stored_events(store)) == 1


async def test_concurrent_copies_of_one_callback_are_stored_once(
    receiver: Receiver, store: CallbackStore
) -> None:
    answers = await asyncio.gather(*(receiver.post(CONNECT_EXAMPLE) for _ in range(25)))

    assert {status for status, _ in answers} == {200}
    assert sum(not body["duplicate"] for _, body in answers) == 1
    assert len(await stored_events(store)) == 1


async def test_the_dedupe_key_is_call_type_and_event(
    receiver: Receiver, store: CallbackStore
) -> None:
    bodies = [
        connect_body(1, "agent-connected"),
        connect_body(1, "customer-connected"),
        connect_body(2, "agent-connected"),
        _with(TERMINAL_EXAMPLE, callID=1, event="agent-connected"),
        # Same key, other content: still the same callback (the first copy is kept).
        connect_body(1, "agent-connected", agentUsername="someone@else.com"),
    ]
    answers = [await receiver.post(body) for body in bodies]

    assert [body["duplicate"] for _, body in answers] == [False, False, False, False, True]
    stored = await stored_events(store)
    assert [s.key for s in stored] == [
        (1, "connect", "agent-connected"),
        (1, "connect", "customer-connected"),
        (2, "connect", "agent-connected"),
        (1, "terminal", "agent-connected"),
    ]
    assert stored[0].event.agent_username == "ashwin@example.com"


async def test_a_store_reopened_still_knows_its_callbacks(tmp_path: Path) -> None:
    for cls, name in ((SQLiteCallbackStore, "c.db"), (JSONLinesCallbackStore, "c.jsonl")):
        event = parse_callback(CONNECT_EXAMPLE)
        async with cls(tmp_path / name) as first:
            assert await first.add(event, CONNECT_EXAMPLE) is True
        async with cls(tmp_path / name) as again:
            assert await again.add(event, CONNECT_EXAMPLE) is False
            terminal = parse_callback(TERMINAL_EXAMPLE)
            assert await again.add(terminal, TERMINAL_EXAMPLE) is True
            assert [s.seq for s in await stored_events(again)] == [1, 2]


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"{", "not valid JSON", id="truncated"),
        pytest.param(b"callbackType=connect", "not valid JSON", id="form-encoded"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf8"),
        pytest.param(b"[1, 2]", "Expected `object`", id="array"),
        pytest.param(b"{}", "callbackType", id="no-callbackType"),
        pytest.param(connect_body(1, callbackType="foo"), "'foo'", id="unknown-type"),
        pytest.param(_with(CONNECT_EXAMPLE, callID="131"), "callID", id="callID-string"),
        pytest.param(b"[" * 100_000, "invalid callback body", id="deep"),
        pytest.param(
            b'{"callbackType":"connect","callID":1,"event":"e","x":"\xff"}',
            "not UTF-8",
            id="not-utf8-in-an-unknown-field",
        ),
    ],
)
async def test_a_body_that_is_not_a_callback_gets_400_with_a_reason(
    receiver: Receiver, store: CallbackStore, body: bytes, reason: str
) -> None:
    status, answer = await receiver.post(body)

    assert status == 400
    assert reason in answer["error"]
    assert len(answer["error"]) <= 200
    assert await stored_events(store) == []


async def test_the_reason_is_short_even_for_a_long_value(receiver: Receiver) -> None:
    status, answer = await receiver.post(connect_body(1, callbackType="x" * 10_000))

    assert status == 400
    assert len(answer["error"]) <= 200
    assert answer["error"].endswith("...")


async def test_a_declared_length_over_the_cap_gets_413_before_the_body_is_read(
    sqlite_store: SQLiteCallbackStore,
) -> None:
    async with receiver_for(sqlite_store, secret=None, max_body=1000) as rcv:
        host, port = rcv.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            # Headers announcing 50 MB, then nothing: the answer must come without the body.
            writer.write(
                b"POST /callbacks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 50000000\r\n\r\n{"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = await asyncio.wait_for(reader.readexactly(length), 10)
        finally:
            writer.close()
            await writer.wait_closed()
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert json.loads(answer) == {"error": "body over 1000 bytes"}
    assert await sqlite_store.count() == 0


async def test_a_chunked_body_over_the_cap_gets_413_after_just_the_cap(
    sqlite_store: SQLiteCallbackStore,
) -> None:
    async with receiver_for(sqlite_store, secret=None, max_body=1000) as rcv:
        host, port = rcv.base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /callbacks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"x" * 600
            for _ in range(2):  # 1,200 bytes, then silence: no end of body is ever sent
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
            await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert await sqlite_store.count() == 0


async def test_a_body_at_the_cap_is_accepted(sqlite_store: SQLiteCallbackStore) -> None:
    body = CONNECT_EXAMPLE
    async with receiver_for(sqlite_store, secret=None, max_body=len(body)) as rcv:
        assert (await rcv.post(body))[0] == 200
        assert (await rcv.post(body + b" "))[0] == 413
    assert await sqlite_store.count() == 1


async def test_a_compressed_body_is_capped_after_decompression(
    sqlite_store: SQLiteCallbackStore,
) -> None:
    import zlib

    bomb = zlib.compress(b" " * 5_000_000)  # about 5 KB on the wire, 5 MB inflated
    async with receiver_for(sqlite_store, secret=None, max_body=10_000) as rcv:
        status, _ = await rcv.post(bomb, headers={"Content-Encoding": "deflate"})
        broken, answer = await rcv.post(b"not deflate", headers={"Content-Encoding": "deflate"})
    assert status == 413
    assert broken == 400
    assert "unreadable body" in answer["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/callbacks",
        "/callbacks/wrong-secret-0123456789",
        "/callbacks/" + SECRET[:-1],
        "/callbacks/" + SECRET + "x",
        "/callbacks/%C3%A9" + SECRET,
        "/callbacks?secret=nope",
        "/callbacks?secret=",
    ],
)
async def test_a_missing_or_wrong_secret_gets_403(
    receiver: Receiver, store: CallbackStore, path: str
) -> None:
    status, answer = await receiver.post(CONNECT_EXAMPLE, url=receiver.base + path)

    assert status == 403
    assert answer == {"error": "missing or wrong secret"}
    assert await stored_events(store) == []


async def test_the_secret_may_ride_in_the_query(receiver: Receiver, store: CallbackStore) -> None:
    status, _ = await receiver.post(
        CONNECT_EXAMPLE, url=f"{receiver.base}/callbacks?secret={SECRET}"
    )

    assert status == 200
    assert len(await stored_events(store)) == 1


async def test_a_wrong_secret_is_refused_before_the_body_is_judged(receiver: Receiver) -> None:
    url = receiver.base + "/callbacks/wrong-secret-0123456789"
    assert (await receiver.post(b"garbage", url=url))[0] == 403
    assert (await receiver.post(b"x" * 1_000_000, url=url))[0] == 403


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/callbacks"),
        ("PUT", "/callbacks"),
        ("DELETE", "/callbacks"),
        ("PATCH", f"/callbacks/{SECRET}"),
        ("GET", f"/callbacks/{SECRET}"),
    ],
)
async def test_other_methods_get_405(receiver: Receiver, method: str, path: str) -> None:
    assert await receiver.request(method, path) == 405


async def test_health_endpoint(receiver: Receiver) -> None:
    async with receiver.http.get(receiver.base + "/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"ok": True}
    assert await receiver.request("POST", "/healthz") == 405


@pytest.mark.parametrize(
    "secret",
    ["short", "", "has space in it 0123456789", "slash/in/it/0123456789", "é" * 20, 12345],
)
def test_an_unusable_secret_is_refused_at_creation(secret: Any) -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        create_app(secret=secret)


@pytest.mark.parametrize("max_body", [0, -1, 1.5, True, "100"])
def test_an_unusable_max_body_is_refused_at_creation(max_body: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_body"):
        create_app(max_body=max_body)


# -- the secret stays out of the logs ------------------------------------------------


async def test_the_secret_is_never_logged(
    sqlite_store: SQLiteCallbackStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(store=FailingStore(), secret=SECRET, handler=failing_handler)
    async with (
        running(app, access_log_class=RedactingAccessLogger) as base,
        aiohttp.ClientSession() as http,
    ):
        rcv = Receiver(base, http, SECRET)
        await rcv.post(CONNECT_EXAMPLE)  # 500: the store fails
        await rcv.post(b"{", url=f"{base}/callbacks?secret={SECRET}")  # 400
        await rcv.post(CONNECT_EXAMPLE, url=f"{base}/callbacks/{SECRET}x")  # 403
        await rcv.request("GET", f"/callbacks/{SECRET}")  # 405
    app = create_app(store=sqlite_store, secret=SECRET, handler=failing_handler)
    async with (
        running(app, access_log_class=RedactingAccessLogger) as base,
        aiohttp.ClientSession() as http,
    ):
        await Receiver(base, http, SECRET).post(TERMINAL_EXAMPLE)  # 200, handler fails

    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 5
    assert any('"POST /callbacks/*** HTTP/1.1" 500' in line for line in access)
    assert any('"POST /callbacks?secret=*** HTTP/1.1" 400' in line for line in access)
    assert any("could not store callback" in r.getMessage() for r in caplog.records)
    assert any("callback handler failed" in r.getMessage() for r in caplog.records)
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.__dict__)


def test_redact() -> None:
    assert callbacks._app.redact(f"/callbacks/{SECRET}") == "/callbacks/***"
    assert callbacks._app.redact(f"/callbacks?secret={SECRET}&a=1") == "/callbacks?secret=***&a=1"
    assert callbacks._app.redact(f"/callbacks?a=1&secret={SECRET}") == "/callbacks?a=1&secret=***"
    assert callbacks._app.redact("/healthz") == "/healthz"


def test_callback_url() -> None:
    assert callback_url("127.0.0.1", 8080) == "http://127.0.0.1:8080/callbacks"
    assert callback_url("::1", 80, SECRET) == f"http://[::1]:80/callbacks/{SECRET}"
    assert callback_url("cb.example.com", 443, scheme="https").startswith("https://cb.")


# -- store failures, handlers ------------------------------------------------------------


class FailingStore:
    """A store whose writes fail (a full disk), for the 500 path."""

    def __init__(self) -> None:
        self.attempts = 0

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        self.attempts += 1
        raise OSError(28, "No space left on device")

    async def iter_events(self) -> AsyncIterator[StoredCallback]:
        return
        yield  # pragma: no cover

    async def aclose(self) -> None:
        pass


async def failing_handler(event: CallbackEvent) -> None:
    raise RuntimeError(f"handler broke on {event.call_id}")


async def test_a_store_failure_answers_500_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FailingStore()
    async with receiver_for(store) as rcv:
        status, answer = await rcv.post(CONNECT_EXAMPLE)

    assert status == 500
    assert answer == {"error": "could not store the callback; send it again"}
    assert store.attempts == 1
    (record,) = [r for r in caplog.records if r.name == "ryng_async.callbacks"]
    assert record.levelno == logging.ERROR
    assert "(131, 'connect', 'agent-connected')" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], OSError)


async def test_a_closed_store_answers_500_then_a_retry_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = SQLiteCallbackStore(path)
    await first.aclose()
    with pytest.raises(RyngError, match="closed"):
        await first.add(parse_callback(CONNECT_EXAMPLE), CONNECT_EXAMPLE)
    async with receiver_for(first) as rcv:
        assert (await rcv.post(CONNECT_EXAMPLE))[0] == 500
    async with SQLiteCallbackStore(path) as second, receiver_for(second) as rcv:
        assert await rcv.post(CONNECT_EXAMPLE) == (200, {"ok": True, "duplicate": False})
        assert await second.count() == 1


async def test_the_handler_sees_each_new_callback_once_after_it_is_stored(
    sqlite_store: SQLiteCallbackStore,
) -> None:
    seen: list[tuple[CallbackEvent, int]] = []

    async def handler(event: CallbackEvent) -> None:
        seen.append((event, await sqlite_store.count()))

    async with receiver_for(sqlite_store, handler=handler) as rcv:
        for body in (CONNECT_EXAMPLE, TERMINAL_EXAMPLE, CONNECT_EXAMPLE):
            assert (await rcv.post(body))[0] == 200

    assert seen == [(parse_callback(CONNECT_EXAMPLE), 1), (parse_callback(TERMINAL_EXAMPLE), 2)]


async def test_a_failing_handler_is_logged_and_the_callback_kept(
    sqlite_store: SQLiteCallbackStore, caplog: pytest.LogCaptureFixture
) -> None:
    async with receiver_for(sqlite_store, handler=failing_handler) as rcv:
        assert await rcv.post(TERMINAL_EXAMPLE) == (200, {"ok": True, "duplicate": False})

    assert await sqlite_store.count() == 1
    (record,) = [r for r in caplog.records if "handler failed" in r.getMessage()]
    assert isinstance(record.exc_info and record.exc_info[1], RuntimeError)


async def test_without_a_store_the_default_sqlite_file_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(secret=None)
    assert not (tmp_path / "ryng-callbacks.db").exists()  # nothing touched before start
    async with running(app) as base, aiohttp.ClientSession() as http:
        assert (await Receiver(base, http, None).post(CONNECT_EXAMPLE))[0] == 200
    stored = [s async for s in iter_store(tmp_path / "ryng-callbacks.db")]
    assert [s.raw for s in stored] == [CONNECT_EXAMPLE]


# -- a crash between storing and answering ---------------------------------------------


class StoreThenHang:
    """Stores for real, then never answers: the process "dies" before the 200 goes out."""

    def __init__(self, inner: SQLiteCallbackStore) -> None:
        self.inner = inner
        self.stored = asyncio.Event()
        self.die = asyncio.Event()

    async def add(self, event: CallbackEvent, raw: bytes) -> bool:
        await self.inner.add(event, raw)
        self.stored.set()
        await self.die.wait()
        raise SystemError("the process died before answering")

    def iter_events(self) -> AsyncIterator[StoredCallback]:
        return self.inner.iter_events()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_crash_between_store_and_answer_loses_nothing_and_the_retry_is_stored_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    hanging = StoreThenHang(SQLiteCallbackStore(path))
    async with receiver_for(hanging) as rcv:
        attempt = asyncio.create_task(rcv.post(TERMINAL_EXAMPLE))
        await asyncio.wait_for(hanging.stored.wait(), 10)
        # The callback is on disk before any answer: a fresh reader sees it.
        assert [s.raw async for s in iter_store(path)] == [TERMINAL_EXAMPLE]
        attempt.cancel()  # Ryng gives up on the connection: no 200 ever came
        with pytest.raises(asyncio.CancelledError):
            await attempt
        hanging.die.set()
    # The old store object is abandoned, as by a killed process; a new one opens the file.
    async with SQLiteCallbackStore(path) as restarted, receiver_for(restarted) as rcv:
        assert await rcv.post(TERMINAL_EXAMPLE) == (200, {"ok": True, "duplicate": True})
        assert await restarted.count() == 1
    await hanging.aclose()


_RECEIVER_PROCESS = textwrap.dedent(
    """
    import asyncio, signal, sys
    from ryng_async.callbacks import serve
    signal.signal(signal.SIGINT, signal.default_int_handler)  # stopped by SIGINT, even nohup
    asyncio.run(serve(port=0, store_path=sys.argv[1], on_ready=lambda url: print(url, flush=True)))
    """
)


def _start_receiver(store: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", _RECEIVER_PROCESS, str(store)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return process, url


async def test_a_killed_receiver_loses_no_acknowledged_callback_and_duplicates_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.db"
    bodies = [connect_body(n) for n in range(400)]
    process, url = await asyncio.to_thread(_start_receiver, path)
    acknowledged: set[int] = set()
    killed = False
    try:
        async with aiohttp.ClientSession() as http:

            async def post(index: int) -> None:
                nonlocal killed
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.post(url, data=bodies[index]) as response:
                        if response.status == 200:
                            acknowledged.add(index)
                if len(acknowledged) >= 150 and not killed:
                    killed = True
                    os.kill(process.pid, signal.SIGKILL)

            await asyncio.gather(*(post(i) for i in range(len(bodies))))
    finally:
        process.kill()
        await asyncio.to_thread(process.communicate)
    assert killed
    assert 150 <= len(acknowledged) < len(bodies)

    # Straight after the kill, before anything is resent: every callback answered 200 is
    # on disk (some unanswered ones may be too, stored before the kill cut their answer).
    after_kill = [s.event.call_id async for s in iter_store(path)]
    assert len(after_kill) == len(set(after_kill))
    assert acknowledged <= set(after_kill), sorted(acknowledged - set(after_kill))

    # Ryng resends only what got no 200; the receiver stores each call once.
    unacknowledged = [i for i in range(len(bodies)) if i not in acknowledged]
    process, url = await asyncio.to_thread(_start_receiver, path)
    try:
        async with aiohttp.ClientSession() as http:
            for index in unacknowledged:
                async with http.post(url, data=bodies[index]) as response:
                    assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.communicate)

    stored = [s async for s in iter_store(path)]
    assert sorted(s.event.call_id for s in stored) == list(range(len(bodies)))


# -- the receiver never answers 500 to bad input -------------------------------------

HYPOTHESIS = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HYPOTHESIS_SLOW = settings(HYPOTHESIS, max_examples=3000)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)
_FIELDS = sorted(set(json.loads(CONNECT_EXAMPLE)) | set(json.loads(TERMINAL_EXAMPLE)))


@st.composite
def near_callbacks(draw: st.DrawFn) -> bytes:
    body = json.loads(draw(st.sampled_from([CONNECT_EXAMPLE, TERMINAL_EXAMPLE])))
    for key in draw(st.lists(st.sampled_from(_FIELDS), max_size=4, unique=True)):
        body[key] = draw(json_values)
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=2, unique=True)):
        del body[key]
    return json.dumps(body).encode()


bodies = st.binary(max_size=2000) | json_values.map(lambda v: json.dumps(v).encode())
bodies |= near_callbacks()


@pytest.fixture
async def small_receiver(sqlite_store: SQLiteCallbackStore) -> AsyncIterator[Receiver]:
    async with receiver_for(sqlite_store, max_body=1500) as rcv:
        yield rcv


async def _never_500(rcv: Receiver, body: bytes, path: str) -> None:
    status, _ = await rcv.post(body, url=rcv.base + path)
    # 404: a path that is no route at all ("/callbacks/" with an empty secret).
    assert status in (200, 400, 403, 404, 413), (status, body)
    if path.endswith(SECRET) and len(body) <= 1500:
        try:
            parse_callback(body)
        except ValidationError:
            assert status == 400
        else:
            assert status == 200


_PATHS = st.sampled_from([f"/callbacks/{SECRET}", "/callbacks"]) | st.text(
    st.characters(codec="utf-8", exclude_characters="/?#%"), max_size=30
).map(lambda s: "/callbacks/" + s)


@HYPOTHESIS
@given(body=bodies, path=_PATHS)
async def test_arbitrary_bodies_never_get_a_500(
    small_receiver: Receiver, body: bytes, path: str
) -> None:
    await _never_500(small_receiver, body, path)


@pytest.mark.slow
@HYPOTHESIS_SLOW
@given(body=bodies, path=_PATHS)
async def test_arbitrary_bodies_never_get_a_500_long_run(
    small_receiver: Receiver, body: bytes, path: str
) -> None:
    await _never_500(small_receiver, body, path)


@settings(HYPOTHESIS, max_examples=25)
@given(callbacks=st.lists(near_callbacks(), max_size=10))
async def test_whatever_is_accepted_reads_back_as_sent(
    tmp_path_factory: pytest.TempPathFactory, callbacks: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("store") / "c.db"
    accepted: dict[tuple[int, str, str], bytes] = {}
    async with SQLiteCallbackStore(path) as store, receiver_for(store, secret=None) as rcv:
        for body in callbacks:
            status, answer = await rcv.post(body)
            if status == 200:
                key = callback_key(parse_callback(body))
                assert answer["duplicate"] == (key in accepted)
                accepted.setdefault(key, body)
        stored = await stored_events(store)
    assert {s.key: s.raw for s in stored} == accepted
    assert len(stored) == len(accepted)


# -- the stores --------------------------------------------------------------------------


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigurationError, match="not a ryng_async callback store"):
        await SQLiteCallbackStore(path).open()
    with pytest.raises(ConfigurationError, match="not a ryng_async callback store"):
        [s async for s in iter_store(path)]


async def test_an_unopenable_path_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open callback store"):
        await SQLiteCallbackStore(tmp_path / "missing-dir" / "c.db").open()
    with pytest.raises(ConfigurationError, match="cannot open callback store"):
        await JSONLinesCallbackStore(tmp_path / "missing-dir" / "c.jsonl").open()
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteCallbackStore(tmp_path / "c.db", synchronous="off")  # type: ignore[arg-type]


async def test_making_a_store_does_no_io_opening_it_does(tmp_path: Path) -> None:
    sqlite_path, jsonl_path = tmp_path / "c.db", tmp_path / "c.jsonl"
    jsonl_path.write_bytes(b"not json\n")
    sqlite_store = SQLiteCallbackStore(sqlite_path)
    jsonl_store = JSONLinesCallbackStore(jsonl_path)  # its bad line is not read yet
    assert not sqlite_path.exists()
    async with sqlite_store as opened:
        assert opened is sqlite_store
        assert sqlite_path.exists()
    with pytest.raises(ConfigurationError, match="line 1 is not a stored callback"):
        await jsonl_store.open()


async def test_missing_store_file_for_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read callback store"):
        iter_store(tmp_path / "nothing.db")


async def test_a_jsonl_store_is_locked_to_one_writer(tmp_path: Path) -> None:
    async with JSONLinesCallbackStore(tmp_path / "c.jsonl"):
        with pytest.raises(ConfigurationError, match="in use by another process"):
            await JSONLinesCallbackStore(tmp_path / "c.jsonl").open()


async def test_a_torn_last_jsonl_line_is_dropped_and_a_bad_line_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.jsonl"
    async with JSONLinesCallbackStore(path) as store:
        await store.add(parse_callback(CONNECT_EXAMPLE), CONNECT_EXAMPLE)
    whole = path.read_bytes()
    path.write_bytes(whole + whole[: len(whole) // 2])  # a crash mid-append
    assert [s.seq for s in await stored_events_of_path(path)] == [1]
    async with JSONLinesCallbackStore(path) as store:
        assert path.read_bytes() == whole
        assert await store.add(parse_callback(TERMINAL_EXAMPLE), TERMINAL_EXAMPLE) is True
    assert [s.seq for s in await stored_events_of_path(path)] == [1, 2]

    path.write_bytes(b"not json\n" + whole)
    with pytest.raises(ConfigurationError, match="line 1 is not a stored callback"):
        await JSONLinesCallbackStore(path).open()
    with pytest.raises(ConfigurationError, match="line 1 is not a stored callback"):
        await stored_events_of_path(path)


async def stored_events_of_path(path: Path) -> list[StoredCallback]:
    return [s async for s in iter_store(path)]


async def test_stores_refuse_a_raw_body_that_is_not_utf8(store: CallbackStore) -> None:
    with pytest.raises(ValidationError, match="not UTF-8"):
        await store.add(parse_callback(CONNECT_EXAMPLE), b"\xff")


async def test_iteration_streams_in_pages(store: CallbackStore) -> None:
    events = [parse_callback(connect_body(n)) for n in range(2500)]
    added = await asyncio.gather(*(store.add(e, encode_callback(e)) for e in events))
    assert all(added)

    stored = await stored_events(store)

    assert [s.seq for s in stored] == list(range(1, 2501))
    assert sorted(s.event.call_id for s in stored) == list(range(2500))


async def test_many_concurrent_adds_are_grouped_and_each_answered(tmp_path: Path) -> None:
    async with SQLiteCallbackStore(tmp_path / "c.db", synchronous="normal") as store:
        events = [parse_callback(connect_body(n % 300)) for n in range(900)]
        added = await asyncio.gather(*(store.add(e, encode_callback(e)) for e in events))
        assert sum(added) == 300
        assert await store.count() == 300


async def test_a_cancelled_add_does_not_break_the_writer(sqlite_store: SQLiteCallbackStore) -> None:
    event = parse_callback(CONNECT_EXAMPLE)
    task = asyncio.create_task(sqlite_store.add(event, CONNECT_EXAMPLE))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    # Whether or not the cancelled one reached the disk, the store still answers.
    assert await sqlite_store.add(event, CONNECT_EXAMPLE) in (True, False)
    assert await sqlite_store.count() == 1


async def test_sqlite_columns_are_queryable_by_hand(sqlite_store: SQLiteCallbackStore) -> None:
    import sqlite3

    await sqlite_store.add(parse_callback(TERMINAL_EXAMPLE), TERMINAL_EXAMPLE)
    with contextlib.closing(sqlite3.connect(sqlite_store.path)) as db:
        row = db.execute(
            "SELECT callback_type, call_id, event, customer_num, disposition, talktime,"
            " call_ended, json_extract(raw, '$.legDetails.leg0Duration') FROM callbacks"
        ).fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert row == (
        "terminal",
        28,
        "call-ended",
        "+917445662236",
        "New Disposition",
        5,
        "2023-01-19T08:12:52+00:00",
        16,
    )
    assert mode == "wal"


def test_stored_callback_repr_has_no_surprises() -> None:
    stored = StoredCallback(
        seq=1,
        received_at=datetime(2024, 1, 1, tzinfo=UTC),
        event=parse_callback(CONNECT_EXAMPLE),
        raw=CONNECT_EXAMPLE,
    )
    assert stored.key == callback_key(stored.event)
    assert msgspec.structs.replace(stored, seq=2).seq == 2


# -- export --------------------------------------------------------------------------------


async def test_export_jsonl_and_csv(store: CallbackStore, tmp_path: Path) -> None:
    extra_body = _with(CONNECT_EXAMPLE, callID=9, queue="sales")
    for body in (CONNECT_EXAMPLE, TERMINAL_EXAMPLE, extra_body):
        await store.add(parse_callback(body), body)
    path = getattr(store, "path")  # noqa: B009 - both stores have one

    jsonl = io.BytesIO()
    assert await export(path, jsonl, format="jsonl") == 3
    lines = jsonl.getvalue().splitlines()
    assert len(lines) == 3
    first = json.loads(lines[0])
    assert first["seq"] == 1
    assert first["callback_type"] == "connect"
    assert first["body"] == json.loads(CONNECT_EXAMPLE)
    assert json.loads(lines[2])["body"]["queue"] == "sales"

    table = io.BytesIO()
    assert await export(store.iter_events(), table, format="csv") == 3
    rows = list(csv.DictReader(io.StringIO(table.getvalue().decode())))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert rows[0]["call_id"] == "131"
    assert rows[0]["disposition"] == ""
    assert rows[0]["call_started"] == ""
    assert rows[0]["call_created"] == "2023-02-01T18:13:18+00:00"
    assert json.loads(rows[0]["custom_fields"])["customField1"] == "ashwin"
    assert rows[1]["callback_type"] == "terminal"
    assert rows[1]["talktime"] == "5"
    assert rows[1]["notes"] == ""
    assert json.loads(rows[1]["leg_details"])["leg0Duration"] == 16
    assert json.loads(rows[2]["extra_fields"]) == {"queue": "sales"}


async def test_export_refuses_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="format"):
        await export(tmp_path / "x.db", io.BytesIO(), format="xml")  # type: ignore[arg-type]


async def test_an_unstorable_callback_does_not_fail_the_others_of_its_group(
    sqlite_store: SQLiteCallbackStore,
) -> None:
    store = sqlite_store
    # Built directly (not parsed), so its callID is past what SQLite can hold.
    bad = ConnectCallback(call_id=2**70, event="agent-connected")
    good = [parse_callback(connect_body(n)) for n in range(50)]
    adds = [store.add(e, encode_callback(e)) for e in good[:25]]
    adds.append(store.add(bad, encode_callback(bad)))
    adds += [store.add(e, encode_callback(e)) for e in good[25:]]

    results = await asyncio.gather(*adds, return_exceptions=True)

    assert isinstance(results[25], RyngError)
    assert "too large" in str(results[25])
    del results[25]
    assert results == [True] * 50
    assert await store.count() == 50


async def test_serve_runs_until_cancelled_and_closes_its_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    path = tmp_path / "served.db"
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        callbacks.serve(port=0, store_path=path, secret=SECRET, on_ready=ready.put_nowait)
    )
    url = await asyncio.wait_for(ready.get(), 10)
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith(f"/callbacks/{SECRET}")
    async with aiohttp.ClientSession() as http, http.post(url, data=CONNECT_EXAMPLE) as answer:
        assert answer.status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not (tmp_path / "served.db-wal").exists()  # closed: the WAL folded in
    assert [s.raw async for s in iter_store(path)] == [CONNECT_EXAMPLE]
    assert "POST /callbacks/*** HTTP/1.1" in caplog.text
    assert SECRET not in caplog.text


async def test_serve_refuses_bad_options_before_listening(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        await callbacks.serve(port=0, store_path=tmp_path / "x.db", secret="short")
    assert not (tmp_path / "x.db").exists()
