"""The ``ryng-async`` command line: ``demo`` and ``fake-server``.

``demo`` needs nothing but this package: it starts a `FakeRyngServer` in-process (a little
latency and a few seeded faults), bulk-loads synthetic leads into it with a live progress
bar (rich, from the ``cli`` extra; plain lines without it) and prints the report, checked
against what the server received. It exits 1 if any lead is unaccounted for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from ._client import RyngClient
from ._config import RetryPolicy
from ._report import BulkReport, Outcome, Progress
from ._version import __version__
from .testing import FakeRyngServer, Fault, FaultPlan

__all__ = ["main"]

_DEMO_TOKEN = "demo-token"  # noqa: S105 - the in-process fake server's token


def synthetic_leads(count: int, *, invalid_every: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``count`` wire-form leads, lazily; every ``invalid_every``-th has a bad number."""
    for index in range(count):
        bad = invalid_every and index % invalid_every == invalid_every - 1
        yield {
            "number": "12345" if bad else f"+91{9000000000 + index}",
            "customField1": f"lead-{index}",
            "customField2": "demo",
        }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ryng-async", description="Ryng Append Campaign API tools."
    )
    parser.add_argument("--version", action="version", version=f"ryng-async {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="bulk-load synthetic leads into an in-process fake Ryng server",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--leads", type=_positive_int, default=100_000, help="leads to load")
    demo.add_argument("--batch-size", type=_positive_int, default=500)
    demo.add_argument("--concurrency", type=_positive_int, default=8)
    demo.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    demo.add_argument("--latency", type=float, default=0.005, help="server latency, seconds")
    demo.add_argument("--fault-rate", type=float, default=0.04, help="share of requests that fail")
    demo.add_argument("--seed", type=int, default=7, help="seeds faults and jitter")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")

    fake = commands.add_parser(
        "fake-server",
        help="run a fake Ryng server on 127.0.0.1",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fake.add_argument("--port", type=int, default=8080)
    fake.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    fake.add_argument("--token", default="test-token", help="the access token accepted")
    fake.add_argument("--latency", type=float, default=0.0)
    fake.add_argument("--rate-limit", type=float, default=None)
    fake.add_argument("--fault-rate", type=float, default=0.0)
    fake.add_argument("--seed", type=int, default=0)
    fake.add_argument("--no-record", action="store_true", help="keep counts only")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fault_plan(rate: float, seed: int) -> FaultPlan:
    if not 0 <= rate <= 1:
        raise SystemExit(f"ryng-async: --fault-rate must be between 0 and 1, got {rate}")
    # Mostly retryable failures, a few 429s, and rare drops whose batches end "unknown".
    return FaultPlan(
        seed=seed,
        rates={Fault.ERROR_500: rate * 0.7, Fault.RATE_LIMIT: rate * 0.25, Fault.DROP: rate * 0.05},
    )


class _Bar:
    """A live progress display: rich if installed, else a line every few percent."""

    def __init__(self, total: int, enabled: bool, out: TextIO) -> None:
        self._total = total
        self._out = out
        self._progress: Any = None
        self._next_line = 0
        if not enabled:
            self._enabled = False
            return
        self._enabled = True
        with contextlib.suppress(ImportError):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]loading"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
            )
            self._task = self._progress.add_task("load", total=total, detail="")

    def __enter__(self) -> _Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, progress: Progress) -> None:
        if not self._enabled:
            return
        done = progress.accepted + progress.failed + progress.unknown + progress.skipped
        done += progress.invalid
        detail = (
            f"accepted {progress.accepted:,}  failed {progress.failed:,}  "
            f"unknown {progress.unknown:,}  invalid {progress.invalid:,}"
        )
        if self._progress is not None:
            self._progress.update(self._task, completed=done, detail=detail)
        elif done >= self._next_line:
            self._out.write(f"{done:,}/{self._total:,} leads  {detail}\n")
            self._next_line = done + max(self._total // 20, 1)


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    plan = _fault_plan(args.fault_rate, args.seed)
    async with FakeRyngServer(access_token=_DEMO_TOKEN, latency=args.latency, faults=plan) as srv:
        # With --json, stdout carries the report alone.
        info = sys.stderr if args.json else out
        info.write(
            f"fake Ryng server on {srv.base_url}; loading {args.leads:,} leads "
            f"(batch {args.batch_size}, concurrency {args.concurrency}, "
            f"~{args.fault_rate:.0%} faults and an invalid lead every 25,000, on purpose)\n"
        )
        retries: list[int] = []
        policy = RetryPolicy(initial_delay=0.05, max_delay=1.0, max_retry_after=1.0)
        async with RyngClient(
            base_url=srv.base_url,
            access_token=_DEMO_TOKEN,
            retry=policy,
            random_seed=args.seed,
            on_retry=lambda details: retries.append(details.attempt),
        ) as client:
            report = BulkReport()
            with _Bar(args.leads, not args.no_progress, out) as bar:
                await client.bulk_append(
                    "demo",
                    synthetic_leads(args.leads, invalid_every=25_000),
                    batch_size=args.batch_size,
                    concurrency=args.concurrency,
                    rate_limit=args.rate_limit,
                    on_progress=bar.update,
                    report=report,
                )
        return _print_report(report, srv, len(retries), args.json, out)


def _print_report(
    report: BulkReport, server: FakeRyngServer, retries: int, as_json: bool, out: TextIO
) -> int:
    if as_json:
        out.write(report.to_json().decode() + "\n")
    else:
        out.write(f"\n{report}\n")
        outcomes = dict.fromkeys(Outcome, 0)
        for result in report.batches:
            outcomes[result.outcome] += 1
        out.write("batches: " + ", ".join(f"{n} {o.value}" for o, n in outcomes.items()) + "\n")
        faults = ", ".join(f"{n} x {f.value}" for f, n in server.faults_injected.items())
        out.write(f"retries: {retries}; faults injected: {faults or 'none'}\n")
        for invalid in report.invalid_leads[:5]:
            out.write(f"invalid lead #{invalid.position}: {invalid.field}: {invalid.reason}\n")
    verdict = sys.stderr if as_json else out
    # The report must agree with what the server received, lead for lead.
    ids = server.lead_counts("customField1")
    twice = sum(1 for count in ids.values() if count > 1)
    not_accepted = {lead["customField1"] for lead in report.failed_leads()}
    received = sum(1 for lead_id in not_accepted if lead_id in ids)
    unknown_leads = sum(r.count for r in report.batches if r.outcome is Outcome.UNKNOWN)
    problems = []
    if report.unaccounted:
        problems.append(f"{report.unaccounted} leads unaccounted for")
    if twice:
        problems.append(f"{twice} leads received twice")
    if server.lead_count() < report.accepted:
        problems.append("the server holds fewer leads than the report accepted")
    if received > unknown_leads:
        problems.append("leads reported not sent were received")
    if problems:
        verdict.write("ACCOUNTING ERROR: " + "; ".join(problems) + "\n")
        return 1
    verdict.write(
        f"accounted: {report.total:,} read = {report.accepted:,} accepted + "
        f"{report.failed:,} failed + {report.unknown:,} unknown + {report.skipped:,} skipped "
        f"+ {report.invalid:,} invalid; the server's record agrees\n"
    )
    return 0


async def _fake_server(args: argparse.Namespace, out: TextIO) -> int:
    server = FakeRyngServer(
        access_token=args.token,
        latency=args.latency,
        rate_limit=args.rate_limit,
        faults=_fault_plan(args.fault_rate, args.seed),
        record=not args.no_record,
        host=args.host,
        port=args.port,
    )
    async with server:
        out.write(
            f"fake Ryng server listening on {server.base_url} (Ctrl-C to stop)\n"
            f"token: {server.access_token}\n"
            f"try:   curl -X POST {server.url('42')} -H 'x-access-token: {server.access_token}' "
            "-H 'Content-Type: application/json' "
            """-d '{"customerData":{"jsonData":[{"number":"+919876543210"}]}}'\n"""
        )
        out.flush()
        await asyncio.Event().wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    out = sys.stdout
    command = _demo if args.command == "demo" else _fake_server
    try:
        return asyncio.run(command(args, out))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
