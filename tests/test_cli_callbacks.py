"""``ryng-async callbacks serve|export`` and ``reconcile``, through the real entry point."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from anyio.streams.text import TextReceiveStream
from test_callback_events import CONNECT_EXAMPLE, TERMINAL_EXAMPLE
from test_callbacks_reconcile import callback

from ryng_async.testing import FakeRyngServer

TOKEN = "tok-SECRET-cb-1d2e3f"
SECRET = "s3cr3t-callback-path-0123456789"
CLI = [sys.executable, "-m", "ryng_async"]
TIMEOUT = 60

pytestmark = pytest.mark.anyio


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    return {**clean, "PYTHONUNBUFFERED": "1", **extra}


async def run_cli(*args: str | Path, **extra: str) -> tuple[int, str, str]:
    with anyio.fail_after(TIMEOUT):
        done = await anyio.run_process([*CLI, *map(str, args)], check=False, env=env(**extra))
    out, err = done.stdout.decode(), done.stderr.decode()
    assert TOKEN not in out + err
    assert SECRET not in out + err
    return done.returncode, out, err


async def test_serve_stores_what_ryng_posts_and_export_reads_it_back(tmp_path: Path) -> None:
    store = tmp_path / "callbacks.db"
    command = [*CLI, "callbacks", "serve", "--port", "0", "--store", str(store)]
    with anyio.fail_after(TIMEOUT):
        process = await anyio.open_process(
            command,
            env=env(RYNG_CALLBACK_SECRET=SECRET),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with process:
            assert process.stdout is not None
            shown = ""
            async for text in TextReceiveStream(process.stdout):
                shown += text
                if "Give Ryng:" in shown and "\n" in shown.split("Give Ryng:")[1]:
                    break
            match = re.search(r"Give Ryng: (http://\S+)/callbacks/<secret>", shown)
            assert match is not None, shown
            url = f"{match.group(1)}/callbacks/{SECRET}"
            async with aiohttp.ClientSession() as session:
                for body in (CONNECT_EXAMPLE, TERMINAL_EXAMPLE, TERMINAL_EXAMPLE):
                    async with session.post(url, data=body) as response:
                        assert response.status == 200
                async with session.post(
                    url.replace(SECRET, "wrong-secret-xxxxxxxx"), data=b"{}"
                ) as response:
                    assert response.status == 403
            process.terminate()
            rest = "".join([text async for text in TextReceiveStream(process.stdout)])
            await process.wait()
    assert SECRET not in shown + rest
    code, out, err = await run_cli("callbacks", "export", "--store", store, "--format", "jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["callback_type"] for line in lines] == ["connect", "terminal"]  # resend once
    assert "exported 2 callbacks" in err
    code, out, _ = await run_cli("callbacks", "export", "--store", store, "--format", "csv")
    assert code == 0
    assert len(list(csv.DictReader(io.StringIO(out)))) == 2


async def test_export_of_a_missing_store_exits_2(tmp_path: Path) -> None:
    code, _, err = await run_cli("callbacks", "export", "--store", tmp_path / "none.db")
    assert code == 2
    assert "no such store" in err


async def test_reconcile_tells_what_became_of_each_lead(tmp_path: Path) -> None:
    from ryng_async.callbacks import SQLiteCallbackStore

    rows: list[dict[str, Any]] = [
        {"number": f"+9198{i:08d}", "customField1": f"name {i}", "customField3": f"crm-{i}"}
        for i in range(30)
    ]
    data = tmp_path / "leads.csv"
    data.write_text(
        "number,name,crm\n"
        + "".join(f"{r['number']},{r['customField1']},{r['customField3']}\n" for r in rows)
    )
    # The CSV's columns become customField1 (name) and customField2 (crm).
    for row in rows:
        row["customField2"] = row.pop("customField3")
    report = tmp_path / "load.json"
    async with FakeRyngServer(access_token=TOKEN) as server:
        code, _, err = await run_cli(
            "append",
            "42",
            data,
            "--report",
            report,
            RYNG_BASE_URL=server.base_url,
            RYNG_ACCESS_TOKEN=TOKEN,
        )
        assert code == 0, err
    store = await SQLiteCallbackStore(tmp_path / "callbacks.db").open()
    try:
        for i, row in enumerate(rows[:10]):
            lead = {
                "number": row["number"],
                "customField1": row["customField1"],
                "customField3": row["customField2"],
            }
            body = callback("terminal", 1000 + i, lead)
            await store.add(_parse(body), body)
    finally:
        await store.aclose()
    out = tmp_path / "status.csv"
    code, _, err = await run_cli(
        "reconcile",
        data,
        "--report",
        report,
        "--store",
        tmp_path / "callbacks.db",
        "--out",
        out,
    )
    assert code == 0, err
    statuses = [line["status"] for line in csv.DictReader(io.StringIO(out.read_text()))]
    assert len(statuses) == 30
    assert statuses.count("ended") == 10
    assert "ended" in err

    # --key by the CSV column's name, as sent (customField1), or neither.
    for key in ("Name", "customField1"):
        code, _, err = await run_cli(
            "reconcile", data, "--report", report, "--store", tmp_path / "callbacks.db",
            "--out", out, "--key", key,
        )  # fmt: skip
        assert code == 0, err
        assert "matched by customField1; 10 callbacks read" in err
        statuses = [line["status"] for line in csv.DictReader(io.StringIO(out.read_text()))]
        assert statuses.count("ended") == 10
    code, _, err = await run_cli(
        "reconcile", data, "--report", report, "--store", tmp_path / "callbacks.db",
        "--key", "crm_id",
    )  # fmt: skip
    assert code == 2
    assert "--key 'crm_id' is no column of the file (its columns: 'number', 'name', 'crm')" in err


async def test_reconcile_reads_national_numbers_as_the_load_normalized_them(
    tmp_path: Path,
) -> None:
    from ryng_async.callbacks import SQLiteCallbackStore

    national = [f"098{i:08d}" for i in range(6)]  # as a CRM export holds them
    data = tmp_path / "leads.csv"
    data.write_text("number\n" + "".join(f"{n}\n" for n in national))
    report = tmp_path / "load.json"
    async with FakeRyngServer(access_token=TOKEN) as server:
        code, _, err = await run_cli(
            "append",
            "42",
            data,
            "--default-region",
            "IN",
            "--report",
            report,
            RYNG_BASE_URL=server.base_url,
            RYNG_ACCESS_TOKEN=TOKEN,
        )
        assert code == 0, err
        sent = [lead["number"] for lead in server.leads]
    assert sent == [f"+9198{i:08d}" for i in range(6)]
    store = await SQLiteCallbackStore(tmp_path / "callbacks.db").open()
    try:
        for i, number in enumerate(sent):  # Ryng calls back with the number it was sent
            lead = {"number": number, "customField1": "", "customField3": ""}
            body = callback("terminal", 2000 + i, lead)
            await store.add(_parse(body), body)
    finally:
        await store.aclose()

    async def statuses(*extra: str) -> list[str]:
        out = tmp_path / "status.csv"
        code, _, err = await run_cli(
            "reconcile", data, "--report", report, "--store", tmp_path / "callbacks.db",
            "--out", out, *extra,
        )  # fmt: skip
        assert code == 0, err
        return [line["status"] for line in csv.DictReader(io.StringIO(out.read_text()))]

    assert set(await statuses("--default-region", "IN")) == {"ended"}
    assert "ended" not in await statuses()  # read as written, the numbers match nothing


def _parse(body: bytes) -> Any:
    from ryng_async import parse_callback

    return parse_callback(body)


async def test_reconcile_takes_each_shards_report_or_journal(tmp_path: Path) -> None:
    from ryng_async.callbacks import SQLiteCallbackStore

    numbers = [f"+9198{i:08d}" for i in range(23)]
    numbers[4] = "12345"  # an invalid row: shard 0's first batch is rows 0-3 and 5
    data = tmp_path / "leads.csv"
    data.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    reports = [tmp_path / f"shard{i}.json" for i in range(2)]
    journals = [tmp_path / f"shard{i}.db" for i in range(2)]
    async with FakeRyngServer(access_token=TOKEN) as server:
        for i in range(2):
            code, _, err = await run_cli(
                "append", "42", data, "--batch-size", "6", "--shard", f"{i}/2",
                "--report", reports[i], "--checkpoint", journals[i],
                RYNG_BASE_URL=server.base_url, RYNG_ACCESS_TOKEN=TOKEN,
            )  # fmt: skip
            assert code == (1 if i == 0 else 0), err  # shard 0 has the invalid row
    store = await SQLiteCallbackStore(tmp_path / "callbacks.db").open()
    await store.aclose()
    for given, outside in ((reports, "invalid"), (journals, "skipped")):
        out = tmp_path / "status.csv"
        args: list[str | Path] = []
        for path in given:
            args += ["--report", path]
        code, _, err = await run_cli(
            "reconcile", data, *args, "--store", tmp_path / "callbacks.db", "--out", out
        )
        assert code == 0, err
        loads = [line["load"] for line in csv.DictReader(io.StringIO(out.read_text()))]
        assert loads == [outside if i == 4 else "accepted" for i in range(23)]


async def _serve_until_ready(
    store: Path, *options: str, terminal: tuple[int, int] | None = None, **extra: str
) -> tuple[str, str]:
    """Start ``callbacks serve``, read its stdout (a pipe, or a pseudo-terminal given as
    leader and follower) to its last ready line, stop it; return that and its stderr."""
    command = [*CLI, "callbacks", "serve", "--port", "0", "--store", str(store), *options]
    with anyio.fail_after(TIMEOUT):
        process = await anyio.open_process(
            command,
            env=env(**extra),
            stdout=subprocess.PIPE if terminal is None else terminal[1],
            stderr=subprocess.PIPE,
        )
        async with process:
            assert process.stderr is not None
            shown = ""
            while "Ctrl-C" not in shown:
                if process.stdout is not None:
                    shown += (await process.stdout.receive()).decode()
                else:
                    assert terminal is not None
                    readable = asyncio.Event()
                    loop = asyncio.get_running_loop()
                    loop.add_reader(terminal[0], readable.set)
                    try:
                        await readable.wait()
                    finally:
                        loop.remove_reader(terminal[0])
                    shown += os.read(terminal[0], 65536).decode()
            process.terminate()
            err = "".join([text async for text in TextReceiveStream(process.stderr)])
            await process.wait()
    return shown, err


async def test_the_secret_may_come_from_a_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    shown, err = await _serve_until_ready(tmp_path / "c.db", "--secret-file", str(secret_file))
    assert "/callbacks/<secret>" in shown
    assert SECRET not in shown + err

    code, _, err = await run_cli(
        "callbacks", "serve", "--port", "0", "--secret-file", tmp_path / "none"
    )
    assert code == 2
    assert "cannot read --secret-file" in err
    code, _, err = await run_cli(
        "callbacks", "serve", "--secret-file", secret_file, "--secret", SECRET
    )
    assert code == 2
    assert "not allowed with argument" in err


async def test_show_url_prints_the_secret_to_a_terminal_only(tmp_path: Path) -> None:
    shown, err = await _serve_until_ready(
        tmp_path / "c.db", "--show-url", RYNG_CALLBACK_SECRET=SECRET
    )
    assert SECRET not in shown + err  # a pipe is not a terminal: the URL stays hidden
    assert "shown on a terminal only" in err

    import pty

    leader, follower = pty.openpty()
    try:
        shown, err = await _serve_until_ready(
            tmp_path / "c.db",
            "--show-url",
            terminal=(leader, follower),
            RYNG_CALLBACK_SECRET=SECRET,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert re.search(rf"that is: http://127\.0\.0\.1:\d+/callbacks/{SECRET}", shown)
    assert SECRET not in err  # never into the logs
