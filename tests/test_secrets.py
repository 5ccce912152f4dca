"""Secrets and PII: the token in no output, phone numbers in no log at INFO or above.

The access token appears in no output: not in the repr or str of the client, its limiter
and policy; not in any error the SDK raises, its message, its repr or anything chained to it
(aiohttp's and the OS's errors included, and their attributes); not in a log record at DEBUG
from ``ryng_async`` or aiohttp; not in a load's events, report (str, JSON, results, failed
leads) or checkpoint journal. Logs at INFO and above carry counts and batch positions, never
a phone number.
"""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ryng_async import (
    BulkReport,
    ConfigurationError,
    RetryPolicy,
    RyngClient,
    RyngError,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytestmark = pytest.mark.anyio

SECRET = "tok-SECRET-9f8e7d6c5b4a39281706"
FAST = RetryPolicy(initial_delay=0.0, max_delay=0.0, max_retry_after=0.0, max_attempts=3)


def numbers(count: int) -> list[str]:
    return [f"+9198765{i:05d}" for i in range(count)]


def chain(error: BaseException) -> Iterator[BaseException]:
    """The error, its causes and contexts, and the exceptions of groups, each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += list(getattr(current, "exceptions", ()))


def assert_no_secret_in_error(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    assert SECRET not in text
    for link in chain(error):
        assert SECRET not in str(link)
        assert SECRET not in repr(link)
        assert SECRET not in repr(link.args)
        assert SECRET not in repr(getattr(link, "__dict__", {}))


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures every log record at DEBUG and above, from every logger (``log.records``)."""
    caplog.set_level(logging.DEBUG)
    for name in ("ryng_async", "aiohttp", "aiohttp.client", "aiohttp.internal"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def formatted(record: logging.LogRecord) -> str:
    return logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)


def assert_no_secret_logged(records: list[logging.LogRecord]) -> None:
    for record in records:
        assert SECRET not in formatted(record), record.name


@asynccontextmanager
async def client_for(base_url: str, **options: Any) -> AsyncIterator[RyngClient]:
    options.setdefault("retry", FAST)
    options.setdefault("random_seed", 0)
    async with RyngClient(base_url=base_url, access_token=SECRET, **options) as client:
        yield client


@asynccontextmanager
async def answering(status: int, body: bytes) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port bound but not listening, held for the block: connecting is refused, and no
    other process can take the port meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


# -- the client --------------------------------------------------------------------------


async def test_the_client_shows_no_token() -> None:
    async with FakeRyngServer(access_token=SECRET) as server:
        client = RyngClient(base_url=server.base_url, access_token=SECRET)
        shown = [repr(client), str(client), repr(client.limiter), repr(client.retry)]
        async with client:
            shown += [repr(client), client.campaign_url("42")]
        shown += [repr(client), str(client)]
    for text in shown:
        assert SECRET not in text


@pytest.mark.parametrize(
    "token", [SECRET + " ", SECRET + "\r\n", "é" + SECRET, SECRET + "\x00"], ids=repr
)
def test_a_refused_token_is_not_echoed(token: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RyngClient(base_url="http://127.0.0.1:1", access_token=token)
    assert_no_secret_in_error(info.value)


def test_settings_errors_show_no_token() -> None:
    for options in (
        {"base_url": "http://10.1.2.3"},
        {"base_url": "ftp://x"},
        {"subdomain": "a b"},
        {"base_url": "https://x.example", "timeout": -1},
        {"base_url": "https://x.example", "keepalive_timeout": -1},
    ):
        with pytest.raises(ConfigurationError) as info:
            RyngClient(access_token=SECRET, **options)
        assert_no_secret_in_error(info.value)


# -- errors and logs ---------------------------------------------------------------------


async def collect_errors() -> list[RyngError]:
    """Raise every kind of request error once (each after its retries) and return them."""
    errors: list[RyngError] = []
    lead = [{"number": "+919876543210"}]

    async def attempt(base_url: str, **options: Any) -> None:
        async with client_for(base_url, **options) as client:
            try:
                await client.append("42", lead)
            except RyngError as exc:
                errors.append(exc)
            try:
                await client.append("42", [{"number": "not a number"}])
            except RyngError as exc:
                errors.append(exc)

    async with FakeRyngServer(access_token="another-token") as refusing:
        await attempt(refusing.base_url)  # 403
    for fault in (Fault.ERROR_500, Fault.RATE_LIMIT, Fault.ERROR_TRUE, Fault.BAD_REQUEST):
        plan = FaultPlan(rates={fault: 1.0})
        async with FakeRyngServer(access_token=SECRET, faults=plan) as server:
            await attempt(server.base_url)
    for fault in (Fault.RESET, Fault.DROP, Fault.HANG):
        async with FakeRyngServer(
            access_token=SECRET, faults=FaultPlan(rates={fault: 1.0})
        ) as server:
            await attempt(server.base_url, timeout=0.3)
    with refusing_port() as port:
        await attempt(f"http://127.0.0.1:{port}")  # refused
    async with answering(200, b"<html>maintenance</html>") as base_url:
        await attempt(base_url)  # an unreadable 2xx
    return errors


async def test_errors_and_logs_at_debug_show_no_token(log: pytest.LogCaptureFixture) -> None:
    errors = await collect_errors()
    kinds = {type(error).__name__ for error in errors}
    assert {
        "AuthenticationError",
        "ServerError",
        "RateLimitError",
        "APIError",
        "ConnectError",
        "AmbiguousError",
        "UnreadableResponseError",
        "ValidationError",
    } <= kinds
    for error in errors:
        assert_no_secret_in_error(error)
    assert log.records  # the logs were captured at all
    assert_no_secret_logged(log.records)


# -- a bulk load: events, report, journal, logs ---------------------------------------------

MIXED = FaultPlan(
    seed=3,
    rates={
        Fault.ERROR_500: 0.1,
        Fault.RATE_LIMIT: 0.1,
        Fault.RESET: 0.05,
        Fault.DROP: 0.05,
        Fault.BAD_REQUEST: 0.05,
    },
)


async def mixed_load(tmp_path: Path, *, checkpoint: bool) -> tuple[BulkReport, list[str]]:
    """A load with faults, invalid leads and retries; return its report and its events."""
    events: list[str] = []
    leads: list[dict[str, Any]] = [{"number": n, "customField1": "Asha"} for n in numbers(60)]
    leads[7] = {"number": "0098765"}  # invalid: reported with its value, never logged
    options: dict[str, Any] = {"batch_size": 5, "observers": [lambda e: events.append(repr(e))]}
    if checkpoint:
        options["checkpoint"] = tmp_path / "load.journal"
    async with (
        FakeRyngServer(access_token=SECRET, faults=MIXED) as server,
        client_for(server.base_url, timeout=2.0) as client,
    ):
        report = await client.bulk_append("42", leads, **options)
    return report, events


async def test_a_load_s_events_report_and_logs_show_no_token(
    tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    report, events = await mixed_load(tmp_path, checkpoint=False)
    assert report.failed or report.unknown  # the faults did happen
    shown = [str(report), report.to_json().decode(), repr(report.to_dict())]
    shown += [repr(result) for result in report.batches]
    shown += [repr(report.failed_leads())]
    shown += events
    for text in shown:
        assert SECRET not in text
    for result in report.batches:
        if result.error is not None:
            assert_no_secret_in_error(result.error)
    assert_no_secret_logged(log.records)


def files_in(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (the journal and its side files), read whole."""
    return {path.name: path.read_bytes() for path in directory.rglob("*") if path.is_file()}


async def test_a_checkpoint_journal_holds_no_token(tmp_path: Path) -> None:
    await mixed_load(tmp_path, checkpoint=True)
    contents = files_in(tmp_path)
    assert contents
    for name, content in contents.items():
        assert SECRET.encode() not in content, name


async def test_logs_at_info_carry_counts_and_positions_not_numbers(
    tmp_path: Path, log: pytest.LogCaptureFixture
) -> None:
    await mixed_load(tmp_path, checkpoint=False)
    ours = [r for r in log.records if r.name.startswith("ryng_async") and r.levelno >= logging.INFO]
    assert ours  # retries and the end of the load are logged
    texts = [formatted(record) for record in ours]
    for text in texts:
        for number in [*numbers(60), "0098765"]:
            assert number not in text
        assert "Asha" not in text
    assert any("batch" in text for text in texts)  # batch positions
    assert any("leads read" in text for text in texts)  # counts
