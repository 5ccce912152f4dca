"""``append --max-invalid``, ``--limit`` and the summary's pointers to the journal's commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

CLI = [sys.executable, "-m", "ryng_async"]
TOKEN = "tok-GUARDS-17aa"

pytestmark = pytest.mark.anyio


def env_for(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env["RYNG_BASE_URL"] = base_url
    env["RYNG_ACCESS_TOKEN"] = TOKEN
    return env


async def append(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    with anyio.fail_after(60):
        done = await anyio.run_process([*CLI, "append", "42", *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def sheet(path: Path, rows: int, bad: set[int]) -> Path:
    lines = ["number,name"]
    lines += [f"{'12345' if i in bad else f'+9198{i:08d}'},n{i}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_max_invalid_stops_a_load_before_sending_more(tmp_path: Path) -> None:
    # A file whose numbers are all invalid from row 200 on (a wrong column, say).
    leads = sheet(tmp_path / "leads.csv", 2000, set(range(200, 2000)))
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url)
        common = ["--batch-size", "50", "--concurrency", "1"]
        code, _, err = await append(str(leads), *common, "--max-invalid", "10%", env=env)
        assert code == 1, err
        assert "stopped:" in err
        assert "more than --max-invalid 10.0%" in err
        received = server.lead_count()
        assert 0 < received <= 250  # the 200 valid ones and what was in flight, not 2000
        code, _, err = await append(str(leads), *common, "--max-invalid", "5", env=env)
        assert (code, "6 invalid rows, more than --max-invalid 5" in err) == (1, True), err
        code, out, err = await append(str(leads), "--dry-run", "--max-invalid", "0", env=env)
        assert code == 1
        assert out.count("number: must be E.164") == 1  # stopped at the first invalid row
        assert "more than --max-invalid 0" in err
    bad = await anyio.run_process(
        [*CLI, "append", "42", str(leads), "--max-invalid", "x%"], check=False
    )
    assert bad.returncode == 2
    assert b"expected a number of rows (50) or a share (5%)" in bad.stderr


async def test_limit_reads_only_the_first_rows(tmp_path: Path) -> None:
    leads = sheet(tmp_path / "leads.csv", 500, {7})
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url)
        code, _, err = await append(str(leads), "--limit", "30", "--batch-size", "7", env=env)
        assert code == 1, err  # row 7 is invalid
        assert server.lead_count() == 29
        assert {lead["number"] for lead in server.leads} == {
            f"+9198{i:08d}" for i in range(30) if i != 7
        }
        code, _, err = await append(str(leads), "--limit", "5", "--dry-run", env=env)
        assert code == 0, err
        assert "5 rows read" in err


async def test_the_summary_points_to_the_journal_commands(tmp_path: Path) -> None:
    leads = sheet(tmp_path / "leads.csv", 20, set())
    journal = tmp_path / "load.db"
    faults = FaultPlan(script=[Fault.DROP, Fault.BAD_REQUEST])
    async with FakeRyngServer(access_token=TOKEN, faults=faults) as server:
        code, _, err = await append(
            str(leads), "--checkpoint", str(journal), "--batch-size", "10",
            "--concurrency", "1", "--max-attempts", "1", env=env_for(server.base_url),
        )  # fmt: skip
    assert code == 1
    assert f"ryng-async checkpoint show {journal} --file {leads}" in err
    assert f"checkpoint export {journal} --file {leads} --state unknown" in err
    assert f"checkpoint resolve {journal} --as accepted|not-received" in err
    assert "10 leads failed: running the same command again sends them" in err


async def test_rejects_holds_each_invalid_row_as_read_with_line_and_reason(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    body = (
        b"number;name;note\r\n"
        b'+919800000001;"Doe; A";x\r\n'
        b'12345;"Doe;\r\nB";y\r\n'  # a multi-line cell, an invalid number
        b"\r\n"
        b"+919800000003;C;z\r\n"
        b"+919800000001;E;dup\r\n"  # a duplicate (--dedupe)
        b"98;D;w"  # the last line, with no line break
    )
    leads.write_bytes(body)
    rejects = tmp_path / "rejects.csv"
    async with FakeRyngServer(access_token=TOKEN) as server:
        code, _, err = await append(
            str(leads), "--delimiter", ";", "--dedupe", "--rejects", str(rejects),
            env=env_for(server.base_url),
        )  # fmt: skip
        assert code == 1, err
        assert server.lead_count() == 2
    reason = b"number: must be E.164: '+' then 7 to 15 digits, the first not 0, got "
    assert rejects.read_bytes() == (
        b"number;name;note;line;reason\r\n"
        b'12345;"Doe;\r\nB";y;3;' + reason + b"'12345'\r\n"
        b"+919800000001;E;dup;7;number: duplicate of an earlier lead in this load: "
        b"+919800000001\r\n"
        b"98;D;w;8;" + reason + b"'98'\n"
    )
    refused = await anyio.run_process(
        [*CLI, "append", "42", "-", "--dry-run", "--rejects", str(rejects)],
        input=b"number\n1\n",
        check=False,
    )
    assert refused.returncode == 2
    assert b"--rejects reads the file again" in refused.stderr


async def test_skip_rows_skips_title_lines_and_lines_still_count_them(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_bytes(b"Leads export\r\nfrom the CRM\r\nnumber,name\r\n+919800000001,A\r\n12,B\r\n")
    rejects = tmp_path / "rejects.csv"
    async with FakeRyngServer(access_token=TOKEN) as server:
        env = env_for(server.base_url)
        code, out, err = await append(
            str(leads), "--skip-rows", "2", "--dry-run", "--rejects", str(rejects), env=env
        )
        assert code == 1, err
        assert f"{leads}:5: number: must be E.164" in out
        assert rejects.read_bytes().startswith(b"number,name,line,reason\r\n12,B,5,")
        code, _, err = await append(str(leads), "--skip-rows", "1", "--dry-run", env=env)
        assert (code, "no 'number' column in the header (line 2)" in err) == (2, True), err
        code, _, err = await append(str(leads), "--skip-rows", "9", "--dry-run", env=env)
        assert (code, "--skip-rows 9: it has only 5 lines" in err) == (2, True), err
        code, _, err = await append(str(leads), "--skip-rows", "2", env=env)
        assert code == 1, err
        assert [lead["number"] for lead in server.leads] == ["+919800000001"]
