"""Resolving unknown batches: after a crash, every lead ends up sent exactly once.

The whole story through the real command line against `FakeRyngServer` (show, export,
resolve by callbacks and by hand, rerun), then `SQLiteJournal.resolve` itself: each
decision recorded and seen by the next run, refused for batches not open or while a load
holds the journal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from ryng_async import parse_callback
from ryng_async.callbacks import SQLiteCallbackStore
from ryng_async.checkpoint import (
    BatchState,
    CheckpointError,
    Decision,
    LoadIdentity,
    SQLiteJournal,
)
from ryng_async.cli._fake_server import write_record
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan, ReceivedRequest

CLI = [sys.executable, "-m", "ryng_async"]
TOKEN = "tok-RESOLVE-5e21"
CAMPAIGN = "42"
ROWS = 60
BATCH = 10

pytestmark = pytest.mark.anyio


def env_for(base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RYNG_")}
    env["RYNG_BASE_URL"] = base_url
    env["RYNG_ACCESS_TOKEN"] = TOKEN
    return env


def number(i: int) -> str:
    return f"+9198{i:08d}"


def write_leads(path: Path) -> list[bytes]:
    """A CSV whose rows carry quotes and commas; returns its lines as bytes."""
    lines = [b"number,name,note\r\n"]
    lines += [f'{number(i)},"Doe, J{i}",n{i}\r\n'.encode() for i in range(ROWS)]
    path.write_bytes(b"".join(lines))
    return lines


async def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    with anyio.fail_after(60):
        return await anyio.run_process([*CLI, *args], env=env, check=False)


def connect_callback(call_id: int, customer: str, created: datetime) -> bytes:
    return json.dumps(
        {
            "callID": call_id,
            "callbackType": "connect",
            "event": "agent-connected",
            "customerNum": customer,
            "callCreated": created.isoformat().replace("+00:00", "Z"),
        }
    ).encode()


@pytest.mark.slow
async def test_a_killed_load_is_resolved_and_finished_with_every_lead_sent_once(
    tmp_path: Path,
) -> None:
    leads = tmp_path / "leads.csv"
    lines = write_leads(leads)
    journal = tmp_path / "load.journal"
    store_path = tmp_path / "callbacks.db"
    loader: list[int] = []

    def kill_at_fourth(request: ReceivedRequest) -> None:
        if request.index == 3:  # batch 3 journalled in flight, then the loader dies
            os.kill(loader[0], signal.SIGKILL)

    # One request at a time: batch 0 accepted; batch 1 appended but its answer lost
    # (unknown); batch 2 accepted; batch 3 never appended (the loader killed meanwhile).
    faults = FaultPlan(script=[None, Fault.DROP, None, Fault.HANG])
    append = ["append", CAMPAIGN, str(leads), "--checkpoint", str(journal)]
    append += ["--batch-size", str(BATCH), "--concurrency", "1", "--max-attempts", "1"]
    async with FakeRyngServer(
        access_token=TOKEN, faults=faults, on_request=kill_at_fourth
    ) as server:
        env = env_for(server.base_url)
        with anyio.fail_after(60):
            async with await anyio.open_process(
                [*CLI, *append], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            ) as process:
                loader.append(process.pid)
                code = await process.wait()
        assert code == -signal.SIGKILL
        first_run = Counter(lead["number"] for lead in server.leads)
        assert set(first_run) == {number(i) for i in range(30)}  # batches 0, 1, 2

        # checkpoint show: the two batches that may be in Ryng, with their lines.
        shown = await cli("checkpoint", "show", str(journal), "--file", str(leads), env=env)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        assert "2 batches may or may not be in Ryng" in text
        assert "batch 1: leads 10-19, lines 12-21 of" in text
        assert "batch 3: leads 30-39, lines 32-41 of" in text
        assert "left by a run that stopped" in text

        # export --state unknown: the header and exactly those rows, byte for byte.
        out = tmp_path / "unknown.csv"
        exported = await cli(
            "checkpoint", "export", str(journal), "--file", str(leads),
            "--state", "unknown", "-o", str(out), env=env,
        )  # fmt: skip
        assert exported.returncode == 0, exported.stderr
        assert out.read_bytes() == b"".join([lines[0], *lines[11:21], *lines[31:41]])

        # A callback proves batch 1 reached Ryng; batch 3's lead was called before this
        # load began (an older load's call): no proof.
        async with SQLiteCallbackStore(store_path) as store:
            now = datetime.now(UTC)
            for body in (
                connect_callback(1, number(14), now),
                connect_callback(2, number(33), datetime(2023, 2, 1, tzinfo=UTC)),
                connect_callback(3, number(5), now),  # an accepted batch's lead
            ):
                assert await store.add(parse_callback(body), body)
        proven = await cli(
            "checkpoint", "resolve", str(journal), "--callbacks", str(store_path),
            "--file", str(leads), env=env,
        )  # fmt: skip
        assert proven.returncode == 1, proven.stderr  # batch 3 is still open
        assert "batch 1: leads 10-19 resolved as accepted" in proven.stdout.decode()
        summary = SQLiteJournal.inspect(journal)
        assert [b.index for b in summary.uncertain] == [3]
        assert [(r.index, r.decision) for r in summary.resolved] == [(1, Decision.ACCEPTED)]
        assert "callback of call 1" in summary.resolved[0].note

        # Checked in the console: batch 3's leads are not there.
        by_hand = await cli(
            "checkpoint", "resolve", str(journal), "--as", "not-received", "--lines", "35",
            "--file", str(leads), "--note", "not in the console", env=env,
        )  # fmt: skip
        assert by_hand.returncode == 0, by_hand.stderr
        shown = await cli("checkpoint", "show", str(journal), env=env)
        text = shown.stdout.decode()
        assert "may or may not be in Ryng" not in text
        assert "batch 3: leads 30-39 (in_flight) resolved as not-received" in text
        assert "not in the console" in text

        # The rerun sends batch 3 and the rest, once each, and exits 0.
        rerun = await cli(*append, env=env)
        assert rerun.returncode == 0, rerun.stderr.decode()
        record = tmp_path / "record.jsonl"
        write_record(server, record)  # what fake-server --record writes
    received = Counter(lead["number"] for lead in server.leads)
    assert received == Counter(number(i) for i in range(ROWS))  # every lead exactly once
    held = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted((x["lead"]["number"], x["count"]) for x in held) == [
        (number(i), 1) for i in range(ROWS)
    ]
    after = SQLiteJournal.read_batches(journal)
    assert {b.state for b in after} == {BatchState.ACCEPTED}
    assert not any(b.maybe_duplicated for b in after)


# --- the Python API ---------------------------------------------------------------------

IDENTITY = LoadIdentity(campaign_id="42", batch_size=10, max_batch_bytes=65536, options=b"{}")


def where(index: int) -> dict[str, Any]:
    return {"start": index * 10, "count": 10, "digest": bytes([index]) * 16}


async def unknown_journal(path: Path) -> None:
    """Batch 0 accepted, 1 unknown (a resend: maybe duplicated), 2 failed, 3 in flight."""
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        for index in range(4):
            await journal.in_flight(index, **where(index), attempt=1, maybe_duplicated=index == 1)
        await journal.settled(0, state=BatchState.ACCEPTED, attempts=1, status=200, message="")
        await journal.settled(1, state=BatchState.UNKNOWN, attempts=2, status=None, message="")
        await journal.settled(2, state=BatchState.FAILED, attempts=1, status=500, message="")


async def test_resolve_records_each_decision_and_the_next_run_sees_it(tmp_path: Path) -> None:
    path = tmp_path / "j"
    await unknown_journal(path)
    made = SQLiteJournal.resolve(path, "not-received", batches=[1], note="not in the console")
    assert [(r.index, r.decision, r.previous_state) for r in made] == [
        (1, Decision.NOT_RECEIVED, BatchState.UNKNOWN)
    ]
    made = SQLiteJournal.resolve(path, Decision.ACCEPTED)  # every open one left: batch 3
    assert [(r.index, r.previous_state, r.ranges) for r in made] == [
        (3, BatchState.IN_FLIGHT, ((30, 10),))
    ]
    summary = SQLiteJournal.inspect(path)
    assert summary.uncertain == ()
    assert [(r.index, r.decision, r.note) for r in summary.resolved] == [
        (1, Decision.NOT_RECEIVED, "not in the console"),
        (3, Decision.ACCEPTED, ""),
    ]
    assert summary.resolved[0].at <= summary.resolved[1].at <= datetime.now(UTC)
    batches = {b.index: b for b in SQLiteJournal.read_batches(path)}
    assert batches[1].state is BatchState.SKIPPED
    assert not batches[1].maybe_duplicated
    assert batches[3].state is BatchState.ACCEPTED
    assert batches[3].message == "resolved as accepted"
    assert batches[1].message == "resolved as not received: not in the console"
    # The next run: batch 1 is sent as a fresh batch, not a maybe-duplicated resend.
    async with await SQLiteJournal(path).open(IDENTITY) as journal:
        prior = journal.prior(1, **where(1))
        assert prior is not None
        assert prior.state is BatchState.SKIPPED
        await journal.in_flight(1, **where(1), attempt=1)
        assert not journal.batches[1].maybe_duplicated


async def test_resolve_refuses_batches_that_are_not_open_and_records_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    await unknown_journal(path)
    with pytest.raises(CheckpointError, match=r"not in flight or unknown: batch 0 \(accepted\)"):
        SQLiteJournal.resolve(path, "accepted", batches=[0, 1])
    with pytest.raises(CheckpointError, match="not in the journal: batch 9"):
        SQLiteJournal.resolve(path, "accepted", batches=[9])
    with pytest.raises(ValueError, match="'maybe'"):
        SQLiteJournal.resolve(path, "maybe")
    summary = SQLiteJournal.inspect(path)
    assert [b.index for b in summary.uncertain] == [1, 3]
    assert summary.resolved == ()


async def test_resolve_is_refused_while_a_load_holds_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "j"
    await unknown_journal(path)
    async with await SQLiteJournal(path).open(IDENTITY):
        with pytest.raises(CheckpointError, match=rf"held by a live load \(pid {os.getpid()}\)"):
            SQLiteJournal.resolve(path, "accepted")
        refused = await anyio.run_process(
            [*CLI, "checkpoint", "resolve", str(path), "--as", "accepted", "--all"], check=False
        )
    assert refused.returncode == 2
    assert b"held by a live load" in refused.stderr
    assert [b.index for b in SQLiteJournal.inspect(path).uncertain] == [1, 3]
