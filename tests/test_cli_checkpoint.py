"""``ryng-async checkpoint show|export|resolve``: a journal read, exported and decided by hand.

`checkpoint show` names the batches that may be in Ryng and, given the input file, their
lines; `checkpoint export` writes the input rows of batches in a state byte for byte;
`checkpoint resolve` records a decision on batches chosen by index, position or line, or
proven by a callback. Each runs as an operator would run it: the real command line.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest
import test_cli_append
from test_cli_append import csv_rows, run_cli, write
from test_resolve import (
    CAMPAIGN,
    CLI,
    IDENTITY,
    TOKEN,
    cli,
    connect_callback,
    env_for,
    number,
    where,
)

from ryng_async import parse_callback
from ryng_async.callbacks import SQLiteCallbackStore
from ryng_async.checkpoint import BatchState, Decision, SQLiteJournal
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytestmark = pytest.mark.anyio


@pytest.mark.anyio
async def test_checkpoint_show_with_the_file_names_the_lines_to_check(tmp_path: Path) -> None:
    # Row 3's name spans two lines: from there on, a row's line is its position + 3.
    rows = csv_rows(3) + '+919800000003,"Customer\nthree",Pune\n' + csv_rows(196, start=4)
    data = write(tmp_path / "leads.csv", "number,name,city\n" + rows)
    journal = tmp_path / "load.db"
    plan = FaultPlan(seed=5, rates={Fault.DROP: 0.2})  # dropped after sending: unknown
    async with FakeRyngServer(access_token=test_cli_append.TOKEN, faults=plan) as server:
        run = await run_cli(
            "append", "42", data, "--batch-size", "10", "--checkpoint", journal, server=server
        )
    assert run.code == 1, run.err
    shown = await run_cli("checkpoint", "show", journal, "--file", data, "--json", server=None)
    assert shown.code == 0, shown.err
    uncertain = json.loads(shown.out)["uncertain"]
    assert uncertain
    for batch in uncertain:
        first, last = batch["start"], batch["start"] + batch["count"] - 1
        assert batch["first_line"] == first + (2 if first <= 3 else 3)
        assert batch["last_line"] == last + (2 if last <= 3 else 3)
    text = await run_cli("checkpoint", "show", journal, "--file", data, server=None)
    batch = uncertain[0]
    assert f"lines {batch['first_line']}-{batch['last_line']} of {data}" in text.out, text.out
    missing = await run_cli(
        "checkpoint", "show", journal, "--file", tmp_path / "gone.csv", server=None
    )
    assert missing.code == 2
    assert "gone.csv" in missing.err


@pytest.mark.anyio
async def test_checkpoint_show_of_a_foreign_file_exits_2(tmp_path: Path) -> None:
    other = write(tmp_path / "notes.txt", "not a journal\n")
    shown = await run_cli("checkpoint", "show", other, server=None)
    assert shown.code == 2
    assert "not a ryng_async checkpoint" in shown.err


def tricky_csv(path: Path) -> list[bytes]:
    """30 rows: row 7 holds a line break in a quoted cell, a blank line follows row 8,
    row 16's number is invalid. Returns each row's bytes (blank line in row 8's)."""
    rows = []
    for i in range(30):
        note = '"two\nlines"' if i == 7 else f"n{i}"
        phone = "12345" if i == 16 else number(i)
        rows.append(f'{phone},"Doe, J{i}",{note}\n'.encode())
    path.write_bytes(
        b"number,name,note\n" + b"".join(r + b"\n" if i == 8 else r for i, r in enumerate(rows))
    )
    return rows


@pytest.mark.slow
async def test_export_writes_the_rows_of_a_state_byte_for_byte(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    rows = tricky_csv(leads)
    journal = tmp_path / "load.journal"
    # One request at a time, batches of 5 valid leads: batches 1 and 3 refused (400).
    faults = FaultPlan(script=[None, Fault.BAD_REQUEST, None, Fault.BAD_REQUEST])
    async with FakeRyngServer(access_token=TOKEN, faults=faults) as server:
        env = env_for(server.base_url)
        load = await cli(
            "append", CAMPAIGN, str(leads), "--checkpoint", str(journal),
            "--batch-size", "5", "--concurrency", "1", env=env,
        )  # fmt: skip
    assert load.returncode == 1, load.stderr
    failed = [b.ranges for b in SQLiteJournal.read_batches(journal, states=[BatchState.FAILED])]
    assert failed == [((5, 5),), ((15, 1), (17, 4))]  # row 16 invalid, not in a batch
    header = b"number,name,note\n"
    for state, wanted in [
        ("failed", [5, 6, 7, 8, 9, 15, 17, 18, 19, 20]),
        ("not-accepted", [5, 6, 7, 8, 9, 15, 17, 18, 19, 20]),
        ("unknown", []),
    ]:
        out = tmp_path / f"{state}.csv"
        exported = await cli(
            "checkpoint", "export", str(journal), "--file", str(leads), "--state", state,
            "-o", str(out), env=env,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert out.read_bytes() == header + b"".join(rows[i] for i in wanted), state
    from_stdin = await cli(
        "checkpoint", "export", str(journal), "--file", "-", "--state", "failed", "-o", "-",
        env=env,
    )  # fmt: skip
    assert from_stdin.returncode == 2
    assert b"not stdin" in from_stdin.stderr


async def test_export_of_json_lines_and_gzip_keeps_each_line_as_read(tmp_path: Path) -> None:
    lines = [f'{{"number": "{number(i)}", "n": {i}}}\n'.encode() for i in range(12)]
    body = b"".join(line + (b"\n" if i == 4 else b"") for i, line in enumerate(lines))
    plain_file = tmp_path / "leads.jsonl"
    plain_file.write_bytes(body)
    zipped = tmp_path / "leads.jsonl.gz"
    zipped.write_bytes(gzip.compress(body))
    path = tmp_path / "j"
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        await journal.in_flight(0, start=3, count=3, digest=b"a" * 16, attempt=1)
        await journal.in_flight(1, start=9, count=2, digest=b"b" * 16, attempt=1,
                                ranges=[(9, 1), (11, 1)])  # fmt: skip
        await journal.settled(0, state=BatchState.FAILED, attempts=1, status=400, message="")
    for source in (plain_file, zipped):
        out = tmp_path / "out.jsonl"
        for state, wanted in [("failed", [3, 4, 5]), ("unknown", [9, 11])]:
            done = await anyio.run_process(
                [*CLI, "checkpoint", "export", str(path), "--file", str(source),
                 "--input-format", "jsonl", "--state", state, "-o", str(out)],
                check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert out.read_bytes() == b"".join(lines[i] for i in wanted), (source, state)


async def test_resolve_chooses_batches_by_index_position_or_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ryng_async.cli import main

    leads = tmp_path / "leads.csv"
    # Lines: 1 header, 2-41 rows 0-39 (batch b holds rows 10b..10b+9: lines 10b+2..10b+11).
    leads.write_bytes(b"number\n" + b"".join(f"{number(i)}\n".encode() for i in range(40)))
    path = tmp_path / "j"
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        for index in range(4):
            await journal.in_flight(index, **where(index), attempt=1)
        await journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
    base = ["checkpoint", "resolve", str(path)]

    def resolve(*args: str) -> tuple[int, str, str]:
        code = main([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = resolve("--as", "accepted")  # no selection
    assert (code, "choose the batches" in err) == (2, True)
    code, _, err = resolve("--all")
    assert code == 2
    assert "give --as" in err
    code, _, err = resolve("--as", "accepted", "--all", "--batch", "1")
    assert (code, "one way" in err) == (2, True)
    code, _, err = resolve("--as", "accepted", "--lines", "2-5")
    assert (code, "--lines needs --file" in err) == (2, True)
    code, _, err = resolve("--as", "accepted", "--batch", "0")  # accepted already
    assert (code, "no batch in flight or unknown matches" in err) == (2, True)

    code, out, _ = resolve("--as", "accepted", "--batch", "0-1", "--note", "seen")
    assert code == 1  # batches 2 and 3 still open
    assert "batch 1: leads 10-19 resolved as accepted (seen)" in out
    assert "1 batches (10 leads) resolved as accepted; 2 batches still unknown" in out
    code, out, _ = resolve("--as", "not-received", "--positions", "25")
    assert "batch 2: leads 20-29 resolved as not-received" in out
    code, out, _ = resolve("--as", "not-received", "--lines", "41", "--file", str(leads))
    assert code == 0
    assert "batch 3: leads 30-39 resolved as not-received" in out
    summary = SQLiteJournal.inspect(path)
    assert [(r.index, r.decision) for r in summary.resolved] == [
        (1, Decision.ACCEPTED),
        (2, Decision.NOT_RECEIVED),
        (3, Decision.NOT_RECEIVED),
    ]
    assert main(["checkpoint", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["uncertain"] == []
    assert [(r["index"], r["decision"], r["note"]) for r in shown["resolved"]] == [
        (1, "accepted", "seen"),
        (2, "not-received", ""),
        (3, "not-received", ""),
    ]


async def test_a_callback_proves_a_batch_only_for_a_number_of_its_own_called_since(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ryng_async.cli import main

    leads = tmp_path / "leads.csv"
    numbers = [number(i) for i in range(40)]
    numbers[35] = numbers[25]  # batch 2's lead 25 is loaded again in batch 3
    leads.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    path = tmp_path / "j"
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        for index in range(4):
            await journal.in_flight(index, **where(index), attempt=1)
    created = SQLiteJournal.inspect(path).created_at
    store_path = tmp_path / "store.db"
    async with SQLiteCallbackStore(store_path) as store:
        for call_id, lead, when in [
            (1, 25, datetime.now(UTC)),  # a number of two leads: proves neither batch
            (2, 12, datetime(2020, 1, 1, tzinfo=UTC)),  # batch 1, but called before the load
            (3, 3, datetime.now(UTC)),  # batch 0: proof
            (4, 4, datetime.now(UTC)),  # batch 0 again: one proof is enough
        ]:
            body = connect_callback(call_id, number(lead), when)
            assert await store.add(parse_callback(body), body)
    code = main(
        ["checkpoint", "resolve", str(path), "--callbacks", str(store_path), "--file", str(leads)]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "1 batches (10 leads) resolved as accepted; 3 batches still unknown" in out
    (resolution,) = SQLiteJournal.inspect(path).resolved
    assert resolution.index == 0
    assert resolution.note.startswith(f"callback of call 3 to {number(3)} at ")
    assert resolution.at >= created
    assert [b.index for b in SQLiteJournal.inspect(path).uncertain] == [1, 2, 3]


def make_foreign_sqlite(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    # The columns resolve reads, no rows: without the header check, read as an empty store.
    conn.execute(
        "CREATE TABLE callbacks (seq INTEGER, call_id INTEGER, customer_num TEXT,"
        " received_at TEXT, raw TEXT)"
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("store_name", "what"),
    [
        ("foreign.db", "it is another SQLite database"),
        ("the journal", "it is a ryng_async checkpoint journal"),
        ("leads.csv", "it is not an SQLite database"),
    ],
)
async def test_resolve_refuses_a_callback_store_that_is_not_one_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_name: str, what: str
) -> None:
    from ryng_async.cli import main

    leads = tmp_path / "leads.csv"
    leads.write_text("number\n" + "".join(f"{number(i)}\n" for i in range(20)))
    path = tmp_path / "j"
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        for index in range(2):
            await journal.in_flight(index, **where(index), attempt=1)
    store = {"foreign.db": tmp_path / "foreign.db", "the journal": path, "leads.csv": leads}[
        store_name
    ]
    if store_name == "foreign.db":
        make_foreign_sqlite(store)
    before = store.read_bytes()
    code = main(
        ["checkpoint", "resolve", str(path), "--callbacks", str(store), "--file", str(leads)]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"{store} is not a ryng_async callback store ({what})" in err
    assert "Traceback" not in err
    assert "no such table" not in err
    assert store.read_bytes() == before
    assert [b.index for b in SQLiteJournal.inspect(path).uncertain] == [0, 1]  # none resolved


@pytest.mark.anyio
async def test_checkpoint_show_and_export_map_the_same_rows_whatever_the_columns(
    tmp_path: Path,
) -> None:
    # --columns chooses custom fields, not rows: a checkpoint read with other columns
    # than the load's names the same lines and exports the same bytes.
    rows = csv_rows(3) + '+919800000003,"Customer\nthree",Pune\n' + csv_rows(96, start=4)
    data = write(tmp_path / "leads.csv", "number,name,city\n" + rows)
    journal = tmp_path / "load.db"
    plan = FaultPlan(seed=5, rates={Fault.DROP: 0.3})  # dropped after sending: unknown
    async with FakeRyngServer(access_token=test_cli_append.TOKEN, faults=plan) as server:
        first = await run_cli(
            "append", "42", data, "--batch-size", "10", "--checkpoint", journal,
            "--columns", "name", server=server,
        )  # fmt: skip
    assert first.code == 1, first.err
    shown, exported = [], []
    for index, columns in enumerate([["--columns", "name"], ["--columns", "city"], []]):
        show = await run_cli(
            "checkpoint", "show", journal, "--file", data, "--json", *columns, server=None
        )
        assert show.code == 0, show.err
        shown.append(json.loads(show.out))
        out = tmp_path / f"unknown{index}.csv"
        export = await run_cli(
            "checkpoint", "export", journal, "--file", data, "--state", "unknown", "-o", out,
            *columns, server=None,
        )  # fmt: skip
        assert export.code == 0, export.err
        exported.append(out.read_bytes())
    assert shown[0] == shown[1] == shown[2]
    assert exported[0] == exported[1] == exported[2]
    uncertain = shown[0]["uncertain"]
    assert uncertain
    assert all(b["first_line"] == b["start"] + (2 if b["start"] <= 3 else 3) for b in uncertain)
    lines = exported[0].decode().split("\n+9198")
    assert lines[0] == "number,name,city"
    assert len(lines) - 1 == shown[0]["leads"]["unknown"] > 0
    unknown = await run_cli(
        "checkpoint", "show", journal, "--file", data, "--columns", "nope", server=None
    )
    assert unknown.code == 2
    assert "nope" in unknown.err


def test_the_other_options_hint_follows_what_differs_not_the_wording() -> None:
    # The hint after a refused resume is chosen by the refusal's ``differs``: a reworded
    # message keeps it, and words alone (another cause quoting them) do not bring it.
    from ryng_async.checkpoint import CheckpointRefusedError
    from ryng_async.cli._append_options import other_options_hint

    options = {"custom_field_names": {"customField1Name": "city"}}
    reworded = CheckpointRefusedError("the journal's load had other settings", differs={"options"})
    hint = other_options_hint(reworded, options)
    assert "(this run's: city): give it the first run's --columns or" in hint
    wording_only = CheckpointRefusedError("campaign options differ", differs={"batch_size"})
    assert other_options_hint(wording_only, options) == ""
    assert other_options_hint(CheckpointRefusedError("campaign options differ"), options) == ""


async def test_show_export_and_resolve_of_batches_accepted_in_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_journal_parts import part_journal

    from ryng_async.cli import main

    leads = tmp_path / "leads.csv"
    # Lines: 1 header, 2-41 rows 0-39 (row i on line i + 2).
    rows = [f"{number(i)}\n".encode() for i in range(40)]
    leads.write_bytes(b"number\n" + b"".join(rows))
    path = tmp_path / "j"
    # Batch 0 accepted; 1 unknown, 10-14 accepted; 2 failed, 20-22 and 25-26 accepted;
    # 3 in flight (a run that stopped).
    await part_journal(path)

    assert main(["checkpoint", "show", str(path), "--file", str(leads)]) == 0
    text = capsys.readouterr().out
    assert "accepted           1          20" in text  # 10 + 5 + 5 leads
    assert "unknown            1           5" in text
    assert "failed             1           5" in text
    assert "every lead before input position 15 (line 17 of" in text
    assert (
        "  batch 1: leads 10-19, lines 12-21 of "
        f"{leads} (unknown; accepted in part: leads 10-14, lines 12-16 of {leads})"
    ) in text
    assert "2 batches were accepted in part (sent in parts after a 413)" in text
    assert f"  batch 2: leads 20-29, lines 22-31 of {leads} (failed; accepted in part: " in text
    assert "  batch 3: leads 30-39, lines 32-41" in text
    assert main(["checkpoint", "show", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(b["index"], b["accepted_ranges"]) for b in shown["uncertain"]] == [
        (1, [[10, 5]]),
        (3, []),
    ]
    assert [(b["index"], b["state"], b["accepted_ranges"]) for b in shown["accepted_in_part"]] == [
        (1, "unknown", [[10, 5]]),
        (2, "failed", [[20, 3], [25, 2]]),
    ]
    assert shown["leads"]["accepted"] == 20
    assert shown["next_position"] == 15
    assert main(["checkpoint", "show", str(path), "--json", "--file", str(leads)]) == 0
    lined = json.loads(capsys.readouterr().out)["accepted_in_part"]
    assert [b["accepted_lines"] for b in lined] == [[[12, 16]], [[22, 24], [27, 28]]]

    # export writes the rest of each batch in the state, never its accepted rows.
    for state, wanted in [
        ("unknown", [*range(15, 20), *range(30, 40)]),
        ("failed", [23, 24, 27, 28, 29]),
        ("not-accepted", [*range(15, 20), 23, 24, 27, 28, 29, *range(30, 40)]),
    ]:
        out = tmp_path / f"{state}.csv"
        assert main(["checkpoint", "export", str(path), "--file", str(leads),
                     "--state", state, "-o", str(out)]) == 0  # fmt: skip
        assert out.read_bytes() == b"number\n" + b"".join(rows[i] for i in wanted), state
    capsys.readouterr()

    # A callback proves one part of a batch sent in parts, not the rest: batch 1 stays.
    store_path = tmp_path / "store.db"
    async with SQLiteCallbackStore(store_path) as store:
        body = connect_callback(1, number(17), datetime.now(UTC))
        assert await store.add(parse_callback(body), body)
    code = main(
        ["checkpoint", "resolve", str(path), "--callbacks", str(store_path), "--file", str(leads)]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "batch 1: leads 10-19 was sent in parts after a 413 (accepted in part: leads" in out
    assert SQLiteJournal.inspect(path).resolved == ()

    # Positions in batch 1's accepted part choose nothing: its rest was not checked.
    code = main(["checkpoint", "resolve", str(path), "--as", "accepted", "--positions", "10-14"])
    out = capsys.readouterr().out
    assert SQLiteJournal.inspect(path).resolved == (), out

    # resolve decides the rest: not-received keeps leads 10-14 accepted.
    code = main(["checkpoint", "resolve", str(path), "--as", "not-received", "--batch", "1"])
    out = capsys.readouterr().out
    assert code == 1, out  # batch 3 is still open
    assert "batch 1: leads 15-19 resolved as not-received" in out
    assert "1 batches (5 leads) resolved as not-received; 1 batches still unknown" in out
    (batch,) = SQLiteJournal.read_batches(path, states=[BatchState.SKIPPED])
    assert (batch.index, batch.accepted_ranges, batch.open_ranges) == (1, ((10, 5),), ((15, 5),))
    summary = SQLiteJournal.inspect(path)
    assert (summary.leads[BatchState.ACCEPTED], summary.leads[BatchState.SKIPPED]) == (20, 5)
    assert [(r.index, r.ranges) for r in summary.resolved] == [(1, ((15, 5),))]
    out_path = tmp_path / "skipped.csv"
    assert main(["checkpoint", "export", str(path), "--file", str(leads),
                 "--state", "skipped", "-o", str(out_path)]) == 0  # fmt: skip
    assert out_path.read_bytes() == b"number\n" + b"".join(rows[15:20])
