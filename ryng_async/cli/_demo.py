"""``ryng-async demo``: a bulk load into a fake Ryng server started in this process.

It needs nothing but this package: it starts a `FakeRyngServer` (a little latency and a
few seeded faults), bulk-loads synthetic leads into it with live progress, and checks the
report lead for lead against what the server received. Four leads have bad numbers on
purpose. The demo succeeds (exit 0) when every lead is accounted for, the server's record
agrees, and exactly the planted invalid leads were caught; it then says what each fault
did to the load.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from .. import BulkReport, Outcome, RetryPolicy, RyngClient
from ..testing import FakeRyngServer, Fault, FaultPlan
from ._common import (
    Commands,
    ExitCode,
    fraction,
    non_negative_float,
    plain,
    positive_int,
    run_async,
    say,
)
from ._progress import Meter, make_view, tick

__all__ = ["add_parser", "fault_plan", "synthetic_leads"]

_DEMO_TOKEN = "demo-token"  # noqa: S105 - the in-process fake server's token
_INVALID_EVERY = 25_000
_MAX_ATTEMPTS = 5


def synthetic_leads(count: int, *, invalid_every: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``count`` wire-form leads, lazily; every ``invalid_every``-th has a bad number."""
    for index in range(count):
        bad = invalid_every and index % invalid_every == invalid_every - 1
        yield {
            "number": "12345" if bad else f"+91{9000000000 + index}",
            "customField1": f"lead-{index}",
            "customField2": "demo",
        }


def planted_positions(count: int, invalid_every: int = _INVALID_EVERY) -> list[int]:
    """The input positions of the leads `synthetic_leads` makes invalid on purpose."""
    return list(range(invalid_every - 1, count, invalid_every))


def fault_plan(rate: float, seed: int) -> FaultPlan:
    """Mostly retryable failures, a few 429s, and rare drops whose batches end unknown."""
    return FaultPlan(
        seed=seed,
        rates={Fault.ERROR_500: rate * 0.7, Fault.RATE_LIMIT: rate * 0.25, Fault.DROP: rate * 0.05},
    )


def add_parser(commands: Commands) -> None:
    """Add ``demo`` to the command line."""
    demo = commands.add_parser(
        "demo",
        help="bulk-load synthetic leads into an in-process fake Ryng server",
        description=plain(__doc__),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.set_defaults(run=run)
    demo.add_argument("--leads", type=positive_int, default=100_000, help="leads to load")
    demo.add_argument("--batch-size", type=positive_int, default=500, help="leads per request")
    demo.add_argument(
        "--concurrency", type=positive_int, default=8, help="requests in flight at once"
    )
    demo.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    demo.add_argument(
        "--latency", type=non_negative_float, default=0.005, help="server latency, seconds"
    )
    demo.add_argument(
        "--fault-rate", type=fraction, default=0.04, help="share of requests that fail"
    )
    demo.add_argument("--seed", type=int, default=7, help="seeds faults and jitter")
    demo.add_argument(
        "--progress", choices=["auto", "bar", "log", "none"], default="auto", help="progress view"
    )
    demo.add_argument("--no-progress", action="store_true", help="same as --progress none")
    demo.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``demo``; return the exit code."""
    return run_async(lambda: _demo(args, sys.stdout))


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    import anyio

    plan = fault_plan(args.fault_rate, args.seed)
    planted = planted_positions(args.leads)
    async with FakeRyngServer(access_token=_DEMO_TOKEN, latency=args.latency, faults=plan) as srv:
        # With --json, stdout carries the report alone.
        info = sys.stderr if args.json else out
        say(
            f"A fake Ryng server runs in this process at {srv.base_url}. Loading "
            f"{args.leads:,} synthetic leads into it, in batches of {args.batch_size}, "
            f"{args.concurrency} at a time.\nOn purpose, the server fails about "
            f"{args.fault_rate:.0%} of requests (500, 429, dropped connections), and "
            f"{len(planted)} of the leads {'has a' if len(planted) == 1 else 'have'} bad "
            f"phone {'number' if len(planted) == 1 else 'numbers'}.",
            info,
        )
        retries: list[int] = []
        policy = RetryPolicy(
            max_attempts=_MAX_ATTEMPTS, initial_delay=0.05, max_delay=1.0, max_retry_after=1.0
        )
        meter = Meter(total_rows=args.leads)
        mode = "none" if args.no_progress else args.progress
        view = make_view(meter, mode=mode, log_format="text", interval=2.0, stream=info)
        report = BulkReport()
        async with RyngClient(
            base_url=srv.base_url,
            access_token=_DEMO_TOKEN,
            retry=policy,
            random_seed=args.seed,
            on_retry=lambda details: retries.append(details.attempt),
        ) as client:
            view.start()
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(tick, view)
                    try:
                        await client.bulk_append(
                            "demo",
                            synthetic_leads(args.leads, invalid_every=_INVALID_EVERY),
                            batch_size=args.batch_size,
                            concurrency=args.concurrency,
                            rate_limit=args.rate_limit,
                            on_progress=meter.update,
                            report=report,
                        )
                    finally:
                        tasks.cancel_scope.cancel()
            finally:
                view.stop()
        if args.json:
            out.write(report.to_json().decode() + "\n")
        problems = _check(report, srv, planted)
        _explain(
            report, server=srv, retries=len(retries), planted=planted, problems=problems, out=info
        )
        return ExitCode.NOT_ALL_ACCEPTED if problems else ExitCode.OK


def _check(report: BulkReport, server: FakeRyngServer, planted: list[int]) -> list[str]:
    """What, if anything, the SDK got wrong: the report must agree with the server."""
    ids = server.lead_counts("customField1")
    twice = sum(1 for count in ids.values() if count > 1)
    not_accepted = {lead["customField1"] for lead in report.failed_leads()}
    received = sum(1 for lead_id in not_accepted if lead_id in ids)
    unknown_leads = sum(
        r.count - r.accepted_count for r in report.batches if r.outcome is Outcome.UNKNOWN
    )
    caught = sorted(lead.position for lead in report.invalid_leads)
    problems = []
    if report.unaccounted:
        problems.append(f"{report.unaccounted:,} leads unaccounted for")
    if twice:
        problems.append(f"{twice:,} leads received twice")
    if server.lead_count() < report.accepted:
        problems.append("the server holds fewer leads than the report accepted")
    if received > unknown_leads:
        problems.append("leads reported as not sent were received")
    if caught != planted:
        problems.append(f"the invalid leads caught ({len(caught)}) are not the planted ones")
    return problems


def _explain(
    report: BulkReport,
    *,
    server: FakeRyngServer,
    retries: int,
    planted: list[int],
    problems: list[str],
    out: TextIO,
) -> None:
    if problems:
        say("\nDEMO FAILED (a bug in the SDK): " + "; ".join(problems), out)
        say(str(report), out)
        return
    batches = dict.fromkeys(Outcome, 0)
    for result in report.batches:
        batches[result.outcome] += 1
    sent = report.total - report.invalid
    lines = [
        "",
        f"Success: all {report.total:,} leads are accounted for, and the server's record "
        "agrees lead for lead.",
        f"  {sent:,} sent: {report.accepted:,} accepted, {report.failed:,} failed, "
        f"{report.unknown:,} unknown, {report.skipped:,} skipped",
        f"  {report.invalid:,} invalid: the planted bad numbers, all caught before sending "
        f"(leads #{', #'.join(map(str, planted))})"
        if planted
        else "  0 invalid",
        "What each fault did:",
    ]
    injected = server.faults_injected
    failed_batches = batches[Outcome.FAILED]
    recovered = (
        "every batch recovered"
        if not failed_batches
        else (
            f"{failed_batches} batches still failed after {_MAX_ATTEMPTS} attempts: safe to send "
            "again (report.failed_leads())"
        )
    )
    explanations = {
        Fault.ERROR_500: f"500 Internal Server Error: retried with backoff; {recovered}",
        Fault.RATE_LIMIT: "429 Too Many Requests: the client slowed down, honoured "
        "Retry-After and retried",
        Fault.DROP: f"connection dropped after the server took the batch: "
        f"{batches[Outcome.UNKNOWN]} batches ({report.unknown:,} leads) are 'unknown' and were "
        "not resent, since a resend could call customers twice (the API has no idempotency "
        "key); check them before sending them again",
    }
    for fault, count in sorted(injected.items(), key=lambda item: item[0].value):
        meaning = explanations.get(fault, "injected")
        lines.append(f"  {fault.value:>4} x {count:<5} {meaning}")
    if not injected:
        lines.append("  none were injected (--fault-rate 0)")
    lines.append(
        f"{retries:,} retries in all; {len(report.batches):,} batches: "
        + ", ".join(f"{n:,} {o.value}" for o, n in batches.items())
        + f"; {report.elapsed:.1f}s, {report.leads_per_second:,.0f} leads/s accepted"
    )
    lines.append(
        f"The SDK's own one-line report: {report}\n(there 'ok' means every lead was "
        "accepted, which the planted faults and invalid leads rule out on purpose)"
    )
    say("\n".join(lines), out)
