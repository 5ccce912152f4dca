"""``ryng-async append`` through its real entry point, a subprocess, against a fake server.

Every run goes through `run_cli`, which also checks that the access token never appears
in what the command prints.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

TOKEN = "tok-SECRET-7f3a9c41d2"  # distinctive: grepped for in every output
CLI = [sys.executable, "-m", "ryng_async"]
TIMEOUT = 60


@dataclass
class Run:
    code: int
    out: str
    err: str


def cli_env(server: FakeRyngServer | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env["PYTHONUNBUFFERED"] = "1"
    if server is not None:
        env["RYNG_BASE_URL"] = server.base_url
        env["RYNG_ACCESS_TOKEN"] = TOKEN
    env.update(extra)
    return env


def assert_no_token(*outputs: str) -> None:
    """The token is in no output of a CLI run (every run's output goes through here)."""
    for output in outputs:
        assert TOKEN not in output


async def run_cli(
    *args: str | Path,
    server: FakeRyngServer | None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Run:
    with anyio.fail_after(TIMEOUT):
        done = await anyio.run_process(
            [*CLI, *map(str, args)],
            input=stdin,
            check=False,
            env=dict(env) if env is not None else cli_env(server),
            cwd=cwd,
        )
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert_no_token(run.out, run.err)
    return run


@pytest.fixture
async def server() -> AsyncIterator[FakeRyngServer]:
    async with FakeRyngServer(access_token=TOKEN) as fake:
        yield fake


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def csv_rows(count: int, start: int = 0) -> str:
    return "".join(f"+9198{i:08d},Customer {i},Pune\n" for i in range(start, start + count))


# -- exit codes ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_lead_accepted_exits_0(server: FakeRyngServer, tmp_path: Path) -> None:
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(1200))
    run = await run_cli("append", "42", data, "--batch-size", "500", server=server)
    assert run.code == 0, run.err
    assert "every lead accepted (exit 0)" in run.out
    assert "accepted 1,200" in run.out
    assert server.lead_count() == 1200
    request = server.requests[0].request
    assert request is not None
    assert request.custom_field_names == {"customField1Name": "name", "customField2Name": "city"}
    assert server.leads[0] == {
        "number": "+919800000000",
        "customField1": "Customer 0",
        "customField2": "Pune",
    }


@pytest.mark.anyio
async def test_invalid_rows_exit_1_with_their_lines_and_the_rest_loaded(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    text = "number,name\n+919800000001,a\n12345,b\n+919800000003,c\n"
    data = write(tmp_path / "leads.csv", text)
    run = await run_cli("append", "42", data, server=server)
    assert run.code == 1
    assert f"{data}:3: number: must be E.164" in run.err
    assert server.lead_count() == 2


@pytest.mark.anyio
async def test_failed_batches_exit_1(tmp_path: Path) -> None:
    plan = FaultPlan(rates={Fault.BAD_REQUEST: 1.0})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        data = write(tmp_path / "leads.csv", "number\n+919800000001\n")
        run = await run_cli("append", "42", data, server=server)
    assert run.code == 1
    assert re.search(r"failed\s+1\b", run.out), run.out
    assert "1 batch failed: HTTP 400" in run.out  # why, not only how many


@pytest.mark.anyio
async def test_the_summary_says_why_batches_failed_and_what_was_resumed(tmp_path: Path) -> None:
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(40))
    journal = tmp_path / "load.db"
    plan = FaultPlan(seed=1, rates={Fault.ERROR_500: 0.5})
    common = ["--batch-size", "10", "--max-attempts", "1", "--checkpoint", journal]
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        first = await run_cli("append", "42", data, *common, server=server)
        assert first.code == 1
        assert "failed: HTTP 500" in first.out
        server.faults = FaultPlan()
        again = await run_cli("append", "42", data, *common, server=server)
    assert again.code == 0, again.out + again.err
    assert "resumed from the checkpoint" in again.out


@pytest.mark.anyio
async def test_refused_token_exits_3(tmp_path: Path) -> None:
    async with FakeRyngServer(access_token="another-token") as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(10))
        run = await run_cli("append", "42", data, server=server)
    assert run.code == 3
    assert "token was refused" in run.err
    # Said once on stderr (the error line) and once in the summary, not again as a warning.
    assert run.err.count("token was refused") == 1
    assert "stopped early: 403: the access token was refused" in run.out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["append", "42", "missing.csv"], {}, "missing.csv: cannot open"),
        (["append", "42", "leads.xml"], {}, "cannot tell the format"),
        (["append", "42", "leads.csv"], {"RYNG_ACCESS_TOKEN": ""}, "no access token"),
        (["append", "42", "leads.csv", "--batch-size", "0"], {}, "must be >= 1"),
        (["append", "42", "leads.csv"], {"RYNG_BATCH_SIZE": "many"}, "RYNG_BATCH_SIZE='many'"),
        (["append", "42", "leads.csv", "--agent-mapping", "global"], {}, "agents"),
        (["append", "42", "leads.csv", "--token-file", "nope"], {}, "cannot read the token file"),
        (["append", "42", "leads.csv", "--default-region", "XX"], {}, "'XX' is not a region"),
        (["append", "42", "leads.csv", "--report", "no/such/dir/r.json"], {}, "--report"),
        (["append", "42", "leads.csv", "--custom-field-names", "{x"], {}, "not valid JSON"),
    ],
)
async def test_usage_and_configuration_errors_exit_2(
    server: FakeRyngServer,
    tmp_path: Path,
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    write(tmp_path / "leads.csv", "number\n+919800000001\n")
    write(tmp_path / "leads.xml", "<leads/>")
    run = await run_cli(*args, server=server, env=cli_env(server, **env), cwd=tmp_path)
    assert run.code == 2, run.err
    assert message in run.err
    assert server.received_requests == 0


@pytest.mark.anyio
async def test_token_file_is_read_and_never_printed(server: FakeRyngServer, tmp_path: Path) -> None:
    token_file = write(tmp_path / "token", TOKEN + "\n")
    data = write(tmp_path / "leads.csv", "number\n+919800000001\n")
    env = cli_env(server, RYNG_ACCESS_TOKEN="")
    run = await run_cli("append", "42", data, "--token-file", token_file, server=None, env=env)
    assert run.code == 0, run.err
    assert server.lead_count() == 1


# -- dry run -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dry_run_lists_invalid_rows_by_line_and_sends_nothing(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    text = (
        "number,name\n"
        "+919800000001,a\n"
        "\n"
        '+919800000002,"two\nlines"\n'
        "0800,b\n"
        "+919800000004,c,extra\n"
    )
    data = write(tmp_path / "leads.csv", text)
    report = tmp_path / "dry.json"
    run = await run_cli("append", "42", data, "--dry-run", "--report", report, server=server)
    assert run.code == 1
    assert run.out.splitlines() == [
        f"{data}:6: number: must be E.164: '+' then 7 to 15 digits, the first not 0, got '0800'",
        f"{data}:7: the row has 3 columns where the header has 2",
    ]
    assert "4 rows read" in run.err
    assert "2 valid, 2 invalid; nothing was sent" in run.err
    assert server.received_requests == 0
    document = json.loads(report.read_text())
    assert [row["line"] for row in document["invalid_leads"]] == [6, 7]


@pytest.mark.anyio
async def test_dry_run_of_a_valid_file_exits_0_without_a_token(tmp_path: Path) -> None:
    data = write(tmp_path / "leads.jsonl", '{"number": "+919800000001"}\n')
    run = await run_cli("append", "42", data, "--dry-run", server=None)
    assert run.code == 0, run.err
    assert "1 valid, 0 invalid" in run.err


@pytest.mark.anyio
async def test_dry_run_with_a_bad_campaign_option_exits_2_naming_it(tmp_path: Path) -> None:
    # The check of the campaign options comes before any row is read: its error is a
    # usage error naming the option, not a crash of the dry run's own clean-up.
    data = write(tmp_path / "leads.csv", "number\n+919800000001\n")
    url = "ftp://example.com/calls"
    run = await run_cli(
        "append", "42", data, "--dry-run", "--terminal-callback-url", url, server=None
    )
    assert run.code == 2, run.err
    assert "terminalCallbackUrl: must be an absolute http(s) URL" in run.err
    assert "Traceback" not in run.err


# -- CSV oddities --------------------------------------------------------------------


@pytest.mark.anyio
async def test_csv_oddities_are_read_right(server: FakeRyngServer, tmp_path: Path) -> None:
    text = (
        "\ufeffNumber , Name,agentsAssigned,City\r\n"  # a BOM, spaces, CRLF endings
        '+919800000001,"Max, Jr.",a@x.com;b@x.com,"Pune\r\nMH"\r\n'
        "\r\n"
        "+919800000002,Alex,c@x.com | d@x.com,Delhi\r\n"
        "+919800000003,Too,,Many,Cells\r\n"
        "+919800000004,Short\r\n"
        "+919800000005,Trailing,,Goa,\r\n"  # a trailing comma: an empty extra cell
        ",,,\r\n"
    )
    data = write(tmp_path / "odd.csv", text)
    report_path = tmp_path / "report.json"
    run = await run_cli("append", "42", data, "--report", report_path, server=server)
    assert run.code == 1, run.err
    assert f"{data}:6: the row has 5 columns where the header has 4" in run.err
    assert f"{data}:7: the row has 2 columns where the header has 4" in run.err
    assert server.leads == [
        {
            "number": "+919800000001",
            "customField1": "Max, Jr.",
            "agentsAssigned": ["a@x.com", "b@x.com"],
            "customField2": "Pune\r\nMH",
        },
        {
            "number": "+919800000002",
            "customField1": "Alex",
            "agentsAssigned": ["c@x.com", "d@x.com"],
            "customField2": "Delhi",
        },
        {"number": "+919800000005", "customField1": "Trailing", "customField2": "Goa"},
    ]
    request = server.requests[0].request
    assert request is not None
    assert request.agent_mapping == "inline"  # the file has an agents column
    assert request.custom_field_names == {"customField1Name": "Name", "customField2Name": "City"}
    document = json.loads(report_path.read_text())
    assert document["input"]["blank_rows"] == 2  # the empty line and ",,,"
    assert document["total"] == 5


@pytest.mark.anyio
async def test_non_utf8_csv_names_line_and_byte_and_encoding_reads_it(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "latin.csv", b"number,name\n+919800000001,ok\n+919800000002,caf\xe9\n")
    run = await run_cli("append", "42", data, server=server)
    assert run.code == 2
    assert "line 3, byte 46" in run.err
    assert "--encoding" in run.err
    run = await run_cli("append", "42", data, "--encoding", "latin-1", server=server)
    assert run.code == 0, run.err
    assert server.leads[-1]["customField1"] == "café"


@pytest.mark.anyio
async def test_a_bad_byte_mid_file_stops_the_load_with_exit_2_and_a_report(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(
        tmp_path / "leads.csv",
        ("number,name,city\n" + csv_rows(30_000)).encode() + b"+919800099999,\xff,x\n",
    )
    report_path = tmp_path / "report.json"
    run = await run_cli("append", "42", data, "--report", report_path, server=server)
    assert run.code == 2
    assert "line 30002, byte" in run.err
    document = json.loads(report_path.read_text())
    assert document["ended"] == "input error"
    assert document["stopped_early"] is True
    assert document["accepted"] == server.lead_count() > 0


@pytest.mark.anyio
async def test_header_without_the_number_column_exits_2_listing_the_headers(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "leads.csv", "phone,name\n+919800000001,a\n")
    run = await run_cli("append", "42", data, server=server)
    assert run.code == 2
    assert "no 'number' column" in run.err
    assert "'phone', 'name'" in run.err
    run = await run_cli("append", "42", data, "--number-column", "Phone", server=server)
    assert run.code == 0, run.err


@pytest.mark.anyio
async def test_custom_field_names_override(server: FakeRyngServer, tmp_path: Path) -> None:
    data = write(tmp_path / "leads.csv", "number,n,c\n+919800000001,a,b\n")
    run = await run_cli("append", "42", data, "--custom-field-names", "Name,City", server=server)
    assert run.code == 0, run.err
    request = server.requests[0].request
    assert request is not None
    assert request.custom_field_names == {"customField1Name": "Name", "customField2Name": "City"}


@pytest.mark.anyio
async def test_columns_and_exclude_columns_choose_the_custom_fields(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "leads.csv", "Name,number,City,Notes\nMax,+919800000001,Pune,vip\n")
    run = await run_cli("append", "42", data, "--columns", "notes, NUMBER", server=server)
    assert run.code == 0, run.err
    run = await run_cli("append", "43", data, "--exclude-columns", "name", server=server)
    assert run.code == 0, run.err
    bodies = [r.request for r in server.requests]
    assert [b.custom_field_names if b else None for b in bodies] == [
        {"customField1Name": "Notes"},
        {"customField1Name": "City", "customField2Name": "Notes"},
    ]
    assert server.leads_for("42") == [{"number": "+919800000001", "customField1": "vip"}]
    assert server.leads_for("43") == [
        {"number": "+919800000001", "customField1": "Pune", "customField2": "vip"}
    ]
    unknown = await run_cli("append", "44", data, "--columns", "City,Phone", server=server)
    assert unknown.code == 2
    assert (
        f"{data}: --columns names 'Phone': no such column in the header (line 1); the "
        "columns are: 'Name', 'number', 'City', 'Notes'"
    ) in unknown.err
    number = await run_cli("append", "44", data, "--exclude-columns", "Number", server=server)
    assert number.code == 2
    assert "--exclude-columns names 'number', the number column: it is always sent" in number.err
    both = await run_cli(
        "append", "44", data, "--columns", "City", "--exclude-columns", "Notes", server=server
    )
    assert both.code == 2
    assert "--exclude-columns: not allowed with argument --columns" in both.err
    assert server.received_requests == 2


@pytest.mark.anyio
async def test_spaces_around_a_number_are_dropped_and_other_cells_sent_as_read(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(
        tmp_path / "leads.csv",
        "number,Name\n +919800000001 , Max \n\t+919800000002\xa0,Alex\n+919800000003,Sam\n",
    )
    run = await run_cli("append", "42", data, server=server)
    assert run.code == 0, run.err
    assert server.leads == [
        {"number": "+919800000001", "customField1": " Max "},
        {"number": "+919800000002", "customField1": "Alex"},
        {"number": "+919800000003", "customField1": "Sam"},
    ]
    body = server.requests[0].body
    assert b'"number":"+919800000001","customField1":" Max "' in body


@pytest.mark.anyio
async def test_spaces_around_a_json_lines_number_are_dropped_as_in_a_csv(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(
        tmp_path / "leads.jsonl",
        '{"number": " +919800000001 ", "customField1": " Max "}\n'
        '{"number": "\\t+919800000002\\u00a0", "customField1": "Alex"}\n'
        '{"number": "\u3000+919800000003\\u001c", "customField1": "Sam"}\n'
        '{"number": "+919800000004", "customField1": "Ann"}\n',
    )
    run = await run_cli("append", "42", data, server=server)
    assert run.code == 0, run.err
    assert "every lead accepted (exit 0)" in run.out
    assert "accepted 4" in run.out
    assert server.leads == [
        {"number": "+919800000001", "customField1": " Max "},
        {"number": "+919800000002", "customField1": "Alex"},
        {"number": "+919800000003", "customField1": "Sam"},
        {"number": "+919800000004", "customField1": "Ann"},
    ]
    usage = await run_cli("append", "--help", server=None)
    assert "wire form (spaces around its number dropped)" in " ".join(usage.out.split())


@pytest.mark.anyio
async def test_encoding_errors_strict_names_the_line_and_replace_keeps_the_row(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(
        tmp_path / "leads.csv",
        b"number,Name\n+919800000001,Max\n+919800000002,Ren\xe9e\n+919800000003,Sam\n",
    )
    strict = await run_cli("append", "42", data, "--dry-run", server=server)
    assert strict.code == 2
    assert "line 3, byte 47 (" in strict.err
    assert "not valid utf-8" in strict.err
    assert "--encoding" in strict.err
    run = await run_cli("append", "42", data, "--encoding-errors", "replace", server=server)
    assert run.code == 0, run.err
    assert [lead["customField1"] for lead in server.leads] == ["Max", "Ren\ufffde", "Sam"]
    bad = await run_cli("append", "42", data, "--encoding-errors", "ignore", server=server)
    assert bad.code == 2
    assert "invalid choice: 'ignore' (choose from" in bad.err


# -- JSON Lines, stdin, the report ----------------------------------------------------


@pytest.mark.anyio
async def test_json_lines_with_bad_lines(server: FakeRyngServer, tmp_path: Path) -> None:
    text = (
        '{"number": "+919800000001", "agentsAssigned": ["a@x.com"], "customField1": "x"}\n'
        "\n"
        '{"number": 919800000002}\n'
        "not json\n"
        '{"number": "+919800000004"}\n'
    )
    data = write(tmp_path / "leads.ndjson", text)
    run = await run_cli("append", "42", data, "--agent-mapping", "inline", server=server)
    assert run.code == 1
    assert f"{data}:3: number: must be E.164" in run.err
    assert f"{data}:4: not valid JSON" in run.err
    assert [lead["number"] for lead in server.leads] == ["+919800000001", "+919800000004"]


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
async def test_stdin_input(server: FakeRyngServer, fmt: str) -> None:
    if fmt == "csv":
        text = "number,name\n+919800000001,a\n+919800000002,b\n"
    else:
        text = '{"number": "+919800000001"}\n{"number": "+919800000002"}\n'
    run = await run_cli("append", "42", "-", server=server, stdin=text.encode())
    assert run.code == 0, run.err
    assert server.lead_count() == 2
    assert f"loading <stdin> ({fmt})" in run.err


@pytest.mark.anyio
async def test_report_file_accounts_for_every_row(tmp_path: Path) -> None:
    plan = FaultPlan(seed=3, rates={Fault.ERROR_500: 0.3, Fault.DROP: 0.1})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(2000) + "1,x,y\n")
        report_path = tmp_path / "report.json"
        run = await run_cli(
            "append",
            "42",
            data,
            "--batch-size",
            "100",
            "--max-attempts",
            "2",
            "--report",
            report_path,
            "--log-format",
            "json",
            server=server,
        )
    assert run.code == 1
    document = json.loads(report_path.read_text())
    parts = ("accepted", "failed", "unknown", "skipped", "invalid")
    assert document["total"] == 2001 == sum(document[k] for k in parts)
    assert document["invalid_leads"] == [
        {
            "position": 2000,
            "line": 2002,
            "field": "number",
            "reason": "must be E.164: '+' then 7 to 15 digits, the first not 0, got '1'",
        }
    ]
    assert all(batch["line"] == batch["start"] + 2 for batch in document["batches"])
    summary = json.loads(run.out.splitlines()[-1])
    assert summary["event"] == "summary"
    assert summary["exit_code"] == 1
    assert summary["total"] == 2001


@pytest.mark.anyio
async def test_default_region_normalizes_national_formats(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    pytest.importorskip("phonenumbers")
    text = 'number\n09876543210\n"98765 43210"\n+91-98765-43210\n12345\n'
    data = write(tmp_path / "leads.csv", text)
    run = await run_cli("append", "42", data, "--default-region", "IN", server=server)
    assert run.code == 1
    assert [lead["number"] for lead in server.leads] == ["+919876543210"] * 3
    assert f"{data}:5: number: not a valid number for its region per libphonenumber" in run.err


# -- interrupts ----------------------------------------------------------------------


class SignalOnArrival:
    """An ``on_request`` hook: sends ``signum`` to the loader as the ``nth`` request arrives
    (and again, as ``again`` requests more arrive or when told), so the signal lands
    while requests are in flight, whatever the machine's speed."""

    def __init__(self, nth: int, signum: int) -> None:
        self.nth = nth
        self.signum = signum
        self.process: Process | None = None
        self.arrived = 0
        self.sent = 0

    def __call__(self, request: ReceivedRequest) -> None:
        self.arrived += 1
        if self.arrived == self.nth:
            self.send()

    def send(self) -> None:
        assert self.process is not None
        self.process.send_signal(self.signum)
        self.sent += 1


async def run_signalled(
    command: list[str], server: FakeRyngServer, trigger: SignalOnArrival, *, again_on: str = ""
) -> Run:
    """Run the CLI until it exits; ``trigger`` signals it; a second signal once its
    standard error shows ``again_on``."""
    with anyio.fail_after(TIMEOUT):
        process = await anyio.open_process(
            command, env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        trigger.process = process
        async with process:
            assert process.stderr is not None
            assert process.stdout is not None
            err = ""
            async for text in TextReceiveStream(process.stderr):
                err += text
                if again_on and again_on in err and trigger.sent == 1:
                    trigger.send()
            out = "".join([text async for text in TextReceiveStream(process.stdout)])
            code = await process.wait()
    assert TOKEN not in out + err
    return Run(code, out, err)


@pytest.mark.anyio
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_stops_the_load_gently_with_an_exact_report(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    trigger = SignalOnArrival(2, signum)  # both requests in flight (0.5 s each)
    async with FakeRyngServer(access_token=TOKEN, latency=0.5, on_request=trigger) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(5000))
        report_path = tmp_path / "report.json"
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--report", str(report_path), "--progress", "log"]
        run = await run_signalled(command, server, trigger)
        received = server.received_requests
        accepted_by_server = server.lead_count()
    assert run.code == code, run.err
    assert trigger.sent == 1
    assert "not every lead was accepted" in run.out
    assert f"{signum.name}: stopping: nothing new is sent; waiting up to 30s" in run.err
    assert "every request sent got its answer" in run.err
    document = json.loads(report_path.read_text())
    assert document["ended"] in {"interrupted", "terminated"}
    assert document["exit_code"] == code
    parts = ("accepted", "failed", "unknown", "skipped", "invalid")
    assert document["total"] == sum(document[k] for k in parts)
    assert document["total"] < 5000
    assert document["stopped_early"]
    # The requests in flight at the signal ended with their answers, none unknown.
    assert document["unknown"] == 0
    assert document["accepted"] == accepted_by_server == received * 100 >= 200


@pytest.mark.anyio
async def test_a_signal_under_json_logs_says_it_is_waiting_in_json(tmp_path: Path) -> None:
    trigger = SignalOnArrival(2, signal.SIGTERM)
    async with FakeRyngServer(access_token=TOKEN, latency=0.3, on_request=trigger) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(2000))
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--log-format", "json", "--progress", "log", "--stop-grace", "45"]
        run = await run_signalled(command, server, trigger)
    assert run.code == 143, run.err
    events = [json.loads(line) for line in run.err.splitlines()]  # every line is JSON
    (stopping,) = [e for e in events if e["event"] == "stopping"]
    assert stopping["signal"] == "SIGTERM"
    assert stopping["grace_seconds"] == 45
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["stopping"] is True  # the view says it waits, to the end
    assert progress[-1]["unknown"] == 0


@pytest.mark.anyio
async def test_a_second_signal_cancels_the_requests_in_flight(tmp_path: Path) -> None:
    hang = FaultPlan(rates={Fault.HANG: 1.0})  # no answer until the server closes
    trigger = SignalOnArrival(2, signal.SIGINT)
    async with FakeRyngServer(access_token=TOKEN, faults=hang, on_request=trigger) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(1000))
        report_path = tmp_path / "report.json"
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--report", str(report_path), "--progress", "none", "--stop-grace", "600"]
        run = await run_signalled(command, server, trigger, again_on="waiting up to 600s")
        received = server.received_requests
    assert run.code == 130, run.err
    assert trigger.sent == 2
    assert "SIGINT again: cancelling the requests in flight" in run.err
    assert "200 leads of requests cancelled in flight are 'unknown'" in run.err
    document = json.loads(report_path.read_text())
    assert received == 2
    assert document["unknown"] == 200
    assert document["accepted"] == 0
    assert document["total"] == document["unknown"] + document["skipped"]


@pytest.mark.anyio
async def test_two_signals_under_log_format_json_leave_only_json_on_stderr(
    tmp_path: Path,
) -> None:
    hang = FaultPlan(rates={Fault.HANG: 1.0})
    trigger = SignalOnArrival(2, signal.SIGINT)
    async with FakeRyngServer(access_token=TOKEN, faults=hang, on_request=trigger) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(1000) + "1,x,y\n")
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--progress", "none", "--stop-grace", "600", "--log-format", "json"]
        run = await run_signalled(command, server, trigger, again_on='"event": "stopping"')
    assert run.code == 130, run.err
    assert trigger.sent == 2
    events = [event["event"] for event in _json_lines(run.err)]
    assert events[0] == "start"
    assert "stopping" in events
    assert "cancelling" in events


@pytest.mark.anyio
async def test_the_stop_grace_bounds_the_wait_for_the_requests_in_flight(tmp_path: Path) -> None:
    hang = FaultPlan(rates={Fault.HANG: 1.0})
    trigger = SignalOnArrival(2, signal.SIGTERM)
    async with FakeRyngServer(access_token=TOKEN, faults=hang, on_request=trigger) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(1000))
        report_path = tmp_path / "report.json"
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--report", str(report_path), "--progress", "none", "--stop-grace", "0.2"]
        run = await run_signalled(command, server, trigger)
    assert run.code == 143, run.err
    assert trigger.sent == 1
    assert "waiting up to 0.2s" in run.err
    document = json.loads(report_path.read_text())
    assert document["unknown"] == 200
    assert "grace ran out" in document["stop_reason"]


@pytest.mark.anyio
async def test_ctrl_c_while_stdin_stalls_exits_at_once(server: FakeRyngServer) -> None:
    # The reader is blocked on a pipe that stays open: Ctrl-C must not wait for it, and
    # the blocked read must not keep the process alive.
    command = [*CLI, "append", "42", "-", "--format", "csv", "--progress", "none"]
    with anyio.fail_after(TIMEOUT):
        process = await anyio.open_process(
            command,
            env=cli_env(server),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        async with process:
            assert process.stdin is not None
            assert process.stderr is not None
            await process.stdin.send(b"number\n+919800000001\n")
            err = ""
            async for text in TextReceiveStream(process.stderr):
                err += text
                if "loading <stdin>" in err:
                    break
            process.send_signal(signal.SIGINT)
            assert process.stdout is not None
            out = "".join([text async for text in TextReceiveStream(process.stdout)])
            err += "".join([text async for text in TextReceiveStream(process.stderr)])
            returncode = await process.wait()
    assert_no_token(out, err)
    assert returncode == 130
    assert server.received_requests == 0  # the one row was still waiting for a batch


# -- big files -----------------------------------------------------------------------


def _peak_rss_of(pid_status: str) -> int:
    for line in pid_status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_large_csv_streams_in_bounded_memory(tmp_path: Path) -> None:
    async with FakeRyngServer(access_token=TOKEN, record=False, validate_leads=False) as server:
        peaks: dict[int, Any] = {}
        for rows in (20_000, 400_000):
            data = tmp_path / f"leads{rows}.csv"
            with data.open("w") as handle:
                handle.write("number,name,city\n")
                for start in range(0, rows, 10_000):
                    handle.write(csv_rows(10_000, start))
            script = (
                "import sys; from ryng_async.cli import main; code = main(sys.argv[1:]); "
                "print(open('/proc/self/status').read(), file=sys.stderr); sys.exit(code)"
            )
            with anyio.fail_after(300):
                done = await anyio.run_process(
                    [
                        sys.executable,
                        "-c",
                        script,
                        "append",
                        "42",
                        str(data),
                        "--batch-size",
                        "1000",
                        "--progress",
                        "none",
                    ],
                    check=False,
                    env=cli_env(server),
                )
            assert_no_token(done.stdout.decode(), done.stderr.decode())
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            peaks[rows] = _peak_rss_of(done.stderr.decode())
        assert server.lead_count() == 420_000
    # 20x the rows, nearly the same memory: the file is streamed, never read whole.
    assert peaks[400_000] < peaks[20_000] * 1.3


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["--dry-run", "load"])
async def test_invalid_rows_stream_in_bounded_memory(tmp_path: Path, mode: str) -> None:
    # Before, each invalid row was held to the end: 1,000,000 peaked at 502 MB in a dry
    # run, 276 MB in a load (780 MB with --report), where valid rows take 58 MB.
    async with FakeRyngServer(access_token=TOKEN) as server:
        peaks: dict[int, int] = {}
        for rows in (20_000, 400_000):
            data = tmp_path / f"invalid{rows}.csv"
            with data.open("w") as handle:
                handle.write("number,name,city\n")
                handle.writelines(f"{i},Customer {i},Pune\n" for i in range(rows))
            report_path = tmp_path / f"report{rows}.json"
            script = (
                "import sys; from ryng_async.cli import main; code = main(sys.argv[1:]); "
                "print(open('/proc/self/status').read(), file=sys.stderr); sys.exit(code)"
            )
            args = ["append", "42", str(data), "--progress", "none", "--report", str(report_path)]
            with anyio.fail_after(300):
                done = await anyio.run_process(
                    [sys.executable, "-c", script, *args, *([mode] if mode != "load" else [])],
                    check=False,
                    env=cli_env(server),
                )
            assert_no_token(done.stdout.decode(), done.stderr.decode())
            assert done.returncode == 1, done.stderr.decode()[-2000:]
            peaks[rows] = _peak_rss_of(done.stderr.decode())
            document = json.loads(report_path.read_text())
            assert document["invalid"] == rows == len(document["invalid_leads"])
            assert document["invalid_leads"][-1]["line"] == rows + 1
        assert server.received_requests == 0
    # 20x the invalid rows, nearly the same memory: each is streamed out, not held.
    assert peaks[400_000] < peaks[20_000] * 1.3


# -- resuming with a checkpoint --------------------------------------------------------


@pytest.mark.anyio
async def test_ctrl_c_then_the_same_command_resumes_with_nothing_sent_twice(
    tmp_path: Path,
) -> None:
    async with FakeRyngServer(access_token=TOKEN, latency=0.05) as server:
        data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(3000))
        journal = tmp_path / "load.db"
        command = [*CLI, "append", "42", str(data), "--batch-size", "100", "--concurrency", "2"]
        command += ["--checkpoint", str(journal), "--progress", "log"]
        command += ["--progress-interval", "0.1"]
        with anyio.fail_after(TIMEOUT):
            process = await anyio.open_process(
                command, env=cli_env(server), stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            async with process:
                assert process.stderr is not None
                assert process.stdout is not None
                err = ""
                async for text in TextReceiveStream(process.stderr):
                    err += text
                    if re.search(r"accepted [1-9]", err):  # part of the file is in
                        break
                process.send_signal(signal.SIGINT)
                out = "".join([text async for text in TextReceiveStream(process.stdout)])
                err += "".join([text async for text in TextReceiveStream(process.stderr)])
                assert await process.wait() == 130, err
        assert_no_token(out, err)
        assert "run the same command again" in out + err
        shown = await run_cli("checkpoint", "show", journal, server=None)
        assert shown.code == 0
        assert "campaign 42" in shown.out
        assert "accepted" in shown.out
        report_path = tmp_path / "report.json"
        again = await run_cli(*command[3:], "--report", report_path, server=server)
        counts = Counter(lead["number"] for lead in server.leads)
    assert max(counts.values()) == 1, "a lead was sent twice"
    document = json.loads(report_path.read_text())
    assert document["resumed"] > 0
    # The Ctrl-C let the requests in flight end: nothing is unknown, every lead is in.
    assert document["total"] == document["accepted"] == 3000
    assert again.code == 0, again.err
    assert len(counts) == 3000


@pytest.mark.slow
@pytest.mark.anyio
async def test_first_signals_at_random_points_leave_nothing_unknown_and_resume_exactly(
    tmp_path: Path,
) -> None:
    # 20 first signals (SIGINT and SIGTERM in turn) at seeded random
    # points of a load whose requests take 50-200 ms; each leaves no batch unknown, and
    # the same command with the same checkpoint sends every remaining lead exactly once.
    rng = random.Random(18)
    count, batch = 2000, 50
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(count))
    for round_ in range(20):
        signum = (signal.SIGINT, signal.SIGTERM)[round_ % 2]
        trigger = SignalOnArrival(rng.randint(1, count // batch - 4), signum)
        delays = random.Random(round_)

        async def answer_slowly(
            request: ReceivedRequest, trigger: SignalOnArrival = trigger, delays: Any = delays
        ) -> None:
            trigger(request)
            await anyio.sleep(delays.uniform(0.05, 0.2))

        journal = tmp_path / f"load{round_}.db"
        first_report, again_report = (
            tmp_path / f"first{round_}.json",
            tmp_path / f"again{round_}.json",
        )
        command = [*CLI, "append", "42", str(data), "--batch-size", str(batch)]
        command += ["--concurrency", "4", "--checkpoint", str(journal), "--progress", "none"]
        async with FakeRyngServer(access_token=TOKEN, on_request=answer_slowly) as server:
            run = await run_signalled([*command, "--report", str(first_report)], server, trigger)
            assert run.code == (130 if signum == signal.SIGINT else 143), run.err
            assert "waiting up to" in run.err
            first = json.loads(first_report.read_text())
            assert first["unknown"] == 0, (round_, first["stop_reason"])
            assert first["accepted"] == server.lead_count()
            trigger.nth = 0  # no signal this time
            again = await run_cli(*command[3:], "--report", again_report, server=server)
            assert again.code == 0, again.err
            counts = Counter(lead["number"] for lead in server.leads)
        document = json.loads(again_report.read_text())
        assert document["resumed"] == first["accepted"]
        assert len(counts) == count
        assert set(counts.values()) == {1}, f"round {round_}: a lead was sent twice"


@pytest.mark.anyio
async def test_a_resumed_run_with_other_columns_is_refused_before_sending(tmp_path: Path) -> None:
    # The custom fields are in every batch's body and in the load's identity: a resume
    # choosing other columns would send other bodies; it is refused, naming the options.
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(40))
    journal = tmp_path / "load.db"
    common = ["--batch-size", "10", "--max-attempts", "1", "--checkpoint", journal]
    plan = FaultPlan(seed=1, rates={Fault.ERROR_500: 0.5})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        first = await run_cli("append", "42", data, *common, "--columns", "name", server=server)
        assert first.code == 1, first.err
        accepted = server.lead_count()
        assert 0 < accepted < 40
        sent = server.received_requests
        server.faults = FaultPlan()
        for other, fields in [
            (["--columns", "city"], "city"),
            (["--exclude-columns", "name"], "city"),
            ([], "name, city"),
        ]:
            again = await run_cli("append", "42", data, *common, *other, server=server)
            assert again.code == 2, again.err
            assert "belongs to another load: campaign options differ" in again.err
            assert f"(this run's: {fields}): give it the first run's --columns or" in again.err
            assert server.received_requests == sent  # nothing sent
        # The summary says nothing was read, not "send the rows again": the fix is the
        # options, and the same rows would be refused the same way.
        assert "input error: nothing was read or sent (exit 2)" in again.out
        assert "never read" not in again.err
        same = await run_cli(
            "append", "42", data, *common, "--exclude-columns", "city", server=server
        )  # the same custom fields as --columns name: the same load
        assert same.code == 0, same.err
        assert "resumed from the checkpoint" in same.out
        assert sorted(lead["number"] for lead in server.leads) == sorted(
            f"+9198{i:08d}" for i in range(40)
        )
        assert {tuple(sorted(lead)) for lead in server.leads} == {("customField1", "number")}


@pytest.mark.anyio
async def test_shards_of_a_file_load_it_exactly_once(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(950))
    for index in range(3):
        run = await run_cli(
            "append", "42", data, "--batch-size", "50", "--shard", f"{index}/3", server=server
        )
        assert run.code == 0, run.err
    counts = Counter(lead["number"] for lead in server.leads)
    assert len(counts) == 950
    assert set(counts.values()) == {1}


@pytest.mark.anyio
async def test_a_bad_shard_is_a_usage_error(server: FakeRyngServer, tmp_path: Path) -> None:
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(5))
    run = await run_cli("append", "42", data, "--shard", "3/3", server=server)
    assert run.code == 2
    assert "I/N" in run.err
    assert server.received_requests == 0


# -- edges: dry-run counts, delimiters, a closed stdout, JSON logs, invalid rows at scale


@pytest.mark.anyio
async def test_dry_run_counts_a_row_both_invalid_and_too_large_once_as_a_load_does(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    big = "x" * 600
    text = (
        "number,name\n"
        "+919800000001,a\n"
        "+919800000002,b\n"
        f"12345,{big}\n"  # invalid and too large: one invalid row
        f"+919800000004,{big}\n"  # too large alone
        "0800,c\n"  # invalid
    )
    data = write(tmp_path / "leads.csv", text)
    limit = ["--max-batch-bytes", "500"]
    dry = await run_cli("append", "42", data, "--dry-run", *limit, server=server)
    assert "5 rows read" in dry.err
    assert "2 valid, 3 invalid; nothing was sent" in dry.err
    assert [line.split(":")[1] for line in dry.out.splitlines()] == ["4", "5", "6"]
    report_path = tmp_path / "load.json"
    load = await run_cli("append", "42", data, *limit, "--report", report_path, server=server)
    document = json.loads(report_path.read_text())
    assert (document["accepted"], document["invalid"]) == (2, 3), load.err
    assert sorted(row["line"] for row in document["invalid_leads"]) == [4, 5, 6]


@pytest.mark.anyio
async def test_dry_run_dedupes_as_a_load_does_past_its_memory(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    # 60,000 distinct numbers (past the 50,000 a dedupe keeps in memory before its file),
    # then a repeat of the first and of the last, and an invalid row between them.
    numbers = [f"+9198{i:08d}" for i in range(60_000)]
    rows = [*numbers, numbers[0], "0800", numbers[-1]]
    data = write(tmp_path / "leads.csv", "number\n" + "\n".join(rows) + "\n")
    dry = await run_cli("append", "42", data, "--dry-run", "--dedupe", server=server)
    assert "60,003 rows read" in dry.err
    assert "60,000 valid, 3 invalid; nothing was sent" in dry.err
    listed = dry.out.splitlines()
    assert [line.split(":")[1] for line in listed] == ["60002", "60003", "60004"]
    assert "duplicate of an earlier lead: +919800000000" in listed[0]
    assert "duplicate of an earlier lead: +919800059999" in listed[2]
    assert server.received_requests == 0


@pytest.mark.parametrize("flag", ["\\t", "tab", "\t"])
def test_a_tab_delimiter_can_be_spelled(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ryng_async.cli import main

    data = write(tmp_path / "leads.csv", "number\tname\n+919800000001\tMax, Jr.\n12\tx\n")
    code = main(["append", "42", str(data), "--dry-run", "--delimiter", flag])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 rows read" in captured.err
    assert "1 valid, 1 invalid" in captured.err
    assert captured.out.startswith(f"{data}:3: number: ")


@pytest.mark.parametrize(
    "command",
    [
        ["append", "42", "leads.csv", "--dry-run"],
        ["checkpoint", "show", "load.db", "--file", "leads.csv"],
        ["reconcile", "report.json", "callbacks.db", "--file", "leads.csv"],
    ],
    ids=["append", "checkpoint-show", "reconcile"],
)
@pytest.mark.parametrize("value", [";;", "", "tabs", '"'])
def test_a_delimiter_that_is_not_one_character_is_a_usage_error(
    command: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from ryng_async.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command, "--delimiter", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--delimiter" in err
    assert repr(value) in err
    assert "Traceback" not in err


def test_open_source_refuses_an_empty_delimiter_instead_of_reading_commas(
    tmp_path: Path,
) -> None:
    from ryng_async.cli._readers import InputError, open_source

    data = write(tmp_path / "leads.csv", "number,name\n+919800000001,a\n")
    with pytest.raises(InputError, match="delimiter ''"):
        open_source(str(data), delimiter="")


def test_a_dry_run_piped_into_head_ends_quietly(tmp_path: Path) -> None:
    rows = "".join(f"{i},x\n" for i in range(50_000))  # ~4 MB listed: more than a pipe holds
    data = write(tmp_path / "leads.csv", "number,name\n" + rows)
    with subprocess.Popen(  # noqa: S603 - our interpreter, our code
        [*CLI, "append", "42", str(data), "--dry-run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(None),
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        first = [process.stdout.readline() for _ in range(2)]  # what `head -2` reads
        process.stdout.close()
        err = process.stderr.read().decode()
        code = process.wait(TIMEOUT)
    assert first[0].decode().startswith(f"{data}:2: number: ")
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
    assert err == ""
    assert code == 141


@pytest.mark.anyio
async def test_a_load_whose_stdout_was_closed_still_writes_its_report(
    server: FakeRyngServer, tmp_path: Path
) -> None:
    data = write(tmp_path / "leads.csv", "number,name,city\n" + csv_rows(30))
    report_path = tmp_path / "report.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read the summary
    try:
        with anyio.fail_after(TIMEOUT):
            done = await anyio.run_process(
                [*CLI, "append", "42", str(data), "--report", str(report_path)],
                stdout=write_end,
                check=False,
                env=cli_env(server),
            )
    finally:
        os.close(write_end)
    err = done.stderr.decode()
    assert_no_token(err)
    assert done.returncode == 0, err
    assert "Traceback" not in err
    assert json.loads(report_path.read_text())["accepted"] == 30 == server.lead_count()


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


@pytest.mark.anyio
async def test_log_format_json_writes_only_json_lines_on_stderr(tmp_path: Path) -> None:
    # 25 invalid rows (20 listed, then "5 more"), batches that fail, then a bad byte that
    # stops the load with an error: every line a person would read, as JSON.
    invalid = "".join(f"{i},x,y\n" for i in range(25))  # lines 2-26
    rows = csv_rows(30_000)  # enough that the bad byte is read mid-load, not at the header
    text = ("number,name,city\n" + invalid + rows).encode() + b"+919800099999,\xff,x\n"
    data = write(tmp_path / "leads.csv", text)
    plan = FaultPlan(seed=2, rates={Fault.BAD_REQUEST: 0.5})
    async with FakeRyngServer(access_token=TOKEN, faults=plan) as server:
        run = await run_cli("append", "42", data, "--log-format", "json", server=server)
    assert run.code == 2
    events = _json_lines(run.err)
    kinds = Counter(event["event"] for event in events)
    assert kinds["start"] == 1
    assert kinds["invalid_row"] == 20
    assert kinds["invalid_rows_not_shown"] == 1
    assert kinds["error"] == 1
    (error,) = (event for event in events if event["event"] == "error")
    assert "line 30027" in error["message"]
    (row,) = (e for e in events if e["event"] == "invalid_row" and e["line"] == 2)
    assert row["field"] == "number"
    assert _json_lines(run.out)[-1]["event"] == "summary"

    dry = await run_cli("append", "42", data, "--dry-run", "--log-format", "json", server=None)
    assert dry.code == 2
    assert [event["event"] for event in _json_lines(dry.err)] == ["error"]
    usage = await run_cli(
        "append", "42", data, "--custom-field-names", "{x", "--log-format", "json", server=server
    )
    assert usage.code == 2
    assert [event["event"] for event in _json_lines(usage.err)] == ["error"]


def test_text_mode_says_the_sdks_warnings_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    # The package's logger has a NullHandler: without text_warnings, an exhausted retry
    # budget or a grace that ran out would be said nowhere in text mode.
    import logging

    from ryng_async.cli._progress import text_warnings

    logger = logging.getLogger("ryng_async._sender")
    with text_warnings(enabled=True):
        logger.warning("retry budget exhausted; not retrying: %s", "HTTP 500")
        logger.info("not shown: below warnings")
    logger.warning("after: not this handler's")
    assert capsys.readouterr().err.splitlines() == [
        "ryng-async append: warning: retry budget exhausted; not retrying: HTTP 500"
    ]


def test_json_logging_turns_the_sdks_log_records_into_json_lines() -> None:
    import io
    import logging

    from ryng_async.cli._progress import json_logging

    stream = io.StringIO()
    logger = logging.getLogger("ryng_async")
    with json_logging(enabled=True, stream=stream):
        logger.warning("retry budget exhausted; not retrying: %s", "HTTP 500")
        logger.info("not shown: below warnings")
    logger.warning("after: not this handler's")
    assert _json_lines(stream.getvalue()) == [
        {
            "event": "log",
            "level": "warning",
            "logger": "ryng_async",
            "message": "retry budget exhausted; not retrying: HTTP 500",
        }
    ]


@pytest.mark.anyio
async def test_a_batch_accepted_in_part_reports_only_its_rest_to_send_again(
    tmp_path: Path,
) -> None:
    # Line 5 (the fourth row) never fits the server's body limit: the batch is split after
    # a 413, its other rows are accepted, and only line 5 is left to send again.
    rows = csv_rows(3) + f"+919900000000,{'x' * 2_000},Pune\n" + csv_rows(2, start=3)
    data = write(tmp_path / "leads.csv", "number,name,city\n" + rows)
    report_path = tmp_path / "report.json"
    async with FakeRyngServer(access_token=TOKEN, max_body=1_000) as server:
        run = await run_cli("append", "42", data, "--report", report_path, server=server)
        assert server.lead_count() == 5
    assert run.code == 1, run.err
    document = json.loads(report_path.read_text())
    assert (document["accepted"], document["failed"], document["unknown"]) == (5, 1, 0)
    assert document["failed_ranges"] == [[3, 1]]
    assert document["failed_lines"] == [[5, 5]]
    (batch,) = document["batches"]
    assert batch["outcome"] == "failed"
    assert batch["accepted_ranges"] == [[0, 3], [4, 2]]
