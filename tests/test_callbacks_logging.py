"""What the receiver logs: every 500 with its cause, an access log, and never the secret.

A full disk must answer 500 with its cause logged, and the secret must not reach the logs,
neither through aiohttp's error log of malformed requests nor through spellings of the path
the access log might not redact. Each such form is sent here as raw bytes, both to
`serve` in-process (records checked through caplog) and to a real ``callbacks serve``
(its stderr checked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_callback_events import CONNECT_EXAMPLE

import ryng_async.callbacks as callbacks
from ryng_async.callbacks import SecretLogFilter, create_app
from ryng_async.callbacks._app import redact

pytestmark = pytest.mark.anyio

SECRET = "s3cret-Token_0123456789abcdef"
ENCODED = "%73" + SECRET[1:]  # the same secret, its first letter percent-encoded
TIMEOUT = 60


def connect_body(call_id: int) -> bytes:
    body = json.loads(CONNECT_EXAMPLE)
    body["callID"] = call_id
    return json.dumps(body).encode()


# Request lines carrying the secret in the forms that once reached the logs.
ACCEPTED = [  # answered 200: aiohttp decodes the path before routing
    f"/%63allbacks/{SECRET}",
    f"/callbacks?s%65cret={SECRET}",
    f"/callbacks?SECRET=x&secret={SECRET}",
    f"/callbacks/{ENCODED}",
]
NOT_FOUND = [
    f"/api/callbacks/{SECRET}",
    f"//callbacks/{SECRET}",
    f"/Callbacks/{SECRET}",
    f"/{SECRET}",
]
MALFORMED = [  # aiohttp cannot parse these and logs "Error handling request"
    f"POST /callbacks/{SECRET}?c=café HTTP/1.1".encode(),
    f"POST /callbacks/{SECRET}?c=a\x01b HTTP/1.1".encode(),
    f"POST /callbacks/{SECRET} HTTP/9.9".encode(),
    f"POST /callbacks/{SECRET}?x={'a' * 9000} HTTP/1.1".encode(),
    f"POST /callbacks/{ENCODED}\x7f HTTP/1.1".encode(),
]


async def send_raw(port: int, request_line: bytes, body: bytes = b"{}") -> bytes:
    """Send one request as raw bytes; return the status line (or b'' if closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            request_line
            + b"\r\nHost: x\r\nConnection: close\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        with anyio.fail_after(TIMEOUT):
            return (await reader.read()).split(b"\r\n", 1)[0]
    finally:
        writer.close()


async def send_every_form(port: int) -> list[bytes]:
    statuses = []
    for number, path in enumerate(ACCEPTED, 1):
        statuses.append(
            await send_raw(port, f"POST {path} HTTP/1.1".encode(), connect_body(number))
        )
    for path in NOT_FOUND:
        statuses.append(await send_raw(port, f"POST {path} HTTP/1.1".encode()))
    for line in MALFORMED:
        statuses.append(await send_raw(port, line))
    return statuses


def check_statuses(statuses: list[bytes]) -> None:
    accepted = len(ACCEPTED)
    found = accepted + len(NOT_FOUND)
    assert all(s.startswith(b"HTTP/1.1 200") for s in statuses[:accepted]), statuses
    assert all(s.startswith(b"HTTP/1.1 404") for s in statuses[accepted:found]), statuses
    assert all(not s.startswith(b"HTTP/1.1 2") for s in statuses[found:]), statuses


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[int]:
    ready: asyncio.Queue[str] = asyncio.Queue()
    task = asyncio.create_task(
        callbacks.serve(
            port=0, store_path=tmp_path / "s.db", secret=SECRET, on_ready=ready.put_nowait
        )
    )
    try:
        url = await asyncio.wait_for(ready.get(), 10)
        yield int(re.findall(r":(\d+)/", url)[0])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_no_spelling_of_the_secret_reaches_a_log_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serving(tmp_path) as port:
        statuses = await send_every_form(port)
    check_statuses(statuses)
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) >= len(ACCEPTED) + len(NOT_FOUND)
    assert any(" 404 " in line and "/callbacks/***" in line for line in access)
    assert any("Error handling request" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = str(record.__dict__) + caplog.text
        assert SECRET not in text
        assert ENCODED not in text
    # The filters come off with serve: nothing of it lingers on aiohttp's loggers.
    assert not logging.getLogger("aiohttp.server").filters


def test_redact_judges_the_decoded_path_and_query() -> None:
    for path in [*ACCEPTED, *NOT_FOUND[:3], f"/callbacks%2F{SECRET}", f"/x/callbacks/{ENCODED}"]:
        redacted = redact(path)
        assert "s3cret" not in redacted, (path, redacted)
        assert "***" in redacted
    assert redact("/healthz?a=1") == "/healthz?a=1"
    assert redact(f"/callbacks?a=1&secret={SECRET}") == "/callbacks?a=1&secret=***"


def test_the_filter_scrubs_message_arguments_and_traceback() -> None:
    secret_filter = SecretLogFilter(SECRET)
    try:
        raise ValueError(f"bad line b'POST /callbacks/{ENCODED} HTTP/1.1'")
    except ValueError:
        record = logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "from %s: %s", ("x", SECRET), None
        )
        record.exc_info = sys.exc_info()
    assert secret_filter.filter(record)
    formatted = logging.Formatter().format(record)
    assert "from x: ***" in formatted
    assert "POST /callbacks/*** HTTP/1.1" in formatted
    assert SECRET not in formatted
    assert ENCODED not in formatted
    assert secret_filter.scrub("no secret here 100%") == "no secret here 100%"


# -- the command: logs to stderr ----------------------------------------------------------


@contextlib.asynccontextmanager
async def command(
    tmp_path: Path, *options: str, fsize: int | None = None
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """Run ``callbacks serve``; yield its port and, once it stopped, its stderr lines."""
    cli = [sys.executable, "-m", "ryng_async", "callbacks", "serve", "--port", "0"]
    cli += ["--store", str(tmp_path / "c.db"), *options]
    if fsize is not None:  # a disk that fills up: writes past fsize bytes fail (EFBIG)
        cli = [
            sys.executable,
            "-c",
            "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
            f"({fsize}, {fsize})); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
            *cli[1:],
        ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "RYNG_CALLBACK_SECRET": SECRET}
    process = await anyio.open_process(
        cli, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    err: list[bytes] = []
    async with process:
        assert process.stdout is not None
        assert process.stderr is not None
        shown = b""
        with anyio.fail_after(TIMEOUT):
            while b"Ctrl-C" not in shown:
                shown += await process.stdout.receive()
        assert SECRET.encode() not in shown
        try:
            yield int(re.findall(rb"http://127\.0\.0\.1:(\d+)/", shown)[0]), err
        finally:
            process.terminate()
            with anyio.fail_after(TIMEOUT):
                err += b"".join([chunk async for chunk in process.stderr]).splitlines()
                await process.wait()


async def test_the_command_logs_each_request_and_never_the_secret(tmp_path: Path) -> None:
    async with command(tmp_path) as (port, err):
        statuses = await send_every_form(port)
    check_statuses(statuses)
    text = b"\n".join(err).decode()
    assert SECRET not in text
    assert ENCODED not in text
    assert re.search(
        r'INFO aiohttp\.access: 127\.0\.0\.1 "POST /callbacks/\*\*\* HTTP/1\.1" 200', text
    )
    assert re.search(r'"POST /api/callbacks/\*\*\* HTTP/1\.1" 404', text)
    assert "Error handling request" in text


async def test_the_command_logs_json_lines_and_can_leave_out_the_access_log(
    tmp_path: Path,
) -> None:
    async with command(tmp_path, "--log-format", "json") as (port, err):
        await send_raw(port, f"POST /callbacks/{SECRET} HTTP/1.1".encode(), CONNECT_EXAMPLE)
    entries = [json.loads(line) for line in err]
    (access,) = [e for e in entries if e["logger"] == "aiohttp.access"]
    assert access["level"] == "INFO"
    assert '"POST /callbacks/*** HTTP/1.1" 200' in access["message"]
    assert set(access) == {"time", "level", "logger", "message"}

    async with command(tmp_path, "--no-access-log") as (port, err):
        await send_raw(port, f"POST /callbacks/{SECRET} HTTP/1.1".encode(), CONNECT_EXAMPLE)
    assert not [line for line in err if b"aiohttp.access" in line]


async def test_a_full_disk_answers_500_and_logs_the_cause(tmp_path: Path) -> None:
    # Under `ulimit -f` the writes fail: each 500 must be logged with its cause (once
    # 2,323 of 3,000 callbacks got 500 and stderr stayed empty).
    statuses: list[bytes] = []
    async with command(tmp_path, "--log-format", "json", fsize=96 * 1024) as (port, err):
        for number in range(1, 400):
            statuses.append(
                await send_raw(
                    port, f"POST /callbacks/{SECRET} HTTP/1.1".encode(), connect_body(number)
                )
            )
            if statuses[-1].startswith(b"HTTP/1.1 500"):
                break
    assert statuses[-1].startswith(b"HTTP/1.1 500"), statuses[-3:]
    entries = [json.loads(line) for line in err]
    (failure,) = [e for e in entries if e["message"].startswith("answered 500")]
    assert failure["level"] == "ERROR"
    assert (
        f"could not store callback ({len(statuses)}, 'connect', 'agent-connected')"
        in (failure["message"])
    )
    assert re.search(r"disk is full|File too large|disk I/O error", failure["message"]), failure
    assert "Traceback" in failure["exception"]
    assert any(
        '" 500 ' in e["message"] or '" 500' in e["message"]
        for e in entries
        if e["logger"] == "aiohttp.access"
    )


async def test_a_store_failure_is_logged_with_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class DiskFull:
        async def add(self, event: Any, raw: bytes) -> bool:
            raise OSError(28, "No space left on device")

        def iter_events(self) -> Any:  # pragma: no cover - not read here
            raise NotImplementedError

        async def aclose(self) -> None:  # pragma: no cover - not closed here
            pass

    from aiohttp.test_utils import TestClient, TestServer

    app = create_app(store=DiskFull())
    async with TestClient(TestServer(app)) as client:
        answer = await client.post("/callbacks", data=CONNECT_EXAMPLE)
        assert answer.status == 500
    (record,) = [r for r in caplog.records if r.name == "ryng_async.callbacks"]
    assert record.getMessage().endswith("so Ryng resends it: [Errno 28] No space left on device")
