"""``ryng-async fake-server`` and ``upload-sheet`` through their real entry point."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.text import TextReceiveStream

from ryng_async import RyngClient
from ryng_async.testing import FakeRyngServer

CLI = [sys.executable, "-m", "ryng_async"]
TOKEN = "tok-SHEET-93b1c0"


def env_for(base_url: str | None = None, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env["PYTHONUNBUFFERED"] = "1"
    if base_url is not None:
        env["RYNG_BASE_URL"] = base_url
    if token is not None:
        env["RYNG_ACCESS_TOKEN"] = token
    return env


@pytest.mark.anyio
async def test_fake_server_serves_then_summarizes_on_sigterm(tmp_path: Path) -> None:
    command = [*CLI, "fake-server", "--port", "0", "--token", "t0k", "--fault-500", "0.5"]
    command += ["--seed", "1", "--latency", "0"]
    with anyio.fail_after(60):
        process = await anyio.open_process(
            command, env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        async with process:
            assert process.stdout is not None
            out = ""
            stream = TextReceiveStream(process.stdout)
            async for text in stream:
                out += text
                if "RYNG_ACCESS_TOKEN" in out:
                    break
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", out)
            assert match is not None, out
            assert "faults: 500 50.0%" in out
            async with RyngClient(base_url=match.group(1), access_token="t0k") as client:
                rows = ({"number": f"+9198{i:08d}"} for i in range(300))
                report = await client.bulk_append("7", rows, batch_size=100)
            assert report.ok
            process.send_signal(signal.SIGTERM)
            out += "".join([text async for text in stream])
            code = await process.wait()
    assert code == 0
    assert "fake Ryng server stopped" in out
    assert "holding 300 leads" in out
    assert re.search(r"faults injected: 500 x \d+", out)
    assert "300 distinct numbers; 0 received more than once; campaigns: 7" in out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault-500", "0.8", "--fault-drop", "0.5"], "add up to 1.3"),
        (["--fault-hang", "2"], "must be between 0 and 1"),
        (["--latency", "-1"], "must be >= 0"),
    ],
)
async def test_fake_server_refuses_bad_options(args: list[str], message: str) -> None:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [*CLI, "fake-server", "--port", "0", *args], check=False, env=env_for()
        )
    assert done.returncode == 2
    assert message in done.stderr.decode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("agents", "sent"), [("a@x.com, b@x.com", "a@x.com,b@x.com"), ("in-file", "in-file")]
)
async def test_upload_sheet(tmp_path: Path, agents: str, sent: str) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("number,name\n+919800000001,Max\n+919800000002,Alex\n")
    async with FakeRyngServer(access_token=TOKEN) as server:
        with anyio.fail_after(60):
            done = await anyio.run_process(
                [*CLI, "upload-sheet", "42", str(sheet), "--agents", agents],
                check=False,
                env=env_for(server.base_url, TOKEN),
            )
        out, err = done.stdout.decode(), done.stderr.decode()
        assert done.returncode == 0, err
        assert TOKEN not in out + err
        assert "Processing Campaign..." in out
        assert server.lead_count() == 2
        assert server.requests[0].form == {"agents": sent}


@pytest.mark.anyio
async def test_upload_sheet_exit_codes(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("number\n+919800000001\n")
    async with FakeRyngServer(access_token="other") as server:
        with anyio.fail_after(60):
            refused = await anyio.run_process(
                [*CLI, "upload-sheet", "42", str(sheet)],
                check=False,
                env=env_for(server.base_url, TOKEN),
            )
            missing = await anyio.run_process(
                [*CLI, "upload-sheet", "42", str(tmp_path / "nope.csv")],
                check=False,
                env=env_for(server.base_url, TOKEN),
            )
    assert refused.returncode == 3
    assert "token was refused" in refused.stderr.decode()
    assert missing.returncode == 2
    assert "no such file" in missing.stderr.decode()
    assert TOKEN not in (refused.stderr + missing.stderr).decode()


@pytest.mark.anyio
async def test_fake_server_record_writes_each_lead_with_its_count(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    command = [*CLI, "fake-server", "--port", "0", "--token", "t0k", "--record", str(record)]
    with anyio.fail_after(60):
        process = await anyio.open_process(
            command, env=env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        async with process:
            assert process.stdout is not None
            out = ""
            stream = TextReceiveStream(process.stdout)
            async for text in stream:
                out += text
                if "RYNG_ACCESS_TOKEN" in out:
                    break
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", out)
            assert match is not None, out
            async with RyngClient(base_url=match.group(1), access_token="t0k") as client:
                rows = [{"number": f"+9198{i:08d}"} for i in range(25)]
                assert (await client.bulk_append("7", rows, batch_size=10)).ok
                assert (await client.bulk_append("8", rows[:3], batch_size=10)).ok
                assert (await client.bulk_append("7", rows[:1], batch_size=10)).ok  # again
            process.send_signal(signal.SIGTERM)
            out += "".join([text async for text in stream])
            code = await process.wait()
    assert code == 0, out
    assert f"28 distinct leads written to {record}" in out
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines[0] == {"campaign_id": "7", "count": 2, "lead": {"number": "+919800000000"}}
    assert [(x["campaign_id"], x["lead"]["number"], x["count"]) for x in lines[1:]] == [
        *(("7", f"+9198{i:08d}", 1) for i in range(1, 25)),
        *(("8", f"+9198{i:08d}", 1) for i in range(3)),
    ]


def test_fake_server_record_refuses_no_record() -> None:
    command = [*CLI, "fake-server", "--record", "x.jsonl", "--no-record"]
    run = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, env=env_for(), capture_output=True, check=False, timeout=60
    )
    assert run.returncode == 2
    assert b"--record needs the leads" in run.stderr


@pytest.mark.anyio
async def test_upload_sheet_checks_the_sheet_before_sending(tmp_path: Path) -> None:
    # The sheet is read as append reads a CSV; a bad sheet is refused, nothing sent.
    good = b"number;name\n+919800000001;Max\n+919800000002;Alex\n"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"number,name\n+919800000001,Max\n12345,Alex\n\n98,Kim\n")
    zipped = tmp_path / "sheet.csv.gz"
    zipped.write_bytes(gzip.compress(good))
    semicolons = tmp_path / "semi.csv"
    semicolons.write_bytes(good)
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url, TOKEN)

        async def upload(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
            with anyio.fail_after(60):
                done = await anyio.run_process(
                    [*CLI, "upload-sheet", "42", *args], input=stdin, check=False, env=env
                )
            return done.returncode, done.stdout.decode(), done.stderr.decode()

        code, _, err = await upload(str(bad))
        assert code == 1, err
        assert "2 of 3 rows of" in err
        assert "line 3: number: must be E.164" in err
        assert "line 5: number: must be E.164" in err
        code, _, err = await upload(str(zipped))
        assert (code, "is not a CSV sheet: it is gzip-compressed" in err) == (2, True)
        code, _, err = await upload(str(semicolons))  # read with a comma: no number column
        assert (code, "no 'number' column" in err) == (2, True)
        code, out, err = await upload(str(semicolons), "--delimiter", ";", "--dry-run")
        assert (code, "2 rows, every one valid (dry run: nothing sent)" in out) == (0, True), err
        assert server.received_requests == 0
        code, out, err = await upload("-", "--delimiter", ";", stdin=good)
        assert code == 0, err
        assert server.lead_count() == 2
        assert server.requests[0].form is not None


@pytest.mark.anyio
async def test_upload_sheet_default_region_sends_numbers_in_e164(tmp_path: Path) -> None:
    pytest.importorskip("phonenumbers")
    sheet = tmp_path / "leads.csv"
    sheet.write_bytes(b"name;number\r\nMax;098765 43210\r\n\r\nAlex;+91 79947 71185\r\n")
    spool = tmp_path / "tmp"  # where the normalized copy is written, then removed
    spool.mkdir()
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = {**env_for(server.base_url, TOKEN), "TMPDIR": str(spool)}

        async def upload(*args: str) -> tuple[int, str, str]:
            with anyio.fail_after(60):
                done = await anyio.run_process(
                    [*CLI, "upload-sheet", "42", str(sheet), "--delimiter", ";", *args],
                    check=False,
                    env=env,
                )
            return done.returncode, done.stdout.decode(), done.stderr.decode()

        code, _, err = await upload()  # national numbers are not E.164: refused
        assert (code, "line 2: number: must be E.164" in err) == (1, True), err
        code, _, err = await upload("--default-region", "XX")
        assert (code, "'XX' is not a region libphonenumber knows" in err) == (2, True), err
        assert server.received_requests == 0
        code, out, err = await upload("--default-region", "IN")
        assert code == 0, err
        assert "uploaded" in out
        (received,) = server.requests
        assert received.sheet == (b"name;number\r\nMax;+919876543210\r\n\r\nAlex;+917994771185\r\n")
        assert server.lead_count() == 2
    assert list(spool.iterdir()) == []


@pytest.mark.anyio
async def test_upload_sheet_sends_numbers_trimmed_as_append_reads_them(tmp_path: Path) -> None:
    # The check trims spaces around a number (as append does): what is sent must be
    # trimmed too. A copy keeps the BOM, delimiter, line ending and other cells.
    padded = tmp_path / "padded.csv"
    padded.write_bytes(
        b"\xef\xbb\xbfname;number;note\n"
        b'Max; +919800000001 ;" keep me "\n'
        b"\n"
        b"Alex;+919800000002;x\n"
        b"Kim;\t+919800000003;\n"
    )
    # Needs no change: sent byte for byte (a copy would drop the needless quotes).
    clean = tmp_path / "clean.csv"
    clean.write_bytes(b'number,"name"\r\n"+919800000001", Max \r\n')
    spool = tmp_path / "tmp"
    spool.mkdir()
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = {**env_for(server.base_url, TOKEN), "TMPDIR": str(spool)}

        async def upload(*args: str) -> tuple[int, str, str]:
            with anyio.fail_after(60):
                done = await anyio.run_process(
                    [*CLI, "upload-sheet", "42", *args], check=False, env=env
                )
            return done.returncode, done.stdout.decode(), done.stderr.decode()

        code, out, err = await upload(str(padded), "--delimiter", ";")
        assert code == 0, err
        assert f"{padded}: 2 numbers have spaces around them: sending a copy" in out
        code, out, err = await upload(str(clean))
        assert code == 0, err
        assert "spaces" not in out + err
        first, second = server.requests
    assert first.sheet == (
        b"\xef\xbb\xbfname;number;note\n"
        b"Max;+919800000001; keep me \n"
        b"\n"
        b"Alex;+919800000002;x\n"
        b"Kim;+919800000003;\n"
    )
    assert second.sheet == clean.read_bytes()
    assert list(spool.iterdir()) == []
