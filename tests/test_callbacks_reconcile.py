"""Tests for ryng_async.callbacks.reconcile: a real load with faults, callbacks with gaps.

The load runs against `FakeRyngServer` with scripted faults; the callbacks are made from
what the server recorded (so a dropped batch that was appended gets callbacks, as it
would from Ryng), posted over HTTP to the receiver with duplicates and late arrivals,
and the expected status of every lead is worked out independently of `reconcile`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import TOKEN
from test_callback_events import CONNECT_EXAMPLE, TERMINAL_EXAMPLE

from ryng_async import BulkReport, ConfigurationError, Lead, RetryPolicy, RyngClient
from ryng_async.callbacks import (
    JSONLinesCallbackStore,
    LeadStatus,
    SQLiteCallbackStore,
    Status,
    StoredCallback,
    create_app,
    parse_callback,
    reconcile,
    reconcile_to_file,
)
from ryng_async.testing import FakeRyngServer, Fault, FaultPlan

pytestmark = pytest.mark.anyio

BATCH = 10
LEADS = 200
# Batch 2 fails (500, no retries), batch 5 is appended but its answer is lost (drop).
SCRIPT: list[Fault | None] = [None, None, Fault.ERROR_500, None, None, Fault.DROP]


def number(i: int) -> str:
    # Like the vendor's example, some numbers repeat: lead 21k+1 reuses lead 21k's.
    base = i - 1 if i % 21 == 1 else i
    return f"+91987{base:07d}"


def make_leads() -> list[dict[str, Any]]:
    leads: list[dict[str, Any]] = []
    for i in range(LEADS):
        lead = {"number": number(i), "customField1": f"name {i}", "customField3": f"crm-{i}"}
        if i % 40 == 17:
            lead["number"] = "12345"  # invalid: not E.164
        leads.append(lead)
    return leads


def callback(kind: str, call_id: int, lead: dict[str, Any], **fields: Any) -> bytes:
    example = CONNECT_EXAMPLE if kind == "connect" else TERMINAL_EXAMPLE
    body = json.loads(example)
    body.update(
        callID=call_id,
        customerNum=lead["number"],
        customFields={"customField1": lead["customField1"], "customField3": lead["customField3"]},
        **fields,
    )
    return json.dumps(body).encode()


class Plan:
    """What Ryng reports for each lead it holds: the callbacks and the expected status."""

    def __init__(self, appended: list[dict[str, Any]]) -> None:
        self.bodies: list[bytes] = []
        self.expected: dict[str, tuple[Status, int | None]] = {}  # crm id -> status, call
        for lead in appended:
            i = int(lead["customField3"].removeprefix("crm-"))
            call_id = 1000 + i
            if i % 7 == 0:
                continue  # a gap: no callback yet
            connect = callback("connect", call_id, lead)
            if i % 5 == 0:
                self.bodies.append(connect)
                self.expected[lead["customField3"]] = (Status.CONNECTED, call_id)
                continue
            terminal = callback(
                "terminal", call_id, lead, disposition=f"disp-{i}", talktime=i, callLogID=i
            )
            if i % 4 == 0:
                self.bodies += [terminal, connect]  # late arrival of the connect callback
            else:
                self.bodies += [connect, terminal]
            if i % 3 == 0:
                self.bodies.append(terminal)  # a resend
            self.expected[lead["customField3"]] = (Status.ENDED, call_id)
        orphan = {"number": "+15550000000", "customField1": "x", "customField3": "crm-other"}
        self.bodies.append(callback("terminal", 99, orphan))


@contextlib.asynccontextmanager
async def receiver(store: SQLiteCallbackStore | JSONLinesCallbackStore) -> AsyncIterator[str]:
    runner = web.AppRunner(create_app(store=store))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/callbacks"
    finally:
        await runner.cleanup()


class Load:
    def __init__(
        self,
        leads: list[dict[str, Any]],
        report: BulkReport,
        plan: Plan,
        db: Path,
        jsonl: Path,
    ) -> None:
        self.leads = leads
        self.report = report
        self.plan = plan
        self.db = db
        self.jsonl = jsonl


@pytest.fixture
async def load(tmp_path: Path) -> Load:
    leads = make_leads()
    async with FakeRyngServer(access_token=TOKEN, faults=FaultPlan(script=SCRIPT)) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=RetryPolicy.no_retries()
        ) as client:
            report = await client.bulk_append("42", leads, batch_size=BATCH, concurrency=1)
        appended = list(server.leads)
    plan = Plan(appended)
    db, jsonl = tmp_path / "callbacks.db", tmp_path / "callbacks.jsonl"
    # Durability is not under test here: skip the flushes to disk.
    async with (
        SQLiteCallbackStore(db, synchronous="normal") as sqlite,
        JSONLinesCallbackStore(jsonl, fsync=False) as lines,
    ):
        for store in (sqlite, lines):
            async with receiver(store) as url, aiohttp.ClientSession() as http:
                for body in plan.bodies:
                    async with http.post(url, data=body) as answer:
                        assert answer.status == 200
    return Load(leads, report, plan, db, jsonl)


def expected_line(load: Load, position: int) -> tuple[str, Status, int | None]:
    """The load outcome and status of lead ``position``, from the report and the plan."""
    lead = load.leads[position]
    if lead["number"] == "12345":
        return "invalid", Status.INVALID, None
    batch = next(
        b
        for b in load.report.batches
        if b.start <= position and position in _positions(load, b.index)
    )
    outcome = batch.outcome.value
    if outcome == "failed":
        return outcome, Status.FAILED, None
    status, call = load.plan.expected.get(lead["customField3"], (None, None))
    if status is None:
        return outcome, Status.AWAITING if outcome == "accepted" else Status.UNKNOWN, None
    return outcome, status, call


def _positions(load: Load, index: int) -> list[int]:
    valid = [p for p, lead in enumerate(load.leads) if lead["number"] != "12345"]
    return valid[index * BATCH : (index + 1) * BATCH]


async def lines_of(*args: Any, **kwargs: Any) -> tuple[list[LeadStatus], Any]:
    async with reconcile(*args, **kwargs) as rec:
        lines = [line async for line in rec]
    return lines, rec.summary


async def test_the_load_has_every_kind_of_outcome(load: Load) -> None:
    report = load.report
    assert [b.outcome.value for b in sorted(report.batches, key=lambda b: b.index)][:7] == [
        "accepted",
        "accepted",
        "failed",
        "accepted",
        "accepted",
        "unknown",
        "accepted",
    ]
    assert report.invalid == 5
    assert report.total == LEADS


@pytest.mark.parametrize("source", ["sqlite-file", "jsonl-file", "store-object", "iterator"])
async def test_every_lead_gets_the_status_the_callbacks_say(load: Load, source: str) -> None:
    store: Any
    if source == "sqlite-file":
        store = load.db
    elif source == "jsonl-file":
        store = load.jsonl
    elif source == "store-object":
        store = SQLiteCallbackStore(load.db)
    else:
        store = JSONLinesCallbackStore(load.jsonl).iter_events()

    lines, summary = await lines_of(load.leads, load.report, store, key="customField3")
    if isinstance(store, SQLiteCallbackStore):
        await store.aclose()

    assert [line.position for line in lines] == list(range(LEADS))
    for line in lines:
        lead = load.leads[line.position]
        outcome, status, call = expected_line(load, line.position)
        assert (line.load, line.status, line.call_id) == (outcome, status, call), line
        assert line.key == lead["customField3"]
        assert line.number == lead["number"]
        if status is Status.ENDED:
            i = line.position
            assert line.disposition == f"disp-{i}"
            assert line.talktime == i
            assert line.last_event == "call-ended"
            assert line.call_ended == datetime(2023, 1, 19, 8, 12, 52, tzinfo=UTC)
            assert line.recording_url is not None
            assert line.agent_username == "ashwin@example.com"
        if status is Status.CONNECTED:
            assert line.last_event == "agent-connected"
            assert line.disposition is None
        if status in (Status.ENDED, Status.CONNECTED):
            assert (line.leads_with_key, line.calls) == (1, 1)

    # The dropped batch was appended: its leads show callbacks though the load said unknown.
    dropped = [line for line in lines if line.batch == 5]
    assert {line.load for line in dropped} == {"unknown"}
    assert {line.status for line in dropped} >= {Status.ENDED, Status.CONNECTED}

    counts = Counter(line.status.value for line in lines)
    assert summary.by_status == dict(counts)
    assert summary.leads == LEADS
    assert summary.report_total == LEADS
    assert summary.by_load["invalid"] == 5
    assert summary.by_load["failed"] == BATCH
    assert summary.unmatched_calls == 1  # the orphan
    assert summary.callbacks == _distinct_callbacks(load)
    assert summary.callbacks_without_key == 0
    assert summary.ambiguous_keys == 0


def _distinct_callbacks(load: Load) -> int:
    return len({(json.loads(b)["callID"], json.loads(b)["callbackType"]) for b in load.plan.bodies})


async def test_matching_by_number_reports_shared_numbers_as_ambiguous(load: Load) -> None:
    by_crm, _ = await lines_of(load.leads, load.report, load.db, key="customField3")
    by_number, summary = await lines_of(load.leads, load.report, load.db, key="number")

    candidates = Counter(line.number for line in by_crm if line.load in ("accepted", "unknown"))
    called = {line.number for line in by_crm if line.status in (Status.ENDED, Status.CONNECTED)}
    ambiguous_keys = {n for n, count in candidates.items() if count > 1 and n in called}
    assert ambiguous_keys  # the fixture repeats numbers on purpose
    assert summary.ambiguous_keys == len(ambiguous_keys)
    for crm, line in zip(by_crm, by_number, strict=True):
        assert line.key == crm.number
        if line.load in ("accepted", "unknown") and line.number in ambiguous_keys:
            assert line.status is Status.AMBIGUOUS
            assert line.leads_with_key == candidates[line.number] > 1
            assert line.calls >= 1
            assert line.call_id is None  # never a guessed call
            assert line.disposition is None
        else:
            assert (line.status, line.call_id) == (crm.status, crm.call_id)
    assert summary.by_status["ambiguous"] == sum(
        1 for line in by_number if line.status is Status.AMBIGUOUS
    )


async def test_the_deadline_turns_awaiting_into_overdue(load: Load) -> None:
    loaded_at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    early, _ = await lines_of(
        load.leads,
        load.report,
        load.db,
        key="customField3",
        deadline=timedelta(hours=1),
        loaded_at=loaded_at,
        now=loaded_at + timedelta(minutes=30),
    )
    late, summary = await lines_of(
        load.leads,
        load.report,
        load.db,
        key="customField3",
        deadline=timedelta(hours=1),
        loaded_at=loaded_at,
        now=loaded_at + timedelta(hours=2),
    )
    awaiting = [line.position for line in early if line.status is Status.AWAITING]
    assert awaiting
    assert [line.position for line in late if line.status is Status.OVERDUE] == awaiting
    assert Status.AWAITING.value not in summary.by_status


async def test_report_forms_and_leads_forms_agree(load: Load, tmp_path: Path) -> None:
    reference, _ = await lines_of(load.leads, load.report, load.db, key="customField3")
    report_file = tmp_path / "report.json"
    report_file.write_bytes(load.report.to_json())

    async def async_leads() -> AsyncIterator[Lead]:
        for lead in load.leads:
            yield Lead.from_wire(lead)

    for report in (load.report.to_json(), load.report.to_dict(), report_file, str(report_file)):
        lines, _ = await lines_of(async_leads(), report, load.db, key="customField3")
        assert lines == reference


async def test_written_as_csv_and_jsonl(load: Load) -> None:
    out = io.BytesIO()
    summary = await reconcile_to_file(
        reconcile(load.leads, load.report, load.db, key="customField3"), out, format="csv"
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert len(rows) == LEADS == summary.leads
    assert tuple(rows[0]) == LeadStatus.__struct_fields__
    assert rows[0]["status"] == Status.AWAITING.value  # lead 0: i % 7 == 0, no callback
    ended = next(r for r in rows if r["status"] == "ended")
    assert ended["call_ended"] == "2023-01-19T08:12:52+00:00"

    out = io.BytesIO()
    await reconcile_to_file(
        reconcile(load.leads, load.report, load.db, key="customField3"), out, format="jsonl"
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["position"] for line in lines] == list(range(LEADS))
    assert lines[1]["status"] == rows[1]["status"]

    table = summary.table()
    assert "ended" in table
    assert f"{LEADS:,}" in table
    assert "1 call matches no lead of this load" in table


async def test_written_to_a_file_it_leaves_no_work_file_open(load: Load, tmp_path: Path) -> None:
    # It left its SQLite work file open and on disk: a ResourceWarning on Python 3.13,
    # a ryng-reconcile-* folder left in the temp dir by every `ryng-async reconcile`.
    work = tmp_path / "work"
    work.mkdir()
    for fmt in ("csv", "jsonl"):
        lines = reconcile(load.leads, load.report, load.db, key="customField3", work_dir=work)
        await reconcile_to_file(lines, io.BytesIO(), format=fmt)
        assert list(work.iterdir()) == []
    failing = reconcile(rows(3), report_of(4, [(0, 4, "accepted")]), load.db, work_dir=work)
    with pytest.raises(ConfigurationError, match="the input ended after 3 leads"):
        await reconcile_to_file(failing, io.BytesIO())
    assert list(work.iterdir()) == []


# -- edge cases on hand-made reports --------------------------------------------------


def report_of(
    total: int, batches: list[tuple[int, int, str]], invalid: tuple[int, ...] = ()
) -> Any:
    return {
        "total": total,
        "batches": [
            {"index": i, "start": start, "count": count, "outcome": outcome}
            for i, (start, count, outcome) in enumerate(batches)
        ],
        "invalid_leads": [{"position": p, "field": "number", "reason": "bad"} for p in invalid],
    }


def rows(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"number": f"+9198{i:08d}", "customField2": f"id-{i}"}


async def empty_store(tmp_path: Path) -> Path:
    path = tmp_path / "empty.db"
    async with SQLiteCallbackStore(path):
        pass
    return path


async def test_a_load_that_stopped_early(tmp_path: Path) -> None:
    # 6 leads read of 10 given; leads 4 and 5 were read but never sent; 6.. never read.
    report = report_of(6, [(0, 2, "accepted"), (2, 2, "skipped")])
    lines, summary = await lines_of(rows(10), report, await empty_store(tmp_path))

    assert [(line.load, line.status.value) for line in lines] == [
        ("accepted", "awaiting"),
        ("accepted", "awaiting"),
        ("skipped", "skipped"),
        ("skipped", "skipped"),
        ("skipped", "skipped"),
        ("skipped", "skipped"),
        ("not_read", "not_read"),
        ("not_read", "not_read"),
        ("not_read", "not_read"),
        ("not_read", "not_read"),
    ]
    assert [line.batch for line in lines[:6]] == [0, 0, 1, 1, None, None]
    assert "the report counts 6 leads read, the input has 10" in summary.table()


async def test_batches_listed_out_of_order_and_invalid_gaps(tmp_path: Path) -> None:
    report = report_of(7, [(0, 2, "accepted"), (3, 3, "failed")], invalid=(2, 6))
    report["batches"].reverse()  # completion order, not input order
    lines, _ = await lines_of(rows(7), report, await empty_store(tmp_path))

    assert [line.status.value for line in lines] == [
        "awaiting",
        "awaiting",
        "invalid",
        "failed",
        "failed",
        "failed",
        "invalid",
    ]


async def test_a_lead_without_the_key_cannot_match(tmp_path: Path) -> None:
    leads = [{"number": "+919800000001"}, {"number": "+919800000002", "customField2": "id-1"}]
    lines, _ = await lines_of(
        leads, report_of(2, [(0, 2, "accepted")]), await empty_store(tmp_path), key="customField2"
    )
    assert [line.status for line in lines] == [Status.NO_KEY, Status.AWAITING]


async def test_callbacks_without_the_key_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    async with SQLiteCallbackStore(path) as store:
        await store.add(parse_callback(CONNECT_EXAMPLE), CONNECT_EXAMPLE)
    for source in (path, _events(path)):
        _, summary = await lines_of(
            rows(1), report_of(1, [(0, 1, "accepted")]), source, key="customField9"
        )
        assert (summary.callbacks, summary.callbacks_without_key) == (1, 1)


async def _events(path: Path) -> AsyncIterator[StoredCallback]:
    async with SQLiteCallbackStore(path) as store:
        async for stored in store.iter_events():
            yield stored


@pytest.mark.parametrize(
    ("report", "leads", "message"),
    [
        (report_of(4, [(1, 4, "accepted")]), 4, "batch 0 starts at input position 1"),
        (report_of(4, [(0, 4, "accepted")]), 3, "the input ended after 3 leads"),
    ],
)
async def test_leads_that_do_not_match_the_report_are_refused(
    tmp_path: Path, report: Any, leads: int, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await lines_of(rows(leads), report, await empty_store(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key": "customField0"}, "key must be"),
        ({"key": "name"}, "key must be"),
        ({"deadline": timedelta(hours=1)}, "needs loaded_at"),
        ({"loaded_at": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"report": b"{}"}, "not a bulk load report"),
        ({"report": 42}, "report must be"),
        ({"report": "/nonexistent/report.json"}, "cannot read the report"),
    ],
)
async def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    options: dict[str, Any] = {"report": report_of(0, []), **kwargs}
    report = options.pop("report")
    with pytest.raises(ConfigurationError, match=message):
        reconcile([], report, tmp_path / "x.db", **options)


async def test_a_foreign_file_as_store(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigurationError, match="not a ryng_async callback store"):
        await lines_of(rows(1), report_of(1, [(0, 1, "accepted")]), path)


async def test_the_work_file_is_removed(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    async with reconcile(
        rows(3), report_of(3, [(0, 3, "accepted")]), await empty_store(tmp_path), work_dir=work
    ) as rec:
        async for _ in rec:
            assert len(list(work.iterdir())) == 1
    assert list(work.iterdir()) == []
    with pytest.raises(RuntimeError, match="iterated once"):
        async for _ in rec:
            pass


def _keyed_callback(call_id: int, number: str, value: str) -> bytes:
    body = json.loads(TERMINAL_EXAMPLE)
    body.update(callID=call_id, customerNum=number, customFields={"customField2": value})
    return json.dumps(body).encode()


async def _store_of(path: Path, *bodies: bytes) -> Path:
    async with SQLiteCallbackStore(path) as store:
        for body in bodies:
            await store.add(parse_callback(body), body)
    return path


async def test_an_empty_or_blank_key_is_no_key(tmp_path: Path) -> None:
    # A blank cell is no key: were it the key "", it would join a stranger's call with an
    # empty customField2, and two blank leads would come out ambiguous with each other.
    leads = [
        {"number": "+919800000001", "customField2": ""},
        {"number": "+919800000002", "customField2": "  "},
        {"number": "+919800000003", "customField2": "id-3"},
        {"number": "+919800000004", "customField2": ""},
    ]
    path = await _store_of(
        tmp_path / "c.db",
        _keyed_callback(1, "+919811111111", ""),  # another load's call, blank key
        _keyed_callback(2, "+919822222222", " \t"),
        _keyed_callback(3, "+919800000003", "id-3"),
    )
    report = report_of(4, [(0, 4, "accepted")])
    for source in (path, _events(path)):
        lines, summary = await lines_of(leads, report, source, key="customField2")
        assert [line.status for line in lines] == [
            Status.NO_KEY,
            Status.NO_KEY,
            Status.ENDED,
            Status.NO_KEY,
        ]
        assert [line.key for line in lines] == [None, None, "id-3", None]
        assert [line.calls for line in lines] == [0, 0, 1, 0]
        assert (summary.callbacks, summary.callbacks_without_key) == (3, 2)
        assert (summary.unmatched_calls, summary.ambiguous_keys) == (0, 0)
        assert "2 callbacks carry no customField2" in summary.table()


async def test_a_callback_for_a_lead_of_a_failed_batch_says_the_batch_may_have_landed(
    tmp_path: Path,
) -> None:
    # Not "failed" (calls=1, no details) with the call counted a stranger's: that would
    # invite loading the lead again and calling the customer twice.
    leads = [{"number": f"+91980000000{i}", "customField2": f"id-{i}"} for i in range(4)]
    report = report_of(4, [(0, 2, "accepted"), (2, 2, "failed")])
    path = await _store_of(tmp_path / "c.db", _keyed_callback(77, leads[2]["number"], "id-2"))
    for source in (path, _events(path)):
        lines, summary = await lines_of(leads, report, source, key="customField2")
        assert [line.status for line in lines] == [
            Status.AWAITING,
            Status.AWAITING,
            Status.FAILED_CALLED,
            Status.FAILED,
        ]
        called = lines[2]
        assert (called.load, called.call_id, called.calls) == ("failed", 77, 1)
        assert called.disposition is not None
        assert (summary.unmatched_calls, summary.calls_on_failed_leads) == (0, 1)
        table = summary.table()
        assert "match no lead" not in table
        assert "matches no lead" not in table
        assert (
            "1 call matches 1 lead of failed batches: those batches may have reached Ryng "
            "after all; ask Ryng before loading them again"
        ) in table
        assert "failed_called" in table


async def test_the_summary_counts_in_the_singular_and_the_plural(tmp_path: Path) -> None:
    path = await _store_of(tmp_path / "c.db", _keyed_callback(9, "+919899999999", "other"))
    _, summary = await lines_of(
        rows(1), report_of(2, [(0, 1, "accepted")]), path, key="customField2"
    )
    table = summary.table()
    assert "matched by customField2; 1 callback read" in table
    assert "1 call matches no lead of this load" in table
    assert "the report counts 2 leads read, the input has 1" in table
