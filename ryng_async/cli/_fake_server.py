"""``ryng-async fake-server``: a fake Ryng API on 127.0.0.1, to test a pipeline end to end.

Every option of `FakeRyngServer` is a flag: port, token, latency, a rate for each fault,
a request-rate limit, the seed. It prints its base URL and the variables to point
``ryng-async append`` (or any `RyngClient`) at it, serves until SIGINT or SIGTERM, then
prints a summary of what it received, and exits 0. With ``--record PATH`` it then also
writes every lead it appended to PATH as JSON Lines, one line per distinct lead and
campaign, in the order first received: ``{"campaign_id": "42", "count": 1, "lead":
{...}}`` (``count`` above 1: the lead arrived that many times), to check a pipeline's
result without Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

import msgspec

from ..testing import FakeRyngServer, Fault, FaultPlan
from ._common import (
    CliError,
    Commands,
    ExitCode,
    fraction,
    non_negative_float,
    plain,
    positive_int,
    run_async,
    say,
)
from ._demo import fault_plan

__all__ = ["add_parser"]

_FAULT_FLAGS = {
    Fault.ERROR_500: ("--fault-500", "answer 500 (nothing recorded)"),
    Fault.RATE_LIMIT: ("--fault-429", "answer 429 with Retry-After (nothing recorded)"),
    Fault.ERROR_TRUE: ("--fault-error-true", 'answer 200 with "error": true (nothing recorded)'),
    Fault.BAD_REQUEST: ("--fault-400", "answer 400 (nothing recorded)"),
    Fault.RESET: ("--fault-reset", "reset the connection before reading (nothing recorded)"),
    Fault.DROP: ("--fault-drop", "record the leads, then drop the connection unanswered"),
    Fault.HANG: ("--fault-hang", "never answer (nothing recorded)"),
    Fault.BAD_GATEWAY: ("--fault-502", "record the leads, then answer a proxy's HTML 502"),
    Fault.GATEWAY_TIMEOUT: ("--fault-504", "record the leads, then answer a proxy's HTML 504"),
    Fault.UNAVAILABLE: ("--fault-503", "answer a proxy's HTML 503 (nothing recorded)"),
}


def add_parser(commands: Commands) -> None:
    """Add ``fake-server`` to the command line."""
    fake = commands.add_parser(
        "fake-server",
        help="run a fake Ryng server on 127.0.0.1 (test a pipeline without an account)",
        description=plain(__doc__),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fake.set_defaults(run=run)
    fake.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    fake.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    fake.add_argument("--token", default="test-token", help="the access token it accepts")
    fake.add_argument(
        "--latency", type=non_negative_float, default=0.0, help="seconds before each answer"
    )
    fake.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests accepted per second (429 beyond); default: no limit",
    )
    faults = fake.add_argument_group(
        "faults", "The share of requests (0 to 1) that get each fault, drawn with --seed."
    )
    for fault, (flag, meaning) in _FAULT_FLAGS.items():
        faults.add_argument(
            flag, type=fraction, default=0.0, dest=f"fault_{fault.name}", help=meaning
        )
    faults.add_argument(
        "--fault-rate",
        type=fraction,
        default=0.0,
        help="a mix like the demo's: 70%% of it 500s, 25%% 429s, 5%% drops (added to the above)",
    )
    faults.add_argument(
        "--retry-after",
        default="0",
        help="the Retry-After header of --fault-429 and --fault-503 answers ('none' sends none)",
    )
    faults.add_argument("--seed", type=int, default=0, help="seeds the fault draws")
    fake.add_argument(
        "--no-record", action="store_true", help="keep counts only, not every lead (big loads)"
    )
    fake.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="PATH",
        help="on stop, write every lead appended to PATH (JSON Lines: campaign_id, count, lead)",
    )
    fake.add_argument(
        "--no-validate", action="store_true", help="accept leads the real API would refuse"
    )
    fake.add_argument(
        "--max-body", type=positive_int, default=64 << 20, help="largest body accepted (413)"
    )
    fake.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="close connections idle this many seconds, with no Keep-Alive header (as nginx "
        "and gunicorn do); default: an hour",
    )


def _plan(args: argparse.Namespace) -> FaultPlan:
    rates = dict(fault_plan(args.fault_rate, args.seed).rates)
    for fault in _FAULT_FLAGS:
        rate = getattr(args, f"fault_{fault.name}")
        if rate:
            rates[fault] = rates.get(fault, 0.0) + rate
    total = sum(rates.values())
    if total > 1 + 1e-9:
        raise CliError(f"the fault rates add up to {total:g}, more than 1")
    retry_after = None if args.retry_after.lower() == "none" else args.retry_after
    return FaultPlan(
        seed=args.seed, rates={f: r for f, r in rates.items() if r}, retry_after=retry_after
    )


def run(args: argparse.Namespace) -> int:
    """Run ``fake-server`` until SIGINT or SIGTERM; return the exit code."""
    if args.record is not None and args.no_record:
        say("ryng-async fake-server: error: --record needs the leads: not with --no-record")
        return ExitCode.USAGE
    try:
        plan = _plan(args)
        server = FakeRyngServer(
            access_token=args.token,
            latency=args.latency,
            rate_limit=args.rate_limit,
            faults=plan,
            record=not args.no_record,
            host=args.host,
            port=args.port,
            max_body=args.max_body,
            validate_leads=not args.no_validate,
            idle_timeout=args.idle_timeout,
        )
    except (CliError, ValueError) as exc:
        say(f"ryng-async fake-server: error: {exc}")
        return ExitCode.USAGE
    return run_async(lambda: _serve(server, sys.stdout, args.record))


def write_record(server: FakeRyngServer, path: Path) -> int:
    """Write each distinct lead appended (with its campaign and count) to ``path``.

    Returns the lines written.
    """
    counts: dict[tuple[str, bytes], int] = {}
    firsts: dict[tuple[str, bytes], dict[str, Any]] = {}
    encode = msgspec.json.Encoder().encode
    for request in server.requests:
        if not request.accepted:
            continue
        for lead in request.leads:
            key = (request.campaign_id, encode(sorted(lead.items())))  # one key per lead
            counts[key] = counts.get(key, 0) + 1
            firsts.setdefault(key, lead)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        for key, count in counts.items():
            line = {"campaign_id": key[0], "count": count, "lead": firsts[key]}
            out.write(msgspec.json.encode(line) + b"\n")
    tmp.replace(path)
    return len(counts)


async def _serve(server: FakeRyngServer, out: TextIO, record: Path | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        say(f"ryng-async fake-server: error: cannot listen on {server.base_url}: {exc}")
        return ExitCode.USAGE
    try:
        faults = ", ".join(f"{f.value} {r:.1%}" for f, r in server.faults.rates.items())
        say(
            f"fake Ryng server listening on {server.base_url} (Ctrl-C or SIGTERM to stop)\n"
            f"  token: {server.access_token}; latency {server.latency:g}s; "
            f"faults: {faults or 'none'}; rate limit: {server.rate_limit or 'none'}\n"
            f"  point a load at it:  export RYNG_BASE_URL={server.base_url} "
            f"RYNG_ACCESS_TOKEN={server.access_token}\n"
            f"  then:  ryng-async append 42 leads.csv\n"
            f"  or:    curl -X POST {server.url('42')} -H 'x-access-token: "
            f"{server.access_token}' -H 'Content-Type: application/json' "
            """-d '{"customerData":{"jsonData":[{"number":"+919876543210"}]}}'""",
            out,
        )
        await stop.wait()
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    say(summary(server), out)
    if record is not None:
        try:
            lines = await asyncio.to_thread(write_record, server, record)
        except OSError as exc:
            say(f"ryng-async fake-server: error: cannot write the record {record}: {exc}")
            return ExitCode.USAGE
        say(f"  {lines:,} distinct leads written to {record}", out)
    return ExitCode.OK


def summary(server: FakeRyngServer) -> str:
    """What the server received, in a few lines."""
    statuses = ", ".join(f"{status} x {n:,}" for status, n in sorted(server.statuses.items()))
    faults = ", ".join(f"{fault.value} x {n:,}" for fault, n in server.faults_injected.items())
    lines = [
        "fake Ryng server stopped. It received:",
        f"  {server.received_requests:,} requests; {server.accepted_requests:,} accepted, "
        f"holding {server.lead_count():,} leads",
        f"  answers: {statuses or 'none'}; connections dropped or reset: "
        f"{server.received_requests - sum(server.statuses.values()):,}",
        f"  faults injected: {faults or 'none'}; most requests in flight at once: "
        f"{server.max_in_flight}",
    ]
    if server.record:
        numbers = server.lead_counts("number")
        repeated = sum(1 for count in numbers.values() if count > 1)
        campaigns = sorted({request.campaign_id for request in server.requests})
        lines.append(
            f"  {len(numbers):,} distinct numbers; {repeated:,} received more than once; "
            f"campaigns: {', '.join(campaigns) or 'none'}"
        )
    return "\n".join(lines)
